//! Why a driver could not bring its device up: one error type for every probe.

use core::fmt;

/// A probe's failure: the device is missing, refused a step of initialisation, or the guest
/// ran out of memory for its rings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// No device of this kind on the virtio-mmio bus (its name).
    NoDevice(&'static str),
    /// The device does not offer VIRTIO_F_VERSION_1.
    NotVersion1,
    /// The device cleared FEATURES_OK after the driver wrote its features.
    FeaturesRefused,
    /// The device lacks features the driver needs (which, and why they matter).
    MissingFeatures(&'static str),
    /// A queue is smaller than the driver needs, or its size is not a power of two.
    QueueSize {
        /// The queue's index.
        queue: u16,
        /// The size the driver asked for.
        wanted: u16,
    },
    /// The device set NEEDS_RESET right after DRIVER_OK.
    NeedsReset,
    /// No memory for the named rings or buffers.
    OutOfMemory(&'static str),
    /// The device interrupted without publishing the used buffer asked for.
    NoUsedBuffer,
    /// The STREAMS framework refused a step (what the driver was doing, and why).
    Streams(&'static str, streams::Error),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::NoDevice(what) => write!(f, "no {what} device"),
            ProbeError::NotVersion1 => f.write_str("device does not offer VIRTIO_F_VERSION_1"),
            ProbeError::FeaturesRefused => f.write_str("device refused FEATURES_OK"),
            ProbeError::MissingFeatures(what) => write!(f, "the device lacks {what}"),
            ProbeError::QueueSize { queue, wanted } => {
                write!(f, "queue {queue} cannot take {wanted} entries")
            }
            ProbeError::NeedsReset => f.write_str("device needs reset after DRIVER_OK"),
            ProbeError::OutOfMemory(what) => write!(f, "out of memory for {what}"),
            ProbeError::NoUsedBuffer => f.write_str("interrupt without a used buffer"),
            ProbeError::Streams(what, e) => write!(f, "{what}: {e}"),
        }
    }
}
