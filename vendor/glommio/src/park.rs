//! Park hook: the application owns the executor's sleep.
//!
//! This module is not part of glommio 0.9.0; it is the one change of this copy
//! (see `PATCHES.md`). An application with an io_uring instance of its own that
//! uses `IORING_SETUP_DEFER_TASKRUN` can only learn of its completions promptly by
//! waiting in that ring: the kernel wakes a waiter there, and no one else. With a
//! park hook, the executor sleeps in the application's ring instead of its own:
//! the hook is given the descriptors of the executor's rings to watch (a poll on
//! an io_uring descriptor is readable when that ring has completions), so
//! everything the executor waits for (its IO, its timers, wake-ups from other
//! executors) still wakes it.

use std::{os::unix::io::RawFd, rc::Rc};

/// What an executor calls instead of sleeping in its own ring.
pub trait ParkHook {
    /// Called every time the reactor polls (between task queues and before it
    /// sleeps). Returns how many tasks it woke: a non-zero count keeps the
    /// executor from sleeping. Must not block.
    fn poll(&self) -> usize;

    /// Called when the executor has nothing to run, with every submission of its
    /// rings already handed to the kernel. Must block until at least one of
    /// `rings` (io_uring descriptors of this executor) has a completion, or until
    /// the hook woke a task of its own, and then return. Returning early is
    /// always correct; the executor polls and calls again.
    fn sleep(&self, rings: &[RawFd]);
}

/// Sets (or, with `None`, removes) the park hook of the executor this runs on.
///
/// # Panics
/// Outside an executor.
pub fn set_park_hook(hook: Option<Rc<dyn ParkHook>>) {
    crate::executor().reactor().sys.set_park_hook(hook);
}
