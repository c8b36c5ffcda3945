//! The guest's virtio-console driver, written as a multithreaded STREAMS driver.
//!
//! One definition (`vcon`, D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL) has an instance per
//! open port and one for the control queues; all share the outer perimeter, through which
//! the control stream changes driver-wide state (qwriter(PERIM_OUTER)). The device's one
//! interrupt rings a *doorbell* on every open instance: a preallocated M_CTL message `put` to
//! its read queue, which enters the instance's perimeter or is deferred onto it.
//!
//! * [`port`]: a port's stream. TX sends the data blocks of STREAMS messages zero copy; RX
//!   buffers are driver memory lent upstream as esballoc'd messages and reposted when freed.
//! * [`control`]: DEVICE_READY, PORT_READY, and the device's PORT_ADD/REMOVE, PORT_NAME,
//!   CONSOLE_PORT, RESIZE and PORT_OPEN messages.
//! * [`poll`]: receive rings watched by a CPU that spins before halting, without interrupts.
//! * [`virtq`]: split rings with EVENT_IDX, over [`crate::drivers::virtio_mmio`].

mod control;
mod poll;
mod port;

pub use guest_abi::console::event;
pub use port::{COUNTERS, TX_IRQ_BYTES};
pub mod virtq;

use crate::cpu::irq;
use crate::drivers::ProbeError;
use crate::drivers::virtio_mmio::{F_EVENT_IDX, F_VERSION_1, Transport};
use crate::platform;
use crate::platform::lock::IrqLock;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use streams::{
    D_MP, D_MTOCEXCL, D_MTOUTPERIM, D_MTQPAIR, Errno, Mblk, Module, ModuleDef, ModuleInfo, OpenHow,
    Q, QueueRef, Stream, Streams,
};

use guest_abi::console::{CONSOLE_DEVICE_ID, F_EMERG_WRITE, F_MULTIPORT, config};

/// Most ports the driver handles: as many as the wire format allows.
pub const MAX_PORTS: usize = guest_abi::console::MAX_PORTS as usize;
/// The doorbell slot of the control stream.
const CTRL_SLOT: usize = MAX_PORTS;
/// Entries per virtqueue.
const QUEUE_SIZE: u16 = 256;
/// Longest wait at probe for the ports the device adds to be named.
const PORTS_SETTLE_MAX_NS: u64 = 10_000_000_000;
/// Driver write-queue and stream-head water marks (bytes).
const WR_HIWAT: usize = 512 * 1024;
const WR_LOWAT: usize = 128 * 1024;

/// Driver-wide facts about one port, changed only by the control stream inside
/// qwriter(PERIM_OUTER) (and read anywhere under the table's lock).
#[derive(Clone, Debug, Default)]
pub struct PortInfo {
    /// The device added the port and has not removed it.
    pub present: bool,
    /// The device removed the port after adding it.
    pub removed: bool,
    /// Its name (PORT_NAME), empty until named.
    pub name: String,
    /// Whether PORT_NAME arrived.
    pub named: bool,
    /// CONSOLE_PORT arrived.
    pub console: bool,
    /// The last RESIZE: (cols, rows).
    pub size: (u16, u16),
    /// The host side is open (the last PORT_OPEN from the device).
    pub host_open: bool,
    /// PORT_OPEN messages from the device so far (an open waits for the next one).
    pub open_answers: u64,
}

/// A message `put` to an instance's read queue when the device interrupts.
struct Doorbell {
    q: QueueRef,
    /// The doorbell itself while it is not in flight.
    ring: Option<Mblk>,
    /// An M_HANGUP kept for the day the device removes the port.
    hangup: Option<Mblk>,
}

/// Driver counters.
#[derive(Default)]
pub struct VconStats {
    /// Device interrupts.
    pub irqs: AtomicU64,
    /// Doorbells rung.
    pub doorbells: AtomicU64,
    /// Control messages received.
    pub control_in: AtomicU64,
    /// Control messages sent.
    pub control_out: AtomicU64,
    /// Control messages that made no sense (unknown port or event, short).
    pub control_bad: AtomicU64,
    /// Receive rings a polling CPU found moved (each a receive interrupt not needed).
    pub polled: AtomicU64,
}

/// The driver: the device's transport and what every instance shares.
pub struct Vcon {
    transport: Transport,
    /// The interrupt must be acknowledged ([`guest_abi::MMIO_LEVEL_IRQ`]).
    level_irq: bool,
    /// `max_nr_ports` from the configuration space.
    pub max_ports: u32,
    streams: &'static Streams,
    def: Arc<ModuleDef>,
    ports: IrqLock<Vec<PortInfo>>,
    rings: Vec<IrqLock<port::PortRings>>,
    ctrl: IrqLock<control::CtrlRings>,
    doorbells: IrqLock<Vec<Option<Doorbell>>>,
    /// The device answers a driver's PORT_OPEN (perimeter does; assumed until one is not).
    answers_opens: AtomicBool,
    /// When the last control message arrived (ns).
    last_control_ns: AtomicU64,
    /// Counters.
    pub stats: VconStats,
}

/// Which instance an open creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Control,
    Port(u32),
}

impl Role {
    /// The device number a stream for this role is opened on (port `i` on `i`, the control
    /// stream on [`CTRL_SLOT`]).
    fn dev(self) -> u32 {
        match self {
            Role::Control => CTRL_SLOT as u32,
            Role::Port(p) => p,
        }
    }

    /// The role of an instance opened on device `dev` (none past the last port and control).
    fn of(dev: u32) -> Option<Role> {
        match dev as usize {
            CTRL_SLOT => Some(Role::Control),
            p if p < MAX_PORTS => Some(Role::Port(dev)),
            _ => None,
        }
    }
}

static VCON: spin::Once<Vcon> = spin::Once::new();
/// Receive buffer size for ports opened from now on (0: the default).
static RX_BUF: AtomicUsize = AtomicUsize::new(0);

/// Sets the receive buffer size of ports whose buffers are not yet allocated (their first
/// open); `vcon.rxbuf=N` on the command line wins.
pub fn set_rx_buf(bytes: usize) {
    RX_BUF.store(bytes, Ordering::Relaxed);
}

/// The driver, once probed.
pub fn get() -> Option<&'static Vcon> {
    VCON.get()
}

/// When the device's interrupt last reached the handler (TSC ticks).
pub static LAST_IRQ_TICKS: AtomicU64 = AtomicU64::new(0);
/// The CPU that took the device's last interrupt.
pub static LAST_IRQ_CPU: AtomicUsize = AtomicUsize::new(0);

fn on_irq(_vector: u8) {
    LAST_IRQ_TICKS.store(crate::platform::clock::ticks(), Ordering::Relaxed);
    LAST_IRQ_CPU.store(crate::cpu::percpu::cpu_index(), Ordering::Relaxed);
    let Some(v) = get() else { return };
    v.stats.irqs.fetch_add(1, Ordering::Relaxed);
    if v.level_irq {
        // Lowers the line before the rings are looked at: a later buffer raises a new edge.
        v.transport.take_interrupt_status();
    }
    v.ring_all();
}

/// Early output before any port is open: through VIRTIO_CONSOLE_F_EMERG_WRITE (one exit per
/// byte) when port 0 is a console nobody has opened, else on the debug console. Never mixed
/// into a data port's stream.
pub fn early_print(line: &str) {
    let emerg = get().filter(|v| {
        v.ports.lock().first().is_some_and(|p| p.console)
            && v.doorbells.lock().first().is_some_and(Option::is_none)
    });
    match emerg {
        Some(v) => {
            for &b in line.as_bytes().iter().chain(b"\n") {
                v.transport.set_config_u32(config::EMERG_WR, b.into());
            }
        }
        None => crate::println!("{line}"),
    }
}

/// Finds the virtio-console, negotiates, sets up every queue, opens the control stream
/// (DEVICE_READY) and waits until the ports the device added are named.
pub fn probe(streams: &'static Streams) -> Result<&'static Vcon, ProbeError> {
    if let Some(v) = get() {
        return Ok(v);
    }
    let (dev, t) =
        Transport::find(CONSOLE_DEVICE_ID).ok_or(ProbeError::NoDevice("virtio-console"))?;
    let features = t.negotiate(F_VERSION_1 | F_MULTIPORT | F_EMERG_WRITE | F_EVENT_IDX)?;
    if features & F_MULTIPORT == 0 || features & F_EVENT_IDX == 0 {
        return Err(ProbeError::MissingFeatures(
            "MULTIPORT or EVENT_IDX (QEMU offers MULTIPORT only with max_ports > 1)",
        ));
    }
    let max_ports = t
        .config_u32(config::MAX_NR_PORTS)
        .clamp(1, MAX_PORTS as u32);
    let size = QUEUE_SIZE.min(prev_power_of_two(t.queue_max(0)));
    let mut rings = Vec::new();
    for p in 0..max_ports {
        rings.push(IrqLock::new(port::PortRings::new(&t, p, size)?));
    }
    // The device's largest control queue, up to 128 entries (a receive buffer each).
    let ctrl_size = prev_power_of_two(t.queue_max(2)).min(128);
    let ctrl = control::CtrlRings::new(&t, ctrl_size)?;
    irq::set_handler(dev.vector as u8, on_irq);
    // Timed waits inside an open or close (qwait) end when a doorbell rings.
    platform::set_timer_hook(|| {
        if let Some(v) = get() {
            v.ring_all();
        }
    });
    // Small writes gathered while the device was busy go once the CPU runs out of work, and
    // completions nobody's send will reap are asked for.
    platform::set_idle_hook(|| {
        if let Some(v) = get() {
            port::on_idle(v);
        }
    });
    // An idle CPU that spins before halting watches the receive rings instead of waiting for
    // interrupts.
    platform::set_poll_hooks(platform::PollHooks {
        start: || {
            if let Some(v) = get() {
                poll::start(v);
            }
        },
        look: || get().is_some_and(poll::look),
        stop: || get().is_some_and(poll::stop),
    });
    t.driver_ok()?;
    let def = ModuleDef::builder("vcon")
        .flags(D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL)
        .srv(true, true)
        .winfo(ModuleInfo {
            hiwat: WR_HIWAT,
            lowat: WR_LOWAT,
            ..Default::default()
        })
        .build_dev(|dev| {
            let v = get().expect("the driver exists before any open");
            Instance::new(v, Role::of(dev))
        })
        .map_err(|e| ProbeError::Streams("the driver's definition", e))?;
    let v = VCON.call_once(|| Vcon {
        transport: t,
        level_irq: dev.flags & guest_abi::MMIO_LEVEL_IRQ != 0,
        max_ports,
        streams,
        def,
        ports: IrqLock::new(alloc::vec![PortInfo::default(); max_ports as usize]),
        rings,
        ctrl: IrqLock::new(ctrl),
        doorbells: IrqLock::new((0..=MAX_PORTS).map(|_| None).collect()),
        answers_opens: AtomicBool::new(true),
        last_control_ns: AtomicU64::new(0),
        stats: VconStats::default(),
    });
    let ctl = v
        .open_role(Role::Control)
        .map_err(|e| ProbeError::Streams("opening the control stream", streams::Error::Errno(e)))?;
    // The control stream stays open for the driver's life.
    core::mem::forget(ctl);
    // The device adds its ports right after DEVICE_READY; wait until every added port is
    // named and the control queue has been quiet for a moment (ports may also come later).
    let give_up = crate::platform::clock::now_ns() + PORTS_SETTLE_MAX_NS;
    loop {
        let ports = v.ports();
        let named = ports.iter().any(|p| p.present) && ports.iter().all(|p| !p.present || p.named);
        let quiet_at = v.last_control_ns.load(Ordering::Acquire) + 5_000_000;
        let now = crate::platform::clock::now_ns();
        if named && now >= quiet_at {
            break;
        }
        if now >= give_up {
            crate::eprintln!(
                "virtio-console: gave up waiting for the device's ports after {} s ({} added, \
                 {} named; {} irqs, {} doorbells, {} control messages in, {} out, tasks {})",
                PORTS_SETTLE_MAX_NS / 1_000_000_000,
                ports.iter().filter(|p| p.present).count(),
                ports.iter().filter(|p| p.named).count(),
                v.stats.irqs.load(Ordering::Relaxed),
                v.stats.doorbells.load(Ordering::Relaxed),
                v.stats.control_in.load(Ordering::Relaxed),
                v.stats.control_out.load(Ordering::Relaxed),
                streams.has_queued_tasks(),
            );
            break;
        }
        // Wake on the next control message, or when the queue has been quiet long enough.
        let seen = v.stats.control_in.load(Ordering::Acquire);
        let until = if named { quiet_at } else { give_up };
        platform::idle_until_or(until, || v.stats.control_in.load(Ordering::Acquire) != seen);
    }
    Ok(v)
}

fn prev_power_of_two(n: u16) -> u16 {
    if n == 0 {
        0
    } else {
        1 << (15 - n.leading_zeros())
    }
}

impl Vcon {
    /// A copy of the port table.
    pub fn ports(&self) -> Vec<PortInfo> {
        self.ports.lock().clone()
    }

    /// The port named `name`.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.ports
            .lock()
            .iter()
            .position(|p| p.present && p.name == name)
            .map(|i| i as u32)
    }

    /// Bytes port `id` transmitted that the driver has not yet taken back from the device.
    pub fn tx_unreaped(&self, id: u32) -> u64 {
        self.rings[id as usize].lock().tx_unreaped()
    }

    /// Whether port `id` has nothing left to transmit: its write queue is empty, nothing is
    /// gathered, and the device has returned every transmit buffer.
    pub fn tx_idle(&self, id: u32, st: &Stream) -> bool {
        let wq_empty = st
            .queue(1, streams::Side::Write)
            .is_none_or(|q| q.is_empty() && q.deferred() == 0);
        wq_empty && !self.rings[id as usize].lock().tx_pending()
    }

    /// Waits (idle) until port `id` transmitted everything or `timeout_ns` passed; returns
    /// whether it drained. Call before closing when the bytes must have reached the device.
    pub fn drain(&self, id: u32, st: &Stream, timeout_ns: u64) -> bool {
        let deadline = crate::platform::clock::now_ns() + timeout_ns;
        let rings = &self.rings[id as usize];
        // Completions are interrupted for only while someone waits for them.
        rings.lock().tx_wait(true);
        let done = platform::idle_until_or(deadline, || {
            if self.tx_idle(id, st) {
                return true;
            }
            if rings.lock().arm_tx(false) {
                // Used before the interrupt was asked for: the instance reaps them, and the
                // loop looks again rather than halting.
                self.ring(id as usize);
                platform::notify();
            }
            false
        });
        rings.lock().tx_wait(false);
        done
    }

    /// Opens port `id` as a stream: PORT_OPEN goes to the device and the open returns once
    /// the device has answered.
    pub fn open(&self, id: u32) -> Result<Stream, Errno> {
        if id >= self.max_ports || !self.ports.lock()[id as usize].present {
            return Err(Errno::ENXIO);
        }
        self.open_role(Role::Port(id))
    }

    fn open_role(&self, role: Role) -> Result<Stream, Errno> {
        let st = Stream::open_dev(self.streams, &self.def, role.dev()).map_err(|_| Errno::ENXIO)?;
        st.head().set_notify(platform::notify);
        st.head().set_writable(platform::notify);
        Ok(st)
    }

    fn slot(role: Role) -> usize {
        match role {
            Role::Control => CTRL_SLOT,
            Role::Port(p) => p as usize,
        }
    }

    /// Rings every registered doorbell that is not already in flight.
    fn ring_all(&self) {
        let mut out: Vec<(QueueRef, Mblk)> = Vec::new();
        for d in self.doorbells.lock().iter_mut().flatten() {
            if let Some(m) = d.ring.take() {
                out.push((d.q.clone(), m));
            }
        }
        for (q, m) in out {
            self.stats.doorbells.fetch_add(1, Ordering::Relaxed);
            let _ = q.put(m);
        }
    }

    /// Rings one instance's doorbell (if registered and not in flight).
    fn ring(&self, slot: usize) {
        let d = self.doorbells.lock()[slot]
            .as_mut()
            .and_then(|d| d.ring.take().map(|m| (d.q.clone(), m)));
        if let Some((q, m)) = d {
            self.stats.doorbells.fetch_add(1, Ordering::Relaxed);
            let _ = q.put(m);
        }
    }

    /// Puts a doorbell back in its slot (the instance is about to look at its rings).
    fn rearm(&self, slot: usize, m: Mblk) {
        if let Some(d) = self.doorbells.lock()[slot].as_mut() {
            d.ring = Some(m);
        }
    }
}

/// One open instance of the driver.
enum Instance {
    Control(control::Control),
    Port(port::Port),
    /// Opened without a role (refused in open).
    None,
}

impl Instance {
    fn new(v: &'static Vcon, role: Option<Role>) -> Instance {
        match role {
            Some(Role::Control) => Instance::Control(control::Control::new(v)),
            Some(Role::Port(p)) => Instance::Port(port::Port::new(v, p)),
            None => Instance::None,
        }
    }
}

impl Module for Instance {
    fn open(&self, q: Q<'_>, how: OpenHow) -> Result<(), Errno> {
        if how != OpenHow::Driver {
            return Err(Errno::EINVAL);
        }
        match self {
            Instance::Control(c) => c.open(q),
            Instance::Port(p) => p.open(q),
            Instance::None => Err(Errno::ENXIO),
        }
    }
    fn close(&self, q: Q<'_>) {
        match self {
            Instance::Control(_) => {
                let _ = q.qprocsoff();
            }
            Instance::Port(p) => p.close(q),
            Instance::None => {}
        }
    }
    fn put(&self, q: Q<'_>, mp: Mblk) {
        match self {
            Instance::Control(c) => c.put(q, mp),
            Instance::Port(p) => p.put(q, mp),
            Instance::None => {}
        }
    }
    fn srv(&self, q: Q<'_>) {
        if let Instance::Port(p) = self {
            p.srv(q)
        }
    }
}

/// Allocates `size` bytes inside open, waiting through qbufcall + qwait while the pool
/// refuses (buffer exhaustion, injected faults).
fn alloc_in_open(q: &Q<'_>, size: usize) -> Result<Mblk, Errno> {
    use core::sync::atomic::AtomicBool;
    loop {
        if let Some(m) = q.allocb(size) {
            return Ok(m);
        }
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        q.qbufcall(size, move |_| r.store(true, Ordering::Release))
            .map_err(|_| Errno::ENOMEM)?;
        while !ready.load(Ordering::Acquire) {
            q.qwait().map_err(|_| Errno::EIO)?;
        }
    }
}

/// Registers the instance's doorbell (and, for a port, its hang-up message).
fn register(v: &Vcon, role: Role, q: &Q<'_>) -> Result<(), Errno> {
    let ring = {
        let mut m = alloc_in_open(q, 0)?;
        m.set_type(streams::MsgType::M_CTL);
        m
    };
    let hangup = match role {
        Role::Port(_) => {
            let mut m = alloc_in_open(q, 0)?;
            m.set_type(streams::MsgType::M_HANGUP);
            Some(m)
        }
        Role::Control => None,
    };
    v.doorbells.lock()[Vcon::slot(role)] = Some(Doorbell {
        q: q.rdq().to_ref(),
        ring: Some(ring),
        hangup,
    });
    Ok(())
}

/// Removes an instance's doorbell.
fn deregister(v: &Vcon, role: Role) {
    let gone = v.doorbells.lock()[Vcon::slot(role)].take();
    drop(gone);
}
