//! A TLS connection, server or client, with the record layer in userspace.
//!
//! Driven by rustls' unbuffered API, the only one that can later become a
//! kernel connection. Two I/O styles share one state machine:
//! - fd mode (`rktls_connection_set_fd`): rktls reads and writes the
//!   caller's socket, blocking or not; EAGAIN becomes want-read/want-write;
//! - buffer mode (the default): the caller feeds received TLS bytes and
//!   takes TLS bytes to send.
//!
//! In fd mode with a kTLS mode, every read stops at a TLS record boundary
//! until the switch, so when the handshake completes nothing past its last
//! record has been taken from the socket and the kernel can take over
//! there. Without one (or after a fallback to userspace), reads are greedy:
//! one read for whatever has arrived. Output is sent by the call that
//! produced it, with two exceptions that coalesce sends: a corked
//! connection (`rktls_connection_cork`), and a server's TLS 1.3 session
//! tickets when the client's first data came with its Finished (they leave
//! with the answer; see `Connection::handshake`).
//!
//! A fatal error is sticky. Its alert always leaves before the error is
//! returned: until the alert is written (fd mode) or taken (buffer mode),
//! calls return want-write.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{CommonState, HandshakeKind};

use crate::ffi::{Boxed, Handle};
use crate::ktls::rktls_ktls_mode;
use crate::offload;
use crate::result::rktls_result::*;
use crate::result::Error;

mod control;
mod engine;
pub mod events;
pub mod ffi;
mod kernel;
mod limits;
mod ops;
mod reneg;
mod rfc_alerts;
mod to_kernel;
mod transport;

pub(crate) use control::{Event, Offload};
use engine::{Action, Buffers};
pub use ffi::*;

/// Received TLS bytes held at most: the largest handshake message rustls
/// accepts (2^16 - 1 bytes and its 4-byte header), in records down to
/// 512-byte fragments with their headers and AEAD overhead, plus the record
/// being read. Input that fills it without completing a message is refused
/// with an alert (`Connection::input_overflow`); the acceptor holds as much.
pub(crate) const IN_CAP: usize = 96 * 1024;

/// Decrypted bytes queued for `read` at most: while the queue holds this
/// much, rustls is shown no new records (one record more may land).
const PLAIN_CAP: usize = 64 * 1024;

/// Encrypted bytes queued before writes report want-write.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Plaintext accepted by one write call.
const MAX_WRITE: usize = 64 * 1024;

enum Tls {
    // Boxed: an offloaded connection keeps none of the handshake's size.
    Server(Box<UnbufferedServerConnection>),
    Client(Box<UnbufferedClientConnection>),
    /// The record layer is in the kernel (or, for a direction it does not
    /// carry, and after our close_notify in userspace: rktls' own);
    /// rustls keeps only what key updates and session tickets need.
    Kernel(Box<Offload>),
    /// A conversion to the kernel failed half-way: nothing is left.
    Gone,
}

/// What the handshake negotiated, kept when rustls' state is released.
struct Negotiated {
    version: u16,
    suite: u16,
    alpn: Option<Vec<u8>>,
    resumed: bool,
    peer_certs: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
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
    /// The kernel took the TX keys (it keeps them, even when the switch
    /// failed afterwards): `ktls_tx()` stays true.
    kernel_tx_set: bool,
    /// What the handshake negotiated, set once when it completes and never
    /// changed or dropped before the connection (see `keep_negotiated`).
    negotiated: Option<Negotiated>,
    /// Whether any I/O happened yet (an fd may be set only before).
    started: bool,
    /// Client: the server's HelloRequest was refused with a warning and
    /// it has sent no application data since (see `renegotiation_ended`).
    reneg_refused: bool,
    /// Client: a handshake record from the server went to rustls after the
    /// handshake; rustls refuses it (a HelloRequest) with the warning it
    /// sends next. Only that output sets `reneg_refused`: an empty or
    /// partial handshake record refuses nothing.
    reneg_pending: bool,
    /// Client: end the connection at once on a HelloRequest.
    reneg_fail_fast: bool,
    /// Records screened before rustls sees them (`rfc_alerts.rs`).
    screen: rfc_alerts::Screen,
    /// A panic was caught in a call on this connection: it is failed
    /// (see `crate::ffi`).
    panicked: std::sync::atomic::AtomicBool,
    /// A send that failed after `write` had accepted its data: returned
    /// by the next write, flush or shutdown.
    send_error: Option<Error>,
    /// Writes queue without sending (`rktls_connection_cork`).
    corked: bool,
    /// What rustls consumed that counts against its peer limits.
    limits: limits::PeerCounts,
}

#[cfg(test)]
thread_local! {
    /// Test hook: the next `read` on this thread panics half-way.
    pub(crate) static PANIC_IN_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A TLS connection. Box handle: used by one thread at a time, but may move
/// between threads; freed with `rktls_connection_free()`.
///
/// Call sequence:
/// 1. Make it: `rktls_server_connection_new()`,
///    `rktls_client_connection_new()`, or from an acceptor with
///    `rktls_accepted_into_connection()`.
/// 2. Choose the I/O style before any I/O: `rktls_connection_set_fd()` (fd
///    mode: rktls reads and writes the socket) or nothing (buffer mode:
///    after each call, `rktls_connection_feed_tls()` what arrived and send
///    what `rktls_connection_take_tls()` gives while
///    `rktls_connection_pending_tls()` is not 0).
/// 3. `rktls_connection_handshake()` until `RKTLS_OK` (optional: read and
///    write complete it too). With a config's kTLS mode the record layer
///    then moves into the kernel; `rktls_connection_ktls_tx()`/`_rx()` say
///    whether it did.
/// 4. Exchange data: `rktls_connection_read()`, `rktls_connection_write()`
///    (loop until all is accepted), `rktls_connection_flush()`,
///    `rktls_connection_sendfile()`, `rktls_connection_refresh_keys()`. On
///    `RKTLS_WANT_READ`/`RKTLS_WANT_WRITE` wait for the fd and call again.
///    Getters (`_protocol_version()`, `_alpn()`, `_peer_cert()`, ...) work
///    at any time after the handshake.
/// 5. Close: `rktls_connection_shutdown()` until `RKTLS_OK`, optionally
///    read until `RKTLS_CLOSED`; then `rktls_connection_free()` and close
///    the socket (rktls never closes it).
///
/// On an error the connection is finished: its alert has been sent (or
/// left to take), `rktls_connection_error_message()`,
/// `rktls_connection_alert_sent()`/`_alert_received()` and
/// `rktls_connection_errno()` explain it; free it and close the socket.
/// Hosts that read the offloaded socket themselves use the event style
/// instead of step 4's reads (see `rktls_events`).
pub struct rktls_connection {
    _private: [u8; 0],
}

impl Handle for rktls_connection {
    type Rust = Connection;
    type Ownership = Boxed;
    fn panicked(c: &Connection) -> Option<&std::sync::atomic::AtomicBool> {
        Some(&c.panicked)
    }
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
            kernel_tx_set: false,
            negotiated: None,
            started: false,
            reneg_refused: false,
            reneg_pending: false,
            reneg_fail_fast: false,
            screen: rfc_alerts::Screen::default(),
            panicked: Default::default(),
            send_error: None,
            corked: false,
            limits: Default::default(),
        }
    }

    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, Error> {
        Ok(Self::new(Tls::Server(Box::new(
            UnbufferedServerConnection::new(config)?,
        ))))
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
        let mut c = Self::new(Tls::Client(Box::new(UnbufferedClientConnection::new(
            config, sn,
        )?)));
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

    /// A server whose record layer is in userspace.
    fn is_server(&self) -> bool {
        matches!(self.tls, Tls::Server(_))
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

    /// The negotiated ALPN protocol, once the handshake is complete. Served
    /// from `negotiated` only: the C API hands out pointers into it.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.negotiated.as_ref()?.alpn.as_deref()
    }

    pub(crate) fn is_resumed(&self) -> bool {
        match (&self.negotiated, self.common()) {
            (Some(n), _) => n.resumed,
            (None, Some(c)) => c.handshake_kind() == Some(HandshakeKind::Resumed),
            _ => false,
        }
    }

    /// The peer's certificates, once the handshake is complete (as `alpn`).
    pub(crate) fn peer_certs(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.negotiated.as_ref()?.peer_certs.as_deref()
    }

    /// Once the handshake is complete, copy what it negotiated into storage
    /// the connection owns and never changes again. Pointers the C API
    /// hands out (ALPN, peer certificates) point there, so they stay valid
    /// until the connection is freed, whatever later happens to rustls'
    /// state (a refused renegotiation taking the secrets, the switch to the
    /// kernel, a failure).
    fn keep_negotiated(&mut self) {
        if self.negotiated.is_some() {
            return;
        }
        let Some(c) = self.common() else {
            return;
        };
        if c.is_handshaking() {
            return;
        }
        let n = Negotiated {
            version: c.protocol_version().map_or(0, u16::from),
            suite: c
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            alpn: c.alpn_protocol().map(<[u8]>::to_vec),
            resumed: c.handshake_kind() == Some(HandshakeKind::Resumed),
            peer_certs: c
                .peer_certificates()
                .map(|cs| cs.iter().map(|d| d.clone().into_owned()).collect()),
        };
        self.negotiated = Some(n);
    }

    pub(crate) fn pending_out(&self) -> usize {
        self.b.outgoing.len() - self.b.out_pos
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

    /// Make `err` the connection's sticky error, unless one is already
    /// there; returns the one that stays.
    fn sticky(&mut self, err: Error) -> Error {
        self.error.get_or_insert(err).clone()
    }

    #[cfg(test)]
    pub(crate) fn renegotiation_fail_fast_for_test(&mut self, on: bool) {
        self.reneg_fail_fast = on;
        if let Tls::Kernel(o) = &mut self.tls {
            o.set_fail_fast(on);
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
            Tls::Kernel(o) => Some(o.key_usage()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod io_tests;
#[cfg(test)]
mod mem_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::rktls_result;
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

    #[test]
    fn want_write_from_read_and_want_read_from_write_as_documented() {
        let o = Opts {
            versions: Some(vec![0x0304]),
            ..Opts::default()
        };
        let (mut s, mut c) = pair(&o);
        let mut buf = [0u8; 64];
        // Write before the handshake: the ClientHello waits to be taken,
        // then the server's flight is needed.
        assert_eq!(c.write(b"early").unwrap(), (RKTLS_WANT_WRITE, 0));
        shuttle(&mut c, &mut s);
        assert_eq!(c.write(b"early").unwrap(), (RKTLS_WANT_READ, 0));
        // Read completing the handshake: its flight waits to be taken.
        assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_WRITE, 0));
        shuttle(&mut s, &mut c);
        assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_READ, 0));
        assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
        // After it, a KeyUpdate asking for an answer is no WANT_WRITE: the
        // answer leaves before the next data written.
        assert_eq!(c.refresh_keys(true).unwrap(), RKTLS_WANT_WRITE);
        shuttle(&mut c, &mut s);
        assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_READ, 0));
        assert_eq!(s.pending_out(), 0);
        // And a write does not wait for the peer.
        assert_eq!(s.write(b"x").unwrap(), (RKTLS_OK, 1));
        let mut wire = [0u8; 4096];
        let n = s.take(&mut wire).unwrap();
        assert!(n > 2 * (5 + 17), "KeyUpdate and data: {n} bytes");
        c.feed(&wire[..n]).unwrap();
        assert_eq!(read_all(&mut c, 1), b"x");
    }

    #[test]
    fn buffer_mode_every_version_and_suite() {
        for (v, suite) in crate::testutil::versions_and_suites() {
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

    /// Found by the stream fuzzers: data, then a record header over the
    /// size limit. rustls must see no input after its fatal error (a
    /// second fatal alert trips its debug assertion), and the peer gets
    /// exactly one alert: record_overflow.
    #[test]
    fn oversized_record_after_data_fails_once() {
        for (v, suite) in [(0x0304, 0x1301), (0x0303, 0xc02b)] {
            let o = Opts {
                versions: Some(vec![v]),
                suites: Some(vec![suite]),
                alpn: None,
            };
            let (mut s, mut c) = pair(&o);
            assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
            s.write(&[7u8; 64]).unwrap();
            let mut bytes = vec![0u8; 4096];
            let n = s.take(&mut bytes).unwrap();
            bytes.truncate(n);
            bytes.extend_from_slice(&[
                crate::wire::CT_APPLICATION_DATA,
                3,
                3,
                0x91,
                0x94,
                0x57,
                0x40,
            ]);
            c.feed(&bytes).unwrap();
            assert_eq!(read_all(&mut c, 64), [7u8; 64]);
            let mut buf = [0u8; 64];
            let mut alerts = Vec::new();
            let err = loop {
                match c.read(&mut buf) {
                    Ok((RKTLS_WANT_WRITE, 0)) => {
                        let mut out = [0u8; 256];
                        let n = c.take(&mut out).unwrap();
                        alerts.extend_from_slice(&out[..n]);
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => break e.code,
                }
            };
            assert_ne!(err, RKTLS_ERR_PANIC, "version {v:x}");
            assert_eq!(c.alert_sent, Some(22), "version {v:x}");
            // One encrypted alert record, no second one.
            let recs: Vec<_> = crate::wire::records(&alerts).collect();
            assert_eq!(recs.len(), 1, "version {v:x}: {alerts:02x?}");
            assert_eq!(c.read(&mut buf).unwrap_err().code, err);
        }
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
            // As a kTLS mode sets it: the kernel may take the socket over.
            s.exact_reads_always = true;
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

    /// Found by the fault walk: a send failing after `write` queued its
    /// data reported an error with nothing accepted, so a caller retrying
    /// sent the data twice. Now the data counts as accepted, the error
    /// comes with the next call, and the data leaves once.
    #[test]
    fn write_accepts_what_it_queued_even_if_the_send_fails() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut c2 = Connection::client(client_config(&Opts::default()), "localhost").unwrap();
        let mut s2 = Connection::server(server_config(&Opts::default())).unwrap();
        c2.set_fd(a.as_raw_fd()).unwrap();
        let (ready, wait) = std::sync::mpsc::channel();
        let peer = std::thread::spawn(move || {
            s2.set_fd(b.as_raw_fd()).unwrap();
            assert_eq!(s2.handshake().unwrap(), RKTLS_OK);
            ready.send(()).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let end = loop {
                match s2.read(&mut buf) {
                    Ok((RKTLS_OK, n)) => got.extend_from_slice(&buf[..n]),
                    other => break other.map(|r| r.0).map_err(|e| e.code),
                }
            };
            (got, end, b)
        });
        assert_eq!(c2.handshake().unwrap(), RKTLS_OK);
        wait.recv().unwrap();
        fault::inject(fault::Op::Send, libc::ECONNRESET);
        assert_eq!(c2.write(b"once").unwrap(), (RKTLS_OK, 4));
        // The failure comes with the next call, once; then (the socket
        // being fine) the queued data leaves, once.
        assert_eq!(c2.flush().unwrap_err().code, RKTLS_ERR_IO);
        assert_eq!(c2.errno, libc::ECONNRESET);
        assert_eq!(c2.flush().unwrap(), RKTLS_OK);
        assert_eq!(c2.shutdown().unwrap(), RKTLS_OK);
        let (got, end, _b) = peer.join().unwrap();
        assert_eq!((got.as_slice(), end), (&b"once"[..], Ok(RKTLS_CLOSED)));
        drop(a);
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

    /// A pointer fetched once the handshake is complete but before the
    /// switch to the kernel (the server's last flight still queued) still
    /// points to the same live bytes after the switch: the ALPN protocol
    /// (TLS 1.2) and the client's certificate (TLS 1.3 with client
    /// authentication, where the server's tickets follow the handshake).
    #[test]
    fn pointers_survive_the_switch_to_the_kernel() {
        let o = Opts {
            versions: Some(vec![0x0303]),
            alpn: Some(b"\x08http/1.1".to_vec()),
            ..Opts::default()
        };
        let (mtls, with_cert, _) = crate::testutil::client_auth_configs();
        type Get = fn(&Connection) -> Option<&[u8]>;
        let alpn: Get = |c| c.alpn();
        let cert: Get = |c| c.peer_certs().map(|p| p[0].as_ref());
        let cases = [
            (server_config(&o), client_config(&o), alpn, 0x0303u16),
            (mtls, with_cert, cert, 0x0304),
        ];
        for (scfg, ccfg, get, v) in cases {
            crate::kernel_emul::install(true);
            let (a, mut b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            let mut s = Connection::server(scfg).unwrap();
            s.set_fd(a.as_raw_fd()).unwrap();
            s.set_ktls_mode(rktls_ktls_mode::RKTLS_KTLS_REQUIRE, Default::default());
            let mut c = Connection::client(ccfg, "localhost").unwrap();
            let mut buf = vec![0u8; 65536];
            let mut fetched: Option<(*const u8, Vec<u8>)> = None;
            for _ in 0..20 {
                let _ = c.handshake();
                let n = c.take(&mut buf).unwrap();
                b.write_all(&buf[..n]).unwrap();
                // Each server send would block once: the window after its
                // handshake completes and before its last flight is sent.
                fault::inject(fault::Op::Send, libc::EAGAIN);
                let r = s.handshake().unwrap();
                let _ = fault::take(fault::Op::Send);
                if r == RKTLS_WANT_WRITE && !s.is_handshaking() && fetched.is_none() {
                    assert!(!s.ktls_tx());
                    let p = get(&s).unwrap();
                    fetched = Some((p.as_ptr(), p.to_vec()));
                }
                let r = s.handshake().unwrap();
                if let Ok(n) = b.read(&mut buf) {
                    c.feed(&buf[..n]).unwrap();
                }
                if r == RKTLS_OK && fetched.is_some() {
                    break;
                }
            }
            assert_eq!(s.protocol_version(), v);
            assert!(s.ktls_tx() && s.ktls_rx(), "switched to the kernel");
            let (p, bytes) = fetched.expect("handshake completed");
            assert_eq!(get(&s).map(<[u8]>::as_ptr), Some(p), "version {v:04x}");
            assert_eq!(unsafe { std::slice::from_raw_parts(p, bytes.len()) }, bytes);
            crate::kernel_emul::remove();
        }
    }

    /// After a panic caught at the boundary the connection is failed:
    /// every later call returns RKTLS_ERR_PANIC (getters their default),
    /// and `_free` still frees it.
    #[test]
    fn a_caught_panic_fails_the_connection_for_good() {
        use crate::config::*;
        let mut b = std::ptr::null_mut();
        assert_eq!(rktls_client_config_builder_new(&mut b), RKTLS_OK);
        let ca = crate::testutil::pki().ca_pem.as_bytes();
        assert_eq!(
            rktls_client_config_builder_add_roots_pem(b, ca.as_ptr(), ca.len()),
            RKTLS_OK
        );
        let mut cfg = std::ptr::null();
        assert_eq!(rktls_client_config_builder_build(b, &mut cfg), RKTLS_OK);
        let mut conn = std::ptr::null_mut();
        assert_eq!(
            rktls_client_connection_new(cfg, c"localhost".as_ptr(), &mut conn),
            RKTLS_OK
        );
        let mut buf = [0u8; 64];
        let mut n = 0usize;
        PANIC_IN_READ.with(|p| p.set(true));
        let read = |conn, buf: &mut [u8], n: &mut usize| {
            rktls_connection_read(conn, buf.as_mut_ptr(), buf.len(), n)
        };
        assert_eq!(read(conn, &mut buf, &mut n), RKTLS_ERR_PANIC);
        // The hook fired once; the connection stays failed.
        assert!(!PANIC_IN_READ.with(|p| p.get()));
        assert_eq!(read(conn, &mut buf, &mut n), RKTLS_ERR_PANIC);
        let mut msg = [0 as std::ffi::c_char; 256];
        let mut len = 0usize;
        assert_eq!(
            crate::ffi::rktls_last_error_message(msg.as_mut_ptr(), msg.len(), &mut len),
            RKTLS_OK
        );
        let msg = unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) }.to_string_lossy();
        assert!(msg.contains("panicked"), "{msg}");
        assert_eq!(rktls_connection_handshake(conn), RKTLS_ERR_PANIC);
        assert_eq!(
            rktls_connection_write(conn, b"x".as_ptr(), 1, &mut n),
            RKTLS_ERR_PANIC
        );
        assert_eq!(
            rktls_connection_feed_tls(conn, b"x".as_ptr(), 1, &mut n),
            RKTLS_ERR_PANIC
        );
        assert_eq!(
            rktls_connection_take_tls(conn, buf.as_mut_ptr(), buf.len(), &mut n),
            RKTLS_ERR_PANIC
        );
        assert_eq!(rktls_connection_shutdown(conn), RKTLS_ERR_PANIC);
        // Getters: their "nothing" value (a live client would say true).
        assert!(!rktls_connection_is_handshaking(conn));
        assert_eq!(rktls_connection_pending_tls(conn), 0);
        rktls_connection_free(conn);
        rktls_client_config_free(cfg);
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
