//! The listeners: how the clients of each speak to it, and one `[[listener]]`
//! block of the config file, checked alone (what concerns several, such as two on
//! one address, is checked with the rest of the settings).

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// How the clients of a listener speak to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// MQTT over TCP.
    #[default]
    Mqtt,
    /// MQTT over TLS.
    Mqtts,
    /// MQTT over WebSocket (subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// Whether the listener speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, ListenerKind::Mqtts | ListenerKind::Wss)
    }

    /// Whether the listener speaks WebSocket.
    pub fn websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerKind::Mqtt => "mqtt",
            ListenerKind::Mqtts => "mqtts",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        })
    }
}

/// One `[[listener]]` block of the config file, in the spirit of Mosquitto's
/// `listener` sections:
///
/// ```toml
/// [[listener]]
/// kind = "mqtts"
/// bind = "0.0.0.0:8883"
/// cert = "/etc/shardmq/server.pem"
/// key = "/etc/shardmq/server.key"
/// ```
///
/// Unset settings take the broker-wide ones (`allow_anonymous`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `mqtt` (the default), `mqtts`, `ws` or `wss`.
    #[serde(default)]
    pub kind: ListenerKind,
    /// The address to listen on.
    pub bind: SocketAddr,
    /// Whether clients without a user name may connect here.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Whether every connection starts with a PROXY protocol (v1 or v2) header, as
    /// load balancers send it; one without a valid header is closed.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Most connections on this listener, each shard an equal share (rounded up).
    #[serde(default)]
    pub max_connections: Option<NonZeroUsize>,
    /// A prefix put before every topic and filter of this listener's clients and
    /// taken off the topics they receive, as Mosquitto's `mount_point`: clients of
    /// two listeners with different mount points share no topic.
    #[serde(default)]
    pub mount_point: Option<String>,
    /// WebSocket: the HTTP path clients connect to.
    #[serde(default)]
    pub path: Option<String>,
    /// TLS: the certificate chain (PEM).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// TLS: the private key of the certificate (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// TLS: the CAs client certificates are verified against (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: revoked client certificates (PEM CRLs).
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
    /// TLS: whether a client must present a certificate `ca_file` verifies.
    #[serde(default)]
    pub require_certificate: bool,
    /// TLS: the client certificate's subject CN (or first SAN) is the user name,
    /// and the certificate its credential.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

impl ListenerConfig {
    /// A plain MQTT listener on `bind` with the broker-wide settings.
    pub fn mqtt(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            kind: ListenerKind::Mqtt,
            bind,
            allow_anonymous: None,
            proxy_protocol: false,
            max_connections: None,
            mount_point: None,
            path: None,
            cert: None,
            key: None,
            ca_file: None,
            crl_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        }
    }

    /// The WebSocket path, `/mqtt` unless set.
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/mqtt")
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let at =
            |reason: String| invalid("listener", format!("{} {}: {reason}", self.kind, self.bind));
        if self.kind.tls() {
            if self.cert.is_none() || self.key.is_none() {
                return Err(at("a TLS listener needs `cert` and `key`".to_owned()));
            }
        } else {
            let tls_only = [
                ("cert", self.cert.is_some()),
                ("key", self.key.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("crl_file", self.crl_file.is_some()),
                ("require_certificate", self.require_certificate),
                ("use_identity_as_username", self.use_identity_as_username),
            ];
            if let Some((name, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err(at(format!("`{name}` is for TLS listeners (kind mqtts or wss)")));
            }
        }
        if (self.require_certificate || self.crl_file.is_some()) && self.ca_file.is_none() {
            return Err(at("client certificates need `ca_file` to verify them".to_owned()));
        }
        if self.use_identity_as_username && !self.require_certificate {
            return Err(at("`use_identity_as_username` needs `require_certificate`".to_owned()));
        }
        if let Some(mount) = &self.mount_point {
            let bad = mount.is_empty()
                || mount.starts_with('$')
                || mount.contains(['+', '#', '\0'])
                || mount.len() > usize::from(u16::MAX);
            if bad {
                return Err(at(format!(
                    "mount_point {mount:?} must be a non-empty topic prefix without +, # or a leading $"
                )));
            }
        }
        match &self.path {
            Some(_) if !self.kind.websocket() => {
                Err(at("`path` is for WebSocket listeners (kind ws or wss)".to_owned()))
            }
            Some(path) if !path.starts_with('/') => {
                Err(at(format!("path {path:?} must start with /")))
            }
            _ => Ok(()),
        }
    }
}
