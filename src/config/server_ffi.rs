//! The C exports of the server configuration (`rktls_server_config_*`):
//! each checks its arguments and calls the builder method in `server.rs`.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::server::{ServerConfig, ServerConfigBuilder};
use super::session_cache::{rktls_session_get_cb, rktls_session_put_cb, CallbackCache};
use super::tickets_ffi::{path_list, rktls_ticket_key, rktls_ticket_keys, ticket_key_slices};
use crate::ffi::{
    arc_clone, arc_free, arc_into_ptr, box_into_ptr, box_mut, box_take, cstr, guard, out, slice,
    slice_of, Boxed, Handle, Shared,
};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

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
impl Handle for rktls_server_config {
    type Rust = ServerConfig;
    type Ownership = Shared;
}

/// Make a new server configuration builder in `*out`.
///
/// Defaults: TLS 1.2 and 1.3, every cipher suite of the crypto provider
/// chosen in the server's order with AES-128-GCM first (see
/// `rktls_server_config_builder_set_follow_client_order()`), no ALPN, no
/// client authentication, and resumption through a stateful in-memory
/// session cache of 1024 entries (TLS 1.2 session IDs; TLS 1.3 tickets
/// that are ids into it). Stateless tickets are on only with host-supplied
/// ticket keys (`rktls_server_config_builder_set_ticket_keys()` and the
/// like: what worker processes and machines need to resume each other's
/// sessions) or `rktls_server_config_builder_set_tickets(b, true)`. At
/// least one certificate and key must be added before building. The caller owns the builder: build it (which
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
        b.add_files(cert_path, key_path)?;
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

/// Restrict the cipher suites to the `n` IANA ids in `suites`, in the
/// server's preference order (used unless
/// `rktls_server_config_builder_set_follow_client_order()` is set; e.g. 0x1301 TLS_AES_128_GCM_SHA256, 0xC02B
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

/// Set the size of the in-memory stateful session cache (entries); 0
/// disables it. Default 1024. Not used when
/// `rktls_server_config_builder_set_session_cache()` installs the host's
/// store.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_session_cache_size(
    builder: *mut rktls_server_config_builder,
    entries: usize,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.set_session_cache_size(entries);
        Ok(RKTLS_OK)
    })
}

/// Keep server sessions (TLS 1.2 session IDs, and TLS 1.3 tickets when
/// stateless tickets are off) in the host's store, for example Redis shared
/// by several processes or machines, instead of the in-memory cache.
///
/// `get_cb` and `put_cb` are both required (`RKTLS_ERR_NULL_ARGUMENT`
/// otherwise); see `rktls_session_get_cb` and `rktls_session_put_cb` for
/// the buffers and their lifetimes. rktls calls them from whichever thread
/// drives a handshake, concurrently; they must be thread-safe and return
/// within milliseconds (a slow store delays the handshake that waits for
/// it: give the store a short timeout and report a failure). A failure, a
/// miss, or a value that is not intact is a full handshake and a warning
/// in the log, never a failed handshake or another client's session.
///
/// `userdata` is passed to both and owned by the host: it must stay valid
/// until every config built from this builder and every connection made
/// from those configs has been freed. Unless stateless tickets are on
/// (host ticket keys, or `rktls_server_config_builder_set_tickets(b,
/// true)`), every resumption goes through the store: TLS 1.2 session IDs
/// and TLS 1.3 tickets that are ids into it.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_session_cache(
    builder: *mut rktls_server_config_builder,
    get_cb: rktls_session_get_cb,
    put_cb: rktls_session_put_cb,
    userdata: *mut c_void,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let get = get_cb.ok_or_else(|| Error::null("get_cb"))?;
        let put = put_cb.ok_or_else(|| Error::null("put_cb"))?;
        b.set_session_store(CallbackCache::new(get, put, userdata));
        Ok(RKTLS_OK)
    })
}

/// Seal session tickets under the host's keys, so that every process and
/// machine holding the same keys resumes the others' sessions.
///
/// `keys` is an array of `n` (at least 1) `rktls_ticket_key`s; each is 48
/// or 80 bytes: a 16-byte key name, then 32 or 64 secret bytes (the layout
/// of nginx's `ssl_session_ticket_key` files; make one with
/// `openssl rand 80`). The first key seals new tickets; every key opens
/// tickets sealed under it. The bytes are copied; the caller keeps (and
/// should wipe) its buffers. The keys stay fixed for configs built from
/// this builder: to rotate keys while serving, share an `rktls_ticket_keys`
/// with `rktls_server_config_builder_use_ticket_keys()`. Errors:
/// `RKTLS_ERR_INVALID_ARGUMENT` (n == 0, a length other than 48 or 80), the
/// builder unchanged. Host keys turn stateless tickets on, unless
/// `rktls_server_config_builder_set_tickets(b, false)` turned them off.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_ticket_keys(
    builder: *mut rktls_server_config_builder,
    keys: *const rktls_ticket_key,
    n: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let materials = unsafe { ticket_key_slices(keys, n)? };
        b.set_ticket_keys(&materials)?;
        Ok(RKTLS_OK)
    })
}

/// Seal session tickets under the keys in nginx `ssl_session_ticket_key`
/// files: `paths` is an array of `n` (at least 1) NUL-terminated file
/// names, each file holding exactly one key of 48 or 80 bytes (16-byte
/// name, then the secret; `openssl rand 80 > ticket.key`). The first file's
/// key seals new tickets, every file's key opens tickets sealed under it,
/// as with nginx's repeated directive. The files are read now; rereading
/// them later (rotation) needs a new config, or an `rktls_ticket_keys`
/// object with `rktls_ticket_keys_set_files()`. Errors:
/// `RKTLS_ERR_CONFIG_FILE` (unreadable; the message names the file),
/// `RKTLS_ERR_INVALID_ARGUMENT` (n == 0, or a file that is not 48 or 80
/// bytes), the builder unchanged.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_ticket_keys_file(
    builder: *mut rktls_server_config_builder,
    paths: *const *const c_char,
    n: usize,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        let paths = unsafe { path_list(paths, n)? };
        b.set_ticket_keys_files(&paths)?;
        Ok(RKTLS_OK)
    })
}

/// Seal session tickets under a shared, rotatable `rktls_ticket_keys`
/// object. The config keeps its own reference (the caller may free its
/// one); replacing the object's keys affects the next ticket sealed or
/// opened by every config using it. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_use_ticket_keys(
    builder: *mut rktls_server_config_builder,
    keys: *const rktls_ticket_keys,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.use_ticket_keys(unsafe { arc_clone(keys, "keys")? });
        Ok(RKTLS_OK)
    })
}

/// Set how long a ticket sealed under host-supplied keys is accepted, in
/// seconds (1 to 604800, 7 days; default 43200, 12 hours). Also the
/// lifetime hint sent to clients. Older tickets get a full handshake.
/// `RKTLS_ERR_INVALID_ARGUMENT` outside that range.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_ticket_lifetime(
    builder: *mut rktls_server_config_builder,
    seconds: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.set_ticket_lifetime(seconds)?;
        Ok(RKTLS_OK)
    })
}

/// Enable or disable stateless session tickets (RFC 5077 style: the
/// session sealed into the ticket, nothing kept by the server). By default
/// they are on exactly when the host supplies ticket keys
/// (`rktls_server_config_builder_set_ticket_keys()`, `_set_ticket_keys_file()`,
/// `_use_ticket_keys()`); otherwise resumption uses the stateful session
/// cache, which costs a server less per handshake but resumes only in the
/// process (and config) that issued the session. Enabled without host keys,
/// tickets are sealed under a rotating key made at build time (shared by
/// processes forked after the build). With tickets and the cache both off,
/// no resumption is offered.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_tickets(
    builder: *mut rktls_server_config_builder,
    enabled: bool,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.set_tickets(enabled);
        Ok(RKTLS_OK)
    })
}

/// Choose the cipher suite in the client's order of preference (`follow`
/// true) instead of the server's (the default: the order of
/// `rktls_server_config_builder_set_cipher_suites()`, or AES-128-GCM first,
/// then AES-256-GCM, then ChaCha20-Poly1305 for the default list).
/// AES-128-GCM is the default's first choice because it is the fastest
/// suite on CPUs with AES instructions and its TLS 1.3 key schedule uses
/// SHA-256 rather than SHA-384; a server whose clients mostly lack AES
/// instructions may prefer the client's order (they list ChaCha20 first).
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_follow_client_order(
    builder: *mut rktls_server_config_builder,
    follow: bool,
) -> rktls_result {
    guard(|| {
        unsafe { box_mut(builder, "builder")? }.set_follow_client_order(follow);
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
        b.set_client_verify_file(path, required)?;
        Ok(RKTLS_OK)
    })
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
        b.set_ktls(mode)?;
        Ok(RKTLS_OK)
    })
}

/// Choose which directions of server connections move into the kernel
/// when kTLS is used: `RKTLS_KTLS_TX`, `RKTLS_KTLS_RX` (default: both),
/// plus optionally `RKTLS_KTLS_RX_NEEDS_REKEY` (for TLS 1.3, RX stays in
/// userspace on kernels that cannot install new keys, so the peer's
/// KeyUpdate does not end the connection; one that asks for ours still
/// does while TX is in such a kernel: `RKTLS_ERR_KTLS_NO_REKEY`, and
/// internal_error to the peer). The other direction is then
/// protected in userspace. `RKTLS_ERR_INVALID_ARGUMENT` for an empty or
/// unknown set. Not thread-safe for the same builder.
#[no_mangle]
pub extern "C" fn rktls_server_config_builder_set_ktls_directions(
    builder: *mut rktls_server_config_builder,
    dirs: u32,
) -> rktls_result {
    guard(|| {
        let b = unsafe { box_mut(builder, "builder")? };
        b.set_ktls_directions(dirs)?;
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
        b.set_key_limit(records)?;
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
