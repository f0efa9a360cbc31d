//! The C boundary: handle ownership, panic catching, pointer checks.
//!
//! Every exported function is a plain `#[no_mangle] extern "C"` function
//! whose body calls [`guard`] (or [`guard_value`] for getters). The guard
//! catches panics and turns them into `RKTLS_ERR_PANIC`, and records the
//! message of any failure for `rktls_last_error_message()`.
//!
//! Ownership lives in the [`Handle`] trait: a handle is either a Box (`*mut`,
//! used by one thread at a time, freed by its `_free`) or an Arc (`*const`,
//! immutable and shareable, released by its `_free`).
//!
//! A panic can leave a Box handle's state half-changed (mid `split_off`,
//! rustls' state taken). Handles with such state have a "panicked" flag
//! ([`Handle::panicked`]): [`box_mut`]/[`box_ref`] note which object the
//! current call is on, the guard sets its flag when it catches a panic,
//! and every later call on it returns `RKTLS_ERR_PANIC` (getters their
//! default); its `_free` still frees it.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::result::{rktls_result, Error};

/// Marker: the handle is a `Box<Rust>` behind a `*mut C`.
pub(crate) struct Boxed;
/// Marker: the handle is an `Arc<Rust>` behind a `*const C`.
pub(crate) struct Shared;

/// Ties an opaque C type to the Rust value behind it and to its ownership.
pub(crate) trait Handle {
    type Rust;
    type Ownership;
    /// The object's flag for "a panic was caught in a call on it", if a
    /// panic can leave its state half-changed.
    fn panicked(_v: &Self::Rust) -> Option<&AtomicBool> {
        None
    }
}

thread_local! {
    /// The panicked flag of the object the current call works on.
    static IN_CALL: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Refuse an object a panic left failed; otherwise note it as the object of
/// the current call.
fn enter<C: Handle>(v: &C::Rust) -> Result<(), Error> {
    if let Some(flag) = C::panicked(v) {
        if flag.load(Ordering::Relaxed) {
            return Err(Error::new(
                rktls_result::RKTLS_ERR_PANIC,
                "an earlier call on this object panicked: it is failed; only its _free is valid",
            ));
        }
        IN_CALL.with(|c| c.set(flag));
    }
    Ok(())
}

/// Run `f` under `catch_unwind`; a panic marks the object the call was on
/// as failed.
fn catch<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let outer = IN_CALL.with(|c| c.replace(std::ptr::null()));
    let r = catch_unwind(AssertUnwindSafe(f));
    let flag = IN_CALL.with(|c| c.replace(outer));
    if r.is_err() && !flag.is_null() {
        // The flag is in a live object: a call never frees the object it
        // borrowed through `box_mut`/`box_ref` (only `_free` takes it, with
        // `box_take`, which registers nothing).
        unsafe { (*flag).store(true, Ordering::Relaxed) };
    }
    r
}

pub(crate) fn box_into_ptr<C: Handle<Ownership = Boxed>>(v: C::Rust) -> *mut C {
    Box::into_raw(Box::new(v)).cast()
}

/// Borrow the value behind a Box handle.
///
/// # Safety
/// `p` is NULL or came from [`box_into_ptr`] for the same `C` and is live.
pub(crate) unsafe fn box_mut<'a, C: Handle<Ownership = Boxed>>(
    p: *mut C,
    what: &str,
) -> Result<&'a mut C::Rust, Error> {
    let v = p
        .cast::<C::Rust>()
        .as_mut()
        .ok_or_else(|| Error::null(what))?;
    enter::<C>(v)?;
    Ok(v)
}

/// Borrow the value behind a Box handle, shared.
///
/// # Safety
/// As [`box_mut`].
pub(crate) unsafe fn box_ref<'a, C: Handle<Ownership = Boxed>>(
    p: *const C,
    what: &str,
) -> Result<&'a C::Rust, Error> {
    let v = p
        .cast::<C::Rust>()
        .as_ref()
        .ok_or_else(|| Error::null(what))?;
    enter::<C>(v)?;
    Ok(v)
}

/// Take back ownership of a Box handle (for `_free` and consuming calls).
///
/// # Safety
/// As [`box_mut`]; the pointer must not be used afterwards.
pub(crate) unsafe fn box_take<C: Handle<Ownership = Boxed>>(p: *mut C) -> Option<Box<C::Rust>> {
    if p.is_null() {
        None
    } else {
        Some(Box::from_raw(p.cast::<C::Rust>()))
    }
}

pub(crate) fn arc_into_ptr<C: Handle<Ownership = Shared>>(v: Arc<C::Rust>) -> *const C {
    Arc::into_raw(v).cast()
}

/// Get a new strong reference to the value behind an Arc handle.
///
/// # Safety
/// `p` is NULL or came from [`arc_into_ptr`] for the same `C` and is live.
pub(crate) unsafe fn arc_clone<C: Handle<Ownership = Shared>>(
    p: *const C,
    what: &str,
) -> Result<Arc<C::Rust>, Error> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    let p = p.cast::<C::Rust>();
    Arc::increment_strong_count(p);
    Ok(Arc::from_raw(p))
}

/// Release one reference of an Arc handle.
///
/// # Safety
/// As [`arc_clone`]; the caller's pointer must not be used afterwards.
pub(crate) unsafe fn arc_free<C: Handle<Ownership = Shared>>(p: *const C) {
    if !p.is_null() {
        drop(Arc::from_raw(p.cast::<C::Rust>()));
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(msg: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(msg);
    });
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run the body of an exported function: panics become `RKTLS_ERR_PANIC`
/// (and mark the object of the call failed), errors become their code, and
/// the message is kept for `rktls_last_error_message()`.
pub(crate) fn guard<F: FnOnce() -> Result<rktls_result, Error>>(f: F) -> rktls_result {
    match catch(f) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.code
        }
        Err(p) => {
            let msg = format!("panic: {}", panic_message(&*p));
            log::error!("{msg}");
            set_last_error(&msg);
            rktls_result::RKTLS_ERR_PANIC
        }
    }
}

/// As [`guard`] for calls that return a plain value; `default` on panic.
pub(crate) fn guard_value<T, F: FnOnce() -> T>(default: T, f: F) -> T {
    catch(f).unwrap_or_else(|p| {
        let msg = format!("panic: {}", panic_message(&*p));
        log::error!("{msg}");
        set_last_error(&msg);
        default
    })
}

/// Check an out-pointer.
///
/// # Safety
/// `p` is NULL or valid for writes of a `T`.
pub(crate) unsafe fn out<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Error> {
    p.as_mut().ok_or_else(|| Error::null(what))
}

/// A byte slice from C; NULL is allowed only with length 0.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub(crate) unsafe fn slice<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Error> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::null(what));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// A typed slice from C; NULL is allowed only with length 0.
///
/// # Safety
/// `p` is valid for reads of `len` items.
pub(crate) unsafe fn slice_of<'a, T>(
    p: *const T,
    len: usize,
    what: &str,
) -> Result<&'a [T], Error> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::null(what));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// A mutable byte slice from C; NULL is allowed only with length 0.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
pub(crate) unsafe fn slice_mut<'a>(
    p: *mut u8,
    len: usize,
    what: &str,
) -> Result<&'a mut [u8], Error> {
    if p.is_null() {
        if len == 0 {
            return Ok(&mut []);
        }
        return Err(Error::null(what));
    }
    Ok(std::slice::from_raw_parts_mut(p, len))
}

/// A NUL-terminated UTF-8 string from C.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn cstr<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Copy `src` to a caller buffer as a NUL-terminated string. `*out_len`
/// receives the length without the NUL; if the buffer is too small it
/// receives the length needed (without the NUL) and nothing is written.
///
/// # Safety
/// `buf` valid for `len` bytes, `out_len` NULL or valid.
pub(crate) unsafe fn copy_str_out(
    src: &str,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Result<rktls_result, Error> {
    let out_len = out(out_len, "out_len")?;
    *out_len = src.len();
    if len < src.len() + 1 {
        return Err(Error::new(
            rktls_result::RKTLS_ERR_BUFFER_TOO_SMALL,
            format!(
                "buffer of {len} bytes too small for {} bytes",
                src.len() + 1
            ),
        ));
    }
    let dst = slice_mut(buf.cast(), len, "buf")?;
    dst[..src.len()].copy_from_slice(src.as_bytes());
    dst[src.len()] = 0;
    Ok(rktls_result::RKTLS_OK)
}

/// Copy the message of the last failed rktls call made on this thread into
/// `buf` as a NUL-terminated string, and its length (without the NUL) into
/// `*out_len`.
///
/// The message names the problem (for example the file that could not be
/// read). It is kept per thread until the next failing call on that thread.
/// Returns `RKTLS_ERR_BUFFER_TOO_SMALL` (with the needed length in
/// `*out_len`) if `buf` is too small. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> rktls_result {
    guard(|| {
        let msg = LAST_ERROR.with(|e| e.borrow().clone());
        unsafe { copy_str_out(&msg, buf, len, out_len) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_catches_panics_and_records_message() {
        let r = guard(|| panic!("boom"));
        assert_eq!(r, rktls_result::RKTLS_ERR_PANIC);
        let mut buf = [0 as c_char; 64];
        let mut n = 0usize;
        assert_eq!(
            rktls_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n),
            rktls_result::RKTLS_OK
        );
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
        assert_eq!(s, "panic: boom");
        assert_eq!(n, s.len());
        assert_eq!(guard_value(7, || panic!("x")), 7);
    }

    #[test]
    fn copy_out_reports_needed_size() {
        set_last_error("a longer message");
        let mut buf = [0 as c_char; 4];
        let mut n = 0usize;
        let r = rktls_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n);
        assert_eq!(r, rktls_result::RKTLS_ERR_BUFFER_TOO_SMALL);
        assert_eq!(n, "a longer message".len());
        assert_eq!(
            rktls_last_error_message(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut()),
            rktls_result::RKTLS_ERR_NULL_ARGUMENT
        );
    }
}
