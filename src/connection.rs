//! A TLS connection, server or client, with the record layer in userspace.
//!
//! Driven by rustls' unbuffered API, the only one that can later become a
//! kernel connection. Two I/O styles share one state machine:
//! - fd mode (`rktls_connection_set_fd`): rktls reads and writes the
//!   caller's socket, blocking or not; EAGAIN becomes want-read/want-write;
//! - buffer mode (the default): the caller feeds received TLS bytes and
//!   takes TLS bytes to send.
//!
//! In fd mode every read during the handshake stops at a TLS record
//! boundary, so when the handshake completes nothing past its last record
//! has been taken from the socket and the kernel can take over there.
//!
//! A fatal error is sticky. Its alert always leaves before the error is
//! returned: until the alert is written (fd mode) or taken (buffer mode),
//! calls return want-write.

use std::collections::VecDeque;
use std::ffi::c_char;
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::{CommonState, HandshakeKind};

use crate::alert;
use crate::config::{rktls_client_config, rktls_server_config};
use crate::ffi::{
    arc_clone, box_into_ptr, box_mut, box_ref, box_take, copy_str_out, cstr, guard, guard_value,
    out, slice, slice_mut, Boxed, Handle,
};
use crate::ktls::{self, rktls_ktls_mode};
use crate::offload::{self, Event, Offload};
use crate::record::{self, Opener, Sealer};
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::sys;

mod reneg;

/// Largest TLS record on the wire: header plus 2^14 + 2048 bytes.
pub(crate) const MAX_RECORD: usize = 5 + 16384 + 2048;
/// Received TLS bytes held at most.
const IN_CAP: usize = 2 * MAX_RECORD;
/// Encrypted bytes queued before writes report want-write.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Plaintext accepted by one write call.
const MAX_WRITE: usize = 64 * 1024;

enum Tls {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
    /// The record layer is in the kernel; rustls keeps only what key
    /// updates and session tickets need.
    Kernel(Offload),
    /// A conversion to the kernel failed half-way: nothing is left.
    Gone,
}

/// What the next record on an offloaded connection was.
enum Rec {
    WouldBlock,
    /// End of file without close_notify.
    Eof,
    /// Application data of this length is in the caller's buffer.
    Data(usize),
    /// Application data went to the plaintext queue.
    Queued,
    Control(u8, Vec<u8>),
    /// Unusable (failed to decrypt, too long, cut short): the error code,
    /// the alert it deserves, and why.
    Bad(rktls_result, Option<u8>, &'static str),
}

/// What the handshake negotiated, kept when rustls' state is released.
struct Negotiated {
    version: u16,
    suite: u16,
    alpn: Option<Vec<u8>>,
    resumed: bool,
    peer_certs: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

/// Lets one generic driver serve both sides.
trait Process {
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
enum Action<'a> {
    None,
    Encrypt(&'a [u8]),
    CloseNotify,
    /// TLS 1.3 KeyUpdate (rustls asks the peer to update too).
    RefreshKeys,
}

/// The outcome of one rustls state.
enum Step {
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
struct Buffers {
    incoming: Vec<u8>,
    outgoing: Vec<u8>,
    out_pos: usize,
    plain: Vec<u8>,
    plain_pos: usize,
    /// A ChangeCipherSpec record was queued (TLS 1.2: encrypted from here).
    sent_ccs: bool,
}

/// Whether a run of whole records contains a ChangeCipherSpec.
fn has_ccs(mut records: &[u8]) -> bool {
    while records.len() >= 5 {
        if records[0] == 20 {
            return true;
        }
        let n = 5 + u16::from_be_bytes([records[3], records[4]]) as usize;
        records = &records[n.min(records.len())..];
    }
    false
}

/// Append to `out` through `f`, growing to the size `f` asks for.
fn append_with(
    out: &mut Vec<u8>,
    mut guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    let start = out.len();
    loop {
        out.resize(start + guess, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(need)) if need > guess => guess = need,
            Err(_) => {
                out.truncate(start);
                return Err(());
            }
        }
    }
}

fn encrypt<D>(
    wt: &mut WriteTraffic<'_, D>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let guess = data.len() + (data.len() / 16384 + 1) * 64;
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
fn step<C: Process>(conn: &mut C, b: &mut Buffers, act: &mut Action<'_>) -> Step {
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
    b.incoming.drain(..discard);
    out
}

/// Bytes still needed to complete the last (partial) TLS record in `buf`
/// (a whole header's worth when it ends on a record boundary).
pub(crate) fn record_bytes_missing(buf: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        let rest = buf.len() - pos;
        if rest < 5 {
            return 5 - rest;
        }
        let len = 5 + u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
        if rest < len {
            return len - rest;
        }
        pos += len;
    }
}

enum Fill {
    Got,
    Eof,
    WouldBlock,
}

pub(crate) struct Connection {
    tls: Tls,
    b: Buffers,
    fd: RawFd,
    /// Transport end of file seen.
    eof: bool,
    /// The peer's close_notify was received.
    peer_closed: bool,
    sent_close_notify: bool,
    /// Sticky fatal error.
    error: Option<Error>,
    alert_received: Option<u8>,
    alert_sent: Option<u8>,
    errno: i32,
    server_name: Option<String>,
    /// What the certificate resolver was last shown of a ClientHello.
    seen_hello: Option<Box<crate::hello::Hello>>,
    /// Keep record-exact reads after the handshake (kTLS may take over).
    exact_reads_always: bool,
    ktls_mode: rktls_ktls_mode,
    offload_opts: offload::Options,
    /// Control records (and TX key changes) still to send after the offload.
    ctl_out: VecDeque<Event>,
    /// The kernel conversion was attempted (it is tried once).
    ktls_tried: bool,
    /// Set once the record layer is in the kernel.
    negotiated: Option<Negotiated>,
    /// Whether any I/O happened yet (an fd may be set only before).
    started: bool,
    /// Client: the server's HelloRequest was refused with a warning and
    /// it has sent no application data since (see `renegotiation_ended`).
    reneg_refused: bool,
    /// Client: answer a HelloRequest with a fatal alert instead.
    reneg_fail_fast: bool,
}

/// A TLS connection. Box handle: used by one thread at a time, but may move
/// between threads; freed with `rktls_connection_free()`.
pub struct rktls_connection {
    _private: [u8; 0],
}

impl Handle for rktls_connection {
    type Rust = Connection;
    type Ownership = Boxed;
}

impl Connection {
    fn new(tls: Tls) -> Self {
        Connection {
            tls,
            b: Buffers::default(),
            fd: -1,
            eof: false,
            peer_closed: false,
            sent_close_notify: false,
            error: None,
            alert_received: None,
            alert_sent: None,
            errno: 0,
            server_name: None,
            seen_hello: None,
            exact_reads_always: false,
            ktls_mode: rktls_ktls_mode::RKTLS_KTLS_OFF,
            offload_opts: offload::Options::default(),
            ctl_out: VecDeque::new(),
            ktls_tried: false,
            negotiated: None,
            started: false,
            reneg_refused: false,
            reneg_fail_fast: false,
        }
    }

    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, Error> {
        Ok(Self::new(Tls::Server(UnbufferedServerConnection::new(
            config,
        )?)))
    }

    /// A server connection that continues from a ClientHello an acceptor
    /// already read: `hello` (every byte received so far) is processed now,
    /// with `config`, exactly as the direct path would have processed it.
    /// On failure the error is returned with the connection, whose queued
    /// output is the alert for the peer.
    pub(crate) fn from_hello(
        config: Arc<rustls::ServerConfig>,
        hello: Vec<u8>,
        fd: RawFd,
        server_name: Option<String>,
    ) -> Result<Self, (Error, Option<Box<Self>>)> {
        // Only a config rustls refuses fails here: no alert is owed.
        let mut c = Self::server(config).map_err(|e| (e, None))?;
        c.server_name = server_name;
        c.b.incoming = hello;
        c.fd = fd;
        c.started = true;
        match c.pump(&mut Action::None) {
            Ok(()) => Ok(c),
            Err(e) => Err((e, Some(Box::new(c)))),
        }
    }

    /// The ClientHello the certificate resolver was shown, if any yet.
    pub(crate) fn take_seen_hello(&mut self) -> Option<crate::hello::Hello> {
        self.seen_hello.take().map(|b| *b)
    }

    /// Process buffered input (buffer mode), for the acceptor's probe.
    pub(crate) fn process(&mut self) -> Result<(), Error> {
        self.pump(&mut Action::None)
    }

    /// Take every queued TLS byte not yet sent (the alert, after a failure).
    pub(crate) fn take_all_out(&mut self) -> Vec<u8> {
        let v = self.b.outgoing.split_off(self.b.out_pos);
        self.b.outgoing.clear();
        self.b.out_pos = 0;
        v
    }

    pub(crate) fn alert_sent(&self) -> Option<u8> {
        self.alert_sent
    }

    pub(crate) fn alert_received(&self) -> Option<u8> {
        self.alert_received
    }

    pub(crate) fn client(config: Arc<rustls::ClientConfig>, name: &str) -> Result<Self, Error> {
        let sn = ServerName::try_from(name.to_string()).map_err(|e| {
            Error::new(
                RKTLS_ERR_CONFIG_SERVER_NAME,
                format!("invalid server name {name:?}: {e}"),
            )
        })?;
        let mut c = Self::new(Tls::Client(UnbufferedClientConnection::new(config, sn)?));
        c.server_name = Some(name.to_string());
        Ok(c)
    }

    /// rustls' state, while the record layer is in userspace.
    fn common(&self) -> Option<&CommonState> {
        match &self.tls {
            Tls::Server(c) => Some(c),
            Tls::Client(c) => Some(c),
            Tls::Kernel(_) | Tls::Gone => None,
        }
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.common().is_some_and(|c| c.is_handshaking())
    }

    fn in_kernel(&self) -> bool {
        matches!(self.tls, Tls::Kernel(_))
    }

    pub(crate) fn protocol_version(&self) -> u16 {
        match (&self.negotiated, self.common()) {
            (Some(n), _) => n.version,
            (None, Some(c)) => c.protocol_version().map_or(0, u16::from),
            _ => 0,
        }
    }

    pub(crate) fn cipher_suite(&self) -> u16 {
        match (&self.negotiated, self.common()) {
            (Some(n), _) => n.suite,
            (None, Some(c)) => c
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            _ => 0,
        }
    }

    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        match (&self.negotiated, self.common()) {
            (Some(n), _) => n.alpn.as_deref(),
            (None, Some(c)) => c.alpn_protocol(),
            _ => None,
        }
    }

    pub(crate) fn is_resumed(&self) -> bool {
        match (&self.negotiated, self.common()) {
            (Some(n), _) => n.resumed,
            (None, Some(c)) => c.handshake_kind() == Some(HandshakeKind::Resumed),
            _ => false,
        }
    }

    pub(crate) fn peer_certs(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match (&self.negotiated, self.common()) {
            (Some(n), _) => n.peer_certs.as_deref(),
            (None, Some(c)) => c.peer_certificates(),
            _ => None,
        }
    }

    pub(crate) fn pending_out(&self) -> usize {
        self.b.outgoing.len() - self.b.out_pos
    }

    fn plain_available(&self) -> usize {
        self.b.plain.len() - self.b.plain_pos
    }

    /// Move decrypted data already queued into `buf`; how much.
    fn take_plain(&mut self, buf: &mut [u8]) -> usize {
        let n = self.plain_available().min(buf.len());
        let p = self.b.plain_pos;
        buf[..n].copy_from_slice(&self.b.plain[p..p + n]);
        self.b.plain_pos += n;
        if self.b.plain_pos == self.b.plain.len() {
            self.b.plain.clear();
            self.b.plain_pos = 0;
        }
        n
    }

    fn step(&mut self, act: &mut Action<'_>) -> Step {
        // Renegotiation is caught before rustls sees its record. Records
        // before it are processed first (their data is read first).
        let held = match self.renegotiation_record() {
            Some(0) if !self.rustls_has_output() => match self.renegotiation_started() {
                Some(end) => return end,
                None => None,
            },
            // (At 0: rustls first hands out what it has queued.)
            Some(at) => Some(self.b.incoming.split_off(at)),
            None => None,
        };
        let (plain_before, in_before) = (self.b.plain.len(), self.b.incoming.len());
        let s = self.step_rustls(act);
        if self.reneg_refused && self.b.plain.len() > plain_before {
            log::info!("the server carried on after the refused renegotiation");
            self.reneg_refused = false;
        }
        match held {
            Some(rest) => {
                self.b.incoming.extend_from_slice(&rest);
                // rustls took records before it: go on to it.
                match s {
                    Step::Quiet if in_before > self.b.incoming.len() - rest.len() => Step::Progress,
                    s => s,
                }
            }
            None => s,
        }
    }

    fn step_rustls(&mut self, act: &mut Action<'_>) -> Step {
        match &mut self.tls {
            Tls::Kernel(_) | Tls::Gone => Step::Quiet,
            Tls::Server(c) => {
                let s = step(c, &mut self.b, act);
                // The certificate resolver saw a ClientHello: keep its SNI.
                if let Some(h) = crate::hello::take_seen() {
                    self.server_name.clone_from(&h.server_name);
                    self.seen_hello = Some(Box::new(h));
                }
                s
            }
            Tls::Client(c) => step(c, &mut self.b, act),
        }
    }

    /// Run rustls over the buffered input until nothing more can happen.
    /// `act` is performed once rustls allows writing.
    fn pump(&mut self, act: &mut Action<'_>) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        loop {
            match self.step(act) {
                Step::Progress => {}
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

    /// Record a fatal TLS error and collect the alert rustls queues for it.
    fn fail(&mut self, e: rustls::Error) -> Error {
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
        if self.b.outgoing.len() == before && self.plaintext_alert_possible() {
            // rustls closes silently on a few errors (deframing, a TLS 1.2
            // key that cannot sign). Until records are encrypted a
            // plaintext alert is still possible, and the peer is owed one.
            if let Some(wire) = alert::plaintext_for_error(&e) {
                self.b.outgoing.extend_from_slice(&wire);
            }
        }
        if let rustls::Error::AlertReceived(d) = &e {
            self.alert_received = Some(u8::from(*d));
        }
        let sent = &self.b.outgoing[before..];
        if !sent.is_empty() {
            self.alert_sent = Some(match alert::parse_plain_alert(sent) {
                Some((_, desc)) => desc,
                None => u8::from(alert::for_error(&e)),
            });
        }
        let mut err = Error::from(e);
        if let Some(d) = self.alert_sent {
            err.msg.push_str(&format!(
                " (sent alert {})",
                alert::name(d).trim_end_matches('\0')
            ));
        }
        if let Some(d) = self.alert_received {
            err.msg.push_str(&format!(
                " (received alert {})",
                alert::name(d).trim_end_matches('\0')
            ));
        }
        if let (true, Some(d)) = (self.reneg_refused, self.alert_received) {
            err = crate::result::renegotiation_requested(&format!(
                "then sent the fatal alert {}",
                alert::name(d).trim_end_matches('\0')
            ));
        }
        log::debug!("connection failed: {}", err.msg);
        self.error = Some(err.clone());
        err
    }

    /// Whether our records still go out in plaintext: before a suite is
    /// chosen, or in TLS 1.2 before our ChangeCipherSpec.
    fn plaintext_alert_possible(&self) -> bool {
        let Some(c) = self.common() else {
            return false;
        };
        c.negotiated_cipher_suite().is_none()
            || (c.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) && !self.b.sent_ccs)
    }

    /// A fatal error is returned only once its alert has left.
    fn deliver_error(&mut self) -> Result<rktls_result, Error> {
        let err = self.error.clone().expect("deliver_error without error");
        if self.in_kernel() {
            return Err(err);
        }
        match self.flush_out() {
            Ok(false) => Ok(RKTLS_WANT_WRITE),
            // Sent, or the peer is gone: either way, report the cause.
            Ok(true) | Err(_) => Err(err),
        }
    }

    /// Send queued TLS bytes. Ok(true) when none is left.
    fn flush_out(&mut self) -> Result<bool, Error> {
        if self.fd < 0 {
            return Ok(self.pending_out() == 0);
        }
        self.started = true;
        while self.pending_out() > 0 {
            match sys::send(self.fd, &self.b.outgoing[self.b.out_pos..]) {
                Ok(n) => self.b.out_pos += n,
                Err(e) if sys::would_block(&e) => return Ok(false),
                Err(e) => {
                    self.errno = e.raw_os_error().unwrap_or(0);
                    let why = format!("then reset the connection ({e})");
                    return Err(self.renegotiation_ended(&why).unwrap_or(Error::io(&e)));
                }
            }
        }
        self.b.outgoing.clear();
        self.b.out_pos = 0;
        Ok(true)
    }

    fn exact_reads(&self) -> bool {
        self.exact_reads_always || self.is_handshaking()
    }

    /// Read from the fd into the incoming buffer (fd mode only).
    fn fill_in(&mut self) -> Result<Fill, Error> {
        self.fill(false)
    }

    /// As `fill_in`, but never waits, even on a blocking fd.
    fn fill_in_now(&mut self) -> Result<Fill, Error> {
        self.fill(true)
    }

    fn fill(&mut self, dont_wait: bool) -> Result<Fill, Error> {
        if self.fd < 0 {
            return Ok(Fill::WouldBlock);
        }
        if self.eof {
            return Ok(Fill::Eof);
        }
        self.started = true;
        let room = IN_CAP.saturating_sub(self.b.incoming.len());
        let want = if self.exact_reads() {
            record_bytes_missing(&self.b.incoming).min(room)
        } else {
            room
        };
        if want == 0 {
            return Err(Error::new(RKTLS_ERR_INTERNAL, "incoming buffer full"));
        }
        let start = self.b.incoming.len();
        self.b.incoming.resize(start + want, 0);
        let r = if dont_wait {
            sys::recv_now(self.fd, &mut self.b.incoming[start..])
        } else {
            sys::read(self.fd, &mut self.b.incoming[start..])
        };
        match r {
            Ok(0) => {
                self.b.incoming.truncate(start);
                self.eof = true;
                Ok(Fill::Eof)
            }
            Ok(n) => {
                self.b.incoming.truncate(start + n);
                Ok(Fill::Got)
            }
            Err(e) => {
                self.b.incoming.truncate(start);
                if sys::would_block(&e) {
                    Ok(Fill::WouldBlock)
                } else {
                    self.errno = e.raw_os_error().unwrap_or(0);
                    let why = format!("then reset the connection ({e})");
                    Err(self.renegotiation_ended(&why).unwrap_or(Error::io(&e)))
                }
            }
        }
    }

    pub(crate) fn set_fd(&mut self, fd: RawFd) -> Result<(), Error> {
        if fd < 0 {
            return Err(Error::invalid("fd must be >= 0"));
        }
        if self.started || !self.b.incoming.is_empty() || self.pending_out() > 0 {
            return Err(Error::state("an fd can only be set before any I/O"));
        }
        self.fd = fd;
        Ok(())
    }

    pub(crate) fn handshake(&mut self) -> Result<rktls_result, Error> {
        if self.in_kernel() {
            return match &self.error {
                Some(e) => Err(e.clone()),
                None => Ok(RKTLS_OK),
            };
        }
        loop {
            if self.error.is_some() {
                return self.deliver_error();
            }
            if self.pump(&mut Action::None).is_err() {
                continue;
            }
            // Before sending, take in whatever of the peer's flight has
            // already arrived: then our answer leaves in one write, not as
            // small pieces that Nagle's algorithm holds back for an ACK.
            if self.pending_out() > 0 && self.fd >= 0 && !self.eof && self.is_handshaking() {
                if let Fill::Got = self.fill_in_now()? {
                    continue;
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
            if self.plain_available() > 0 || self.peer_closed {
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
    fn before_send(&mut self, what: &str) -> Result<Option<rktls_result>, Error> {
        if self.error.is_some() {
            return self.deliver_error().map(Some);
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
    fn room_to_send(&mut self) -> Result<bool, Error> {
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
        self.flush_out()?;
        Ok((RKTLS_OK, n))
    }

    pub(crate) fn flush(&mut self) -> Result<rktls_result, Error> {
        if self.error.is_some() {
            return self.deliver_error();
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
        }
        self.flush()
    }

    /// The kernel conversion is still to be attempted.
    fn offload_pending(&self) -> bool {
        self.ktls_mode != rktls_ktls_mode::RKTLS_KTLS_OFF
            && !self.ktls_tried
            && self.fd >= 0
            && self.error.is_none()
    }

    fn needs_handshake(&self) -> bool {
        self.is_handshaking() || self.offload_pending()
    }

    pub(crate) fn set_ktls_mode(&mut self, mode: rktls_ktls_mode, opts: offload::Options) {
        self.ktls_mode = mode;
        self.offload_opts = opts;
        // The kernel must start exactly at a record boundary.
        self.exact_reads_always = mode != rktls_ktls_mode::RKTLS_KTLS_OFF;
    }

    fn io_error(&mut self, e: &std::io::Error) -> Error {
        self.errno = e.raw_os_error().unwrap_or(0);
        Error::io(e)
    }

    /// Move the record layer into the kernel, once, after the handshake,
    /// if the mode asks for it. Nothing is lost: records already received
    /// are processed first (their plaintext stays queued for `read`), a
    /// partial record is completed, and queued output is sent.
    fn maybe_offload(&mut self) -> Result<rktls_result, Error> {
        if !self.offload_pending() {
            return Ok(RKTLS_OK);
        }
        loop {
            if self.pump(&mut Action::None).is_err() {
                return self.deliver_error();
            }
            if self.b.incoming.is_empty() {
                break;
            }
            if self.eof {
                self.error = Some(Error::new(
                    RKTLS_ERR_TRUNCATED,
                    "connection closed in the middle of a record",
                ));
                return self.deliver_error();
            }
            match self.fill_in()? {
                Fill::Got | Fill::Eof => {}
                Fill::WouldBlock => return Ok(RKTLS_WANT_READ),
            }
        }
        if !self.flush_out()? {
            return Ok(RKTLS_WANT_WRITE);
        }
        self.ktls_tried = true;
        let Some(c) = self.common() else {
            return Ok(RKTLS_OK);
        };
        let Some(suite) = c.negotiated_cipher_suite() else {
            return Err(Error::new(
                RKTLS_ERR_INTERNAL,
                "no suite after the handshake",
            ));
        };
        if let Err(u) = ktls::supported(suite) {
            return self.ktls_fallback(u.message());
        }
        if let Err(e) = ktls::attach_ulp(self.fd) {
            return self.ktls_fallback(&format!("setsockopt TCP_ULP \"tls\" failed: {e}"));
        }
        // Which directions go to the kernel; TLS 1.3 RX only where new
        // keys can follow a KeyUpdate, if the config asks for that.
        let dirs = self.offload_opts.dirs;
        let tls13 = suite.tls13().is_some();
        let rekey = ktls::can_rekey();
        let tx_kernel = dirs & offload::RKTLS_KTLS_TX != 0;
        let rx_kernel = dirs & offload::RKTLS_KTLS_RX != 0
            && !(tls13 && dirs & offload::RKTLS_KTLS_RX_NEEDS_REKEY != 0 && !rekey);
        if !tx_kernel && !rx_kernel {
            return self.ktls_fallback(
                "TLS 1.3 RX needs a kernel that can rekey, and TX is not to be offloaded",
            );
        }
        // From here there is no way back to userspace.
        let Some(converted) = self.take_secrets() else {
            return Ok(RKTLS_OK);
        };
        let fd = self.fd;
        let (key_limit, fail_fast) = (self.offload_opts.key_limit, self.reneg_fail_fast);
        let result = converted
            .map_err(|e| {
                Error::new(
                    RKTLS_ERR_KTLS_UNAVAILABLE,
                    format!("rustls could not hand the connection to the kernel: {e}"),
                )
            })
            .and_then(|(secrets, k)| {
                let tx = if tx_kernel {
                    ktls::install(fd, libc::TLS_TX, suite, secrets.tx)?;
                    offload::Tx::Kernel
                } else {
                    offload::Tx::User(Sealer::new(suite, secrets.tx))
                };
                let rx = if rx_kernel {
                    ktls::install(fd, libc::TLS_RX, suite, secrets.rx)?;
                    offload::Rx::Kernel
                } else {
                    offload::Rx::User(Opener::new(suite, secrets.rx))
                };
                Ok(Offload::new(k, suite, tx, rx, rekey, key_limit, fail_fast))
            });
        match result {
            Ok(o) => {
                log::debug!(
                    "record layer moved into the kernel ({})",
                    match (tx_kernel, rx_kernel) {
                        (true, true) => "TX and RX",
                        (true, false) => "TX; RX stays in userspace",
                        _ => "RX; TX stays in userspace",
                    }
                );
                self.tls = Tls::Kernel(o);
                // rustls' handshake state went with the conversion; release
                // the record buffers too (undelivered plaintext stays).
                self.b.incoming = Vec::new();
                self.b.outgoing = Vec::new();
                self.b.out_pos = 0;
                Ok(RKTLS_OK)
            }
            Err(e) => {
                log::error!(
                    "kTLS conversion failed past the point of no return: {}",
                    e.msg
                );
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Take rustls' traffic secrets (with sequence numbers) and what is left
    /// of it for key updates and tickets; rustls' record layer is gone
    /// afterwards, and what the handshake negotiated is kept for the
    /// getters. `None` when the record layer is not in userspace.
    fn take_secrets(
        &mut self,
    ) -> Option<Result<(rustls::ExtractedSecrets, offload::Kc), rustls::Error>> {
        let negotiated = Negotiated {
            version: self.protocol_version(),
            suite: self.cipher_suite(),
            alpn: self.alpn().map(<[u8]>::to_vec),
            resumed: self.is_resumed(),
            peer_certs: self.peer_certs().map(<[_]>::to_vec),
        };
        let taken = match std::mem::replace(&mut self.tls, Tls::Gone) {
            Tls::Server(c) => c
                .dangerous_into_kernel_connection()
                .map(|(s, k)| (s, offload::Kc::Server(k))),
            Tls::Client(c) => c
                .dangerous_into_kernel_connection()
                .map(|(s, k)| (s, offload::Kc::Client(k))),
            other => {
                self.tls = other;
                return None;
            }
        };
        self.negotiated = Some(negotiated);
        Some(taken)
    }

    /// The kernel cannot take the connection: stay in userspace (prefer),
    /// or end it with a close_notify (require).
    fn ktls_fallback(&mut self, why: &str) -> Result<rktls_result, Error> {
        if self.ktls_mode == rktls_ktls_mode::RKTLS_KTLS_PREFER {
            log::debug!("kTLS not used for this connection: {why}");
            return Ok(RKTLS_OK);
        }
        let _ = self.pump(&mut Action::CloseNotify);
        self.sent_close_notify = true;
        let _ = self.flush_out();
        let e = Error::new(
            RKTLS_ERR_KTLS_UNAVAILABLE,
            format!("kernel TLS required but unavailable: {why}"),
        );
        self.error = Some(e.clone());
        Err(e)
    }

    pub(crate) fn ktls_tx(&self) -> bool {
        matches!(&self.tls, Tls::Kernel(o) if o.tx_in_kernel())
    }

    pub(crate) fn ktls_rx(&self) -> bool {
        matches!(&self.tls, Tls::Kernel(o) if o.rx_in_kernel())
    }

    fn offload(&mut self) -> &mut Offload {
        match &mut self.tls {
            Tls::Kernel(o) => o,
            _ => unreachable!("offload state outside the kernel mode"),
        }
    }

    /// Handle events from the offload state machine (`rktls_connection_read`
    /// style): data is queued for `read`, control records for sending.
    fn apply_events(&mut self, ev: Vec<Event>) {
        for e in ev {
            match e {
                Event::AppData(d) => self.b.plain.extend_from_slice(&d),
                Event::PeerClosed => self.peer_closed = true,
                e @ (Event::SendControl(..) | Event::TxKeyUpdated) => self.ctl_out.push_back(e),
                Event::RenegotiationRequested => self.reneg_refused = true,
                Event::Closed | Event::RxKeyUpdated | Event::SessionTicket => {}
            }
        }
    }

    /// Send queued control records in order, switching TX keys where a
    /// KeyUpdate asked for it. Ok(true) when nothing is left to send.
    fn flush_control(&mut self) -> Result<bool, Error> {
        let fd = self.fd;
        loop {
            let tx_kernel = self.offload().tx_in_kernel();
            if !tx_kernel && !self.flush_out()? {
                return Ok(false);
            }
            let Some(front) = self.ctl_out.front() else {
                return Ok(true);
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
                        let o = self.offload();
                        let mut rec = Vec::new();
                        match &mut o.tx {
                            offload::Tx::User(s) => s.seal(t, &p, &mut rec)?,
                            offload::Tx::Kernel => unreachable!(),
                        }
                        self.b.outgoing.extend_from_slice(&rec);
                    }
                    self.offload().count_tx(p.len());
                    self.note_control_sent(t, &p);
                }
                Event::TxKeyUpdated => self.offload().commit_tx(fd)?,
                _ => {}
            }
            self.ctl_out.pop_front();
        }
    }

    /// Keep what a sent control record tells: close_notify, fatal alert.
    fn note_control_sent(&mut self, typ: u8, payload: &[u8]) {
        match (typ, payload) {
            (ktls::CT_ALERT, [_, 0]) => self.sent_close_notify = true,
            (ktls::CT_ALERT, [2, desc]) => self.alert_sent = Some(*desc),
            _ => {}
        }
    }

    /// Make `err` the connection's sticky error, unless one is already
    /// there; returns the one that stays.
    fn sticky(&mut self, err: Error) -> Error {
        self.error.get_or_insert(err).clone()
    }

    /// End an offloaded connection with `err`; its alert (or close_notify)
    /// is sent best effort.
    fn offload_fail(&mut self, err: Error, ev: Vec<Event>) -> Error {
        self.apply_events(ev);
        let _ = self.flush_control();
        self.sticky(err)
    }

    /// End cleanly: close_notify, then report `err` (key limits, rekey).
    fn offload_close(&mut self, err: Error) -> Error {
        let ev = if self.sent_close_notify {
            vec![]
        } else {
            vec![Event::SendControl(ktls::CT_ALERT, vec![1, 0])]
        };
        log::warn!("{}", err.msg);
        self.offload_fail(err, ev)
    }

    /// An I/O failure on an offloaded socket (sticky). After a refused
    /// renegotiation, a reset is the server's answer to it.
    fn offload_io_error(&mut self, e: &std::io::Error) -> Error {
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
    fn offload_error(&mut self, f: offload::Fail) -> Error {
        let Some(desc) = f.received else {
            return f.err;
        };
        self.alert_received = Some(desc);
        if !self.reneg_refused {
            return f.err;
        }
        crate::result::renegotiation_requested(&format!(
            "then sent the fatal alert {}",
            alert::name(desc).trim_end_matches('\0')
        ))
    }

    /// One control record received: run the state machine on it.
    fn offload_control(&mut self, typ: u8, payload: &[u8]) -> Result<(), Error> {
        let fd = self.fd;
        let sent_cn = self.sent_close_notify;
        let mut ev = Vec::new();
        let r = self.offload().on_record(fd, typ, payload, sent_cn, &mut ev);
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

    /// Count one received application-data record against the key limit.
    fn offload_count_rx(&mut self) {
        if self.reneg_refused {
            log::info!("the server carried on after the refused renegotiation");
            self.reneg_refused = false;
        }
        let mut ev = Vec::new();
        match self.offload().count_rx(&mut ev) {
            Ok(()) => {
                self.apply_events(ev);
                let _ = self.flush_control();
            }
            Err(e) => {
                self.offload_close(e);
            }
        }
    }

    /// The next record on an offloaded connection: application data lands
    /// in `buf` (when it can take a whole record) or in the plaintext queue.
    fn next_record(&mut self, buf: &mut [u8]) -> Result<Rec, Error> {
        const RECORD: usize = 16384 + 256;
        if self.offload().rx_in_kernel() {
            let direct = buf.len() >= RECORD;
            if !direct && self.b.incoming.len() < RECORD {
                self.b.incoming.resize(RECORD, 0);
            }
            let r = if direct {
                ktls::recv_record(self.fd, buf)
            } else {
                ktls::recv_record(self.fd, &mut self.b.incoming)
            };
            let (typ, n) = match r {
                Ok(v) => v,
                Err(e) if sys::would_block(&e) => return Ok(Rec::WouldBlock),
                Err(e) if e.raw_os_error() == Some(libc::EBADMSG) => {
                    return Ok(Rec::Bad(
                        RKTLS_ERR_DECRYPT,
                        Some(20),
                        "a record failed to decrypt in the kernel",
                    ))
                }
                Err(e) if e.raw_os_error() == Some(libc::EPROTO) => {
                    return Ok(Rec::Bad(
                        RKTLS_ERR_PROTOCOL,
                        Some(80),
                        "a control message was truncated (MSG_CTRUNC)",
                    ))
                }
                Err(e) => return Err(self.offload_io_error(&e)),
            };
            if typ == ktls::CT_APPLICATION_DATA {
                if n == 0 {
                    return Ok(Rec::Eof);
                }
                if direct {
                    return Ok(Rec::Data(n));
                }
                let data = self.b.incoming[..n].to_vec();
                self.b.plain.extend_from_slice(&data);
                return Ok(Rec::Queued);
            }
            let p = if direct {
                buf[..n].to_vec()
            } else {
                self.b.incoming[..n].to_vec()
            };
            return Ok(Rec::Control(typ, p));
        }
        // RX in userspace: whole records from the socket, opened here.
        loop {
            if let Some(len) = record::whole_record(&self.b.incoming) {
                let o = match &mut self.tls {
                    Tls::Kernel(o) => o,
                    _ => unreachable!(),
                };
                let offload::Rx::User(op) = &mut o.rx else {
                    unreachable!()
                };
                let opened = op.open(&mut self.b.incoming[..len]);
                let out = match opened {
                    Ok((typ, range)) => {
                        let p = &self.b.incoming[range];
                        if typ == ktls::CT_APPLICATION_DATA {
                            let p = p.to_vec();
                            self.b.plain.extend_from_slice(&p);
                            Rec::Queued
                        } else {
                            Rec::Control(typ, p.to_vec())
                        }
                    }
                    Err(_) => Rec::Bad(
                        RKTLS_ERR_DECRYPT,
                        Some(20),
                        "a record failed to decrypt (bad record MAC)",
                    ),
                };
                self.b.incoming.drain(..len);
                return Ok(out);
            }
            if self.b.incoming.len() >= record::HEADER
                && record::HEADER
                    + u16::from_be_bytes([self.b.incoming[3], self.b.incoming[4]]) as usize
                    > MAX_RECORD
            {
                return Ok(Rec::Bad(
                    RKTLS_ERR_PROTOCOL,
                    Some(22),
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
                // renegotiation.
                Err(e) => return Err(self.sticky(e)),
            }
        }
    }

    /// Read on an offloaded connection, handling control records.
    fn kernel_read(&mut self, buf: &mut [u8]) -> Result<(rktls_result, usize), Error> {
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
                    self.offload_count_rx();
                    return Ok((RKTLS_OK, n));
                }
                Rec::Queued => {
                    self.offload_count_rx();
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
                    let f = offload::fatal(&mut ev, code, alert, msg);
                    return Err(self.offload_fail(f.err, ev));
                }
            }
        }
    }

    /// Checks before sending application data on an offloaded connection:
    /// queued control records first, keys refreshed before their limit.
    /// `Ok(0)`: want-write; otherwise how many of `want` bytes may go now.
    fn offload_tx_room(&mut self, want: usize) -> Result<usize, Error> {
        if !self.flush_control()? {
            return Ok(0);
        }
        if self.offload().update_owed {
            return Err(self.offload_close(Error::new(
                RKTLS_ERR_KTLS_NO_REKEY,
                "the peer asked for a TLS 1.3 key update, and this kernel cannot install new \
                 TX keys on an offloaded socket (Linux 6.14 or later can); nothing more can be \
                 sent on this connection",
            )));
        }
        let mut allow = self.offload().tx_allowance(want);
        if allow == 0 {
            if !self.offload().can_update_tx() {
                let tls13 = self.protocol_version() == 0x0304;
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
            self.offload().begin_tx_update(false, &mut ev)?;
            self.apply_events(ev);
            if !self.flush_control()? {
                return Ok(0);
            }
            allow = self.offload().tx_allowance(want);
        }
        Ok(allow)
    }

    /// The outcome of a send the kernel encrypts: counted against the key.
    fn kernel_sent(&mut self, r: std::io::Result<usize>) -> Result<(rktls_result, usize), Error> {
        match r {
            Ok(n) => {
                self.offload().count_tx(n);
                Ok((RKTLS_OK, n))
            }
            Err(e) if sys::would_block(&e) => Ok((RKTLS_WANT_WRITE, 0)),
            Err(e) => Err(self.offload_io_error(&e)),
        }
    }

    /// Write on an offloaded connection.
    fn kernel_write(&mut self, data: &[u8]) -> Result<(rktls_result, usize), Error> {
        let allow = self.offload_tx_room(data.len().min(MAX_WRITE))?;
        if allow == 0 {
            return Ok((RKTLS_WANT_WRITE, 0));
        }
        let data = &data[..allow];
        if self.offload().tx_in_kernel() {
            let r = sys::send(self.fd, data);
            return self.kernel_sent(r);
        }
        if !self.room_to_send()? {
            return Ok((RKTLS_WANT_WRITE, 0));
        }
        let mut rec = Vec::new();
        {
            let o = self.offload();
            let offload::Tx::User(s) = &mut o.tx else {
                unreachable!()
            };
            for chunk in data.chunks(record::MAX_FRAGMENT) {
                s.seal(ktls::CT_APPLICATION_DATA, chunk, &mut rec)?;
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
    fn kernel_shutdown(&mut self) -> Result<rktls_result, Error> {
        if !self.sent_close_notify
            && !self
                .ctl_out
                .iter()
                .any(|e| matches!(e, Event::SendControl(ktls::CT_ALERT, p) if p[..] == [1, 0]))
        {
            self.ctl_out
                .push_back(Event::SendControl(ktls::CT_ALERT, vec![1, 0]));
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
        if typ == ktls::CT_APPLICATION_DATA {
            self.reneg_refused = false;
            if let Err(e) = o.count_rx(&mut ev) {
                if !self.sent_close_notify {
                    ev.push(Event::SendControl(ktls::CT_ALERT, vec![1, 0]));
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

    /// Update our TLS 1.3 traffic keys (`rktls_connection_refresh_keys`).
    pub(crate) fn refresh_keys(&mut self, request_peer: bool) -> Result<rktls_result, Error> {
        if let Some(r) = self.before_send("refresh_keys")? {
            return Ok(r);
        }
        if self.protocol_version() != 0x0304 {
            return Err(Error::state("key updates need TLS 1.3"));
        }
        if self.in_kernel() {
            let mut ev = Vec::new();
            self.offload().begin_tx_update(request_peer, &mut ev)?;
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

    #[cfg(test)]
    pub(crate) fn renegotiation_fail_fast_for_test(&mut self, on: bool) {
        self.reneg_fail_fast = on;
        if let Tls::Kernel(o) = &mut self.tls {
            o.fail_fast = on;
        }
    }

    #[cfg(test)]
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Records sent and received with the current keys, and key updates
    /// each way (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn key_usage(&self) -> Option<(u64, u64, u64, u64)> {
        match &self.tls {
            Tls::Kernel(o) => Some((
                o.tx_records,
                o.rx_records,
                o.tx_key_updates,
                o.rx_key_updates,
            )),
            _ => None,
        }
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
        let mut chunk = vec![0u8; count.min(MAX_WRITE)];
        let n = match sys::pread(in_fd, &mut chunk, *offset) {
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

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.fd >= 0 {
            return Err(Error::state("connection does its own I/O on an fd"));
        }
        if self.eof {
            return Err(Error::state("bytes fed after end of file"));
        }
        self.started = true;
        let n = IN_CAP.saturating_sub(self.b.incoming.len()).min(data.len());
        self.b.incoming.extend_from_slice(&data[..n]);
        Ok(n)
    }

    pub(crate) fn feed_eof(&mut self) -> Result<(), Error> {
        if self.fd >= 0 {
            return Err(Error::state("connection does its own I/O on an fd"));
        }
        self.eof = true;
        Ok(())
    }

    pub(crate) fn take(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.fd >= 0 {
            return Err(Error::state("connection does its own I/O on an fd"));
        }
        self.started = true;
        let n = self.pending_out().min(buf.len());
        let p = self.b.out_pos;
        buf[..n].copy_from_slice(&self.b.outgoing[p..p + n]);
        self.b.out_pos += n;
        if self.pending_out() == 0 {
            self.b.outgoing.clear();
            self.b.out_pos = 0;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// C API.

/// Make a server connection from `config` in `*out_conn`.
///
/// The connection keeps its own reference to the config. It starts in buffer
/// mode; call `rktls_connection_set_fd()` before any I/O for fd mode. The
/// caller owns the connection and frees it with `rktls_connection_free()`.
#[no_mangle]
pub extern "C" fn rktls_server_connection_new(
    config: *const rktls_server_config,
    out_conn: *mut *mut rktls_connection,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_conn, "out_conn")? };
        let cfg = unsafe { arc_clone(config, "config")? };
        let mut c = Connection::server(cfg.rustls.clone())?;
        c.set_ktls_mode(cfg.ktls, cfg.offload);
        *o = box_into_ptr::<rktls_connection>(c);
        Ok(RKTLS_OK)
    })
}

/// Make a client connection to `server_name` (a DNS name or IP address,
/// used for SNI and certificate verification) in `*out_conn`.
///
/// As `rktls_server_connection_new()`. Errors: `RKTLS_ERR_CONFIG_SERVER_NAME`.
#[no_mangle]
pub extern "C" fn rktls_client_connection_new(
    config: *const rktls_client_config,
    server_name: *const c_char,
    out_conn: *mut *mut rktls_connection,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_conn, "out_conn")? };
        let cfg = unsafe { arc_clone(config, "config")? };
        let name = unsafe { cstr(server_name, "server_name")? };
        let mut c = Connection::client(cfg.rustls.clone(), name)?;
        c.set_ktls_mode(cfg.ktls, cfg.offload);
        c.reneg_fail_fast = cfg.reneg_fail_fast;
        *o = box_into_ptr::<rktls_connection>(c);
        Ok(RKTLS_OK)
    })
}

/// Free a connection. Does not close its fd and sends nothing: call
/// `rktls_connection_shutdown()` first for a clean close. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_connection_free(conn: *mut rktls_connection) {
    guard(|| {
        drop(unsafe { box_take(conn) });
        Ok(RKTLS_OK)
    });
}

/// Put the connection in fd mode: rktls reads and writes `fd` itself.
///
/// The fd stays owned by the caller (rktls never closes it) and may be
/// blocking or non-blocking; on a non-blocking fd calls return
/// `RKTLS_WANT_READ`/`RKTLS_WANT_WRITE` instead of blocking. Must be called
/// before any I/O (`RKTLS_ERR_WRONG_STATE` otherwise). Writes use
/// MSG_NOSIGNAL, so a reset peer gives `RKTLS_ERR_IO` (EPIPE), not SIGPIPE.
#[no_mangle]
pub extern "C" fn rktls_connection_set_fd(conn: *mut rktls_connection, fd: i32) -> rktls_result {
    guard(|| {
        unsafe { box_mut(conn, "conn")? }.set_fd(fd)?;
        Ok(RKTLS_OK)
    })
}

/// Drive the handshake. Returns `RKTLS_OK` once it is complete and all its
/// output has been sent (fd mode) or taken (buffer mode); otherwise
/// `RKTLS_WANT_READ`/`RKTLS_WANT_WRITE` (call again when ready) or an error.
///
/// On a handshake failure the alert for the peer is sent (fd mode) or left
/// to take (buffer mode, the call returns `RKTLS_WANT_WRITE` until it is
/// taken) before the error is returned; `rktls_connection_alert_sent()`
/// then says which alert it was. Reads in fd mode never go past the TLS
/// record that completes the handshake. Calling it again after completion
/// returns `RKTLS_OK`.
#[no_mangle]
pub extern "C" fn rktls_connection_handshake(conn: *mut rktls_connection) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.handshake())
}

/// Read up to `len` plaintext bytes into `buf`; `*out_n` receives the count.
///
/// Completes the handshake first if needed. Returns `RKTLS_OK` with
/// `*out_n > 0`, or with `*out_n == 0` one of: `RKTLS_WANT_READ` /
/// `RKTLS_WANT_WRITE` (call again when ready; in buffer mode feed more bytes
/// or take output), `RKTLS_CLOSED` (the peer's close_notify: all its data
/// was delivered), `RKTLS_ERR_TRUNCATED` (end of file without close_notify),
/// `RKTLS_ERR_ALERT_RECEIVED`, `RKTLS_ERR_RENEGOTIATION` (a TLS 1.2 peer's
/// renegotiation was refused and ended the connection; the error message
/// says how and what to fix), or another error. Data decrypted before an
/// error is delivered before the error.
#[no_mangle]
pub extern "C" fn rktls_connection_read(
    conn: *mut rktls_connection,
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        let buf = unsafe { slice_mut(buf, len, "buf")? };
        let (r, n) = c.read(buf)?;
        *n_out = n;
        Ok(r)
    })
}

/// Encrypt up to `len` bytes of `buf`; `*out_n` receives how many were
/// accepted (at most 64 KiB per call: loop until all are accepted).
///
/// Completes the handshake first if needed. Accepted bytes are queued and,
/// in fd mode, sent as far as the socket allows; the rest leaves with later
/// calls or `rktls_connection_flush()`. Returns `RKTLS_WANT_WRITE` with
/// `*out_n == 0` when 64 KiB or more is already queued.
#[no_mangle]
pub extern "C" fn rktls_connection_write(
    conn: *mut rktls_connection,
    buf: *const u8,
    len: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        let data = unsafe { slice(buf, len, "buf")? };
        let (r, n) = c.write(data)?;
        *n_out = n;
        Ok(r)
    })
}

/// Send all queued TLS bytes (fd mode). Returns `RKTLS_OK` when nothing is
/// left queued, `RKTLS_WANT_WRITE` otherwise (in buffer mode: take them with
/// `rktls_connection_take_tls()`).
#[no_mangle]
pub extern "C" fn rktls_connection_flush(conn: *mut rktls_connection) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.flush())
}

/// Send close_notify (once) and flush. Returns `RKTLS_OK` when it has been
/// sent (fd mode) or queued and taken (buffer mode), `RKTLS_WANT_WRITE`
/// otherwise. Writing afterwards is `RKTLS_ERR_WRONG_STATE`; reading still
/// works until the peer's close_notify. Does not close the fd.
#[no_mangle]
pub extern "C" fn rktls_connection_shutdown(conn: *mut rktls_connection) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.shutdown())
}

/// Buffer mode: give rktls `len` TLS bytes received from the peer;
/// `*consumed` receives how many were taken (fewer when its buffer, about
/// 36 KiB, is full: call `rktls_connection_read()` or `_handshake()`, then
/// feed the rest). Processing happens in those calls.
/// `RKTLS_ERR_WRONG_STATE` in fd mode.
#[no_mangle]
pub extern "C" fn rktls_connection_feed_tls(
    conn: *mut rktls_connection,
    buf: *const u8,
    len: usize,
    consumed: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(consumed, "consumed")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        *n_out = c.feed(unsafe { slice(buf, len, "buf")? })?;
        Ok(RKTLS_OK)
    })
}

/// Buffer mode: tell rktls the peer's transport reached end of file. Reads
/// then end with `RKTLS_CLOSED` if close_notify came first, otherwise with
/// `RKTLS_ERR_TRUNCATED`.
#[no_mangle]
pub extern "C" fn rktls_connection_feed_eof(conn: *mut rktls_connection) -> rktls_result {
    guard(|| {
        unsafe { box_mut(conn, "conn")? }.feed_eof()?;
        Ok(RKTLS_OK)
    })
}

/// Buffer mode: copy up to `len` queued TLS bytes to send into `buf`;
/// `*out_n` receives the count (0 when nothing is queued). The caller must
/// send them to the peer in order.
#[no_mangle]
pub extern "C" fn rktls_connection_take_tls(
    conn: *mut rktls_connection,
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        *n_out = c.take(unsafe { slice_mut(buf, len, "buf")? })?;
        Ok(RKTLS_OK)
    })
}

/// Number of TLS bytes queued to send (buffer mode: to take). 0 for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_pending_tls(conn: *const rktls_connection) -> usize {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.pending_out())
    })
}

/// Whether the handshake is still in progress. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_is_handshaking(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.is_handshaking())
    })
}

/// The negotiated protocol version (0x0303 TLS 1.2, 0x0304 TLS 1.3), or 0
/// before it is known (and for NULL).
#[no_mangle]
pub extern "C" fn rktls_connection_protocol_version(conn: *const rktls_connection) -> u16 {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.protocol_version())
    })
}

/// The negotiated cipher suite's IANA id (e.g. 0x1301), or 0 before it is
/// known (and for NULL). `rktls_cipher_suite_name()` names it.
#[no_mangle]
pub extern "C" fn rktls_connection_cipher_suite(conn: *const rktls_connection) -> u16 {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.cipher_suite())
    })
}

/// The IANA name of a cipher suite id ("TLS_AES_128_GCM_SHA256"), or
/// "unknown". Static string: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_cipher_suite_name(id: u16) -> *const c_char {
    let s: &'static str = match id {
        0x1301 => "TLS_AES_128_GCM_SHA256\0",
        0x1302 => "TLS_AES_256_GCM_SHA384\0",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256\0",
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\0",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\0",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\0",
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\0",
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\0",
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256\0",
        _ => "unknown\0",
    };
    s.as_ptr().cast()
}

/// The negotiated ALPN protocol: `*proto` points into the connection (valid
/// until it is freed; not NUL-terminated) and `*len` is its length. Both are
/// NULL/0 when none was negotiated.
#[no_mangle]
pub extern "C" fn rktls_connection_alpn(
    conn: *const rktls_connection,
    proto: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        let p = unsafe { out(proto, "proto")? };
        let l = unsafe { out(len, "len")? };
        match c.alpn() {
            Some(a) => {
                *p = a.as_ptr();
                *l = a.len();
            }
            None => {
                *p = std::ptr::null();
                *l = 0;
            }
        }
        Ok(RKTLS_OK)
    })
}

/// Copy the SNI server name into `buf` (NUL-terminated; `*out_len` receives
/// its length). On a server it is the name the client asked for (empty if
/// none); on a client, the name it connects to. `RKTLS_ERR_BUFFER_TOO_SMALL`
/// sets `*out_len` to the length needed.
#[no_mangle]
pub extern "C" fn rktls_connection_server_name(
    conn: *const rktls_connection,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        unsafe { copy_str_out(c.server_name.as_deref().unwrap_or(""), buf, len, out_len) }
    })
}

/// Whether the handshake resumed an earlier session. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_is_resumed(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.is_resumed())
    })
}

/// Number of certificates the peer presented (end-entity first); 0 if none
/// or for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_peer_cert_count(conn: *const rktls_connection) -> usize {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }
            .ok()
            .and_then(|c| c.peer_certs())
            .map_or(0, <[_]>::len)
    })
}

/// The DER bytes of the peer's certificate `index` (0 is the end-entity):
/// `*der` points into the connection, valid until it is freed.
/// `RKTLS_ERR_INVALID_ARGUMENT` if `index` is out of range.
#[no_mangle]
pub extern "C" fn rktls_connection_peer_cert(
    conn: *const rktls_connection,
    index: usize,
    der: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        let d = unsafe { out(der, "der")? };
        let l = unsafe { out(len, "len")? };
        let cert = c
            .peer_certs()
            .and_then(|cs| cs.get(index))
            .ok_or_else(|| Error::invalid(format!("no peer certificate at index {index}")))?;
        *d = cert.as_ref().as_ptr();
        *l = cert.as_ref().len();
        Ok(RKTLS_OK)
    })
}

/// If the peer sent a fatal alert, store its description (see
/// `rktls_alert_description`) in `*description` and return true.
#[no_mangle]
pub extern "C" fn rktls_connection_alert_received(
    conn: *const rktls_connection,
    description: *mut u8,
) -> bool {
    guard_value(false, || {
        let Ok(c) = (unsafe { box_ref(conn, "conn") }) else {
            return false;
        };
        match (c.alert_received(), unsafe { description.as_mut() }) {
            (Some(d), Some(o)) => {
                *o = d;
                true
            }
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// If rktls sent the peer a fatal alert (after a handshake or protocol
/// error), store its description in `*description` and return true.
#[no_mangle]
pub extern "C" fn rktls_connection_alert_sent(
    conn: *const rktls_connection,
    description: *mut u8,
) -> bool {
    guard_value(false, || {
        let Ok(c) = (unsafe { box_ref(conn, "conn") }) else {
            return false;
        };
        match (c.alert_sent(), unsafe { description.as_mut() }) {
            (Some(d), Some(o)) => {
                *o = d;
                true
            }
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// errno of the last failed system call on this connection (after
/// `RKTLS_ERR_IO`), or 0.
#[no_mangle]
pub extern "C" fn rktls_connection_errno(conn: *const rktls_connection) -> i32 {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.errno)
    })
}

/// Copy the message of the connection's fatal error (which names the alert
/// sent or received) into `buf`, NUL-terminated; empty if there is none.
/// As `rktls_last_error_message()` for the buffer rules.
#[no_mangle]
pub extern "C" fn rktls_connection_error_message(
    conn: *const rktls_connection,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        let msg = c.error.as_ref().map_or("", |e| e.msg.as_str());
        unsafe { copy_str_out(msg, buf, len, out_len) }
    })
}

/// Whether the connection's record layer is in the kernel (kTLS), for
/// sending and for receiving. Once it is, `write`, `sendfile` and `splice`
/// on the fd itself are safe (the kernel encrypts); reads must still go
/// through `rktls_connection_read()`, which handles the control records
/// (alerts, session tickets) the kernel hands over. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_ktls_tx(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.ktls_tx())
    })
}

/// Whether received records are decrypted by the kernel. See
/// `rktls_connection_ktls_tx()`. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_ktls_rx(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.ktls_rx())
    })
}

/// Send up to `count` bytes of the file `in_fd`, starting at `*offset`
/// (advanced by what was sent); `*out_n` receives the count (0 at end of
/// file). Fd mode only. With the record layer in the kernel this is
/// zero-copy `sendfile(2)`; otherwise rktls reads and encrypts the bytes
/// itself (at most 64 KiB a call). Completes the handshake first if
/// needed. Returns `RKTLS_WANT_WRITE` (nothing sent) when the socket is
/// full: call again when writable. Loop until all is sent.
#[no_mangle]
pub extern "C" fn rktls_connection_sendfile(
    conn: *mut rktls_connection,
    in_fd: i32,
    offset: *mut i64,
    count: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let off = unsafe { out(offset, "offset")? };
        let c = unsafe { box_mut(conn, "conn")? };
        let (r, n) = c.sendfile(in_fd, off, count)?;
        *n_out = n;
        Ok(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fault;
    use crate::testutil::{client_config, server_config, shuttle, Opts};
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn pair(o: &Opts) -> (Connection, Connection) {
        let s = Connection::server(server_config(o)).unwrap();
        let c = Connection::client(client_config(o), "localhost").unwrap();
        (s, c)
    }

    /// Run both handshakes in buffer mode until done or failed.
    fn handshake_buffers(s: &mut Connection, c: &mut Connection) -> (rktls_result, rktls_result) {
        let (mut rs, mut rc) = (RKTLS_WANT_READ, RKTLS_WANT_READ);
        for _ in 0..20 {
            rc = c.handshake().unwrap_or_else(|e| e.code);
            shuttle(c, s);
            rs = s.handshake().unwrap_or_else(|e| e.code);
            shuttle(s, c);
            let done = |r: rktls_result| !matches!(r, RKTLS_WANT_READ | RKTLS_WANT_WRITE);
            if done(rs) && done(rc) {
                break;
            }
        }
        (rs, rc)
    }

    fn read_all(c: &mut Connection, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        while got.len() < want {
            match c.read(&mut buf).unwrap() {
                (RKTLS_OK, n) => got.extend_from_slice(&buf[..n]),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    }

    const SUITES: &[(u16, u16)] = &[
        (0x0304, 0x1301),
        (0x0304, 0x1302),
        (0x0304, 0x1303),
        (0x0303, 0xc02b),
        (0x0303, 0xc02c),
        (0x0303, 0xcca9),
    ];

    #[test]
    fn buffer_mode_every_version_and_suite() {
        for &(v, suite) in SUITES {
            let o = Opts {
                versions: Some(vec![v]),
                suites: Some(vec![suite]),
                alpn: Some(b"\x02h2\x08http/1.1".to_vec()),
            };
            let (mut s, mut c) = pair(&o);
            assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
            for conn in [&s, &c] {
                assert_eq!(conn.protocol_version(), v);
                assert_eq!(conn.cipher_suite(), suite);
                assert_eq!(conn.alpn(), Some(&b"h2"[..]));
            }
            assert_eq!(s.server_name.as_deref(), Some("localhost"));
            let msg: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
            let mut off = 0;
            while off < msg.len() {
                let (r, n) = c.write(&msg[off..]).unwrap();
                assert_eq!(r, RKTLS_OK);
                off += n;
            }
            shuttle(&mut c, &mut s);
            assert_eq!(read_all(&mut s, msg.len()), msg);
            // Echo back, then close cleanly.
            assert_eq!(s.write(b"pong").unwrap(), (RKTLS_OK, 4));
            assert_eq!(s.shutdown().unwrap(), RKTLS_WANT_WRITE);
            shuttle(&mut s, &mut c);
            assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
            assert_eq!(read_all(&mut c, 4), b"pong");
            let mut buf = [0u8; 16];
            assert_eq!(c.read(&mut buf).unwrap(), (RKTLS_CLOSED, 0));
        }
    }

    #[test]
    fn version_mismatch_sends_protocol_version_alert_before_error() {
        let s_opts = Opts {
            versions: Some(vec![0x0304]),
            ..Opts::default()
        };
        let c_opts = Opts {
            versions: Some(vec![0x0303]),
            ..Opts::default()
        };
        let mut s = Connection::server(server_config(&s_opts)).unwrap();
        let mut c = Connection::client(client_config(&c_opts), "localhost").unwrap();
        assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
        shuttle(&mut c, &mut s);
        // The alert must be taken before the error is reported.
        assert_eq!(s.handshake().unwrap(), RKTLS_WANT_WRITE);
        assert_eq!(s.handshake().unwrap(), RKTLS_WANT_WRITE);
        let mut alert = [0u8; 64];
        let n = s.take(&mut alert).unwrap();
        assert_eq!(&alert[..n], &[21, 3, 3, 0, 2, 2, 70]);
        let e = s.handshake().unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_PEER_INCOMPATIBLE);
        assert_eq!(s.alert_sent, Some(70));
        assert!(e.msg.contains("protocol_version"), "{}", e.msg);
        c.feed(&alert[..n]).unwrap();
        let e = c.handshake().unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_ALERT_RECEIVED);
        assert_eq!(c.alert_received, Some(70));
        // Sticky.
        assert_eq!(
            c.read(&mut [0u8; 4]).unwrap_err().code,
            RKTLS_ERR_ALERT_RECEIVED
        );
    }

    #[test]
    fn no_common_alpn_is_refused() {
        let mut s = Connection::server(server_config(&Opts {
            alpn: Some(b"\x02h2".to_vec()),
            ..Opts::default()
        }))
        .unwrap();
        let mut c = Connection::client(
            client_config(&Opts {
                alpn: Some(b"\x08http/1.1".to_vec()),
                ..Opts::default()
            }),
            "localhost",
        )
        .unwrap();
        let (rs, rc) = handshake_buffers(&mut s, &mut c);
        assert_eq!(rs, RKTLS_ERR_NO_APPLICATION_PROTOCOL);
        assert_eq!(rc, RKTLS_ERR_ALERT_RECEIVED);
        assert_eq!(s.alert_sent, Some(120));
        assert_eq!(c.alert_received, Some(120));
    }

    #[test]
    fn untrusted_server_is_rejected_with_alert() {
        let mut s = Connection::server(server_config(&Opts::default())).unwrap();
        // The server's certificate does not cover this name.
        let mut c = Connection::client(client_config(&Opts::default()), "wrong.test").unwrap();
        let (rs, rc) = handshake_buffers(&mut s, &mut c);
        assert_eq!(rc, RKTLS_ERR_BAD_CERTIFICATE);
        assert_eq!(rs, RKTLS_ERR_ALERT_RECEIVED);
        assert_eq!(c.alert_sent, s.alert_received);
        assert!(c.alert_sent.is_some());
    }

    #[test]
    fn client_certificates_required_and_exposed() {
        let (scfg, with, without) = crate::testutil::client_auth_configs();
        let mut s = Connection::server(scfg.clone()).unwrap();
        let mut c = Connection::client(with, "localhost").unwrap();
        assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
        assert_eq!(s.peer_certs().map(<[_]>::len), Some(1));
        assert!(c.peer_certs().is_some_and(|p| !p.is_empty()));
        let mut s = Connection::server(scfg).unwrap();
        let mut c = Connection::client(without, "localhost").unwrap();
        let (rs, rc) = handshake_buffers(&mut s, &mut c);
        assert_eq!(rs, RKTLS_ERR_NO_CERTIFICATE);
        assert_eq!(rc, RKTLS_ERR_ALERT_RECEIVED);
        assert_eq!(c.alert_received, Some(116), "certificate_required");
    }

    #[test]
    fn sni_selects_certificate() {
        let (mut s, _) = pair(&Opts::default());
        let mut c = Connection::client(client_config(&Opts::default()), "other.test").unwrap();
        assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
        assert_eq!(s.server_name.as_deref(), Some("other.test"));
    }

    #[test]
    fn resumption_with_shared_client_config() {
        for v in [0x0303u16, 0x0304] {
            let o = Opts {
                versions: Some(vec![v]),
                ..Opts::default()
            };
            let scfg = server_config(&o);
            let ccfg = client_config(&o);
            let mut resumed = Vec::new();
            for _ in 0..2 {
                let mut s = Connection::server(scfg.clone()).unwrap();
                let mut c = Connection::client(ccfg.clone(), "localhost").unwrap();
                assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
                // TLS 1.3 tickets arrive after the handshake.
                s.write(b"x").unwrap();
                shuttle(&mut s, &mut c);
                assert_eq!(read_all(&mut c, 1), b"x");
                resumed.push(c.is_resumed());
            }
            assert_eq!(resumed, vec![false, true], "version {v:04x}");
        }
    }

    #[test]
    fn truncation_and_clean_close_are_distinct() {
        let (mut s, mut c) = pair(&Opts::default());
        assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
        c.write(b"data").unwrap();
        shuttle(&mut c, &mut s);
        s.feed_eof().unwrap();
        assert_eq!(read_all(&mut s, 4), b"data");
        let e = s.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_TRUNCATED);
    }

    #[test]
    fn data_before_a_bad_record_is_delivered_first() {
        let (mut s, mut c) = pair(&Opts::default());
        assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
        c.write(b"hello").unwrap();
        let mut wire = vec![0u8; 4096];
        let n = c.take(&mut wire).unwrap();
        wire.truncate(n);
        // A second, corrupted copy of the record after the good one.
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        s.feed(&wire).unwrap();
        s.feed(&bad).unwrap();
        assert_eq!(read_all(&mut s, 5), b"hello");
        // Then the alert (bad_record_mac) leaves before the error.
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_WRITE, 0));
        let mut out = [0u8; 256];
        assert!(s.take(&mut out).unwrap() > 0);
        assert_eq!(s.read(&mut buf).unwrap_err().code, RKTLS_ERR_DECRYPT);
        assert_eq!(s.alert_sent, Some(20));
    }

    #[test]
    fn fd_mode_blocking_echo_and_record_exact_handshake_reads() {
        let (a, b) = UnixStream::pair().unwrap();
        let o = Opts::default();
        let scfg = server_config(&o);
        let server = std::thread::spawn(move || {
            let mut s = Connection::server(scfg).unwrap();
            s.set_fd(a.as_raw_fd()).unwrap();
            assert_eq!(s.handshake().unwrap(), RKTLS_OK);
            // The client's first application data is still in the socket:
            // the handshake did not read past its last record.
            let mut peek = [0u8; 5];
            let n =
                unsafe { libc::recv(a.as_raw_fd(), peek.as_mut_ptr().cast(), 5, libc::MSG_PEEK) };
            assert_eq!(n, 5);
            assert_eq!(peek[0], 23, "application data record next");
            let mut buf = [0u8; 100];
            let (r, n) = s.read(&mut buf).unwrap();
            assert_eq!(r, RKTLS_OK);
            assert_eq!(s.write(&buf[..n]).unwrap(), (RKTLS_OK, n));
            assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_CLOSED, 0));
            assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
            drop(a);
        });
        let mut c = Connection::client(client_config(&o), "localhost").unwrap();
        c.set_fd(b.as_raw_fd()).unwrap();
        // Queue the request with the handshake's last flight: write drives
        // the handshake, and the Finished and the data leave together.
        assert_eq!(c.write(b"ping").unwrap(), (RKTLS_OK, 4));
        let mut buf = [0u8; 100];
        let (r, n) = c.read(&mut buf).unwrap();
        assert_eq!((r, &buf[..n]), (RKTLS_OK, &b"ping"[..]));
        assert_eq!(c.shutdown().unwrap(), RKTLS_OK);
        assert_eq!(c.read(&mut buf).unwrap(), (RKTLS_CLOSED, 0));
        server.join().unwrap();
        drop(b);
    }

    #[test]
    fn fd_mode_nonblocking_reports_want_read_and_retries_eintr() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut s = Connection::server(server_config(&Opts::default())).unwrap();
        s.set_fd(a.as_raw_fd()).unwrap();
        fault::inject(fault::Op::Read, libc::EINTR);
        assert_eq!(s.handshake().unwrap(), RKTLS_WANT_READ);
        // Garbage (an HTTP request) on the TLS port: an alert, then the error.
        b.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let e = s.handshake().unwrap_err();
        assert!(s.alert_sent.is_some());
        assert_eq!(e.code, code_for(&s));
        let mut got = [0u8; 7];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got[0], 21, "alert record reached the peer");
        assert_eq!(got[6], s.alert_sent.unwrap());
        fn code_for(s: &Connection) -> rktls_result {
            s.error.as_ref().unwrap().code
        }
    }

    #[test]
    fn fd_mode_io_errors_carry_errno() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Connection::client(client_config(&Opts::default()), "localhost").unwrap();
        c.set_fd(a.as_raw_fd()).unwrap();
        fault::inject(fault::Op::Send, libc::ECONNRESET);
        let e = c.handshake().unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_IO);
        assert_eq!(c.errno, libc::ECONNRESET);
        assert_eq!(
            c.set_fd(a.as_raw_fd()).unwrap_err().code,
            RKTLS_ERR_WRONG_STATE
        );
    }

    #[test]
    fn fd_mode_eof_during_handshake_is_truncation() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut s = Connection::server(server_config(&Opts::default())).unwrap();
        s.set_fd(a.as_raw_fd()).unwrap();
        assert_eq!(s.handshake().unwrap_err().code, RKTLS_ERR_TRUNCATED);
    }

    /// On a kernel without kTLS (this machine's): prefer falls back to
    /// userspace, require fails the handshake and closes cleanly. On a
    /// kernel with kTLS both offload; the VM tests cover that in depth.
    #[test]
    fn kernel_lacks_ktls_prefer_falls_back_require_fails() {
        let has_ktls = crate::ktls::supported(crate::crypto::provider().cipher_suites[0]).is_ok();
        for mode in [
            rktls_ktls_mode::RKTLS_KTLS_PREFER,
            rktls_ktls_mode::RKTLS_KTLS_REQUIRE,
        ] {
            let (a, b) = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| {
                    let c = std::net::TcpStream::connect(l.local_addr()?)?;
                    Ok((l.accept()?.0, c))
                })
                .unwrap();
            let scfg = server_config(&Opts::default());
            let server = std::thread::spawn(move || {
                let mut s = Connection::server(scfg).unwrap();
                s.set_fd(a.as_raw_fd()).unwrap();
                s.set_ktls_mode(mode, Default::default());
                let r = s.handshake();
                (r.map_err(|e| e.code), s.ktls_tx(), a)
            });
            let mut c = Connection::client(client_config(&Opts::default()), "localhost").unwrap();
            c.set_fd(b.as_raw_fd()).unwrap();
            assert_eq!(c.handshake().unwrap(), RKTLS_OK);
            let (r, active, _a) = server.join().unwrap();
            if has_ktls {
                assert_eq!((r, active), (Ok(RKTLS_OK), true), "{mode:?}");
            } else if mode == rktls_ktls_mode::RKTLS_KTLS_PREFER {
                assert_eq!((r, active), (Ok(RKTLS_OK), false));
            } else {
                assert_eq!(r, Err(RKTLS_ERR_KTLS_UNAVAILABLE));
                // The client is told with a close_notify, not a reset.
                let mut buf = [0u8; 16];
                assert_eq!(c.read(&mut buf).unwrap(), (RKTLS_CLOSED, 0));
            }
        }
    }

    /// Each side answers a flight with one write: a reply sent in pieces
    /// (TLS 1.3's compatibility ChangeCipherSpec first, Finished later)
    /// has its second piece held back by Nagle's algorithm until the peer's
    /// delayed ACK, and a busy event loop then waits for nothing.
    #[test]
    fn nonblocking_handshake_flights_leave_whole() {
        for v in [0x0304u16, 0x0303] {
            let o = Opts {
                versions: Some(vec![v]),
                ..Opts::default()
            };
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let a = l.accept().unwrap().0;
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            let mut s = Connection::server(server_config(&o)).unwrap();
            s.set_fd(a.as_raw_fd()).unwrap();
            s.set_ktls_mode(rktls_ktls_mode::RKTLS_KTLS_PREFER, Default::default());
            let mut c = Connection::client(client_config(&o), "localhost").unwrap();
            c.set_fd(b.as_raw_fd()).unwrap();
            let (mut rc, mut rs) = (RKTLS_WANT_READ, RKTLS_WANT_READ);
            for _ in 0..20 {
                if rc != RKTLS_OK {
                    rc = c.handshake().unwrap();
                }
                if rs != RKTLS_OK {
                    rs = s.handshake().unwrap();
                }
            }
            assert_eq!((rc, rs), (RKTLS_OK, RKTLS_OK), "version {v:04x}");
        }
    }

    #[test]
    fn c_api_checks_pointers_and_states() {
        let mut n = 0usize;
        assert_eq!(
            rktls_connection_read(std::ptr::null_mut(), std::ptr::null_mut(), 0, &mut n),
            RKTLS_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            rktls_server_connection_new(std::ptr::null(), std::ptr::null_mut()),
            RKTLS_ERR_NULL_ARGUMENT
        );
        let mut conn: *mut rktls_connection = std::ptr::null_mut();
        assert_eq!(
            rktls_server_connection_new(std::ptr::null(), &mut conn),
            RKTLS_ERR_NULL_ARGUMENT
        );
        assert!(conn.is_null());
        assert_eq!(
            rktls_connection_handshake(std::ptr::null_mut()),
            RKTLS_ERR_NULL_ARGUMENT
        );
        assert_eq!(rktls_connection_protocol_version(std::ptr::null()), 0);
        assert!(!rktls_connection_is_resumed(std::ptr::null()));
        rktls_connection_free(std::ptr::null_mut());
        // A buffer-mode connection refuses an fd after I/O started.
        let mut c = Connection::client(client_config(&Opts::default()), "localhost").unwrap();
        c.feed(b"").unwrap();
        assert_eq!(c.set_fd(3).unwrap_err().code, RKTLS_ERR_WRONG_STATE);
        assert_eq!(
            Connection::client(client_config(&Opts::default()), "bad name!")
                .err()
                .unwrap()
                .code,
            RKTLS_ERR_CONFIG_SERVER_NAME
        );
        // Shutdown before the handshake is a usage error.
        assert_eq!(c.shutdown().unwrap_err().code, RKTLS_ERR_WRONG_STATE);
    }
}
