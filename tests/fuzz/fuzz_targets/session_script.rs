//! Drives a `Session` with an arbitrary script of deliveries, acknowledgements,
//! disconnects and reconnects, over an MQTT 3.1.1 or an MQTT 5 connection (with its
//! own Receive Maximum and outgoing topic aliases). `session::script::run_on` panics
//! when an invariant breaks: window exceeded, a message lost without a counted drop,
//! first transmissions out of order or repeated, something pending after the client
//! acknowledged everything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::protocol::ProtocolVersion;
use shardmq::session::script::{run_on, Op};
use shardmq::session::Link;

fuzz_target!(|data: &[u8]| {
    let [window, queue, flags, script @ ..] = data else { return };
    let inflight_max = u16::from(window % 8) + 1;
    let mqueue_len_max = usize::from(queue % 16) + 1;
    let store_qos0 = flags & 1 == 1;
    let link = if flags & 2 == 2 {
        Link {
            protocol: ProtocolVersion::V5,
            packet_size_max: 1 << 20,
            topic_alias_max: u16::from((flags >> 2) & 3),
            receive_max: u16::from(window >> 4) + 1,
            topic_strip: 0,
        }
    } else {
        Link::v3(ProtocolVersion::V311)
    };
    let ops: Vec<Op> = script.iter().take(4096).map(|b| Op::from_byte(*b)).collect();
    run_on(&ops, inflight_max, mqueue_len_max, store_qos0, link);
});
