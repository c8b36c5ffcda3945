//! The virtio-console device model of perimeter.
//!
//! Empty for now: the device, its MMIO transport and its backends arrive with the
//! console-device issue. It depends on [`streams`] only, never on KVM.
#![deny(missing_docs)]
