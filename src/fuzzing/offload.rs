//! The `offload_records` fuzz target: arbitrary (record type, payload)
//! sequences into the state machine that runs after the offload, over the
//! kTLS emulation (`kernel_emul`: it encrypts and decrypts with the exact
//! key bytes rktls installs), through `rktls_connection_read()` or the
//! event API (`rktls_connection_process_record()` and `rktls_events_*`).
//!
//! The peer is a rustls connection while it sends what rustls can
//! (application data, KeyUpdate, close_notify); the first arbitrary record
//! turns it into a bare record layer from its extracted secrets, as in the
//! stream targets ([`super::stream`]).
//!
//! Invariants: no panic, no internal error, bounded heap; application data
//! is delivered in order and only what the peer sent; a failure is sticky
//! and a protocol failure's alert reaches the peer; every record rktls
//! sends decrypts at the peer (its TX keys change only after the KeyUpdate
//! announcing them went out: in the event style, only at
//! `rktls_connection_control_sent()`); every record the peer sends under
//! new keys decrypts (RX keys installed first). While the peer has sent only
//! records the [`Model`] understands, the connection ends exactly where it
//! predicts (the 5th warning alert, the 33rd KeyUpdate without data
//! between, a renegotiation attempt, a KeyUpdate on a kernel that cannot
//! rekey, a fatal alert, close_notify), with that code and alert, after
//! delivering every byte sent before that record.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

pub use super::offload_program::seeds;
use super::offload_program::{op, Facts, Model, OffOp};
use super::stream::{app_byte, cat, check_ok, Pems, Side, StreamTarget, MEMORY_LIMIT};
use super::stream_program::{real_client_hello, Input};
use crate::connection::events::*;
use crate::connection::*;
use crate::kernel_emul;
use crate::record::{Opener, Sealer};
use crate::result::rktls_category::*;
use crate::result::rktls_result::{self, *};
use crate::wire::{self, MAX_FRAGMENT};

/// Most peer application data one input can ask for.
const MAX_BACKLOG: u64 = 4 << 20;

/// Configs for both sides, kTLS required.
pub struct OffloadTarget {
    server: StreamTarget,
    client: StreamTarget,
}

impl OffloadTarget {
    pub fn new(pems: &Pems) -> Self {
        let req = crate::ktls::rktls_ktls_mode::RKTLS_KTLS_REQUIRE as u32;
        OffloadTarget {
            server: StreamTarget::with_ktls(Side::Server, pems, req),
            client: StreamTarget::with_ktls(Side::Client, pems, req),
        }
    }

    /// One input: byte 0 picks the suite (bits 0-1), rktls' side (bit 2),
    /// the event style (bit 3) and a kernel that cannot rekey (bit 4); the
    /// rest is a program (see [`OffOp`]). `heap` gives the bytes in use.
    pub fn run(&self, data: &[u8], heap: Option<&dyn Fn() -> usize>) {
        let Some((&head, prog)) = data.split_first() else {
            return;
        };
        let t = if head & 4 != 0 {
            &self.client
        } else {
            &self.server
        };
        let rekey = head & 16 == 0;
        kernel_emul::install(rekey);
        let mut h = Harness::new(t, (head & 3) as usize, head & 8 != 0, rekey);
        h.handshake();
        let base = heap.map(|f| f());
        let mut input = Input(prog);
        let mut steps = 0;
        while let Some(op) = op(&mut input) {
            h.apply(op);
            h.settle();
            steps += 1;
            if let (Some(f), Some(base)) = (heap, base) {
                let used = f().saturating_sub(base + h.harness_bytes());
                assert!(
                    used < MEMORY_LIMIT,
                    "heap grew by {used} bytes after {steps} steps"
                );
            }
            if steps > 2000 {
                break;
            }
        }
        h.finish();
        drop(h);
        kernel_emul::remove();
    }
}

/// A close_notify alert as (level, description).
const CLOSE_NOTIFY: (u8, u8) = (1, 0);

enum Peer {
    Tls(Box<rustls::Connection>),
    Bare {
        suite: rustls::SupportedCipherSuite,
        sealer: Sealer,
        /// None once rktls changed its keys (a KeyUpdate the peer saw).
        opener: Option<Opener>,
        inbuf: Vec<u8>,
    },
    /// Received a fatal alert (or close_notify): reads nothing more.
    Dead,
}

struct Harness {
    conn: *mut rktls_connection,
    ours: OwnedFd,
    theirs: OwnedFd,
    peer: Peer,
    facts: Facts,
    events: bool,
    model: Model,
    to_us: VecDeque<u8>,
    backlog: u64,
    app_sent: u64,
    app_read: u64,
    /// Bytes of rktls' application data the peer received.
    app_at_peer: u64,
    eof_sent: bool,
    chunk: usize,
    failed: Option<rktls_result>,
    /// The peer's read side ended (close_notify): a clean end.
    closed: bool,
    /// The host (event style) stopped reading: recvmsg failed.
    host_gave_up: bool,
    /// Alerts that reached the peer: (level, description).
    alerts_at_peer: Vec<(u8, u8)>,
    /// The rustls peer failed on its own (it reads nothing more).
    peer_error: Option<String>,
}

fn ignore_sigpipe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: ignoring a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    });
}

impl Harness {
    fn new(t: &StreamTarget, variant: usize, events: bool, rekey: bool) -> Self {
        ignore_sigpipe();
        let (conn, peer) = t.pair(variant);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        check_ok(rktls_connection_set_fd(conn, a.as_raw_fd()), "set_fd");
        Harness {
            conn,
            ours: a.into(),
            theirs: b.into(),
            peer: Peer::Tls(Box::new(peer)),
            facts: Facts {
                tls13: super::stream::VARIANTS[variant].0 == 0x0304,
                client: t.side == Side::Client,
                rekey,
            },
            events,
            model: Model {
                known: true,
                ..Model::default()
            },
            to_us: VecDeque::new(),
            backlog: 0,
            app_sent: 0,
            app_read: 0,
            app_at_peer: 0,
            eof_sent: false,
            chunk: usize::MAX,
            failed: None,
            closed: false,
            host_gave_up: false,
            alerts_at_peer: Vec::new(),
            peer_error: None,
        }
    }

    fn harness_bytes(&self) -> usize {
        let peer = match &self.peer {
            Peer::Bare { inbuf, .. } => inbuf.capacity(),
            _ => 0,
        };
        self.to_us.capacity() + peer + self.alerts_at_peer.capacity() * 2
    }

    /// A real handshake; both directions must end up in the (emulated)
    /// kernel.
    fn handshake(&mut self) {
        for _ in 0..200 {
            let r = rktls_connection_handshake(self.conn);
            assert!(
                matches!(r, RKTLS_OK | RKTLS_WANT_READ | RKTLS_WANT_WRITE),
                "honest handshake failed: {r:?}"
            );
            let moved = self.exchange();
            let peer_done = matches!(&self.peer, Peer::Tls(p) if !p.is_handshaking());
            if r == RKTLS_OK && peer_done && moved == 0 && self.to_us.is_empty() {
                assert!(
                    rktls_connection_ktls_tx(self.conn) && rktls_connection_ktls_rx(self.conn),
                    "not offloaded"
                );
                return;
            }
        }
        panic!("honest handshake made no progress");
    }

    /// Move bytes both ways once; returns how many moved.
    fn exchange(&mut self) -> usize {
        let n = self.peer_receive();
        self.peer_flush();
        n + self.deliver()
    }

    /// The peer reads what rktls sent and checks it.
    fn peer_receive(&mut self) -> usize {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            // SAFETY: buf is valid for writes of its length.
            let r =
                unsafe { libc::read(self.theirs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                return total;
            }
            total += r as usize;
            self.peer_take(&buf[..r as usize]);
        }
    }

    fn peer_take(&mut self, mut bytes: &[u8]) {
        match &mut self.peer {
            Peer::Tls(p) => {
                while !bytes.is_empty() {
                    if p.read_tls(&mut bytes).is_err() {
                        break;
                    }
                    match p.process_new_packets() {
                        Ok(_) => {
                            let mut sink = [0u8; 16384];
                            use std::io::Read;
                            while let Ok(n) = p.reader().read(&mut sink) {
                                if n == 0 {
                                    // rktls' close_notify arrived.
                                    if self.alerts_at_peer.last() != Some(&CLOSE_NOTIFY) {
                                        self.alerts_at_peer.push(CLOSE_NOTIFY);
                                    }
                                    break;
                                }
                                assert!(sink[..n].iter().all(|&b| b == 0x5a), "data differs");
                                self.app_at_peer += n as u64;
                            }
                        }
                        Err(rustls::Error::AlertReceived(d)) => {
                            self.alerts_at_peer.push((2, u8::from(d)));
                            self.peer = Peer::Dead;
                            return;
                        }
                        Err(rustls::Error::DecryptError) => {
                            panic!("the peer cannot decrypt what rktls sent (TX keys)")
                        }
                        Err(e) => {
                            // rustls' own limits (e.g. KeyUpdates it was
                            // sent): it stops reading, alerts unseen.
                            self.peer_error = Some(e.to_string());
                            // Answers the model counted may never leave.
                            self.model.known = false;
                            self.peer = Peer::Dead;
                            return;
                        }
                    }
                }
            }
            Peer::Bare {
                suite,
                opener,
                inbuf,
                ..
            } => {
                inbuf.extend_from_slice(bytes);
                while let Some(n) = wire::whole_record(inbuf) {
                    let mut rec: Vec<u8> = inbuf.drain(..n).collect();
                    let Some(o) = opener else { continue };
                    let Ok((typ, range)) = o.open(&mut rec) else {
                        panic!("the peer cannot decrypt what rktls sent (TX keys)");
                    };
                    let p = &rec[range];
                    match typ {
                        wire::CT_ALERT if p.len() == 2 => {
                            self.alerts_at_peer.push((p[0], p[1]));
                        }
                        wire::CT_APPLICATION_DATA => {
                            assert!(p.iter().all(|&b| b == 0x5a), "data differs");
                            self.app_at_peer += p.len() as u64;
                        }
                        wire::CT_HANDSHAKE if p.first() == Some(&wire::HS_KEY_UPDATE) => {
                            // New keys the bare peer cannot derive.
                            let _ = suite;
                            *opener = None;
                        }
                        _ => {}
                    }
                }
            }
            Peer::Dead => {}
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

    /// Transport towards rktls: at most `chunk` bytes per step.
    fn deliver(&mut self) -> usize {
        self.refill();
        let mut moved = 0;
        while !self.to_us.is_empty() && moved < self.chunk {
            let (a, _) = self.to_us.as_slices();
            let a = &a[..a.len().min(self.chunk - moved)];
            // SAFETY: a is valid for reads of its length.
            let r = unsafe { libc::write(self.theirs.as_raw_fd(), a.as_ptr().cast(), a.len()) };
            if r <= 0 {
                break;
            }
            self.to_us.drain(..r as usize);
            moved += r as usize;
            self.refill();
        }
        if self.eof_sent && self.to_us.is_empty() && self.backlog == 0 {
            // SAFETY: shutting down our own socket.
            unsafe { libc::shutdown(self.theirs.as_raw_fd(), libc::SHUT_WR) };
        }
        moved
    }

    /// The peer turns its backlog into records while its queue is short.
    fn refill(&mut self) {
        while self.backlog > 0 && self.to_us.len() < 64 * 1024 {
            let n = self.backlog.min(MAX_FRAGMENT as u64);
            self.backlog -= n;
            self.send_data(n);
        }
    }

    fn send_data(&mut self, n: u64) {
        let data: Vec<u8> = (self.app_sent..self.app_sent + n).map(app_byte).collect();
        self.model
            .on_record(wire::CT_APPLICATION_DATA, &data, &self.facts, self.app_sent);
        self.app_sent += n;
        match &mut self.peer {
            Peer::Tls(p) => {
                use std::io::Write;
                p.writer().write_all(&data).unwrap();
                self.peer_flush();
            }
            Peer::Bare { sealer, .. } => {
                let mut rec = Vec::new();
                sealer.seal(23, &data, &mut rec).unwrap();
                self.to_us.extend(rec);
            }
            Peer::Dead => {}
        }
    }

    /// Turn the rustls peer into a bare record layer (once).
    fn go_bare(&mut self) {
        if !matches!(self.peer, Peer::Tls(_)) {
            return;
        }
        self.peer_receive();
        self.peer_flush();
        let Peer::Tls(p) = std::mem::replace(&mut self.peer, Peer::Dead) else {
            return;
        };
        let suite = p.negotiated_cipher_suite().unwrap();
        let s = (*p).dangerous_extract_secrets().unwrap();
        self.peer = Peer::Bare {
            suite,
            sealer: Sealer::new(suite, s.tx),
            opener: Some(Opener::new(suite, s.rx)),
            inbuf: Vec::new(),
        };
    }

    /// A bare peer's record; the model hears of it.
    fn seal(&mut self, typ: u8, payload: &[u8]) {
        self.flush_backlog();
        self.go_bare();
        if let Peer::Bare { sealer, .. } = &mut self.peer {
            let mut rec = Vec::new();
            sealer.seal(typ, payload, &mut rec).unwrap();
            self.to_us.extend(rec);
            self.model
                .on_record(typ, payload, &self.facts, self.app_sent);
        }
    }

    /// Everything the peer was asked to send leaves before what comes next.
    fn flush_backlog(&mut self) {
        while self.backlog > 0 {
            self.refill();
            if self.backlog > 0 && self.exchange() == 0 && self.step_reader() == 0 {
                // rktls takes nothing more: what is left is never sent.
                self.backlog = 0;
            }
        }
    }

    fn apply(&mut self, op: OffOp) {
        let sending = !self.eof_sent && !matches!(self.peer, Peer::Dead);
        match op {
            OffOp::PeerData(n) if sending => {
                self.backlog = (self.backlog + n).min(MAX_BACKLOG.saturating_sub(self.app_sent));
            }
            OffOp::Record(typ, payload) if sending => match typ {
                wire::CT_APPLICATION_DATA => {
                    self.flush_backlog();
                    self.go_bare();
                    self.send_data(payload.len().max(1) as u64);
                }
                // TLS 1.3 inner plaintext of zeros: what type 0 means.
                0 => self.seal(0, &vec![0; payload.len()]),
                _ => {
                    self.seal(typ, payload);
                    if self.facts.tls13 && typ == 22 && payload.first() == Some(&24) {
                        self.model.desync = true;
                    }
                }
            },
            OffOp::Raw(bytes) if sending => {
                self.flush_backlog();
                self.model.known = false;
                self.to_us.extend(bytes);
            }
            OffOp::PeerKeyUpdate(req) if sending => {
                self.flush_backlog();
                match &mut self.peer {
                    Peer::Tls(p) if self.facts.tls13 => {
                        p.refresh_traffic_keys().unwrap();
                        self.peer_flush();
                        let ku = [24, 0, 0, 1, 0];
                        self.model.on_record(22, &ku, &self.facts, self.app_sent);
                    }
                    _ => {
                        self.seal(22, &[24, 0, 0, 1, req as u8]);
                        self.model.desync = true;
                    }
                }
            }
            OffOp::Alert(level, desc) if sending => self.seal(21, &[level, desc]),
            OffOp::Renegotiate if sending => {
                let msg = if self.facts.client {
                    vec![0, 0, 0, 0]
                } else {
                    let mut m = real_client_hello();
                    m.splice(0..0, [1, 0, (m.len() >> 8) as u8, m.len() as u8]);
                    m
                };
                self.seal(22, &msg);
            }
            OffOp::PeerCloseNotify if sending => {
                self.flush_backlog();
                match &mut self.peer {
                    Peer::Tls(p) => {
                        p.send_close_notify();
                        self.peer_flush();
                        self.model
                            .on_record(21, &[1, 0], &self.facts, self.app_sent);
                    }
                    _ => self.seal(21, &[1, 0]),
                }
            }
            OffOp::PeerEof if sending => {
                self.eof_sent = true;
                self.model.known = false;
            }
            OffOp::Read(n) => {
                self.read(n);
            }
            OffOp::Write(n) => self.write(n),
            OffOp::RefreshKeys(req) if !self.events => {
                let r = rktls_connection_refresh_keys(self.conn, req);
                if r == RKTLS_OK && req && matches!(self.peer, Peer::Tls(_)) {
                    // rustls answers with a KeyUpdate of its own at once.
                    let ku = [24, 0, 0, 1, 0];
                    self.model.on_record(22, &ku, &self.facts, self.app_sent);
                }
                self.check("refresh_keys", r, false);
            }
            OffOp::Shutdown if !self.events => {
                let r = rktls_connection_shutdown(self.conn);
                self.check("shutdown", r, false);
            }
            OffOp::Chunk(n) => self.chunk = n,
            _ => {}
        }
    }

    fn write(&mut self, n: usize) {
        let data = vec![0x5a; n];
        if self.events {
            // The host writes on the socket itself: the kernel encrypts.
            if self.failed.is_none() && !self.closed {
                let _ = crate::sys::send(self.ours.as_raw_fd(), &data);
            }
            return;
        }
        let mut out_n = 0;
        let r = rktls_connection_write(self.conn, data.as_ptr(), n, &mut out_n);
        assert!(out_n <= n);
        self.check("write", r, out_n > 0);
    }

    /// One read (or, in the event style, records up to `n` bytes);
    /// returns the application bytes it gave.
    fn read(&mut self, n: usize) -> u64 {
        if self.events {
            return self.process(n);
        }
        let mut buf = vec![0u8; n];
        let mut got = 0;
        let r = rktls_connection_read(self.conn, buf.as_mut_ptr(), n, &mut got);
        assert!(got <= n);
        if r == RKTLS_OK {
            assert!(got > 0, "read returned OK with no data");
        } else {
            assert_eq!(got, 0, "read returned {r:?} with data");
        }
        self.got_data(&buf[..got]);
        if r == RKTLS_CLOSED {
            self.on_closed();
        }
        self.check("read", r, got > 0);
        got as u64
    }

    fn got_data(&mut self, d: &[u8]) {
        for (i, &b) in d.iter().enumerate() {
            let off = self.app_read + i as u64;
            assert!(off < self.app_sent, "read more than the peer sent");
            assert_eq!(b, app_byte(off), "application byte {off} differs");
        }
        self.app_read += d.len() as u64;
        if let Some((_, _, before)) = self.model.end.filter(|_| self.model.known) {
            assert!(self.app_read <= before, "data after the connection's end");
        }
    }

    fn on_closed(&mut self) {
        self.closed = true;
        if self.model.known {
            let end = self.model.end.expect("closed, and the model says open");
            assert_eq!(end.0, RKTLS_CLOSED, "closed where the model says {end:?}");
            assert_eq!(self.app_read, end.2, "data before close_notify lost");
        }
    }

    /// The event style: recvmsg records (at most `budget` bytes' worth),
    /// each through process_record, doing what the events say.
    fn process(&mut self, budget: usize) -> u64 {
        let fd = self.ours.as_raw_fd();
        let mut got = 0;
        let mut buf = vec![0u8; 16384 + 256];
        while (got as usize) < budget && !self.host_gave_up && !self.closed {
            if self.failed.is_some() {
                // A host stops at the first error; a call after it is
                // misuse and must give the same failure.
                let mut ev = std::ptr::null_mut();
                let r = rktls_connection_process_record(self.conn, 23, b"x".as_ptr(), 1, &mut ev);
                rktls_events_free(ev);
                self.check("process_record", r, false);
                self.host_gave_up = true;
                break;
            }
            let (t, n) = match crate::ktls::recv_record(fd, &mut buf) {
                Ok((_, 0)) => {
                    self.host_gave_up = true; // EOF
                    break;
                }
                Ok(v) => v,
                Err(e) if crate::sys::would_block(&e) => break,
                Err(e) => {
                    assert_ne!(
                        e.raw_os_error(),
                        Some(libc::EKEYEXPIRED),
                        "a record under new keys before the RX keys were installed"
                    );
                    assert!(
                        !self.model.known || self.model.end.is_some(),
                        "recvmsg failed on an honest record: {e}"
                    );
                    self.host_gave_up = true;
                    break;
                }
            };
            let before = crate::kernel_emul::installs(fd);
            let mut ev = std::ptr::null_mut();
            let r = rktls_connection_process_record(self.conn, t, buf.as_ptr(), n, &mut ev);
            let after = crate::kernel_emul::installs(fd);
            assert_eq!(after.0, before.0, "TX keys changed before control_sent");
            let (mut rx_updated, mut tx_updated, mut data) = (false, false, 0);
            for i in 0..rktls_events_count(ev) {
                match rktls_events_type(ev, i) {
                    rktls_event_type::RKTLS_EVENT_APPLICATION_DATA => {
                        let d = event_data(ev, i);
                        data += d.len();
                        self.got_data(d);
                    }
                    rktls_event_type::RKTLS_EVENT_SEND_CONTROL => {
                        let typ = rktls_events_record_type(ev, i);
                        let d = event_data(ev, i).to_vec();
                        // The peer reads as it goes: a full socket would
                        // cut the emulation's blocking write short.
                        self.peer_receive();
                        crate::ktls::send_record(fd, typ, &d).expect("send control record");
                    }
                    rktls_event_type::RKTLS_EVENT_RX_KEY_UPDATED => rx_updated = true,
                    rktls_event_type::RKTLS_EVENT_TX_KEY_UPDATED => tx_updated = true,
                    rktls_event_type::RKTLS_EVENT_PEER_CLOSED => self.on_closed(),
                    _ => {}
                }
            }
            rktls_events_free(ev);
            assert_eq!(
                after.1 - before.1,
                rx_updated as usize,
                "RX keys installed without RKTLS_EVENT_RX_KEY_UPDATED (or not at all)"
            );
            got += data as u64;
            self.check("process_record", r, data > 0);
            if tx_updated && r == RKTLS_OK {
                let r = rktls_connection_control_sent(self.conn);
                let now = crate::kernel_emul::installs(fd);
                if r == RKTLS_OK {
                    assert_eq!(now.0, before.0 + 1, "control_sent did not install TX keys");
                }
                self.check("control_sent", r, false);
            }
        }
        got
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
        if what == "refresh_keys" && r == RKTLS_ERR_KTLS_NO_REKEY {
            return; // this kernel cannot: the connection goes on
        }
        let c = cat(r);
        let failure = matches!(
            c,
            RKTLS_CATEGORY_ALERT | RKTLS_CATEGORY_PROTOCOL | RKTLS_CATEGORY_IO
        ) || r == RKTLS_ERR_TRUNCATED
            || r == RKTLS_ERR_KTLS_NO_REKEY;
        if !failure {
            return;
        }
        self.failed = Some(r);
        let predicted = self.model.end.filter(|_| self.model.known);
        if self.model.known {
            let end = predicted.unwrap_or_else(|| panic!("{what}: {r:?}, the model says no end"));
            assert_eq!(r, end.0, "{what}: {r:?} where the model says {end:?}");
        }
        let mut received = 0u8;
        // A failure that is an alert received (e.g. after a refused
        // renegotiation, RKTLS_ERR_RENEGOTIATION) owes no alert.
        let got_alert = rktls_connection_alert_received(self.conn, &mut received);
        if (c == RKTLS_CATEGORY_PROTOCOL || r == RKTLS_ERR_KTLS_NO_REKEY) && !got_alert {
            self.expect_alert(what, r, predicted.and_then(|e| e.1));
        }
    }

    /// A protocol failure: its fatal alert reaches a peer that can read it.
    fn expect_alert(&mut self, what: &str, r: rktls_result, predicted: Option<u8>) {
        let _ = rktls_connection_flush(self.conn);
        let readable = match &self.peer {
            Peer::Tls(_) => true,
            Peer::Bare { opener, .. } => opener.is_some(),
            Peer::Dead => false,
        };
        self.peer_receive();
        if self.alerts_at_peer.contains(&CLOSE_NOTIFY) {
            // Nothing follows our close_notify (RFC 8446 6.1): no alert
            // owed and none after it at the peer (alert_sent still names
            // one sent before it, e.g. a refused renegotiation's warning).
            assert_eq!(
                self.alerts_at_peer.last(),
                Some(&CLOSE_NOTIFY),
                "{what}: {r:?}: an alert reached the peer after close_notify"
            );
            return;
        }
        if !readable || self.peer_error.is_some() {
            return;
        }
        let got = self.alerts_at_peer.last().copied();
        let mut desc = 0u8;
        let sent = rktls_connection_alert_sent(self.conn, &mut desc);
        let mut msg = [0u8; 512];
        let mut n = 0;
        let _ =
            rktls_connection_error_message(self.conn, msg.as_mut_ptr().cast(), msg.len(), &mut n);
        let msg = String::from_utf8_lossy(&msg[..n.min(msg.len())]).into_owned();
        assert!(sent, "{what}: {r:?} without an alert sent ({msg})");
        if r == RKTLS_ERR_RENEGOTIATION && got == Some((1, 100)) {
            // A client's refusal: a warning no_renegotiation, then the
            // server ended the connection (a server also sends close_notify
            // after its warning, handled above; the fatal form is the
            // client's fail-fast option).
            assert_eq!(desc, 100, "{what}: {r:?}: alert_sent says {desc}");
            return;
        }
        assert_eq!(
            got,
            Some((2, desc)),
            "{what}: {r:?}: alert_sent says {desc}, the peer received {:?}",
            self.alerts_at_peer
        );
        if let Some(p) = predicted {
            assert_eq!(desc, p, "{what}: {r:?}: alert {desc}, the model says {p}");
        }
    }

    /// One step of the reader, as a host would: read (or process) once.
    fn step_reader(&mut self) -> u64 {
        if self.failed.is_some() || self.closed {
            return 0;
        }
        self.read(64 * 1024)
    }

    fn settle(&mut self) {
        for _ in 0..16 {
            if self.exchange() == 0 {
                break;
            }
        }
    }

    /// Read whatever is left (bounded); then the model's end must be met.
    fn finish(&mut self) {
        // The transport delivers the rest at full speed.
        self.chunk = usize::MAX;
        for _ in 0..4096 {
            self.exchange();
            let before = (self.app_read, self.failed, self.closed);
            self.read(64 * 1024);
            let idle = (self.app_read, self.failed, self.closed) == before;
            if idle && self.to_us.is_empty() && self.backlog == 0 {
                break;
            }
            if (self.failed.is_some() || self.closed || self.host_gave_up) && idle {
                break;
            }
        }
        if let Some((code, _, before)) = self.model.end.filter(|_| self.model.known) {
            let ended = if code == RKTLS_CLOSED {
                self.closed
            } else {
                self.failed == Some(code)
            };
            assert!(ended, "the model's end {code:?} never came");
            assert_eq!(self.app_read, before, "data before the end was lost");
        } else if self.model.known {
            assert!(self.failed.is_none(), "failed: {:?}", self.failed);
            assert_eq!(self.app_read, self.app_sent, "data lost");
        }
    }
}

fn event_data<'a>(ev: *const rktls_events, i: usize) -> &'a [u8] {
    let (mut p, mut n) = (std::ptr::null(), 0);
    check_ok(rktls_events_data(ev, i, &mut p, &mut n), "events_data");
    if n == 0 {
        return &[];
    }
    // SAFETY: valid until rktls_events_free (the caller copies first).
    unsafe { std::slice::from_raw_parts(p, n) }
}

impl Drop for Harness {
    fn drop(&mut self) {
        rktls_connection_free(self.conn);
    }
}
