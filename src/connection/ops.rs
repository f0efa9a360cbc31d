//! What the caller asks of a connection: handshake, read, write, flush,
//! shutdown, key refresh and sendfile, whichever side holds the record
//! layer (rustls in userspace, or the kernel after the offload).

use std::os::fd::RawFd;

use super::engine::Action;
use super::transport::Fill;
use super::{Connection, MAX_WRITE, OUT_HIGH_WATER};
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::sys;

impl Connection {
    pub(crate) fn handshake(&mut self) -> Result<rktls_result, Error> {
        if self.in_kernel() {
            return match &self.error {
                Some(e) => Err(e.clone()),
                None => Ok(RKTLS_OK),
            };
        }
        // A failure an earlier call already reported is sticky here too.
        let failed_before = self.error.is_some();
        loop {
            if self.error.is_some() {
                if !failed_before
                    && self.fd >= 0
                    && self.ktls_mode == crate::ktls::rktls_ktls_mode::RKTLS_KTLS_OFF
                    && self.negotiated.is_some()
                    && !self.is_handshaking()
                {
                    // The handshake completed; records read with the
                    // peer's last ones failed after it (greedy reads):
                    // their alert leaves now, and the error is the next
                    // read's or write's, as if they had come later.
                    return match self.flush_out() {
                        Ok(false) => Ok(RKTLS_WANT_WRITE),
                        Ok(true) | Err(_) => Ok(RKTLS_OK),
                    };
                }
                return self.deliver_error();
            }
            if self.pump(&mut Action::None).is_err() {
                continue;
            }
            // A client, before sending: take in whatever of the server's
            // flight has already arrived, so our answer leaves in one
            // write, not as small pieces that Nagle's algorithm holds back
            // for an ACK. (A server answers a whole flight of the client's,
            // after which the client waits for ours: nothing to take in.)
            if self.pending_out() > 0
                && self.fd >= 0
                && !self.eof
                && self.is_handshaking()
                && !self.is_server()
            {
                if let Fill::Got = self.fill_in_now()? {
                    continue;
                }
            }
            if !self.is_handshaking() {
                self.release_empty_input();
                if self.holds_back_tickets() {
                    // They leave with the answer (one send instead of
                    // two), or before a read waits for input.
                    return Ok(RKTLS_OK);
                }
            }
            if !self.flush_out()? {
                return Ok(RKTLS_WANT_WRITE);
            }
            if !self.is_handshaking() {
                return self.maybe_offload();
            }
            if self.peer_closed {
                self.error = Some(Error::new(
                    RKTLS_ERR_PEER_MISBEHAVED,
                    "peer sent close_notify during the handshake",
                ));
                continue;
            }
            if self.eof {
                self.error = Some(Error::new(
                    RKTLS_ERR_TRUNCATED,
                    "peer closed the connection during the handshake",
                ));
                continue;
            }
            match self.fill_in()? {
                Fill::Got | Fill::Eof => {}
                Fill::WouldBlock => return Ok(RKTLS_WANT_READ),
            }
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<(rktls_result, usize), Error> {
        if buf.is_empty() {
            return Err(Error::invalid("read buffer length is 0"));
        }
        #[cfg(test)]
        if super::PANIC_IN_READ.with(|p| p.replace(false)) {
            // Half-way: part of the state moved out, as a real panic might.
            let _ = std::mem::take(&mut self.b);
            panic!("test hook: panic inside read");
        }
        loop {
            let n = self.take_plain(buf);
            if n > 0 {
                return Ok((RKTLS_OK, n));
            }
            if self.in_kernel() {
                return self.kernel_read(buf);
            }
            if self.error.is_some() {
                return self.deliver_error().map(|r| (r, 0));
            }
            if self.needs_handshake() {
                match self.handshake()? {
                    RKTLS_OK => continue,
                    other => return Ok((other, 0)),
                }
            }
            if self.peer_closed {
                let why = "then closed the connection (close_notify) without sending more data";
                if self.renegotiation_ended(why).is_some() {
                    continue;
                }
                return Ok((RKTLS_CLOSED, 0));
            }
            if self.pump(&mut Action::None).is_err() {
                continue;
            }
            // (rktls' own record layer may have taken over: `limits.rs`.)
            if self.plain_available() > 0 || self.peer_closed || self.in_kernel() {
                continue;
            }
            // Send what processing produced (e.g. a KeyUpdate answer); a
            // full socket only delays it until the next write or flush.
            self.flush_out()?;
            if self.eof {
                let why = "then closed the connection without close_notify";
                if self.renegotiation_ended(why).is_none() {
                    self.error = Some(Error::new(
                        RKTLS_ERR_TRUNCATED,
                        "connection closed without close_notify",
                    ));
                }
                continue;
            }
            match self.fill_in()? {
                Fill::Got | Fill::Eof => {}
                Fill::WouldBlock => return Ok((RKTLS_WANT_READ, 0)),
            }
        }
    }

    /// Checks before sending: a sticky error is reported (after its alert),
    /// the handshake (and the switch to the kernel) come first, nothing is
    /// sent after shutdown. `Some(code)`: return that code now.
    pub(super) fn before_send(&mut self, what: &str) -> Result<Option<rktls_result>, Error> {
        if self.error.is_some() {
            return self.deliver_error().map(Some);
        }
        if let Some(e) = self.send_error.take() {
            return Err(e);
        }
        if self.needs_handshake() {
            match self.handshake()? {
                RKTLS_OK => {}
                other => return Ok(Some(other)),
            }
        }
        if self.sent_close_notify {
            return Err(Error::state(format!("{what} after shutdown")));
        }
        Ok(None)
    }

    /// Whether more can be queued for sending now: below the high-water
    /// mark, after trying to flush.
    pub(super) fn room_to_send(&mut self) -> Result<bool, Error> {
        Ok(self.pending_out() < OUT_HIGH_WATER
            || self.flush_out()?
            || self.pending_out() < OUT_HIGH_WATER)
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(rktls_result, usize), Error> {
        if let Some(r) = self.before_send("write")? {
            return Ok((r, 0));
        }
        if data.is_empty() {
            return Ok((RKTLS_OK, 0));
        }
        if self.in_kernel() {
            return self.kernel_write(data);
        }
        if !self.room_to_send()? {
            return Ok((RKTLS_WANT_WRITE, 0));
        }
        let n = data.len().min(MAX_WRITE);
        let mut act = Action::Encrypt(&data[..n]);
        if self.pump(&mut act).is_err() {
            return self.deliver_error().map(|r| (r, 0));
        }
        if !matches!(act, Action::None) {
            return Err(Error::state("connection is closed for writing"));
        }
        // The data is encrypted and queued: it is accepted, whatever the
        // socket says now. A failure to send it is returned by the next
        // call (once, like any I/O error; the queue stays and leaves when
        // the socket takes it); reporting it here, with nothing accepted,
        // would make a caller that retries send the data twice. Corked,
        // it waits for the call that uncorks, flushes or shuts down (or
        // a read that waits), unless the queue reached the high-water mark.
        if !self.corked || self.pending_out() >= OUT_HIGH_WATER {
            if let Err(e) = self.flush_out() {
                self.send_error = Some(e);
            }
        }
        Ok((RKTLS_OK, n))
    }

    /// Cork or uncork (`rktls_connection_cork`): uncorking sends what is
    /// queued, as `flush`.
    pub(crate) fn cork(&mut self, on: bool) -> Result<rktls_result, Error> {
        self.corked = on;
        if on {
            return Ok(RKTLS_OK);
        }
        self.flush()
    }

    /// Whether the server's last handshake output (TLS 1.3 session
    /// tickets) may wait for its first answer: the connection stays in
    /// userspace and decrypted data that came with the client's Finished
    /// is waiting to be read. The caller reads it (no I/O) and then
    /// writes, flushes or shuts down, or reads again, which sends queued
    /// output before it waits for input. Tickets are nothing the client
    /// waits for, so holding them back cannot stall it.
    fn holds_back_tickets(&self) -> bool {
        self.fd >= 0
            && self.is_server()
            && self.plain_available() > 0
            && self.ktls_mode == crate::ktls::rktls_ktls_mode::RKTLS_KTLS_OFF
            && self.error.is_none()
    }

    pub(crate) fn flush(&mut self) -> Result<rktls_result, Error> {
        if self.error.is_some() {
            return self.deliver_error();
        }
        if let Some(e) = self.send_error.take() {
            return Err(e);
        }
        Ok(if self.flush_out()? {
            RKTLS_OK
        } else {
            RKTLS_WANT_WRITE
        })
    }

    pub(crate) fn shutdown(&mut self) -> Result<rktls_result, Error> {
        if self.error.is_some() {
            return self.deliver_error();
        }
        if self.is_handshaking() {
            return Err(Error::state(
                "handshake not complete: there is no session to close; close the socket",
            ));
        }
        if self.in_kernel() {
            return self.kernel_shutdown();
        }
        if !self.sent_close_notify {
            let mut act = Action::CloseNotify;
            if self.pump(&mut act).is_err() {
                return self.deliver_error();
            }
            self.sent_close_notify = true;
            // Nothing may follow our close_notify, which rustls 0.23 does
            // not ensure when it reads on: rktls' own record layer reads
            // what the peer still sends.
            self.use_own_records();
        }
        self.flush()
    }

    pub(super) fn needs_handshake(&self) -> bool {
        self.is_handshaking() || self.offload_pending()
    }

    /// Update our TLS 1.3 traffic keys (`rktls_connection_refresh_keys`).
    pub(crate) fn refresh_keys(&mut self, request_peer: bool) -> Result<rktls_result, Error> {
        if let Some(r) = self.before_send("refresh_keys")? {
            return Ok(r);
        }
        if self.protocol_version() != u16::from(rustls::ProtocolVersion::TLSv1_3) {
            return Err(Error::state("key updates need TLS 1.3"));
        }
        if self.in_kernel() {
            let mut ev = Vec::new();
            self.offload()?.begin_tx_update(request_peer, &mut ev)?;
            self.apply_events(ev);
            return Ok(if self.flush_control()? {
                RKTLS_OK
            } else {
                RKTLS_WANT_WRITE
            });
        }
        let mut act = Action::RefreshKeys;
        if self.pump(&mut act).is_err() {
            return self.deliver_error();
        }
        if !matches!(act, Action::None) {
            return Err(Error::state("connection is closed for writing"));
        }
        self.flush()
    }

    /// Send up to `count` bytes of `in_fd` from `*offset`: zero-copy
    /// `sendfile` once TX is in the kernel, otherwise read and encrypted
    /// here. Advances `*offset` by what was accepted.
    pub(crate) fn sendfile(
        &mut self,
        in_fd: RawFd,
        offset: &mut i64,
        count: usize,
    ) -> Result<(rktls_result, usize), Error> {
        if self.fd < 0 {
            return Err(Error::state("sendfile needs a connection in fd mode"));
        }
        if let Some(r) = self.before_send("sendfile")? {
            return Ok((r, 0));
        }
        if count == 0 {
            return Ok((RKTLS_OK, 0));
        }
        if self.ktls_tx() {
            let allow = self.offload_tx_room(count)?;
            if allow == 0 {
                return Ok((RKTLS_WANT_WRITE, 0));
            }
            let r = sys::sendfile(self.fd, in_fd, offset, allow);
            return self.kernel_sent(r);
        }
        if !self.room_to_send()? {
            return Ok((RKTLS_WANT_WRITE, 0));
        }
        // Read into uninitialised capacity: zero-filling it first would
        // cost a memset per byte sent.
        let mut chunk = Vec::new();
        let n = match sys::pread_append(in_fd, &mut chunk, count.min(MAX_WRITE), *offset) {
            Ok(n) => n,
            Err(e) => return Err(self.io_error(&e)),
        };
        if n == 0 {
            return Ok((RKTLS_OK, 0));
        }
        let (r, m) = self.write(&chunk[..n])?;
        *offset += m as i64;
        Ok((r, m))
    }
}
