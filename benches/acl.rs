//! Micro-benchmark of `Acl::check` with 1,000 rules: per-user sections, anonymous
//! rules and patterns with `%c`/`%u`, wildcards and denies.
//!
//! Run with `cargo bench --bench acl`. Plain `Instant` timing, no harness: figures are
//! indicative (a few passes, best pass reported next to the median so noise from a
//! shared machine is visible).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::Rng;
use shardmq::security::{Access, Acl, Who};

const ANONYMOUS: u32 = 20;
const USERS: u32 = 300;
const DEVICE_PATTERNS: u32 = 100;
const INBOX_PATTERNS: u32 = 100;
const TELEMETRY_PATTERNS: u32 = 100;
const SECRET_PATTERNS: u32 = 50;
const SITE_PATTERNS: u32 = 30;
const CHECKS: usize = 300_000;
const PASSES: usize = 5;

/// The ACL file: 20 anonymous rules, 300 users with 2 rules each, 380 patterns.
fn acl_text() -> String {
    let mut text = String::new();
    for n in 0..ANONYMOUS {
        text.push_str(&format!("topic read public/{n}/#\n"));
    }
    for (kind, count) in [
        ("readwrite devices/%c/{n}/#", DEVICE_PATTERNS),
        ("read users/%u/inbox/{n}", INBOX_PATTERNS),
        ("write telemetry/+/%c/{n}", TELEMETRY_PATTERNS),
        ("deny devices/%c/{n}/secret", SECRET_PATTERNS),
        ("read site/{n}/+/%u/#", SITE_PATTERNS),
    ] {
        for n in 0..count {
            text.push_str(&format!("pattern {}\n", kind.replace("{n}", &n.to_string())));
        }
    }
    for i in 0..USERS {
        text.push_str(&format!(
            "user dev{i}\ntopic readwrite fleet/{i}/#\ntopic read fleet/+/status\n"
        ));
    }
    text
}

/// (client id, username, topic, access) for each check.
fn checks() -> Vec<(String, Option<String>, String, Access)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..CHECKS)
        .map(|_| {
            let i = rng.below(USERS);
            let me = format!("dev{i}");
            let (topic, access) = match rng.below(10) {
                // Publishes and deliveries a device does all the time: granted.
                0 | 1 => (format!("fleet/{i}/data"), Access::Write),
                2 => (format!("fleet/{}/status", rng.below(USERS)), Access::Read),
                3 | 4 => {
                    (format!("devices/{me}/{}/temp", rng.below(DEVICE_PATTERNS)), Access::Write)
                }
                5 => (format!("users/{me}/inbox/{}", rng.below(INBOX_PATTERNS)), Access::Read),
                6 => (format!("telemetry/x/{me}/{}", rng.below(TELEMETRY_PATTERNS)), Access::Write),
                // Denied: a secret, another device's topic, an unknown tree.
                7 => (format!("devices/{me}/{}/secret", rng.below(SECRET_PATTERNS)), Access::Read),
                8 => (format!("devices/dev{}/0/temp", rng.below(USERS)), Access::Write),
                _ => (format!("other/{i}/x"), Access::Read),
            };
            let anonymous = rng.below(20) == 0;
            let topic =
                if anonymous { format!("public/{}/x", rng.below(ANONYMOUS * 2)) } else { topic };
            (me.clone(), (!anonymous).then_some(me), topic, access)
        })
        .collect()
}

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

fn main() {
    let text = acl_text();
    let start = Instant::now();
    let acl = Acl::parse(&text).expect("valid ACL");
    let parse = start.elapsed();
    assert_eq!(acl.rules(), 1_000);
    let checks = checks();

    let mut passes = Vec::with_capacity(PASSES);
    let mut granted = 0usize;
    for _ in 0..PASSES {
        granted = 0;
        let start = Instant::now();
        for (client_id, username, topic, access) in &checks {
            let who = Who { client_id, username: username.as_deref() };
            granted += usize::from(acl.check(black_box(who), black_box(topic), *access));
        }
        passes.push(start.elapsed());
    }
    passes.sort_unstable();
    let (best, median) = (passes[0], passes[passes.len() / 2]);

    let subscribe_filters = ["fleet/+/status", "devices/dev1/#", "#", "users/dev1/inbox/+"];
    let start = Instant::now();
    let rounds = 2_000;
    for _ in 0..rounds {
        for filter in subscribe_filters {
            black_box(
                acl.check_subscribe(Who { client_id: "dev1", username: Some("dev1") }, filter),
            );
        }
    }
    let subscribe = start.elapsed();

    println!(
        "rules: {} ({ANONYMOUS} anonymous, {} in {USERS} user sections, {} patterns)",
        acl.rules(),
        USERS * 2,
        acl.rules() as u32 - ANONYMOUS - USERS * 2
    );
    println!(
        "checks: {} per pass, {PASSES} passes, {:.0}% granted",
        checks.len(),
        granted as f64 * 100.0 / checks.len() as f64
    );
    println!(
        "check: best {:.1} ns/check, median {:.1} ns/check",
        per_op(best, checks.len()),
        per_op(median, checks.len())
    );
    println!(
        "check_subscribe: {:.0} ns/filter (mixed filters)",
        per_op(subscribe, rounds * subscribe_filters.len())
    );
    println!("parse: {:.2} ms for {} bytes", parse.as_secs_f64() * 1e3, text.len());
}
