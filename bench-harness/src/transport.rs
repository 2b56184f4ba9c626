//! The byte stream of one connection: plain TCP, TLS (`--tls`), MQTT over
//! WebSocket (`--ws`), or WebSocket over TLS (both).
//!
//! `Stream` is an enum so that plain TCP, the default and the baseline of every
//! comparison, goes straight to glommio's socket with no layer in between: one
//! predictable branch per read or write.
//!
//! # Invariants
//! - A write returns only once its bytes are on the socket (TLS records written,
//!   WebSocket frame sent), as with plain TCP: `write_all` alone is enough, and in
//!   packet write mode one packet is one TLS record set and one frame.
//! - Every TLS connection makes a full handshake (resumption off), so a
//!   connection storm measures handshakes, not ticket lookups; the key exchange
//!   offered first is X25519, as real clients offer it.

use anyhow::{anyhow, bail, Context as _};
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use crate::cli::Common;
use crate::hosts::Host;
use crate::ws::{self, WsStream};

/// How every connection of a run reaches the broker. Built once from the flags.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    pub tls: Option<TlsClient>,
    pub ws: Option<WsClient>,
}

/// The TLS client side: roots, optional client certificate, the server name.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish()
    }
}

/// The WebSocket upgrade request's path and `Host` header.
#[derive(Debug, Clone)]
pub struct WsClient {
    pub path: String,
    pub host: String,
}

impl Transport {
    /// Checks and loads the transport flags of `c` for the broker `host`.
    pub fn from_flags(c: &Common, host: &Host) -> anyhow::Result<Transport> {
        let broker = host.addr;
        if !c.tls {
            let stray = [
                ("--cafile", c.cafile.is_some()),
                ("--tls-server-name", c.tls_server_name.is_some()),
                ("--cert", c.cert.is_some()),
                ("--key", c.key.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                bail!("{flag} needs --tls");
            }
        }
        let tls = if c.tls {
            let cafile = c.cafile.as_deref().ok_or_else(|| {
                anyhow!("--tls needs --cafile FILE (the CA certificates, PEM, that signed the broker's)")
            })?;
            let client_cert = match (&c.cert, &c.key) {
                (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                (None, None) => None,
                _ => bail!("--cert and --key go together"),
            };
            let server_name = match &c.tls_server_name {
                Some(name) => ServerName::try_from(name.clone())
                    .map_err(|e| anyhow!("--tls-server-name {name:?}: {e}"))?,
                None => ServerName::IpAddress(broker.ip().into()),
            };
            Some(TlsClient::new(cafile, client_cert, server_name)?)
        } else {
            None
        };
        let ws = match &c.ws {
            Some(path) if !path.starts_with('/') => {
                bail!("--ws {path:?}: the path must start with `/`")
            }
            Some(path) => {
                // An IPv6 literal goes in brackets [RFC 9110 7.2].
                let name = if host.name.contains(':') {
                    format!("[{}]", host.name)
                } else {
                    host.name.clone()
                };
                Some(WsClient { path: path.clone(), host: format!("{name}:{}", broker.port()) })
            }
            None => None,
        };
        Ok(Transport { tls, ws })
    }

    /// `tcp`, `tls`, `ws` or `wss`.
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// Opens the layers above a (possibly still connecting) TCP socket.
    pub async fn open(&self, tcp: TcpStream) -> anyhow::Result<Stream> {
        Ok(match (&self.tls, &self.ws) {
            (None, None) => Stream::Tcp(tcp),
            (Some(tls), None) => Stream::Tls(Box::new(TlsWrites::new(tls.handshake(tcp).await?))),
            (None, Some(w)) => Stream::Ws(Box::new(ws::upgrade(tcp, &w.host, &w.path).await?)),
            (Some(tls), Some(w)) => {
                let tls = tls.handshake(tcp).await?;
                Stream::Wss(Box::new(ws::upgrade(tls, &w.host, &w.path).await?))
            }
        })
    }
}

impl TlsClient {
    fn new(
        cafile: &Path,
        client_cert: Option<(&Path, &Path)>,
        server_name: ServerName<'static>,
    ) -> anyhow::Result<TlsClient> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cafile)
            .with_context(|| format!("--cafile {}", cafile.display()))?
        {
            let cert = cert.with_context(|| format!("--cafile {}", cafile.display()))?;
            roots.add(cert).with_context(|| format!("--cafile {}", cafile.display()))?;
        }
        if roots.is_empty() {
            bail!("--cafile {}: no certificate in it", cafile.display());
        }
        let provider = Arc::new(provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("--cert {}", cert.display()))?;
                if chain.is_empty() {
                    bail!("--cert {}: no certificate in it", cert.display());
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("--key {}", key.display()))?;
                builder.with_client_auth_cert(chain, key).context("--cert/--key")?
            }
            None => builder.with_no_client_auth(),
        };
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsClient { connector: TlsConnector::from(Arc::new(config)), server_name })
    }

    async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> anyhow::Result<TlsStream<S>> {
        self.connector.connect(self.server_name.clone(), io).await.context("TLS handshake")
    }
}

/// The crypto of every TLS connection: ring with its default suites, as the
/// broker's listeners use, offering X25519 first, then P-256 and P-384: the order
/// of OpenSSL and the browsers, so what devices send. ring's own order puts P-384
/// first (rustls 0.23.48), and its P-384 is generic bignum code: about 1 ms of CPU
/// per handshake on each side, which made `conn --tls` measure P-384 (found with
/// `perf record` on the generator, half its time in `bn_mul_mont`).
// rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange;
// aws-lc-rs, which has it, needs cmake and a C toolchain to build.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    provider
}

/// The protocol version and cipher suite a TLS connection agreed on.
fn describe(conn: &rustls::ClientConnection) -> Option<String> {
    let version = conn.protocol_version()?;
    let suite = conn.negotiated_cipher_suite()?;
    let version = format!("{version:?}").replace("TLSv1_", "TLS 1.");
    Some(format!("{version} {:?}", suite.suite()))
}

/// One connection's byte stream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsWrites<TlsStream<TcpStream>>>),
    Ws(Box<WsStream<TcpStream>>),
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
}

impl Stream {
    /// TLS: the version and cipher suite agreed on, e.g. `TLS 1.3 TLS13_AES_256_GCM_SHA384`.
    pub fn tls_session(&self) -> Option<String> {
        match self {
            Stream::Tcp(_) | Stream::Ws(_) => None,
            Stream::Tls(s) => describe(s.inner.get_ref().1),
            Stream::Wss(s) => describe(s.get_ref().get_ref().1),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut s.inner).poll_read(cx, buf),
            Stream::Ws(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Wss(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Ws(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Wss(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut s.inner).poll_flush(cx),
            Stream::Ws(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Wss(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(&mut s.inner).poll_close(cx),
            Stream::Ws(s) => Pin::new(&mut **s).poll_close(cx),
            Stream::Wss(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// A stream whose writes return only once they are flushed. A TLS stream takes
/// plaintext into its buffer and may leave records there when the socket is
/// busy, to go out with a later write or flush; callers here never flush.
#[derive(Debug)]
pub struct TlsWrites<S> {
    inner: S,
    /// Bytes of the write under way that the inner stream took, while its flush
    /// is pending. The caller polls again with the same bytes (write_all does).
    taken: Option<usize>,
}

impl<S> TlsWrites<S> {
    fn new(inner: S) -> TlsWrites<S> {
        TlsWrites { inner, taken: None }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = match this.taken {
            Some(n) => n,
            None => ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?,
        };
        this.taken = Some(n);
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.taken = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::AsyncWriteExt;

    /// Takes every write into a buffer it sends on only when flushed, and whose
    /// first flush is pending.
    #[derive(Default)]
    struct Buffered {
        held: Vec<u8>,
        sent: Vec<u8>,
        flushes: u32,
    }

    impl AsyncWrite for Buffered {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            if self.flushes == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let held = std::mem::take(&mut self.held);
            self.sent.extend(held);
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_write_returns_once_flushed_and_takes_its_bytes_once() {
        let mut w = TlsWrites::new(Buffered::default());
        block_on(async {
            w.write_all(b"first").await.unwrap();
            assert_eq!(w.inner.sent, b"first");
            w.write_all(b"second").await.unwrap();
        });
        assert_eq!(w.inner.sent, b"firstsecond");
        assert!(w.inner.held.is_empty());
    }

    fn common(args: &[&str]) -> Common {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            c: Common,
        }
        Wrap::parse_from(std::iter::once("bench").chain(args.iter().copied())).c
    }

    #[test]
    fn transport_flags_are_checked() {
        let broker = Host { name: "127.0.0.1".into(), addr: "127.0.0.1:1883".parse().unwrap() };
        let t = |args: &[&str]| Transport::from_flags(&common(args), &broker);
        assert_eq!(t(&[]).unwrap().name(), "tcp");
        let ws = t(&["--ws"]).unwrap();
        assert_eq!(ws.name(), "ws");
        assert_eq!(ws.ws.as_ref().unwrap().path, "/mqtt");
        assert_eq!(ws.ws.as_ref().unwrap().host, "127.0.0.1:1883");
        let v6 = Host { name: "::1".into(), addr: "[::1]:2000".parse().unwrap() };
        let ws6 = Transport::from_flags(&common(&["--ws"]), &v6).unwrap();
        assert_eq!(ws6.ws.unwrap().host, "[::1]:2000");
        assert_eq!(t(&["--ws", "/other", "--port", "80"]).unwrap().ws.unwrap().path, "/other");
        assert!(t(&["--ws", "mqtt"]).unwrap_err().to_string().contains("start with"));
        assert!(t(&["--tls"]).unwrap_err().to_string().contains("--cafile"));
        assert!(t(&["--cafile", "x.pem"]).unwrap_err().to_string().contains("needs --tls"));
        let e = t(&["--tls", "--cafile", "/nonexistent/ca.pem"]).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
        let e = t(&["--tls", "--cafile", "ca.pem", "--cert", "c.pem"]).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }
}
