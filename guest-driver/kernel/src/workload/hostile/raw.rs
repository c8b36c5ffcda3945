//! A bare virtio-console driver for the hostile workload: rings written by hand, so that a
//! case can put anything in them, and polled (the device's interrupts go unhandled).
//!
//! Written here rather than with [`SplitQueue`](crate::drivers::vcon::virtq::SplitQueue) or
//! `virtio-drivers`: both refuse to build the malformed rings and register sequences the
//! cases need. Every queue gets its own zeroed pages, reused across resets.

use crate::drivers::vcon::event;
use crate::drivers::virtio_mmio::{self as reg, F_VERSION_1, Transport};
use crate::platform::clock;
use alloc::alloc::{Layout, alloc_zeroed};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::{read_volatile, write_bytes, write_volatile};
use core::sync::atomic::{Ordering, fence};

/// VIRTIO_CONSOLE_F_MULTIPORT.
const F_MULTIPORT: u64 = 1 << 1;
/// The size every queue is given.
pub const QSIZE: u16 = 16;
/// Descriptor flag NEXT.
pub const NEXT: u16 = 1;
/// Descriptor flag WRITE (device-writable).
pub const WRITE: u16 = 2;
/// The control receiveq and transmitq.
pub const CTRL_RX: u16 = 2;
/// See [`CTRL_RX`].
pub const CTRL_TX: u16 = 3;
const PAGE: usize = 4096;
/// Bytes of each queue's buffers (one per descriptor).
pub const BUF: usize = 512;
/// How long the device gets to answer anything.
const TIMEOUT_NS: u64 = 5_000_000_000;

/// Port `p`'s receiveq.
pub fn rx_queue(p: u32) -> u16 {
    if p == 0 { 0 } else { (2 + 2 * p) as u16 }
}

/// Port `p`'s transmitq.
pub fn tx_queue(p: u32) -> u16 {
    rx_queue(p) + 1
}

/// One queue: descriptor table, avail ring and used ring a page each (room for 256
/// entries, so a device that kept a larger size still reads only our pages), then a
/// buffer of [`BUF`] bytes per descriptor.
pub struct RawQueue {
    base: u64,
    avail_idx: u16,
    last_used: u16,
}

impl RawQueue {
    fn new() -> RawQueue {
        let layout = Layout::from_size_align(3 * PAGE + usize::from(QSIZE) * BUF, PAGE)
            .expect("a page-aligned layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        assert!(!p.is_null(), "hostile: out of memory for a queue");
        RawQueue {
            base: p as u64,
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// The descriptor table's address.
    pub fn desc_addr(&self) -> u64 {
        self.base
    }

    fn avail_addr(&self) -> u64 {
        self.base + PAGE as u64
    }

    fn used_addr(&self) -> u64 {
        self.base + 2 * PAGE as u64
    }

    /// The address of descriptor `i`'s buffer.
    pub fn buf(&self, i: u16) -> u64 {
        self.base + 3 * PAGE as u64 + u64::from(i % QSIZE) * BUF as u64
    }

    fn clear(&mut self) {
        // SAFETY: the three ring pages belong to this queue; the device was reset, so it
        // no longer reads or writes them.
        unsafe { write_bytes(self.base as *mut u8, 0, 3 * PAGE) };
        self.avail_idx = 0;
        self.last_used = 0;
    }

    fn w16(addr: u64, v: u16) {
        // SAFETY: callers pass an address inside this queue's rings (identity-mapped).
        unsafe { write_volatile(addr as *mut u16, v) }
    }

    fn r16(addr: u64) -> u16 {
        // SAFETY: as for `w16`.
        unsafe { read_volatile(addr as *const u16) }
    }

    /// Writes descriptor `i` (any values: that is the point).
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.base + 16 * u64::from(i % QSIZE);
        // SAFETY: descriptor `i % QSIZE` lies in the table page.
        unsafe {
            write_volatile(d as *mut u64, addr);
            write_volatile((d + 8) as *mut u32, len);
        }
        Self::w16(d + 12, flags);
        Self::w16(d + 14, next);
    }

    /// Puts `head` in the next avail slot and publishes the new index.
    pub fn offer(&mut self, head: u16) {
        let slot = self.avail_addr() + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        Self::w16(slot, head);
        self.set_avail_idx(self.avail_idx.wrapping_add(1));
    }

    /// Publishes avail index `idx`, whatever it is.
    pub fn set_avail_idx(&mut self, idx: u16) {
        fence(Ordering::SeqCst);
        Self::w16(self.avail_addr() + 2, idx);
        self.avail_idx = idx;
        fence(Ordering::SeqCst);
    }

    /// The next used element (id, length), if the device returned one.
    pub fn take_used(&mut self) -> Option<(u32, u32)> {
        if Self::r16(self.used_addr() + 2) == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let e = self.used_addr() + 4 + 8 * u64::from(self.last_used % QSIZE);
        // SAFETY: element `last_used % QSIZE` lies in the used page.
        let (id, len) = unsafe {
            (
                read_volatile(e as *const u32),
                read_volatile((e + 4) as *const u32),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Makes descriptor `i` available as one buffer of `len` bytes at its own address.
    pub fn post(&mut self, i: u16, len: u32, flags: u16) {
        self.set_desc(i, self.buf(i), len, flags, 0);
        self.offer(i);
    }
}

/// The device and its queues.
pub struct Raw {
    /// Its registers.
    pub t: Transport,
    /// Every queue the device has (two per port and two for control).
    pub q: Vec<RawQueue>,
    /// Ports, as the configuration space says.
    pub ports: u32,
    /// Port names from the handshake (empty until named).
    pub names: Vec<String>,
}

impl Raw {
    /// The device behind `t`, reset, with memory for all its queues.
    pub fn new(t: Transport) -> Raw {
        t.write_reg(reg::STATUS, 0);
        let ports = t.config_u32(4).clamp(1, 31);
        let q = (0..2 * (ports + 1)).map(|_| RawQueue::new()).collect();
        Raw {
            t,
            q,
            ports,
            names: Vec::new(),
        }
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.t.read_reg(reg::STATUS)
    }

    /// Whether the device set DEVICE_NEEDS_RESET.
    pub fn needs_reset(&self) -> bool {
        self.status() & reg::NEEDS_RESET != 0
    }

    /// Resets the device and forgets every ring.
    pub fn reset(&mut self) {
        self.t.write_reg(reg::STATUS, 0);
        for q in &mut self.q {
            q.clear();
        }
        self.names.clear();
    }

    /// Reset, then ACKNOWLEDGE, DRIVER, VERSION_1 | MULTIPORT and FEATURES_OK.
    pub fn negotiate(&mut self) -> Result<(), String> {
        self.reset();
        let f = self
            .t
            .negotiate(F_VERSION_1 | F_MULTIPORT)
            .map_err(|e| format!("{e}"))?;
        if f & F_MULTIPORT == 0 {
            return Err("the device does not offer MULTIPORT".into());
        }
        Ok(())
    }

    /// Queue `i` with size `size` (written as it is) and rings at `desc` and after.
    pub fn setup_queue_at(&self, i: u16, size: u32, desc: u64) {
        let t = &self.t;
        t.write_reg(reg::QUEUE_SEL, i.into());
        t.write_reg(reg::QUEUE_NUM, size);
        let (avail, used) = (desc + PAGE as u64, desc + 2 * PAGE as u64);
        for (r, a) in [
            (reg::QUEUE_DESC, desc),
            (reg::QUEUE_DRIVER, avail),
            (reg::QUEUE_DEVICE, used),
        ] {
            t.write_reg(r, a as u32);
            t.write_reg(r + 4, (a >> 32) as u32);
        }
        t.write_reg(reg::QUEUE_READY, 1);
    }

    /// Every queue with [`QSIZE`] entries, except queue `bad` with `size` (if given).
    pub fn setup_queues(&self, bad: Option<(u16, u32)>) {
        for (i, q) in self.q.iter().enumerate() {
            let i = i as u16;
            let size = bad.filter(|b| b.0 == i).map_or(QSIZE.into(), |b| b.1);
            self.setup_queue_at(i, size, q.desc_addr());
        }
    }

    /// Sets DRIVER_OK; false if the device then needs a reset.
    pub fn driver_ok(&self) -> bool {
        self.t.driver_ok().is_ok()
    }

    /// Notifies queue `i` (any number).
    pub fn kick(&self, i: u32) {
        self.t.write_reg(reg::QUEUE_NOTIFY, i);
    }

    /// Polls `f` until it gives a value, or fails after a few seconds saying `what`.
    pub fn wait<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Raw) -> Option<T>,
    ) -> Result<T, String> {
        let until = clock::now_ns() + TIMEOUT_NS;
        loop {
            if let Some(v) = f(self) {
                return Ok(v);
            }
            if clock::now_ns() > until {
                return Err(format!(
                    "timed out waiting for {what} (status {:#x})",
                    self.status()
                ));
            }
            core::hint::spin_loop();
        }
    }

    /// Sends `bytes` on the control transmitq and waits until the device took them.
    pub fn ctl_send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let q = &mut self.q[usize::from(CTRL_TX)];
        let n = bytes.len().min(BUF);
        // SAFETY: buffer 0 of the control transmitq is ours and BUF bytes long.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), q.buf(0) as *mut u8, n) };
        q.post(0, n as u32, 0);
        self.kick(CTRL_TX.into());
        self.wait("a control message to be taken", |d| {
            d.q[usize::from(CTRL_TX)].take_used()
        })
        .map(drop)
    }

    /// Sends a control message.
    pub fn ctl_send(&mut self, id: u32, event: u16, value: u16) -> Result<(), String> {
        let mut m = [0u8; 8];
        m[..4].copy_from_slice(&id.to_le_bytes());
        m[4..6].copy_from_slice(&event.to_le_bytes());
        m[6..].copy_from_slice(&value.to_le_bytes());
        self.ctl_send_raw(&m)
    }

    /// Control messages received so far: (id, event, value, payload); reposts the buffers.
    pub fn ctl_recv(&mut self) -> Vec<(u32, u16, u16, Vec<u8>)> {
        let mut out = Vec::new();
        let q = &mut self.q[usize::from(CTRL_RX)];
        while let Some((id, len)) = q.take_used() {
            let i = id as u16 % QSIZE;
            let len = (len as usize).min(BUF);
            // SAFETY: the device wrote `len` (at most BUF) bytes into buffer `i`.
            let b = unsafe { core::slice::from_raw_parts(q.buf(i) as *const u8, len) };
            if len >= 8 {
                let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let ev = u16::from_le_bytes([b[4], b[5]]);
                let v = u16::from_le_bytes([b[6], b[7]]);
                out.push((id, ev, v, b[8..].to_vec()));
            }
            q.post(i, BUF as u32, WRITE);
        }
        if !out.is_empty() {
            self.kick(CTRL_RX.into());
        }
        out
    }

    /// The MULTIPORT handshake: every port added and named; the ports in `open` opened
    /// (and the device's answer seen), with receive buffers posted on them first.
    pub fn handshake(&mut self, open: &[u32]) -> Result<(), String> {
        for i in 0..QSIZE {
            self.q[usize::from(CTRL_RX)].post(i, BUF as u32, WRITE);
        }
        self.kick(CTRL_RX.into());
        self.ctl_send(0, event::DEVICE_READY, 1)?;
        let ports = self.ports as usize;
        let mut added = 0;
        self.wait("DEVICE_ADD for every port", |d| {
            added += d
                .ctl_recv()
                .iter()
                .filter(|m| m.1 == event::DEVICE_ADD)
                .count();
            (added >= ports).then_some(())
        })?;
        self.names = alloc::vec![String::new(); ports];
        for p in 0..self.ports {
            self.ctl_send(p, event::PORT_READY, 1)?;
        }
        self.wait("every port's name", |d| {
            for (id, ev, _, payload) in d.ctl_recv() {
                if let (event::PORT_NAME, Some(n)) = (ev, d.names.get_mut(id as usize)) {
                    *n = String::from_utf8_lossy(&payload).into_owned();
                }
            }
            d.names.iter().all(|n| !n.is_empty()).then_some(())
        })?;
        for &p in open {
            let rx = usize::from(rx_queue(p));
            for i in 0..QSIZE {
                self.q[rx].post(i, BUF as u32, WRITE);
            }
            self.kick(rx as u32);
            self.ctl_send(p, event::PORT_OPEN, 1)?;
            self.wait("the device's PORT_OPEN answer", |d| {
                d.ctl_recv()
                    .iter()
                    .any(|m| m.0 == p && m.1 == event::PORT_OPEN)
                    .then_some(())
            })?;
        }
        Ok(())
    }

    /// Negotiation, every queue, DRIVER_OK and the handshake opening `open`.
    pub fn up(&mut self, open: &[u32]) -> Result<(), String> {
        self.negotiate()?;
        self.setup_queues(None);
        if !self.driver_ok() {
            return Err("the device needs a reset right after DRIVER_OK".into());
        }
        self.handshake(open)
    }

    /// The port called `name`.
    pub fn port(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|p| p as u32)
    }

    /// Sends `len` bytes seeded by `seed` on echo port `p` and checks they come back.
    pub fn echo_check(&mut self, p: u32, seed: u8, len: usize) -> Result<(), String> {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(13) ^ seed)
            .collect();
        let (tx, rx) = (usize::from(tx_queue(p)), usize::from(rx_queue(p)));
        for c in data.chunks(BUF) {
            let q = &mut self.q[tx];
            // SAFETY: buffer 0 of the port's transmitq is ours and BUF bytes long.
            unsafe { core::ptr::copy_nonoverlapping(c.as_ptr(), q.buf(0) as *mut u8, c.len()) };
            q.post(0, c.len() as u32, 0);
            self.kick(tx as u32);
            self.wait("the echo port's transmit buffer", |d| d.q[tx].take_used())?;
        }
        let mut got = Vec::new();
        self.wait("the echo", |d| {
            let (q, mut reposted) = (&mut d.q[rx], false);
            while let Some((id, len)) = q.take_used() {
                let i = id as u16 % QSIZE;
                // SAFETY: the device wrote `len` bytes (at most BUF) into buffer `i`.
                let b = unsafe {
                    core::slice::from_raw_parts(q.buf(i) as *const u8, (len as usize).min(BUF))
                };
                got.extend_from_slice(b);
                q.post(i, BUF as u32, WRITE);
                reposted = true;
            }
            if reposted {
                d.kick(rx as u32);
            }
            (got.len() >= data.len()).then_some(())
        })?;
        if got != data {
            return Err(format!(
                "the echo differs ({} bytes back, {} sent)",
                got.len(),
                len
            ));
        }
        Ok(())
    }
}
