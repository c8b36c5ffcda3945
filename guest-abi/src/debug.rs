//! The debug page: registers a guest writes to exit, print and report faults.
//!
//! Ring 3 cannot do port I/O under PVM, so these are MMIO registers at
//! [`DEBUG_BASE`](crate::layout::DEBUG_BASE) + offset. Every register is write-only and takes
//! one aligned write of the width given; reads return 0.

/// u32: the guest is done; the value is its exit code (0..=[`EXIT_CODE_MAX`](crate::EXIT_CODE_MAX)).
pub const EXIT: u64 = 0x00;
/// u8: one byte to the host's standard output.
pub const CONSOLE_BYTE: u64 = 0x08;
/// u64: a buffer to the host's standard output, encoded by [`console_word`].
pub const CONSOLE_OUT: u64 = 0x10;
/// u64: a buffer to the host's standard error, encoded by [`console_word`].
pub const CONSOLE_ERR: u64 = 0x18;
/// u64: guest physical address of a [`FaultFrame`]; the guest has crashed and stops.
pub const FAULT: u64 = 0x20;
/// u32: a CPU index; the host raises [`IRQ_TEST_VECTOR`](crate::IRQ_TEST_VECTOR) on that vCPU
/// through an irqfd routed as MSI. Delivered to the host by an ioeventfd (datamatch on the index).
pub const IRQ_TEST: u64 = 0x28;

/// Longest buffer one [`console_word`] can describe.
pub const CONSOLE_MAX: usize = 0xffff;

/// Encodes a console buffer: the length in bits 63..48, the guest physical address below.
///
/// Returns `None` when the buffer is longer than [`CONSOLE_MAX`] or the address needs more than
/// 48 bits.
pub const fn console_word(addr: u64, len: usize) -> Option<u64> {
    if len > CONSOLE_MAX || addr >> 48 != 0 {
        return None;
    }
    Some(((len as u64) << 48) | addr)
}

/// Decodes a [`console_word`] into (address, length).
pub const fn console_buffer(word: u64) -> (u64, usize) {
    (word & ((1 << 48) - 1), (word >> 48) as usize)
}

/// What the guest's CPL0 stub saves when an unexpected exception hits, in memory order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultFrame {
    /// CR2 at the time of the exception (the faulting address of a #PF).
    pub cr2: u64,
    /// Exception vector (0..32).
    pub vector: u64,
    /// Error code the CPU pushed, or 0.
    pub error: u64,
    /// Instruction pointer of the faulting instruction.
    pub rip: u64,
    /// Code segment; its low two bits are the CPL that faulted.
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

/// Size of a [`FaultFrame`] in bytes.
pub const FAULT_FRAME_SIZE: usize = core::mem::size_of::<FaultFrame>();

impl FaultFrame {
    /// Reads a frame from its in-memory bytes (little-endian words).
    pub fn from_bytes(b: &[u8; FAULT_FRAME_SIZE]) -> Self {
        let w = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(x)
        };
        FaultFrame {
            cr2: w(0),
            vector: w(1),
            error: w(2),
            rip: w(3),
            cs: w(4),
            rflags: w(5),
            rsp: w(6),
            ss: w(7),
        }
    }

    /// The exception's mnemonic (`#PF`, `#GP`, ...), or `"#??"` for a vector without one.
    pub fn name(&self) -> &'static str {
        const NAMES: [&str; 32] = [
            "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#??", "#TS", "#NP",
            "#SS", "#GP", "#PF", "#??", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#??", "#??",
            "#??", "#??", "#??", "#??", "#HV", "#VC", "#SX", "#??",
        ];
        NAMES.get(self.vector as usize).copied().unwrap_or("#??")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_word_round_trips_and_rejects_what_does_not_fit() {
        let w = console_word(0x1234_5678, 300).unwrap();
        assert_eq!(console_buffer(w), (0x1234_5678, 300));
        assert_eq!(console_word(0, CONSOLE_MAX + 1), None);
        assert_eq!(console_word(1 << 48, 1), None);
    }

    #[test]
    fn fault_frame_reads_words_in_order() {
        let mut b = [0u8; FAULT_FRAME_SIZE];
        for i in 0..8 {
            b[i * 8] = i as u8 + 1;
        }
        let f = FaultFrame::from_bytes(&b);
        assert_eq!((f.cr2, f.vector, f.ss), (1, 2, 8));
        assert_eq!(f.name(), "NMI");
        assert_eq!(FaultFrame { vector: 99, ..f }.name(), "#??");
    }
}
