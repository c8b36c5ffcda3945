//! A minimal virtio-rng driver over virtio-mmio: one request, one interrupt.
//!
//! It proves the VMM's transport path end to end on every boot (status handshake, feature
//! negotiation, a split queue in guest memory, QueueNotify through an ioeventfd, the used ring,
//! an MSI through an irqfd, InterruptStatus/ACK). It shares the transport code
//! ([`crate::drivers::virtio_mmio`]) with the console's STREAMS driver, whose rings are real
//! ([`crate::drivers::vcon::virtq`]).

use crate::cpu::irq::set_handler;
use crate::cpu::svc::wait_while;
use crate::drivers::ProbeError;
use crate::drivers::virtio_mmio::{F_VERSION_1, Transport};
use crate::platform::clock;
use alloc::alloc::{Layout, alloc_zeroed};
use core::sync::atomic::{AtomicU64, Ordering, fence};

/// virtio device ID of an entropy source.
const RNG_DEVICE_ID: u32 = 4;
const QSIZE: u16 = 8;
const REQUEST: u32 = 64;

static IRQS: AtomicU64 = AtomicU64::new(0);

fn on_irq(_vector: u8) {
    IRQS.fetch_add(1, Ordering::AcqRel);
}

/// What one request returned.
pub struct RngResult {
    /// Bytes the device wrote.
    pub len: u32,
    /// Whether any of them was non-zero.
    pub nonzero: bool,
    /// Notify to interrupt handled, in ns.
    pub round_trip_ns: u64,
    /// The MSI vector used.
    pub vector: u32,
}

/// Finds the first virtio-rng, asks it for [`REQUEST`] bytes and waits for the answer.
pub fn probe() -> Result<RngResult, ProbeError> {
    let (dev, t) = Transport::find(RNG_DEVICE_ID).ok_or(ProbeError::NoDevice("virtio-rng"))?;
    t.negotiate(F_VERSION_1)?;
    if t.queue_max(0) < QSIZE {
        return Err(ProbeError::QueueSize {
            queue: 0,
            wanted: QSIZE,
        });
    }
    // One zeroed page: descriptors at +0, avail ring at +0x200, used ring at +0x400, buffer at +0x800.
    // SAFETY: a non-zero-sized layout; the page is leaked on purpose (the device owns it).
    let page = unsafe { alloc_zeroed(Layout::from_size_align(4096, 4096).expect("valid")) } as u64;
    if page == 0 {
        return Err(ProbeError::OutOfMemory("the request page"));
    }
    let (desc, avail, used, buf) = (page, page + 0x200, page + 0x400, page + 0x800);
    t.setup_queue(0, QSIZE, desc, avail, used)?;
    set_handler(dev.vector as u8, on_irq);
    t.driver_ok()?;

    // SAFETY: `desc`, `avail`, `used` and `buf` lie in the page allocated above, which only
    // this function and the device touch; the writes are aligned for their types.
    unsafe {
        core::ptr::write_volatile(desc as *mut u64, buf);
        core::ptr::write_volatile((desc + 8) as *mut u32, REQUEST);
        core::ptr::write_volatile((desc + 12) as *mut u16, 2); // VIRTQ_DESC_F_WRITE
        core::ptr::write_volatile((avail + 4) as *mut u16, 0); // ring[0] = descriptor 0
        fence(Ordering::Release);
        core::ptr::write_volatile((avail + 2) as *mut u16, 1); // idx = 1
    }
    let before = IRQS.load(Ordering::Acquire);
    let t0 = clock::ticks();
    crate::cpu::mmio::write_u32(t.notify_address(), 0);
    wait_while(&IRQS, before);
    let round_trip_ns = clock::ticks_to_ns(clock::ticks() - t0);
    let status = t.take_interrupt_status();
    fence(Ordering::Acquire);
    // SAFETY: as above; the device has published the used element before interrupting.
    let (used_idx, len, bytes) = unsafe {
        let idx = core::ptr::read_volatile((used + 2) as *const u16);
        let len = core::ptr::read_volatile((used + 8) as *const u32);
        (
            idx,
            len,
            core::slice::from_raw_parts(buf as *const u8, REQUEST as usize),
        )
    };
    if status & 1 == 0 || used_idx != 1 {
        return Err(ProbeError::NoUsedBuffer);
    }
    Ok(RngResult {
        len,
        nonzero: bytes.iter().any(|&b| b != 0),
        round_trip_ns,
        vector: dev.vector,
    })
}
