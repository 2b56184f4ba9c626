//! What waits for the broker's clock, in virtual time: session expiry, wills
//! with Will Delay, keep-alive, message expiry.

use std::time::Duration;

use proptest::prelude::*;

use crate::config::Config;
use crate::protocol::{
    Connect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
};

use super::super::super::Close;
use super::super::{connect_packet, Sim};
use super::{connack, payloads, persistent, publisher, sim, subscriber, text, will, PAIRS, V3, V5};

// ---- session expiry -------------------------------------------------------------

/// An MQTT 5 session with Session Expiry Interval `expiry_secs`, offline with a
/// queued message, after `offline_ms`: (Session Present, what it then gets).
fn v5_session_after(
    pub_shard: usize,
    sub_shard: usize,
    expiry_secs: u32,
    offline_ms: u64,
) -> (bool, Vec<String>) {
    let mut sim = sim(2);
    let id = sim.id_on_shard("exp", sub_shard);
    let sub = sim.client(&id, V5);
    sim.connect(sub, persistent(&id, V5, expiry_secs));
    sim.subscribe(sub, &[("exp/t", QoS::AtLeastOnce)]);
    sim.settle();
    sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
    sim.settle();
    let publisher = publisher(&mut sim, "exp-pub", pub_shard, V5);
    sim.publish(publisher, "exp/t", b"queued", QoS::AtLeastOnce, false);
    sim.advance(offline_ms);
    sim.take(sub);
    sim.connect(sub, persistent(&id, V5, expiry_secs));
    sim.settle();
    let present = connack(&sim.take(sub)).session_present;
    sim.publish(publisher, "exp/t", b"after", QoS::AtLeastOnce, false);
    sim.settle();
    (present, payloads(&sim.take_delivered(sub)))
}

/// [MQTT-3.1.2-23] [MQTT-4.1.0-2]: an offline session lives for its Session
/// Expiry Interval (1 s) and no longer: just before it, Session Present 1 and
/// the queued message; after it, Session Present 0 [MQTT-3.2.2-3], nothing
/// queued, and the old subscription gone.
#[test]
fn offline_session_expires_after_its_interval() {
    for (pub_shard, sub_shard) in PAIRS {
        let kept = v5_session_after(pub_shard, sub_shard, 1, 900);
        assert_eq!(kept, (true, vec!["queued".to_owned(), "after".to_owned()]));
        let gone = v5_session_after(pub_shard, sub_shard, 1, 1100);
        assert_eq!(gone, (false, vec![]), "shards {pub_shard} -> {sub_shard}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any interval and any time offline: the session is there
    /// exactly while the interval has not passed (0: it ends with the
    /// connection [MQTT-3.1.2-23]).
    #[test]
    fn offline_session_lives_exactly_its_interval(
        expiry_secs in 0..4u32,
        offline_ms in 0..5000u64,
        (pub_shard, sub_shard) in (0..2usize, 0..2usize),
    ) {
        let present = offline_ms < u64::from(expiry_secs) * 1000;
        let expected: Vec<String> =
            if present { vec!["queued".into(), "after".into()] } else { vec![] };
        let got = v5_session_after(pub_shard, sub_shard, expiry_secs, offline_ms);
        prop_assert_eq!(got, (present, expected));
    }
}

/// An MQTT 3.1.1 persistent session (CleanSession 0) lives for the broker's
/// `session_expiry_secs`; 0 keeps it for ever.
fn v3_session_after(session_expiry_secs: u64, offline_ms: u64) -> (bool, Vec<String>) {
    // 0 keeps the session forever, as in the configuration file.
    let session_expiry =
        (session_expiry_secs > 0).then(|| Duration::from_secs(session_expiry_secs));
    let mut sim = Sim::new(2, &Config { session_expiry, ..Config::test() }, 0);
    let id = sim.id_on_shard("exp3", 1);
    let sub = sim.client(&id, V3);
    sim.connect(sub, persistent(&id, V3, 0));
    sim.subscribe(sub, &[("exp/t", QoS::AtLeastOnce)]);
    sim.settle();
    sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
    let publisher = publisher(&mut sim, "exp3-pub", 0, V3);
    sim.publish(publisher, "exp/t", b"queued", QoS::AtLeastOnce, false);
    sim.advance(offline_ms);
    sim.take(sub);
    sim.connect(sub, persistent(&id, V3, 0));
    sim.settle();
    (connack(&sim.take(sub)).session_present, payloads(&sim.take_delivered(sub)))
}

#[test]
fn v3_session_expires_after_session_expiry_secs() {
    assert_eq!(v3_session_after(1, 900), (true, vec!["queued".to_owned()]));
    assert_eq!(v3_session_after(1, 1100), (false, vec![]), "[MQTT-3.2.2-3]");
    let ten_minutes = 600_000;
    assert_eq!(v3_session_after(0, ten_minutes), (true, vec!["queued".to_owned()]), "uncapped");
}

/// 3.14.2.2.2: a DISCONNECT may change a non-zero Session Expiry Interval: a
/// session connected with 1 s and disconnected with 30 s is there after 1.5 s
/// and gone after 30 s.
#[test]
fn disconnect_changes_session_expiry() {
    for (offline_ms, present) in [(1500, true), (30_100, false)] {
        let mut sim = sim(2);
        let id = sim.id_on_shard("de", 1);
        let sub = sim.client(&id, V5);
        sim.connect(sub, persistent(&id, V5, 1));
        sim.subscribe(sub, &[("de/t", QoS::AtLeastOnce)]);
        let expiry = Properties { session_expiry_interval: Some(30), ..Properties::default() };
        sim.disconnect(sub, ReasonCode::SUCCESS, expiry);
        sim.settle();
        let publisher = publisher(&mut sim, "de-pub", 0, V5);
        sim.publish(publisher, "de/t", b"kept", QoS::AtLeastOnce, false);
        sim.advance(offline_ms);
        sim.take(sub);
        sim.connect(sub, persistent(&id, V5, 0));
        sim.settle();
        assert_eq!(connack(&sim.take(sub)).session_present, present, "after {offline_ms} ms");
        let expected: Vec<String> = if present { vec!["kept".into()] } else { vec![] };
        assert_eq!(payloads(&sim.take_delivered(sub)), expected);
    }
}

// ---- wills ----------------------------------------------------------------------

/// A client on `shard` with `will`, and a subscriber to the will's topic on the
/// other shard.
fn with_will(
    sim: &mut Sim,
    shard: usize,
    protocol: ProtocolVersion,
    mut connect: Connect,
    will: LastWill,
) -> (usize, usize) {
    let watcher = subscriber(sim, "watch", 1 - shard, "will/#");
    let id = sim.id_on_shard("testament", shard);
    let c = sim.client(&id, protocol);
    connect.will = Some(will);
    sim.connect(c, connect);
    sim.settle();
    (c, watcher)
}

/// How a connection ends.
#[derive(Clone, Copy, Debug)]
enum End {
    NetworkDrop,
    Disconnect,
    /// MQTT 5 DISCONNECT 0x04 (to an MQTT 3 client, a plain DISCONNECT).
    DisconnectWithWill,
}

fn end(sim: &mut Sim, c: usize, how: End) {
    match how {
        End::NetworkDrop => sim.drop_conn(c),
        End::Disconnect => sim.disconnect(c, ReasonCode::SUCCESS, Properties::default()),
        End::DisconnectWithWill => {
            sim.disconnect(c, ReasonCode::DISCONNECT_WITH_WILL, Properties::default());
        }
    }
    sim.settle();
}

/// [MQTT-3.1.2-8]: a connection that ends without DISCONNECT publishes its will,
/// to subscribers on any shard, at once; DISCONNECT discards it [MQTT-3.14.4-3];
/// MQTT 5 DISCONNECT 0x04 asks for it [MQTT-3.14.2.1].
#[test]
fn will_is_published_when_the_connection_ends_without_disconnect() {
    for shard in 0..2 {
        for protocol in [V3, V5] {
            for how in [End::NetworkDrop, End::Disconnect, End::DisconnectWithWill] {
                let published = match how {
                    End::NetworkDrop => true,
                    End::Disconnect => false,
                    End::DisconnectWithWill => protocol.is_v5(),
                };
                let mut sim = sim(2);
                let connect = connect_packet("", protocol);
                let (c, watcher) =
                    with_will(&mut sim, shard, protocol, connect, will("will/a", "gone", None));
                end(&mut sim, c, how);
                let expected: Vec<String> = if published { vec!["gone".into()] } else { vec![] };
                let got = payloads(&sim.take_delivered(watcher));
                assert_eq!(got, expected, "{protocol:?} {how:?} on shard {shard}");
            }
        }
    }
}

/// An MQTT 5 will with Will Delay Interval `delay_secs`, of a session with
/// Session Expiry Interval `expiry_secs`, after a network drop (and a
/// reconnection `back_ms` after it, if any): when, in virtual ms after the drop,
/// it was published, if within `horizon_ms`.
fn delayed_will(
    delay_secs: u32,
    expiry_secs: u32,
    back_ms: Option<u64>,
    horizon_ms: u64,
) -> Option<u64> {
    let mut sim = sim(2);
    let connect = persistent("", V5, expiry_secs);
    let (c, watcher) =
        with_will(&mut sim, 0, V5, connect, will("will/d", "late", Some(delay_secs)));
    let dropped_at = sim.now().ms;
    end(&mut sim, c, End::NetworkDrop);
    let mut published = None;
    loop {
        let elapsed = sim.now().ms - dropped_at;
        let got = payloads(&sim.take_delivered(watcher));
        if !got.is_empty() {
            assert_eq!(got, ["late"], "once");
            assert!(published.is_none(), "a will is published once");
            published = Some(elapsed);
        }
        if elapsed >= horizon_ms {
            break;
        }
        if back_ms == Some(elapsed) {
            let id = sim.client_ref(c).client_id.to_string();
            sim.connect(c, persistent(&id, V5, expiry_secs));
        }
        sim.advance(100);
    }
    published
}

/// [MQTT-3.1.3-9]: a will with a Will Delay Interval waits for the earlier of
/// its delay and the end of the session, and is not sent if the client is back
/// in time.
#[test]
fn will_delay_waits_for_the_earlier_of_delay_and_session_end() {
    assert_eq!(delayed_will(2, 60, None, 5000), Some(2000), "after the delay");
    assert_eq!(delayed_will(5, 1, None, 8000), Some(1000), "at the session's end");
    assert_eq!(delayed_will(2, 60, Some(1500), 5000), None, "back in time");
    assert_eq!(delayed_will(2, 0, None, 5000), Some(0), "a session that ends at once");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any delay, session expiry and reconnection time: the will
    /// goes out `min(delay, expiry)` after the drop unless the client was back
    /// before then.
    #[test]
    fn will_delay_for_any_delay_expiry_and_return(
        delay_secs in 0..5u32,
        expiry_secs in 0..5u32,
        back in proptest::option::of(0..60u64),
    ) {
        let due_ms = u64::from(delay_secs.min(expiry_secs)) * 1000;
        let back_ms = back.map(|n| n * 100);
        let expected = match back_ms {
            Some(back_ms) if back_ms < due_ms => None,
            _ => Some(due_ms),
        };
        prop_assert_eq!(delayed_will(delay_secs, expiry_secs, back_ms, 6000), expected);
    }
}

// ---- keep-alive -----------------------------------------------------------------

/// A client with Keep Alive `keep_alive_secs` and a will, on shard 1 (the will's
/// subscriber on shard 0), that sends PINGREQ at `pings` (virtual ms after
/// CONNECT, multiples of 100) and nothing else. Returns when the broker closed
/// it, if within `horizon_ms`.
fn keep_alive_close(
    protocol: ProtocolVersion,
    keep_alive_secs: u16,
    pings: &[u64],
    horizon_ms: u64,
) -> Option<u64> {
    let mut sim = sim(2);
    let mut connect = connect_packet("", protocol);
    connect.keep_alive_secs = keep_alive_secs;
    let (c, watcher) = with_will(&mut sim, 1, protocol, connect, will("will/k", "silent", None));
    let start = sim.now().ms;
    sim.take(c);
    while sim.now().ms - start < horizon_ms {
        sim.advance(100);
        let elapsed = sim.now().ms - start;
        if !sim.is_connected(c) {
            assert_eq!(sim.client_ref(c).closed, Some(Close::KeepAliveTimeout));
            let packets = sim.take(c);
            if protocol.is_v5() {
                let Some(Packet::Disconnect(d)) = packets.last() else { panic!("{packets:?}") };
                assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT, "[MQTT-4.13.2-1]");
            }
            assert_eq!(payloads(&sim.take_delivered(watcher)), ["silent"], "will on timeout");
            return Some(elapsed);
        }
        if pings.contains(&elapsed) {
            sim.send(c, &Packet::PingReq);
            sim.settle();
            assert_eq!(sim.take(c), [Packet::PingResp], "[MQTT-3.12.4-1]");
        }
    }
    None
}

/// [MQTT-3.1.2-24]: a client silent for one and a half times its Keep Alive is
/// closed (with its will), not before; PINGREQ keeps it open.
#[test]
fn keep_alive_closes_a_silent_client_after_one_and_a_half_intervals() {
    let every_900_ms: Vec<u64> = (1..=11).map(|n| n * 900).collect();
    for protocol in [V3, V5] {
        assert_eq!(keep_alive_close(protocol, 1, &[], 10_000), Some(1500), "{protocol:?}");
        assert_eq!(keep_alive_close(protocol, 1, &every_900_ms, 10_000), None, "{protocol:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any keep-alive and any pattern of PINGREQs: the client is
    /// closed one and a half keep-alives after the start of its first silence
    /// that long.
    #[test]
    fn keep_alive_closes_at_the_first_silence_of_one_and_a_half_intervals(
        v5 in any::<bool>(),
        keep_alive_secs in 1..3u16,
        gaps in proptest::collection::vec(1..40u64, 0..8),
    ) {
        let grace_ms = u64::from(keep_alive_secs) * 1500;
        let pings: Vec<u64> = gaps
            .iter()
            .scan(0, |at, gap| {
                *at += gap * 100;
                Some(*at)
            })
            .collect();
        let mut last = 0;
        for &ping in &pings {
            if ping - last >= grace_ms {
                break;
            }
            last = ping;
        }
        let protocol = if v5 { V5 } else { V3 };
        let horizon_ms = pings.last().copied().unwrap_or(0) + grace_ms + 100;
        let closed = keep_alive_close(protocol, keep_alive_secs, &pings, horizon_ms);
        prop_assert_eq!(closed, Some(last + grace_ms));
    }
}

// ---- message expiry ---------------------------------------------------------------

fn expiring(secs: u32) -> Option<Properties> {
    Some(Properties { message_expiry_interval: Some(secs), ..Properties::default() })
}

fn expiry_of(p: &Publish) -> Option<u32> {
    p.properties.as_ref().and_then(|p| p.message_expiry_interval)
}

/// [MQTT-3.3.2-5] [MQTT-3.3.2-6]: messages queued for an offline session: one
/// whose Message Expiry Interval (1 s) passed while it waited is not sent; one
/// with 60 s is, with the interval less the 2.2 s it waited (whole seconds).
#[test]
fn queued_message_expires_while_the_session_is_offline() {
    for (pub_shard, sub_shard) in PAIRS {
        let mut sim = sim(2);
        let id = sim.id_on_shard("mx", sub_shard);
        let sub = sim.client(&id, V5);
        sim.connect(sub, persistent(&id, V5, 60));
        sim.subscribe(sub, &[("mx/t", QoS::AtLeastOnce)]);
        sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
        sim.settle();
        let publisher = publisher(&mut sim, "mx-pub", pub_shard, V5);
        sim.publish_with(publisher, "mx/t", b"short", QoS::AtLeastOnce, false, expiring(1));
        sim.publish_with(publisher, "mx/t", b"long", QoS::AtLeastOnce, false, expiring(60));
        sim.publish(publisher, "mx/t", b"plain", QoS::AtLeastOnce, false);
        sim.advance(2200);
        sim.connect(sub, persistent(&id, V5, 60));
        sim.settle();
        let got = sim.take_delivered(sub);
        assert_eq!(payloads(&got), ["long", "plain"]);
        assert_eq!(expiry_of(&got[0]), Some(58));
        assert_eq!(expiry_of(&got[1]), None);
    }
}

/// The same for a retained message, stored on its topic's shard: a new
/// subscriber on any shard gets the one with time left, with what is left.
#[test]
fn retained_message_expires() {
    for (pub_shard, sub_shard) in PAIRS {
        let mut sim = sim(2);
        let publisher = publisher(&mut sim, "rx-pub", pub_shard, V5);
        sim.publish_with(publisher, "rx/short", b"gone", QoS::AtLeastOnce, true, expiring(1));
        sim.publish_with(publisher, "rx/long", b"kept", QoS::AtLeastOnce, true, expiring(60));
        sim.advance(2200);
        let sub = subscriber(&mut sim, "rx-sub", sub_shard, "rx/#");
        let got = sim.take_delivered(sub);
        assert_eq!(payloads(&got), ["kept"]);
        assert!(got[0].retain);
        assert_eq!(expiry_of(&got[0]), Some(58));
    }
}

/// A message with Message Expiry Interval `expiry_secs`, `waited_ms` after it was
/// published: what a subscriber on `sub_shard` gets of it, with the interval
/// left. Retained: the subscriber subscribes then; otherwise its session was
/// offline meanwhile and comes back then.
fn expiring_message_after(
    retained: bool,
    (pub_shard, sub_shard): (usize, usize),
    expiry_secs: u32,
    waited_ms: u64,
) -> Vec<(String, Option<u32>)> {
    let mut sim = sim(2);
    let id = sim.id_on_shard("mxp", sub_shard);
    let sub = sim.client(&id, V5);
    if !retained {
        sim.connect(sub, persistent(&id, V5, 3600));
        sim.subscribe(sub, &[("mxp/t", QoS::AtLeastOnce)]);
        sim.disconnect(sub, ReasonCode::SUCCESS, Properties::default());
        sim.settle();
    }
    let publisher = publisher(&mut sim, "mxp-pub", pub_shard, V5);
    let properties = expiring(expiry_secs);
    sim.publish_with(publisher, "mxp/t", b"m", QoS::AtLeastOnce, retained, properties);
    sim.advance(waited_ms);
    sim.connect(sub, persistent(&id, V5, 3600));
    if retained {
        sim.subscribe(sub, &[("mxp/t", QoS::AtLeastOnce)]);
    }
    sim.settle();
    sim.take_delivered(sub).iter().map(|p| (text(p), expiry_of(p))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same for any interval and wait, queued or retained, across shards or
    /// not: sent while whole seconds waited are fewer than the interval, with
    /// the interval less them [MQTT-3.3.2-5], [MQTT-3.3.2-6].
    #[test]
    fn message_expiry_for_any_interval_and_wait(
        retained in any::<bool>(),
        shards in (0..2usize, 0..2usize),
        expiry_secs in 1..4u32,
        waited_ms in 0..5000u64,
    ) {
        let waited_secs = u32::try_from(waited_ms / 1000).expect("small");
        let expected: Vec<(String, Option<u32>)> = if waited_secs < expiry_secs {
            vec![("m".to_owned(), Some(expiry_secs - waited_secs))]
        } else {
            vec![]
        };
        prop_assert_eq!(expiring_message_after(retained, shards, expiry_secs, waited_ms), expected);
    }
}
