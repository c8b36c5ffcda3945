//! The bounded buffer pool behind `allocb`, with fault injection and counters.
//!
//! An allocation fails (returns `None`) when it would exceed the pool's byte or block
//! capacity, or when a fault policy says so. It never blocks and never panics. Frees
//! return capacity and, when bufcalls are waiting, ask the scheduler to run them.

use crate::cache::{self, SharedCache, class_capacity, class_of};
use crate::msg::{FreeRoutine, Mblk};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, Weak};
use alloc::vec::Vec;

/// The capacity of a buffer pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most bytes of data buffers allocated at once.
    pub max_bytes: usize,
    /// Most message blocks (data blocks) allocated at once.
    pub max_blocks: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_bytes: 256 << 20,
            max_blocks: 1 << 20,
        }
    }
}

/// When an allocation is made to fail on purpose. Calls are numbered from 1, counting the
/// calls made while any policy is set.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultPolicy {
    /// Fail every `n`th call (`n` ≥ 1).
    EveryNth(u64),
    /// Fail each call with probability `p`, from a pseudo-random sequence seeded by `seed`.
    Probability {
        /// Chance of failure, 0.0 to 1.0.
        p: f64,
        /// Seed of the sequence; the same seed fails the same calls.
        seed: u64,
    },
    /// Fail every request for more than this many bytes.
    AboveSize(usize),
    /// Fail the calls numbered `from` (inclusive) to `to` (exclusive).
    Window {
        /// First failing call.
        from: u64,
        /// First call after the window.
        to: u64,
    },
}

/// Counters of a pool, read by [`crate::Streams::pool_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Allocation calls (allocb, esballoc, copies).
    pub calls: u64,
    /// Calls that returned a block.
    pub allocated: u64,
    /// Calls refused because the pool was full.
    pub failed_capacity: u64,
    /// Calls refused by a fault policy.
    pub failed_injected: u64,
    /// Data blocks released.
    pub freed: u64,
    /// Bytes allocated now.
    pub bytes_in_use: usize,
    /// Blocks allocated now.
    pub blocks_in_use: usize,
    /// Most bytes ever allocated at once.
    pub peak_bytes: usize,
}

/// What a pool reports to the framework instance that owns it: memory came back while
/// bufcalls wait, and esballoc free routines to run later from background work.
pub(crate) trait PoolOwner: Send + Sync {
    /// A data block was released while bufcalls wait.
    fn buffers_returned(self: Arc<Self>);
    /// Runs `free` some time later, never inside the freeing call.
    fn defer_free(self: Arc<Self>, free: FreeRoutine);
}

/// `in_use` packs blocks (high bits) and bytes (low bits) so one atomic add charges both.
const BYTES_BITS: u32 = 44;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;

pub(crate) struct Pool {
    config: PoolConfig,
    in_use: AtomicU64,
    peak: AtomicUsize,
    allocated: AtomicU64,
    failed_capacity: AtomicU64,
    failed_injected: AtomicU64,
    calls_checked: AtomicU64,
    has_faults: AtomicBool,
    faults: Mutex<Vec<FaultPolicy>>,
    rng: AtomicU64,
    cache: SharedCache,
    /// Set while bufcalls wait for memory: frees then poke the owner.
    pub(crate) bufcalls_waiting: AtomicBool,
    owner: Mutex<Option<Weak<dyn PoolOwner>>>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            in_use: AtomicU64::new(0),
            peak: AtomicUsize::new(0),
            allocated: AtomicU64::new(0),
            failed_capacity: AtomicU64::new(0),
            failed_injected: AtomicU64::new(0),
            calls_checked: AtomicU64::new(0),
            has_faults: AtomicBool::new(false),
            faults: Mutex::new(Vec::new()),
            rng: AtomicU64::new(0),
            cache: SharedCache::default(),
            bufcalls_waiting: AtomicBool::new(false),
            owner: Mutex::new(None),
        }
    }

    /// Remembers the framework instance that frees and bufcalls report to.
    pub(crate) fn set_owner(&self, owner: Weak<dyn PoolOwner>) {
        *self.owner.lock() = Some(owner);
    }

    fn owner(&self) -> Option<Arc<dyn PoolOwner>> {
        self.owner.lock().as_ref().and_then(Weak::upgrade)
    }

    /// Replaces the fault policies (an empty list turns injection off).
    pub(crate) fn set_faults(&self, faults: Vec<FaultPolicy>) {
        let mut guard = self.faults.lock();
        if let Some(seed) = faults.iter().find_map(|f| match f {
            FaultPolicy::Probability { seed, .. } => Some(*seed),
            _ => None,
        }) {
            self.rng.store(seed | 1, Ordering::Relaxed);
        }
        self.has_faults.store(!faults.is_empty(), Ordering::Release);
        *guard = faults;
    }

    fn injected(&self, size: usize) -> bool {
        if !self.has_faults.load(Ordering::Relaxed) {
            return false;
        }
        let faults = self.faults.lock();
        if faults.is_empty() {
            return false;
        }
        // Calls are numbered only while faults are set (that is all the policies need).
        let call = self.calls_checked.fetch_add(1, Ordering::Relaxed) + 1;
        faults.iter().any(|f| match *f {
            FaultPolicy::EveryNth(n) => n != 0 && call.is_multiple_of(n),
            FaultPolicy::AboveSize(max) => size > max,
            FaultPolicy::Window { from, to } => call >= from && call < to,
            FaultPolicy::Probability { p, .. } => {
                // xorshift64: a deterministic sequence for a given seed.
                let mut x = self.rng.load(Ordering::Relaxed);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.rng.store(x, Ordering::Relaxed);
                ((x >> 11) as f64 / (1u64 << 53) as f64) < p
            }
        })
    }

    /// Charges `size` bytes and one block, or refuses. Never blocks.
    pub(crate) fn charge(&self, size: usize) -> bool {
        if self.injected(size) {
            self.failed_injected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let add = (1u64 << BYTES_BITS) | size as u64;
        let now = self.in_use.fetch_add(add, Ordering::Relaxed) + add;
        let (blocks, bytes) = ((now >> BYTES_BITS) as usize, (now & BYTES_MASK) as usize);
        if blocks > self.config.max_blocks || bytes > self.config.max_bytes {
            self.in_use.fetch_sub(add, Ordering::Relaxed);
            self.failed_capacity.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if bytes > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(bytes, Ordering::Relaxed);
        }
        self.allocated.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Returns what [`Pool::charge`] took, and pokes waiting bufcalls.
    pub(crate) fn release(&self, size: usize) {
        self.in_use
            .fetch_sub((1u64 << BYTES_BITS) | size as u64, Ordering::Relaxed);
        if self.bufcalls_waiting.load(Ordering::Relaxed)
            && let Some(s) = self.owner()
        {
            s.buffers_returned();
        }
    }

    /// Whether fault policies are set.
    pub(crate) fn has_faults(&self) -> bool {
        self.has_faults.load(Ordering::Acquire)
    }

    /// Whether a block of `size` bytes would fit now (ignoring fault policies).
    pub(crate) fn would_fit(&self, size: usize) -> bool {
        let now = self.in_use.load(Ordering::Relaxed);
        ((now >> BYTES_BITS) as usize) < self.config.max_blocks
            && (now & BYTES_MASK) as usize + size <= self.config.max_bytes
    }

    /// Allocates a message block (`allocb`), from the cache when one of its class is free.
    pub(crate) fn allocb(self: &Arc<Self>, size: usize) -> Option<Mblk> {
        if !self.charge(size) {
            return None;
        }
        let class = class_of(size);
        if let Some(db) = class.and_then(|c| cache::pop(self, c)) {
            return Some(Mblk::reuse(db, size));
        }
        let capacity = class.map_or(size, class_capacity);
        Some(Mblk::heap(self, capacity, size, class))
    }

    pub(crate) fn cache(&self) -> &SharedCache {
        &self.cache
    }

    /// Drops every block in the shared cache (their `Arc<Pool>` would otherwise keep the
    /// pool alive).
    pub(crate) fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Runs an esballoc free routine later, from the owner's background work.
    pub(crate) fn defer_free(&self, free: FreeRoutine) {
        match self.owner() {
            Some(s) => s.defer_free(free),
            None => free(),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let now = self.in_use.load(Ordering::Relaxed);
        let (blocks, bytes) = ((now >> BYTES_BITS) as usize, (now & BYTES_MASK) as usize);
        let allocated = self.allocated.load(Ordering::Relaxed);
        let (fc, fi) = (
            self.failed_capacity.load(Ordering::Relaxed),
            self.failed_injected.load(Ordering::Relaxed),
        );
        PoolStats {
            calls: allocated + fc + fi,
            allocated,
            failed_capacity: fc,
            failed_injected: fi,
            freed: allocated.saturating_sub(blocks as u64),
            bytes_in_use: bytes,
            blocks_in_use: blocks,
            peak_bytes: self.peak.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_in_blocks_and_bytes() {
        let pool = Pool::new(PoolConfig {
            max_bytes: 100,
            max_blocks: 2,
        });
        assert!(pool.charge(60));
        assert!(!pool.charge(60), "bytes over capacity");
        assert!(pool.charge(10));
        assert!(!pool.charge(0), "blocks over capacity");
        pool.release(60);
        assert!(pool.charge(80));
        let s = pool.stats();
        assert_eq!(
            (s.failed_capacity, s.blocks_in_use, s.bytes_in_use),
            (2, 2, 90)
        );
    }

    #[test]
    fn every_nth_window_and_size() {
        let pool = Pool::new(PoolConfig::default());
        pool.set_faults(alloc::vec![FaultPolicy::EveryNth(3)]);
        let r: Vec<bool> = (0..6).map(|_| pool.charge(1)).collect();
        assert_eq!(r, [true, true, false, true, true, false]);
        pool.set_faults(alloc::vec![FaultPolicy::Window { from: 8, to: 10 }]);
        let r: Vec<bool> = (0..4).map(|_| pool.charge(1)).collect();
        assert_eq!(r, [true, false, false, true]);
        pool.set_faults(alloc::vec![FaultPolicy::AboveSize(10)]);
        assert!(pool.charge(10) && !pool.charge(11));
        assert_eq!(pool.stats().failed_injected, 5);
    }

    #[test]
    fn probability_is_reproducible_from_the_seed() {
        let run = |seed| {
            let pool = Pool::new(PoolConfig::default());
            pool.set_faults(alloc::vec![FaultPolicy::Probability { p: 0.3, seed }]);
            (0..1000).map(|_| pool.charge(1)).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        let fails = a.iter().filter(|ok| !**ok).count();
        assert!((200..400).contains(&fails), "{fails} failures for p = 0.3");
    }
}
