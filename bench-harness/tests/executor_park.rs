//! The generator's executor never sleeps while a task is runnable (issue #19).
//!
//! The generator runs glommio without a park hook. glommio 0.9.0 parked when a
//! preemption was already pending before the first task queue ran, even with a
//! task queued; a task woken by a timer then waited for unrelated IO (patch 4 in
//! `vendor/glommio/PATCHES.md`). After a reconnect storm that task was the ticker
//! that drives every device's keep-alive, and the whole fleet went silent.
//!
//! A preemption timer of 20 µs often fires between the poll that arms it and the
//! executor's first look for a preemption, so this case comes up every few
//! hundred timers here. Without the fix the executor below slept for good in 5 of
//! 5 runs, after 122 to 1,675 of its 5,000 timers; with it, the 5,000 timers took
//! 0.8 s in 5 of 5. A much shorter preemption timer is no better a test: below
//! about 5 µs it fires before any task runs, and the executor makes no progress
//! with or without the fix.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// Sleeps `timers` times for `each` on an executor with the given preemption
/// timer. Returns how many timers had fired when `limit` passed, or `None` if
/// all of them had.
fn fired_if_stuck(preempt: Duration, each: Duration, timers: u32, limit: Duration) -> Option<u32> {
    let (done, finished) = mpsc::channel();
    let fired = Arc::new(AtomicU32::new(0));
    let counter = fired.clone();
    // Detached: an executor that sleeps forever must not hang the test too.
    std::thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .preempt_timer(preempt)
            .make()
            .expect("an executor (io_uring and memlock: see tuning/README.md)");
        ex.run(async move {
            for _ in 0..timers {
                glommio::timer::sleep(each).await;
                counter.fetch_add(1, Relaxed);
            }
            let _ = done.send(());
        });
    });
    match finished.recv_timeout(limit) {
        Ok(()) => None,
        Err(_) => Some(fired.load(Relaxed)),
    }
}

#[test]
fn a_task_woken_by_a_timer_runs_though_a_preemption_is_pending() {
    let stuck = fired_if_stuck(
        Duration::from_micros(20),
        Duration::from_micros(100),
        5_000,
        Duration::from_secs(30),
    );
    if let Some(fired) = stuck {
        panic!(
            "the executor slept with a runnable task: {fired} of 5,000 timers of 100 µs in 30 s"
        );
    }
}
