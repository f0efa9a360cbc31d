//! The C exports of the shared ticket-key object (`rktls_ticket_keys_*`)
//! and the argument checks of the ticket-key setters; the logic is in
//! `tickets.rs`.

use std::ffi::c_char;
use std::sync::Arc;

use super::tickets::TicketKeys;
use crate::ffi::{arc_free, arc_into_ptr, cstr, guard, out, slice, slice_of, Handle, Shared};
use crate::result::rktls_result::{self, *};
use crate::result::Error;

/// One ticket key's material: `len` (48 or 80) bytes at `data`, a 16-byte
/// key name then the secret (nginx's `ssl_session_ticket_key` layout).
/// Read during the call that receives it, then copied.
#[repr(C)]
pub struct rktls_ticket_key {
    /// The key's bytes.
    pub data: *const u8,
    /// Their number: 48 or 80.
    pub len: usize,
}

/// A set of session ticket keys shared by any number of server configs
/// (`rktls_server_config_builder_use_ticket_keys()`), whose keys can be
/// replaced while connections are served: the way to rotate keys without
/// rebuilding configs.
///
/// Call sequence: `rktls_ticket_keys_new()`, then
/// `rktls_ticket_keys_set()` or `rktls_ticket_keys_set_files()` (until then
/// no ticket is issued or accepted), `_use_ticket_keys()` on each builder;
/// later, from any thread, `_set()`/`_set_files()` again to rotate (put the
/// new key first and keep the previous one listed for one ticket lifetime);
/// `rktls_ticket_keys_free()` when the caller no longer needs its
/// reference (configs keep theirs). Arc handle: every function here is
/// thread-safe. Key material is wiped from memory when the last reference
/// to a key list goes (after a replacement, or at the last free).
pub struct rktls_ticket_keys {
    _private: [u8; 0],
}

impl Handle for rktls_ticket_keys {
    type Rust = TicketKeys;
    type Ownership = Shared;
}

/// The material of `n` `rktls_ticket_key`s, checked for NULL.
///
/// # Safety
/// `keys` is NULL or points to `n` entries whose `data` point to `len` bytes.
pub(crate) unsafe fn ticket_key_slices<'a>(
    keys: *const rktls_ticket_key,
    n: usize,
) -> Result<Vec<&'a [u8]>, Error> {
    let keys = slice_of(keys, n, "keys")?;
    keys.iter()
        .map(|k| slice(k.data, k.len, "keys[].data"))
        .collect()
}

/// `n` C strings, checked for NULL and UTF-8.
///
/// # Safety
/// `paths` is NULL or points to `n` pointers, each NULL or a C string.
pub(crate) unsafe fn path_list<'a>(
    paths: *const *const c_char,
    n: usize,
) -> Result<Vec<&'a str>, Error> {
    slice_of(paths, n, "paths")?
        .iter()
        .map(|&p| cstr(p, "paths[]"))
        .collect()
}

/// Make an empty ticket-key set in `*out_keys`. The caller owns one
/// reference and releases it with `rktls_ticket_keys_free()`.
#[no_mangle]
pub extern "C" fn rktls_ticket_keys_new(out_keys: *mut *const rktls_ticket_keys) -> rktls_result {
    guard(|| {
        let o = unsafe { out(out_keys, "out_keys")? };
        *o = arc_into_ptr::<rktls_ticket_keys>(Arc::new(TicketKeys::new()));
        Ok(RKTLS_OK)
    })
}

/// Replace the whole key list at once with `n` (at least 1) keys, as
/// `rktls_server_config_builder_set_ticket_keys()`: the first seals new
/// tickets, all open tickets sealed under them. Handshakes in progress use
/// either the old or the new list, never a mix. Thread-safe. Errors:
/// `RKTLS_ERR_INVALID_ARGUMENT` (n == 0, a length other than 48 or 80);
/// the list is then unchanged.
#[no_mangle]
pub extern "C" fn rktls_ticket_keys_set(
    keys: *const rktls_ticket_keys,
    list: *const rktls_ticket_key,
    n: usize,
) -> rktls_result {
    guard(|| {
        let k = unsafe { keys.cast::<TicketKeys>().as_ref() }.ok_or_else(|| Error::null("keys"))?;
        k.set(&unsafe { ticket_key_slices(list, n)? })?;
        Ok(RKTLS_OK)
    })
}

/// Replace the whole key list at once with the keys in `n` (at least 1)
/// nginx-format key files, as
/// `rktls_server_config_builder_set_ticket_keys_file()`: first file
/// seals. Thread-safe. Errors: `RKTLS_ERR_CONFIG_FILE`,
/// `RKTLS_ERR_INVALID_ARGUMENT`; the list is then unchanged.
#[no_mangle]
pub extern "C" fn rktls_ticket_keys_set_files(
    keys: *const rktls_ticket_keys,
    paths: *const *const c_char,
    n: usize,
) -> rktls_result {
    guard(|| {
        let k = unsafe { keys.cast::<TicketKeys>().as_ref() }.ok_or_else(|| Error::null("keys"))?;
        k.set_files(&unsafe { path_list(paths, n)? })?;
        Ok(RKTLS_OK)
    })
}

/// Release the caller's reference to a ticket-key set; configs using it
/// keep theirs. NULL is a no-op. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_ticket_keys_free(keys: *const rktls_ticket_keys) {
    guard(|| {
        unsafe { arc_free(keys) };
        Ok(RKTLS_OK)
    });
}
