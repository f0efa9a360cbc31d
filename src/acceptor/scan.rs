//! A light scan of the ClientHello for the acceptor, so that the usual
//! hello is parsed once (by the connection the caller's config makes), not
//! twice (issue #14).
//!
//! The scan reads what the acceptor exposes, in place, with no allocation
//! but the results, and only for the hellos whose meaning it knows as
//! rustls does: a well-formed TLS 1.3-capable hello made of the extensions
//! rustls parses that it checks here (the same lengths, the same non-empty
//! lists, no duplicates, pre_shared_key last, the message ending its
//! record) plus extensions rustls ignores. Anything else is `Unsure`, and
//! the acceptor's probe (rustls itself, `hello::probe_config`) decides, as
//! before: every refused hello still gets the direct path's alert. A hello
//! the scan passes and rustls refuses later (a defect the scan does not
//! look for, e.g. a key share of the wrong size) is refused when the
//! connection is made, with that same alert.
//!
//! What it reports equals what the probe reports for the same bytes
//! (asserted in tests, and on every input of the acceptor fuzz target).

use rustls::pki_types::ServerName;

use crate::hello::{Hello, Reader};
use crate::wire;

/// What the scan found in the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// A valid prefix: more bytes are needed.
    Incomplete,
    Hello(Box<Hello>),
    /// Not the usual hello: let rustls decide.
    Unsure,
}

/// rustls' largest handshake message.
const MAX_MESSAGE: usize = 0xffff;
const TLS13_SUITES: [u16; 3] = [0x1301, 0x1302, 0x1303];

// Extensions rustls parses (rustls::msgs::handshake::ClientExtensions).
const SERVER_NAME: u16 = 0;
const STATUS_REQUEST: u16 = 5;
const SUPPORTED_GROUPS: u16 = 10;
const EC_POINT_FORMATS: u16 = 11;
const SIGNATURE_ALGORITHMS: u16 = 13;
const ALPN: u16 = 16;
const EXTENDED_MASTER_SECRET: u16 = 23;
const COMPRESS_CERTIFICATE: u16 = 27;
const SESSION_TICKET: u16 = 35;
const PRE_SHARED_KEY: u16 = 41;
const EARLY_DATA: u16 = 42;
const SUPPORTED_VERSIONS: u16 = 43;
const PSK_KEY_EXCHANGE_MODES: u16 = 45;
const KEY_SHARE: u16 = 51;
const RENEGOTIATION_INFO: u16 = 0xff01;
/// Parsed by rustls, not checked here: a hello with one is `Unsure`.
const NOT_SCANNED: [u16; 9] = [
    19,     // client_certificate_type
    20,     // server_certificate_type
    44,     // cookie
    47,     // certificate_authorities
    57,     // quic_transport_parameters
    58,     // ticket_request
    0xffa5, // quic_transport_parameters (draft)
    0xfe0d, // encrypted_client_hello
    0xfd00, // ech_outer_extensions
];

fn u16s(list: &[u8]) -> Option<Vec<u16>> {
    (list.len() % 2 == 0).then(|| {
        list.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    })
}

/// Scan the bytes an acceptor received.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut joined: Vec<u8> = Vec::new();
    let mut first: Option<&[u8]> = None;
    for r in wire::records(bytes) {
        let h = &r.bytes[..wire::HEADER];
        if r.header.typ != wire::CT_HANDSHAKE
            || h[1] != 3
            || !(1..=3).contains(&h[2])
            || r.header.len == 0
            || r.header.len > wire::MAX_FRAGMENT
        {
            return Scan::Unsure;
        }
        let Some(body) = r.payload() else {
            return Scan::Incomplete;
        };
        let msg = match first {
            None => {
                first = Some(body);
                body
            }
            Some(f) => {
                if joined.is_empty() {
                    joined.extend_from_slice(f);
                }
                joined.extend_from_slice(body);
                &joined
            }
        };
        let Some((typ, len)) = wire::handshake_header(msg) else {
            continue;
        };
        if typ != wire::HS_CLIENT_HELLO || len > MAX_MESSAGE {
            return Scan::Unsure;
        }
        let need = wire::HS_HEADER + len;
        if msg.len() < need {
            continue;
        }
        // No other handshake message may follow it in its record.
        if msg.len() > need {
            return Scan::Unsure;
        }
        return hello(&msg[wire::HS_HEADER..]).map_or(Scan::Unsure, |h| Scan::Hello(Box::new(h)));
    }
    Scan::Incomplete
}

/// The ClientHello body, if the scan knows it.
fn hello(body: &[u8]) -> Option<Hello> {
    let mut r = Reader(body);
    if r.u16()? != 0x0303 {
        return None;
    }
    r.take(32)?;
    let n = r.u8()?;
    if n > 32 {
        return None;
    }
    r.take(n)?;
    let n = r.u16()?;
    let suites = u16s(r.take(n)?)?;
    if suites.is_empty() || !suites.iter().any(|s| TLS13_SUITES.contains(s)) {
        return None;
    }
    let n = r.u8()?;
    if !r.take(n)?.contains(&0) {
        return None;
    }
    let exts = r.whole_list(true, 1)?;
    let mut h = Hello {
        cipher_suites: suites,
        ..Hello::default()
    };
    let mut seen: Vec<u16> = Vec::new();
    let (mut sigalgs, mut tls13, mut key_share) = (false, false, false);
    let mut e = Reader(exts);
    while !e.done() {
        let typ = e.u16()? as u16;
        let n = e.u16()?;
        let mut b = Reader(e.take(n)?);
        if seen.contains(&typ) || seen.last() == Some(&PRE_SHARED_KEY) || seen.len() >= 64 {
            return None;
        }
        seen.push(typ);
        match typ {
            SERVER_NAME => h.server_name = server_name(b.whole_list(true, 1)?)?,
            SUPPORTED_GROUPS => h.named_groups = u16s(b.whole_list(true, 2)?)?,
            SIGNATURE_ALGORITHMS => {
                h.signature_schemes = u16s(b.whole_list(true, 2)?)?;
                sigalgs = true;
            }
            ALPN => {
                let mut l = Reader(b.whole_list(true, 1)?);
                while !l.done() {
                    let n = l.u8()?;
                    if n == 0 {
                        return None;
                    }
                    h.alpn.push(l.take(n)?.to_vec());
                }
            }
            SUPPORTED_VERSIONS => {
                h.versions = u16s(b.whole_list(false, 2)?)?;
                tls13 = h.versions.contains(&0x0304);
            }
            EC_POINT_FORMATS | PSK_KEY_EXCHANGE_MODES => {
                b.whole_list(false, 1)?;
            }
            COMPRESS_CERTIFICATE => {
                u16s(b.whole_list(false, 2)?)?;
            }
            RENEGOTIATION_INFO => {
                // Only the empty one: a non-empty one is refused (rktls'
                // own check, `hello_facts`).
                b.whole_list(false, 0)?.is_empty().then_some(())?;
            }
            EXTENDED_MASTER_SECRET | EARLY_DATA => b.done().then_some(())?,
            SESSION_TICKET => {}
            STATUS_REQUEST => {
                // OCSP: responder ids (u16 list of u16-long items) and
                // request extensions (u16-long); another type: opaque.
                let ocsp = b.u8()? == 1;
                let mut ids = Reader(if ocsp {
                    b.u16().and_then(|n| b.take(n))?
                } else {
                    &[]
                });
                while !ids.done() {
                    let n = ids.u16()?;
                    ids.take(n)?;
                }
                if ocsp {
                    b.whole_list(true, 0)?;
                }
            }
            KEY_SHARE => {
                let mut l = Reader(b.whole_list(true, 0)?);
                while !l.done() {
                    l.u16()?;
                    let n = l.u16()?;
                    if n == 0 {
                        return None;
                    }
                    l.take(n)?;
                }
                key_share = true;
            }
            PRE_SHARED_KEY => {
                let mut ids = Reader(b.u16().and_then(|n| b.take(n))?);
                if ids.done() {
                    return None;
                }
                while !ids.done() {
                    let n = ids.u16()?;
                    if n == 0 {
                        return None;
                    }
                    ids.take(n + 4)?;
                }
                let mut binders = Reader(b.whole_list(true, 1)?);
                while !binders.done() {
                    let n = binders.u8()?;
                    if n == 0 {
                        return None;
                    }
                    binders.take(n)?;
                }
            }
            t if NOT_SCANNED.contains(&t) => return None,
            _ => {} // ignored by rustls
        }
    }
    // rustls needs signature_algorithms; rktls refuses supported_groups
    // without key_share (`hello_facts`). TLS 1.3 offered, with a TLS 1.3
    // suite: rustls then shows the resolver every signature scheme.
    let groups = seen.contains(&SUPPORTED_GROUPS);
    (sigalgs && tls13 && key_share == groups && key_share).then_some(h)
}

/// The SNI name as rustls gives it (lowercase), `None` for an IP address;
/// the outer `None` for anything else (rustls refuses it or reads it
/// another way).
fn server_name(list: &[u8]) -> Option<Option<String>> {
    let mut l = Reader(list);
    if l.u8()? != 0 {
        return None;
    }
    let n = l.u16()?;
    let name = l.take(n)?;
    if n == 0 || !l.done() {
        return None;
    }
    match ServerName::try_from(name).ok()? {
        ServerName::DnsName(d) => Some(Some(d.to_lowercase_owned().as_ref().to_string())),
        ServerName::IpAddress(_) => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acceptor::tests::Ch;
    use crate::acceptor::{Acceptor, Outcome};
    use crate::testutil::{client_config, pump, server_config, Opts};
    use std::sync::Arc;

    /// What the probe (rustls) reports for these bytes, if it accepts them.
    fn probe(bytes: &[u8]) -> Option<Hello> {
        let mut a = Acceptor::new();
        a.probing = true;
        a.feed(bytes).unwrap();
        match a.accept() {
            Ok(Outcome::Accepted(acc)) => Some(acc.hello.clone()),
            _ => None,
        }
    }

    /// A rustls client's first flight.
    fn client_hello(c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    fn rustls_hellos() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for o in [
            Opts::default(),
            Opts {
                alpn: Some(b"\x02h2\x08http/1.1".to_vec()),
                ..Opts::default()
            },
            Opts {
                suites: Some(vec![0x1302]),
                ..Opts::default()
            },
        ] {
            let cfg = client_config(&o);
            let mut c = rustls::ClientConnection::new(cfg.clone(), "LocalHost".try_into().unwrap())
                .unwrap();
            v.push(client_hello(&mut c));
            // Resumption: a hello with pre_shared_key (last).
            let mut s = rustls::ServerConnection::new(server_config(&Opts::default())).unwrap();
            use std::io::Write;
            s.writer().write_all(b"x").unwrap();
            pump(&mut *c, &mut *s, 20);
            let mut c =
                rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
            v.push(client_hello(&mut c));
        }
        let cfg = client_config(&Opts::default());
        let ip = rustls::pki_types::ServerName::IpAddress("127.0.0.1".try_into().unwrap());
        v.push(client_hello(
            &mut rustls::ClientConnection::new(cfg, ip).unwrap(),
        ));
        v
    }

    #[test]
    fn usual_hellos_are_scanned_as_rustls_reads_them() {
        let mut hellos = rustls_hellos();
        let by_ip = hellos.last().unwrap().clone();
        hellos.push(Ch::tls13().record());
        let mut alpn = Ch::tls13();
        alpn.alpn = Some(vec![b"h2", b"http/1.1"]);
        alpn.sni = Some("WWW.Example.COM");
        hellos.push(alpn.record());
        for h in &hellos {
            let Scan::Hello(s) = scan(h) else {
                panic!("not scanned: {h:02x?}");
            };
            assert_eq!(Some(*s), probe(h));
            // Every prefix is incomplete.
            for cut in [0, 1, 5, 9, h.len() - 1] {
                assert_eq!(scan(&h[..cut]), Scan::Incomplete, "cut {cut}");
            }
        }
        // Split over two records.
        let msg = &hellos[0][wire::HEADER..];
        let (a, b) = msg.split_at(100);
        let mut two = wire::record(wire::CT_HANDSHAKE, a);
        two.extend(wire::record(wire::CT_HANDSHAKE, b));
        assert!(matches!(scan(&two), Scan::Hello(_)));
        assert_eq!(scan(&two[..two.len() - 1]), Scan::Incomplete);
        // The name as rustls gives it; none for an IP address.
        let Scan::Hello(h) = scan(&hellos[0]) else {
            unreachable!()
        };
        assert_eq!(h.server_name.as_deref(), Some("localhost"));
        let Scan::Hello(h) = scan(&by_ip) else {
            unreachable!()
        };
        assert_eq!(h.server_name, None);
        let Scan::Hello(h) = scan(hellos.last().unwrap()) else {
            unreachable!()
        };
        assert_eq!(h.server_name.as_deref(), Some("www.example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn unusual_hellos_are_left_to_rustls() {
        let mut cases = vec![Ch::tls12().record(), b"GET / HTTP/1.1\r\n\r\n".to_vec()];
        let mut c = Ch::tls13();
        c.legacy_version = 0x0301;
        cases.push(c.record());
        let mut c = Ch::tls13();
        c.tls13_key_share = false;
        cases.push(c.record());
        let mut c = Ch::tls13();
        c.sni = Some("bad name!");
        cases.push(c.record());
        // A duplicate extension, an extension the scan does not check.
        for extra in [&[0, 43, 0, 3, 2, 3, 4][..], &[0, 47, 0, 2, 0, 0]] {
            let mut c = Ch::tls13();
            let mut e = c.extensions();
            e.extend_from_slice(extra);
            c.extensions_override = Some(e);
            cases.push(c.record());
        }
        // Another handshake message after the hello in its record.
        let mut m = Ch::tls13().message();
        m.extend_from_slice(&[20, 0, 0, 0]);
        cases.push(wire::record(wire::CT_HANDSHAKE, &m));
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(scan(c), Scan::Unsure, "case {i}");
        }
    }

    /// Mutated hellos: whenever the scan reports a hello, rustls reports
    /// the same one or refuses the bytes (`same_as_probe` asserts it in
    /// the acceptor too).
    #[test]
    fn mutated_hellos_agree_with_rustls() {
        let hellos = rustls_hellos();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut scanned, mut agreed) = (0, 0);
        for i in 0..3000 {
            let mut h = hellos[i % hellos.len()].clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % h.len();
                match next() % 4 {
                    0 => h[at] ^= 1 << (next() % 8),
                    1 => h[at] = next() as u8,
                    2 => h[at] = h[at].wrapping_add(1),
                    _ => h[at] = h[at].wrapping_sub(1),
                }
            }
            if let Scan::Hello(s) = scan(&h) {
                scanned += 1;
                if let Some(p) = probe(&h) {
                    assert_eq!(*s, p, "mutation {i}: {h:02x?}");
                    agreed += 1;
                }
            }
        }
        eprintln!("{scanned} mutated hellos scanned, {agreed} also accepted by rustls");
        assert!(agreed > 100, "{agreed}");
    }

    #[test]
    fn acceptor_uses_the_scan_and_the_connection_completes() {
        let cfg = client_config(&Opts::default());
        let mut c = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
        let hello = client_hello(&mut c);
        let mut a = Acceptor::new();
        a.feed(&hello).unwrap();
        let Ok(Outcome::Accepted(mut acc)) = a.accept() else {
            panic!("not accepted");
        };
        assert!(!a.probing, "the scan accepted it");
        let scfg: Arc<rustls::ServerConfig> = server_config(&Opts::default());
        let mut s = acc.make_connection(scfg).map_err(|e| e.0.msg).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.take(&mut buf).unwrap();
        c.read_tls(&mut &buf[..n]).unwrap();
        c.process_new_packets().unwrap();
        assert!(!c.is_handshaking(), "the client completed its handshake");
        assert_eq!(
            c.negotiated_cipher_suite().map(|s| u16::from(s.suite())),
            Some(0x1301)
        );
    }
}
