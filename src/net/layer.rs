//! Transport layers between a socket and the MQTT codec: TLS, WebSocket, or both.
//!
//! A layer is sans-IO: the shard hands it the bytes a receive brought and the MQTT
//! bytes to send, and it answers with bytes, never touching a socket, a task or the
//! clock. A [`Stack`] chains layers from the socket up; plain TCP has no stack at
//! all, so it costs nothing.
//!
//! On an error, `wire` may hold the layer's last words (a TLS alert, an HTTP error
//! answer, a WebSocket Close frame): send them, call `close` (a layer that already
//! said goodbye adds nothing; the layers below it still say theirs), then close the
//! socket.
//!
//! A stack is `Send`: when a connection moves to the shard that owns its client id,
//! its stack moves with the socket.
//!
//! # Invariants
//! - Bytes a layer must send on its own go down through every layer below it before
//!   they reach `wire`, in the order the layers produced them.
//! - Between two calls a stack holds no buffer of its own: what passes between its
//!   layers goes through the thread's scratch buffers.

use std::cell::RefCell;

use bytes::BytesMut;

/// Why a layer gave up on its connection. The connection ends; others go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayerError {
    /// The TLS peer broke the protocol or failed verification (no certificate when
    /// one is required, an unknown issuer, an expired or revoked certificate, no
    /// common protocol version, cipher suite or ALPN protocol).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls took no more records (its buffer limits): the peer sent more
    /// handshake data than TLS allows, or something it did not read.
    #[error("TLS records: {0}")]
    TlsRecords(std::io::Error),
    /// The WebSocket upgrade request was refused; the HTTP answer is in `wire`.
    #[error("WebSocket handshake refused: {0}")]
    Handshake(String),
    /// The peer broke RFC 6455 or MQTT section 6; a Close frame is in `wire`.
    #[error("WebSocket: {0}")]
    WebSocket(String),
}

/// One transport layer of a connection (TLS, WebSocket): bytes below, bytes above.
/// `Send`, so a connection's stack can follow it to another shard.
pub(crate) trait Layer: Send {
    /// Bytes from the peer. Appends the application bytes they carry to `app`, and
    /// the bytes the layer must send on its own (TLS handshake records, alerts, a
    /// WebSocket handshake response, pong, close) to `wire`.
    fn input(
        &mut self,
        bytes: &[u8],
        app: &mut BytesMut,
        wire: &mut BytesMut,
    ) -> Result<(), LayerError>;
    /// Application bytes to send: appends their encoding to `wire`. Called only once
    /// `ready()`.
    fn output(&mut self, app: &[u8], wire: &mut BytesMut) -> Result<(), LayerError>;
    /// The handshake is done: application bytes can flow both ways.
    fn ready(&self) -> bool;
    /// The peer closed at this layer (TLS close_notify, WebSocket Close): no more
    /// input will come.
    fn peer_closed(&self) -> bool;
    /// Appends this layer's goodbye (close_notify, a Close frame) to `wire`, once:
    /// a layer that already said goodbye (after an error, say) adds nothing.
    fn close(&mut self, wire: &mut BytesMut);
    /// The username the client's certificate gives, where this layer checks client
    /// certificates and its listener takes their identity as the username.
    fn peer_identity(&self) -> Option<String> {
        None
    }
}

/// The layers of one connection, in order from the socket up: `[Tls]`, `[Ws]` or
/// `[Tls, Ws]` (plain TCP builds no stack). Passes input up and output down through
/// all of them, including bytes an upper layer must send, which go down through the
/// lower layers before reaching `wire`.
///
/// Owner: the link of the socket, on the shard that holds it.
pub(crate) struct Stack {
    /// A boxed slice, not a `Vec`: a stack never grows, and every idle connection
    /// would carry the capacity word.
    layers: Box<[Box<dyn Layer>]>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("layers", &self.layers.len())
            .field("ready", &self.ready())
            .field("peer_closed", &self.peer_closed())
            .finish()
    }
}

impl Stack {
    pub fn new(layers: Vec<Box<dyn Layer>>) -> Stack {
        Stack { layers: layers.into_boxed_slice() }
    }

    /// Bytes from the socket: appends the MQTT bytes they carry to `app`, and what
    /// the layers must send on their own to `wire`. On an error, send `wire`, then
    /// close the socket.
    pub fn input(
        &mut self,
        bytes: &[u8],
        app: &mut BytesMut,
        wire: &mut BytesMut,
    ) -> Result<(), LayerError> {
        input_up(&mut self.layers, 0, bytes, app, wire)
    }

    /// MQTT bytes to send: appends the bytes for the socket to `wire`.
    pub fn output(&mut self, app: &[u8], wire: &mut BytesMut) -> Result<(), LayerError> {
        debug_assert!(self.ready(), "output before the handshake is done");
        output_down(&mut self.layers, app, wire)
    }

    /// Every layer finished its handshake: MQTT bytes can flow both ways.
    pub fn ready(&self) -> bool {
        self.layers.iter().all(|l| l.ready())
    }

    /// A layer's peer closed: no more input will come.
    pub fn peer_closed(&self) -> bool {
        self.layers.iter().any(|l| l.peer_closed())
    }

    /// Appends every layer's goodbye to `wire`, the top one first (a WebSocket
    /// Close frame, encrypted, then TLS close_notify).
    pub fn close(&mut self, wire: &mut BytesMut) {
        for top in (0..self.layers.len()).rev() {
            let (below, rest) = self.layers.split_at_mut(top);
            if below.is_empty() {
                rest[0].close(wire);
                continue;
            }
            let mut own = Scratch::take();
            rest[0].close(&mut own);
            // A lower layer that cannot encode the goodbye has failed already; the
            // socket closes either way.
            let _ = output_down(below, &own, wire);
        }
    }

    /// The username the client's TLS certificate gives: see
    /// [`TlsAcceptor`](super::tls::TlsAcceptor).
    pub fn peer_identity(&self) -> Option<String> {
        self.layers.iter().find_map(|l| l.peer_identity())
    }
}

/// Input for `layers[index]`: its application bytes go up to the next layer (or to
/// `app` from the top one), its own bytes down through the layers below it.
fn input_up(
    layers: &mut [Box<dyn Layer>],
    index: usize,
    bytes: &[u8],
    app: &mut BytesMut,
    wire: &mut BytesMut,
) -> Result<(), LayerError> {
    let (below, rest) = layers.split_at_mut(index);
    let Some((layer, above)) = rest.split_first_mut() else {
        app.extend_from_slice(bytes);
        return Ok(());
    };
    let mut up = if above.is_empty() { None } else { Some(Scratch::take()) };
    let into = up.as_deref_mut().unwrap_or(&mut *app);
    let result = if below.is_empty() {
        layer.input(bytes, into, wire)
    } else {
        let mut own = Scratch::take();
        let result = layer.input(bytes, into, &mut own);
        // Its own bytes (alerts, answers) go out even when it failed: they are
        // its last words.
        if own.is_empty() {
            result
        } else {
            output_down(below, &own, wire).and(result)
        }
    };
    result?;
    match up {
        Some(up) if !up.is_empty() => input_up(layers, index + 1, &up, app, wire),
        _ => Ok(()),
    }
}

/// Bytes for the top of `layers`, encoded by each layer down to `wire`.
fn output_down(
    layers: &mut [Box<dyn Layer>],
    bytes: &[u8],
    wire: &mut BytesMut,
) -> Result<(), LayerError> {
    match layers.split_last_mut() {
        None => {
            wire.extend_from_slice(bytes);
            Ok(())
        }
        Some((layer, [])) => layer.output(bytes, wire),
        Some((layer, below)) => {
            let mut encoded = Scratch::take();
            layer.output(bytes, &mut encoded)?;
            output_down(below, &encoded, wire)
        }
    }
}

const _: () = {
    const fn send<T: Send>() {}
    send::<Stack>();
};

/// Scratch buffers kept between calls, at most this many...
const SCRATCH_KEPT_MAX: usize = 4;
/// ... of at most this capacity: a burst (a large PUBLISH) does not pin its memory.
const SCRATCH_BYTES_MAX: usize = 64 * 1024;

thread_local! {
    /// Buffers between two layers during one call, shared by every stack of the
    /// thread (one shard): connections hold none between calls, and calls allocate
    /// none once the shard is warm. A stack of two layers takes at most two at once.
    static SCRATCH: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer, empty when taken, given back to the thread's pool when dropped.
struct Scratch(BytesMut);

impl Scratch {
    fn take() -> Scratch {
        Scratch(SCRATCH.with(|pool| pool.borrow_mut().pop()).unwrap_or_default())
    }
}

impl std::ops::Deref for Scratch {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() > SCRATCH_BYTES_MAX {
            return;
        }
        buf.clear();
        // `try_with`: a buffer dropped while the thread ends just goes.
        let _ = SCRATCH.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < SCRATCH_KEPT_MAX {
                pool.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer that wraps each output in `<` `>` and, on input, passes bytes up
    /// unchanged, answering `!` for every `?` (its own bytes).
    #[derive(Default)]
    struct Angle {
        closed: bool,
    }

    impl Layer for Angle {
        fn input(
            &mut self,
            bytes: &[u8],
            app: &mut BytesMut,
            wire: &mut BytesMut,
        ) -> Result<(), LayerError> {
            for &b in bytes {
                match b {
                    b'?' => wire.extend_from_slice(b"!"),
                    b'x' => return Err(LayerError::WebSocket("x".into())),
                    _ => app.extend_from_slice(&[b]),
                }
            }
            Ok(())
        }
        fn output(&mut self, app: &[u8], wire: &mut BytesMut) -> Result<(), LayerError> {
            wire.extend_from_slice(b"<");
            wire.extend_from_slice(app);
            wire.extend_from_slice(b">");
            Ok(())
        }
        fn ready(&self) -> bool {
            true
        }
        fn peer_closed(&self) -> bool {
            self.closed
        }
        fn close(&mut self, wire: &mut BytesMut) {
            self.closed = true;
            wire.extend_from_slice(b"bye");
        }
    }

    fn stack(n: usize) -> Stack {
        Stack::new((0..n).map(|_| Box::new(Angle::default()) as Box<dyn Layer>).collect())
    }

    #[test]
    fn own_bytes_of_an_upper_layer_go_down_through_the_lower_ones() {
        let mut s = stack(2);
        let (mut app, mut wire) = (BytesMut::new(), BytesMut::new());
        s.input(b"a?b", &mut app, &mut wire).unwrap();
        // The lower layer answers the `?` itself; the upper one never sees it.
        assert_eq!(&app[..], b"ab");
        assert_eq!(&wire[..], b"!");
        s.output(b"m", &mut wire).unwrap();
        assert_eq!(&wire[..], b"!<<m>>");
    }

    #[test]
    fn last_words_of_a_failing_layer_still_reach_the_wire() {
        let mut s = stack(1);
        let (mut app, mut wire) = (BytesMut::new(), BytesMut::new());
        assert!(s.input(b"a?x", &mut app, &mut wire).is_err());
        assert_eq!(&wire[..], b"!");
    }

    #[test]
    fn close_says_goodbye_from_the_top_down() {
        let mut s = stack(2);
        let mut wire = BytesMut::new();
        s.close(&mut wire);
        assert_eq!(&wire[..], b"<bye>bye");
        assert!(s.peer_closed());
    }

    #[test]
    fn scratch_buffers_are_reused_and_bounded() {
        drop(Scratch::take());
        let mut big = Scratch::take();
        big.reserve(SCRATCH_BYTES_MAX + 1);
        let kept = SCRATCH.with(|p| p.borrow().len());
        drop(big);
        assert_eq!(SCRATCH.with(|p| p.borrow().len()), kept, "a large buffer is not kept");
        let taken: Vec<Scratch> = (0..SCRATCH_KEPT_MAX + 2).map(|_| Scratch::take()).collect();
        drop(taken);
        assert_eq!(SCRATCH.with(|p| p.borrow().len()), SCRATCH_KEPT_MAX);
    }
}
