//! Why a console could not be made.

use super::defs::MAX_PORTS;

/// Why a console could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No port, or more than [`MAX_PORTS`].
    #[error("a console has 1 to {MAX_PORTS} ports, not {0}")]
    PortCount(usize),
    /// Two ports share a name.
    #[error("two ports are named {0:?}")]
    DuplicateName(String),
    /// The STREAMS framework refused (a stream could not be opened or a module pushed).
    #[error("port {port}: {what}: {error}")]
    Streams {
        /// The port.
        port: String,
        /// What was being done.
        what: &'static str,
        /// The framework's error.
        error: streams::Error,
    },
    /// The transmit poller's thread could not be started.
    #[error("cannot start the transmit poller: {0}")]
    Thread(std::io::Error),
}
