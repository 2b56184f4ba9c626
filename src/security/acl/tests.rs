//! Named cases for every rule kind, then proptests against a naive reference: the
//! rules substituted as text and matched one by one with the specification's matcher.

use proptest::prelude::*;

use super::*;
use crate::router::topic_matches;
use Access::{Read, Write};
use SubscribeCheck::{Denied, Granted, GrantedCheckEach};

fn acl(text: &str) -> Acl {
    let acl = Acl::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(acl.check_invariants());
    acl
}

fn anon(client_id: &str) -> Who<'_> {
    Who { client_id, username: None }
}

fn user<'a>(client_id: &'a str, username: &'a str) -> Who<'a> {
    Who { client_id, username: Some(username) }
}

/// Checks every `(who, topic, access, allowed)` case against `text`.
fn check_all(text: &str, cases: &[(Who<'_>, &str, Access, bool)]) {
    let acl = acl(text);
    for &(who, topic, access, allowed) in cases {
        assert_eq!(acl.check(who, topic, access), allowed, "{who:?} {access:?} {topic}\n{text}");
    }
}

#[test]
fn topic_rules_grant_the_access_they_name() {
    let text = "topic read r/#\ntopic write w/#\ntopic readwrite rw/#\ntopic both/#\n";
    let a = anon("c");
    check_all(
        text,
        &[
            (a, "r/x", Read, true),
            (a, "r/x", Write, false),
            (a, "w/x", Read, false),
            (a, "w/x", Write, true),
            (a, "rw/x", Read, true),
            (a, "rw/x", Write, true),
            (a, "both/x", Read, true),
            (a, "both/x", Write, true),
            (a, "other", Read, false),
            (a, "other", Write, false),
        ],
    );
}

#[test]
fn wildcards_match_as_subscriptions_do() {
    let text = "topic a/+\ntopic b/#\ntopic +/c/+\ntopic #/never\ntopic d//e\n";
    let a = anon("c");
    for (topic, allowed) in [
        ("a/x", true),
        ("a/", true), // `+` matches the empty level
        ("a", false),
        ("a/x/y", false),
        ("b", true), // `b/#` matches its parent [MQTT-4.7.1-2]
        ("b/x/y/z", true),
        ("bb", false),
        ("x/c/y", true),
        ("x/c", false),
        ("d//e", true),
        ("d/e", false),
    ] {
        let acl = Acl::parse(&text.replace("topic #/never\n", "")).expect("valid");
        assert_eq!(acl.check(a, topic, Read), allowed, "{topic}");
    }
    let error = Acl::parse(text).expect_err("`#/never` is not a filter").to_string();
    assert!(error.starts_with("line 4: invalid topic filter `#/never`: [MQTT-4.7.1-2]"), "{error}");
}

#[test]
fn anonymous_rules_come_before_the_first_user_line() {
    let text = "\
topic read public/#
user alice
topic readwrite alice/#
user bob smith
topic read bob/#
user alice
topic read more/#
";
    check_all(
        text,
        &[
            (anon("c"), "public/x", Read, true),
            (anon("c"), "alice/x", Read, false),
            (user("c", "alice"), "alice/x", Write, true),
            (user("c", "alice"), "more/x", Read, true),
            (user("c", "alice"), "public/x", Read, false),
            (user("c", "alice"), "bob/x", Read, false),
            (user("c", "bob smith"), "bob/x", Read, true),
            (user("c", "bob"), "bob/x", Read, false),
            // A username the file has no section for gets the patterns only.
            (user("c", "carol"), "public/x", Read, false),
            (user("c", ""), "public/x", Read, false),
        ],
    );
    assert_eq!(acl(text).rules(), 4);
}

#[test]
fn deny_wins_over_any_grant_wherever_it_stands() {
    let text = "\
topic readwrite a/#
topic deny a/secret
user alice
topic deny shared/private
topic readwrite shared/#
topic readwrite devices/#
pattern deny devices/%c/config
pattern readwrite shared/private
pattern deny $SYS/#
topic read $SYS/#
";
    check_all(
        text,
        &[
            (anon("c"), "a/x", Write, true),
            (anon("c"), "a/secret", Read, false),
            (anon("c"), "a/secret", Write, false),
            (anon("c"), "a/secret/below", Read, true),
            // A user's deny beats a pattern's grant, before or after it.
            (user("c", "alice"), "shared/x", Read, true),
            (user("c", "alice"), "shared/private", Read, false),
            // A pattern's deny beats the user's grant (Mosquitto would grant here).
            (user("d1", "alice"), "devices/d1/config", Write, false),
            (user("d1", "alice"), "devices/d2/config", Write, true),
            (user("d1", "alice"), "$SYS/broker/load", Read, false),
            // Patterns apply to anonymous clients as well.
            (anon("d1"), "devices/d1/config", Read, false),
            (anon("c"), "shared/private", Read, true),
        ],
    );
}

#[test]
fn patterns_substitute_the_client_id_and_username() {
    let text = "\
pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern write dev-%c/up
pattern read %u-%c/+
pattern read literal/%x/%/c
";
    let (alice, anonymous) = (user("d1", "alice"), anon("d1"));
    check_all(
        text,
        &[
            (alice, "devices/d1/temp", Write, true),
            (alice, "devices/d1", Read, true),
            (alice, "devices/d2/temp", Write, false),
            (alice, "devices/d1x/temp", Write, false),
            (alice, "users/alice/inbox", Read, true),
            (alice, "users/alice/inbox", Write, false),
            (alice, "users/bob/inbox", Read, false),
            (anonymous, "users//inbox", Read, false),
            (anonymous, "devices/d1/temp", Read, true),
            (alice, "dev-d1/up", Write, true),
            (alice, "dev-d2/up", Write, false),
            (alice, "dev-/up", Write, false),
            (alice, "alice-d1/x", Read, true),
            (alice, "alice-d1", Read, false),
            (alice, "d1-alice/x", Read, false),
            (anonymous, "-d1/x", Read, false),
            // `%` not followed by `c` or `u` is text.
            (alice, "literal/%x/%/c", Read, true),
        ],
    );
}

#[test]
fn topic_lines_do_not_substitute() {
    check_all(
        "topic read devices/%c/#\n",
        &[(anon("d1"), "devices/d1/x", Read, false), (anon("d1"), "devices/%c/x", Read, true)],
    );
}

#[test]
fn identities_that_cannot_be_a_level_get_nothing_from_patterns_using_them() {
    let text = "\
pattern read devices/%c/#
pattern read users/%u/#
pattern read pre-%c/x
pattern deny users/%u/private
topic read users/#
";
    let cases: &[(Who<'_>, &str, bool)] = &[
        // `devices/%c/#` does not become `devices/+/#` or `devices/#`.
        (anon("+"), "devices/other/x", false),
        (anon("#"), "devices/x", false),
        (anon("a/b"), "devices/a/b/x", false),
        (anon("a+b"), "pre-ab/x", false),
        (anon(""), "devices//x", false),
        (anon("a/b"), "pre-a/b/x", false),
        // A client id that cannot be a level does not spoil patterns using `%u` only.
        (user("a+b", "alice"), "users/alice/x", true),
        (user("ok", "a#"), "users/a/x", false),
        (user("ok", "a/b"), "users/a/b/x", false),
        (user("ok", "a/b"), "devices/ok/x", true),
    ];
    let acl = acl(text);
    for &(who, topic, allowed) in cases {
        assert_eq!(acl.check(who, topic, Read), allowed, "{who:?} {topic}");
    }
    // Nor does a deny pattern using `%u` apply without a username: the anonymous
    // grant stands.
    assert!(acl.check(anon("c"), "users/alice/private", Read));
    assert!(!acl.check(user("c", "alice"), "users/alice/private", Read));
}

#[test]
fn dollar_topics_need_rules_that_name_them() {
    let text = "\
topic readwrite #
topic read +/broker/#
topic read $SYS/broker/#
pattern read %c/#
pattern read %c-in/#
pattern read $share/%c/#
";
    check_all(
        text,
        &[
            (anon("c"), "anything/at/all", Write, true),
            (anon("c"), "$SYS/broker/load", Read, true),
            (anon("c"), "$SYS/broker/load", Write, false),
            (anon("c"), "$SYS/other", Read, false),
            (anon("c"), "$other/broker/x", Read, false),
            // `%c` at the first level does not reach `$` topics, whatever the id.
            (anon("$SYS"), "$SYS/other", Read, false),
            (anon("$SYS"), "$SYS-in/x", Read, false),
            (anon("SYS"), "SYS-in/x", Read, true),
            (anon("x"), "$share/x/y", Read, true),
            (anon("x"), "$share/y/y", Read, false),
        ],
    );
    // `deny #` denies no `$` topic; no grant reached it anyway.
    let acl = acl("topic read $SYS/#\ntopic deny #\n");
    assert!(acl.check(anon("c"), "$SYS/x", Read));
    assert!(!acl.check(anon("c"), "x", Read));
}

#[test]
fn an_acl_without_rules_denies_everything() {
    let acl = acl("# nothing yet\n\nuser alice\n");
    assert_eq!(acl.rules(), 0);
    for who in [anon("c"), user("c", "alice")] {
        assert!(!acl.check(who, "a", Read) && !acl.check(who, "a", Write));
        assert_eq!(acl.check_subscribe(who, "#"), Denied);
    }
}

#[test]
fn lines_are_read_as_mosquitto_reads_them() {
    let text = "\
  # indented comment
topic\tread   spaced topic/+  \r
topic read
topic deny
user   alice smith  \r
pattern\twrite\tx/%u
";
    let acl = acl(text);
    assert_eq!(acl.rules(), 4);
    assert!(acl.check(anon("c"), "spaced topic/x", Read));
    assert!(!acl.check(anon("c"), "spaced topic/x", Write));
    // One word after `topic` is the filter, granted read and write.
    assert!(acl.check(anon("c"), "read", Write));
    assert!(acl.check(anon("c"), "deny", Read));
    assert!(acl.check(user("c", "alice smith"), "x/alice smith", Write));
}

#[test]
fn invalid_lines_name_the_line() {
    let cases = [
        ("topic read a\nfoo bar\n", "line 2: unknown keyword `foo`"),
        ("topic\n", "line 1: `topic` needs a topic filter"),
        ("pattern   \n", "line 1: `pattern` needs a topic filter"),
        ("user\n", "line 1: `user` needs a username"),
        ("user   \t\n", "line 1: `user` needs a username"),
        ("\n\ntopic writeonly a/b\n", "line 3: unknown access `writeonly`"),
        ("topic read a/#/b\n", "line 1: invalid topic filter `a/#/b`: [MQTT-4.7.1-2]"),
        ("pattern read a+/%c\n", "line 1: invalid topic filter `a+/%c`: [MQTT-4.7.1-3]"),
        ("topic read a\0b\n", "line 1: invalid topic filter `a\0b`: [MQTT-4.7.3-2]"),
        ("TOPIC read a\n", "line 1: unknown keyword `TOPIC`"),
    ];
    for (text, expected) in cases {
        let error = Acl::parse(text).expect_err(text).to_string();
        assert!(error.starts_with(expected), "{text:?}: {error}");
    }
}

#[test]
fn load_names_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("shardmq-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join("acl");
    std::fs::write(&path, "topic read a\n\ntopic read #/a\n").expect("writable");
    let error = Acl::load(&path).expect_err("invalid").to_string();
    std::fs::write(&path, "topic read a\n").expect("writable");
    let loaded = Acl::load(&path).expect("valid");
    let missing = Acl::load(&dir.join("missing")).expect_err("missing").to_string();
    std::fs::remove_dir_all(&dir).expect("removable");
    assert!(error.starts_with(&format!("{}:3: invalid topic filter", path.display())), "{error}");
    assert_eq!(loaded.rules(), 1);
    assert!(missing.starts_with("cannot read "), "{missing}");
}

#[test]
fn subscribe_answers_from_the_module_docs() {
    let acl = acl("topic read sensors/#\ntopic deny sensors/secret\n");
    let a = anon("c");
    for (filter, answer) in [
        ("sensors/+/temp", Granted),
        ("sensors/a", Granted),
        ("sensors/#", GrantedCheckEach),
        ("sensors/+", GrantedCheckEach),
        ("sensors/secret", Denied),
        ("sensors/secret/x", Granted),
        ("#", GrantedCheckEach),
        ("+", GrantedCheckEach),
        ("+/+/temp", GrantedCheckEach),
        ("other/#", Denied),
        ("$SYS/#", Denied),
        ("a/#/b", Denied),
    ] {
        assert_eq!(acl.check_subscribe(a, filter), answer, "{filter}");
    }
}

#[test]
fn subscribe_answers_with_patterns_and_dollar_rules() {
    let acl = acl("\
topic read $SYS/broker/#
topic read a
topic read a/+/#
pattern read devices/%c/#
pattern deny devices/%c/secret/#
topic deny #
user alice
topic read #
");
    let (a, alice) = (anon("d1"), user("d1", "alice"));
    for (who, filter, answer) in [
        (a, "$SYS/broker/load", Granted),
        (a, "$SYS/#", GrantedCheckEach),
        (a, "$SYS/other/#", Denied),
        // `deny #` covers every non-`$` topic of the anonymous section.
        (a, "a", Denied),
        (a, "devices/d1/x", Denied),
        (a, "#", Denied),
        (alice, "devices/d1/x", Granted),
        (alice, "devices/d1/secret", Denied),
        (alice, "devices/d1/secret/x/#", Denied),
        (alice, "devices/d1/+", GrantedCheckEach),
        (alice, "devices/d2/secret", Granted),
        (alice, "#", GrantedCheckEach),
        (alice, "+/+/+", GrantedCheckEach),
        (alice, "$SYS/broker", Denied),
    ] {
        assert_eq!(acl.check_subscribe(who, filter), answer, "{who:?} {filter}");
    }
    // Only two rules together grant `b/#`: answered on the safe side.
    let acl = self::acl("topic read b\ntopic read b/+/#\n");
    assert_eq!(acl.check_subscribe(a, "b/#"), GrantedCheckEach);
    assert_eq!(acl.check_subscribe(a, "b/+"), Granted);
}

#[test]
fn frames_spill_to_the_heap_in_lifo_order() {
    let n = INLINE_FRAMES * 2 + 3;
    let rests: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let mut stack = Stack::new(Frame { node: ROOT, rest: None });
    for rest in &rests {
        stack.push(Frame { node: ROOT, rest: Some(rest) });
    }
    for rest in rests.iter().rev() {
        assert_eq!(stack.pop().and_then(|f| f.rest), Some(rest.as_str()));
    }
    assert!(stack.pop().is_some_and(|f| f.rest.is_none()));
    assert!(stack.pop().is_none());
}

#[test]
fn a_deep_rule_needs_no_recursion() {
    let deep = vec!["+"; 20_000].join("/");
    let topic = vec!["a"; 20_000].join("/");
    let acl = acl(&format!("topic read {deep}\ntopic read {deep}/#\npattern read {deep}\n"));
    assert!(acl.check(anon("c"), &topic, Read));
    assert_eq!(acl.check_subscribe(anon("c"), &topic), Granted);
}

#[test]
fn many_pending_branches_spill_and_still_match() {
    // `+/+/a/a/...`: each `+` level leaves its literal sibling pending, so a topic of
    // 24 `a` levels holds more pending branches than fit inline.
    const LEVELS: usize = INLINE_FRAMES + 8;
    let rules: String = (0..=LEVELS)
        .map(|k| {
            let levels: Vec<&str> =
                ["+"].repeat(k).into_iter().chain(["a"].repeat(LEVELS - k)).collect();
            format!("topic read {}\n", levels.join("/"))
        })
        .collect();
    let acl = acl(&rules);
    let topic = vec!["a"; LEVELS].join("/");
    assert!(acl.check(anon("c"), &topic, Read));
    // No rule grants Write, so the walk visits every branch.
    assert!(!acl.check(anon("c"), &topic, Write));
}

#[test]
fn debug_is_a_summary() {
    let acl = acl("topic read a\nuser alice\ntopic b\npattern read %c\n");
    assert_eq!(format!("{acl:?}"), "Acl { rules: 3, users: 1, patterns: 1 }");
}

// ---- The reference: every rule substituted as text, matched one by one. ----

/// One rule line of a generated file.
#[derive(Clone, Debug)]
struct RuleLine {
    pattern: bool,
    /// `read`, `write`, `readwrite`, `deny`, or empty for the default.
    access: &'static str,
    filter: String,
}

/// A generated file: the anonymous section, then sections per `user` line (names may
/// repeat).
#[derive(Clone, Debug)]
struct File {
    sections: Vec<(Option<&'static str>, Vec<RuleLine>)>,
}

impl File {
    fn text(&self) -> String {
        let mut text = String::new();
        for (user, rules) in &self.sections {
            if let Some(user) = user {
                text.push_str(&format!("user {user}\n"));
            }
            for rule in rules {
                let keyword = if rule.pattern { "pattern" } else { "topic" };
                text.push_str(&format!("{keyword} {} {}\n", rule.access, rule.filter));
            }
        }
        text
    }

    /// `check`, the straightforward way.
    fn check(&self, who: Who<'_>, topic: &str, access: Access) -> bool {
        let (mut granted, mut denied) = (false, false);
        for (user, rules) in &self.sections {
            for rule in rules {
                if !rule.pattern && *user != who.username {
                    continue;
                }
                let filter = if rule.pattern {
                    let Some(filter) = substitute(&rule.filter, who) else { continue };
                    filter
                } else {
                    rule.filter.clone()
                };
                if topic.starts_with('$') && !rule.filter.starts_with('$') {
                    continue;
                }
                if !topic_matches(&filter, topic) {
                    continue;
                }
                match (rule.access, access) {
                    ("deny", _) => denied = true,
                    ("read", Read) | ("write", Write) | ("readwrite" | "", _) => granted = true,
                    _ => {}
                }
            }
        }
        granted && !denied
    }
}

/// The filter with `%c` and `%u` replaced; `None` when an identity it uses cannot be a
/// level.
fn substitute(filter: &str, who: Who<'_>) -> Option<String> {
    let usable = |s: &&str| !s.is_empty() && !s.contains(['+', '#', '/']);
    let mut filter = filter.to_owned();
    if filter.contains("%c") {
        filter = filter.replace("%c", Some(who.client_id).filter(usable)?);
    }
    if filter.contains("%u") {
        filter = filter.replace("%u", who.username.filter(usable)?);
    }
    Some(filter)
}

/// Levels rules and filters are made of: literals that identities below substitute
/// to, `$` levels, placeholders whole and mixed, and wildcards.
const RULE_LEVELS: &[&str] = &["a", "b", "", "$SYS", "+", "%c", "%u", "x%c", "%cx", "%u%c"];
/// Levels topics are made of, covering what the rule levels substitute to.
const TOPIC_LEVELS: &[&str] =
    &["a", "b", "", "$SYS", "$SYSx", "c1", "u1", "xc1", "xa", "c1x", "u1c1", "%c"];
const CLIENT_IDS: &[&str] = &["c1", "a", "$SYS", "c+", "a/b", ""];
const USERNAMES: &[Option<&str>] = &[None, Some("u1"), Some("a"), Some("x#"), Some("")];
const SECTION_USERS: &[&str] = &["u1", "a", "x#"];
const ACCESSES: &[&str] = &["read", "write", "readwrite", "deny", ""];

fn filter_strategy(levels: &'static [&'static str]) -> impl Strategy<Value = String> {
    (prop::collection::vec(prop::sample::select(levels), 1..4), any::<bool>()).prop_map(
        |(mut levels, hash)| {
            if hash {
                levels.push("#");
            }
            let filter = levels.join("/");
            // A filter is at least one character long [MQTT-4.7.3-1].
            if filter.is_empty() {
                "a".to_owned()
            } else {
                filter
            }
        },
    )
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOPIC_LEVELS), 1..5).prop_map(|levels| {
        let topic = levels.join("/");
        if topic.is_empty() {
            "a".to_owned()
        } else {
            topic
        }
    })
}

fn rule_strategy() -> impl Strategy<Value = RuleLine> {
    (any::<bool>(), prop::sample::select(ACCESSES), filter_strategy(RULE_LEVELS))
        .prop_map(|(pattern, access, filter)| RuleLine { pattern, access, filter })
}

fn file_strategy() -> impl Strategy<Value = File> {
    let section = || prop::collection::vec(rule_strategy(), 0..5);
    let user_section = (prop::sample::select(SECTION_USERS), section());
    (section(), prop::collection::vec(user_section, 0..3)).prop_map(|(anonymous, users)| File {
        sections: std::iter::once((None, anonymous))
            .chain(users.into_iter().map(|(user, rules)| (Some(user), rules)))
            .collect(),
    })
}

fn whos() -> impl Iterator<Item = Who<'static>> {
    CLIENT_IDS
        .iter()
        .flat_map(|&client_id| USERNAMES.iter().map(move |&username| Who { client_id, username }))
}

/// Topics `filter` matches: each `+` and `#` filled from `fill` (a `#` with up to two
/// levels, or none).
fn instances(filter: &str, fill: &[usize]) -> Vec<String> {
    (0..4)
        .map(|round| {
            let mut picks = fill.iter().cycle().skip(round * 3);
            let mut pick = || TOPIC_LEVELS[*picks.next().unwrap_or(&0) % TOPIC_LEVELS.len()];
            let mut levels = Vec::new();
            for level in filter.split('/') {
                match level {
                    "+" => levels.push(pick()),
                    "#" => {
                        let n = round % 3;
                        levels.extend((0..n).map(|_| pick()));
                    }
                    _ => levels.push(level),
                }
            }
            let topic = levels.join("/");
            if topic.is_empty() {
                "a".to_owned()
            } else {
                topic
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn check_agrees_with_the_reference(
        file in file_strategy(),
        topics in prop::collection::vec(topic_strategy(), 1..12),
    ) {
        let acl = Acl::parse(&file.text()).expect("generated files are valid");
        prop_assert!(acl.check_invariants());
        let rules: usize = file.sections.iter().map(|(_, rules)| rules.len()).sum();
        prop_assert_eq!(acl.rules(), rules);
        for who in whos() {
            for topic in &topics {
                for access in [Read, Write] {
                    prop_assert_eq!(
                        acl.check(who, topic, access),
                        file.check(who, topic, access),
                        "{:?} {:?} {}\n{}", who, access, topic, file.text()
                    );
                }
            }
        }
    }

    #[test]
    fn subscribe_answers_never_contradict_check(
        file in file_strategy(),
        filters in prop::collection::vec(filter_strategy(RULE_LEVELS), 1..6),
        topics in prop::collection::vec(topic_strategy(), 0..12),
        fill in prop::collection::vec(0..TOPIC_LEVELS.len(), 1..8),
    ) {
        let acl = Acl::parse(&file.text()).expect("generated files are valid");
        for who in whos() {
            for filter in &filters {
                let answer = acl.check_subscribe(who, filter);
                let candidates = topics.iter().cloned().chain(instances(filter, &fill));
                for topic in candidates.filter(|topic| topic_matches(filter, topic)) {
                    let readable = acl.check(who, &topic, Read);
                    // Granted: no delivery is checked, so every topic must be readable.
                    prop_assert!(
                        answer != Granted || readable,
                        "{:?} {} granted, {} denied\n{}", who, filter, topic, file.text()
                    );
                    prop_assert!(
                        answer != Denied || !readable,
                        "{:?} {} denied, {} readable\n{}", who, filter, topic, file.text()
                    );
                }
                // A filter without wildcards names one topic: the answer is exact.
                if !filter.contains(['+', '#']) {
                    let expected = if acl.check(who, filter, Read) { Granted } else { Denied };
                    prop_assert_eq!(answer, expected, "{:?} {}\n{}", who, filter, file.text());
                }
            }
        }
    }
}
