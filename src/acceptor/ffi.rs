//! The C API of the acceptor: `rktls_acceptor` (reads the ClientHello)
//! and `rktls_accepted` (inspects it and makes the connection), each
//! function a checked call into `Acceptor`/`Accepted`.

use std::ffi::c_char;

use super::{Accepted, Acceptor, Outcome};
use crate::alert::{rktls_alert, Alert};
use crate::config::rktls_server_config;
use crate::connection::rktls_connection;
use crate::ffi::{
    arc_clone, box_into_ptr, box_mut, box_ref, box_take, copy_str_out, guard, guard_value, out,
    slice, Boxed, Handle,
};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

/// Reads a ClientHello before a config is chosen. Box handle: one thread at
/// a time; free with `rktls_acceptor_free()`. One acceptor per connection.
///
/// Call sequence (server, one per accepted TCP connection):
/// 1. `rktls_acceptor_new()`; in fd mode `rktls_acceptor_set_fd()` with the
///    accepted socket (otherwise buffer mode: `rktls_acceptor_feed()` every
///    byte received, in order).
/// 2. `rktls_acceptor_accept()` until it stops returning
///    `RKTLS_WANT_READ`/`RKTLS_WANT_WRITE` (wait for the fd, or feed more).
/// 3. On `RKTLS_OK` it gives an `rktls_accepted`: inspect the ClientHello
///    (`rktls_accepted_server_name()`, `_alpn()`, `_cipher_suites()`, ...),
///    choose an `rktls_server_config`, and call
///    `rktls_accepted_into_connection()` for the `rktls_connection`; then
///    `rktls_accepted_free()` in every case.
/// 4. On an error it gives an `rktls_alert` (if `out_alert` is not NULL):
///    in fd mode rktls already wrote it; in buffer mode send
///    `rktls_alert_bytes()`. Then `rktls_alert_free()` and close the socket.
///    `rktls_accepted_into_connection()` fails the same way.
/// 5. `rktls_acceptor_free()` (the connection does not need the acceptor).
pub struct rktls_acceptor {
    _private: [u8; 0],
}

impl Handle for rktls_acceptor {
    type Rust = Acceptor;
    type Ownership = Boxed;
    fn panicked(a: &Acceptor) -> Option<&std::sync::atomic::AtomicBool> {
        Some(&a.panicked)
    }
}

/// A received ClientHello, ready to inspect and to turn into a connection.
/// Box handle: one thread at a time; always free it with
/// `rktls_accepted_free()`, also after `rktls_accepted_into_connection()`.
pub struct rktls_accepted {
    _private: [u8; 0],
}

impl Handle for rktls_accepted {
    type Rust = Accepted;
    type Ownership = Boxed;
    fn panicked(a: &Accepted) -> Option<&std::sync::atomic::AtomicBool> {
        Some(&a.panicked)
    }
}

fn give_alert(out_alert: *mut *mut rktls_alert, a: Alert) {
    if let Some(o) = unsafe { out_alert.as_mut() } {
        *o = box_into_ptr::<rktls_alert>(a);
    }
}

/// Make a new acceptor in `*out_acceptor` (buffer mode until
/// `rktls_acceptor_set_fd()`). The caller owns it.
#[no_mangle]
pub extern "C" fn rktls_acceptor_new(out_acceptor: *mut *mut rktls_acceptor) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_acceptor, "out_acceptor")? };
        *o = box_into_ptr::<rktls_acceptor>(Acceptor::new());
        Ok(RKTLS_OK)
    })
}

/// Free an acceptor. NULL is a no-op. Does not close its fd.
#[no_mangle]
pub extern "C" fn rktls_acceptor_free(acceptor: *mut rktls_acceptor) {
    guard(|| {
        drop(unsafe { box_take(acceptor) });
        Ok(RKTLS_OK)
    });
}

/// Let the acceptor read the ClientHello from `fd` itself (blocking or
/// non-blocking) and write the alert itself on failure. The fd stays the
/// caller's. Must be called before any I/O. The connection made from the
/// accepted ClientHello uses the same fd.
#[no_mangle]
pub extern "C" fn rktls_acceptor_set_fd(acceptor: *mut rktls_acceptor, fd: i32) -> rktls_result {
    guard(|| {
        unsafe { box_mut(acceptor, "acceptor")? }.set_fd(fd)?;
        Ok(RKTLS_OK)
    })
}

/// Buffer mode: give the acceptor `len` bytes received from the client;
/// `*consumed` receives how many it kept (it holds at most about 72 KiB).
/// Every byte kept is replayed into the connection, so feed exactly what
/// you received, in order.
#[no_mangle]
pub extern "C" fn rktls_acceptor_feed(
    acceptor: *mut rktls_acceptor,
    buf: *const u8,
    len: usize,
    consumed: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { out(consumed, "consumed")? };
        *c = 0;
        let a = unsafe { box_mut(acceptor, "acceptor")? };
        *c = a.feed(unsafe { slice(buf, len, "buf")? })?;
        Ok(RKTLS_OK)
    })
}

/// Try to accept a ClientHello.
///
/// Returns `RKTLS_OK` with a new accepted handle in `*out_accepted` (the
/// caller owns it), `RKTLS_WANT_READ` (feed more bytes, or wait for the fd),
/// `RKTLS_WANT_WRITE` (fd mode: the alert is being written; call again when
/// writable), or an error. On an error, and only then, `*out_alert` (if
/// `out_alert` is not NULL) receives an alert object the caller owns:
/// after a failed accept, send the alert, then close. In fd mode rktls has already written it.
/// `rktls_alert_present()` is false when no alert is owed (e.g. the client
/// closed first). Calling again after success gives
/// `RKTLS_ERR_ALREADY_ACCEPTED`, after a reported failure
/// `RKTLS_ERR_ALREADY_FAILED`.
#[no_mangle]
pub extern "C" fn rktls_acceptor_accept(
    acceptor: *mut rktls_acceptor,
    out_accepted: *mut *mut rktls_accepted,
    out_alert: *mut *mut rktls_alert,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_accepted, "out_accepted")? };
        let a = unsafe { box_mut(acceptor, "acceptor")? };
        match a.accept() {
            Ok(Outcome::Want(r)) => Ok(r),
            Ok(Outcome::Accepted(acc)) => {
                *o = Box::into_raw(acc).cast();
                Ok(RKTLS_OK)
            }
            Err((e, alert)) => {
                give_alert(out_alert, alert);
                Err(e)
            }
        }
    })
}

/// Turn an accepted ClientHello into a server connection with the config
/// the caller chose, in `*out_conn` (the caller owns it).
///
/// The handshake continues exactly as on the direct path, in the acceptor's
/// I/O mode (same fd, or buffer mode). On failure (e.g. no protocol version
/// or cipher suite in common with `config`, or a ClientHello defect that
/// only the handshake detects, such as a key share of the wrong size: the
/// acceptor checks the hello's form, not every value) `*out_alert` (if not NULL)
/// receives the alert object, which the caller owns: send it, then close; in fd mode rktls has
/// already written it. The accepted handle is consumed by the first call
/// that gets past argument checks, success or failure: a second call gives
/// `RKTLS_ERR_HANDLE_CONSUMED`; a NULL config gives
/// `RKTLS_ERR_NULL_ARGUMENT` and consumes nothing. Free the handle
/// afterwards in every case.
#[no_mangle]
pub extern "C" fn rktls_accepted_into_connection(
    accepted: *mut rktls_accepted,
    config: *const rktls_server_config,
    out_conn: *mut *mut rktls_connection,
    out_alert: *mut *mut rktls_alert,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_conn, "out_conn")? };
        let acc = unsafe { box_mut(accepted, "accepted")? };
        let cfg = match unsafe { arc_clone(config, "config") } {
            Ok(c) => c,
            Err(e) => {
                give_alert(out_alert, Alert::none());
                return Err(e);
            }
        };
        match acc.make_connection(cfg.rustls.clone()) {
            Ok(mut c) => {
                c.set_ktls_mode(cfg.ktls, cfg.offload);
                *o = box_into_ptr::<rktls_connection>(c);
                Ok(RKTLS_OK)
            }
            Err((e, alert)) => {
                give_alert(out_alert, alert);
                Err(e)
            }
        }
    })
}

/// Free an accepted handle, consumed or not. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_accepted_free(accepted: *mut rktls_accepted) {
    guard(|| {
        drop(unsafe { box_take(accepted) });
        Ok(RKTLS_OK)
    });
}

/// Copy the SNI host name the client asked for into `buf`, NUL-terminated
/// (empty if none); `*out_len` receives its length.
/// `RKTLS_ERR_BUFFER_TOO_SMALL` sets `*out_len` to the length needed.
#[no_mangle]
pub extern "C" fn rktls_accepted_server_name(
    accepted: *const rktls_accepted,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(accepted, "accepted")? };
        unsafe {
            copy_str_out(
                a.hello.server_name.as_deref().unwrap_or(""),
                buf,
                len,
                out_len,
            )
        }
    })
}

fn give_slice<T>(v: &[T], items: *mut *const T, n: *mut usize) -> Result<rktls_result, Error> {
    let p = unsafe { out(items, "items")? };
    let l = unsafe { out(n, "n")? };
    *p = v.as_ptr();
    *l = v.len();
    Ok(RKTLS_OK)
}

/// The cipher suites the client offered (IANA ids, client order):
/// `*items` points into the accepted handle, valid until it is freed.
#[no_mangle]
pub extern "C" fn rktls_accepted_cipher_suites(
    accepted: *const rktls_accepted,
    items: *mut *const u16,
    n: *mut usize,
) -> rktls_result {
    guard(|| {
        give_slice(
            &unsafe { box_ref(accepted, "accepted")? }
                .hello
                .cipher_suites,
            items,
            n,
        )
    })
}

/// The signature schemes the client offered (IANA ids). As
/// `rktls_accepted_cipher_suites()`.
#[no_mangle]
pub extern "C" fn rktls_accepted_signature_schemes(
    accepted: *const rktls_accepted,
    items: *mut *const u16,
    n: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(accepted, "accepted")? };
        give_slice(&a.hello.signature_schemes, items, n)
    })
}

/// The named groups (key exchange) the client offered; empty if it sent no
/// supported_groups extension. As `rktls_accepted_cipher_suites()`.
#[no_mangle]
pub extern "C" fn rktls_accepted_named_groups(
    accepted: *const rktls_accepted,
    items: *mut *const u16,
    n: *mut usize,
) -> rktls_result {
    guard(|| {
        give_slice(
            &unsafe { box_ref(accepted, "accepted")? }.hello.named_groups,
            items,
            n,
        )
    })
}

/// The protocol versions the client offered (0x0304 TLS 1.3, 0x0303 TLS
/// 1.2, ...): its supported_versions extension, or its legacy version. As
/// `rktls_accepted_cipher_suites()`.
#[no_mangle]
pub extern "C" fn rktls_accepted_versions(
    accepted: *const rktls_accepted,
    items: *mut *const u16,
    n: *mut usize,
) -> rktls_result {
    guard(|| {
        give_slice(
            &unsafe { box_ref(accepted, "accepted")? }.hello.versions,
            items,
            n,
        )
    })
}

/// The server certificate types the client accepts (RFC 7250 values);
/// empty if it sent no such extension. As `rktls_accepted_cipher_suites()`.
#[no_mangle]
pub extern "C" fn rktls_accepted_server_cert_types(
    accepted: *const rktls_accepted,
    items: *mut *const u8,
    n: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(accepted, "accepted")? };
        give_slice(&a.hello.server_cert_types, items, n)
    })
}

/// The client certificate types the client can send; empty if it sent no
/// such extension. As `rktls_accepted_cipher_suites()`.
#[no_mangle]
pub extern "C" fn rktls_accepted_client_cert_types(
    accepted: *const rktls_accepted,
    items: *mut *const u8,
    n: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(accepted, "accepted")? };
        give_slice(&a.hello.client_cert_types, items, n)
    })
}

/// Number of ALPN protocols the client offered (0 if none, or NULL).
#[no_mangle]
pub extern "C" fn rktls_accepted_alpn_count(accepted: *const rktls_accepted) -> usize {
    guard_value(0, || {
        unsafe { box_ref(accepted, "accepted") }.map_or(0, |a| a.hello.alpn.len())
    })
}

/// ALPN protocol `index` the client offered: `*proto` points into the
/// accepted handle (not NUL-terminated), `*len` is its length.
/// `RKTLS_ERR_INVALID_ARGUMENT` if `index` is out of range.
#[no_mangle]
pub extern "C" fn rktls_accepted_alpn(
    accepted: *const rktls_accepted,
    index: usize,
    proto: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(accepted, "accepted")? };
        let p = a
            .hello
            .alpn
            .get(index)
            .ok_or_else(|| Error::invalid(format!("no ALPN protocol at index {index}")))?;
        give_slice(p, proto, len)
    })
}

/// Number of certificate authority names (certificate_authorities
/// extension) the client sent; 0 if none, or NULL.
#[no_mangle]
pub extern "C" fn rktls_accepted_ca_name_count(accepted: *const rktls_accepted) -> usize {
    guard_value(0, || {
        unsafe { box_ref(accepted, "accepted") }.map_or(0, |a| a.hello.ca_names.len())
    })
}

/// CA name `index` (a DER distinguished name): `*der` points into the
/// accepted handle. `RKTLS_ERR_INVALID_ARGUMENT` if out of range.
#[no_mangle]
pub extern "C" fn rktls_accepted_ca_name(
    accepted: *const rktls_accepted,
    index: usize,
    der: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(accepted, "accepted")? };
        let d = a
            .hello
            .ca_names
            .get(index)
            .ok_or_else(|| Error::invalid(format!("no CA name at index {index}")))?;
        give_slice(d, der, len)
    })
}
