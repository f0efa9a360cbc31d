//! Input parsing and protocol options shared by the server and client
//! builders: PEM certificates and keys, ALPN wire lists, protocol versions,
//! cipher suites, trust roots and the kTLS settings.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SupportedProtocolVersion};

use crate::crypto;
use crate::ktls::rktls_ktls_mode;
use crate::offload;
use crate::result::rktls_result::*;
use crate::result::Error;

pub(crate) fn read_file(path: &str, what: &str) -> Result<Vec<u8>, Error> {
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

pub(crate) fn load_cert_key_files(
    cert_path: &str,
    key_path: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    let chain = parse_certs(&read_file(cert_path, "certificate file")?, cert_path)?;
    let key = parse_key(&read_file(key_path, "key file")?, key_path)?;
    certified_key(chain, key, provider)
}

pub(crate) fn load_cert_key_pem(
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

pub(crate) fn roots_from_pem(pem: &[u8], what: &str) -> Result<RootCertStore, Error> {
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
pub(crate) struct Protocol {
    pub(crate) alpn: Vec<Vec<u8>>,
    versions: Option<Vec<&'static SupportedProtocolVersion>>,
    suites: Option<Vec<u16>>,
}

impl Protocol {
    pub(crate) fn provider(&self) -> Result<CryptoProvider, Error> {
        let mut p = crypto::provider();
        if let Some(ids) = &self.suites {
            select_suites(&mut p, ids)?;
        }
        Ok(p)
    }

    /// Whether the suites were chosen by the caller (else every suite of
    /// the provider).
    pub(crate) fn suites_chosen(&self) -> bool {
        self.suites.is_some()
    }

    pub(crate) fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        self.versions
            .clone()
            .unwrap_or_else(|| rustls::DEFAULT_VERSIONS.to_vec())
    }

    pub(crate) fn set_versions(&mut self, v: &[u16]) -> Result<(), Error> {
        self.versions = Some(parse_versions(v)?);
        Ok(())
    }

    pub(crate) fn set_suites(&mut self, ids: &[u16]) -> Result<(), Error> {
        // Validate now so the error is reported by this call.
        select_suites(&mut crypto::provider(), ids)?;
        self.suites = Some(ids.to_vec());
        Ok(())
    }

    pub(crate) fn set_alpn(&mut self, wire: &[u8]) -> Result<(), Error> {
        self.alpn = parse_alpn_wire(wire)?;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn apply(
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

pub(crate) fn map_builder_error(e: rustls::Error) -> Error {
    Error::new(
        RKTLS_ERR_CONFIG_CIPHER_SUITES,
        format!("no cipher suite usable with the chosen protocol versions: {e}"),
    )
}

pub(crate) fn parse_dirs(dirs: u32) -> Result<u32, Error> {
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

pub(crate) fn parse_key_limit(records: u64) -> Result<u64, Error> {
    match records {
        0 | 4.. => Ok(records),
        _ => Err(Error::invalid(
            "key limit must be 0 (the suite's) or at least 4 records",
        )),
    }
}

pub(crate) fn parse_ktls_mode(mode: u32) -> Result<rktls_ktls_mode, Error> {
    rktls_ktls_mode::from_u32(mode)
        .ok_or_else(|| Error::invalid(format!("unknown kTLS mode {mode}")))
}
