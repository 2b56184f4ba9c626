//! Codec micro-benchmark: `cargo bench --bench codec`.
//!
//! No harness: `Instant` and `black_box`. Every figure is per operation, measured over
//! batches of 10,000 operations, repeated for about a second; the best batch is
//! printed (the least disturbed by other work on the machine) with the median beside
//! it. Decoding is measured the way the broker does it: packets back to back in one
//! read buffer, split off one at a time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardmq::protocol::{
    decode, encode, Connect, Limits, Packet, PacketId, Properties, ProtocolVersion, Publish,
    PublishProperties, PublishQoS, PublishTopic, PublishView, QoS, Subscribe, SubscribeFilter,
    TopicFilter, TopicName,
};

const BATCH: usize = 10_000;
const BUDGET: Duration = Duration::from_millis(1_000);

/// Runs `batch` (which returns the time of `BATCH` operations) for about `BUDGET` and
/// prints the best and median nanoseconds per operation.
fn report(label: &str, mut batch: impl FnMut() -> Duration) -> f64 {
    batch(); // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < BUDGET || times.len() < 5 {
        times.push(batch().as_nanos() as f64 / BATCH as f64);
    }
    times.sort_by(f64::total_cmp);
    let best = times[0];
    println!(
        "{label:<34} {best:>8.1} ns/op   (median {:.1}, {} batches of {BATCH})",
        times[times.len() / 2],
        times.len()
    );
    best
}

fn encoded(packet: &Packet, protocol: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf);
    buf
}

fn bench_decode(label: &str, packet: &Packet, protocol: ProtocolVersion) -> f64 {
    let one = encoded(packet, protocol);
    let mut template = BytesMut::with_capacity(one.len() * BATCH);
    for _ in 0..BATCH {
        template.extend_from_slice(&one);
    }
    let limits = Limits { protocol, ..Limits::default() };
    report(label, || {
        // A fresh read buffer each batch, filled outside the timed part.
        let mut buf = BytesMut::from(&template[..]);
        let start = Instant::now();
        for _ in 0..BATCH {
            let packet = decode(black_box(&mut buf), &limits).expect("valid packet");
            black_box(packet);
        }
        let elapsed = start.elapsed();
        assert!(buf.is_empty());
        elapsed
    })
}

fn bench_encode(label: &str, packet: &Packet, protocol: ProtocolVersion) {
    let mut buf = BytesMut::with_capacity(1024);
    report(label, || {
        let start = Instant::now();
        for _ in 0..BATCH {
            buf.clear();
            encode(black_box(packet), protocol, &mut buf);
            black_box(&buf);
        }
        start.elapsed()
    });
}

/// The fan-out's path: a borrowed view of one message, measured and written once
/// per subscriber (the names of the figures are those of the functions it replaced).
fn bench_encode_publish(label: &str, p: &Publish, protocol: ProtocolVersion) {
    let mut buf = BytesMut::with_capacity(1024);
    report(label, || {
        let start = Instant::now();
        for _ in 0..BATCH {
            buf.clear();
            let properties = black_box(p.properties.as_deref())
                .map_or_else(PublishProperties::default, PublishProperties::of);
            PublishView {
                topic: black_box(p.topic.name().expect("named").as_str()),
                payload: black_box(&p.payload),
                qos: p.qos.qos(),
                packet_id: p.qos.packet_id(),
                retain: p.retain,
                dup: p.dup,
                properties,
            }
            .measure(protocol)
            .encode(&mut buf);
            black_box(&buf);
        }
        start.elapsed()
    });
}

fn main() {
    let topic = TopicName::try_from("sensors/room-1/temperature").expect("valid topic");
    let payload = Bytes::from(vec![0x42; 64]);
    let publish = |qos: QoS| Publish {
        dup: false,
        qos: PublishQoS::new(qos, PacketId::new(4242).expect("non-zero")),
        retain: false,
        topic: PublishTopic::Name(topic.clone()),
        payload: payload.clone(),
        properties: None,
    };
    let qos0 = publish(QoS::AtMostOnce);
    let qos1 = publish(QoS::AtLeastOnce);
    let connect = Packet::Connect(Connect {
        protocol: ProtocolVersion::V311,
        clean_session: true,
        keep_alive_secs: 60,
        client_id: "bench-client-000001".into(),
        will: None,
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"secret")),
        properties: Properties::default().into(),
    });
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(7).expect("non-zero"),
        filters: vec![SubscribeFilter::new(
            TopicFilter::try_from("sensors/+/temperature").expect("valid filter"),
            QoS::AtLeastOnce,
        )],
        properties: Properties::default().into(),
    });
    // What an MQTT 5 publisher typically adds: expiry, a content type, a user property.
    let v5_properties = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3_600),
        content_type: Some("application/json".into()),
        user_properties: vec![("trace-id".into(), "4bf92f3577b34da6".into())],
        ..Properties::default()
    };
    let qos1_v5 = Publish { properties: Some(Box::new(v5_properties)), ..qos1.clone() };
    let qos1_v5_packet = Packet::Publish(qos1_v5.clone());
    let qos0_packet = Packet::Publish(qos0.clone());
    let qos1_packet = Packet::Publish(qos1.clone());
    let v3 = ProtocolVersion::V311;
    let v5 = ProtocolVersion::V5;
    let sizes = [&qos0_packet, &qos1_packet, &connect, &subscribe].map(|p| encoded(p, v3).len());
    println!(
        "packet sizes: PUBLISH QoS 0 {} B, QoS 1 {} B (64 B payload), CONNECT {} B, SUBSCRIBE {} B, \
         MQTT 5 PUBLISH QoS 1 with properties {} B",
        sizes[0],
        sizes[1],
        sizes[2],
        sizes[3],
        encoded(&qos1_v5_packet, v5).len()
    );

    let ns = bench_decode("decode PUBLISH QoS 0, 64 B", &qos0_packet, v3);
    bench_decode("decode PUBLISH QoS 1, 64 B", &qos1_packet, v3);
    bench_decode("decode CONNECT", &connect, v3);
    bench_decode("decode SUBSCRIBE (1 filter)", &subscribe, v3);
    bench_decode("decode v5 PUBLISH QoS 1, no props", &qos1_packet, v5);
    bench_decode("decode v5 PUBLISH QoS 1, 4 props", &qos1_v5_packet, v5);
    bench_encode("encode PUBLISH QoS 0, 64 B", &qos0_packet, v3);
    bench_encode("encode PUBLISH QoS 1, 64 B", &qos1_packet, v3);
    bench_encode_publish("encode_publish QoS 0, 64 B", &qos0, v3);
    bench_encode_publish("encode_publish QoS 1, 64 B", &qos1, v3);
    bench_encode_publish("encode_publish_v5 QoS 1, 4 props", &qos1_v5, v5);
    bench_encode("encode CONNECT", &connect, v3);
    bench_encode("encode SUBSCRIBE (1 filter)", &subscribe, v3);

    // The QoS 0 decode above is exactly this: one buffer of 10,000 back-to-back
    // PUBLISHes, decoded to the end.
    let bytes = (sizes[0] * BATCH) as f64;
    let secs = ns * BATCH as f64 / 1e9;
    println!(
        "decode throughput, {BATCH} back-to-back {} B PUBLISHes (64 B payload): \
         {:.2} ms per buffer, {:.1} M packets/s, {:.0} MB/s",
        sizes[0],
        secs * 1e3,
        BATCH as f64 / secs / 1e6,
        bytes / secs / 1e6,
    );
}
