//! The control stream: the driver's side of the control queues (virtio 1.2 §5.3.6.2).
//!
//! Received control messages are driver memory lent as esballoc'd messages; each is handled
//! in a qwriter(PERIM_OUTER) callback, so a change of the port table excludes every port's
//! put and service procedures. Sent control messages use small driver-owned slots: sending
//! never allocates, so an open or close can always tell the device.

use super::virtq::SplitQueue;
use super::{CTRL_SLOT, Role, Vcon, register};
use crate::drivers::ProbeError;
use crate::drivers::virtio_mmio::Transport;
use crate::platform::lock::IrqLock;
use alloc::alloc::{Layout, alloc_zeroed};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use streams::{CallbackId, Errno, Mblk, MsgType, Perim, Q};

use guest_abi::console::{
    CONTROL_LEN as CTRL_HDR, CTRL_RX_QUEUE, CTRL_TX_QUEUE, Control as Message, decode_resize, event,
};

const RX_BUF: usize = 512;
const TX_SLOTS: u16 = 32;

/// The control queues and their buffers.
pub struct CtrlRings {
    rx: SplitQueue<u16>,
    tx: SplitQueue<u16>,
    rx_mem: u64,
    tx_mem: u64,
    tx_free: Vec<u16>,
    /// Messages waiting for a free slot.
    pending: VecDeque<[u8; CTRL_HDR]>,
    /// Buffers the device filled and that are not yet handled, in order.
    done: VecDeque<(u16, u32)>,
    /// Receive buffers handed back by their messages' free routines.
    returned: Vec<u16>,
}

fn zeroed(len: usize) -> Result<u64, ProbeError> {
    let layout = Layout::from_size_align(len, 4096).expect("control buffers fit a layout");
    // SAFETY: `len` is non-zero; the memory is never freed (the device may write it).
    let p = unsafe { alloc_zeroed(layout) };
    if p.is_null() {
        Err(ProbeError::OutOfMemory("control buffers"))
    } else {
        Ok(p as u64)
    }
}

impl CtrlRings {
    /// Sets up the control queues (2 and 3) with `size` entries.
    pub fn new(t: &Transport, size: u16) -> Result<CtrlRings, ProbeError> {
        let mut c = CtrlRings {
            rx: SplitQueue::new(t, CTRL_RX_QUEUE, size)?,
            tx: SplitQueue::new(t, CTRL_TX_QUEUE, size)?,
            rx_mem: zeroed(RX_BUF * usize::from(size))?,
            tx_mem: zeroed(CTRL_HDR * usize::from(TX_SLOTS))?,
            tx_free: (0..TX_SLOTS).collect(),
            pending: VecDeque::new(),
            done: VecDeque::new(),
            returned: Vec::new(),
        };
        // A receive buffer in every slot, visible before DEVICE_READY: QEMU drops a control
        // message when no buffer is posted, and answers the PORT_READYs of 31 ports with
        // about 120 messages in one burst.
        for i in 0..size {
            c.post_rx(i);
        }
        c.rx.publish();
        let _ = c.rx.interrupt_after(0);
        Ok(c)
    }

    fn post_rx(&mut self, i: u16) {
        let addr = self.rx_mem + (usize::from(i) * RX_BUF) as u64;
        // The ring has a slot for every buffer (one per entry).
        let _ = self.rx.add(&[(addr, RX_BUF as u32)], true, i);
    }

    fn send_now(&mut self, msg: [u8; CTRL_HDR]) -> Result<(), [u8; CTRL_HDR]> {
        let Some(slot) = self.tx_free.pop() else {
            return Err(msg);
        };
        let addr = self.tx_mem + (usize::from(slot) * CTRL_HDR) as u64;
        // SAFETY: the slot is free (not in flight), inside the driver's slot memory.
        unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), addr as *mut u8, CTRL_HDR) };
        if let Err(slot) = self.tx.add(&[(addr, CTRL_HDR as u32)], false, slot) {
            self.tx_free.push(slot);
            return Err(msg);
        }
        Ok(())
    }

    /// Takes back sent slots and sends what waited for one.
    fn reap_tx(&mut self) {
        while let Some((slot, _)) = self.tx.pop_used() {
            self.tx_free.push(slot);
        }
        while let Some(m) = self.pending.pop_front() {
            if let Err(m) = self.send_now(m) {
                self.pending.push_front(m);
                break;
            }
        }
        self.tx.kick();
        // Slots come back at the next send or doorbell even without this interrupt.
        let _ = self.tx.interrupt_after(0);
    }
}

impl Vcon {
    /// Sends a control message (`id`, `event`, `value`) to the device. Never allocates.
    pub(super) fn send_control(&self, id: u32, event: u16, value: u16) {
        let m = Message { id, event, value }.encode();
        self.stats.control_out.fetch_add(1, Ordering::Relaxed);
        let mut c = self.ctrl.lock();
        c.reap_tx();
        if let Err(m) = c.send_now(m) {
            c.pending.push_back(m);
        }
        c.tx.kick();
        let _ = c.tx.interrupt_after(0);
    }
}

/// The control stream's instance.
pub struct Control {
    v: &'static Vcon,
    bufcall: Arc<IrqLock<Option<CallbackId>>>,
}

impl Control {
    /// The instance for the driver `v`.
    pub fn new(v: &'static Vcon) -> Control {
        Control {
            v,
            bufcall: Arc::new(IrqLock::new(None)),
        }
    }

    /// qprocson, the doorbell, then DEVICE_READY.
    pub fn open(&self, q: Q<'_>) -> Result<(), Errno> {
        q.qprocson().map_err(|_| Errno::EINVAL)?;
        register(self.v, Role::Control, &q)?;
        self.v.send_control(0, event::DEVICE_READY, 1);
        Ok(())
    }

    /// Read side: a doorbell. Write side: nothing is written to the control stream.
    pub fn put(&self, q: Q<'_>, mp: Mblk) {
        if q.is_read() && mp.db_type() == MsgType::M_CTL {
            self.v.rearm(CTRL_SLOT, mp);
            self.service(&q);
        }
    }

    fn service(&self, q: &Q<'_>) {
        let v = self.v;
        {
            let mut c = v.ctrl.lock();
            c.reap_tx();
            loop {
                while let Some((i, len)) = c.rx.pop_used() {
                    c.done.push_back((i, len.min(RX_BUF as u32)));
                }
                if !c.rx.interrupt_after(0) {
                    break;
                }
            }
            let returned = core::mem::take(&mut c.returned);
            for i in returned {
                c.post_rx(i);
            }
            c.rx.kick();
        }
        loop {
            let Some((i, len)) = v.ctrl.lock().done.front().copied() else {
                break;
            };
            let addr = v.ctrl.lock().rx_mem + (usize::from(i) * RX_BUF) as u64;
            let free = Box::new(move || {
                v.ctrl.lock().returned.push(i);
                v.ring(CTRL_SLOT);
            });
            // SAFETY: buffer i belongs to the driver (the device returned it) until `free`
            // runs, which puts it back on the ring.
            let mp = unsafe { v.streams.esballoc(addr as *mut u8, len as usize, free) };
            let Some(mp) = mp else {
                // No message header now: keep the buffer (one fewer posted) and retry when
                // the pool has room.
                if self.bufcall.lock().is_none() {
                    let b = self.bufcall.clone();
                    let id = q
                        .qbufcall(0, move |_| {
                            *b.lock() = None;
                            v.ring(CTRL_SLOT);
                        })
                        .ok();
                    *self.bufcall.lock() = id;
                }
                break;
            };
            v.ctrl.lock().done.pop_front();
            *self.bufcall.lock() = None;
            v.stats.control_in.fetch_add(1, Ordering::Relaxed);
            v.last_control_ns
                .store(crate::platform::clock::now_ns(), Ordering::Release);
            let _ = q.qwriter(mp, move |_, mp| handle(v, &mp), Perim::Outer);
        }
        // A thread on another CPU may wait for the port table to change (the probe).
        crate::platform::notify();
    }
}

/// One control message from the device, with every instance held off (outer perimeter).
fn handle(v: &Vcon, mp: &Mblk) {
    let d = mp.data();
    let Some(Message {
        id,
        event: ev,
        value,
    }) = Message::decode(d)
    else {
        v.stats.control_bad.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let payload = &d[CTRL_HDR..];
    if id >= v.max_ports {
        v.stats.control_bad.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let slot = id as usize;
    let mut hangup = None;
    {
        let mut ports = v.ports.lock();
        let p = &mut ports[slot];
        match ev {
            event::DEVICE_ADD => {
                p.present = true;
                p.removed = false;
            }
            event::DEVICE_REMOVE => {
                p.present = false;
                p.removed = true;
                p.host_open = false;
                hangup = v.doorbells.lock()[slot]
                    .as_mut()
                    .and_then(|d| d.hangup.take().map(|m| (d.q.clone(), m)));
            }
            event::CONSOLE_PORT => p.console = true,
            event::RESIZE if decode_resize(payload).is_some() => {
                p.size = decode_resize(payload).unwrap_or(p.size);
            }
            event::PORT_OPEN => {
                p.host_open = value != 0;
                p.open_answers += 1;
            }
            event::PORT_NAME => {
                let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
                p.name = String::from_utf8_lossy(name).into();
                p.named = true;
            }
            _ => {
                v.stats.control_bad.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    match ev {
        event::DEVICE_ADD if value == 1 => v.send_control(id, event::PORT_READY, 1),
        event::PORT_OPEN => v.ring(slot), // the opener waits in qwait for this
        _ => {}
    }
    if let Some((q, m)) = hangup {
        let _ = q.put(m);
    }
}
