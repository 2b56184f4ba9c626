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
mod tests;
