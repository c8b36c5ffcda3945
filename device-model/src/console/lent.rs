//! Guest buffers lent to host-side messages by the zero-copy transmit path, and what keeps the
//! host from reading them once the guest may use them again.
//!
//! The transmit path (`driver.rs`) wraps each guest buffer in a message without copying.
//! Such a message may wait at the stream head, or in the backend for a slow client, for as
//! long as the client likes. Two events end every loan of a port at once:
//!
//! - a reset: once it returns, the guest may rewrite every buffer it had made available;
//! - the port's removal: the driver takes the port's buffers back.
//!
//! Both take the port's gate exclusively and run the backend's reclaim hook, which copies what
//! it holds into host memory (or drops it, counted, when no memory is to be had); freeing the
//! originals ends their loans. Whoever reads lent bytes on the host side (the backend's output
//! thread) holds the gate shared, and never while it blocks. A message still on its way up
//! during a reset reaches the backend from an earlier generation: it is dropped and counted,
//! never read.

use super::port::lock;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use streams::Mblk;

/// Hashes a data block's address as it is: addresses are distinct and spread already, and
/// a loan is made and repaid for every transmitted buffer.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_usize(&mut self, n: usize) {
        // Blocks are 8-byte aligned at least; mix the high bits into the low ones.
        self.0 = (n as u64 >> 3) ^ (n as u64 >> 17);
    }
}

type Loans = HashMap<usize, u64, BuildHasherDefault<AddressHasher>>;

/// What a backend runs to stop holding lent guest memory (see the module's text); its
/// argument says whether the device was reset (the guest's bytes are gone: what cannot be
/// copied is dropped) or the port removed (the ring is live: what cannot be copied may wait).
pub type ReclaimHook = Box<dyn Fn(bool) + Send + Sync>;

/// One port's loans.
#[derive(Default)]
pub struct Lent {
    gate: RwLock<()>,
    /// The generation of the port's rings (the console's epoch at the last reset).
    generation: AtomicU64,
    /// Data block identity -> the generation it was lent in.
    loans: Mutex<Loans>,
    /// Loans of an earlier generation still outstanding (0 almost always: then nothing is
    /// stale and readers need not look).
    stale: AtomicUsize,
    reclaim: Mutex<Option<ReclaimHook>>,
}

impl Lent {
    /// Records that data block `id` is over a guest buffer of `generation`.
    pub(crate) fn lend(&self, id: usize, generation: u64) {
        let earlier = lock(&self.loans).insert(id, generation);
        // Ids are host data-block addresses: a block is lent when it is made, and its loan is
        // repaid before the address can be reused.
        debug_assert!(earlier.is_none(), "data block {id:#x} lent twice");
    }

    /// Data block `id` is gone: its guest buffer is no longer read.
    pub(crate) fn repay(&self, id: usize) {
        let mut loans = lock(&self.loans);
        // Read under the lock: `end_loans` changes it and counts the stale loans under it.
        let now = self.generation.load(Ordering::Acquire);
        if loans.remove(&id).is_some_and(|g| g != now) {
            let before = self.stale.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "a stale loan repaid that was not counted");
        }
        debug_assert!(
            self.stale.load(Ordering::Acquire) <= loans.len(),
            "more stale loans counted than outstanding"
        );
    }

    /// Shared hold of the gate: lent bytes may be read (and written out) until it is dropped.
    pub fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any block of `m` is over a lent guest buffer.
    pub fn is_lent(&self, m: &Mblk) -> bool {
        let loans = lock(&self.loans);
        m.blocks().any(|b| loans.contains_key(&b.db_id()))
    }

    /// Whether any block of `m` is over a guest buffer of an earlier generation (the device
    /// was reset since): its bytes must not be read.
    pub fn is_stale(&self, m: &Mblk) -> bool {
        if self.stale.load(Ordering::Acquire) == 0 {
            return false;
        }
        let now = self.generation.load(Ordering::Acquire);
        let loans = lock(&self.loans);
        m.blocks()
            .any(|b| loans.get(&b.db_id()).is_some_and(|&g| g != now))
    }

    /// Sets the backend's reclaim hook (called with the gate held exclusively).
    pub fn set_reclaim(&self, hook: ReclaimHook) {
        *lock(&self.reclaim) = Some(hook);
    }

    /// Ends every loan: waits for readers to let go, moves to `generation` (a reset) and has
    /// the backend give back what it holds.
    pub(crate) fn end_loans(&self, generation: Option<u64>) {
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = generation {
            let loans = lock(&self.loans);
            self.generation.store(g, Ordering::Release);
            let stale = loans.values().filter(|&&lent| lent != g).count();
            self.stale.store(stale, Ordering::Release);
        }
        if let Some(hook) = &*lock(&self.reclaim) {
            hook(generation.is_some());
        }
    }

    /// Loans outstanding (tests).
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        lock(&self.loans).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use streams::{DetPlatform, Streams, StreamsConfig};

    #[test]
    fn a_loan_from_before_a_reset_is_stale_until_repaid() {
        let s = Streams::new(Arc::new(DetPlatform::new()), StreamsConfig::default());
        let (old, new) = (s.allocb(8).unwrap(), s.allocb(8).unwrap());
        let lent = Lent::default();
        lent.end_loans(Some(1));
        lent.lend(old.db_id(), 1);
        assert!(lent.is_lent(&old) && !lent.is_stale(&old));
        let reclaimed = Arc::new(AtomicUsize::new(0));
        let r = reclaimed.clone();
        lent.set_reclaim(Box::new(move |_reset| {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        lent.end_loans(Some(2)); // a reset
        assert_eq!(reclaimed.load(Ordering::SeqCst), 1, "the backend was asked");
        lent.lend(new.db_id(), 2);
        let dup = old.dupb().unwrap();
        assert!(
            lent.is_stale(&old) && lent.is_stale(&dup),
            "a duplicate is as stale"
        );
        assert!(!lent.is_stale(&new));
        lent.repay(old.db_id());
        assert_eq!(lent.stale.load(Ordering::SeqCst), 0);
        assert!(!lent.is_stale(&old) && !lent.is_lent(&old));
        assert_eq!(lent.outstanding(), 1);
    }
}
