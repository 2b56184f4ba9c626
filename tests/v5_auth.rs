//! MQTT 5 enhanced authentication [MQTT-4.12] through the `client.authenticate` hook,
//! with raw MQTT 5 clients that show every AUTH, CONNACK and DISCONNECT.
//!
//! The hook implements toy methods:
//! - `TOY`: the server challenges with `nonce`; the client must answer
//!   `nonce:secret`; success carries `welcome` as final Authentication Data. A user
//!   named `banned` is refused at once with 0x8A (Banned).
//! - `TWICE`: two challenges (`n1`, then `n2`), each answered with `<challenge>:secret`;
//!   success carries no data.
//! - `ONESHOT`: accepted on the first round, no exchange.
//! - anything else: 0x8C (Bad authentication method).
//!
//! Every call is recorded, so the tests assert what the hook saw (`client_id`,
//! `username`, `method`, `data`, `round`, `reauthenticate`).

mod common;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use bytestring::ByteString;
use common::{client_id_on_shard, init_logging, start, Raw, SHARDS};
use shardmq::hooks::{AuthRequest, AuthStep};
use shardmq::protocol::{
    Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode,
};
use shardmq::{Broker, BrokerHandle, Config};

const ANSWER: &[u8] = b"nonce:secret";

/// One call of the authenticator, as it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    client_id: String,
    username: Option<String>,
    method: String,
    data: Option<Vec<u8>>,
    round: u32,
    reauthenticate: bool,
}

fn call(client_id: &str, method: &str, data: Option<&[u8]>, round: u32, reauth: bool) -> Call {
    Call {
        client_id: client_id.to_owned(),
        username: None,
        method: method.to_owned(),
        data: data.map(<[u8]>::to_vec),
        round,
        reauthenticate: reauth,
    }
}

/// The toy authenticator (see the module docs).
fn toy(request: &AuthRequest<'_>) -> AuthStep {
    let data = request.data.unwrap_or_default();
    match (request.method, request.round) {
        ("TOY", 0) if request.username == Some("banned") => AuthStep::Fail(ReasonCode::BANNED),
        ("TOY", 0) => AuthStep::Continue(Bytes::from_static(b"nonce")),
        ("TOY", 1) if data == ANSWER => AuthStep::Success(Some(Bytes::from_static(b"welcome"))),
        ("TOY", _) => AuthStep::Fail(ReasonCode::NOT_AUTHORIZED),
        ("TWICE", 0) => AuthStep::Continue(Bytes::from_static(b"n1")),
        ("TWICE", 1) if data == b"n1:secret" => AuthStep::Continue(Bytes::from_static(b"n2")),
        ("TWICE", 2) if data == b"n2:secret" => AuthStep::Success(None),
        ("TWICE", _) => AuthStep::Fail(ReasonCode::NOT_AUTHORIZED),
        ("ONESHOT", 0) => AuthStep::Success(None),
        _ => AuthStep::Fail(ReasonCode::BAD_AUTHENTICATION_METHOD),
    }
}

/// A broker on 2 shards whose authenticator is [`toy`]; `calls` records each call.
struct Authed {
    _broker: BrokerHandle,
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Authed {
    fn start() -> Authed {
        init_logging();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&calls);
        let broker = Broker::builder()
            .config(Config::test())
            .listen(["127.0.0.1:0".parse().expect("address")])
            .cores(NonZeroUsize::new(SHARDS))
            .hooks(move |hooks| {
                hooks.on_client_authenticate(move |request| {
                    log.lock().expect("calls").push(Call {
                        client_id: request.client_id.to_owned(),
                        username: request.username.map(str::to_owned),
                        method: request.method.to_owned(),
                        data: request.data.map(<[u8]>::to_vec),
                        round: request.round,
                        reauthenticate: request.reauthenticate,
                    });
                    toy(request)
                });
            })
            .start()
            .expect("broker starts");
        let addr = broker.local_addrs()[0];
        Authed { _broker: broker, addr, calls }
    }

    /// The calls so far, emptying the record.
    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }
}

/// An MQTT 5 CONNECT (Clean Start, keep-alive off) with an optional user name and
/// Authentication Method and Data.
fn connect_v5(
    client_id: &str,
    username: Option<&str>,
    method: Option<&str>,
    data: Option<&[u8]>,
) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        clean_session: true,
        keep_alive_secs: 0,
        client_id: ByteString::from(client_id),
        will: None,
        username: username.map(ByteString::from),
        password: None,
        properties: Properties {
            authentication_method: method.map(ByteString::from),
            authentication_data: data.map(Bytes::copy_from_slice),
            ..Properties::default()
        }
        .into(),
    }
}

/// An AUTH packet with a method and optional data.
fn auth(reason: ReasonCode, method: &str, data: Option<&[u8]>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(ByteString::from(method)),
            authentication_data: data.map(Bytes::copy_from_slice),
            ..Properties::default()
        }
        .into(),
    })
}

/// What an AUTH (or CONNACK) carried: reason, method and data.
fn auth_of(packet: Packet) -> (ReasonCode, Option<String>, Option<Vec<u8>>) {
    match packet {
        Packet::Auth(a) => (
            a.reason,
            a.properties.authentication_method.as_ref().map(|m| m.to_string()),
            a.properties.authentication_data.as_ref().map(|d| d.to_vec()),
        ),
        other => panic!("expected AUTH, got {other:?}"),
    }
}

fn connack_auth(connack: &ConnAck) -> (ReasonCode, Option<String>, Option<Vec<u8>>) {
    (
        connack.reason,
        connack.properties.authentication_method.as_ref().map(|m| m.to_string()),
        connack.properties.authentication_data.as_ref().map(|d| d.to_vec()),
    )
}

fn expect_connack(raw: &mut Raw) -> ConnAck {
    match raw.recv() {
        Packet::ConnAck(connack) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

fn bytes(b: &[u8]) -> Option<Vec<u8>> {
    Some(b.to_vec())
}

/// Connects `client_id` with method TOY through the whole exchange; returns the
/// client and its CONNACK.
fn connect_toy(addr: SocketAddr, client_id: &str, username: Option<&str>) -> (Raw, ConnAck) {
    let mut raw = Raw::open(addr);
    raw.send(&Packet::Connect(connect_v5(client_id, username, Some("TOY"), Some(b"hello"))));
    assert_eq!(
        auth_of(raw.recv()),
        (ReasonCode::CONTINUE_AUTHENTICATION, some("TOY"), bytes(b"nonce"))
    );
    raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TOY", Some(ANSWER)));
    let connack = expect_connack(&mut raw);
    (raw, connack)
}

/// A plain MQTT 5 client (no Authentication Method).
fn connect_plain(addr: SocketAddr, client_id: &str) -> Raw {
    let (raw, connack) = Raw::connect_with(addr, connect_v5(client_id, None, None, None));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    raw
}

// ---- Authentication at CONNECT ---------------------------------------------------

/// The challenge-response exchange before CONNACK: CONNECT with the method, the
/// server's AUTH 0x18 with the challenge [MQTT-4.12.0-2], the client's AUTH 0x18
/// with the answer [MQTT-4.12.0-3], CONNACK 0x00; every AUTH and the CONNACK carry
/// the method of CONNECT [MQTT-4.12.0-5], the CONNACK the hook's final data. The
/// client then publishes and subscribes like any other, with a plain MQTT 5 client.
fn challenge_response(shard: usize, other_shard: usize) {
    let authed = Authed::start();
    let id = client_id_on_shard("toy", shard, SHARDS);
    let (mut raw, connack) = connect_toy(authed.addr, &id, Some("alice"));
    assert_eq!(connack_auth(&connack), (ReasonCode::SUCCESS, some("TOY"), bytes(b"welcome")));
    assert!(!connack.session_present);
    assert_eq!(connack.properties.receive_maximum, Some(1024), "a normal CONNACK otherwise");
    let alice = |data: &[u8], round| Call {
        username: some("alice"),
        ..call(&id, "TOY", Some(data), round, false)
    };
    assert_eq!(authed.calls(), [alice(b"hello", 0), alice(ANSWER, 1)]);

    assert_eq!(raw.subscribe(&[("auth/t", QoS::AtLeastOnce)]), [ReasonCode::GRANTED_QOS_1]);
    raw.publish("auth/t", b"own", QoS::AtLeastOnce);
    assert_eq!(&raw.receive_acking(1)[0].payload[..], b"own");
    let mut plain = connect_plain(authed.addr, &client_id_on_shard("plain", other_shard, SHARDS));
    assert_eq!(plain.subscribe(&[("auth/back", QoS::AtLeastOnce)]), [ReasonCode::GRANTED_QOS_1]);
    plain.publish("auth/t", b"from plain", QoS::AtLeastOnce);
    assert_eq!(&raw.receive_acking(1)[0].payload[..], b"from plain");
    raw.publish("auth/back", b"from toy", QoS::AtLeastOnce);
    assert_eq!(&plain.receive_acking(1)[0].payload[..], b"from toy");
    assert_eq!(authed.calls(), [], "the plain client never reached the authenticator");
    raw.disconnect();
}

#[test]
fn challenge_response_connects_on_shard_0() {
    challenge_response(0, 1);
}

#[test]
fn challenge_response_connects_on_shard_1() {
    challenge_response(1, 1);
}

/// Rounds count up with each AUTH 0x18 (0 for CONNECT, then 1, 2): a method with
/// two challenges; a success without data gives a CONNACK with the method and no
/// Authentication Data [MQTT-4.12.0-5].
#[test]
fn two_challenges_count_rounds() {
    let authed = Authed::start();
    let id = client_id_on_shard("twice", 1, SHARDS);
    let mut raw = Raw::open(authed.addr);
    raw.send(&Packet::Connect(connect_v5(&id, None, Some("TWICE"), None)));
    assert_eq!(
        auth_of(raw.recv()),
        (ReasonCode::CONTINUE_AUTHENTICATION, some("TWICE"), bytes(b"n1"))
    );
    raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TWICE", Some(b"n1:secret")));
    assert_eq!(
        auth_of(raw.recv()),
        (ReasonCode::CONTINUE_AUTHENTICATION, some("TWICE"), bytes(b"n2"))
    );
    raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TWICE", Some(b"n2:secret")));
    assert_eq!(connack_auth(&expect_connack(&mut raw)), (ReasonCode::SUCCESS, some("TWICE"), None));
    assert_eq!(
        authed.calls(),
        [
            call(&id, "TWICE", None, 0, false),
            call(&id, "TWICE", Some(b"n1:secret"), 1, false),
            call(&id, "TWICE", Some(b"n2:secret"), 2, false),
        ]
    );
    assert_eq!(raw.sync(), []);
}

/// A method the hook accepts on the first round: CONNACK 0x00 with the method right
/// after CONNECT, no AUTH [MQTT-4.12.0-5]. The hook sees the client id as sent, even
/// empty, and the user name; the CONNACK assigns an id [MQTT-3.2.2-16].
#[test]
fn single_round_method_and_empty_client_id() {
    let authed = Authed::start();
    let (mut raw, connack) =
        Raw::connect_with(authed.addr, connect_v5("", Some("bob"), Some("ONESHOT"), Some(b"tok")));
    assert_eq!(connack_auth(&connack), (ReasonCode::SUCCESS, some("ONESHOT"), None));
    assert!(connack.properties.assigned_client_identifier.is_some());
    assert_eq!(
        authed.calls(),
        [Call { username: some("bob"), ..call("", "ONESHOT", Some(b"tok"), 0, false) }]
    );
    assert_eq!(raw.sync(), []);
}

/// A wrong answer: the server rejects the authentication with the hook's code
/// (0x87) in CONNACK, Session Present 0, and closes the connection [MQTT-4.12.0-4]
/// [MQTT-3.2.2-6] [MQTT-3.2.2-7]. The client id gets no session.
#[test]
fn wrong_answer_is_refused_and_closed() {
    let authed = Authed::start();
    let id = client_id_on_shard("wrong", 1, SHARDS);
    // A persistent session, were it created.
    let persistent = || {
        let mut connect = connect_v5(&id, None, Some("TOY"), None);
        connect.clean_session = false;
        connect.properties.session_expiry_interval = Some(60);
        connect
    };
    let mut raw = Raw::open(authed.addr);
    raw.send(&Packet::Connect(persistent()));
    assert_eq!(
        auth_of(raw.recv()),
        (ReasonCode::CONTINUE_AUTHENTICATION, some("TOY"), bytes(b"nonce"))
    );
    raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TOY", Some(b"nonce:guess")));
    let connack = expect_connack(&mut raw);
    assert_eq!(connack.reason, ReasonCode::NOT_AUTHORIZED);
    assert!(!connack.session_present);
    raw.expect_closed();
    assert_eq!(
        authed.calls(),
        [call(&id, "TOY", None, 0, false), call(&id, "TOY", Some(b"nonce:guess"), 1, false)]
    );
    // No session was created: the right answer connects with a new one.
    let mut raw = Raw::open(authed.addr);
    raw.send(&Packet::Connect(persistent()));
    assert_eq!(auth_of(raw.recv()).0, ReasonCode::CONTINUE_AUTHENTICATION);
    raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TOY", Some(ANSWER)));
    let connack = expect_connack(&mut raw);
    assert_eq!((connack.reason, connack.session_present), (ReasonCode::SUCCESS, false));
}

/// The hook may refuse on the first round with any code: the CONNACK carries it
/// (0x8A Banned) and the connection closes, with no AUTH [MQTT-4.12.0-4].
#[test]
fn hook_refusal_code_is_the_connack_code() {
    let authed = Authed::start();
    let id = client_id_on_shard("refused", 0, SHARDS);
    let (mut raw, connack) =
        Raw::connect_with(authed.addr, connect_v5(&id, Some("banned"), Some("TOY"), None));
    assert_eq!((connack.reason, connack.session_present), (ReasonCode::BANNED, false));
    raw.expect_closed();
    assert_eq!(
        authed.calls(),
        [Call { username: some("banned"), ..call(&id, "TOY", None, 0, false) }]
    );
}

/// An Authentication Method the authenticator does not know: CONNACK 0x8C (Bad
/// authentication method) and close [MQTT-4.12.0-1].
#[test]
fn unknown_method_is_refused_with_0x8c() {
    let authed = Authed::start();
    let id = client_id_on_shard("scram", 1, SHARDS);
    let (mut raw, connack) =
        Raw::connect_with(authed.addr, connect_v5(&id, None, Some("SCRAM-SHA-1"), Some(b"n,,n=u")));
    assert_eq!(connack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    raw.expect_closed();
    assert_eq!(authed.calls(), [call(&id, "SCRAM-SHA-1", Some(b"n,,n=u"), 0, false)]);
}

/// Without an authenticator every Authentication Method is unknown: CONNACK 0x8C and
/// close [MQTT-4.12.0-1]. A CONNECT without a method connects, and its CONNACK
/// carries no Authentication Method [MQTT-4.12.0-6].
#[test]
fn without_authenticator_every_method_is_refused_with_0x8c() {
    let broker = start(Config::test());
    let addr = common::addr(&broker);
    for shard in 0..SHARDS {
        let id = client_id_on_shard("nohook", shard, SHARDS);
        let (mut raw, connack) = Raw::connect_with(addr, connect_v5(&id, None, Some("TOY"), None));
        assert_eq!(connack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
        raw.expect_closed();
        let (mut raw, connack) = Raw::connect_with(addr, connect_v5(&id, None, None, None));
        assert_eq!(connack_auth(&connack), (ReasonCode::SUCCESS, None, None));
        assert_eq!(raw.sync(), []);
    }
}

/// A client that set a method must send nothing but AUTH or DISCONNECT before
/// CONNACK [MQTT-3.1.2-30]; another packet in the middle of the exchange ends it
/// [MQTT-4.12.0-4]: the connection closes without a successful CONNACK, and the hook
/// is not called again.
#[test]
fn another_packet_during_the_exchange_ends_it() {
    let authed = Authed::start();
    let id = client_id_on_shard("impatient", 0, SHARDS);
    let mut raw = Raw::open(authed.addr);
    raw.send(&Packet::Connect(connect_v5(&id, None, Some("TOY"), None)));
    assert_eq!(
        auth_of(raw.recv()),
        (ReasonCode::CONTINUE_AUTHENTICATION, some("TOY"), bytes(b"nonce"))
    );
    raw.send(&Packet::PingReq);
    let packets = raw.packets_until_closed();
    assert!(
        packets.iter().all(|p| matches!(p, Packet::ConnAck(c) if c.reason.is_error())),
        "{packets:?}"
    );
    assert_eq!(authed.calls(), [call(&id, "TOY", None, 0, false)]);
}

// ---- Re-authentication -----------------------------------------------------------

/// Re-authentication [MQTT-4.12.1-1]: after CONNACK the client sends AUTH 0x19 with
/// the method of CONNECT, gets AUTH 0x18 with the challenge, answers with AUTH 0x18,
/// and gets AUTH 0x00; every AUTH carries the method [MQTT-4.12.0-5]. The hook sees
/// `reauthenticate` and rounds from 0 again. The connection goes on meanwhile and
/// after, and may re-authenticate again.
#[test]
fn reauthentication_challenge_response() {
    let authed = Authed::start();
    let id = client_id_on_shard("reauth", 1, SHARDS);
    let (mut raw, connack) = connect_toy(authed.addr, &id, None);
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    assert_eq!(raw.subscribe(&[("reauth/t", QoS::AtLeastOnce)]), [ReasonCode::GRANTED_QOS_1]);
    authed.calls();
    for attempt in 0..2 {
        raw.send(&auth(ReasonCode::RE_AUTHENTICATE, "TOY", Some(b"again")));
        assert_eq!(
            auth_of(raw.recv()),
            (ReasonCode::CONTINUE_AUTHENTICATION, some("TOY"), bytes(b"nonce")),
            "attempt {attempt}"
        );
        // Other packets are served in the middle of a re-authentication.
        raw.publish("reauth/t", b"during", QoS::AtLeastOnce);
        assert_eq!(&raw.receive_acking(1)[0].payload[..], b"during");
        raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TOY", Some(ANSWER)));
        assert_eq!(auth_of(raw.recv()), (ReasonCode::SUCCESS, some("TOY"), bytes(b"welcome")));
        assert_eq!(
            authed.calls(),
            [call(&id, "TOY", Some(b"again"), 0, true), call(&id, "TOY", Some(ANSWER), 1, true)]
        );
    }
    assert_eq!(raw.sync(), []);
    raw.disconnect();
}

/// A failing re-authentication: DISCONNECT with the hook's code (0x87) and close
/// [MQTT-4.12.1-2]; a subscriber on the other shard is unaffected.
#[test]
fn failing_reauthentication_disconnects_with_the_hook_code() {
    let authed = Authed::start();
    let id = client_id_on_shard("reauth-fail", 0, SHARDS);
    let (mut raw, connack) = connect_toy(authed.addr, &id, None);
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    let mut bystander = connect_plain(authed.addr, &client_id_on_shard("bystander", 1, SHARDS));
    assert_eq!(bystander.subscribe(&[("fail/t", QoS::AtLeastOnce)]), [ReasonCode::GRANTED_QOS_1]);
    authed.calls();

    raw.send(&auth(ReasonCode::RE_AUTHENTICATE, "TOY", None));
    assert_eq!(
        auth_of(raw.recv()),
        (ReasonCode::CONTINUE_AUTHENTICATION, some("TOY"), bytes(b"nonce"))
    );
    raw.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, "TOY", Some(b"nonce:stale")));
    assert_eq!(
        raw.packets_until_closed(),
        [Packet::Disconnect(Disconnect::new(ReasonCode::NOT_AUTHORIZED))]
    );
    assert_eq!(
        authed.calls(),
        [call(&id, "TOY", None, 0, true), call(&id, "TOY", Some(b"nonce:stale"), 1, true)]
    );
    let mut publisher = connect_plain(authed.addr, &client_id_on_shard("fail-pub", 0, SHARDS));
    publisher.publish("fail/t", b"still fine", QoS::AtLeastOnce);
    assert_eq!(&bystander.receive_acking(1)[0].payload[..], b"still fine");
}

/// Re-authentication must use the method of CONNECT [MQTT-4.12.1-1], and AUTH 0x18
/// is only an answer to the server's AUTH 0x18 [MQTT-4.12.0-3]: either otherwise is
/// a Protocol Error, DISCONNECT 0x82 and close [MQTT-4.13.1-1]. The hook is not
/// asked.
#[test]
fn reauthentication_out_of_turn_or_with_another_method_is_a_protocol_error() {
    let authed = Authed::start();
    let cases: [(&str, Packet); 3] = [
        ("another-method", auth(ReasonCode::RE_AUTHENTICATE, "ONESHOT", None)),
        ("out-of-turn", auth(ReasonCode::CONTINUE_AUTHENTICATION, "TOY", Some(ANSWER))),
        (
            "no-method",
            Packet::Auth(Auth {
                reason: ReasonCode::RE_AUTHENTICATE,
                properties: Properties::default().into(),
            }),
        ),
    ];
    for (i, (name, packet)) in cases.into_iter().enumerate() {
        let id = client_id_on_shard(name, i % SHARDS, SHARDS);
        let (mut raw, connack) = connect_toy(authed.addr, &id, None);
        assert_eq!(connack.reason, ReasonCode::SUCCESS);
        authed.calls();
        raw.send(&packet);
        assert_eq!(
            raw.packets_until_closed(),
            [Packet::Disconnect(Disconnect::new(ReasonCode::PROTOCOL_ERROR))],
            "{name}"
        );
        assert_eq!(authed.calls(), [], "{name}");
    }
}

/// AUTH from a client that connected without an Authentication Method: a client
/// MUST NOT send it [MQTT-4.12.0-7], and the server never answers with AUTH
/// [MQTT-4.12.0-6]; it is a Protocol Error, DISCONNECT 0x82 and close. A bystander
/// on the same shard is unaffected, and the hook is never asked.
fn auth_without_method(shard: usize) {
    let authed = Authed::start();
    let mut bystander = connect_plain(authed.addr, &client_id_on_shard("calm", shard, SHARDS));
    assert_eq!(bystander.subscribe(&[("calm/t", QoS::AtLeastOnce)]), [ReasonCode::GRANTED_QOS_1]);
    let mut offender = connect_plain(authed.addr, &client_id_on_shard("offender", shard, SHARDS));
    assert_eq!(offender.subscribe(&[("calm/t", QoS::AtLeastOnce)]), [ReasonCode::GRANTED_QOS_1]);
    offender.send(&auth(ReasonCode::RE_AUTHENTICATE, "TOY", Some(b"hello")));
    assert_eq!(
        offender.packets_until_closed(),
        [Packet::Disconnect(Disconnect::new(ReasonCode::PROTOCOL_ERROR))]
    );
    assert_eq!(bystander.sync(), []);
    let mut publisher =
        connect_plain(authed.addr, &client_id_on_shard("calm-pub", 1 - shard, SHARDS));
    publisher.publish("calm/t", b"business as usual", QoS::AtLeastOnce);
    assert_eq!(&bystander.receive_acking(1)[0].payload[..], b"business as usual");
    assert_eq!(authed.calls(), []);
}

#[test]
fn auth_without_method_is_a_protocol_error_on_shard_0() {
    auth_without_method(0);
}

#[test]
fn auth_without_method_is_a_protocol_error_on_shard_1() {
    auth_without_method(1);
}

/// The same AUTH from an MQTT 3.1.1 client: packet type 15 is reserved there, so
/// the connection is closed, without any MQTT 5 DISCONNECT.
#[test]
fn auth_packet_from_an_mqtt3_client_closes_it() {
    let authed = Authed::start();
    let (mut raw, _) = Raw::connect(authed.addr, &client_id_on_shard("v3", 0, SHARDS), true);
    // AUTH 0x19 with method "TOY", as MQTT 5 would encode it.
    raw.send_bytes(&common::encode_as(
        &auth(ReasonCode::RE_AUTHENTICATE, "TOY", None),
        ProtocolVersion::V5,
    ));
    raw.expect_closed();
    assert_eq!(authed.calls(), []);
}

/// A real client library with a single-round method: rumqttc 0.24 sends the method,
/// data and user name in CONNECT and gets CONNACK 0x00 with the method. (rumqttc
/// implements no AUTH packet, so a method with a challenge cannot be used with it.)
#[tokio::test(flavor = "current_thread")]
async fn rumqttc_connects_with_a_single_round_method() {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet as Packet5};
    let authed = Authed::start();
    let id = client_id_on_shard("rumqttc-auth", 1, SHARDS);
    let mut options =
        rumqttc::v5::MqttOptions::new(&id, authed.addr.ip().to_string(), authed.addr.port());
    options
        .set_credentials("carol", "pw")
        .set_authentication_method(Some("ONESHOT".to_owned()))
        .set_authentication_data(Some(Bytes::from_static(b"tok")));
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let event = tokio::time::timeout(common::WAIT, eventloop.poll())
        .await
        .expect("CONNACK in time")
        .expect("connected");
    let connack = match event {
        rumqttc::v5::Event::Incoming(Packet5::ConnAck(connack)) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    assert_eq!(connack.code, ConnectReturnCode::Success);
    let method = connack.properties.and_then(|p| p.authentication_method);
    assert_eq!(method.as_deref(), Some("ONESHOT"), "[MQTT-4.12.0-5]");
    assert_eq!(
        authed.calls(),
        [Call { username: some("carol"), ..call(&id, "ONESHOT", Some(b"tok"), 0, false) }]
    );
}
