//! What a data directory may hold after a crash or a bad disk: decoding arbitrary
//! bytes as log records and replaying them never panics; a record decodes whole or
//! not at all; a decoded record written again decodes to itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::persist::record::{decode, put, Decoded};
use shardmq::persist::Replay;

/// The input as bodies of records with their CRC right: random bytes almost never
/// pass a CRC, and the fields behind it must be fuzzed too. Each body is
/// prefixed by a byte giving its length.
fn framed(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        let (body, rest) = rest.split_at(len);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        out.extend_from_slice(body);
        data = rest;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let data = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            owned = framed(rest);
            &owned[..]
        }
        _ => data,
    };
    let mut replay = Replay::default();
    let mut at = 0;
    while let Decoded::Record(record, used) = decode(&data[at..]) {
        assert!(used <= data.len() - at, "a record larger than its bytes");
        let mut again = BytesMut::new();
        assert!(put(&mut again, &record), "a decoded record cannot be written");
        match decode(&again) {
            Decoded::Record(same, n) => {
                assert_eq!(same, record, "written again, it decodes differently");
                assert_eq!(n, again.len());
            }
            other => panic!("written again, it does not decode: {other:?}"),
        }
        replay.apply(record);
        at += used;
    }
    let (sessions, retained) = replay.finish();
    // Every session's image is one a session can take.
    for s in &sessions {
        assert!(s.image.inflight.iter().all(|e| e.delivery.qos != shardmq::protocol::QoS::AtMostOnce));
    }
    let _ = retained;
});
