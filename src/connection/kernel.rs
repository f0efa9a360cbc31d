//! Offloaded record I/O: reading records from a kTLS socket (or opening
//! them here for a direction the kernel does not carry), sending data and
//! control records, and the event style's per-record entry points.

use super::control::{self, Event, Offload};
use super::transport::Fill;
use super::{Connection, Tls, MAX_WRITE};
use crate::alert::{
    self,
    rktls_alert_description::{self, *},
};
use crate::ktls;
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::sys;
use crate::wire;

/// What the next record on an offloaded connection was.
pub(super) enum Rec {
    WouldBlock,
    /// End of file without close_notify.
    Eof,
    /// Application data of this length is in the caller's buffer.
    Data(usize),
    /// Application data went to the plaintext queue.
    /// (Its length.)
    Queued(usize),
    Control(u8, Vec<u8>),
    /// Unusable (failed to decrypt, too long, cut short): the error code,
    /// the alert it deserves, and why.
    Bad(rktls_result, Option<rktls_alert_description>, &'static str),
}

/// Application data between fragments of a handshake message (RFC 8446
/// section 5.1 forbids it): none of it is delivered.
const INTERLEAVED: Rec = Rec::Bad(
    RKTLS_ERR_UNEXPECTED_MESSAGE,
    Some(RKTLS_ALERT_UNEXPECTED_MESSAGE),
    "application data inside a fragmented handshake message",
);

thread_local! {
    /// Where a record from the kernel lands when the caller's buffer
    /// cannot take a whole one: one per thread, reused.
    static RECORD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The error for offload state used outside the kernel mode (a bug).
fn not_offloaded() -> Error {
    Error::new(
        RKTLS_ERR_INTERNAL,
        "offload state used on a connection that is not offloaded",
    )
}

impl Connection {
    /// The kernel holds the TX keys: also after a switch that failed once
    /// TX was set (the socket encrypts what is written to it).
    pub(crate) fn ktls_tx(&self) -> bool {
        self.kernel_tx_set || matches!(&self.tls, Tls::Kernel(o) if o.tx_in_kernel())
    }

    pub(crate) fn ktls_rx(&self) -> bool {
        matches!(&self.tls, Tls::Kernel(o) if o.rx_in_kernel())
    }

    /// The offload state (an internal error outside the kernel mode).
    pub(super) fn offload(&mut self) -> Result<&mut Offload, Error> {
        match &mut self.tls {
            Tls::Kernel(o) => Ok(o),
            _ => Err(not_offloaded()),
        }
    }

    /// Handle events from the offload state machine (`rktls_connection_read`
    /// style): data is queued for `read`, control records for sending.
    pub(super) fn apply_events(&mut self, ev: Vec<Event>) {
        for e in ev {
            match e {
                Event::AppData(d) => self.b.plain.extend_from_slice(&d),
                Event::PeerClosed => self.peer_closed = true,
                // Nothing follows our close_notify (RFC 8446 §6.1).
                Event::SendControl(..) | Event::TxKeyUpdated if self.sent_close_notify => {}
                e @ (Event::SendControl(..) | Event::TxKeyUpdated) => self.ctl_out.push_back(e),
                Event::RenegotiationRequested => self.reneg_refused = true,
                Event::Closed | Event::RxKeyUpdated | Event::SessionTicket => {}
            }
        }
    }

    /// Send queued control records in order, switching TX keys where a
    /// KeyUpdate asked for it. Ok(true) when nothing is left to send.
    pub(super) fn flush_control(&mut self) -> Result<bool, Error> {
        let fd = self.fd;
        loop {
            let tx_kernel = self.offload()?.tx_in_kernel();
            // TX here: sealed in order into the output queue at once (in
            // buffer mode it leaves when taken), then sent.
            let Some(front) = self.ctl_out.front() else {
                return if tx_kernel {
                    Ok(true)
                } else {
                    self.flush_out()
                };
            };
            match front {
                Event::SendControl(t, p) => {
                    let (t, p) = (*t, p.clone());
                    if tx_kernel {
                        match ktls::send_record(fd, t, &p) {
                            Ok(_) => {}
                            Err(e) if sys::would_block(&e) => return Ok(false),
                            // Not sticky yet: callers decide (an answer to
                            // close_notify is best effort).
                            Err(e) => return Err(self.io_error(&e)),
                        }
                    } else {
                        let mut rec = Vec::new();
                        self.offload()?.seal(t, &p, &mut rec)?;
                        self.b.outgoing.extend_from_slice(&rec);
                    }
                    self.offload()?.count_tx(p.len());
                    self.note_control_sent(t, &p);
                }
                Event::TxKeyUpdated => self.offload()?.commit_tx(fd)?,
                _ => {}
            }
            self.ctl_out.pop_front();
        }
    }

    /// Keep what a sent control record tells: close_notify, fatal alert.
    pub(super) fn note_control_sent(&mut self, typ: u8, payload: &[u8]) {
        if typ != wire::CT_ALERT {
            return;
        }
        match alert::Message::parse(payload) {
            Some(m) if m.is_close_notify() => self.sent_close_notify = true,
            // (A refused renegotiation's warning counts, as in userspace.)
            Some(m) if m.level == alert::FATAL || m.desc == RKTLS_ALERT_NO_RENEGOTIATION.code() => {
                self.alert_sent = Some(m.desc)
            }
            _ => {}
        }
    }

    /// End an offloaded connection with `err`; its alert (or close_notify)
    /// is sent best effort.
    pub(super) fn offload_fail(&mut self, mut err: Error, ev: Vec<Event>) -> Error {
        if self.sent_close_notify {
            // Its alert is not sent (see `apply_events`): say so.
            err.msg = err.msg.replace(
                "(sent alert ",
                "(no alert after our close_notify: not sent ",
            );
        }
        self.apply_events(ev);
        let _ = self.flush_control();
        self.sticky(err)
    }

    /// End cleanly: close_notify, then report `err` (key limits, rekey).
    pub(super) fn offload_close(&mut self, err: Error) -> Error {
        let ev = if self.sent_close_notify {
            vec![]
        } else {
            vec![Event::close_notify()]
        };
        log::warn!("{}", err.msg);
        self.offload_fail(err, ev)
    }

    /// An I/O failure on an offloaded socket (sticky). After a refused
    /// renegotiation, a reset is the server's answer to it.
    pub(super) fn offload_io_error(&mut self, e: &std::io::Error) -> Error {
        let err = self.io_error(e);
        let why = format!("then reset the connection ({e})");
        match self.renegotiation_ended(&why) {
            Some(r) => r,
            None => self.sticky(err),
        }
    }

    /// The error a failed control record ends the connection with: a
    /// fatal alert right after a refused renegotiation is the server's
    /// answer to it.
    pub(super) fn offload_error(&mut self, f: control::Fail) -> Error {
        let Some(desc) = f.received else {
            return f.err;
        };
        self.alert_received = Some(desc);
        if !self.reneg_refused {
            return f.err;
        }
        crate::result::renegotiation_requested(&format!(
            "then sent the fatal alert {}",
            alert::name(desc)
        ))
    }

    /// One control record received: run the state machine on it.
    pub(super) fn offload_control(&mut self, typ: u8, payload: &[u8]) -> Result<(), Error> {
        let fd = self.fd;
        let sent_cn = self.sent_close_notify;
        let mut ev = Vec::new();
        let r = self
            .offload()?
            .on_record(fd, typ, payload, sent_cn, &mut ev);
        match r {
            Ok(()) => {
                self.apply_events(ev);
                match self.flush_control() {
                    // The peer may be gone right after its close_notify:
                    // our answer is best effort then.
                    Err(_) if self.peer_closed => {
                        self.ctl_out.clear();
                        Ok(())
                    }
                    Err(e) => Err(self.sticky(e)),
                    Ok(_) => Ok(()),
                }
            }
            Err(f) => {
                let err = self.offload_error(f);
                Err(self.offload_fail(err, ev))
            }
        }
    }

    /// Count what one read of `bytes` of application data took (one record
    /// or, through the kernel, several) against the key limit.
    pub(super) fn offload_count_rx(&mut self, bytes: usize) {
        if self.reneg_refused {
            log::info!("the server carried on after the refused renegotiation");
            self.reneg_refused = false;
        }
        let mut ev = Vec::new();
        let fd = self.fd;
        match self.offload().and_then(|o| o.count_rx(fd, bytes, &mut ev)) {
            Ok(()) => {
                self.apply_events(ev);
                let _ = self.flush_control();
            }
            Err(e) => {
                self.offload_close(e);
            }
        }
    }

    /// After a failed read the kernel's TLS layer leaves its error on the
    /// socket and refuses every send until it is taken (Linux 6.12 and
    /// 6.18 alike): take it, so the alert the failure deserves can leave.
    fn take_kernel_read_error(&mut self) {
        match sys::take_socket_error(self.fd) {
            Ok(e) => {
                log::debug!("kernel TLS read failed; socket error {e} taken to send the alert")
            }
            Err(e) => log::debug!("getsockopt(SO_ERROR) after a failed kernel TLS read: {e}"),
        }
    }

    /// The next record on an offloaded connection: application data lands
    /// in `buf` (when it can take a whole record) or in the plaintext queue.
    pub(super) fn next_record(&mut self, buf: &mut [u8]) -> Result<Rec, Error> {
        if self.offload()?.rx_in_kernel() {
            let direct = buf.len() >= wire::MAX_KTLS_PAYLOAD;
            // A record too large for the caller's buffer lands in this
            // thread's scratch buffer, never in one the connection keeps
            // (an idle offloaded connection holds no record buffer).
            let fd = self.fd;
            let r = if direct {
                ktls::recv_record(fd, buf).map(|(t, n)| (t, n, None))
            } else {
                RECORD.with_borrow_mut(|rec| {
                    if rec.len() < wire::MAX_KTLS_PAYLOAD {
                        rec.resize(wire::MAX_KTLS_PAYLOAD, 0);
                    }
                    ktls::recv_record(fd, rec).map(|(t, n)| (t, n, Some(rec[..n].to_vec())))
                })
            };
            let (typ, n, copy) = match r {
                Ok(v) => v,
                Err(e) if sys::would_block(&e) => return Ok(Rec::WouldBlock),
                Err(e) if e.raw_os_error() == Some(libc::EBADMSG) => {
                    self.take_kernel_read_error();
                    return Ok(Rec::Bad(
                        RKTLS_ERR_DECRYPT,
                        Some(RKTLS_ALERT_BAD_RECORD_MAC),
                        "a record failed to decrypt in the kernel",
                    ));
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    self.take_kernel_read_error();
                    return Ok(Rec::Bad(
                        RKTLS_ERR_PROTOCOL,
                        Some(RKTLS_ALERT_RECORD_OVERFLOW),
                        "record longer than TLS allows (the kernel refused it: EMSGSIZE)",
                    ));
                }
                Err(e) if e.raw_os_error() == Some(libc::EPROTO) => {
                    return Ok(Rec::Bad(
                        RKTLS_ERR_PROTOCOL,
                        Some(RKTLS_ALERT_INTERNAL_ERROR),
                        "a control message was truncated (MSG_CTRUNC)",
                    ))
                }
                Err(e) => return Err(self.offload_io_error(&e)),
            };
            if typ == wire::CT_APPLICATION_DATA {
                if n == 0 {
                    return Ok(Rec::Eof);
                }
                if self.offload()?.hs_pending() {
                    return Ok(INTERLEAVED);
                }
                return Ok(match copy {
                    None => Rec::Data(n),
                    Some(data) => {
                        self.b.plain.extend_from_slice(&data);
                        Rec::Queued(n)
                    }
                });
            }
            return Ok(Rec::Control(typ, copy.unwrap_or_else(|| buf[..n].to_vec())));
        }
        // RX in userspace: whole records from the socket, opened here.
        loop {
            if let Some(len) = wire::whole_record(&self.b.incoming) {
                let opened = match &mut self.tls {
                    Tls::Kernel(o) => o.open(&mut self.b.incoming[..len]),
                    _ => return Err(not_offloaded()),
                };
                let hs_pending = self.offload()?.hs_pending();
                let out = match opened {
                    Ok((typ, _)) if typ == wire::CT_APPLICATION_DATA && hs_pending => INTERLEAVED,
                    Ok((typ, range)) => {
                        let p = &self.b.incoming[range];
                        if typ == wire::CT_APPLICATION_DATA {
                            let p = p.to_vec();
                            self.b.plain.extend_from_slice(&p);
                            Rec::Queued(p.len())
                        } else {
                            Rec::Control(typ, p.to_vec())
                        }
                    }
                    Err(_) => Rec::Bad(
                        RKTLS_ERR_DECRYPT,
                        Some(RKTLS_ALERT_BAD_RECORD_MAC),
                        "a record failed to decrypt (bad record MAC)",
                    ),
                };
                self.b.incoming.drain(..len);
                return Ok(out);
            }
            if wire::Header::parse(&self.b.incoming)
                .is_some_and(|h| h.record_len() > wire::MAX_RECORD)
            {
                return Ok(Rec::Bad(
                    RKTLS_ERR_PROTOCOL,
                    Some(RKTLS_ALERT_RECORD_OVERFLOW),
                    "record longer than TLS allows",
                ));
            }
            match self.fill_in() {
                Ok(Fill::Got) => {}
                Ok(Fill::Eof) => {
                    return Ok(if self.b.incoming.is_empty() {
                        Rec::Eof
                    } else {
                        Rec::Bad(
                            RKTLS_ERR_TRUNCATED,
                            None,
                            "connection closed in the middle of a record",
                        )
                    })
                }
                Ok(Fill::WouldBlock) => return Ok(Rec::WouldBlock),
                // fill_in already explains a reset after a refused
                // renegotiation. Not sticky, as in userspace: a read that
                // failed took nothing, and a call again loses nothing.
                Err(e) => return Err(e),
            }
        }
    }

    /// Read on an offloaded connection, handling control records.
    pub(super) fn kernel_read(&mut self, buf: &mut [u8]) -> Result<(rktls_result, usize), Error> {
        loop {
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            if !self.ctl_out.is_empty() {
                // A full socket only delays control records (and a key
                // change) until the next call.
                if let Err(e) = self.flush_control() {
                    return Err(self.sticky(e));
                }
            }
            if self.peer_closed {
                let why = "then closed the connection (close_notify) without sending more data";
                return match self.renegotiation_ended(why) {
                    Some(e) => Err(e),
                    None => Ok((RKTLS_CLOSED, 0)),
                };
            }
            match self.next_record(buf)? {
                Rec::WouldBlock => return Ok((RKTLS_WANT_READ, 0)),
                Rec::Eof => {
                    let why = "then closed the connection without close_notify";
                    return Err(match self.renegotiation_ended(why) {
                        Some(e) => e,
                        None => self.sticky(Error::new(
                            RKTLS_ERR_TRUNCATED,
                            "connection closed without close_notify",
                        )),
                    });
                }
                Rec::Data(n) => {
                    self.offload_count_rx(n);
                    return Ok((RKTLS_OK, n));
                }
                Rec::Queued(len) => {
                    self.offload_count_rx(len);
                    let n = self.take_plain(buf);
                    if n > 0 {
                        return Ok((RKTLS_OK, n));
                    }
                }
                Rec::Control(typ, p) => self.offload_control(typ, &p)?,
                Rec::Bad(code, None, msg) => {
                    return Err(self.offload_fail(Error::new(code, msg), vec![]))
                }
                Rec::Bad(code, Some(alert), msg) => {
                    let mut ev = Vec::new();
                    let f = control::fatal(&mut ev, code, alert, msg);
                    return Err(self.offload_fail(f.err, ev));
                }
            }
        }
    }

    /// Checks before sending application data on an offloaded connection:
    /// queued control records first, keys refreshed before their limit.
    /// `Ok(0)`: want-write; otherwise how many of `want` bytes may go now.
    pub(super) fn offload_tx_room(&mut self, want: usize) -> Result<usize, Error> {
        if !self.flush_control()? {
            return Ok(0);
        }
        let mut allow = self.offload()?.tx_allowance(want);
        if allow == 0 {
            if !self.offload()?.can_update_tx() {
                let tls13 = self.protocol_version() == u16::from(rustls::ProtocolVersion::TLSv1_3);
                return Err(self.offload_close(Error::new(
                    RKTLS_ERR_KEY_EXHAUSTED,
                    format!(
                        "the TX key reached its usage limit and {}; connection closed cleanly",
                        if tls13 {
                            "this kernel cannot rekey"
                        } else {
                            "TLS 1.2 cannot update keys"
                        }
                    ),
                )));
            }
            let mut ev = Vec::new();
            self.offload()?.begin_tx_update(false, &mut ev)?;
            self.apply_events(ev);
            if !self.flush_control()? {
                return Ok(0);
            }
            allow = self.offload()?.tx_allowance(want);
        }
        Ok(allow)
    }

    /// The outcome of a send the kernel encrypts: counted against the key.
    pub(super) fn kernel_sent(
        &mut self,
        r: std::io::Result<usize>,
    ) -> Result<(rktls_result, usize), Error> {
        match r {
            Ok(n) => {
                self.offload()?.count_tx(n);
                Ok((RKTLS_OK, n))
            }
            Err(e) if sys::would_block(&e) => Ok((RKTLS_WANT_WRITE, 0)),
            Err(e) => Err(self.offload_io_error(&e)),
        }
    }

    /// Write on an offloaded connection.
    pub(super) fn kernel_write(&mut self, data: &[u8]) -> Result<(rktls_result, usize), Error> {
        let allow = self.offload_tx_room(data.len().min(MAX_WRITE))?;
        if allow == 0 {
            return Ok((RKTLS_WANT_WRITE, 0));
        }
        let data = &data[..allow];
        if self.offload()?.tx_in_kernel() {
            let r = sys::send(self.fd, data);
            return self.kernel_sent(r);
        }
        if !self.room_to_send()? {
            return Ok((RKTLS_WANT_WRITE, 0));
        }
        let mut rec = Vec::new();
        {
            let o = self.offload()?;
            for chunk in data.chunks(wire::MAX_FRAGMENT) {
                o.seal(wire::CT_APPLICATION_DATA, chunk, &mut rec)?;
            }
            o.count_tx(data.len());
        }
        self.b.outgoing.extend_from_slice(&rec);
        if let Err(e) = self.flush_out() {
            return Err(self.sticky(e));
        }
        Ok((RKTLS_OK, data.len()))
    }

    /// Shut down an offloaded connection: close_notify through its TX path.
    pub(super) fn kernel_shutdown(&mut self) -> Result<rktls_result, Error> {
        if !self.sent_close_notify && !self.ctl_out.iter().any(Event::is_close_notify) {
            self.ctl_out.push_back(Event::close_notify());
        }
        Ok(if self.flush_control()? {
            RKTLS_OK
        } else {
            RKTLS_WANT_WRITE
        })
    }

    /// Event style: one record the caller received on an offloaded socket.
    pub(crate) fn process_record(
        &mut self,
        typ: u8,
        payload: &[u8],
    ) -> (Result<rktls_result, Error>, Vec<Event>) {
        let fd = self.fd;
        let Tls::Kernel(o) = &mut self.tls else {
            return (
                Err(Error::state(
                    "records can be processed only once the connection is offloaded",
                )),
                vec![],
            );
        };
        if !(o.tx_in_kernel() && o.rx_in_kernel()) {
            return (
                Err(Error::state(
                    "the event style needs TX and RX in the kernel; use rktls_connection_read",
                )),
                vec![],
            );
        }
        if let Some(e) = &self.error {
            return (Err(e.clone()), vec![]);
        }
        let mut ev = Vec::new();
        if typ == wire::CT_APPLICATION_DATA {
            self.reneg_refused = false;
            if let Err(e) = o.count_rx(fd, payload.len(), &mut ev) {
                if !self.sent_close_notify {
                    ev.push(Event::close_notify());
                    self.sent_close_notify = true;
                }
                ev.push(Event::Closed);
                return (Err(self.sticky(e)), ev);
            }
        }
        let r = o.on_record(fd, typ, payload, self.sent_close_notify, &mut ev);
        for e in &ev {
            match e {
                Event::PeerClosed => self.peer_closed = true,
                Event::RenegotiationRequested => self.reneg_refused = true,
                // The caller sends these; they count as sent.
                Event::SendControl(t, p) => self.note_control_sent(*t, p),
                _ => {}
            }
        }
        match r {
            Ok(()) => (Ok(RKTLS_OK), ev),
            Err(f) => {
                let err = self.offload_error(f);
                (Err(self.sticky(err)), ev)
            }
        }
    }

    /// Event style: the caller sent the control records; new TX keys now.
    pub(crate) fn control_sent(&mut self) -> Result<rktls_result, Error> {
        let fd = self.fd;
        match &mut self.tls {
            Tls::Kernel(o) => {
                o.commit_tx(fd)?;
                Ok(RKTLS_OK)
            }
            _ => Err(Error::state("the connection is not offloaded")),
        }
    }
}
