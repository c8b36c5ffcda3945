//! [`Console`]: the virtio device itself (features, configuration space, activation and
//! reset), which builds a port's stream per port and the control stream.

use super::PortConfig;
use super::control::{CtlState, RECONFIGURE, Staged};
use super::defs;
use super::defs::{
    CONSOLE_DEVICE_ID, F_EMERG_WRITE, F_MULTIPORT, F_SIZE, MAX_PORTS, QUEUE_SIZE, config,
    queue_count, rx_queue, tx_queue,
};
use super::driver::{ConsoleDriver, Role};
use super::error::ConsoleError;
use super::handle::ConsoleHandle;
use super::poll;
use super::port::{PortShared, lock};
use super::ring::Ring;
use super::shared::{CONTROL_DEV, Shared};
use super::stats::PortCounters;
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC};
use crate::virtio::{ActivateError, Activation, VirtioDevice};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use streams::{D_MP, D_MTOUTPERIM, D_MTQPAIR, ModuleDef, ModuleInfo, Stream, Streams};
use virtio_queue::QueueT;

/// Most emergency-write bytes held before the transmit path takes them.
pub const EMERG_MAX: usize = 64 * 1024;

/// High-water mark of a port driver's write queue (host bytes waiting for guest buffers).
pub const RX_HIWAT: usize = 256 * 1024;

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
            control_in: AtomicU64::new(0),
            control_out: AtomicU64::new(0),
            control_ignored: AtomicU64::new(0),
            control_backlog: AtomicU64::new(0),
            ctl_counters: PortCounters::default(),
            streams: streams.clone(),
            quit: Mutex::new(None),
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
            .build_dev(move |dev| ConsoleDriver {
                role: weak.upgrade().map_or(Role::Unbound, |s| s.role_of(dev)),
            })
            .expect("valid driver flags");
        let open = |dev: u32, name: &str| {
            Stream::open_dev(streams, &def, dev).map_err(|error| ConsoleError::Streams {
                port: name.to_string(),
                what: "open",
                error,
            })
        };
        let control = open(CONTROL_DEV, "control")?;
        let mut streams_out = Vec::new();
        for (i, (c, modules)) in ports.iter().enumerate() {
            let s = open(i as u32, &c.name)?;
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
                .map(|q| Ring::new(i, q, mem.clone(), a.signals.clone(), epoch))
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
