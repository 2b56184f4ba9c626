//! A hashed timer wheel with one slot per shard clock tick (100 ms): keep-alive deadlines and session
//! expiry for a whole shard, instead of one timer per connection.
//!
//! Entries are checked lazily: an entry fires when its slot comes round and its
//! deadline has passed; the caller then looks at the real state (the client may have
//! been active since) and schedules again if needed. So a busy connection costs no
//! wheel work per packet, only one visit per deadline.
//!
//! # Invariants
//! An entry is returned by `advance` no earlier than its deadline, and at most one
//! full turn of the wheel after it.

const SLOTS: usize = 256;

/// Entries a slot may keep room for without holding them: below this, shrinking
/// would cost more allocations than it frees memory.
const SLOT_SPARE_MIN: usize = 64;

/// The wheel; `K` identifies what a deadline belongs to.
#[derive(Debug)]
pub(super) struct Wheel<K> {
    slots: Vec<Vec<(u64, K)>>,
    /// The last tick processed.
    now: u64,
}

impl<K> Wheel<K> {
    pub(super) fn new(now: u64) -> Self {
        Wheel { slots: (0..SLOTS).map(|_| Vec::new()).collect(), now }
    }

    /// Schedules `key` at `deadline` (in ticks of the shard's clock).
    pub(super) fn schedule(&mut self, deadline: u64, key: K) {
        let deadline = deadline.max(self.now + 1);
        self.slots[(deadline % SLOTS as u64) as usize].push((deadline, key));
    }

    /// Moves time to `now`, appending every entry whose deadline has passed to `due`.
    pub(super) fn advance(&mut self, now: u64, due: &mut Vec<K>) {
        let steps = now.saturating_sub(self.now).min(SLOTS as u64);
        for step in 1..=steps {
            let slot = &mut self.slots[((self.now + step) % SLOTS as u64) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now {
                    due.push(slot.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            // A slot that held a burst of deadlines (a connection storm) gives the
            // room back once they are due, rather than keep it for good.
            if slot.capacity() > SLOT_SPARE_MIN && slot.len() < slot.capacity() / 4 {
                slot.shrink_to(slot.len() * 2);
            }
        }
        self.now = self.now.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_deadline_not_before_even_across_turns() {
        let mut wheel = Wheel::new(0);
        wheel.schedule(5, "a");
        wheel.schedule(5 + SLOTS as u64, "b");
        let mut due = Vec::new();
        wheel.advance(4, &mut due);
        assert!(due.is_empty());
        wheel.advance(5, &mut due);
        assert_eq!(due, vec!["a"]);
        due.clear();
        wheel.advance(4 + SLOTS as u64, &mut due);
        assert!(due.is_empty(), "same slot, next turn: not yet");
        wheel.advance(1000, &mut due);
        assert_eq!(due, vec!["b"]);
    }

    #[test]
    fn a_slot_gives_back_the_room_of_a_burst() {
        let mut wheel = Wheel::new(0);
        for i in 0..1000 {
            wheel.schedule(5, i);
        }
        wheel.schedule(5 + SLOTS as u64, 1000);
        let mut due = Vec::new();
        wheel.advance(5, &mut due);
        assert_eq!(due.len(), 1000);
        assert!(wheel.slots[5].capacity() <= SLOT_SPARE_MIN.max(2), "room kept for one entry");
    }
}
