//! A port's shared state: its rings (the per-port data paths, in the port's inner
//! perimeter), its open flags, and its counters.

use super::lent::Lent;
use super::poll::TxPoll;
use super::ring::Ring;
use super::stages::StageStamps;
use super::stats::PortCounters;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use streams::{CallbackId, QueueRef};

/// A retry the transmit path has scheduled after a failed allocation.
pub(crate) enum Retry {
    /// A qbufcall.
    Bufcall(CallbackId),
    /// A qtimeout (when even qbufcall could not be registered).
    Timeout(CallbackId),
}

/// How a port is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Its name (PORT_NAME; `/sys/class/virtio-ports/*/name` in Linux).
    pub name: String,
    /// Whether it is a console (CONSOLE_PORT: Linux's hvc).
    pub console: bool,
    /// Whether the driver is told about it at start; an unplugged port waits for
    /// [`ConsoleHandle::add_port`](super::ConsoleHandle::add_port) (DEVICE_ADD).
    pub plugged: bool,
}

/// Locks `m`, going on after a panic elsewhere (the data stays consistent: every critical
/// section leaves it valid).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of one port shared by its driver instance, the control plane and the backend.
pub struct PortShared {
    /// Port number.
    pub id: u32,
    /// Set-up.
    pub config: PortConfig,
    /// Counters.
    pub counters: PortCounters,
    /// The receiveq (host to guest), while the device is live.
    pub(crate) rx: Mutex<Option<Ring>>,
    /// The transmitq (guest to host), while the device is live.
    pub(crate) tx: Mutex<Option<Ring>>,
    /// The guest has the port open: host data is delivered only then (always without
    /// MULTIPORT).
    pub(crate) guest_open: AtomicBool,
    /// A client is attached on the host side.
    host_open: AtomicBool,
    /// Host-side events for the control plane: the open state or the size changed, or the
    /// port was removed.
    pub(crate) host_event: AtomicBool,
    /// The port is not plugged in: never added, or removed by the host (DEVICE_REMOVE).
    /// Nothing is delivered to the guest; host data waits until it is added again.
    pub(crate) removed: AtomicBool,
    /// Console size, `cols << 16 | rows`.
    size: AtomicU32,
    /// Bytes from the emergency-write register waiting to go up.
    pub(crate) emerg: Mutex<Vec<u8>>,
    /// The driver instance's read (transmit path) and write (receive path) queues.
    pub(crate) queues: Mutex<Option<(QueueRef, QueueRef)>>,
    /// The retry the transmit path has outstanding, cancelled at close.
    pub(crate) retry: Mutex<Option<Retry>>,
    /// Guest buffers lent to host-side messages.
    pub lent: Lent,
    /// The device's transmit polling (shared by every port).
    pub(crate) poll: Arc<TxPoll>,
    /// Stamps of the port's round trips, while a guest asks for them.
    pub stages: StageStamps,
}

impl PortShared {
    pub(crate) fn new(id: u32, config: PortConfig, poll: Arc<TxPoll>) -> Arc<Self> {
        Arc::new(PortShared {
            id,
            removed: AtomicBool::new(!config.plugged),
            config,
            counters: PortCounters::default(),
            rx: Mutex::new(None),
            tx: Mutex::new(None),
            guest_open: AtomicBool::new(false),
            host_open: AtomicBool::new(false),
            host_event: AtomicBool::new(false),
            size: AtomicU32::new(0),
            emerg: Mutex::new(Vec::new()),
            queues: Mutex::new(None),
            retry: Mutex::new(None),
            lent: Lent::default(),
            poll,
            stages: StageStamps::default(),
        })
    }

    /// Whether the guest has the port open.
    pub fn guest_open(&self) -> bool {
        self.guest_open.load(Ordering::Acquire)
    }

    /// Whether the host removed the port.
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Whether a host client is attached.
    pub fn host_open(&self) -> bool {
        self.host_open.load(Ordering::Acquire)
    }

    /// The console size as (cols, rows); (0, 0) when unknown.
    pub fn size(&self) -> (u16, u16) {
        let s = self.size.load(Ordering::Acquire);
        ((s >> 16) as u16, s as u16)
    }

    pub(crate) fn set_host_open(&self, open: bool) -> bool {
        self.host_open.swap(open, Ordering::AcqRel) != open
    }

    pub(crate) fn set_size(&self, cols: u16, rows: u16) -> bool {
        let v = (u32::from(cols) << 16) | u32::from(rows);
        self.size.swap(v, Ordering::AcqRel) != v
    }

    /// Schedules the transmit path (guest to host) to run.
    pub(crate) fn kick_tx(&self) {
        if let Some((rq, _)) = &*lock(&self.queues) {
            rq.qenable();
        }
    }

    /// Schedules the receive path (host to guest) to run.
    pub(crate) fn kick_rx(&self) {
        if let Some((_, wq)) = &*lock(&self.queues) {
            wq.qenable();
        }
    }
}
