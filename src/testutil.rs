//! Test helpers: a throwaway PKI and configs built through the real builders.

use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::sign::CertifiedKey;

use crate::config::{ClientConfigBuilder, ServerConfigBuilder};
use crate::connection::Connection;

/// The TLS 1.3 suites rktls supports (IANA ids): every test that covers
/// "each suite" takes its list from here.
pub const TLS13_SUITES: [u16; 3] = [0x1301, 0x1302, 0x1303];
/// The TLS 1.2 suites the test certificate (ECDSA) can use.
pub const TLS12_SUITES: [u16; 3] = [0xc02b, 0xc02c, 0xcca9];

/// Every suite above with its protocol version.
pub fn versions_and_suites() -> Vec<(u16, u16)> {
    let v13 = TLS13_SUITES.map(|s| (u16::from(rustls::ProtocolVersion::TLSv1_3), s));
    let v12 = TLS12_SUITES.map(|s| (u16::from(rustls::ProtocolVersion::TLSv1_2), s));
    v13.into_iter().chain(v12).collect()
}

pub struct Pki {
    pub ca_pem: String,
    /// (cert chain PEM, key PEM) for "localhost" and "example.com".
    pub server: (String, String),
    /// (cert chain PEM, key PEM) for "other.test".
    pub other: (String, String),
    /// (cert chain PEM, key PEM) for a client.
    pub client: (String, String),
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            ca_pem: ca_cert.pem(),
            server: leaf(vec!["localhost".into(), "example.com".into()]),
            other: leaf(vec!["other.test".into()]),
            client: leaf(vec!["client.test".into()]),
        }
    })
}

pub fn pems() -> (String, String) {
    pki().server.clone()
}

pub fn other_pems() -> (String, String) {
    pki().other.clone()
}

/// The "localhost" certified key, for tests that build rustls objects directly.
#[allow(dead_code)]
pub fn certified_key() -> Arc<CertifiedKey> {
    let (c, k) = pems();
    crate::config::certified_key(
        crate::config::parse_certs(c.as_bytes(), "c").unwrap(),
        crate::config::parse_key(k.as_bytes(), "k").unwrap(),
        &crate::crypto::provider(),
    )
    .unwrap()
}

/// Options for test configs.
#[derive(Default, Clone)]
pub struct Opts {
    pub versions: Option<Vec<u16>>,
    pub suites: Option<Vec<u16>>,
    pub alpn: Option<Vec<u8>>,
}

pub fn server_config(o: &Opts) -> Arc<rustls::ServerConfig> {
    let mut b = ServerConfigBuilder::new();
    let (c, k) = pems();
    b.add_pem(c.as_bytes(), k.as_bytes()).unwrap();
    let (c, k) = other_pems();
    b.add_pem(c.as_bytes(), k.as_bytes()).unwrap();
    b.apply(
        o.versions.as_deref(),
        o.suites.as_deref(),
        o.alpn.as_deref(),
    )
    .unwrap();
    b.build().unwrap().rustls
}

pub fn client_config(o: &Opts) -> Arc<rustls::ClientConfig> {
    let mut b = ClientConfigBuilder::new();
    b.add_roots_pem(pki().ca_pem.as_bytes()).unwrap();
    b.apply(
        o.versions.as_deref(),
        o.suites.as_deref(),
        o.alpn.as_deref(),
    )
    .unwrap();
    b.build().unwrap().rustls
}

/// Move queued TLS bytes from one buffer-mode connection to the other.
pub fn shuttle(from: &mut Connection, to: &mut Connection) -> usize {
    let mut moved = 0;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = from.take(&mut buf).unwrap();
        if n == 0 {
            return moved;
        }
        let mut off = 0;
        while off < n {
            let m = to.feed(&buf[off..n]).unwrap();
            assert!(m > 0, "receiver's buffer is full: read before moving more");
            off += m;
        }
        moved += n;
    }
}

/// A server that requires a client certificate, and clients with and
/// without one.
pub fn client_auth_configs() -> (
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
    Arc<rustls::ClientConfig>,
) {
    let mut b = ServerConfigBuilder::new();
    let (c, k) = pems();
    b.add_pem(c.as_bytes(), k.as_bytes()).unwrap();
    b.set_client_verify_pem(pki().ca_pem.as_bytes(), true)
        .unwrap();
    let server = b.build().unwrap().rustls;
    let mut with = ClientConfigBuilder::new();
    with.add_roots_pem(pki().ca_pem.as_bytes()).unwrap();
    let (c, k) = &pki().client;
    with.set_client_cert_pem(c.as_bytes(), k.as_bytes())
        .unwrap();
    (
        server,
        with.build().unwrap().rustls,
        client_config(&Opts::default()),
    )
}

/// Move every byte `from` has to send into `to`, processing as it goes
/// (buffered rustls connections, the tests' reference peers).
pub(crate) fn transfer<A, B>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// `rounds` exchanges both ways between two buffered rustls connections.
pub(crate) fn pump<A, B>(
    a: &mut rustls::ConnectionCommon<A>,
    b: &mut rustls::ConnectionCommon<B>,
    rounds: usize,
) {
    for _ in 0..rounds {
        transfer(a, b);
        transfer(b, a);
    }
}
