//! ACL files, in Mosquitto's `acl_file` format, compiled into tries.
//!
//! # The file
//!
//! ```text
//! # Clients without a username: `topic` lines before the first `user` line.
//! topic read public/#
//!
//! user alice
//! topic readwrite sensors/#
//! topic deny sensors/secret
//!
//! user bob
//! topic read sensors/+/temp
//!
//! # Every client, wherever the line stands; %c is its client id, %u its username.
//! pattern readwrite devices/%c/#
//! pattern read users/%u/inbox
//! ```
//!
//! - `user <name>`: the `topic` lines that follow, up to the next `user` line, are
//!   that user's (the name is the rest of the line, blanks included).
//! - `topic [read|write|readwrite|deny] <filter>`: `readwrite` when the access is left
//!   out. Before the first `user` line, for clients without a username; after it, for
//!   that user. `%c` and `%u` mean nothing here.
//! - `pattern [read|write|readwrite|deny] <filter>`: for every client, after `%c` is
//!   replaced by its client id and `%u` by its username.
//! - `#` comments and blank lines are ignored. The filter is the rest of the line and
//!   must be a valid MQTT topic filter (wildcards allowed); anything else is an error
//!   that names the file and the line. As in Mosquitto, a `topic` line with a single
//!   word after the keyword reads it as the filter: `topic read` grants `read`.
//!
//! # What a client may do
//!
//! The rules that apply to a client are its section's `topic` rules (the anonymous
//! section without a username, its user's section with one, none when the file has no
//! section for its user) and every `pattern` rule. A topic may be published (`Write`)
//! or delivered (`Read`) when some applicable rule matching it grants that access and
//! no applicable rule matching it is `deny`. So **deny wins** over any grant, wherever
//! each stands, and anything not granted is denied. (Mosquitto lets a grant of the
//! user's section win over a deny of a pattern; here a deny is a deny.)
//!
//! Matching is MQTT's [MQTT-4.7]: `+` one level, `#` any number of levels including
//! none (`a/#` matches `a`). A topic starting with `$` (`$SYS/...`) is matched only by
//! rules whose written filter starts with `$`: a leading `+`, `#`, `%c` or `%u` never
//! reaches it [MQTT-4.7.2-1], so `topic read #` does not grant `$SYS`, and a client
//! named `$SYS` gains nothing from `pattern read %c/#`.
//!
//! **Substitution.** A client id or username that is empty or contains `+`, `#` or `/`
//! cannot stand for a level: a pattern using it does not apply to that client, neither
//! to grant nor to deny (as Mosquitto does). Without a username, patterns using `%u`
//! do not apply. A client named `+` therefore never turns `devices/%c/#` into
//! `devices/+/#`, and a client named `a/b` never reaches into `devices/a/b/...`.
//!
//! # SUBSCRIBE
//!
//! [`Acl::check_subscribe`] answers for a filter `F` (without its `$share/{group}/`
//! prefix), from the rules that apply to the client, one rule at a time:
//!
//! - **Granted** when one rule granting `read` matches every topic `F` matches and no
//!   `deny` rule matches any of them. No delivery on `F` needs checking.
//! - **Denied** when no topic `F` matches can be read: no `read` rule shares a topic
//!   with `F`, or for each one that does, one `deny` rule matches every topic the two
//!   share.
//! - **GrantedCheckEach** otherwise: some topics of `F` may be readable, some not (or
//!   only several rules together would tell); the broker checks `Read` on every
//!   message it delivers on `F`, as Mosquitto checks every delivery.
//!
//! With `topic read sensors/#` and `topic deny sensors/secret`:
//!
//! | filter           | answer           | because                                           |
//! |------------------|------------------|---------------------------------------------------|
//! | `sensors/+/temp` | Granted          | inside `sensors/#`; `sensors/secret` is shorter   |
//! | `sensors/#`      | GrantedCheckEach | covers `sensors/secret` and readable topics alike |
//! | `sensors/+`      | GrantedCheckEach | `sensors/secret` is one of its topics             |
//! | `sensors/secret` | Denied           | its one topic is denied                           |
//! | `#`              | GrantedCheckEach | `sensors/a` is readable, `other` is not           |
//! | `other/#`        | Denied           | no rule grants any of it                          |
//! | `$SYS/#`         | Denied           | no rule names `$SYS`                              |
//!
//! `#` is granted and checked rather than refused: a client subscribing to everything
//! expects what it may read, as it gets from Mosquitto, and checking each delivery
//! leaks nothing. Granted is only answered when no topic of the filter can be denied,
//! so skipping the checks never leaks a denied topic. Answers stay on the safe side
//! where only several rules together would decide: `a` and `a/+/#` together grant all
//! of `a/#`, but no one rule does, so `a/#` is GrantedCheckEach.
//!
//! # Layout
//!
//! Each section (the anonymous rules, each user's rules, the patterns) is a `Trie`
//! of filter levels in an arena (`Vec<Node>`, nodes named by index: cloning, dropping
//! and a deep filter need no recursion). A `Node` has a child per literal level, one
//! for `+`, one for each of `%c` and `%u` filling a whole level (compared with the
//! client's id or username as the walk passes, no string is built), and a short list
//! of levels that mix text with `%c`/`%u` (`dev-%c`), matched piece by piece. Each node
//! holds what the rules ending there grant or deny, and what those ending there with
//! `/#` do. [`Acl::check`] walks the topic's levels once per applicable section (the
//! user's trie is found with one hash lookup) with a stack that stays on the call stack
//! for realistic rules: no allocation. It stops early once the access is granted and
//! the sections left hold no `deny`.
//!
//! # Invariants
//!
//! 1. Every node but the root is the child of exactly one edge; child indexes are in
//!    the arena.
//! 2. A trie's `deny` is true exactly when a slot of one of its nodes holds `deny`.
//! 3. Only the pattern trie has `%c`, `%u` or mixed edges.
//! 4. `rules` is the number of `topic` and `pattern` lines, and at least the number of
//!    non-empty slots (rules with the same filter share one).

use std::borrow::Cow;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::path::Path;

use ahash::RandomState;
use hashbrown::HashMap;

use super::{read_file, syntax, SecurityError};
use crate::protocol::topic::validate_topic_filter;

/// What a client asks to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Receive it: a delivery, or a subscription's topics.
    Read,
    /// Publish to it.
    Write,
}

/// The client a check is for.
#[derive(Clone, Copy, Debug)]
pub struct Who<'a> {
    /// Its client id, `%c` in patterns.
    pub client_id: &'a str,
    /// Its username, `%u` in patterns; `None` selects the anonymous rules.
    pub username: Option<&'a str>,
}

/// The answer to a SUBSCRIBE filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeCheck {
    /// No topic of the filter may be read.
    Denied,
    /// Every topic of the filter may be read.
    Granted,
    /// Granted, but some topics it matches may be denied: the broker checks `Read` on
    /// every delivery.
    GrantedCheckEach,
}

/// An ACL file, compiled. See the module docs for what it grants.
#[derive(Clone)]
pub struct Acl {
    /// `topic` rules before the first `user` line: clients without a username.
    anonymous: Trie,
    /// `topic` rules after `user <name>`, by name.
    users: HashMap<Box<str>, Trie, RandomState>,
    /// `pattern` rules, for every client.
    patterns: Trie,
    /// Number of `topic` and `pattern` lines.
    rules: usize,
}

impl fmt::Debug for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acl")
            .field("rules", &self.rules)
            .field("users", &self.users.len())
            .field("patterns", &self.patterns.rules)
            .finish()
    }
}

impl Acl {
    /// Reads the ACL file at `path`; errors name the file and the line.
    pub fn load(path: &Path) -> Result<Acl, SecurityError> {
        Acl::parse(&read_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Reads an ACL file's text; errors name the line.
    pub fn parse(text: &str) -> Result<Acl, SecurityError> {
        let mut acl = Acl {
            anonymous: Trie::new(),
            users: HashMap::default(),
            patterns: Trie::new(),
            rules: 0,
        };
        let mut user: Option<&str> = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = first_word(line);
            match keyword {
                "user" if rest.is_empty() => return Err(syntax(index, "`user` needs a username")),
                "user" => user = Some(rest),
                "topic" | "pattern" => {
                    let (perms, filter) =
                        access_and_filter(keyword, rest).map_err(|reason| syntax(index, reason))?;
                    validate_topic_filter(filter).map_err(|violation| {
                        syntax(index, format!("invalid topic filter `{filter}`: {violation}"))
                    })?;
                    let pattern = keyword == "pattern";
                    let trie = match user {
                        _ if pattern => &mut acl.patterns,
                        None => &mut acl.anonymous,
                        Some(name) => acl.users.entry_ref(name).or_insert_with(Trie::new),
                    };
                    trie.insert(filter, pattern, perms);
                    acl.rules += 1;
                }
                other => {
                    return Err(syntax(
                        index,
                        format!(
                            "unknown keyword `{other}` (expected `user`, `topic` or `pattern`)"
                        ),
                    ))
                }
            }
        }
        debug_assert!(acl.check_invariants());
        Ok(acl)
    }

    /// Number of `topic` and `pattern` rules.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// PUBLISH (Write) by the client, or delivery (Read) of `topic` to it.
    ///
    /// `topic` is a valid topic name. Walks the topic once through the client's section
    /// and once through the patterns, without allocating.
    pub fn check(&self, who: Who<'_>, topic: &str, access: Access) -> bool {
        let want = Perms::from(access);
        let mut found = Perms::NONE;
        if let Some(section) = self.section(who) {
            found = section.lookup(topic, &Ident::NONE, want);
        }
        let settled = found.contains(Perms::DENY) || (found.contains(want) && !self.patterns.deny);
        if !settled && self.patterns.rules > 0 {
            found |= self.patterns.lookup(topic, &Ident::of(who), want);
        }
        found.contains(want) && !found.contains(Perms::DENY)
    }

    /// A SUBSCRIBE filter: granted when every topic it can match may be read
    /// (Granted), when some can (GrantedCheckEach: the broker then calls check(Read) per
    /// delivered message, as Mosquitto checks every delivery), Denied when none can.
    ///
    /// `filter` is a topic filter without its `$share/{group}/` prefix; an invalid one is
    /// Denied. The module docs define each answer. Allocates (the rules it compares are
    /// resolved for the client); a SUBSCRIBE is not on the data path.
    pub fn check_subscribe(&self, who: Who<'_>, filter: &str) -> SubscribeCheck {
        if validate_topic_filter(filter).is_err() {
            return SubscribeCheck::Denied;
        }
        let filter: Vec<Level<'_>> = filter.split('/').map(Level::of_filter).collect();
        let mut rules = Vec::new();
        if let Some(section) = self.section(who) {
            section.collect(&filter, &Ident::NONE, &mut rules);
        }
        self.patterns.collect(&filter, &Ident::of(who), &mut rules);
        let reaching = |perms| -> Vec<&Rule<'_>> {
            rules.iter().filter(|r| r.perms.contains(perms) && r.reaches(&filter)).collect()
        };
        let (grants, denies) = (reaching(Perms::READ), reaching(Perms::DENY));
        if grants.is_empty() {
            return SubscribeCheck::Denied;
        }
        if denies.is_empty() && grants.iter().any(|grant| grant.covers(&filter)) {
            return SubscribeCheck::Granted;
        }
        let all_denied = grants.iter().all(|grant| {
            let shared = intersection(&grant.levels, &filter);
            denies.iter().any(|deny| deny.covers(&shared))
        });
        if all_denied {
            SubscribeCheck::Denied
        } else {
            SubscribeCheck::GrantedCheckEach
        }
    }

    /// The `topic` rules that apply to `who`: the anonymous ones without a username,
    /// its user's with one (none when the file has no section for it).
    fn section(&self, who: Who<'_>) -> Option<&Trie> {
        match who.username {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name),
        }
    }

    /// Checks the invariants listed in the module docs, in O(nodes).
    fn check_invariants(&self) -> bool {
        let tries = || self.users.values().chain([&self.anonymous, &self.patterns]);
        let slots: usize = tries().map(Trie::slots).sum();
        let ok = tries().all(|trie| trie.check_invariants(std::ptr::eq(trie, &self.patterns)));
        ok && tries().map(|trie| trie.rules).sum::<usize>() == self.rules && slots <= self.rules
    }
}

/// Splits off the first word of `text` and trims what follows.
fn first_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// `[read|write|readwrite|deny] <filter>` after `topic` or `pattern`.
fn access_and_filter<'l>(keyword: &str, rest: &'l str) -> Result<(Perms, &'l str), String> {
    let (first, filter) = first_word(rest);
    if first.is_empty() {
        return Err(format!("`{keyword}` needs a topic filter"));
    }
    if filter.is_empty() {
        // Mosquitto's reading: one word is the filter, with read and write access.
        return Ok((Perms::READ | Perms::WRITE, first));
    }
    let perms = match first {
        "read" => Perms::READ,
        "write" => Perms::WRITE,
        "readwrite" => Perms::READ | Perms::WRITE,
        "deny" => Perms::DENY,
        other => {
            return Err(format!(
                "unknown access `{other}` (expected `read`, `write`, `readwrite` or `deny`)"
            ))
        }
    };
    Ok((perms, filter))
}

/// What the rules ending at one trie slot grant or deny, united.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Perms(u8);

impl Perms {
    const NONE: Perms = Perms(0);
    const READ: Perms = Perms(1);
    const WRITE: Perms = Perms(2);
    const DENY: Perms = Perms(4);

    /// Whether every bit of `other` is set.
    fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Perms {
    type Output = Perms;

    fn bitor(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }
}

impl BitOrAssign for Perms {
    fn bitor_assign(&mut self, other: Perms) {
        self.0 |= other.0;
    }
}

impl From<Access> for Perms {
    fn from(access: Access) -> Perms {
        match access {
            Access::Read => Perms::READ,
            Access::Write => Perms::WRITE,
        }
    }
}

/// The client's id and username as pattern levels: `None` where they cannot stand for
/// a level (empty, or holding `+`, `#` or `/`), so patterns using them do not apply.
#[derive(Clone, Copy)]
struct Ident<'a> {
    client: Option<&'a str>,
    user: Option<&'a str>,
}

impl<'a> Ident<'a> {
    /// For the sections' `topic` rules, which substitute nothing.
    const NONE: Ident<'static> = Ident { client: None, user: None };

    fn of(who: Who<'a>) -> Ident<'a> {
        // A byte scan: the three are ASCII, and no byte of a multi-byte UTF-8 sequence is.
        let level = |s: &'a str| {
            let bad = s.bytes().any(|b| matches!(b, b'+' | b'#' | b'/'));
            (!s.is_empty() && !bad).then_some(s)
        };
        Ident { client: level(who.client_id), user: who.username.and_then(level) }
    }
}

/// A pattern level that mixes text with `%c` or `%u`, such as `dev-%c`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Template(Box<[Piece]>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Client,
    User,
}

impl Template {
    fn parse(level: &str) -> Template {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = level;
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            let placeholder = match rest.as_bytes().get(at + 1) {
                Some(b'c') => Some(Piece::Client),
                Some(b'u') => Some(Piece::User),
                _ => None,
            };
            match placeholder {
                Some(piece) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text).into_boxed_str()));
                    }
                    pieces.push(piece);
                    rest = &rest[at + 2..];
                }
                None => {
                    text.push('%');
                    rest = &rest[at + 1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into_boxed_str()));
        }
        Template(pieces.into_boxed_slice())
    }

    /// The text a piece stands for, `None` when the identity cannot be substituted.
    fn piece<'p>(piece: &'p Piece, ident: &Ident<'p>) -> Option<&'p str> {
        match piece {
            Piece::Text(text) => Some(text),
            Piece::Client => ident.client,
            Piece::User => ident.user,
        }
    }

    /// Whether `level` is this template with the identity substituted; no allocation.
    fn matches(&self, level: &str, ident: &Ident<'_>) -> bool {
        let mut rest = level;
        for piece in &*self.0 {
            let Some(text) = Template::piece(piece, ident) else { return false };
            let Some(after) = rest.strip_prefix(text) else { return false };
            rest = after;
        }
        rest.is_empty()
    }

    /// The level with the identity substituted.
    fn render(&self, ident: &Ident<'_>) -> Option<String> {
        self.0.iter().map(|piece| Template::piece(piece, ident)).collect()
    }

    /// Whether the level as written starts with `$` (and may match `$` topics).
    fn starts_with_dollar(&self) -> bool {
        matches!(self.0.first(), Some(Piece::Text(text)) if text.starts_with('$'))
    }
}

/// Index of a node in its trie's arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeId(u32);

impl NodeId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

const ROOT: NodeId = NodeId(0);

/// One level of a trie. See the module docs.
#[derive(Clone, Debug, Default)]
struct Node {
    /// A child per literal level (the empty level included).
    children: HashMap<Box<str>, NodeId, RandomState>,
    /// The child for `+`.
    plus: Option<NodeId>,
    /// The child for a level that is exactly `%c` (pattern trie only).
    client: Option<NodeId>,
    /// The child for a level that is exactly `%u` (pattern trie only).
    user: Option<NodeId>,
    /// Children for levels mixing text with `%c`/`%u` (pattern trie only). Rare, so a
    /// list scanned in order.
    mixed: Vec<(Template, NodeId)>,
    /// The rules whose filter ends at this node.
    exact: Perms,
    /// The rules whose filter is this node's path followed by `/#` (`#` at the root).
    hash: Perms,
}

impl Node {
    /// Every edge out of this node.
    fn edges(&self) -> impl Iterator<Item = (Edge<'_>, NodeId)> {
        let children = self.children.iter().map(|(level, &id)| (Edge::Literal(level), id));
        let plus = self.plus.map(|id| (Edge::Plus, id));
        let client = self.client.map(|id| (Edge::Client, id));
        let user = self.user.map(|id| (Edge::User, id));
        let mixed = self.mixed.iter().map(|(template, id)| (Edge::Mixed(template), *id));
        children.chain(plus).chain(client).chain(user).chain(mixed)
    }
}

/// How one filter level leads to a child.
#[derive(Clone, Copy)]
enum Edge<'t> {
    Literal(&'t str),
    Plus,
    Client,
    User,
    Mixed(&'t Template),
}

impl<'t> Edge<'t> {
    /// The level this edge stands for with the identity substituted; `None` when the
    /// identity cannot be.
    fn resolve(self, ident: &Ident<'t>) -> Option<Level<'t>> {
        Some(match self {
            Edge::Literal(level) => Level::Lit(Cow::Borrowed(level)),
            Edge::Plus => Level::Plus,
            Edge::Client => Level::Lit(Cow::Borrowed(ident.client?)),
            Edge::User => Level::Lit(Cow::Borrowed(ident.user?)),
            Edge::Mixed(template) => Level::Lit(Cow::Owned(template.render(ident)?)),
        })
    }

    /// Whether the edge as written is a literal starting with `$`.
    fn written_dollar(self) -> bool {
        match self {
            Edge::Literal(level) => level.starts_with('$'),
            Edge::Mixed(template) => template.starts_with_dollar(),
            Edge::Plus | Edge::Client | Edge::User => false,
        }
    }

    /// Whether a topic level `level` can take this edge.
    fn takes(self, level: &str, ident: &Ident<'_>) -> bool {
        match self {
            Edge::Literal(literal) => literal == level,
            Edge::Plus => true,
            Edge::Client => ident.client == Some(level),
            Edge::User => ident.user == Some(level),
            Edge::Mixed(template) => template.matches(level, ident),
        }
    }
}

/// The rules of one section, by filter level.
#[derive(Clone, Debug)]
struct Trie {
    /// The arena; `nodes[0]` is the root.
    nodes: Vec<Node>,
    /// Whether any rule of the trie is `deny` (invariant 2): without one, a walk can
    /// stop at the first grant.
    deny: bool,
    /// Number of rules inserted.
    rules: usize,
}

/// Pending branches of a walk kept on the call stack before spilling to the heap: a
/// walk holds about one per rule wildcard it is inside of, so 16 is plenty for real
/// ACLs, at 384 bytes of stack.
const INLINE_FRAMES: usize = 16;

/// A pending branch of a walk: `node` is reached and `rest` are the topic levels left
/// (`None`: all consumed).
#[derive(Clone, Copy)]
struct Frame<'t> {
    node: NodeId,
    rest: Option<&'t str>,
}

/// LIFO of frames, on the call stack for the first [`INLINE_FRAMES`]. `spill` is only
/// pushed to while `inline` is full and popped before it, which keeps the order.
struct Stack<'t> {
    inline: [Frame<'t>; INLINE_FRAMES],
    len: usize,
    spill: Vec<Frame<'t>>,
}

impl<'t> Stack<'t> {
    fn new(first: Frame<'t>) -> Stack<'t> {
        Stack { inline: [first; INLINE_FRAMES], len: 1, spill: Vec::new() }
    }

    fn push(&mut self, frame: Frame<'t>) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = frame;
                self.len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    fn pop(&mut self) -> Option<Frame<'t>> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.len = self.len.checked_sub(1)?;
        Some(self.inline[self.len])
    }
}

/// Splits off the first level: `("a", Some("b/c"))` for `"a/b/c"`, `("c", None)` for
/// `"c"`; `Some("")` is a trailing empty level, as in `"a/"`.
fn split_level(topic: &str) -> (&str, Option<&str>) {
    // A plain byte loop: levels are short, where `split_once`'s searcher costs more.
    match topic.bytes().position(|b| b == b'/') {
        Some(at) => (&topic[..at], Some(&topic[at + 1..])),
        None => (topic, None),
    }
}

impl Trie {
    fn new() -> Trie {
        Trie { nodes: vec![Node::default()], deny: false, rules: 0 }
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Adds a rule with a valid filter; `%c` and `%u` are placeholders when `pattern`.
    fn insert(&mut self, filter: &str, pattern: bool, perms: Perms) {
        let mut node = ROOT;
        let mut ends_with_hash = false;
        for level in filter.split('/') {
            let template;
            let edge = match level {
                // `#` is the last level of a valid filter [MQTT-4.7.1-2].
                "#" => {
                    ends_with_hash = true;
                    break;
                }
                "+" => Edge::Plus,
                "%c" if pattern => Edge::Client,
                "%u" if pattern => Edge::User,
                _ if pattern && (level.contains("%c") || level.contains("%u")) => {
                    template = Template::parse(level);
                    Edge::Mixed(&template)
                }
                _ => Edge::Literal(level),
            };
            node = self.child(node, edge);
        }
        let slot = &mut self.nodes[node.index()];
        if ends_with_hash {
            slot.hash |= perms;
        } else {
            slot.exact |= perms;
        }
        self.deny |= perms.contains(Perms::DENY);
        self.rules += 1;
    }

    /// The child of `node` along `edge`, created if missing.
    fn child(&mut self, node: NodeId, edge: Edge<'_>) -> NodeId {
        let next = self.next_id();
        let parent = &mut self.nodes[node.index()];
        let child = match edge {
            Edge::Literal(level) => *parent.children.entry_ref(level).or_insert(next),
            Edge::Plus => *parent.plus.get_or_insert(next),
            Edge::Client => *parent.client.get_or_insert(next),
            Edge::User => *parent.user.get_or_insert(next),
            Edge::Mixed(template) => match parent.mixed.iter().find(|(t, _)| t == template) {
                Some(&(_, id)) => id,
                None => {
                    parent.mixed.push((template.clone(), next));
                    next
                }
            },
        };
        if child == next {
            self.nodes.push(Node::default());
        }
        child
    }

    fn next_id(&self) -> NodeId {
        NodeId(u32::try_from(self.nodes.len()).expect("an ACL file has fewer than 2^32 levels"))
    }

    /// What the rules matching `topic` grant, united; stops as soon as one denies, or
    /// once `want` is granted when no rule of the trie denies (the answer is then
    /// settled). No allocation unless more than [`INLINE_FRAMES`] branches are pending.
    fn lookup(&self, topic: &str, ident: &Ident<'_>, want: Perms) -> Perms {
        let dollar = topic.starts_with('$');
        let mut found = Perms::NONE;
        let mut stack = Stack::new(Frame { node: ROOT, rest: Some(topic) });
        while let Some(Frame { node: id, rest }) = stack.pop() {
            let node = self.node(id);
            // [MQTT-4.7.2-1]: no leading wildcard or placeholder reaches a `$` topic.
            let dollar_root = dollar && id == ROOT;
            if !dollar_root {
                found |= node.hash;
            }
            match rest {
                None => found |= node.exact,
                Some(rest) => {
                    let (level, next) = split_level(rest);
                    if let Some(&child) = node.children.get(level) {
                        stack.push(Frame { node: child, rest: next });
                    }
                    if !dollar_root {
                        if let Some(child) = node.plus {
                            stack.push(Frame { node: child, rest: next });
                        }
                        if let (Some(child), Some(client)) = (node.client, ident.client) {
                            if client == level {
                                stack.push(Frame { node: child, rest: next });
                            }
                        }
                        if let (Some(child), Some(user)) = (node.user, ident.user) {
                            if user == level {
                                stack.push(Frame { node: child, rest: next });
                            }
                        }
                    }
                    for (template, child) in &node.mixed {
                        let written_ok = !dollar_root || template.starts_with_dollar();
                        if written_ok && template.matches(level, ident) {
                            stack.push(Frame { node: *child, rest: next });
                        }
                    }
                }
            }
            if found.contains(Perms::DENY) || (!self.deny && found.contains(want)) {
                break;
            }
        }
        found
    }

    /// Appends the rules that may share a topic with `filter`, resolved for `ident`
    /// (rules whose placeholders cannot be substituted are left out). The walk only
    /// follows edges a topic of the filter can take; [`Rule::reaches`] is the exact test.
    fn collect<'a>(&'a self, filter: &[Level<'_>], ident: &Ident<'a>, out: &mut Vec<Rule<'a>>) {
        if self.rules == 0 {
            return;
        }
        // Depth-first, one path buffer: a frame carries its depth and the level of the
        // edge into it, and the path is cut back to the frame's parent when it is popped.
        struct Visit<'a> {
            node: NodeId,
            depth: usize,
            level: Option<Level<'a>>,
            dollar: bool,
        }
        let hash_at = filter.iter().position(|level| *level == Level::Hash);
        let mut path: Vec<Level<'a>> = Vec::new();
        let mut stack = vec![Visit { node: ROOT, depth: 0, level: None, dollar: false }];
        while let Some(Visit { node: id, depth, level, dollar }) = stack.pop() {
            path.truncate(depth.saturating_sub(1));
            path.extend(level);
            let node = self.node(id);
            if !node.exact.is_empty() {
                out.push(Rule { levels: path.clone(), dollar, perms: node.exact });
            }
            if !node.hash.is_empty() {
                let mut levels = path.clone();
                levels.push(Level::Hash);
                out.push(Rule { levels, dollar, perms: node.hash });
            }
            // From the filter's `#` on, and at a `+`, every edge may share a topic with
            // the filter; at a literal level, the edges that level takes; past the
            // filter's end, none.
            let taken = match filter.get(depth) {
                _ if hash_at.is_some_and(|at| depth >= at) => None,
                Some(Level::Hash | Level::Plus) => None,
                Some(Level::Lit(level)) => Some(Some(&**level)),
                None => Some(None),
            };
            for (edge, child) in node.edges() {
                let follow = match taken {
                    None => true,
                    Some(None) => false,
                    Some(Some(level)) => edge.takes(level, ident),
                };
                if let (true, Some(level)) = (follow, edge.resolve(ident)) {
                    let dollar = if depth == 0 { edge.written_dollar() } else { dollar };
                    stack.push(Visit { node: child, depth: depth + 1, level: Some(level), dollar });
                }
            }
        }
    }

    /// Number of occupied slots (rules with the same filter share one).
    fn slots(&self) -> usize {
        let occupied = |p: Perms| usize::from(!p.is_empty());
        self.nodes.iter().map(|node| occupied(node.exact) + occupied(node.hash)).sum()
    }

    /// Invariants 1 to 3 of the module docs.
    fn check_invariants(&self, pattern: bool) -> bool {
        let mut parents = vec![0usize; self.nodes.len()];
        let mut deny = false;
        for node in &self.nodes {
            for (edge, child) in node.edges() {
                if child.index() >= self.nodes.len() || child == ROOT {
                    return false;
                }
                parents[child.index()] += 1;
                if !pattern && matches!(edge, Edge::Client | Edge::User | Edge::Mixed(_)) {
                    return false;
                }
            }
            deny |= node.exact.contains(Perms::DENY) || node.hash.contains(Perms::DENY);
        }
        parents.iter().skip(1).all(|&n| n == 1) && deny == self.deny
    }
}

/// One level of a filter, or of a rule resolved for a client.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level<'a> {
    Lit(Cow<'a, str>),
    Plus,
    /// Only ever last.
    Hash,
}

impl<'a> Level<'a> {
    fn of_filter(level: &'a str) -> Level<'a> {
        match level {
            "+" => Level::Plus,
            "#" => Level::Hash,
            _ => Level::Lit(Cow::Borrowed(level)),
        }
    }

    fn is_dollar(&self) -> bool {
        matches!(self, Level::Lit(level) if level.starts_with('$'))
    }
}

/// A rule that applies to the client, its placeholders substituted.
#[derive(Debug)]
struct Rule<'a> {
    levels: Vec<Level<'a>>,
    /// Whether the rule as written starts with a literal `$`: only such rules match `$`
    /// topics [MQTT-4.7.2-1].
    dollar: bool,
    perms: Perms,
}

impl Rule<'_> {
    /// Whether the `$` rule lets this rule and `filter` (whose topics start with `$`
    /// exactly when its first level does) share a topic at all.
    fn dollar_compatible(&self, filter: &[Level<'_>]) -> bool {
        if filter.first().is_some_and(Level::is_dollar) {
            self.dollar
        } else {
            // Non-`$` topics only: a rule naming a `$` level first matches none of them.
            !self.levels.first().is_some_and(Level::is_dollar)
        }
    }

    /// Whether some topic matches both this rule and `filter`.
    fn reaches(&self, filter: &[Level<'_>]) -> bool {
        self.dollar_compatible(filter) && overlaps(&self.levels, filter)
    }

    /// Whether this rule matches every topic `filter` matches.
    fn covers(&self, filter: &[Level<'_>]) -> bool {
        self.dollar_compatible(filter) && contains(&self.levels, filter)
    }
}

/// Whether some topic matches both filters (level by level; `$` aside).
fn overlaps(a: &[Level<'_>], b: &[Level<'_>]) -> bool {
    let (mut a, mut b) = (a.iter(), b.iter());
    loop {
        match (a.next(), b.next()) {
            // `#` matches what is left, the parent level included [MQTT-4.7.1-2].
            (Some(Level::Hash), _) | (_, Some(Level::Hash)) | (None, None) => return true,
            (None, _) | (_, None) => return false,
            (Some(Level::Lit(x)), Some(Level::Lit(y))) if x != y => return false,
            _ => {}
        }
    }
}

/// Whether filter `outer` matches every topic filter `inner` matches (`$` aside).
fn contains(outer: &[Level<'_>], inner: &[Level<'_>]) -> bool {
    let (mut outer, mut inner) = (outer.iter(), inner.iter());
    loop {
        match (outer.next(), inner.next()) {
            (Some(Level::Hash), _) | (None, None) => return true,
            // `inner` goes deeper (or, with `#`, anywhere below) where `outer` does not.
            (_, Some(Level::Hash)) | (None, _) | (_, None) => return false,
            (Some(Level::Plus), _) => {}
            (Some(Level::Lit(x)), Some(Level::Lit(y))) if x == y => {}
            _ => return false,
        }
    }
}

/// The filter matching exactly the topics both filters match, for two filters that
/// share some ([`overlaps`]).
fn intersection<'a>(a: &[Level<'a>], b: &[Level<'a>]) -> Vec<Level<'a>> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.iter(), b.iter());
    loop {
        // The rest of the other filter, before this level is taken from it.
        let (a_rest, b_rest) = (a.as_slice(), b.as_slice());
        match (a.next(), b.next()) {
            (Some(Level::Hash), _) => out.extend_from_slice(b_rest),
            (_, Some(Level::Hash)) => out.extend_from_slice(a_rest),
            (Some(Level::Plus), Some(level)) | (Some(level), Some(_)) => {
                out.push(level.clone());
                continue;
            }
            (None, _) | (_, None) => {}
        }
        return out;
    }
}

#[cfg(test)]
mod tests;
