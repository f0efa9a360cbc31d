//! The C exports of the client configuration (`rktls_client_config_*`):
//! each checks its arguments and calls the builder method in `client.rs`.

use std::ffi::c_char;
use std::sync::Arc;

use super::client::{ClientConfig, ClientConfigBuilder};
use crate::ffi::{
    arc_free, arc_into_ptr, box_into_ptr, box_mut, box_take, cstr, guard, out, slice, slice_of,
    Boxed, Handle, Shared,
};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

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

impl Handle for rktls_client_config {
    type Rust = ClientConfig;
    type Ownership = Shared;
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
        b.add_roots_file(path)?;
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
        b.add_system_roots()?;
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
        unsafe { box_mut(builder, "builder")? }.set_session_cache_size(entries);
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
        unsafe { box_mut(builder, "builder")? }.set_renegotiation_fail_fast(fail_fast);
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
        b.set_client_cert_files(cert_path, key_path)?;
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
        b.set_ktls(mode)?;
        Ok(RKTLS_OK)
    })
}

/// Choose which directions of client connections move into the kernel
/// when kTLS is used: `RKTLS_KTLS_TX`, `RKTLS_KTLS_RX` (default: both),
/// plus optionally `RKTLS_KTLS_RX_NEEDS_REKEY` (for TLS 1.3, RX stays in
/// userspace on kernels that cannot install new keys, so the peer's
/// KeyUpdate does not end the connection; one that asks for ours still
/// does while TX is in such a kernel: `RKTLS_ERR_KTLS_NO_REKEY`, and
/// internal_error to the peer). The other direction is then
/// protected in userspace. `RKTLS_ERR_INVALID_ARGUMENT` for an empty or
/// unknown set. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_client_config_builder_set_ktls_directions(
    builder: *mut rktls_client_config_builder,
    dirs: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.set_ktls_directions(dirs)?;
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
        b.set_key_limit(records)?;
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
