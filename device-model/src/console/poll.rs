//! Transmit polling: the device side of batching, as vhost's busy polling does it.
//!
//! A notification on any port's transmit queue starts a polling period. While it lasts the
//! device asks for no notifications (a transmit pass that empties a ring leaves it unarmed,
//! so the driver's EVENT_IDX check, or NO_NOTIFY without it, skips the kick) and a poller
//! thread watches every port's transmit ring, scheduling a port's transmit path whenever its
//! avail index moves. Once no ring has moved for the idle time, the poller re-arms every ring
//! and looks once more: a chain made available while it stopped is taken then, and any later
//! one notifies. A guest writing to many ports in turn thus pays one notification per burst,
//! not one per message.
//!
//! No lost wake-up: the transmit path reads [`TxPoll::active`] under the ring's lock, and the
//! poller clears it before it takes each ring's lock to re-arm that ring. A transmit pass that
//! saw it set and left its ring unarmed had released the lock before the poller took it, so
//! the poller re-arms the ring after it; a pass that comes later sees it clear and re-arms the
//! ring itself.

use super::port::{PortShared, lock};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the poller goes on after the last ring moved, unless set otherwise.
pub const DEFAULT_IDLE: Duration = Duration::from_micros(50);

/// The pause after a sweep that found rings moving (the kernel's timer slack adds to it).
const SWEEP_PAUSE: Duration = Duration::from_micros(10);

/// The device-wide polling state, shared by the transmit paths and the poller thread.
pub struct TxPoll {
    active: AtomicBool,
    /// The idle time in ns; 0 turns polling off.
    idle_ns: AtomicU64,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// Polling periods started.
    pub periods: AtomicU64,
    /// Times the poller found a ring that had moved (a notification it saved).
    pub found: AtomicU64,
}

impl Default for TxPoll {
    fn default() -> Self {
        TxPoll {
            active: AtomicBool::new(false),
            idle_ns: AtomicU64::new(DEFAULT_IDLE.as_nanos() as u64),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            periods: AtomicU64::new(0),
            found: AtomicU64::new(0),
        }
    }
}

impl TxPoll {
    /// Whether a polling period runs: a transmit pass then leaves an empty ring unarmed.
    /// Read under the ring's lock.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Sets the idle time; zero turns polling off (every ring is armed as it empties).
    pub fn set_idle(&self, idle: Duration) {
        self.idle_ns.store(
            idle.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Release,
        );
    }

    fn idle(&self) -> Duration {
        Duration::from_nanos(self.idle_ns.load(Ordering::Acquire))
    }

    /// A transmit notification arrived: starts a polling period unless one runs (or polling
    /// is off).
    pub fn start(&self) {
        if self.idle().is_zero() || self.active.swap(true, Ordering::SeqCst) {
            return;
        }
        let _g = lock(&self.lock);
        self.wake.notify_one();
    }

    /// Starts or ends a polling period by hand (tests drive [`TxPoll::sweep`] and
    /// [`TxPoll::stop`] themselves, with the idle time zero so the thread stays out).
    #[cfg(test)]
    pub(crate) fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::SeqCst);
    }

    /// Ends the poller thread.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let _g = lock(&self.lock);
        self.wake.notify_one();
    }

    /// Waits for a polling period; false once shut down.
    fn wait_for_start(&self) -> bool {
        let mut g = lock(&self.lock);
        loop {
            if self.shutdown.load(Ordering::SeqCst) {
                return false;
            }
            if self.active.load(Ordering::SeqCst) && !self.idle().is_zero() {
                return true;
            }
            g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// One look at every port's transmit ring: schedules the transmit path of each whose avail
    /// index moved since `seen`. Whether any did.
    pub(crate) fn sweep(&self, ports: &[Arc<PortShared>], seen: &mut [Option<u16>]) -> bool {
        debug_assert_eq!(ports.len(), seen.len());
        let mut moved = false;
        for (p, seen) in ports.iter().zip(seen.iter_mut()) {
            if p.removed() {
                continue; // its ring is left alone until it is added again
            }
            let avail = lock(&p.tx).as_ref().and_then(|r| r.avail_idx());
            if avail.is_some() && avail != *seen {
                *seen = avail;
                moved = true;
                self.found.fetch_add(1, Ordering::Relaxed);
                p.kick_tx();
            }
        }
        moved
    }

    /// Ends a polling period: notifications are asked for again on every ring, and a ring
    /// where chains wait is scheduled (they came as polling stopped, without a notification).
    pub(crate) fn stop(&self, ports: &[Arc<PortShared>]) {
        self.active.store(false, Ordering::SeqCst);
        for p in ports {
            if p.removed() {
                continue; // re-armed by its transmit path when it is added again
            }
            let waiting = lock(&p.tx).as_mut().is_some_and(|r| r.rearm());
            if waiting {
                p.kick_tx();
            }
        }
    }
}

/// The poller thread: polling periods, one per burst of notifications, until shut down.
pub(crate) fn run(poll: &TxPoll, ports: &[Arc<PortShared>]) {
    let mut seen = vec![None; ports.len()];
    while poll.wait_for_start() {
        poll.periods.fetch_add(1, Ordering::Relaxed);
        let mut last = Instant::now();
        loop {
            if poll.sweep(ports, &mut seen) {
                // Rings are moving: let more gather (a transmit pass then takes a batch) and
                // leave the core to the backends and STREAMS workers meanwhile.
                std::thread::sleep(SWEEP_PAUSE);
                last = Instant::now();
            } else if last.elapsed() >= poll.idle() || poll.shutdown.load(Ordering::SeqCst) {
                break;
            } else {
                std::thread::yield_now();
            }
        }
        poll.stop(ports);
    }
}
