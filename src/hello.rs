//! What the server learns from a ClientHello.
//!
//! rustls shows a ClientHello to the certificate resolver, on the thread
//! that is processing it. Our resolvers record what they are shown in a
//! thread-local slot, and the code that drove rustls takes it right after
//! the call: the direct path learns the SNI name this way, and the acceptor
//! learns everything (see `acceptor.rs`). The one detail rustls does not
//! expose, the offered protocol versions, is parsed from the raw records.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::wire;

/// Everything rustls exposes of a ClientHello, plus the offered versions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) server_name: Option<String>,
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) cipher_suites: Vec<u16>,
    pub(crate) signature_schemes: Vec<u16>,
    pub(crate) named_groups: Vec<u16>,
    pub(crate) versions: Vec<u16>,
    pub(crate) server_cert_types: Vec<u8>,
    pub(crate) client_cert_types: Vec<u8>,
    pub(crate) ca_names: Vec<Vec<u8>>,
}

impl Hello {
    fn full(ch: &ClientHello<'_>) -> Self {
        Hello {
            server_name: ch.server_name().map(str::to_string),
            alpn: ch
                .alpn()
                .map(|it| it.map(<[u8]>::to_vec).collect())
                .unwrap_or_default(),
            cipher_suites: ch.cipher_suites().iter().map(|s| u16::from(*s)).collect(),
            signature_schemes: ch
                .signature_schemes()
                .iter()
                .map(|s| u16::from(*s))
                .collect(),
            named_groups: ch
                .named_groups()
                .map(|g| g.iter().map(|g| u16::from(*g)).collect())
                .unwrap_or_default(),
            versions: Vec::new(),
            server_cert_types: ch
                .server_cert_types()
                .map(|t| t.iter().map(|t| u8::from(*t)).collect())
                .unwrap_or_default(),
            client_cert_types: ch
                .client_cert_types()
                .map(|t| t.iter().map(|t| u8::from(*t)).collect())
                .unwrap_or_default(),
            ca_names: ch
                .certificate_authorities()
                .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
                .unwrap_or_default(),
        }
    }
}

thread_local! {
    static SEEN: RefCell<Option<Hello>> = const { RefCell::new(None) };
}

/// Record what a resolver was shown (called by resolvers only).
pub(crate) fn record_sni(ch: &ClientHello<'_>) {
    let h = Hello {
        server_name: ch.server_name().map(str::to_string),
        ..Hello::default()
    };
    SEEN.with(|s| *s.borrow_mut() = Some(h));
}

/// Take what a resolver recorded during the last rustls call on this thread.
pub(crate) fn take_seen() -> Option<Hello> {
    SEEN.with(|s| s.borrow_mut().take())
}

/// The resolver of the acceptor's probe: records the whole ClientHello and
/// resolves no certificate, which stops the handshake there.
struct Probe;

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

impl ResolvesServerCert for Probe {
    fn resolve(&self, ch: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let h = Hello::full(&ch);
        SEEN.with(|s| *s.borrow_mut() = Some(h));
        None
    }
}

/// A server config that accepts every version and suite rktls supports and
/// stops at certificate selection: running a ClientHello through it runs
/// all of rustls' config-independent checks, exactly as the direct path does.
pub(crate) fn probe_config() -> Arc<rustls::ServerConfig> {
    static CFG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(crate::crypto::provider()))
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("every version has suites")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Probe));
        Arc::new(cfg)
    })
    .clone()
}

/// The first handshake message in TLS records: borrowed when one record
/// holds it (the usual case), else reassembled. `None` until complete, or
/// if a record before it is not a handshake record.
fn first_handshake_message(records: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut msg: Option<Vec<u8>> = None;
    for r in wire::records(records) {
        let body = r.payload()?;
        if r.header.typ != wire::CT_HANDSHAKE {
            return None;
        }
        if msg.is_none() {
            if let Some((_, len)) = wire::handshake_header(body) {
                if body.len() >= wire::HS_HEADER + len {
                    return Some(body[..wire::HS_HEADER + len].into());
                }
            }
        }
        let m = msg.get_or_insert_with(Vec::new);
        m.extend_from_slice(body);
        if let Some((_, len)) = wire::handshake_header(m) {
            let need = wire::HS_HEADER + len;
            if m.len() >= need {
                m.truncate(need);
                return msg.map(Into::into);
            }
        }
    }
    None
}

/// A cursor over handshake bytes: each read takes from the front, `None`
/// when too few bytes are left.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub(crate) fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    pub(crate) fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    /// A list with a u8 (`wide` false) or u16 length that is the whole of
    /// the rest, at least `min` bytes long.
    pub(crate) fn whole_list(&mut self, wide: bool, min: usize) -> Option<&'a [u8]> {
        let n = if wide { self.u16()? } else { self.u8()? };
        (n >= min && n == self.0.len()).then(|| self.take(n))?
    }
    pub(crate) fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A ClientHello's extensions block, checked to be a well-formed list:
/// iterating it yields (type, body) in order.
#[derive(Clone, Copy)]
struct Extensions<'a>(&'a [u8]);

impl<'a> Iterator for Extensions<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let mut r = Reader(self.0);
        let typ = r.u16()? as u16;
        let len = r.u16()?;
        let body = r.take(len)?;
        self.0 = r.0;
        Some((typ, body))
    }
}

/// Run `f` on a ClientHello's legacy version and extensions, without
/// copying them. `None` if the records hold no complete, valid ClientHello.
fn with_extensions<R>(records: &[u8], f: impl FnOnce(u16, Extensions<'_>) -> R) -> Option<R> {
    let msg = first_handshake_message(records)?;
    let mut r = Reader(&msg);
    if r.u8()? != 1 {
        return None;
    }
    r.take(3)?;
    let legacy = r.u16()? as u16;
    r.take(32)?;
    let n = r.u8()?;
    r.take(n)?;
    let n = r.u16()?;
    r.take(n)?;
    let n = r.u8()?;
    r.take(n)?;
    if r.0.is_empty() {
        return Some(f(legacy, Extensions(&[])));
    }
    let n = r.u16()?;
    let block = r.take(n)?;
    // Every extension header and body must fit the block exactly.
    let mut check = Reader(block);
    while !check.0.is_empty() {
        check.take(2)?;
        let len = check.u16()?;
        check.take(len)?;
    }
    Some(f(legacy, Extensions(block)))
}

const SUPPORTED_GROUPS: u16 = 10;
const SUPPORTED_VERSIONS: u16 = 43;
const KEY_SHARE: u16 = 51;
const RENEGOTIATION_INFO: u16 = 0xff01;

/// The versions a ClientHello offers: its supported_versions extension, or
/// else its legacy version. `None` if the records hold no valid ClientHello.
pub(crate) fn offered_versions(records: &[u8]) -> Option<Vec<u16>> {
    with_extensions(records, |legacy, mut exts| {
        let Some((_, body)) = exts.find(|(t, _)| *t == SUPPORTED_VERSIONS) else {
            return Some(vec![legacy]);
        };
        let mut b = Reader(body);
        let n = b.u8()?;
        let list = b.take(n)?;
        Some(
            list.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect(),
        )
    })?
}

/// What rktls checks in a ClientHello beyond rustls (see
/// `connection/rfc_alerts.rs`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HelloFacts {
    /// supported_groups without key_share (RFC 8446 §9.2: missing_extension).
    pub(crate) groups_without_key_share: bool,
    /// A renegotiation_info extension with a non-empty body (RFC 5746 §3.6:
    /// an initial TLS 1.2 handshake must be aborted).
    pub(crate) renegotiation_info_not_empty: bool,
}

/// The facts of the first ClientHello in `records`, once it is complete.
pub(crate) fn hello_facts(records: &[u8]) -> Option<HelloFacts> {
    with_extensions(records, |_, exts| {
        let has = |typ| exts.clone().any(|(t, _)| t == typ);
        HelloFacts {
            groups_without_key_share: has(SUPPORTED_GROUPS) && !has(KEY_SHARE),
            renegotiation_info_not_empty: exts
                .clone()
                .any(|(t, b)| t == RENEGOTIATION_INFO && b != [0]),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Vec<u8> {
        let mut r = vec![22, 3, 1];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[0u8; 32]);
        b.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        b.extend_from_slice(exts);
        let mut m = vec![1, 0];
        m.extend_from_slice(&(b.len() as u16).to_be_bytes());
        m.extend_from_slice(&b);
        m
    }

    #[test]
    fn versions_from_extension_or_legacy() {
        let with = hello(&[0, 43, 0, 5, 4, 3, 4, 3, 3]);
        assert_eq!(offered_versions(&record(&with)), Some(vec![0x0304, 0x0303]));
        assert_eq!(offered_versions(&record(&hello(&[]))), Some(vec![0x0303]));
        // Split over two records.
        let (a, b) = with.split_at(10);
        let mut two = record(a);
        two.extend(record(b));
        assert_eq!(offered_versions(&two), Some(vec![0x0304, 0x0303]));
        // Truncated or not a handshake.
        assert_eq!(offered_versions(&record(&with[..20])), None);
        assert_eq!(offered_versions(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(offered_versions(&record(&hello(&[0, 43, 0, 9, 4]))), None);
    }
}
