//! Decoding arbitrary bytes never panics, in the MQTT 3.1.1 layout and in the MQTT 5
//! layout, and every packet it yields survives a round trip: `encode` in the same
//! protocol writes exactly `encoded_len` bytes, which decode to the same packet.
//! Feeding the same bytes one at a time yields the same packets and the same final
//! error as feeding them at once.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::protocol::{
    decode, encode, encoded_len, DecodeError, Limits, Packet, ProtocolVersion,
};

/// Decodes `data` whole: the packets, then how it stopped (`None` = needs more bytes).
fn decode_all(data: &[u8], limits: &Limits) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    loop {
        match decode(&mut buf, limits) {
            Ok(Some(packet)) => packets.push(packet),
            Ok(None) => return (packets, None),
            Err(e) => return (packets, Some(e)),
        }
    }
}

/// Decodes `data` arriving one byte at a time.
fn decode_trickle(data: &[u8], limits: &Limits) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for &byte in data {
        buf.extend_from_slice(&[byte]);
        loop {
            let before = buf.len();
            match decode(&mut buf, limits) {
                Ok(Some(packet)) => packets.push(packet),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

fn check(data: &[u8], limits: &Limits) {
    let (packets, end) = decode_all(data, limits);
    for packet in &packets {
        let mut out = BytesMut::new();
        encode(packet, limits.protocol, &mut out);
        assert_eq!(out.len(), encoded_len(packet, limits.protocol), "encoded_len of {packet:?}");
        assert!(out.len() <= limits.packet_size_max, "decoded a packet larger than the limit");
        let again = decode(&mut out, limits).expect("a re-encoded packet decodes");
        assert_eq!(again.as_ref(), Some(packet), "round trip changed the packet");
        assert!(out.is_empty(), "re-encoded packet has trailing bytes");
    }

    // Split invariance. The trickle may stop earlier with an error the whole buffer
    // reports too (e.g. a header error), so compare packets and the error.
    let (trickled, trickle_end) = decode_trickle(data, limits);
    assert_eq!(trickled, packets, "byte-at-a-time decode differs");
    assert_eq!(trickle_end, end, "byte-at-a-time decode ends differently");
}

fuzz_target!(|data: &[u8]| {
    // A small limit as well as the default, so that PacketTooLarge is exercised
    // at sizes the fuzzer reaches.
    let packet_size_max = if data.first().is_some_and(|b| b & 1 == 1) { 64 } else { 1 << 20 };
    // The same bytes in both layouts: most packet types mean something in each.
    for protocol in [ProtocolVersion::V311, ProtocolVersion::V5] {
        check(data, &Limits { packet_size_max, protocol });
    }
});
