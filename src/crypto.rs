//! The crypto provider: aws-lc-rs by default, ring with
//! `--no-default-features --features ring`.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!("rktls needs a crypto provider: enable feature \"aws-lc-rs\" or \"ring\"");

#[cfg(feature = "aws-lc-rs")]
use rustls::crypto::aws_lc_rs as backend;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
use rustls::crypto::ring as backend;

/// The primitives crate behind the provider (same `aead`, `hkdf`, `digest`
/// and `rand` API in both), for what rustls does not expose: ticket sealing.
#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws_lc_rs as primitives;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub(crate) use ring as primitives;

/// Name of the provider compiled in.
#[cfg(feature = "aws-lc-rs")]
pub const PROVIDER_NAME: &str = "aws-lc-rs";
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub const PROVIDER_NAME: &str = "ring";

/// A fresh copy of the default provider (all suites, default key exchange).
pub fn provider() -> CryptoProvider {
    backend::default_provider()
}

/// A rotating stateless-ticket encrypter.
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    backend::Ticketer::new()
}
