//! Devices of the VM that are not virtio devices.

pub mod debug;
pub mod serial;
pub mod virtio_mmio;
