//! Recycling of released heap data blocks, so that `allocb` rarely reaches the allocator.
//!
//! A data block whose last reference is dropped is reset and kept, per size class. With
//! `std`, each thread first uses a small cache of its own for the pool it used last (no
//! atomic operations); the pool's locked cache takes the overflow and serves `no_std`.

use crate::msg::Dblk;
use crate::pool::Pool;
use crate::sync::{Arc, Mutex};
use alloc::vec::Vec;

/// Size classes 64, 128, ..., 4096 bytes.
pub(crate) const CLASSES: usize = 7;
/// Largest block recycled.
pub(crate) const CACHED_MAX: usize = 64 << (CLASSES - 1);
/// Blocks kept per class in the pool's shared cache.
const SHARED_DEPTH: usize = 256;

/// The size class of a request, if blocks of that size are recycled.
pub(crate) fn class_of(size: usize) -> Option<usize> {
    (size <= CACHED_MAX).then(|| (size.max(64).next_power_of_two().trailing_zeros() - 6) as usize)
}

/// The capacity of blocks of a class.
pub(crate) fn class_capacity(class: usize) -> usize {
    64 << class
}

/// A pool's shared cache.
#[derive(Default)]
pub(crate) struct SharedCache {
    classes: [Mutex<Vec<Arc<Dblk>>>; CLASSES],
}

impl SharedCache {
    fn pop(&self, class: usize) -> Option<Arc<Dblk>> {
        self.classes[class].lock().pop()
    }

    fn push(&self, class: usize, db: Arc<Dblk>) -> Result<(), Arc<Dblk>> {
        let mut c = self.classes[class].lock();
        if c.len() >= SHARED_DEPTH {
            return Err(db);
        }
        c.push(db);
        Ok(())
    }

    /// Drops every cached block.
    pub(crate) fn clear(&self) {
        for c in &self.classes {
            let blocks = core::mem::take(&mut *c.lock());
            drop(blocks);
        }
    }
}

/// Takes a recycled block of `class` for `pool`, if one is cached.
pub(crate) fn pop(pool: &Pool, class: usize) -> Option<Arc<Dblk>> {
    #[cfg(all(feature = "std", not(loom)))]
    if let Some(db) = local::pop(pool as *const Pool as usize, class) {
        return Some(db);
    }
    pool.cache().pop(class)
}

/// Keeps a released block (unshared, its charge already returned) for reuse; drops it
/// when every cache is full.
pub(crate) fn push(class: usize, db: Arc<Dblk>) {
    #[cfg(all(feature = "std", not(loom)))]
    let db = match local::push(Arc::as_ptr(db.pool()) as usize, class, db) {
        Ok(()) => return,
        Err(db) => db,
    };
    let pool = db.pool().clone();
    let _ = pool.cache().push(class, db);
}

#[cfg(all(feature = "std", not(loom)))]
mod local {
    use super::{CLASSES, Dblk};
    use std::cell::RefCell;
    use std::sync::Arc;

    /// Blocks kept per class by each thread.
    const LOCAL_DEPTH: usize = 64;

    #[derive(Default)]
    struct Local {
        /// The pool the cached blocks belong to (an identity only: they keep it alive).
        pool: usize,
        stacks: [Vec<Arc<Dblk>>; CLASSES],
    }

    std::thread_local! {
        static LOCAL: RefCell<Local> = RefCell::default();
    }

    pub(super) fn pop(pool: usize, class: usize) -> Option<Arc<Dblk>> {
        LOCAL
            .try_with(|l| {
                let mut l = l.try_borrow_mut().ok()?;
                if l.pool != pool {
                    return None;
                }
                l.stacks[class].pop()
            })
            .ok()
            .flatten()
    }

    pub(super) fn push(pool: usize, class: usize, db: Arc<Dblk>) -> Result<(), Arc<Dblk>> {
        let mut db = Some(db);
        let mut evicted = None;
        let r = LOCAL.try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return;
            };
            if l.pool != pool {
                // This thread moved to another pool: let the old blocks go (after the borrow).
                evicted = Some(core::mem::take(&mut l.stacks));
                l.pool = pool;
            }
            if l.stacks[class].len() < LOCAL_DEPTH {
                l.stacks[class].push(db.take().expect("not yet used"));
            }
        });
        drop(evicted);
        let _ = r;
        match db {
            None => Ok(()),
            Some(db) => Err(db),
        }
    }
}
