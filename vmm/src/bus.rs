//! Address-range dispatch for MMIO and port I/O exits.
//!
//! Built once before the vCPUs start and then shared read-only; devices keep their own locks.

use std::sync::Arc;

/// What the vCPU that made an access should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Resume the guest.
    Continue,
    /// Stop this vCPU: the access ended the run (exit, crash), which the device has reported.
    Stop,
}

/// A device on a bus. Offsets are relative to the device's base; `vcpu` is the accessing CPU.
pub trait BusDevice: Send + Sync {
    /// Handles a read of `data.len()` bytes; unhandled bytes stay zero.
    fn read(&self, vcpu: u32, offset: u64, data: &mut [u8]);
    /// Handles a write.
    fn write(&self, vcpu: u32, offset: u64, data: &[u8]) -> Action;
}

struct Range {
    base: u64,
    size: u64,
    device: Arc<dyn BusDevice>,
}

/// Why a device could not be put on a bus: perimeter's own layout is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The range is empty or runs past the end of the address space.
    #[error("empty or wrapping range {base:#x}+{size:#x}")]
    BadRange {
        /// Its first address.
        base: u64,
        /// Its length.
        size: u64,
    },
    /// The range overlaps a device already there.
    #[error("range {base:#x}+{size:#x} overlaps another device")]
    Overlap {
        /// Its first address.
        base: u64,
        /// Its length.
        size: u64,
    },
}

/// Non-overlapping ranges, sorted by base.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<Range>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `[base, base + size)`; fails if that overlaps a device already there.
    pub fn insert(
        &mut self,
        base: u64,
        size: u64,
        device: Arc<dyn BusDevice>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(size)
            .filter(|_| size > 0)
            .ok_or(BusError::BadRange { base, size })?;
        if self
            .ranges
            .iter()
            .any(|r| base < r.base + r.size && r.base < end)
        {
            return Err(BusError::Overlap { base, size });
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(at, Range { base, size, device });
        Ok(())
    }

    fn find(&self, addr: u64, len: usize) -> Option<(&Range, u64)> {
        let i = self
            .ranges
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &self.ranges[i];
        let offset = addr - r.base;
        (offset + len as u64 <= r.size).then_some((r, offset))
    }

    /// Dispatches a read; returns false (leaving `data` zeroed) when nothing is mapped there.
    pub fn read(&self, vcpu: u32, addr: u64, data: &mut [u8]) -> bool {
        data.fill(0);
        match self.find(addr, data.len()) {
            Some((r, offset)) => {
                r.device.read(vcpu, offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; `None` when nothing is mapped there.
    pub fn write(&self, vcpu: u32, addr: u64, data: &[u8]) -> Option<Action> {
        let (r, offset) = self.find(addr, data.len())?;
        Some(r.device.write(vcpu, offset, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Probe(Mutex<Vec<(u64, Vec<u8>)>>);

    impl BusDevice for Probe {
        fn read(&self, _: u32, offset: u64, data: &mut [u8]) {
            data[0] = offset as u8;
        }
        fn write(&self, _: u32, offset: u64, data: &[u8]) -> Action {
            self.0.lock().unwrap().push((offset, data.to_vec()));
            Action::Continue
        }
    }

    #[test]
    fn dispatches_by_range_and_rejects_overlap_and_straddling() {
        let mut bus = Bus::new();
        let a = Arc::new(Probe::default());
        bus.insert(0x1000, 0x100, a.clone()).unwrap();
        bus.insert(0x2000, 0x100, Arc::new(Probe::default()))
            .unwrap();
        assert_eq!(
            bus.insert(0x10f0, 0x20, Arc::new(Probe::default())),
            Err(BusError::Overlap {
                base: 0x10f0,
                size: 0x20
            })
        );
        assert_eq!(
            bus.insert(0x3000, 0, Arc::new(Probe::default())),
            Err(BusError::BadRange {
                base: 0x3000,
                size: 0
            })
        );
        assert_eq!(
            bus.insert(u64::MAX, 2, Arc::new(Probe::default())),
            Err(BusError::BadRange {
                base: u64::MAX,
                size: 2
            })
        );

        let mut b = [9u8; 4];
        assert!(bus.read(0, 0x1004, &mut b));
        assert_eq!(b, [4, 0, 0, 0]);
        assert!(!bus.read(0, 0x10fe, &mut b), "straddles the end");
        assert_eq!(b, [0; 4]);
        assert!(!bus.read(0, 0x500, &mut b));
        assert_eq!(bus.write(0, 0x1008, &[1, 2]), Some(Action::Continue));
        assert_eq!(bus.write(0, 0x1800, &[1]), None);
        assert_eq!(a.0.lock().unwrap().as_slice(), &[(8, vec![1, 2])]);
    }
}
