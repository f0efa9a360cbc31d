//! The `api_sequence` fuzz target: a fuzzer-chosen sequence of C API calls
//! on configs, acceptors and connections, the way a careless C caller might
//! make them: out of order, repeated, after a consuming call, with NULLs,
//! zero and huge lengths, and with pointers from getters read later.
//!
//! Invariants: no crash (and, under AddressSanitizer, no invalid access),
//! no panic or internal error at the boundary, every misuse the harness
//! knows it made answered with a usage-category code, every pointer a
//! getter returned still reading the same bytes while its owner lives, and
//! (when the caller gives a heap probe) no memory left after everything
//! is freed.

use std::ffi::c_char;
use std::ptr::{null, null_mut};

use crate::acceptor::*;
use crate::alert::*;
use crate::config::*;
use crate::connection::events::*;
use crate::connection::*;
use crate::ffi::rktls_last_error_message;
use crate::result::rktls_category::*;
use crate::result::rktls_result::{self, *};
use crate::result::{rktls_result_category, rktls_result_str};

use super::stream::Pems;

/// A huge length, passed only with a NULL pointer (never a lie about a
/// real buffer: that would be the caller's undefined behaviour).
const HUGE: usize = usize::MAX / 2;

/// A pointer a getter returned, the bytes it showed, and its owner.
struct Saved {
    owner: Owner,
    ptr: *const u8,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    Conn(usize),
    Accepted,
    Alert,
}

struct State<'p> {
    pems: &'p Pems,
    sb: *mut rktls_server_config_builder,
    cb: *mut rktls_client_config_builder,
    sc: *const rktls_server_config,
    cc: *const rktls_client_config,
    /// conns[0] a server, conns[1] a client (buffer mode).
    conns: [*mut rktls_connection; 2],
    acceptor: *mut rktls_acceptor,
    accepted: *mut rktls_accepted,
    alert: *mut rktls_alert,
    saved: Vec<Saved>,
}

fn cat(r: rktls_result) -> crate::result::rktls_category {
    rktls_result_category(r as u32)
}

/// Any call: no panic, no internal error.
fn sane(what: &str, r: rktls_result) -> rktls_result {
    assert_ne!(r, RKTLS_ERR_PANIC, "{what}: panic at the boundary");
    assert_ne!(r, RKTLS_ERR_INTERNAL, "{what}: internal error");
    assert_ne!(
        cat(r),
        RKTLS_CATEGORY_UNKNOWN,
        "{what}: unknown code {}",
        r as u32
    );
    r
}

/// A call the harness knows is a misuse.
fn misuse(what: &str, r: rktls_result) {
    sane(what, r);
    assert_eq!(
        cat(r),
        RKTLS_CATEGORY_USAGE,
        "{what}: misuse answered with {r:?}"
    );
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

impl<'p> State<'p> {
    fn new(pems: &'p Pems) -> Self {
        State {
            pems,
            sb: null_mut(),
            cb: null_mut(),
            sc: null(),
            cc: null(),
            conns: [null_mut(); 2],
            acceptor: null_mut(),
            accepted: null_mut(),
            alert: null_mut(),
            saved: Vec::new(),
        }
    }

    fn forget(&mut self, owner: Owner) {
        self.check_saved();
        self.saved.retain(|s| s.owner != owner);
    }

    /// Every saved pointer still shows the same bytes.
    fn check_saved(&self) {
        for s in &self.saved {
            // SAFETY: the API documents these valid while the owner lives,
            // and the owner is alive (forget() runs before any free).
            let now = unsafe { std::slice::from_raw_parts(s.ptr, s.bytes.len()) };
            assert_eq!(
                now,
                &s.bytes[..],
                "pointer from a getter of {:?} changed",
                s.owner
            );
        }
    }

    fn save(&mut self, owner: Owner, ptr: *const u8, len: usize) {
        if ptr.is_null() || len == 0 {
            return;
        }
        // SAFETY: just returned by the API with this length.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
        self.saved.push(Saved { owner, ptr, bytes });
    }

    fn free_conn(&mut self, i: usize) {
        self.forget(Owner::Conn(i));
        rktls_connection_free(self.conns[i]);
        self.conns[i] = null_mut();
    }

    fn free_all(&mut self) {
        self.check_saved();
        self.free_conn(0);
        self.free_conn(1);
        self.forget(Owner::Accepted);
        rktls_accepted_free(self.accepted);
        self.forget(Owner::Alert);
        rktls_alert_free(self.alert);
        rktls_acceptor_free(self.acceptor);
        rktls_server_config_builder_free(self.sb);
        rktls_client_config_builder_free(self.cb);
        rktls_server_config_free(self.sc);
        rktls_client_config_free(self.cc);
        *self = State::new(self.pems);
    }

    /// Move TLS bytes from conns[from] to conns[to] (and to the acceptor
    /// when `to` is 2). Unconsumed bytes are dropped: a lossy network.
    fn shuttle(&mut self, from: usize, to: usize, len: usize) {
        let mut buf = vec![0u8; len.clamp(1, 32 * 1024)];
        let mut n = 0;
        let r = rktls_connection_take_tls(self.conns[from], buf.as_mut_ptr(), buf.len(), &mut n);
        if self.conns[from].is_null() {
            misuse("take_tls(NULL)", r);
            return;
        }
        sane("take_tls", r);
        let mut used = 0;
        let r = if to == 2 {
            rktls_acceptor_feed(self.acceptor, buf.as_ptr(), n, &mut used)
        } else {
            rktls_connection_feed_tls(self.conns[to], buf.as_ptr(), n, &mut used)
        };
        sane("feed", r);
        assert!(used <= n);
    }

    fn step(&mut self, inp: &mut Input) -> Option<()> {
        let op = inp.byte()?;
        let arg = inp.byte()?;
        let i = (arg & 1) as usize;
        match op % 24 {
            0 => {
                rktls_server_config_builder_free(self.sb);
                self.sb = null_mut();
                sane(
                    "server_builder_new",
                    rktls_server_config_builder_new(&mut self.sb),
                );
                misuse(
                    "server_builder_new(NULL)",
                    rktls_server_config_builder_new(null_mut()),
                );
            }
            1 => {
                let (c, k) = (&self.pems.cert, &self.pems.key);
                let r = match arg % 4 {
                    0 => rktls_server_config_builder_add_cert_key_pem(
                        self.sb,
                        c.as_ptr(),
                        c.len(),
                        k.as_ptr(),
                        k.len(),
                    ),
                    1 => {
                        let r = rktls_server_config_builder_add_cert_key_pem(
                            self.sb,
                            null(),
                            HUGE,
                            k.as_ptr(),
                            k.len(),
                        );
                        misuse("add_cert_key_pem(NULL, HUGE)", r);
                        r
                    }
                    2 => {
                        // Truncated PEM: a config error, not a crash.
                        let n = (arg as usize * 7) % c.len();
                        rktls_server_config_builder_add_cert_key_pem(
                            self.sb,
                            c.as_ptr(),
                            n,
                            k.as_ptr(),
                            k.len(),
                        )
                    }
                    _ => rktls_server_config_builder_add_cert_key_pem(
                        self.sb,
                        c.as_ptr(),
                        c.len(),
                        null(),
                        0,
                    ),
                };
                if self.sb.is_null() {
                    misuse("add_cert_key_pem(NULL builder)", r);
                }
                sane("add_cert_key_pem", r);
            }
            2 => {
                let n = inp.byte()? as usize % 16;
                let wire = inp.bytes(n);
                let r = rktls_server_config_builder_set_alpn(self.sb, wire.as_ptr(), wire.len());
                sane("server set_alpn", r);
                let r = rktls_client_config_builder_set_alpn(self.cb, wire.as_ptr(), wire.len());
                sane("client set_alpn", r);
            }
            3 => {
                let n = inp.byte()? as usize % 4;
                let raw = inp.bytes(n * 2);
                let v: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                let p = if arg & 2 != 0 { v.as_ptr() } else { null() };
                let r = rktls_server_config_builder_set_versions(self.sb, p, v.len());
                sane("set_versions", r);
                if !self.sb.is_null() && p.is_null() && !v.is_empty() {
                    misuse("set_versions(NULL, n)", r);
                }
                let r = rktls_client_config_builder_set_cipher_suites(self.cb, p, v.len());
                sane("set_cipher_suites", r);
            }
            4 => {
                rktls_server_config_free(self.sc);
                self.sc = null();
                let had = !self.sb.is_null();
                let r = rktls_server_config_builder_build(self.sb, &mut self.sc);
                sane("server build", r);
                if !had {
                    misuse("build(NULL)", r);
                }
                // Always consumed.
                self.sb = null_mut();
            }
            5 => {
                rktls_client_config_builder_free(self.cb);
                self.cb = null_mut();
                sane(
                    "client_builder_new",
                    rktls_client_config_builder_new(&mut self.cb),
                );
                let ca = &self.pems.ca;
                let r = if arg & 2 != 0 {
                    rktls_client_config_builder_add_roots_pem(self.cb, ca.as_ptr(), ca.len())
                } else {
                    rktls_client_config_builder_add_roots_pem(self.cb, null(), HUGE)
                };
                if arg & 2 == 0 {
                    misuse("add_roots_pem(NULL, HUGE)", r);
                }
                sane("add_roots_pem", r);
            }
            6 => {
                rktls_client_config_free(self.cc);
                self.cc = null();
                let had = !self.cb.is_null();
                let r = rktls_client_config_builder_build(self.cb, &mut self.cc);
                if !had {
                    misuse("client build(NULL)", r);
                }
                sane("client build", r);
                self.cb = null_mut();
            }
            7 => {
                self.free_conn(0);
                let r = rktls_server_connection_new(self.sc, &mut self.conns[0]);
                if self.sc.is_null() {
                    misuse("server_connection_new(NULL config)", r);
                }
                sane("server_connection_new", r);
            }
            8 => {
                self.free_conn(1);
                let name: &[u8] = match arg % 4 {
                    0 => b"localhost\0",
                    1 => b"\0",
                    2 => b"not a name!\0",
                    _ => b"127.0.0.1\0",
                };
                let r = rktls_client_connection_new(
                    self.cc,
                    name.as_ptr() as *const c_char,
                    &mut self.conns[1],
                );
                if self.cc.is_null() || arg % 4 == 1 || arg % 4 == 2 {
                    misuse("client_connection_new(bad)", r);
                }
                sane("client_connection_new", r);
            }
            9 => {
                let r = rktls_connection_handshake(self.conns[i]);
                if self.conns[i].is_null() {
                    misuse("handshake(NULL)", r);
                }
                sane("handshake", r);
            }
            10 => {
                let len = inp.byte()? as usize * 64 + 1;
                self.shuttle(i, 1 - i, len);
            }
            11 => {
                let mut n = 0;
                let r = match arg % 4 {
                    0 => rktls_connection_read(self.conns[i], null_mut(), HUGE, &mut n),
                    1 => {
                        let mut b = [0u8; 1];
                        rktls_connection_read(self.conns[i], b.as_mut_ptr(), 0, &mut n)
                    }
                    2 => {
                        let mut b = [0u8; 1];
                        rktls_connection_read(self.conns[i], b.as_mut_ptr(), 1, null_mut())
                    }
                    _ => {
                        let mut b = vec![0u8; 4096];
                        rktls_connection_read(self.conns[i], b.as_mut_ptr(), b.len(), &mut n)
                    }
                };
                if arg % 4 != 3 {
                    misuse("read(bad args)", r);
                }
                sane("read", r);
            }
            12 => {
                let mut n = 0;
                let data = [0x41u8; 3000];
                let r = match arg % 3 {
                    0 => rktls_connection_write(self.conns[i], null(), HUGE, &mut n),
                    1 => {
                        rktls_connection_write(self.conns[i], data.as_ptr(), data.len(), null_mut())
                    }
                    _ => rktls_connection_write(self.conns[i], data.as_ptr(), data.len(), &mut n),
                };
                if arg % 3 != 2 || self.conns[i].is_null() {
                    misuse("write(bad args)", r);
                }
                sane("write", r);
                assert!(n <= data.len());
            }
            13 => {
                let r = rktls_connection_shutdown(self.conns[i]);
                if self.conns[i].is_null() {
                    misuse("shutdown(NULL)", r);
                }
                sane("shutdown", r);
                sane("flush", rktls_connection_flush(self.conns[i]));
            }
            14 => {
                let mut n = 0;
                misuse(
                    "feed_tls(NULL, HUGE)",
                    rktls_connection_feed_tls(self.conns[i], null(), HUGE, &mut n),
                );
                let r = rktls_connection_feed_eof(self.conns[i]);
                if self.conns[i].is_null() {
                    misuse("feed_eof(NULL)", r);
                }
                sane("feed_eof", r);
                let mut b = [0u8; 1];
                sane(
                    "take_tls(len 0)",
                    rktls_connection_take_tls(self.conns[i], b.as_mut_ptr(), 0, &mut n),
                );
                assert_eq!(n, 0);
            }
            15 => {
                let fd = if arg & 2 != 0 { -1 } else { 1_000_000 };
                let r = rktls_connection_set_fd(self.conns[i], fd);
                if fd < 0 || self.conns[i].is_null() {
                    misuse("set_fd(bad)", r);
                }
                sane("set_fd", r);
            }
            16 => {
                // Getters; keep the pointers and look again later.
                let c = self.conns[i];
                let (mut p, mut n) = (null::<u8>(), 0usize);
                if sane("alpn", rktls_connection_alpn(c, &mut p, &mut n)) == RKTLS_OK {
                    self.save(Owner::Conn(i), p, n);
                }
                let count = rktls_connection_peer_cert_count(c);
                let idx = arg as usize % (count + 2);
                let r = rktls_connection_peer_cert(c, idx, &mut p, &mut n);
                if idx >= count {
                    misuse("peer_cert(out of range)", r);
                } else if sane("peer_cert", r) == RKTLS_OK {
                    self.save(Owner::Conn(i), p, n);
                }
                let mut buf = [0u8; 8];
                let len = arg as usize % 9;
                sane(
                    "server_name",
                    rktls_connection_server_name(c, buf.as_mut_ptr().cast(), len, &mut n),
                );
                sane(
                    "error_message",
                    rktls_connection_error_message(c, buf.as_mut_ptr().cast(), len, &mut n),
                );
                misuse(
                    "server_name(NULL, HUGE)",
                    rktls_connection_server_name(c, null_mut(), HUGE, &mut n),
                );
                let mut d = 0u8;
                rktls_connection_alert_sent(c, &mut d);
                rktls_connection_alert_received(c, null_mut());
                rktls_connection_protocol_version(c);
                rktls_connection_cipher_suite(c);
                rktls_connection_is_resumed(c);
                rktls_connection_is_handshaking(c);
                rktls_connection_pending_tls(c);
                rktls_connection_errno(c);
                rktls_connection_ktls_tx(c);
                rktls_connection_ktls_rx(c);
            }
            17 => self.free_conn(i),
            18 => {
                // The acceptor: new, fed by the client, accept, into a connection.
                match arg % 4 {
                    0 => {
                        rktls_acceptor_free(self.acceptor);
                        self.acceptor = null_mut();
                        sane("acceptor_new", rktls_acceptor_new(&mut self.acceptor));
                    }
                    1 => self.shuttle(1, 2, 16 * 1024),
                    2 => {
                        self.forget(Owner::Accepted);
                        rktls_accepted_free(self.accepted);
                        self.accepted = null_mut();
                        self.forget(Owner::Alert);
                        rktls_alert_free(self.alert);
                        self.alert = null_mut();
                        let r = rktls_acceptor_accept(
                            self.acceptor,
                            &mut self.accepted,
                            &mut self.alert,
                        );
                        if self.acceptor.is_null() {
                            misuse("accept(NULL)", r);
                        }
                        sane("accept", r);
                    }
                    _ => {
                        self.free_conn(0);
                        self.forget(Owner::Alert);
                        rktls_alert_free(self.alert);
                        self.alert = null_mut();
                        let r = rktls_accepted_into_connection(
                            self.accepted,
                            self.sc,
                            &mut self.conns[0],
                            &mut self.alert,
                        );
                        if self.accepted.is_null() || self.sc.is_null() {
                            misuse("into_connection(NULL)", r);
                        }
                        sane("into_connection", r);
                    }
                }
            }
            19 => {
                // Accepted and alert getters (pointers kept).
                let a = self.accepted;
                let (mut p, mut n) = (null::<u16>(), 0usize);
                if sane(
                    "cipher_suites",
                    rktls_accepted_cipher_suites(a, &mut p, &mut n),
                ) == RKTLS_OK
                {
                    self.save(Owner::Accepted, p.cast(), n * 2);
                }
                let count = rktls_accepted_alpn_count(a);
                let (mut q, mut m) = (null::<u8>(), 0usize);
                let idx = arg as usize % (count + 1);
                let r = rktls_accepted_alpn(a, idx, &mut q, &mut m);
                if idx >= count {
                    misuse("accepted_alpn(out of range)", r);
                } else if sane("accepted_alpn", r) == RKTLS_OK {
                    self.save(Owner::Accepted, q, m);
                }
                let mut buf = [0u8; 4];
                sane(
                    "accepted_server_name",
                    rktls_accepted_server_name(
                        a,
                        buf.as_mut_ptr().cast(),
                        arg as usize % 5,
                        &mut m,
                    ),
                );
                if sane("alert_bytes", rktls_alert_bytes(self.alert, &mut q, &mut m)) == RKTLS_OK {
                    self.save(Owner::Alert, q, m);
                }
                rktls_alert_pending(self.alert);
                rktls_alert_present(self.alert);
                rktls_alert_get_description(self.alert);
            }
            20 => {
                let r = rktls_connection_refresh_keys(self.conns[i], arg & 2 != 0);
                if self.conns[i].is_null() {
                    misuse("refresh_keys(NULL)", r);
                }
                sane("refresh_keys", r);
            }
            21 => {
                let mut ev = null_mut();
                let payload = inp.bytes(arg as usize % 8);
                let r = rktls_connection_process_record(
                    self.conns[i],
                    inp.byte()?,
                    payload.as_ptr(),
                    payload.len(),
                    &mut ev,
                );
                sane("process_record", r);
                let n = rktls_events_count(ev);
                for k in 0..n + 1 {
                    rktls_events_type(ev, k);
                    let (mut p, mut m) = (null::<u8>(), 0usize);
                    sane("events_data", rktls_events_data(ev, k, &mut p, &mut m));
                }
                rktls_events_free(ev);
                misuse(
                    "process_record(NULL, HUGE)",
                    rktls_connection_process_record(self.conns[i], 23, null(), HUGE, &mut ev),
                );
                sane("control_sent", rktls_connection_control_sent(self.conns[i]));
            }
            22 => {
                // Configs may be released while connections use them.
                if arg & 2 != 0 {
                    rktls_server_config_free(self.sc);
                    self.sc = null();
                } else {
                    rktls_client_config_free(self.cc);
                    self.cc = null();
                }
            }
            _ => {
                let mut n = 0;
                let mut buf = [0u8; 16];
                sane(
                    "last_error",
                    rktls_last_error_message(buf.as_mut_ptr().cast(), arg as usize % 17, &mut n),
                );
                misuse(
                    "last_error(NULL, HUGE)",
                    rktls_last_error_message(null_mut(), HUGE, &mut n),
                );
                rktls_result_str(u32::from(arg) * 7);
                rktls_alert_description_str(arg);
                rktls_cipher_suite_name(u16::from(arg) << 8 | u16::from(arg));
            }
        }
        self.check_saved();
        Some(())
    }
}

/// Run one input. `heap` gives the bytes in use, where the caller can
/// count them: everything freed at the end must return within `slack`.
pub fn run(pems: &Pems, data: &[u8], heap: Option<&dyn Fn() -> usize>) {
    let base = heap.map(|f| f());
    {
        let mut s = State::new(pems);
        let mut inp = Input(data);
        let mut steps = 0;
        while steps < 500 && s.step(&mut inp).is_some() {
            steps += 1;
        }
        s.free_all();
    }
    if let (Some(f), Some(base)) = (heap, base) {
        let now = f();
        // The thread's last-error message may have changed size.
        assert!(now <= base + 1024, "{} bytes leaked", now - base);
    }
}

/// Seeds: the honest sequences (a full handshake and data, directly and
/// through the acceptor), then the same with misuse mixed in.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut honest = vec![0, 0, 1, 0, 4, 0, 5, 2, 6, 0, 7, 0, 8, 0];
    for _ in 0..6 {
        honest.extend_from_slice(&[9, 1, 10, 255, 9, 0, 10, 254]);
    }
    honest.extend_from_slice(&[12, 2, 10, 255, 11, 3, 16, 0, 16, 1, 13, 0, 10, 254, 11, 1]);
    let mut accept = vec![
        0, 0, 1, 0, 4, 0, 5, 2, 6, 0, 8, 0, 9, 1, 18, 0, 18, 1, 18, 2, 19, 0, 18, 3, 19, 1,
    ];
    for _ in 0..6 {
        accept.extend_from_slice(&[9, 0, 10, 254, 9, 1, 10, 255]);
    }
    accept.extend_from_slice(&[16, 0, 16, 1, 17, 1, 16, 0, 22, 2, 9, 0]);
    let mut misuse = honest.clone();
    misuse.extend_from_slice(&[
        11, 0, 11, 1, 11, 2, 12, 0, 12, 1, 14, 0, 15, 2, 15, 0, 20, 0, 21, 2, 1, 2, 22, 23, 4, 3,
        7, 22, 0, 17, 0, 9, 0, 13, 0, 23, 9,
    ]);
    vec![("honest", honest), ("acceptor", accept), ("misuse", misuse)]
}
