//! One virtqueue as the console uses it: the queue, guest memory, the interrupt line, and the
//! device generation it belongs to, with the checks that keep a broken ring from hurting us.

use super::stats::PortCounters;
use crate::logging::limited;
use crate::virtio::Signals;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// A ring the device is using.
pub(crate) struct Ring {
    /// The queue's index in the device (for the log).
    pub index: u16,
    pub queue: Queue,
    pub mem: Arc<GuestMemoryMmap>,
    pub signals: Arc<Signals>,
    /// The activation this ring belongs to: a completion from an older one is dropped.
    pub epoch: u64,
    /// The guest broke the ring; it is not touched again until a reset.
    pub broken: bool,
}

/// One buffer of a descriptor chain: guest address, length, device-writable.
pub(crate) type Buffer = (GuestAddress, u32, bool);

/// What [`Ring::pop`] found.
pub(crate) enum Pop {
    /// A descriptor chain: its head and its buffers, in order.
    Chain(u16, Vec<Buffer>),
    /// Nothing available (notifications are enabled again).
    Empty,
    /// The ring is broken (or was before): the device asked for a reset.
    Broken,
}

/// The head and buffers of `chain`; `None` if it does not end. virtio-queue's iterator stops
/// after a queue's worth of descriptors, so a loop (or a next index out of range) shows as a
/// last descriptor that still says NEXT; reading on would hand the host the same guest bytes
/// again and again.
fn buffers(chain: DescriptorChain<&GuestMemoryMmap>) -> Option<(u16, Vec<Buffer>)> {
    let head = chain.head_index();
    let mut unterminated = false;
    let bufs = chain
        .map(|d| {
            unterminated = d.has_next();
            (d.addr(), d.len(), d.is_write_only())
        })
        .collect();
    (!unterminated).then_some((head, bufs))
}

impl Ring {
    pub fn new(
        index: u16,
        queue: Queue,
        mem: Arc<GuestMemoryMmap>,
        signals: Arc<Signals>,
        epoch: u64,
    ) -> Self {
        Ring {
            index,
            queue,
            mem,
            signals,
            epoch,
            broken: false,
        }
    }

    /// Marks the ring broken, says why in the log, and asks the driver for a reset
    /// (DEVICE_NEEDS_RESET).
    pub fn break_ring(&mut self, why: fmt::Arguments<'_>) {
        if !self.broken {
            self.broken = true;
            limited!(
                log::Level::Warn,
                "virtio-console: queue {}: {why}; the device asks the driver to reset",
                self.index
            );
            let _ = self.signals.request_reset();
        }
    }

    /// The next available chain. With `rearm`, an empty ring enables notifications and looks
    /// again, so that a buffer made available meanwhile is not missed (EVENT_IDX or not).
    pub fn pop(&mut self, rearm: bool) -> Pop {
        if self.broken {
            return Pop::Broken;
        }
        loop {
            let pending = match self.queue.avail_idx(&*self.mem, Ordering::Acquire) {
                Ok(avail) => avail.0.wrapping_sub(self.queue.next_avail()),
                Err(e) => {
                    self.break_ring(format_args!("the available ring cannot be read ({e})"));
                    return Pop::Broken;
                }
            };
            if pending > self.queue.size() {
                let size = self.queue.size();
                self.break_ring(format_args!(
                    "the driver made {pending} buffers available, more than the ring's {size}"
                ));
                return Pop::Broken;
            }
            if pending > 0 {
                break;
            }
            if !rearm || !matches!(self.queue.enable_notification(&*self.mem), Ok(true)) {
                return Pop::Empty;
            }
        }
        let _ = self.queue.disable_notification(&*self.mem);
        // None: a head index out of range, or a chain that does not end.
        match self
            .queue
            .pop_descriptor_chain(&*self.mem)
            .and_then(buffers)
        {
            Some((head, bufs)) => Pop::Chain(head, bufs),
            None => {
                self.break_ring(format_args!(
                    "a descriptor chain with a head out of range, a loop or no end"
                ));
                Pop::Broken
            }
        }
    }

    /// The driver's avail index, or `None` when the ring is broken or cannot be read (the
    /// next [`Ring::pop`] finds out which).
    pub fn avail_idx(&self) -> Option<u16> {
        if self.broken {
            return None;
        }
        let avail = self.queue.avail_idx(&*self.mem, Ordering::Acquire).ok()?;
        Some(avail.0)
    }

    /// Asks the driver to notify again (after polling) and says whether chains wait: one made
    /// available before the driver could see the request sent no notification.
    pub fn rearm(&mut self) -> bool {
        if self.broken {
            return false;
        }
        match self.queue.enable_notification(&*self.mem) {
            Ok(pending) => pending,
            Err(e) => {
                self.break_ring(format_args!("the used event cannot be written ({e})"));
                false
            }
        }
    }

    /// Returns chain `head` with `len` bytes written; a failure breaks the ring.
    pub fn complete(&mut self, head: u16, len: u32) {
        if self.broken {
            return;
        }
        if let Err(e) = self.queue.add_used(&*self.mem, head, len) {
            self.break_ring(format_args!("the used ring cannot be written ({e})"));
        }
    }

    /// Interrupts the driver if the ring asks for it (counting sent and suppressed).
    pub fn notify(&mut self, counters: &PortCounters) {
        if self.broken {
            return;
        }
        if self.queue.needs_notification(&*self.mem).unwrap_or(true) {
            let _ = self.signals.used_buffers();
            counters.interrupts.fetch_add(1, Ordering::Relaxed);
        } else {
            counters
                .interrupts_suppressed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
