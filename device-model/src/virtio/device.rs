//! The interface between a virtio device and its transport.

use super::Signals;
use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// One queue handed to a device at activation.
pub struct ActiveQueue {
    /// Its index.
    pub index: u16,
    /// The queue as the driver configured it (ready or not; the device decides what to use).
    pub queue: Queue,
    /// Signalled when the driver notifies this queue (an ioeventfd under KVM).
    pub notify: EventFd,
}

/// Everything a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// Every queue, in index order.
    pub queues: Vec<ActiveQueue>,
    /// How to interrupt the driver or ask for a reset.
    pub signals: Arc<Signals>,
}

/// Why a device refused to start; the transport then sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
#[error("device could not start: {0}")]
pub struct ActivateError(pub String);

/// A virtio device, independent of the transport that carries it.
pub trait VirtioDevice: Send {
    /// The device ID (virtio 1.2 §5, e.g. 3 for a console).
    fn device_type(&self) -> u32;
    /// The largest size of each queue; the slice's length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits offered.
    fn features(&self) -> u64;
    /// Reads the device configuration space at `offset` (bytes outside it read as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space at `offset` (writes outside it are ignored).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops the device and returns it to its state before activation.
    fn reset(&mut self);
}
