//! The C API of alerts: names of alert descriptions, and the `rktls_alert`
//! object (the alert owed to a peer after a failed accept).

use std::ffi::c_char;

use super::{c_name, Alert};
use crate::ffi::{box_mut, box_ref, box_take, guard, guard_value, out, Boxed, Handle};
use crate::result::rktls_result::{self, RKTLS_ERR_IO, RKTLS_OK, RKTLS_WANT_WRITE};

/// Return the RFC name of an alert description ("protocol_version", ...),
/// or "unknown_alert". The string is static: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_alert_description_str(description: u8) -> *const c_char {
    guard_value(std::ptr::null(), || c_name(description).as_ptr())
}

/// The alert owed to a peer after a failed accept or conversion. Box handle:
/// one thread at a time; free with `rktls_alert_free()`.
pub struct rktls_alert {
    _private: [u8; 0],
}

impl Handle for rktls_alert {
    type Rust = Alert;
    type Ownership = Boxed;
}

/// Free an alert. NULL is a no-op.
#[no_mangle]
pub extern "C" fn rktls_alert_free(alert: *mut rktls_alert) {
    guard(|| {
        drop(unsafe { box_take(alert) });
        Ok(RKTLS_OK)
    });
}

/// Whether there is an alert to send. false means the failure owes the
/// peer nothing (for example a caller error such as a NULL config, or a
/// client that closed first): just close the socket. false for NULL.
#[no_mangle]
pub extern "C" fn rktls_alert_present(alert: *const rktls_alert) -> bool {
    guard_value(false, || {
        unsafe { box_ref(alert, "alert") }.is_ok_and(|a| a.present())
    })
}

/// The alert's level: 2 fatal, 1 warning, 0 when there is none (or NULL).
#[no_mangle]
pub extern "C" fn rktls_alert_get_level(alert: *const rktls_alert) -> u8 {
    guard_value(0, || {
        unsafe { box_ref(alert, "alert") }.map_or(0, |a| a.level)
    })
}

/// The alert's description (see `rktls_alert_description`; name it with
/// `rktls_alert_description_str()`), 0 when there is none (or NULL).
#[no_mangle]
pub extern "C" fn rktls_alert_get_description(alert: *const rktls_alert) -> u8 {
    guard_value(0, || {
        unsafe { box_ref(alert, "alert") }.map_or(0, |a| a.description)
    })
}

/// The alert record's bytes, for callers that do their own I/O: `*bytes`
/// points into the alert (valid until it is freed), `*len` is its length
/// (0 when there is none). Send all of them, then close the connection.
#[no_mangle]
pub extern "C" fn rktls_alert_bytes(
    alert: *const rktls_alert,
    bytes: *mut *const u8,
    len: *mut usize,
) -> rktls_result {
    guard(|| {
        let a = unsafe { box_ref(alert, "alert")? };
        let b = unsafe { out(bytes, "bytes")? };
        let l = unsafe { out(len, "len")? };
        *b = a.bytes.as_ptr();
        *l = a.bytes.len();
        Ok(RKTLS_OK)
    })
}

/// How many of the alert's bytes rktls has not written yet (0 once it was
/// sent on the caller's fd, or when there is none). 0 for NULL.
#[no_mangle]
pub extern "C" fn rktls_alert_pending(alert: *const rktls_alert) -> usize {
    guard_value(0, || {
        unsafe { box_ref(alert, "alert") }.map_or(0, |a| a.pending())
    })
}

/// Write the rest of the alert to `fd`, handling short writes. Returns
/// `RKTLS_OK` once all of it has been written (at once if there is nothing
/// to write), `RKTLS_WANT_WRITE` if a non-blocking fd is full (call again
/// when writable), or `RKTLS_ERR_IO` (the peer is gone; just close). Does
/// not close the fd.
#[no_mangle]
pub extern "C" fn rktls_alert_write_fd(alert: *mut rktls_alert, fd: i32) -> rktls_result {
    guard(|| {
        let a = unsafe { box_mut(alert, "alert")? };
        match a.write_fd(fd) {
            Ok(true) => Ok(RKTLS_OK),
            Ok(false) => Ok(RKTLS_WANT_WRITE),
            Err(e) => Err(crate::result::Error::new(
                RKTLS_ERR_IO,
                format!("writing the alert failed: {e}"),
            )),
        }
    })
}
