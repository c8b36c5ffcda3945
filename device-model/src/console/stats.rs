//! Counters of the console, per port, and their snapshot for `--stats`.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one port, updated by the data paths and the backend.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Bytes the guest sent (transmitq).
    pub tx_bytes: AtomicU64,
    /// Buffers (descriptor chains) the guest sent.
    pub tx_msgs: AtomicU64,
    /// Bytes delivered into the guest's receive buffers.
    pub rx_bytes: AtomicU64,
    /// Receive buffers the device filled.
    pub rx_msgs: AtomicU64,
    /// Bytes the backend took from the port (written to its output).
    pub out_bytes: AtomicU64,
    /// Bytes the backend put into the port (read from its input).
    pub in_bytes: AtomicU64,
    /// Bytes that arrived through the emergency-write register.
    pub emerg_bytes: AtomicU64,
    /// Allocations (allocb/esballoc) that failed on this port's paths.
    pub allocb_failures: AtomicU64,
    /// Retries run by qbufcall/bufcall after a failed allocation.
    pub bufcall_retries: AtomicU64,
    /// Queue notifications (kicks) from the guest.
    pub notifications: AtomicU64,
    /// Used-buffer interrupts sent.
    pub interrupts: AtomicU64,
    /// Used-buffer interrupts the ring said not to send.
    pub interrupts_suppressed: AtomicU64,
    /// Descriptors the device could not use (outside memory, wrong direction); returned empty.
    pub bad_descriptors: AtomicU64,
    /// Bytes lost. Nothing in the design drops data; this stays 0 unless a bug says otherwise.
    pub drops: AtomicU64,
    /// Times a client connected to the backend (socket backends).
    pub connects: AtomicU64,
    /// PORT_OPEN messages from the driver saying the guest opened the port.
    pub guest_opens: AtomicU64,
    /// PORT_OPEN messages from the driver saying the guest closed the port.
    pub guest_closes: AtomicU64,
}

impl PortCounters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of one port's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    /// Port number.
    pub port: u32,
    /// Port name.
    pub name: String,
    /// The backend, as given on the command line.
    pub backend: String,
    /// See [`PortCounters::tx_bytes`].
    pub tx_bytes: u64,
    /// See [`PortCounters::tx_msgs`].
    pub tx_msgs: u64,
    /// See [`PortCounters::rx_bytes`].
    pub rx_bytes: u64,
    /// See [`PortCounters::rx_msgs`].
    pub rx_msgs: u64,
    /// See [`PortCounters::out_bytes`].
    pub out_bytes: u64,
    /// See [`PortCounters::in_bytes`].
    pub in_bytes: u64,
    /// See [`PortCounters::emerg_bytes`].
    pub emerg_bytes: u64,
    /// See [`PortCounters::allocb_failures`].
    pub allocb_failures: u64,
    /// See [`PortCounters::bufcall_retries`].
    pub bufcall_retries: u64,
    /// See [`PortCounters::notifications`].
    pub notifications: u64,
    /// See [`PortCounters::interrupts`].
    pub interrupts: u64,
    /// See [`PortCounters::interrupts_suppressed`].
    pub interrupts_suppressed: u64,
    /// See [`PortCounters::bad_descriptors`].
    pub bad_descriptors: u64,
    /// See [`PortCounters::drops`].
    pub drops: u64,
    /// See [`PortCounters::connects`].
    pub connects: u64,
    /// See [`PortCounters::guest_opens`].
    pub guest_opens: u64,
    /// See [`PortCounters::guest_closes`].
    pub guest_closes: u64,
    /// CRC-32 of everything the backend took from the port (`null` and `file` backends).
    pub out_crc32: Option<u32>,
    /// Bytes still held in the stream for the backend when the snapshot was taken.
    pub pending_out_bytes: u64,
    /// Host bytes not yet delivered to the guest when the snapshot was taken: queued in the
    /// port's stream (kept while the port is closed or removed, for a later open or add) or
    /// kept from a socket client that left. Always 0 for the pattern source, whose bytes are
    /// made on demand.
    pub pending_in_bytes: u64,
}

impl PortStats {
    /// A snapshot of `c` for port `port`.
    pub fn from_counters(port: u32, name: &str, backend: &str, c: &PortCounters) -> Self {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PortStats {
            port,
            name: name.to_string(),
            backend: backend.to_string(),
            tx_bytes: g(&c.tx_bytes),
            tx_msgs: g(&c.tx_msgs),
            rx_bytes: g(&c.rx_bytes),
            rx_msgs: g(&c.rx_msgs),
            out_bytes: g(&c.out_bytes),
            in_bytes: g(&c.in_bytes),
            emerg_bytes: g(&c.emerg_bytes),
            allocb_failures: g(&c.allocb_failures),
            bufcall_retries: g(&c.bufcall_retries),
            notifications: g(&c.notifications),
            interrupts: g(&c.interrupts),
            interrupts_suppressed: g(&c.interrupts_suppressed),
            bad_descriptors: g(&c.bad_descriptors),
            drops: g(&c.drops),
            connects: g(&c.connects),
            guest_opens: g(&c.guest_opens),
            guest_closes: g(&c.guest_closes),
            out_crc32: None,
            pending_out_bytes: 0,
            pending_in_bytes: 0,
        }
    }
}

/// The device's statistics: every port and the buffer pool.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsoleStats {
    /// One entry per port.
    pub ports: Vec<PortStats>,
    /// Control messages from the driver.
    pub control_in: u64,
    /// Control messages to the driver.
    pub control_out: u64,
    /// Control messages from the driver that were ignored (unknown port or event).
    pub control_ignored: u64,
    /// Control messages waiting for the driver's control receive buffers (bounded).
    pub control_backlog: u64,
    /// Transmit polling periods (each started by a notification).
    pub tx_poll_periods: u64,
    /// Times the poller found a transmit ring that had moved without a notification.
    pub tx_poll_found: u64,
    /// Poller pauses cut short because data reached the guest (an answer may follow).
    pub tx_poll_cut: u64,
    /// The transport's counters (filled in by whoever owns the transport).
    pub transport: crate::virtio::TransportCounters,
    /// Allocation calls on the STREAMS pool.
    pub pool_calls: u64,
    /// Allocations refused because the pool was full.
    pub pool_failed_capacity: u64,
    /// Allocations refused by fault injection.
    pub pool_failed_injected: u64,
    /// Most bytes the pool held at once.
    pub pool_peak_bytes: usize,
}

impl ConsoleStats {
    /// The statistics as one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    /// A human-readable table, one row per port.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<4} {:<12} {:<16} {:>12} {:>9} {:>12} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6}\n",
            "port",
            "name",
            "backend",
            "guest->host",
            "bufs",
            "host->guest",
            "bufs",
            "allocf",
            "retry",
            "kicks",
            "irqs",
            "irq-supp",
            "drops"
        );
        for p in &self.ports {
            s += &format!(
                "{:<4} {:<12} {:<16} {:>12} {:>9} {:>12} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>6}\n",
                p.port,
                p.name,
                p.backend,
                p.tx_bytes,
                p.tx_msgs,
                p.rx_bytes,
                p.rx_msgs,
                p.allocb_failures,
                p.bufcall_retries,
                p.notifications,
                p.interrupts,
                p.interrupts_suppressed,
                p.drops
            );
        }
        s += &format!(
            "control: {} in ({} ignored), {} out, {} waiting; pool: {} calls, {} refused (full), {} refused (injected), peak {} bytes\n",
            self.control_in,
            self.control_ignored,
            self.control_out,
            self.control_backlog,
            self.pool_calls,
            self.pool_failed_capacity,
            self.pool_failed_injected,
            self.pool_peak_bytes
        );
        s += &format!(
            "transmit polling: {} periods, {} rings found moved, {} pauses cut short by data sent to the guest\n",
            self.tx_poll_periods, self.tx_poll_found, self.tx_poll_cut
        );
        let t = &self.transport;
        s += &format!(
            "transport: {} resets, {} reset requests, {} failed activations, {} refused accesses, {} refused status writes\n",
            t.resets,
            t.reset_requests,
            t.failed_activations,
            t.refused_accesses,
            t.refused_transitions
        );
        s
    }
}
