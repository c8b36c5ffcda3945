//! Output through the debug page: one MMIO exit per buffer of up to [`BUF`] bytes. After a PVH
//! boot (QEMU) there is none: both streams go to COM1, one trap per buffer (`rep outsb`).

use core::fmt::{self, Write};
use guest_abi::{debug, layout::DEBUG_BASE};

const BUF: usize = 512;
/// The first serial port (PVH boots).
pub const COM1: u16 = 0x3f8;

/// Where a [`Console`] writes.
#[derive(Clone, Copy)]
pub enum Stream {
    /// The host's standard output.
    Out,
    /// The host's standard error.
    Err,
}

/// Writes `bytes` in one exit (the buffer must be shorter than 64 KiB).
pub fn write_bytes(stream: Stream, bytes: &[u8]) {
    if crate::cpu::bootinfo::pvh_boot() {
        crate::cpu::svc::outsb(COM1, bytes);
        return;
    }
    let reg = match stream {
        Stream::Out => debug::CONSOLE_OUT,
        Stream::Err => debug::CONSOLE_ERR,
    };
    for chunk in bytes.chunks(debug::CONSOLE_MAX) {
        // Identity-mapped: a virtual address is the guest physical address.
        let Some(word) = debug::console_word(chunk.as_ptr() as u64, chunk.len()) else {
            return;
        };
        // The write exits to the VMM, which reads `chunk` before the vCPU resumes.
        crate::cpu::mmio::write_u64(DEBUG_BASE + reg, word, chunk.as_ptr());
    }
}

/// A formatter that buffers on the stack and flushes when full and when dropped.
pub struct Console {
    stream: Stream,
    len: usize,
    buf: [u8; BUF],
}

impl Console {
    /// A writer to `stream`.
    pub fn new(stream: Stream) -> Self {
        Console {
            stream,
            len: 0,
            buf: [0; BUF],
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            write_bytes(self.stream, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == BUF {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Prints to the host's standard output, with a newline.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut c = $crate::cpu::debug_out::Console::new($crate::cpu::debug_out::Stream::Out);
        let _ = writeln!(c, $($arg)*);
    }};
}

/// Prints to the host's standard error, with a newline.
#[macro_export]
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut c = $crate::cpu::debug_out::Console::new($crate::cpu::debug_out::Stream::Err);
        let _ = writeln!(c, $($arg)*);
    }};
}
