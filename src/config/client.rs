//! The client configuration: its builder and the rustls `ClientConfig` it
//! builds. The C exports are in `client_ffi.rs`.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::common::{
    load_cert_key_files, load_cert_key_pem, map_builder_error, parse_dirs, parse_key_limit,
    parse_ktls_mode, read_file, roots_from_pem, Protocol,
};
use crate::crypto;
use crate::ktls::rktls_ktls_mode;
use crate::offload;
use crate::result::rktls_result::*;
use crate::result::Error;

/// The options of a client configuration, validated as they are set.
pub(crate) struct ClientConfigBuilder {
    ktls: rktls_ktls_mode,
    offload: offload::Options,
    roots: RootCertStore,
    pub(crate) proto: Protocol,
    session_cache: usize,
    client_cert: Option<Arc<CertifiedKey>>,
    reneg_fail_fast: bool,
}

/// A built client configuration (behind `rktls_client_config`).
pub(crate) struct ClientConfig {
    pub(crate) rustls: Arc<rustls::ClientConfig>,
    /// End the connection at a server's HelloRequest (TLS 1.2).
    pub(crate) reneg_fail_fast: bool,
    pub(crate) ktls: rktls_ktls_mode,
    pub(crate) offload: offload::Options,
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

    /// Trust the CA certificates in a PEM file.
    pub(crate) fn add_roots_file(&mut self, path: &str) -> Result<(), Error> {
        let roots = roots_from_pem(&read_file(path, "CA file")?, path)?;
        self.roots.roots.extend(roots.roots);
        Ok(())
    }

    /// Trust the CA certificates in PEM text.
    pub(crate) fn add_roots_pem(&mut self, pem: &[u8]) -> Result<(), Error> {
        let roots = roots_from_pem(pem, "CA PEM")?;
        self.roots.roots.extend(roots.roots);
        Ok(())
    }

    /// Trust the operating system's CA bundle.
    pub(crate) fn add_system_roots(&mut self) -> Result<(), Error> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (good, _) = roots.add_parsable_certificates(found.certs);
        if good == 0 {
            return Err(Error::new(
                RKTLS_ERR_CONFIG_CA,
                format!("no usable system trust roots found ({:?})", found.errors),
            ));
        }
        self.roots.roots.extend(roots.roots);
        Ok(())
    }

    pub(crate) fn set_session_cache_size(&mut self, entries: usize) {
        self.session_cache = entries;
    }

    pub(crate) fn set_renegotiation_fail_fast(&mut self, fail_fast: bool) {
        self.reneg_fail_fast = fail_fast;
    }

    /// Present a client certificate: chain and key from PEM files.
    pub(crate) fn set_client_cert_files(
        &mut self,
        cert_path: &str,
        key_path: &str,
    ) -> Result<(), Error> {
        self.client_cert = Some(load_cert_key_files(
            cert_path,
            key_path,
            &crypto::provider(),
        )?);
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

    /// Present a client certificate: chain and key from PEM text.
    #[cfg_attr(not(test), allow(dead_code))] // Rust callers and tests
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
