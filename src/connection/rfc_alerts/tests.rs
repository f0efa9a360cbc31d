//! Each case on both server paths (direct, and through an acceptor): the
//! exact alert bytes a raw-record peer receives (decrypted where they are
//! encrypted) and the alert the API reports.

use std::sync::Arc;

use super::*;
use crate::acceptor::tests::{record, Ch};
use crate::acceptor::{Acceptor, Outcome};
use crate::kernel_emul::{self, Key};
use crate::testutil::{client_config, server_config, shuttle, Opts};

const TLS13: u16 = 0x0304;
const TLS12: u16 = 0x0303;

fn cfg(versions: &[u16], suites: Option<&[u16]>) -> Arc<rustls::ServerConfig> {
    server_config(&Opts {
        versions: Some(versions.to_vec()),
        suites: suites.map(<[u16]>::to_vec),
        alpn: None,
    })
}

/// What the server did with a client's bytes: its result, every byte it
/// sent, and the alert it reports (`rktls_connection_alert_sent`, or the
/// acceptor's `rktls_alert`).
#[derive(Debug, PartialEq)]
struct Outcome2 {
    code: rktls_result,
    wire: Vec<u8>,
    reported: Option<u8>,
}

fn drive(c: &mut Connection) -> Outcome2 {
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..20 {
        let r = c.handshake();
        let n = c.take(&mut buf).unwrap();
        wire.extend_from_slice(&buf[..n]);
        match r {
            Ok(RKTLS_WANT_WRITE) => continue,
            Ok(code) => {
                return Outcome2 {
                    code,
                    wire,
                    reported: c.alert_sent(),
                }
            }
            Err(e) => {
                return Outcome2 {
                    code: e.code,
                    wire,
                    reported: c.alert_sent(),
                }
            }
        }
    }
    panic!("no result");
}

fn direct(cfg: Arc<rustls::ServerConfig>, input: &[u8]) -> Outcome2 {
    let mut s = Connection::server(cfg).unwrap();
    assert_eq!(s.feed(input).unwrap(), input.len());
    drive(&mut s)
}

fn via_acceptor(cfg: Arc<rustls::ServerConfig>, input: &[u8]) -> Outcome2 {
    let mut a = Acceptor::new();
    assert_eq!(a.feed(input).unwrap(), input.len());
    let failed = |e: Error, a: alert::Alert| Outcome2 {
        code: e.code,
        reported: a.present().then_some(a.description),
        wire: a.bytes,
    };
    match a.accept() {
        Ok(Outcome::Accepted(mut acc)) => match acc.make_connection(cfg) {
            Ok(mut c) => drive(&mut c),
            Err((e, a)) => failed(e, a),
        },
        Ok(Outcome::Want(r)) => panic!("acceptor wants more: {r:?}"),
        Err((e, a)) => failed(e, a),
    }
}

/// A ClientHello-phase case: both paths send exactly `alert` (a plaintext
/// fatal alert, nothing else), report it, and fail with `code`.
fn plaintext_case(
    name: &str,
    cfg: Arc<rustls::ServerConfig>,
    input: &[u8],
    desc: u8,
    code: rktls_result,
) {
    for (path, got) in [
        ("direct", direct(cfg.clone(), input)),
        ("acceptor", via_acceptor(cfg, input)),
    ] {
        let want = Outcome2 {
            code,
            wire: alert::Message { level: FATAL, desc }
                .plain_record()
                .to_vec(),
            reported: Some(desc),
        };
        assert_eq!(got, want, "{name}, {path} path");
    }
}

#[test]
fn empty_alert_record_gets_unexpected_message() {
    // rustls 0.23 alone: decode_error.
    plaintext_case(
        "empty alert record",
        cfg(&[TLS13, TLS12], None),
        &[CT_ALERT, 3, 3, 0, 0],
        RKTLS_ALERT_UNEXPECTED_MESSAGE as u8,
        RKTLS_ERR_UNEXPECTED_MESSAGE,
    );
}

#[test]
fn unknown_content_type_gets_unexpected_message() {
    // Checked before the length: "T " would be a 21,536-byte record.
    // rustls 0.23 alone: decode_error.
    for input in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"POST / HTTP/1.1\r\n\r\n"] {
        plaintext_case(
            "HTTP request",
            cfg(&[TLS13, TLS12], None),
            input,
            RKTLS_ALERT_UNEXPECTED_MESSAGE as u8,
            RKTLS_ERR_UNEXPECTED_MESSAGE,
        );
    }
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        let (_, got) = answer(&mut s, &mut peer, &[99, 3, 3, 0, 3, 1, 2, 3]);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "{v:x} {suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
    }
}

#[test]
fn tls13_hello_without_key_share_gets_missing_extension() {
    // supported_groups, no key_share. rustls 0.23 alone: handshake_failure.
    let ch = Ch {
        tls13_key_share: false,
        ..Ch::tls13()
    };
    plaintext_case(
        "no key_share",
        cfg(&[TLS13], None),
        &ch.record(),
        RKTLS_ALERT_MISSING_EXTENSION as u8,
        RKTLS_ERR_PEER_INCOMPATIBLE,
    );
}

/// A ClientHello whose record body is exactly `len` bytes (padding
/// extension).
fn hello_record_of(len: usize) -> Vec<u8> {
    let base = Ch::tls13().message().len();
    let mut e = Ch::tls13().extensions();
    Ch::ext(&mut e, 21, &vec![0u8; len - base - 4]);
    let ch = Ch {
        extensions_override: Some(e),
        ..Ch::tls13()
    };
    let rec = record(CT_HANDSHAKE, &ch.message());
    assert_eq!(rec.len(), HEADER + len);
    rec
}

#[test]
fn plaintext_record_over_2_14_gets_record_overflow() {
    // A ClientHello in one record of 2^14 bytes is fine, of 2^14 + 1 is
    // not. rustls 0.23 alone accepts it.
    let ok = direct(cfg(&[TLS13], None), &hello_record_of(MAX_FRAGMENT));
    assert_eq!(ok.code, RKTLS_WANT_READ, "{ok:?}");
    assert_eq!(ok.reported, None);
    plaintext_case(
        "ClientHello record of 2^14 + 1 bytes",
        cfg(&[TLS13], None),
        &hello_record_of(MAX_FRAGMENT + 1),
        RKTLS_ALERT_RECORD_OVERFLOW as u8,
        RKTLS_ERR_PROTOCOL,
    );
    // Judged on the header alone: the body never has to arrive.
    plaintext_case(
        "header of a 2^14 + 1 byte record",
        cfg(&[TLS13], None),
        &[CT_HANDSHAKE, 3, 1, 0x40, 0x01],
        RKTLS_ALERT_RECORD_OVERFLOW as u8,
        RKTLS_ERR_PROTOCOL,
    );
}

#[test]
fn initial_tls12_hello_with_renegotiation_info_is_refused() {
    // RFC 5746 §3.6; rustls 0.23 alone accepts it. No ServerHello leaves.
    let mut e = Ch::tls12().extensions();
    Ch::ext(&mut e, 0xff01, &[2, 0x55, 0x55]);
    let ch = Ch {
        extensions_override: Some(e),
        ..Ch::tls12()
    };
    plaintext_case(
        "non-empty renegotiation_info",
        cfg(&[TLS12], None),
        &ch.record(),
        RKTLS_ALERT_HANDSHAKE_FAILURE as u8,
        RKTLS_ERR_PEER_MISBEHAVED,
    );
    // The empty one (a client announcing secure renegotiation) is fine,
    // and so is a non-empty one when TLS 1.3 is negotiated.
    let mut e = Ch::tls12().extensions();
    Ch::ext(&mut e, 0xff01, &[0]);
    let ch = Ch {
        extensions_override: Some(e),
        ..Ch::tls12()
    };
    for got in [
        direct(cfg(&[TLS12], None), &ch.record()),
        via_acceptor(cfg(&[TLS12], None), &ch.record()),
    ] {
        assert_eq!((got.code, got.reported), (RKTLS_WANT_READ, None));
        assert_eq!(got.wire[0], CT_HANDSHAKE, "a ServerHello");
    }
    let mut e = Ch::tls13().extensions();
    Ch::ext(&mut e, 0xff01, &[2, 0x55, 0x55]);
    let ch = Ch {
        extensions_override: Some(e),
        versions: Some(vec![TLS13, TLS12]),
        ..Ch::tls13()
    };
    let got = direct(cfg(&[TLS13, TLS12], None), &ch.record());
    assert_eq!((got.code, got.reported), (RKTLS_WANT_READ, None));
}

// ---------------------------------------------------------------------------
// After the handshake: the peer holds the client's keys.

/// The client's side of an established connection, with its keys.
struct Peer {
    tx: Key,
    rx: Key,
}

impl Peer {
    fn take_over(mut conn: Connection) -> Peer {
        let suite = conn.common().unwrap().negotiated_cipher_suite().unwrap();
        let (secrets, _) = conn.take_secrets().unwrap().unwrap();
        let key = |s| kernel_emul::parse(&crate::ktls::crypto_info(suite, &s).unwrap()).unwrap();
        Peer {
            tx: key(secrets.tx),
            rx: key(secrets.rx),
        }
    }

    /// Decrypt every record in `wire`: (content type, payload) each.
    fn open(&mut self, mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let n = HEADER + u16::from_be_bytes([wire[3], wire[4]]) as usize;
            out.push(self.rx.open(&wire[..n]).expect("the record opens"));
            wire = &wire[n..];
        }
        out
    }
}

/// An established server (direct path, or through an acceptor) and the
/// client's keys.
fn established(version: u16, suite: u16, acceptor: bool) -> (Connection, Peer) {
    let o = Opts {
        versions: Some(vec![version]),
        suites: Some(vec![suite]),
        alpn: None,
    };
    let scfg = server_config(&o);
    let mut c = Connection::client(client_config(&o), "localhost").unwrap();
    assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
    let mut s = if acceptor {
        let mut hello = vec![0u8; 65536];
        let n = c.take(&mut hello).unwrap();
        let mut a = Acceptor::new();
        a.feed(&hello[..n]).unwrap();
        let Ok(Outcome::Accepted(mut acc)) = a.accept() else {
            panic!("not accepted")
        };
        acc.make_connection(scfg).unwrap()
    } else {
        Connection::server(scfg).unwrap()
    };
    for _ in 0..10 {
        let _ = s.handshake();
        shuttle(&mut s, &mut c);
        let _ = c.handshake();
        shuttle(&mut c, &mut s);
    }
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    assert_eq!(c.handshake().unwrap(), RKTLS_OK);
    assert!(!s.is_handshaking() && !c.is_handshaking());
    (s, Peer::take_over(c))
}

const SUITES13: [u16; 3] = [0x1301, 0x1302, 0x1303];
const SUITES12: [u16; 3] = [0xc02b, 0xc02c, 0xcca9];

/// Every established connection to test: (version, suite, acceptor path).
fn every() -> impl Iterator<Item = (u16, u16, bool)> {
    let v13 = SUITES13.iter().map(|&s| (TLS13, s));
    let v12 = SUITES12.iter().map(|&s| (TLS12, s));
    v13.chain(v12)
        .flat_map(|(v, s)| [(v, s, false), (v, s, true)])
}

/// Feed `wire` to the server and read until it fails: the error, and the
/// records the peer receives, decrypted.
fn answer(s: &mut Connection, peer: &mut Peer, wire: &[u8]) -> (Error, Vec<(u8, Vec<u8>)>) {
    s.feed(wire).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let err = loop {
        let r = s.read(&mut buf);
        let n = s.take(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        match r {
            Ok((RKTLS_WANT_WRITE, _)) => {}
            Ok(other) => panic!("no error: {other:?}"),
            Err(e) => break e,
        }
    };
    (err, peer.open(&out))
}

/// Decrypted records: (content type, content) each.
type Records = Vec<(u8, Vec<u8>)>;

fn fatal(desc: u8) -> Records {
    vec![(CT_ALERT, vec![FATAL, desc])]
}

#[test]
fn tls13_inner_plaintext_without_content_type_gets_unexpected_message() {
    // rustls 0.23 alone: IllegalTlsInnerPlaintext, no alert.
    for (v, suite, acc) in every().filter(|c| c.0 == TLS13) {
        let (mut s, mut peer) = established(v, suite, acc);
        // Key::seal appends the content type: 0 makes it all zeros.
        let wire = peer.tx.seal(0, &[0, 0, 0]);
        let (e, got) = answer(&mut s, &mut peer, &wire);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "{suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
        assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
        assert!(
            e.msg.ends_with("(sent alert unexpected_message)"),
            "{}",
            e.msg
        );
    }
}

#[test]
fn data_between_handshake_fragments_gets_unexpected_message() {
    // A KeyUpdate's first two bytes, then application data. rustls 0.23
    // alone: MessageInterleavedWithHandshakeMessage, no alert.
    for (v, suite, acc) in every().filter(|c| c.0 == TLS13) {
        let (mut s, mut peer) = established(v, suite, acc);
        let mut wire = peer.tx.seal(CT_HANDSHAKE, &[24, 0]);
        wire.extend(peer.tx.seal(CT_APPLICATION_DATA, b"data"));
        let (_, got) = answer(&mut s, &mut peer, &wire);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "{suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
    }
}

#[test]
fn oversized_post_handshake_message_gets_decode_error() {
    // A handshake message claiming 2^24 - 1 bytes, over rustls' limit.
    // rustls 0.23 alone: HandshakePayloadTooLarge, no alert; its own
    // mapping of that error (InvalidMessage) names decode_error.
    for (v, suite, acc) in every().filter(|c| c.0 == TLS13) {
        let (mut s, mut peer) = established(v, suite, acc);
        let wire = peer.tx.seal(CT_HANDSHAKE, &[24, 0xff, 0xff, 0xff]);
        let (e, got) = answer(&mut s, &mut peer, &wire);
        let desc = RKTLS_ALERT_DECODE_ERROR as u8;
        assert_eq!(got, fatal(desc), "{suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
        assert_eq!(e.code, RKTLS_ERR_DECODE, "{}", e.msg);
    }
}

/// An empty TLS 1.2 handshake record after the handshake (RFC 5246
/// §6.2.1 forbids sending one; RFC 8446 §5.4 names the alert):
/// unexpected_message, as rktls' own record layer answers it. rustls 0.23
/// alone skips it. Data before it is read first.
#[test]
fn empty_tls12_handshake_record_gets_unexpected_message() {
    for (v, suite, acc) in every().filter(|c| c.0 == TLS12) {
        let (mut s, mut peer) = established(v, suite, acc);
        let mut wire = peer.tx.seal(CT_APPLICATION_DATA, b"first");
        wire.extend(peer.tx.seal(CT_HANDSHAKE, &[]));
        s.feed(&wire).unwrap();
        let mut buf = [0u8; 64];
        let (r, n) = s.read(&mut buf).unwrap();
        assert_eq!((r, &buf[..n]), (RKTLS_OK, &b"first"[..]));
        let (e, got) = answer(&mut s, &mut peer, &[]);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "{suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
        assert_eq!(e.code, RKTLS_ERR_UNEXPECTED_MESSAGE, "{}", e.msg);
    }
}

#[test]
fn encrypted_empty_alert_record_gets_unexpected_message() {
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        let (_, got) = answer(&mut s, &mut peer, &[CT_ALERT, 3, 3, 0, 0]);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "{v:x} {suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
    }
}

#[test]
fn ciphertext_over_the_limit_gets_record_overflow_on_its_header() {
    // TLS 1.3: 2^14 + 256 (rustls 0.23 alone: bad_record_mac up to
    // 2^14 + 2048); TLS 1.2: 2^14 + 2048 (rustls alone: decode_error).
    for (v, suite, acc) in every() {
        let limit = if v == TLS13 {
            MAX_FRAGMENT + 256
        } else {
            MAX_FRAGMENT + 2048
        };
        // Within the limit: an ordinary bad record (a whole one). (rustls
        // 0.23 answers a TLS 1.2 record of exactly 2^14 + 2048 bytes with
        // decode_error: a documented exception.)
        let within = if v == TLS13 { limit } else { limit - 1 };
        let (mut s, mut peer) = established(v, suite, acc);
        let mut wire = vec![CT_APPLICATION_DATA, 3, 3];
        wire.extend_from_slice(&(within as u16).to_be_bytes());
        wire.resize(HEADER + within, 7);
        let (_, got) = answer(&mut s, &mut peer, &wire);
        assert_eq!(
            got,
            fatal(RKTLS_ALERT_BAD_RECORD_MAC as u8),
            "{v:x} {suite:x}"
        );
        // One byte more: record_overflow from the header alone.
        let (mut s, mut peer) = established(v, suite, acc);
        let mut wire = vec![CT_APPLICATION_DATA, 3, 3];
        wire.extend_from_slice(&(limit as u16 + 1).to_be_bytes());
        let (e, got) = answer(&mut s, &mut peer, &wire);
        let desc = RKTLS_ALERT_RECORD_OVERFLOW as u8;
        assert_eq!(got, fatal(desc), "{v:x} {suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
        assert_eq!(e.code, RKTLS_ERR_PROTOCOL, "{}", e.msg);
    }
}

#[test]
fn alert_with_invalid_level_reports_what_rustls_sent() {
    // rustls answers an invalid level with illegal_parameter, and a TLS 1.3
    // warning (other than user_canceled) with decode_error; rktls used to
    // report internal_error for both.
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        let wire = peer.tx.seal(CT_ALERT, &[3, 10]);
        let (e, got) = answer(&mut s, &mut peer, &wire);
        let desc = RKTLS_ALERT_ILLEGAL_PARAMETER as u8;
        assert_eq!(got, fatal(desc), "{v:x} {suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
        assert!(
            e.msg.contains("(sent alert illegal_parameter)"),
            "{}",
            e.msg
        );
        if v == TLS13 {
            let (mut s, mut peer) = established(v, suite, acc);
            let wire = peer.tx.seal(CT_ALERT, &[WARNING, 10]);
            let (_, got) = answer(&mut s, &mut peer, &wire);
            let desc = RKTLS_ALERT_DECODE_ERROR as u8;
            assert_eq!(got, fatal(desc), "{suite:x} acceptor={acc}");
            assert_eq!(s.alert_sent(), Some(desc));
        }
    }
}

#[test]
fn plaintext_alert_with_invalid_level_reports_illegal_parameter() {
    // Before the ClientHello: rustls' answer is plaintext, read back.
    plaintext_case(
        "alert level 3",
        cfg(&[TLS13, TLS12], None),
        &[CT_ALERT, 3, 3, 0, 2, 3, 10],
        RKTLS_ALERT_ILLEGAL_PARAMETER as u8,
        RKTLS_ERR_ALERT_RECEIVED,
    );
}

#[test]
fn refused_renegotiation_is_a_warning_then_close_notify_on_both_paths() {
    // RFC 5246 §7.2.2; rktls used to send a fatal no_renegotiation.
    let hello: &[u8] = &[1, 0, 0, 6, 3, 3, 0, 0, 0, 0];
    for (v, suite, acc) in every().filter(|c| c.0 == TLS12) {
        let (mut s, mut peer) = established(v, suite, acc);
        let wire = peer.tx.seal(CT_HANDSHAKE, hello);
        let (e, got) = answer(&mut s, &mut peer, &wire);
        let no_reneg = RKTLS_ALERT_NO_RENEGOTIATION as u8;
        assert_eq!(
            got,
            vec![
                (CT_ALERT, vec![WARNING, no_reneg]),
                (CT_ALERT, vec![WARNING, 0])
            ],
            "{suite:x} acceptor={acc}"
        );
        assert_eq!(s.alert_sent(), Some(no_reneg));
        assert_eq!(e.code, RKTLS_ERR_RENEGOTIATION);
        assert!(
            e.msg.contains("attempted TLS 1.2 renegotiation"),
            "{}",
            e.msg
        );
    }
}

// ---------------------------------------------------------------------------
// During the TLS 1.3 handshake: a client whose secrets are logged, so the
// test can rewrite its Finished and read the server's encrypted alert.

#[derive(Debug, Default)]
struct LoggedSecrets(std::sync::Mutex<Vec<(String, Vec<u8>)>>);

impl rustls::KeyLog for LoggedSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        self.0.lock().unwrap().push((label.into(), secret.to_vec()));
    }
    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

impl LoggedSecrets {
    fn get(&self, label: &str) -> Vec<u8> {
        let v = self.0.lock().unwrap();
        v.iter().find(|(l, _)| l == label).expect(label).1.clone()
    }
}

/// TLS_AES_128_GCM_SHA256 record protection from a traffic secret (RFC 8446
/// §7.1, §7.3, §5.2), independent of rustls.
struct Tls13Key {
    key: ring::aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Tls13Key {
    fn from_secret(secret: &[u8]) -> Self {
        struct Len(usize);
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let prk = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, secret);
        let expand = |label: &str, len: usize| {
            let full = format!("tls13 {label}");
            let (l, n) = ((len as u16).to_be_bytes(), [full.len() as u8]);
            let info: [&[u8]; 4] = [&l, &n, full.as_bytes(), &[0]];
            let mut out = vec![0u8; len];
            prk.expand(&info, Len(len)).unwrap().fill(&mut out).unwrap();
            out
        };
        let key =
            ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &expand("key", 16)).unwrap();
        Tls13Key {
            key: ring::aead::LessSafeKey::new(key),
            iv: expand("iv", 12).try_into().unwrap(),
            seq: 0,
        }
    }

    fn nonce(&mut self) -> ring::aead::Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        ring::aead::Nonce::assume_unique_for_key(n)
    }

    /// (inner content type, content) of one whole record.
    fn open(&mut self, rec: &[u8]) -> (u8, Vec<u8>) {
        let mut body = rec[HEADER..].to_vec();
        let aad = ring::aead::Aad::from(<[u8; 5]>::try_from(&rec[..HEADER]).unwrap());
        let nonce = self.nonce();
        let plain = self
            .key
            .open_in_place(nonce, aad, &mut body)
            .expect("opens");
        let end = plain.iter().rposition(|&b| b != 0).unwrap();
        (plain[end], plain[..end].to_vec())
    }

    fn seal(&mut self, typ: u8, content: &[u8]) -> Vec<u8> {
        let mut body = content.to_vec();
        body.push(typ);
        let len = (body.len() + 16) as u16;
        let mut hdr = vec![CT_APPLICATION_DATA, 3, 3];
        hdr.extend_from_slice(&len.to_be_bytes());
        let aad = ring::aead::Aad::from(<[u8; 5]>::try_from(&hdr[..]).unwrap());
        let nonce = self.nonce();
        self.key
            .seal_in_place_append_tag(nonce, aad, &mut body)
            .unwrap();
        hdr.extend_from_slice(&body);
        hdr
    }
}

/// Split whole records.
fn records(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(wire::Header { len, .. }) = wire::Header::parse(wire) {
        out.push(wire[..HEADER + len].to_vec());
        wire = &wire[HEADER + len..];
    }
    out
}

/// Run a TLS 1.3 handshake up to the client's last flight; `tamper`
/// rewrites its encrypted record (given the client's handshake key). The
/// server's result, alert reported, and the records the client receives
/// after its flight (decrypted with the server's application key).
fn tampered_finished(
    acceptor: bool,
    tamper: impl Fn(&mut Tls13Key, &[u8]) -> Vec<u8>,
) -> (Error, Option<u8>, Records) {
    let o = Opts {
        versions: Some(vec![TLS13]),
        suites: Some(vec![0x1301]),
        alpn: None,
    };
    let secrets = Arc::new(LoggedSecrets::default());
    let mut ccfg = (*client_config(&o)).clone();
    ccfg.key_log = secrets.clone();
    let mut c = Connection::client(Arc::new(ccfg), "localhost").unwrap();
    let mut buf = vec![0u8; 65536];
    assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
    let n = c.take(&mut buf).unwrap();
    let mut s = if acceptor {
        let mut a = Acceptor::new();
        a.feed(&buf[..n]).unwrap();
        let Ok(Outcome::Accepted(mut acc)) = a.accept() else {
            panic!("not accepted")
        };
        acc.make_connection(server_config(&o)).unwrap()
    } else {
        let mut s = Connection::server(server_config(&o)).unwrap();
        s.feed(&buf[..n]).unwrap();
        s
    };
    while s.handshake().unwrap() == RKTLS_WANT_WRITE {
        shuttle(&mut s, &mut c);
    }
    assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
    assert!(!c.is_handshaking());
    let n = c.take(&mut buf).unwrap();
    let mut chs = Tls13Key::from_secret(&secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET"));
    let mut flight = Vec::new();
    for r in records(&buf[..n]) {
        match r[0] {
            CT_APPLICATION_DATA => flight.extend(tamper(&mut chs, &r)),
            _ => flight.extend(r),
        }
    }
    s.feed(&flight).unwrap();
    let mut out = Vec::new();
    let e = loop {
        let r = s.handshake();
        let n = s.take(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        match r {
            Ok(RKTLS_WANT_WRITE) => {}
            Ok(r) => panic!("handshake gave {r:?}"),
            Err(e) => break e,
        }
    };
    let mut sap = Tls13Key::from_secret(&secrets.get("SERVER_TRAFFIC_SECRET_0"));
    let got = records(&out).iter().map(|r| sap.open(r)).collect();
    (e, s.alert_sent(), got)
}

#[test]
fn bad_tls13_finished_reports_decrypt_error_and_bad_mac_bad_record_mac() {
    for acc in [false, true] {
        // A wrong verify_data: rustls sends decrypt_error (rktls used to
        // report bad_record_mac).
        let (e, reported, got) = tampered_finished(acc, |k, r| {
            let (typ, mut fin) = k.open(r);
            assert_eq!((typ, fin[0]), (CT_HANDSHAKE, HS_FINISHED));
            fin[10] ^= 1;
            k.seq -= 1;
            k.seal(typ, &fin)
        });
        let desc = RKTLS_ALERT_DECRYPT_ERROR as u8;
        assert_eq!(got, fatal(desc), "acceptor={acc}");
        assert_eq!(reported, Some(desc), "acceptor={acc}");
        assert_eq!(e.code, RKTLS_ERR_DECRYPT, "{}", e.msg);
        assert!(e.msg.ends_with("(sent alert decrypt_error)"), "{}", e.msg);

        // The same record with a broken tag: bad_record_mac.
        let (_, reported, got) = tampered_finished(acc, |_, r| {
            let mut r = r.to_vec();
            *r.last_mut().unwrap() ^= 1;
            r
        });
        let desc = RKTLS_ALERT_BAD_RECORD_MAC as u8;
        assert_eq!(got, fatal(desc), "acceptor={acc}");
        assert_eq!(reported, Some(desc), "acceptor={acc}");
    }
}

/// fd mode, over a socket, on both paths: the sealed alert for an inner
/// plaintext without content type is on the wire before the error returns.
#[test]
fn fd_mode_sealed_alert_arrives_on_the_socket() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    for acceptor in [false, true] {
        let (a, mut b) = UnixStream::pair().unwrap();
        let o = Opts {
            versions: Some(vec![TLS13]),
            ..Opts::default()
        };
        let scfg = server_config(&o);
        let server = std::thread::spawn(move || {
            let mut s = if acceptor {
                let mut acc = Acceptor::new();
                acc.set_fd(a.as_raw_fd()).unwrap();
                let Ok(Outcome::Accepted(mut h)) = acc.accept() else {
                    panic!("not accepted")
                };
                h.make_connection(scfg).unwrap()
            } else {
                let mut s = Connection::server(scfg).unwrap();
                s.set_fd(a.as_raw_fd()).unwrap();
                s
            };
            assert_eq!(s.handshake().unwrap(), RKTLS_OK);
            let mut buf = [0u8; 64];
            let e = s.read(&mut buf).unwrap_err();
            (e, s.alert_sent(), a)
        });
        let mut c = Connection::client(client_config(&o), "localhost").unwrap();
        c.set_fd(b.as_raw_fd()).unwrap();
        assert_eq!(c.handshake().unwrap(), RKTLS_OK);
        let mut peer = Peer::take_over(c);
        b.write_all(&peer.tx.seal(0, &[0, 0])).unwrap();
        let (e, reported, a) = server.join().unwrap();
        drop(a);
        let mut wire = Vec::new();
        b.read_to_end(&mut wire).unwrap();
        // The server's session tickets come first; the alert is last.
        let got = peer.open(&wire);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(
            got.last(),
            Some(&(CT_ALERT, vec![FATAL, desc])),
            "acceptor={acceptor}"
        );
        assert!(got[..got.len() - 1].iter().all(|(t, _)| *t == CT_HANDSHAKE));
        assert_eq!(reported, Some(desc));
        assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
    }
}

#[test]
fn finished_is_found_where_rustls_decrypts_it() {
    let rec = |payload: &[u8]| {
        let mut r = vec![CT_APPLICATION_DATA, 3, 3, 0, payload.len() as u8];
        r.extend_from_slice(payload);
        r
    };
    let mut fin12 = vec![HS_FINISHED, 0, 0, 12];
    fin12.extend_from_slice(&[9; 12 + 16]);
    assert!(
        holds_finished(&rec(&fin12), false),
        "ChaCha20: at the start"
    );
    let mut gcm = vec![1; 8];
    gcm.extend_from_slice(&fin12);
    assert!(
        holds_finished(&rec(&gcm), false),
        "GCM: after the explicit nonce"
    );
    assert!(!holds_finished(&rec(&[1; 40]), false));
    // TLS 1.3: messages, then the handshake content type.
    let mut flight = vec![
        11,
        0,
        0,
        2,
        0,
        0,
        HS_FINISHED,
        0,
        0,
        3,
        5,
        5,
        5,
        CT_HANDSHAKE,
    ];
    assert!(holds_finished(&rec(&flight), true));
    flight[13] = CT_APPLICATION_DATA;
    assert!(!holds_finished(&rec(&flight), true));
    assert!(!holds_finished(
        &rec(&[HS_FINISHED, 0xff, 0xff, 0xff]),
        true
    ));
    assert!(!holds_finished(&[CT_APPLICATION_DATA, 3], true));
}

#[test]
fn during_the_tls13_handshake_rustls_is_made_to_send_unexpected_message() {
    // The client's Finished record replaced by: an inner plaintext without
    // content type (rustls 0.23 alone: no alert), an empty alert record
    // (decode_error), a record of an unknown type (decode_error). rustls
    // has no keys to give during the handshake; an invalid
    // ChangeCipherSpec in its place makes rustls send unexpected_message.
    type Tamper = fn(&mut Tls13Key, &[u8]) -> Vec<u8>;
    let cases: [(&str, Tamper, rktls_result); 3] = [
        (
            "zero inner plaintext",
            |k, _| k.seal(0, &[0, 0]),
            RKTLS_ERR_PEER_MISBEHAVED,
        ),
        (
            "empty alert",
            |_, _| vec![CT_ALERT, 3, 3, 0, 0],
            RKTLS_ERR_UNEXPECTED_MESSAGE,
        ),
        (
            "unknown type",
            |_, _| vec![99, 3, 3, 0, 1, 0],
            RKTLS_ERR_UNEXPECTED_MESSAGE,
        ),
    ];
    for acc in [false, true] {
        for (name, tamper, code) in cases {
            let (e, reported, got) = tampered_finished(acc, tamper);
            let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
            assert_eq!(got, fatal(desc), "{name}, acceptor={acc}");
            assert_eq!(reported, Some(desc), "{name}, acceptor={acc}");
            assert_eq!(e.code, code, "{name}: {}", e.msg);
            assert!(
                e.msg.ends_with("(sent alert unexpected_message)"),
                "{}",
                e.msg
            );
        }
    }
}

#[test]
fn records_after_close_notify_are_not_answered() {
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        let mut wire = peer.tx.seal(CT_ALERT, &[WARNING, 0]);
        wire.extend_from_slice(&[CT_ALERT, 3, 3, 0, 0]);
        s.feed(&wire).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            s.read(&mut buf).unwrap(),
            (RKTLS_CLOSED, 0),
            "{v:x} {suite:x}"
        );
        assert_eq!(s.alert_sent(), None);
        assert_eq!(s.take(&mut buf).unwrap(), 0, "nothing sent");
    }
}

/// Found by fuzzing (H3, H3r): after our close_notify, a record rktls
/// refuses (an unknown content type) or one rustls cannot open (a bad
/// MAC) was answered with a fatal alert the peer, having read our
/// close_notify, never reads; rustls 0.23 even tripped its own assertion
/// (a second "fatal" alert: its close_notify counts as one). Nothing
/// follows our close_notify (RFC 8446 §6.1), and none is reported; the
/// peer's data before the bad record is still read.
#[test]
fn nothing_follows_our_close_notify() {
    for (v, suite, acc) in every() {
        for bad in ["unknown type", "bad mac"] {
            let (mut s, mut peer) = established(v, suite, acc);
            // Buffer mode: done once the close_notify is taken.
            assert_eq!(s.shutdown().unwrap(), RKTLS_WANT_WRITE);
            let mut buf = vec![0u8; 65536];
            let n = s.take(&mut buf).unwrap();
            assert_eq!(s.shutdown().unwrap(), RKTLS_OK);
            let close = vec![(CT_ALERT, vec![WARNING, 0])];
            assert_eq!(peer.open(&buf[..n]), close, "{v:x} {suite:x} {bad}");
            let mut wire = peer.tx.seal(CT_APPLICATION_DATA, b"last words");
            match bad {
                "unknown type" => wire.extend_from_slice(&[0xa5, 3, 3, 0, 2, 0, 0]),
                _ => {
                    let mut rec = peer.tx.seal(CT_APPLICATION_DATA, b"tampered");
                    *rec.last_mut().unwrap() ^= 1;
                    wire.extend(rec);
                }
            }
            s.feed(&wire).unwrap();
            let (r, n) = s.read(&mut buf).unwrap();
            assert_eq!((r, &buf[..n]), (RKTLS_OK, &b"last words"[..]));
            let e = s.read(&mut buf).unwrap_err();
            assert_eq!(s.alert_sent(), None, "{v:x} {suite:x} {bad}: {}", e.msg);
            assert_eq!(s.take(&mut buf).unwrap(), 0, "{v:x} {suite:x} {bad}: sent");
            assert!(!e.msg.contains("(sent alert"), "{}", e.msg);
            assert_eq!(s.read(&mut buf).unwrap_err().code, e.code, "sticky");
        }
    }
}

/// After our close_notify the peer's data, KeyUpdates and close_notify are
/// still read (by rktls' own record layer, rustls being done).
#[test]
fn reading_after_our_close_notify_goes_on_to_the_peers() {
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        assert_eq!(s.shutdown().unwrap(), RKTLS_WANT_WRITE);
        let mut buf = vec![0u8; 65536];
        let n = s.take(&mut buf).unwrap();
        assert_eq!(peer.open(&buf[..n]).len(), 1);
        let mut wire = peer.tx.seal(CT_APPLICATION_DATA, b"one");
        wire.extend(peer.tx.seal(CT_APPLICATION_DATA, b"two"));
        wire.extend(peer.tx.seal(CT_ALERT, &[WARNING, 0]));
        s.feed(&wire).unwrap();
        let mut got = Vec::new();
        let end = loop {
            match s.read(&mut buf).unwrap() {
                (RKTLS_OK, n) => got.extend_from_slice(&buf[..n]),
                other => break other,
            }
        };
        assert_eq!((got.as_slice(), end), (&b"onetwo"[..], (RKTLS_CLOSED, 0)));
        assert_eq!(s.take(&mut buf).unwrap(), 0, "nothing more sent");
    }
}

/// Found by fuzzing (F2): our key refresh while the peer's handshake
/// message is only partly received: rustls sends unexpected_message, and
/// that is the alert reported (it was reported as illegal_parameter).
#[test]
fn refresh_with_a_pending_handshake_fragment_reports_unexpected_message() {
    for (v, suite, acc) in every().filter(|c| c.0 == TLS13) {
        let (mut s, mut peer) = established(v, suite, acc);
        s.feed(&peer.tx.seal(CT_HANDSHAKE, &[24])).unwrap();
        let mut buf = vec![0u8; 65536];
        assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_READ, 0));
        // Buffer mode: the error comes once its alert is taken.
        assert_eq!(s.refresh_keys(false).unwrap(), RKTLS_WANT_WRITE);
        let n = s.take(&mut buf).unwrap();
        let e = s.refresh_keys(false).unwrap_err();
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(
            peer.open(&buf[..n]),
            fatal(desc),
            "{suite:x} acceptor={acc}"
        );
        assert_eq!(s.alert_sent(), Some(desc), "{}", e.msg);
        assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
    }
}

/// Found by fuzzing (H1): rustls 0.23 takes four warning alerts and ends
/// the connection on the fifth without an alert. rktls counts them and
/// answers the fifth with unexpected_message, as after the offload; data
/// between them still flows.
#[test]
fn a_fifth_warning_alert_gets_unexpected_message() {
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        // user_canceled: a warning in both versions.
        let warning = [WARNING, 90];
        let mut wire = Vec::new();
        for _ in 0..4 {
            wire.extend(peer.tx.seal(CT_ALERT, &warning));
        }
        wire.extend(peer.tx.seal(CT_APPLICATION_DATA, b"still here"));
        s.feed(&wire).unwrap();
        let mut buf = vec![0u8; 65536];
        let (r, n) = s.read(&mut buf).unwrap();
        assert_eq!(
            (r, &buf[..n]),
            (RKTLS_OK, &b"still here"[..]),
            "{v:x} {suite:x}"
        );
        let fifth = peer.tx.seal(CT_ALERT, &warning);
        let (e, got) = answer(&mut s, &mut peer, &fifth);
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "{v:x} {suite:x} acceptor={acc}");
        assert_eq!(s.alert_sent(), Some(desc));
        assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
    }
}

/// A server connection in buffer mode and a rustls client, established.
fn with_rustls_client(suite: u16) -> (Connection, rustls::ClientConnection) {
    let o = Opts {
        versions: Some(vec![TLS13]),
        suites: Some(vec![suite]),
        alpn: None,
    };
    let mut s = Connection::server(server_config(&o)).unwrap();
    let name = "localhost".try_into().unwrap();
    let mut c = rustls::ClientConnection::new(client_config(&o), name).unwrap();
    for _ in 0..10 {
        to_server(&mut c, &mut s);
        let _ = s.handshake();
        to_client(&mut s, &mut c).unwrap();
    }
    assert_eq!(s.handshake().unwrap(), RKTLS_OK);
    assert!(!c.is_handshaking());
    (s, c)
}

fn to_server(c: &mut rustls::ClientConnection, s: &mut Connection) {
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    s.feed(&wire).unwrap();
}

/// What the server sent, processed by the client (its data read).
fn to_client(
    s: &mut Connection,
    c: &mut rustls::ClientConnection,
) -> Result<Vec<u8>, rustls::Error> {
    let mut buf = vec![0u8; 1 << 17];
    let n = s.take(&mut buf).unwrap();
    let mut rd = &buf[..n];
    let mut data = Vec::new();
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets()?;
        let _ = std::io::Read::read_to_end(&mut c.reader(), &mut data);
    }
    Ok(data)
}

/// Found by fuzzing (H1d): rustls 0.23 takes 32 KeyUpdates without data
/// between them and ends the connection on the next without an alert.
/// rktls answers the 33rd with unexpected_message, which the peer reads
/// (under the keys our answers to its requests announced); up to 32, data
/// flows both ways after them.
#[test]
fn key_updates_over_the_limit_get_unexpected_message() {
    for suite in SUITES13 {
        for updates in [32, 33] {
            let (mut s, mut c) = with_rustls_client(suite);
            for _ in 0..updates {
                c.refresh_traffic_keys().unwrap();
            }
            std::io::Write::write_all(&mut c.writer(), b"ping").unwrap();
            to_server(&mut c, &mut s);
            let mut buf = vec![0u8; 65536];
            let r = loop {
                match s.read(&mut buf) {
                    Ok((RKTLS_WANT_WRITE, _)) => {
                        to_client(&mut s, &mut c).unwrap();
                    }
                    other => break other,
                }
            };
            if updates == 32 {
                let (code, n) = r.unwrap();
                assert_eq!((code, &buf[..n]), (RKTLS_OK, &b"ping"[..]), "{suite:x}");
                // Our answers to its KeyUpdates first.
                assert_eq!(to_client(&mut s, &mut c).unwrap(), b"");
                assert_eq!(s.write(b"pong").unwrap(), (RKTLS_OK, 4));
                assert_eq!(to_client(&mut s, &mut c).unwrap(), b"pong", "{suite:x}");
                continue;
            }
            let e = r.unwrap_err();
            assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
            let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
            assert_eq!(s.alert_sent(), Some(desc), "{}", e.msg);
            let got = to_client(&mut s, &mut c).unwrap_err();
            assert_eq!(
                got,
                rustls::Error::AlertReceived(rustls::AlertDescription::UnexpectedMessage),
                "{suite:x}"
            );
        }
    }
}

/// Found by fuzzing: records already received when shutdown is called
/// (a warning, then an alert with an invalid level) are read only up to
/// where our close_notify goes: rustls is shown nothing after it (it
/// would answer with a second "fatal" alert, an assertion in its debug
/// builds), and the bad record that follows gets no alert.
#[test]
fn records_received_before_shutdown_get_nothing_after_close_notify() {
    for (v, suite, acc) in every() {
        let (mut s, mut peer) = established(v, suite, acc);
        let mut wire = peer.tx.seal(CT_ALERT, &[WARNING, 90]);
        wire.extend(peer.tx.seal(CT_ALERT, &[0, 90]));
        s.feed(&wire).unwrap();
        assert_eq!(s.shutdown().unwrap(), RKTLS_WANT_WRITE);
        let mut buf = vec![0u8; 65536];
        let n = s.take(&mut buf).unwrap();
        let close = vec![(CT_ALERT, vec![WARNING, 0])];
        assert_eq!(
            peer.open(&buf[..n]),
            close,
            "{v:x} {suite:x} acceptor={acc}"
        );
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(s.alert_sent(), None, "{}", e.msg);
        assert_eq!(s.take(&mut buf).unwrap(), 0, "nothing after close_notify");
    }
}

/// Found by fuzzing: the peer asks for a key update, and the next record
/// is one rktls refuses itself. rustls holds its KeyUpdate answer (sealed
/// with our previous key) until it next sends; the alert rktls seals with
/// the keys rustls hands over must come after that answer, or the peer
/// cannot read it.
#[test]
fn own_alert_after_a_key_update_request_reaches_the_peer() {
    for suite in SUITES13 {
        let (mut s, mut c) = with_rustls_client(suite);
        c.refresh_traffic_keys().unwrap();
        to_server(&mut c, &mut s);
        let mut buf = vec![0u8; 65536];
        assert_eq!(s.read(&mut buf).unwrap(), (RKTLS_WANT_READ, 0));
        // A record of an unknown content type: unexpected_message.
        s.feed(&[0xe0, 3, 3, 0, 1, 0]).unwrap();
        let e = loop {
            match s.read(&mut buf) {
                Ok((RKTLS_WANT_WRITE, _)) => {
                    let got = to_client(&mut s, &mut c).unwrap_err();
                    assert_eq!(
                        got,
                        rustls::Error::AlertReceived(rustls::AlertDescription::UnexpectedMessage),
                        "{suite:x}"
                    );
                }
                Ok(other) => panic!("no error: {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.code, RKTLS_ERR_UNEXPECTED_MESSAGE, "{}", e.msg);
        assert_eq!(s.alert_sent(), Some(RKTLS_ALERT_UNEXPECTED_MESSAGE as u8));
    }
}

/// An alert the socket refuses is not reported as sent.
#[test]
fn fd_mode_alert_the_socket_refuses_is_not_reported() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let (a, mut b) = UnixStream::pair().unwrap();
    let o = Opts {
        versions: Some(vec![TLS13]),
        ..Opts::default()
    };
    let scfg = server_config(&o);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut s = Connection::server(scfg).unwrap();
        s.set_fd(a.as_raw_fd()).unwrap();
        assert_eq!(s.handshake().unwrap(), RKTLS_OK);
        // The tickets wait for our first send; let them go now, so the
        // refused send is the alert's.
        assert_eq!(s.flush().unwrap(), RKTLS_OK);
        let mut buf = [0u8; 64];
        crate::sys::fault::inject(crate::sys::fault::Op::Send, libc::EPIPE);
        ready_tx.send(()).unwrap();
        let e = s.read(&mut buf).unwrap_err();
        (e, s.alert_sent(), a)
    });
    let mut c = Connection::client(client_config(&o), "localhost").unwrap();
    c.set_fd(b.as_raw_fd()).unwrap();
    assert_eq!(c.handshake().unwrap(), RKTLS_OK);
    let mut peer = Peer::take_over(c);
    // The bad record goes only once the server waits in read with the
    // fault armed.
    ready_rx.recv().unwrap();
    b.write_all(&peer.tx.seal(0, &[0, 0])).unwrap();
    let (e, reported, a) = server.join().unwrap();
    drop(a);
    let mut wire = Vec::new();
    b.read_to_end(&mut wire).unwrap();
    // Only the server's session tickets arrived.
    let got = peer.open(&wire);
    assert!(
        got.iter().all(|(t, _)| *t == CT_HANDSHAKE),
        "{got:?} {}",
        e.msg
    );
    assert_eq!(reported, None, "{}", e.msg);
    assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
}

/// A valid ChangeCipherSpec record.
const CCS: [u8; 6] = [CT_CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 1];

#[test]
fn server_sends_unexpected_message_for_a_third_change_cipher_spec() {
    // rustls 0.23 drops two middlebox ChangeCipherSpecs in a TLS 1.3
    // handshake and closes silently on the third: rktls refuses it with
    // unexpected_message, as the offloaded path does. The client's flight
    // (its own ChangeCipherSpec, then Finished) gets three more before its
    // Finished.
    for acc in [false, true] {
        let (e, reported, got) = tampered_finished(acc, |_, r| {
            let mut out = CCS.repeat(3);
            out.extend_from_slice(r);
            out
        });
        let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
        assert_eq!(got, fatal(desc), "acceptor={acc}");
        assert_eq!(reported, Some(desc), "acceptor={acc}");
        assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
        assert!(
            e.msg.contains("ChangeCipherSpec")
                && e.msg.ends_with("(sent alert unexpected_message)"),
            "{}",
            e.msg
        );
    }
}

/// A TLS 1.3 client against a server whose flight gets `extra` more
/// ChangeCipherSpec records after its own. The client's result, the alert
/// it reports and its encrypted records (decrypted with its handshake key)
/// and plaintext ones.
fn client_sees_ccs(
    extra: usize,
) -> (
    Result<rktls_result, Error>,
    Option<u8>,
    Records,
    Vec<Vec<u8>>,
) {
    let o = Opts {
        versions: Some(vec![TLS13]),
        suites: Some(vec![0x1301]),
        alpn: None,
    };
    let secrets = Arc::new(LoggedSecrets::default());
    let mut ccfg = (*client_config(&o)).clone();
    ccfg.key_log = secrets.clone();
    let mut c = Connection::client(Arc::new(ccfg), "localhost").unwrap();
    let mut buf = vec![0u8; 65536];
    assert_eq!(c.handshake().unwrap(), RKTLS_WANT_WRITE);
    let n = c.take(&mut buf).unwrap();
    let mut s = Connection::server(server_config(&o)).unwrap();
    s.feed(&buf[..n]).unwrap();
    let mut flight = Vec::new();
    while s.handshake().unwrap() == RKTLS_WANT_WRITE {
        let n = s.take(&mut buf).unwrap();
        flight.extend_from_slice(&buf[..n]);
    }
    let mut tampered = Vec::new();
    let mut server_ccs = 0;
    for r in records(&flight) {
        tampered.extend_from_slice(&r);
        if r[0] == CT_CHANGE_CIPHER_SPEC {
            server_ccs += 1;
            tampered.extend(CCS.repeat(extra));
        }
    }
    assert_eq!(
        server_ccs, 1,
        "the server sends one middlebox ChangeCipherSpec"
    );
    c.feed(&tampered).unwrap();
    let mut out = Vec::new();
    let r = loop {
        let r = c.handshake();
        let n = c.take(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        if r != Ok(RKTLS_WANT_WRITE) {
            break r;
        }
    };
    let mut chs = Tls13Key::from_secret(&secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET"));
    let (sealed, plain): (Vec<_>, Vec<_>) = records(&out)
        .into_iter()
        .partition(|r| r[0] == CT_APPLICATION_DATA);
    let got = sealed.iter().map(|r| chs.open(r)).collect();
    (r, c.alert_sent(), got, plain)
}

#[test]
fn client_sends_unexpected_message_for_a_third_change_cipher_spec() {
    // Two in all: the handshake completes (rustls' own limit).
    let (r, reported, _, _) = client_sees_ccs(1);
    assert_eq!(r.unwrap(), RKTLS_OK);
    assert_eq!(reported, None);
    // Three: unexpected_message under the client's handshake key.
    let (r, reported, got, plain) = client_sees_ccs(2);
    let e = r.unwrap_err();
    let desc = RKTLS_ALERT_UNEXPECTED_MESSAGE as u8;
    assert_eq!(got, fatal(desc));
    assert_eq!(reported, Some(desc));
    assert_eq!(e.code, RKTLS_ERR_PEER_MISBEHAVED, "{}", e.msg);
    assert!(
        e.msg.ends_with("(sent alert unexpected_message)"),
        "{}",
        e.msg
    );
    // Nothing else left in plaintext but the client's own middlebox
    // ChangeCipherSpec.
    assert!(plain.iter().all(|r| r[..] == CCS), "{plain:?}");
}
