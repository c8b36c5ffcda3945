//! The synchronisation types the core uses, in one place so that they can be swapped for
//! `loom`'s when the perimeter core is model-checked.
//!
//! Locks are held only across short critical sections, never across a call into a module;
//! all blocking goes through the platform's futex-like `wait`/`wake_all`. The one exception
//! is a stream's operation lock (`STRPLUMB`), held across a push, pop or close, open and
//! close routines included.

pub(crate) use alloc::sync::{Arc, Weak};
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// A mutual-exclusion lock for short critical sections.
#[cfg(feature = "std")]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

#[cfg(feature = "std")]
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
#[cfg(not(feature = "std"))]
pub(crate) struct Mutex<T>(spin::Mutex<T>);

#[cfg(not(feature = "std"))]
impl<T> Mutex<T> {
    pub(crate) const fn new(v: T) -> Self {
        Mutex(spin::Mutex::new(v))
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
