//! The crate's error type.

use core::fmt;

/// A UNIX error number, as STREAMS routines return them (`open` failing with `EINVAL`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// I/O error.
    pub const EIO: Errno = Errno(5);
    /// No such device or address (hang-up).
    pub const ENXIO: Errno = Errno(6);
    /// Resource temporarily unavailable (flow-controlled write).
    pub const EAGAIN: Errno = Errno(11);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Device busy.
    pub const EBUSY: Errno = Errno(16);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
}

/// Everything that can go wrong in a call into the framework.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A module or driver definition has an invalid combination of MT flags.
    BadMtFlags(u32),
    /// A routine was called from a context its man page does not allow.
    WrongContext {
        /// The routine called.
        call: &'static str,
        /// The context it was called from.
        context: &'static str,
    },
    /// The queue is not linked into its stream (qprocson not called yet, or qprocsoff done).
    NotLinked(&'static str),
    /// qwriter with a perimeter value that is neither PERIM_INNER nor PERIM_OUTER.
    BadPerimeter(u32),
    /// qwriter(PERIM_OUTER) on a module without an outer perimeter.
    NoOuterPerimeter,
    /// A close blocked or called qprocsoff while qtimeout/qbufcall requests were outstanding.
    CallbacksOutstanding(usize),
    /// An open returned success without calling qprocson.
    OpenWithoutQprocson(&'static str),
    /// A close returned without calling qprocsoff (the framework did it).
    CloseWithoutQprocsoff(&'static str),
    /// qwait with an outer perimeter that open/close holds only shared (no D_MTOCEXCL).
    QwaitOuterShared,
    /// A message or buffer could not be allocated.
    NoBuffer,
    /// insq would break the queue's priority order.
    InsqOutOfOrder,
    /// A message operation was given data it cannot handle (bad length, shared block written).
    BadMessage(&'static str),
    /// The stream has no module to pop.
    NoModule,
    /// An open or close routine failed with this error number.
    Errno(Errno),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMtFlags(flags) => write!(f, "bad MT flags {flags:#x}"),
            Error::WrongContext { call, context } => {
                write!(f, "{call} may not be called from {context}")
            }
            Error::NotLinked(call) => write!(
                f,
                "{call} on a queue that is not linked (qprocson not done)"
            ),
            Error::BadPerimeter(p) => write!(
                f,
                "qwriter with perimeter {p} (neither PERIM_INNER nor PERIM_OUTER)"
            ),
            Error::NoOuterPerimeter => write!(f, "qwriter(PERIM_OUTER) without an outer perimeter"),
            Error::CallbacksOutstanding(n) => {
                write!(
                    f,
                    "close blocked or called qprocsoff with {n} qtimeout/qbufcall requests outstanding"
                )
            }
            Error::OpenWithoutQprocson(m) => {
                write!(f, "open of {m} returned without calling qprocson")
            }
            Error::CloseWithoutQprocsoff(m) => {
                write!(f, "close of {m} returned without calling qprocsoff")
            }
            Error::QwaitOuterShared => {
                write!(
                    f,
                    "qwait with an outer perimeter held shared (the module needs D_MTOCEXCL)"
                )
            }
            Error::NoBuffer => write!(f, "no buffer available"),
            Error::InsqOutOfOrder => write!(f, "insq would break the queue's priority order"),
            Error::BadMessage(why) => write!(f, "bad message: {why}"),
            Error::NoModule => write!(f, "no module to pop"),
            Error::Errno(e) => write!(f, "error number {}", e.0),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
