//! The KVM virtual machine monitor of perimeter.
//!
//! Empty for now: the machine, the vCPU threads and the `perimeter` command arrive with
//! the VMM issue. It depends on `device-model`, which depends on `streams`.
#![deny(missing_docs)]
