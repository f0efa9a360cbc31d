//! The host's logging callback. Nothing is printed unless one is installed.
//!
//! rktls and rustls both log through the `log` crate; one process-wide logger
//! forwards records at or above the chosen level to the C callback.

use std::ffi::{c_char, c_void};
use std::sync::RwLock;

use crate::ffi::guard;
use crate::result::rktls_result;

/// Log levels, most severe first.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum rktls_log_level {
    /// Failures.
    RKTLS_LOG_ERROR = 1,
    /// Problems rktls handled (e.g. a kTLS fallback, a refused renegotiation).
    RKTLS_LOG_WARN = 2,
    /// Notable events (e.g. kernel capabilities probed).
    RKTLS_LOG_INFO = 3,
    /// Per-connection details.
    RKTLS_LOG_DEBUG = 4,
    /// Everything, including rustls' internals.
    RKTLS_LOG_TRACE = 5,
}

/// A logging callback. `message` is NUL-terminated, `len` bytes long without
/// the NUL, and valid only during the call. It may be called from any thread
/// that uses rktls, concurrently: it must be thread-safe.
pub type rktls_log_callback = Option<
    unsafe extern "C" fn(userdata: *mut c_void, level: u32, message: *const c_char, len: usize),
>;

#[derive(Clone, Copy)]
struct Sink {
    cb: unsafe extern "C" fn(*mut c_void, u32, *const c_char, usize),
    userdata: usize,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    /// This thread is running the host's callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct Forwarder;

static FORWARDER: Forwarder = Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // Copy the sink out and release the lock before calling out: the
        // callback may itself call `rktls_set_log_callback` (which takes the
        // write lock) or log through rktls again.
        let Some(sink) = *SINK.read().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        // A record logged while this thread is already inside the callback
        // (the callback called back into rktls) is dropped, not recursed into.
        if IN_CALLBACK.with(|c| c.replace(true)) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => rktls_log_level::RKTLS_LOG_ERROR,
            log::Level::Warn => rktls_log_level::RKTLS_LOG_WARN,
            log::Level::Info => rktls_log_level::RKTLS_LOG_INFO,
            log::Level::Debug => rktls_log_level::RKTLS_LOG_DEBUG,
            log::Level::Trace => rktls_log_level::RKTLS_LOG_TRACE,
        };
        let mut msg = format!("{}: {}", record.target(), record.args());
        msg.retain(|c| c != '\0');
        let len = msg.len();
        msg.push('\0');
        // SAFETY: the host promised a valid, thread-safe callback.
        unsafe {
            (sink.cb)(
                sink.userdata as *mut c_void,
                level as u32,
                msg.as_ptr().cast(),
                len,
            )
        };
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn flush(&self) {}
}

fn level_filter(level: u32) -> Option<log::LevelFilter> {
    Some(match level {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        5 => log::LevelFilter::Trace,
        _ => return None,
    })
}

/// Install (or, with a NULL `cb`, remove) the process-wide logging callback.
///
/// Messages at `max_level` (an `rktls_log_level` value, or 0 for none) and
/// more severe are passed to `cb` with `userdata`. rustls' own log messages
/// are included. Nothing is logged before a callback is installed. `cb` may
/// be called concurrently from every thread that uses rktls. If the process
/// already has another `log` crate logger, rktls cannot install its own and
/// returns `RKTLS_ERR_WRONG_STATE`. Returns `RKTLS_ERR_INVALID_ARGUMENT` for
/// an unknown level. Thread-safe.
///
/// Re-entry is safe: the callback may call this function (to change or
/// remove itself) and any other rktls function. Messages that rktls would
/// log while the callback is running on the same thread are dropped rather
/// than passed to the callback recursively. After this function returns,
/// calls of the previous callback already under way on other threads may
/// still be finishing: keep the previous `userdata` valid until they have.
#[no_mangle]
pub extern "C" fn rktls_set_log_callback(
    cb: rktls_log_callback,
    userdata: *mut c_void,
    max_level: u32,
) -> rktls_result {
    guard(|| {
        let filter = level_filter(max_level).ok_or_else(|| {
            crate::result::Error::invalid(format!("unknown log level {max_level}"))
        })?;
        // Installing twice is fine: set_logger fails harmlessly if it is ours.
        let _ = log::set_logger(&FORWARDER);
        if !std::ptr::addr_eq(log::logger(), &FORWARDER) {
            return Err(crate::result::Error::state(
                "another logger is installed in this process",
            ));
        }
        let mut sink = SINK.write().unwrap_or_else(|e| e.into_inner());
        *sink = cb.map(|cb| Sink {
            cb,
            userdata: userdata as usize,
        });
        log::set_max_level(if sink.is_some() {
            filter
        } else {
            log::LevelFilter::Off
        });
        Ok(rktls_result::RKTLS_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());
    /// The callback is process-wide: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    unsafe extern "C" fn cb(ud: *mut c_void, level: u32, msg: *const c_char, len: usize) {
        assert_eq!(ud as usize, 42);
        let s = std::slice::from_raw_parts(msg.cast::<u8>(), len);
        assert_eq!(*msg.add(len), 0);
        SEEN.lock()
            .unwrap()
            .push((level, String::from_utf8_lossy(s).into_owned()));
    }

    #[test]
    fn callback_receives_messages_at_level() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            rktls_set_log_callback(Some(cb), 42 as *mut c_void, 9),
            rktls_result::RKTLS_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            rktls_set_log_callback(Some(cb), 42 as *mut c_void, 2),
            rktls_result::RKTLS_OK
        );
        log::warn!("hello-warn");
        log::info!("hidden-info");
        assert_eq!(
            rktls_set_log_callback(None, std::ptr::null_mut(), 5),
            rktls_result::RKTLS_OK
        );
        log::error!("after-removal");
        let seen = SEEN.lock().unwrap();
        assert!(seen
            .iter()
            .any(|(l, m)| *l == 2 && m.ends_with("hello-warn")));
        assert!(!seen.iter().any(|(_, m)| m.contains("hidden-info")));
        assert!(!seen.iter().any(|(_, m)| m.contains("after-removal")));
    }

    static REENTERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Logs again and removes itself: both re-enter rktls from the callback.
    unsafe extern "C" fn reentrant(_: *mut c_void, _: u32, msg: *const c_char, len: usize) {
        // Other tests log concurrently: react to this test's message only.
        let s = std::slice::from_raw_parts(msg.cast::<u8>(), len);
        if !s.ends_with(b"reentry-trigger") {
            return;
        }
        REENTERED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        log::warn!("logged from inside the callback");
        assert_eq!(
            rktls_set_log_callback(None, std::ptr::null_mut(), 0),
            rktls_result::RKTLS_OK
        );
    }

    #[test]
    fn callback_may_reenter_without_deadlock_or_recursion() {
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            rktls_set_log_callback(Some(reentrant), std::ptr::null_mut(), 5),
            rktls_result::RKTLS_OK
        );
        // A deadlock must fail the test, not hang it: log on another thread
        // and wait a bounded time.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            log::warn!("reentry-trigger");
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the callback's re-entry deadlocked");
        assert_eq!(REENTERED.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            SINK.read().unwrap().is_none(),
            "the callback removed itself"
        );
        log::warn!("reentry-trigger");
        assert_eq!(REENTERED.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
