use std::io::Read;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, ClientConnection, HandshakeKind};

use super::*;
use crate::net::layer::Stack;
use crate::net::ws::{self, tests as wst};

/// A certificate authority made for one test.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate and its key.
struct Leaf {
    pem: String,
    key: KeyPair,
    serial: u64,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn issue(&self, mut params: CertificateParams, serial: u64) -> Leaf {
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        Leaf { pem: params.signed_by(&key, &issuer).unwrap().pem(), key, serial }
    }

    fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, 1)
    }

    /// A client certificate with subject CN `cn` (if any) and these SANs.
    fn client(&self, cn: Option<&str>, sans: Vec<SanType>, serial: u64) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, serial)
    }

    fn alice(&self) -> Leaf {
        self.client(Some("alice"), vec![SanType::DnsName("alice.example".try_into().unwrap())], 2)
    }

    /// A CRL that revokes `revoked`.
    fn crl(&self, revoked: &[&Leaf]) -> String {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| RevokedCertParams {
                    serial_number: SerialNumber::from(leaf.serial),
                    revocation_time: date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&Issuer::from_params(&self.params, &self.key))
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// A CA, a server certificate and the files of both, in a directory of the test.
struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Leaf,
}

impl Fixture {
    fn new() -> Fixture {
        let ca = Ca::new("test CA");
        let server = ca.server();
        Fixture { dir: tempfile::tempdir().unwrap(), ca, server }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The server's files, no client certificates.
    fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert: self.write("server.pem", &self.server.pem),
            key: self.write("server.key", &self.server.key.serialize_pem()),
            ca_file: None,
            crl_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        }
    }

    /// Client certificates from the fixture's CA, required or optional.
    fn settings_with_clients(&self, require: bool) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.write("ca.pem", &self.ca.pem)),
            require_certificate: require,
            use_identity_as_username: require,
            ..self.settings()
        }
    }

    fn acceptor(&self, settings: &TlsSettings) -> TlsAcceptor {
        TlsAcceptor::load(settings).unwrap()
    }

    /// A client trusting the fixture's CA, offering ALPN `mqtt`.
    fn client(&self, cert: Option<&Leaf>) -> ClientConfig {
        self.client_with(cert, rustls::DEFAULT_VERSIONS)
    }

    fn client_with(
        &self,
        cert: Option<&Leaf>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca.pem.as_bytes()).unwrap()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(leaf) => {
                let chain = vec![CertificateDer::from_pem_slice(leaf.pem.as_bytes()).unwrap()];
                let key = PrivateKeyDer::from_pem_slice(leaf.key.serialize_pem().as_bytes());
                builder.with_client_auth_cert(chain, key.unwrap()).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"mqtt".to_vec()];
        config
    }
}

/// A rustls client and a stack, joined in memory.
struct Pair {
    client: ClientConnection,
    stack: Stack,
    /// What the stack delivered upward.
    app: BytesMut,
    /// Plaintext the client received.
    received: Vec<u8>,
    client_error: Option<rustls::Error>,
    client_saw_close: bool,
}

impl Pair {
    fn new(layers: Vec<Box<dyn Layer>>, config: impl Into<Arc<ClientConfig>>) -> Pair {
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            client: ClientConnection::new(config.into(), name).unwrap(),
            stack: Stack::new(layers),
            app: BytesMut::new(),
            received: Vec::new(),
            client_error: None,
            client_saw_close: false,
        }
    }

    fn tls(acceptor: &TlsAcceptor, config: impl Into<Arc<ClientConfig>>) -> Pair {
        Pair::new(vec![acceptor.layer().unwrap()], config)
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn drive(&mut self) -> Result<(), LayerError> {
        for _ in 0..64 {
            let mut to_server = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut to_server).unwrap();
            }
            let mut wire = BytesMut::new();
            let result = match to_server.is_empty() {
                true => Ok(()),
                false => self.stack.input(&to_server, &mut self.app, &mut wire),
            };
            self.give_client(&wire);
            result?;
            if to_server.is_empty() && wire.is_empty() {
                return Ok(());
            }
        }
        panic!("the two sides never went quiet");
    }

    fn give_client(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.client_error.is_none() {
            if self.client.read_tls(&mut bytes).unwrap() == 0 {
                return;
            }
            match self.client.process_new_packets() {
                Ok(state) => self.client_saw_close |= state.peer_has_closed(),
                Err(e) => self.client_error = Some(e),
            }
            // Stops at WouldBlock, having read what there was.
            let _ = self.client.reader().read_to_end(&mut self.received);
        }
    }

    fn client_sends(&mut self, mut bytes: &[u8]) -> Result<(), LayerError> {
        // The client takes up to its buffer limit at a time.
        while !bytes.is_empty() {
            let n = self.client.writer().write(bytes).unwrap();
            self.drive()?;
            bytes = &bytes[n..];
        }
        self.drive()
    }

    fn server_sends(&mut self, bytes: &[u8]) {
        let mut wire = BytesMut::new();
        self.stack.output(bytes, &mut wire).unwrap();
        self.give_client(&wire);
    }
}

fn tls_error(result: Result<(), LayerError>) -> rustls::Error {
    match result {
        Err(LayerError::Tls(e)) => e,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[test]
fn handshake_then_mqtt_bytes_both_ways() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings());
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut pair = Pair::tls(&acceptor, f.client_with(None, &[version]));
        assert!(!pair.stack.ready());
        pair.drive().unwrap();
        assert!(pair.stack.ready());
        assert_eq!(pair.client.protocol_version(), Some(version.version));
        assert_eq!(pair.client.alpn_protocol(), Some(&b"mqtt"[..]));
        pair.client_sends(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00").unwrap();
        assert_eq!(&pair.app[..], b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
        pair.server_sends(b"\x20\x02\x00\x00");
        assert_eq!(pair.received, b"\x20\x02\x00\x00");
        assert_eq!(pair.stack.peer_identity(), None);
    }
}

#[test]
fn alpn_mqtt_is_offered_and_clients_without_alpn_are_served() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings());
    let mut config = f.client(None);
    config.alpn_protocols = vec![];
    let mut pair = Pair::tls(&acceptor, config);
    pair.drive().unwrap();
    assert!(pair.stack.ready());
    assert_eq!(pair.client.alpn_protocol(), None);
    // A client that asks only for something else is refused (RFC 7301 3.2).
    let mut config = f.client(None);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let mut pair = Pair::tls(&acceptor, config);
    assert_eq!(tls_error(pair.drive()), rustls::Error::NoApplicationProtocol);
    // A WebSocket listener offers what browsers ask for.
    let acceptor = TlsAcceptor::load_carrying(&f.settings(), Carrying::WebSocket).unwrap();
    let mut config = f.client(None);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut pair = Pair::tls(&acceptor, config);
    pair.drive().unwrap();
    assert_eq!(pair.client.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn large_messages_pass_both_ways() {
    let f = Fixture::new();
    let mut pair = Pair::tls(&f.acceptor(&f.settings()), f.client(None));
    pair.drive().unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    pair.client_sends(&big).unwrap();
    assert_eq!(&pair.app[..], &big[..]);
    pair.server_sends(&big);
    assert_eq!(pair.received, big);
}

#[test]
fn a_required_client_certificate_is_verified() {
    let f = Fixture::new();
    let alice = f.ca.alice();
    let acceptor = f.acceptor(&f.settings_with_clients(true));

    let mut pair = Pair::tls(&acceptor, f.client(Some(&alice)));
    pair.drive().unwrap();
    assert!(pair.stack.ready());
    assert_eq!(pair.stack.peer_identity().as_deref(), Some("alice"));

    let mut pair = Pair::tls(&acceptor, f.client(None));
    assert_eq!(tls_error(pair.drive()), rustls::Error::NoCertificatesPresented);
    assert!(pair.client_error.is_some(), "the client got the alert");
    let mut wire = BytesMut::new();
    pair.stack.close(&mut wire);
    assert!(wire.is_empty(), "the alert was the goodbye");

    let other = Ca::new("other CA").alice();
    let mut pair = Pair::tls(&acceptor, f.client(Some(&other)));
    let e = tls_error(pair.drive());
    assert_eq!(e, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));

    let mut params = CertificateParams::new(vec!["late.example".to_string()]).unwrap();
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2001, 1, 1);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let expired = f.ca.issue(params, 3);
    let mut pair = Pair::tls(&acceptor, f.client(Some(&expired)));
    let e = tls_error(pair.drive());
    assert!(
        matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{e:?}"
    );
}

#[test]
fn an_optional_client_certificate_is_verified_when_presented() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings_with_clients(false));
    let mut pair = Pair::tls(&acceptor, f.client(None));
    pair.drive().unwrap();
    assert!(pair.stack.ready());
    let mut pair = Pair::tls(&acceptor, f.client(Some(&f.ca.alice())));
    pair.drive().unwrap();
    assert!(pair.stack.ready());
    assert_eq!(pair.stack.peer_identity(), None, "identity is not the username here");
    let other = Ca::new("other CA").alice();
    let mut pair = Pair::tls(&acceptor, f.client(Some(&other)));
    assert!(pair.drive().is_err());
}

#[test]
fn a_revoked_client_certificate_is_refused() {
    let f = Fixture::new();
    let (alice, bob) = (f.ca.alice(), f.ca.client(Some("bob"), vec![], 4));
    let settings = TlsSettings {
        crl_file: Some(f.write("crl.pem", &f.ca.crl(&[&bob]))),
        ..f.settings_with_clients(true)
    };
    let acceptor = f.acceptor(&settings);
    let mut pair = Pair::tls(&acceptor, f.client(Some(&alice)));
    pair.drive().unwrap();
    let mut pair = Pair::tls(&acceptor, f.client(Some(&bob)));
    let e = tls_error(pair.drive());
    assert_eq!(e, rustls::Error::InvalidCertificate(CertificateError::Revoked));
}

#[test]
fn identity_is_the_cn_else_the_first_dns_or_email_san() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings_with_clients(true));
    let dns = |s: &str| SanType::DnsName(s.try_into().unwrap());
    let email = |s: &str| SanType::Rfc822Name(s.try_into().unwrap());
    let ip = SanType::IpAddress([10, 0, 0, 1].into());
    for (cn, sans, expected) in [
        (Some("alice"), vec![dns("alice.example")], Some("alice")),
        (
            None,
            vec![ip.clone(), dns("device-7.example"), email("x@example")],
            Some("device-7.example"),
        ),
        (None, vec![email("ops@example.com"), dns("b.example")], Some("ops@example.com")),
        (None, vec![ip], None),
    ] {
        let leaf = f.ca.client(cn, sans, 9);
        let mut pair = Pair::tls(&acceptor, f.client(Some(&leaf)));
        pair.drive().unwrap();
        assert_eq!(pair.stack.peer_identity().as_deref(), expected);
    }
}

#[test]
fn close_notify_both_ways() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings());
    let mut pair = Pair::tls(&acceptor, f.client(None));
    pair.drive().unwrap();
    pair.client.send_close_notify();
    pair.drive().unwrap();
    assert!(pair.stack.peer_closed());

    let mut pair = Pair::tls(&acceptor, f.client(None));
    pair.drive().unwrap();
    let mut wire = BytesMut::new();
    pair.stack.close(&mut wire);
    pair.stack.close(&mut wire);
    pair.give_client(&wire);
    assert!(pair.client_saw_close);
    let mut wire = BytesMut::new();
    pair.stack.output(b"late", &mut wire).unwrap();
    assert!(wire.is_empty(), "nothing follows close_notify");
}

#[test]
fn a_reconnecting_client_resumes_on_any_shard() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings_with_clients(true));
    // Every shard holds a clone of the one acceptor.
    let shards = [acceptor.clone(), acceptor];
    let alice = f.ca.alice();
    for versions in [&[&rustls::version::TLS13], &[&rustls::version::TLS12]] {
        let config = Arc::new(f.client_with(Some(&alice), versions));
        let mut first = Pair::tls(&shards[0], config.clone());
        first.drive().unwrap();
        assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));
        let mut second = Pair::tls(&shards[1], config);
        second.drive().unwrap();
        assert_eq!(second.client.handshake_kind(), Some(HandshakeKind::Resumed));
        // The resumed session keeps the client's certificate, and so its identity.
        assert_eq!(second.stack.peer_identity().as_deref(), Some("alice"));
    }
}

#[test]
fn load_names_the_file_and_what_is_wrong() {
    let f = Fixture::new();
    let check = |settings: &TlsSettings, expected: &[&str]| {
        let e = TlsAcceptor::load(settings).unwrap_err().to_string();
        for part in expected {
            assert!(e.contains(part), "{e:?} should contain {part:?}");
        }
    };
    let good = f.settings();
    let other_key = f.write("other.key", &KeyPair::generate().unwrap().serialize_pem());
    let key = other_key.display().to_string();
    let cert = good.cert.display().to_string();
    check(&TlsSettings { key: other_key, ..good.clone() }, &[&key, "does not match", &cert]);
    let missing = f.dir.path().join("missing.pem");
    let path = missing.display().to_string();
    check(&TlsSettings { cert: missing, ..good.clone() }, &["cannot read", &path]);
    let keys = f.write("keys.pem", &f.server.key.serialize_pem());
    let path = keys.display().to_string();
    check(&TlsSettings { cert: keys, ..good.clone() }, &[&path, "no certificate"]);
    let certs = f.write("certs.pem", &f.server.pem);
    let path = certs.display().to_string();
    check(&TlsSettings { key: certs, ..good.clone() }, &[&path, "no private key"]);
    let crl = f.write("bad.crl", "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
    let path = crl.display().to_string();
    let with_crl = TlsSettings { crl_file: Some(crl), ..f.settings_with_clients(true) };
    check(&with_crl, &[&path, "bad CRL"]);
    check(&TlsSettings { require_certificate: true, ..good.clone() }, &["needs ca_file"]);
    let identity = TlsSettings { use_identity_as_username: true, ..f.settings_with_clients(false) };
    check(&identity, &["needs require_certificate"]);
}

/// Node links: the files load, and a bad one stops the start with its name.
#[test]
fn node_tls_loads_and_names_the_bad_file() {
    let f = Fixture::new();
    let cert = f.write("node.pem", &f.server.pem);
    let key = f.write("node.key", &f.server.key.serialize_pem());
    let ca = f.write("ca.pem", &f.ca.pem);
    let tls = NodeTls::load(&cert, &key, &ca).expect("loads");
    assert!(tls.client.client_auth_cert_resolver.has_certs(), "a node proves itself");
    assert_eq!(tls.server.send_tls13_tickets, 0);
    let missing = f.dir.path().join("missing-ca.pem");
    let e = NodeTls::load(&cert, &key, &missing).unwrap_err().to_string();
    assert!(e.contains("cannot read") && e.contains("missing-ca.pem"), "{e}");
    let e = NodeTls::load(&cert, &ca, &ca).unwrap_err().to_string();
    assert!(e.contains("no private key"), "{e}");
}

#[test]
fn a_sec1_ec_key_loads() {
    let f = Fixture::new();
    // rcgen writes PKCS#8; its EC key inside is the SEC1 `ECPrivateKey`.
    let pkcs8 = f.server.key.serialize_der();
    let sec1 = der_elements(der_elements(&pkcs8)[0])[2];
    let pem = ::pem::encode(&::pem::Pem::new("EC PRIVATE KEY", sec1.to_vec()));
    let settings = TlsSettings { key: f.write("server.sec1", &pem), ..f.settings() };
    let acceptor = TlsAcceptor::load(&settings).unwrap();
    let mut pair = Pair::tls(&acceptor, f.client(None));
    pair.drive().unwrap();
    assert!(pair.stack.ready());
}

/// The contents of each DER element in `der`.
fn der_elements(mut der: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (len, head) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x81 => (usize::from(der[2]), 3),
            0x82 => (usize::from(u16::from_be_bytes([der[2], der[3]])), 4),
            n => panic!("length form {n:#x}"),
        };
        out.push(&der[head..head + len]);
        der = &der[head + len..];
    }
    out
}

#[test]
fn mqtt_over_websocket_over_tls_end_to_end() {
    let f = Fixture::new();
    let acceptor = TlsAcceptor::load_carrying(&f.settings(), Carrying::WebSocket).unwrap();
    let ws = ws::ws_layer(&ws::WsSettings::default(), 1024);
    let mut config = f.client(None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut pair = Pair::new(vec![acceptor.layer().unwrap(), ws], config);
    pair.drive().unwrap();
    assert!(!pair.stack.ready(), "TLS is up, the WebSocket upgrade is not");
    let header = "Sec-WebSocket-Protocol: mqtt\r\n";
    pair.client_sends(wst::request("/mqtt", header).as_bytes()).unwrap();
    assert!(pair.stack.ready());
    assert_eq!(pair.received, wst::response(Some("mqtt")).as_bytes());
    pair.received.clear();

    let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    let mut frames = wst::binary(&connect[..5]);
    frames.extend(wst::binary(&connect[5..]));
    pair.client_sends(&frames).unwrap();
    assert_eq!(&pair.app[..], connect);
    pair.server_sends(b"\x20\x02\x00\x00");
    assert_eq!(pair.received, b"\x82\x04\x20\x02\x00\x00");
    pair.received.clear();

    // A ping's pong goes down through TLS.
    pair.client_sends(&wst::frame(0x89, b"hb", Some([1, 2, 3, 4]))).unwrap();
    assert_eq!(pair.received, b"\x8a\x02hb");
    pair.received.clear();

    // The client's Close is answered, then TLS says goodbye too.
    pair.client_sends(&wst::frame(0x88, b"\x03\xe8", Some([1, 2, 3, 4]))).unwrap();
    assert!(pair.stack.peer_closed());
    assert_eq!(pair.received, b"\x88\x02\x03\xe8");
    let mut wire = BytesMut::new();
    pair.stack.close(&mut wire);
    pair.give_client(&wire);
    assert!(pair.client_saw_close);
}

#[test]
fn a_refused_upgrade_is_answered_through_tls() {
    let f = Fixture::new();
    let acceptor = f.acceptor(&f.settings());
    let ws = ws::ws_layer(&ws::WsSettings::default(), 1024);
    let mut pair = Pair::new(vec![acceptor.layer().unwrap(), ws], f.client(None));
    pair.drive().unwrap();
    let result = pair.client_sends(wst::request("/elsewhere", "").as_bytes());
    assert!(matches!(result, Err(LayerError::Handshake(_))), "{result:?}");
    assert!(pair.received.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    // TLS, still sound, says goodbye.
    let mut wire = BytesMut::new();
    pair.stack.close(&mut wire);
    pair.give_client(&wire);
    assert!(pair.client_saw_close);
}
