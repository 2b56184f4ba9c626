//! MQTT over WebSocket, server side [MQTT 5.0 section 6, MQTT 3.1.1 section 6;
//! RFC 6455]: the HTTP upgrade, then binary frames that carry MQTT bytes.
//!
//! A frame may hold part of a packet or several packets [MQTT-6.0.0-2]; MQTT does not
//! care where frames or messages end, so payload bytes go up as they arrive, unmasked
//! straight into the caller's buffer: no message is reassembled, nothing is copied
//! twice, and an idle connection holds no buffer. That is why this is a frame
//! parser over tungstenite's frame types, not tungstenite's `WebSocket`, which keeps
//! a read buffer per connection and hands out whole messages.
//!
//! # Invariants
//! - The upgrade request is held until its end, at most [`REQUEST_BYTES_MAX`]; the
//!   buffer is dropped with the upgrade.
//! - A data frame is refused from its header when it is longer than
//!   `max_frame_bytes`; a control frame is at most 125 bytes. So what the layer holds
//!   is bounded: a partial header (14 bytes) and a control frame's payload.
//! - After a Close is sent, no frame follows it [RFC 6455 5.5.1]; after the peer's
//!   Close, its input is ignored.

use std::io::Cursor;

use bytes::{BufMut, BytesMut};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::layer::{Layer, LayerError};

/// The WebSocket settings of a listener.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct WsSettings {
    /// The request path clients connect to; any other answers 404. A query string
    /// after the path is allowed (some clients sign their requests in it).
    pub path: String,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings { path: "/mqtt".into() }
    }
}

/// A new server-side WebSocket connection, waiting for the upgrade request. Data
/// frames longer than `max_frame_bytes` end it.
pub(crate) fn ws_layer(settings: &WsSettings, max_frame_bytes: usize) -> Box<dyn Layer> {
    Box::new(WsLayer {
        state: State::Upgrade(Box::new(Upgrade {
            path: settings.path.as_str().into(),
            request: Vec::new(),
        })),
        max_frame_bytes: u64::try_from(max_frame_bytes).unwrap_or(u64::MAX),
        close_sent: false,
        peer_closed: false,
    })
}

/// The upgrade request, with its headers, is refused beyond this size (browsers send
/// well under 2 KiB; the common server limit is 8 KiB).
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Request headers the parser reads (on the stack, 32 bytes each); more is refused.
const REQUEST_HEADERS_MAX: usize = 64;
/// Subprotocols accepted, preferred first: `mqtt` [MQTT-6.0.0-3], and `mqttv3.1`,
/// which clients of MQTT 3.1 offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// The longest frame header: 2 bytes, 8 of length, 4 of mask.
const HEADER_BYTES_MAX: usize = 14;
/// [RFC 6455 5.5] A control frame's payload.
const CONTROL_BYTES_MAX: u64 = 125;

#[derive(Debug)]
struct WsLayer {
    state: State,
    max_frame_bytes: u64,
    /// A Close frame went out: nothing may follow it.
    close_sent: bool,
    /// The peer's Close came: nothing it sends after counts.
    peer_closed: bool,
}

#[derive(Debug)]
enum State {
    /// Reading the HTTP upgrade request (boxed: a connection spends a moment here).
    Upgrade(Box<Upgrade>),
    /// Upgraded: frames flow.
    Open(Frames),
    /// Refused or broken; input is ignored while the socket closes.
    Failed,
}

#[derive(Debug)]
struct Upgrade {
    /// The path the listener serves.
    path: Box<str>,
    /// The request so far, up to its blank line.
    request: Vec<u8>,
}

/// Where the input stands in the frame stream.
#[derive(Debug, Default)]
struct Frames {
    /// A frame header received in part.
    head: [u8; HEADER_BYTES_MAX],
    head_len: u8,
    /// The frame whose payload is arriving, once its header is read.
    payload: Option<Payload>,
    /// A data message was started and not finished: its next data frame must be a
    /// continuation.
    fragmented: bool,
    /// The payload of a control frame (Ping, Close) received so far. Empty, with no
    /// allocation, between control frames.
    control: Vec<u8>,
}

#[derive(Debug)]
struct Payload {
    kind: Kind,
    /// Payload bytes still to come.
    left: u64,
    mask: [u8; 4],
    /// Payload bytes already unmasked, modulo 4: where the mask stands.
    phase: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data,
    Ping,
    Pong,
    Close,
}

/// A peer's breach of the protocol, and the Close code that answers it.
#[derive(Debug)]
struct Violation {
    code: CloseCode,
    reason: String,
}

impl Violation {
    fn protocol(reason: impl Into<String>) -> Violation {
        Violation { code: CloseCode::Protocol, reason: reason.into() }
    }
}

/// An upgrade refused, and the HTTP status that answers it.
#[derive(Debug)]
struct Refusal {
    status: &'static str,
    /// Extra header lines of the answer, each ending in CRLF.
    headers: &'static str,
    reason: String,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Refusal {
        Refusal { status: "400 Bad Request", headers: "", reason: reason.into() }
    }
}

impl Layer for WsLayer {
    fn input(
        &mut self,
        bytes: &[u8],
        app: &mut BytesMut,
        wire: &mut BytesMut,
    ) -> Result<(), LayerError> {
        let rest = match &self.state {
            State::Upgrade(_) => match self.upgrade(bytes, wire)? {
                Some(rest) => rest,
                None => return Ok(()),
            },
            State::Open(_) => bytes,
            State::Failed => return Ok(()),
        };
        self.frames(rest, app, wire).map_err(|violation| {
            if !self.close_sent {
                write_close(wire, Some(violation.code));
                self.close_sent = true;
            }
            self.state = State::Failed;
            LayerError::WebSocket(violation.reason)
        })
    }

    fn output(&mut self, app: &[u8], wire: &mut BytesMut) -> Result<(), LayerError> {
        debug_assert!(self.ready(), "output before the upgrade");
        // Nothing may follow a Close; the connection is ending, so what the broker
        // still had to say is dropped.
        if self.close_sent || app.is_empty() || !self.ready() {
            return Ok(());
        }
        write_frame(wire, OpCode::Data(Data::Binary), app);
        Ok(())
    }

    fn ready(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    fn close(&mut self, wire: &mut BytesMut) {
        if self.ready() && !self.close_sent {
            write_close(wire, Some(CloseCode::Normal));
            self.close_sent = true;
        }
    }
}

impl WsLayer {
    /// Takes request bytes; once the request is whole, answers it and returns the
    /// bytes after it (frames a client sent without waiting for the answer).
    fn upgrade<'a>(
        &mut self,
        bytes: &'a [u8],
        wire: &mut BytesMut,
    ) -> Result<Option<&'a [u8]>, LayerError> {
        let State::Upgrade(upgrade) = &mut self.state else { return Ok(Some(bytes)) };
        let before = upgrade.request.len();
        let window = &bytes[..bytes.len().min(REQUEST_BYTES_MAX - before)];
        upgrade.request.extend_from_slice(window);
        // The blank line may straddle the previous input.
        let from = before.saturating_sub(3);
        let Some(at) = upgrade.request[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
            if upgrade.request.len() < REQUEST_BYTES_MAX {
                return Ok(None);
            }
            let refusal = Refusal {
                status: "431 Request Header Fields Too Large",
                headers: "",
                reason: format!("request header over {REQUEST_BYTES_MAX} bytes"),
            };
            return Err(self.refuse(refusal, wire));
        };
        let end = from + at + 4;
        match answer(&upgrade.request[..end], &upgrade.path) {
            Ok(response) => {
                wire.extend_from_slice(response.as_bytes());
                self.state = State::Open(Frames::default());
                Ok(Some(&bytes[end - before..]))
            }
            Err(refusal) => Err(self.refuse(refusal, wire)),
        }
    }

    /// Answers a refused upgrade; the layer fails.
    fn refuse(&mut self, refusal: Refusal, wire: &mut BytesMut) -> LayerError {
        let Refusal { status, headers, reason } = refusal;
        let answer =
            format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n");
        wire.extend_from_slice(answer.as_bytes());
        self.state = State::Failed;
        LayerError::Handshake(format!("{reason} ({status})"))
    }

    /// Takes frame bytes: data payloads go to `app`, answers to `wire`.
    fn frames(
        &mut self,
        bytes: &[u8],
        app: &mut BytesMut,
        wire: &mut BytesMut,
    ) -> Result<(), Violation> {
        let State::Open(frames) = &mut self.state else { return Ok(()) };
        let mut rest = bytes;
        while !self.peer_closed {
            let Some(payload) = &mut frames.payload else {
                if rest.is_empty() {
                    break;
                }
                let Some(used) = frames.header(rest, self.max_frame_bytes)? else { break };
                rest = &rest[used..];
                continue;
            };
            if payload.left > 0 {
                if rest.is_empty() {
                    break;
                }
                let n = rest.len().min(usize::try_from(payload.left).unwrap_or(usize::MAX));
                let (chunk, after) = rest.split_at(n);
                rest = after;
                match payload.kind {
                    Kind::Data => {
                        let start = app.len();
                        app.extend_from_slice(chunk);
                        unmask(&mut app[start..], payload.mask, payload.phase);
                    }
                    Kind::Ping | Kind::Close => {
                        let start = frames.control.len();
                        frames.control.extend_from_slice(chunk);
                        unmask(&mut frames.control[start..], payload.mask, payload.phase);
                    }
                    // Solicited or not, a pong needs no answer [RFC 6455 5.5.3].
                    Kind::Pong => {}
                }
                payload.phase = ((usize::from(payload.phase) + n) % 4) as u8;
                payload.left -= n as u64;
                continue;
            }
            // The frame is whole.
            let kind = payload.kind;
            frames.payload = None;
            let control = std::mem::take(&mut frames.control);
            match kind {
                Kind::Data | Kind::Pong => {}
                Kind::Ping if !self.close_sent => {
                    write_frame(wire, OpCode::Control(Control::Pong), &control);
                }
                Kind::Ping => {}
                Kind::Close => {
                    self.peer_closed = true;
                    let answer = close_answer(&control)?;
                    if !self.close_sent {
                        write_close(wire, answer);
                        self.close_sent = true;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Frames {
    /// Reads a frame header from what was kept and `bytes`. Returns how much of
    /// `bytes` it took, or `None` when all of it went into a header still partial.
    fn header(&mut self, bytes: &[u8], max_frame_bytes: u64) -> Result<Option<usize>, Violation> {
        let have = usize::from(self.head_len);
        let take = bytes.len().min(HEADER_BYTES_MAX - have);
        self.head[have..have + take].copy_from_slice(&bytes[..take]);
        let mut cursor = Cursor::new(&self.head[..have + take]);
        let parsed = FrameHeader::parse(&mut cursor)
            .map_err(|e| Violation::protocol(format!("[RFC 6455 5.2] {e}")))?;
        let Some((header, len)) = parsed else {
            // Short of a whole header, so all of `take` (which is all of `bytes`:
            // a header is at most `HEADER_BYTES_MAX`) belongs to it.
            self.head_len = (have + take) as u8;
            return Ok(None);
        };
        let used = cursor.position() as usize - have;
        self.head_len = 0;
        self.payload = Some(self.start(header, len, max_frame_bytes)?);
        Ok(Some(used))
    }

    /// Checks a frame's header against RFC 6455 and MQTT section 6.
    fn start(
        &mut self,
        header: FrameHeader,
        len: u64,
        max_frame_bytes: u64,
    ) -> Result<Payload, Violation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::protocol(
                "[RFC 6455 5.2] a reserved bit is set, and no extension was agreed",
            ));
        }
        let Some(mask) = header.mask else {
            return Err(Violation::protocol("[RFC 6455 5.1] a client frame must be masked"));
        };
        let kind = match header.opcode {
            OpCode::Data(Data::Text) => {
                return Err(Violation {
                    code: CloseCode::Unsupported,
                    reason: "[MQTT-6.0.0-1] a text frame: MQTT travels in binary frames".into(),
                })
            }
            OpCode::Data(Data::Binary) if self.fragmented => {
                return Err(Violation::protocol(
                    "[RFC 6455 5.4] a new message inside a fragmented one",
                ))
            }
            OpCode::Data(Data::Continue) if !self.fragmented => {
                return Err(Violation::protocol(
                    "[RFC 6455 5.4] a continuation frame outside a fragmented message",
                ))
            }
            OpCode::Data(Data::Binary | Data::Continue) => {
                self.fragmented = !header.is_final;
                Kind::Data
            }
            OpCode::Control(_) if !header.is_final || len > CONTROL_BYTES_MAX => {
                return Err(Violation::protocol(
                    "[RFC 6455 5.5] a control frame must be whole and at most 125 bytes",
                ))
            }
            OpCode::Control(Control::Ping) => Kind::Ping,
            OpCode::Control(Control::Pong) => Kind::Pong,
            OpCode::Control(Control::Close) => Kind::Close,
            // `FrameHeader::parse` refuses reserved opcodes; answer them the same way.
            OpCode::Data(Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) => {
                return Err(Violation::protocol(format!("[RFC 6455 5.2] reserved opcode {op}")))
            }
        };
        if kind == Kind::Data && len > max_frame_bytes {
            return Err(Violation {
                code: CloseCode::Size,
                reason: format!("a frame of {len} bytes, over the maximum of {max_frame_bytes}"),
            });
        }
        Ok(Payload { kind, left: len, mask, phase: 0 })
    }
}

/// The code a Close frame answers the peer's Close payload with: its own code
/// echoed [RFC 6455 5.5.1], or none if it gave none.
fn close_answer(payload: &[u8]) -> Result<Option<CloseCode>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("[RFC 6455 5.5.1] a Close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed() {
                return Err(Violation::protocol(format!(
                    "[RFC 6455 7.4.1] close code {} may not be sent",
                    u16::from(code)
                )));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation {
                    code: CloseCode::Invalid,
                    reason: "[RFC 6455 5.5.1] a Close reason that is not UTF-8".into(),
                });
            }
            Ok(Some(code))
        }
    }
}

/// The answer to an upgrade request (the whole header, up to its blank line).
fn answer(request: &[u8], path: &str) -> Result<String, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::bad("a request cut short")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal {
                status: "431 Request Header Fields Too Large",
                headers: "",
                reason: format!("more than {REQUEST_HEADERS_MAX} request headers"),
            })
        }
        Err(e) => return Err(Refusal::bad(format!("a malformed request: {e}"))),
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return Err(Refusal::bad("[RFC 6455 4.2.1] the upgrade must be an HTTP/1.1 GET"));
    }
    let target = req.path.unwrap_or_default();
    let asked = target.split_once('?').map_or(target, |(path, _query)| path);
    if asked != path {
        return Err(Refusal {
            status: "404 Not Found",
            headers: "",
            reason: format!("path {asked:?} is not the listener's {path:?}"),
        });
    }
    let values = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let tokens = |name| values(name).flat_map(|v| v.split(',')).map(str::trim);
    if !tokens("Upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Err(Refusal::bad("[RFC 6455 4.2.1] no `Upgrade: websocket`"));
    }
    if !tokens("Connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(Refusal::bad("[RFC 6455 4.2.1] no `Connection: Upgrade`"));
    }
    if values("Sec-WebSocket-Version").map(str::trim).ne(["13"]) {
        return Err(Refusal {
            status: "426 Upgrade Required",
            headers: "Sec-WebSocket-Version: 13\r\n",
            reason: "[RFC 6455 4.2.2] only WebSocket version 13 is spoken".into(),
        });
    }
    // `Origin` is not checked: it protects a browser's cookies, and MQTT clients
    // authenticate in CONNECT, whichever page opened the socket.
    // 16 bytes in base64; the accept key is derived from the text as sent.
    let key = match values("Sec-WebSocket-Key").map(str::trim).collect::<Vec<_>>()[..] {
        [key] if key.len() == 24 => key,
        _ => return Err(Refusal::bad("[RFC 6455 4.2.1] no valid Sec-WebSocket-Key")),
    };
    // A request that offers no subprotocol is accepted, and answered without one:
    // [MQTT-6.0.0-3] asks clients to offer `mqtt`, yet some send nothing, and
    // refusing them gains nothing. One that offers only others is not MQTT.
    let offered = tokens("Sec-WebSocket-Protocol").filter(|t| !t.is_empty()).count() > 0;
    let chosen =
        SUBPROTOCOLS.into_iter().find(|p| tokens("Sec-WebSocket-Protocol").any(|t| t == *p));
    let protocol = match chosen {
        Some(chosen) => format!("Sec-WebSocket-Protocol: {chosen}\r\n"),
        None if !offered => String::new(),
        None => {
            return Err(Refusal::bad(format!(
                "[MQTT-6.0.0-3] no MQTT subprotocol offered (accepted: {})",
                SUBPROTOCOLS.join(", ")
            )))
        }
    };
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{protocol}\r\n",
        derive_accept_key(key.as_bytes())
    ))
}

/// Appends an unmasked, final frame (servers never mask [RFC 6455 5.1]).
fn write_frame(wire: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    let header =
        FrameHeader { is_final: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: None };
    let len = payload.len() as u64;
    wire.reserve(header.len(len) + payload.len());
    header.format(len, &mut (&mut *wire).writer()).expect("writing to memory cannot fail");
    wire.extend_from_slice(payload);
}

/// Appends a Close frame, with `code` and no reason text.
fn write_close(wire: &mut BytesMut, code: Option<CloseCode>) {
    let payload = code.map(|c| u16::from(c).to_be_bytes());
    write_frame(wire, OpCode::Control(Control::Close), payload.as_ref().map_or(&[], |p| &p[..]));
}

/// XORs `buf` with `mask`, `buf` starting `phase` bytes into the mask [RFC 6455 5.3].
/// Four bytes at a time, which the compiler widens further.
fn unmask(buf: &mut [u8], mask: [u8; 4], phase: u8) {
    let mut mask = mask;
    mask.rotate_left(usize::from(phase));
    let word = u32::from_ne_bytes(mask);
    let mut words = buf.chunks_exact_mut(4);
    for w in &mut words {
        let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) ^ word;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in words.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    /// [RFC 6455 1.3] The accept key of `KEY`.
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    const MAX: usize = 1024;

    pub(crate) fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    pub(crate) fn response(protocol: Option<&str>) -> String {
        let protocol =
            protocol.map_or(String::new(), |p| format!("Sec-WebSocket-Protocol: {p}\r\n"));
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n{protocol}\r\n"
        )
    }

    /// A client frame: `first` is FIN, RSV and opcode; masked with `mask` if any.
    pub(crate) fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![first];
        let bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(bit | n as u8),
            n @ 126..=0xFFFF => {
                out.push(bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = mask.unwrap_or_default();
        if bit != 0 {
            out.extend_from_slice(&mask);
        }
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    pub(crate) fn binary(payload: &[u8]) -> Vec<u8> {
        frame(0x82, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
    }

    /// A server frame, as the layer writes it.
    fn server(first: u8, payload: &[u8]) -> Vec<u8> {
        frame(first, payload, None)
    }

    fn layer() -> Box<dyn Layer> {
        ws_layer(&WsSettings::default(), MAX)
    }

    fn opened() -> Box<dyn Layer> {
        let mut l = layer();
        let (app, wire, result) = feed(&mut l, request("/mqtt", "").as_bytes());
        result.unwrap();
        assert!(app.is_empty());
        assert_eq!(wire, response(None).as_bytes());
        l
    }

    fn feed(l: &mut Box<dyn Layer>, bytes: &[u8]) -> (Vec<u8>, Vec<u8>, Result<(), LayerError>) {
        let (mut app, mut wire) = (BytesMut::new(), BytesMut::new());
        let result = l.input(bytes, &mut app, &mut wire);
        (app.to_vec(), wire.to_vec(), result)
    }

    /// Feeds `bytes` to a new layer in pieces cut at `cuts`; returns what came out.
    fn feed_cut(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<u8>, Box<dyn Layer>) {
        let mut l = layer();
        let (mut app, mut wire) = (Vec::new(), Vec::new());
        let mut from = 0;
        for &to in cuts.iter().chain([&bytes.len()]) {
            let (a, w, result) = feed(&mut l, &bytes[from..to]);
            result.unwrap();
            app.extend(a);
            wire.extend(w);
            from = to;
        }
        (app, wire, l)
    }

    /// Checks that `input` is refused with `status`, and the error names `reason`.
    fn check_refused(input: &str, status: &str, reason: &str) {
        let mut l = layer();
        let (_, wire, result) = feed(&mut l, input.as_bytes());
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.starts_with(&format!("HTTP/1.1 {status}")), "{wire}");
        let err = result.unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
        assert!(!l.ready());
        let (app, wire, result) = feed(&mut l, &binary(b"x"));
        assert!(
            result.is_ok() && app.is_empty() && wire.is_empty(),
            "a refused layer ignores input"
        );
    }

    /// Checks that `input`, after the upgrade, ends the connection with `code`.
    fn check_violation(input: &[u8], code: u16, reason: &str) {
        let mut l = opened();
        let (_, wire, result) = feed(&mut l, input);
        assert_eq!(wire, server(0x88, &code.to_be_bytes()));
        let err = result.unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
        let mut wire = BytesMut::new();
        l.close(&mut wire);
        assert!(wire.is_empty(), "a Close went out already");
    }

    #[test]
    fn upgrade_answers_with_the_accept_key_and_the_subprotocol() {
        for (offered, chosen) in [
            ("mqtt", Some("mqtt")),
            ("mqttv3.1", Some("mqttv3.1")),
            ("foo, mqttv3.1, mqtt", Some("mqtt")),
            ("foo\r\nSec-WebSocket-Protocol: mqtt", Some("mqtt")),
        ] {
            let mut l = layer();
            let header = format!("Sec-WebSocket-Protocol: {offered}\r\n");
            let (app, wire, result) = feed(&mut l, request("/mqtt", &header).as_bytes());
            result.unwrap();
            assert!(app.is_empty());
            assert_eq!(String::from_utf8(wire).unwrap(), response(chosen), "{offered}");
            assert!(l.ready());
        }
        // No subprotocol offered: accepted, answered without one.
        opened();
        // A query string after the path.
        let (_, wire, result) = feed(&mut layer(), request("/mqtt?x-sig=abc", "").as_bytes());
        result.unwrap();
        assert_eq!(wire, response(None).as_bytes());
    }

    #[test]
    fn bad_upgrades_are_refused() {
        check_refused(&request("/other", ""), "404 Not Found", "\"/other\"");
        check_refused(&request("/mqtt/", ""), "404 Not Found", "\"/mqtt/\"");
        let only_others = request("/mqtt", "Sec-WebSocket-Protocol: chat, superchat\r\n");
        check_refused(&only_others, "400 Bad Request", "[MQTT-6.0.0-3]");
        let version = request("/mqtt", "").replace("Version: 13", "Version: 8");
        check_refused(&version, "426 Upgrade Required", "version 13");
        let post = request("/mqtt", "").replace("GET", "POST");
        check_refused(&post, "400 Bad Request", "HTTP/1.1 GET");
        let old = request("/mqtt", "").replace("HTTP/1.1", "HTTP/1.0");
        check_refused(&old, "400 Bad Request", "HTTP/1.1 GET");
        let no_upgrade = request("/mqtt", "").replace("Upgrade: websocket\r\n", "");
        check_refused(&no_upgrade, "400 Bad Request", "Upgrade: websocket");
        let no_connection = request("/mqtt", "").replace("keep-alive, Upgrade", "keep-alive");
        check_refused(&no_connection, "400 Bad Request", "Connection: Upgrade");
        let no_key = request("/mqtt", "").replace(KEY, "short");
        check_refused(&no_key, "400 Bad Request", "Sec-WebSocket-Key");
        check_refused("GET /mqtt HTTP/1.1\r\nBad Header\r\n\r\n", "400 Bad Request", "malformed");
        let many: String = (0..REQUEST_HEADERS_MAX).map(|i| format!("X-{i}: y\r\n")).collect();
        check_refused(&request("/mqtt", &many), "431", "request headers");
    }

    #[test]
    fn the_request_header_is_bounded_at_8_kib() {
        let pad = |total: usize| {
            let base = request("/mqtt", "X-Pad: \r\n").len();
            request("/mqtt", &format!("X-Pad: {}\r\n", "p".repeat(total - base)))
        };
        let (_, wire, result) = feed(&mut layer(), pad(REQUEST_BYTES_MAX).as_bytes());
        result.unwrap();
        assert_eq!(wire, response(None).as_bytes());
        check_refused(&pad(REQUEST_BYTES_MAX + 1), "431", "over 8192 bytes");
        // Without an end, in pieces: refused as soon as 8 KiB are held.
        let mut l = layer();
        let (_, _, result) = feed(&mut l, &[b'a'; REQUEST_BYTES_MAX - 1]);
        result.unwrap();
        let (_, wire, result) = feed(&mut l, b"a");
        assert!(wire.starts_with(b"HTTP/1.1 431"));
        assert!(result.is_err());
    }

    #[test]
    fn frames_cut_anywhere_deliver_the_same_bytes() {
        let mut stream = request("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n").into_bytes();
        // Two packets in one frame [MQTT-6.0.0-2]; then a message in three
        // fragments with a ping between them; an empty frame; a pong; a long frame
        // (16-bit length).
        stream.extend(binary(b"\xc0\x00\x10\x02"));
        stream.extend(frame(0x02, b"ab", Some([1, 2, 3, 4])));
        stream.extend(frame(0x89, b"hi", Some([5, 6, 7, 8])));
        stream.extend(frame(0x00, b"cde", Some([9, 10, 11, 12])));
        stream.extend(frame(0x80, b"f", Some([13, 14, 15, 16])));
        stream.extend(binary(b""));
        stream.extend(frame(0x8a, b"", Some([1, 1, 1, 1])));
        let long: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        stream.extend(binary(&long));
        let mut expected_app = b"\xc0\x00\x10\x02abcdef".to_vec();
        expected_app.extend(&long);
        let mut expected_wire = response(Some("mqtt")).into_bytes();
        expected_wire.extend(server(0x8a, b"hi"));

        let (app, wire, l) = feed_cut(&stream, &[]);
        assert_eq!(app, expected_app);
        assert_eq!(wire, expected_wire);
        assert!(l.ready() && !l.peer_closed());
        for cut in 1..stream.len() {
            let (app, wire, _) = feed_cut(&stream, &[cut]);
            assert_eq!((app, wire), (expected_app.clone(), expected_wire.clone()), "cut at {cut}");
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        let (app, wire, _) = feed_cut(&stream, &every);
        assert_eq!((app, wire), (expected_app, expected_wire), "one byte at a time");
    }

    #[test]
    fn a_frame_of_the_maximum_size_passes_and_a_larger_one_ends_the_connection() {
        let mut l = opened();
        let payload = vec![7u8; MAX];
        let (app, _, result) = feed(&mut l, &binary(&payload));
        result.unwrap();
        assert_eq!(app, payload);
        // Refused from its header, before any payload arrives.
        let header = &binary(&[0; MAX + 1])[..8];
        check_violation(header, 1009, "1025 bytes");
    }

    #[test]
    fn protocol_violations_end_the_connection_with_a_close() {
        check_violation(&frame(0x81, b"{}", Some([1, 2, 3, 4])), 1003, "[MQTT-6.0.0-1]");
        check_violation(&frame(0x82, b"\x10", None), 1002, "[RFC 6455 5.1]");
        check_violation(&frame(0xc2, b"x", Some([1, 2, 3, 4])), 1002, "reserved bit");
        check_violation(&frame(0x83, b"x", Some([1, 2, 3, 4])), 1002, "[RFC 6455 5.2]");
        check_violation(&frame(0x80, b"x", Some([1, 2, 3, 4])), 1002, "continuation");
        let mut nested = frame(0x02, b"a", Some([1, 2, 3, 4]));
        nested.extend(binary(b"b"));
        check_violation(&nested, 1002, "inside a fragmented");
        check_violation(&frame(0x09, b"", Some([1, 2, 3, 4])), 1002, "control frame");
        check_violation(&frame(0x89, &[0; 126], Some([1, 2, 3, 4])), 1002, "control frame");
        check_violation(&frame(0x88, b"\x03", Some([1, 2, 3, 4])), 1002, "one byte");
        check_violation(&frame(0x88, b"\x03\xed", Some([1, 2, 3, 4])), 1002, "1005");
        check_violation(&frame(0x88, b"\x03\xe8\xff", Some([1, 2, 3, 4])), 1007, "UTF-8");
    }

    #[test]
    fn a_close_is_answered_and_ends_the_input() {
        let mut l = opened();
        let mut input = binary(b"\x10");
        input.extend(frame(0x88, b"\x03\xe9bye", Some([1, 2, 3, 4])));
        input.extend(binary(b"after the close"));
        let (app, wire, result) = feed(&mut l, &input);
        result.unwrap();
        assert_eq!(app, b"\x10");
        assert_eq!(wire, server(0x88, b"\x03\xe9"), "the peer's code, echoed");
        assert!(l.peer_closed());
        let (app, wire, result) = feed(&mut l, &binary(b"more"));
        assert!(result.is_ok() && app.is_empty() && wire.is_empty());
        let mut wire = BytesMut::new();
        l.output(b"late", &mut wire).unwrap();
        l.close(&mut wire);
        assert!(wire.is_empty(), "nothing follows a Close");

        // A Close without a code is answered without one.
        let (_, wire, result) = feed(&mut opened(), &frame(0x88, b"", Some([1, 2, 3, 4])));
        result.unwrap();
        assert_eq!(wire, server(0x88, b""));
    }

    #[test]
    fn output_is_binary_frames_and_close_says_goodbye_once() {
        let mut l = opened();
        let mut wire = BytesMut::new();
        l.output(b"\x20\x02\x00\x00", &mut wire).unwrap();
        let long = vec![1u8; 70_000];
        l.output(&long, &mut wire).unwrap();
        let mut expected = server(0x82, b"\x20\x02\x00\x00");
        expected.extend(server(0x82, &long));
        assert_eq!(wire, expected);
        let mut wire = BytesMut::new();
        l.close(&mut wire);
        l.close(&mut wire);
        assert_eq!(wire, server(0x88, &1000u16.to_be_bytes()));
        // The peer's answer completes the closing handshake.
        let (_, wire, result) = feed(&mut l, &frame(0x88, b"\x03\xe8", Some([1, 2, 3, 4])));
        result.unwrap();
        assert!(wire.is_empty() && l.peer_closed());
    }

    #[test]
    fn unmask_matches_a_byte_at_a_time_at_every_phase() {
        let mask = [0x11, 0x22, 0x44, 0x88];
        let data: Vec<u8> = (0..37).collect();
        for phase in 0..4u8 {
            let mut fast = data.clone();
            unmask(&mut fast, mask, phase);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(i + usize::from(phase)) % 4])
                .collect();
            assert_eq!(fast, slow, "phase {phase}");
        }
    }

    /// An in-memory stream for tungstenite: reads what the test put in, then
    /// `WouldBlock`; keeps what tungstenite writes.
    #[derive(Default)]
    struct Pipe {
        input: std::collections::VecDeque<u8>,
        output: Vec<u8>,
    }

    impl std::io::Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.input.is_empty() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            std::io::Read::read(&mut self.input, buf)
        }
    }

    impl std::io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tungstenite_as_the_client_understands_the_layer() {
        use tungstenite::protocol::{Message, Role, WebSocket};
        let mut l = opened();
        let mut client = WebSocket::from_raw_socket(Pipe::default(), Role::Client, None);
        client.send(Message::binary(&b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"[..])).unwrap();
        client.send(Message::Ping(b"p".to_vec().into())).unwrap();
        let sent = std::mem::take(&mut client.get_mut().output);
        let (app, wire, result) = feed(&mut l, &sent);
        result.unwrap();
        assert_eq!(app, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
        let mut out = BytesMut::from(&wire[..]);
        l.output(b"\x20\x02\x00\x00", &mut out).unwrap();
        l.close(&mut out);
        client.get_mut().input.extend(out);
        assert_eq!(client.read().unwrap(), Message::Pong(b"p".to_vec().into()));
        assert_eq!(client.read().unwrap(), Message::binary(&b"\x20\x02\x00\x00"[..]));
        assert!(
            matches!(client.read().unwrap(), Message::Close(Some(c)) if c.code == CloseCode::Normal)
        );
    }
}
