//! Device drivers.
//!
//! | part | what it holds |
//! |---|---|
//! | [`virtio_mmio`] | finding a virtio-mmio device, negotiating features, setting up queues |
//! | [`vcon`] | the virtio-console driver, a STREAMS driver: ports as streams, zero-copy rings |
//! | [`virtio_rng`] | a minimal virtio-rng probe (one request, interrupt-driven) |
//! | [`error`] | [`ProbeError`], why a probe failed |

pub mod error;
pub mod vcon;
pub mod virtio_mmio;
pub mod virtio_rng;

pub use error::ProbeError;
