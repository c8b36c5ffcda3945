//! A spin lock that holds interrupt upcalls off on this CPU while held, so that an interrupt
//! handler taking the same lock never spins on its own interrupted holder.

use crate::cpu::irq;

/// A spin lock for short critical sections, safe to share with interrupt handlers.
pub struct IrqLock<T>(spin::Mutex<T>);

/// A held [`IrqLock`].
pub struct IrqGuard<'a, T> {
    guard: core::mem::ManuallyDrop<spin::MutexGuard<'a, T>>,
}

impl<T> IrqLock<T> {
    /// A lock around `v`.
    pub const fn new(v: T) -> Self {
        IrqLock(spin::Mutex::new(v))
    }

    /// Takes the lock; upcalls on this CPU wait until it is released.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        irq::mask();
        IrqGuard {
            guard: core::mem::ManuallyDrop::new(self.0.lock()),
        }
    }
}

impl<T> core::ops::Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> core::ops::DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; the guard is not used afterwards.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.guard) };
        irq::unmask();
    }
}
