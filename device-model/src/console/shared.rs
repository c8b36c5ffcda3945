//! The state the device, its driver instances, the event loop and the backends share.

use super::control::{CtlState, Staged};
use super::driver::Role;
use super::poll;
use super::port::{PortShared, lock};
use super::stats::PortCounters;
use crate::virtio::Signals;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use streams::{Mblk, QueueRef, Streams};

/// State shared by the device, its driver instances, the event loop and the backends.
pub(crate) struct Shared {
    pub ports: Vec<Arc<PortShared>>,
    /// Transmit polling, shared with every port.
    pub poll: Arc<poll::TxPoll>,
    /// Device-wide control state: only the outer perimeter's writer touches it.
    pub ctl: Mutex<CtlState>,
    /// Control work asked for ([`control`]'s bits).
    pub pending: AtomicU32,
    /// The message the control plane's qwriter carries (present while no writer runs).
    pub token: Mutex<Option<Mblk>>,
    /// The control stream's write queue (its service procedure starts the writer).
    pub ctl_wq: Mutex<Option<QueueRef>>,
    /// Control rings handed over by the last activation or reset.
    pub staged: Mutex<Option<Staged>>,
    /// The live interrupt line.
    pub signals: Mutex<Option<Arc<Signals>>>,
    pub control_in: AtomicU64,
    pub control_out: AtomicU64,
    pub control_ignored: AtomicU64,
    /// Messages in the control backlog as the control plane last left it.
    pub control_backlog: AtomicU64,
    pub ctl_counters: PortCounters,
    pub streams: Streams,
    /// What a user's request to end the run does (set by the VMM; `Ctrl-A x` on a terminal).
    pub quit: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

/// The device number the control stream is opened on (port `i`'s stream on device `i`).
pub const CONTROL_DEV: u32 = super::defs::MAX_PORTS;

impl Shared {
    /// What a driver instance opened on device `dev` serves: a port, the control queues, or
    /// nothing (a device this console does not have).
    pub fn role_of(self: &Arc<Self>, dev: u32) -> Role {
        if dev == CONTROL_DEV {
            return Role::Control(self.clone());
        }
        self.ports
            .get(dev as usize)
            .map_or(Role::Unbound, |p| Role::Port(p.clone()))
    }

    /// Asks the control plane for `bits` of work.
    pub fn control(&self, bits: u32) {
        self.pending.fetch_or(bits, Ordering::AcqRel);
        if let Some(wq) = &*lock(&self.ctl_wq) {
            wq.qenable();
        }
    }
}
