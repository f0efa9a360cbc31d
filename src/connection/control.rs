//! After the offload: the state machine for every record that is not
//! application data on a connection whose record layer moved into the
//! kernel (wholly, or one direction of it). Its C API, the event style for
//! hosts that do their own I/O, is in `events.rs` and `ffi.rs`.
//!
//! One implementation serves both ways of driving it:
//! - `rktls_connection_read()` reads the fd itself and calls
//!   [`Offload::on_record`] for each control record (`kernel.rs`);
//! - `rktls_connection_process_record()` takes a record the caller received
//!   and returns the resulting events.
//!
//! Keys: rustls' `KernelConnection` derives the next traffic secrets for a
//! TLS 1.3 KeyUpdate; they go to the kernel (`setsockopt`, Linux >= 6.14) or
//! to the userspace record layer (`record.rs`) of a direction the kernel
//! does not carry. Key usage is metered per direction, and keys are
//! refreshed before the suite's confidentiality limit (or, where that is
//! impossible, the connection ends cleanly with `RKTLS_ERR_KEY_EXHAUSTED`).

use std::os::fd::RawFd;

use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, SupportedCipherSuite};

use crate::alert::{
    self,
    rktls_alert_description::{self, *},
};
use crate::ktls;
use crate::record::{Opener, Sealer};
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::wire;

pub(crate) enum Kc {
    // Boxed: ~570 bytes, of which TLS 1.2 keeps none.
    Server(Box<KernelConnection<ServerConnectionData>>),
    Client(Box<KernelConnection<ClientConnectionData>>),
    /// TLS 1.2: no key updates and no tickets after the handshake, so
    /// rustls' state (~800 bytes) is not kept. (Whether it is a client.)
    Tls12(bool),
}

impl Kc {
    /// What control records need of rustls' state after the handshake:
    /// nothing in TLS 1.2.
    pub(crate) fn lean(self) -> Self {
        let tls12 = |v: rustls::ProtocolVersion| v == rustls::ProtocolVersion::TLSv1_2;
        match self {
            Kc::Server(k) if tls12(k.protocol_version()) => Kc::Tls12(false),
            Kc::Client(k) if tls12(k.protocol_version()) => Kc::Tls12(true),
            k => k,
        }
    }
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kc::Server(k) => k.update_tx_secret(),
            Kc::Client(k) => k.update_tx_secret(),
            Kc::Tls12(_) => Err(no_updates()),
        }
    }
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kc::Server(k) => k.update_rx_secret(),
            Kc::Client(k) => k.update_rx_secret(),
            Kc::Tls12(_) => Err(no_updates()),
        }
    }
    fn is_client(&self) -> bool {
        matches!(self, Kc::Client(_) | Kc::Tls12(true))
    }
    /// Keep a TLS 1.3 session ticket for resumption (clients only).
    fn handle_new_session_ticket(&mut self, body: &[u8]) -> Result<(), rustls::Error> {
        match self {
            Kc::Client(k) => k.handle_new_session_ticket(body),
            Kc::Server(_) => Err(rustls::Error::General(
                "a server receives no session tickets".into(),
            )),
            Kc::Tls12(_) => Err(rustls::Error::General(
                "TLS 1.2 has no session tickets after the handshake".into(),
            )),
        }
    }
}

impl Offload {
    /// rustls' state kept for control records, taken out (to measure it).
    #[cfg(test)]
    pub(crate) fn take_kc(&mut self) -> Kc {
        let client = self.kc.is_client();
        std::mem::replace(&mut self.kc, Kc::Tls12(client))
    }
}

/// TLS 1.2 has no key updates (what rustls says for them too).
fn no_updates() -> rustls::Error {
    rustls::Error::General("TLS 1.2 connections have no key updates".into())
}

/// Where one direction's records are protected.
pub(crate) enum Tx {
    Kernel,
    User(Sealer),
}

pub(crate) enum Rx {
    Kernel,
    User(Opener),
}

/// What processing a record produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    AppData(Vec<u8>),
    /// close_notify received.
    PeerClosed,
    /// The connection ended with an error.
    Closed,
    RxKeyUpdated,
    /// The TX key changes once the control records before it were sent.
    TxKeyUpdated,
    /// A record to send: content type and plaintext payload.
    SendControl(u8, Vec<u8>),
    RenegotiationRequested,
    SessionTicket,
}

impl Event {
    /// Our close_notify, to send.
    pub(crate) fn close_notify() -> Self {
        Event::SendControl(wire::CT_ALERT, alert::Message::CLOSE_NOTIFY.payload())
    }

    pub(crate) fn is_close_notify(&self) -> bool {
        matches!(self, Event::SendControl(wire::CT_ALERT, p)
            if alert::Message::parse(p).is_some_and(|m| m.is_close_notify()))
    }
}

/// A fatal outcome: the error, and the alert that came from the peer.
pub(crate) struct Fail {
    pub(crate) err: Error,
    pub(crate) received: Option<u8>,
}

/// Largest post-handshake handshake message accepted (tickets are small).
const MAX_HS_MESSAGE: usize = 65536;

/// Why a handshake record with no payload ends the connection.
pub(super) const EMPTY_HANDSHAKE_RECORD: &str = "the peer sent an empty handshake record";

pub(crate) struct Offload {
    kc: Kc,
    suite: SupportedCipherSuite,
    tls13: bool,
    tx: Tx,
    rx: Rx,
    /// The kernel can install new keys on an offloaded socket.
    kernel_rekey: bool,
    /// Records per key.
    limit: u64,
    tx_records: u64,
    rx_records: u64,
    /// A partial handshake message.
    hs: Vec<u8>,
    /// New TX secrets, installed once the queued control records are sent.
    pending_tx: Option<(u64, ConnectionTrafficSecrets)>,
    /// We asked the peer to update its keys and wait for its KeyUpdate.
    rx_update_asked: bool,
    fail_fast: bool,
    rx_key_updates: u64,
    tx_key_updates: u64,
    /// Warning alerts the peer may still send (rustls allows 4).
    warnings_left: u8,
    /// KeyUpdates the peer may still send before application data
    /// (rustls allows 32 without data between them).
    key_updates_left: u8,
    /// A HelloRequest was refused with a warning already.
    reneg_refused_once: bool,
    /// The kernel's RX sequence number when the current key was installed.
    rx_seq_base: u64,
    /// The kernel did not report its RX sequence number.
    rx_seq_unknown: bool,
}

pub(crate) fn fatal(
    ev: &mut Vec<Event>,
    code: rktls_result,
    alert: rktls_alert_description,
    msg: impl Into<String>,
) -> Fail {
    ev.push(Event::SendControl(
        wire::CT_ALERT,
        alert::Message::fatal(alert).payload(),
    ));
    ev.push(Event::Closed);
    Fail {
        err: Error::new(
            code,
            format!("{} (sent alert {})", msg.into(), alert::name(alert.code())),
        ),
        received: None,
    }
}

/// The peer limits rustls applies in userspace (its `TemperCounters`).
const MAX_WARNING_ALERTS: u8 = 4;
const MAX_KEY_UPDATES_WITHOUT_DATA: u8 = 32;

impl Offload {
    pub(crate) fn new(
        kc: Kc,
        suite: SupportedCipherSuite,
        tx: Tx,
        rx: Rx,
        kernel_rekey: bool,
        key_limit: u64,
        fail_fast: bool,
    ) -> Self {
        let suite_limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let limit = match key_limit {
            0 => suite_limit,
            n => n.min(suite_limit),
        };
        Offload {
            kc,
            suite,
            tls13: suite.tls13().is_some(),
            tx,
            rx,
            kernel_rekey,
            limit,
            tx_records: 0,
            rx_records: 0,
            hs: Vec::new(),
            pending_tx: None,
            rx_update_asked: false,
            fail_fast,
            rx_key_updates: 0,
            tx_key_updates: 0,
            warnings_left: MAX_WARNING_ALERTS,
            key_updates_left: MAX_KEY_UPDATES_WITHOUT_DATA,
            reneg_refused_once: false,
            rx_seq_base: 0,
            rx_seq_unknown: false,
        }
    }

    pub(crate) fn tx_in_kernel(&self) -> bool {
        matches!(self.tx, Tx::Kernel)
    }

    pub(crate) fn rx_in_kernel(&self) -> bool {
        matches!(self.rx, Rx::Kernel)
    }

    pub(crate) fn is_client(&self) -> bool {
        self.kc.is_client()
    }

    /// Seal one record with the userspace TX keys (TX not offloaded).
    pub(crate) fn seal(&mut self, typ: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        match &mut self.tx {
            Tx::User(s) => s.seal(typ, payload, out),
            Tx::Kernel => Err(Error::new(
                RKTLS_ERR_INTERNAL,
                "the kernel seals the records sent on this connection",
            )),
        }
    }

    /// Open one whole record (header included) in place with the userspace
    /// RX keys (RX not offloaded): its content type and plaintext range.
    pub(crate) fn open(
        &mut self,
        record: &mut [u8],
    ) -> Result<(u8, std::ops::Range<usize>), Error> {
        match &mut self.rx {
            Rx::User(o) => o.open(record),
            Rx::Kernel => Err(Error::new(
                RKTLS_ERR_INTERNAL,
                "the kernel opens the records received on this connection",
            )),
        }
    }

    /// Records sent and received with the current keys, and key updates
    /// each way.
    #[cfg(test)]
    pub(crate) fn key_usage(&self) -> (u64, u64, u64, u64) {
        (
            self.tx_records,
            self.rx_records,
            self.tx_key_updates,
            self.rx_key_updates,
        )
    }

    /// Answer a HelloRequest with a fatal alert (tests).
    #[cfg(test)]
    pub(crate) fn set_fail_fast(&mut self, on: bool) {
        self.fail_fast = on;
    }

    /// A kernel with rekey pauses RX (EKEYEXPIRED until keys are set) as
    /// soon as it delivers a TLS 1.3 handshake record whose first byte is
    /// the KeyUpdate type, whole message or not. When that record installed
    /// no new key (the first fragment of a split KeyUpdate, or a fragment
    /// of another message that starts with that byte), the next record is
    /// under the current key: give the kernel its current key back.
    fn resume_paused_rx(&mut self, fd: RawFd, ev: &mut Vec<Event>) -> Result<(), Fail> {
        if !(self.tls13 && self.rx_in_kernel() && self.kernel_rekey) {
            return Ok(());
        }
        if let Err(e) = ktls::reinstall_rx(fd, self.suite) {
            log::warn!("{}", e.msg);
            return Err(fatal(ev, e.code, RKTLS_ALERT_INTERNAL_ERROR, e.msg));
        }
        log::debug!("kernel paused RX inside a handshake message; current RX key re-installed");
        Ok(())
    }

    /// A handshake message is partly received: only its next fragment may
    /// come (application data may not).
    /// What is left of the peer's allowances when rustls used some.
    pub(crate) fn set_peer_allowance(&mut self, warnings: u8, key_updates: u8) {
        self.warnings_left = warnings.min(MAX_WARNING_ALERTS);
        self.key_updates_left = key_updates.min(MAX_KEY_UPDATES_WITHOUT_DATA);
    }

    pub(crate) fn hs_pending(&self) -> bool {
        !self.hs.is_empty()
    }

    /// Records per key: where refreshing starts, and the hard limit.
    fn soft_limit(&self) -> u64 {
        self.limit - (self.limit / 16).max(1).min(self.limit - 1)
    }

    pub(crate) fn can_update_tx(&self) -> bool {
        self.tls13 && (!self.tx_in_kernel() || self.kernel_rekey)
    }

    pub(crate) fn can_update_rx(&self) -> bool {
        self.tls13 && (!self.rx_in_kernel() || self.kernel_rekey)
    }

    /// Queue our KeyUpdate and take the next TX secrets (installed by
    /// `commit_tx` once the KeyUpdate is out).
    pub(crate) fn begin_tx_update(
        &mut self,
        request_peer: bool,
        ev: &mut Vec<Event>,
    ) -> Result<(), Error> {
        if self.pending_tx.is_some() {
            return Ok(());
        }
        if !self.can_update_tx() {
            return Err(Error::new(
                if self.tls13 {
                    RKTLS_ERR_KTLS_NO_REKEY
                } else {
                    RKTLS_ERR_WRONG_STATE
                },
                if self.tls13 {
                    "this kernel cannot install new TX keys on an offloaded socket"
                } else {
                    "TLS 1.2 has no key update"
                },
            ));
        }
        let secrets = self.kc.update_tx().map_err(|e| {
            Error::new(
                RKTLS_ERR_INTERNAL,
                format!("rustls could not derive new TX keys: {e}"),
            )
        })?;
        ev.push(Event::SendControl(
            wire::CT_HANDSHAKE,
            vec![wire::HS_KEY_UPDATE, 0, 0, 1, request_peer as u8],
        ));
        ev.push(Event::TxKeyUpdated);
        if request_peer {
            self.rx_update_asked = true;
        }
        self.pending_tx = Some(secrets);
        Ok(())
    }

    /// Install the TX keys a KeyUpdate announced (after it was sent).
    pub(crate) fn commit_tx(&mut self, fd: RawFd) -> Result<(), Error> {
        let Some(secrets) = self.pending_tx.take() else {
            return Ok(());
        };
        match &mut self.tx {
            Tx::Kernel => ktls::rekey(fd, libc::TLS_TX, self.suite, secrets)?,
            Tx::User(s) => *s = Sealer::new(self.suite, secrets),
        }
        self.tx_records = 0;
        self.tx_key_updates += 1;
        log::debug!("TX traffic keys updated");
        Ok(())
    }

    fn update_rx(&mut self, fd: RawFd) -> Result<(), Error> {
        let secrets = self.kc.update_rx().map_err(|e| {
            Error::new(
                RKTLS_ERR_INTERNAL,
                format!("rustls could not derive new RX keys: {e}"),
            )
        })?;
        self.rx_seq_base = secrets.0;
        match &mut self.rx {
            Rx::Kernel => ktls::rekey(fd, libc::TLS_RX, self.suite, secrets)?,
            Rx::User(o) => *o = Opener::new(self.suite, secrets),
        }
        self.rx_records = 0;
        self.rx_update_asked = false;
        self.rx_key_updates += 1;
        log::debug!("RX traffic keys updated");
        Ok(())
    }

    /// Records the kernel has decrypted with the current RX key, when RX
    /// is in the kernel and the kernel reports its sequence number.
    fn kernel_rx_records(&mut self, fd: RawFd) -> Option<u64> {
        if !self.rx_in_kernel() || self.rx_seq_unknown {
            return None;
        }
        match ktls::current_seq(fd, libc::TLS_RX, self.suite) {
            Ok(seq) => Some(seq.saturating_sub(self.rx_seq_base)),
            Err(e) => {
                log::warn!(
                    "getsockopt(SOL_TLS, TLS_RX) failed ({e}): received records are counted \
                     from their bytes, which undercounts small records the kernel merges"
                );
                self.rx_seq_unknown = true;
                None
            }
        }
    }

    /// The kernel's RX sequence number when it got its first key.
    pub(crate) fn set_rx_seq_base(&mut self, seq: u64) {
        self.rx_seq_base = seq;
    }

    /// How many of `want` bytes may be sent now without passing the key
    /// usage limit (each send of up to 16 KiB counts as one record more
    /// than its full records, an upper bound). `Ok(0)`: refresh first.
    pub(crate) fn tx_allowance(&self, want: usize) -> usize {
        let soft = self.soft_limit();
        let room = soft.saturating_sub(self.tx_records);
        if room <= 1 {
            return 0;
        }
        let max_bytes = (room - 1).saturating_mul(wire::MAX_FRAGMENT as u64);
        (want as u64).min(max_bytes) as usize
    }

    pub(crate) fn count_tx(&mut self, bytes: usize) {
        self.tx_records = self
            .tx_records
            .saturating_add((bytes / wire::MAX_FRAGMENT) as u64 + 1);
    }

    /// Count the records one read of `bytes` of application data took;
    /// ask for new keys near the limit. The kernel can merge consecutive
    /// data records into one read, so with RX in the kernel the count is
    /// its own record sequence number (getsockopt TLS_RX) since the key
    /// was installed. `Err`: the limit cannot be kept (close with
    /// KEY_EXHAUSTED).
    pub(crate) fn count_rx(
        &mut self,
        fd: RawFd,
        bytes: usize,
        ev: &mut Vec<Event>,
    ) -> Result<(), Error> {
        let at_least = self.rx_records + 1;
        self.rx_records = match self.kernel_rx_records(fd) {
            Some(n) => n.max(at_least),
            // Without the kernel's count: each full record's worth of
            // bytes is at least one record.
            None => self.rx_records + (bytes as u64).div_ceil(16384).max(1),
        };
        self.key_updates_left = MAX_KEY_UPDATES_WITHOUT_DATA;
        if self.rx_records >= self.limit {
            return Err(Error::new(
                RKTLS_ERR_KEY_EXHAUSTED,
                format!(
                    "the peer's key reached its usage limit ({} records) without an update; \
                     connection closed",
                    self.limit
                ),
            ));
        }
        if self.rx_records >= self.soft_limit() && !self.rx_update_asked {
            if self.can_update_rx() && self.can_update_tx() {
                self.begin_tx_update(true, ev)?;
            } else {
                return Err(Error::new(
                    RKTLS_ERR_KEY_EXHAUSTED,
                    format!(
                        "the peer's key is near its usage limit ({} records) and {}; \
                         connection closed cleanly",
                        self.limit,
                        if self.tls13 {
                            "this kernel cannot rekey"
                        } else {
                            "TLS 1.2 cannot update keys"
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Process one received record: `typ` and its decrypted payload.
    /// Events are appended in order; `Err` ends the connection (the alert
    /// to send, if any, is among the events).
    pub(crate) fn on_record(
        &mut self,
        fd: RawFd,
        typ: u8,
        payload: &[u8],
        sent_close_notify: bool,
        ev: &mut Vec<Event>,
    ) -> Result<(), Fail> {
        if typ != wire::CT_HANDSHAKE && !self.hs.is_empty() {
            return Err(fatal(
                ev,
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                RKTLS_ALERT_UNEXPECTED_MESSAGE,
                "a handshake message was interrupted by another record",
            ));
        }
        match typ {
            wire::CT_APPLICATION_DATA => {
                ev.push(Event::AppData(payload.to_vec()));
                Ok(())
            }
            wire::CT_ALERT => self.on_alert(payload, sent_close_notify, ev),
            wire::CT_HANDSHAKE => {
                let rx_updates = self.rx_key_updates;
                self.on_handshake(fd, payload, ev)?;
                if payload.first() == Some(&wire::HS_KEY_UPDATE)
                    && self.rx_key_updates == rx_updates
                {
                    self.resume_paused_rx(fd, ev)?;
                }
                Ok(())
            }
            t => Err(fatal(
                ev,
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                RKTLS_ALERT_UNEXPECTED_MESSAGE,
                format!(
                    "unexpected record type {t} (length {}) after the offload",
                    payload.len()
                ),
            )),
        }
    }

    fn on_alert(
        &mut self,
        payload: &[u8],
        sent_close_notify: bool,
        ev: &mut Vec<Event>,
    ) -> Result<(), Fail> {
        let Some(alert::Message { level, desc }) = alert::Message::parse(payload) else {
            return Err(fatal(
                ev,
                RKTLS_ERR_DECODE,
                RKTLS_ALERT_DECODE_ERROR,
                format!("alert record of length {}", payload.len()),
            ));
        };
        let name = alert::name(desc);
        // As rustls in userspace: a level other than warning or fatal.
        if level != alert::WARNING && level != alert::FATAL {
            return Err(fatal(
                ev,
                RKTLS_ERR_PROTOCOL,
                RKTLS_ALERT_ILLEGAL_PARAMETER,
                format!("alert {name} with the invalid level {level}"),
            ));
        }
        if desc == RKTLS_ALERT_CLOSE_NOTIFY.code() {
            ev.push(Event::PeerClosed);
            if !sent_close_notify {
                ev.push(Event::close_notify());
            }
            return Ok(());
        }
        // user_canceled is a warning in both versions; in TLS 1.3 every
        // other alert is fatal whatever its level says.
        if desc == RKTLS_ALERT_USER_CANCELED.code() || (level == alert::WARNING && !self.tls13) {
            // As in userspace: a bounded number, then the connection ends.
            if self.warnings_left == 0 {
                return Err(fatal(
                    ev,
                    RKTLS_ERR_PEER_MISBEHAVED,
                    RKTLS_ALERT_UNEXPECTED_MESSAGE,
                    format!(
                        "the peer sent more than {MAX_WARNING_ALERTS} warning alerts \
                         (the last: {name})"
                    ),
                ));
            }
            self.warnings_left -= 1;
            log::warn!("peer sent warning alert {name}; ignored");
            return Ok(());
        }
        ev.push(Event::Closed);
        let err = Error::new(
            RKTLS_ERR_ALERT_RECEIVED,
            format!("TLS error: received fatal alert {name}"),
        );
        Err(Fail {
            err,
            received: Some(desc),
        })
    }

    fn on_handshake(&mut self, fd: RawFd, payload: &[u8], ev: &mut Vec<Event>) -> Result<(), Fail> {
        // RFC 8446 section 5.4 (and the same for TLS 1.2, whose RFC 5246
        // section 6.2.1 forbids sending one): unexpected_message.
        if payload.is_empty() {
            return Err(fatal(
                ev,
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                RKTLS_ALERT_UNEXPECTED_MESSAGE,
                EMPTY_HANDSHAKE_RECORD,
            ));
        }
        self.hs.extend_from_slice(payload);
        let mut at = 0;
        loop {
            let rest = &self.hs[at..];
            let Some((typ, len)) = wire::handshake_header(rest) else {
                break;
            };
            if len > MAX_HS_MESSAGE {
                return Err(fatal(
                    ev,
                    RKTLS_ERR_DECODE,
                    RKTLS_ALERT_DECODE_ERROR,
                    format!("handshake message of {len} bytes after the offload"),
                ));
            }
            if rest.len() < wire::HS_HEADER + len {
                break;
            }
            let body = rest[wire::HS_HEADER..wire::HS_HEADER + len].to_vec();
            at += wire::HS_HEADER + len;
            let last_in_record = at == self.hs.len();
            self.on_message(fd, typ, &body, last_in_record, ev)?;
        }
        self.hs.drain(..at);
        if self.hs.len() > MAX_HS_MESSAGE + wire::HS_HEADER {
            return Err(fatal(
                ev,
                RKTLS_ERR_DECODE,
                RKTLS_ALERT_DECODE_ERROR,
                "handshake message too long after the offload",
            ));
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        fd: RawFd,
        typ: u8,
        body: &[u8],
        last_in_record: bool,
        ev: &mut Vec<Event>,
    ) -> Result<(), Fail> {
        let client = self.is_client();
        match typ {
            wire::HS_NEW_SESSION_TICKET if client && self.tls13 => {
                if let Err(e) = self.kc.handle_new_session_ticket(body) {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_DECODE,
                        RKTLS_ALERT_DECODE_ERROR,
                        format!("bad NewSessionTicket: {e}"),
                    ));
                }
                ev.push(Event::SessionTicket);
                Ok(())
            }
            wire::HS_KEY_UPDATE if self.tls13 => {
                // As in userspace: every KeyUpdate costs a key derivation
                // and a setsockopt; a bounded number between data records.
                if self.key_updates_left == 0 {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_PEER_MISBEHAVED,
                        RKTLS_ALERT_UNEXPECTED_MESSAGE,
                        format!(
                            "the peer sent more than {MAX_KEY_UPDATES_WITHOUT_DATA} KeyUpdates \
                             without application data between them"
                        ),
                    ));
                }
                self.key_updates_left -= 1;
                let req = match body {
                    [0] => false,
                    [1] => true,
                    [_] => {
                        return Err(fatal(
                            ev,
                            RKTLS_ERR_PROTOCOL,
                            RKTLS_ALERT_ILLEGAL_PARAMETER,
                            "KeyUpdate with an invalid request_update value",
                        ))
                    }
                    _ => {
                        return Err(fatal(
                            ev,
                            RKTLS_ERR_DECODE,
                            RKTLS_ALERT_DECODE_ERROR,
                            "KeyUpdate of the wrong length",
                        ))
                    }
                };
                if !last_in_record {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_UNEXPECTED_MESSAGE,
                        RKTLS_ALERT_UNEXPECTED_MESSAGE,
                        "KeyUpdate not at the end of its record",
                    ));
                }
                if !self.can_update_rx() {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_KTLS_NO_REKEY,
                        RKTLS_ALERT_INTERNAL_ERROR,
                        "the peer updated its TLS 1.3 keys, and this kernel cannot install new \
                         keys on an offloaded socket (Linux 6.14 or later can); all data \
                         received before the update was delivered. To keep such connections, \
                         set RKTLS_KTLS_RX_NEEDS_REKEY (RX stays in userspace on such kernels)",
                    ));
                }
                // Our answer would need new TX keys this kernel cannot
                // install: end now, under the current TX key, before the
                // answer is due (a close_notify would claim a clean end).
                if req && !self.can_update_tx() {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_KTLS_NO_REKEY,
                        RKTLS_ALERT_INTERNAL_ERROR,
                        "the peer asked for a TLS 1.3 key update, and this kernel cannot install \
                         new TX keys on an offloaded socket (Linux 6.14 or later can); all data \
                         received before the request was delivered",
                    ));
                }
                if let Err(e) = self.update_rx(fd) {
                    log::warn!("peer's KeyUpdate: {}", e.msg);
                    return Err(fatal(ev, e.code, RKTLS_ALERT_INTERNAL_ERROR, e.msg));
                }
                ev.push(Event::RxKeyUpdated);
                if req {
                    if let Err(e) = self.begin_tx_update(false, ev) {
                        return Err(fatal(ev, e.code, RKTLS_ALERT_INTERNAL_ERROR, e.msg));
                    }
                }
                Ok(())
            }
            wire::HS_HELLO_REQUEST if client && !self.tls13 => {
                if !body.is_empty() {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_DECODE,
                        RKTLS_ALERT_DECODE_ERROR,
                        "HelloRequest with a body",
                    ));
                }
                // rustls refuses one request with a warning; a second ends
                // the connection.
                if self.fail_fast || self.reneg_refused_once {
                    return Err(fatal(
                        ev,
                        RKTLS_ERR_RENEGOTIATION,
                        RKTLS_ALERT_NO_RENEGOTIATION,
                        crate::result::renegotiation_requested_message(
                            crate::result::RENEGOTIATION_FAIL_FAST,
                        ),
                    ));
                }
                log::warn!(
                    "server requested TLS 1.2 renegotiation; refused with a no_renegotiation \
                     warning"
                );
                ev.push(Event::SendControl(
                    wire::CT_ALERT,
                    alert::Message::warning(RKTLS_ALERT_NO_RENEGOTIATION).payload(),
                ));
                ev.push(Event::RenegotiationRequested);
                self.reneg_refused_once = true;
                Ok(())
            }
            wire::HS_CLIENT_HELLO if !client && !self.tls13 => {
                log::warn!("client attempted TLS 1.2 renegotiation; refused");
                Err(fatal(
                    ev,
                    RKTLS_ERR_RENEGOTIATION,
                    RKTLS_ALERT_NO_RENEGOTIATION,
                    crate::result::RENEGOTIATION_ATTEMPTED,
                ))
            }
            t => Err(fatal(
                ev,
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                RKTLS_ALERT_UNEXPECTED_MESSAGE,
                format!("unexpected handshake message {t} after the offload"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The offload state machine on an emulated kernel (`kernel_emul`): the
    //! real code path, with the exact crypto-info bytes rktls passes to
    //! `setsockopt` checked by an independent AEAD and by rustls peers.
    use super::*;
    use crate::connection::Connection;
    use crate::kernel_emul;
    use crate::ktls::rktls_ktls_mode::*;
    use crate::offload::*;
    use crate::testutil::{client_config, server_config, Opts};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    use crate::testutil::{TLS12_SUITES as TLS12, TLS13_SUITES as TLS13};

    fn opts(suite: u16) -> Opts {
        Opts {
            suites: Some(vec![suite]),
            ..Opts::default()
        }
    }

    /// One side's setup: kTLS emulated on its thread (with or without
    /// rekey support), and its offload options.
    #[derive(Clone, Copy)]
    struct Side {
        emul: Option<bool>,
        opts: Options,
    }

    const USER: Side = Side {
        emul: None,
        opts: Options {
            dirs: RKTLS_KTLS_TX | RKTLS_KTLS_RX,
            key_limit: 0,
        },
    };

    fn kernel(rekey: bool, dirs: u32, key_limit: u64) -> Side {
        Side {
            emul: Some(rekey),
            opts: Options { dirs, key_limit },
        }
    }

    type Cfgs = (
        Option<Arc<rustls::ServerConfig>>,
        Option<Arc<rustls::ClientConfig>>,
    );

    /// Run a server (own thread) and a client (this thread) over a socket
    /// pair, both handshaken; returns both closures' results.
    fn run<RS: Send + 'static, RC>(
        o: &Opts,
        srv: Side,
        cli: Side,
        cfgs: Cfgs,
        fs: impl FnOnce(&mut Connection) -> RS + Send + 'static,
        fc: impl FnOnce(&mut Connection) -> RC,
    ) -> (RS, RC) {
        let (a, b) = UnixStream::pair().unwrap();
        let (server_cfg, client_cfg) = cfgs;
        let scfg = server_cfg.unwrap_or_else(|| server_config(o));
        let server = std::thread::spawn(move || {
            if let Some(rekey) = srv.emul {
                kernel_emul::install(rekey);
            }
            let mut s = Connection::server(scfg).unwrap();
            s.set_fd(a.as_raw_fd()).unwrap();
            if srv.emul.is_some() {
                s.set_ktls_mode(RKTLS_KTLS_REQUIRE, srv.opts);
            }
            match s.handshake() {
                Ok(r) => assert_eq!(r, RKTLS_OK),
                Err(e) => panic!("server handshake: {}", e.msg),
            }
            let r = fs(&mut s);
            kernel_emul::remove();
            drop(s);
            drop(a);
            r
        });
        if let Some(rekey) = cli.emul {
            kernel_emul::install(rekey);
        }
        let ccfg = client_cfg.unwrap_or_else(|| client_config(o));
        let mut c = Connection::client(ccfg, "localhost").unwrap();
        c.set_fd(b.as_raw_fd()).unwrap();
        if cli.emul.is_some() {
            c.set_ktls_mode(RKTLS_KTLS_REQUIRE, cli.opts);
        }
        assert_eq!(c.handshake().unwrap(), RKTLS_OK);
        let rc = fc(&mut c);
        kernel_emul::remove();
        drop(c);
        drop(b);
        (server.join().unwrap(), rc)
    }

    fn write_all(c: &mut Connection, mut data: &[u8]) -> Result<(), rktls_result> {
        while !data.is_empty() {
            let (r, n) = c.write(data).map_err(|e| {
                eprintln!(
                    "write failed: {} (tx {} rx {} v {:x})",
                    e.msg,
                    c.ktls_tx(),
                    c.ktls_rx(),
                    c.protocol_version()
                );
                e.code
            })?;
            assert_eq!(r, RKTLS_OK);
            data = &data[n..];
        }
        Ok(())
    }

    /// Read exactly `n` bytes (or fail with the code that stopped it).
    type ReadResult = Result<Vec<u8>, (rktls_result, Vec<u8>)>;

    fn read_n(c: &mut Connection, n: usize) -> ReadResult {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 20000];
        while out.len() < n {
            match c.read(&mut buf) {
                Ok((RKTLS_OK, m)) => out.extend_from_slice(&buf[..m]),
                Ok((r, _)) => return Err((r, out)),
                Err(e) => {
                    eprintln!("read failed: {}", e.msg);
                    return Err((e.code, out));
                }
            }
        }
        Ok(out)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn every_suite_and_direction_moves_data_both_ways() {
        for suite in TLS13.into_iter().chain(TLS12) {
            for dirs in [RKTLS_KTLS_TX | RKTLS_KTLS_RX, RKTLS_KTLS_TX, RKTLS_KTLS_RX] {
                let up = pattern(100_000, 1);
                let down = pattern(70_000, 2);
                let (up2, down2) = (up.clone(), down.clone());
                let (srv, ()) = run(
                    &opts(suite),
                    kernel(false, dirs, 0),
                    USER,
                    (None, None),
                    move |s| {
                        let dirs_seen = (s.ktls_tx(), s.ktls_rx());
                        let got = read_n(s, up2.len()).unwrap();
                        assert!(got == up2, "suite {suite:04x} dirs {dirs}: upload intact");
                        write_all(s, &down2).unwrap();
                        assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
                        let mut b = [0u8; 10];
                        let end = s.read(&mut b).map(|r| r.0).map_err(|e| e.code);
                        (dirs_seen, end, kernel_emul::remove().unwrap(), s.raw_fd())
                    },
                    |c| {
                        write_all(c, &up).unwrap();
                        let got = read_n(c, down.len()).unwrap();
                        assert!(
                            got == down,
                            "suite {suite:04x} dirs {dirs}: download intact"
                        );
                        let mut b = [0u8; 10];
                        assert_eq!(c.read(&mut b).unwrap(), (RKTLS_CLOSED, 0));
                        assert_eq!(c.shutdown().unwrap(), RKTLS_OK);
                    },
                );
                let (seen, end, emu, fd) = srv;
                let want = (dirs & RKTLS_KTLS_TX != 0, dirs & RKTLS_KTLS_RX != 0);
                assert_eq!(seen, want, "suite {suite:04x}");
                assert_eq!(end, Ok(RKTLS_CLOSED), "close_notify received after ours");
                // The emulated kernel did the work for exactly those directions.
                let installs = emu.installed(fd);
                let mut want_installs = vec![];
                if want.0 {
                    want_installs.push(libc::TLS_TX);
                }
                if want.1 {
                    want_installs.push(libc::TLS_RX);
                }
                assert_eq!(installs, want_installs, "suite {suite:04x} dirs {dirs}");
                let (sent, recvd) = emu
                    .records
                    .values()
                    .fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
                assert_eq!(sent > 0, want.0, "TX records through the kernel");
                assert_eq!(recvd > 0, want.1, "RX records through the kernel");
            }
        }
    }

    /// What the peer (a userspace client) saw at the end: its read's
    /// result and the alert it received.
    type PeerEnd = (Result<rktls_result, rktls_result>, Option<u8>);

    /// Server reads `before`, the client then updates its keys three times
    /// (asking for ours when `request`), and sends `after`. rustls in
    /// userspace always asks, so a client that does not is offloaded (to
    /// an emulated kernel with rekey).
    fn peer_key_update(srv: Side, suite: u16, request: bool) -> (ReadResult, Vec<u8>, PeerEnd) {
        let before = pattern(30_000, 3);
        let after = pattern(20_000, 4);
        let (b2, a2) = (before.clone(), after.clone());
        let cli = if request {
            USER
        } else {
            kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0)
        };
        let ((got_before, rest), peer) = run(
            &opts(suite),
            srv,
            cli,
            (None, None),
            move |s| {
                let got = read_n(s, b2.len()).unwrap();
                let rest = read_n(s, a2.len());
                // Keep the socket open until the client has sent all (a
                // server that ended early would make its writes fail).
                let mut sink = [0u8; 4096];
                while unsafe { libc::read(s.raw_fd(), sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
                (got, rest)
            },
            |c| {
                write_all(c, &before).unwrap();
                for _ in 0..3 {
                    // Several in a row.
                    assert_eq!(c.refresh_keys(request).unwrap(), RKTLS_OK);
                }
                write_all(c, &after).unwrap();
                unsafe { libc::shutdown(c.raw_fd(), libc::SHUT_WR) };
                let mut b = [0u8; 64];
                let r = c.read(&mut b).map(|r| r.0).map_err(|e| e.code);
                (r, c.alert_received())
            },
        );
        assert!(
            got_before == before,
            "data before the KeyUpdate is delivered"
        );
        (rest, after, peer)
    }

    #[test]
    fn peer_key_update_on_a_kernel_that_can_rekey() {
        for suite in TLS13 {
            let up = pattern(40_000, 5);
            let down = pattern(40_000, 6);
            let (u2, d2) = (up.clone(), down.clone());
            let (usage, ()) = run(
                &opts(suite),
                kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0),
                USER,
                (None, None),
                move |s| {
                    let got = read_n(s, u2.len()).unwrap();
                    assert!(got == u2, "data after the peer's KeyUpdates intact");
                    // Our answer went out with the new TX keys.
                    write_all(s, &d2).unwrap();
                    assert_eq!(s.refresh_keys(false).unwrap(), RKTLS_OK);
                    write_all(s, &d2).unwrap();
                    let usage = s.key_usage().unwrap();
                    let emu = kernel_emul::remove().unwrap();
                    let fd_log: Vec<i32> = emu
                        .log
                        .iter()
                        .filter(|(f, _, _)| *f == s.raw_fd())
                        .map(|(_, d, _)| *d)
                        .collect();
                    (usage, fd_log)
                },
                |c| {
                    write_all(c, &up[..10_000]).unwrap();
                    assert_eq!(c.refresh_keys(true).unwrap(), RKTLS_OK);
                    assert_eq!(c.refresh_keys(true).unwrap(), RKTLS_OK);
                    write_all(c, &up[10_000..]).unwrap();
                    let got = read_n(c, 2 * down.len()).unwrap();
                    assert!(got[..down.len()] == down[..] && got[down.len()..] == down[..]);
                },
            );
            let ((_, _, tx_updates, rx_updates), log) = usage;
            assert_eq!(
                rx_updates, 2,
                "suite {suite:04x}: both peer KeyUpdates installed"
            );
            assert!(
                tx_updates >= 2,
                "suite {suite:04x}: answered, and our own refresh"
            );
            // Initial TX, RX, then a new key per update, each through setsockopt.
            assert_eq!(log.len() as u64, 2 + tx_updates + rx_updates);
        }
    }

    #[test]
    fn peer_key_update_on_a_kernel_without_rekey_ends_with_its_own_code() {
        for suite in TLS13 {
            for request in [false, true] {
                let srv = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
                let (rest, _, peer) = peer_key_update(srv, suite, request);
                let code = rest.map(|_| ()).map_err(|(c, partial)| (c, partial.len()));
                assert_eq!(code, Err((RKTLS_ERR_KTLS_NO_REKEY, 0)), "suite {suite:04x}");
                assert_eq!(
                    peer,
                    (Err(RKTLS_ERR_ALERT_RECEIVED), Some(80)),
                    "suite {suite:04x}: the peer receives internal_error"
                );
            }
        }
    }

    /// TX in a kernel without rekey, RX here: a peer KeyUpdate that asks
    /// for ours ends the connection with internal_error (under the current
    /// TX key) once the data before it is read; one that does not ask is
    /// handled here and the data after it flows.
    #[test]
    fn peer_key_update_request_with_tx_in_a_kernel_without_rekey() {
        for suite in TLS13 {
            for dirs in [
                RKTLS_KTLS_TX,
                RKTLS_KTLS_TX | RKTLS_KTLS_RX | RKTLS_KTLS_RX_NEEDS_REKEY,
            ] {
                let (rest, _, peer) = peer_key_update(kernel(false, dirs, 0), suite, true);
                let code = rest.map(|_| ()).map_err(|(c, partial)| (c, partial.len()));
                assert_eq!(
                    code,
                    Err((RKTLS_ERR_KTLS_NO_REKEY, 0)),
                    "suite {suite:04x} dirs {dirs}: nothing after the request"
                );
                assert_eq!(
                    peer,
                    (Err(RKTLS_ERR_ALERT_RECEIVED), Some(80)),
                    "suite {suite:04x} dirs {dirs}: the peer receives internal_error, \
                     not close_notify"
                );
                let (rest, after, _) = peer_key_update(kernel(false, dirs, 0), suite, false);
                let rest = rest.map_err(|(c, p)| (c, p.len()));
                assert!(rest == Ok(after), "suite {suite:04x} dirs {dirs}");
            }
        }
    }

    #[test]
    fn rx_needs_rekey_keeps_tls13_rx_in_userspace_on_such_kernels() {
        for suite in TLS13 {
            let srv = kernel(
                false,
                RKTLS_KTLS_TX | RKTLS_KTLS_RX | RKTLS_KTLS_RX_NEEDS_REKEY,
                0,
            );
            let (rest, after, _) = peer_key_update(srv, suite, false);
            let rest = rest.map_err(|(c, p)| (c, p.len()));
            assert!(
                rest == Ok(after),
                "suite {suite:04x}: data after the update"
            );
        }
        // On a kernel that can rekey, RX goes to the kernel as usual.
        let ((tx, rx), ()) = run(
            &opts(0x1301),
            kernel(
                true,
                RKTLS_KTLS_TX | RKTLS_KTLS_RX | RKTLS_KTLS_RX_NEEDS_REKEY,
                0,
            ),
            USER,
            (None, None),
            |s| {
                let r = (s.ktls_tx(), s.ktls_rx());
                assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
                r
            },
            |c| {
                let mut b = [0u8; 16];
                assert_eq!(c.read(&mut b).unwrap(), (RKTLS_CLOSED, 0));
            },
        );
        assert!(tx && rx);
    }

    #[test]
    fn tx_keys_refresh_before_the_limit() {
        let data = pattern(200_000, 7);
        let d2 = data.clone();
        let (updates, ()) = run(
            &opts(0x1302),
            kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 16),
            USER,
            (None, None),
            move |s| {
                for c in d2.chunks(4096) {
                    write_all(s, c).unwrap();
                    assert!(s.key_usage().unwrap().0 < 16, "never past the limit");
                }
                s.key_usage().unwrap().2
            },
            |c| {
                assert!(read_n(c, data.len()).unwrap() == data);
            },
        );
        assert!(updates >= 3, "{updates} TX key updates");
    }

    #[test]
    fn key_limit_without_rekey_closes_cleanly_first() {
        for (suite, rekey) in [(0xc02b, true), (0x1301, false)] {
            let (r, got) = run(
                &opts(suite),
                kernel(rekey, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 16),
                USER,
                (None, None),
                |s| {
                    let mut sent = 0;
                    loop {
                        match write_all(s, &[7u8; 1000]) {
                            Ok(()) => sent += 1000,
                            Err(code) => return (code, sent),
                        }
                    }
                },
                |c| {
                    let mut got = 0;
                    let mut b = [0u8; 4096];
                    loop {
                        match c.read(&mut b) {
                            Ok((RKTLS_OK, n)) => got += n,
                            other => return (other.map(|r| r.0).map_err(|e| e.code), got),
                        }
                    }
                },
            );
            assert_eq!(r.0, RKTLS_ERR_KEY_EXHAUSTED, "suite {suite:04x}");
            assert!(r.1 > 0);
            assert_eq!(got, (Ok(RKTLS_CLOSED), r.1), "all data, then close_notify");
        }
    }

    #[test]
    fn rx_limit_asks_the_peer_for_new_keys() {
        let (rx_updates, ()) = run(
            &opts(0x1303),
            kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 16),
            USER,
            (None, None),
            |s| {
                for _ in 0..60 {
                    let got = read_n(s, 100).unwrap();
                    write_all(s, &got).unwrap();
                }
                s.key_usage().unwrap().3
            },
            |c| {
                for i in 0..60u8 {
                    write_all(c, &[i; 100]).unwrap();
                    assert_eq!(read_n(c, 100).unwrap(), vec![i; 100]);
                }
            },
        );
        assert!(
            rx_updates >= 3,
            "{rx_updates} peer updates requested and installed"
        );
    }

    type Records = &'static [(u8, &'static [u8])];
    /// How a side's reads ended.
    type End = Result<rktls_result, rktls_result>;
    /// How the server's reads ended, what it read, alerts received and sent.
    type ServerSaw = (
        Result<rktls_result, rktls_result>,
        Vec<u8>,
        Option<u8>,
        Option<u8>,
    );

    /// The server (offloaded, both directions) receives what the client,
    /// also offloaded, sends as raw control records after `hello`.
    fn server_gets(suite: u16, records: Records) -> (ServerSaw, Vec<u8>) {
        server_on(
            kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0),
            suite,
            records,
        )
    }

    /// As `server_gets`, with the server set up as `srv` (`USER`: rustls'
    /// own record layer, the reference for limits and alerts).
    fn server_on(srv: Side, suite: u16, records: Records) -> (ServerSaw, Vec<u8>) {
        let both = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        run(
            &opts(suite),
            srv,
            both,
            (None, None),
            |s| {
                let mut got = Vec::new();
                let mut b = [0u8; 20000];
                let end = loop {
                    match s.read(&mut b) {
                        Ok((RKTLS_OK, n)) => got.extend_from_slice(&b[..n]),
                        other => break other.map(|r| r.0).map_err(|e| e.code),
                    }
                };
                (end, got, s.alert_received(), s.alert_sent())
            },
            move |c| {
                write_all(c, b"hello").unwrap();
                for (t, p) in records {
                    // The server may end the connection before the last.
                    if crate::ktls::send_record(c.raw_fd(), *t, p).is_err() {
                        break;
                    }
                }
                // What the server answered (alerts), as raw records.
                let mut out = Vec::new();
                let mut b = vec![0u8; 20000];
                loop {
                    let (t, n) = match crate::ktls::recv_record(c.raw_fd(), &mut b) {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("client recv: {e}");
                            break;
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    if t != 21 {
                        continue; // session tickets
                    }
                    out.push(t);
                    out.extend_from_slice(&b[..n]);
                }
                out
            },
        )
    }

    #[test]
    fn close_notify_is_answered_with_ours() {
        let ((end, got, _, _), answer) = server_gets(0x1301, &[(21, &[1, 0])]);
        assert_eq!((end, &got[..]), (Ok(RKTLS_CLOSED), &b"hello"[..]));
        assert_eq!(
            answer,
            vec![21, 1, 0],
            "our close_notify through the kernel"
        );
    }

    #[test]
    fn fatal_alert_from_the_peer_ends_with_its_description() {
        for suite in [0x1302, 0xc02c] {
            let ((end, got, received, _), answer) = server_gets(suite, &[(21, &[2, 40])]);
            assert_eq!(end, Err(RKTLS_ERR_ALERT_RECEIVED));
            assert_eq!((&got[..], received), (&b"hello"[..], Some(40)));
            assert!(answer.is_empty(), "no alert answers a fatal alert");
        }
        // TLS 1.2 warnings are ignored; TLS 1.3 has no warnings but
        // user_canceled.
        let ((end, ..), _) = server_gets(0xc02b, &[(21, &[1, 100]), (21, &[1, 0])]);
        assert_eq!(end, Ok(RKTLS_CLOSED));
        let ((end, _, received, _), _) = server_gets(0x1301, &[(21, &[1, 42])]);
        assert_eq!((end, received), (Err(RKTLS_ERR_ALERT_RECEIVED), Some(42)));
    }

    #[test]
    fn unexpected_or_malformed_records_get_the_right_alert() {
        let cases: [(u16, Records, rktls_result, u8); 8] = [
            // Post-handshake CertificateRequest (never offered).
            (
                0x1301,
                &[(22, &[13, 0, 0, 0])],
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                10,
            ),
            // NewSessionTicket to a server.
            (
                0x1301,
                &[(22, &[4, 0, 0, 0])],
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                10,
            ),
            // KeyUpdate of the wrong length, and with a bad value.
            (0x1301, &[(22, &[24, 0, 0, 2, 0, 0])], RKTLS_ERR_DECODE, 50),
            (0x1301, &[(22, &[24, 0, 0, 1, 7])], RKTLS_ERR_PROTOCOL, 47),
            // A truncated alert, an unknown record type.
            (0x1301, &[(21, &[2])], RKTLS_ERR_DECODE, 50),
            (
                0x1301,
                &[(99, &[1, 2, 3])],
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                10,
            ),
            // KeyUpdate in TLS 1.2; a renegotiating ClientHello.
            (
                0xc02b,
                &[(22, &[24, 0, 0, 1, 0])],
                RKTLS_ERR_UNEXPECTED_MESSAGE,
                10,
            ),
            (0xc02b, &[(22, &[1, 0, 0, 0])], RKTLS_ERR_RENEGOTIATION, 100),
        ];
        for (suite, recs, code, alert) in cases {
            let ((end, got, _, sent), answer) = server_gets(suite, recs);
            assert_eq!(end, Err(code), "{recs:?}");
            assert_eq!(&got[..], b"hello", "data first");
            assert_eq!(sent, Some(alert), "{recs:?}");
            assert_eq!(answer, vec![21, 2, alert], "{recs:?}: alert on the wire");
        }
        // A handshake message split across records is reassembled: a
        // KeyUpdate in two pieces reaches the rekey decision.
        let ((end, ..), _) = server_gets(0x1301, &[(22, &[24, 0]), (22, &[0, 1, 0])]);
        assert_eq!(end, Err(RKTLS_ERR_KTLS_NO_REKEY));
    }

    #[test]
    fn truncated_control_message_is_an_error_with_an_alert() {
        let both = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        let (r, ()) = run(
            &opts(0x1301),
            both,
            USER,
            (None, None),
            |s| {
                // recvmsg reports MSG_CTRUNC (sys maps it to EPROTO).
                crate::sys::fault::inject(crate::sys::fault::Op::RecvMsg, libc::EPROTO);
                let mut b = [0u8; 100];
                (s.read(&mut b).map_err(|e| e.code), s.alert_sent())
            },
            |c| {
                let mut b = [0u8; 100];
                let r = c.read(&mut b).map_err(|e| e.code);
                assert_eq!(r, Err(RKTLS_ERR_ALERT_RECEIVED));
            },
        );
        assert_eq!(r, (Err(RKTLS_ERR_PROTOCOL), Some(80)));
    }

    #[test]
    fn offloaded_client_keeps_session_tickets_and_resumes() {
        for suite in TLS13 {
            let ccfg = client_config(&opts(suite));
            let scfg = server_config(&opts(suite));
            let cli = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
            // Two connections with one client config: the first reads
            // (tickets arrive through the kernel), the second resumes.
            let mut resumed = vec![];
            for _ in 0..2 {
                let ((), r) = run(
                    &opts(suite),
                    USER,
                    cli,
                    (Some(scfg.clone()), Some(ccfg.clone())),
                    move |s| {
                        write_all(s, b"data").unwrap();
                        assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
                    },
                    |c| {
                        assert!(c.ktls_rx());
                        assert_eq!(read_n(c, 4).unwrap(), b"data");
                        let mut b = [0u8; 8];
                        assert_eq!(c.read(&mut b).unwrap(), (RKTLS_CLOSED, 0));
                        c.is_resumed()
                    },
                );
                resumed.push(r);
            }
            assert_eq!(resumed, vec![false, true], "suite {suite:04x}");
        }
    }

    #[test]
    fn hello_request_is_refused_and_the_servers_answer_names_the_cause() {
        // The server (emulated kTLS, so it can send any record) sends data,
        // then HelloRequest, then closes the way IIS does, or with
        // close_notify, or with a fatal alert.
        for (fail_fast, end) in [
            (false, None),
            (true, None),
            (false, Some([1u8, 0])),
            (false, Some([2u8, 40])),
        ] {
            let both = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
            let (answer, (r, got, msg)) = run(
                &opts(0xc02b),
                both,
                both,
                (None, None),
                move |s| {
                    write_all(s, b"before").unwrap();
                    crate::ktls::send_record(s.raw_fd(), 22, &[0, 0, 0, 0]).unwrap();
                    let mut b = [0u8; 64];
                    let (t, n) = crate::ktls::recv_record(s.raw_fd(), &mut b).unwrap();
                    if let Some(end) = end {
                        crate::ktls::send_record(s.raw_fd(), 21, &end).unwrap();
                    }
                    (t, b[..n].to_vec())
                },
                |c| {
                    c.renegotiation_fail_fast_for_test(fail_fast);
                    let mut got = Vec::new();
                    let mut b = [0u8; 64];
                    loop {
                        match c.read(&mut b) {
                            Ok((RKTLS_OK, n)) => got.extend_from_slice(&b[..n]),
                            Ok((r, _)) => return (Ok(r), got, String::new()),
                            Err(e) => return (Err(e.code), got, e.msg),
                        }
                    }
                },
            );
            assert_eq!(r, Err(RKTLS_ERR_RENEGOTIATION));
            assert_eq!(got, b"before", "data before the request is delivered");
            assert!(
                msg.contains("renegotiation") && msg.contains("TLS 1.3"),
                "{msg}"
            );
            let outcome = match end {
                None if fail_fast => "fail-fast",
                None => "closed the connection without close_notify",
                Some([1, 0]) => "close_notify",
                Some(_) => "fatal alert handshake_failure",
            };
            assert!(msg.contains(outcome), "{msg}");
            let level = if fail_fast { 2 } else { 1 };
            assert_eq!(answer, (21, vec![level, 100]), "no_renegotiation");
        }
    }

    #[test]
    fn event_style_reports_each_record() {
        let both = kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        let (events, ()) = run(
            &opts(0x1301),
            both,
            USER,
            (None, None),
            |s| {
                let mut all = Vec::new();
                for (t, p) in [
                    (23u8, &b"app"[..]),
                    (22, &[24, 0, 0, 1, 1][..]),
                    (21, &[1, 0][..]),
                ] {
                    let (r, ev) = s.process_record(t, p);
                    assert_eq!(r.map_err(|e| e.code), Ok(RKTLS_OK));
                    all.push(ev);
                }
                assert_eq!(s.control_sent().unwrap(), RKTLS_OK);
                // The event style needs both directions in the kernel, and
                // a fatal alert ends it with the alert's code.
                let (r, ev) = s.process_record(21, &[2, 51]);
                assert_eq!(r.map_err(|e| e.code), Err(RKTLS_ERR_ALERT_RECEIVED));
                all.push(ev);
                all
            },
            |c| {
                let mut b = [0u8; 64];
                while let Ok((RKTLS_OK, _)) = c.read(&mut b) {}
            },
        );
        assert_eq!(events[0], vec![Event::AppData(b"app".to_vec())]);
        assert_eq!(
            events[1],
            vec![
                Event::RxKeyUpdated,
                Event::SendControl(22, vec![24, 0, 0, 1, 0]),
                Event::TxKeyUpdated
            ]
        );
        assert_eq!(
            events[2],
            vec![Event::PeerClosed, Event::SendControl(21, vec![1, 0])]
        );
        assert_eq!(events[3], vec![Event::Closed]);
    }

    #[test]
    fn warning_alerts_are_limited_as_in_userspace() {
        // rustls (userspace) ends the connection at the fifth warning
        // alert: TLS 1.2 warnings and TLS 1.3 user_canceled alike.
        // Five warnings then close_notify, and four then close_notify.
        const W: (u8, &[u8]) = (21, &[1, 100]);
        const U: (u8, &[u8]) = (21, &[1, 90]);
        const CN: (u8, &[u8]) = (21, &[1, 0]);
        static W12: Records = &[W, W, W, W, W, CN];
        static W13: Records = &[U, U, U, U, U, CN];
        static OK12: Records = &[W, W, W, W, CN];
        static OK13: Records = &[U, U, U, U, CN];
        for (suite, recs, ok) in [(0xc02b, W12, OK12), (0x1301, W13, OK13)] {
            let ((end, got, _, sent), answer) = server_gets(suite, recs);
            assert_eq!(end, Err(RKTLS_ERR_PEER_MISBEHAVED), "suite {suite:04x}");
            assert_eq!(&got[..], b"hello");
            assert_eq!(sent, Some(10));
            assert_eq!(answer, vec![21, 2, 10], "unexpected_message on the wire");
            // Same code in userspace.
            let ((end, ..), _) = server_on(USER, suite, recs);
            assert_eq!(end, Err(RKTLS_ERR_PEER_MISBEHAVED), "userspace {suite:04x}");
            // Four are accepted.
            let ((end, ..), answer) = server_gets(suite, ok);
            assert_eq!(end, Ok(RKTLS_CLOSED), "suite {suite:04x}");
            assert_eq!(answer, vec![21, 1, 0], "only our close_notify");
        }
    }

    #[test]
    fn warning_alerts_are_limited_in_the_event_style() {
        let both = kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        let (results, ()) = run(
            &opts(0xc02c),
            both,
            USER,
            (None, None),
            |s| {
                (0..5)
                    .map(|_| {
                        let (r, ev) = s.process_record(21, &[1, 100]);
                        (r.map_err(|e| e.code), ev)
                    })
                    .collect::<Vec<_>>()
            },
            |_| {},
        );
        for r in &results[..4] {
            assert_eq!(r, &(Ok(RKTLS_OK), vec![]));
        }
        assert_eq!(
            results[4],
            (
                Err(RKTLS_ERR_PEER_MISBEHAVED),
                vec![Event::SendControl(21, vec![2, 10]), Event::Closed]
            )
        );
    }

    /// The client (offloaded, rekey kernel) sends `n` KeyUpdates, with
    /// `data` between each; returns how the server's reads ended, the
    /// server's setsockopt count, and what the client read.
    fn key_updates(
        n: usize,
        data: bool,
        event_style: bool,
    ) -> ((End, usize, usize), (End, Option<u8>)) {
        let both = kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        run(
            &opts(0x1301),
            both,
            both,
            (None, None),
            move |s| {
                let mut got = 0;
                let mut b = [0u8; 20000];
                let end = loop {
                    if event_style {
                        let (t, n) = match crate::ktls::recv_record(s.raw_fd(), &mut b) {
                            Ok(v) => v,
                            Err(e) => panic!("{e}"),
                        };
                        let (r, ev) = s.process_record(t, &b[..n]);
                        let mut closed = false;
                        for e in ev {
                            match e {
                                Event::AppData(d) => got += d.len(),
                                Event::PeerClosed => closed = true,
                                Event::SendControl(t, p) => {
                                    crate::ktls::send_record(s.raw_fd(), t, &p).unwrap();
                                }
                                _ => {}
                            }
                        }
                        match r {
                            Ok(_) => s.control_sent().unwrap(),
                            Err(e) => break Err(e.code),
                        };
                        if closed {
                            break Ok(RKTLS_CLOSED);
                        }
                        continue;
                    }
                    match s.read(&mut b) {
                        Ok((RKTLS_OK, n)) => got += n,
                        other => break other.map(|r| r.0).map_err(|e| e.code),
                    }
                };
                let emu = kernel_emul::remove().unwrap();
                let fd = s.raw_fd();
                let sets = emu.log.iter().filter(|(f, ..)| *f == fd).count();
                (end, got, sets)
            },
            move |c| {
                for _ in 0..n {
                    if data {
                        write_all(c, b"x").unwrap();
                    }
                    assert_eq!(c.refresh_keys(false).unwrap(), RKTLS_OK);
                }
                // Without data the server ends the connection at the last
                // KeyUpdate: nothing more is written (a send the closed
                // socket refuses would be this side's next error, before
                // the alert). With data, the server counts these bytes.
                if data {
                    write_all(c, b"end").unwrap();
                    let _ = c.shutdown();
                }
                let mut b = [0u8; 64];
                let r = loop {
                    match c.read(&mut b) {
                        Ok((RKTLS_OK, _)) => {}
                        other => break other.map(|r| r.0).map_err(|e| e.code),
                    }
                };
                (r, c.alert_received())
            },
        )
    }

    #[test]
    fn key_updates_without_data_are_limited_as_in_userspace() {
        for event_style in [false, true] {
            // 32 in a row are fine, the 33rd ends the connection: one
            // setsockopt each (plus the two of the offload), no more.
            let ((end, got, sets), (cli, alert)) = key_updates(33, false, event_style);
            assert_eq!(
                end,
                Err(RKTLS_ERR_PEER_MISBEHAVED),
                "event style {event_style}"
            );
            assert_eq!(got, 0);
            assert_eq!(sets, 2 + 32, "setsockopt calls");
            assert_eq!((cli, alert), (Err(RKTLS_ERR_ALERT_RECEIVED), Some(10)));
            // Data between them resets the count.
            let ((end, got, sets), _) = key_updates(40, true, event_style);
            assert_eq!(got, 40 + 3, "event style {event_style}");
            assert_eq!(end, Ok(RKTLS_CLOSED), "event style {event_style}");
            assert_eq!(sets, 2 + 40);
        }
    }

    #[test]
    fn a_second_hello_request_ends_the_connection() {
        let both = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        let (answers, r) = run(
            &opts(0xc02b),
            both,
            both,
            (None, None),
            |s| {
                let mut answers = Vec::new();
                let mut b = [0u8; 64];
                for i in 0..3 {
                    let sent = write_all(s, b"data").is_ok()
                        && crate::ktls::send_record(s.raw_fd(), 22, &[0, 0, 0, 0]).is_ok();
                    // The client may have ended the connection (after the
                    // second) before the third goes out.
                    assert!(sent || i == 2, "send {i}");
                }
                // SAFETY: the fd is open; no more bytes from this side.
                unsafe { libc::shutdown(s.raw_fd(), libc::SHUT_WR) };
                while let Ok((t, n)) = crate::ktls::recv_record(s.raw_fd(), &mut b) {
                    if n == 0 {
                        break;
                    }
                    answers.push((t, b[..n].to_vec()));
                }
                answers
            },
            |c| {
                let mut got = Vec::new();
                let mut b = [0u8; 64];
                loop {
                    match c.read(&mut b) {
                        Ok((RKTLS_OK, n)) => got.extend_from_slice(&b[..n]),
                        other => return (other.map(|r| r.0).map_err(|e| e.code), got),
                    }
                }
            },
        );
        assert_eq!(r, (Err(RKTLS_ERR_RENEGOTIATION), b"datadata".to_vec()));
        assert_eq!(
            answers,
            vec![(21, vec![1, 100]), (21, vec![2, 100])],
            "a warning, then a fatal no_renegotiation"
        );
    }

    /// The server (offloaded as `dirs`) reads "hello" and then the raw
    /// bytes `wire` a userspace client writes on its socket; returns the
    /// server's end and the client's (its read result and alert received).
    fn server_reads_raw(suite: u16, dirs: u32, wire: Vec<u8>) -> (End, (End, Option<u8>)) {
        run(
            &opts(suite),
            kernel(false, dirs, 0),
            USER,
            (None, None),
            |s| {
                assert_eq!(read_n(s, 5).unwrap(), b"hello");
                let mut b = [0u8; 100];
                s.read(&mut b).map(|r| r.0).map_err(|e| e.code)
            },
            move |c| {
                write_all(c, b"hello").unwrap();
                // SAFETY: writing bytes to the connection's own socket.
                let n = unsafe { libc::write(c.raw_fd(), wire.as_ptr().cast(), wire.len()) };
                assert_eq!(n, wire.len() as isize);
                let mut b = [0u8; 100];
                let r = c.read(&mut b).map(|r| r.0).map_err(|e| e.code);
                (r, c.alert_received())
            },
        )
    }

    #[test]
    fn kernel_read_failures_send_their_alert() {
        // A record that fails to decrypt: bad_record_mac, although the
        // kernel refuses to send after the failure until SO_ERROR is taken.
        let mut junk = vec![23, 3, 3, 0, 40];
        junk.extend_from_slice(&[0x5a; 40]);
        // A record over 2^14 + 256 bytes: record_overflow.
        let mut big = vec![23, 3, 3, 0x48, 0x01];
        big.resize(5 + 0x4801, 0);
        for suite in [0x1301, 0xc02b] {
            for dirs in [RKTLS_KTLS_TX | RKTLS_KTLS_RX, RKTLS_KTLS_RX] {
                let (end, cli) = server_reads_raw(suite, dirs, junk.clone());
                assert_eq!(end, Err(RKTLS_ERR_DECRYPT), "{suite:04x} dirs {dirs}");
                assert_eq!(
                    cli,
                    (Err(RKTLS_ERR_ALERT_RECEIVED), Some(20)),
                    "{suite:04x} dirs {dirs}"
                );
                let (end, cli) = server_reads_raw(suite, dirs, big.clone());
                assert_eq!(end, Err(RKTLS_ERR_PROTOCOL), "{suite:04x} dirs {dirs}");
                assert_eq!(
                    cli,
                    (Err(RKTLS_ERR_ALERT_RECEIVED), Some(22)),
                    "{suite:04x} dirs {dirs}"
                );
            }
        }
    }

    #[test]
    fn data_inside_a_fragmented_handshake_message_is_refused() {
        static SPLIT: Records = &[(22, &[24, 0]), (23, b"inside"), (22, &[0, 1, 0])];
        // On a rekey kernel the first fragment pauses RX (EKEYEXPIRED).
        for (rekey, dirs) in [
            (false, RKTLS_KTLS_TX | RKTLS_KTLS_RX),
            (true, RKTLS_KTLS_TX | RKTLS_KTLS_RX),
            (false, RKTLS_KTLS_TX),
        ] {
            let ((end, got, _, sent), answer) = server_on(kernel(rekey, dirs, 0), 0x1301, SPLIT);
            assert_eq!(end, Err(RKTLS_ERR_UNEXPECTED_MESSAGE), "dirs {dirs}");
            assert_eq!(&got[..], b"hello", "nothing from inside the message");
            assert_eq!(sent, Some(10));
            assert_eq!(answer, vec![21, 2, 10], "unexpected_message on the wire");
        }
    }

    #[test]
    fn kernel_refusing_rx_after_tx_ends_with_an_alert() {
        // REQUIRE, or RX the only direction asked for: the connection ends,
        // and the peer receives internal_error.
        for (mode, dirs) in [
            (RKTLS_KTLS_REQUIRE, RKTLS_KTLS_TX | RKTLS_KTLS_RX),
            (RKTLS_KTLS_PREFER, RKTLS_KTLS_RX),
        ] {
            let (a, b) = UnixStream::pair().unwrap();
            let scfg = server_config(&opts(0x1301));
            let server = std::thread::spawn(move || {
                kernel_emul::install(true);
                let mut s = Connection::server(scfg).unwrap();
                s.set_fd(a.as_raw_fd()).unwrap();
                s.set_ktls_mode(mode, Options { dirs, key_limit: 0 });
                crate::sys::fault::inject(
                    crate::sys::fault::Op::TlsRx(a.as_raw_fd()),
                    libc::ENOMEM,
                );
                let r = s.handshake().map_err(|e| (e.code, e.msg));
                let dirs_seen = (s.ktls_tx(), s.ktls_rx());
                kernel_emul::remove();
                (r, dirs_seen)
            });
            let mut c = Connection::client(client_config(&opts(0x1301)), "localhost").unwrap();
            c.set_fd(b.as_raw_fd()).unwrap();
            assert_eq!(c.handshake().unwrap(), RKTLS_OK);
            let mut buf = [0u8; 16];
            let r = c.read(&mut buf).map(|r| r.0).map_err(|e| e.code);
            let (r_srv, dirs_seen) = server.join().unwrap();
            let (code, msg) = r_srv.unwrap_err();
            assert_eq!(code, RKTLS_ERR_KTLS_UNAVAILABLE, "{msg}");
            assert!(
                msg.contains("TLS_RX") && msg.contains("sent alert internal_error"),
                "{msg}"
            );
            assert_eq!(
                (r, c.alert_received()),
                (Err(RKTLS_ERR_ALERT_RECEIVED), Some(80)),
                "the peer receives internal_error, not a truncated stream ({mode:?})"
            );
            // The kernel keeps TX keys it took: ktls_tx says so.
            assert_eq!(
                dirs_seen,
                (dirs & RKTLS_KTLS_TX != 0, false),
                "({mode:?}, dirs {dirs})"
            );
        }
    }

    #[test]
    fn kernel_refusing_rx_after_tx_in_prefer_mode_keeps_rx_in_userspace() {
        for suite in TLS13.into_iter().chain(TLS12) {
            let (a, b) = UnixStream::pair().unwrap();
            let scfg = server_config(&opts(suite));
            let up = pattern(50_000, 7);
            let down = pattern(60_000, 8);
            let (up2, down2) = (up.clone(), down.clone());
            let server = std::thread::spawn(move || {
                kernel_emul::install(true);
                let mut s = Connection::server(scfg).unwrap();
                s.set_fd(a.as_raw_fd()).unwrap();
                let dirs = RKTLS_KTLS_TX | RKTLS_KTLS_RX;
                s.set_ktls_mode(RKTLS_KTLS_PREFER, Options { dirs, key_limit: 0 });
                crate::sys::fault::inject(
                    crate::sys::fault::Op::TlsRx(a.as_raw_fd()),
                    libc::ENOMEM,
                );
                assert_eq!(s.handshake().unwrap(), RKTLS_OK);
                let dirs_seen = (s.ktls_tx(), s.ktls_rx());
                let got = read_n(&mut s, up2.len());
                write_all(&mut s, &down2).unwrap();
                assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
                let mut b = [0u8; 10];
                let end = s.read(&mut b).map(|r| r.0).map_err(|e| e.code);
                let emu = kernel_emul::remove().unwrap();
                let fd = a.as_raw_fd();
                let installs = emu.installed(fd);
                let (sent, recvd) = emu.records.get(&fd).copied().unwrap_or((0, 0));
                (dirs_seen, got, end, installs, sent, recvd)
            });
            let mut c = Connection::client(client_config(&opts(suite)), "localhost").unwrap();
            c.set_fd(b.as_raw_fd()).unwrap();
            assert_eq!(c.handshake().unwrap(), RKTLS_OK);
            write_all(&mut c, &up).unwrap();
            let got = read_n(&mut c, down.len()).unwrap();
            let mut buf = [0u8; 16];
            let end_c = c.read(&mut buf).map(|r| r.0).map_err(|e| e.code);
            assert_eq!(c.shutdown().unwrap(), RKTLS_OK);
            let (dirs_seen, got_s, end_s, installs, sent, recvd) = server.join().unwrap();
            assert_eq!(
                dirs_seen,
                (true, false),
                "suite {suite:04x}: TX kernel, RX here"
            );
            assert!(got_s.unwrap() == up, "suite {suite:04x}: upload intact");
            assert!(got == down, "suite {suite:04x}: download intact");
            assert_eq!(end_c, Ok(RKTLS_CLOSED), "suite {suite:04x}: close_notify");
            assert_eq!(end_s, Ok(RKTLS_CLOSED), "suite {suite:04x}: ours answered");
            // Only TX went into the (emulated) kernel, and it sealed records.
            assert_eq!(installs, vec![libc::TLS_TX], "suite {suite:04x}");
            assert!(sent > 0 && recvd == 0, "suite {suite:04x}: {sent} {recvd}");
        }
    }

    #[test]
    fn key_update_split_across_records_on_a_rekey_kernel() {
        // The client sends its KeyUpdate in two records (RFC 8446 allows
        // fragmenting handshake messages), then data under its new key.
        // The kernel pauses RX at the first fragment; rktls gives it the
        // current key back, then the new one once the message is whole.
        for event_style in [false, true] {
            let both = kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
            let ((got, rx_updates, sets), ()) = run(
                &opts(0x1302),
                both,
                both,
                (None, None),
                move |s| {
                    let got = if event_style {
                        let mut got = Vec::new();
                        let mut b = [0u8; 20000];
                        while got.len() < 10 {
                            let (t, n) = crate::ktls::recv_record(s.raw_fd(), &mut b).unwrap();
                            let (r, ev) = s.process_record(t, &b[..n]);
                            assert_eq!(r.map_err(|e| e.msg), Ok(RKTLS_OK));
                            for e in ev {
                                if let Event::AppData(d) = e {
                                    got.extend_from_slice(&d);
                                }
                            }
                        }
                        got
                    } else {
                        read_n(s, 10).unwrap()
                    };
                    write_all(s, b"k").unwrap();
                    let usage = s.key_usage().unwrap();
                    let emu = kernel_emul::remove().unwrap();
                    let fd = s.raw_fd();
                    let sets = emu
                        .log
                        .iter()
                        .filter(|(f, d, _)| *f == fd && *d == libc::TLS_RX)
                        .count();
                    (got, usage.3, sets)
                },
                |c| {
                    write_all(c, b"befor").unwrap();
                    let fd = c.raw_fd();
                    let o = c.offload().unwrap();
                    let mut ev = Vec::new();
                    o.begin_tx_update(false, &mut ev).unwrap();
                    assert_eq!(ev[0], Event::SendControl(22, vec![24, 0, 0, 1, 0]));
                    crate::ktls::send_record(fd, 22, &[24, 0]).unwrap();
                    crate::ktls::send_record(fd, 22, &[0, 1, 0]).unwrap();
                    o.commit_tx(fd).unwrap();
                    write_all(c, b"after").unwrap();
                    assert_eq!(read_n(c, 1).unwrap(), b"k");
                },
            );
            assert_eq!(got, b"beforafter", "event style {event_style}");
            assert_eq!(rx_updates, 1);
            assert_eq!(sets, 3, "install, the current key again, the new key");
        }
    }

    #[test]
    fn rx_key_usage_counts_records_the_kernel_merges() {
        // 40 one-byte records, all received before the server reads: the
        // kernel returns them in one read; the key usage counts 40.
        for event_style in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let both = kernel(false, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
            let ((n, records), ()) = run(
                &opts(0x1301),
                both,
                both,
                (None, None),
                move |s| {
                    rx.recv().unwrap();
                    let mut b = [0u8; 20000];
                    let n = if event_style {
                        let (t, n) = crate::ktls::recv_record(s.raw_fd(), &mut b).unwrap();
                        let (r, _) = s.process_record(t, &b[..n]);
                        assert_eq!(r.map_err(|e| e.code), Ok(RKTLS_OK));
                        n
                    } else {
                        let (r, n) = s.read(&mut b).unwrap();
                        assert_eq!(r, RKTLS_OK);
                        n
                    };
                    write_all(s, b"k").unwrap();
                    (n, s.key_usage().unwrap().1)
                },
                move |c| {
                    for _ in 0..40 {
                        write_all(c, b"x").unwrap();
                    }
                    tx.send(()).unwrap();
                    assert_eq!(read_n(c, 1).unwrap(), b"k");
                },
            );
            assert_eq!(
                n, 40,
                "one read took every record (event style {event_style})"
            );
            assert_eq!(records, 40, "records counted (event style {event_style})");
        }
    }

    #[test]
    fn key_update_the_kernel_refuses_ends_with_its_own_code_and_an_alert() {
        let both = kernel(true, RKTLS_KTLS_TX | RKTLS_KTLS_RX, 0);
        let ((got, end, msg, sent), (cli, alert)) = run(
            &opts(0x1301),
            both,
            both,
            (None, None),
            |s| {
                let fd = s.raw_fd();
                crate::sys::fault::inject(crate::sys::fault::Op::TlsRx(fd), libc::EINVAL);
                let mut got = Vec::new();
                let mut b = [0u8; 100];
                let (end, msg) = loop {
                    match s.read(&mut b) {
                        Ok((RKTLS_OK, n)) => got.extend_from_slice(&b[..n]),
                        Ok((r, _)) => break (Ok(r), String::new()),
                        Err(e) => break (Err(e.code), e.msg),
                    }
                };
                (got, end, msg, s.alert_sent())
            },
            |c| {
                write_all(c, b"before").unwrap();
                assert_eq!(c.refresh_keys(false).unwrap(), RKTLS_OK);
                let mut b = [0u8; 100];
                let r = c.read(&mut b).map(|r| r.0).map_err(|e| e.code);
                (r, c.alert_received())
            },
        );
        assert_eq!(got, b"before", "data before the update delivered");
        assert_eq!(end, Err(RKTLS_ERR_KTLS_REKEY_REFUSED));
        assert!(
            msg.contains("setsockopt(SOL_TLS, TLS_RX)") && msg.contains("os error 22"),
            "{msg}"
        );
        assert_eq!(sent, Some(80));
        assert_eq!((cli, alert), (Err(RKTLS_ERR_ALERT_RECEIVED), Some(80)));
    }
}
