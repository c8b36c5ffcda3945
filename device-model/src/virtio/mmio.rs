//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), for any [`VirtioDevice`].
//!
//! Status is a state machine: the driver may only add the next bit of
//! ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK, set FAILED at any time, or write 0 to reset.
//! Every other status write is refused (the register keeps its value). Registers are guarded by
//! status: feature selection only while DRIVER is set and FEATURES_OK is not; queue set-up only
//! after FEATURES_OK and before DRIVER_OK; InterruptACK only after DRIVER_OK; configuration
//! writes only after DRIVER. Refused writes change nothing and are counted; a misaligned ring
//! address is refused too, and its queue cannot be activated until the next reset.
//!
//! FEATURES_OK is refused when the driver accepted a feature that was not offered or did not
//! accept VIRTIO_F_VERSION_1. At DRIVER_OK the transport checks every ready queue against guest
//! memory and activates the device; if either fails it sets DEVICE_NEEDS_RESET and raises a
//! configuration interrupt, and the driver must reset.
//!
//! Queue notifications: under KVM each queue's QueueNotify write is an ioeventfd (datamatch = the
//! queue index) that the device receives at activation in [`ActiveQueue::notify`]; a write that
//! still reaches [`MmioTransport::write`] signals the same eventfd.

use super::device::{ActivateError, Activation, ActiveQueue, VirtioDevice};
use super::features::VERSION_1;
use super::signals::Signals;
use super::status::*;
use crate::logging::limited;
use std::io;
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// "virt", MagicValue.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The transport version we implement (modern).
pub const MMIO_VERSION: u32 = 2;
/// VendorID we report: "PRMT".
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"PRMT");

/// Counters of what the driver did that the transport refused or acted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportCounters {
    /// Register accesses refused: bad width or alignment, unknown register, wrong status.
    pub refused_accesses: u64,
    /// Status writes refused by the state machine.
    pub refused_transitions: u64,
    /// Successful activations.
    pub activations: u64,
    /// Activations that ended in DEVICE_NEEDS_RESET.
    pub failed_activations: u64,
    /// Resets (status written with 0).
    pub resets: u64,
    /// Times the device set DEVICE_NEEDS_RESET (a broken ring, a failed activation).
    pub reset_requests: u64,
}

/// A virtio-mmio transport carrying one device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    /// The device's type (virtio device ID), for the log.
    device_type: u32,
    mem: GuestMemoryMmap,
    signals: Arc<Signals>,
    notify: Vec<EventFd>,
    queues: Vec<Queue>,
    /// Queues given a misaligned ring address since the last reset: they cannot be activated.
    misaligned: Vec<bool>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    counters: TransportCounters,
}

fn queues_for(device: &dyn VirtioDevice) -> Vec<Queue> {
    device
        .queue_max_sizes()
        .iter()
        // A zero maximum is a device bug; such a queue can never be made valid.
        .map(|&max| Queue::new(max).unwrap_or_else(|_| Queue::new(1).expect("size 1 is valid")))
        .collect()
}

impl MmioTransport {
    /// A transport for `device` over `mem`, raising its interrupt through `signals`.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        signals: Arc<Signals>,
    ) -> io::Result<Self> {
        let (queues, n, device_type) = {
            let d = device.lock().unwrap_or_else(|e| e.into_inner());
            (queues_for(&*d), d.queue_max_sizes().len(), d.device_type())
        };
        let notify = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<_>>()?;
        Ok(MmioTransport {
            device,
            device_type,
            mem,
            signals,
            notify,
            misaligned: vec![false; queues.len()],
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            counters: TransportCounters::default(),
        })
    }

    /// One eventfd per queue, signalled on QueueNotify (register them as ioeventfds with
    /// datamatch = the index).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.notify
    }

    /// The Status register as the driver reads it.
    pub fn status(&self) -> u32 {
        if self.signals.needs_reset() {
            self.status | DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// What was refused and done so far.
    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            reset_requests: self.signals.reset_requests(),
            ..self.counters
        }
    }

    /// The device this transport carries.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    fn with_device<R>(&self, f: impl FnOnce(&mut dyn VirtioDevice) -> R) -> R {
        f(&mut *self.device.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn has(&self, set: u32, clear: u32) -> bool {
        let s = self.status();
        s & set == set && s & clear == 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn refuse(&mut self) {
        self.counters.refused_accesses += 1;
        limited!(
            log::Level::Debug,
            "virtio-mmio (device type {}): a register access refused (bad width, offset or \
             status)",
            self.device_type
        );
    }

    fn refuse_transition(&mut self, old: u32, new: u32, why: &str) {
        self.counters.refused_transitions += 1;
        limited!(
            log::Level::Warn,
            "virtio-mmio (device type {}): status {old:#x} -> {new:#x} refused: {why}",
            self.device_type
        );
    }

    /// Handles a read at `offset` from the transport's base.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            let at = offset - u64::from(VIRTIO_MMIO_CONFIG);
            return self.with_device(|d| d.read_config(at, data));
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return self.refuse();
        }
        let q = self.queues.get(self.queue_sel as usize);
        let value = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.with_device(|d| d.device_type()),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => {
                let f = self.with_device(|d| d.features() | VERSION_1);
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            VIRTIO_MMIO_QUEUE_NUM_MAX => q.map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => q.map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.signals.interrupt_status(),
            VIRTIO_MMIO_STATUS => self.status(),
            // No shared memory regions: their length reads as all ones (virtio 1.2 §4.2.2).
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.signals.config_generation(),
            _ => return self.refuse(),
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a write at `offset` from the transport's base.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            // Any time but after FAILED: a console's emergency write may come before the
            // driver has even acknowledged the device (virtio 1.2 §5.3.6.1).
            if self.status() & FAILED != 0 {
                return self.refuse();
            }
            let at = offset - u64::from(VIRTIO_MMIO_CONFIG);
            return self.with_device(|d| d.write_config(at, data));
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return self.refuse();
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let features_open = self.has(
            ACKNOWLEDGE | DRIVER,
            FEATURES_OK | FAILED | DEVICE_NEEDS_RESET,
        );
        let queues_open = self.has(FEATURES_OK, DRIVER_OK | FAILED | DEVICE_NEEDS_RESET);
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL if features_open => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL if features_open => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES if features_open => match self.driver_features_sel {
                0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => self.refuse(),
            },
            VIRTIO_MMIO_QUEUE_SEL if queues_open => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM if queues_open => {
                let ok = u16::try_from(v)
                    .ok()
                    .and_then(|n| self.selected_queue().map(|q| q.try_set_size(n).is_ok()));
                if ok != Some(true) {
                    self.refuse();
                }
            }
            VIRTIO_MMIO_QUEUE_READY if queues_open => match self.selected_queue() {
                Some(q) => q.set_ready(v == 1),
                None => self.refuse(),
            },
            VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH
                if queues_open =>
            {
                self.set_queue_address(offset as u32, v)
            }
            VIRTIO_MMIO_QUEUE_NOTIFY if self.has(DRIVER_OK, 0) => match self.notify.get(v as usize)
            {
                Some(fd) => {
                    let _ = fd.write(1);
                }
                None => self.refuse(),
            },
            VIRTIO_MMIO_INTERRUPT_ACK if self.has(DRIVER_OK, 0) => self.signals.ack(v),
            VIRTIO_MMIO_STATUS => self.set_status(v),
            _ => self.refuse(),
        }
    }

    fn set_queue_address(&mut self, reg: u32, v: u32) {
        let sel = self.queue_sel as usize;
        let Some(q) = self.queues.get_mut(sel) else {
            return self.refuse();
        };
        let (lo, hi) = if reg.is_multiple_of(8) {
            (Some(v), None)
        } else {
            (None, Some(v))
        };
        // Split-ring alignment (virtio 1.2 §2.7): virtio-queue ignores a misaligned address and
        // keeps the old one, so the transport refuses it here and the queue cannot go live.
        let align = match reg {
            VIRTIO_MMIO_QUEUE_DESC_LOW => 16,
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => 2,
            VIRTIO_MMIO_QUEUE_USED_LOW => 4,
            _ => 1,
        };
        if !v.is_multiple_of(align) {
            self.misaligned[sel] = true;
            return self.refuse();
        }
        match reg {
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                q.set_desc_table_address(lo, hi)
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                q.set_avail_ring_address(lo, hi)
            }
            _ => q.set_used_ring_address(lo, hi),
        }
    }

    fn set_status(&mut self, new: u32) {
        // Drivers write back what they read plus a bit; DEVICE_NEEDS_RESET is ours, not theirs.
        let new = new & !DEVICE_NEEDS_RESET;
        if new == 0 {
            return self.reset();
        }
        let old = self.status;
        if new == old | FAILED {
            self.status = new;
            return;
        }
        // The initialization steps in order. A write may take several at once (virtio-drivers
        // sets ACKNOWLEDGE | DRIVER in one write), but only the next ones, none skipped.
        const STEPS: [u32; 4] = [ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK];
        let done = STEPS.iter().take_while(|&&b| old & b != 0).count();
        let prefix = |n: usize| STEPS[..n].iter().fold(0, |m, b| m | b);
        let target = (done + 1..=STEPS.len()).find(|&n| prefix(n) == new);
        let Some(target) = target.filter(|_| old == prefix(done) && !self.signals.needs_reset())
        else {
            let why = if self.signals.needs_reset() {
                "the device needs a reset first"
            } else {
                "not the next initialization step"
            };
            return self.refuse_transition(old, new, why);
        };
        for &step in &STEPS[done..target] {
            match step {
                FEATURES_OK => {
                    let offered = self.with_device(|d| d.features()) | VERSION_1;
                    if self.acked_features & !offered != 0 || self.acked_features & VERSION_1 == 0 {
                        let why = "the driver accepted features not offered, or not VERSION_1";
                        return self.refuse_transition(old, new, why);
                    }
                    self.status |= step;
                }
                DRIVER_OK => {
                    self.status |= step;
                    self.activate();
                }
                _ => self.status |= step,
            }
        }
    }

    fn activate(&mut self) {
        let event_idx = self.acked_features & super::features::EVENT_IDX != 0;
        let bad_queue = self
            .queues
            .iter()
            .zip(&self.misaligned)
            .position(|(q, &misaligned)| q.ready() && (misaligned || !q.is_valid(&self.mem)));
        let result = match bad_queue {
            Some(i) => Err(ActivationFailure::BadQueue(i)),
            None => self.start_device(event_idx),
        };
        match result {
            Ok(()) => {
                self.counters.activations += 1;
                log::debug!("virtio-mmio (device type {}): activated", self.device_type);
            }
            Err(e) => {
                self.counters.failed_activations += 1;
                limited!(
                    log::Level::Warn,
                    "virtio-mmio (device type {}): DRIVER_OK did not start the device: {e}; the \
                     driver is asked to reset",
                    self.device_type
                );
                // The interrupt is best effort: the driver also sees the status bit.
                let _ = self.signals.request_reset();
            }
        }
    }

    fn start_device(&mut self, event_idx: bool) -> Result<(), ActivationFailure> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            // The transport keeps its own copy: QueueReady and friends stay readable.
            let mut queue =
                Queue::try_from(q.state()).map_err(|e| ActivationFailure::Queue(i, e))?;
            queue.set_event_idx(event_idx);
            let notify = self.notify[i]
                .try_clone()
                .map_err(|e| ActivationFailure::Notify(i, e))?;
            queues.push(ActiveQueue {
                index: i as u16,
                queue,
                notify,
            });
        }
        let activation = Activation {
            mem: self.mem.clone(),
            acked_features: self.acked_features,
            queues,
            signals: self.signals.clone(),
        };
        Ok(self.with_device(|d| d.activate(activation))?)
    }

    fn reset(&mut self) {
        self.with_device(|d| d.reset());
        self.queues = self.with_device(|d| queues_for(d));
        self.misaligned = vec![false; self.queues.len()];
        for fd in &self.notify {
            let _ = fd.read(); // drop stale kicks (EAGAIN when there are none)
        }
        self.signals.clear();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.counters.resets += 1;
    }
}

/// Why DRIVER_OK did not start the device: counted in `failed_activations`, and the driver
/// is asked to reset.
#[derive(Debug, thiserror::Error)]
enum ActivationFailure {
    /// A ready queue does not fit in guest memory, has a bad size or a misaligned ring.
    #[error("queue {0} does not fit in guest memory, has a bad size or a misaligned ring")]
    BadQueue(usize),
    /// virtio-queue refused a queue's state.
    #[error("queue {0}: {1}")]
    Queue(usize, virtio_queue::Error),
    /// A queue's notification eventfd could not be duplicated.
    #[error("queue {0}'s notification eventfd: {1}")]
    Notify(usize, io::Error),
    /// The device refused to start.
    #[error(transparent)]
    Device(#[from] ActivateError),
}

#[cfg(test)]
mod tests;
