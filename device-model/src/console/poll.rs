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
//! A polling period's pauses wait for more chains to gather, but a round trip's next message
//! should not wait for them: when the device delivers data to the guest during a period, the
//! poller's current or next pause is cut short ([`TxPoll::delivered`]), so a writer that answers
//! what it read is found as soon as it writes. Streaming writers, whose rings move with no data
//! coming back, keep their batches.
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

/// The pause after a sweep that found rings moving (the kernel's timer slack adds to it: on
/// this project's machines it lasts 60-90 µs).
const SWEEP_PAUSE: Duration = Duration::from_micros(10);

/// The device-wide polling state, shared by the transmit paths and the poller thread.
pub struct TxPoll {
    active: AtomicBool,
    /// The idle time in ns; 0 turns polling off.
    idle_ns: AtomicU64,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// The poller is in its pause after a sweep.
    pausing: AtomicBool,
    /// Data reached the guest during the pause: look again at once.
    look_now: AtomicBool,
    /// Polling periods started.
    pub periods: AtomicU64,
    /// Times the poller found a ring that had moved (a notification it saved).
    pub found: AtomicU64,
    /// Pauses cut short because data reached the guest.
    pub cut: AtomicU64,
}

impl Default for TxPoll {
    fn default() -> Self {
        TxPoll {
            active: AtomicBool::new(false),
            idle_ns: AtomicU64::new(DEFAULT_IDLE.as_nanos() as u64),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            pausing: AtomicBool::new(false),
            look_now: AtomicBool::new(false),
            periods: AtomicU64::new(0),
            found: AtomicU64::new(0),
            cut: AtomicU64::new(0),
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

    /// Data reached the guest (a receive pass filled buffers): an answer may follow at once,
    /// so during a polling period the poller's pause, current or next, is cut short.
    pub fn delivered(&self) {
        if !self.active.load(Ordering::SeqCst) {
            return;
        }
        // Dekker-style with `pause`: this store before the load of `pausing`, there the store
        // of `pausing` before the load of `look_now` (all SeqCst): a pause that starts after
        // this sees `look_now`, one that started before is notified.
        self.look_now.store(true, Ordering::SeqCst);
        if self.pausing.load(Ordering::SeqCst) {
            let _g = lock(&self.lock);
            self.wake.notify_one();
        }
    }

    /// The pause after a sweep that found rings moving: `length`, or less when data reached
    /// the guest since the sweep began. Whether it was cut short.
    pub(crate) fn pause(&self, length: Duration) -> bool {
        let deadline = Instant::now() + length;
        let mut g = lock(&self.lock);
        self.pausing.store(true, Ordering::SeqCst);
        while !self.look_now.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = match self.wake.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        self.pausing.store(false, Ordering::SeqCst);
        let cut = self.look_now.load(Ordering::SeqCst);
        if cut {
            self.cut.fetch_add(1, Ordering::Relaxed);
        }
        cut
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
        // Data delivered from here on cuts the pause after this sweep.
        self.look_now.store(false, Ordering::SeqCst);
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
    // How long a whole pause lasts here, timer slack included.
    let mut typical_pause = SWEEP_PAUSE;
    while poll.wait_for_start() {
        poll.periods.fetch_add(1, Ordering::Relaxed);
        let mut last = Instant::now();
        loop {
            if poll.sweep(ports, &mut seen) {
                // Rings are moving: let more gather (a transmit pass then takes a batch) and
                // leave the core to the backends and STREAMS workers meanwhile, unless an
                // answer to data just delivered may be coming.
                let start = Instant::now();
                let cut = poll.pause(SWEEP_PAUSE);
                last = Instant::now();
                if cut {
                    // Looking sooner must not end the period sooner: it lasts as long as it
                    // would have after a whole pause.
                    last = last.max(start + typical_pause);
                } else {
                    typical_pause = (typical_pause * 7 + (last - start)) / 8;
                }
            } else if Instant::now().saturating_duration_since(last) >= poll.idle()
                || poll.shutdown.load(Ordering::SeqCst)
            {
                break;
            } else {
                std::thread::yield_now();
            }
        }
        poll.stop(ports);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longer than any test could wait: a pause that is not cut short hangs the test.
    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn data_delivered_before_a_pause_cuts_it_short() {
        let poll = TxPoll::default();
        poll.set_active(true);
        poll.delivered();
        assert!(poll.pause(FOREVER));
        assert_eq!(poll.cut.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn data_delivered_during_a_pause_wakes_the_poller() {
        for _ in 0..200 {
            let poll = Arc::new(TxPoll::default());
            poll.set_active(true);
            let pauser = {
                let poll = poll.clone();
                std::thread::spawn(move || poll.pause(FOREVER))
            };
            while !poll.pausing.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            poll.delivered();
            assert!(pauser.join().unwrap());
        }
    }

    #[test]
    fn only_deliveries_since_the_sweep_and_during_a_period_count() {
        let poll = TxPoll::default();
        // No period: a delivery is no reason to look.
        poll.delivered();
        assert!(!poll.pause(Duration::from_millis(1)));
        // Delivered before the sweep: the sweep saw what it could; the pause stands.
        poll.set_active(true);
        poll.delivered();
        poll.sweep(&[], &mut []);
        assert!(!poll.pause(Duration::from_millis(1)));
        assert_eq!(poll.cut.load(Ordering::Relaxed), 0);
    }
}
