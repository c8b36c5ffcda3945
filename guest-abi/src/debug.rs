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

/// u32: a port id; the host starts stamping that port's round trips (see [`TripStamps`]) and
/// forgets earlier stamps.
pub const STAGES_BEGIN: u64 = 0x30;
/// u64: guest physical address of a [`ClockCell`]. The host starts a thread that answers the
/// guest's clock readings through the cell (up to [`CLOCK_ROUNDS`], for [`CLOCK_DEADLINE_MS`]
/// at most): each answer bounds the offset between the two TSCs from both sides.
pub const TSC_SYNC: u64 = 0x38;
/// u64: a buffer of [`TripStamps`] records, encoded by [`console_word`]; may be written several
/// times (the records are appended).
pub const STAGES_TRIPS: u64 = 0x40;
/// u32: the guest has sent every record; the host matches them with its own stamps, stops
/// stamping and reports where the round trips' time went as a `@result workload=stages` line.
pub const STAGES_END: u64 = 0x48;

/// Clock readings exchanged through memory after [`TSC_SYNC`]. Round k (from 1): the guest
/// stores its TSC in `guest`, then k in `guest_seq` (release); the host, seeing k, stores its
/// TSC in `host`, then k in `host_seq` (release). The guest's reading after it saw the answer
/// is the next round's (so reading k+1 follows answer k). To end, the guest stores a last
/// reading in `guest` and [`CLOCK_DONE`] in `guest_seq`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ClockCell {
    /// The guest's TSC of this round.
    pub guest: u64,
    /// The round the guest is in.
    pub guest_seq: u64,
    /// The host's TSC when it saw the round.
    pub host: u64,
    /// The last round the host answered.
    pub host_seq: u64,
}

/// What clock rounds tell of the offset between the clocks (host = guest + offset), in ticks:
/// an answer bounds it from above (the guest's reading came before the host's), the guest's
/// next reading from below (it came after the guest saw the answer). Both sides keep the same
/// bounds: the guest to know when to stop, the host to place the guest's stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockBounds {
    /// The offset is at least this.
    pub lo: i128,
    /// The offset is at most this.
    pub hi: i128,
}

impl ClockBounds {
    /// Nothing known yet.
    pub const UNKNOWN: ClockBounds = ClockBounds {
        lo: i128::MIN,
        hi: i128::MAX,
    };

    /// The guest's reading `guest` was answered with the host's `host`.
    pub fn answered(&mut self, guest: u64, host: u64) {
        self.hi = self.hi.min(i128::from(host) - i128::from(guest));
    }

    /// The guest read `after` once it had seen the answer `host`.
    pub fn read_after(&mut self, host: u64, after: u64) {
        self.lo = self.lo.max(i128::from(host) - i128::from(after));
    }

    /// The middle of the bounds and how far off it may be; `None` until both sides are
    /// bounded, or when they contradict each other.
    pub fn offset(&self) -> Option<(i64, u64)> {
        if self.lo == i128::MIN || self.hi == i128::MAX || self.lo > self.hi {
            return None;
        }
        let mid = i64::try_from((self.lo + self.hi) / 2).ok()?;
        Some((mid, u64::try_from((self.hi - self.lo) / 2).ok()?))
    }
}

/// Most rounds the host answers after one [`TSC_SYNC`].
pub const CLOCK_ROUNDS: u64 = 4096;
/// `guest_seq` when the guest is done: `guest` holds its reading after the last answer.
pub const CLOCK_DONE: u64 = u64::MAX;
/// How long the host answers after one [`TSC_SYNC`].
pub const CLOCK_DEADLINE_MS: u64 = 2_000;

/// One round trip as the guest saw it, in guest TSC ticks, as it travels to the host: four
/// little-endian u64s in this order, packed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TripStamps {
    /// The write began (before the stream head).
    pub start: u64,
    /// The driver made the last transmit buffer available on the ring.
    pub avail: u64,
    /// The device's last interrupt reached the driver's handler.
    pub irq: u64,
    /// The reader had the whole reply.
    pub end: u64,
}

/// Bytes of one [`TripStamps`] record.
pub const TRIP_STAMPS_SIZE: usize = core::mem::size_of::<TripStamps>();

impl TripStamps {
    /// Reads one record from its wire form.
    pub fn from_bytes(b: &[u8; TRIP_STAMPS_SIZE]) -> Self {
        let w = |i: usize| le_word(b, i);
        TripStamps {
            start: w(0),
            avail: w(1),
            irq: w(2),
            end: w(3),
        }
    }
}

/// Longest buffer one [`console_word`] can describe.
pub const CONSOLE_MAX: usize = 0xffff;

/// Little-endian 64-bit word `i` of `b` (the records the guest hands over are arrays of them).
fn le_word(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(x)
}

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
        let w = |i: usize| le_word(b, i);
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
