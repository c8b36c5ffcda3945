//! The console as a STREAMS driver. Every port is a stream whose driver instance moves data
//! between the stream and the port's virtqueues; one more instance, the control stream,
//! carries the control queues. All instances share the driver's outer perimeter
//! (D_MTOUTPERIM): device-wide state changes there, through qwriter(PERIM_OUTER), while each
//! port's data paths run in the port's own inner perimeter (D_MTQPAIR).
//!
//! - Transmit (guest to host), the read side: the service procedure pops the guest's
//!   buffers while `canputnext` allows and sends each up as a desballoc'd message over guest
//!   memory. Freeing the message returns the buffer to the guest, so a slow backend holds
//!   the guest's buffers and throttles it; nothing is copied and nothing is dropped.
//! - Receive (host to guest), the write side: the put procedure queues what the backend
//!   writes; the service procedure copies it into the guest's receive buffers. With none
//!   posted, the queue fills, `canputnext` at the head turns false and the backend stops.

use super::Shared;
use super::port::{PortShared, Retry, lock};
use super::ring::{Pop, Ring};
use super::stages::HostPoint;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use streams::{
    Errno, FreeRoutine, Mblk, Module, MsgType, OpenHow, Perim, Q, SO_HIWAT, SO_LOWAT, Stroptions,
};
use virtio_queue::QueueOwnedT;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

/// High-water mark set on a port's stream head: guest bytes held for a slow backend.
pub use super::defs::PORT_HEAD_HIWAT as HEAD_HIWAT;
/// Low-water mark of a port's stream head.
pub use super::defs::PORT_HEAD_LOWAT as HEAD_LOWAT;

/// What one driver instance is.
pub(crate) enum Role {
    /// A port's stream.
    Port(Arc<PortShared>),
    /// The control stream.
    Control(Arc<Shared>),
    /// Opened without being asked for by the device: refuses to open.
    Unbound,
}

/// One instance of the console driver.
pub(crate) struct ConsoleDriver {
    pub role: Role,
}

impl Module for ConsoleDriver {
    fn open(&self, q: Q<'_>, how: OpenHow) -> Result<(), Errno> {
        if how != OpenHow::Driver {
            return Err(Errno::EINVAL);
        }
        match &self.role {
            Role::Port(p) => {
                q.qprocson().map_err(|_| Errno::EINVAL)?;
                *lock(&p.queues) = Some((q.rdq().to_ref(), q.wrq().to_ref()));
                let so = Stroptions {
                    flags: SO_HIWAT | SO_LOWAT,
                    hiwat: HEAD_HIWAT,
                    lowat: HEAD_LOWAT,
                    ..Default::default()
                };
                let mut m = q.allocb(so.encode().len()).ok_or(Errno::ENOMEM)?;
                m.set_type(MsgType::M_SETOPTS);
                m.write(&so.encode()).map_err(|_| Errno::ENOMEM)?;
                q.putnext(m);
                Ok(())
            }
            Role::Control(s) => {
                // The one message the control plane's qwriter carries, made now so that
                // control never needs an allocation (fault injection cannot stall it).
                let token = q.allocb(0).ok_or(Errno::ENOMEM)?;
                q.qprocson().map_err(|_| Errno::EINVAL)?;
                *lock(&s.token) = Some(token);
                *lock(&s.ctl_wq) = Some(q.wrq().to_ref());
                Ok(())
            }
            Role::Unbound => Err(Errno::ENXIO),
        }
    }

    fn close(&self, q: Q<'_>) {
        match &self.role {
            Role::Port(p) => {
                match lock(&p.retry).take() {
                    Some(Retry::Bufcall(id)) => q.qunbufcall(id),
                    Some(Retry::Timeout(id)) => drop(q.quntimeout(id)),
                    None => {}
                }
                let _ = q.qprocsoff();
                *lock(&p.queues) = None;
            }
            Role::Control(s) => {
                let _ = q.qprocsoff();
                *lock(&s.ctl_wq) = None;
                *lock(&s.token) = None;
            }
            Role::Unbound => {}
        }
    }

    fn put(&self, q: Q<'_>, mp: Mblk) {
        if q.is_read() {
            return q.putnext(mp);
        }
        match mp.db_type() {
            MsgType::M_DATA if matches!(self.role, Role::Port(_)) => q.putq(mp),
            MsgType::M_FLUSH => q.flush_driver(mp),
            _ => drop(mp),
        }
    }

    fn srv(&self, q: Q<'_>) {
        match &self.role {
            Role::Port(p) if q.is_read() => transmit(p, q),
            Role::Port(p) => receive(p, q),
            Role::Control(s) if !q.is_read() => run_control(s, q),
            _ => {}
        }
    }
}

/// Completes a transmit buffer when the last block of its message is freed.
struct TxToken {
    port: Arc<PortShared>,
    head: u16,
    epoch: u64,
    armed: AtomicBool,
}

impl Drop for TxToken {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let mut g = lock(&self.port.tx);
        if let Some(ring) = g.as_mut()
            && ring.epoch == self.epoch
        {
            ring.complete(self.head, 0);
            ring.notify(&self.port.counters);
        }
    }
}

/// Sends emergency-write bytes up first; false if they could not go yet.
fn flush_emerg(port: &Arc<PortShared>, q: Q<'_>) -> bool {
    let mut e = lock(&port.emerg);
    if e.is_empty() {
        return true;
    }
    if !q.canputnext() {
        return false;
    }
    let Some(mut m) = q.allocb(e.len()) else {
        port.counters
            .allocb_failures
            .fetch_add(1, Ordering::Relaxed);
        let len = e.len();
        drop(e);
        schedule_retry(port, q, len);
        return false;
    };
    m.write(&e).expect("sized to fit");
    e.clear();
    drop(e);
    q.putnext(m);
    true
}

/// The transmit path: guest buffers up the stream, without copying, while flow control allows.
fn transmit(port: &Arc<PortShared>, q: Q<'_>) {
    if !flush_emerg(port, q) {
        return;
    }
    if port.removed() {
        return; // the driver took the port away: its transmit ring is not ours to read
    }
    while q.canputnext() {
        let mut g = lock(&port.tx);
        let Some(ring) = g.as_mut() else { return };
        // While the device polls, an emptied ring stays unarmed (see `poll`).
        let (head, descs) = match ring.pop(!port.poll.active()) {
            Pop::Chain(head, bufs) => (head, bufs),
            Pop::Empty | Pop::Broken => return,
        };
        port.stages.stamp(HostPoint::Popped);
        let token = Arc::new(TxToken {
            port: port.clone(),
            head,
            epoch: ring.epoch,
            armed: AtomicBool::new(false),
        });
        let mut msg: Option<Mblk> = None;
        let mut bytes = 0u64;
        let mut failed = false;
        for (addr, len, write_only) in descs {
            if write_only || len == 0 {
                if write_only {
                    port.counters
                        .bad_descriptors
                        .fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let Some(b) = wrap_guest_buffer(ring, q, addr, len as usize, &token) else {
                failed = true;
                break;
            };
            let Some(b) = b else {
                port.counters
                    .bad_descriptors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            bytes += u64::from(len);
            match &mut msg {
                None => msg = Some(b),
                Some(m) => m.linkb(b),
            }
        }
        if failed {
            // Not armed: freeing the blocks made so far completes nothing. The guest's
            // buffer goes back to the ring and is taken again when memory returns.
            drop(msg);
            ring.queue.go_to_previous_position();
            drop(g);
            port.counters
                .allocb_failures
                .fetch_add(1, Ordering::Relaxed);
            schedule_retry(port, q, 0);
            return;
        }
        let Some(msg) = msg else {
            // Nothing to send (an empty or unusable buffer): give it back at once.
            ring.complete(head, 0);
            ring.notify(&port.counters);
            continue;
        };
        token.armed.store(true, Ordering::Release);
        drop(token);
        drop(g);
        port.counters.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
        port.counters.tx_msgs.fetch_add(1, Ordering::Relaxed);
        q.putnext(msg);
    }
}

/// One guest buffer as a message block: `None` if the allocation failed, `Some(None)` if
/// the buffer is not in guest memory.
fn wrap_guest_buffer(
    ring: &Ring,
    q: Q<'_>,
    addr: GuestAddress,
    len: usize,
    token: &Arc<TxToken>,
) -> Option<Option<Mblk>> {
    let Ok(slice) = ring.mem.get_slice(addr, len) else {
        return Some(None);
    };
    let ptr = slice.ptr_guard_mut().as_ptr();
    let (mem, held) = (ring.mem.clone(), token.clone());
    let id = Arc::new(AtomicUsize::new(0));
    let loan = id.clone();
    let free: FreeRoutine = Box::new(move || {
        held.port.lent.repay(loan.load(Ordering::Acquire));
        drop(held);
        drop(mem);
    });
    // SAFETY: `ptr..ptr + len` lies in one region of guest memory (get_slice checked it), and
    // `free` owns a handle to that memory, so the mapping outlives the message. The guest
    // handed the buffer to the device until it is returned, which happens only when the
    // token's last block is freed (virtio 1.2 §2.7: the driver does not touch a buffer it
    // made available). A guest that breaks that rule can change bytes under us; the host
    // treats them as opaque data, so it only garbles its own output.
    //
    // desballoc: the buffer is completed by the thread that frees the message (the backend's,
    // usually), without a hand-off to a worker per message. The free routine takes only the
    // port's transmit-ring lock and its loans' lock, briefly, and `transmit` never frees a
    // message while holding either. The loan recorded here lets a reset or a removal find
    // and end it (see `lent`).
    let m = unsafe { q.streams_handle().desballoc(ptr, len, free) }?;
    id.store(m.db_id(), Ordering::Release);
    token.port.lent.lend(m.db_id(), ring.epoch);
    Some(Some(m))
}

/// Asks for the transmit path to run again when memory returns (qbufcall), or in a tick if
/// even that cannot be registered.
fn schedule_retry(port: &Arc<PortShared>, q: Q<'_>, size: usize) {
    let mut r = lock(&port.retry);
    if r.is_some() {
        return;
    }
    let p = port.clone();
    let again = move |q: Q<'_>| {
        *lock(&p.retry) = None;
        p.counters.bufcall_retries.fetch_add(1, Ordering::Relaxed);
        q.qenable();
    };
    *r = match q.qbufcall(size, again.clone()) {
        Ok(id) => Some(Retry::Bufcall(id)),
        Err(_) => q.qtimeout(1, again).ok().map(Retry::Timeout),
    };
}

/// Moves the front of `cur` to a block with data, taking the next queued message if needed.
/// A message over guest buffers of an earlier generation (echoed before a reset) is dropped
/// and counted: its bytes are the guest's again.
fn advance(port: &PortShared, cur: &mut Option<Mblk>, q: Q<'_>) {
    loop {
        match cur.take() {
            Some(m) if !m.is_empty() => return *cur = Some(m),
            Some(m) => *cur = m.freeb(),
            None => {
                *cur = q.getq();
                match cur {
                    None => return,
                    Some(m) if port.lent.is_stale(m) => {
                        let n = m.msgdsize() as u64;
                        port.counters.drops.fetch_add(n, Ordering::Relaxed);
                        *cur = None;
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// The receive path: queued host data into the guest's receive buffers.
fn receive(port: &Arc<PortShared>, q: Q<'_>) {
    if !port.guest_open() {
        return; // kept until the guest opens the port
    }
    let mut g = lock(&port.rx);
    let Some(ring) = g.as_mut() else { return };
    let mut cur: Option<Mblk> = None;
    let mut used = false;
    loop {
        advance(port, &mut cur, q);
        if cur.is_none() {
            break;
        }
        let (head, descs) = match ring.pop(true) {
            Pop::Chain(head, bufs) => (head, bufs),
            Pop::Empty | Pop::Broken => break,
        };
        let mut written = 0u32;
        for (addr, len, write_only) in descs {
            if !write_only {
                port.counters
                    .bad_descriptors
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut off = 0u32;
            while off < len {
                advance(port, &mut cur, q);
                let Some(m) = cur.as_mut() else { break };
                let n = m.len().min((len - off) as usize);
                let Some(at) = addr.checked_add(u64::from(off)) else {
                    break;
                };
                if ring.mem.write_slice(&m.data()[..n], at).is_err() {
                    port.counters
                        .bad_descriptors
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let (r, w) = (m.rptr(), m.wptr());
                m.set_ptrs(r + n, w).expect("within the block");
                off += n as u32;
            }
            written += off;
        }
        ring.complete(head, written);
        used = true;
        port.counters
            .rx_bytes
            .fetch_add(u64::from(written), Ordering::Relaxed);
        port.counters.rx_msgs.fetch_add(1, Ordering::Relaxed);
    }
    // Nothing left over: the guest has all that came, and may answer it at once.
    let all_delivered = cur.is_none();
    if let Some(m) = cur {
        q.putbq(m);
    }
    if used {
        port.stages.stamp(HostPoint::Notified);
        ring.notify(&port.counters);
        if all_delivered {
            port.poll.delivered();
        }
    }
}

/// The control stream's service procedure: hands pending control work to the outer
/// perimeter, exclusively (qwriter(PERIM_OUTER)).
fn run_control(s: &Arc<Shared>, q: Q<'_>) {
    if s.pending.load(Ordering::Acquire) == 0 {
        return;
    }
    // Without the token a writer is queued or running; it looks at `pending` after it put
    // the token back, so this work is not missed.
    let Some(token) = lock(&s.token).take() else {
        return;
    };
    let shared = s.clone();
    let _ = q.qwriter(
        token,
        move |q, token| super::control::run(&shared, q, token),
        Perim::Outer,
    );
}
