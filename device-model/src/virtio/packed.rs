//! The packed virtqueue (virtio 1.1, VIRTIO_F_RING_PACKED), device side: one descriptor ring
//! that the driver makes buffers available in and the device writes used descriptors back
//! into, plus the two event suppression structures. virtio-queue has the descriptor type but
//! no packed queue, so the queue is here.
//!
//! # How the ring is read
//!
//! Both sides keep a position and a one-bit wrap counter, starting at 0 and 1. A descriptor
//! is available to the device when its AVAIL flag equals the device's available wrap
//! counter and its USED flag does not. A buffer is one descriptor, a run of descriptors
//! chained by NEXT (its buffer ID in the last one), or one descriptor pointing at an indirect
//! table. The device answers with one used descriptor per buffer, written at its used
//! position (AVAIL and USED both equal to its used wrap counter), and moves that position on
//! by the number of ring descriptors the buffer took; buffers may complete out of order.
//!
//! # What a guest cannot do
//!
//! Everything here is read from guest memory the guest may change at any moment. A buffer ID
//! at or above the queue size, or one already in flight, a chain longer than the ring, an
//! INDIRECT descriptor inside a chain, an indirect table that is empty, not whole descriptors
//! or longer than the queue size, and a descriptor or table outside guest memory make the
//! ring [`RingError`]: the caller breaks the queue and asks for a reset. Nothing panics and
//! nothing is read or written outside guest memory; the in-flight table has one slot per
//! ring entry, so memory stays bounded whatever the guest does.

use std::sync::atomic::{Ordering, fence};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

/// Descriptor flags (virtio 1.1 §2.7).
pub mod flags {
    /// The buffer continues in the next descriptor.
    pub const NEXT: u16 = 1;
    /// Device-writable (in a used descriptor: the device wrote something).
    pub const WRITE: u16 = 2;
    /// The element is a table of descriptors.
    pub const INDIRECT: u16 = 4;
    /// Available: equal to the driver's wrap counter when made available.
    pub const AVAIL: u16 = 1 << 7;
    /// Used: equal to the device's wrap counter when used.
    pub const USED: u16 = 1 << 15;
}

/// Event suppression flags (virtio 1.1 §2.7.10).
pub mod event {
    /// Notify.
    pub const ENABLE: u16 = 0;
    /// Do not notify.
    pub const DISABLE: u16 = 1;
    /// Notify when the descriptor at the given offset and wrap is made available or used
    /// (with VIRTIO_F_RING_EVENT_IDX).
    pub const DESC: u16 = 2;
}

/// Largest packed queue (2^15 entries).
pub const MAX_SIZE: u16 = 1 << 15;
const DESC_SIZE: u64 = 16;

/// Why the ring cannot be used (the queue breaks).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The queue's size or area addresses are not usable.
    #[error("bad queue layout: {0}")]
    Layout(&'static str),
    /// A descriptor, table or event structure is outside guest memory.
    #[error("{0} is outside guest memory")]
    Memory(&'static str),
    /// The buffer ID is not below the queue size.
    #[error("buffer id {0} is not below the queue size")]
    BadId(u16),
    /// The buffer ID is already in flight.
    #[error("buffer id {0} is already in flight")]
    IdInFlight(u16),
    /// A chain runs over more descriptors than the ring has.
    #[error("a chain longer than the ring")]
    ChainTooLong,
    /// A chain's later descriptor is not available although its first one is.
    #[error("a chain whose later descriptors are not available")]
    BrokenChain,
    /// An INDIRECT descriptor inside a chain.
    #[error("an indirect descriptor inside a chain")]
    IndirectInChain,
    /// An indirect table that is empty, not whole descriptors, or longer than the queue.
    #[error("an indirect table of {0} bytes")]
    BadIndirect(u32),
    /// A used buffer the device never took.
    #[error("buffer id {0} is not in flight")]
    NotInFlight(u16),
}

/// One element of a buffer: guest address, length, and whether the device may write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// A buffer the driver made available: its ID and its elements in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// The buffer ID (the answer names it).
    pub id: u16,
    /// Its elements, in the driver's order.
    pub elements: Vec<Element>,
}

/// One raw descriptor.
#[derive(Clone, Copy, Debug, Default)]
struct Desc {
    addr: u64,
    len: u32,
    id: u16,
    flags: u16,
}

/// The device side of one packed queue.
#[derive(Debug)]
pub struct PackedRing {
    desc: GuestAddress,
    driver_event: GuestAddress,
    device_event: GuestAddress,
    size: u16,
    event_idx: bool,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Per buffer ID: how many ring descriptors it took (0: not in flight).
    in_flight: Vec<u16>,
    /// The used position (with its wrap counter) when the driver was last notified.
    signalled: (u16, bool),
}

impl PackedRing {
    /// A queue of `size` entries with its descriptor ring at `desc` and its driver and device
    /// event suppression structures at `driver_event` and `device_event`.
    pub fn new(
        mem: &impl GuestMemoryBackend,
        size: u16,
        desc: GuestAddress,
        driver_event: GuestAddress,
        device_event: GuestAddress,
        event_idx: bool,
    ) -> Result<Self, RingError> {
        if size == 0 || size > MAX_SIZE {
            return Err(RingError::Layout("the size is 0 or above 2^15"));
        }
        if !desc.raw_value().is_multiple_of(16)
            || !driver_event.raw_value().is_multiple_of(4)
            || !device_event.raw_value().is_multiple_of(4)
        {
            return Err(RingError::Layout("an area is not aligned"));
        }
        let ring_bytes = DESC_SIZE * u64::from(size);
        if !mem.check_range(desc, ring_bytes as usize) {
            return Err(RingError::Memory("the descriptor ring"));
        }
        if !mem.check_range(driver_event, 4) || !mem.check_range(device_event, 4) {
            return Err(RingError::Memory("an event suppression structure"));
        }
        Ok(PackedRing {
            desc,
            driver_event,
            device_event,
            size,
            event_idx,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            in_flight: vec![0; usize::from(size)],
            signalled: (0, true),
        })
    }

    /// Buffers taken and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|&&n| n > 0).count()
    }

    fn read_desc(
        &self,
        mem: &impl GuestMemoryBackend,
        at: GuestAddress,
    ) -> Result<Desc, RingError> {
        let mut raw = [0u8; DESC_SIZE as usize];
        mem.read_slice(&mut raw, at)
            .map_err(|_| RingError::Memory("a descriptor"))?;
        Ok(Desc {
            addr: u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes")),
            id: u16::from_le_bytes([raw[12], raw[13]]),
            flags: u16::from_le_bytes([raw[14], raw[15]]),
        })
    }

    fn ring_slot(&self, index: u16) -> GuestAddress {
        // In range: `new` checked the whole ring.
        self.desc.unchecked_add(DESC_SIZE * u64::from(index))
    }

    /// Whether a descriptor with `flags` is available under wrap counter `wrap`.
    fn is_available(flags: u16, wrap: bool) -> bool {
        (flags & flags::AVAIL != 0) == wrap && (flags & flags::USED != 0) != wrap
    }

    /// Takes the next available buffer, if the driver made one available.
    pub fn pop(&mut self, mem: &impl GuestMemoryBackend) -> Result<Option<Buffer>, RingError> {
        let (mut index, mut wrap) = (self.next_avail, self.avail_wrap);
        let first = self.read_desc(mem, self.ring_slot(index))?;
        if !Self::is_available(first.flags, wrap) {
            return Ok(None);
        }
        // Everything after the first flags read is read after it.
        fence(Ordering::Acquire);
        let mut elements = Vec::new();
        let mut taken: u16 = 0;
        let mut d = first;
        loop {
            taken += 1;
            if d.flags & flags::INDIRECT != 0 {
                if taken > 1 || d.flags & flags::NEXT != 0 {
                    return Err(RingError::IndirectInChain);
                }
                self.read_indirect(mem, &d, &mut elements)?;
            } else {
                elements.push(Element {
                    addr: GuestAddress(d.addr),
                    len: d.len,
                    write: d.flags & flags::WRITE != 0,
                });
            }
            index += 1;
            if index == self.size {
                index = 0;
                wrap = !wrap;
            }
            if d.flags & flags::NEXT == 0 {
                break;
            }
            if taken == self.size {
                return Err(RingError::ChainTooLong);
            }
            d = self.read_desc(mem, self.ring_slot(index))?;
            if !Self::is_available(d.flags, wrap) {
                // The driver makes a chain's first descriptor available last: the rest must be.
                return Err(RingError::BrokenChain);
            }
        }
        let id = d.id;
        let slot = self
            .in_flight
            .get_mut(usize::from(id))
            .ok_or(RingError::BadId(id))?;
        if *slot != 0 {
            return Err(RingError::IdInFlight(id));
        }
        *slot = taken;
        debug_assert!(taken >= 1 && taken <= self.size);
        self.next_avail = index;
        self.avail_wrap = wrap;
        Ok(Some(Buffer { id, elements }))
    }

    fn read_indirect(
        &self,
        mem: &impl GuestMemoryBackend,
        d: &Desc,
        out: &mut Vec<Element>,
    ) -> Result<(), RingError> {
        let n = u64::from(d.len) / DESC_SIZE;
        if d.len == 0 || !u64::from(d.len).is_multiple_of(DESC_SIZE) || n > u64::from(self.size) {
            return Err(RingError::BadIndirect(d.len));
        }
        let table = GuestAddress(d.addr);
        if !mem.check_range(table, d.len as usize) {
            return Err(RingError::Memory("an indirect table"));
        }
        for i in 0..n {
            // Only WRITE counts in an indirect descriptor; the rest is ignored (§2.7.5).
            let e = self.read_desc(mem, table.unchecked_add(i * DESC_SIZE))?;
            out.push(Element {
                addr: GuestAddress(e.addr),
                len: e.len,
                write: e.flags & flags::WRITE != 0,
            });
        }
        Ok(())
    }

    /// Answers buffer `id` with `written` bytes written into it.
    pub fn add_used(
        &mut self,
        mem: &impl GuestMemoryBackend,
        id: u16,
        written: u32,
    ) -> Result<(), RingError> {
        let taken = match self.in_flight.get_mut(usize::from(id)) {
            Some(n) if *n > 0 => std::mem::take(n),
            _ => return Err(RingError::NotInFlight(id)),
        };
        let at = self.ring_slot(self.next_used);
        let mut head = [0u8; 14];
        head[8..12].copy_from_slice(&written.to_le_bytes());
        head[12..14].copy_from_slice(&id.to_le_bytes());
        mem.write_slice(&head, at)
            .map_err(|_| RingError::Memory("a descriptor"))?;
        let mut f = if self.used_wrap {
            flags::AVAIL | flags::USED
        } else {
            0
        };
        if written > 0 {
            f |= flags::WRITE;
        }
        // The driver sees the ID and length before the flags that hand them over.
        fence(Ordering::Release);
        mem.write_slice(&f.to_le_bytes(), at.unchecked_add(14))
            .map_err(|_| RingError::Memory("a descriptor"))?;
        let next = u32::from(self.next_used) + u32::from(taken);
        if next >= u32::from(self.size) {
            self.next_used = (next - u32::from(self.size)) as u16;
            self.used_wrap = !self.used_wrap;
        } else {
            self.next_used = next as u16;
        }
        Ok(())
    }

    fn read_event(
        mem: &impl GuestMemoryBackend,
        at: GuestAddress,
    ) -> Result<(u16, u16), RingError> {
        let mut raw = [0u8; 4];
        mem.read_slice(&mut raw, at)
            .map_err(|_| RingError::Memory("an event suppression structure"))?;
        Ok((
            u16::from_le_bytes([raw[0], raw[1]]),
            u16::from_le_bytes([raw[2], raw[3]]),
        ))
    }

    /// Whether the driver wants a used buffer notification for what was used since the last
    /// one (its event suppression structure); call after [`PackedRing::add_used`]s.
    pub fn needs_notification(&mut self, mem: &impl GuestMemoryBackend) -> Result<bool, RingError> {
        fence(Ordering::SeqCst);
        let (off_wrap, f) = Self::read_event(mem, self.driver_event)?;
        let (old, new) = (self.signalled, (self.next_used, self.used_wrap));
        if old == new {
            return Ok(false);
        }
        let notify = match f & 3 {
            event::DISABLE => false,
            event::DESC if self.event_idx => {
                // Positions on one line, the current lap from 0: was the descriptor the driver
                // named used since the last notification? (Any position in the range counts,
                // skipped ones of a chain included, so a notification is never missed.)
                let size = i32::from(self.size);
                let lin =
                    |pos: u16, wrap: bool| i32::from(pos) - if wrap == new.1 { 0 } else { size };
                let e = lin(off_wrap & 0x7fff, off_wrap & 0x8000 != 0);
                let (o, n) = (lin(old.0, old.1), i32::from(new.0));
                o <= e && e < n
            }
            _ => true, // ENABLE, or DESC without EVENT_IDX, or the reserved value
        };
        if notify {
            self.signalled = new;
        }
        Ok(notify)
    }

    /// Asks the driver for available buffer notifications (`enable`) or not. With
    /// EVENT_IDX, enabling asks for one when the next descriptor the device will read is
    /// made available.
    pub fn set_notification(
        &mut self,
        mem: &impl GuestMemoryBackend,
        enable: bool,
    ) -> Result<(), RingError> {
        let (off_wrap, f) = match (enable, self.event_idx) {
            (false, _) => (0, event::DISABLE),
            (true, false) => (0, event::ENABLE),
            (true, true) => (
                self.next_avail | if self.avail_wrap { 1 << 15 } else { 0 },
                event::DESC,
            ),
        };
        let mut raw = [0u8; 4];
        raw[0..2].copy_from_slice(&off_wrap.to_le_bytes());
        raw[2..4].copy_from_slice(&f.to_le_bytes());
        mem.write_slice(&raw, self.device_event)
            .map_err(|_| RingError::Memory("an event suppression structure"))?;
        fence(Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
