//! What one server connection costs in reads and sends (counted at the
//! sys.rs seam, so the figures are exact, not timed), and the output rules
//! those figures rest on: greedy reads without kTLS, session tickets sent
//! with the first answer, corked output leaving in one send, and queued
//! output always sent before a read waits for the peer.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::Connection;
use crate::acceptor::{Acceptor, Outcome};
use crate::ktls::rktls_ktls_mode::{self, *};
use crate::result::rktls_result::{self, *};
use crate::sys::fault::{self, Op};
use crate::testutil::{client_config, server_config, Opts};

const REQUEST: &[u8] = b"GET /small HTTP/1.1\r\nConnection: close\r\n\r\n";
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";

fn take_all(c: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        let n = c.take(&mut buf).unwrap();
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&buf[..n]);
    }
}

/// Feed the buffer-mode client everything that arrived on its socket.
fn receive(c: &mut Connection, sock: &mut UnixStream) -> usize {
    let mut buf = vec![0u8; 65536];
    let mut total = 0;
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                assert_eq!(c.feed(&buf[..n]).unwrap(), n);
                total += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every plaintext byte the client can read now, and how the read ended.
fn client_reads(c: &mut Connection) -> (Vec<u8>, rktls_result) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok((RKTLS_OK, n)) => got.extend_from_slice(&buf[..n]),
            Ok((r, _)) => return (got, r),
            Err(e) => return (got, e.code),
        }
    }
}

fn counts() -> (u64, u64) {
    (fault::count(Op::Read), fault::count(Op::Send))
}

/// A connected pair: the server side (non-blocking) for rktls, the
/// client's side for the test.
fn sockets() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Run one connection the way the example server does (acceptor, SNI,
/// handshake, one request, one response, close_notify), the client sending
/// its request with its Finished as clients do. Returns the server's
/// (reads, sends) and the client (which has read the whole response).
fn one_connection(
    ccfg: &Arc<rustls::ClientConfig>,
    scfg: &Arc<rustls::ServerConfig>,
    cork: bool,
) -> ((u64, u64), Connection) {
    let (a, mut b) = sockets();
    let mut c = Connection::client(ccfg.clone(), "localhost").unwrap();
    assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
    b.write_all(&take_all(&mut c)).unwrap();

    fault::clear(); // counts from here, on this thread: the server's calls
    let mut acc = Acceptor::new();
    acc.set_fd(a.as_raw_fd()).unwrap();
    let Ok(Outcome::Accepted(mut accepted)) = acc.accept() else {
        panic!("the ClientHello is all there")
    };
    let mut s = accepted.make_connection(scfg.clone()).unwrap();
    assert_eq!(s.handshake().unwrap(), RKTLS_WANT_READ);
    // One read for the ClientHello, the flight in one send, one read
    // finding nothing more (the client has not answered yet).
    assert_eq!(counts(), (2, 1));

    receive(&mut c, &mut b);
    let mut out = Vec::new();
    loop {
        match c.handshake().unwrap() {
            RKTLS_OK => break,
            RKTLS_WANT_WRITE => out.extend(take_all(&mut c)),
            r => panic!("client handshake: {r:?}"),
        }
    }
    assert_eq!(c.write(REQUEST).unwrap(), (RKTLS_OK, REQUEST.len()));
    out.extend(take_all(&mut c));
    b.write_all(&out).unwrap();

    // The client's last flight and its request: one read.
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    assert_eq!(counts(), (3, 1));
    assert!(s.pending_out() > 0, "the tickets wait for the answer");
    let mut buf = [0u8; 256];
    let (r, n) = s.read(&mut buf).unwrap();
    assert_eq!((r, &buf[..n]), (RKTLS_OK, REQUEST));
    assert_eq!(counts(), (3, 1), "the request was already read");

    let body = [b'a'; 100];
    if cork {
        assert_eq!(s.cork(true).unwrap(), RKTLS_OK);
    }
    assert_eq!(s.write(HEAD).unwrap(), (RKTLS_OK, HEAD.len()));
    assert_eq!(s.write(&body).unwrap(), (RKTLS_OK, body.len()));
    assert_eq!(counts().1, if cork { 1 } else { 3 });
    assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
    assert_eq!(s.pending_out(), 0);
    let n = counts();
    drop(s);
    drop(a);

    receive(&mut c, &mut b);
    let (got, end) = client_reads(&mut c);
    assert_eq!(got, [HEAD, &body[..]].concat());
    assert_eq!(end, RKTLS_CLOSED);
    (n, c)
}

#[test]
fn one_handshake_and_response_cost_three_reads_and_two_sends_corked() {
    let ccfg = client_config(&Opts::default());
    let scfg = server_config(&Opts::default());
    // Full, then resumed with the ticket the first one sent (so the
    // tickets held back did arrive, with the response).
    let (n, c) = one_connection(&ccfg, &scfg, true);
    assert!(!c.is_resumed());
    assert_eq!(n, (3, 2), "full handshake: reads, sends");
    let (n, c) = one_connection(&ccfg, &scfg, true);
    assert!(c.is_resumed());
    assert_eq!(n, (3, 2), "resumed handshake: reads, sends");
}

#[test]
fn uncorked_every_write_sends_and_the_tickets_ride_with_the_first() {
    let ccfg = client_config(&Opts::default());
    let scfg = server_config(&Opts::default());
    // flight; tickets + head; body; close_notify.
    let (n, _) = one_connection(&ccfg, &scfg, false);
    assert_eq!(n, (3, 4));
    let (_, c) = one_connection(&ccfg, &scfg, false);
    assert!(c.is_resumed());
}

/// Handshake a server (fd mode, `a`) with a buffer-mode client over `b`;
/// the client sends `after_finished` with its Finished.
fn handshake_pair(after_finished: &[u8]) -> (Connection, Connection, UnixStream, UnixStream) {
    handshake_pair_in(RKTLS_KTLS_OFF, after_finished)
}

fn handshake_pair_in(
    mode: rktls_ktls_mode,
    after_finished: &[u8],
) -> (Connection, Connection, UnixStream, UnixStream) {
    let (a, mut b) = sockets();
    let mut c = Connection::client(client_config(&Opts::default()), "localhost").unwrap();
    let mut s = Connection::server(server_config(&Opts::default())).unwrap();
    s.set_fd(a.as_raw_fd()).unwrap();
    s.set_ktls_mode(mode, Default::default());
    assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
    b.write_all(&take_all(&mut c)).unwrap();
    assert_eq!(s.handshake().unwrap(), RKTLS_WANT_READ);
    receive(&mut c, &mut b);
    let mut out = Vec::new();
    while c.handshake().unwrap() == RKTLS_WANT_WRITE {
        out.extend(take_all(&mut c));
    }
    out.extend_from_slice(after_finished);
    b.write_all(&out).unwrap();
    (s, c, a, b)
}

/// Application data records as the client sends them after the handshake.
fn client_data(c: &mut Connection, data: &[u8]) -> Vec<u8> {
    assert_eq!(c.write(data).unwrap(), (RKTLS_OK, data.len()));
    take_all(c)
}

#[test]
fn held_back_tickets_leave_before_a_read_waits() {
    let (mut s, mut c, a, mut b) = handshake_pair(&[]);
    // (The client's Finished is in the socket; its data follows in the
    // same arrival.)
    b.write_all(&client_data(&mut c, b"ping")).unwrap();
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    let tickets = s.pending_out();
    assert!(tickets > 0, "the client's data came with its Finished");
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_OK, 4));
    assert_eq!(
        s.pending_out(),
        tickets,
        "reading queued data sends nothing"
    );
    // A read that waits for the peer sends them first.
    assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_READ, 0));
    assert_eq!(s.pending_out(), 0);
    // And, waiting, the connection holds no input buffer.
    assert_eq!(s.b.incoming.capacity(), 0);
    assert_eq!(receive(&mut c, &mut b), tickets);
    assert_eq!(client_reads(&mut c), (Vec::new(), RKTLS_WANT_READ));
    drop(a);
}

#[test]
fn without_data_from_the_client_the_tickets_leave_with_the_handshake() {
    let (mut s, mut c, a, mut b) = handshake_pair(&[]);
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    assert_eq!(s.pending_out(), 0);
    assert!(receive(&mut c, &mut b) > 0);
    drop(a);
}

#[test]
fn corked_output_leaves_before_a_read_waits_and_on_uncork() {
    let (mut s, mut c, a, mut b) = handshake_pair(&[]);
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    receive(&mut c, &mut b);
    assert_eq!(s.cork(true).unwrap(), RKTLS_OK);
    fault::clear();
    assert_eq!(s.write(b"one").unwrap(), (RKTLS_OK, 3));
    assert_eq!(s.write(b"two").unwrap(), (RKTLS_OK, 3));
    assert_eq!(counts().1, 0, "corked: queued, not sent");
    assert!(s.pending_out() > 0);
    // A read that finds nothing to deliver sends the queue first: a caller
    // that writes and then waits for the answer never stalls the peer.
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_READ, 0));
    assert_eq!((s.pending_out(), counts().1), (0, 1));
    receive(&mut c, &mut b);
    assert_eq!(client_reads(&mut c), (b"onetwo".to_vec(), RKTLS_WANT_READ));
    // Uncorking sends the queue, as flush does.
    assert_eq!(s.write(b"three").unwrap(), (RKTLS_OK, 5));
    assert_eq!(counts().1, 1);
    assert_eq!(s.cork(false).unwrap(), RKTLS_OK);
    assert_eq!((s.pending_out(), counts().1), (0, 2));
    // Uncorked, each write sends.
    assert_eq!(s.write(b"four").unwrap(), (RKTLS_OK, 4));
    assert_eq!((s.pending_out(), counts().1), (0, 3));
    receive(&mut c, &mut b);
    assert_eq!(
        client_reads(&mut c),
        (b"threefour".to_vec(), RKTLS_WANT_READ)
    );
    drop(a);
}

#[test]
fn corked_writes_send_once_the_queue_reaches_the_high_water_mark() {
    let (mut s, mut c, a, mut b) = handshake_pair(&[]);
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    receive(&mut c, &mut b);
    assert_eq!(s.cork(true).unwrap(), RKTLS_OK);
    fault::clear();
    let big = vec![7u8; 40 * 1024];
    assert_eq!(s.write(&big).unwrap(), (RKTLS_OK, big.len()));
    assert_eq!(counts().1, 0);
    // 80 KiB queued: over the mark, so it is sent (a big corked body
    // streams instead of piling up).
    assert_eq!(s.write(&big).unwrap(), (RKTLS_OK, big.len()));
    assert!(counts().1 >= 1);
    let mut got = Vec::new();
    while got.len() < 2 * big.len() {
        receive(&mut c, &mut b);
        let (g, r) = client_reads(&mut c);
        assert_eq!(r, RKTLS_WANT_READ);
        got.extend(g);
        if s.pending_out() > 0 {
            let _ = s.flush().unwrap();
        }
    }
    assert_eq!(got, [&big[..], &big[..]].concat());
    drop(a);
}

#[test]
fn a_bad_record_with_the_clients_finished_fails_the_first_read_not_the_handshake() {
    // An application-data record that does not decrypt, sent with the
    // client's Finished: read in the same (greedy) read.
    let mut garbage = vec![23, 3, 3, 0, 32];
    garbage.extend_from_slice(&[0x5a; 32]);
    let (mut s, mut c, a, mut b) = handshake_pair(&garbage);
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    // From the next call on, the failure is sticky: handshake too.
    assert_eq!(s.handshake().unwrap_err().code, RKTLS_ERR_DECRYPT);
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).unwrap_err();
    assert_eq!(e.code, RKTLS_ERR_DECRYPT);
    // What the client received: the alert, bad_record_mac (20).
    receive(&mut c, &mut b);
    let (_, r) = client_reads(&mut c);
    assert_eq!(r, RKTLS_ERR_ALERT_RECEIVED);
    assert_eq!(c.alert_received(), Some(20));
    drop(a);
}

#[test]
fn c_api_cork_queues_and_uncork_sends() {
    use super::ffi::{rktls_connection_cork, rktls_connection_free, rktls_connection_write};
    assert_eq!(
        rktls_connection_cork(std::ptr::null_mut(), true),
        RKTLS_ERR_NULL_ARGUMENT
    );
    let (mut s, mut c, a, mut b) = handshake_pair(&[]);
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    receive(&mut c, &mut b);
    let p = crate::ffi::box_into_ptr::<super::rktls_connection>(s);
    assert_eq!(rktls_connection_cork(p, true), RKTLS_OK);
    let mut n = 0;
    assert_eq!(
        rktls_connection_write(p, b"abc".as_ptr(), 3, &mut n),
        RKTLS_OK
    );
    assert_eq!(n, 3, "accepted, though not sent");
    assert_eq!(receive(&mut c, &mut b), 0);
    assert_eq!(rktls_connection_cork(p, false), RKTLS_OK);
    assert!(receive(&mut c, &mut b) > 0);
    assert_eq!(client_reads(&mut c), (b"abc".to_vec(), RKTLS_WANT_READ));
    rktls_connection_free(p);
    drop(a);
}

#[test]
fn with_a_ktls_mode_reads_stop_at_the_handshake_until_the_switch() {
    // The client's data comes with its Finished. With a kTLS mode, the
    // handshake must leave it in the socket for the kernel: record-exact
    // reads. (A Unix socket takes no kTLS: PREFER then falls back to
    // userspace, and reads are greedy from there on.)
    let (mut s, mut c, a, mut b) = handshake_pair_in(RKTLS_KTLS_PREFER, &[]);
    b.write_all(&client_data(&mut c, b"ping")).unwrap();
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    assert_eq!(s.pending_out(), 0, "no tickets held back with a kTLS mode");
    assert!(!s.in_kernel());
    let mut peek = [0u8; 5];
    // SAFETY: peeking into a valid 5-byte buffer.
    let n = unsafe { libc::recv(a.as_raw_fd(), peek.as_mut_ptr().cast(), 5, libc::MSG_PEEK) };
    assert_eq!(
        (n, peek[0]),
        (5, 23),
        "the data record is still in the socket"
    );
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_OK, 4));
    assert!(!s.exact_reads(), "after the fallback: greedy");
    drop((a, b));
}
