//! [`ConsoleHandle`]: what the event loop, the backends and the control socket hold of a
//! running console.

use super::control::{HOST_EVENT, KICK_RX, KICK_TX};
use super::defs::{QueueRole, queue_role};
use super::error::ConsoleError;
use super::port::PortShared;
use super::shared::Shared;
use super::stats::{ConsoleStats, PortStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the event loop and the backends hold: cheap to clone.
#[derive(Clone)]
pub struct ConsoleHandle(pub(crate) Arc<Shared>);

impl ConsoleHandle {
    /// The driver notified queue `index`.
    pub fn queue_notified(&self, index: u16) {
        match queue_role(index) {
            QueueRole::Rx(p) | QueueRole::Tx(p) => {
                let Some(port) = self.0.ports.get(p as usize) else {
                    return;
                };
                port.counters.notifications.fetch_add(1, Ordering::Relaxed);
                if matches!(queue_role(index), QueueRole::Rx(_)) {
                    port.kick_rx()
                } else {
                    port.kick_tx();
                    self.0.poll.start();
                }
            }
            QueueRole::CtrlRx => self.0.control(KICK_RX),
            QueueRole::CtrlTx => self.0.control(KICK_TX),
        }
    }

    /// Runs every port's transmit path once more (to take what the guest left in its rings).
    pub fn flush_tx(&self) {
        for p in &self.0.ports {
            p.kick_tx();
        }
    }

    /// How long the device polls the transmit rings after a notification once none moves;
    /// zero turns polling off (one notification per buffer that finds its ring idle).
    pub fn set_tx_poll(&self, idle: std::time::Duration) {
        self.0.poll.set_idle(idle);
    }

    /// The number of ports.
    pub fn ports(&self) -> usize {
        self.0.ports.len()
    }

    /// Port `id`'s shared state.
    pub fn port(&self, id: u32) -> Option<&Arc<PortShared>> {
        self.0.ports.get(id as usize)
    }

    /// Tells the driver whether a client is attached to port `id` on the host (PORT_OPEN).
    pub fn set_host_open(&self, id: u32, open: bool) {
        if let Some(p) = self.port(id)
            && p.set_host_open(open)
        {
            p.host_event.store(true, Ordering::Release);
            self.0.control(HOST_EVENT);
        }
    }

    /// Removes port `id` while the guest runs (DEVICE_REMOVE): the driver hangs up its stream;
    /// nothing more is delivered to the guest on it. Output already sent still reaches the
    /// backend. Fails for an unknown or already removed port.
    pub fn remove_port(&self, id: u32) -> Result<(), ConsoleError> {
        let p = self.port(id).ok_or(ConsoleError::NoPort(id))?;
        if p.removed.swap(true, Ordering::AcqRel) {
            return Err(ConsoleError::Plugged {
                port: p.config.name.clone(),
                state: "not plugged in",
            });
        }
        p.guest_open.store(false, Ordering::Release);
        p.host_event.store(true, Ordering::Release);
        self.0.control(HOST_EVENT);
        // The driver takes the port's buffers back: what the backend holds over them is
        // copied (the buffers return to the guest) and still goes out.
        p.lent.end_loans(None);
        Ok(())
    }

    /// Plugs port `id` in while the guest runs (DEVICE_ADD): an unplugged port, or one
    /// removed before. The driver then asks for its name and state as at start; host data
    /// that waited while it was out is delivered once the guest opens it. Fails for an
    /// unknown port or one that is plugged in.
    pub fn add_port(&self, id: u32) -> Result<(), ConsoleError> {
        let p = self.port(id).ok_or(ConsoleError::NoPort(id))?;
        if !p.removed.swap(false, Ordering::AcqRel) {
            return Err(ConsoleError::Plugged {
                port: p.config.name.clone(),
                state: "already plugged in",
            });
        }
        p.host_event.store(true, Ordering::Release);
        self.0.control(HOST_EVENT);
        p.kick_tx(); // its transmit ring was left alone while it was out
        Ok(())
    }

    /// Sets what [`ConsoleHandle::quit`] does (the VMM ends the run).
    pub fn set_quit(&self, quit: Box<dyn Fn() + Send + Sync>) {
        *super::port::lock(&self.0.quit) = Some(quit);
    }

    /// A user asked to end the run (`Ctrl-A x` on a `stdio` port's terminal).
    pub fn quit(&self) {
        if let Some(quit) = &*super::port::lock(&self.0.quit) {
            quit();
        }
    }

    /// Tells the driver port `id`'s terminal size (RESIZE, or the config space without
    /// MULTIPORT).
    pub fn set_size(&self, id: u32, cols: u16, rows: u16) {
        if let Some(p) = self.port(id)
            && p.set_size(cols, rows)
        {
            p.host_event.store(true, Ordering::Release);
            self.0.control(HOST_EVENT);
        }
    }

    /// A snapshot of the counters (port names and backends filled in by the caller's labels).
    pub fn stats(&self, backends: &[String]) -> ConsoleStats {
        let pool = self.0.streams.pool_stats();
        ConsoleStats {
            ports: self
                .0
                .ports
                .iter()
                .map(|p| {
                    let b = backends.get(p.id as usize).map_or("", |s| s.as_str());
                    PortStats::from_counters(p.id, &p.config.name, b, &p.counters)
                })
                .collect(),
            control_in: self.0.control_in.load(Ordering::Relaxed),
            control_out: self.0.control_out.load(Ordering::Relaxed),
            control_ignored: self.0.control_ignored.load(Ordering::Relaxed),
            control_backlog: self.0.control_backlog.load(Ordering::Relaxed),
            tx_poll_periods: self.0.poll.periods.load(Ordering::Relaxed),
            tx_poll_found: self.0.poll.found.load(Ordering::Relaxed),
            tx_poll_cut: self.0.poll.cut.load(Ordering::Relaxed),
            transport: Default::default(),
            pool_calls: pool.calls,
            pool_failed_capacity: pool.failed_capacity,
            pool_failed_injected: pool.failed_injected,
            pool_peak_bytes: pool.peak_bytes,
        }
    }
}
