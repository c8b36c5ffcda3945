//! The control plane (MULTIPORT): the handshake and port events, run exclusively in the
//! driver's outer perimeter. Anything may ask for control work by setting a bit in
//! [`Shared::pending`] and enabling the control stream; its service procedure enters the
//! outer perimeter with qwriter(PERIM_OUTER) and this module runs there.
//!
//! Replies wait in a backlog until the driver posts control receive buffers. The backlog is
//! bounded whatever the driver does: while it holds [`backlog_max`] messages the device takes no
//! more control messages from the driver (they wait in its transmit ring) and no more host
//! events (each port's event is a flag, so they coalesce); both resume as buffers arrive.

use super::Shared;
use super::defs::{Control, event, resize_payload};
use super::port::lock;
use super::ring::{Pop, Ring};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use streams::{Mblk, Q};
use vm_memory::{Bytes, GuestAddress};

/// The control transmitq has buffers from the driver.
pub(crate) const KICK_TX: u32 = 1 << 0;
/// The control receiveq has new buffers.
pub(crate) const KICK_RX: u32 = 1 << 1;
/// A port's host side changed (open state or size).
pub(crate) const HOST_EVENT: u32 = 1 << 2;
/// The device was activated or reset: take the staged rings.
pub(crate) const RECONFIGURE: u32 = 1 << 3;

/// The largest control message the device reads (header plus a short payload).
const MAX_CONTROL_IN: usize = 64;

/// Messages the backlog may hold before the device stops taking more work: room for a whole
/// handshake (DEVICE_ADD, then up to four replies to PORT_READY and one to PORT_OPEN per
/// port) into a single receive buffer. One driver message adds at most one message per port
/// and one host event pass at most two per port, so the backlog never exceeds this plus
/// twice the port count.
pub(crate) fn backlog_max(ports: usize) -> usize {
    8 * ports + 16
}

/// What the control queues hand over at activation (`None` rings without MULTIPORT).
pub(crate) struct Staged {
    pub rx: Option<Ring>,
    pub tx: Option<Ring>,
    pub multiport: bool,
}

/// Device-wide state, touched only inside the outer perimeter.
#[derive(Default)]
pub(crate) struct CtlState {
    rx: Option<Ring>,
    tx: Option<Ring>,
    multiport: bool,
    /// The driver sent DEVICE_READY.
    device_ready: bool,
    /// Ports the driver said PORT_READY for.
    ready: Vec<bool>,
    /// Messages for the driver waiting for control receive buffers.
    out: VecDeque<Vec<u8>>,
    /// The driver's transmit ring was left unread because the backlog was full.
    tx_held: bool,
    /// Host events were left pending because the backlog was full.
    host_held: bool,
    /// Per port: the driver does not have it (never added, unplugged at DEVICE_READY, or
    /// removed).
    removed: Vec<bool>,
}

impl CtlState {
    fn has_room(&self, ports: usize) -> bool {
        self.out.len() < backlog_max(ports)
    }

    fn is_removed(&self, id: u32) -> bool {
        self.removed.get(id as usize).copied().unwrap_or(false)
    }

    fn set_removed(&mut self, id: u32, removed: bool) {
        if let Some(r) = self.removed.get_mut(id as usize) {
            *r = removed;
        }
    }

    /// Forgets the control rings (a reset); the next activation stages new ones.
    pub(crate) fn drop_rings(&mut self) {
        self.rx = None;
        self.tx = None;
    }

    /// Whether the control plane holds a ring.
    #[cfg(test)]
    pub(crate) fn has_rings(&self) -> bool {
        self.rx.is_some() || self.tx.is_some()
    }

    /// Messages waiting for control receive buffers.
    pub(crate) fn backlog(&self) -> usize {
        self.out.len()
    }

    /// How many ports the driver does not have (its size never exceeds the port count).
    #[cfg(test)]
    pub(crate) fn removed_ports(&self) -> usize {
        self.removed.iter().filter(|&&r| r).count()
    }
}

/// Runs all pending control work (a qwriter(PERIM_OUTER) callback).
pub(crate) fn run(s: &Arc<Shared>, _q: Q<'_>, token: Mblk) {
    *lock(&s.token) = Some(token);
    let n = s.ports.len();
    loop {
        let bits = s.pending.swap(0, Ordering::AcqRel);
        let mut st = lock(&s.ctl);
        // Work left behind while the backlog was full, now that buffers made room.
        let room = st.has_room(n);
        let resume_tx = st.tx_held && room;
        let resume_host = st.host_held && room;
        if bits == 0 && !resume_tx && !resume_host {
            return;
        }
        if bits & RECONFIGURE != 0 {
            reconfigure(s, &mut st);
        }
        if bits & KICK_TX != 0 || resume_tx {
            from_driver(s, &mut st);
        }
        if bits & HOST_EVENT != 0 || resume_host {
            host_events(s, &mut st);
        }
        to_driver(s, &mut st);
        debug_assert!(
            st.backlog() <= backlog_max(n) + 2 * n,
            "the control backlog outgrew its bound: {}",
            st.backlog()
        );
        s.control_backlog
            .store(st.backlog() as u64, Ordering::Relaxed);
    }
}

fn reconfigure(s: &Shared, st: &mut CtlState) {
    let staged = lock(&s.staged).take();
    *st = CtlState {
        ready: vec![false; s.ports.len()],
        removed: vec![false; s.ports.len()],
        ..Default::default()
    };
    if let Some(staged) = staged {
        st.rx = staged.rx;
        st.tx = staged.tx;
        st.multiport = staged.multiport;
    }
}

fn send(s: &Shared, st: &mut CtlState, c: Control, payload: &[u8]) {
    let mut m = c.encode().to_vec();
    m.extend_from_slice(payload);
    st.out.push_back(m);
    s.control_out.fetch_add(1, Ordering::Relaxed);
}

/// Reads the driver's control messages and acts on them.
fn from_driver(s: &Shared, st: &mut CtlState) {
    st.tx_held = false;
    loop {
        if !st.has_room(s.ports.len()) {
            st.tx_held = true;
            return;
        }
        let Some(tx) = st.tx.as_mut() else { return };
        let (head, descs) = match tx.pop(true) {
            Pop::Chain(head, bufs) => {
                let d: Vec<(GuestAddress, u32)> = bufs
                    .into_iter()
                    .filter(|&(_, _, w)| !w)
                    .map(|(a, l, _)| (a, l))
                    .collect();
                (head, d)
            }
            Pop::Empty | Pop::Broken => return,
        };
        let mut bytes = Vec::with_capacity(16);
        for (addr, len) in descs {
            let take = (len as usize).min(MAX_CONTROL_IN - bytes.len());
            let mut b = vec![0u8; take];
            if tx.mem.read_slice(&mut b, addr).is_err() {
                break;
            }
            bytes.extend_from_slice(&b);
        }
        tx.complete(head, 0);
        s.control_in.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = Control::decode(&bytes) {
            handle(s, st, c);
        }
        if let Some(tx) = st.tx.as_mut() {
            tx.notify(&s.ctl_counters);
        }
    }
}

/// One message from the driver. Unknown ports and events are ignored (and counted).
fn handle(s: &Shared, st: &mut CtlState, c: Control) {
    let port = s.ports.get(c.id as usize);
    match (c.event, port) {
        (event::DEVICE_READY, _) if c.value == 1 => {
            st.device_ready = true;
            for p in &s.ports {
                if p.removed() {
                    st.set_removed(p.id, true);
                    continue;
                }
                let add = Control {
                    id: p.id,
                    event: event::DEVICE_ADD,
                    value: 1,
                };
                send(s, st, add, &[]);
            }
        }
        (event::DEVICE_READY, _) => st.device_ready = false,
        (event::PORT_READY | event::PORT_OPEN, Some(p)) if p.removed() => {
            s.control_ignored.fetch_add(1, Ordering::Relaxed);
        }
        (event::PORT_READY, Some(p)) => {
            st.ready[p.id as usize] = c.value == 1;
            if c.value != 1 {
                return;
            }
            if p.config.console {
                let console = Control {
                    id: p.id,
                    event: event::CONSOLE_PORT,
                    value: 1,
                };
                send(s, st, console, &[]);
                let (cols, rows) = p.size();
                if cols != 0 {
                    let resize = Control {
                        id: p.id,
                        event: event::RESIZE,
                        value: 0,
                    };
                    send(s, st, resize, &resize_payload(cols, rows));
                }
            }
            let name = Control {
                id: p.id,
                event: event::PORT_NAME,
                value: 1,
            };
            send(s, st, name, p.config.name.as_bytes());
            if p.host_open() {
                let open = Control {
                    id: p.id,
                    event: event::PORT_OPEN,
                    value: 1,
                };
                send(s, st, open, &[]);
            }
        }
        (event::PORT_OPEN, Some(p)) => {
            p.guest_open.store(c.value != 0, Ordering::Release);
            let count = match c.value {
                0 => &p.counters.guest_closes,
                _ => &p.counters.guest_opens,
            };
            count.fetch_add(1, Ordering::Relaxed);
            if c.value != 0 {
                p.kick_rx(); // deliver what the host sent while the port was closed
            }
            // Answer with the host side's state: a driver may wait for it to know that the
            // device has seen its open (Linux's driver takes it as a host-side event).
            let open = Control {
                id: p.id,
                event: event::PORT_OPEN,
                value: u16::from(p.host_open()),
            };
            send(s, st, open, &[]);
        }
        _ => {
            s.control_ignored.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Host-side changes of each port, as PORT_OPEN and RESIZE (or a config change without
/// MULTIPORT, where the size lives in the configuration space).
fn host_events(s: &Shared, st: &mut CtlState) {
    st.host_held = false;
    for p in &s.ports {
        if !st.has_room(s.ports.len()) {
            st.host_held = true; // the flags not yet taken stay set
            return;
        }
        if !p.host_event.swap(false, Ordering::AcqRel) {
            continue;
        }
        if !st.multiport {
            if p.id == 0
                && let Some(sig) = &*lock(&s.signals)
            {
                let _ = sig.config_changed();
            }
            continue;
        }
        let ready = st.ready.get(p.id as usize).copied().unwrap_or(false);
        if p.removed() {
            if st.device_ready && !st.is_removed(p.id) {
                st.set_removed(p.id, true);
                let remove = Control {
                    id: p.id,
                    event: event::DEVICE_REMOVE,
                    value: 0,
                };
                send(s, st, remove, &[]);
            }
            continue;
        }
        if st.is_removed(p.id) {
            // Plugged in again (or for the first time): the driver answers DEVICE_ADD with
            // PORT_READY, which tells it everything else.
            st.set_removed(p.id, false);
            if let Some(r) = st.ready.get_mut(p.id as usize) {
                *r = false;
            }
            let add = Control {
                id: p.id,
                event: event::DEVICE_ADD,
                value: 1,
            };
            send(s, st, add, &[]);
            continue;
        }
        if !ready {
            continue; // PORT_READY will tell the driver everything
        }
        let open = Control {
            id: p.id,
            event: event::PORT_OPEN,
            value: u16::from(p.host_open()),
        };
        send(s, st, open, &[]);
        let (cols, rows) = p.size();
        if p.config.console && cols != 0 {
            let resize = Control {
                id: p.id,
                event: event::RESIZE,
                value: 0,
            };
            send(s, st, resize, &resize_payload(cols, rows));
        }
    }
}

/// Writes waiting messages into the driver's control receive buffers; the rest wait for
/// more buffers (nothing is dropped).
fn to_driver(s: &Shared, st: &mut CtlState) {
    let Some(rx) = st.rx.as_mut() else { return };
    let mut used = false;
    while let Some(m) = st.out.front() {
        let (head, descs) = match rx.pop(true) {
            Pop::Chain(head, bufs) => {
                let d: Vec<(GuestAddress, u32)> = bufs
                    .into_iter()
                    .filter(|&(_, _, w)| w)
                    .map(|(a, l, _)| (a, l))
                    .collect();
                (head, d)
            }
            Pop::Empty | Pop::Broken => break,
        };
        let mut off = 0usize;
        for (addr, len) in descs {
            let n = (len as usize).min(m.len() - off);
            if n == 0 || rx.mem.write_slice(&m[off..off + n], addr).is_err() {
                break;
            }
            off += n;
        }
        rx.complete(head, off as u32);
        used = true;
        st.out.pop_front();
    }
    if used {
        rx.notify(&s.ctl_counters);
    }
}
