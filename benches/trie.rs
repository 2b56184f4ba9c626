//! Micro-benchmark of `SubTrie` with 100,000 subscriptions in an IoT-like mix.
//!
//! Run with `cargo bench --bench trie`. Plain `Instant` timing, no harness:
//! figures are indicative (single run of a few passes, best pass reported
//! next to the median so noise from a shared machine is visible).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::Rng;
use shardmq::router::SubTrie;

const EXACT: u32 = 90_000;
const DEVICE_WILD: u32 = 4_000;
const SITE_WILD: u32 = 3_000;
const STATUS_WILD: u32 = 3_000;
const TOPICS: usize = 300_000;
const MATCH_PASSES: usize = 5;

fn filters() -> (Vec<String>, Vec<String>) {
    let exact = (0..EXACT).map(|id| format!("devices/{id}/telemetry")).collect();
    let mut wild = Vec::new();
    // Device ids overlap the exact ones, so those publishes match twice.
    wild.extend((0..DEVICE_WILD).map(|id| format!("devices/{id}/+")));
    wild.extend((0..SITE_WILD).map(|n| format!("site/{n}/#")));
    wild.extend((0..STATUS_WILD).map(|n| format!("+/{n}/status")));
    (exact, wild)
}

fn topics() -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..TOPICS)
        .map(|_| match rng.below(10) {
            // Telemetry from known devices: exact hit, plus `devices/{id}/+`
            // and `+/{id}/status` for low ids.
            0..=4 => format!("devices/{}/telemetry", rng.below(EXACT)),
            5 => format!("devices/{}/status", rng.below(EXACT)),
            6 => format!("site/{}/floor/{}/temp", rng.below(SITE_WILD * 2), rng.below(8)),
            7 => format!("gateway/{}/status", rng.below(STATUS_WILD * 2)),
            // Misses: unknown devices and unrelated trees.
            8 => format!("devices/{}/telemetry", EXACT + rng.below(EXACT)),
            _ => format!("fleet/{}/gps/fix", rng.below(EXACT)),
        })
        .collect()
}

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

fn main() {
    let (exact, wild) = filters();
    let topics = topics();

    let mut trie: SubTrie<u64> = SubTrie::new();
    let start = Instant::now();
    for (i, filter) in exact.iter().enumerate() {
        black_box(trie.get_or_insert_with(filter, || i as u64));
    }
    let insert_exact = start.elapsed();
    let start = Instant::now();
    for (i, filter) in wild.iter().enumerate() {
        black_box(trie.get_or_insert_with(filter, || i as u64));
    }
    let insert_wild = start.elapsed();
    assert_eq!(trie.len(), exact.len() + wild.len());

    let mut passes = Vec::with_capacity(MATCH_PASSES);
    let mut matches = 0usize;
    for _ in 0..MATCH_PASSES {
        matches = 0;
        let start = Instant::now();
        for topic in &topics {
            trie.for_each_match(black_box(topic), |filter, value| {
                black_box((filter, value));
                matches += 1;
            });
        }
        passes.push(start.elapsed());
    }
    passes.sort_unstable();
    let best = passes[0];
    let median = passes[passes.len() / 2];

    let start = Instant::now();
    for filter in &wild {
        black_box(trie.remove(filter));
    }
    let remove_wild = start.elapsed();
    let start = Instant::now();
    for filter in &exact {
        black_box(trie.remove(filter));
    }
    let remove_exact = start.elapsed();
    assert!(trie.is_empty());

    println!(
        "subscriptions: {} ({} exact, {} wildcard)",
        exact.len() + wild.len(),
        exact.len(),
        wild.len()
    );
    println!(
        "topics: {} per pass, {} passes, {:.2} matches per topic",
        topics.len(),
        MATCH_PASSES,
        matches as f64 / topics.len() as f64
    );
    println!(
        "for_each_match: best {:.1} ns/topic, median {:.1} ns/topic",
        per_op(best, topics.len()),
        per_op(median, topics.len())
    );
    println!("for_each_match: best {:.1} ns/match (per delivered filter)", per_op(best, matches));
    println!(
        "insert: exact {:.1} ns/op, wildcard {:.1} ns/op",
        per_op(insert_exact, exact.len()),
        per_op(insert_wild, wild.len())
    );
    println!(
        "remove: exact {:.1} ns/op, wildcard {:.1} ns/op",
        per_op(remove_exact, exact.len()),
        per_op(remove_wild, wild.len())
    );
}
