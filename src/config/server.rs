//! The server configuration: its builder, the certificate choice by SNI,
//! and the rustls `ServerConfig` it builds. The C exports are in
//! `server_ffi.rs`.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert,
    ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::common::{
    load_cert_key_files, load_cert_key_pem, map_builder_error, parse_dirs, parse_key_limit,
    parse_ktls_mode, read_file, roots_from_pem, Protocol,
};
use super::session_cache::CallbackCache;
use super::tickets::{self, TicketKeys, Ticketer};
use crate::crypto;
use crate::ktls::rktls_ktls_mode;
use crate::offload;
use crate::result::rktls_result::*;
use crate::result::Error;

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

/// The default suite order of a server: AES-128-GCM first (its TLS 1.3
/// suite has the SHA-256 key schedule, cheaper than AES-256-GCM's SHA-384,
/// and it is the fastest bulk cipher with AES instructions), then the
/// provider's order (AES-256-GCM, ChaCha20-Poly1305), per version.
fn prefer_aes128(provider: &mut rustls::crypto::CryptoProvider) {
    const AES128_GCM: [u16; 3] = [0x1301, 0xc02b, 0xc02f];
    provider
        .cipher_suites
        .sort_by_key(|s| !AES128_GCM.contains(&u16::from(s.suite())));
}

/// The options of a server configuration, validated as they are set.
pub(crate) struct ServerConfigBuilder {
    ktls: rktls_ktls_mode,
    offload: offload::Options,
    keys: Vec<Arc<CertifiedKey>>,
    pub(crate) proto: Protocol,
    session_cache: usize,
    /// Stateless tickets: `None` is the default, on exactly when the host
    /// supplies ticket keys (a fleet); otherwise TLS 1.3 tickets are ids
    /// into the stateful cache.
    tickets: Option<bool>,
    /// Choose the suite in the server's order (default), not the client's.
    server_order: bool,
    client_auth: Option<(Arc<RootCertStore>, bool)>,
    /// Host-supplied ticket keys; without them, rustls' own rotating key.
    ticket_keys: Option<Arc<TicketKeys>>,
    ticket_lifetime: u32,
    /// The host's session store; without it, an in-memory cache.
    session_store: Option<Arc<CallbackCache>>,
}

pub(crate) struct ServerConfig {
    pub(crate) rustls: Arc<rustls::ServerConfig>,
    pub(crate) ktls: rktls_ktls_mode,
    pub(crate) offload: offload::Options,
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
            tickets: None,
            server_order: true,
            client_auth: None,
            ticket_keys: None,
            ticket_lifetime: tickets::DEFAULT_LIFETIME,
            session_store: None,
        }
    }

    /// Add a certificate chain and key from PEM files.
    pub(crate) fn add_files(&mut self, cert_path: &str, key_path: &str) -> Result<(), Error> {
        self.keys.push(load_cert_key_files(
            cert_path,
            key_path,
            &crypto::provider(),
        )?);
        Ok(())
    }

    /// Add a certificate chain and key from PEM text.
    pub(crate) fn add_pem(&mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Error> {
        self.keys
            .push(load_cert_key_pem(cert_pem, key_pem, &crypto::provider())?);
        Ok(())
    }

    pub(crate) fn set_session_cache_size(&mut self, entries: usize) {
        self.session_cache = entries;
    }

    pub(crate) fn set_tickets(&mut self, enabled: bool) {
        self.tickets = Some(enabled);
    }

    /// Choose the cipher suite in the client's order instead of ours.
    pub(crate) fn set_follow_client_order(&mut self, follow: bool) {
        self.server_order = !follow;
    }

    /// Seal tickets under these keys (each 48 or 80 bytes), first encrypts.
    pub(crate) fn set_ticket_keys(&mut self, materials: &[&[u8]]) -> Result<(), Error> {
        let keys = TicketKeys::new();
        keys.set(materials)?;
        self.ticket_keys = Some(Arc::new(keys));
        Ok(())
    }

    /// Seal tickets under the keys in these nginx-format key files.
    pub(crate) fn set_ticket_keys_files(&mut self, paths: &[&str]) -> Result<(), Error> {
        let keys = TicketKeys::new();
        keys.set_files(paths)?;
        self.ticket_keys = Some(Arc::new(keys));
        Ok(())
    }

    /// Seal tickets under a key set the host keeps and rotates.
    pub(crate) fn use_ticket_keys(&mut self, keys: Arc<TicketKeys>) {
        self.ticket_keys = Some(keys);
    }

    pub(crate) fn set_ticket_lifetime(&mut self, seconds: u32) -> Result<(), Error> {
        if seconds == 0 || seconds > tickets::MAX_LIFETIME {
            return Err(Error::invalid(format!(
                "ticket lifetime {seconds}: must be 1..={} seconds (7 days)",
                tickets::MAX_LIFETIME
            )));
        }
        self.ticket_lifetime = seconds;
        Ok(())
    }

    /// Keep sessions in the host's store, through its callbacks.
    pub(crate) fn set_session_store(&mut self, store: CallbackCache) {
        self.session_store = Some(Arc::new(store));
    }

    /// Verify client certificates against the CA certificates in a PEM file.
    pub(crate) fn set_client_verify_file(
        &mut self,
        path: &str,
        required: bool,
    ) -> Result<(), Error> {
        let roots = roots_from_pem(&read_file(path, "CA file")?, path)?;
        self.client_auth = Some((Arc::new(roots), required));
        Ok(())
    }

    /// Verify client certificates against the CA certificates in PEM text.
    #[cfg_attr(not(test), allow(dead_code))] // Rust callers and tests
    pub(crate) fn set_client_verify_pem(
        &mut self,
        ca_pem: &[u8],
        required: bool,
    ) -> Result<(), Error> {
        self.client_auth = Some((Arc::new(roots_from_pem(ca_pem, "CA PEM")?), required));
        Ok(())
    }

    pub(crate) fn set_ktls(&mut self, mode: u32) -> Result<(), Error> {
        self.ktls = parse_ktls_mode(mode)?;
        Ok(())
    }

    pub(crate) fn set_ktls_directions(&mut self, dirs: u32) -> Result<(), Error> {
        self.offload.dirs = parse_dirs(dirs)?;
        Ok(())
    }

    pub(crate) fn set_key_limit(&mut self, records: u64) -> Result<(), Error> {
        self.offload.key_limit = parse_key_limit(records)?;
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

    pub(crate) fn build(self) -> Result<ServerConfig, Error> {
        if self.keys.is_empty() {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_INCOMPLETE,
                "server configuration has no certificate and key",
            ));
        }
        let mut provider = self.proto.provider()?;
        if !self.proto.suites_chosen() {
            prefer_aes128(&mut provider);
        }
        let provider = Arc::new(provider);
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
        let stateful_store = self.session_store.is_some();
        let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { keys: self.keys }));
        cfg.alpn_protocols = self.proto.alpn;
        cfg.enable_secret_extraction = true;
        cfg.ignore_client_order = self.server_order;
        cfg.session_storage = if let Some(store) = self.session_store {
            store
        } else if self.session_cache > 0 {
            ServerSessionMemoryCache::new(self.session_cache)
        } else {
            Arc::new(NoServerSessionStorage {})
        };
        let stateless = self.tickets.unwrap_or(self.ticket_keys.is_some());
        if stateless {
            cfg.ticketer = match self.ticket_keys {
                Some(keys) => Arc::new(Ticketer {
                    keys,
                    lifetime: self.ticket_lifetime,
                }),
                None => crypto::ticketer().map_err(|e| {
                    Error::new(RKTLS_ERR_INTERNAL, format!("cannot make a ticketer: {e}"))
                })?,
            };
        }
        if !stateless && self.session_cache == 0 && !stateful_store {
            cfg.send_tls13_tickets = 0;
        }
        Ok(ServerConfig {
            rustls: Arc::new(cfg),
            ktls: self.ktls,
            offload: self.offload,
        })
    }
}
