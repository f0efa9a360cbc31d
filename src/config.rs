//! Server and client configurations and their builders.
//!
//! A builder is a Box handle, used by one thread and consumed by its
//! `_build` call. Every setter validates its whole input before changing the
//! builder, so a failed call leaves the builder as it was. A built config is
//! an Arc handle: immutable and shareable by any number of threads and
//! connections; each connection keeps its own reference, so the caller may
//! free the config while connections made from it are still alive.

use std::ffi::c_char;
use std::fmt;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert,
    ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SupportedProtocolVersion};

use crate::crypto;
use crate::ffi::{
    arc_free, arc_into_ptr, box_into_ptr, box_mut, box_take, cstr, guard, out, slice, slice_of,
    Boxed, Handle, Shared,
};
use crate::ktls::rktls_ktls_mode;
use crate::offload;
use crate::result::rktls_result::{self, *};
use crate::result::Error;

// ---------------------------------------------------------------------------
// Input parsing shared by both sides.

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            RKTLS_ERR_CONFIG_FILE,
            format!("cannot read {what} {path:?}: {e}"),
        )
    })
}

pub(crate) fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::new(RKTLS_ERR_CONFIG_PEM, format!("{what}: malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::new(
            RKTLS_ERR_CONFIG_PEM,
            format!("{what}: no CERTIFICATE found in PEM"),
        ));
    }
    Ok(certs)
}

pub(crate) fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::new(
            RKTLS_ERR_CONFIG_PEM,
            format!("{what}: no PRIVATE KEY found in PEM"),
        ),
        e => Error::new(RKTLS_ERR_CONFIG_PEM, format!("{what}: malformed PEM: {e}")),
    })
}

/// Build a certified key and check that the key matches the certificate.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    ParsedCertificate::try_from(&chain[0]).map_err(|e| {
        Error::new(
            RKTLS_ERR_CONFIG_CERTIFICATE,
            format!("end-entity certificate unusable: {e}"),
        )
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        Error::new(
            RKTLS_ERR_CONFIG_CERTIFICATE,
            format!("private key unusable (supported: ECDSA P-256/P-384, RSA, Ed25519): {e}"),
        )
    })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(Error::new(
                RKTLS_ERR_CONFIG_KEY_MISMATCH,
                "private key does not match the certificate's public key",
            ))
        }
        Err(e) => Err(Error::new(
            RKTLS_ERR_CONFIG_CERTIFICATE,
            format!("certificate unusable: {e}"),
        )),
    }
}

fn load_cert_key_files(
    cert_path: &str,
    key_path: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    let chain = parse_certs(&read_file(cert_path, "certificate file")?, cert_path)?;
    let key = parse_key(&read_file(key_path, "key file")?, key_path)?;
    certified_key(chain, key, provider)
}

fn load_cert_key_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    let chain = parse_certs(cert_pem, "certificate PEM")?;
    let key = parse_key(key_pem, "key PEM")?;
    certified_key(chain, key, provider)
}

/// Parse an ALPN list in wire format (as OpenSSL's `SSL_CTX_set_alpn_protos`):
/// each protocol is one length byte (1..=255) then that many bytes.
pub(crate) fn parse_alpn_wire(wire: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_ALPN,
                format!(
                    "ALPN list is not wire format (a length byte then the name, e.g. \
                     \"\\x02h2\\x08http/1.1\"): bad length {len} at offset {}",
                    wire.len() - rest.len()
                ),
            ));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

pub(crate) fn parse_versions(
    versions: &[u16],
) -> Result<Vec<&'static SupportedProtocolVersion>, Error> {
    if versions.is_empty() {
        return Err(Error::new(
            RKTLS_ERR_CONFIG_VERSIONS,
            "protocol version list is empty",
        ));
    }
    let mut out: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for &v in versions {
        let sv = match v {
            0x0303 => &rustls::version::TLS12,
            0x0304 => &rustls::version::TLS13,
            _ => {
                return Err(Error::new(
                    RKTLS_ERR_CONFIG_VERSIONS,
                    format!("unsupported protocol version 0x{v:04x} (use 0x0303 or 0x0304)"),
                ))
            }
        };
        if !out.iter().any(|o| o.version == sv.version) {
            out.push(sv);
        }
    }
    Ok(out)
}

/// Restrict a provider to the given IANA cipher suite ids, in their order.
pub(crate) fn select_suites(provider: &mut CryptoProvider, ids: &[u16]) -> Result<(), Error> {
    if ids.is_empty() {
        return Err(Error::new(
            RKTLS_ERR_CONFIG_CIPHER_SUITES,
            "cipher suite list is empty",
        ));
    }
    let mut chosen = Vec::with_capacity(ids.len());
    for &id in ids {
        let Some(s) = provider
            .cipher_suites
            .iter()
            .find(|s| u16::from(s.suite()) == id)
        else {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_CIPHER_SUITES,
                format!("unknown or unsupported cipher suite 0x{id:04x}"),
            ));
        };
        if !chosen.contains(s) {
            chosen.push(*s);
        }
    }
    provider.cipher_suites = chosen;
    Ok(())
}

fn roots_from_pem(pem: &[u8], what: &str) -> Result<RootCertStore, Error> {
    let certs = parse_certs(pem, what)?;
    let mut roots = RootCertStore::empty();
    let (good, bad) = roots.add_parsable_certificates(certs);
    if good == 0 {
        return Err(Error::new(
            RKTLS_ERR_CONFIG_CA,
            format!("{what}: none of the {bad} certificates is a usable trust anchor"),
        ));
    }
    Ok(roots)
}

/// Protocol options both builders share.
#[derive(Default)]
struct Protocol {
    alpn: Vec<Vec<u8>>,
    versions: Option<Vec<&'static SupportedProtocolVersion>>,
    suites: Option<Vec<u16>>,
}

impl Protocol {
    fn provider(&self) -> Result<CryptoProvider, Error> {
        let mut p = crypto::provider();
        if let Some(ids) = &self.suites {
            select_suites(&mut p, ids)?;
        }
        Ok(p)
    }

    fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        self.versions
            .clone()
            .unwrap_or_else(|| rustls::DEFAULT_VERSIONS.to_vec())
    }

    fn set_versions(&mut self, v: &[u16]) -> Result<(), Error> {
        self.versions = Some(parse_versions(v)?);
        Ok(())
    }

    fn set_suites(&mut self, ids: &[u16]) -> Result<(), Error> {
        // Validate now so the error is reported by this call.
        select_suites(&mut crypto::provider(), ids)?;
        self.suites = Some(ids.to_vec());
        Ok(())
    }

    fn set_alpn(&mut self, wire: &[u8]) -> Result<(), Error> {
        self.alpn = parse_alpn_wire(wire)?;
        Ok(())
    }

    #[cfg(test)]
    fn apply(
        &mut self,
        versions: Option<&[u16]>,
        suites: Option<&[u16]>,
        alpn: Option<&[u8]>,
    ) -> Result<(), Error> {
        if let Some(v) = versions {
            self.set_versions(v)?;
        }
        if let Some(s) = suites {
            self.set_suites(s)?;
        }
        if let Some(a) = alpn {
            self.set_alpn(a)?;
        }
        Ok(())
    }
}

fn map_builder_error(e: rustls::Error) -> Error {
    Error::new(
        RKTLS_ERR_CONFIG_CIPHER_SUITES,
        format!("no cipher suite usable with the chosen protocol versions: {e}"),
    )
}

// ---------------------------------------------------------------------------
// Server side.

/// Chooses a certified key by SNI, then by the client's signature schemes.
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SniResolver({} keys)", self.keys.len())
    }
}

fn covers_name(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    ParsedCertificate::try_from(&key.cert[0])
        .and_then(|c| rustls::client::verify_server_name(&c, name))
        .is_ok()
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        crate::hello::record_sni(&hello);
        if self.keys.len() == 1 {
            return self.keys.first().cloned();
        }
        let schemes = hello.signature_schemes();
        let usable = |k: &&Arc<CertifiedKey>| k.key.choose_scheme(schemes).is_some();
        if let Some(name) = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
        {
            if let Some(k) = self
                .keys
                .iter()
                .filter(usable)
                .find(|k| covers_name(k, &name))
            {
                return Some(k.clone());
            }
        }
        // No name, or no certificate for it: the first usable one is the
        // default; failing that the first, so rustls reports the mismatch.
        self.keys.iter().find(usable).or(self.keys.first()).cloned()
    }
}

pub(crate) struct ServerConfigBuilder {
    ktls: rktls_ktls_mode,
    offload: offload::Options,
    keys: Vec<Arc<CertifiedKey>>,
    proto: Protocol,
    session_cache: usize,
    tickets: bool,
    client_auth: Option<(Arc<RootCertStore>, bool)>,
}

/// A server configuration under construction. Box handle: one thread at a
/// time; consumed by `rktls_server_config_builder_build()`, or freed with
/// `rktls_server_config_builder_free()`.
pub struct rktls_server_config_builder {
    _private: [u8; 0],
}

impl Handle for rktls_server_config_builder {
    type Rust = ServerConfigBuilder;
    type Ownership = Boxed;
}

/// A built server configuration. Arc handle: immutable, shareable by any
/// number of threads and connections; release your reference with
/// `rktls_server_config_free()`.
pub struct rktls_server_config {
    _private: [u8; 0],
}

pub(crate) struct ServerConfig {
    pub(crate) rustls: Arc<rustls::ServerConfig>,
    pub(crate) ktls: rktls_ktls_mode,
    pub(crate) offload: offload::Options,
}

impl Handle for rktls_server_config {
    type Rust = ServerConfig;
    type Ownership = Shared;
}

const DEFAULT_SESSION_CACHE: usize = 1024;

impl ServerConfigBuilder {
    pub(crate) fn new() -> Self {
        ServerConfigBuilder {
            ktls: rktls_ktls_mode::RKTLS_KTLS_OFF,
            offload: offload::Options::default(),
            keys: Vec::new(),
            proto: Protocol::default(),
            session_cache: DEFAULT_SESSION_CACHE,
            tickets: true,
            client_auth: None,
        }
    }

    pub(crate) fn add_pem(&mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Error> {
        self.keys
            .push(load_cert_key_pem(cert_pem, key_pem, &crypto::provider())?);
        Ok(())
    }

    /// Apply the protocol options (for tests).
    #[cfg(test)]
    pub(crate) fn apply(
        &mut self,
        versions: Option<&[u16]>,
        suites: Option<&[u16]>,
        alpn: Option<&[u8]>,
    ) -> Result<(), Error> {
        self.proto.apply(versions, suites, alpn)
    }

    #[cfg(test)]
    pub(crate) fn require_client_cert_pem(&mut self, ca_pem: &[u8]) -> Result<(), Error> {
        self.client_auth = Some((Arc::new(roots_from_pem(ca_pem, "CA")?), true));
        Ok(())
    }

    pub(crate) fn build(self) -> Result<ServerConfig, Error> {
        if self.keys.is_empty() {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_INCOMPLETE,
                "server configuration has no certificate and key",
            ));
        }
        let provider = Arc::new(self.proto.provider()?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.proto.versions())
            .map_err(map_builder_error)?;
        let builder = match self.client_auth {
            None => builder.with_no_client_auth(),
            Some((roots, required)) => {
                let mut vb = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                if !required {
                    vb = vb.allow_unauthenticated();
                }
                let verifier = vb.build().map_err(|e| {
                    Error::new(
                        RKTLS_ERR_CONFIG_CA,
                        format!("client CA bundle unusable: {e}"),
                    )
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { keys: self.keys }));
        cfg.alpn_protocols = self.proto.alpn;
        cfg.enable_secret_extraction = true;
        cfg.session_storage = if self.session_cache > 0 {
            ServerSessionMemoryCache::new(self.session_cache)
        } else {
            Arc::new(NoServerSessionStorage {})
        };
        if self.tickets {
            cfg.ticketer = crypto::ticketer().map_err(|e| {
                Error::new(RKTLS_ERR_INTERNAL, format!("cannot make a ticketer: {e}"))
            })?;
        }
        if !self.tickets && self.session_cache == 0 {
            cfg.send_tls13_tickets = 0;
        }
        Ok(ServerConfig {
            rustls: Arc::new(cfg),
            ktls: self.ktls,
            offload: self.offload,
        })
    }
}

/// Make a new server configuration builder in `*out`.
///
/// Defaults: TLS 1.2 and 1.3, every cipher suite of the crypto provider,
/// no ALPN, no client authentication, session tickets on and a stateful
/// session cache of 1024 entries. At least one certificate and key must be
/// added before building. The caller owns the builder: build it (which
/// consumes it) or free it.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_new(
    out_builder: *mut *mut rktls_server_config_builder,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_builder, "out_builder")? };
        *o = box_into_ptr::<rktls_server_config_builder>(ServerConfigBuilder::new());
        Ok(RKTLS_OK)
    })
}

/// Free a server configuration builder that was not built. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_free(builder: *mut rktls_server_config_builder) {
    guard(|| {
        drop(unsafe { box_take(builder) });
        Ok(RKTLS_OK)
    });
}

/// Add a certificate chain and its private key, from PEM files.
///
/// `cert_path` holds the end-entity certificate first, then intermediates;
/// `key_path` holds the private key (PKCS#8, PKCS#1 or SEC1; ECDSA P-256 or
/// P-384, RSA, Ed25519). Several chains may be added: each handshake uses
/// the first one whose certificate covers the client's SNI name and whose
/// key the client can verify; without a match, the first added is the
/// default. Errors: `RKTLS_ERR_CONFIG_FILE`, `_CONFIG_PEM`,
/// `_CONFIG_KEY_MISMATCH`, `_CONFIG_CERTIFICATE`; the builder is unchanged.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_add_cert_key_files(
    builder: *mut rktls_server_config_builder,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let cert_path = unsafe { cstr(cert_path, "cert_path")? };
        let key_path = unsafe { cstr(key_path, "key_path")? };
        let k = load_cert_key_files(cert_path, key_path, &crypto::provider())?;
        b.keys.push(k);
        Ok(RKTLS_OK)
    })
}

/// Add a certificate chain and its private key, from PEM text in memory.
///
/// As `rktls_server_config_builder_add_cert_key_files()`. The bytes are
/// copied; the caller keeps ownership of its buffers.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_add_cert_key_pem(
    builder: *mut rktls_server_config_builder,
    cert_pem: *const u8,
    cert_pem_len: usize,
    key_pem: *const u8,
    key_pem_len: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let c = unsafe { slice(cert_pem, cert_pem_len, "cert_pem")? };
        let k = unsafe { slice(key_pem, key_pem_len, "key_pem")? };
        b.add_pem(c, k)?;
        Ok(RKTLS_OK)
    })
}

/// Set the ALPN protocols the server accepts, in preference order, in wire
/// format: each name preceded by its length byte, e.g. "\x02h2\x08http/1.1"
/// (as OpenSSL's `SSL_CTX_set_alpn_protos`). An empty list disables ALPN.
///
/// When ALPN is configured and the client offers ALPN with no protocol in
/// common, the handshake fails with the no_application_protocol alert.
/// Errors: `RKTLS_ERR_CONFIG_ALPN`; the builder is unchanged.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_alpn(
    builder: *mut rktls_server_config_builder,
    wire: *const u8,
    len: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.proto.set_alpn(unsafe { slice(wire, len, "wire")? })?;
        Ok(RKTLS_OK)
    })
}

/// Set the protocol versions: an array of `n` values, each 0x0303 (TLS 1.2)
/// or 0x0304 (TLS 1.3). Errors: `RKTLS_ERR_CONFIG_VERSIONS` for an empty
/// list or an unsupported version; the builder is unchanged.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_versions(
    builder: *mut rktls_server_config_builder,
    versions: *const u16,
    n: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.proto
            .set_versions(unsafe { slice_of(versions, n, "versions")? })?;
        Ok(RKTLS_OK)
    })
}

/// Restrict the cipher suites to the `n` IANA ids in `suites`, in
/// preference order (e.g. 0x1301 TLS_AES_128_GCM_SHA256, 0xC02B
/// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256). Errors:
/// `RKTLS_ERR_CONFIG_CIPHER_SUITES` for an empty list or an unknown id (and,
/// at build time, for suites unusable with the chosen versions).
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_cipher_suites(
    builder: *mut rktls_server_config_builder,
    suites: *const u16,
    n: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.proto
            .set_suites(unsafe { slice_of(suites, n, "suites")? })?;
        Ok(RKTLS_OK)
    })
}

/// Set the size of the stateful session cache (entries); 0 disables it.
/// Default 1024.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_session_cache(
    builder: *mut rktls_server_config_builder,
    entries: usize,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.session_cache = entries;
        Ok(RKTLS_OK)
    })
}

/// Enable or disable stateless session tickets (a rotating key, made at
/// build time). Default on. With tickets and the cache both off, no
/// resumption is offered.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_tickets(
    builder: *mut rktls_server_config_builder,
    enabled: bool,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.tickets = enabled;
        Ok(RKTLS_OK)
    })
}

/// Verify client certificates against the CA certificates in the PEM file
/// `ca_path`. With `required`, clients without a valid certificate are
/// refused (certificate_required / bad_certificate alert); otherwise a client
/// may present none. Errors: `RKTLS_ERR_CONFIG_FILE`, `_CONFIG_PEM`,
/// `_CONFIG_CA`; the builder is unchanged.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_client_verify_file(
    builder: *mut rktls_server_config_builder,
    ca_path: *const c_char,
    required: bool,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let path = unsafe { cstr(ca_path, "ca_path")? };
        let roots = roots_from_pem(&read_file(path, "CA file")?, path)?;
        b.client_auth = Some((Arc::new(roots), required));
        Ok(RKTLS_OK)
    })
}

fn parse_dirs(dirs: u32) -> Result<u32, Error> {
    if dirs & (offload::RKTLS_KTLS_TX | offload::RKTLS_KTLS_RX) == 0
        || dirs & !offload::KTLS_DIRS_ALL != 0
    {
        return Err(Error::invalid(format!(
            "kTLS directions 0x{dirs:x}: need RKTLS_KTLS_TX and/or RKTLS_KTLS_RX, \
             optionally RKTLS_KTLS_RX_NEEDS_REKEY"
        )));
    }
    Ok(dirs)
}

fn parse_key_limit(records: u64) -> Result<u64, Error> {
    match records {
        0 | 4.. => Ok(records),
        _ => Err(Error::invalid(
            "key limit must be 0 (the suite's) or at least 4 records",
        )),
    }
}

fn parse_ktls_mode(mode: u32) -> Result<rktls_ktls_mode, Error> {
    rktls_ktls_mode::from_u32(mode)
        .ok_or_else(|| Error::invalid(format!("unknown kTLS mode {mode}")))
}

/// Choose whether connections move their record layer into the Linux
/// kernel (kTLS) after the handshake: `RKTLS_KTLS_OFF` (default),
/// `RKTLS_KTLS_PREFER` (when the kernel and the negotiated cipher allow it,
/// otherwise stay in userspace) or `RKTLS_KTLS_REQUIRE` (otherwise the
/// handshake fails with `RKTLS_ERR_KTLS_UNAVAILABLE`). Applies to fd-mode
/// connections; it also makes their reads stop at TLS record boundaries.
/// `RKTLS_ERR_INVALID_ARGUMENT` for an unknown mode.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_ktls(
    builder: *mut rktls_server_config_builder,
    mode: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.ktls = parse_ktls_mode(mode)?;
        Ok(RKTLS_OK)
    })
}

/// Choose which directions of server connections move into the kernel
/// when kTLS is used: `RKTLS_KTLS_TX`, `RKTLS_KTLS_RX` (default: both),
/// plus optionally `RKTLS_KTLS_RX_NEEDS_REKEY` (for TLS 1.3, RX stays in
/// userspace on kernels that cannot install new keys, so the peer's
/// KeyUpdate does not end the connection). The other direction is then
/// protected in userspace. `RKTLS_ERR_INVALID_ARGUMENT` for an empty or
/// unknown set. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_ktls_directions(
    builder: *mut rktls_server_config_builder,
    dirs: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.offload.dirs = parse_dirs(dirs)?;
        Ok(RKTLS_OK)
    })
}

/// Limit how many records one traffic key of an offloaded server
/// connection protects, below the suite's confidentiality limit (the
/// default, 0, keeps that limit). Near the limit rktls updates TLS 1.3
/// keys itself; where it cannot (TLS 1.2, or a kernel that cannot rekey) it
/// closes cleanly with `RKTLS_ERR_KEY_EXHAUSTED` first. Values below 4
/// are `RKTLS_ERR_INVALID_ARGUMENT`. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_key_limit(
    builder: *mut rktls_server_config_builder,
    records: u64,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.offload.key_limit = parse_key_limit(records)?;
        Ok(RKTLS_OK)
    })
}

/// Build the server configuration into `*out_config`.
///
/// Always consumes `builder`, on success and on failure: do not use or free
/// it afterwards. Secret extraction is enabled so that kernel TLS can be
/// used later. Errors: `RKTLS_ERR_CONFIG_INCOMPLETE` (no certificate),
/// `_CONFIG_CIPHER_SUITES`, `_CONFIG_CA`. The caller owns one reference to
/// the config and releases it with `rktls_server_config_free()`.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_build(
    builder: *mut rktls_server_config_builder,
    out_config: *mut *const rktls_server_config,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_take(builder) }.ok_or_else(|| Error::null("builder"))?;
        let o = unsafe { out(out_config, "out_config")? };
        let cfg = b.build()?;
        *o = arc_into_ptr::<rktls_server_config>(Arc::new(cfg));
        Ok(RKTLS_OK)
    })
}

/// Release the caller's reference to a server configuration. Connections
/// made from it keep their own. NULL is a no-op. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_server_config_free(config: *const rktls_server_config) {
    guard(|| {
        unsafe { arc_free(config) };
        Ok(RKTLS_OK)
    });
}

// ---------------------------------------------------------------------------
// Client side.

pub(crate) struct ClientConfigBuilder {
    ktls: rktls_ktls_mode,
    offload: offload::Options,
    roots: RootCertStore,
    proto: Protocol,
    session_cache: usize,
    client_cert: Option<Arc<CertifiedKey>>,
    reneg_fail_fast: bool,
}

/// A client configuration under construction. Box handle: one thread at a
/// time; consumed by `rktls_client_config_builder_build()`, or freed with
/// `rktls_client_config_builder_free()`.
pub struct rktls_client_config_builder {
    _private: [u8; 0],
}

impl Handle for rktls_client_config_builder {
    type Rust = ClientConfigBuilder;
    type Ownership = Boxed;
}

/// A built client configuration. Arc handle: immutable, shareable by any
/// number of threads and connections (they share its session store);
/// release your reference with `rktls_client_config_free()`.
pub struct rktls_client_config {
    _private: [u8; 0],
}

pub(crate) struct ClientConfig {
    pub(crate) rustls: Arc<rustls::ClientConfig>,
    /// End the connection at a server's HelloRequest (TLS 1.2).
    pub(crate) reneg_fail_fast: bool,
    pub(crate) ktls: rktls_ktls_mode,
    pub(crate) offload: offload::Options,
}

impl Handle for rktls_client_config {
    type Rust = ClientConfig;
    type Ownership = Shared;
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(sigschemes)?;
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ClientConfigBuilder {
    pub(crate) fn new() -> Self {
        ClientConfigBuilder {
            ktls: rktls_ktls_mode::RKTLS_KTLS_OFF,
            offload: offload::Options::default(),
            roots: RootCertStore::empty(),
            proto: Protocol::default(),
            session_cache: 256,
            client_cert: None,
            reneg_fail_fast: false,
        }
    }

    pub(crate) fn add_roots_pem(&mut self, pem: &[u8]) -> Result<(), Error> {
        let roots = roots_from_pem(pem, "CA PEM")?;
        self.roots.roots.extend(roots.roots);
        Ok(())
    }

    /// Apply the protocol options (for tests).
    #[cfg(test)]
    pub(crate) fn apply(
        &mut self,
        versions: Option<&[u16]>,
        suites: Option<&[u16]>,
        alpn: Option<&[u8]>,
    ) -> Result<(), Error> {
        self.proto.apply(versions, suites, alpn)
    }

    #[cfg(test)]
    pub(crate) fn set_client_cert_pem(&mut self, cert: &[u8], key: &[u8]) -> Result<(), Error> {
        self.client_cert = Some(load_cert_key_pem(cert, key, &crypto::provider())?);
        Ok(())
    }

    pub(crate) fn build(self) -> Result<ClientConfig, Error> {
        if self.roots.is_empty() {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_INCOMPLETE,
                "client configuration has no trust roots",
            ));
        }
        let provider = Arc::new(self.proto.provider()?);
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.proto.versions())
            .map_err(map_builder_error)?
            .with_root_certificates(self.roots);
        let mut cfg = match self.client_cert {
            None => builder.with_no_client_auth(),
            Some(ck) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(ck))),
        };
        cfg.alpn_protocols = self.proto.alpn;
        cfg.enable_secret_extraction = true;
        cfg.resumption = if self.session_cache > 0 {
            Resumption::in_memory_sessions(self.session_cache)
        } else {
            Resumption::disabled()
        };
        Ok(ClientConfig {
            rustls: Arc::new(cfg),
            reneg_fail_fast: self.reneg_fail_fast,
            ktls: self.ktls,
            offload: self.offload,
        })
    }
}

/// Make a new client configuration builder in `*out`.
///
/// Defaults: TLS 1.2 and 1.3, every cipher suite of the crypto provider, no
/// ALPN, no client certificate, an in-memory session store of 256 entries.
/// Trust roots must be added before building. The caller owns the builder.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_new(
    out_builder: *mut *mut rktls_client_config_builder,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_builder, "out_builder")? };
        *o = box_into_ptr::<rktls_client_config_builder>(ClientConfigBuilder::new());
        Ok(RKTLS_OK)
    })
}

/// Free a client configuration builder that was not built. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_free(builder: *mut rktls_client_config_builder) {
    guard(|| {
        drop(unsafe { box_take(builder) });
        Ok(RKTLS_OK)
    });
}

/// Trust the CA certificates in the PEM file `path`. Errors:
/// `RKTLS_ERR_CONFIG_FILE`, `_CONFIG_PEM`, `_CONFIG_CA`; the builder is
/// unchanged.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_add_roots_file(
    builder: *mut rktls_client_config_builder,
    path: *const c_char,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let path = unsafe { cstr(path, "path")? };
        let roots = roots_from_pem(&read_file(path, "CA file")?, path)?;
        b.roots.roots.extend(roots.roots);
        Ok(RKTLS_OK)
    })
}

/// Trust the CA certificates in PEM text in memory (copied). As
/// `rktls_client_config_builder_add_roots_file()`.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_add_roots_pem(
    builder: *mut rktls_client_config_builder,
    pem: *const u8,
    len: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.add_roots_pem(unsafe { slice(pem, len, "pem")? })?;
        Ok(RKTLS_OK)
    })
}

/// Trust the operating system's CA bundle (on Debian
/// /etc/ssl/certs/ca-certificates.crt; `SSL_CERT_FILE` overrides). Errors:
/// `RKTLS_ERR_CONFIG_CA` if no usable root was found.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_add_system_roots(
    builder: *mut rktls_client_config_builder,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (good, _) = roots.add_parsable_certificates(found.certs);
        if good == 0 {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_CA,
                format!("no usable system trust roots found ({:?})", found.errors),
            ));
        }
        b.roots.roots.extend(roots.roots);
        Ok(RKTLS_OK)
    })
}

/// Set the ALPN protocols to offer, in wire format. As
/// `rktls_server_config_builder_set_alpn()`.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_alpn(
    builder: *mut rktls_client_config_builder,
    wire: *const u8,
    len: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.proto.set_alpn(unsafe { slice(wire, len, "wire")? })?;
        Ok(RKTLS_OK)
    })
}

/// Set the protocol versions to offer. As
/// `rktls_server_config_builder_set_versions()`.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_versions(
    builder: *mut rktls_client_config_builder,
    versions: *const u16,
    n: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.proto
            .set_versions(unsafe { slice_of(versions, n, "versions")? })?;
        Ok(RKTLS_OK)
    })
}

/// Restrict the cipher suites to offer. As
/// `rktls_server_config_builder_set_cipher_suites()`.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_cipher_suites(
    builder: *mut rktls_client_config_builder,
    suites: *const u16,
    n: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.proto
            .set_suites(unsafe { slice_of(suites, n, "suites")? })?;
        Ok(RKTLS_OK)
    })
}

/// Set the size of the client's in-memory session store (entries, shared by
/// every connection made from the built config); 0 disables resumption.
/// Default 256.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_session_cache(
    builder: *mut rktls_client_config_builder,
    entries: usize,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.session_cache = entries;
        Ok(RKTLS_OK)
    })
}

/// Choose what a client connection does when a TLS 1.2 server requests
/// renegotiation (HelloRequest), which rustls never performs.
///
/// false (the default): refuse with a no_renegotiation warning alert, as
/// RFC 5246 allows, and carry on if the server does; if the server then
/// closes or resets the connection, reads and writes return
/// `RKTLS_ERR_RENEGOTIATION`, and `rktls_connection_error_message()` names
/// the cause and the server-side fix. true: send a fatal no_renegotiation
/// alert and return `RKTLS_ERR_RENEGOTIATION` at once (after the data
/// received before the request has been read). Both log a warning.
///
/// `builder` is owned by the caller and used by one thread at a time; only
/// connections made from configs built afterwards are affected.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_renegotiation_fail_fast(
    builder: *mut rktls_client_config_builder,
    fail_fast: bool,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.reneg_fail_fast = fail_fast;
        Ok(RKTLS_OK)
    })
}

/// Present a client certificate: chain and key from PEM files. As
/// `rktls_server_config_builder_add_cert_key_files()`; the builder is
/// unchanged on error.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_cert_key_files(
    builder: *mut rktls_client_config_builder,
    cert_path: *const c_char,
    key_path: *const c_char,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let cert_path = unsafe { cstr(cert_path, "cert_path")? };
        let key_path = unsafe { cstr(key_path, "key_path")? };
        b.client_cert = Some(load_cert_key_files(
            cert_path,
            key_path,
            &crypto::provider(),
        )?);
        Ok(RKTLS_OK)
    })
}

/// Choose kTLS for client connections. As
/// `rktls_server_config_builder_set_ktls()`.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_ktls(
    builder: *mut rktls_client_config_builder,
    mode: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.ktls = parse_ktls_mode(mode)?;
        Ok(RKTLS_OK)
    })
}

/// Choose which directions of client connections move into the kernel
/// when kTLS is used: `RKTLS_KTLS_TX`, `RKTLS_KTLS_RX` (default: both),
/// plus optionally `RKTLS_KTLS_RX_NEEDS_REKEY` (for TLS 1.3, RX stays in
/// userspace on kernels that cannot install new keys, so the peer's
/// KeyUpdate does not end the connection). The other direction is then
/// protected in userspace. `RKTLS_ERR_INVALID_ARGUMENT` for an empty or
/// unknown set. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_ktls_directions(
    builder: *mut rktls_client_config_builder,
    dirs: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.offload.dirs = parse_dirs(dirs)?;
        Ok(RKTLS_OK)
    })
}

/// Limit how many records one traffic key of an offloaded client
/// connection protects, below the suite's confidentiality limit (the
/// default, 0, keeps that limit). Near the limit rktls updates TLS 1.3
/// keys itself; where it cannot (TLS 1.2, or a kernel that cannot rekey) it
/// closes cleanly with `RKTLS_ERR_KEY_EXHAUSTED` first. Values below 4
/// are `RKTLS_ERR_INVALID_ARGUMENT`. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_key_limit(
    builder: *mut rktls_client_config_builder,
    records: u64,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.offload.key_limit = parse_key_limit(records)?;
        Ok(RKTLS_OK)
    })
}

/// Build the client configuration into `*out_config`.
///
/// Always consumes `builder`: do not use or free it afterwards. Errors:
/// `RKTLS_ERR_CONFIG_INCOMPLETE` (no trust roots),
/// `_CONFIG_CIPHER_SUITES`. The caller owns one reference and releases it
/// with `rktls_client_config_free()`.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_build(
    builder: *mut rktls_client_config_builder,
    out_config: *mut *const rktls_client_config,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_take(builder) }.ok_or_else(|| Error::null("builder"))?;
        let o = unsafe { out(out_config, "out_config")? };
        let cfg = b.build()?;
        *o = arc_into_ptr::<rktls_client_config>(Arc::new(cfg));
        Ok(RKTLS_OK)
    })
}

/// Release the caller's reference to a client configuration. NULL is a
/// no-op. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_client_config_free(config: *const rktls_client_config) {
    guard(|| {
        unsafe { arc_free(config) };
        Ok(RKTLS_OK)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_wire_format() {
        assert_eq!(
            parse_alpn_wire(b"\x02h2\x08http/1.1").unwrap(),
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(parse_alpn_wire(b"").unwrap().is_empty());
        for bad in [&b"h2"[..], b"\x00", b"\x05abc", b"\x02h2\x09http/1.1"] {
            assert_eq!(
                parse_alpn_wire(bad).unwrap_err().code,
                RKTLS_ERR_CONFIG_ALPN
            );
        }
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_versions(&[]).unwrap_err().code,
            RKTLS_ERR_CONFIG_VERSIONS
        );
        assert_eq!(
            parse_versions(&[0x0302]).unwrap_err().code,
            RKTLS_ERR_CONFIG_VERSIONS
        );
        assert_eq!(parse_versions(&[0x0304, 0x0304, 0x0303]).unwrap().len(), 2);
    }

    #[test]
    fn suites() {
        let mut p = crypto::provider();
        select_suites(&mut p, &[0x1303, 0x1301]).unwrap();
        let ids: Vec<u16> = p
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        assert_eq!(ids, vec![0x1303, 0x1301]);
        assert_eq!(
            select_suites(&mut crypto::provider(), &[0x0005])
                .unwrap_err()
                .code,
            RKTLS_ERR_CONFIG_CIPHER_SUITES
        );
        assert_eq!(
            select_suites(&mut crypto::provider(), &[])
                .unwrap_err()
                .code,
            RKTLS_ERR_CONFIG_CIPHER_SUITES
        );
    }

    #[test]
    fn suites_must_fit_versions() {
        let mut b = ServerConfigBuilder::new();
        b.keys.push(crate::testutil::certified_key());
        b.proto.set_versions(&[0x0304]).unwrap();
        b.proto.set_suites(&[0xc02b]).unwrap();
        assert_eq!(
            b.build().err().unwrap().code,
            RKTLS_ERR_CONFIG_CIPHER_SUITES
        );
    }

    #[test]
    fn pem_errors() {
        assert_eq!(parse_key(b"", "k").unwrap_err().code, RKTLS_ERR_CONFIG_PEM);
        assert_eq!(
            parse_certs(b"hello", "c").unwrap_err().code,
            RKTLS_ERR_CONFIG_PEM
        );
        let (cert, _) = crate::testutil::pems();
        // A certificate file given as the key: no key in it.
        let e = parse_key(cert.as_bytes(), "k").unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_CONFIG_PEM);
        assert!(e.msg.contains("no PRIVATE KEY"), "{}", e.msg);
    }

    #[test]
    fn key_mismatch_detected() {
        let (cert, _) = crate::testutil::pems();
        let (_, other_key) = crate::testutil::other_pems();
        let e = load_cert_key_pem(cert.as_bytes(), other_key.as_bytes(), &crypto::provider())
            .unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_CONFIG_KEY_MISMATCH);
    }

    #[test]
    fn empty_builders_refuse_to_build() {
        assert_eq!(
            ServerConfigBuilder::new().build().err().unwrap().code,
            RKTLS_ERR_CONFIG_INCOMPLETE
        );
        assert_eq!(
            ClientConfigBuilder::new().build().err().unwrap().code,
            RKTLS_ERR_CONFIG_INCOMPLETE
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let mut b: *mut rktls_server_config_builder = std::ptr::null_mut();
        assert_eq!(rktls_server_config_builder_new(&mut b), RKTLS_OK);
        let r = rktls_server_config_builder_add_cert_key_files(
            b,
            c"/nonexistent/cert.pem".as_ptr(),
            c"/nonexistent/key.pem".as_ptr(),
        );
        assert_eq!(r, RKTLS_ERR_CONFIG_FILE);
        let mut buf = [0 as c_char; 256];
        let mut n = 0;
        crate::ffi::rktls_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n);
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("/nonexistent/cert.pem"), "{msg}");
        // Builder still usable and unchanged: building fails as incomplete.
        let mut cfg: *const rktls_server_config = std::ptr::null();
        assert_eq!(
            rktls_server_config_builder_build(b, &mut cfg),
            RKTLS_ERR_CONFIG_INCOMPLETE
        );
        assert!(cfg.is_null());
    }

    #[test]
    fn null_arguments() {
        assert_eq!(
            rktls_server_config_builder_new(std::ptr::null_mut()),
            RKTLS_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            rktls_server_config_builder_set_alpn(std::ptr::null_mut(), std::ptr::null(), 0),
            RKTLS_ERR_NULL_ARGUMENT
        );
        let mut cfg: *const rktls_client_config = std::ptr::null();
        assert_eq!(
            rktls_client_config_builder_build(std::ptr::null_mut(), &mut cfg),
            RKTLS_ERR_NULL_ARGUMENT
        );
        rktls_server_config_free(std::ptr::null());
        rktls_client_config_builder_free(std::ptr::null_mut());
    }
}
