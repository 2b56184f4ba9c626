//! What a shard writes to its sockets: a connection's released output becomes one
//! send, a completed send frees its buffer or sends the rest, and a connection the
//! core decided to end is closed once its last words are out.

use super::*;

impl Shard {
    /// Hands a connection's output to its socket. Through layers, the core's
    /// buffer is done with once encoded: it goes back to the core at once, and
    /// the send carries the layers' bytes.
    pub(super) fn send_output(&mut self, id: LinkId, conn: ConnId, out: BytesMut) {
        let Some(stack) = self.sockets.link(id).and_then(|l| l.stack.as_mut()) else {
            self.sockets.send_extra(id, out);
            return;
        };
        let mut wire = BytesMut::with_capacity(out.len() + out.len() / 64 + 64);
        if let Err(e) = stack.output(&out, &mut wire) {
            debug!("closing connection: {e}");
            self.core.close(conn, Close::Io);
            return;
        }
        let now = self.now();
        self.core.handle_written(now, conn, out);
        self.sockets.send_extra(id, wire);
    }

    pub(super) fn sent(&mut self, id: LinkId, result: std::io::Result<usize>, mut buf: BytesMut) {
        let now = self.now();
        let Some(link) = self.sockets.link(id) else { return };
        link.sending = false;
        // Through layers, the core had its buffer back when it was encoded.
        let conn = match link.phase {
            Phase::Connected(conn) if link.stack.is_none() => Some(conn),
            _ => None,
        };
        let output_of = match link.phase {
            Phase::Connected(conn) => Some(conn),
            _ => None,
        };
        match result {
            Ok(n) if n < buf.len() => {
                // A partial send: the rest goes next, before anything newer.
                let written = buf.split_to(n);
                if let Some(conn) = conn {
                    self.core.handle_written(now, conn, written);
                }
                link.sending = true;
                let fd = link.fd.as_raw_fd();
                self.sockets.ring.send(fd, id.token(), buf);
                return;
            }
            Ok(_) => {
                if let Some(conn) = conn {
                    self.core.handle_written(now, conn, buf);
                }
                let extra = std::mem::take(&mut link.extra);
                if !extra.is_empty() {
                    self.sockets.send_extra(id, extra);
                } else if matches!(link.phase, Phase::HandingOff(_)) {
                    let Phase::HandingOff(next) =
                        std::mem::replace(&mut link.phase, Phase::Handshake)
                    else {
                        unreachable!("matched above");
                    };
                    let (owner, connect) = *next;
                    self.hand_off(id, owner, connect);
                    return;
                } else if let Some(conn) = output_of {
                    // Output a pass released while this send was in flight.
                    if let Some(out) = self.core.take_output(conn) {
                        self.send_output(id, conn, out);
                    }
                }
            }
            Err(_) => {
                link.extra = BytesMut::new();
                link.ended = true;
                match output_of {
                    Some(conn) => self.core.close(conn, Close::Io),
                    None => self.sockets.close_link(id, None),
                }
            }
        }
        self.sockets.free_if_done(id);
        self.schedule_pass();
    }

    /// A connection of the core the pass woke: send what it released, or close it.
    pub(super) fn woken(&mut self, conn: ConnId) {
        let Some(id) = self.sockets.link_of_conn(conn) else { return };
        if self.core.close_reason(conn).is_some() {
            self.close_connection(id, conn);
            return;
        }
        let Some(link) = self.sockets.link(id) else { return };
        if link.held || !link.tail.is_empty() {
            // The wait may be over (a SUBACK released): process the input again.
            self.sockets.queue(id);
        }
        let link = self.sockets.link(id).expect("live link");
        if !link.sending {
            if let Some(out) = self.core.take_output(conn) {
                self.send_output(id, conn, out);
            }
        }
    }

    /// Ends a connection of the core: whatever it had encoded and its last words
    /// go out, the core forgets it, the socket closes once the kernel is done.
    pub(super) fn close_connection(&mut self, id: LinkId, conn: ConnId) {
        let now = self.now();
        let close = self.core.close_reason(conn).cloned().unwrap_or(Close::Io);
        let last = self.core.take_last_words(conn);
        let client_id = self.core.client_id(conn);
        self.core.handle_closed(now, conn, close.clone());
        if let Some(slot) = self.sockets.by_conn.get_mut(conn.slot()) {
            *slot = NO_LINK;
        }
        self.sockets.close_link(id, last);
        log_close(&client_id, &close);
        self.schedule_pass();
    }
}
