//! What a device tells its driver: "used buffers" and "configuration changed" interrupts, and
//! "I need a reset". Shared between the device (which raises) and the transport (which shows
//! them in InterruptStatus and Status and takes InterruptACK).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

/// Raises the device's interrupt (for KVM: writes an irqfd routed as MSI).
pub type Trigger = Box<dyn Fn() -> io::Result<()> + Send + Sync>;

/// A device's interrupt status, its interrupt line and its needs-reset flag.
pub struct Signals {
    status: AtomicU32,
    needs_reset: AtomicBool,
    generation: AtomicU32,
    reset_requests: AtomicU64,
    trigger: Trigger,
}

impl Signals {
    /// Signals whose interrupt is raised by `trigger`.
    pub fn new(trigger: Trigger) -> Self {
        Signals {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            generation: AtomicU32::new(0),
            reset_requests: AtomicU64::new(0),
            trigger,
        }
    }

    fn raise(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::AcqRel);
        (self.trigger)()
    }

    /// The device put buffers in a used ring.
    pub fn used_buffers(&self) -> io::Result<()> {
        self.raise(VIRTIO_MMIO_INT_VRING)
    }

    /// The device's configuration space changed: a new generation, and an interrupt.
    pub fn config_changed(&self) -> io::Result<()> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.raise(VIRTIO_MMIO_INT_CONFIG)
    }

    /// The ConfigGeneration register: changes whenever the configuration space may have.
    pub fn config_generation(&self) -> u32 {
        self.generation.load(Ordering::Acquire)
    }

    /// The device cannot go on until the driver resets it (sets DEVICE_NEEDS_RESET and raises a
    /// configuration interrupt, virtio 1.2 §2.1.2).
    pub fn request_reset(&self) -> io::Result<()> {
        if !self.needs_reset.swap(true, Ordering::AcqRel) {
            self.reset_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.config_changed()
    }

    /// Times the device asked for a reset it did not already wait for.
    pub fn reset_requests(&self) -> u64 {
        self.reset_requests.load(Ordering::Relaxed)
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Whether the device asked for a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// Back to the state after creation (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::Release);
        self.needs_reset.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("status", &self.interrupt_status())
            .field("needs_reset", &self.needs_reset())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn raise_sets_status_and_triggers_ack_clears() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let s = Signals::new(Box::new(move || {
            n2.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
        s.used_buffers().unwrap();
        s.config_changed().unwrap();
        assert_eq!(s.interrupt_status(), 3);
        s.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(s.interrupt_status(), VIRTIO_MMIO_INT_CONFIG);
        s.request_reset().unwrap();
        assert!(s.needs_reset());
        assert_eq!(n.load(Ordering::Relaxed), 3);
        s.clear();
        assert!(!s.needs_reset());
        assert_eq!(s.interrupt_status(), 0);
    }
}
