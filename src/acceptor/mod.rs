//! The acceptor: read the ClientHello first, inspect it, pick a config, then
//! continue, with the peer's alert guaranteed on every failure.
//!
//! Design. rustls 0.23's `Accepted::into_connection` only makes a buffered
//! `ServerConnection`, which cannot become a kernel connection later (no
//! key updates, no tickets under kTLS). And rustls' `Acceptor` parses a
//! ClientHello on a path of its own: the fuzzer found malformed hellos it
//! refuses with another alert than the direct path sends.
//!
//! So the acceptor keeps every byte it receives and runs them through a
//! *probe*: an `UnbufferedServerConnection` whose config accepts every
//! version and suite and whose certificate resolver records the ClientHello
//! it is shown and stops there (`hello::probe_config`). Everything before
//! certificate selection is rustls' config-independent validation, so a
//! hello the probe refuses is refused by the direct path with the same
//! alert, and a hello it reaches the resolver with is exposed to the caller.
//! `into_connection` then replays the same bytes into a fresh
//! `UnbufferedServerConnection` with the chosen config: the connection, and
//! any alert it sends, are the direct path's own.
//!
//! The probe parses the hello a second time, so the usual hello skips it:
//! `scan.rs` reads in place the hellos whose meaning it knows exactly as
//! rustls does (and reports what the probe would); every other hello goes
//! through the probe as above. A hello the scan passes and rustls refuses
//! anyway is refused by `into_connection`, with the direct path's alert.
//!
//! In fd mode the acceptor reads what has arrived: the whole ClientHello in
//! one read, usually. It may take more than the ClientHello, but only
//! records of the same handshake: before the server's answer a client
//! sends nothing else (at most a ChangeCipherSpec, or 0-RTT data, which
//! rktls never accepts and rustls skips during the handshake). So nothing
//! it reads belongs after the handshake, where the kernel may take the
//! socket over; every byte is handed to the connection with the replay.

use std::os::fd::RawFd;

use crate::alert::{rktls_alert_description::*, Alert};
use crate::connection::{Connection, IN_CAP};
use crate::hello::{self, Hello};
use crate::result::rktls_result::{self, *};
use crate::result::Error;
use crate::sys;
use crate::wire;

pub mod ffi;
mod scan;
pub use ffi::*;

/// ClientHello bytes held at most: as much as a connection holds, so the
/// probe (a connection) decides, and refuses more with the direct path's
/// alert.
const MAX_HELLO: usize = IN_CAP;

/// Bytes read at once at least (more when a record needs more): a whole
/// ClientHello in one read.
const HELLO_READ: usize = 4096;

enum Phase {
    Reading,
    /// Failed; the error is returned once the alert has been written (fd
    /// mode) or handed over.
    Failed(Error, Alert),
    Reported,
    Accepted,
}

pub(crate) struct Acceptor {
    /// Runs the bytes through rustls up to certificate selection, for the
    /// hellos the scan (`scan.rs`) leaves to rustls.
    probe: Option<Box<Connection>>,
    /// The scan left this hello to the probe.
    probing: bool,
    bytes: Vec<u8>,
    /// How many of `bytes` were given to the probe.
    fed: usize,
    /// `bytes[..whole]` are whole records (fd mode reads go on from there,
    /// not from the start for every record of a long ClientHello).
    whole: usize,
    fd: RawFd,
    eof: bool,
    phase: Phase,
    /// A panic was caught in a call on it (see `crate::ffi`).
    panicked: std::sync::atomic::AtomicBool,
}

pub(crate) struct Accepted {
    hello: Hello,
    /// Every byte received; `None` once turned into a connection.
    bytes: Option<Vec<u8>>,
    fd: RawFd,
    /// A panic was caught in a call on it (see `crate::ffi`).
    panicked: std::sync::atomic::AtomicBool,
}

pub(crate) enum Outcome {
    Want(rktls_result),
    Accepted(Box<Accepted>),
}

impl Acceptor {
    pub(crate) fn new() -> Self {
        Acceptor {
            probe: None,
            probing: false,
            bytes: Vec::new(),
            fed: 0,
            whole: 0,
            fd: -1,
            eof: false,
            phase: Phase::Reading,
            panicked: Default::default(),
        }
    }

    pub(crate) fn set_fd(&mut self, fd: RawFd) -> Result<(), Error> {
        if fd < 0 {
            return Err(Error::invalid("fd must be >= 0"));
        }
        if !self.bytes.is_empty() || !matches!(self.phase, Phase::Reading) {
            return Err(Error::state("an fd can only be set before any I/O"));
        }
        self.fd = fd;
        Ok(())
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.fd >= 0 {
            return Err(Error::state("acceptor reads its fd itself"));
        }
        if !matches!(self.phase, Phase::Reading) {
            return Err(Error::state("acceptor is finished: no more bytes"));
        }
        let n = data.len().min(MAX_HELLO - self.bytes.len());
        self.bytes.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn accepted(&mut self, hello: Hello) -> Outcome {
        self.phase = Phase::Accepted;
        Outcome::Accepted(Box::new(Accepted {
            hello,
            bytes: Some(std::mem::take(&mut self.bytes)),
            fd: self.fd,
            panicked: Default::default(),
        }))
    }

    fn fail(&mut self, err: Error, alert: Alert) {
        self.phase = Phase::Failed(err, alert);
    }

    pub(crate) fn accept(&mut self) -> Result<Outcome, (Error, Alert)> {
        loop {
            match &mut self.phase {
                Phase::Reading => {}
                Phase::Accepted => {
                    return Err((Error::code(RKTLS_ERR_ALREADY_ACCEPTED), Alert::none()))
                }
                Phase::Reported => {
                    return Err((Error::code(RKTLS_ERR_ALREADY_FAILED), Alert::none()))
                }
                Phase::Failed(_, alert) => {
                    if self.fd >= 0 {
                        // The peer may be gone (an error here): the cause
                        // is still the failure being reported.
                        if let Ok(false) = alert.write_fd(self.fd) {
                            return Ok(Outcome::Want(RKTLS_WANT_WRITE));
                        }
                    }
                    let Phase::Failed(err, alert) =
                        std::mem::replace(&mut self.phase, Phase::Reported)
                    else {
                        unreachable!()
                    };
                    log::debug!("accept failed: {}", err.msg);
                    return Err((err, alert));
                }
            }
            if !self.probing {
                match scan::scan(&self.bytes) {
                    scan::Scan::Hello(h) => {
                        #[cfg(debug_assertions)]
                        same_as_probe(&self.bytes, &h);
                        return Ok(self.accepted(*h));
                    }
                    scan::Scan::Incomplete if self.bytes.len() < MAX_HELLO => {}
                    _ => self.probing = true,
                }
            }
            if self.probing {
                let probe = match &mut self.probe {
                    Some(p) => p,
                    None => match Connection::server(hello::probe_config()) {
                        Ok(p) => self.probe.insert(Box::new(p)),
                        Err(e) => return Err((e, Alert::none())),
                    },
                };
                let mut result = Ok(());
                while self.fed < self.bytes.len() && result.is_ok() {
                    let n = probe.feed(&self.bytes[self.fed..]).unwrap_or(0);
                    self.fed += n;
                    result = probe.process();
                    if n == 0 {
                        break;
                    }
                }
                if let Some(mut seen) = probe.take_seen_hello() {
                    seen.versions = hello::offered_versions(&self.bytes).unwrap_or_default();
                    self.probe = None;
                    return Ok(self.accepted(seen));
                }
                if let Err(e) = result {
                    // Refused before any config matters: the direct path would
                    // refuse it the same way, and this is its alert.
                    let a = Alert::from_wire(probe.take_all_out(), probe.alert_sent());
                    self.probe = None;
                    self.fail(e, a);
                    continue;
                }
                // More bytes are needed.
                if self.fed < self.bytes.len() || self.bytes.len() >= MAX_HELLO {
                    self.fail(
                        Error::new(RKTLS_ERR_DECODE, "ClientHello too large"),
                        Alert::fatal(RKTLS_ALERT_DECODE_ERROR),
                    );
                    continue;
                }
            }
            if self.eof {
                self.fail(
                    Error::new(
                        RKTLS_ERR_TRUNCATED,
                        "client closed the connection before a complete ClientHello",
                    ),
                    Alert::none(),
                );
                continue;
            }
            if self.fd < 0 {
                return Ok(Outcome::Want(RKTLS_WANT_READ));
            }
            while let Some(n) = wire::whole_record(&self.bytes[self.whole..]) {
                self.whole += n;
            }
            // Greedy: whatever has arrived, the whole ClientHello in one
            // read (see the module doc for why that is safe with kTLS).
            let missing = wire::record_bytes_missing(&self.bytes[self.whole..]);
            let want = missing.max(HELLO_READ).min(MAX_HELLO - self.bytes.len());
            match sys::read_append(self.fd, &mut self.bytes, want, false) {
                Ok(n) => self.eof = n == 0,
                Err(e) => {
                    if sys::would_block(&e) {
                        return Ok(Outcome::Want(RKTLS_WANT_READ));
                    }
                    self.fail(Error::io(&e), Alert::none());
                }
            }
        }
    }
}

/// What the probe reports for `bytes` equals what the scan reported, when
/// the probe accepts them (checked in debug builds: tests and fuzzing).
#[cfg(debug_assertions)]
fn same_as_probe(bytes: &[u8], scanned: &Hello) {
    let mut a = Acceptor::new();
    a.probing = true;
    a.bytes = bytes.to_vec();
    if let Ok(Outcome::Accepted(acc)) = a.accept() {
        assert_eq!(
            &acc.hello, scanned,
            "the scan and rustls disagree on a ClientHello"
        );
    }
}

impl Accepted {
    /// Continue the handshake with `config`, replaying the ClientHello.
    pub(crate) fn make_connection(
        &mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<Connection, (Error, Alert)> {
        let bytes = self
            .bytes
            .take()
            .ok_or_else(|| (Error::code(RKTLS_ERR_HANDLE_CONSUMED), Alert::none()))?;
        match Connection::from_hello(config, bytes, self.fd, self.hello.server_name.clone()) {
            Ok(c) => Ok(c),
            Err((e, None)) => Err((e, Alert::none())),
            Err((e, Some(mut c))) => {
                let mut a = Alert::from_wire(c.take_all_out(), c.alert_sent());
                if self.fd >= 0 {
                    // A fresh socket has room for an alert; if not, the
                    // caller sees rktls_alert_pending() > 0 and writes it.
                    let _ = a.write_fd(self.fd);
                }
                Err((e, a))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::rktls_alert;
    use crate::config::rktls_server_config;
    use crate::connection::rktls_connection;
    use crate::fuzzing::last_record;
    use crate::testutil::{client_config, server_config, Opts, TLS12_SUITES, TLS13_SUITES};
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// A hand-built ClientHello, so tests can bend every field.
    #[derive(Clone)]
    pub(crate) struct Ch {
        pub(crate) legacy_version: u16,
        pub(crate) session_id_len: u8,
        pub(crate) suites: Vec<u16>,
        pub(crate) versions: Option<Vec<u16>>,
        pub(crate) alpn: Option<Vec<&'static [u8]>>,
        pub(crate) sni: Option<&'static str>,
        pub(crate) tls13_key_share: bool,
        pub(crate) extensions_override: Option<Vec<u8>>,
    }

    impl Ch {
        pub(crate) fn tls13() -> Self {
            Ch {
                legacy_version: 0x0303,
                session_id_len: 32,
                suites: TLS13_SUITES.to_vec(),
                versions: Some(vec![0x0304]),
                alpn: None,
                sni: Some("localhost"),
                tls13_key_share: true,
                extensions_override: None,
            }
        }

        pub(crate) fn tls12() -> Self {
            Ch {
                suites: TLS12_SUITES.to_vec(),
                versions: None,
                tls13_key_share: false,
                ..Ch::tls13()
            }
        }

        pub(crate) fn ext(out: &mut Vec<u8>, typ: u16, body: &[u8]) {
            out.extend_from_slice(&typ.to_be_bytes());
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(body);
        }

        fn u16_list(items: &[u16]) -> Vec<u8> {
            let mut v = ((items.len() * 2) as u16).to_be_bytes().to_vec();
            for i in items {
                v.extend_from_slice(&i.to_be_bytes());
            }
            v
        }

        pub(crate) fn extensions(&self) -> Vec<u8> {
            if let Some(e) = &self.extensions_override {
                return e.clone();
            }
            let mut e = Vec::new();
            if let Some(name) = self.sni {
                let mut b = ((name.len() + 3) as u16).to_be_bytes().to_vec();
                b.push(0);
                b.extend_from_slice(&(name.len() as u16).to_be_bytes());
                b.extend_from_slice(name.as_bytes());
                Self::ext(&mut e, 0, &b);
            }
            Self::ext(&mut e, 10, &Self::u16_list(&[0x001d, 0x0017]));
            Self::ext(&mut e, 11, &[1, 0]);
            Self::ext(
                &mut e,
                13,
                &Self::u16_list(&[0x0403, 0x0804, 0x0401, 0x0807]),
            );
            if let Some(protos) = &self.alpn {
                let mut list = Vec::new();
                for p in protos {
                    list.push(p.len() as u8);
                    list.extend_from_slice(p);
                }
                let mut b = (list.len() as u16).to_be_bytes().to_vec();
                b.extend_from_slice(&list);
                Self::ext(&mut e, 16, &b);
            }
            if let Some(vs) = &self.versions {
                let mut b = vec![(vs.len() * 2) as u8];
                for v in vs {
                    b.extend_from_slice(&v.to_be_bytes());
                }
                Self::ext(&mut e, 43, &b);
            }
            if self.tls13_key_share {
                let mut share = vec![0, 36, 0, 0x1d, 0, 32];
                share.extend_from_slice(&[9u8; 32]);
                Self::ext(&mut e, 51, &share);
                Self::ext(&mut e, 45, &[1, 1]);
            }
            e
        }

        pub(crate) fn message(&self) -> Vec<u8> {
            let mut b = self.legacy_version.to_be_bytes().to_vec();
            b.extend_from_slice(&[7u8; 32]);
            b.push(self.session_id_len);
            b.extend_from_slice(&vec![1u8; self.session_id_len.min(32) as usize]);
            b.extend_from_slice(&Self::u16_list(&self.suites));
            b.extend_from_slice(&[1, 0]);
            let e = self.extensions();
            b.extend_from_slice(&(e.len() as u16).to_be_bytes());
            b.extend_from_slice(&e);
            let mut m = vec![1, 0];
            m.extend_from_slice(&(b.len() as u16).to_be_bytes());
            m.extend_from_slice(&b);
            m
        }

        pub(crate) fn record(&self) -> Vec<u8> {
            record(22, &self.message())
        }
    }

    pub(crate) fn record(typ: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![typ, 3, 1];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn drive_to_error(c: &mut Connection, out: &mut Vec<u8>) -> rktls_result {
        let mut buf = [0u8; 8192];
        for _ in 0..10 {
            match c.handshake() {
                Ok(RKTLS_WANT_WRITE) => {
                    let n = c.take(&mut buf).unwrap();
                    out.extend_from_slice(&buf[..n]);
                }
                Ok(r) => return r,
                Err(e) => return e.code,
            }
        }
        panic!("no result");
    }

    fn direct(cfg: Arc<rustls::ServerConfig>, input: &[u8]) -> (rktls_result, Vec<u8>) {
        let mut s = Connection::server(cfg).unwrap();
        assert_eq!(s.feed(input).unwrap(), input.len());
        let mut out = Vec::new();
        let r = drive_to_error(&mut s, &mut out);
        (r, out)
    }

    fn via_acceptor(cfg: Arc<rustls::ServerConfig>, input: &[u8]) -> (rktls_result, Vec<u8>) {
        let mut a = Acceptor::new();
        assert_eq!(a.feed(input).unwrap(), input.len());
        match a.accept() {
            Ok(Outcome::Accepted(mut acc)) => match acc.make_connection(cfg) {
                Ok(mut c) => {
                    let mut out = Vec::new();
                    let r = drive_to_error(&mut c, &mut out);
                    (r, out)
                }
                Err((e, alert)) => (e.code, alert.bytes),
            },
            Ok(Outcome::Want(r)) => (r, Vec::new()),
            Err((e, alert)) => (e.code, alert.bytes),
        }
    }

    fn cfg(
        versions: &[u16],
        suites: Option<&[u16]>,
        alpn: Option<&[u8]>,
    ) -> Arc<rustls::ServerConfig> {
        server_config(&Opts {
            versions: Some(versions.to_vec()),
            suites: suites.map(<[u16]>::to_vec),
            alpn: alpn.map(<[u8]>::to_vec),
        })
    }

    /// Each case: the server config, the client's bytes, and the alerts
    /// acceptable for it (rustls picks one; both paths must agree).
    /// (name, server config, client bytes, acceptable alert descriptions)
    type Case = (
        &'static str,
        Arc<rustls::ServerConfig>,
        Vec<u8>,
        &'static [u8],
    );

    fn cases() -> Vec<Case> {
        let both = || cfg(&[0x0304, 0x0303], None, None);
        let mut truncated = Ch::tls13().message();
        truncated.truncate(truncated.len() - 20);
        let body_len = (truncated.len() - 4) as u16;
        truncated[2..4].copy_from_slice(&body_len.to_be_bytes());
        let mut garbage = Ch::tls13();
        garbage.extensions_override = Some(vec![0x12, 0x34, 0xff, 0xf0, 1, 2, 3]);
        let mut bad_sid = Ch::tls13();
        bad_sid.session_id_len = 40;
        let mut two = Ch::tls12().record();
        two.extend(Ch::tls12().record());
        let mut oversize = vec![22, 3, 1, 0x48, 0x01];
        oversize.extend_from_slice(&[0u8; 64]);
        let mut sslv2 = vec![
            0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
        ];
        sslv2.extend_from_slice(&[0u8; 37]);
        vec![
            (
                "tls12 client vs tls13 server",
                cfg(&[0x0304], None, None),
                Ch::tls12().record(),
                &[70],
            ),
            (
                "no cipher suite in common",
                cfg(&[0x0304], Some(&[0x1302]), None),
                Ch {
                    suites: vec![0x1301],
                    ..Ch::tls13()
                }
                .record(),
                &[40],
            ),
            (
                "no ALPN in common (TLS 1.2: the alert is still plaintext)",
                cfg(&[0x0303], None, Some(b"\x02h2")),
                Ch {
                    alpn: Some(vec![b"spdy/1"]),
                    ..Ch::tls12()
                }
                .record(),
                &[120],
            ),
            (
                "truncated ClientHello",
                both(),
                record(22, &truncated),
                &[50, 47],
            ),
            ("bad session id length", both(), bad_sid.record(), &[50, 47]),
            ("garbage extensions", both(), garbage.record(), &[50, 47]),
            (
                "HTTP request",
                both(),
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                &[50, 10, 70],
            ),
            ("SSLv2 ClientHello", both(), sslv2, &[50, 10, 70]),
            ("record over the size limit", both(), oversize, &[22, 50]),
            ("second ClientHello", cfg(&[0x0303], None, None), two, &[10]),
        ]
    }

    #[test]
    fn alerts_identical_on_direct_and_acceptor_paths() {
        for (name, cfg, input, expected) in cases() {
            let (rd, out_d) = direct(cfg.clone(), &input);
            let (ra, out_a) = via_acceptor(cfg, &input);
            let (ad, aa) = (last_record(&out_d), last_record(&out_a));
            assert!(
                rd != RKTLS_OK && rd != RKTLS_WANT_READ,
                "{name}: direct gave {rd:?}"
            );
            assert_eq!(
                ad.len(),
                7,
                "{name}: direct path sent no plaintext alert: {out_d:?}"
            );
            assert_eq!(ad, aa, "{name}: alerts differ ({rd:?} vs {ra:?})");
            assert_eq!(ad[0], 21, "{name}");
            assert!(
                expected.contains(&ad[6]),
                "{name}: alert {} not in {expected:?}",
                ad[6]
            );
            assert_eq!(rd.category(), ra.category(), "{name}: {rd:?} vs {ra:?}");
        }
    }

    /// Run a real rktls client against the server, directly or through an
    /// acceptor; return the server's result and the alert the client got.
    fn with_real_client(
        scfg: Arc<rustls::ServerConfig>,
        copts: &Opts,
        use_acceptor: bool,
    ) -> (rktls_result, Option<u8>) {
        let mut c = Connection::client(client_config(copts), "localhost").unwrap();
        let mut buf = vec![0u8; 65536];
        assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
        let n = c.take(&mut buf).unwrap();
        let mut s = if use_acceptor {
            let mut a = Acceptor::new();
            a.feed(&buf[..n]).unwrap();
            let Ok(Outcome::Accepted(mut acc)) = a.accept() else {
                panic!("not accepted")
            };
            match acc.make_connection(scfg) {
                Ok(s) => s,
                Err((e, alert)) => {
                    c.feed(&alert.bytes).unwrap();
                    // Whatever the client queued must be taken before its
                    // error is reported.
                    while c.handshake() == Ok(RKTLS_WANT_WRITE) {
                        c.take(&mut buf).unwrap();
                    }
                    let ce = c.handshake().unwrap_err();
                    assert_eq!(ce.code, RKTLS_ERR_ALERT_RECEIVED);
                    return (e.code, c.alert_received());
                }
            }
        } else {
            let mut s = Connection::server(scfg).unwrap();
            s.feed(&buf[..n]).unwrap();
            s
        };
        let mut server_result;
        for _ in 0..10 {
            match s.handshake() {
                Ok(r) => server_result = r,
                Err(e) => {
                    server_result = e.code;
                }
            }
            let n = s.take(&mut buf).unwrap();
            if n > 0 {
                c.feed(&buf[..n]).unwrap();
            }
            if let Err(e) = c.handshake() {
                assert_eq!(e.code, RKTLS_ERR_ALERT_RECEIVED, "client: {e}");
                let _ = s.handshake().map_err(|e| server_result = e.code);
                return (server_result, c.alert_received());
            }
            let n = c.take(&mut buf).unwrap();
            if n > 0 {
                s.feed(&buf[..n]).unwrap();
            }
        }
        panic!("handshake did not fail");
    }

    #[test]
    fn real_client_gets_the_same_alert_on_both_paths() {
        let cases: Vec<(&str, Arc<rustls::ServerConfig>, Opts, u8, rktls_result)> = vec![
            (
                "version",
                cfg(&[0x0304], None, None),
                Opts {
                    versions: Some(vec![0x0303]),
                    ..Opts::default()
                },
                70,
                RKTLS_ERR_PEER_INCOMPATIBLE,
            ),
            (
                "cipher",
                cfg(&[0x0304], Some(&[0x1302]), None),
                Opts {
                    suites: Some(vec![0x1301]),
                    ..Opts::default()
                },
                40,
                RKTLS_ERR_PEER_INCOMPATIBLE,
            ),
            (
                "ALPN, TLS 1.3 (encrypted alert)",
                cfg(&[0x0304], None, Some(b"\x02h2")),
                Opts {
                    alpn: Some(b"\x06spdy/1".to_vec()),
                    ..Opts::default()
                },
                120,
                RKTLS_ERR_NO_APPLICATION_PROTOCOL,
            ),
        ];
        for (name, scfg, copts, alert, code) in cases {
            for use_acceptor in [false, true] {
                let (r, got) = with_real_client(scfg.clone(), &copts, use_acceptor);
                assert_eq!(got, Some(alert), "{name} (acceptor: {use_acceptor})");
                assert_eq!(r, code, "{name} (acceptor: {use_acceptor})");
            }
        }
    }

    #[test]
    fn accepted_exposes_the_client_hello() {
        let ch = Ch {
            alpn: Some(vec![b"h2", b"http/1.1"]),
            versions: Some(vec![0x0304, 0x0303]),
            ..Ch::tls13()
        };
        let mut a = Acceptor::new();
        let bytes = ch.record();
        // One byte at a time: need more, until the whole hello is in.
        for (i, b) in bytes.iter().enumerate() {
            a.feed(&[*b]).unwrap();
            let r = a.accept();
            if i + 1 < bytes.len() {
                assert!(matches!(r, Ok(Outcome::Want(RKTLS_WANT_READ))), "at {i}");
            } else {
                let Ok(Outcome::Accepted(acc)) = r else {
                    panic!("not accepted")
                };
                assert_eq!(acc.hello.server_name.as_deref(), Some("localhost"));
                assert_eq!(acc.hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
                assert_eq!(acc.hello.cipher_suites, TLS13_SUITES);
                assert_eq!(acc.hello.versions, vec![0x0304, 0x0303]);
                assert_eq!(acc.hello.named_groups, vec![0x001d, 0x0017]);
                assert!(acc.hello.signature_schemes.contains(&0x0403));
            }
        }
    }

    #[test]
    fn misuse_gets_its_own_codes() {
        let mut a = Acceptor::new();
        a.feed(&Ch::tls13().record()).unwrap();
        let Ok(Outcome::Accepted(mut acc)) = a.accept() else {
            panic!()
        };
        assert_eq!(a.accept().err().unwrap().0.code, RKTLS_ERR_ALREADY_ACCEPTED);
        assert!(acc.make_connection(cfg(&[0x0304], None, None)).is_ok());
        let (e, alert) = acc
            .make_connection(cfg(&[0x0304], None, None))
            .err()
            .unwrap();
        assert_eq!(e.code, RKTLS_ERR_HANDLE_CONSUMED);
        assert!(!alert.present());

        let mut a = Acceptor::new();
        a.feed(b"\x16\x03\x01\x00\x05hello").unwrap();
        let (e, alert) = a.accept().err().unwrap();
        assert_eq!(
            e.code.category(),
            crate::result::rktls_category::RKTLS_CATEGORY_PROTOCOL
        );
        assert!(alert.present());
        assert_eq!(a.accept().err().unwrap().0.code, RKTLS_ERR_ALREADY_FAILED);
        assert_eq!(a.feed(b"x").unwrap_err().code, RKTLS_ERR_WRONG_STATE);
    }

    #[test]
    fn c_api_null_config_consumes_nothing() {
        let mut acc: *mut rktls_acceptor = std::ptr::null_mut();
        assert_eq!(rktls_acceptor_new(&mut acc), RKTLS_OK);
        let bytes = Ch::tls13().record();
        let mut n = 0;
        assert_eq!(
            rktls_acceptor_feed(acc, bytes.as_ptr(), bytes.len(), &mut n),
            RKTLS_OK
        );
        let mut accepted: *mut rktls_accepted = std::ptr::null_mut();
        let mut alert: *mut rktls_alert = std::ptr::null_mut();
        assert_eq!(
            rktls_acceptor_accept(acc, &mut accepted, &mut alert),
            RKTLS_OK
        );
        assert!(alert.is_null());
        let mut conn: *mut rktls_connection = std::ptr::null_mut();
        let r = rktls_accepted_into_connection(accepted, std::ptr::null(), &mut conn, &mut alert);
        assert_eq!(r, RKTLS_ERR_NULL_ARGUMENT);
        assert!(!alert.is_null() && !crate::alert::rktls_alert_present(alert));
        crate::alert::rktls_alert_free(alert);
        alert = std::ptr::null_mut();
        let cfg = crate::config::ServerConfig {
            rustls: server_config(&Opts::default()),
            ktls: crate::ktls::rktls_ktls_mode::RKTLS_KTLS_OFF,
            offload: Default::default(),
        };
        let cfg_ptr = crate::ffi::arc_into_ptr::<rktls_server_config>(Arc::new(cfg));
        let r = rktls_accepted_into_connection(accepted, cfg_ptr, &mut conn, &mut alert);
        assert_eq!(r, RKTLS_OK);
        assert!(!conn.is_null() && alert.is_null());
        let mut again: *mut rktls_connection = std::ptr::null_mut();
        let r = rktls_accepted_into_connection(accepted, cfg_ptr, &mut again, &mut alert);
        assert_eq!(r, RKTLS_ERR_HANDLE_CONSUMED);
        assert!(again.is_null(), "written only on success");
        crate::alert::rktls_alert_free(alert);
        rktls_accepted_free(accepted);
        crate::connection::rktls_connection_free(conn);
        crate::config::rktls_server_config_free(cfg_ptr);
        rktls_acceptor_free(acc);
        rktls_accepted_free(std::ptr::null_mut());
    }

    #[test]
    fn fd_mode_sends_alerts_itself() {
        // A version mismatch found by into_connection.
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&Ch::tls12().record()).unwrap();
        let mut acc = Acceptor::new();
        acc.set_fd(a.as_raw_fd()).unwrap();
        let Ok(Outcome::Accepted(mut accepted)) = acc.accept() else {
            panic!()
        };
        let (e, alert) = accepted
            .make_connection(cfg(&[0x0304], None, None))
            .err()
            .unwrap();
        assert_eq!(e.code, RKTLS_ERR_PEER_INCOMPATIBLE);
        assert_eq!(alert.pending(), 0, "written by rktls");
        let mut got = [0u8; 7];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, [21, 3, 3, 0, 2, 2, 70]);

        // Garbage found by the acceptor itself, on a non-blocking socket.
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut acc = Acceptor::new();
        acc.set_fd(a.as_raw_fd()).unwrap();
        assert!(matches!(acc.accept(), Ok(Outcome::Want(RKTLS_WANT_READ))));
        b.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
        let (_, alert) = acc.accept().err().unwrap();
        let mut got = vec![0u8; alert.bytes.len()];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, alert.bytes);
        assert_eq!(got[0], 21);

        // A client that closes before its hello is complete: no alert owed.
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&Ch::tls13().record()[..30]).unwrap();
        drop(b);
        let mut acc = Acceptor::new();
        acc.set_fd(a.as_raw_fd()).unwrap();
        let (e, alert) = acc.accept().err().unwrap();
        assert_eq!(e.code, RKTLS_ERR_TRUNCATED);
        assert!(!alert.present());
    }

    #[test]
    fn fd_mode_acceptor_reads_no_further_than_the_hello() {
        let (a, b) = UnixStream::pair().unwrap();
        let ccfg = client_config(&Opts::default());
        let client = std::thread::spawn(move || {
            let mut c = Connection::client(ccfg, "localhost").unwrap();
            c.set_fd(b.as_raw_fd()).unwrap();
            assert_eq!(c.write(b"hello").unwrap(), (RKTLS_OK, 5));
            let mut buf = [0u8; 16];
            let (r, n) = c.read(&mut buf).unwrap();
            assert_eq!((r, &buf[..n]), (RKTLS_OK, &b"world"[..]));
            drop(b);
        });
        let mut acc = Acceptor::new();
        acc.set_fd(a.as_raw_fd()).unwrap();
        let Ok(Outcome::Accepted(mut accepted)) = acc.accept() else {
            panic!()
        };
        assert_eq!(accepted.hello.server_name.as_deref(), Some("localhost"));
        let mut conn = accepted
            .make_connection(server_config(&Opts::default()))
            .unwrap();
        assert_eq!(conn.handshake().unwrap(), RKTLS_OK);
        let mut buf = [0u8; 16];
        let (r, n) = conn.read(&mut buf).unwrap();
        assert_eq!((r, &buf[..n]), (RKTLS_OK, &b"hello"[..]));
        conn.write(b"world").unwrap();
        client.join().unwrap();
    }
}
