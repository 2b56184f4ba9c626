//! A hashed timer wheel with one slot per shard clock tick (100 ms): keep-alive deadlines and session
//! expiry for a whole shard, instead of one timer per connection.
//!
//! Entries are checked lazily: an entry fires when its slot comes round and its
//! deadline has passed; the caller then looks at the real state (the client may have
//! been active since) and schedules again if needed. So a busy connection costs no
//! wheel work per packet, only one visit per deadline.
//!
//! A deadline that is known early not to matter any more can be cancelled
//! ([`Wheel::cancel`], a scan of one slot): session expiry is two hours by default,
//! and a client that reconnects would otherwise leave its entry behind for all of
//! it. Slots give their room back once a burst of entries has gone (due or
//! cancelled), so a storm's deadlines do not keep their memory.
//!
//! # Invariants
//! An entry is returned by `advance` no earlier than its deadline, and at most one
//! full turn of the wheel after it; a cancelled entry is never returned.

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

    /// Schedules `key` at `deadline` (in ticks of the shard's clock). Returns the
    /// deadline it got (never in the past), which is what [`Wheel::cancel`] takes.
    pub(super) fn schedule(&mut self, deadline: u64, key: K) -> u64 {
        let deadline = deadline.max(self.now + 1);
        self.slots[slot_of(deadline)].push((deadline, key));
        deadline
    }

    /// Takes out the entry scheduled at `deadline` whose key `is_it`, if it has not
    /// come due yet; returns whether there was one. For deadlines that end long
    /// before they come due (a session that is back online long before it would
    /// expire): lazily, the entry would hold its room for the whole delay, and a
    /// reconnect storm would leave one behind per client. O(entries in one slot).
    pub(super) fn cancel(&mut self, deadline: u64, is_it: impl Fn(&K) -> bool) -> bool {
        let slot = &mut self.slots[slot_of(deadline)];
        let Some(i) = slot.iter().position(|(at, key)| *at == deadline && is_it(key)) else {
            return false;
        };
        slot.swap_remove(i);
        give_back_room(slot);
        true
    }

    /// Every entry, as (deadline, key), in no particular order (for invariant checks).
    pub(super) fn iter(&self) -> impl Iterator<Item = &(u64, K)> {
        self.slots.iter().flatten()
    }

    /// Moves time to `now`, appending every entry whose deadline has passed to `due`.
    pub(super) fn advance(&mut self, now: u64, due: &mut Vec<K>) {
        let steps = now.saturating_sub(self.now).min(SLOTS as u64);
        for step in 1..=steps {
            let slot = &mut self.slots[slot_of(self.now + step)];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].0 <= now {
                    due.push(slot.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            give_back_room(slot);
        }
        self.now = self.now.max(now);
    }
}

fn slot_of(deadline: u64) -> usize {
    (deadline % SLOTS as u64) as usize
}

/// A slot that held a burst of deadlines (a connection storm) gives the room back
/// once they are due or cancelled, rather than keep it for good. Halving at a
/// quarter full keeps the copies amortised O(1) per entry.
fn give_back_room<T>(slot: &mut Vec<T>) {
    if slot.capacity() > SLOT_SPARE_MIN && slot.len() < slot.capacity() / 4 {
        slot.shrink_to(slot.len() * 2);
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

    #[test]
    fn a_cancelled_entry_never_fires_and_its_room_goes_back() {
        let mut wheel = Wheel::new(0);
        let at = wheel.schedule(10, 1);
        assert_eq!(at, 10);
        wheel.schedule(10 + SLOTS as u64, 1);
        wheel.schedule(10, 2);
        assert!(!wheel.cancel(11, |&k| k == 1), "nothing at that deadline");
        assert!(wheel.cancel(10, |&k| k == 1), "same slot, same key: the deadline tells");
        assert!(!wheel.cancel(10, |&k| k == 1), "taken out once");
        let mut due = Vec::new();
        wheel.advance(10 + SLOTS as u64, &mut due);
        assert_eq!(due, vec![2, 1], "the other deadline of key 1 stays");
        let at = 300;
        for i in 0..1000 {
            assert_eq!(wheel.schedule(at, i), at);
        }
        for i in 0..1000 {
            assert!(wheel.cancel(at, |&k| k == i));
        }
        assert!(wheel.slots[slot_of(at)].capacity() <= SLOT_SPARE_MIN);
        due.clear();
        wheel.advance(at + SLOTS as u64, &mut due);
        assert!(due.is_empty());
    }

    #[test]
    fn schedule_returns_the_deadline_it_gave() {
        let mut wheel = Wheel::new(0);
        let mut due = Vec::new();
        wheel.advance(50, &mut due);
        let at = wheel.schedule(3, "late");
        assert_eq!(at, 51, "a deadline in the past is due at the next tick");
        assert!(wheel.cancel(at, |&k| k == "late"));
    }
}
