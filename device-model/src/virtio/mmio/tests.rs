//! The transport's state machine and register guards, against a mock device and mock memory.

use super::*;
use crate::virtio::device::ActivateError;
use crate::virtio::features::EVENT_IDX;
use std::sync::atomic::{AtomicUsize, Ordering};
use vm_memory::GuestAddress;

/// (index, ready, size, event_idx) of one queue at activation.
type QueueSeen = (u16, bool, u16, bool);

#[derive(Default)]
struct Mock {
    config: [u8; 8],
    activations: Vec<(u64, Vec<QueueSeen>)>,
    resets: usize,
    fail_activation: bool,
    notify: Vec<EventFd>,
}

impl VirtioDevice for Mock {
    fn device_type(&self) -> u32 {
        3
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 32]
    }
    fn features(&self) -> u64 {
        EVENT_IDX | 1 // plus a device-specific bit 0
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if self.fail_activation {
            return Err(ActivateError("told to fail".into()));
        }
        let qs = a
            .queues
            .iter()
            .map(|q| {
                (
                    q.index,
                    q.queue.ready(),
                    q.queue.size(),
                    q.queue.event_idx_enabled(),
                )
            })
            .collect();
        self.notify = a.queues.into_iter().map(|q| q.notify).collect();
        self.activations.push((a.acked_features, qs));
        Ok(())
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.notify.clear();
    }
}

struct Rig {
    t: MmioTransport,
    dev: Arc<Mutex<Mock>>,
    irqs: Arc<AtomicUsize>,
}

fn rig() -> Rig {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let dev = Arc::new(Mutex::new(Mock::default()));
    let irqs = Arc::new(AtomicUsize::new(0));
    let i2 = irqs.clone();
    let signals = Arc::new(Signals::new(Box::new(move || {
        i2.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })));
    let t = MmioTransport::new(dev.clone(), mem, signals).unwrap();
    Rig { t, dev, irqs }
}

impl Rig {
    fn rd(&mut self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(reg.into(), &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(&mut self, reg: u32, v: u32) {
        self.t.write(reg.into(), &v.to_le_bytes());
    }
    fn status(&mut self, v: u32) {
        self.wr(VIRTIO_MMIO_STATUS, v);
    }
    /// ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK.
    fn negotiate(&mut self, features: u64) {
        self.status(ACKNOWLEDGE);
        self.status(ACKNOWLEDGE | DRIVER);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        self.status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }
    /// Queue `q` of `size` at `base` (descriptors, then avail, then used, all inside memory).
    fn queue(&mut self, q: u32, size: u32, base: u32) {
        self.wr(VIRTIO_MMIO_QUEUE_SEL, q);
        self.wr(VIRTIO_MMIO_QUEUE_NUM, size);
        self.wr(VIRTIO_MMIO_QUEUE_DESC_LOW, base);
        self.wr(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        self.wr(VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000);
        self.wr(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        self.wr(VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000);
        self.wr(VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        self.wr(VIRTIO_MMIO_QUEUE_READY, 1);
    }
    const ALL: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
    fn bring_up(&mut self) {
        self.negotiate(VERSION_1 | EVENT_IDX);
        self.queue(0, 16, 0x1_0000);
        self.queue(1, 32, 0x2_0000);
        self.status(Self::ALL);
    }
}

#[test]
fn identity_registers() {
    let mut r = rig();
    assert_eq!(r.rd(VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
    assert_eq!(r.rd(VIRTIO_MMIO_VERSION), 2);
    assert_eq!(r.rd(VIRTIO_MMIO_DEVICE_ID), 3);
    assert_eq!(r.rd(VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    assert_eq!(
        r.rd(VIRTIO_MMIO_SHM_LEN_LOW),
        u32::MAX,
        "no shared memory regions"
    );
}

#[test]
fn device_features_are_read_in_two_halves_and_include_version_1() {
    let mut r = rig();
    r.negotiate(0); // refused (no VERSION_1) but leaves DRIVER set, so selection is open
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER);
    r.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    assert_eq!(
        u64::from(r.rd(VIRTIO_MMIO_DEVICE_FEATURES)),
        (EVENT_IDX | 1) & 0xffff_ffff
    );
    r.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        u64::from(r.rd(VIRTIO_MMIO_DEVICE_FEATURES)) << 32,
        VERSION_1
    );
    r.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_eq!(r.rd(VIRTIO_MMIO_DEVICE_FEATURES), 0);
}

#[test]
fn full_bring_up_activates_the_device_with_its_queues() {
    let mut r = rig();
    r.bring_up();
    assert_eq!(r.t.status(), Rig::ALL);
    let d = r.dev.lock().unwrap();
    assert_eq!(d.activations.len(), 1);
    let (acked, qs) = &d.activations[0];
    assert_eq!(*acked, VERSION_1 | EVENT_IDX);
    assert_eq!(qs.as_slice(), &[(0, true, 16, true), (1, true, 32, true)]);
    assert_eq!(r.t.counters().activations, 1);
}

#[test]
fn queue_notify_signals_the_queue_eventfd_and_rejects_unknown_queues() {
    let mut r = rig();
    r.bring_up();
    r.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    let d = r.dev.lock().unwrap();
    assert_eq!(d.notify[1].read().unwrap(), 1);
    assert!(d.notify[0].read().is_err(), "queue 0 was not notified");
    drop(d);
    r.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 7);
    assert_eq!(r.t.counters().refused_accesses, 1);
}

#[test]
fn interrupt_status_and_ack() {
    let mut r = rig();
    r.bring_up();
    let signals = r.t.signals.clone();
    signals.used_buffers().unwrap();
    assert_eq!(r.irqs.load(Ordering::Relaxed), 1);
    assert_eq!(r.rd(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    r.wr(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(r.rd(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

#[test]
fn status_moves_forward_in_order_without_skipping_a_step() {
    let mut r = rig();
    r.status(DRIVER); // skips ACKNOWLEDGE
    r.status(ACKNOWLEDGE | FEATURES_OK); // not a run of steps
    assert_eq!(r.t.status(), 0);
    r.status(ACKNOWLEDGE);
    r.status(ACKNOWLEDGE | FEATURES_OK); // skips DRIVER
    assert_eq!(r.t.status(), ACKNOWLEDGE);
    r.status(ACKNOWLEDGE | DRIVER);
    r.status(ACKNOWLEDGE | DRIVER | DRIVER_OK); // skips FEATURES_OK
    r.status(ACKNOWLEDGE); // clearing bits is not allowed either
    r.status(ACKNOWLEDGE | DEVICE_NEEDS_RESET); // the driver cannot set it (nor skip ahead)
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER);
    assert_eq!(r.t.counters().refused_transitions, 6);
    assert!(r.dev.lock().unwrap().activations.is_empty());
    r.status(ACKNOWLEDGE | DRIVER | FAILED);
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER | FAILED);
}

#[test]
fn several_steps_may_be_taken_in_one_write() {
    // virtio-drivers writes ACKNOWLEDGE | DRIVER at once after the reset.
    let mut r = rig();
    r.status(ACKNOWLEDGE | DRIVER);
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER);
    r.status(0);
    r.status(ACKNOWLEDGE | DRIVER | FEATURES_OK); // FEATURES_OK's check still applies
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER);
    assert_eq!(r.t.counters().refused_transitions, 1);
}

#[test]
fn features_ok_is_refused_for_unoffered_features_or_without_version_1() {
    let mut r = rig();
    r.negotiate(VERSION_1 | (1 << 5)); // bit 5 was not offered
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER);
    let mut r = rig();
    r.negotiate(EVENT_IDX);
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER);
    let mut r = rig();
    r.negotiate(VERSION_1 | 1);
    assert_eq!(r.t.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

#[test]
fn feature_writes_after_features_ok_are_ignored() {
    let mut r = rig();
    r.negotiate(VERSION_1);
    r.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    r.wr(VIRTIO_MMIO_DRIVER_FEATURES, 1);
    r.queue(0, 16, 0x1_0000);
    r.status(Rig::ALL);
    assert_eq!(
        r.dev.lock().unwrap().activations[0].0,
        VERSION_1,
        "acked features unchanged"
    );
    assert_eq!(r.t.counters().refused_accesses, 2);
}

#[test]
fn queue_writes_are_guarded_by_status_and_width() {
    let mut r = rig();
    r.status(ACKNOWLEDGE);
    r.wr(VIRTIO_MMIO_QUEUE_NUM, 8); // before FEATURES_OK
    r.status(ACKNOWLEDGE | DRIVER);
    r.negotiate(VERSION_1);
    r.wr(VIRTIO_MMIO_QUEUE_SEL, 0);
    r.t.write(VIRTIO_MMIO_QUEUE_NUM.into(), &[8, 0]); // 16-bit write
    r.wr(VIRTIO_MMIO_QUEUE_NUM, 64); // above the maximum of 16
    r.wr(VIRTIO_MMIO_QUEUE_NUM, 12); // not a power of two
    assert_eq!(r.t.counters().refused_accesses, 4);
    r.queue(0, 8, 0x1_0000);
    assert_eq!(r.rd(VIRTIO_MMIO_QUEUE_READY), 1);
    assert_eq!(r.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
    r.status(Rig::ALL);
    r.wr(VIRTIO_MMIO_QUEUE_SEL, 1); // after DRIVER_OK
    assert_eq!(
        r.rd(VIRTIO_MMIO_QUEUE_NUM_MAX),
        16,
        "selection did not move"
    );
    let qs = &r.dev.lock().unwrap().activations[0].1;
    assert_eq!(qs[0], (0, true, 8, false));
    assert!(!qs[1].1, "queue 1 was never made ready");
}

#[test]
fn a_queue_outside_guest_memory_needs_reset_without_activating() {
    let mut r = rig();
    r.negotiate(VERSION_1);
    r.queue(0, 16, 0xff_f000); // the used ring would lie past the end of the 1 MiB memory
    r.status(Rig::ALL);
    assert_eq!(r.t.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert!(r.dev.lock().unwrap().activations.is_empty());
    assert_eq!(r.rd(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(r.irqs.load(Ordering::Relaxed), 1);
    assert_eq!(r.t.counters().failed_activations, 1);
}

#[test]
fn failed_activation_needs_reset_and_reset_recovers() {
    let mut r = rig();
    r.dev.lock().unwrap().fail_activation = true;
    r.bring_up();
    assert_eq!(r.t.status(), Rig::ALL | DEVICE_NEEDS_RESET);
    r.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0); // still allowed, harmless
    // Linux's virtio_add_status writes back what it read, plus FAILED.
    r.status(Rig::ALL | DEVICE_NEEDS_RESET | FAILED);
    assert_eq!(r.t.status(), Rig::ALL | DEVICE_NEEDS_RESET | FAILED);
    r.status(0);
    assert_eq!(r.t.status(), 0);
    assert_eq!(r.rd(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_eq!(r.dev.lock().unwrap().resets, 1);
    assert_eq!(
        r.t.queue_events()[0].read().ok(),
        None,
        "stale kicks were dropped"
    );
    r.dev.lock().unwrap().fail_activation = false;
    r.bring_up();
    assert_eq!(r.t.status(), Rig::ALL);
    assert_eq!(r.dev.lock().unwrap().activations.len(), 1);
}

#[test]
fn reset_returns_registers_to_their_initial_values() {
    let mut r = rig();
    r.bring_up();
    r.status(0);
    r.negotiate(VERSION_1);
    r.wr(VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(
        r.rd(VIRTIO_MMIO_QUEUE_READY),
        0,
        "queues start unready again"
    );
    r.wr(VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(r.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 32);
    assert_eq!(r.t.counters().resets, 1);
}

#[test]
fn a_device_that_requests_reset_shows_it_in_status() {
    let mut r = rig();
    r.bring_up();
    r.t.signals.request_reset().unwrap();
    assert_eq!(r.t.status(), Rig::ALL | DEVICE_NEEDS_RESET);
    r.status(0);
    assert_eq!(r.t.status(), 0);
}

#[test]
fn config_space_passes_through_unless_failed() {
    let mut r = rig();
    r.t.write(0x100, &[1, 2]); // before ACKNOWLEDGE: the device decides
    let mut b = [0u8; 2];
    r.t.read(0x100, &mut b);
    assert_eq!(b, [1, 2]);
    r.status(FAILED);
    r.t.write(0x100, &[3, 4]);
    r.t.read(0x100, &mut b);
    assert_eq!(b, [1, 2], "refused after FAILED");
    r.status(0);
    r.status(ACKNOWLEDGE);
    r.status(ACKNOWLEDGE | DRIVER);
    r.t.write(0x101, &[7, 8]);
    let mut b = [0u8; 4];
    r.t.read(0x100, &mut b);
    assert_eq!(b, [1, 7, 8, 0]);
    r.t.read(0x106, &mut b);
    assert_eq!(b, [0, 0, 0, 0], "bytes past the config space read as zero");
}

#[test]
fn unknown_and_misaligned_registers_are_refused() {
    let mut r = rig();
    let mut b = [0xffu8; 4];
    r.t.read(0x0c8, &mut b);
    assert_eq!(b, [0; 4]);
    r.t.read(0x002, &mut b);
    r.t.write(0x0c8, &[0; 4]);
    assert_eq!(r.t.counters().refused_accesses, 3);
}

#[test]
fn a_misaligned_ring_address_is_refused_and_its_queue_cannot_go_live() {
    for (reg, off) in [
        (VIRTIO_MMIO_QUEUE_DESC_LOW, 8),
        (VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x1001),
        (VIRTIO_MMIO_QUEUE_USED_LOW, 0x2002),
    ] {
        let mut r = rig();
        r.negotiate(VERSION_1);
        r.queue(0, 16, 0x1_0000);
        r.wr(reg, 0x1_0000 + off);
        assert_eq!(r.t.counters().refused_accesses, 1, "{reg:#x}");
        r.status(Rig::ALL);
        assert_eq!(
            r.t.status() & DEVICE_NEEDS_RESET,
            DEVICE_NEEDS_RESET,
            "{reg:#x}"
        );
        assert!(r.dev.lock().unwrap().activations.is_empty(), "{reg:#x}");
        // A reset forgets it: the same queue with aligned rings goes live.
        r.status(0);
        r.negotiate(VERSION_1);
        r.queue(0, 16, 0x1_0000);
        r.status(Rig::ALL);
        assert_eq!(r.t.status() & DEVICE_NEEDS_RESET, 0, "{reg:#x}");
        assert_eq!(r.dev.lock().unwrap().activations.len(), 1, "{reg:#x}");
    }
}
