//! The device model of perimeter: the virtio-mmio transport, the virtio-console device built
//! from STREAMS, and a virtio-rng.
//!
//! Nothing here needs KVM: the transport runs against any [`virtio::VirtioDevice`] and plain
//! guest memory (`vm-memory`), so everything is tested with mock devices and mock rings.
#![deny(missing_docs)]

pub mod console;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod logging;
pub mod rng;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod virtio;
