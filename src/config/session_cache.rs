//! A server session cache kept by the host through two callbacks, for an
//! external store shared by processes and machines (Redis, memcached, ...):
//! TLS 1.2 session IDs and TLS 1.3 stateful tickets.
//!
//! The host stores opaque values; rktls frames each one as
//! `"RKS1" | SHA-256(key | session) | session`, so that a value that comes
//! back truncated, corrupted or under another key (a buggy store) is taken
//! for a miss: a full handshake, never the resumption of a wrong session.
//! Every failure is logged at warn level and costs only the resumption.

use std::ffi::{c_int, c_void};
use std::fmt;

use rustls::server::StoresServerSessions;

use crate::crypto::primitives::digest;

/// Largest session value rktls stores (with its framing); bigger ones
/// (large client certificate chains) are not cached. Also the size of the
/// buffer the get callback fills.
pub const RKTLS_SESSION_VALUE_MAX: usize = 16384;

/// Longest key the callbacks see. rustls's own session ids are 32 bytes; a
/// TLS 1.3 ticket a client presents can be longer (the client chooses it),
/// and is a miss without calling the store.
pub const RKTLS_SESSION_KEY_MAX: usize = 64;

const MAGIC: &[u8; 4] = b"RKS1";
const SUM_LEN: usize = 32;

/// Look up a session. `key` (`key_len` bytes, 1 to `RKTLS_SESSION_KEY_MAX`;
/// for TLS 1.3 chosen by the client, so treat it as untrusted) is valid only
/// during the call. On a hit, copy the value stored under `key` into `buf`
/// (`buf_len` bytes, `RKTLS_SESSION_VALUE_MAX`; valid only during the
/// call), set `*out_len` to its length and return 1. Return 0 for a miss
/// and a negative value for an error (the store is down, a timeout). With
/// `remove` true (TLS 1.3 tickets, single use), also delete the entry.
/// Called from the thread driving a handshake, concurrently from several
/// threads: it must be thread-safe and should answer within milliseconds
/// (a slow store delays that handshake; use a short timeout and fail).
pub type rktls_session_get_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        key: *const u8,
        key_len: usize,
        remove: bool,
        buf: *mut u8,
        buf_len: usize,
        out_len: *mut usize,
    ) -> c_int,
>;

/// Store `value` (`value_len` bytes, at most `RKTLS_SESSION_VALUE_MAX`)
/// under `key` (`key_len` bytes, at most `RKTLS_SESSION_KEY_MAX`). Both are
/// valid only during the call: copy
/// them. Return 0 when stored, anything else for a failure (then no
/// resumption is offered for this session). Same threading and timing
/// rules as `rktls_session_get_cb`; pick the entry's expiry yourself (e.g.
/// the ticket lifetime).
pub type rktls_session_put_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> c_int,
>;

type GetFn =
    unsafe extern "C" fn(*mut c_void, *const u8, usize, bool, *mut u8, usize, *mut usize) -> c_int;
type PutFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> c_int;

/// The callbacks and the host's pointer, as rustls' session storage.
pub(crate) struct CallbackCache {
    get: GetFn,
    put: PutFn,
    userdata: *mut c_void,
}

// The host promises thread-safe callbacks and a userdata valid for the
// lifetime of every config using them (documented on the C setter).
unsafe impl Send for CallbackCache {}
unsafe impl Sync for CallbackCache {}

impl fmt::Debug for CallbackCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackCache")
    }
}

fn checksum(key: &[u8], session: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key);
    ctx.update(session);
    ctx.finish()
}

/// Frame a session for the store.
pub(crate) fn seal(key: &[u8], session: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(MAGIC.len() + SUM_LEN + session.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(checksum(key, session).as_ref());
    v.extend_from_slice(session);
    v
}

/// The session in a framed value, if it is intact and belongs to `key`.
pub(crate) fn open(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    let rest = value.strip_prefix(MAGIC)?;
    if rest.len() < SUM_LEN {
        return None;
    }
    let (sum, session) = rest.split_at(SUM_LEN);
    (checksum(key, session).as_ref() == sum).then(|| session.to_vec())
}

impl CallbackCache {
    pub(crate) fn new(get: GetFn, put: PutFn, userdata: *mut c_void) -> Self {
        CallbackCache { get, put, userdata }
    }

    fn lookup(&self, key: &[u8], remove: bool) -> Option<Vec<u8>> {
        if key.is_empty() || key.len() > RKTLS_SESSION_KEY_MAX {
            return None;
        }
        let mut buf = vec![0u8; RKTLS_SESSION_VALUE_MAX];
        let mut n = usize::MAX;
        let rc = unsafe {
            (self.get)(
                self.userdata,
                key.as_ptr(),
                key.len(),
                remove,
                buf.as_mut_ptr(),
                buf.len(),
                &mut n,
            )
        };
        match rc {
            1 if n <= buf.len() => match open(key, &buf[..n]) {
                Some(s) => Some(s),
                None => {
                    log::warn!(
                        "session cache: the get callback returned a value that is not this \
                         session's ({n} bytes); full handshake"
                    );
                    None
                }
            },
            1 => {
                log::warn!(
                    "session cache: the get callback reported {n} bytes, more than the \
                     {RKTLS_SESSION_VALUE_MAX}-byte buffer; full handshake"
                );
                None
            }
            0 => None,
            rc => {
                log::warn!("session cache: the get callback failed ({rc}); full handshake");
                None
            }
        }
    }
}

impl StoresServerSessions for CallbackCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let framed = seal(&key, &value);
        if key.is_empty() || key.len() > RKTLS_SESSION_KEY_MAX {
            return false;
        }
        if framed.len() > RKTLS_SESSION_VALUE_MAX {
            log::debug!(
                "session cache: a {}-byte session is too large to store",
                value.len()
            );
            return false;
        }
        let rc = unsafe {
            (self.put)(
                self.userdata,
                key.as_ptr(),
                key.len(),
                framed.as_ptr(),
                framed.len(),
            )
        };
        if rc != 0 {
            log::warn!("session cache: the put callback failed ({rc}); session not resumable");
        }
        rc == 0
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lookup(key, false)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lookup(key, true)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[test]
    fn framing_detects_corruption_and_wrong_keys() {
        let v = seal(b"k1", b"session");
        assert_eq!(open(b"k1", &v).unwrap(), b"session");
        assert!(open(b"k2", &v).is_none());
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 1;
            assert!(open(b"k1", &bad).is_none(), "flip at {i}");
        }
        for n in 0..v.len() {
            assert!(open(b"k1", &v[..n]).is_none(), "truncated to {n}");
        }
    }

    /// What the test store does on the next get.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Honest,
        Fail,
        Garbage,
        Oversize,
        OtherKey,
    }

    struct Store {
        map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
        mode: Mutex<Mode>,
    }

    unsafe extern "C" fn get(
        ud: *mut c_void,
        key: *const u8,
        key_len: usize,
        remove: bool,
        buf: *mut u8,
        buf_len: usize,
        out_len: *mut usize,
    ) -> c_int {
        let s = &*(ud as *const Store);
        let key = std::slice::from_raw_parts(key, key_len);
        let buf = std::slice::from_raw_parts_mut(buf, buf_len);
        let mut map = s.map.lock().unwrap();
        let v = match *s.mode.lock().unwrap() {
            Mode::Fail => return -1,
            Mode::Garbage => vec![0x5a; 77],
            Mode::Oversize => {
                *out_len = buf_len + 1;
                return 1;
            }
            Mode::OtherKey => match map.iter().find(|(k, _)| k.as_slice() != key) {
                Some((_, v)) => v.clone(),
                None => return 0,
            },
            Mode::Honest => match if remove {
                map.remove(key)
            } else {
                map.get(key).cloned()
            } {
                Some(v) => v,
                None => return 0,
            },
        };
        buf[..v.len()].copy_from_slice(&v);
        *out_len = v.len();
        1
    }

    unsafe extern "C" fn put(
        ud: *mut c_void,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> c_int {
        let s = &*(ud as *const Store);
        s.map.lock().unwrap().insert(
            std::slice::from_raw_parts(key, key_len).to_vec(),
            std::slice::from_raw_parts(value, value_len).to_vec(),
        );
        0
    }

    #[test]
    fn callbacks_store_and_misbehaving_stores_are_misses() {
        let store = Box::new(Store {
            map: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::Honest),
        });
        let c = CallbackCache::new(get, put, &*store as *const Store as *mut c_void);
        assert!(c.put(b"a".to_vec(), b"A".to_vec()));
        assert!(c.put(b"b".to_vec(), b"B".to_vec()));
        assert_eq!(c.get(b"a").unwrap(), b"A");
        assert!(c.get(b"zz").is_none());
        for m in [Mode::Fail, Mode::Garbage, Mode::Oversize, Mode::OtherKey] {
            *store.mode.lock().unwrap() = m;
            assert!(c.get(b"a").is_none());
        }
        *store.mode.lock().unwrap() = Mode::Honest;
        assert_eq!(c.take(b"a").unwrap(), b"A");
        assert!(c.take(b"a").is_none(), "take removes");
        assert!(!c.put(b"big".to_vec(), vec![0; RKTLS_SESSION_VALUE_MAX]));
        // Keys longer than RKTLS_SESSION_KEY_MAX never reach the store.
        let long = vec![b'k'; RKTLS_SESSION_KEY_MAX + 1];
        assert!(!c.put(long.clone(), b"L".to_vec()));
        store
            .map
            .lock()
            .unwrap()
            .insert(long.clone(), seal(&long, b"L"));
        assert!(c.get(&long).is_none());
        assert!(c.take(&long).is_none());
        assert!(
            store.map.lock().unwrap().contains_key(&long),
            "not removed: not asked"
        );
    }
}
