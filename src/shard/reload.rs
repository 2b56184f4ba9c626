//! What SIGHUP (or [`BrokerHandle::reload`](crate::BrokerHandle::reload)) reloads
//! without dropping a connection: the password file, the ACL file, and the TLS
//! certificates of every listener.
//!
//! Shard 0 reads the files on the blocking pool (never on a shard's thread), and
//! only when every file reads does it send each shard its own copy over the
//! control ring; a file that does not read is logged and the shards keep what
//! they have. New connections use the new certificates; established ones keep
//! their sessions.

use std::rc::Rc;
use std::sync::Arc;

use tracing::{error, info};

use crate::config::ListenerKind;
use crate::config::{Config, ListenerConfig};
use crate::net::tls::{Carrying, TlsAcceptor, TlsSettings};
use crate::security::{Acl, PasswordFile};

use super::core::CtrlMsg;
use super::{IoMsg, ShardRc};

/// Everything a reload replaces, as one shard receives it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reload {
    pub passwords: Option<PasswordFile>,
    pub acl: Option<Acl>,
    /// Per listener (in listener order), the TLS configuration of a TLS one.
    pub tls: Vec<Option<TlsAcceptor>>,
}

impl Reload {
    /// Reads every file the configuration names; the first that does not read
    /// fails the whole load.
    pub fn load(config: &Config) -> Result<Reload, String> {
        let passwords = match &config.password_file {
            Some(path) => Some(PasswordFile::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => Some(Acl::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let tls = config
            .listeners_effective()
            .iter()
            .map(|listener| match tls_settings(listener) {
                Some(settings) => TlsAcceptor::load_carrying(&settings, carrying(listener.kind))
                    .map(Some)
                    .map_err(|e| format!("listener {} {}: {e}", listener.kind, listener.bind)),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(Reload { passwords, acl, tls })
    }
}

/// What the TLS of a listener carries (which sets the ALPN protocols offered).
fn carrying(kind: ListenerKind) -> Carrying {
    if kind.websocket() {
        Carrying::WebSocket
    } else {
        Carrying::Mqtt
    }
}

/// The TLS settings of a TLS listener.
fn tls_settings(listener: &ListenerConfig) -> Option<TlsSettings> {
    if !listener.kind.tls() {
        return None;
    }
    Some(TlsSettings {
        cert: listener.cert.clone()?,
        key: listener.key.clone()?,
        ca_file: listener.ca_file.clone(),
        crl_file: listener.crl_file.clone(),
        require_certificate: listener.require_certificate,
        use_identity_as_username: listener.use_identity_as_username,
    })
}

/// Shard 0: reads the files off the shard's thread, then hands every shard its
/// copy (itself included).
pub(super) fn start(shard: &ShardRc) {
    let config = Arc::clone(&shard.borrow().config);
    let shard = Rc::clone(shard);
    glommio::spawn_local(async move {
        let loaded = glommio::executor().spawn_blocking(move || Reload::load(&config)).await;
        let reload = match loaded {
            Ok(reload) => reload,
            Err(e) => {
                error!("reload refused, the running settings stay: {e}");
                return;
            }
        };
        let mut s = shard.borrow_mut();
        let (me, shards) = (s.core.id, s.core.shards);
        for dest in (0..shards).filter(|&dest| dest != me) {
            s.core.push_ctrl(dest, CtrlMsg::Io(Box::new(IoMsg::Reload(reload.clone()))));
        }
        s.apply_reload(reload);
        s.schedule_pass();
        info!("reloaded the password file, the ACL and the certificates");
    })
    .detach();
}
