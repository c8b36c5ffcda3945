//! virtio-console (virtio 1.2 §5.3, device ID 3), multiport, built from STREAMS.
//!
//! Each port is a [`streams::Stream`]: its head is the port's backend, its driver instance is
//! the port's pair of virtqueues, and modules may be pushed between them. A control stream on
//! the same driver carries the control queues. See [`driver`] for the data paths,
//! [`control`] for the handshake and [`poll`] for how a notification starts a period in which
//! the device watches every transmit ring instead of waiting for more notifications;
//! [`stages`] stamps a port's data path when a guest asks where its round trips go.

pub mod backend;
mod control;
pub mod defs;
mod driver;
mod events;
pub mod lent;
pub mod modules;
mod poll;
mod port;
mod ring;
mod runtime;
pub mod stages;
pub mod stats;
#[cfg(test)]
mod tests;

pub use driver::{HEAD_HIWAT, HEAD_LOWAT};
pub use events::ConsoleEvents;
pub use poll::DEFAULT_IDLE as DEFAULT_TX_POLL;
pub use port::{PortConfig, PortShared};
pub use runtime::ConsoleRuntime;
pub use stats::{ConsoleStats, PortCounters, PortStats};

use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC};
use crate::virtio::{ActivateError, Activation, Signals, VirtioDevice};
use control::{CtlState, HOST_EVENT, KICK_RX, KICK_TX, RECONFIGURE, Staged};
use defs::{
    CONSOLE_DEVICE_ID, F_EMERG_WRITE, F_MULTIPORT, F_SIZE, MAX_PORTS, QUEUE_SIZE, QueueRole,
    config, queue_count, queue_role, rx_queue, tx_queue,
};
use driver::{ConsoleDriver, Role};
use port::lock;
use ring::Ring;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use streams::{
    D_MP, D_MTOUTPERIM, D_MTQPAIR, Mblk, ModuleDef, ModuleInfo, QueueRef, Stream, Streams,
};
use virtio_queue::QueueT;

/// Most emergency-write bytes held before the transmit path takes them.
pub const EMERG_MAX: usize = 64 * 1024;

/// High-water mark of a port driver's write queue (host bytes waiting for guest buffers).
pub const RX_HIWAT: usize = 256 * 1024;

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
    /// The role the next driver instance takes (set around each open).
    pub opening: Mutex<Option<Role>>,
    pub control_in: AtomicU64,
    pub control_out: AtomicU64,
    pub control_ignored: AtomicU64,
    /// Messages in the control backlog as the control plane last left it.
    pub control_backlog: AtomicU64,
    pub ctl_counters: PortCounters,
    pub streams: Streams,
}

impl Shared {
    /// Asks the control plane for `bits` of work.
    pub fn control(&self, bits: u32) {
        self.pending.fetch_or(bits, Ordering::AcqRel);
        if let Some(wq) = &*lock(&self.ctl_wq) {
            wq.qenable();
        }
    }
}

/// What the event loop and the backends hold: cheap to clone.
#[derive(Clone)]
pub struct ConsoleHandle(Arc<Shared>);

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
    pub fn remove_port(&self, id: u32) -> Result<(), String> {
        let p = self.port(id).ok_or_else(|| format!("no port {id}"))?;
        if p.removed.swap(true, Ordering::AcqRel) {
            return Err(format!("port {} is not plugged in", p.config.name));
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
    pub fn add_port(&self, id: u32) -> Result<(), String> {
        let p = self.port(id).ok_or_else(|| format!("no port {id}"))?;
        if !p.removed.swap(false, Ordering::AcqRel) {
            return Err(format!("port {} is already plugged in", p.config.name));
        }
        p.host_event.store(true, Ordering::Release);
        self.0.control(HOST_EVENT);
        p.kick_tx(); // its transmit ring was left alone while it was out
        Ok(())
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

/// The virtio-console device.
pub struct Console {
    shared: Arc<Shared>,
    ports: Vec<Arc<Stream>>,
    control: Option<Stream>,
    queue_sizes: Vec<u16>,
    epoch: u64,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl Console {
    /// A console with `ports` (port 0 first), each with the modules to push (listed from the
    /// head down), on the framework instance `streams`.
    pub fn new(
        streams: &Streams,
        ports: Vec<(PortConfig, Vec<Arc<ModuleDef>>)>,
    ) -> Result<Console, ConsoleError> {
        if ports.is_empty() || ports.len() > MAX_PORTS as usize {
            return Err(ConsoleError::PortCount(ports.len()));
        }
        for (i, (p, _)) in ports.iter().enumerate() {
            if ports[..i].iter().any(|(q, _)| q.name == p.name) {
                return Err(ConsoleError::DuplicateName(p.name.clone()));
            }
        }
        let poll = Arc::new(poll::TxPoll::default());
        let shared = Arc::new(Shared {
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, (c, _))| PortShared::new(i as u32, c.clone(), poll.clone()))
                .collect(),
            poll: poll.clone(),
            ctl: Mutex::new(CtlState::default()),
            pending: AtomicU32::new(0),
            token: Mutex::new(None),
            ctl_wq: Mutex::new(None),
            staged: Mutex::new(None),
            signals: Mutex::new(None),
            opening: Mutex::new(None),
            control_in: AtomicU64::new(0),
            control_out: AtomicU64::new(0),
            control_ignored: AtomicU64::new(0),
            control_backlog: AtomicU64::new(0),
            ctl_counters: PortCounters::default(),
            streams: streams.clone(),
        });
        let weak = Arc::downgrade(&shared);
        let def = ModuleDef::builder("virtio-console")
            .flags(D_MP | D_MTQPAIR | D_MTOUTPERIM)
            .srv(true, true)
            .winfo(ModuleInfo {
                hiwat: RX_HIWAT,
                lowat: RX_HIWAT / 4,
                ..Default::default()
            })
            .build(move || ConsoleDriver {
                role: weak
                    .upgrade()
                    .and_then(|s| lock(&s.opening).take())
                    .unwrap_or(Role::Unbound),
            })
            .expect("valid driver flags");
        let open = |role: Role, name: &str| {
            *lock(&shared.opening) = Some(role);
            Stream::open(streams, &def).map_err(|error| ConsoleError::Streams {
                port: name.to_string(),
                what: "open",
                error,
            })
        };
        let control = open(Role::Control(shared.clone()), "control")?;
        let mut streams_out = Vec::new();
        for (i, (c, modules)) in ports.iter().enumerate() {
            let s = open(Role::Port(shared.ports[i].clone()), &c.name)?;
            for m in modules.iter().rev() {
                s.push(m).map_err(|error| ConsoleError::Streams {
                    port: c.name.clone(),
                    what: "push a module",
                    error,
                })?;
            }
            streams_out.push(Arc::new(s));
        }
        let rings = shared.ports.clone();
        let poller = std::thread::Builder::new()
            .name("tx-poll".into())
            .spawn(move || poll::run(&poll, &rings))
            .map_err(ConsoleError::Thread)?;
        Ok(Console {
            queue_sizes: vec![QUEUE_SIZE; queue_count(ports.len() as u32)],
            shared,
            ports: streams_out,
            control: Some(control),
            epoch: 0,
            poller: Some(poller),
        })
    }

    /// A handle for the event loop and the backends.
    pub fn handle(&self) -> ConsoleHandle {
        ConsoleHandle(self.shared.clone())
    }

    /// Port `id`'s stream (its head is where the backend reads and writes).
    pub fn stream(&self, id: u32) -> Option<&Arc<Stream>> {
        self.ports.get(id as usize)
    }

    /// Takes every ring away from the data paths and the control plane before returning:
    /// once a reset returns, the device touches none of the old rings.
    fn stop_rings(&mut self) {
        self.epoch += 1;
        for p in &self.shared.ports {
            *lock(&p.rx) = None;
            *lock(&p.tx) = None;
            p.guest_open.store(false, Ordering::Release);
        }
        // Waits for a control pass in progress (it holds the lock while it uses the rings).
        lock(&self.shared.ctl).drop_rings();
        // Messages over the old rings' buffers: copied or dropped by their holders.
        for p in &self.shared.ports {
            p.lent.end_loans(Some(self.epoch));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.shared.poll.shut_down();
        if let Some(t) = self.poller.take() {
            let _ = t.join();
        }
        self.stop_rings();
        // Closing breaks the reference cycles between the instances and the shared state.
        if let Some(c) = self.control.take() {
            let _ = c.close();
        }
        for s in self.ports.drain(..) {
            if let Ok(s) = Arc::try_unwrap(s) {
                let _ = s.close();
            }
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        CONSOLE_DEVICE_ID
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_SIZE | F_MULTIPORT | F_EMERG_WRITE | EVENT_IDX | INDIRECT_DESC
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let (cols, rows) = self.shared.ports[0].size();
        let mut space = [0u8; config::LEN];
        space[config::COLS as usize..][..2].copy_from_slice(&cols.to_le_bytes());
        space[config::ROWS as usize..][..2].copy_from_slice(&rows.to_le_bytes());
        let n = self.shared.ports.len() as u32;
        space[config::MAX_NR_PORTS as usize..][..4].copy_from_slice(&n.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| space.get(o.checked_add(i)?))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only emerg_wr is writable: its first byte goes out on port 0.
        if offset != config::EMERG_WR || data.is_empty() {
            return;
        }
        let p = &self.shared.ports[0];
        let mut e = lock(&p.emerg);
        if e.len() >= EMERG_MAX {
            p.counters.drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        e.push(data[0]);
        drop(e);
        p.counters.emerg_bytes.fetch_add(1, Ordering::Relaxed);
        p.kick_tx();
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let multiport = a.acked_features & F_MULTIPORT != 0;
        let mem = Arc::new(a.mem);
        let mut queues: Vec<Option<virtio_queue::Queue>> = Vec::new();
        for q in a.queues {
            let i = q.index as usize;
            if queues.len() <= i {
                queues.resize_with(i + 1, || None);
            }
            queues[i] = q.queue.ready().then_some(q.queue);
        }
        if queues
            .get(..2)
            .is_none_or(|q| q.iter().any(Option::is_none))
        {
            return Err(ActivateError("port 0's queues are not ready".into()));
        }
        if multiport
            && queues
                .get(2..4)
                .is_none_or(|q| q.iter().any(Option::is_none))
        {
            return Err(ActivateError("the control queues are not ready".into()));
        }
        self.stop_rings();
        let epoch = self.epoch;
        let mut ring = |i: u16| {
            queues
                .get_mut(i as usize)
                .and_then(Option::take)
                .map(|q| Ring::new(q, mem.clone(), a.signals.clone(), epoch))
        };
        for p in &self.shared.ports {
            if p.id != 0 && !multiport {
                continue;
            }
            *lock(&p.rx) = ring(rx_queue(p.id));
            *lock(&p.tx) = ring(tx_queue(p.id));
            p.guest_open.store(!multiport, Ordering::Release);
        }
        let (rx, tx) = if multiport {
            (ring(defs::CTRL_RX_QUEUE), ring(defs::CTRL_TX_QUEUE))
        } else {
            (None, None)
        };
        *lock(&self.shared.staged) = Some(Staged { rx, tx, multiport });
        *lock(&self.shared.signals) = Some(a.signals.clone());
        self.shared.control(RECONFIGURE);
        for p in &self.shared.ports {
            p.kick_rx();
            p.kick_tx();
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.stop_rings();
        *lock(&self.shared.staged) = None;
        *lock(&self.shared.signals) = None;
        self.shared.control(RECONFIGURE);
    }
}
