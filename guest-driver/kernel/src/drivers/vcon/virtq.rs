//! The driver side of a split virtqueue (virtio 1.2 §2.7) in guest memory, with
//! VIRTIO_RING_F_EVENT_IDX.
//!
//! Written here rather than taken from `virtio-drivers`: its `VirtQueue` needs every buffer
//! passed back as a slice to `pop_used` (to unshare it), while our buffers are the data blocks
//! of STREAMS messages that travel on (zero copy) and are identified by a token; it also owns
//! notification decisions we want to make per queue (interrupt only when the driver needs
//! descriptors back). Memory is identity-mapped, so an address is a guest physical address.
//!
//! The queue is used by one thread at a time (its port's inner perimeter holds it); the device
//! is the only other party, through the rings.

use crate::drivers::ProbeError;
use crate::drivers::virtio_mmio::Transport;
use alloc::alloc::{Layout, alloc_zeroed};
use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{Ordering, fence};

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const PAGE: usize = 4096;

/// Counters of one queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStats {
    /// Buffers (chains) made available.
    pub added: u64,
    /// Buffers returned by the device.
    pub used: u64,
    /// Notifications sent to the device.
    pub kicks: u64,
    /// Notifications the device's avail_event let us skip.
    pub kicks_saved: u64,
}

/// One split virtqueue and the token of each buffer in flight.
pub struct SplitQueue<T> {
    index: u16,
    size: u16,
    /// The rings; never freed (the device may write them until it is reset, and the driver
    /// lives as long as the guest).
    mem: *mut u8,
    avail_off: usize,
    used_off: usize,
    free_head: u16,
    num_free: u16,
    /// Next avail index to write (published by [`SplitQueue::kick`]).
    avail_idx: u16,
    /// Avail index at the last notification decision.
    kicked_idx: u16,
    last_used: u16,
    /// Buffers made available and not yet popped.
    in_flight: u16,
    tokens: Vec<Option<T>>,
    notify: u64,
    /// Counters.
    pub stats: QueueStats,
}

// SAFETY: the raw pointer is to memory this queue owns (and the device); the queue is moved
// between CPUs only as a whole, under its port's perimeter.
unsafe impl<T: Send> Send for SplitQueue<T> {}

impl<T> SplitQueue<T> {
    /// Sets up queue `index` of `t` with `size` entries (a power of two, at most the device's
    /// maximum). The rings live in zeroed, page-aligned memory owned by the queue.
    pub fn new(t: &Transport, index: u16, size: u16) -> Result<Self, ProbeError> {
        if !size.is_power_of_two() {
            return Err(ProbeError::QueueSize {
                queue: index,
                wanted: size,
            });
        }
        let n = usize::from(size);
        let avail_off = 16 * n;
        let used_off = (avail_off + 6 + 2 * n).next_multiple_of(PAGE);
        let total = used_off + 6 + 8 * n;
        let layout =
            Layout::from_size_align(total, PAGE).expect("a ring of u16 entries fits a layout");
        // SAFETY: `total` is non-zero.
        let mem = unsafe { alloc_zeroed(layout) };
        if mem.is_null() {
            return Err(ProbeError::OutOfMemory("a virtqueue"));
        }
        let base = mem as u64;
        t.setup_queue(
            index,
            size,
            base,
            base + avail_off as u64,
            base + used_off as u64,
        )?;
        let mut q = SplitQueue {
            index,
            size,
            mem,
            avail_off,
            used_off,
            free_head: 0,
            num_free: size,
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            in_flight: 0,
            tokens: (0..n).map(|_| None).collect(),
            notify: t.notify_address(),
            stats: QueueStats::default(),
        };
        for i in 0..size {
            q.write_desc_next(i, (i + 1) % size);
        }
        Ok(q)
    }

    /// Free descriptors.
    pub fn num_free(&self) -> usize {
        usize::from(self.num_free)
    }

    /// Buffers made available and not yet returned.
    pub fn in_flight(&self) -> usize {
        debug_assert_eq!(
            usize::from(self.in_flight),
            self.tokens.iter().filter(|t| t.is_some()).count()
        );
        usize::from(self.in_flight)
    }

    /// The queue's size.
    pub fn size(&self) -> u16 {
        self.size
    }

    fn desc_ptr(&self, i: u16) -> *mut u8 {
        // SAFETY: i < size, inside the descriptor table.
        unsafe { self.mem.add(16 * usize::from(i % self.size)) }
    }

    fn write_desc_next(&mut self, i: u16, next: u16) {
        // SAFETY: the `next` field (offset 14) of descriptor i, which the driver owns.
        unsafe { write_volatile(self.desc_ptr(i).add(14) as *mut u16, next) }
    }

    fn read_desc(&self, i: u16) -> (u16, u16) {
        // SAFETY: flags (12) and next (14) of descriptor i.
        unsafe {
            let d = self.desc_ptr(i);
            (
                read_volatile(d.add(12) as *const u16),
                read_volatile(d.add(14) as *const u16),
            )
        }
    }

    /// Makes one buffer of several segments available: `(address, length)` pairs, all
    /// device-writable when `writable`. Returns the token back when descriptors are short.
    pub fn add(&mut self, segs: &[(u64, u32)], writable: bool, token: T) -> Result<(), T> {
        if segs.is_empty() || segs.len() > usize::from(self.num_free) {
            return Err(token);
        }
        let head = self.free_head;
        let mut i = head;
        for (k, &(addr, len)) in segs.iter().enumerate() {
            let last = k + 1 == segs.len();
            let flags =
                if writable { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            let (_, next) = self.read_desc(i);
            // SAFETY: descriptor i is free (on the free list), so only the driver touches it.
            unsafe {
                let d = self.desc_ptr(i);
                write_volatile(d as *mut u64, addr);
                write_volatile(d.add(8) as *mut u32, len);
                write_volatile(d.add(12) as *mut u16, flags);
            }
            if last {
                self.free_head = next;
            } else {
                i = next;
            }
        }
        self.num_free -= segs.len() as u16;
        self.tokens[usize::from(head)] = Some(token);
        self.in_flight += 1;
        let slot = self.avail_off + 4 + 2 * usize::from(self.avail_idx % self.size);
        // SAFETY: avail.ring[slot] is the driver's to write until the index is published.
        unsafe { write_volatile(self.mem.add(slot) as *mut u16, head) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.stats.added += 1;
        Ok(())
    }

    /// Publishes what [`SplitQueue::add`] made available without notifying (before
    /// DRIVER_OK a driver must not notify; the device looks when it needs a buffer).
    pub fn publish(&mut self) {
        fence(Ordering::Release);
        // SAFETY: avail.idx, written only by the driver.
        unsafe { write_volatile(self.mem.add(self.avail_off + 2) as *mut u16, self.avail_idx) };
    }

    /// Publishes what [`SplitQueue::add`] made available and notifies the device if its
    /// avail_event asks for it. Returns whether it notified.
    pub fn kick(&mut self) -> bool {
        if self.avail_idx == self.kicked_idx {
            return false;
        }
        self.publish();
        fence(Ordering::SeqCst);
        // SAFETY: used.avail_event, after the used ring.
        let event = unsafe {
            read_volatile(self.mem.add(self.used_off + 4 + 8 * usize::from(self.size)) as *const u16)
        };
        let (new, old) = (self.avail_idx, self.kicked_idx);
        self.kicked_idx = new;
        // vring_need_event: notify if avail_event lies in [old, new).
        if new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old) {
            crate::cpu::mmio::write_u32(self.notify, u32::from(self.index));
            self.stats.kicks += 1;
            true
        } else {
            self.stats.kicks_saved += 1;
            false
        }
    }

    fn used_idx(&self) -> u16 {
        // SAFETY: used.idx, written by the device.
        let v = unsafe { read_volatile(self.mem.add(self.used_off + 2) as *const u16) };
        fence(Ordering::Acquire);
        v
    }

    /// Whether the device returned buffers not popped yet.
    pub fn has_used(&self) -> bool {
        self.used_idx() != self.last_used
    }

    /// Takes the next buffer the device returned: its token and the bytes it wrote. A used
    /// element naming a descriptor that is not in flight (a device bug) is skipped.
    pub fn pop_used(&mut self) -> Option<(T, u32)> {
        loop {
            if self.used_idx() == self.last_used {
                return None;
            }
            let e = self.used_off + 4 + 8 * usize::from(self.last_used % self.size);
            // SAFETY: used.ring[last_used], published by the device before used.idx.
            let (id, len) = unsafe {
                (
                    read_volatile(self.mem.add(e) as *const u32),
                    read_volatile(self.mem.add(e + 4) as *const u32),
                )
            };
            self.last_used = self.last_used.wrapping_add(1);
            self.stats.used += 1;
            let Some(token) = usize::try_from(id)
                .ok()
                .and_then(|i| self.tokens.get_mut(i))
                .and_then(Option::take)
            else {
                continue;
            };
            // Back on the free list: walk the chain to its end.
            let head = id as u16;
            let (mut i, mut n) = (head, 1u16);
            loop {
                let (flags, next) = self.read_desc(i);
                if flags & DESC_F_NEXT == 0 || n >= self.size {
                    break;
                }
                i = next;
                n += 1;
            }
            self.write_desc_next(i, self.free_head);
            self.free_head = head;
            self.num_free += n;
            self.in_flight -= 1;
            return Some((token, len));
        }
    }

    /// Asks for no interrupt: `used_event` a whole ring ahead of the last buffer popped, where
    /// the device's used index cannot reach before the driver pops again.
    pub fn no_interrupt(&mut self) {
        let at = self.avail_off + 4 + 2 * usize::from(self.size);
        // SAFETY: avail.used_event, written only by the driver.
        unsafe {
            write_volatile(
                self.mem.add(at) as *mut u16,
                self.last_used.wrapping_add(self.size),
            )
        };
    }

    /// Asks for an interrupt once the device has used the buffer `ahead` places after the
    /// last one popped (0: the next one): `used_event` (EVENT_IDX). Returns whether buffers
    /// were already used meanwhile: the device may not interrupt for those, so the caller
    /// must pop them itself (the race `virtqueue_enable_cb` reports the same way).
    pub fn interrupt_after(&mut self, ahead: u16) -> bool {
        let at = self.avail_off + 4 + 2 * usize::from(self.size);
        // SAFETY: avail.used_event, written only by the driver.
        unsafe {
            write_volatile(
                self.mem.add(at) as *mut u16,
                self.last_used.wrapping_add(ahead),
            )
        };
        fence(Ordering::SeqCst);
        self.used_idx() != self.last_used
    }
}
