//! The device model of perimeter: the generic virtio-mmio transport now, the virtio-console
//! device built from STREAMS next (issue 4).
//!
//! Nothing here needs KVM: the transport runs against any [`virtio::VirtioDevice`] and plain
//! guest memory (`vm-memory`), so everything is tested with mock devices and mock rings.
#![deny(missing_docs)]

pub mod rng;
pub mod virtio;
