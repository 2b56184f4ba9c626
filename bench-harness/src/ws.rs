//! MQTT over WebSocket, client side [MQTT 3.1.1 section 6; RFC 6455]: the HTTP
//! upgrade with `Sec-WebSocket-Protocol: mqtt`, then masked binary frames out and
//! the server's frames in.
//!
//! Every write is one frame: in packet write mode each MQTT packet goes out as a
//! frame of its own, as browser and device clients send them. The server's frames
//! may split or join packets [MQTT-6.0.0-2], so their payloads go up as one byte
//! stream and no message is reassembled.
//!
//! # Invariants
//! - A write returns only once its whole frame is on the layer below (and that
//!   layer flushed), so `write_all` alone puts a packet on the wire.
//! - The server's frames are never masked [RFC 6455 5.1]; a masked one, a text
//!   frame or a reserved opcode fails the read.
//! - What is buffered is bounded: bytes of one read from below, plus one control
//!   frame (at most 125 bytes of payload) waiting for the rest of itself.

use anyhow::{bail, Context as _};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The upgrade response is refused beyond this size (servers send a few hundred bytes).
const RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// Bytes read from below at once.
const READ_CHUNK: usize = 64 * 1024;
/// [RFC 6455 5.5] A control frame's payload.
const CONTROL_BYTES_MAX: u64 = 125;

/// Sends the upgrade request for `path` on `io`, checks the server's answer, and
/// returns the stream that frames MQTT bytes from then on.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
    path: &str,
) -> anyhow::Result<WsStream<S>> {
    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await.context("sending the WebSocket upgrade")?;
    io.flush().await.context("sending the WebSocket upgrade")?;
    let mut response = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_len = loop {
        let n = io.read(&mut chunk).await.context("reading the WebSocket upgrade response")?;
        if n == 0 {
            bail!("the broker closed the connection during the WebSocket upgrade");
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(len) = check_response(&response, &key)? {
            break len;
        }
        if response.len() > RESPONSE_BYTES_MAX {
            bail!("the WebSocket upgrade response is longer than {RESPONSE_BYTES_MAX} bytes");
        }
    };
    // Bytes after the response are already frames.
    let mut ws = WsStream::new(io);
    let rest = &response[head_len..];
    ws.inbuf[..rest.len()].copy_from_slice(rest);
    ws.end = rest.len();
    Ok(ws)
}

/// Checks the upgrade response in `buf`: `Ok(None)` until it is whole, then its
/// length if the server accepted the upgrade for `key`.
fn check_response(buf: &[u8], key: &str) -> anyhow::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).context("parsing the WebSocket upgrade response")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    if resp.code != Some(101) {
        bail!(
            "the broker refused the WebSocket upgrade: {} {}",
            resp.code.unwrap_or(0),
            resp.reason.unwrap_or("")
        );
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        bail!("the WebSocket upgrade response has no `Upgrade: websocket`");
    }
    let want = derive_accept_key(key.as_bytes());
    match header("sec-websocket-accept") {
        Some(got) if got == want => {}
        got => bail!("Sec-WebSocket-Accept is {got:?}, expected {want:?} [RFC 6455 4.1]"),
    }
    // [MQTT-6.0.0-4] The server selects `mqtt`; one that selects nothing is let be.
    if let Some(p) = header("sec-websocket-protocol") {
        if !p.eq_ignore_ascii_case("mqtt") {
            bail!("the broker selected WebSocket subprotocol {p:?}, not mqtt");
        }
    }
    Ok(Some(len))
}

/// Appends a final, masked frame carrying `payload` [RFC 6455 5.2, 5.3].
fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(mask),
    };
    header.format(payload.len() as u64, out).expect("writing into a Vec cannot fail");
    out.reserve(payload.len());
    // Eight bytes at a time: the payload starts at the mask's first byte, and so
    // does every 8-byte chunk.
    let word = u32::from_ne_bytes(mask) as u64;
    let wide = word | (word << 32);
    let mut chunks = payload.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("chunks of 8 bytes")) ^ wide;
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend(chunks.remainder().iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// MQTT bytes over an upgraded WebSocket connection on `io`.
#[derive(Debug)]
pub struct WsStream<S> {
    io: S,
    /// Bytes from the server not yet taken apart: `inbuf[start..end]`.
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Payload bytes of the current data frame still to come.
    left: u64,
    /// The server sent Close, or its stream ended: reads return 0.
    closed: bool,
    /// The frame being written and how much of it went out. `pending` is the
    /// length of the caller's bytes it carries while a write is under way.
    out: Vec<u8>,
    out_pos: usize,
    pending: Option<usize>,
    /// Pongs owed to the server's pings, sent before the next frame. A read never
    /// writes: the publisher's reader and writer tasks share one stream.
    pongs: Vec<u8>,
}

impl<S> WsStream<S> {
    fn new(io: S) -> WsStream<S> {
        WsStream {
            io,
            inbuf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            left: 0,
            closed: false,
            out: Vec::new(),
            out_pos: 0,
            pending: None,
            pongs: Vec::new(),
        }
    }

    /// The layer below.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Takes apart the buffered frames, copying data payloads into `dst`.
    /// Returns the bytes copied; stops when `dst` is full or more input is needed.
    fn take_frames(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < dst.len() && !self.closed {
            if self.left > 0 {
                let avail = self.end - self.start;
                let k = avail.min(dst.len() - n).min(usize::try_from(self.left).unwrap_or(avail));
                if k == 0 {
                    break;
                }
                dst[n..n + k].copy_from_slice(&self.inbuf[self.start..self.start + k]);
                self.start += k;
                self.left -= k as u64;
                n += k;
                continue;
            }
            let mut cur = Cursor::new(&self.inbuf[self.start..self.end]);
            let Some((header, len)) =
                FrameHeader::parse(&mut cur).map_err(|e| invalid(format!("WebSocket: {e}")))?
            else {
                break;
            };
            let head = cur.position() as usize;
            if header.mask.is_some() {
                return Err(invalid("[RFC 6455 5.1] a server frame is masked".into()));
            }
            match header.opcode {
                OpCode::Data(Data::Binary | Data::Continue) => {
                    self.start += head;
                    self.left = len;
                }
                OpCode::Control(c @ (Control::Ping | Control::Pong | Control::Close)) => {
                    if len > CONTROL_BYTES_MAX {
                        return Err(invalid(format!(
                            "[RFC 6455 5.5] a control frame of {len} bytes"
                        )));
                    }
                    let whole = head + len as usize;
                    if self.end - self.start < whole {
                        break;
                    }
                    let payload = &self.inbuf[self.start + head..self.start + whole];
                    match c {
                        Control::Ping => {
                            let mask = fastrand::u32(..).to_ne_bytes();
                            encode_frame(
                                &mut self.pongs,
                                OpCode::Control(Control::Pong),
                                payload,
                                mask,
                            );
                        }
                        Control::Close => self.closed = true,
                        _ => {}
                    }
                    self.start += whole;
                }
                other => {
                    return Err(invalid(format!(
                        "[MQTT-6.0.0-1] a WebSocket frame with opcode {other}, not binary"
                    )))
                }
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(n)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let n = this.take_frames(buf)?;
            if n > 0 || this.closed || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            // Make room: move what is left (a partial header or control frame) to the front.
            if this.start > 0 {
                this.inbuf.copy_within(this.start..this.end, 0);
                this.end -= this.start;
                this.start = 0;
            }
            let got = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.inbuf[this.end..]))?;
            if got == 0 {
                if this.left > 0 || this.end > 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                this.closed = true;
                return Poll::Ready(Ok(0));
            }
            this.end += got;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() && this.pending.is_none() {
            return Poll::Ready(Ok(0));
        }
        // A write that returned Pending is polled again with the same bytes
        // (write_all does so); its frame is already built.
        if this.pending.is_none() {
            this.out.clear();
            this.out.append(&mut this.pongs);
            let mask = fastrand::u32(..).to_ne_bytes();
            encode_frame(&mut this.out, OpCode::Data(Data::Binary), buf, mask);
            this.out_pos = 0;
            this.pending = Some(buf.len());
        }
        while this.out_pos < this.out.len() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &this.out[this.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.out_pos += n;
        }
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Poll::Ready(Ok(this.pending.take().unwrap_or(0)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor as AsyncCursor;

    /// An unmasked server frame.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=65535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Reads everything `wire` carries through a WsStream, `piece` bytes per read
    /// from below and `dst` bytes per read above.
    fn read_all(wire: Vec<u8>, piece: usize, dst: usize) -> (io::Result<Vec<u8>>, Vec<u8>) {
        struct Pieces(Vec<u8>, usize, usize);
        impl AsyncRead for Pieces {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let n = self.2.min(buf.len()).min(self.0.len() - self.1);
                let at = self.1;
                buf[..n].copy_from_slice(&self.0[at..at + n]);
                self.1 += n;
                Poll::Ready(Ok(n))
            }
        }
        let mut ws = WsStream::new(Pieces(wire, 0, piece));
        let mut got = Vec::new();
        let res = block_on(async {
            let mut buf = vec![0u8; dst];
            loop {
                let n = ws.read(&mut buf).await?;
                if n == 0 {
                    return Ok(got.clone());
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
        (res, ws.pongs)
    }

    #[test]
    fn frames_of_every_size_read_back_as_one_stream_however_cut() {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for (i, len) in [0usize, 1, 125, 126, 300, 65535, 65536, 70000].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|k| (k * 7 + i) as u8).collect();
            // Binary, then a continuation: MQTT does not care where frames end.
            let first = if i % 2 == 0 { 0x82 } else { 0x80 };
            wire.extend(server_frame(first, &payload));
            want.extend(payload);
        }
        wire.extend(server_frame(0x8a, b"pong")); // an unsolicited Pong is ignored
        wire.extend(server_frame(0x82, b"tail"));
        want.extend_from_slice(b"tail");
        wire.extend(server_frame(0x88, &[0x03, 0xe8])); // Close: the stream ends
        wire.extend(server_frame(0x82, b"after close"));
        for (piece, dst) in [(1, 7), (3, 4096), (13, 1), (4096, 100), (1 << 20, 1 << 20)] {
            let (got, pongs) = read_all(wire.clone(), piece, dst);
            assert_eq!(got.unwrap(), want, "piece {piece}, dst {dst}");
            assert!(pongs.is_empty());
        }
    }

    #[test]
    fn a_ping_is_answered_by_a_masked_pong_before_the_next_frame() {
        let mut wire = server_frame(0x89, b"are you there");
        wire.extend(server_frame(0x82, &[1, 2, 3]));
        let (got, pongs) = read_all(wire, 5, 64);
        assert_eq!(got.unwrap(), [1, 2, 3]);
        // FIN + Pong, masked, 13 bytes, then the mask and the masked payload.
        assert_eq!(pongs[..2], [0x8a, 0x80 | 13]);
        let mask = &pongs[2..6];
        let payload: Vec<u8> =
            pongs[6..].iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m).collect();
        assert_eq!(payload, b"are you there");
    }

    #[test]
    fn text_frames_masked_frames_and_truncated_streams_fail() {
        let (got, _) = read_all(server_frame(0x81, b"hi"), 64, 64);
        assert!(got.unwrap_err().to_string().contains("not binary"));
        let mut masked = server_frame(0x82, b"");
        masked[1] |= 0x80;
        masked.extend_from_slice(&[0, 0, 0, 0]);
        let (got, _) = read_all(masked, 64, 64);
        assert!(got.unwrap_err().to_string().contains("masked"));
        let mut cut = server_frame(0x82, b"twelve bytes");
        cut.truncate(8);
        let (got, _) = read_all(cut, 64, 64);
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn each_write_is_one_masked_binary_frame() {
        let mut ws = WsStream::new(AsyncCursor::new(Vec::new()));
        block_on(async {
            for len in [1usize, 2, 60, 125, 126, 1000, 70000] {
                let payload: Vec<u8> = (0..len).map(|k| k as u8).collect();
                ws.write_all(&payload).await.unwrap();
            }
        });
        let wire = ws.io.into_inner();
        let mut cur = Cursor::new(&wire[..]);
        for len in [1usize, 2, 60, 125, 126, 1000, 70000] {
            let (header, got_len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Binary));
            assert_eq!(got_len, len as u64);
            let mask = header.mask.expect("client frames are masked");
            let at = cur.position() as usize;
            let payload: Vec<u8> =
                wire[at..at + len].iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m).collect();
            assert_eq!(payload, (0..len).map(|k| k as u8).collect::<Vec<u8>>());
            cur.set_position((at + len) as u64);
        }
        assert_eq!(cur.position() as usize, wire.len());
    }

    #[test]
    fn the_upgrade_response_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
        assert_eq!(check_response(ok.as_bytes(), key).unwrap(), Some(ok.len()));
        assert_eq!(check_response(&ok.as_bytes()[..40], key).unwrap(), None);
        let wrong_key = ok.replace("s3pP", "AAAA");
        assert!(check_response(wrong_key.as_bytes(), key).is_err());
        let other_protocol = ok.replace("Protocol: mqtt", "Protocol: chat");
        assert!(check_response(other_protocol.as_bytes(), key).is_err());
        let refused = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let e = check_response(refused.as_bytes(), key).unwrap_err().to_string();
        assert!(e.contains("404"), "{e}");
    }
}
