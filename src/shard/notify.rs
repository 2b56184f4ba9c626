//! Single-threaded wake-ups between tasks of one shard. No atomics: everything here
//! is `!Send` and lives on one executor.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Wakes the one task that waits on it (a connection's task). A notification that
/// arrives while nobody waits is remembered.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// A gate many tasks wait on while it is closed (readers paused by backpressure).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn close(&self) {
        self.closed.set(true);
    }

    pub fn open(&self) {
        self.closed.set(false);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub async fn wait_open(&self) {
        poll_fn(|cx| {
            if self.closed.get() {
                register(&self.waiters, cx.waker());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// Set once, wakes every waiter, stays set: the shard's "stopping" signal that its
/// long-lived tasks race their work against, so they end (and release the shard)
/// at shutdown.
#[derive(Debug, Default)]
pub(crate) struct Latch {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Latch {
    pub fn set(&self) {
        self.set.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                Poll::Ready(())
            } else {
                register(&self.waiters, cx.waker());
                Poll::Pending
            }
        })
        .await;
    }
}

/// Adds `waker` to `waiters` unless the same task is there already. A task that
/// polls a wait again and again (it races the wait against other events in a loop)
/// must not pile up clones: glommio counts a task's wakers in 16 bits and panics
/// past 32,767 (found under a QoS 1 flood with publishers paused).
fn register(waiters: &RefCell<Vec<Waker>>, waker: &Waker) {
    let mut waiters = waiters.borrow_mut();
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct CountingWaker;
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn repeated_polls_of_a_closed_gate_keep_one_waker_per_task() {
        let gate = Gate::default();
        gate.close();
        let arc = Arc::new(CountingWaker);
        let waker = Waker::from(Arc::clone(&arc));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut wait = std::pin::pin!(gate.wait_open());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(gate.waiters.borrow().len(), 1);
        // The waker itself, `arc`, and the one kept by the gate.
        assert_eq!(Arc::strong_count(&arc), 3);
        gate.open();
        assert!(gate.waiters.borrow().is_empty());
    }
}
