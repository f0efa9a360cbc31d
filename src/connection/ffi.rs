//! The C API of a connection: every `rktls_connection_*` function (and the
//! two constructors), each a checked call into the Rust methods.

use std::ffi::c_char;

use super::events::rktls_events;
use super::{rktls_connection, Connection};
use crate::config::{rktls_client_config, rktls_server_config};
use crate::ffi::{
    arc_clone, box_into_ptr, box_mut, box_ref, box_take, copy_str_out, cstr, guard, guard_value,
    out, slice, slice_mut, slice_of,
};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

// ---------------------------------------------------------------------------
// C API.

/// Make a server connection from `config` in `*out_conn`.
///
/// The connection keeps its own reference to the config. It starts in buffer
/// mode; call `rktls_connection_set_fd()` before any I/O for fd mode. The
/// caller owns the connection and frees it with `rktls_connection_free()`.
#[no_mangle]
pub extern "C" fn rktls_server_connection_new(
    config: *const rktls_server_config,
    out_conn: *mut *mut rktls_connection,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_conn, "out_conn")? };
        let cfg = unsafe { arc_clone(config, "config")? };
        let mut c = Connection::server(cfg.rustls.clone())?;
        c.set_ktls_mode(cfg.ktls, cfg.offload);
        *o = box_into_ptr::<rktls_connection>(c);
        Ok(RKTLS_OK)
    })
}

/// Make a client connection to `server_name` (a DNS name or IP address,
/// used for SNI and certificate verification) in `*out_conn`.
///
/// As `rktls_server_connection_new()`. Errors: `RKTLS_ERR_CONFIG_SERVER_NAME`.
#[no_mangle]
pub extern "C" fn rktls_client_connection_new(
    config: *const rktls_client_config,
    server_name: *const c_char,
    out_conn: *mut *mut rktls_connection,
) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_conn, "out_conn")? };
        let cfg = unsafe { arc_clone(config, "config")? };
        let name = unsafe { cstr(server_name, "server_name")? };
        let mut c = Connection::client(cfg.rustls.clone(), name)?;
        c.set_ktls_mode(cfg.ktls, cfg.offload);
        c.reneg_fail_fast = cfg.reneg_fail_fast;
        *o = box_into_ptr::<rktls_connection>(c);
        Ok(RKTLS_OK)
    })
}

/// Free a connection. Does not close its fd and sends nothing: call
/// `rktls_connection_shutdown()` first for a clean close. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_connection_free(conn: *mut rktls_connection) {
    guard(|| {
        drop(unsafe { box_take(conn) });
        Ok(RKTLS_OK)
    });
}

/// Put the connection in fd mode: rktls reads and writes `fd` itself.
///
/// The fd stays owned by the caller (rktls never closes it) and may be
/// blocking or non-blocking; on a non-blocking fd calls return
/// `RKTLS_WANT_READ`/`RKTLS_WANT_WRITE` instead of blocking. Must be called
/// before any I/O (`RKTLS_ERR_WRONG_STATE` otherwise). Writes use
/// MSG_NOSIGNAL, so a reset peer gives `RKTLS_ERR_IO` (EPIPE), not SIGPIPE.
#[no_mangle]
pub extern "C" fn rktls_connection_set_fd(conn: *mut rktls_connection, fd: i32) -> rktls_result {
    guard(|| {
        unsafe { box_mut(conn, "conn")? }.set_fd(fd)?;
        Ok(RKTLS_OK)
    })
}

/// Drive the handshake. Returns `RKTLS_OK` once it is complete and all its
/// output has been sent (fd mode) or taken (buffer mode); otherwise
/// `RKTLS_WANT_READ`/`RKTLS_WANT_WRITE` (call again when ready) or an error.
/// One exception, fd mode without kTLS: when the client's first data came
/// with its Finished, a server's TLS 1.3 session tickets stay queued and
/// leave with its answer (the next write, sendfile, flush or shutdown) or
/// when a read waits for input; the client waits for nothing in them.
///
/// On a handshake failure the alert for the peer is sent (fd mode) or left
/// to take (buffer mode, the call returns `RKTLS_WANT_WRITE` until it is
/// taken) before the error is returned; `rktls_connection_alert_sent()`
/// then says which alert it was. With a kTLS mode, reads in fd mode never
/// go past the TLS record that completes the handshake (the kernel takes
/// over there); without one, a read takes whatever has arrived, and
/// records that came with the peer's last flight are processed after the
/// handshake: if they fail, the handshake still returns `RKTLS_OK` (once
/// their alert has left) and every later call, this one included,
/// returns the error. Calling it again after completion returns `RKTLS_OK`
/// while the connection has not failed.
#[no_mangle]
pub extern "C" fn rktls_connection_handshake(conn: *mut rktls_connection) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.handshake())
}

/// Read up to `len` plaintext bytes into `buf`; `*out_n` receives the count.
///
/// Completes the handshake first if needed. Returns `RKTLS_OK` with
/// `*out_n > 0`, or with `*out_n == 0` one of: `RKTLS_WANT_READ` /
/// `RKTLS_WANT_WRITE` (call again when ready; in buffer mode feed more bytes
/// or take output), `RKTLS_CLOSED` (the peer's close_notify: all its data
/// was delivered), `RKTLS_ERR_TRUNCATED` (end of file without close_notify),
/// `RKTLS_ERR_ALERT_RECEIVED`, `RKTLS_ERR_RENEGOTIATION` (a TLS 1.2 peer's
/// renegotiation was refused and ended the connection; the error message
/// says how and what to fix), or another error. Data decrypted before an
/// error is delivered before the error.
///
/// `RKTLS_WANT_WRITE` from a read means exactly one of:
/// - the handshake is not complete (read completes it) and its next flight
///   has not all left: fd mode, the socket's send buffer is full; buffer
///   mode, it waits in `rktls_connection_take_tls()`. The same while the
///   connection switches to kernel TLS, which waits until every queued
///   byte has left;
/// - the connection has failed (a fatal error, a refused renegotiation)
///   and the alert (and close_notify) owed to the peer has not all left;
///   the call after it has returns the error.
///
/// Then wait until the fd is writable (buffer mode: take the output) and
/// call `rktls_connection_read()` again. `rktls_connection_flush()` sends
/// the same bytes (and, after a failure, then returns the error), but does
/// not go on with the handshake: read again after it. Records answered
/// after the handshake never make a read return `RKTLS_WANT_WRITE`, while
/// it returns data or `RKTLS_WANT_READ` as usual: the answer to a peer's
/// KeyUpdate leaves before the next data written (in userspace) or is
/// queued and sent by later calls as the socket allows (offloaded; so is
/// the close_notify answering the peer's).
#[no_mangle]
pub extern "C" fn rktls_connection_read(
    conn: *mut rktls_connection,
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        let buf = unsafe { slice_mut(buf, len, "buf")? };
        let (r, n) = c.read(buf)?;
        *n_out = n;
        Ok(r)
    })
}

/// Encrypt up to `len` bytes of `buf`; `*out_n` receives how many were
/// accepted (at most 64 KiB per call: loop until all are accepted).
///
/// Completes the handshake first if needed. Accepted bytes are queued and,
/// in fd mode, sent as far as the socket allows (unless the connection is
/// corked: `rktls_connection_cork()`); the rest leaves with later calls or
/// `rktls_connection_flush()`. Returns `RKTLS_WANT_WRITE` with
/// `*out_n == 0` when 64 KiB or more is already queued (or the handshake's
/// flight has not all left, as for `rktls_connection_read()`).
///
/// `RKTLS_WANT_READ` (with `*out_n == 0`) comes only before the data can
/// be encrypted: the handshake is not complete and needs the peer's next
/// flight, or the switch to kernel TLS waits for the rest of a record the
/// peer has begun to send. Wait until the fd is readable (buffer mode:
/// feed the peer's bytes) and call write again (or read, which completes
/// the handshake too). After the handshake (and the switch) a write never
/// returns `RKTLS_WANT_READ`: it does not wait for the peer.
/// `rktls_connection_sendfile()` and `rktls_connection_refresh_keys()`
/// behave the same.
#[no_mangle]
pub extern "C" fn rktls_connection_write(
    conn: *mut rktls_connection,
    buf: *const u8,
    len: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        let data = unsafe { slice(buf, len, "buf")? };
        let (r, n) = c.write(data)?;
        *n_out = n;
        Ok(r)
    })
}

/// Send all queued TLS bytes (fd mode). Returns `RKTLS_OK` when nothing is
/// left queued, `RKTLS_WANT_WRITE` otherwise (in buffer mode: take them with
/// `rktls_connection_take_tls()`).
#[no_mangle]
pub extern "C" fn rktls_connection_flush(conn: *mut rktls_connection) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.flush())
}

/// Cork (`on` true) or uncork (`on` false) the connection's output, like
/// TCP_CORK: while corked, `rktls_connection_write()` and
/// `rktls_connection_sendfile()` (userspace record layer) encrypt and queue
/// their records without sending them, so a response's head, its body and
/// the close_notify of `rktls_connection_shutdown()` leave in one send.
/// Queued bytes are sent by the call that uncorks, by
/// `rktls_connection_flush()` and `rktls_connection_shutdown()` (close_notify
/// joins them), by `rktls_connection_read()` before it waits for the
/// peer, and by a write or sendfile once 64 KiB or more is queued
/// (`rktls_connection_handshake()` and `rktls_connection_refresh_keys()`
/// send their own records, corked or not). Uncorked (the default),
/// every call sends what it queued as far as the socket allows before it
/// returns.
///
/// A corked caller must not wait for the peer (poll for readability, a
/// blocking read of its own) with output still queued: flush, uncork or
/// call `rktls_connection_read()` first. `*out_n` of a write still counts
/// the bytes accepted: nothing accepted is lost, it is queued.
/// Once TX is in the kernel (kTLS), data goes to the kernel at each call
/// and corking has no effect; in buffer mode nothing is sent by rktls
/// anyway (`rktls_connection_take_tls()` takes what is queued, corked or
/// not).
///
/// Returns `RKTLS_OK` (corking, or uncorked with nothing left queued),
/// `RKTLS_WANT_WRITE` (uncorked with bytes still queued: fd mode, the
/// socket is full, flush when it is writable; buffer mode, take them), or,
/// when uncorking, a send error or the connection's sticky error as
/// `rktls_connection_flush()` does. `RKTLS_ERR_NULL_ARGUMENT` for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_cork(conn: *mut rktls_connection, on: bool) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.cork(on))
}

/// Send close_notify (once) and flush. Returns `RKTLS_OK` when it has been
/// sent (fd mode) or queued and taken (buffer mode), `RKTLS_WANT_WRITE`
/// otherwise. Writing afterwards is `RKTLS_ERR_WRONG_STATE`; reading still
/// works until the peer's close_notify. Does not close the fd.
#[no_mangle]
pub extern "C" fn rktls_connection_shutdown(conn: *mut rktls_connection) -> rktls_result {
    guard(|| unsafe { box_mut(conn, "conn")? }.shutdown())
}

/// Buffer mode: give rktls `len` TLS bytes received from the peer;
/// `*consumed` receives how many were taken. Processing happens in the
/// other calls (`read`, `handshake`, `write`, ...), not here.
///
/// Fewer than `len` are taken when rktls' input buffer (96 KiB, room for
/// any handshake message rustls accepts) is full. Then:
/// - `RKTLS_PLAINTEXT_FULL`: received plaintext waits in a full queue
///   (64 KiB) and rktls processes no more input until it is read: call
///   `rktls_connection_read()`, then feed the rest;
/// - `RKTLS_OK`: the buffered input is unprocessed: call
///   `rktls_connection_read()` or `_handshake()`, then feed the rest.
///   (Input that fills the buffer without completing a handshake message
///   fails the connection there, with a decode_error alert.)
///
/// `RKTLS_ERR_WRONG_STATE` in fd mode.
#[no_mangle]
pub extern "C" fn rktls_connection_feed_tls(
    conn: *mut rktls_connection,
    buf: *const u8,
    len: usize,
    consumed: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(consumed, "consumed")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        *n_out = c.feed(unsafe { slice(buf, len, "buf")? })?;
        Ok(if *n_out < len && c.plaintext_full() {
            RKTLS_PLAINTEXT_FULL
        } else {
            RKTLS_OK
        })
    })
}

/// Buffer mode: tell rktls the peer's transport reached end of file. Reads
/// then end with `RKTLS_CLOSED` if close_notify came first, otherwise with
/// `RKTLS_ERR_TRUNCATED`.
#[no_mangle]
pub extern "C" fn rktls_connection_feed_eof(conn: *mut rktls_connection) -> rktls_result {
    guard(|| {
        unsafe { box_mut(conn, "conn")? }.feed_eof()?;
        Ok(RKTLS_OK)
    })
}

/// Buffer mode: copy up to `len` queued TLS bytes to send into `buf`;
/// `*out_n` receives the count (0 when nothing is queued). The caller must
/// send them to the peer in order.
#[no_mangle]
pub extern "C" fn rktls_connection_take_tls(
    conn: *mut rktls_connection,
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let c = unsafe { box_mut(conn, "conn")? };
        *n_out = c.take(unsafe { slice_mut(buf, len, "buf")? })?;
        Ok(RKTLS_OK)
    })
}

/// Number of TLS bytes queued to send (buffer mode: to take). 0 for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_pending_tls(conn: *const rktls_connection) -> usize {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.pending_out())
    })
}

/// Whether the handshake is still in progress. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_is_handshaking(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.is_handshaking())
    })
}

/// The negotiated protocol version (0x0303 TLS 1.2, 0x0304 TLS 1.3), or 0
/// before it is known (and for NULL).
#[no_mangle]
pub extern "C" fn rktls_connection_protocol_version(conn: *const rktls_connection) -> u16 {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.protocol_version())
    })
}

/// The negotiated cipher suite's IANA id (e.g. 0x1301), or 0 before it is
/// known (and for NULL). `rktls_cipher_suite_name()` names it.
#[no_mangle]
pub extern "C" fn rktls_connection_cipher_suite(conn: *const rktls_connection) -> u16 {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.cipher_suite())
    })
}

/// The IANA name of a cipher suite id ("TLS_AES_128_GCM_SHA256"), or
/// "unknown" for an id rktls does not support. Static string: never free
/// it. Thread-safe. (A static lookup that cannot fail, so it needs no panic
/// guard.)
#[no_mangle]
pub extern "C" fn rktls_cipher_suite_name(id: u16) -> *const c_char {
    crate::suites::name(id).as_ptr()
}

/// The IANA id of a cipher suite rktls supports, by name, for
/// `rktls_*_config_builder_set_cipher_suites()`. `name` is a
/// NUL-terminated string, read during the call only (the caller keeps
/// ownership); ASCII case is ignored. Accepted: the IANA name
/// ("TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
/// OpenSSL names the TLS 1.3 suites this way too), rustls' name of a TLS 1.3
/// suite ("TLS13_AES_128_GCM_SHA256") and OpenSSL's name of a TLS 1.2 suite
/// ("ECDHE-ECDSA-AES128-GCM-SHA256"). `rktls_cipher_suite_name()` is the
/// reverse (IANA names only).
///
/// Returns RKTLS_OK and writes `*out_id`; RKTLS_ERR_INVALID_ARGUMENT for a
/// name that names no suite rktls supports (including OpenSSL's cipher
/// strings such as "HIGH" or "ALL") or that is not UTF-8;
/// RKTLS_ERR_NULL_ARGUMENT when `name` or `out_id` is NULL. `*out_id` is
/// written only on success. Thread-safe (a static table).
#[no_mangle]
pub extern "C" fn rktls_cipher_suite_from_name(
    name: *const c_char,
    out_id: *mut u16,
) -> rktls_result {
    guard(|| {
        let n = unsafe { cstr(name, "name")? };
        let o = unsafe { out(out_id, "out_id")? };
        let Some(id) = crate::suites::from_name(n) else {
            return Err(Error::new(
                RKTLS_ERR_INVALID_ARGUMENT,
                format!("unknown or unsupported cipher suite name {n:?}"),
            ));
        };
        *o = id;
        Ok(RKTLS_OK)
    })
}

/// The negotiated ALPN protocol: `*proto` points into the connection (not
/// NUL-terminated) and `*len` is its length. Both are NULL/0 until the
/// handshake is complete, and when none was negotiated.
///
/// Lifetime: from the handshake's completion the protocol is copied into
/// storage the connection owns and never changes, so `*proto` stays valid
/// and points to the same bytes until `rktls_connection_free()`, whatever
/// happens in between (errors, a refused renegotiation, the switch to
/// kernel TLS, the end of the connection); every call returns the same
/// pointer.
#[no_mangle]
pub extern "C" fn rktls_connection_alpn(
    conn: *const rktls_connection,
    proto: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        let p = unsafe { out(proto, "proto")? };
        let l = unsafe { out(len, "len")? };
        match c.alpn() {
            Some(a) => {
                *p = a.as_ptr();
                *l = a.len();
            }
            None => {
                *p = std::ptr::null();
                *l = 0;
            }
        }
        Ok(RKTLS_OK)
    })
}

/// Copy the SNI server name into `buf` (NUL-terminated; `*out_len` receives
/// its length). On a server it is the name the client asked for (empty if
/// none); on a client, the name it connects to. `RKTLS_ERR_BUFFER_TOO_SMALL`
/// sets `*out_len` to the length needed.
#[no_mangle]
pub extern "C" fn rktls_connection_server_name(
    conn: *const rktls_connection,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        unsafe { copy_str_out(c.server_name.as_deref().unwrap_or(""), buf, len, out_len) }
    })
}

/// Whether the handshake resumed an earlier session. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_is_resumed(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.is_resumed())
    })
}

/// Number of certificates the peer presented (end-entity first); 0 if none,
/// before the handshake is complete, or for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_peer_cert_count(conn: *const rktls_connection) -> usize {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }
            .ok()
            .and_then(|c| c.peer_certs())
            .map_or(0, <[_]>::len)
    })
}

/// The DER bytes of the peer's certificate `index` (0 is the end-entity):
/// `*der` points into the connection and `*len` is its length.
/// `RKTLS_ERR_INVALID_ARGUMENT` if `index` is out of range (always before the
/// handshake is complete).
///
/// Lifetime: as `rktls_connection_alpn()`: valid, pointing to the same
/// bytes, from the handshake's completion until `rktls_connection_free()`,
/// whatever happens to the connection in between.
#[no_mangle]
pub extern "C" fn rktls_connection_peer_cert(
    conn: *const rktls_connection,
    index: usize,
    der: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        let d = unsafe { out(der, "der")? };
        let l = unsafe { out(len, "len")? };
        let cert = c
            .peer_certs()
            .and_then(|cs| cs.get(index))
            .ok_or_else(|| Error::invalid(format!("no peer certificate at index {index}")))?;
        *d = cert.as_ref().as_ptr();
        *l = cert.as_ref().len();
        Ok(RKTLS_OK)
    })
}

/// If the peer sent a fatal alert, store its description (see
/// `rktls_alert_description`) in `*description` and return true.
#[no_mangle]
pub extern "C" fn rktls_connection_alert_received(
    conn: *const rktls_connection,
    description: *mut u8,
) -> bool {
    guard_value(false, || {
        let Ok(c) = (unsafe { box_ref(conn, "conn") }) else {
            return false;
        };
        match (c.alert_received(), unsafe { description.as_mut() }) {
            (Some(d), Some(o)) => {
                *o = d;
                true
            }
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// If rktls ended the connection with an alert, store its description in
/// `*description` and return true: the fatal alert it sent after a
/// handshake or protocol error, exactly as it went on the wire, or
/// no_renegotiation for a refused renegotiation (sent as a warning, then
/// close_notify). false when no alert was sent: none was owed, the socket
/// refused it, or our close_notify had already been sent (nothing follows
/// it, RFC 8446 §6.1). `description` may be NULL. false for NULL `conn`.
#[no_mangle]
pub extern "C" fn rktls_connection_alert_sent(
    conn: *const rktls_connection,
    description: *mut u8,
) -> bool {
    guard_value(false, || {
        let Ok(c) = (unsafe { box_ref(conn, "conn") }) else {
            return false;
        };
        match (c.alert_sent(), unsafe { description.as_mut() }) {
            (Some(d), Some(o)) => {
                *o = d;
                true
            }
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// errno of the last failed system call on this connection (after
/// `RKTLS_ERR_IO`), or 0.
#[no_mangle]
pub extern "C" fn rktls_connection_errno(conn: *const rktls_connection) -> i32 {
    guard_value(0, || {
        unsafe { box_ref(conn, "conn") }.map_or(0, |c| c.errno)
    })
}

/// Copy the message of the connection's fatal error (which names the alert
/// sent or received) into `buf`, NUL-terminated; empty if there is none.
/// As `rktls_last_error_message()` for the buffer rules.
#[no_mangle]
pub extern "C" fn rktls_connection_error_message(
    conn: *const rktls_connection,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_ref(conn, "conn")? };
        let msg = c.error.as_ref().map_or("", |e| e.msg.as_str());
        unsafe { copy_str_out(msg, buf, len, out_len) }
    })
}

/// Whether the connection's record layer is in the kernel (kTLS), for
/// sending and for receiving. Once it is, `write`, `sendfile` and `splice`
/// on the fd itself are safe (the kernel encrypts); reads must still go
/// through `rktls_connection_read()`, which handles the control records
/// (alerts, session tickets) the kernel hands over. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_ktls_tx(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.ktls_tx())
    })
}

/// Whether received records are decrypted by the kernel. See
/// `rktls_connection_ktls_tx()`. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_connection_ktls_rx(conn: *const rktls_connection) -> bool {
    guard_value(false, || {
        unsafe { box_ref(conn, "conn") }.is_ok_and(|c| c.ktls_rx())
    })
}

/// Send up to `count` bytes of the file `in_fd`, starting at `*offset`
/// (advanced by what was sent); `*out_n` receives the count (0 at end of
/// file). Fd mode only. With the record layer in the kernel this is
/// zero-copy `sendfile(2)`; otherwise rktls reads and encrypts the bytes
/// itself (at most 64 KiB a call). Completes the handshake first if
/// needed. Returns `RKTLS_WANT_WRITE` (nothing sent) when the socket is
/// full: call again when writable. Loop until all is sent. A reset peer
/// gives `RKTLS_ERR_IO`, not SIGPIPE: `sendfile(2)` cannot take
/// MSG_NOSIGNAL, so SIGPIPE is blocked on the calling thread for the call
/// and the one it raised is consumed (unless the thread already blocks
/// SIGPIPE; then its pending signals are left alone). With TX in the
/// kernel, `close(2)` of a socket whose peer reset can still raise SIGPIPE
/// (the kernel retries its unsent TLS records with sendfile's flags, seen
/// on Linux 6.12 and 7.3): servers using sendfile should ignore SIGPIPE or
/// close such sockets with it blocked.
#[no_mangle]
pub extern "C" fn rktls_connection_sendfile(
    conn: *mut rktls_connection,
    in_fd: i32,
    offset: *mut i64,
    count: usize,
    out_n: *mut usize,
) -> rktls_result {
    guard(|| {
        let n_out = unsafe { out(out_n, "out_n")? };
        *n_out = 0;
        let off = unsafe { out(offset, "offset")? };
        let c = unsafe { box_mut(conn, "conn")? };
        let (r, n) = c.sendfile(in_fd, off, count)?;
        *n_out = n;
        Ok(r)
    })
}

/// Process one record received on an offloaded socket (RX and TX in the
/// kernel), for callers that do their own `recvmsg`: `content_type` is the
/// TLS_GET_RECORD_TYPE value and `payload` the decrypted bytes.
///
/// `*out_events` receives the events in order (also when the result is an
/// error: a fatal error lists the alert to send); the caller owns them and
/// frees them with `rktls_events_free()`. Send every
/// `RKTLS_EVENT_SEND_CONTROL` record in order, then call
/// `rktls_connection_control_sent()`. Returns `RKTLS_OK`, or the error that
/// ended the connection (e.g. `RKTLS_ERR_ALERT_RECEIVED`,
/// `RKTLS_ERR_KTLS_NO_REKEY`). Application data counts towards the key
/// usage limit; data the caller sends itself does not.
#[no_mangle]
pub extern "C" fn rktls_connection_process_record(
    conn: *mut rktls_connection,
    content_type: u8,
    payload: *const u8,
    len: usize,
    out_events: *mut *mut rktls_events,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_mut(conn, "conn")? };
        let data = unsafe { slice_of(payload, len, "payload")? };
        let o = unsafe { out(out_events, "out_events")? };
        let (r, ev) = c.process_record(content_type, data);
        *o = box_into_ptr::<rktls_events>(ev);
        r
    })
}

/// Tell rktls the `RKTLS_EVENT_SEND_CONTROL` records were sent: it installs
/// TX keys announced by a KeyUpdate. Returns `RKTLS_OK`, or an error if the
/// kernel refused the keys.
#[no_mangle]
pub extern "C" fn rktls_connection_control_sent(conn: *mut rktls_connection) -> rktls_result {
    guard(|| {
        let c = unsafe { box_mut(conn, "conn")? };
        c.control_sent()
    })
}

/// Update our TLS 1.3 traffic keys now: send KeyUpdate (asking the peer to
/// update its keys too when `request_peer`), then switch to the new keys.
/// In userspace rustls always asks the peer. Returns `RKTLS_OK`,
/// `RKTLS_WANT_WRITE` (call again), `RKTLS_ERR_WRONG_STATE` (TLS 1.2, or
/// during the handshake) or `RKTLS_ERR_KTLS_NO_REKEY` (TX offloaded to a
/// kernel that cannot rekey). Not for use with the event style.
#[no_mangle]
pub extern "C" fn rktls_connection_refresh_keys(
    conn: *mut rktls_connection,
    request_peer: bool,
) -> rktls_result {
    guard(|| {
        let c = unsafe { box_mut(conn, "conn")? };
        c.refresh_keys(request_peer)
    })
}
