//! What another node sends over a node link: decoding arbitrary bytes never panics,
//! never consumes part of a frame, and feeding the bytes one at a time yields the
//! same frames and the same final error as feeding them at once.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::cluster::frame::{decode, Frame, FrameError, Limits};

fn decode_all(data: &[u8], limits: Limits) -> (Vec<Frame>, Option<FrameError>) {
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        match decode(&mut buf, limits) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn decode_trickle(data: &[u8], limits: Limits) -> (Vec<Frame>, Option<FrameError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &byte in data {
        buf.extend_from_slice(&[byte]);
        loop {
            let before = buf.len();
            match decode(&mut buf, limits) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    // A small limit as well as the usual one, so TooLarge is reached.
    let limits = if data.first().is_some_and(|b| b & 1 == 1) {
        Limits { frame_max: 64 }
    } else {
        Limits::for_packets(1 << 20)
    };
    let whole = decode_all(data, limits);
    let trickled = decode_trickle(data, limits);
    assert_eq!(trickled, whole, "byte-at-a-time decode differs");
});
