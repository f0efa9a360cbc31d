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
//!
//! Also: recvmsg reporting MSG_CTRUNC at each record after the offload
//! (`sys::fault::ctrunc_nth`), a peer that stalls (non-blocking, and a
//! blocking socket with SO_RCVTIMEO), 10 MB of garbage before, during and
//! after the handshake, and every case again in a child process counting
//! the open fds before and after each.

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
    /// The fatal alert it received, if any.
    alert: Option<u8>,
    /// It read rktls' close_notify (nothing after it is read).
    saw_close: bool,
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
                    if let Err(e) = self.tls.process_new_packets() {
                        if let rustls::Error::AlertReceived(d) = e {
                            self.alert = Some(u8::from(d));
                        }
                        self.closed = true;
                        break;
                    }
                    let mut buf = [0u8; 16384];
                    loop {
                        match self.tls.reader().read(&mut buf) {
                            Ok(0) => {
                                self.closed = true;
                                self.saw_close = true;
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

/// rktls in `role` and its rustls peer, both with the default test configs.
fn pair(role: Role) -> (Connection, rustls::Connection) {
    let o = Opts::default();
    match role {
        Role::Server => (
            Connection::server(server_config(&o)).unwrap(),
            rustls::Connection::Client(
                rustls::ClientConnection::new(client_config(&o), "localhost".try_into().unwrap())
                    .unwrap(),
            ),
        ),
        Role::Client => (
            Connection::client(client_config(&o), "localhost").unwrap(),
            rustls::Connection::Server(rustls::ServerConnection::new(server_config(&o)).unwrap()),
        ),
    }
}

/// One life of a connection; `arm` sets the fault plan once both ends exist.
fn life(role: Role, arm: &dyn Fn()) -> (End, Vec<u8>, Vec<u8>) {
    life_ktls(role, None, arm)
}

/// The same, with kTLS in `mode` on the emulated kernel (src/kernel_emul.rs).
/// In the fd-checking child (`no_fault_case_leaks_an_fd`) the open fds
/// are counted before and after.
fn life_ktls(role: Role, mode: Option<rktls_ktls_mode>, arm: &dyn Fn()) -> (End, Vec<u8>, Vec<u8>) {
    let before = fd_check_start();
    let r = life_inner(role, mode, arm);
    fd_check_end(before, &format!("{role:?} {mode:?}"));
    r
}

thread_local! {
    /// The peer stalls (does nothing) for rounds `start..start + len`.
    static STALL: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    /// After a failed life: the alert rktls says it sent, the alert the
    /// peer got, whether the peer had read rktls' close_notify before.
    static ALERTS: std::cell::Cell<(Option<u8>, Option<u8>, bool)> =
        const { std::cell::Cell::new((None, None, false)) };
}

fn life_inner(
    role: Role,
    mode: Option<rktls_ktls_mode>,
    arm: &dyn Fn(),
) -> (End, Vec<u8>, Vec<u8>) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let (mut c, tls) = pair(role);
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
        alert: None,
        saw_close: false,
    };
    let (stall_from, stall_len) = STALL.with(|s| s.get());
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
    for round in 0..20_000u32 {
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
            // The peer stalls: only a want-read/want-write (above) is right.
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
        if round.wrapping_sub(stall_from) < stall_len {
            continue;
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
    ALERTS.with(|x| x.set((c.alert_sent(), peer.alert, peer.saw_close)));
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

// ---------------------------------------------------------------------------
// Open fds per case. Tests run in threads that open fds of their own, so
// the count is only exact in a child process running the fault cases on
// one thread: `no_fault_case_leaks_an_fd` starts it (RKTLS_FD_CHECK=1).

fn fd_checking() -> bool {
    std::env::var_os("RKTLS_FD_CHECK").is_some()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn fd_check_start() -> usize {
    if fd_checking() {
        open_fds()
    } else {
        0
    }
}

fn fd_check_end(before: usize, case: &str) {
    if fd_checking() {
        let after = open_fds();
        assert_eq!(
            after, before,
            "{case}: open fds {before} before, {after} after"
        );
        FD_CASES.with(|c| c.set(c.get() + 1));
    }
}

thread_local! {
    static FD_CASES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// recvmsg reports MSG_CTRUNC (the record-type control message cut) for
/// each record of an offloaded life in turn: the connection ends with
/// RKTLS_ERR_PROTOCOL and internal_error at the peer, sticky, and the
/// data either side got is a prefix of what the other sent.
fn ctrunc_walk() -> usize {
    let mut cases = 0;
    for role in [Role::Server, Role::Client] {
        for nth in 0..500 {
            crate::kernel_emul::install(true);
            let (end, got, peer_got) =
                life_ktls(role, Some(rktls_ktls_mode::RKTLS_KTLS_REQUIRE), &|| {
                    fault::ctrunc_nth(nth)
                });
            crate::kernel_emul::remove();
            let case = format!("{role:?}: record #{nth} with MSG_CTRUNC");
            check_prefixes(role, &case, &got, &peer_got);
            match end {
                // Past the last record: the life is clean, the walk is done.
                End::Complete(r) if r.is_empty() && nth > 0 => break,
                End::Failed(RKTLS_ERR_PROTOCOL, _) => {
                    let (sent, at_peer, saw_close) = ALERTS.with(|a| a.get());
                    // After our close_notify nothing more is sent, and
                    // alert_sent says so (the record cut was the peer's
                    // answering close_notify).
                    let expect = if saw_close { None } else { Some(80) };
                    assert_eq!(sent, expect, "{case}: alert_sent");
                    assert_eq!(at_peer, expect, "{case}: alert at the peer");
                }
                other => panic!("{case}: {other:?}"),
            }
            cases += 1;
        }
    }
    cases
}

#[test]
fn recvmsg_ctrunc_at_every_record_after_the_offload() {
    let n = ctrunc_walk();
    assert!(n >= 6, "only {n} records walked");
    eprintln!("MSG_CTRUNC fault cases: {n}");
}

/// The peer stalls for a while at points of the handshake and of the
/// transfer: every call meanwhile is a want-read or want-write (the life
/// loop panics on anything else), and the life then completes byte-exact.
fn stall_walk() -> usize {
    let mut cases = 0;
    for role in [Role::Server, Role::Client] {
        for mode in [None, Some(rktls_ktls_mode::RKTLS_KTLS_REQUIRE)] {
            for from in [0, 1, 2, 3, 4, 6, 10, 20, 40] {
                STALL.with(|s| s.set((from, 200)));
                crate::kernel_emul::install(true);
                let (end, got, peer_got) = life_ktls(role, mode, &|| {});
                crate::kernel_emul::remove();
                STALL.with(|s| s.set((0, 0)));
                let case = format!("{role:?} {mode:?}: peer stalls from round {from}");
                check_prefixes(role, &case, &got, &peer_got);
                assert_eq!(end, End::Complete(vec![]), "{case}");
                assert_eq!((got.len(), peer_got.len()), (REQUEST, RESPONSE), "{case}");
                cases += 1;
            }
        }
    }
    cases
}

#[test]
fn a_stalling_peer_costs_want_read_and_loses_nothing() {
    let n = stall_walk();
    eprintln!("stall fault cases: {n}");
}

/// A blocking socket with SO_RCVTIMEO and a peer that stalls, in the
/// handshake and mid-transfer: the call returns RKTLS_WANT_READ when the
/// timeout expires (EAGAIN), and goes on when the peer does.
fn blocking_stall(role: Role) {
    let before = fd_check_start();
    let (a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    a.set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let (mut c, tls) = pair(role);
    c.set_fd(a.as_raw_fd()).unwrap();
    let mut peer = Peer {
        tls,
        sock: b,
        got: Vec::new(),
        to_send: Vec::new(),
        closed: false,
        alert: None,
        saw_close: false,
    };
    // The peer does nothing: the handshake waits for it, then times out.
    // (A client sends its ClientHello first: the server's stall is on the
    // first read, the client's on the read of the server's answer.)
    assert_eq!(c.handshake().map_err(|e| e.msg), Ok(RKTLS_WANT_READ));
    assert_eq!(c.handshake().map_err(|e| e.msg), Ok(RKTLS_WANT_READ));
    let mut r = Ok(RKTLS_WANT_READ);
    for _ in 0..50 {
        peer.pump();
        r = c.handshake().map_err(|e| e.msg);
        if r == Ok(RKTLS_OK) {
            break;
        }
        assert_eq!(r, Ok(RKTLS_WANT_READ), "{role:?}: handshake");
    }
    assert_eq!(r, Ok(RKTLS_OK), "{role:?}: handshake after the stall");
    peer.pump();
    // Mid-transfer: half the request, a stall, the rest.
    let request = pattern(1, 3000);
    peer.tls.writer().write_all(&request[..1500]).unwrap();
    peer.pump();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut want_reads = 0;
    while got.len() < 3000 {
        match c.read(&mut buf).map_err(|e| e.msg) {
            Ok((RKTLS_OK, n)) => got.extend_from_slice(&buf[..n]),
            Ok((RKTLS_WANT_READ, 0)) => {
                want_reads += 1;
                assert!(got.len() >= 1500, "{role:?}: a stall before the first half");
                peer.tls.writer().write_all(&request[1500..]).unwrap();
                peer.pump();
            }
            other => panic!("{role:?}: read during a stall: {other:?}"),
        }
        assert!(want_reads < 3, "{role:?}: no progress");
    }
    assert_eq!(got, request, "{role:?}: bytes differ");
    assert_eq!(want_reads, 1, "{role:?}: the stall was seen once");
    drop(c);
    drop(peer);
    drop(a);
    fd_check_end(before, &format!("{role:?} blocking stall"));
}

#[test]
fn a_stall_on_a_blocking_socket_with_a_receive_timeout_is_want_read() {
    blocking_stall(Role::Server);
    blocking_stall(Role::Client);
}

const GARBAGE: usize = 10 << 20;

/// The peer sends 10 MB of garbage before the handshake (0), after its
/// first flight (1) or after the handshake (2). rktls must fail with a
/// protocol code (sticky), send the alert it reports to the peer, and stop
/// reading: it consumes a bounded amount, not the 10 MB.
fn garbage_case(role: Role, phase: u8, mode: Option<rktls_ktls_mode>) {
    let before = fd_check_start();
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let (mut c, tls) = pair(role);
    c.set_fd(a.as_raw_fd()).unwrap();
    if let Some(m) = mode {
        c.set_ktls_mode(m, Default::default());
    }
    let mut peer = Peer {
        tls,
        sock: b.try_clone().unwrap(),
        got: Vec::new(),
        to_send: Vec::new(),
        closed: false,
        alert: None,
        saw_close: false,
    };
    let case = format!("{role:?} {mode:?} garbage in phase {phase}");
    let step = |c: &mut Connection| -> Result<rktls_result, rktls_result> {
        let mut buf = [0u8; 4096];
        if c.is_handshaking() {
            c.handshake().map_err(|e| e.code)
        } else {
            c.read(&mut buf).map(|r| r.0).map_err(|e| e.code)
        }
    };
    if phase >= 1 {
        let _ = step(&mut c);
        peer.pump();
    }
    if phase == 2 {
        for _ in 0..50 {
            if !c.is_handshaking() && !peer.tls.is_handshaking() {
                break;
            }
            let _ = step(&mut c);
            peer.pump();
        }
        assert!(!c.is_handshaking(), "{case}: no handshake");
        peer.pump();
    }
    // Garbage: no record layer made it (the first byte is no content type).
    let chunk: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    let mut written = 0;
    let code = loop {
        while written < GARBAGE {
            let n = GARBAGE - written;
            match (&b).write(&chunk[..n.min(chunk.len())]) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        match step(&mut c) {
            Ok(RKTLS_WANT_READ | RKTLS_WANT_WRITE | RKTLS_OK) => {}
            Ok(r) => panic!("{case}: {r:?}"),
            Err(e) => break e,
        }
        assert!(written < GARBAGE, "{case}: rktls took all the garbage");
    };
    assert_eq!(
        crate::result::rktls_result_category(code as u32),
        crate::result::rktls_category::RKTLS_CATEGORY_PROTOCOL,
        "{case}: {code:?}"
    );
    // Sticky.
    assert_eq!(step(&mut c), Err(code), "{case}: again");
    // Bounded: what it consumed is what was written less what still waits.
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int.
    unsafe { libc::ioctl(a.as_raw_fd(), libc::FIONREAD, &mut queued) };
    let consumed = written - queued as usize;
    assert!(consumed <= 128 * 1024, "{case}: consumed {consumed} bytes");
    // The alert it reports is the one the peer gets.
    let sent = c.alert_sent();
    assert!(sent.is_some(), "{case}: {code:?} without an alert");
    peer.pump();
    assert_eq!(peer.alert, sent, "{case}: alert at the peer");
    drop(c);
    drop(peer);
    drop((a, b));
    fd_check_end(before, &case);
}

fn garbage_walk() -> usize {
    let mut cases = 0;
    for role in [Role::Server, Role::Client] {
        for phase in 0..3 {
            for mode in [None, Some(rktls_ktls_mode::RKTLS_KTLS_REQUIRE)] {
                crate::kernel_emul::install(true);
                garbage_case(role, phase, mode);
                crate::kernel_emul::remove();
                cases += 1;
            }
        }
    }
    cases
}

#[test]
fn ten_megabytes_of_garbage_end_with_an_alert_and_bounded_reading() {
    let n = garbage_walk();
    eprintln!("garbage fault cases: {n}");
}

/// Every fault case again in a child process on one thread, counting the
/// open fds before and after each (an exact count needs no other thread).
#[test]
fn no_fault_case_leaks_an_fd() {
    if fd_checking() {
        // The child: run the cases.
        let mut n = walk(Role::Server) + walk(Role::Client);
        n += ctrunc_walk() + stall_walk() + garbage_walk();
        blocking_stall(Role::Server);
        blocking_stall(Role::Client);
        let checked = FD_CASES.with(|c| c.get());
        assert!(checked >= n, "{checked} fd checks for {n} cases");
        println!("fd check: {checked} cases, no fd leaked");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fault_tests::no_fault_case_leaks_an_fd",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("RKTLS_FD_CHECK", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("no fd leaked"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
