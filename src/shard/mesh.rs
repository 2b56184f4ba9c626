//! What shards say to each other, and the per-destination outboxes that batch it.
//!
//! Two meshes of SPSC rings join every pair of shards: `data` (messages) and `control`
//! (routes, hand-offs, retained queries). One ring slot carries one batch (`Vec`):
//! sending items one by one costs 220-750 ns each, in batches of 64 9-49 ns.
//!
//! Owner: each shard has its own `Outbox`es; nothing here is shared.
//!
//! # Invariants
//! - Batches to one destination leave in the order they were filled (FIFO), also
//!   when its ring is full: later batches queue behind the overflow.
//! - The overflow is bounded by `ring_overflow_max` batches per shard; beyond it the
//!   shard pauses the readers that feed it (backpressure) instead of growing.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use glommio::channels::channel_mesh::Senders;

use crate::message::Message;
use crate::metrics::ShardSnapshot;
use crate::protocol::{Connect, QoS, TopicFilter};

use super::notify::Notify;

/// Messages on the data mesh.
#[derive(Debug)]
pub(crate) enum DataMsg {
    /// A PUBLISH for the destination's local subscribers.
    Publish(Arc<Message>),
    /// A retained message (or its removal, with an empty payload) for the
    /// destination's retained partition.
    Retain(Arc<Message>),
    /// The answer to a `RetainedQuery` (possibly empty): messages for one client's
    /// new subscription.
    Retained {
        client_id: ByteString,
        qos: QoS,
        sub_id: Option<u32>,
        messages: Vec<Arc<Message>>,
        query: u64,
    },
    /// A message for one member of the shared subscription `filter`
    /// (`$share/{group}/{filter}`) on the destination. `hops` counts how often it
    /// was passed on because the chosen shard had no member left.
    Shared { filter: TopicFilter, message: Arc<Message>, hops: u8, exclude: Option<ByteString> },
}

/// Messages on the control mesh.
#[derive(Debug)]
pub(crate) enum CtrlMsg {
    /// `origin` has (or no longer has) local subscribers for `filter`.
    Route { origin: usize, rev: u64, filter: TopicFilter, present: bool },
    /// `from` has applied every route update of the receiver up to `rev`.
    RouteAck { from: usize, rev: u64 },
    /// A connection whose CONNECT arrived on another shard, for its owner shard.
    Handoff(Box<Handoff>),
    /// "Send the retained messages matching `filter` to `client_id` on `origin`."
    RetainedQuery {
        origin: usize,
        client_id: ByteString,
        filter: TopicFilter,
        qos: QoS,
        sub_id: Option<u32>,
        /// Identifies the SUBSCRIBE on `origin`, whose SUBACK waits for the answer.
        query: u64,
    },
    /// `origin` has `members` connected members of the shared subscription `filter`
    /// (`$share/{group}/{filter}`). Acknowledged like `Route`.
    SharedRoute { origin: usize, rev: u64, filter: TopicFilter, members: u32 },
    /// A shard's figures, once a second, for shard 0.
    Stats(Box<ShardSnapshot>),
}

/// A connection moving to the shard that owns its client id.
#[derive(Debug)]
pub(crate) struct Handoff {
    /// A duplicate of the accepted socket; the accepting shard closed its own.
    pub fd: OwnedFd,
    pub connect: Connect,
    /// Bytes read after the CONNECT packet.
    pub buffered: Bytes,
}

/// Batches toward every other shard on one mesh.
pub(crate) struct Outbox<T: Send + 'static> {
    senders: Rc<Senders<Vec<T>>>,
    /// The batch being filled, per destination.
    filling: Vec<Vec<T>>,
    /// Full batches that found the ring full, per destination, oldest first.
    overflow: Vec<VecDeque<Vec<T>>>,
    /// Per destination: the drain task holds a batch taken from the overflow, so new
    /// batches must queue behind it.
    draining: Vec<bool>,
    /// Wakes the drain task when a batch lands in the overflow.
    pub overflow_signal: Rc<Notify>,
    batch_max: usize,
    /// Batches sent so far.
    pub batches_sent: u64,
    /// Batches that had to wait in the overflow.
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
    pub fn new(senders: Rc<Senders<Vec<T>>>, shards: usize, batch_max: usize) -> Self {
        Outbox {
            senders,
            filling: (0..shards).map(|_| Vec::new()).collect(),
            overflow: (0..shards).map(|_| VecDeque::new()).collect(),
            draining: vec![false; shards],
            overflow_signal: Rc::new(Notify::default()),
            batch_max,
            batches_sent: 0,
            batches_overflowed: 0,
        }
    }

    /// Adds `item` to the batch for `dest`, sealing the batch when it is full.
    pub fn push(&mut self, dest: usize, item: T) {
        let batch = &mut self.filling[dest];
        batch.push(item);
        if batch.len() >= self.batch_max {
            let batch = std::mem::take(batch);
            self.send(dest, batch);
        }
    }

    /// Sends every partly filled batch (end of a processing pass).
    pub fn flush(&mut self) {
        for dest in 0..self.filling.len() {
            if !self.filling[dest].is_empty() {
                let batch = std::mem::take(&mut self.filling[dest]);
                self.send(dest, batch);
            }
        }
    }

    fn send(&mut self, dest: usize, batch: Vec<T>) {
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
            // The destination has shut down: nothing will read it any more.
            Err(_) => {}
        }
    }

    /// Batches waiting in the overflow, all destinations.
    pub fn overflow_len(&self) -> usize {
        self.overflow.iter().map(VecDeque::len).sum()
    }

    /// Takes the oldest overflowed batch of some destination, for the drain task,
    /// which sends it (waiting for room) and then calls `drained`.
    pub fn take_overflow(&mut self) -> Option<(usize, Vec<T>)> {
        for (dest, queue) in self.overflow.iter_mut().enumerate() {
            if let Some(batch) = queue.pop_front() {
                self.draining[dest] = true;
                return Some((dest, batch));
            }
        }
        None
    }

    /// The batch taken for `dest` has been sent.
    pub fn drained(&mut self, dest: usize) {
        self.draining[dest] = false;
        self.batches_sent += 1;
    }

    pub fn senders(&self) -> Rc<Senders<Vec<T>>> {
        Rc::clone(&self.senders)
    }
}
