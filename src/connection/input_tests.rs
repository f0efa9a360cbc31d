//! Tests of how received bytes reach rustls: the plaintext queue is bounded,
//! every handshake message rustls accepts fits (large client certificate
//! chains, large ClientHellos), more than that is refused with an alert on
//! every path, and rejected 0-RTT data is skipped as plain rustls skips it.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::*;
use crate::acceptor::{Acceptor, Outcome};
use crate::config::{ClientConfigBuilder, ServerConfigBuilder};
use crate::result::rktls_result;
use crate::testutil::{client_config, pki, server_config, Opts};
use crate::wire;

/// The decode_error alert rustls sends in plaintext.
const DECODE_ERROR: [u8; 7] = [21, 3, 3, 0, 2, 2, 50];

fn tls13() -> Opts {
    Opts {
        versions: Some(vec![0x0304]),
        ..Opts::default()
    }
}

/// Move all of `from`'s output to `to`; when `to`'s input buffer is full,
/// let it process (as a caller's `handshake`/`read` would) and go on.
fn shuttle_processing(from: &mut Connection, to: &mut Connection) {
    let out = take_all(from);
    let mut off = 0;
    while off < out.len() {
        let n = to.feed(&out[off..]).unwrap();
        if n == 0 {
            to.process().unwrap();
            assert!(to.feed(&out[off..]).unwrap() > 0, "processing made room");
            continue;
        }
        off += n;
    }
}

fn handshake_buffers(s: &mut Connection, c: &mut Connection) -> (rktls_result, rktls_result) {
    let (mut rs, mut rc) = (RKTLS_WANT_READ, RKTLS_WANT_READ);
    for _ in 0..20 {
        rc = c.handshake().unwrap_or_else(|e| e.code);
        shuttle_processing(c, s);
        rs = s.handshake().unwrap_or_else(|e| e.code);
        shuttle_processing(s, c);
        let done = |r: rktls_result| !matches!(r, RKTLS_WANT_READ | RKTLS_WANT_WRITE);
        if done(rs) && done(rc) {
            break;
        }
    }
    (rs, rc)
}

fn take_all(c: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = c.take(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// `rktls_connection_feed_tls` on a Rust connection: (result, consumed).
fn feed_c(c: &mut Connection, data: &[u8]) -> (rktls_result, usize) {
    let mut n = 0;
    let p = (c as *mut Connection).cast::<rktls_connection>();
    let r = rktls_connection_feed_tls(p, data.as_ptr(), data.len(), &mut n);
    (r, n)
}

/// A peer sends far more than the caller reads while the caller only
/// writes and takes output: the plaintext queue and the input buffer stay
/// bounded, feeding stops with RKTLS_PLAINTEXT_FULL, and once the caller
/// reads, every byte arrives in order.
#[test]
fn plaintext_queue_is_bounded_and_nothing_is_lost() {
    let mut s = Connection::server(server_config(&Opts::default())).unwrap();
    let mut c = Connection::client(client_config(&Opts::default()), "localhost").unwrap();
    assert_eq!(handshake_buffers(&mut s, &mut c), (RKTLS_OK, RKTLS_OK));
    let msg: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut wire = Vec::new();
    let mut off = 0;
    while off < msg.len() {
        let (r, n) = c.write(&msg[off..]).unwrap();
        off += n;
        if r == RKTLS_WANT_WRITE || n == 0 {
            wire.extend(take_all(&mut c));
        }
    }
    wire.extend(take_all(&mut c));

    // The caller only writes and takes output.
    let mut fed = 0;
    let mut stalled = false;
    for _ in 0..200 {
        let (r, n) = feed_c(&mut s, &wire[fed..]);
        fed += n;
        if fed < wire.len() && r == RKTLS_OK {
            // The buffer holds unprocessed input: processing makes room.
            assert!(!s.plaintext_full());
        }
        assert_eq!(s.write(b"x").unwrap(), (RKTLS_OK, 1));
        take_all(&mut s);
        // The documented 64 KiB, and one record more.
        assert!(
            s.plain_available() <= 64 * 1024 + wire::MAX_FRAGMENT,
            "plaintext queue grew to {}",
            s.plain_available()
        );
        assert!(s.b.incoming.len() <= 96 * 1024);
        if r == RKTLS_PLAINTEXT_FULL && n == 0 {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "feeding stopped with RKTLS_PLAINTEXT_FULL");
    assert!(
        fed < wire.len() / 4,
        "most of the input is still with the caller"
    );

    // Now the caller reads: everything arrives.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 20000];
    while got.len() < msg.len() {
        match s.read(&mut buf).unwrap() {
            (RKTLS_OK, n) => got.extend_from_slice(&buf[..n]),
            (RKTLS_WANT_READ, 0) => {
                let (_, n) = feed_c(&mut s, &wire[fed..]);
                assert!(n > 0, "input taken once the queue has room");
                fed += n;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got == msg, "every byte, in order");
}

/// A client certificate chain of about 57 KB (one handshake message over
/// four records) is accepted in buffer and fd mode, TLS 1.3 and 1.2.
#[test]
fn client_certificate_chain_of_57_kb_is_accepted() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let names: Vec<String> = (0..2400)
        .map(|i| format!("host-{i:05}.client.test"))
        .collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let der_len = leaf.der().len();
    assert!((55_000..60_000).contains(&der_len), "{der_len}");

    for v in [0x0304u16, 0x0303] {
        let mut sb = ServerConfigBuilder::new();
        let p = pki();
        sb.add_pem(p.server.0.as_bytes(), p.server.1.as_bytes())
            .unwrap();
        sb.set_client_verify_pem(ca.pem().as_bytes(), true).unwrap();
        sb.apply(Some(&[v]), None, None).unwrap();
        // No TLS 1.3 tickets: each would carry the 57 KB chain, and the
        // two rustls sends back to back (one run of records, 116 KB) are
        // more than any rustls client holds (buffered rustls: 64 KiB).
        let mut scfg = (*sb.build().unwrap().rustls).clone();
        scfg.send_tls13_tickets = 0;
        let scfg = Arc::new(scfg);
        let mut cb = ClientConfigBuilder::new();
        cb.add_roots_pem(p.ca_pem.as_bytes()).unwrap();
        cb.set_client_cert_pem(leaf.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
        cb.apply(Some(&[v]), None, None).unwrap();
        let ccfg = cb.build().unwrap().rustls;

        // Buffer mode.
        let mut s = Connection::server(scfg.clone()).unwrap();
        let mut c = Connection::client(ccfg.clone(), "localhost").unwrap();
        assert_eq!(
            handshake_buffers(&mut s, &mut c),
            (RKTLS_OK, RKTLS_OK),
            "buffer mode, version {v:04x}"
        );
        assert_eq!(s.peer_certs().unwrap()[0].as_ref(), leaf.der().as_ref());

        // fd mode.
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut s = Connection::server(scfg).unwrap();
            s.set_fd(a.as_raw_fd()).unwrap();
            let r = s.handshake().map_err(|e| e.msg);
            let mut buf = [0u8; 16];
            let got = s.read(&mut buf).map(|(_, n)| buf[..n].to_vec());
            (r, got.ok(), s.peer_certs().map(|p| p[0].as_ref().len()))
        });
        let mut c = Connection::client(ccfg, "localhost").unwrap();
        c.set_fd(b.as_raw_fd()).unwrap();
        assert_eq!(c.write(b"ping").unwrap(), (RKTLS_OK, 4));
        let (r, got, cert_len) = server.join().unwrap();
        assert_eq!(r, Ok(RKTLS_OK), "fd mode, version {v:04x}");
        assert_eq!(got.as_deref(), Some(&b"ping"[..]));
        assert_eq!(cert_len, Some(der_len));
    }
}

/// A TLS 1.3 ClientHello handshake message, with `extra_suites` unknown
/// cipher suites before the real ones and `extra_ext` bytes of unknown
/// extensions.
fn client_hello(extra_suites: usize, extra_ext: usize) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, typ: u16, body: &[u8]) {
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut suites: Vec<u16> = (0..extra_suites as u16).map(|i| 0x6000 + i).collect();
    suites.extend([0x1301, 0x1302, 0x1303]);
    let mut e = Vec::new();
    ext(&mut e, 0, b"\x00\x0c\x00\x00\x09localhost");
    ext(&mut e, 10, &[0, 2, 0, 0x1d]);
    ext(&mut e, 13, &[0, 6, 4, 3, 8, 4, 8, 7]);
    ext(&mut e, 43, &[2, 3, 4]);
    let mut share = vec![0, 36, 0, 0x1d, 0, 32];
    share.extend_from_slice(&[9u8; 32]);
    ext(&mut e, 51, &share);
    let mut left = extra_ext;
    let mut typ = 0x6a00u16;
    while left > 4 {
        let n = (left - 4).min(1000);
        ext(&mut e, typ, &vec![0x5a; n]);
        left -= n + 4;
        typ += 1;
    }
    let mut b = vec![3, 3];
    b.extend_from_slice(&[7u8; 32]);
    b.push(32);
    b.extend_from_slice(&[1u8; 32]);
    b.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        b.extend_from_slice(&s.to_be_bytes());
    }
    b.extend_from_slice(&[1, 0]);
    b.extend_from_slice(&(e.len() as u16).to_be_bytes());
    b.extend_from_slice(&e);
    let mut m = vec![1];
    m.extend_from_slice(&(b.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(&b);
    m
}

/// Handshake records carrying `msg` in fragments of `frag` bytes.
fn records(msg: &[u8], frag: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(frag) {
        out.extend_from_slice(&[wire::CT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// What each path answers the client's bytes with: the result of the
/// handshake (or accept) and every byte the client receives.
fn direct_buffer(input: &[u8]) -> (rktls_result, Vec<u8>) {
    let mut s = Connection::server(server_config(&tls13())).unwrap();
    let mut fed = 0;
    let mut out = Vec::new();
    for _ in 0..50 {
        fed += s.feed(&input[fed..]).unwrap();
        let r = s.handshake().unwrap_or_else(|e| e.code);
        out.extend(take_all(&mut s));
        match r {
            RKTLS_WANT_READ | RKTLS_WANT_WRITE if fed < input.len() || r == RKTLS_WANT_WRITE => {}
            r => {
                // Sticky.
                assert_eq!(s.handshake().unwrap_or_else(|e| e.code), r);
                return (r, out);
            }
        }
    }
    panic!("no outcome after 50 rounds (livelock)");
}

fn direct_fd(input: &[u8]) -> (rktls_result, Vec<u8>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = b.write_all(&input);
        // The client sends nothing more: a waiting server sees end of file.
        let _ = b.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = b.read_to_end(&mut out);
        out
    });
    let mut s = Connection::server(server_config(&tls13())).unwrap();
    s.set_fd(a.as_raw_fd()).unwrap();
    let r = s.handshake().unwrap_or_else(|e| e.code);
    drop(s);
    drop(a);
    (r, writer.join().unwrap())
}

fn via_acceptor(input: &[u8]) -> (rktls_result, Vec<u8>) {
    let mut a = Acceptor::new();
    let mut fed = 0;
    for _ in 0..50 {
        fed += a.feed(&input[fed..]).unwrap();
        match a.accept() {
            Ok(Outcome::Want(RKTLS_WANT_READ)) if fed < input.len() => {}
            Ok(Outcome::Want(r)) => return (r, Vec::new()),
            Ok(Outcome::Accepted(mut acc)) => {
                let mut c = match acc.make_connection(server_config(&tls13())) {
                    Ok(c) => c,
                    Err((e, alert)) => return (e.code, alert.bytes),
                };
                let r = c.handshake().unwrap_or_else(|e| e.code);
                return (r, take_all(&mut c));
            }
            Err((e, alert)) => return (e.code, alert.bytes),
        }
    }
    panic!("acceptor: no outcome after 50 rounds");
}

/// The acceptor in fd mode (C API): the result of accept and every byte
/// the client receives.
fn acceptor_fd(input: &[u8]) -> (rktls_result, Vec<u8>) {
    use crate::acceptor::*;
    let (a, mut b) = UnixStream::pair().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = b.write_all(&input);
        let _ = b.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = b.read_to_end(&mut out);
        out
    });
    let mut acc = std::ptr::null_mut();
    assert_eq!(rktls_acceptor_new(&mut acc), RKTLS_OK);
    assert_eq!(rktls_acceptor_set_fd(acc, a.as_raw_fd()), RKTLS_OK);
    let (mut accepted, mut alert) = (std::ptr::null_mut(), std::ptr::null_mut());
    let r = rktls_acceptor_accept(acc, &mut accepted, &mut alert);
    rktls_accepted_free(accepted);
    crate::alert::rktls_alert_free(alert);
    rktls_acceptor_free(acc);
    drop(a);
    (r, writer.join().unwrap())
}

/// The server's first flight starts with a ServerHello record.
fn is_server_hello(out: &[u8]) -> bool {
    out.len() > 10 && out[0] == 22 && out[5] == 2
}

/// ClientHellos rustls accepts (several records: ~37 KB of extensions,
/// ~22 KB of cipher suites) are answered with a ServerHello on the direct
/// path (buffer and fd mode) and through the acceptor.
#[test]
fn large_client_hellos_are_accepted_on_every_path() {
    for (name, msg) in [
        ("37 KB of extensions", client_hello(0, 37_000)),
        ("22 KB of cipher suites", client_hello(11_000, 0)),
        ("60 KB of extensions", client_hello(0, 60_000)),
    ] {
        let input = records(&msg, 16384);
        let (r, out) = direct_buffer(&input);
        assert_eq!(r, RKTLS_WANT_READ, "{name}: direct, buffer mode");
        assert!(is_server_hello(&out), "{name}: direct, buffer mode");
        let (r, out) = direct_fd(&input);
        // (Then the client sends nothing more.)
        assert_eq!(r, RKTLS_ERR_TRUNCATED, "{name}: direct, fd mode");
        assert!(is_server_hello(&out), "{name}: direct, fd mode");
        let (r, out) = via_acceptor(&input);
        assert_eq!(r, RKTLS_WANT_WRITE, "{name}: acceptor");
        assert!(is_server_hello(&out), "{name}: acceptor");
        let (r, out) = acceptor_fd(&input);
        assert_eq!((r, &out[..]), (RKTLS_OK, &b""[..]), "{name}: acceptor, fd");
    }
}

/// Beyond what rustls accepts, every path refuses with the same alert
/// (decode_error, in the bytes the client receives) and a sticky
/// RKTLS_ERR_DECODE: a handshake message declared over 64 KiB, and one
/// under it cut into so many records that they do not fit the buffer
/// (buffer mode used to livelock there, fd mode to fail without alert).
#[test]
fn handshake_messages_beyond_the_limit_get_decode_error_everywhere() {
    let mut too_long = client_hello(0, 60_000);
    too_long[1..4].copy_from_slice(&[1, 0, 0]);
    let fragmented = client_hello(0, 60_000);
    for (name, input) in [
        ("declared over 64 KiB", records(&too_long, 16384)),
        ("6-byte fragments", records(&fragmented, 6)),
    ] {
        assert!(name.starts_with("declared") || input.len() > IN_CAP);
        let (r, out) = direct_buffer(&input);
        assert_eq!(
            (r, &out[..]),
            (RKTLS_ERR_DECODE, &DECODE_ERROR[..]),
            "{name}: buffer"
        );
        let (r, out) = direct_fd(&input);
        assert_eq!(
            (r, &out[..]),
            (RKTLS_ERR_DECODE, &DECODE_ERROR[..]),
            "{name}: fd"
        );
        let (r, out) = via_acceptor(&input);
        assert_eq!(
            (r, &out[..]),
            (RKTLS_ERR_DECODE, &DECODE_ERROR[..]),
            "{name}: acceptor"
        );
        let (r, out) = acceptor_fd(&input);
        assert_eq!(
            (r, &out[..]),
            (RKTLS_ERR_DECODE, &DECODE_ERROR[..]),
            "{name}: acceptor, fd"
        );
    }
}

/// A plain rustls server that allows 0-RTT issues the ticket; the rktls
/// server (no 0-RTT) rejects the client's 8,000 bytes of early data, skips
/// them within rustls' limit (RFC 8446 section 4.2.10) and completes, in
/// fd mode (records read one at a time) and in buffer mode fed in small
/// pieces.
#[test]
fn rejected_early_data_is_skipped_as_plain_rustls_skips_it() {
    let mut ccfg = (*client_config(&tls13())).clone();
    ccfg.enable_early_data = true;
    let ccfg = Arc::new(ccfg);
    // rustls offers 0-RTT only with stateful resumption.
    #[derive(Debug)]
    struct NoTickets;
    impl rustls::server::ProducesTickets for NoTickets {
        fn enabled(&self) -> bool {
            false
        }
        fn lifetime(&self) -> u32 {
            0
        }
        fn encrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
        fn decrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
    }
    let mut issuer = (*server_config(&tls13())).clone();
    issuer.max_early_data_size = 16384;
    issuer.ticketer = Arc::new(NoTickets);
    issuer.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
    let issuer = Arc::new(issuer);
    let early = vec![0x42u8; 8000];

    for fd_mode in [true, false] {
        // Get a ticket that allows early data.
        let mut c =
            rustls::ClientConnection::new(ccfg.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(issuer.clone()).unwrap();
        crate::testutil::pump(&mut *c, &mut *s, 10);
        assert!(!c.is_handshaking());

        // Resume against rktls with 0-RTT.
        let mut c =
            rustls::ClientConnection::new(ccfg.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut ed = c.early_data().expect("the ticket allows early data");
        ed.write_all(&early).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let scfg = server_config(&tls13());
        let server = std::thread::spawn(move || {
            let mut s = Connection::server(scfg).unwrap();
            let mut buf = [0u8; 64];
            if fd_mode {
                s.set_fd(a.as_raw_fd()).unwrap();
                let r = s.handshake().map_err(|e| e.msg)?;
                assert_eq!(r, RKTLS_OK);
                let (r, n) = s.read(&mut buf).map_err(|e| e.msg)?;
                assert_eq!(r, RKTLS_OK);
                return Ok(buf[..n].to_vec());
            }
            // Buffer mode, fed in pieces of at most 5 and 300 bytes in turn.
            let mut sock = a;
            let mut piece = vec![0u8; 300];
            for want in [5, 300].into_iter().cycle() {
                let (r, n) = s.read(&mut buf).map_err(|e| e.msg)?;
                let out = take_all(&mut s);
                sock.write_all(&out).unwrap();
                match r {
                    RKTLS_OK => return Ok(buf[..n].to_vec()),
                    RKTLS_WANT_READ => {
                        let m = sock.read(&mut piece[..want]).unwrap();
                        if m == 0 {
                            return Err("eof".to_string());
                        }
                        assert_eq!(s.feed(&piece[..m]).unwrap(), m);
                    }
                    // Its output was just taken.
                    RKTLS_WANT_WRITE => {}
                    other => return Err(format!("unexpected {other:?}")),
                }
            }
            unreachable!()
        });
        while c.is_handshaking() {
            c.complete_io(&mut b).unwrap();
        }
        assert!(!c.is_early_data_accepted());
        c.writer().write_all(b"after").unwrap();
        c.complete_io(&mut b).unwrap();
        let got = server.join().unwrap();
        assert_eq!(got.as_deref(), Ok(&b"after"[..]), "fd mode {fd_mode}");
    }
}
