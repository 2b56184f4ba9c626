//! Drives a `Session` with an arbitrary script of deliveries, acknowledgements,
//! disconnects and reconnects. `session::script::run` panics when an invariant
//! breaks: window exceeded, a message lost without a counted drop, first
//! transmissions out of order or repeated, something pending after the client
//! acknowledged everything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::session::script::{run, Op};

fuzz_target!(|data: &[u8]| {
    let [window, queue, flags, script @ ..] = data else { return };
    let inflight_max = u16::from(window % 8) + 1;
    let mqueue_len_max = usize::from(queue % 16) + 1;
    let store_qos0 = flags & 1 == 1;
    let ops: Vec<Op> = script.iter().take(4096).map(|b| Op::from_byte(*b)).collect();
    run(&ops, inflight_max, mqueue_len_max, store_qos0);
});
