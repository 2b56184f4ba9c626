//! rumqttc, a Rust client library, over TLS (its rustls transport) and through a
//! password file and an ACL, against a broker started through the embedding API:
//! subscriber and publisher on different shards, the certificate made by the test.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{client_id_on_shard, SHARDS, WAIT};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rumqttc::{
    Client, ConnectReturnCode, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport,
};
use shardmq::config::{ListenerConfig, ListenerKind};
use shardmq::security::{set_password, PasswordHash};
use shardmq::{Broker, BrokerHandle, Config};

/// A CA and a server certificate for 127.0.0.1, written under `dir`.
struct Pki {
    ca_pem: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn pki(dir: &std::path::Path) -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    let server = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key)).expect("cert");
    let (cert, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, server.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    Pki { ca_pem: ca.pem(), cert, key: key_path }
}

/// A broker with a TLS listener (beside its plain one), a password file and an ACL.
fn start(dir: &std::path::Path) -> (BrokerHandle, SocketAddr, Pki) {
    common::init_logging();
    let pki = pki(dir);
    let passwd = dir.join("passwd");
    for (user, password) in [("meter", "m3ter"), ("ops", "0ps")] {
        set_password(&passwd, user, &PasswordHash::pbkdf2_sha512(password.as_bytes(), 101))
            .expect("password file");
    }
    let acl = dir.join("acl");
    std::fs::write(&acl, "user meter\ntopic write meters/#\nuser ops\ntopic read meters/#\n")
        .expect("acl");
    let tls = ListenerConfig {
        kind: ListenerKind::Mqtts,
        cert: Some(pki.cert.clone()),
        key: Some(pki.key.clone()),
        ..ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let config = Config {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        listeners: vec![tls],
        cores: std::num::NonZeroUsize::new(SHARDS),
        password_file: Some(passwd),
        acl_file: Some(acl),
        ..Config::default()
    };
    let broker = Broker::new(config).expect("valid").start().expect("starts");
    let addr = broker.local_addrs()[1];
    (broker, addr, pki)
}

type Events = mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>;

fn connect(addr: SocketAddr, pki: &Pki, id: &str, user: &str, password: &str) -> (Client, Events) {
    let mut options = MqttOptions::new(id, "127.0.0.1", addr.port());
    options.set_credentials(user, password);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: pki.ca_pem.clone().into_bytes(),
        alpn: Some(vec![b"mqtt".to_vec()]),
        client_auth: None,
    }));
    let (client, mut connection) = Client::new(options, 64);
    let (tx, events) = mpsc::channel();
    thread::spawn(move || {
        for event in connection.iter() {
            let end = event.is_err();
            if tx.send(event).is_err() || end {
                return;
            }
        }
    });
    (client, events)
}

/// The next incoming packet that is not a ping answer or an outgoing event.
fn next_incoming(events: &Events) -> Result<Incoming, Box<rumqttc::ConnectionError>> {
    loop {
        match events.recv_timeout(WAIT).expect("an event in time") {
            Ok(Event::Incoming(Incoming::PingResp)) | Ok(Event::Outgoing(_)) => {}
            Ok(Event::Incoming(incoming)) => return Ok(incoming),
            Err(e) => return Err(Box::new(e)),
        }
    }
}

#[test]
fn rumqttc_over_tls_with_a_password_and_the_acl_across_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, addr, pki) = start(dir.path());
    let (sub, sub_events) =
        connect(addr, &pki, &client_id_on_shard("ops", 0, SHARDS), "ops", "0ps");
    assert!(
        matches!(next_incoming(&sub_events), Ok(Incoming::ConnAck(c)) if c.code == ConnectReturnCode::Success)
    );
    sub.subscribe("meters/#", QoS::AtLeastOnce).expect("subscribe");
    assert!(matches!(next_incoming(&sub_events), Ok(Incoming::SubAck(_))));
    let (publisher, pub_events) =
        connect(addr, &pki, &client_id_on_shard("meter", 1, SHARDS), "meter", "m3ter");
    assert!(matches!(next_incoming(&pub_events), Ok(Incoming::ConnAck(_))));
    for n in 0..20u8 {
        publisher.publish("meters/7", QoS::AtLeastOnce, false, vec![n; 300]).expect("publish");
    }
    for n in 0..20u8 {
        match next_incoming(&sub_events) {
            Ok(Incoming::Publish(p)) => {
                assert_eq!((&*p.topic, &p.payload[..]), ("meters/7", &[n; 300][..]))
            }
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
    // The ACL lets `ops` read meters/#, not write it: the message is dropped (and
    // acknowledged, as MQTT 3.1.1 has no way to say no).
    sub.publish("meters/8", QoS::AtLeastOnce, false, "forged").expect("publish");
    publisher.publish("meters/9", QoS::AtLeastOnce, false, "real").expect("publish");
    loop {
        match next_incoming(&sub_events) {
            Ok(Incoming::PubAck(_)) => continue,
            Ok(Incoming::Publish(p)) => {
                assert_eq!(&*p.topic, "meters/9", "a denied PUBLISH was delivered");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(broker);
}

#[test]
fn a_wrong_password_over_tls_is_refused_with_code_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, addr, pki) = start(dir.path());
    let (_client, events) = connect(addr, &pki, "intruder", "meter", "guess");
    match next_incoming(&events).map_err(|e| *e) {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
