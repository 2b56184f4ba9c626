//! Hooks: code of the embedding program that runs at fixed points of a client's and
//! a message's life, as emqttd defined them.
//!
//! | hook | kind | runs when | may |
//! |---|---|---|---|
//! | `client.connected` | foreach | CONNECT accepted | observe |
//! | `client.disconnected` | foreach | connection closed, for any reason | observe |
//! | `client.subscribe` | foldl | each filter of a SUBSCRIBE | rewrite the filter or QoS, refuse it (SUBACK 0x80) |
//! | `client.unsubscribe` | foldl | each filter of an UNSUBSCRIBE | rewrite or ignore the filter |
//! | `message.publish` | foldl | a message enters the broker (client, will, or `BrokerHandle::publish`) | rewrite or drop it |
//! | `message.acked` | foldl | a client acknowledged a QoS 1/2 message (PUBACK / PUBCOMP) | observe, stop the chain |
//! | `client.authenticate` | one | MQTT 5 enhanced authentication: a CONNECT or AUTH with an Authentication Method | accept, continue the exchange, refuse |
//! | `client.authenticate` (password form) | one | any other CONNECT, before the password file | accept, refuse, or leave it to the broker |
//! | `client.authorize` | one | each PUBLISH and each SUBSCRIBE filter, before the ACL file | allow, deny, or leave it to the ACL |
//!
//! `client.authenticate` is a single authenticator, not a chain: it implements the
//! methods it knows (SCRAM, Kerberos, ...) and answers [`AuthStep`]s; the broker
//! carries the exchange over CONNECT, AUTH 0x18 and CONNACK (or AUTH 0x00 when the
//! client re-authenticates with AUTH 0x19) [MQTT-4.12]. Without one, a CONNECT with
//! an Authentication Method is refused with CONNACK 0x8C.
//!
//! Hooks run on the shard that owns the event (the client's shard; for
//! `message.publish` the shard the message entered), in registration order, without
//! locks: they are `Fn + Send + Sync` and shared by every shard through an `Arc`. A
//! hook that needs per-shard state keys it by [`ClientInfo::shard`]. A hook runs on
//! the data path: keep it short and never block.
//!
//! A foldl hook receives the value the previous hook returned (the first one gets the
//! original) and returns [`Fold::Next`] to pass its value on or [`Fold::Stop`] to end
//! the chain with it.
//!
//! ```
//! use shardmq::hooks::{Fold, Hooks};
//! use shardmq::protocol::QoS;
//!
//! let mut hooks = Hooks::default();
//! // Refuse subscriptions to other tenants' topics, cap the rest at QoS 1.
//! hooks.on_client_subscribe(|client, request| match request {
//!     Some(mut r) if r.filter.as_str().starts_with(&*client.client_id) => {
//!         r.qos = r.qos.min(QoS::AtLeastOnce);
//!         Fold::Next(Some(r))
//!     }
//!     _ => Fold::Stop(None),
//! });
//! // Drop messages to `debug/...`; pass the others on unchanged.
//! hooks.on_message_publish(|_, message| match message {
//!     Some(m) if m.topic.as_str().starts_with("debug/") => Fold::Stop(None),
//!     other => Fold::Next(other),
//! });
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytestring::ByteString;

use bytes::Bytes;

use crate::message::Message;
use crate::protocol::{ProtocolVersion, ReasonCode, SubscribeFilter, TopicFilter};

/// The outcome of one foldl hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fold<T> {
    /// Pass the value to the next hook.
    Next(T),
    /// End the chain with this value.
    Stop(T),
}

/// Who a hook is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client identifier from CONNECT.
    pub client_id: ByteString,
    /// User name from CONNECT; `None` when none was sent.
    pub username: Option<ByteString>,
    /// Protocol version the client speaks.
    pub protocol: ProtocolVersion,
    /// CleanSession flag from CONNECT.
    pub clean_session: bool,
    /// Keep-alive from CONNECT, in seconds; 0 means off.
    pub keep_alive_secs: u16,
    /// The shard the client's session lives on.
    pub shard: usize,
    /// The index of the listener the client came in through (in the order of
    /// [`BrokerHandle::local_addrs`](crate::BrokerHandle::local_addrs)).
    pub listener: u16,
}

/// Where a message entered the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A PUBLISH from this client.
    Client(&'a ClientInfo),
    /// The will of this client.
    Will(&'a ClientInfo),
    /// `BrokerHandle::publish` of the embedding program.
    Api,
}

/// One round of an enhanced authentication exchange, as the authenticator sees it.
#[derive(Clone, Copy, Debug)]
pub struct AuthRequest<'a> {
    /// The client id: as CONNECT sent it (possibly empty) while connecting; the
    /// connection's id (the assigned one, if CONNECT's was empty) when
    /// re-authenticating.
    pub client_id: &'a str,
    /// The user name from CONNECT, if any.
    pub username: Option<&'a str>,
    /// The Authentication Method the client chose.
    pub method: &'a str,
    /// The Authentication Data of this round, if any.
    pub data: Option<&'a [u8]>,
    /// 0 for the CONNECT (or AUTH 0x19), then 1, 2, ... for each AUTH 0x18.
    pub round: u32,
    /// Whether the client is re-authenticating an established connection.
    pub reauthenticate: bool,
}

/// The authenticator's answer to one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Authenticated; the data (if any) goes to the client with CONNACK or AUTH 0x00.
    Success(Option<Bytes>),
    /// Send this data to the client in AUTH 0x18 and wait for its next AUTH.
    Continue(Bytes),
    /// Refuse: CONNACK (or, re-authenticating, DISCONNECT) with this code, e.g.
    /// 0x87 Not authorized or 0x8C Bad authentication method.
    Fail(ReasonCode),
}

/// A CONNECT's credentials, for the password form of `client.authenticate`.
#[derive(Clone, Copy, Debug)]
pub struct LoginRequest<'a> {
    /// The client id as CONNECT sent it (possibly empty).
    pub client_id: &'a str,
    /// The user name from CONNECT, or the TLS client certificate's identity on a
    /// listener with `use_identity_as_username`.
    pub username: Option<&'a str>,
    /// The password from CONNECT.
    pub password: Option<&'a [u8]>,
    /// The client's address (the one a PROXY header gave, behind a load balancer).
    pub peer: Option<SocketAddr>,
    /// The index of the listener the client came in through (in the order of
    /// [`BrokerHandle::local_addrs`](crate::BrokerHandle::local_addrs)).
    pub listener: usize,
    /// Whether `username` comes from a verified client certificate.
    pub certificate: bool,
}

/// The password authenticator's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginVerdict {
    /// Accept the client; the password file is not consulted.
    Allow,
    /// Refuse with this code (e.g. 0x86 Bad User Name or Password, 0x87 Not
    /// authorized; MQTT 3 clients get the matching return code).
    Deny(ReasonCode),
    /// The broker's own checks decide: the password file, `allow_anonymous`.
    Ignore,
}

/// What a client asks to do with a topic, for `client.authorize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// PUBLISH to this topic (a will included, checked at CONNECT).
    Publish(&'a str),
    /// SUBSCRIBE to this filter.
    Subscribe(&'a str),
}

type Foreach = Arc<dyn Fn(&ClientInfo) + Send + Sync>;
type LoginHook = Arc<dyn Fn(&LoginRequest<'_>) -> LoginVerdict + Send + Sync>;
type AuthorizeHook = Arc<dyn Fn(&ClientInfo, Action<'_>) -> Option<bool> + Send + Sync>;
type AuthHook = Arc<dyn Fn(&AuthRequest<'_>) -> AuthStep + Send + Sync>;
type Disconnected = Arc<dyn Fn(&ClientInfo, &str) + Send + Sync>;
type SubscribeHook = Arc<
    dyn Fn(&ClientInfo, Option<SubscribeFilter>) -> Fold<Option<SubscribeFilter>> + Send + Sync,
>;
type UnsubscribeHook =
    Arc<dyn Fn(&ClientInfo, Option<TopicFilter>) -> Fold<Option<TopicFilter>> + Send + Sync>;
type PublishHook = Arc<dyn Fn(Origin<'_>, Option<Message>) -> Fold<Option<Message>> + Send + Sync>;
type AckedHook = Arc<dyn Fn(&ClientInfo, &Message) -> Fold<()> + Send + Sync>;

/// Every registered hook, in registration order per hook point.
#[derive(Clone, Default)]
pub struct Hooks {
    connected: Vec<Foreach>,
    disconnected: Vec<Disconnected>,
    subscribe: Vec<SubscribeHook>,
    unsubscribe: Vec<UnsubscribeHook>,
    publish: Vec<PublishHook>,
    acked: Vec<AckedHook>,
    authenticate: Option<AuthHook>,
    login: Option<LoginHook>,
    authorize: Option<AuthorizeHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("client.connected", &self.connected.len())
            .field("client.disconnected", &self.disconnected.len())
            .field("client.subscribe", &self.subscribe.len())
            .field("client.unsubscribe", &self.unsubscribe.len())
            .field("message.publish", &self.publish.len())
            .field("message.acked", &self.acked.len())
            .field("client.authenticate", &self.authenticate.is_some())
            .field("client.authenticate (password)", &self.login.is_some())
            .field("client.authorize", &self.authorize.is_some())
            .finish()
    }
}

fn fold<T>(chain: impl Iterator<Item = impl FnOnce(T) -> Fold<T>>, init: T) -> T {
    let mut acc = init;
    for hook in chain {
        match hook(acc) {
            Fold::Next(next) => acc = next,
            Fold::Stop(last) => return last,
        }
    }
    acc
}

impl Hooks {
    /// `client.connected`: after CONNACK 0 is sent.
    pub fn on_client_connected(&mut self, f: impl Fn(&ClientInfo) + Send + Sync + 'static) {
        self.connected.push(Arc::new(f));
    }

    /// `client.disconnected`: the connection is gone; the reason is a short text.
    pub fn on_client_disconnected(
        &mut self,
        f: impl Fn(&ClientInfo, &str) + Send + Sync + 'static,
    ) {
        self.disconnected.push(Arc::new(f));
    }

    /// `client.subscribe`: per filter; `None` refuses it (SUBACK failure 0x80; 0x87
    /// Not authorized to MQTT 5 clients).
    pub fn on_client_subscribe(
        &mut self,
        f: impl Fn(&ClientInfo, Option<SubscribeFilter>) -> Fold<Option<SubscribeFilter>>
            + Send
            + Sync
            + 'static,
    ) {
        self.subscribe.push(Arc::new(f));
    }

    /// `client.unsubscribe`: per filter; `None` leaves the subscription in place
    /// (UNSUBACK is still sent, as the spec requires one for every UNSUBSCRIBE).
    pub fn on_client_unsubscribe(
        &mut self,
        f: impl Fn(&ClientInfo, Option<TopicFilter>) -> Fold<Option<TopicFilter>>
            + Send
            + Sync
            + 'static,
    ) {
        self.unsubscribe.push(Arc::new(f));
    }

    /// `message.publish`: may rewrite the message or drop it (`None`). The client
    /// still gets its PUBACK/PUBREC: dropping is the broker's decision, not an error.
    pub fn on_message_publish(
        &mut self,
        f: impl Fn(Origin<'_>, Option<Message>) -> Fold<Option<Message>> + Send + Sync + 'static,
    ) {
        self.publish.push(Arc::new(f));
    }

    /// `message.acked`: a client acknowledged a QoS 1 (PUBACK) or QoS 2 (PUBCOMP)
    /// message.
    pub fn on_message_acked(
        &mut self,
        f: impl Fn(&ClientInfo, &Message) -> Fold<()> + Send + Sync + 'static,
    ) {
        self.acked.push(Arc::new(f));
    }

    /// `client.authenticate`: the MQTT 5 enhanced authenticator (replaces any
    /// earlier one).
    pub fn on_client_authenticate(
        &mut self,
        f: impl Fn(&AuthRequest<'_>) -> AuthStep + Send + Sync + 'static,
    ) {
        self.authenticate = Some(Arc::new(f));
    }

    /// `client.authenticate`, password form: sees every CONNECT without an
    /// Authentication Method, before the password file (replaces any earlier one).
    /// Runs on the shard's thread: keep it short; a slow check (a network call)
    /// stalls every client of the shard.
    pub fn on_client_password(
        &mut self,
        f: impl Fn(&LoginRequest<'_>) -> LoginVerdict + Send + Sync + 'static,
    ) {
        self.login = Some(Arc::new(f));
    }

    /// `client.authorize`: each PUBLISH topic and SUBSCRIBE filter, before the ACL
    /// file; `Some(true)` allows it, `Some(false)` denies it (as the ACL does),
    /// `None` leaves it to the ACL (allowed when there is none). Replaces any
    /// earlier one. Deliveries to wildcard subscriptions are checked against the ACL
    /// file only.
    pub fn on_client_authorize(
        &mut self,
        f: impl Fn(&ClientInfo, Action<'_>) -> Option<bool> + Send + Sync + 'static,
    ) {
        self.authorize = Some(Arc::new(f));
    }

    pub(crate) fn client_password(&self, request: &LoginRequest<'_>) -> LoginVerdict {
        self.login.as_ref().map_or(LoginVerdict::Ignore, |hook| hook(request))
    }

    pub(crate) fn client_authorize(&self, client: &ClientInfo, action: Action<'_>) -> Option<bool> {
        self.authorize.as_ref().and_then(|hook| hook(client, action))
    }

    /// Runs the authenticator; without one, every method is unknown (0x8C).
    pub(crate) fn client_authenticate(&self, request: &AuthRequest<'_>) -> AuthStep {
        match &self.authenticate {
            Some(hook) => hook(request),
            None => AuthStep::Fail(ReasonCode::BAD_AUTHENTICATION_METHOD),
        }
    }

    pub(crate) fn client_connected(&self, client: &ClientInfo) {
        self.connected.iter().for_each(|hook| hook(client));
    }

    pub(crate) fn client_disconnected(&self, client: &ClientInfo, reason: &str) {
        self.disconnected.iter().for_each(|hook| hook(client, reason));
    }

    pub(crate) fn client_subscribe(
        &self,
        client: &ClientInfo,
        request: SubscribeFilter,
    ) -> Option<SubscribeFilter> {
        fold(self.subscribe.iter().map(|h| move |acc| h(client, acc)), Some(request))
    }

    pub(crate) fn client_unsubscribe(
        &self,
        client: &ClientInfo,
        filter: TopicFilter,
    ) -> Option<TopicFilter> {
        fold(self.unsubscribe.iter().map(|h| move |acc| h(client, acc)), Some(filter))
    }

    pub(crate) fn has_message_publish(&self) -> bool {
        !self.publish.is_empty()
    }

    pub(crate) fn message_publish(&self, origin: Origin<'_>, message: Message) -> Option<Message> {
        fold(self.publish.iter().map(|h| move |acc| h(origin, acc)), Some(message))
    }

    pub(crate) fn message_acked(&self, client: &ClientInfo, message: &Message) {
        fold(self.acked.iter().map(|h| move |()| h(client, message)), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use std::sync::Mutex;

    fn client() -> ClientInfo {
        ClientInfo {
            client_id: "dev1".into(),
            username: None,
            protocol: ProtocolVersion::V311,
            clean_session: true,
            keep_alive_secs: 60,
            shard: 0,
            listener: 0,
        }
    }

    fn request(filter: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter::new(TopicFilter::try_from(filter).unwrap(), qos)
    }

    #[test]
    fn foldl_runs_in_registration_order_and_stop_ends_the_chain() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut hooks = Hooks::default();
        let l = Arc::clone(&log);
        hooks.on_client_subscribe(move |_, r| {
            l.lock().unwrap().push(1);
            Fold::Next(r.map(|mut r| {
                r.qos = QoS::AtMostOnce;
                r
            }))
        });
        let l = Arc::clone(&log);
        hooks.on_client_subscribe(move |_, r| {
            l.lock().unwrap().push(2);
            if r.as_ref().is_some_and(|r| r.filter.as_str() == "secret") {
                Fold::Stop(None)
            } else {
                Fold::Next(r)
            }
        });
        let l = Arc::clone(&log);
        hooks.on_client_subscribe(move |_, r| {
            l.lock().unwrap().push(3);
            Fold::Next(r)
        });
        let granted = hooks.client_subscribe(&client(), request("a/b", QoS::ExactlyOnce));
        assert_eq!(granted, Some(request("a/b", QoS::AtMostOnce)), "rewritten by the first");
        assert_eq!(*log.lock().unwrap(), vec![1, 2, 3]);
        log.lock().unwrap().clear();
        assert_eq!(hooks.client_subscribe(&client(), request("secret", QoS::AtLeastOnce)), None);
        assert_eq!(*log.lock().unwrap(), vec![1, 2], "the third never ran");
    }

    #[test]
    fn no_hooks_pass_values_through() {
        let hooks = Hooks::default();
        let r = request("x/#", QoS::AtLeastOnce);
        assert_eq!(hooks.client_subscribe(&client(), r.clone()), Some(r));
        assert!(!hooks.has_message_publish());
    }
}
