//! Who may connect and what they may do: the password check of CONNECT, the
//! per-address limit on failed logins, and the ACL checks of PUBLISH, SUBSCRIBE and
//! delivery. The shard holds its own copy of the password file and of the compiled
//! ACL (replaced whole on reload), so no check takes a lock or touches another
//! shard's memory.
//!
//! # Invariants
//! - With an ACL, a message reaches a subscriber only if the ACL lets that client
//!   read its topic: a filter that could match a denied topic is granted only with
//!   a check at every delivery (`SubOptions::acl_check`), and a shared subscription
//!   only when the ACL grants every topic it can match.
//! - The failure table holds at most `FAILURES_TRACKED_MAX` addresses.

use core::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hashbrown::HashMap;

use crate::hooks::{Action, ClientInfo, Hooks, LoginRequest, LoginVerdict};
use crate::protocol::{Connect, ReasonCode};
use crate::security::{Access, Acl, PasswordFile, PasswordHash, SubscribeCheck, Who};

use super::{ConnId, Core, Now, SessionKey};

/// Addresses whose failed logins the shard remembers; beyond, new addresses are
/// not tracked (and counted) until old windows expire.
const FAILURES_TRACKED_MAX: usize = 16_384;
/// The window failed logins are counted over.
const FAILURE_WINDOW_MS: u64 = 60_000;

/// Slots of the ACL memo (a power of two): 64 KiB per shard with an ACL.
const MEMO_SLOTS: usize = 4096;

/// The shard's credentials, ACL and failed-login table.
#[derive(Debug, Default)]
pub(crate) struct Security {
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
    /// Recent answers of `acl`, present with it.
    memo: Option<AclMemo>,
    failures: HashMap<IpAddr, (u64, u32)>,
}

/// Recent ACL answers, so a client publishing (or receiving) the same topics again
/// asks the rule tries once: a direct-mapped table keyed by a hash of who asks, the
/// topic and the access, keyed with a random seed per shard, so a client cannot
/// aim two questions at one slot. Measured with an ACL of 1,000 rules: a check
/// costs about 150 ns, a memo hit the price of hashing the topic.
#[derive(Debug)]
struct AclMemo {
    /// (key, answer); key 0 is an empty slot.
    slots: Box<[(u64, bool)]>,
    seed: ahash::RandomState,
}

impl AclMemo {
    fn new() -> AclMemo {
        AclMemo { slots: vec![(0, false); MEMO_SLOTS].into_boxed_slice(), seed: Default::default() }
    }

    /// The key of a question: never 0. The user name is part of it: a session
    /// resumed by another user asks anew.
    fn key(&self, asker: u64, who: Who<'_>, topic: &str, access: Access) -> u64 {
        self.seed.hash_one((asker, who.username, topic, access == Access::Write)) | 1
    }

    fn get(&self, key: u64) -> Option<bool> {
        let (stored, answer) = self.slots[key as usize & (MEMO_SLOTS - 1)];
        (stored == key).then_some(answer)
    }

    fn put(&mut self, key: u64, answer: bool) {
        self.slots[key as usize & (MEMO_SLOTS - 1)] = (key, answer);
    }
}

impl Security {
    /// The ACL's answer for `asker` (a connection or a session, as a number no
    /// other asker of this shard has), through the memo.
    fn acl_allows(&mut self, asker: u64, who: Who<'_>, topic: &str, access: Access) -> bool {
        let (Some(acl), Some(memo)) = (&self.acl, &mut self.memo) else { return true };
        let key = memo.key(asker, who, topic, access);
        if let Some(answer) = memo.get(key) {
            return answer;
        }
        let answer = acl.check(who, topic, access);
        memo.put(key, answer);
        answer
    }
}

/// What the IO layer knows of a client at CONNECT, beyond the packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoginContext<'a> {
    pub listener: usize,
    /// Whether the listener admits clients without a user name.
    pub anonymous: bool,
    /// The verified client certificate's identity, on a listener that uses it as
    /// the user name.
    pub identity: Option<&'a str>,
    pub peer: Option<SocketAddr>,
}

/// The outcome of the password check of a CONNECT.
#[derive(Debug)]
pub(crate) enum Login {
    Allowed,
    Refused(ReasonCode),
    /// The hash is slow (argon2, or PBKDF2 with many iterations): verify `password`
    /// against it off the shard's thread, then report with [`Core::login_verified`].
    Verify(PasswordHash, Bytes),
}

impl Core {
    /// Replaces the shard's password file and ACL (at start and on reload).
    pub fn set_security(&mut self, passwords: Option<PasswordFile>, acl: Option<Acl>) {
        self.security.passwords = passwords;
        // A new ACL, a new memo: no answer of the old one survives a reload.
        self.security.memo = acl.as_ref().map(|_| AclMemo::new());
        self.security.acl = acl;
    }

    /// The password check of a CONNECT (without an Authentication Method): the
    /// failed-login limit, the `client.authenticate` hook's password form, a
    /// certificate identity, `allow_anonymous`, then the password file.
    pub fn login(&mut self, now: Now, connect: &Connect, context: LoginContext<'_>) -> Login {
        let ip = context.peer.map(|peer| peer.ip());
        if let Some(ip) = ip {
            if self.login_blocked(ip, now.ms) {
                self.stats.logins_rate_limited += 1;
                return Login::Refused(ReasonCode::CONNECTION_RATE_EXCEEDED);
            }
        }
        let username = context.identity.or(connect.username.as_deref());
        let request = LoginRequest {
            client_id: &connect.client_id,
            username,
            password: connect.password.as_deref(),
            peer: context.peer,
            listener: context.listener,
            certificate: context.identity.is_some(),
        };
        let login = match self.hooks.client_password(&request) {
            LoginVerdict::Allow => Login::Allowed,
            LoginVerdict::Deny(reason) => Login::Refused(reason),
            LoginVerdict::Ignore => self.login_by_file(connect, username, &context),
        };
        if let Login::Refused(_) = login {
            self.login_failed(ip, now.ms);
        }
        login
    }

    fn login_by_file(
        &self,
        connect: &Connect,
        username: Option<&str>,
        context: &LoginContext<'_>,
    ) -> Login {
        if context.identity.is_some() {
            // The certificate is the credential: the TLS layer verified it.
            return Login::Allowed;
        }
        let Some(username) = username else {
            return if context.anonymous {
                Login::Allowed
            } else {
                Login::Refused(ReasonCode::NOT_AUTHORIZED)
            };
        };
        // Without a password file a user name is a name, as in Mosquitto.
        let Some(passwords) = &self.security.passwords else { return Login::Allowed };
        let (Some(hash), Some(password)) = (passwords.get(username), &connect.password) else {
            return Login::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        };
        if hash.is_slow() {
            return Login::Verify(hash.clone(), password.clone());
        }
        if hash.verify(password) {
            Login::Allowed
        } else {
            Login::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        }
    }

    /// The result of a slow verification [`Core::login`] asked for.
    pub fn login_verified(&mut self, now: Now, peer: Option<SocketAddr>, ok: bool) {
        if !ok {
            self.login_failed(peer.map(|p| p.ip()), now.ms);
        }
    }

    fn login_blocked(&self, ip: IpAddr, now_ms: u64) -> bool {
        let max = self.config.login_failures_max;
        max > 0
            && self.security.failures.get(&ip).is_some_and(|&(since, count)| {
                now_ms.saturating_sub(since) < FAILURE_WINDOW_MS && count >= max
            })
    }

    fn login_failed(&mut self, ip: Option<IpAddr>, now_ms: u64) {
        self.stats.login_failures += 1;
        let Some(ip) = ip.filter(|_| self.config.login_failures_max > 0) else { return };
        let failures = &mut self.security.failures;
        if failures.len() >= FAILURES_TRACKED_MAX && !failures.contains_key(&ip) {
            failures.retain(|_, (since, _)| now_ms.saturating_sub(*since) < FAILURE_WINDOW_MS);
            if failures.len() >= FAILURES_TRACKED_MAX {
                self.stats.login_failures_untracked += 1;
                return;
            }
        }
        let (since, count) = failures.entry(ip).or_insert((now_ms, 0));
        if now_ms.saturating_sub(*since) >= FAILURE_WINDOW_MS {
            (*since, *count) = (now_ms, 0);
        }
        *count += 1;
    }

    /// Forgets failure windows that ended (once a minute, from the tick).
    pub(super) fn sweep_login_failures(&mut self, now_ms: u64) {
        self.security
            .failures
            .retain(|_, (since, _)| now_ms.saturating_sub(*since) < FAILURE_WINDOW_MS);
    }

    /// Whether connection `id` may publish to `topic` (the `client.authorize`
    /// hook, then the ACL). Counts denials.
    pub(super) fn may_publish(&mut self, id: ConnId, topic: &str) -> bool {
        let Some(conn) = self.conns.get(id.slot()).filter(|c| c.serial == id.serial) else {
            return false;
        };
        // Connections and sessions ask apart: the top bit tells them.
        let asker = 1 << 63 | u64::from(id.slot) << 32 | u64::from(id.serial);
        let allowed =
            publish_allowed(&self.hooks, &mut self.security, Some(asker), &conn.info, topic);
        if !allowed {
            self.stats.acl_denied_publish += 1;
        }
        allowed
    }

    /// Whether a connecting client's will may be published to `topic`.
    pub(super) fn may_publish_will(&mut self, info: &ClientInfo, topic: &str) -> bool {
        let allowed = publish_allowed(&self.hooks, &mut self.security, None, info, topic);
        if !allowed {
            self.stats.acl_denied_publish += 1;
        }
        allowed
    }

    /// Whether the client may subscribe to `filter` (for a shared subscription,
    /// the filter after `$share/group/`), and if so whether each delivery must be
    /// checked: `None` denies, `Some(check_each)` grants. Counts denials.
    pub(super) fn may_subscribe(&mut self, id: ConnId, filter: &str, shared: bool) -> Option<bool> {
        let info = &self.conn(id)?.info;
        let hook = self.hooks.client_authorize(info, Action::Subscribe(filter));
        let verdict = match (hook, &self.security.acl) {
            (Some(false), _) => None,
            (_, None) => Some(false),
            // The hook allowed it: the ACL still guards what is delivered.
            (Some(true), Some(acl)) => {
                let check =
                    acl.check_subscribe(who(&info.client_id, info.username.as_deref()), filter);
                Some(check != SubscribeCheck::Granted)
            }
            (None, Some(acl)) => {
                match acl.check_subscribe(who(&info.client_id, info.username.as_deref()), filter) {
                    SubscribeCheck::Denied => None,
                    SubscribeCheck::Granted => Some(false),
                    SubscribeCheck::GrantedCheckEach => Some(true),
                }
            }
        };
        // A group's messages go to one member, picked before the member's ACL could
        // be asked: only a filter whose every topic the member may read is granted.
        let verdict = verdict.filter(|&check_each| !(shared && check_each));
        if verdict.is_none() {
            self.stats.acl_denied_subscribe += 1;
        }
        verdict
    }

    /// Whether session `key` may read `topic` (a delivery to a subscription granted
    /// with a check at each delivery, or a retained message). Counts denials.
    pub(super) fn may_read(&mut self, key: SessionKey, topic: &str) -> bool {
        if self.security.acl.is_none() {
            return true;
        }
        let Some(entry) = self.sessions.by_key(key) else { return false };
        let who = who(entry.session.client_id(), entry.username.as_deref());
        // Session serials are below 2^63: they never meet a connection's number.
        let allowed = self.security.acl_allows(entry.serial, who, topic, Access::Read);
        if !allowed {
            self.stats.acl_denied_delivery += 1;
        }
        allowed
    }
}

/// The `client.authorize` hook, then the ACL: through the memo for an asker with a
/// number (a connection), straight for one without (a client still connecting).
fn publish_allowed(
    hooks: &Hooks,
    security: &mut Security,
    asker: Option<u64>,
    info: &ClientInfo,
    topic: &str,
) -> bool {
    if let Some(allowed) = hooks.client_authorize(info, Action::Publish(topic)) {
        return allowed;
    }
    let who = who(&info.client_id, info.username.as_deref());
    match asker {
        Some(asker) => security.acl_allows(asker, who, topic, Access::Write),
        None => security.acl.as_ref().is_none_or(|acl| acl.check(who, topic, Access::Write)),
    }
}

fn who<'a>(client_id: &'a str, username: Option<&'a str>) -> Who<'a> {
    Who { client_id, username }
}
