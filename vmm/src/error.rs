//! Errors and outcomes of a VM run, and the process exit statuses they map to.

use std::io;
use thiserror::Error;

/// Exit status for a bad command line or unusable input (kernel file, memory size, ...).
pub const STATUS_BAD_INPUT: u8 = 120;
/// Exit status for a host-side failure (KVM missing, an ioctl failing, ...).
pub const STATUS_HOST_FAILURE: u8 = 121;
/// Exit status for a guest crash (triple fault, emulation failure, unexpected exception).
pub const STATUS_GUEST_CRASH: u8 = 122;
/// Exit status when the guest reported an exit code above `EXIT_CODE_MAX`.
pub const STATUS_BAD_EXIT_CODE: u8 = 123;
/// Exit status when `--timeout` expired (the same as coreutils' `timeout`).
pub const STATUS_TIMEOUT: u8 = 124;

/// Why a VM could not be built or run.
#[derive(Debug, Error)]
pub enum Error {
    /// The user asked for something that cannot work.
    #[error("{0}")]
    BadInput(String),
    /// The kernel image could not be read.
    #[error("cannot read kernel {path}: {source}")]
    KernelFile {
        /// The path given.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The kernel image is not a loadable ELF.
    #[error("cannot load kernel {path}: {reason}")]
    KernelFormat {
        /// The path given (or "the embedded guest").
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you in the kvm group?)")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which operation.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// A device could not be placed where perimeter's layout puts it.
    #[error("device layout: {0}")]
    Bus(#[from] crate::bus::BusError),
    /// The control socket could not listen where `--control` asked.
    #[error("--control {}: {source}", path.display())]
    Control {
        /// The path given.
        path: std::path::PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// COM1's backend could not be opened where `--serial` asked.
    #[error("--serial {what}: {source}")]
    Serial {
        /// The backend and what failed.
        what: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The `--metrics` file could not be opened.
    #[error("--metrics {}: {source}", path.display())]
    Metrics {
        /// The path given.
        path: std::path::PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A host resource (thread, eventfd, memory mapping) could not be had.
    #[error("{what}: {source}")]
    Host {
        /// Which resource.
        what: &'static str,
        /// What the OS said.
        source: io::Error,
    },
}

impl Error {
    /// The process exit status this error maps to.
    pub fn status(&self) -> u8 {
        match self {
            Error::BadInput(_)
            | Error::KernelFile { .. }
            | Error::KernelFormat { .. }
            | Error::Bus(_)
            | Error::Control { .. }
            | Error::Serial { .. }
            | Error::Metrics { .. } => STATUS_BAD_INPUT,
            Error::KvmUnavailable(_) | Error::Kvm { .. } | Error::Host { .. } => {
                STATUS_HOST_FAILURE
            }
        }
    }

    /// Wraps a KVM errno with the operation that failed.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { what, source }
    }

    /// Wraps an OS error with the resource that failed.
    pub fn host(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Host { what, source }
    }
}

/// How a guest run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote its exit code to the debug page (or port 0xf4).
    Exited(u32),
    /// The guest crashed; the reason is one line.
    Crashed(String),
    /// `--timeout` expired first.
    TimedOut(std::time::Duration),
    /// SIGINT, SIGTERM or SIGHUP (its number) stopped the run.
    Signalled(i32),
    /// A control socket client asked for `shutdown`.
    Shutdown,
    /// The user pressed `Ctrl-A x` on a `stdio` port's terminal.
    Quit,
}

impl Outcome {
    /// The process exit status: the guest's code, or one of the `STATUS_*` values.
    pub fn status(&self) -> u8 {
        match self {
            Outcome::Exited(code) if *code <= guest_abi::EXIT_CODE_MAX => *code as u8,
            Outcome::Exited(_) => STATUS_BAD_EXIT_CODE,
            Outcome::Crashed(_) => STATUS_GUEST_CRASH,
            Outcome::TimedOut(_) => STATUS_TIMEOUT,
            Outcome::Signalled(sig) => (128 + sig) as u8,
            Outcome::Shutdown | Outcome::Quit => 0,
        }
    }

    /// A one-line reason for stderr, or `None` for a normal exit.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Exited(code) if *code <= guest_abi::EXIT_CODE_MAX => None,
            Outcome::Exited(code) => Some(format!(
                "guest exited with code {code}, above the largest passed through ({})",
                guest_abi::EXIT_CODE_MAX
            )),
            Outcome::Crashed(why) => Some(format!("guest crashed: {why}")),
            Outcome::TimedOut(t) => {
                Some(format!("guest did not exit within {} s", t.as_secs_f64()))
            }
            Outcome::Signalled(sig) => Some(format!(
                "stopped by {} (exit status {})",
                crate::signals::name(*sig),
                128 + sig
            )),
            Outcome::Shutdown => Some("stopped by the control socket's shutdown".into()),
            Outcome::Quit => Some("stopped from the terminal (Ctrl-A x)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses_are_distinct_and_above_guest_codes() {
        let s = [
            STATUS_BAD_INPUT,
            STATUS_HOST_FAILURE,
            STATUS_GUEST_CRASH,
            STATUS_BAD_EXIT_CODE,
            STATUS_TIMEOUT,
        ];
        for (i, a) in s.iter().enumerate() {
            assert!(u32::from(*a) > guest_abi::EXIT_CODE_MAX);
            assert!(!s[i + 1..].contains(a));
        }
    }

    #[test]
    fn outcomes_map_to_statuses() {
        assert_eq!(Outcome::Exited(0).status(), 0);
        assert_eq!(Outcome::Exited(0).reason(), None);
        assert_eq!(Outcome::Exited(119).status(), 119);
        assert_eq!(Outcome::Exited(200).status(), STATUS_BAD_EXIT_CODE);
        assert_eq!(Outcome::Crashed("x".into()).status(), STATUS_GUEST_CRASH);
        let t = Outcome::TimedOut(Duration::from_secs(2));
        assert_eq!(t.status(), STATUS_TIMEOUT);
        assert!(t.reason().unwrap().contains("2 s"));
    }
}
