//! Sending ring batches to other shards, and keeping what a full ring refused.
//!
//! Two meshes of SPSC rings join every pair of shards: `data` (messages) and
//! `control` (routes, hand-offs, retained queries). One ring slot carries one batch
//! (`Vec`): sending items one by one costs 220-750 ns each, in batches of 64 9-49
//! ns. The core cuts the batches (`core::outbox`); this module sends them.
//!
//! Owner: each shard has its own `Outbox`es; nothing here is shared.
//!
//! # Invariants
//! - Batches to one destination leave in the order they were cut (FIFO), also
//!   when its ring is full: later batches queue behind the overflow.
//! - The overflow is bounded by `ring_overflow_max` batches per shard; beyond it the
//!   core pauses the readers that feed it (backpressure) instead of growing.

use std::collections::VecDeque;
use std::rc::Rc;

use glommio::channels::channel_mesh::Senders;

use super::notify::Notify;

/// The senders of one mesh and what they could not send yet.
pub(crate) struct Outbox<T: Send + 'static> {
    senders: Rc<Senders<Vec<T>>>,
    /// Batches that found the ring full, per destination, oldest first.
    overflow: Vec<VecDeque<Vec<T>>>,
    /// Per destination: the drain task holds a batch taken from the overflow, so new
    /// batches must queue behind it.
    draining: Vec<bool>,
    /// Wakes the drain task when a batch lands in the overflow.
    pub overflow_signal: Rc<Notify>,
    pub batches_sent: u64,
    pub batches_overflowed: u64,
}

impl<T: Send + 'static> std::fmt::Debug for Outbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("overflow", &self.overflow_len())
            .field("batches_sent", &self.batches_sent)
            .finish()
    }
}

impl<T: Send + 'static> Outbox<T> {
    pub fn new(senders: Rc<Senders<Vec<T>>>) -> Self {
        let shards = senders.nr_consumers();
        Outbox {
            senders,
            overflow: (0..shards).map(|_| VecDeque::new()).collect(),
            draining: vec![false; shards],
            overflow_signal: Rc::new(Notify::default()),
            batches_sent: 0,
            batches_overflowed: 0,
        }
    }

    /// Sends a batch now if its ring has room and nothing waits before it;
    /// otherwise queues it for the drain task.
    pub fn send(&mut self, dest: usize, batch: Vec<T>) {
        if self.draining[dest] || !self.overflow[dest].is_empty() {
            self.overflow[dest].push_back(batch);
            self.batches_overflowed += 1;
            return;
        }
        match self.senders.try_send_to(dest, batch) {
            Ok(()) => self.batches_sent += 1,
            Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(batch))) => {
                self.overflow[dest].push_back(batch);
                self.batches_overflowed += 1;
                self.overflow_signal.notify();
            }
            // The destination shut down: nobody is left to deliver to.
            Err(_) => {}
        }
    }

    /// Batches waiting for ring room, all destinations.
    pub fn overflow_len(&self) -> usize {
        self.overflow.iter().map(VecDeque::len).sum()
    }

    /// The oldest overflowed batch of some destination, for the drain task.
    pub fn take_overflow(&mut self) -> Option<(usize, Vec<T>)> {
        for (dest, queue) in self.overflow.iter_mut().enumerate() {
            if let Some(batch) = queue.pop_front() {
                self.draining[dest] = true;
                return Some((dest, batch));
            }
        }
        None
    }

    /// The drain task sent its batch to `dest`.
    pub fn drained(&mut self, dest: usize) {
        self.draining[dest] = false;
        self.batches_sent += 1;
    }

    pub fn senders(&self) -> Rc<Senders<Vec<T>>> {
        Rc::clone(&self.senders)
    }

    /// Closes the rings (shutdown).
    pub fn close(&self) {
        self.senders.close();
    }
}
