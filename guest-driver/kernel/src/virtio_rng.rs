//! A minimal virtio-rng driver over virtio-mmio: one request, one interrupt.
//!
//! It proves the VMM's transport path end to end on every boot (status handshake, feature
//! negotiation, a split queue in guest memory, QueueNotify through an ioeventfd, the used ring,
//! an MSI through an irqfd, InterruptStatus/ACK). The STREAMS console driver (a later issue)
//! replaces this style of code with real ring management.

use crate::irq::{set_handler, wait_while};
use crate::mmio::{read_u32, write_u32};
use crate::{bootinfo, clock};
use alloc::alloc::{Layout, alloc_zeroed};
use core::sync::atomic::{AtomicU64, Ordering, fence};
use guest_abi::MmioKind;

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;

const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 64;
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
pub fn probe() -> Result<RngResult, &'static str> {
    let dev = bootinfo::params()
        .devices()
        .iter()
        .find(|d| d.kind == MmioKind::VirtioMmio as u32 && read_u32(d.base + DEVICE_ID) == 4)
        .ok_or("no virtio-rng device")?;
    let r = |off| read_u32(dev.base + off);
    let w = |off, v| write_u32(dev.base + off, v);
    if r(MAGIC) != 0x7472_6976 || r(VERSION) != 2 {
        return Err("not a version 2 virtio-mmio transport");
    }
    w(STATUS, 0);
    w(STATUS, ACKNOWLEDGE);
    w(STATUS, ACKNOWLEDGE | DRIVER);
    w(DEVICE_FEATURES_SEL, 1);
    if r(DEVICE_FEATURES) & 1 == 0 {
        return Err("device does not offer VIRTIO_F_VERSION_1");
    }
    w(DRIVER_FEATURES_SEL, 0);
    w(DRIVER_FEATURES, 0);
    w(DRIVER_FEATURES_SEL, 1);
    w(DRIVER_FEATURES, 1);
    w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if r(STATUS) & FEATURES_OK == 0 {
        return Err("device refused FEATURES_OK");
    }
    w(QUEUE_SEL, 0);
    if r(QUEUE_NUM_MAX) < u32::from(QSIZE) {
        return Err("request queue too small");
    }
    // One zeroed page: descriptors at +0, avail ring at +0x200, used ring at +0x400, buffer at +0x800.
    // SAFETY: a non-zero-sized layout; the page is leaked on purpose (the device owns it).
    let page = unsafe { alloc_zeroed(Layout::from_size_align(4096, 4096).expect("valid")) } as u64;
    if page == 0 {
        return Err("out of memory");
    }
    let (desc, avail, used, buf) = (page, page + 0x200, page + 0x400, page + 0x800);
    w(QUEUE_NUM, QSIZE.into());
    for (reg, addr) in [
        (QUEUE_DESC, desc),
        (QUEUE_DRIVER, avail),
        (QUEUE_DEVICE, used),
    ] {
        w(reg, addr as u32);
        w(reg + 4, (addr >> 32) as u32);
    }
    w(QUEUE_READY, 1);
    set_handler(dev.vector as u8, on_irq);
    w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    if r(STATUS) & NEEDS_RESET != 0 {
        return Err("device needs reset after DRIVER_OK");
    }

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
    w(QUEUE_NOTIFY, 0);
    wait_while(&IRQS, before);
    let round_trip_ns = clock::ticks_to_ns(clock::ticks() - t0);
    let status = r(INTERRUPT_STATUS);
    w(INTERRUPT_ACK, status);
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
        return Err("interrupt without a used buffer");
    }
    Ok(RngResult {
        len,
        nonzero: bytes.iter().any(|&b| b != 0),
        round_trip_ns,
        vector: dev.vector,
    })
}
