//! Generic virtio pieces: the device trait, the interrupt/status link between a device and its
//! transport, the virtio-mmio transport, and the device side of the packed virtqueue (not yet
//! offered to guests). Nothing here knows which device it carries.

pub mod device;
pub mod mmio;
pub mod packed;
pub mod signals;

pub use device::{ActivateError, Activation, ActiveQueue, VirtioDevice};
pub use mmio::{MmioTransport, TransportCounters};
pub use signals::Signals;

/// Device status bits (virtio 1.2 §2.1), as `u32` register values.
pub mod status {
    use virtio_bindings::virtio_config as c;
    /// The guest has noticed the device.
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    /// The driver is ready: the device is live.
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// The guest gave up on the device.
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// Feature bits every device of ours offers (virtio 1.2 §6).
pub mod features {
    use virtio_bindings::{virtio_config as c, virtio_ring as r};
    /// VIRTIO_F_VERSION_1: the modern interface (required by our transport).
    pub const VERSION_1: u64 = 1 << c::VIRTIO_F_VERSION_1;
    /// VIRTIO_RING_F_EVENT_IDX: used/avail event suppression.
    pub const EVENT_IDX: u64 = 1 << r::VIRTIO_RING_F_EVENT_IDX;
    /// VIRTIO_RING_F_INDIRECT_DESC: indirect descriptor tables.
    pub const INDIRECT_DESC: u64 = 1 << r::VIRTIO_RING_F_INDIRECT_DESC;
}
