//! A fake guest driver for tests and benchmarks: it drives a device through the virtio-mmio
//! transport's registers and keeps split virtqueues in plain guest memory, as a guest's
//! driver would (descriptor chains, indirect tables, EVENT_IDX, the used ring).

use crate::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::virtio::{MmioTransport, Signals, VirtioDevice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where queue `i` lives: descriptors, avail ring at +0x1000, used ring at +0x2000.
const QUEUE_BASE: u64 = 0x10_0000;
const QUEUE_STRIDE: u64 = 0x4000;
/// Where buffers start.
const HEAP_BASE: u64 = 0x20_0000;

/// One buffer of a chain: guest address, length, device-writable.
pub type Buf = (u64, u32, bool);

struct FakeQueue {
    base: u64,
    size: u16,
    free: Vec<u16>,
    chains: std::collections::HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    kicked_at: u16,
    last_used: u16,
}

impl FakeQueue {
    fn avail(&self) -> u64 {
        self.base + 0x1000
    }
    fn used(&self) -> u64 {
        self.base + 0x2000
    }
}

/// A guest driver that does everything by hand.
pub struct FakeGuest {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The transport, as the guest's MMIO accesses reach it.
    pub transport: MmioTransport,
    /// Interrupts the device raised.
    pub irqs: Arc<AtomicUsize>,
    /// The features accepted.
    pub features: u64,
    /// Kicks that EVENT_IDX let the guest skip.
    pub kicks_suppressed: usize,
    queues: Vec<FakeQueue>,
    heap: u64,
    mem_size: u64,
    event_idx: bool,
    kick: Box<dyn Fn(u16) + Send>,
}

impl FakeGuest {
    /// A guest with `mem_size` bytes of memory driving `device`; `kick` is what a queue
    /// notification does (the event loop's work).
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem_size: usize,
        kick: Box<dyn Fn(u16) + Send>,
    ) -> FakeGuest {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)])
            .expect("guest memory");
        let irqs = Arc::new(AtomicUsize::new(0));
        let i2 = irqs.clone();
        let signals = Arc::new(Signals::new(Box::new(move || {
            i2.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })));
        let transport = MmioTransport::new(device, mem.clone(), signals).expect("eventfds");
        FakeGuest {
            mem,
            transport,
            irqs,
            features: 0,
            kicks_suppressed: 0,
            queues: Vec::new(),
            heap: HEAP_BASE,
            mem_size: mem_size as u64,
            event_idx: false,
            kick,
        }
    }

    /// Reads a transport register.
    pub fn rd(&mut self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(reg.into(), &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes a transport register.
    pub fn wr(&mut self, reg: u32, v: u32) {
        self.transport.write(reg.into(), &v.to_le_bytes());
    }

    /// The Status register.
    pub fn status(&mut self) -> u32 {
        self.rd(VIRTIO_MMIO_STATUS)
    }

    /// The device's offered features.
    pub fn device_features(&mut self) -> u64 {
        self.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let lo = self.rd(VIRTIO_MMIO_DEVICE_FEATURES);
        self.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        let hi = self.rd(VIRTIO_MMIO_DEVICE_FEATURES);
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// ACKNOWLEDGE, DRIVER, accepts `wanted & offered`, FEATURES_OK; whether it stuck.
    pub fn negotiate(&mut self, wanted: u64) -> bool {
        self.wr(VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
        self.wr(VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
        let f = self.device_features() & wanted;
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES, f as u32);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.wr(VIRTIO_MMIO_DRIVER_FEATURES, (f >> 32) as u32);
        self.wr(VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.features = f;
        self.event_idx = f & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        self.status() & FEATURES_OK != 0
    }

    /// Sets up queues `0..n` at their full size and sets DRIVER_OK.
    pub fn start(&mut self, n: u16) {
        self.queues.clear();
        for i in 0..n {
            self.wr(VIRTIO_MMIO_QUEUE_SEL, i.into());
            let size = self.rd(VIRTIO_MMIO_QUEUE_NUM_MAX) as u16;
            let base = QUEUE_BASE + u64::from(i) * QUEUE_STRIDE;
            // Fresh rings: zero the avail and used areas.
            self.mem
                .write_slice(&vec![0u8; QUEUE_STRIDE as usize], GuestAddress(base))
                .expect("queue memory");
            self.wr(VIRTIO_MMIO_QUEUE_NUM, size.into());
            for (lo, hi, a) in [
                (
                    VIRTIO_MMIO_QUEUE_DESC_LOW,
                    VIRTIO_MMIO_QUEUE_DESC_HIGH,
                    base,
                ),
                (
                    VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                    VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
                    base + 0x1000,
                ),
                (
                    VIRTIO_MMIO_QUEUE_USED_LOW,
                    VIRTIO_MMIO_QUEUE_USED_HIGH,
                    base + 0x2000,
                ),
            ] {
                self.wr(lo, a as u32);
                self.wr(hi, (a >> 32) as u32);
            }
            self.wr(VIRTIO_MMIO_QUEUE_READY, 1);
            self.queues.push(FakeQueue {
                base,
                size,
                free: (0..size).rev().collect(),
                chains: Default::default(),
                avail_idx: 0,
                kicked_at: 0,
                last_used: 0,
            });
        }
        let s = self.status();
        self.wr(VIRTIO_MMIO_STATUS, s | DRIVER_OK);
    }

    /// Takes `len` bytes of guest memory for buffers (never given back).
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.heap;
        self.heap = (self.heap + len + 15) & !15;
        assert!(self.heap <= self.mem_size, "fake guest out of memory");
        at
    }

    /// Writes guest memory.
    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .expect("in memory");
    }

    /// Reads guest memory.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem
            .read_slice(&mut b, GuestAddress(addr))
            .expect("in memory");
        b
    }

    fn write_desc(&self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.write(at, &d);
    }

    /// Free descriptors of queue `q`.
    pub fn free_descriptors(&self, q: u16) -> usize {
        self.queues[q as usize].free.len()
    }

    /// Makes a chain of `bufs` available on queue `q` (one descriptor each, or one indirect
    /// table with `indirect`); returns its head, or `None` if the ring is full.
    pub fn post(&mut self, q: u16, bufs: &[Buf], indirect: bool) -> Option<u16> {
        let table = if indirect {
            Some(self.alloc(16 * bufs.len() as u64))
        } else {
            None
        };
        let fq = &mut self.queues[q as usize];
        let need = if indirect { 1 } else { bufs.len() };
        if fq.free.len() < need || bufs.is_empty() {
            return None;
        }
        let ids: Vec<u16> = (0..need).map(|_| fq.free.pop().expect("counted")).collect();
        let (base, head) = (fq.base, ids[0]);
        fq.chains.insert(head, ids.clone());
        let flags_of = |i: usize, b: &Buf| {
            let mut f = if b.2 { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < bufs.len() {
                f |= VRING_DESC_F_NEXT as u16;
            }
            f
        };
        if let Some(t) = table {
            for (i, b) in bufs.iter().enumerate() {
                self.write_desc(t + 16 * i as u64, b.0, b.1, flags_of(i, b), i as u16 + 1);
            }
            let len = 16 * bufs.len() as u32;
            self.write_desc(
                base + 16 * u64::from(head),
                t,
                len,
                VRING_DESC_F_INDIRECT as u16,
                0,
            );
        } else {
            for (i, b) in bufs.iter().enumerate() {
                let next = ids.get(i + 1).copied().unwrap_or(0);
                self.write_desc(
                    base + 16 * u64::from(ids[i]),
                    b.0,
                    b.1,
                    flags_of(i, b),
                    next,
                );
            }
        }
        let fq = &mut self.queues[q as usize];
        let slot = fq.avail() + 4 + 2 * u64::from(fq.avail_idx % fq.size);
        let (avail, idx) = (fq.avail(), fq.avail_idx.wrapping_add(1));
        fq.avail_idx = idx;
        self.write(slot, &head.to_le_bytes());
        std::sync::atomic::fence(Ordering::SeqCst);
        self.write(avail + 2, &idx.to_le_bytes());
        Some(head)
    }

    /// Notifies queue `q` if the device wants it (always without EVENT_IDX, unless the device
    /// set VRING_USED_F_NO_NOTIFY); returns whether it kicked.
    pub fn kick(&mut self, q: u16) -> bool {
        let fq = &self.queues[q as usize];
        let (old, new) = (fq.kicked_at, fq.avail_idx);
        let want = if self.event_idx {
            let ev = self.read(fq.used() + 4 + 8 * u64::from(fq.size), 2);
            let ev = u16::from_le_bytes([ev[0], ev[1]]);
            new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let f = self.read(fq.used(), 2);
            u16::from_le_bytes([f[0], f[1]]) & 1 == 0
        };
        self.queues[q as usize].kicked_at = new;
        if want {
            (self.kick)(q);
        } else {
            self.kicks_suppressed += 1;
        }
        want
    }

    /// Takes the device's new used entries of queue `q`: (head, bytes written). Asks for an
    /// interrupt on the next one (EVENT_IDX's used_event).
    pub fn used(&mut self, q: u16) -> Vec<(u16, u32)> {
        let fq = &self.queues[q as usize];
        let (used, size, avail) = (fq.used(), fq.size, fq.avail());
        let idx = self.read(used + 2, 2);
        let idx = u16::from_le_bytes([idx[0], idx[1]]);
        let mut out = Vec::new();
        let mut at = fq.last_used;
        while at != idx {
            let e = self.read(used + 4 + 8 * u64::from(at % size), 8);
            let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as u16;
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            out.push((id, len));
            at = at.wrapping_add(1);
        }
        let fq = &mut self.queues[q as usize];
        fq.last_used = at;
        for (id, _) in &out {
            if let Some(ids) = fq.chains.remove(id) {
                fq.free.extend(ids);
            }
        }
        self.write(avail + 4 + 2 * u64::from(size), &at.to_le_bytes());
        out
    }
}
