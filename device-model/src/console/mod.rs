//! virtio-console (virtio 1.2 §5.3, device ID 3), multiport, built from STREAMS.
//!
//! Each port is a [`streams::Stream`]: its head is the port's backend, its driver instance is
//! the port's pair of virtqueues, and modules may be pushed between them. A control stream on
//! the same driver carries the control queues.
//!
//! | part | what it holds |
//! |---|---|
//! | `device` | [`Console`], the virtio device: features, configuration space, activation, reset |
//! | `shared` | the state the device, its driver instances, the event loop and backends share |
//! | `handle` | [`ConsoleHandle`], what the event loop, backends and control socket hold |
//! | `events` | the event loop's side: queue notifications and backend readiness |
//! | `runtime` | [`ConsoleRuntime`]: the device, its STREAMS instance and backends, started |
//! | `driver` | the port driver: the data paths between rings and stream heads |
//! | `control` | the control queues: the port handshake, hot plug, console size |
//! | `poll` | transmit polling: a notification starts a period of watching every ring |
//! | `port`, `ring`, [`lent`] | a port's shared state, a virtqueue's device side, guest buffers lent to messages |
//! | [`backend`] | where a port's bytes go on the host: stdio, sockets, pty, files, null, pattern, echo |
//! | [`modules`] | STREAMS modules a port may push (`pass`, `crlf`) |
//! | [`stages`] | the host's stamps of a port's data path, for a guest's round-trip breakdown |
//! | [`stats`] | counters and their report |
//! | [`defs`] | the wire format (shared with the guest) and the device's own queue size |
//! | `error` | [`ConsoleError`]: why a console could not be made |

pub mod backend;
mod control;
pub mod defs;
mod device;
mod driver;
mod error;
mod events;
mod handle;
pub mod lent;
pub mod modules;
mod poll;
mod port;
mod ring;
mod runtime;
mod shared;
pub mod stages;
pub mod stats;
#[cfg(test)]
mod tests;

pub use device::{Console, EMERG_MAX, RX_HIWAT};
pub use driver::{HEAD_HIWAT, HEAD_LOWAT};
pub use error::ConsoleError;
pub use events::ConsoleEvents;
pub use handle::ConsoleHandle;
pub use poll::DEFAULT_IDLE as DEFAULT_TX_POLL;
pub use port::{PortConfig, PortShared};
pub use runtime::ConsoleRuntime;
pub use stats::{ConsoleStats, PortCounters, PortStats};

pub(crate) use shared::Shared;
