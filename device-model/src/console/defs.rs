//! The console's wire format: the definitions shared with the guest (`guest_abi::console`), and
//! what only the device decides.

pub use guest_abi::console::*;

/// Size of every queue this device offers.
pub const QUEUE_SIZE: u16 = 256;
