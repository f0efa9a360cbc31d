//! TLS 1.2 renegotiation on the userspace record layer. rustls never
//! renegotiates; rktls refuses it and says exactly what happened.
//!
//! After a TLS 1.2 handshake the record header is still in the clear, so a
//! handshake record (content type 22) in the incoming buffer is a
//! renegotiation message: a HelloRequest to a client, a ClientHello to a
//! server. It is caught there, before rustls processes it, and only after
//! the records before it (their data is read first).
//!
//! - A client, by default, lets rustls answer with a no_renegotiation
//!   warning (RFC 5246 allows it). Servers such as IIS treat that as fatal
//!   and close or reset the connection: if that happens before the server
//!   sends more data, the error is `RKTLS_ERR_RENEGOTIATION` with the cause
//!   and the server-side fix. A server that carries on is followed.
//! - A client configured to fail fast, and every server, end the connection
//!   at once with `RKTLS_ERR_RENEGOTIATION`: a no_renegotiation alert as a
//!   warning (RFC 5246 §7.2.2: it "is always a warning"), then close_notify.
//!   rktls seals both with the connection's keys (taken from rustls, which
//!   is then gone). A server does no handshake work for a renegotiating
//!   client, however many ClientHellos it sends.

use rustls::ProtocolVersion;

use super::engine::Step;
use super::{Connection, Tls};
use crate::alert::{self, rktls_alert_description::*};
use crate::result::rktls_result::*;
use crate::result::{
    renegotiation_requested, Error, RENEGOTIATION_ATTEMPTED, RENEGOTIATION_FAIL_FAST,
};
use crate::wire;

const NO_RENEGOTIATION: u8 = RKTLS_ALERT_NO_RENEGOTIATION.code();
/// The refusal: no_renegotiation as a warning, then close_notify.
const REFUSAL: [[u8; 2]; 2] = [
    [alert::WARNING, NO_RENEGOTIATION],
    [alert::WARNING, RKTLS_ALERT_CLOSE_NOTIFY.code()],
];

impl Connection {
    /// Where the first handshake record rustls was not shown yet starts in
    /// the incoming buffer, on an established TLS 1.2 connection in
    /// userspace (records before it are whole). One rustls was shown and
    /// keeps (a part of a message) was judged when it came: it holds back
    /// nothing after it (a record rktls refuses, say).
    pub(super) fn renegotiation_record(&self) -> Option<usize> {
        let c = self.common()?;
        // After close_notify rustls reads nothing more, and neither do we.
        if self.peer_closed
            || c.is_handshaking()
            || c.protocol_version() != Some(ProtocolVersion::TLSv1_2)
        {
            return None;
        }
        let shown = self.b.shown;
        wire::records(&self.b.incoming)
            .find(|r| r.header.typ == wire::CT_HANDSHAKE && r.at >= shown)
            .map(|r| r.at)
    }

    /// Whether rustls still has records of its own to hand out.
    pub(super) fn rustls_has_output(&self) -> bool {
        self.common().is_some_and(|c| c.wants_write())
    }

    /// The peer's renegotiation record is next in the incoming buffer.
    /// `None`: let rustls refuse it with its warning (a client, by
    /// default). `Some`: the connection ended here instead.
    pub(super) fn renegotiation_started(&mut self) -> Option<Step> {
        let server = matches!(self.tls, Tls::Server(_));
        if !server && !self.reneg_fail_fast {
            // Refused once rustls answers it (`renegotiation_answered`).
            self.reneg_pending = true;
            return None;
        }
        let sent = match self.seal_alerts(&REFUSAL) {
            Ok(records) => {
                self.b.outgoing.extend_from_slice(&records);
                self.alert_sent = Some(NO_RENEGOTIATION);
                self.sent_close_notify = true;
                " (sent alert no_renegotiation as a warning, then close_notify)".to_string()
            }
            Err(why) => {
                log::warn!("could not send the no_renegotiation warning: {why}");
                String::new()
            }
        };
        let e = if server {
            Error::new(
                RKTLS_ERR_RENEGOTIATION,
                format!("{RENEGOTIATION_ATTEMPTED}{sent}"),
            )
        } else {
            let mut e = renegotiation_requested(RENEGOTIATION_FAIL_FAST);
            e.msg.push_str(&sent);
            e
        };
        log::warn!("{}", e.msg);
        Some(Step::Ended(e))
    }

    /// After a step of rustls (`out_before`: the output queued before it,
    /// `acting`: whether it sent something of ours): rustls' first output
    /// after a handshake record of the server is its refusal warning. New
    /// data from the server first, or a failure, means nothing was refused.
    pub(super) fn renegotiation_answered(&mut self, out_before: usize, acting: bool) {
        if !self.reneg_pending {
            return;
        }
        if !acting && self.b.outgoing.len() > out_before {
            self.reneg_pending = false;
            if !self.reneg_refused {
                log::warn!(
                    "server requested TLS 1.2 renegotiation (HelloRequest); refused with a \
                     no_renegotiation warning alert"
                );
                self.reneg_refused = true;
            }
        }
    }

    /// A client refused the server's HelloRequest and the server has sent
    /// no data since: `outcome` (how it ended the connection) is explained
    /// by the refusal. Returns the error, now sticky; `None` otherwise.
    pub(super) fn renegotiation_ended(&mut self, outcome: &str) -> Option<Error> {
        if !self.reneg_refused || self.error.is_some() {
            return None;
        }
        let e = renegotiation_requested(outcome);
        log::warn!("{}", e.msg);
        self.error = Some(e.clone());
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_emul::{self, Key};
    use crate::result::rktls_result;
    use crate::testutil::{client_config, server_config, shuttle, Opts};
    use rustls::ContentType;

    /// The TLS 1.2 suites (the test certificate is ECDSA).
    const SUITES: [u16; 3] = crate::testutil::TLS12_SUITES;
    const HELLO_REQUEST: &[u8] = &[0, 0, 0, 0];

    /// Established TLS 1.2 server and client in buffer mode.
    fn pair(suite: u16) -> (Connection, Connection) {
        let o = Opts {
            versions: Some(vec![0x0303]),
            suites: Some(vec![suite]),
            alpn: None,
        };
        let mut s = Connection::server(server_config(&o)).unwrap();
        let mut c = Connection::client(client_config(&o), "localhost").unwrap();
        for _ in 0..10 {
            assert!(c.handshake().is_ok());
            shuttle(&mut c, &mut s);
            assert!(s.handshake().is_ok());
            shuttle(&mut s, &mut c);
        }
        assert!(!s.is_handshaking() && !c.is_handshaking());
        assert_eq!(c.protocol_version(), 0x0303);
        (s, c)
    }

    /// A TLS 1.2 record layer holding one side's keys, sealed and opened
    /// with ring, independently of rustls (the kernel emulation's): what
    /// rustls cannot send (a HelloRequest, a renegotiating ClientHello) it
    /// can.
    struct Peer {
        tx: Key,
        rx: Key,
    }

    impl Peer {
        fn take_over(mut conn: Connection) -> Peer {
            let suite = conn.common().unwrap().negotiated_cipher_suite().unwrap();
            let (secrets, _) = conn.take_secrets().unwrap().unwrap();
            let key =
                |s| kernel_emul::parse(&crate::ktls::crypto_info(suite, &s).unwrap()).unwrap();
            Peer {
                tx: key(secrets.tx),
                rx: key(secrets.rx),
            }
        }

        fn seal(&mut self, typ: ContentType, payload: &[u8]) -> Vec<u8> {
            self.tx.seal(typ.into(), payload)
        }

        /// Decrypt every record in `wire`: (content type, payload) each.
        fn open(&mut self, wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
            let mut out = Vec::new();
            for r in crate::wire::records(wire) {
                let record = self
                    .rx
                    .open(r.bytes)
                    .expect("record opens with the expected key and sequence number");
                out.push(record);
            }
            out
        }
    }

    fn take_all(c: &mut Connection) -> Vec<u8> {
        let mut v = vec![0u8; 65536];
        let n = c.take(&mut v).unwrap();
        v.truncate(n);
        v
    }

    fn read(c: &mut Connection) -> Result<(rktls_result, Vec<u8>), Error> {
        let mut buf = [0u8; 256];
        c.read(&mut buf).map(|(r, n)| (r, buf[..n].to_vec()))
    }

    /// Data, then a HelloRequest: the data is read first, then the client
    /// answers with the no_renegotiation warning and waits.
    fn hello_request_refused(suite: u16) -> (Connection, Peer) {
        let (s, mut c) = pair(suite);
        let mut server = Peer::take_over(s);
        let mut wire = server.seal(ContentType::ApplicationData, b"before");
        wire.extend(server.seal(ContentType::Handshake, HELLO_REQUEST));
        c.feed(&wire).unwrap();
        assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"before".to_vec()));
        assert_eq!(read(&mut c).unwrap(), (RKTLS_WANT_READ, vec![]));
        let answer = take_all(&mut c);
        assert_eq!(server.open(&answer), vec![(21, vec![1, NO_RENEGOTIATION])]);
        assert!(c.reneg_refused);
        (c, server)
    }

    fn assert_explained(e: &Error, outcome: &str) {
        assert_eq!(e.code, RKTLS_ERR_RENEGOTIATION, "{}", e.msg);
        for part in [
            "TLS 1.2 renegotiation",
            outcome,
            "rustls does not support renegotiation",
            "clientcertnegotiation=enable",
            "TLS 1.3",
        ] {
            assert!(e.msg.contains(part), "{part:?} not in {:?}", e.msg);
        }
    }

    #[test]
    fn client_server_gives_up_after_hello_request_is_explained() {
        for suite in SUITES {
            // End of file without close_notify (buffer mode's reset).
            let (mut c, _) = hello_request_refused(suite);
            c.feed_eof().unwrap();
            let e = read(&mut c).unwrap_err();
            assert_explained(&e, "closed the connection without close_notify");
            assert_eq!(c.error.as_ref(), Some(&e), "sticky, for error_message");
            assert_eq!(c.write(b"x").unwrap_err().code, RKTLS_ERR_RENEGOTIATION);

            // A fatal alert.
            let (mut c, mut server) = hello_request_refused(suite);
            c.feed(&server.seal(ContentType::Alert, &[2, 40])).unwrap();
            let e = read(&mut c).unwrap_err();
            assert_explained(&e, "sent the fatal alert handshake_failure");
            assert_eq!(c.alert_received, Some(40));

            // close_notify before any more data.
            let (mut c, mut server) = hello_request_refused(suite);
            c.feed(&server.seal(ContentType::Alert, &[1, 0])).unwrap();
            let e = read(&mut c).unwrap_err();
            assert_explained(&e, "closed the connection (close_notify)");
        }
    }

    /// Found by fuzzing (R1): a handshake record that is not a whole
    /// HelloRequest refuses nothing. A part of one, then the end of the
    /// connection: a truncation, no alert, nothing sent (it was reported as
    /// a refused renegotiation with no alert). An empty one is refused with
    /// unexpected_message, the alert rktls' own record layer sends for it.
    #[test]
    fn client_handshake_record_that_is_no_hello_request_refuses_nothing() {
        for suite in SUITES {
            let (s, mut c) = pair(suite);
            let mut server = Peer::take_over(s);
            let mut wire = server.seal(ContentType::ApplicationData, b"before");
            wire.extend(server.seal(ContentType::Handshake, &[0]));
            c.feed(&wire).unwrap();
            assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"before".to_vec()));
            assert_eq!(read(&mut c).unwrap(), (RKTLS_WANT_READ, vec![]));
            assert!(take_all(&mut c).is_empty(), "{suite:x}: nothing sent");
            assert!(!c.reneg_refused);
            c.feed_eof().unwrap();
            let e = read(&mut c).unwrap_err();
            assert_eq!(e.code, rktls_result::RKTLS_ERR_TRUNCATED, "{}", e.msg);
            assert_eq!(c.alert_sent, None);
            assert!(take_all(&mut c).is_empty(), "{suite:x}: nothing sent");

            let (s, mut c) = pair(suite);
            let mut server = Peer::take_over(s);
            let mut wire = server.seal(ContentType::ApplicationData, b"before");
            wire.extend(server.seal(ContentType::Handshake, &[]));
            c.feed(&wire).unwrap();
            assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"before".to_vec()));
            let mut sent = Vec::new();
            let e = loop {
                let r = read(&mut c);
                sent.extend(take_all(&mut c));
                match r {
                    Ok((rktls_result::RKTLS_WANT_WRITE, _)) => {}
                    Ok(other) => panic!("{suite:x}: no error: {other:?}"),
                    Err(e) => break e,
                }
            };
            let unexpected = crate::alert::rktls_alert_description::RKTLS_ALERT_UNEXPECTED_MESSAGE;
            assert_eq!(
                server.open(&sent),
                vec![(21, vec![2, unexpected as u8])],
                "{suite:x}"
            );
            assert_eq!(
                e.code,
                rktls_result::RKTLS_ERR_UNEXPECTED_MESSAGE,
                "{}",
                e.msg
            );
            assert_eq!(c.alert_sent, Some(unexpected as u8));
            assert!(!c.reneg_refused);
        }
    }

    /// Found by fuzzing (H3c): a part of a handshake message rustls keeps,
    /// our close_notify, then a record of an unknown type. The record went
    /// to rustls with the kept one, which tried a second fatal alert (its
    /// close_notify counts as one; a caught assertion in debug builds).
    /// Now rktls refuses it itself: nothing follows our close_notify, none
    /// is reported, and the error is sticky.
    #[test]
    fn client_kept_handshake_part_does_not_hide_a_bad_record_after_close_notify() {
        for suite in SUITES {
            let (s, mut c) = pair(suite);
            let mut server = Peer::take_over(s);
            c.feed(&server.seal(ContentType::Handshake, &[0, 0, 0, 237, 3, 3]))
                .unwrap();
            assert_eq!(read(&mut c).unwrap(), (RKTLS_WANT_READ, vec![]));
            assert_eq!(c.shutdown().unwrap(), rktls_result::RKTLS_WANT_WRITE);
            let close = take_all(&mut c);
            assert_eq!(server.open(&close), vec![(21, vec![1, 0])], "{suite:x}");
            c.feed(&[0x81, 3, 3, 0, 2, 0, 0]).unwrap();
            let e = read(&mut c).unwrap_err();
            assert_eq!(
                e.code,
                rktls_result::RKTLS_ERR_UNEXPECTED_MESSAGE,
                "{}",
                e.msg
            );
            assert_eq!(c.alert_sent, None, "{}", e.msg);
            assert!(
                take_all(&mut c).is_empty(),
                "{suite:x}: sent after close_notify"
            );
            assert_eq!(read(&mut c).unwrap_err().code, e.code, "sticky");
        }
    }

    #[test]
    fn client_carries_on_when_the_server_does() {
        for suite in SUITES {
            let (mut c, mut server) = hello_request_refused(suite);
            let mut wire = server.seal(ContentType::ApplicationData, b"after");
            wire.extend(server.seal(ContentType::Alert, &[1, 0]));
            c.feed(&wire).unwrap();
            assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"after".to_vec()));
            assert!(!c.reneg_refused);
            assert_eq!(read(&mut c).unwrap(), (RKTLS_CLOSED, vec![]));
            // Our writes still work, with the right sequence numbers.
            assert_eq!(c.write(b"reply").unwrap(), (RKTLS_OK, 5));
            let got = server.open(&take_all(&mut c));
            assert_eq!(got, vec![(23, b"reply".to_vec())]);

            // All in one go: the same.
            let (s, mut c) = pair(suite);
            let mut server = Peer::take_over(s);
            let mut wire = Vec::new();
            for (t, p) in [
                (ContentType::ApplicationData, &b"one"[..]),
                (ContentType::Handshake, HELLO_REQUEST),
                (ContentType::ApplicationData, b"two"),
                (ContentType::Alert, &[1, 0]),
            ] {
                wire.extend(server.seal(t, p));
            }
            c.feed(&wire).unwrap();
            let mut got = Vec::new();
            loop {
                match read(&mut c).unwrap() {
                    (RKTLS_OK, d) => got.extend(d),
                    (r, _) => {
                        assert_eq!(r, RKTLS_CLOSED);
                        break;
                    }
                }
            }
            assert_eq!(got, b"onetwo");
        }
    }

    #[test]
    fn client_fail_fast_sends_the_warning_and_close_notify_after_earlier_data() {
        for suite in SUITES {
            let (s, mut c) = pair(suite);
            c.reneg_fail_fast = true;
            let mut server = Peer::take_over(s);
            // Our own data still queued: the alert goes after it.
            assert_eq!(c.write(b"request").unwrap(), (RKTLS_OK, 7));
            let mut wire = server.seal(ContentType::ApplicationData, b"before");
            wire.extend(server.seal(ContentType::Handshake, HELLO_REQUEST));
            wire.extend(server.seal(ContentType::ApplicationData, b"never"));
            c.feed(&wire).unwrap();
            assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"before".to_vec()));
            // The alert leaves before the error is reported.
            assert_eq!(read(&mut c).unwrap(), (RKTLS_WANT_WRITE, vec![]));
            let got = server.open(&take_all(&mut c));
            assert_eq!(
                got,
                vec![
                    (23, b"request".to_vec()),
                    (21, vec![1, NO_RENEGOTIATION]),
                    (21, vec![1, 0])
                ]
            );
            let e = read(&mut c).unwrap_err();
            assert_explained(&e, "at once (fail-fast)");
            assert!(
                e.msg
                    .contains("(sent alert no_renegotiation as a warning, then close_notify)"),
                "{}",
                e.msg
            );
            assert_eq!(c.alert_sent, Some(NO_RENEGOTIATION));
            assert_eq!(c.write(b"x").unwrap_err().code, RKTLS_ERR_RENEGOTIATION);
            // What was negotiated is still reported.
            assert_eq!(c.protocol_version(), 0x0303);
            assert_eq!(c.cipher_suite(), suite);
        }
    }

    #[test]
    fn server_refuses_a_renegotiating_client_once_and_for_all() {
        // A ClientHello's start; the record is never parsed, only seen.
        let hello: &[u8] = &[1, 0, 0, 6, 3, 3, 0, 0, 0, 0];
        for suite in SUITES {
            let (mut s, c) = pair(suite);
            let mut client = Peer::take_over(c);
            let mut wire = client.seal(ContentType::ApplicationData, b"GET /");
            // A client that keeps trying gets nothing more for it.
            for _ in 0..100 {
                wire.extend(client.seal(ContentType::Handshake, hello));
            }
            s.feed(&wire).unwrap();
            assert_eq!(read(&mut s).unwrap(), (RKTLS_OK, b"GET /".to_vec()));
            assert_eq!(read(&mut s).unwrap(), (RKTLS_WANT_WRITE, vec![]));
            let got = client.open(&take_all(&mut s));
            // RFC 5246 §7.2.2: no_renegotiation is always a warning; the
            // connection then ends with close_notify.
            assert_eq!(got, vec![(21, vec![1, NO_RENEGOTIATION]), (21, vec![1, 0])]);
            let e = read(&mut s).unwrap_err();
            assert_eq!(e.code, RKTLS_ERR_RENEGOTIATION);
            assert!(
                e.msg.contains("client attempted TLS 1.2 renegotiation"),
                "{}",
                e.msg
            );
            assert_eq!(s.alert_sent, Some(NO_RENEGOTIATION));
            assert_eq!(s.write(b"x").unwrap_err().code, RKTLS_ERR_RENEGOTIATION);
            assert_eq!(take_all(&mut s), b"");
        }
    }

    /// Records after close_notify are never processed: no loop, no
    /// renegotiation error, even with a HelloRequest among them.
    #[test]
    fn records_after_close_notify_are_ignored() {
        let (s, mut c) = pair(0xc02b);
        let mut server = Peer::take_over(s);
        let mut wire = server.seal(ContentType::Alert, &[1, 0]);
        wire.extend(server.seal(ContentType::ApplicationData, b"late"));
        wire.extend(server.seal(ContentType::Handshake, HELLO_REQUEST));
        c.feed(&wire).unwrap();
        assert_eq!(read(&mut c).unwrap(), (RKTLS_CLOSED, vec![]));
        assert!(!c.reneg_refused);
    }

    /// IIS's answer to the warning: a TCP reset. errno stays available.
    #[test]
    fn fd_mode_reset_after_hello_request_is_explained_with_errno() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let a = l.accept().unwrap().0;
        let o = Opts {
            versions: Some(vec![0x0303]),
            ..Opts::default()
        };
        let scfg = server_config(&o);
        let handshake = std::thread::spawn(move || {
            let mut s = Connection::server(scfg).unwrap();
            s.set_fd(a.as_raw_fd()).unwrap();
            assert_eq!(s.handshake().unwrap(), RKTLS_OK);
            (s, a)
        });
        let mut c = Connection::client(client_config(&o), "localhost").unwrap();
        c.set_fd(b.as_raw_fd()).unwrap();
        assert_eq!(c.handshake().unwrap(), RKTLS_OK);
        let (s, mut a) = handshake.join().unwrap();
        let mut server = Peer::take_over(s);
        let iis = std::thread::spawn(move || {
            let mut wire = server.seal(ContentType::ApplicationData, b"before");
            wire.extend(server.seal(ContentType::Handshake, HELLO_REQUEST));
            a.write_all(&wire).unwrap();
            let mut answer = [0u8; 256];
            let n = a.read(&mut answer).unwrap();
            let got = server.open(&answer[..n]);
            let reset = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let r = unsafe {
                libc::setsockopt(
                    a.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&reset as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0);
            drop(a);
            got
        });
        assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"before".to_vec()));
        let e = read(&mut c).unwrap_err();
        assert_eq!(iis.join().unwrap(), vec![(21, vec![1, NO_RENEGOTIATION])]);
        assert_explained(&e, "then reset the connection");
        assert!(
            [libc::ECONNRESET, libc::EPIPE].contains(&c.errno),
            "{}",
            c.errno
        );
        assert_eq!(read(&mut c).unwrap_err(), e);
    }

    #[test]
    fn c_api_sets_fail_fast_and_checks_pointers() {
        use crate::config::*;
        assert_eq!(
            rktls_client_config_builder_set_renegotiation_fail_fast(std::ptr::null_mut(), true),
            RKTLS_ERR_NULL_ARGUMENT
        );
        let mut b = std::ptr::null_mut();
        assert_eq!(rktls_client_config_builder_new(&mut b), RKTLS_OK);
        let ca = crate::testutil::pki().ca_pem.as_bytes();
        assert_eq!(
            rktls_client_config_builder_add_roots_pem(b, ca.as_ptr(), ca.len()),
            RKTLS_OK
        );
        assert_eq!(
            rktls_client_config_builder_set_renegotiation_fail_fast(b, true),
            RKTLS_OK
        );
        let mut cfg = std::ptr::null();
        assert_eq!(rktls_client_config_builder_build(b, &mut cfg), RKTLS_OK);
        let mut conn = std::ptr::null_mut();
        assert_eq!(
            super::super::rktls_client_connection_new(cfg, c"localhost".as_ptr(), &mut conn),
            RKTLS_OK
        );
        assert!(unsafe { &*conn.cast::<Connection>() }.reneg_fail_fast);
        super::super::rktls_connection_free(conn);
        rktls_client_config_free(cfg);
    }

    #[test]
    fn tls13_connections_are_untouched() {
        let o = Opts {
            versions: Some(vec![0x0304]),
            ..Opts::default()
        };
        let mut s = Connection::server(server_config(&o)).unwrap();
        let mut c = Connection::client(client_config(&o), "localhost").unwrap();
        for _ in 0..10 {
            let _ = c.handshake();
            shuttle(&mut c, &mut s);
            let _ = s.handshake();
            shuttle(&mut s, &mut c);
        }
        // TLS 1.3 hides content types: every record looks like data.
        assert_eq!(s.renegotiation_record(), None);
        s.write(b"hi").unwrap();
        shuttle(&mut s, &mut c);
        assert_eq!(read(&mut c).unwrap(), (RKTLS_OK, b"hi".to_vec()));
    }

    /// TLS 1.2 with ALPN and client certificates, established in buffer
    /// mode; `fail_fast` for the client.
    fn mtls_alpn_pair(suite: u16, fail_fast: bool) -> (Connection, Connection) {
        use crate::config::{ClientConfigBuilder, ServerConfigBuilder};
        let pki = crate::testutil::pki();
        let (v, su, alpn) = (&[0x0303u16][..], &[suite][..], &b"\x08http/1.1"[..]);
        let mut sb = ServerConfigBuilder::new();
        sb.add_pem(pki.server.0.as_bytes(), pki.server.1.as_bytes())
            .unwrap();
        sb.set_client_verify_pem(pki.ca_pem.as_bytes(), true)
            .unwrap();
        sb.apply(Some(v), Some(su), Some(alpn)).unwrap();
        let mut cb = ClientConfigBuilder::new();
        cb.add_roots_pem(pki.ca_pem.as_bytes()).unwrap();
        cb.set_client_cert_pem(pki.client.0.as_bytes(), pki.client.1.as_bytes())
            .unwrap();
        cb.apply(Some(v), Some(su), Some(alpn)).unwrap();
        let mut s = Connection::server(sb.build().unwrap().rustls).unwrap();
        let mut c = Connection::client(cb.build().unwrap().rustls, "localhost").unwrap();
        c.reneg_fail_fast = fail_fast;
        for _ in 0..10 {
            assert!(c.handshake().is_ok());
            shuttle(&mut c, &mut s);
            assert!(s.handshake().is_ok());
            shuttle(&mut s, &mut c);
        }
        assert!(!s.is_handshaking() && !c.is_handshaking());
        (s, c)
    }

    /// What the C API hands out for ALPN and the peer's first certificate:
    /// (pointer, bytes it points to now).
    fn c_pointers(c: &Connection) -> [(usize, Vec<u8>); 2] {
        let conn = (c as *const Connection).cast::<super::super::rktls_connection>();
        let (mut p, mut n) = (std::ptr::null(), 0usize);
        assert_eq!(
            super::super::rktls_connection_alpn(conn, &mut p, &mut n),
            RKTLS_OK
        );
        assert!(!p.is_null());
        let alpn = (
            p as usize,
            unsafe { std::slice::from_raw_parts(p, n) }.to_vec(),
        );
        assert_eq!(
            super::super::rktls_connection_peer_cert(conn, 0, &mut p, &mut n),
            RKTLS_OK
        );
        let cert = (
            p as usize,
            unsafe { std::slice::from_raw_parts(p, n) }.to_vec(),
        );
        [alpn, cert]
    }

    /// Pointers the C API returned before a refused renegotiation (which
    /// takes rustls' secrets to seal its alert) still point to the same
    /// live bytes afterwards: on the server (ALPN, client certificate) and
    /// on a fail-fast client (ALPN, server certificate).
    #[test]
    fn returned_pointers_survive_a_refused_renegotiation() {
        let hello: &[u8] = &[1, 0, 0, 6, 3, 3, 0, 0, 0, 0];
        for suite in SUITES {
            let (mut s, c) = mtls_alpn_pair(suite, false);
            let before = c_pointers(&s);
            assert_eq!(before[0].1, b"http/1.1");
            let mut client = Peer::take_over(c);
            s.feed(&client.seal(ContentType::Handshake, hello)).unwrap();
            let e = loop {
                match read(&mut s) {
                    Ok((RKTLS_WANT_WRITE, _)) => drop(take_all(&mut s)),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.code, RKTLS_ERR_RENEGOTIATION);
            assert!(matches!(s.tls, Tls::Kernel(_) | Tls::Gone), "secrets taken");
            assert_eq!(c_pointers(&s), before, "server, suite {suite:04x}");

            let (s, mut c) = mtls_alpn_pair(suite, true);
            let before = c_pointers(&c);
            let mut server = Peer::take_over(s);
            c.feed(&server.seal(ContentType::Handshake, HELLO_REQUEST))
                .unwrap();
            let e = loop {
                match read(&mut c) {
                    Ok((RKTLS_WANT_WRITE, _)) => drop(take_all(&mut c)),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.code, RKTLS_ERR_RENEGOTIATION);
            assert_eq!(c_pointers(&c), before, "client, suite {suite:04x}");
        }
    }
}
