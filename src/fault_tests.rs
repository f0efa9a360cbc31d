//! Faults through the syscall seam (`sys::fault`), table-driven: a full
//! connection's life (handshake, a request from the peer, a response, then
//! close_notify both ways) is run once cleanly to count its syscalls, then
//! once per (call kind, index, fault) with exactly that call failing:
//! EINTR, EAGAIN, ECONNRESET, EPIPE, and a run where every read or send
//! moves one byte. rktls is the server and, in a second table, the client,
//! in fd mode over a non-blocking socketpair; the peer is plain rustls.
//!
//! Each case must end in a defined way: EINTR and short I/O are invisible
//! (byte-exact success), EAGAIN costs a want-read/want-write and a retry
//! (byte-exact success), a reset or broken pipe is reported as
//! `RKTLS_ERR_IO` with that errno (I/O errors are reports of the call, not
//! latched: a real reset fails again), and a caller that calls again on
//! the healthy socket loses nothing rktls acknowledged. Data either side
//! received is always a prefix of what the other sent. A protocol failure,
//! by contrast, is sticky (checked where one happens). The connection
//! never closes the caller's fd.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use crate::connection::Connection;
use crate::ktls::rktls_ktls_mode;
use crate::result::rktls_result::{self, *};
use crate::sys::fault::{self, Op};
use crate::testutil::{client_config, server_config, Opts};

const REQUEST: usize = 40_000;
const RESPONSE: usize = 100_000;

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Everything arrived both ways, and both close_notifies, after these
    /// I/O failures (code, errno) were reported and the caller called again.
    Complete(Vec<(rktls_result, i32)>),
    /// rktls failed with this code and errno and could not go on.
    Failed(rktls_result, i32),
}

struct Peer {
    tls: rustls::Connection,
    sock: UnixStream,
    got: Vec<u8>,
    to_send: Vec<u8>,
    closed: bool,
}

impl Peer {
    /// Move bytes both ways once, as far as the socket allows.
    fn pump(&mut self) {
        if !self.to_send.is_empty() && !self.tls.is_handshaking() {
            let n = self.tls.writer().write(&self.to_send).unwrap();
            self.to_send.drain(..n);
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        loop {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(_) => {
                    if self.tls.process_new_packets().is_err() {
                        self.closed = true;
                        break;
                    }
                    let mut buf = [0u8; 16384];
                    loop {
                        match self.tls.reader().read(&mut buf) {
                            Ok(0) => {
                                self.closed = true;
                                break;
                            }
                            Ok(n) => self.got.extend_from_slice(&buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => break,
            }
        }
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.sock).is_err() {
                break;
            }
        }
    }
}

/// One life of a connection; `arm` sets the fault plan once both ends exist.
fn life(role: Role, arm: &dyn Fn()) -> (End, Vec<u8>, Vec<u8>) {
    life_ktls(role, None, arm)
}

/// The same, with kTLS in `mode` on the emulated kernel (src/kernel_emul.rs).
fn life_ktls(role: Role, mode: Option<rktls_ktls_mode>, arm: &dyn Fn()) -> (End, Vec<u8>, Vec<u8>) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let o = Opts::default();
    let (mut c, tls) = match role {
        Role::Server => {
            let peer =
                rustls::ClientConnection::new(client_config(&o), "localhost".try_into().unwrap())
                    .unwrap();
            (
                Connection::server(server_config(&o)).unwrap(),
                rustls::Connection::Client(peer),
            )
        }
        Role::Client => {
            let peer = rustls::ServerConnection::new(server_config(&o)).unwrap();
            (
                Connection::client(client_config(&o), "localhost").unwrap(),
                rustls::Connection::Server(peer),
            )
        }
    };
    c.set_fd(a.as_raw_fd()).unwrap();
    if let Some(m) = mode {
        c.set_ktls_mode(m, Default::default());
    }
    let request = pattern(1, REQUEST);
    let response = pattern(2, RESPONSE);
    let mut peer = Peer {
        tls,
        sock: b,
        got: Vec::new(),
        to_send: request.clone(),
        closed: false,
    };
    // rktls reads the request, then writes the response, then shuts down
    // and reads the peer's close_notify.
    let mut got = Vec::new();
    let mut written = 0;
    let mut shut = false;
    let mut peer_shut = false;
    let mut failure: Option<(rktls_result, i32)> = None;
    let mut reported = Vec::new();
    arm();
    let mut buf = vec![0u8; 8192];
    for _ in 0..20_000 {
        let r = if got.len() < REQUEST {
            match c.read(&mut buf) {
                Ok((RKTLS_OK, n)) => {
                    got.extend_from_slice(&buf[..n]);
                    Ok(RKTLS_OK)
                }
                Ok((r, _)) => Ok(r),
                Err(e) => Err(e),
            }
        } else if written < RESPONSE {
            match c.write(&response[written..]) {
                Ok((r, n)) => {
                    written += n;
                    Ok(r)
                }
                Err(e) => Err(e),
            }
        } else if !shut {
            let r = c.shutdown();
            shut = matches!(r, Ok(RKTLS_OK));
            r
        } else {
            match c.read(&mut buf) {
                Ok((RKTLS_OK, n)) => {
                    got.extend_from_slice(&buf[..n]);
                    Ok(RKTLS_OK)
                }
                Ok((r, _)) => Ok(r),
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(RKTLS_CLOSED) => {
                clear_counting();
                return (End::Complete(reported), got, peer.got);
            }
            Ok(RKTLS_OK | RKTLS_WANT_READ | RKTLS_WANT_WRITE) => {}
            Ok(other) => panic!("{role:?}: unexpected result {other:?}"),
            // A reported I/O error: a caller may call again (the fault
            // was one call; a real reset would fail again).
            Err(e) if e.code == RKTLS_ERR_IO && reported.len() < 4 => {
                reported.push((e.code, c.errno()));
            }
            Err(e) => {
                failure = Some((e.code, c.errno()));
                break;
            }
        }
        peer.pump();
        if peer.got.len() >= RESPONSE && !peer_shut && shut {
            peer.tls.send_close_notify();
            peer_shut = true;
            peer.pump();
        }
    }
    clear_counting();
    let (code, errno) = failure.unwrap_or_else(|| {
        panic!(
            "{role:?}: no progress (got {} of the request, peer got {} of the response, shut {shut}, reported {reported:?})",
            got.len(),
            peer.got.len()
        )
    });
    // The failure is sticky.
    let again = c.read(&mut buf).map(|r| r.0);
    assert_eq!(
        again.map_err(|e| e.code),
        Err(code),
        "{role:?}: read after {code:?}"
    );
    let again = c.write(b"x").map(|r| r.0);
    assert_eq!(
        again.map_err(|e| e.code),
        Err(code),
        "{role:?}: write after {code:?}"
    );
    // The caller's fd is still open (rktls never closes it).
    assert!(unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFD) } >= 0);
    peer.pump();
    (End::Failed(code, errno), got, peer.got)
}

impl Connection {
    fn errno(&self) -> i32 {
        crate::connection::rktls_connection_errno(self as *const Connection as *const _)
    }
}

fn check_prefixes(role: Role, case: &str, got: &[u8], peer_got: &[u8]) {
    assert_eq!(
        got,
        &pattern(1, REQUEST)[..got.len()],
        "{role:?} {case}: request bytes differ"
    );
    assert_eq!(
        peer_got,
        &pattern(2, RESPONSE)[..peer_got.len()],
        "{role:?} {case}: response bytes differ"
    );
}

fn walk(role: Role) -> usize {
    let mut cases = 0;
    for op in [Op::Read, Op::Send] {
        // A clean life, counting the calls of this kind.
        let (end, got, peer_got) = life(role, &|| fault::fail_nth(op, u64::MAX, 0));
        assert_eq!(end, End::Complete(vec![]), "{role:?}: clean life");
        assert_eq!((got.len(), peer_got.len()), (REQUEST, RESPONSE));
        let total = LAST.with(|l| l.get())[op.slot()];
        assert!(total > 2, "{role:?}: only {total} {op:?} calls");
        for nth in 0..total {
            for errno in [libc::EINTR, libc::EAGAIN, libc::ECONNRESET, libc::EPIPE] {
                let case = format!("{op:?} call #{nth} of {total} fails with errno {errno}");
                let (end, got, peer_got) = life(role, &|| fault::fail_nth(op, nth, errno));
                check_prefixes(role, &case, &got, &peer_got);
                // EINTR is retried inside; EAGAIN is a want-read/write;
                // a reset or broken pipe is RKTLS_ERR_IO with its errno,
                // and calling again (the socket being fine) loses nothing.
                let expect = match errno {
                    libc::EINTR | libc::EAGAIN => vec![],
                    _ => vec![(RKTLS_ERR_IO, errno)],
                };
                assert_eq!(end, End::Complete(expect), "{role:?} {case}");
                assert_eq!(got.len(), REQUEST, "{role:?} {case}");
                assert_eq!(
                    peer_got.len(),
                    RESPONSE,
                    "{role:?} {case}: acknowledged data lost"
                );
                cases += 1;
            }
        }
        // Every call of this kind moves one byte.
        let (end, got, peer_got) = life(role, &|| fault::short(Some(op)));
        assert_eq!(end, End::Complete(vec![]), "{role:?} short {op:?}");
        check_prefixes(role, "short", &got, &peer_got);
        assert_eq!(
            (got.len(), peer_got.len()),
            (REQUEST, RESPONSE),
            "{role:?} short {op:?}"
        );
        cases += 1;
    }
    eprintln!("{role:?}: {cases} fault cases");
    cases
}

thread_local! {
    /// Calls of each kind in the last life, before its plan was cleared.
    static LAST: std::cell::Cell<[u64; 6]> = const { std::cell::Cell::new([0; 6]) };
}

fn clear_counting() {
    let mut v = [0; 6];
    for op in [
        Op::Read,
        Op::Send,
        Op::SetSockOpt,
        Op::RecvMsg,
        Op::SendMsg,
        Op::SendFile,
    ] {
        v[op.slot()] = fault::count(op);
    }
    LAST.with(|l| l.set(v));
    fault::clear();
}

/// The kernel refuses each setsockopt of the switch in turn (the ULP, TX,
/// RX): PREFER carries on without the refused part, byte-exact; REQUIRE
/// ends with RKTLS_ERR_KTLS_UNAVAILABLE and the peer sees no data lost (it
/// got a prefix, and a close rather than garbage).
#[test]
fn every_setsockopt_of_the_switch_refused_once() {
    let mut cases = 0;
    for role in [Role::Server, Role::Client] {
        crate::kernel_emul::install(true);
        let (end, ..) = life_ktls(role, Some(rktls_ktls_mode::RKTLS_KTLS_REQUIRE), &|| {
            fault::fail_nth(Op::SetSockOpt, u64::MAX, 0)
        });
        crate::kernel_emul::remove();
        assert_eq!(end, End::Complete(vec![]), "{role:?}: clean offloaded life");
        let total = LAST.with(|l| l.get())[Op::SetSockOpt.slot()];
        assert!(total >= 3, "{role:?}: {total} setsockopt calls");
        // The switch itself: TCP_ULP, TLS_TX, TLS_RX (later calls are
        // rekeys, which offload.rs tests cover).
        for nth in 0..3 {
            for errno in [libc::ENOPROTOOPT, libc::EINVAL] {
                for mode in [
                    rktls_ktls_mode::RKTLS_KTLS_PREFER,
                    rktls_ktls_mode::RKTLS_KTLS_REQUIRE,
                ] {
                    let case = format!(
                        "{role:?} {mode:?}: setsockopt #{nth} of {total} fails with {errno}"
                    );
                    crate::kernel_emul::install(true);
                    let (end, got, peer_got) = life_ktls(role, Some(mode), &|| {
                        fault::fail_nth(Op::SetSockOpt, nth, errno)
                    });
                    crate::kernel_emul::remove();
                    check_prefixes(role, &case, &got, &peer_got);
                    if mode == rktls_ktls_mode::RKTLS_KTLS_PREFER {
                        assert_eq!(end, End::Complete(vec![]), "{case}");
                        assert_eq!((got.len(), peer_got.len()), (REQUEST, RESPONSE), "{case}");
                    } else {
                        assert_eq!(end, End::Failed(RKTLS_ERR_KTLS_UNAVAILABLE, 0), "{case}");
                    }
                    cases += 1;
                }
            }
        }
    }
    eprintln!("setsockopt fault cases: {cases}");
}

#[test]
fn every_syscall_of_a_server_life_fails_once() {
    let n = walk(Role::Server);
    eprintln!("server fault cases: {n}");
}

#[test]
fn every_syscall_of_a_client_life_fails_once() {
    let n = walk(Role::Client);
    eprintln!("client fault cases: {n}");
}
