//! The `server_stream` and `client_stream` fuzz targets: arbitrary peer
//! traffic into an rktls connection after a real handshake, through the C
//! API, in buffer mode (feed/take) or fd mode (a socketpair).
//!
//! The peer is a rustls connection for as long as the input asks only for
//! things rustls can do (application data, KeyUpdate, close_notify); the
//! first record of an arbitrary (content type, payload) turns it into a
//! bare record layer built from its extracted secrets, which seals anything
//! (renegotiating hellos, alerts, unknown types) and opens what rktls sends,
//! so alerts are checked by the bytes that arrive. Raw bytes are garbage
//! the record layer never sealed.
//!
//! Invariants: no panic and no internal error; peer application data is
//! delivered in order and only what was sent (the bytes are a known
//! function of their offset, so a prefix check needs no copy); a failure is
//! sticky (later calls return the same code, or want-write while its alert
//! is still queued, or data received before it); a protocol failure
//! delivers a fatal alert to the peer, the one `alert_sent` names; and the
//! heap in use stays bounded (when the caller gives a probe).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::stream_program::Input;
pub use super::stream_program::{app_byte, seeds, Op};
use crate::connection::*;
use crate::record::{Opener, Sealer};
use crate::result::rktls_category::*;
use crate::result::rktls_result::{self, *};
use crate::wire::MAX_FRAGMENT;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates both sides use (PEM).
pub struct Pems {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Which side rktls plays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Server,
    Client,
}

/// Heap growth allowed over the start of a run, beyond what the harness
/// itself holds in its queues: a few records of buffering on each side.
pub const MEMORY_LIMIT: usize = 4 << 20;

/// Most peer application data one input can ask for.
const MAX_BACKLOG: u64 = 8 << 20;
/// The peer keeps at most this much queued towards rktls.
const QUEUE_HIGH: usize = 64 * 1024;

/// Ready-made configs for one target.
pub struct StreamTarget {
    pub(crate) side: Side,
    pub(crate) ours: [*const (); 4],
    pub(crate) peer_server: [Arc<rustls::ServerConfig>; 4],
    pub(crate) peer_client: [Arc<rustls::ClientConfig>; 4],
}

// The config handles are immutable, thread-safe Arcs (see the header).
unsafe impl Send for StreamTarget {}
unsafe impl Sync for StreamTarget {}

/// (versions, suites) of the four variants an input can pick.
pub(crate) const VARIANTS: [(u16, u16); 4] = [
    (0x0304, 0x1301),
    (0x0304, 0x1303),
    (0x0303, 0xc02b),
    (0x0303, 0xcca9),
];

pub(crate) fn check_ok(r: rktls_result, what: &str) {
    assert_eq!(r, RKTLS_OK, "{what}");
}

impl StreamTarget {
    /// A new rktls connection of `variant` (the caller frees it) and the
    /// rustls peer it talks to.
    pub(crate) fn pair(&self, variant: usize) -> (*mut rktls_connection, rustls::Connection) {
        let mut conn = std::ptr::null_mut();
        let peer = match self.side {
            Side::Server => {
                check_ok(
                    rktls_server_connection_new(self.ours[variant].cast(), &mut conn),
                    "conn",
                );
                let name = ServerName::try_from("localhost").unwrap();
                rustls::Connection::Client(
                    rustls::ClientConnection::new(self.peer_client[variant].clone(), name).unwrap(),
                )
            }
            Side::Client => {
                check_ok(
                    rktls_client_connection_new(
                        self.ours[variant].cast(),
                        c"localhost".as_ptr(),
                        &mut conn,
                    ),
                    "conn",
                );
                rustls::Connection::Server(
                    rustls::ServerConnection::new(self.peer_server[variant].clone()).unwrap(),
                )
            }
        };
        (conn, peer)
    }

    pub fn new(side: Side, pems: &Pems) -> Self {
        Self::with_ktls(side, pems, 0)
    }

    /// The same configs, with this kTLS mode (`rktls_ktls_mode`, 0: off).
    pub(crate) fn with_ktls(side: Side, pems: &Pems, ktls: u32) -> Self {
        use crate::config::*;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pems.cert)
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(&pems.key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pems.ca).map(Result::unwrap) {
            roots.add(c).unwrap();
        }
        let mut ours = [std::ptr::null::<()>(); 4];
        let mut peer_server = Vec::new();
        let mut peer_client = Vec::new();
        for (i, (v, s)) in VARIANTS.iter().enumerate() {
            let mut p = crate::crypto::provider();
            p.cipher_suites.retain(|cs| u16::from(cs.suite()) == *s);
            let p = Arc::new(p);
            let ver: &[&rustls::SupportedProtocolVersion] = if *v == 0x0304 {
                &[&rustls::version::TLS13]
            } else {
                &[&rustls::version::TLS12]
            };
            let mut sc = rustls::ServerConfig::builder_with_provider(p.clone())
                .with_protocol_versions(ver)
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())
                .unwrap();
            sc.enable_secret_extraction = true;
            peer_server.push(Arc::new(sc));
            let mut cc = rustls::ClientConfig::builder_with_provider(p)
                .with_protocol_versions(ver)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            cc.enable_secret_extraction = true;
            peer_client.push(Arc::new(cc));
            // rktls' own config, through the C API.
            ours[i] = match side {
                Side::Server => {
                    let mut b = std::ptr::null_mut();
                    check_ok(rktls_server_config_builder_new(&mut b), "builder");
                    check_ok(
                        rktls_server_config_builder_add_cert_key_pem(
                            b,
                            pems.cert.as_ptr(),
                            pems.cert.len(),
                            pems.key.as_ptr(),
                            pems.key.len(),
                        ),
                        "cert",
                    );
                    check_ok(
                        rktls_server_config_builder_set_versions(b, v, 1),
                        "versions",
                    );
                    check_ok(
                        rktls_server_config_builder_set_cipher_suites(b, s, 1),
                        "suites",
                    );
                    if ktls != 0 {
                        check_ok(rktls_server_config_builder_set_ktls(b, ktls), "ktls");
                    }
                    let mut c = std::ptr::null();
                    check_ok(rktls_server_config_builder_build(b, &mut c), "build");
                    c.cast()
                }
                Side::Client => {
                    let mut b = std::ptr::null_mut();
                    check_ok(rktls_client_config_builder_new(&mut b), "builder");
                    check_ok(
                        rktls_client_config_builder_add_roots_pem(
                            b,
                            pems.ca.as_ptr(),
                            pems.ca.len(),
                        ),
                        "roots",
                    );
                    check_ok(
                        rktls_client_config_builder_set_versions(b, v, 1),
                        "versions",
                    );
                    check_ok(
                        rktls_client_config_builder_set_cipher_suites(b, s, 1),
                        "suites",
                    );
                    if ktls != 0 {
                        check_ok(rktls_client_config_builder_set_ktls(b, ktls), "ktls");
                    }
                    let mut c = std::ptr::null();
                    check_ok(rktls_client_config_builder_build(b, &mut c), "build");
                    c.cast()
                }
            };
        }
        StreamTarget {
            side,
            ours,
            peer_server: peer_server.try_into().unwrap(),
            peer_client: peer_client.try_into().unwrap(),
        }
    }

    /// One input: byte 0 picks the variant (bits 0-1) and fd mode (bit 2);
    /// the rest is a program of peer and caller actions (see [`Op`]).
    /// `heap` gives the bytes in use, where the caller can count them.
    pub fn run(&self, data: &[u8], heap: Option<&dyn Fn() -> usize>) {
        let Some((&head, prog)) = data.split_first() else {
            return;
        };
        let variant = (head & 3) as usize;
        let fd_mode = head & 4 != 0;
        let mut h = Harness::new(self, variant, fd_mode);
        if !h.handshake() {
            return;
        }
        let base = heap.map(|f| f());
        let mut input = Input(prog);
        let mut steps = 0;
        while let Some(op) = input.op() {
            if cfg!(test) && std::env::var("RKTLS_REPLAY_LOG").is_ok() {
                eprintln!("op {op:?}");
            }
            h.apply(op);
            h.settle();
            steps += 1;
            if let (Some(f), Some(base)) = (heap, base) {
                let used = f().saturating_sub(base + h.harness_bytes());
                // (S1, fuzz/pending/README.md: once seen in fork mode, not
                // reproducible alone; the breakdown says whose bytes they are.)
                assert!(
                    used < MEMORY_LIMIT,
                    "heap grew by {used} bytes after {steps} steps (rktls queues {} TLS bytes \
                     to send; harness holds {}; peer {}; backlog {})",
                    rktls_connection_pending_tls(h.conn),
                    h.harness_bytes(),
                    match &h.peer {
                        Peer::Tls(_) => "rustls",
                        Peer::Bare { .. } => "bare",
                        Peer::Dead => "gone",
                    },
                    h.backlog
                );
            }
            if steps > 2000 {
                break;
            }
        }
        h.finish();
    }
}

impl Drop for StreamTarget {
    fn drop(&mut self) {
        for c in self.ours {
            match self.side {
                Side::Server => crate::config::rktls_server_config_free(c.cast()),
                Side::Client => crate::config::rktls_client_config_free(c.cast()),
            }
        }
    }
}

enum Peer {
    Tls(Box<rustls::Connection>),
    Bare {
        sealer: Sealer,
        /// None once it lost track (rktls changed keys, or a record was cut).
        opener: Option<Opener>,
        inbuf: Vec<u8>,
    },
    /// The peer's rustls failed on what rktls sent (or could not hand over
    /// its keys): it sends nothing more.
    Dead,
}

struct Harness {
    variant: usize,
    conn: *mut rktls_connection,
    fds: Option<(OwnedFd, OwnedFd)>,
    peer: Peer,
    /// Bytes the peer sent that the transport has not delivered yet.
    to_us: VecDeque<u8>,
    /// Application bytes the peer still has to send, and sent so far.
    backlog: u64,
    app_sent: u64,
    /// Application bytes rktls returned from read.
    app_read: u64,
    eof_pending: bool,
    eof_done: bool,
    chunk: usize,
    /// The sticky failure, once one happened.
    failed: Option<rktls_result>,
    /// Fatal alerts that reached the peer.
    alerts_at_peer: Vec<u8>,
    shutdown_done: bool,
}

pub(crate) fn cat(r: rktls_result) -> crate::result::rktls_category {
    crate::result::rktls_result_category(r as u32)
}

impl Harness {
    fn new(t: &StreamTarget, variant: usize, fd_mode: bool) -> Self {
        let (conn, peer) = t.pair(variant);
        let fds = fd_mode.then(|| {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            check_ok(rktls_connection_set_fd(conn, a.as_raw_fd()), "set_fd");
            (OwnedFd::from(a), OwnedFd::from(b))
        });
        Harness {
            variant,
            conn,
            fds,
            peer: Peer::Tls(Box::new(peer)),
            to_us: VecDeque::new(),
            backlog: 0,
            app_sent: 0,
            app_read: 0,
            eof_pending: false,
            eof_done: false,
            chunk: usize::MAX,
            failed: None,
            alerts_at_peer: Vec::new(),
            shutdown_done: false,
        }
    }

    /// What the harness itself holds on the heap (not rktls' share).
    fn harness_bytes(&self) -> usize {
        let peer = match &self.peer {
            Peer::Bare { inbuf, .. } => inbuf.capacity(),
            _ => 0,
        };
        self.to_us.capacity() + peer + self.alerts_at_peer.capacity()
    }

    /// A real handshake, both sides honest. False if it cannot complete
    /// (never expected: the configs match).
    fn handshake(&mut self) -> bool {
        for _ in 0..200 {
            let r = rktls_connection_handshake(self.conn);
            assert!(
                matches!(r, RKTLS_OK | RKTLS_WANT_READ | RKTLS_WANT_WRITE),
                "honest handshake failed: {r:?} (variant {})",
                self.variant
            );
            let moved = self.exchange();
            let peer_done = match &self.peer {
                Peer::Tls(p) => !p.is_handshaking(),
                _ => false,
            };
            if r == RKTLS_OK && peer_done && moved == 0 && self.to_us.is_empty() {
                return true;
            }
        }
        panic!(
            "honest handshake made no progress (variant {})",
            self.variant
        );
    }

    /// Move bytes both ways once; returns how many moved.
    fn exchange(&mut self) -> usize {
        let out = self.collect();
        let n = out.len();
        self.peer_receive(&out);
        self.peer_flush();
        n + self.deliver()
    }

    /// rktls' output, as it reaches the peer's end of the transport.
    fn collect(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match &self.fds {
                None => {
                    let mut n = 0;
                    let r =
                        rktls_connection_take_tls(self.conn, buf.as_mut_ptr(), buf.len(), &mut n);
                    check_ok(r, "take_tls");
                    n
                }
                Some((_, theirs)) => {
                    // SAFETY: buf is valid for writes of its length.
                    let r = unsafe {
                        libc::read(theirs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if r <= 0 {
                        0
                    } else {
                        r as usize
                    }
                }
            };
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Transport from the peer to rktls: as much as rktls (or the socket)
    /// takes, at most `chunk` bytes. Returns how many moved.
    fn deliver(&mut self) -> usize {
        self.refill();
        let mut moved = 0;
        while !self.to_us.is_empty() && moved < self.chunk {
            let (a, _) = self.to_us.as_slices();
            let a = &a[..a.len().min(self.chunk - moved)];
            let n = match &self.fds {
                None => {
                    let mut n = 0;
                    let r = rktls_connection_feed_tls(self.conn, a.as_ptr(), a.len(), &mut n);
                    // PLAINTEXT_FULL: the plaintext queue is full and the
                    // rest waits until rktls is read (as OK with n < len).
                    if r != RKTLS_PLAINTEXT_FULL {
                        check_ok(r, "feed_tls");
                    }
                    n
                }
                Some((_, theirs)) => {
                    // SAFETY: a is valid for reads of its length.
                    let r = unsafe { libc::write(theirs.as_raw_fd(), a.as_ptr().cast(), a.len()) };
                    if r <= 0 {
                        0
                    } else {
                        r as usize
                    }
                }
            };
            if n == 0 {
                break;
            }
            self.to_us.drain(..n);
            moved += n;
            self.refill();
        }
        if self.eof_pending && self.to_us.is_empty() && self.backlog == 0 && !self.eof_done {
            self.eof_done = true;
            match &self.fds {
                None => {
                    let r = rktls_connection_feed_eof(self.conn);
                    check_ok(r, "feed_eof");
                }
                Some((_, theirs)) => {
                    // SAFETY: shutting down our own socket.
                    unsafe { libc::shutdown(theirs.as_raw_fd(), libc::SHUT_WR) };
                }
            }
        }
        moved
    }

    /// The peer turns backlog into records while its queue is short.
    fn refill(&mut self) {
        while self.backlog > 0 && self.to_us.len() < QUEUE_HIGH && !matches!(self.peer, Peer::Dead)
        {
            let n = self.backlog.min(MAX_FRAGMENT as u64);
            let data: Vec<u8> = (self.app_sent..self.app_sent + n).map(app_byte).collect();
            self.backlog -= n;
            self.app_sent += n;
            match &mut self.peer {
                Peer::Tls(p) => {
                    use std::io::Write;
                    p.writer().write_all(&data).unwrap();
                }
                Peer::Bare { sealer, .. } => {
                    let mut rec = Vec::new();
                    sealer.seal(23, &data, &mut rec).unwrap();
                    self.to_us.extend(rec);
                }
                Peer::Dead => unreachable!(),
            }
            self.peer_flush();
        }
    }

    fn peer_flush(&mut self) {
        if let Peer::Tls(p) = &mut self.peer {
            let mut v = Vec::new();
            while p.wants_write() {
                p.write_tls(&mut v).unwrap();
            }
            self.to_us.extend(v);
        }
    }

    fn peer_receive(&mut self, mut bytes: &[u8]) {
        match &mut self.peer {
            Peer::Tls(p) => {
                while !bytes.is_empty() {
                    match p.read_tls(&mut bytes) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    match p.process_new_packets() {
                        Ok(_) => {
                            let mut sink = [0u8; 4096];
                            use std::io::Read;
                            while let Ok(n) = p.reader().read(&mut sink) {
                                if n == 0 {
                                    break;
                                }
                            }
                        }
                        Err(rustls::Error::AlertReceived(d)) => {
                            self.alerts_at_peer.push(u8::from(d));
                            self.peer = Peer::Dead;
                            return;
                        }
                        Err(_) => {
                            self.peer = Peer::Dead;
                            return;
                        }
                    }
                }
            }
            Peer::Bare { opener, inbuf, .. } => {
                inbuf.extend_from_slice(bytes);
                while let Some(n) = crate::wire::whole_record(inbuf) {
                    let mut rec: Vec<u8> = inbuf.drain(..n).collect();
                    if let Some(o) = opener {
                        match o.open(&mut rec) {
                            // Fatal alerts, and the warning no_renegotiation
                            // (RFC 5246 §7.2.2 makes that one a warning).
                            Ok((21, range))
                                if range.len() == 2
                                    && (rec[range.start] == 2 || rec[range.start + 1] == 100) =>
                            {
                                self.alerts_at_peer.push(rec[range.start + 1]);
                            }
                            Ok((22, _)) => *opener = None, // a KeyUpdate: keys change
                            Ok(_) => {}
                            Err(_) => *opener = None,
                        }
                    }
                }
            }
            Peer::Dead => {}
        }
    }

    /// Turn the rustls peer into a bare record layer (once).
    fn go_bare(&mut self) {
        if !matches!(self.peer, Peer::Tls(_)) {
            return;
        }
        // rktls' pending output reaches the peer first, so its keys are current.
        let out = self.collect();
        self.peer_receive(&out);
        self.peer_flush();
        let Peer::Tls(p) = std::mem::replace(&mut self.peer, Peer::Dead) else {
            return;
        };
        let Some(suite) = p.negotiated_cipher_suite() else {
            return;
        };
        if let Ok(s) = (*p).dangerous_extract_secrets() {
            self.peer = Peer::Bare {
                sealer: Sealer::new(suite, s.tx),
                opener: Some(Opener::new(suite, s.rx)),
                inbuf: Vec::new(),
            };
        }
    }

    fn peer_seal(&mut self, typ: u8, payload: &[u8]) {
        if let Peer::Bare { sealer, .. } = &mut self.peer {
            let mut rec = Vec::new();
            sealer.seal(typ, payload, &mut rec).unwrap();
            self.to_us.extend(rec);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::PeerData(n) => {
                if !self.eof_pending && !matches!(self.peer, Peer::Dead) {
                    self.backlog =
                        (self.backlog + n).min(MAX_BACKLOG.saturating_sub(self.app_sent));
                }
            }
            Op::Record(typ, payload) => {
                if self.eof_pending {
                    return;
                }
                self.flush_backlog();
                self.go_bare();
                if typ == 23 && matches!(self.peer, Peer::Bare { .. }) {
                    // Application data: the known pattern, counted as sent.
                    let n = payload.len() as u64;
                    let data: Vec<u8> = (self.app_sent..self.app_sent + n).map(app_byte).collect();
                    self.app_sent += n;
                    self.peer_seal(23, &data);
                } else if typ == 0 {
                    // TLS 1.3: an inner plaintext's content type is its last
                    // non-zero byte, so "type 0" with a payload ending in 23
                    // is application data the harness did not count. Type 0
                    // means what it is for: an inner plaintext of zeros.
                    self.peer_seal(0, &vec![0; payload.len()]);
                } else {
                    self.peer_seal(typ, payload);
                }
            }
            Op::Raw(bytes) => {
                if !self.eof_pending {
                    self.flush_backlog();
                    self.to_us.extend(bytes);
                }
            }
            Op::PeerKeyUpdate(req) => {
                if self.eof_pending {
                    return;
                }
                self.flush_backlog();
                match &mut self.peer {
                    Peer::Tls(p) => {
                        let _ = p.refresh_traffic_keys();
                        self.peer_flush();
                    }
                    Peer::Bare { .. } => self.peer_seal(22, &[24, 0, 0, 1, req as u8]),
                    Peer::Dead => {}
                }
            }
            Op::PeerCloseNotify => {
                if self.eof_pending {
                    return;
                }
                self.flush_backlog();
                match &mut self.peer {
                    Peer::Tls(p) => {
                        p.send_close_notify();
                        self.peer_flush();
                    }
                    Peer::Bare { .. } => self.peer_seal(21, &[1, 0]),
                    Peer::Dead => {}
                }
            }
            Op::PeerEof => self.eof_pending = true,
            Op::Read(n) => self.read(n),
            Op::Write(n) => {
                let data = vec![0x5a; n];
                let mut out_n = 0;
                let r = rktls_connection_write(self.conn, data.as_ptr(), data.len(), &mut out_n);
                assert!(out_n <= n);
                self.check("write", r, out_n > 0);
            }
            Op::RefreshKeys(req) => {
                let r = rktls_connection_refresh_keys(self.conn, req);
                self.check("refresh_keys", r, false);
            }
            Op::Shutdown => {
                let r = rktls_connection_shutdown(self.conn);
                if self.shutdown_done {
                    // A second shutdown only flushes (or reports the failure).
                    assert_ne!(cat(r), RKTLS_CATEGORY_USAGE, "second shutdown: {r:?}");
                }
                // (WANT_WRITE with a fatal alert queued: that alert, an
                // earlier failure, leaves first; no close_notify was sent.)
                let mut d = 0;
                let fatal_queued = rktls_connection_alert_sent(self.conn, &mut d);
                self.shutdown_done |= r == RKTLS_OK || (r == RKTLS_WANT_WRITE && !fatal_queued);
                self.check("shutdown", r, false);
            }
            Op::Handshake => {
                let r = rktls_connection_handshake(self.conn);
                self.check("handshake", r, false);
            }
            Op::Chunk(n) => self.chunk = n,
        }
    }

    /// Everything the peer was asked to send leaves before what comes
    /// next; what rktls will not take now is dropped, not buffered here.
    fn flush_backlog(&mut self) {
        while self.backlog > 0 && !matches!(self.peer, Peer::Dead) {
            self.refill();
            if self.backlog > 0 && self.exchange() == 0 {
                self.backlog = 0;
            }
        }
    }

    fn read(&mut self, n: usize) {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        let r = rktls_connection_read(self.conn, buf.as_mut_ptr(), n, &mut got);
        assert!(got <= n);
        if r == RKTLS_OK {
            assert!(got > 0, "read returned OK with no data");
        } else {
            assert_eq!(got, 0, "read returned {r:?} with data");
        }
        for (i, &b) in buf[..got].iter().enumerate() {
            let off = self.app_read + i as u64;
            assert!(
                off < self.app_sent,
                "read more than the peer sent ({} bytes)",
                self.app_sent
            );
            assert_eq!(b, app_byte(off), "application byte {off} differs");
        }
        self.app_read += got as u64;
        self.check("read", r, got > 0);
    }

    /// The invariants on one result.
    fn check(&mut self, what: &str, r: rktls_result, progressed: bool) {
        assert_ne!(r, RKTLS_ERR_PANIC, "{what}: panic caught at the boundary");
        assert_ne!(r, RKTLS_ERR_INTERNAL, "{what}: internal error");
        if let Some(f) = self.failed {
            assert!(
                r == f || r == RKTLS_WANT_WRITE || (r == RKTLS_OK && progressed && what == "read"),
                "{what} after failure {f:?} returned {r:?}"
            );
            return;
        }
        let c = cat(r);
        if matches!(
            c,
            RKTLS_CATEGORY_ALERT
                | RKTLS_CATEGORY_PROTOCOL
                | RKTLS_CATEGORY_IO
                | RKTLS_CATEGORY_INTERNAL
        ) || r == RKTLS_ERR_TRUNCATED
        {
            self.failed = Some(r);
            if c == RKTLS_CATEGORY_PROTOCOL {
                self.expect_alert(what, r);
            }
        }
    }

    /// A protocol failure: its fatal alert reaches a peer that can read it.
    fn expect_alert(&mut self, what: &str, r: rktls_result) {
        let mut desc = 0u8;
        let sent = rktls_connection_alert_sent(self.conn, &mut desc);
        let mut msg = [0u8; 256];
        let mut n = 0;
        let _ =
            rktls_connection_error_message(self.conn, msg.as_mut_ptr().cast(), msg.len(), &mut n);
        let msg = String::from_utf8_lossy(&msg[..n.min(msg.len())]).into_owned();
        if self.shutdown_done {
            // Nothing follows our close_notify (RFC 8446 §6.1): no alert,
            // and none reported.
            assert!(
                !sent,
                "{what}: {r:?}: alert {desc} reported after close_notify ({msg})"
            );
            let _ = rktls_connection_flush(self.conn);
            let out = self.collect();
            let before = self.alerts_at_peer.len();
            self.peer_receive(&out);
            assert_eq!(
                self.alerts_at_peer.len(),
                before,
                "{what}: {r:?}: an alert reached the peer after close_notify"
            );
            return;
        }
        assert!(sent, "{what}: {r:?} without an alert sent ({msg})");
        // The alert leaves with the next call in fd mode, or is taken.
        let _ = rktls_connection_flush(self.conn);
        let was_tls = matches!(self.peer, Peer::Tls(_));
        let out = self.collect();
        self.peer_receive(&out);
        // Readable unless the peer lost track of rktls' keys on the way.
        let readable = match &self.peer {
            Peer::Tls(_) => true,
            Peer::Bare { opener, .. } => opener.is_some(),
            Peer::Dead => was_tls,
        };
        // A rustls peer does not report warning alerts: the refused
        // renegotiation's warning no_renegotiation (then close_notify) is
        // checked byte for byte by src/connection/rfc_alerts/tests.rs.
        let warning_only = r == RKTLS_ERR_RENEGOTIATION && was_tls;
        if readable && !out.is_empty() && !warning_only {
            assert_eq!(
                self.alerts_at_peer.last(),
                Some(&desc),
                "{what}: {r:?}: alert_sent says {desc}, the peer received {:?}",
                self.alerts_at_peer
            );
        }
    }

    /// Let the transport run until nothing moves (bounded).
    fn settle(&mut self) {
        for _ in 0..16 {
            if self.exchange() == 0 {
                break;
            }
        }
    }

    /// Read whatever is left (bounded), then free.
    fn finish(&mut self) {
        for _ in 0..4096 {
            self.deliver();
            let before = self.app_read;
            self.read(16 * 1024);
            if self.app_read == before && self.to_us.is_empty() && self.backlog == 0 {
                break;
            }
            if self.failed.is_some() && self.app_read == before {
                break;
            }
            let out = self.collect();
            self.peer_receive(&out);
            self.peer_flush();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        rktls_connection_free(self.conn);
    }
}
