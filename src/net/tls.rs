//! TLS for MQTT listeners (rustls, ring provider): loading certificates and keys
//! into an acceptor, and the server connection of each socket as a [`Layer`].
//!
//! [`TlsAcceptor::load`] only reads files and builds values: a reload (SIGHUP) that
//! fails leaves the running acceptor as it was, and one that succeeds replaces it
//! for the connections accepted after.
//!
//! # Invariants
//! - Client certificates are asked for only with `ca_file`, and then verified
//!   against it (and its CRLs); `require_certificate` makes them mandatory.
//! - The layer drains rustls after every call: records to send go to `wire`,
//!   plaintext to `app`, so rustls holds no plaintext between calls.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore, ServerConfig, ServerConnection};
use x509_parser::extensions::GeneralName;

use super::layer::{Layer, LayerError};

/// The TLS settings of a listener (a `[[listener]]` block of the config file).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct TlsSettings {
    /// PEM file with the server's certificate chain, its own certificate first.
    pub cert: PathBuf,
    /// PEM file with the server's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// PEM file of the CAs that client certificates are verified against. Without
    /// it, no client certificate is asked for.
    pub ca_file: Option<PathBuf>,
    /// PEM file of certificate revocation lists from those CAs (needs `ca_file`).
    pub crl_file: Option<PathBuf>,
    /// Clients must present a certificate (needs `ca_file`); otherwise one is
    /// optional, and verified when presented.
    #[serde(default)]
    pub require_certificate: bool,
    /// The client certificate's identity (its subject CN, else its first DNS or
    /// email SAN) replaces the CONNECT username (needs `require_certificate`).
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// Why the TLS files of a listener cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds malformed PEM.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file holds no item of the kind it is for.
    #[error("{}: no {what} in the file", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
    },
    /// A certificate, key or CRL was read but cannot be used.
    #[error("{}: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the one of the certificate.
    #[error("{}: the private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// Settings that cannot work together.
    #[error("TLS settings: {0}")]
    Settings(&'static str),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// What a listener's TLS connections carry, which decides the ALPN protocols offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Carrying {
    /// MQTT bytes: ALPN `mqtt` offered.
    Mqtt,
    /// MQTT over WebSocket: ALPN `http/1.1` offered, which browsers ask for.
    WebSocket,
}

/// A listener's TLS configuration: built from the files, once per reload, and
/// shared read-only by the connections of every shard.
///
/// Load it once and clone it into every shard (a clone is a reference count): the
/// session ticket key lives in it, so a client resumes on whichever shard accepts
/// its next connection.
#[derive(Clone, Debug)]
pub(crate) struct TlsAcceptor {
    config: Arc<ServerConfig>,
    use_identity_as_username: bool,
}

impl TlsAcceptor {
    /// Reads the files of `settings` for a listener of MQTT over TLS.
    #[cfg(test)]
    pub fn load(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
        Self::load_carrying(settings, Carrying::Mqtt)
    }

    /// Reads the files of `settings` for a listener carrying `carrying`.
    pub fn load_carrying(
        settings: &TlsSettings,
        carrying: Carrying,
    ) -> Result<TlsAcceptor, TlsError> {
        if settings.require_certificate && settings.ca_file.is_none() {
            return Err(TlsError::Settings("require_certificate needs ca_file"));
        }
        if settings.crl_file.is_some() && settings.ca_file.is_none() {
            return Err(TlsError::Settings("crl_file needs ca_file"));
        }
        if settings.use_identity_as_username && !settings.require_certificate {
            return Err(TlsError::Settings("use_identity_as_username needs require_certificate"));
        }
        let provider = Arc::new(provider());
        let certified = certified_key(&settings.cert, &settings.key, &provider)?;
        let verifier = client_verifier(settings, &provider)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        // The server's preference; a client that offers no ALPN is served all the
        // same, one that offers only other protocols is refused (RFC 7301 3.2).
        config.alpn_protocols = match carrying {
            Carrying::Mqtt => vec![b"mqtt".to_vec()],
            Carrying::WebSocket => vec![b"http/1.1".to_vec()],
        };
        // Resumption skips the certificate signature (and the client chain's
        // verification), the costly part of a handshake, for clients that
        // reconnect. Two ways, as clients differ:
        // - Tickets (TLS 1.3, and TLS 1.2 clients that ask): stateless, the server
        //   keeps nothing per session; each full handshake costs one AEAD
        //   encryption and a ticket on the wire (~200 bytes, plus the client's
        //   certificate chain, which the ticket carries). The key (rotated every 6
        //   hours, tickets live 12) is shared by every shard through this config,
        //   behind a read-write lock that is read once per ticket made or used.
        // - rustls' default session cache, for TLS 1.2 clients without tickets:
        //   at most 256 sessions (a few hundred bytes each, plus the client chain),
        //   behind one mutex that every shard takes once per such handshake.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
        // One ticket per handshake, not rustls' two: an MQTT client holds one
        // connection, and each resumption brings it a fresh ticket.
        config.send_tls13_tickets = 1;
        Ok(TlsAcceptor {
            config: Arc::new(config),
            use_identity_as_username: settings.use_identity_as_username,
        })
    }

    /// A new server connection, as the bottom layer of a socket's stack.
    pub fn layer(&self) -> Result<Box<dyn Layer>, LayerError> {
        let conn = ServerConnection::new(Arc::clone(&self.config))?;
        Ok(Box::new(TlsLayer {
            conn,
            use_identity_as_username: self.use_identity_as_username,
            peer_closed: false,
            close_sent: false,
        }))
    }
}

/// The crypto of every TLS listener: ring, with its default suites and groups
/// (TLS 1.3 and 1.2, AES-GCM and ChaCha20-Poly1305, X25519 and the NIST curves).
// rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange;
// aws-lc-rs, which has it, needs cmake and a C toolchain to build.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The chain and key of the server, checked against each other.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = pem_items::<CertificateDer<'static>>(cert, "certificate")?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            TlsError::Missing { path: key.into(), what: "private key (PKCS#8, PKCS#1 or SEC1 PEM)" }
        }
        e => read_error(key, &e),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Unusable { path: key.into(), reason: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // The provider could not tell: the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch { key: key.into(), cert: cert.into() })
        }
        Err(e) => Err(TlsError::Unusable { path: cert.into(), reason: e.to_string() }),
    }
}

/// The CA certificates of `ca_file`.
fn root_store(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in pem_items::<CertificateDer<'static>>(ca_file, "CA certificate")? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Unusable { path: ca_file.into(), reason: e.to_string() })?;
    }
    Ok(roots)
}

/// The TLS of node links (`cluster_tls_*`): TLS 1.3 with a certificate both ways,
/// each verified against the cluster's CA, and the connecting node checks that the
/// accepting node's certificate names the address it connected to. Nodes run the
/// same software, so nothing older than 1.3 is offered.
#[derive(Clone)]
pub(crate) struct NodeTls {
    /// For the links other nodes open to this one.
    pub server: Arc<ServerConfig>,
    /// For the links this node opens.
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls")
    }
}

impl NodeTls {
    /// Reads the node's certificate chain, its key and the cluster's CA.
    pub fn load(cert: &Path, key: &Path, ca_file: &Path) -> Result<NodeTls, TlsError> {
        let provider = Arc::new(provider());
        let certified = Arc::new(certified_key(cert, key, &provider)?);
        let roots = Arc::new(root_store(ca_file)?);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Unusable { path: ca_file.into(), reason: e.to_string() })?;
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&certified))));
        // A link carries frames one way: the connecting node never reads after the
        // handshake, so a ticket would only wait in its socket.
        server.send_tls13_tickets = 0;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        Ok(NodeTls { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// What checks client certificates: nothing without `ca_file`.
fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let Some(ca_file) = &settings.ca_file else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let roots = root_store(ca_file)?;
    let crls = match &settings.crl_file {
        Some(crl_file) => pem_items::<CertificateRevocationListDer<'static>>(
            crl_file,
            "certificate revocation list",
        )?,
        None => Vec::new(),
    };
    // Revocation of the client's own certificate only, as OpenSSL's CRL_CHECK
    // (Mosquitto's `crlfile`) does: a CRL of the client's issuer must be in the
    // file, and intermediate CAs are not checked.
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls)
            .only_check_end_entity_revocation();
    if !settings.require_certificate {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| match (e, &settings.crl_file) {
        (VerifierBuilderError::InvalidCrl(e), Some(crl_file)) => {
            TlsError::Unusable { path: crl_file.clone(), reason: format!("bad CRL: {e:?}") }
        }
        (e, _) => TlsError::Unusable { path: ca_file.clone(), reason: e.to_string() },
    })
}

/// Every PEM item of type `T` in `path`; at least one.
fn pem_items<T: PemObject>(path: &Path, what: &'static str) -> Result<Vec<T>, TlsError> {
    let items = T::pem_file_iter(path)
        .map_err(|e| read_error(path, &e))?
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| read_error(path, &e))?;
    if items.is_empty() {
        return Err(TlsError::Missing { path: path.into(), what });
    }
    Ok(items)
}

fn read_error(path: &Path, e: &pem::Error) -> TlsError {
    TlsError::Read { path: path.into(), reason: e.to_string() }
}

/// The server side of one TLS connection.
#[derive(Debug)]
struct TlsLayer {
    conn: ServerConnection,
    use_identity_as_username: bool,
    peer_closed: bool,
    close_sent: bool,
}

impl Layer for TlsLayer {
    fn input(
        &mut self,
        bytes: &[u8],
        app: &mut BytesMut,
        wire: &mut BytesMut,
    ) -> Result<(), LayerError> {
        let mut rest = bytes;
        let result = loop {
            if rest.is_empty() {
                break Ok(());
            }
            // rustls takes at most one buffer's worth (4 KiB, or one record) at a
            // time, so this loops over larger inputs.
            match self.conn.read_tls(&mut rest) {
                // After close_notify rustls reads nothing more; the rest is dropped.
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(LayerError::TlsRecords(e)),
            }
            match self.conn.process_new_packets() {
                Ok(state) => self.peer_closed |= state.peer_has_closed(),
                Err(e) => {
                    // rustls queued an alert: that is this connection's goodbye.
                    self.close_sent = true;
                    break Err(e.into());
                }
            }
            // Drained at every step: rustls refuses records while it holds 16 KiB
            // of plaintext.
            let mut reader = self.conn.reader();
            while let Ok(chunk) = reader.fill_buf() {
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len();
                app.extend_from_slice(chunk);
                reader.consume(n);
            }
        };
        // Handshake records, tickets, and an alert after an error.
        self.flush(wire);
        result
    }

    fn output(&mut self, app: &[u8], wire: &mut BytesMut) -> Result<(), LayerError> {
        if self.close_sent {
            // Nothing may follow close_notify; the connection is ending.
            return Ok(());
        }
        let mut rest = app;
        while !rest.is_empty() {
            // rustls encrypts up to its buffer limit (64 KiB) at a time: flushing
            // between steps keeps a large message from being held twice.
            let n = self.conn.writer().write(rest).map_err(LayerError::TlsRecords)?;
            self.flush(wire);
            if n == 0 {
                return Err(LayerError::TlsRecords(std::io::ErrorKind::WriteZero.into()));
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        !self.conn.is_handshaking()
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    fn close(&mut self, wire: &mut BytesMut) {
        if !self.close_sent {
            self.conn.send_close_notify();
            self.flush(wire);
            self.close_sent = true;
        }
    }

    /// The client certificate's subject CN, else its first DNS or email SAN, where
    /// the listener takes it as the username.
    fn peer_identity(&self) -> Option<String> {
        if !self.use_identity_as_username {
            return None;
        }
        identity(self.conn.peer_certificates()?.first()?)
    }
}

impl TlsLayer {
    /// Moves every record rustls has to send into `wire`.
    fn flush(&mut self, wire: &mut BytesMut) {
        let mut out = (&mut *wire).writer();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).expect("writing to memory cannot fail");
        }
    }
}

/// A certificate's identity: the subject's CN, else its first DNS or email SAN.
/// Parsed when asked (once, at CONNECT), so no connection keeps it.
///
/// x509-parser, not rustls' webpki, which verifies chains but gives no access to
/// the subject's attributes; it is rusticata's parser, used by rcgen and Suricata.
fn identity(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().find_map(|cn| cn.as_str().ok());
    if let Some(cn) = cn.filter(|cn| !cn.is_empty()) {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(s) | GeneralName::RFC822Name(s) => Some((*s).to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
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
            self.client(
                Some("alice"),
                vec![SanType::DnsName("alice.example".try_into().unwrap())],
                2,
            )
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
        let identity =
            TlsSettings { use_identity_as_username: true, ..f.settings_with_clients(false) };
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
}
