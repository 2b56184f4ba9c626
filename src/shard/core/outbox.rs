//! Ring batches being filled, per destination shard. The core only fills them; the
//! IO layer sends them at the end of a pass and keeps what a full ring refused.
//!
//! # Invariants
//! - Batches to one destination leave in the order they were filled (FIFO).
//! - A batch holds at most `batch_max` items and is never empty.

use std::collections::VecDeque;

/// Batches toward every other shard on one mesh.
#[derive(Debug)]
pub(super) struct Batches<T> {
    /// The batch being filled, per destination.
    filling: Vec<Vec<T>>,
    /// Batches cut and not yet taken by the IO layer, oldest first.
    ready: VecDeque<(usize, Vec<T>)>,
    batch_max: usize,
}

impl<T> Batches<T> {
    pub(super) fn new(shards: usize, batch_max: usize) -> Self {
        assert!(batch_max > 0, "a batch holds at least one item");
        Batches {
            filling: (0..shards).map(|_| Vec::new()).collect(),
            ready: VecDeque::new(),
            batch_max,
        }
    }

    /// Adds `item` to the batch for `dest`; a full batch is cut at once.
    pub(super) fn push(&mut self, dest: usize, item: T) {
        let batch = &mut self.filling[dest];
        batch.push(item);
        if batch.len() >= self.batch_max {
            let batch = std::mem::take(batch);
            self.ready.push_back((dest, batch));
        }
    }

    /// Cuts every batch being filled (end of a pass).
    pub(super) fn flush(&mut self) {
        for (dest, batch) in self.filling.iter_mut().enumerate() {
            if !batch.is_empty() {
                self.ready.push_back((dest, std::mem::take(batch)));
            }
        }
    }

    /// The oldest batch cut and not yet taken.
    pub(super) fn pop(&mut self) -> Option<(usize, Vec<T>)> {
        self.ready.pop_front()
    }

    /// Items pushed and not yet taken (cut or not).
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.filling.iter().map(Vec::len).sum::<usize>()
            + self.ready.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_when_full_and_at_flush_in_fifo_order() {
        let mut batches = Batches::new(3, 2);
        batches.push(1, "a");
        batches.push(2, "x");
        batches.push(1, "b");
        assert_eq!(batches.pop(), Some((1, vec!["a", "b"])), "full batch cut at once");
        assert_eq!(batches.pop(), None);
        batches.push(1, "c");
        batches.flush();
        assert_eq!(batches.pop(), Some((1, vec!["c"])));
        assert_eq!(batches.pop(), Some((2, vec!["x"])));
        assert_eq!(batches.pending(), 0);
    }
}
