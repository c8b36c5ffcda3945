//! A port's stream instance: transmit from the write queue, receive into the read queue.
//!
//! * Transmit is zero copy: each data block of a message becomes one descriptor, and the
//!   message is freed when the device returns the chain. When the ring is full the message
//!   waits on the write queue (flow control reaches the writer) and the service procedure
//!   sends it once a completion interrupt returns descriptors. Completions are reaped as the
//!   next message is sent; an interrupt is asked for only when someone needs them (a full
//!   ring, a drain or close waiting), or when the CPU runs out of work while the device holds
//!   more than [`TX_IRQ_BYTES`] or half the ring (the idle hook asks), so a steady writer
//!   takes no completion interrupt at all: its own sends reap.
//!   A message over a receive buffer (an echo sends what it read) is the exception: the
//!   reader may wait for that buffer, so its completion is asked for at once.
//! * Small writes are gathered: a message of at most [`SMALL_WRITE`] bytes that follows
//!   another write within [`GATHER_WINDOW_NS`], or finds the device holding an earlier
//!   buffer, is copied into one shared buffer of [`GATHER_BYTES`]. That buffer goes when
//!   full, before any larger message, at a drain or close, or when the CPU runs out of work
//!   (the platform's idle hook). A port is a byte stream, so only the descriptor count
//!   changes; a message that ends a delimited record (MSGDELIM) is never gathered. A lone
//!   write to an idle device goes at once (a round trip pays nothing).
//! * Receive buffers are driver memory; a filled one goes upstream as an esballoc'd message
//!   (zero copy). Their free routines give them back to the driver, which reposts them in
//!   batches of half of the port's buffers (one notification and, from the device, one
//!   interrupt per batch, not per buffer): the buffers not in a batch are upstream, and the
//!   reader's frees bring the batch together. When no message header can be had (pool
//!   exhausted, injected fault) the driver keeps the filled buffers in order, runs with
//!   fewer posted, and retries through qbufcall.
//! * open: qprocson, PORT_OPEN to the device, then qwait until the device's PORT_OPEN answer
//!   rings the read side (or a qtimeout gives up waiting, for devices that never answer).
//!   close: cancel the qbufcall/qtimeout, let queued output drain (bounded, as strclose
//!   does), qprocsoff, PORT_OPEN(0).

use super::virtq::SplitQueue;
use super::{Role, Vcon, alloc_in_open, deregister, register};
use crate::drivers::ProbeError;
use crate::drivers::virtio_mmio::Transport;
use crate::platform::lock::IrqLock;
use alloc::alloc::{Layout, alloc_zeroed};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_abi::console::{event, rx_queue, tx_queue};
use streams::{
    CallbackId, Errno, FLUSHW, MSGDELIM, Mblk, MsgType, Q, SO_HIWAT, SO_LOWAT, Stroptions,
};

/// Bytes per receive buffer unless the command line says `vcon.rxbuf=N`.
pub const DEFAULT_RX_BUF: usize = 16 * 1024;
/// Receive buffers per port unless the command line says `vcon.rxbufs=N`: at least this
/// many, and more when they are small, up to [`RX_POSTED_BYTES`] (or the ring's size).
pub const DEFAULT_RX_BUFS: usize = 32;
/// Bytes of receive buffers a port posts by default: small buffers come in numbers, so that
/// one interrupt covers as many bytes as a few large ones would.
pub const RX_POSTED_BYTES: usize = 256 * 1024;
/// Stream-head water marks set at open (bytes held for a slow reader).
use guest_abi::console::{PORT_HEAD_HIWAT as HEAD_HIWAT, PORT_HEAD_LOWAT as HEAD_LOWAT};
/// How long a close waits for the port's output to reach the device.
const CLOSE_DRAIN_NS: u64 = 5_000_000_000;
/// How long an open waits for the device's PORT_OPEN answer when the host side is closed (ms).
const OPEN_ANSWER_MS: u64 = 500;
/// Most segments a transmitted message may have before it is pulled up into one.
const MAX_SEGS: usize = 16;
/// Transmitted bytes the device may hold (or have returned unreaped) when the CPU runs out of
/// work before a completion interrupt is asked for: what an idle port keeps of the pool at
/// most. While the CPU has work, a port holds at most its ring's worth, as a busy device would.
pub const TX_IRQ_BYTES: u64 = 256 * 1024;
/// Ports holding more than [`TX_IRQ_BYTES`] or half their ring with no completion interrupt
/// asked for (the idle hook looks only when some do).
static HOLDING: AtomicUsize = AtomicUsize::new(0);

/// Largest write that may be gathered with others into one transmit buffer.
pub const SMALL_WRITE: usize = 512;
/// Size of the buffer small writes are gathered in.
pub const GATHER_BYTES: usize = 8 * 1024;
/// A small write this soon after the port's previous one is gathered: the writer streams.
pub const GATHER_WINDOW_NS: u64 = 20_000;
/// Ports holding gathered writes not yet sent (the idle hook looks only when some do).
static GATHERING: AtomicUsize = AtomicUsize::new(0);

/// Whether small writes are gathered: yes unless the command line says `vcon.gather=0`.
fn gathering_wanted() -> bool {
    static WANTED: spin::Once<bool> = spin::Once::new();
    *WANTED.call_once(|| crate::cpu::bootinfo::arg("vcon.gather") != Some("0"))
}

/// Where each port's receive buffers lie, `[start, end)`: set once when they are allocated
/// (they are never freed). A transmitted message over one of them holds a buffer its reader
/// may wait for.
static RX_SPANS: [(AtomicU64, AtomicU64); super::MAX_PORTS] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; super::MAX_PORTS];

/// Whether `addr` lies in some port's receive buffers.
fn in_rx_buffers(addr: u64) -> bool {
    RX_SPANS.iter().any(|(start, end)| {
        (start.load(Ordering::Relaxed)..end.load(Ordering::Relaxed)).contains(&addr)
    })
}

/// A port's queues and receive buffers; kept by the driver across opens.
pub struct PortRings {
    port: usize,
    rx: SplitQueue<u16>,
    tx: SplitQueue<Mblk>,
    rx_mem: u64,
    rx_buf: usize,
    /// Receive buffers allocated (0 before the first open).
    rx_count: usize,
    /// Filled buffers not yet sent upstream, in order.
    done: VecDeque<(u16, u32)>,
    /// Buffers handed back by their messages' free routines.
    returned: Vec<u16>,
    /// Bytes of the transmitted messages not yet reaped.
    tx_bytes: u64,
    /// The last transmit found no descriptors.
    tx_blocked: bool,
    /// A message in flight holds a receive buffer (cleared when none is in flight).
    tx_holds_rx: bool,
    /// Small writes gathered and not yet sent (never empty when present).
    gathered: Option<Mblk>,
    /// When the port's last write came to the driver (ns).
    last_write_ns: u64,
    /// Drains (close, [`super::Vcon::drain`]) waiting for every transmit buffer back.
    tx_waiters: u32,
    /// Counted in [`HOLDING`]: much in flight and no interrupt asked for it.
    holding: bool,
}

impl PortRings {
    /// Sets up port `p`'s receiveq and transmitq with `size` entries.
    pub fn new(t: &Transport, p: u32, size: u16) -> Result<PortRings, ProbeError> {
        Ok(PortRings {
            port: p as usize,
            rx: SplitQueue::new(t, rx_queue(p), size)?,
            tx: SplitQueue::new(t, tx_queue(p), size)?,
            rx_mem: 0,
            rx_buf: 0,
            rx_count: 0,
            done: VecDeque::new(),
            returned: Vec::new(),
            tx_bytes: 0,
            tx_blocked: false,
            tx_holds_rx: false,
            gathered: None,
            last_write_ns: 0,
            tx_waiters: 0,
            holding: false,
        })
    }

    /// Allocates and posts the receive buffers (first open only).
    fn ensure_rx(&mut self) -> Result<(), Errno> {
        if self.rx_mem != 0 {
            return Ok(());
        }
        let size = crate::cpu::bootinfo::arg("vcon.rxbuf")
            .and_then(|s| s.parse().ok())
            .unwrap_or(match super::RX_BUF.load(Ordering::Relaxed) {
                0 => DEFAULT_RX_BUF,
                n => n,
            })
            .clamp(64, 1 << 20);
        let count = crate::cpu::bootinfo::arg("vcon.rxbufs")
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_RX_BUFS.max(RX_POSTED_BYTES / size))
            .clamp(1, self.rx.num_free());
        let layout = Layout::from_size_align(size * count, 4096).map_err(|_| Errno::ENOMEM)?;
        // SAFETY: non-zero size; never freed (lent to the device for the driver's life).
        let mem = unsafe { alloc_zeroed(layout) };
        if mem.is_null() {
            return Err(Errno::ENOMEM);
        }
        self.rx_mem = mem as u64;
        self.rx_buf = size;
        self.rx_count = count;
        self.returned.extend(0..count as u16);
        let span = &RX_SPANS[self.port];
        span.0.store(mem as u64, Ordering::Relaxed);
        span.1
            .store((mem as usize + size * count) as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Returned receive buffers that make a batch worth reposting: half of the port's.
    fn rx_batch(&self) -> usize {
        (self.rx_count / 2).max(1)
    }

    /// Gives receive buffer `i` back; true when the returned ones make a batch (the caller
    /// rings the port's doorbell, whose service reposts them).
    fn give_back(&mut self, i: u16) -> bool {
        self.returned.push(i);
        self.returned.len() >= self.rx_batch()
    }

    /// Whether the device returned receive buffers not taken yet.
    pub fn rx_waiting(&self) -> bool {
        self.rx_mem != 0 && self.rx.has_used()
    }

    /// Asks for no receive interrupt (a polling CPU looks at the ring).
    pub fn rx_quiet(&mut self) {
        if self.rx_mem != 0 {
            self.rx.no_interrupt();
        }
    }

    /// Asks for the next receive interrupt again; true when buffers came back meanwhile (no
    /// interrupt comes for those).
    pub fn rx_rearm(&mut self) -> bool {
        self.rx_mem != 0 && self.rx.interrupt_after(0)
    }

    /// Bytes transmitted and not yet taken back from the device (returned or not).
    pub fn tx_unreaped(&self) -> u64 {
        self.tx_bytes
    }

    /// Whether output is on its way: buffers in flight or writes gathered.
    pub fn tx_pending(&self) -> bool {
        self.tx.in_flight() > 0 || self.gathered.is_some()
    }

    /// Makes message `mp` (its non-empty blocks `segs`) available on the transmit ring, or
    /// gives it back when descriptors are short.
    fn add_tx(&mut self, segs: &[(u64, u32)], mp: Mblk) -> Result<(), Mblk> {
        let bytes: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        let holds_rx = segs.iter().any(|s| in_rx_buffers(s.0));
        // Read before the buffer is published: the device may take it at once.
        let now = crate::platform::clock::ticks_ordered();
        match self.tx.add(segs, false, mp) {
            Ok(()) => {
                self.tx_blocked = false;
                self.tx_holds_rx |= holds_rx;
                self.tx_bytes += bytes;
                // Used already or not, the next send or reap takes them.
                let _ = self.arm_tx(false);
                let c = &COUNTERS[self.port];
                c.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
                c.last_avail.store(now, Ordering::Relaxed);
                Ok(())
            }
            Err(mp) => {
                self.tx_blocked = true;
                COUNTERS[self.port]
                    .tx_ring_full
                    .fetch_add(1, Ordering::Relaxed);
                Err(mp)
            }
        }
    }

    /// Sends the gathered writes (without notifying); false when they wait for descriptors.
    fn send_gathered(&mut self) -> bool {
        let Some(m) = self.gathered.take() else {
            return true;
        };
        let seg = (m.data().as_ptr() as u64, m.len() as u32);
        match self.add_tx(&[seg], m) {
            Ok(()) => {
                GATHERING.fetch_sub(1, Ordering::Relaxed);
                true
            }
            Err(m) => {
                self.gathered = Some(m);
                false
            }
        }
    }

    /// Sends the gathered writes and notifies the device; false when they wait for
    /// descriptors.
    fn flush_gathered(&mut self) -> bool {
        let sent = self.send_gathered();
        self.tx.kick();
        sent
    }

    /// Discards the gathered writes (a write-side flush).
    fn drop_gathered(&mut self) {
        if self.gathered.take().is_some() {
            GATHERING.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Asks for a transmit completion interrupt only when something waits for one: after the
    /// next completion when the ring was full, or (`idle`: the CPU runs out of work) holds
    /// too much; after the last when a drain waits; else none (the next send reaps). Returns
    /// whether buffers were used meanwhile (the caller reaps them: no interrupt comes for
    /// those).
    pub fn arm_tx(&mut self, idle: bool) -> bool {
        let n = self.tx.in_flight() as u16;
        let much = n > 0 && (self.tx_bytes >= TX_IRQ_BYTES || n >= self.tx.size() / 2);
        let ahead = if n == 0 {
            None
        } else if self.tx_blocked || self.tx_holds_rx || (idle && much) {
            Some(0)
        } else if self.tx_waiters > 0 {
            Some(n - 1)
        } else {
            None
        };
        // Much held and no interrupt at the next completion: the idle hook will ask for one.
        self.set_holding(much && ahead != Some(0));
        match ahead {
            Some(a) => self.tx.interrupt_after(a),
            None => {
                self.tx.no_interrupt();
                false
            }
        }
    }

    /// Whether this port is counted in [`HOLDING`] (the idle hook then asks for its interrupt).
    /// A port that starts holding makes a CPU about to halt run the hook again: a reap in an
    /// interrupt handler may have taken back the interrupt the hook asked for.
    fn set_holding(&mut self, holding: bool) {
        if holding != self.holding {
            self.holding = holding;
            if holding {
                HOLDING.fetch_add(1, Ordering::Relaxed);
                crate::platform::idle_again();
            } else {
                HOLDING.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A drain starts (true) or ends (false) waiting for the transmit buffers.
    pub fn tx_wait(&mut self, waiting: bool) {
        if waiting {
            self.tx_waiters += 1;
        } else {
            self.tx_waiters = self.tx_waiters.saturating_sub(1);
        }
    }

    /// Reposts the returned buffers: all of them with `all` (an open), else once they make a
    /// batch. No batch can be missing for good: every buffer not posted or returned is on
    /// its way back (upstream, or waiting for a message header, or in a transmission whose
    /// completion is asked for at once).
    fn repost(&mut self, all: bool) {
        debug_assert!(self.rx.in_flight() + self.returned.len() + self.done.len() <= self.rx_count);
        if self.returned.is_empty() || (!all && self.returned.len() < self.rx_batch()) {
            return;
        }
        for i in core::mem::take(&mut self.returned) {
            let addr = self.rx_mem + (usize::from(i) * self.rx_buf) as u64;
            let _ = self.rx.add(&[(addr, self.rx_buf as u32)], true, i);
        }
        self.rx.kick();
    }
}

/// Per-port counters.
#[derive(Default)]
pub struct PortCounters {
    /// Bytes sent to the device.
    pub tx_bytes: AtomicU64,
    /// Bytes received from the device.
    pub rx_bytes: AtomicU64,
    /// Receive buffers that waited for a message header (esballoc failed).
    pub rx_alloc_failures: AtomicU64,
    /// qbufcall retries run.
    pub bufcall_retries: AtomicU64,
    /// Times the transmit ring was full.
    pub tx_ring_full: AtomicU64,
    /// When a transmit buffer was last made available (TSC ticks).
    pub last_avail: AtomicU64,
}

/// Counters of every port, by id.
pub static COUNTERS: [PortCounters; super::MAX_PORTS] = [const {
    PortCounters {
        tx_bytes: AtomicU64::new(0),
        rx_bytes: AtomicU64::new(0),
        rx_alloc_failures: AtomicU64::new(0),
        bufcall_retries: AtomicU64::new(0),
        tx_ring_full: AtomicU64::new(0),
        last_avail: AtomicU64::new(0),
    }
}; super::MAX_PORTS];

#[derive(Default)]
struct PortState {
    bufcall: Option<CallbackId>,
    timeout: Option<CallbackId>,
    timed_out: bool,
}

/// One open port.
pub struct Port {
    v: &'static Vcon,
    id: u32,
    st: Arc<IrqLock<PortState>>,
}

impl Port {
    /// The instance for port `id`.
    pub fn new(v: &'static Vcon, id: u32) -> Port {
        Port {
            v,
            id,
            st: Arc::new(IrqLock::new(PortState::default())),
        }
    }

    fn rings(&self) -> crate::platform::lock::IrqGuard<'_, PortRings> {
        self.v.rings[self.id as usize].lock()
    }

    fn answers(&self) -> u64 {
        self.v.ports.lock()[self.id as usize].open_answers
    }

    /// qprocson, head water marks, receive buffers, PORT_OPEN, and qwait for the answer.
    pub fn open(&self, q: Q<'_>) -> Result<(), Errno> {
        q.qprocson().map_err(|_| Errno::EINVAL)?;
        register(self.v, Role::Port(self.id), &q)?;
        let so = Stroptions {
            flags: SO_HIWAT | SO_LOWAT,
            hiwat: HEAD_HIWAT,
            lowat: HEAD_LOWAT,
            ..Default::default()
        };
        let mut m = alloc_in_open(&q, so.encode().len())?;
        m.set_type(MsgType::M_SETOPTS);
        m.write(&so.encode()).map_err(|_| Errno::ENOMEM)?;
        q.putnext(m);
        {
            let mut r = self.rings();
            r.ensure_rx()?;
            r.repost(true);
            // Whatever is used already, the service below takes.
            let _ = r.rx.interrupt_after(0);
        }
        let seen = self.answers();
        let host_open = self.v.ports.lock()[self.id as usize].host_open;
        self.v.send_control(self.id, event::PORT_OPEN, 1);
        // perimeter answers with the host side's state, which also tells that the device saw
        // the open before any data; QEMU never answers (the virtio spec asks for none). Once
        // an open went unanswered, later opens of a port known to be open on the host side
        // do not wait.
        if !host_open || self.v.answers_opens.load(Ordering::Relaxed) {
            let answered = self.wait_open_answer(&q, seen)?;
            self.v.answers_opens.store(answered, Ordering::Relaxed);
        }
        // Data that arrived while the port was closed goes up now.
        self.service(&q);
        Ok(())
    }

    /// qwait until the device sends PORT_OPEN after `seen` answers, at most OPEN_ANSWER_MS;
    /// whether it answered.
    fn wait_open_answer(&self, q: &Q<'_>, seen: u64) -> Result<bool, Errno> {
        self.st.lock().timed_out = false;
        let st = self.st.clone();
        let id = q
            .qtimeout(OPEN_ANSWER_MS, move |_| {
                let mut s = st.lock();
                s.timed_out = true;
                s.timeout = None;
            })
            .ok();
        self.st.lock().timeout = id;
        while self.answers() == seen && !self.st.lock().timed_out {
            q.qwait().map_err(|_| Errno::EIO)?;
        }
        // Taken first: quntimeout may wait for a running callback, which takes `st`.
        let pending = self.st.lock().timeout.take();
        if let Some(id) = pending {
            q.quntimeout(id);
        }
        Ok(self.answers() != seen)
    }

    /// Cancels callbacks, qprocsoff, PORT_OPEN(0). Receive buffers stay posted; what the
    /// device fills meanwhile waits for the next open.
    pub fn close(&self, q: Q<'_>) {
        let (b, t) = {
            let mut s = self.st.lock();
            (s.bufcall.take(), s.timeout.take())
        };
        if let Some(b) = b {
            q.qunbufcall(b);
        }
        if let Some(t) = t {
            q.quntimeout(t);
        }
        self.drain_for_close(&q);
        deregister(self.v, Role::Port(self.id));
        let _ = q.qprocsoff();
        self.v.send_control(self.id, event::PORT_OPEN, 0);
    }

    /// What strclose does before a close: waits (qwait) until the write queue is empty and
    /// the device has returned every transmit buffer, for at most [`CLOSE_DRAIN_NS`]. A
    /// completion interrupt rings the doorbell, whose put wakes the qwait; the deadline is a
    /// platform timer whose interrupt rings every doorbell. What is left after it is freed.
    fn drain_for_close(&self, q: &Q<'_>) {
        self.rings().tx_wait(true);
        self.wait_drained(q);
        self.rings().tx_wait(false);
    }

    fn wait_drained(&self, q: &Q<'_>) {
        let deadline = crate::platform::clock::now_ns() + CLOSE_DRAIN_NS;
        let wq = q.wrq();
        loop {
            self.reap_tx();
            self.rings().flush_gathered();
            // A put that found the perimeter busy waits on its syncq, not in the queue: it
            // counts too (qprocsoff would free it). qwait lets it in.
            if wq.is_empty() && wq.deferred() == 0 && !self.rings().tx_pending() {
                return;
            }
            if crate::platform::clock::now_ns() >= deadline
                || self.v.ports.lock()[self.id as usize].removed
            {
                return;
            }
            if !wq.is_empty() {
                wq.qenable();
            }
            if self.rings().arm_tx(false) {
                continue; // returned meanwhile: take them now
            }
            crate::platform::wake_at(deadline);
            if q.qwait().is_err() {
                return;
            }
        }
    }

    /// Read side: doorbells and the hang-up. Write side: data and flushes.
    pub fn put(&self, q: Q<'_>, mp: Mblk) {
        if q.is_read() {
            match mp.db_type() {
                MsgType::M_CTL => {
                    self.v.rearm(self.id as usize, mp);
                    self.service(&q);
                }
                MsgType::M_HANGUP => q.putnext(mp),
                _ => {}
            }
            return;
        }
        match mp.db_type() {
            MsgType::M_DATA => {
                if !q.is_empty() {
                    q.putq(mp);
                    return;
                }
                // What the device returned since the last send goes back to the pool.
                self.reap_tx();
                let Some(mp) = self.gather(mp) else {
                    return; // sent with the next buffer, or when the CPU idles
                };
                match self.transmit(mp) {
                    Ok(()) => {
                        self.rings().tx.kick();
                    }
                    Err(m) => {
                        q.putq(m);
                        // Descriptors came back before the interrupt was asked for: the
                        // service procedure takes them and sends.
                        if self.rings().arm_tx(false) {
                            q.qenable();
                        }
                    }
                }
            }
            MsgType::M_FLUSH => {
                if mp.data().first().is_some_and(|f| f & FLUSHW != 0) {
                    self.rings().drop_gathered();
                }
                q.flush_driver(mp)
            }
            _ => {}
        }
    }

    /// Read side: pass queued data up while the reader keeps up. Write side: send what
    /// waited for descriptors.
    pub fn srv(&self, q: Q<'_>) {
        if q.is_read() {
            while let Some(mp) = q.getq() {
                if !q.canputnext() {
                    q.putbq(mp);
                    return;
                }
                q.putnext(mp);
            }
            return;
        }
        loop {
            self.reap_tx();
            let mut blocked = false;
            while let Some(mp) = q.getq() {
                let Some(mp) = self.gather(mp) else {
                    continue;
                };
                if let Err(mp) = self.transmit(mp) {
                    q.putbq(mp);
                    blocked = true;
                    break;
                }
            }
            let mut r = self.rings();
            r.tx.kick();
            // Blocked on descriptors: an interrupt is asked for, unless they came back already.
            if !blocked || !r.arm_tx(false) {
                return;
            }
        }
    }

    /// Makes `mp` available on the transmit ring (without notifying), after what was gathered.
    fn transmit(&self, mut mp: Mblk) -> Result<(), Mblk> {
        if mp.blocks().filter(|b| !b.is_empty()).count() > MAX_SEGS {
            mp.pullupmsg(-1);
        }
        let segs: Vec<(u64, u32)> = mp
            .blocks()
            .filter(|b| !b.is_empty())
            .map(|b| (b.data().as_ptr() as u64, b.len() as u32))
            .collect();
        if segs.is_empty() {
            return Ok(());
        }
        let mut r = self.rings();
        if !r.send_gathered() {
            return Err(mp);
        }
        r.add_tx(&segs, mp)
    }

    /// Copies a small write into the port's gathering buffer when the writer streams or the
    /// device still holds an earlier buffer; gives the message back when it is to be sent by
    /// itself (too large, a record's end, a lone write to an idle device, no buffer).
    fn gather(&self, mp: Mblk) -> Option<Mblk> {
        let now = crate::platform::clock::now_ns();
        let mut r = self.rings();
        let previous = core::mem::replace(&mut r.last_write_ns, now);
        let len = mp.msgdsize();
        if len == 0
            || len > SMALL_WRITE
            || mp.blocks().any(|b| b.flag() & MSGDELIM != 0)
            || !gathering_wanted()
        {
            return Some(mp);
        }
        let streaming = now.saturating_sub(previous) < GATHER_WINDOW_NS;
        if r.gathered.is_none() && r.tx.in_flight() == 0 && !streaming {
            return Some(mp);
        }
        let full = r
            .gathered
            .as_ref()
            .is_some_and(|g| g.capacity() - g.wptr() < len);
        if full && !r.send_gathered() {
            return Some(mp); // the ring is full: it waits behind them
        }
        if r.gathered.is_none() {
            let Some(g) = self.v.streams.allocb(GATHER_BYTES) else {
                return Some(mp);
            };
            r.gathered = Some(g);
            GATHERING.fetch_add(1, Ordering::Relaxed);
        }
        let g = r.gathered.as_mut().expect("set above");
        debug_assert!(g.capacity() - g.wptr() >= len);
        for b in mp.blocks() {
            g.write(b.data()).expect("room was checked");
        }
        None
    }

    /// Frees transmitted messages; true if any descriptor came back.
    fn reap_tx(&self) -> bool {
        let mut sent = Vec::new();
        {
            let mut r = self.rings();
            while let Some((mp, _)) = r.tx.pop_used() {
                r.tx_bytes = r.tx_bytes.saturating_sub(mp.msgdsize() as u64);
                sent.push(mp);
            }
            if sent.is_empty() {
                // Nothing moved since the interrupt was last asked for (or not): it stands.
                return false;
            }
            let n = r.tx.in_flight();
            if n == 0 {
                r.tx_bytes = 0;
                r.tx_holds_rx = false;
            }
            // Used already or not, the next reap takes them: no need to look again here.
            let _ = r.arm_tx(false);
            if n == 0 {
                // A thread on another CPU may wait for the port to drain (`Vcon::drain`).
                crate::platform::notify();
            }
        }
        !sent.is_empty()
    }

    /// What a doorbell does: completions, then received buffers upstream, then reposts.
    fn service(&self, q: &Q<'_>) {
        if self.reap_tx() {
            if !q.otherq().is_empty() {
                q.otherq().qenable();
            }
            // Descriptors came back: what was gathered goes now (the write queue's
            // service would send it first anyway).
            self.rings().flush_gathered();
        }
        {
            let mut r = self.rings();
            loop {
                while let Some((i, len)) = r.rx.pop_used() {
                    let len = len.min(r.rx_buf as u32);
                    r.done.push_back((i, len));
                }
                if super::poll::polling() {
                    r.rx_quiet(); // the polling CPU asks again when it stops
                    break;
                }
                if !r.rx.interrupt_after(0) {
                    break;
                }
            }
            r.repost(false);
        }
        let (v, id) = (self.v, self.id);
        loop {
            let (i, len, addr) = {
                let r = self.rings();
                let Some(&(i, len)) = r.done.front() else {
                    break;
                };
                (i, len, r.rx_mem + (usize::from(i) * r.rx_buf) as u64)
            };
            if len == 0 {
                let mut r = self.rings();
                r.done.pop_front();
                r.returned.push(i);
                continue; // reposted below
            }
            let free = Box::new(move || {
                let batch = v.rings[id as usize].lock().give_back(i);
                if batch {
                    v.ring(id as usize);
                }
            });
            // SAFETY: buffer i is the driver's (the device returned it) until `free` runs,
            // which reposts it; nobody else writes it meanwhile.
            let Some(mp) = (unsafe { v.streams.esballoc(addr as *mut u8, len as usize, free) })
            else {
                COUNTERS[id as usize]
                    .rx_alloc_failures
                    .fetch_add(1, Ordering::Relaxed);
                let idle = {
                    let s = self.st.lock();
                    s.bufcall.is_none() && s.timeout.is_none()
                };
                // Inside the perimeter: no callback of ours runs concurrently, so the state
                // cannot change between the test and the registration.
                if idle {
                    let st = self.st.clone();
                    let b = q
                        .qbufcall(0, move |_| {
                            st.lock().bufcall = None;
                            COUNTERS[id as usize]
                                .bufcall_retries
                                .fetch_add(1, Ordering::Relaxed);
                            v.ring(id as usize);
                        })
                        .ok();
                    let t = match b {
                        Some(_) => None,
                        // No room for a bufcall request either: look again a little later.
                        None => {
                            let st = self.st.clone();
                            q.qtimeout(1, move |_| {
                                st.lock().timeout = None;
                                v.ring(id as usize);
                            })
                            .ok()
                        }
                    };
                    let mut s = self.st.lock();
                    s.bufcall = b;
                    s.timeout = t;
                }
                break;
            };
            self.rings().done.pop_front();
            COUNTERS[id as usize]
                .rx_bytes
                .fetch_add(u64::from(len), Ordering::Relaxed);
            if q.is_empty() && q.canputnext() {
                q.putnext(mp);
            } else {
                q.putq(mp);
            }
        }
        self.rings().repost(false);
    }
}

/// The idle hook: every port's gathered writes go (the CPU has nothing left that would add
/// to them), and a port whose device holds much asks for the completion interrupt that
/// returns it to the pool (no send of the port's will reap it soon).
pub fn on_idle(v: &Vcon) {
    send_all_gathered(v);
    if HOLDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    for (id, rings) in v.rings.iter().enumerate() {
        let used = {
            let mut r = rings.lock();
            if !r.holding {
                continue;
            }
            r.arm_tx(true)
        };
        if used {
            v.ring(id); // returned meanwhile: the instance reaps them
        }
    }
}

/// Sends every port's gathered writes. A port whose ring is full asks for the interrupt that
/// frees descriptors.
fn send_all_gathered(v: &Vcon) {
    if GATHERING.load(Ordering::Relaxed) == 0 {
        return;
    }
    for (id, rings) in v.rings.iter().enumerate() {
        let used = {
            let mut r = rings.lock();
            if r.gathered.is_none() {
                continue;
            }
            !r.flush_gathered() && r.arm_tx(false)
        };
        if used {
            v.ring(id); // descriptors came back meanwhile: the instance sends
        }
    }
}
