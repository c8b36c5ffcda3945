//! A `stdio` port (and COM1, which the VMM reads the same way) on a terminal, used as a
//! person would: the terminal in raw mode while the VM runs (keys reach the guest as typed,
//! Ctrl-C included), restored when the backend ends and, through [`restore`], on every other
//! way out (the VMM calls it from its stop-signal handlers and its panic hook); `Ctrl-A x` to
//! quit, `Ctrl-A Ctrl-A` for a literal Ctrl-A (QEMU's keys); the terminal's window size
//! passed to the guest.
//!
//! Output post-processing stays on (a guest's `\n` still starts a new line), as in QEMU.

use rustix::termios::{OptionalActions, OutputModes, Termios, isatty, tcgetattr, tcsetattr};
use std::fs::File;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The escape key: Ctrl-A.
pub const ESCAPE: u8 = 0x01;

/// The terminal as it was, and a descriptor of it.
static SAVED: OnceLock<(File, Termios)> = OnceLock::new();
/// The terminal is in raw mode now.
static RAW: AtomicBool = AtomicBool::new(false);

/// What stdin turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdin {
    /// Not a terminal (a pipe, a file, /dev/null): read as it is.
    NotATerminal,
    /// A terminal, now in raw mode.
    Raw,
    /// A terminal whose foreground is another process group (perimeter was started with
    /// `&`): touching its settings or reading it would stop perimeter (SIGTTOU, SIGTTIN), so
    /// it is left alone and not read.
    Background,
}

/// Puts the terminal `f` is (stdin) in raw mode if it is a terminal and perimeter is in its
/// foreground.
pub fn enter_raw(f: &File) -> io::Result<Stdin> {
    if !isatty(f) {
        return Ok(Stdin::NotATerminal);
    }
    // A process group other than the terminal's foreground one is a background job.
    if rustix::termios::tcgetpgrp(f).ok() != Some(rustix::process::getpgrp()) {
        return Ok(Stdin::Background);
    }
    let before = tcgetattr(f)?;
    let _ = SAVED.set((f.try_clone()?, before.clone()));
    let mut raw = before;
    raw.make_raw();
    raw.output_modes |= OutputModes::OPOST | OutputModes::ONLCR;
    tcsetattr(f, OptionalActions::Now, &raw)?;
    RAW.store(true, Ordering::SeqCst);
    Ok(Stdin::Raw)
}

/// Puts the terminal back as it was, if raw mode is on. Async-signal-safe: an atomic swap and
/// one ioctl, so a signal handler may call it.
pub fn restore() {
    if RAW.swap(false, Ordering::SeqCst)
        && let Some((f, before)) = SAVED.get()
    {
        let _ = tcsetattr(f, OptionalActions::Now, before);
    }
}

/// What the escape key asked for in a run of input.
#[derive(Debug, Default)]
pub struct Escape {
    /// The last byte seen was the escape key.
    pending: bool,
}

impl Escape {
    /// Appends to `out` what of `input` goes to the guest; true when `Ctrl-A x` asked to quit
    /// (what follows it is dropped). `out` grows by at most one byte more than `input` (an
    /// escape held over from the last call, then another key).
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if std::mem::take(&mut self.pending) {
                match b {
                    b'x' | b'X' => return true,
                    ESCAPE => out.push(ESCAPE),
                    // Any other key: the escape and the key both go on.
                    _ => out.extend_from_slice(&[ESCAPE, b]),
                }
            } else if b == ESCAPE {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(e: &mut Escape, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let quit = e.filter(input, &mut out);
        (out, quit)
    }

    #[test]
    fn ctrl_a_x_quits_ctrl_a_twice_is_one_and_other_keys_pass() {
        let mut e = Escape::default();
        assert_eq!(run(&mut e, b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(run(&mut e, b"a\x01\x01b"), (b"a\x01b".to_vec(), false));
        assert_eq!(run(&mut e, b"\x01c"), (b"\x01c".to_vec(), false));
        // An escape at the end of one read and its key at the start of the next.
        assert_eq!(run(&mut e, b"z\x01"), (b"z".to_vec(), false));
        assert_eq!(run(&mut e, b"xyz"), (Vec::new(), true));
        assert_eq!(run(&mut e, b"q\x01X"), (b"q".to_vec(), true));
    }

    #[test]
    fn without_a_terminal_nothing_changes_and_restore_is_harmless() {
        let f = tempfile_like();
        assert_eq!(enter_raw(&f).unwrap(), Stdin::NotATerminal);
        restore();
    }

    fn tempfile_like() -> File {
        let path = std::env::temp_dir().join(format!("perimeter-term-{}", std::process::id()));
        let f = File::create(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        f
    }
}
