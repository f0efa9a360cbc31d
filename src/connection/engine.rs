//! Driving rustls' unbuffered state machine: one generic step per rustls
//! state, the pump that runs it over buffered input, and the sticky
//! failure with the alert rustls queues for it.

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

use super::{control, limits, Connection, Tls, IN_CAP, PLAIN_CAP};
use crate::alert;
use crate::record::{Opener, Sealer};
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::wire;

/// Lets one generic driver serve both sides.
pub(super) trait Process {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Process for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Process for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// What to do when rustls next allows writing.
pub(super) enum Action<'a> {
    None,
    Encrypt(&'a [u8]),
    CloseNotify,
    /// TLS 1.3 KeyUpdate (rustls asks the peer to update too).
    RefreshKeys,
}

/// The outcome of one rustls state.
pub(super) enum Step {
    /// Something was done; call again.
    Progress,
    /// Nothing more can happen without new input (or an action).
    Quiet,
    PeerClosed,
    Closed,
    Failed(rustls::Error),
    /// rktls ended the connection itself (a refused renegotiation).
    Ended(Error),
}

#[derive(Default)]
pub(super) struct Buffers {
    pub(super) incoming: Vec<u8>,
    /// How much of `incoming` rustls has been shown and not discarded: it
    /// keeps positions into those bytes, so it is always shown them again.
    pub(super) shown: usize,
    /// rustls' last step was quiet: it needs new input or an action.
    pub(super) rustls_quiet: bool,
    pub(super) outgoing: OutBuf,
    pub(super) out_pos: usize,
    pub(super) plain: Vec<u8>,
    pub(super) plain_pos: usize,
    /// A ChangeCipherSpec record was queued (TLS 1.2: encrypted from here).
    pub(super) sent_ccs: bool,
    /// After a rustls error: the last record it consumed, as it left it
    /// (decrypted in place), to tell which alert it sent.
    pub(super) last_consumed: Option<Vec<u8>>,
    /// After the handshake, with nothing held inside rustls: classify what
    /// it consumes (`Some(tls13)`), into `seen`.
    pub(super) inspect: Option<bool>,
    pub(super) seen: Option<limits::Seen>,
    /// With something held inside rustls: how many whole records it
    /// consumed (their bytes may have moved: not classified).
    pub(super) consumed_records: usize,
}

/// Whether a run of whole records contains a ChangeCipherSpec.
pub(super) fn has_ccs(records: &[u8]) -> bool {
    wire::records(records).any(|r| r.header.typ == wire::CT_CHANGE_CIPHER_SPEC)
}

/// The queue of TLS bytes to send. rustls encrypts into an initialised
/// `&mut [u8]`; zero-filling the room for every record would cost a
/// `memset` per byte sent, so the storage keeps every byte it was ever
/// given initialised (`buf.len()`, its high water) and the queue is
/// `buf[..len]`. Released (not just emptied) by `release`.
#[derive(Default)]
pub(super) struct OutBuf {
    buf: Vec<u8>,
    len: usize,
}

impl std::ops::Deref for OutBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for OutBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl OutBuf {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    pub(super) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(super) fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        if end > self.buf.len() {
            self.buf.truncate(self.len);
            self.buf.extend_from_slice(data);
        } else {
            self.buf[self.len..end].copy_from_slice(data);
        }
        self.len = end;
    }

    /// The bytes from `at` on, removed from the queue.
    pub(super) fn split_off(&mut self, at: usize) -> Vec<u8> {
        let v = self.buf[at..self.len].to_vec();
        self.len = at.min(self.len);
        v
    }

    /// Empty, with the storage freed.
    pub(super) fn release(&mut self) {
        *self = OutBuf::default();
    }

    /// Room for `n` more bytes after the queue, initialised (zeroed only
    /// the first time the storage reaches that far).
    fn room(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        &mut self.buf[self.len..end]
    }
}

/// Append to `out` through `f`, growing to the size `f` asks for.
pub(super) fn append_with(
    out: &mut OutBuf,
    mut guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    loop {
        match f(out.room(guess)) {
            Ok(n) => {
                out.len += n.min(guess);
                return Ok(());
            }
            Err(Some(need)) if need > guess => guess = need,
            Err(_) => return Err(()),
        }
    }
}

pub(super) fn encrypt<D>(
    wt: &mut WriteTraffic<'_, D>,
    data: &[u8],
    out: &mut OutBuf,
) -> Result<(), rustls::Error> {
    let guess = data.len() + (data.len() / wire::MAX_FRAGMENT + 1) * 64;
    let mut err = None;
    let r = append_with(out, guess, |buf| match wt.encrypt(data, buf) {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
        Err(e) => {
            err = Some(e);
            Err(None)
        }
    });
    match (r, err) {
        (Ok(()), _) => Ok(()),
        (Err(()), Some(EncryptError::EncryptExhausted)) => Err(rustls::Error::EncryptError),
        (Err(()), e) => Err(rustls::Error::General(format!("encrypt failed: {e:?}"))),
    }
}

/// Handle one rustls state. Discards consumed input afterwards.
pub(super) fn step<C: Process>(conn: &mut C, b: &mut Buffers, act: &mut Action<'_>) -> Step {
    let status = conn.process(&mut b.incoming);
    let discard = status.discard;
    let out = match status.state {
        Err(e) => Step::Failed(e),
        Ok(ConnectionState::ReadTraffic(mut rt)) => {
            let mut failed = None;
            while let Some(rec) = rt.next_record() {
                match rec {
                    Ok(r) => b.plain.extend_from_slice(r.payload),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            failed.map_or(Step::Progress, Step::Failed)
        }
        Ok(ConnectionState::EncodeTlsData(mut enc)) => {
            let start = b.outgoing.len();
            let r = append_with(&mut b.outgoing, 1024, |buf| match enc.encode(buf) {
                Ok(n) => Ok(n),
                Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                Err(_) => Err(None),
            });
            b.sent_ccs |= has_ccs(&b.outgoing[start..]);
            match r {
                Ok(()) => Step::Progress,
                Err(()) => Step::Failed(rustls::Error::General("encode failed".into())),
            }
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            // The bytes are queued in `outgoing`, which is always sent
            // before anything encoded later.
            t.done();
            Step::Progress
        }
        Ok(ConnectionState::BlockedHandshake) => Step::Quiet,
        Ok(ConnectionState::WriteTraffic(mut wt)) => match std::mem::replace(act, Action::None) {
            Action::None => Step::Quiet,
            Action::Encrypt(data) => match encrypt(&mut wt, data, &mut b.outgoing) {
                Ok(()) => Step::Progress,
                Err(e) => Step::Failed(e),
            },
            Action::RefreshKeys => match wt.refresh_traffic_keys() {
                Ok(()) => Step::Progress,
                Err(e) => Step::Failed(e),
            },
            Action::CloseNotify => {
                let r = append_with(&mut b.outgoing, 64, |buf| {
                    match wt.queue_close_notify(buf) {
                        Ok(n) => Ok(n),
                        Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                        Err(_) => Err(None),
                    }
                });
                match r {
                    Ok(()) => Step::Progress,
                    Err(()) => Step::Failed(rustls::Error::EncryptError),
                }
            }
        },
        Ok(ConnectionState::PeerClosed) => Step::PeerClosed,
        Ok(ConnectionState::Closed) => Step::Closed,
        Ok(_) => Step::Failed(rustls::Error::General(
            "unexpected connection state (early data is not enabled)".into(),
        )),
    };
    if let (Some(tls13), false) = (b.inspect, matches!(out, Step::Failed(_))) {
        b.seen = Some(limits::classify(&b.incoming[..discard], tls13));
    }
    b.consumed_records = wire::records(&b.incoming[..discard])
        .take_while(|r| r.payload().is_some())
        .count();
    if let Step::Failed(_) = out {
        b.last_consumed = wire::record_ending_at(&b.incoming, discard).map(<[u8]>::to_vec);
    }
    b.incoming.drain(..discard);
    out
}

/// Length of the run of whole TLS records at the start of `buf`.
fn whole_records_len(buf: &[u8]) -> usize {
    wire::records(buf)
        .take_while(|r| r.payload().is_some())
        .last()
        .map_or(0, |r| r.at + r.header.record_len())
}

/// Whether the partial record at the start of `rest` may still become a
/// record rustls accepts: less than a header, or a header with a known
/// content type, version 3.x and a length TLS allows.
fn plausible_header(rest: &[u8]) -> bool {
    let Some(h) = wire::Header::parse(rest) else {
        return true;
    };
    (wire::CT_CHANGE_CIPHER_SPEC..=wire::CT_APPLICATION_DATA).contains(&h.typ)
        && rest[1] == wire::RECORD_VERSION[0]
        && h.record_len() <= wire::MAX_RECORD
}

impl Connection {
    pub(super) fn plain_available(&self) -> usize {
        self.b.plain.len() - self.b.plain_pos
    }

    /// Move decrypted data already queued into `buf`; how much.
    pub(super) fn take_plain(&mut self, buf: &mut [u8]) -> usize {
        let n = self.plain_available().min(buf.len());
        let p = self.b.plain_pos;
        buf[..n].copy_from_slice(&self.b.plain[p..p + n]);
        self.b.plain_pos += n;
        if self.b.plain_pos == self.b.plain.len() {
            if matches!(self.tls, Tls::Kernel(_)) {
                // Offloaded: an idle connection keeps no buffer.
                self.b.plain = Vec::new();
            } else {
                self.b.plain.clear();
            }
            self.b.plain_pos = 0;
        }
        n
    }

    pub(super) fn step(&mut self, act: &mut Action<'_>) -> Step {
        // A record rktls answers itself (see rfc_alerts.rs), or a
        // renegotiation, is caught before rustls sees its record. Records
        // before it are processed first (their data is read first).
        let refusal = self.screen();
        let reneg = self.renegotiation_record();
        let refusing = refusal
            .as_ref()
            .is_some_and(|r| reneg.is_none_or(|at| r.at() <= at));
        let held_at = match (&refusal, reneg) {
            (Some(r), _) if refusing => Some(r.at()),
            (_, Some(0)) if !self.rustls_has_output() => match self.renegotiation_started() {
                Some(end) => return end,
                None => None,
            },
            // (At 0: rustls first hands out what it has queued.)
            (_, Some(at)) => Some(at),
            (_, None) => None,
        };
        let view = self.rustls_view();
        if self.b.rustls_quiet && view == self.b.shown && matches!(act, Action::None) && !refusing {
            // Nothing new for rustls: calling it again would only make it
            // scan records it skipped once more (see `rustls_view`).
            return Step::Quiet;
        }
        let cut = held_at.map_or(view, |at| at.min(view));
        let held = (cut < self.b.incoming.len()).then(|| self.b.incoming.split_off(cut));
        let shown_before = self.b.shown;
        let (plain_before, in_before) = (self.b.plain.len(), self.b.incoming.len());
        let out_before = self.b.outgoing.len();
        let acting = !matches!(act, Action::None);
        let tls13 = self
            .common()
            .filter(|c| !c.is_handshaking())
            .map(|c| c.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3));
        let joining = tls13 == Some(true) && self.b.shown != 0;
        self.b.inspect = tls13.filter(|_| self.b.shown == 0);
        let s = self.step_rustls(act);
        if let Some(seen) = self.b.seen.take() {
            self.limits.add(&seen);
        }
        if joining && self.b.incoming.len() < in_before && !matches!(s, Step::Failed(_)) {
            self.limits.add_joined(self.b.consumed_records);
        }
        if acting && matches!(act, Action::None) {
            // What rustls sends flushes a KeyUpdate answer it held.
            self.limits.answer_held = false;
        }
        self.screen_discarded(in_before - self.b.incoming.len());
        self.b.shown = self.b.incoming.len();
        self.b.rustls_quiet = matches!(s, Step::Quiet);
        if self.b.plain.len() > plain_before || matches!(s, Step::Failed(_) | Step::Closed) {
            self.reneg_pending = false;
        }
        self.renegotiation_answered(out_before, acting);
        if self.reneg_refused && self.b.plain.len() > plain_before {
            log::info!("the server carried on after the refused renegotiation");
            self.reneg_refused = false;
        }
        let s = match held {
            Some(rest) => {
                self.b.incoming.extend_from_slice(&rest);
                // rustls took records before it: go on to it.
                match s {
                    // (Or was shown one record more, which it keeps: a
                    // handshake message in pieces. The next one follows.)
                    Step::Quiet
                        if in_before > self.b.incoming.len() - rest.len()
                            || (cut > shown_before && !refusing) =>
                    {
                        Step::Progress
                    }
                    // rustls took all it could: answer the record.
                    Step::Quiet if refusing => refusal
                        .and_then(|r| self.refuse(r))
                        .unwrap_or(Step::Progress),
                    s => s,
                }
            }
            None => s,
        };
        match self.check_renegotiation_info(out_before) {
            Some(end) => end,
            None => s,
        }
    }

    /// How much of the incoming buffer rustls may see now. Never less than
    /// it has seen. Nothing new while the plaintext queue is full (the
    /// caller must read first). Otherwise whole records only: a header-only
    /// or partial read shows rustls nothing new, so it never scans again
    /// records it skipped and charges them twice against its limit (e.g.
    /// rejected 0-RTT data, RFC 8446 section 4.2.10); except a partial
    /// record whose header rustls refuses at once (garbage gets its alert
    /// without waiting for bytes that never come).
    fn rustls_view(&self) -> usize {
        let inc = &self.b.incoming;
        let shown = self.b.shown.min(inc.len());
        if self.plain_available() >= PLAIN_CAP || self.limits.switch_due() {
            return shown;
        }
        // What rustls was shown ends on a record boundary (or the
        // connection failed on garbage): scan only what came after it.
        // After the handshake one record at a time, so that what counts
        // against rustls' peer limits is counted in time (`limits.rs`).
        let one = self.common().is_some_and(|c| !c.is_handshaking());
        let whole = shown
            + match wire::records(&inc[shown..]).next() {
                Some(r) if one && r.payload().is_some() => r.header.record_len(),
                _ => whole_records_len(&inc[shown..]),
            };
        let view = if plausible_header(&inc[whole..]) {
            whole
        } else {
            inc.len()
        };
        view.max(shown)
    }

    pub(super) fn step_rustls(&mut self, act: &mut Action<'_>) -> Step {
        let s = match &mut self.tls {
            Tls::Kernel(_) | Tls::Gone => Step::Quiet,
            Tls::Server(c) => {
                let s = step(&mut **c, &mut self.b, act);
                // The certificate resolver saw a ClientHello: keep its SNI.
                if let Some(h) = crate::hello::take_seen() {
                    self.server_name.clone_from(&h.server_name);
                    self.seen_hello = Some(Box::new(h));
                }
                s
            }
            Tls::Client(c) => step(&mut **c, &mut self.b, act),
        };
        self.keep_negotiated();
        s
    }

    /// Run rustls over the buffered input until nothing more can happen.
    /// `act` is performed once rustls allows writing.
    pub(super) fn pump(&mut self, act: &mut Action<'_>) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        loop {
            // rustls' peer allowance is used up (`limits.rs`): once
            // nothing is pending for rustls to do, rktls reads on.
            if self.limits.switch_due() && matches!(act, Action::None) && !self.in_kernel() {
                self.own_records_at_limit();
                if self.in_kernel() {
                    return Ok(());
                }
            }
            let closing = matches!(act, Action::CloseNotify);
            match self.step(act) {
                // Our close_notify is queued: rustls is shown nothing more
                // (it would answer a bad record with a second "fatal"
                // alert); the caller moves to rktls' own records.
                Step::Progress if closing && matches!(act, Action::None) => return Ok(()),
                Step::Progress => {}
                Step::Quiet if self.stuck_on_full_input() => return Err(self.input_overflow()),
                Step::Quiet => return Ok(()),
                Step::PeerClosed => self.peer_closed = true,
                Step::Closed => {
                    self.peer_closed = true;
                    return Ok(());
                }
                Step::Failed(e) => return Err(self.fail(e)),
                Step::Ended(e) => {
                    self.error = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Whether the input buffer is full and rustls, shown all it may see,
    /// can use none of it: the rest of a handshake message can never fit.
    fn stuck_on_full_input(&self) -> bool {
        self.b.incoming.len() >= IN_CAP
            && self.plain_available() < PLAIN_CAP
            && self.common().is_some()
    }

    /// The input buffer is full without a complete handshake message: a
    /// message cut into more records than `IN_CAP` holds (rustls itself
    /// refuses one over its 64 KiB limit as soon as it sees its header).
    /// Fatal, as rustls' own refusal of an oversized message: decode_error.
    pub(super) fn input_overflow(&mut self) -> Error {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let e = rustls::Error::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge);
        let mut err = self.fail(e);
        err.msg = format!(
            "{IN_CAP} bytes of input hold no complete handshake message: {}",
            err.msg
        );
        self.error = Some(err.clone());
        err
    }

    /// Whether the plaintext queue is full (rktls takes no more input).
    pub(crate) fn plaintext_full(&self) -> bool {
        self.plain_available() >= PLAIN_CAP
    }

    /// Record a fatal TLS error and collect the alert rustls queues for it.
    pub(super) fn fail(&mut self, e: rustls::Error) -> Error {
        let before = self.b.outgoing.len();
        // rustls queues the alert and hands it out on the calls after the
        // error, before it would look at input again. Stop while it still
        // has output: processing more input could fail (and alert) twice.
        for _ in 0..16 {
            if !self.common().is_some_and(|c| c.wants_write()) {
                break;
            }
            match self.step(&mut Action::None) {
                Step::Progress => {}
                _ => break,
            }
        }
        if self.sent_close_notify {
            // Nothing follows our close_notify (RFC 8446 §6.1), whatever
            // rustls 0.23 queued for this error.
            self.b.outgoing.truncate(before.max(self.b.out_pos));
        } else if self.b.outgoing.len() == before {
            // rustls closes silently on a few errors (deframing, a TLS 1.2
            // key that cannot sign): the peer is still owed its alert.
            self.send_owed_alert(&e);
        } else {
            self.alert_sent = Some(self.alert_rustls_sent(&e, before));
        }
        if let rustls::Error::AlertReceived(d) = &e {
            self.alert_received = Some(u8::from(*d));
        }
        let mut err = Error::from(e);
        if let Some(d) = self.alert_sent {
            err.msg
                .push_str(&format!(" (sent alert {})", alert::name(d)));
        }
        if let Some(d) = self.alert_received {
            err.msg
                .push_str(&format!(" (received alert {})", alert::name(d)));
        }
        if let (true, Some(d)) = (self.reneg_refused, self.alert_received) {
            err = crate::result::renegotiation_requested(&format!(
                "then sent the fatal alert {}",
                alert::name(d)
            ));
        }
        log::debug!("connection failed: {}", err.msg);
        self.error = Some(err.clone());
        err
    }

    /// Whether our records still go out in plaintext: before a suite is
    /// chosen, or in TLS 1.2 before our ChangeCipherSpec.
    pub(super) fn plaintext_alert_possible(&self) -> bool {
        let Some(c) = self.common() else {
            return false;
        };
        c.negotiated_cipher_suite().is_none()
            || (c.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) && !self.b.sent_ccs)
    }

    /// A fatal error is returned only once its alert has left.
    pub(super) fn deliver_error(&mut self) -> Result<rktls_result, Error> {
        let err = self.error.clone().expect("deliver_error without error");
        if self.in_kernel() {
            return Err(err);
        }
        match self.flush_out() {
            Ok(false) => Ok(RKTLS_WANT_WRITE),
            Ok(true) => Err(err),
            // The peer is gone: report the cause, and no alert (the peer
            // got none, or a part of its record).
            Err(_) => {
                if self.pending_out() > 0 {
                    self.alert_sent = None;
                }
                Err(err)
            }
        }
    }

    /// Process buffered input (buffer mode), for the acceptor's probe.
    pub(crate) fn process(&mut self) -> Result<(), Error> {
        self.pump(&mut Action::None)
    }
}

impl Connection {
    /// Leave rustls' record layer for rktls' own, in userspace both ways:
    /// the state machine of the offloaded path (`control::Offload` with
    /// `Tx::User` and `Rx::User`) takes over, with rustls' current keys and
    /// sequence numbers. Used where rustls 0.23 would go on in a way the
    /// peer must not see: after our close_notify it still answers a record
    /// it cannot read with a fatal alert (a second one, in its debug
    /// builds an assertion). Only at a point where rustls holds nothing:
    /// handshake complete, nothing queued inside it, no input it was shown
    /// and kept (a partial handshake message). `false` (and nothing
    /// changed) when that is not the case.
    pub(super) fn use_own_records(&mut self) -> bool {
        let ready = self.error.is_none()
            && self.b.shown == 0
            && self
                .common()
                .is_some_and(|c| !c.is_handshaking() && !c.wants_write());
        let Some(suite) = self.common().and_then(|c| c.negotiated_cipher_suite()) else {
            return false;
        };
        if !ready {
            return false;
        }
        match self.take_secrets() {
            Some(Ok((secrets, kc))) => {
                let tx = control::Tx::User(Sealer::new(suite, secrets.tx));
                let rx = control::Rx::User(Opener::new(suite, secrets.rx));
                let (limit, fail_fast) = (self.offload_opts.key_limit, self.reneg_fail_fast);
                let o = control::Offload::new(kc, suite, tx, rx, false, limit, fail_fast);
                self.tls = Tls::Kernel(Box::new(o));
                self.ktls_tried = true;
                self.b.rustls_quiet = false;
                true
            }
            Some(Err(e)) => {
                // rustls is gone: nothing can be read or sent any more.
                self.error = Some(Error::new(
                    RKTLS_ERR_INTERNAL,
                    format!("rustls did not hand over its record layer: {e}"),
                ));
                false
            }
            None => false,
        }
    }
}
