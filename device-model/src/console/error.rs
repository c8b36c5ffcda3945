//! Why a console could not be made, or its ports could not be started, plugged or removed:
//! one error type for the device, its runtime and its backends.

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
    /// The ports asked for do not make a console (their names, their number, a console
    /// port that cannot be one).
    #[error("{0}")]
    Ports(String),
    /// A port asks for a STREAMS module that does not exist.
    #[error("no module {0:?}")]
    NoModule(String),
    /// A port's backend could not start (a file, socket, pty, stdio or thread).
    #[error("port {port}: {what}: {source}")]
    Backend {
        /// The port.
        port: String,
        /// What could not be done, with the path it was done to.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command named a port the console does not have.
    #[error("no port {0}")]
    NoPort(u32),
    /// A port to plug in is plugged in already, or one to remove is not plugged in.
    #[error("port {port} is {state}")]
    Plugged {
        /// The port.
        port: String,
        /// "already plugged in" or "not plugged in".
        state: &'static str,
    },
}
