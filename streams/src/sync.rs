//! The synchronisation types the core uses, in one place so that they can be swapped for
//! `loom`'s when the perimeter core is model-checked.
//!
//! Locks are held only across short critical sections, never across a call into a module;
//! all blocking goes through the platform's futex-like `wait`/`wake_all`. The one exception
//! is a stream's operation lock (`STRPLUMB`), held across a push, pop or close, open and
//! close routines included.

//! Under `--cfg loom` the atomics and locks are loom's, so that `tests/loom.rs` can explore
//! every interleaving of the perimeter core; reference counts stay `alloc`'s (loom's `Arc`
//! has no `Weak`).

pub(crate) use alloc::sync::{Arc, Weak};
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    fence,
};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    fence,
};

/// A mutual-exclusion lock for short critical sections (loom's, for model checking).
#[cfg(loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(v: T) -> Self {
        Mutex(loom::sync::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mutual-exclusion lock for short critical sections.
#[cfg(all(feature = "std", not(loom)))]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

#[cfg(all(feature = "std", not(loom)))]
impl<T> Mutex<T> {
    pub(crate) const fn new(v: T) -> Self {
        Mutex(std::sync::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        // A panic in a test thread must not wedge every other user of the lock.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mutual-exclusion lock for short critical sections (spinning; no_std).
///
/// Each hold is also a `critical-section` critical section, so that a platform whose
/// interrupt handlers call into the core (a bare-metal guest) can hold those handlers off
/// while this CPU is inside one of the core's locks: a handler spinning on a lock that the
/// code it interrupted holds would never get it. The platform provides the implementation
/// (`critical_section::set_impl!`); nested holds are fine.
#[cfg(not(any(feature = "std", loom)))]
pub(crate) struct Mutex<T>(spin::Mutex<T>);

/// A held [`Mutex`]: the lock is released before the critical section ends.
#[cfg(not(any(feature = "std", loom)))]
pub(crate) struct MutexGuard<'a, T> {
    guard: core::mem::ManuallyDrop<spin::MutexGuard<'a, T>>,
    restore: critical_section::RestoreState,
}

#[cfg(not(any(feature = "std", loom)))]
impl<T> Mutex<T> {
    pub(crate) const fn new(v: T) -> Self {
        Mutex(spin::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // SAFETY: released exactly once, in the guard's drop, after the lock. Guards may be
        // dropped out of order, so the platform's implementation must count nested holds
        // rather than restore a saved state (the guest's does).
        let restore = unsafe { critical_section::acquire() };
        MutexGuard {
            guard: core::mem::ManuallyDrop::new(self.0.lock()),
            restore,
        }
    }
}

#[cfg(not(any(feature = "std", loom)))]
impl<T> core::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

#[cfg(not(any(feature = "std", loom)))]
impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(not(any(feature = "std", loom)))]
impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard is dropped once, here, and not used afterwards.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.guard) };
        // SAFETY: pairs with the acquire in `Mutex::lock`.
        unsafe { critical_section::release(self.restore) };
    }
}

/// A stream's operation lock (`STRPLUMB`): held across a push, pop or close, module open and
/// close routines included, so its holder may block (qwait, qprocsoff). Unlike [`Mutex`] it is
/// not a critical section under `no_std`: interrupt handlers never take it (they only `put`),
/// and holding off their upcalls across a blocking wait would stop the wait's own wake-up.
#[cfg(any(feature = "std", loom))]
pub(crate) type OpLock<T> = Mutex<T>;

/// A stream's operation lock (`STRPLUMB`); see the `std` version. Contention spins.
#[cfg(not(any(feature = "std", loom)))]
pub(crate) struct OpLock<T>(spin::Mutex<T>);

#[cfg(not(any(feature = "std", loom)))]
impl<T> OpLock<T> {
    pub(crate) const fn new(v: T) -> Self {
        OpLock(spin::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> spin::MutexGuard<'_, T> {
        self.0.lock()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}
