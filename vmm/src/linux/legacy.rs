//! The PC ports a Linux guest touches beyond COM1, and how its run ends.
//!
//! - Port 0x64, the keyboard controller (rust-vmm's `vm_superio::I8042Device`): its status
//!   reads "ready", and command 0xfe (pulse the reset line) ends the run. With `reboot=k panic=-1`, both `reboot -f` and a kernel panic
//!   end there.
//! - Ports 0x70/0x71, the CMOS clock: reads 0, so a clock read never waits on "update in
//!   progress" (kvmclock gives Linux the time anyway).
//! - [`PanicWatch`] reads the console as it goes out, so a reset after "Kernel panic" is a
//!   crash, and a panic because PID 1 exited carries PID 1's exit status: a test program run
//!   as init just exits with its status.

use crate::bus::{Action, BusDevice};
use crate::error::Outcome;
use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use vm_superio::{I8042Device, Trigger};

/// The keyboard controller's command/status port.
pub const I8042_COMMAND: u64 = 0x64;
/// The CMOS index and data ports.
pub const CMOS_BASE: u64 = 0x70;
/// Where the command port sits in `I8042Device`'s register window (data port 0x60 + 4).
const I8042_COMMAND_OFFSET: u8 = 4;
const PANIC: &str = "Kernel panic - not syncing: ";
const INIT_EXIT: &str = "Attempted to kill init! exitcode=0x";
/// The longest console line kept for the panic check.
const LINE_MAX: usize = 512;

/// The last panic message seen on the console, shared by the watch and the reset port.
#[derive(Clone, Default)]
pub struct PanicNote(Arc<Mutex<Option<String>>>);

impl PanicNote {
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A console writer that passes everything on and notes a kernel panic line.
pub struct PanicWatch {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    note: PanicNote,
}

impl PanicWatch {
    /// Watches what goes to `out`; panics are noted in `note`.
    pub fn new(out: Box<dyn Write + Send>, note: PanicNote) -> Self {
        PanicWatch {
            out,
            line: Vec::new(),
            note,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line);
                if let Some(at) = line.find(PANIC) {
                    let why = line[at + PANIC.len()..].trim_end().to_string();
                    *self.note.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                }
                self.line.clear();
            } else if self.line.len() < LINE_MAX {
                self.line.push(b);
            }
        }
    }
}

impl Write for PanicWatch {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.scan(bytes);
        // The watch has seen the bytes even if the host's output fails.
        self.out.write_all(bytes).map(|()| bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a reset means, given the panic seen before it (if any).
pub fn reset_outcome(panic: Option<&str>) -> Outcome {
    let Some(why) = panic else {
        return Outcome::Exited(0);
    };
    let status = why.find(INIT_EXIT).and_then(|at| {
        let hex: String = why[at + INIT_EXIT.len()..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        u32::from_str_radix(&hex, 16).ok()
    });
    match status {
        // A wait status: exit code in bits 8-15, the killing signal in bits 0-6.
        Some(s) if s & 0x7f == 0 => Outcome::Exited((s >> 8) & 0xff),
        Some(s) => Outcome::Crashed(format!(
            "the guest's init was killed by signal {}",
            s & 0x7f
        )),
        None => Outcome::Crashed(format!("Linux panicked: {why}")),
    }
}

/// The keyboard controller's reset line: pulling it reports the run's end.
struct ResetLine {
    outcome: Sender<Outcome>,
    panic: PanicNote,
    pulled: AtomicBool,
}

impl Trigger for ResetLine {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        let _ = self
            .outcome
            .send(reset_outcome(self.panic.get().as_deref()));
        self.pulled.store(true, Ordering::Release);
        Ok(())
    }
}

/// The keyboard controller's command port (0x64 alone: Linux needs nothing else of it).
pub struct ResetPort(Mutex<I8042Device<ResetLine>>);

impl ResetPort {
    /// A reset port that reports the run's end to `outcome`.
    pub fn new(outcome: Sender<Outcome>, panic: PanicNote) -> Self {
        ResetPort(Mutex::new(I8042Device::new(ResetLine {
            outcome,
            panic,
            pulled: AtomicBool::new(false),
        })))
    }
}

impl BusDevice for ResetPort {
    fn read(&self, _vcpu: u32, _offset: u64, data: &mut [u8]) {
        let mut dev = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Input and output buffers empty: ready for a command.
        data.fill(dev.read(I8042_COMMAND_OFFSET));
    }

    fn write(&self, _vcpu: u32, _offset: u64, data: &[u8]) -> Action {
        let Some(&value) = data.first() else {
            return Action::Continue;
        };
        let mut dev = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(()) = dev.write(I8042_COMMAND_OFFSET, value);
        if dev.reset_evt().pulled.load(Ordering::Acquire) {
            Action::Stop
        } else {
            Action::Continue
        }
    }
}

/// A CMOS clock that reads all zeros and ignores writes.
pub struct Cmos;

impl BusDevice for Cmos {
    fn read(&self, _vcpu: u32, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&self, _vcpu: u32, _offset: u64, _data: &[u8]) -> Action {
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_sink::Sink;
    use std::sync::mpsc;

    #[test]
    fn a_reset_without_a_panic_is_exit_0() {
        let (tx, rx) = mpsc::channel();
        let port = ResetPort::new(tx, PanicNote::default());
        let mut status = [0xffu8];
        port.read(0, 0, &mut status);
        assert_eq!(status[0] & 2, 0, "input buffer empty");
        assert_eq!(port.write(0, 0, &[0xd1]), Action::Continue);
        assert_eq!(port.write(0, 0, &[0xfe]), Action::Stop);
        assert_eq!(rx.try_recv().unwrap(), Outcome::Exited(0));
    }

    #[test]
    fn init_exit_status_and_panics_come_through_the_console() {
        let note = PanicNote::default();
        let sink = Sink::default();
        let mut watch = PanicWatch::new(Box::new(sink.clone()), note.clone());
        let text =
            "[ 1.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\n";
        // In pieces, as a UART writes it.
        for chunk in text.as_bytes().chunks(7) {
            watch.write_all(chunk).unwrap();
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), text.as_bytes());
        assert_eq!(reset_outcome(note.get().as_deref()), Outcome::Exited(3));
        assert_eq!(
            reset_outcome(Some("Attempted to kill init! exitcode=0x0000000b")),
            Outcome::Crashed("the guest's init was killed by signal 11".into())
        );
        assert_eq!(
            reset_outcome(Some("VFS: Unable to mount root fs")),
            Outcome::Crashed("Linux panicked: VFS: Unable to mount root fs".into())
        );
    }

    #[test]
    fn a_long_line_without_a_panic_is_not_one() {
        let note = PanicNote::default();
        let mut watch = PanicWatch::new(Box::new(io::sink()), note.clone());
        watch.write_all(&[b'x'; 4096]).unwrap();
        watch.write_all(b"\nok\n").unwrap();
        assert_eq!(note.get(), None);
    }
}
