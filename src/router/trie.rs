//! The subscription index: a map from topic filter to value that answers
//! "which stored filters match this topic name" (MQTT 3.1.1 section 4.7).
//!
//! # Layout
//!
//! Most subscriptions in practice name one topic exactly, so filters without
//! wildcards live in a flat `hashbrown::HashMap` keyed by the filter string:
//! a PUBLISH costs one hash lookup for all of them, whatever their number.
//! Filters containing `+` or `#` live in a trie of levels. Each [`Node`] is
//! reached by a path of filter levels and holds:
//!
//! * `children`: one child per literal level string (the empty level included),
//! * `plus`: the child for a `+` level,
//! * `hash`: the value of the filter that is this node's path followed by `/#`
//!   (or of `#` itself at the root),
//! * `value`: the value of the wildcard filter whose path ends exactly here.
//!
//! Every stored value sits next to its own filter string (`Box<str>`), so a
//! match hands `&str` filters to the caller without building any string.
//!
//! Matching walks the topic's levels once, following the literal child and
//! the `+` child at each level and reporting every `#` value passed on the
//! way. The walk uses an explicit stack that lives on the call stack for up
//! to [`INLINE_FRAMES`] pending branches (only a pathological trie spills to
//! the heap), so the match path does not allocate. Insert, lookup, remove
//! and drop are iterative as well: a client-chosen filter such as
//! `+/+/+/…` with tens of thousands of levels cannot overflow the stack.
//!
//! # Invariants
//!
//! 1. `exact` holds only filters without `+`/`#`; the trie holds only
//!    filters with at least one of them.
//! 2. A stored `(filter, value)` pair sits in the `value` or `hash` slot of
//!    the node reached by walking `filter`'s levels (`hash` exactly when the
//!    filter ends with `#`), so lookups by filter find it.
//! 3. `wild_len` equals the number of occupied `value`/`hash` slots, hence
//!    `len() == exact.len() + wild_len`.
//! 4. No node other than the root is empty (no value, no `#` value, no
//!    children): [`SubTrie::remove`] prunes the chain it empties, so the trie's
//!    size is bounded by the filters currently stored.
//! 5. `children` keys are single literal levels: never `+`, `#`, or
//!    containing `/`.
//!
//! [`SubTrie::check_invariants`] verifies all of these in O(n).

use std::fmt;

use ahash::RandomState;
use hashbrown::HashMap;

/// Pending branches kept on the call stack during a match before spilling
/// to a heap `Vec`. A match needs at most one pending frame per trie level
/// plus one, and real filters have a handful of levels, so 16 keeps every
/// realistic match allocation-free at 384 bytes of stack.
const INLINE_FRAMES: usize = 16;

/// A stored filter string next to its value, so matches can report the
/// filter without rebuilding it from the path.
type Slot<V> = Option<(Box<str>, V)>;

/// filter -> V map that answers "which filters match this topic name".
///
/// Filters and topic names must already be valid (see the module docs of
/// `router`); invalid input does not cause unsoundness or panics in release
/// builds, but the results for it are unspecified.
pub struct SubTrie<V> {
    /// Filters without wildcards, keyed by the filter itself: for these,
    /// "filter matches topic" is string equality [MQTT-4.7.3-4].
    exact: HashMap<Box<str>, V, RandomState>,
    /// Root of the trie holding filters with `+` or `#`.
    root: Node<V>,
    /// Number of filters stored in the trie (occupied slots).
    wild_len: usize,
}

/// One trie level. See the module docs for what each field means.
struct Node<V> {
    children: HashMap<Box<str>, Node<V>, RandomState>,
    /// Boxed because `Node` is recursive; most nodes have no `+` child, so
    /// an `Option<Box<_>>` costs one pointer for them.
    plus: Option<Box<Node<V>>>,
    hash: Slot<V>,
    value: Slot<V>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node { children: HashMap::default(), plus: None, hash: None, value: None }
    }

    /// Number of outgoing edges (literal children plus the `+` child).
    fn edges(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// True when the node stores nothing and leads nowhere, i.e. it may be
    /// pruned (invariant 4).
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.hash.is_none() && self.edges() == 0
    }
}

impl<V> Drop for Node<V> {
    /// Tears the subtree down iteratively: the derived recursive drop would
    /// recurse once per level, and filter depth is chosen by clients.
    fn drop(&mut self) {
        if self.edges() == 0 {
            // Leaves (and nodes emptied below) need no work and no allocation.
            return;
        }
        let mut stack: Vec<Node<V>> = Vec::new();
        stack.extend(self.children.drain().map(|(_, child)| child));
        stack.extend(self.plus.take().map(|child| *child));
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, child)| child));
            stack.extend(node.plus.take().map(|child| *child));
            // `node` is dropped here with no descendants left, so its own
            // `drop` returns immediately.
        }
    }
}

/// Does `filter` contain a wildcard level? Valid filters only contain `+`
/// and `#` as whole levels [MQTT-4.7.1-2] [MQTT-4.7.1-3], so a byte scan
/// is enough.
fn is_wild(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Splits off the first level of a topic: `("a", Some("b/c"))` for
/// `"a/b/c"`, `("c", None)` for `"c"`. `None` means no level follows, which
/// is different from `Some("")` (a trailing empty level, as in `"a/"`).
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// A pending branch of the match walk: `node` has been reached, and `rest`
/// are the topic levels still to consume (`None`: all consumed).
struct Frame<'t, V> {
    node: &'t Node<V>,
    rest: Option<&'t str>,
}

/// LIFO of frames that stays on the call stack for the first
/// [`INLINE_FRAMES`] entries. `spill` is only pushed to while `inline` is
/// full, and popped before it, which keeps the two halves in LIFO order.
struct FrameStack<'t, V> {
    inline: [Option<Frame<'t, V>>; INLINE_FRAMES],
    len: usize,
    spill: Vec<Frame<'t, V>>,
}

impl<'t, V> FrameStack<'t, V> {
    fn new() -> Self {
        FrameStack { inline: [const { None }; INLINE_FRAMES], len: 0, spill: Vec::new() }
    }

    fn push(&mut self, frame: Frame<'t, V>) {
        match self.inline.get_mut(self.len) {
            Some(cell) => {
                *cell = Some(frame);
                self.len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    fn pop(&mut self) -> Option<Frame<'t, V>> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline[self.len].take()
    }
}

impl<V> SubTrie<V> {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        SubTrie { exact: HashMap::default(), root: Node::new(), wild_len: 0 }
    }

    /// Number of filters stored.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wild_len
    }

    /// True when no filter is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value stored for exactly this filter (no matching is involved:
    /// `a/+` looks up the filter `a/+`, not filters matching `a/x`).
    pub fn get(&self, filter: &str) -> Option<&V> {
        if !is_wild(filter) {
            return self.exact.get(filter);
        }
        let mut node = &self.root;
        for level in filter.split('/') {
            node = match level {
                // `#` is always the last level [MQTT-4.7.1-2].
                "#" => return node.hash.as_ref().map(|(_, v)| v),
                "+" => node.plus.as_deref()?,
                _ => node.children.get(level)?,
            };
        }
        node.value.as_ref().map(|(_, v)| v)
    }

    /// Mutable access to the value stored for exactly this filter.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        if !is_wild(filter) {
            return self.exact.get_mut(filter);
        }
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => return node.hash.as_mut().map(|(_, v)| v),
                "+" => node.plus.as_deref_mut()?,
                _ => node.children.get_mut(level)?,
            };
        }
        node.value.as_mut().map(|(_, v)| v)
    }

    /// The value stored for `filter`, inserting `make()` first if there is
    /// none.
    ///
    /// If `make` panics the trie may keep empty nodes on `filter`'s path
    /// (harmless for matching, but [`Self::check_invariants`] reports them);
    /// callers pass constructors such as `Vec::new` that do not panic.
    pub fn get_or_insert_with(&mut self, filter: &str, make: impl FnOnce() -> V) -> &mut V {
        debug_assert!(!filter.is_empty(), "empty filter [MQTT-4.7.3-1]");
        if !is_wild(filter) {
            return self.exact.entry_ref(filter).or_insert_with(make);
        }
        let mut node = &mut self.root;
        let mut ends_with_hash = false;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    ends_with_hash = true;
                    break;
                }
                "+" => node.plus.get_or_insert_with(|| Box::new(Node::new())),
                _ => node.children.entry_ref(level).or_insert_with(Node::new),
            };
        }
        let slot = if ends_with_hash { &mut node.hash } else { &mut node.value };
        let wild_len = &mut self.wild_len;
        let (_, value) = slot.get_or_insert_with(|| {
            *wild_len += 1;
            (filter.into(), make())
        });
        value
    }

    /// Removes `filter` and returns its value. Trie nodes left empty by the
    /// removal are freed (invariant 4).
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        if !is_wild(filter) {
            return self.exact.remove(filter);
        }
        let (_, value) = self.slot_mut(filter)?.take()?;
        self.wild_len -= 1;
        self.prune(filter);
        Some(value)
    }

    /// The `value`/`hash` slot that `filter` (a wildcard filter) maps to,
    /// without creating nodes.
    fn slot_mut(&mut self, filter: &str) -> Option<&mut Slot<V>> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => return Some(&mut node.hash),
                "+" => node.plus.as_deref_mut()?,
                _ => node.children.get_mut(level)?,
            };
        }
        Some(&mut node.value)
    }

    /// After a slot on `filter`'s path was emptied, cuts off the chain of
    /// nodes that now store nothing and lead only along that path.
    ///
    /// Two passes instead of recursion, so the cost in stack is constant
    /// whatever the filter depth: the first finds the deepest node that must
    /// stay (the root, or one with a value or another edge), the second
    /// removes the edge leaving it towards `filter`.
    fn prune(&mut self, filter: &str) {
        // Path edges: every level but a final `#`, which names a slot.
        let edges = || filter.split('/').take_while(|level| *level != "#");

        let mut node = &self.root;
        let mut keep_depth = 0; // depth of the deepest node that must stay
        for (depth, level) in edges().enumerate() {
            if depth > 0 && (node.value.is_some() || node.hash.is_some() || node.edges() > 1) {
                keep_depth = depth;
            }
            node = match level {
                "+" => match node.plus.as_deref() {
                    Some(next) => next,
                    None => return,
                },
                _ => match node.children.get(level) {
                    Some(next) => next,
                    None => return,
                },
            };
        }
        if !node.is_empty() {
            // The end of the path still stores or leads to something: every
            // node above it is in use.
            return;
        }

        let mut node = &mut self.root;
        for (depth, level) in edges().enumerate() {
            if depth == keep_depth {
                // Dropping the cut-off chain uses `Node`'s iterative drop.
                match level {
                    "+" => node.plus = None,
                    _ => {
                        node.children.remove(level);
                    }
                }
                return;
            }
            node = match level {
                "+" => match node.plus.as_deref_mut() {
                    Some(next) => next,
                    None => return,
                },
                _ => match node.children.get_mut(level) {
                    Some(next) => next,
                    None => return,
                },
            };
        }
    }

    /// Calls `f(filter, value)` once for every stored filter that matches `topic`.
    ///
    /// `topic` is a topic name (no wildcards). Matching follows MQTT 3.1.1
    /// section 4.7: `+` matches exactly one level, possibly empty; `#`
    /// matches its parent level and any number of levels below
    /// [MQTT-4.7.1-2]; empty levels are significant and nothing is
    /// normalised [MQTT-4.7.3-4]; a topic starting with `$` is not matched
    /// by a filter starting with `+` or `#` [MQTT-4.7.2-1]. The order of the
    /// calls is unspecified.
    ///
    /// Does not allocate unless the trie forces more than 16 pending
    /// branches at once (only possible with very deep wildcard filters).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &V)) {
        if let Some((filter, value)) = self.exact.get_key_value(topic) {
            f(filter, value);
        }
        if self.wild_len == 0 {
            return;
        }

        // The root is handled apart from the loop because only at the first
        // level do `+` and `#` skip `$` topics [MQTT-4.7.2-1].
        let root = &self.root;
        let dollar = topic.starts_with('$');
        let mut stack = FrameStack::new();
        let (level, rest) = split_level(topic);
        if !dollar {
            if let Some((filter, value)) = &root.hash {
                f(filter, value);
            }
            if let Some(node) = root.plus.as_deref() {
                stack.push(Frame { node, rest });
            }
        }
        if let Some(node) = root.children.get(level) {
            stack.push(Frame { node, rest });
        }

        while let Some(Frame { node, rest }) = stack.pop() {
            // Reaching `node` means the topic's levels so far matched its
            // path, and `path/#` also matches the path itself, so a `#`
            // value here matches whether or not levels remain.
            if let Some((filter, value)) = &node.hash {
                f(filter, value);
            }
            match rest {
                None => {
                    if let Some((filter, value)) = &node.value {
                        f(filter, value);
                    }
                }
                Some(rest) => {
                    let (level, rest) = split_level(rest);
                    if let Some(node) = node.plus.as_deref() {
                        stack.push(Frame { node, rest });
                    }
                    if let Some(node) = node.children.get(level) {
                        stack.push(Frame { node, rest });
                    }
                }
            }
        }
    }

    /// Every stored `(filter, value)`, in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        let exact = self.exact.iter().map(|(filter, value)| (&**filter, value));
        // Depth-first over the trie with a heap stack (iteration is not on
        // the publish path, and recursion depth would be client-chosen).
        let mut stack: Vec<&Node<V>> = Vec::new();
        if self.wild_len > 0 {
            stack.push(&self.root);
        }
        let nodes = std::iter::from_fn(move || {
            let node = stack.pop()?;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
            Some(node)
        });
        let wild = nodes.flat_map(|node| {
            node.value.iter().chain(node.hash.iter()).map(|(filter, value)| (&**filter, value))
        });
        exact.chain(wild)
    }

    /// O(n) self-check used by tests and fuzzing: the counts agree, no
    /// non-root node is empty, and every stored filter is findable by
    /// [`Self::get`] at the slot that holds it (the module's invariants 1-5).
    pub fn check_invariants(&self) -> bool {
        if self.exact.keys().any(|filter| is_wild(filter)) {
            return false;
        }
        let mut slots = 0usize;
        let mut stack: Vec<(&Node<V>, bool)> = vec![(&self.root, true)];
        while let Some((node, is_root)) = stack.pop() {
            if !is_root && node.is_empty() {
                return false;
            }
            for (level, child) in &node.children {
                if level.contains('/') || &**level == "+" || &**level == "#" {
                    return false;
                }
                stack.push((child, false));
            }
            if let Some(child) = node.plus.as_deref() {
                stack.push((child, false));
            }
            for (slot, is_hash_slot) in [(&node.value, false), (&node.hash, true)] {
                let Some((filter, value)) = slot else {
                    continue;
                };
                slots += 1;
                if !is_wild(filter) || filter.ends_with('#') != is_hash_slot {
                    return false;
                }
                // Same address: the lookup by the stored filter lands on
                // this very slot, i.e. the filter matches its position.
                match self.get(filter) {
                    Some(found) if std::ptr::eq(found, value) => {}
                    _ => return false,
                }
            }
        }
        slots == self.wild_len
    }
}

impl<V> Default for SubTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for SubTrie<V> {
    /// Shows the filter -> value map; the trie's shape is an implementation
    /// detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Naive reference matcher: does `filter` match `topic`? (MQTT 3.1.1 section 4.7)
///
/// `filter` is a valid topic filter and `topic` a valid topic name. This is
/// the specification written out level by level; [`SubTrie`] is tested
/// against it.
#[must_use]
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1]: a first-level wildcard does not match `$` topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` matches the parent level and everything below, so it
            // matches even when the topic has run out [MQTT-4.7.1-2]; both
            // running out together means every level matched.
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            // Levels compare as bytes, no normalisation [MQTT-4.7.3-4].
            (Some(f), Some(t)) if f == t => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap as StdHashMap};

    use proptest::prelude::*;

    use super::*;

    /// (filter, topic, matches). Examples from MQTT 3.1.1 section 4.7 plus
    /// edge cases around empty levels and `$` topics.
    const CASES: &[(&str, &str, bool)] = &[
        // Exact filters: plain equality, case-sensitive, no normalisation
        // [MQTT-4.7.3-4].
        ("sport/tennis", "sport/tennis", true),
        ("sport/tennis", "sport/Tennis", false),
        ("sport/tennis", "sport/tennis/", false),
        ("ACCOUNTS", "Accounts", false),
        // `#` [MQTT-4.7.1-2] (examples of section 4.7.1.2).
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        ("sport/tennis/player1/#", "sport/tennis", false),
        ("sport/#", "sport", true),
        ("sport/#", "sport/", true),
        ("sport/#", "sports", false),
        ("sport/#", "other/sport", false),
        ("#", "sport", true),
        ("#", "sport/tennis/player1", true),
        ("#", "/", true),
        ("#", "/finance", true),
        // `+` [MQTT-4.7.1-3] (examples of section 4.7.1.3).
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "finance", true),
        ("+", "/finance", false),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+/+", "finance", false),
        ("+/+", "a/b/c", false),
        ("+/tennis/#", "sport/tennis/player1/ranking", true),
        ("+/tennis/#", "sport/tennis", true),
        ("+/tennis/#", "sport/golf", false),
        ("+/+/#", "a", false),
        ("+/+/#", "a/b", true),
        // Empty levels are levels [MQTT-4.7.3-4].
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        ("a/b", "a//b", false),
        ("a/+/b", "a//b", true),
        ("a/+/b", "a/b", false),
        ("/", "/", true),
        ("+/", "/", true),
        ("a/", "a", false),
        ("a", "a/", false),
        ("//#", "//", true),
        ("//#", "/", true),
        ("//#", "/a", false),
        // `$` topics [MQTT-4.7.2-1]: not matched by a first-level wildcard...
        ("#", "$SYS", false),
        ("#", "$SYS/broker/uptime", false),
        ("+", "$SYS", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("+/#", "$SYS/x", false),
        // ...but matched by filters naming the `$` level...
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/Clients", "$SYS/monitor/Clients", true),
        ("$SYS/#", "SYS/x", false),
        // ...and the rule concerns only the topic's first character.
        ("+/$x", "a/$x", true),
        ("a/#", "a/$x", true),
        ("#", "a$", true),
        ("+", "a$", true),
    ];

    fn matches_of<V>(trie: &SubTrie<V>, topic: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        trie.for_each_match(topic, |filter, _| {
            assert!(out.insert(filter.to_owned()), "{filter} reported twice");
        });
        out
    }

    #[test]
    fn reference_matcher_table() {
        for &(filter, topic, expected) in CASES {
            assert_eq!(
                topic_matches(filter, topic),
                expected,
                "topic_matches({filter:?}, {topic:?})"
            );
        }
    }

    #[test]
    fn trie_with_one_filter_agrees_with_table() {
        for &(filter, topic, expected) in CASES {
            let mut trie = SubTrie::new();
            *trie.get_or_insert_with(filter, || 0) += 1;
            assert!(trie.check_invariants());
            let mut seen = Vec::new();
            trie.for_each_match(topic, |f, v| seen.push((f.to_owned(), *v)));
            let want = if expected { vec![(filter.to_owned(), 1)] } else { vec![] };
            assert_eq!(seen, want, "filter {filter:?} topic {topic:?}");
        }
    }

    #[test]
    fn trie_with_all_filters_agrees_with_reference() {
        let mut trie = SubTrie::new();
        for &(filter, _, _) in CASES {
            trie.get_or_insert_with(filter, || filter.len());
        }
        assert!(trie.check_invariants());
        let filters: BTreeSet<&str> = CASES.iter().map(|c| c.0).collect();
        assert_eq!(trie.len(), filters.len());
        for &(_, topic, _) in CASES {
            let want: BTreeSet<String> = filters
                .iter()
                .filter(|f| topic_matches(f, topic))
                .map(|f| (*f).to_owned())
                .collect();
            assert_eq!(matches_of(&trie, topic), want, "topic {topic:?}");
        }
    }

    #[test]
    fn exact_and_wildcards_for_the_same_topic() {
        let mut trie = SubTrie::new();
        for filter in ["a/b", "a/+", "+/b", "a/#", "#", "+/+", "a/b/#", "b/+"] {
            trie.get_or_insert_with(filter, || filter.to_owned());
        }
        let got = matches_of(&trie, "a/b");
        let want: BTreeSet<String> = ["a/b", "a/+", "+/b", "a/#", "#", "+/+", "a/b/#"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(got, want);
        // The value handed out is the one stored under the reported filter.
        trie.for_each_match("a/b", |filter, value| assert_eq!(filter, value));
    }

    #[test]
    fn dollar_topics_both_directions() {
        // [MQTT-4.7.2-1]
        let mut trie = SubTrie::new();
        for filter in ["#", "+/x", "$SYS/#", "$SYS/+", "$SYS/x"] {
            trie.get_or_insert_with(filter, || ());
        }
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(matches_of(&trie, "$SYS/x"), set(&["$SYS/#", "$SYS/+", "$SYS/x"]));
        assert_eq!(matches_of(&trie, "$SYS"), set(&["$SYS/#"]));
        assert_eq!(matches_of(&trie, "SYS/x"), set(&["#", "+/x"]));
        assert_eq!(matches_of(&trie, "a/x"), set(&["#", "+/x"]));
    }

    #[test]
    fn get_insert_len_and_iter() {
        let mut trie: SubTrie<u32> = SubTrie::default();
        assert!(trie.is_empty());
        assert_eq!(*trie.get_or_insert_with("a/+", || 1), 1);
        // Present already: `make` is not called.
        assert_eq!(*trie.get_or_insert_with("a/+", || unreachable!()), 1);
        *trie.get_or_insert_with("a/b", || 2) += 10;
        assert_eq!(trie.get("a/b"), Some(&12));
        assert_eq!(trie.get("a/+"), Some(&1));
        // `get` is by filter, not by matching.
        assert_eq!(trie.get("a/c"), None);
        assert_eq!(trie.get("a/#"), None);
        assert_eq!(trie.get("+"), None);
        if let Some(v) = trie.get_mut("a/+") {
            *v = 5;
        }
        trie.get_or_insert_with("a/#", || 3);
        trie.get_or_insert_with("#", || 4);
        assert_eq!(trie.len(), 4);
        let mut all: Vec<(&str, u32)> = trie.iter().map(|(f, v)| (f, *v)).collect();
        all.sort_unstable();
        assert_eq!(all, [("#", 4), ("a/#", 3), ("a/+", 5), ("a/b", 12)]);
        assert!(trie.check_invariants());
        assert!(format!("{trie:?}").contains("\"a/+\": 5"));
    }

    #[test]
    fn remove_prunes_empty_nodes() {
        let mut trie = SubTrie::new();
        trie.get_or_insert_with("a/+/c/#", || 1);
        trie.get_or_insert_with("a/+", || 2);
        trie.get_or_insert_with("a/b/+/d", || 3);
        trie.get_or_insert_with("x", || 4);
        assert_eq!(trie.remove("a/+/c"), None);
        assert_eq!(trie.remove("nope/#"), None);
        assert_eq!(trie.remove("a/+/c/#"), Some(1));
        assert_eq!(trie.remove("a/+/c/#"), None);
        assert!(trie.check_invariants());
        // `a/+` still stores a value, so its node stays but its `c` chain is gone.
        let a = trie.root.children.get("a").map(|n| n.plus.is_some());
        assert_eq!(a, Some(true));
        assert!(trie.root.children["a"].plus.as_ref().is_some_and(|n| n.children.is_empty()));
        assert_eq!(trie.remove("a/+"), Some(2));
        assert!(trie.check_invariants());
        assert!(trie.root.children["a"].plus.is_none());
        assert_eq!(trie.remove("a/b/+/d"), Some(3));
        assert!(trie.check_invariants());
        // Only the exact filter is left and the trie is back to a bare root.
        assert!(trie.root.is_empty());
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.remove("x"), Some(4));
        assert!(trie.is_empty());
        trie.get_or_insert_with("#", || 5);
        assert_eq!(trie.remove("#"), Some(5));
        assert!(trie.root.is_empty() && trie.check_invariants());
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        // Filters are client-chosen and may have ~32k levels within the
        // 65535-byte limit [MQTT-4.7.3-3]; nothing may recurse per level.
        const DEPTH: usize = 100_000;
        let plus_filter = vec!["+"; DEPTH].join("/");
        let mut hash_filter = vec!["a"; DEPTH].join("/");
        hash_filter.push_str("/#");
        let topic = vec!["a"; DEPTH].join("/");
        let mut trie = SubTrie::new();
        trie.get_or_insert_with(&plus_filter, || 1);
        trie.get_or_insert_with(&hash_filter, || 2);
        assert!(trie.check_invariants());
        let mut seen = 0;
        trie.for_each_match(&topic, |_, v| seen += v);
        assert_eq!(seen, 3);
        assert_eq!(trie.remove(&plus_filter), Some(1));
        assert!(trie.check_invariants());
        // `hash_filter` is dropped with the trie.
    }

    #[test]
    fn frame_stack_spills_in_lifo_order() {
        let node = Node::<()>::new();
        let mut stack = FrameStack::new();
        let n = INLINE_FRAMES * 2 + 3;
        let rests: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        for rest in &rests {
            stack.push(Frame { node: &node, rest: Some(rest) });
        }
        for rest in rests.iter().rev() {
            assert_eq!(stack.pop().and_then(|f| f.rest), Some(rest.as_str()));
        }
        assert!(stack.pop().is_none());
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("+")];
        (prop::collection::vec(level, 0..4), any::<bool>())
            .prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#");
                }
                levels.join("/")
            })
            // A filter is at least one character long [MQTT-4.7.3-1].
            .prop_filter("empty filter", |f| !f.is_empty())
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")];
        prop::collection::vec(level, 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("empty topic", |t| !t.is_empty())
    }

    proptest! {
        #[test]
        fn matches_agree_with_reference(
            filters in prop::collection::hash_set(filter_strategy(), 0..40),
            topics in prop::collection::vec(topic_strategy(), 1..20),
        ) {
            let mut trie = SubTrie::new();
            for filter in &filters {
                trie.get_or_insert_with(filter, || filter.clone());
            }
            prop_assert!(trie.check_invariants());
            prop_assert_eq!(trie.len(), filters.len());
            for topic in &topics {
                let mut got = BTreeSet::new();
                let mut calls = 0;
                trie.for_each_match(topic, |filter, value| {
                    assert_eq!(filter, value);
                    calls += 1;
                    got.insert(filter.to_owned());
                });
                let want: BTreeSet<String> = filters
                    .iter()
                    .filter(|f| topic_matches(f, topic))
                    .cloned()
                    .collect();
                prop_assert_eq!(calls, got.len(), "duplicate report for {:?}", topic);
                prop_assert_eq!(got, want, "topic {:?}", topic);
            }
        }

        #[test]
        fn insert_remove_agrees_with_hashmap(
            ops in prop::collection::vec((any::<bool>(), filter_strategy()), 0..120),
        ) {
            let mut trie = SubTrie::new();
            let mut oracle: StdHashMap<String, usize> = StdHashMap::new();
            for (i, (insert, filter)) in ops.iter().enumerate() {
                if *insert {
                    let got = *trie.get_or_insert_with(filter, || i);
                    let want = *oracle.entry(filter.clone()).or_insert(i);
                    prop_assert_eq!(got, want);
                } else {
                    prop_assert_eq!(trie.remove(filter), oracle.remove(filter));
                }
                prop_assert!(trie.check_invariants(), "after op {} on {:?}", i, filter);
                prop_assert_eq!(trie.len(), oracle.len());
            }
            let mut all: Vec<(String, usize)> =
                trie.iter().map(|(f, v)| (f.to_owned(), *v)).collect();
            all.sort_unstable();
            let mut want: Vec<(String, usize)> = oracle.into_iter().collect();
            want.sort_unstable();
            for (filter, value) in &want {
                prop_assert_eq!(trie.get(filter), Some(value));
            }
            prop_assert_eq!(all, want);
        }
    }
}
