//! Server and client configurations and their builders.
//!
//! A builder is a Box handle, used by one thread and consumed by its
//! `_build` call. Every setter validates its whole input before changing the
//! builder, so a failed call leaves the builder as it was. A built config is
//! an Arc handle: immutable and shareable by any number of threads and
//! connections; each connection keeps its own reference, so the caller may
//! free the config while connections made from it are still alive.
//!
//! Files: `common.rs` (PEM, ALPN, version, suite and kTLS option parsing
//! shared by both sides), `server.rs` and `client.rs` (the builders and what
//! they build), `server_ffi.rs` and `client_ffi.rs` (the C exports, which
//! call the same builder methods the Rust tests use). Resumption across
//! processes: `tickets.rs` (host-supplied ticket keys, rotation, the AEAD
//! ticket format) with its C object in `tickets_ffi.rs`, and
//! `session_cache.rs` (the host's session-store callbacks).

mod client;
mod client_ffi;
mod common;
mod server;
mod server_ffi;
mod session_cache;
mod tickets;
mod tickets_ffi;

pub use client_ffi::*;
pub(crate) use server::ServerConfigBuilder;
pub use server_ffi::*;
pub use session_cache::{
    rktls_session_get_cb, rktls_session_put_cb, RKTLS_SESSION_KEY_MAX, RKTLS_SESSION_VALUE_MAX,
};
pub use tickets_ffi::*;

#[cfg(test)]
pub(crate) use client::ClientConfigBuilder;
#[cfg(test)]
pub(crate) use common::{certified_key, parse_certs, parse_key};
#[cfg(test)]
pub(crate) use server::ServerConfig;

#[cfg(test)]
mod tests {
    use super::common::*;
    use super::*;
    use crate::crypto;
    use crate::result::rktls_result::*;
    use std::ffi::c_char;

    #[test]
    fn alpn_wire_format() {
        assert_eq!(
            parse_alpn_wire(b"\x02h2\x08http/1.1").unwrap(),
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(parse_alpn_wire(b"").unwrap().is_empty());
        for bad in [&b"h2"[..], b"\x00", b"\x05abc", b"\x02h2\x09http/1.1"] {
            assert_eq!(
                parse_alpn_wire(bad).unwrap_err().code,
                RKTLS_ERR_CONFIG_ALPN
            );
        }
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_versions(&[]).unwrap_err().code,
            RKTLS_ERR_CONFIG_VERSIONS
        );
        assert_eq!(
            parse_versions(&[0x0302]).unwrap_err().code,
            RKTLS_ERR_CONFIG_VERSIONS
        );
        assert_eq!(parse_versions(&[0x0304, 0x0304, 0x0303]).unwrap().len(), 2);
    }

    #[test]
    fn suites() {
        let mut p = crypto::provider();
        select_suites(&mut p, &[0x1303, 0x1301]).unwrap();
        let ids: Vec<u16> = p
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        assert_eq!(ids, vec![0x1303, 0x1301]);
        assert_eq!(
            select_suites(&mut crypto::provider(), &[0x0005])
                .unwrap_err()
                .code,
            RKTLS_ERR_CONFIG_CIPHER_SUITES
        );
        assert_eq!(
            select_suites(&mut crypto::provider(), &[])
                .unwrap_err()
                .code,
            RKTLS_ERR_CONFIG_CIPHER_SUITES
        );
    }

    #[test]
    fn suites_must_fit_versions() {
        let mut b = ServerConfigBuilder::new();
        let (c, k) = crate::testutil::pems();
        b.add_pem(c.as_bytes(), k.as_bytes()).unwrap();
        b.proto.set_versions(&[0x0304]).unwrap();
        b.proto.set_suites(&[0xc02b]).unwrap();
        assert_eq!(
            b.build().err().unwrap().code,
            RKTLS_ERR_CONFIG_CIPHER_SUITES
        );
    }

    #[test]
    fn pem_errors() {
        assert_eq!(parse_key(b"", "k").unwrap_err().code, RKTLS_ERR_CONFIG_PEM);
        assert_eq!(
            parse_certs(b"hello", "c").unwrap_err().code,
            RKTLS_ERR_CONFIG_PEM
        );
        let (cert, _) = crate::testutil::pems();
        // A certificate file given as the key: no key in it.
        let e = parse_key(cert.as_bytes(), "k").unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_CONFIG_PEM);
        assert!(e.msg.contains("no PRIVATE KEY"), "{}", e.msg);
    }

    #[test]
    fn key_mismatch_detected() {
        let (cert, _) = crate::testutil::pems();
        let (_, other_key) = crate::testutil::other_pems();
        let e = load_cert_key_pem(cert.as_bytes(), other_key.as_bytes(), &crypto::provider())
            .unwrap_err();
        assert_eq!(e.code, RKTLS_ERR_CONFIG_KEY_MISMATCH);
    }

    #[test]
    fn empty_builders_refuse_to_build() {
        assert_eq!(
            ServerConfigBuilder::new().build().err().unwrap().code,
            RKTLS_ERR_CONFIG_INCOMPLETE
        );
        assert_eq!(
            ClientConfigBuilder::new().build().err().unwrap().code,
            RKTLS_ERR_CONFIG_INCOMPLETE
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let mut b: *mut rktls_server_config_builder = std::ptr::null_mut();
        assert_eq!(rktls_server_config_builder_new(&mut b), RKTLS_OK);
        let r = rktls_server_config_builder_add_cert_key_files(
            b,
            c"/nonexistent/cert.pem".as_ptr(),
            c"/nonexistent/key.pem".as_ptr(),
        );
        assert_eq!(r, RKTLS_ERR_CONFIG_FILE);
        let mut buf = [0 as c_char; 256];
        let mut n = 0;
        crate::ffi::rktls_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n);
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("/nonexistent/cert.pem"), "{msg}");
        // Builder still usable and unchanged: building fails as incomplete.
        let mut cfg: *const rktls_server_config = std::ptr::null();
        assert_eq!(
            rktls_server_config_builder_build(b, &mut cfg),
            RKTLS_ERR_CONFIG_INCOMPLETE
        );
        assert!(cfg.is_null());
    }

    #[test]
    fn null_arguments() {
        assert_eq!(
            rktls_server_config_builder_new(std::ptr::null_mut()),
            RKTLS_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            rktls_server_config_builder_set_alpn(std::ptr::null_mut(), std::ptr::null(), 0),
            RKTLS_ERR_NULL_ARGUMENT
        );
        let mut cfg: *const rktls_client_config = std::ptr::null();
        assert_eq!(
            rktls_client_config_builder_build(std::ptr::null_mut(), &mut cfg),
            RKTLS_ERR_NULL_ARGUMENT
        );
        rktls_server_config_free(std::ptr::null());
        rktls_client_config_builder_free(std::ptr::null_mut());
    }
}

/// Resumption across configs that share ticket keys or a session store, as
/// across worker processes: real rustls handshakes in memory.
#[cfg(test)]
mod resumption_tests {
    use std::collections::HashMap;
    use std::ffi::{c_int, c_void};
    use std::sync::{Arc, Mutex};

    use rustls::HandshakeKind;

    use super::*;
    use crate::testutil::{client_config, pems, Opts};

    fn server(f: impl FnOnce(&mut ServerConfigBuilder)) -> Arc<rustls::ServerConfig> {
        let mut b = ServerConfigBuilder::new();
        let (c, k) = pems();
        b.add_pem(c.as_bytes(), k.as_bytes()).unwrap();
        f(&mut b);
        b.build().unwrap().rustls
    }

    /// One handshake (plus a little data so TLS 1.3 tickets arrive).
    fn handshake(
        client: &Arc<rustls::ClientConfig>,
        server: &Arc<rustls::ServerConfig>,
    ) -> HandshakeKind {
        let mut c =
            rustls::ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        use std::io::Write;
        s.writer().write_all(b"hi").unwrap();
        crate::testutil::pump(&mut *c, &mut *s, 20);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        s.handshake_kind().unwrap()
    }

    fn client(version: u16) -> Arc<rustls::ClientConfig> {
        client_config(&Opts {
            versions: Some(vec![version]),
            ..Opts::default()
        })
    }

    #[test]
    fn shared_ticket_keys_resume_across_configs() {
        for v in [0x0303, 0x0304] {
            let key = [7u8; 80];
            let a = server(|b| b.set_ticket_keys(&[&key]).unwrap());
            let b = server(|b| b.set_ticket_keys(&[&key]).unwrap());
            let c = client(v);
            assert_eq!(handshake(&c, &a), HandshakeKind::Full, "{v:x}");
            assert_eq!(handshake(&c, &b), HandshakeKind::Resumed, "{v:x}");
            // Default keys are per config: no resumption across configs.
            let own = server(|_| {});
            let c = client(v);
            assert_eq!(handshake(&c, &a), HandshakeKind::Full);
            assert_eq!(handshake(&c, &own), HandshakeKind::Full, "{v:x}");
        }
    }

    #[test]
    fn rotation_through_a_shared_key_object() {
        let keys = Arc::new(tickets::TicketKeys::new());
        let (old, new) = ([1u8; 80], [2u8; 80]);
        keys.set(&[&old]).unwrap();
        let a = server(|b| b.use_ticket_keys(keys.clone()));
        let b = server(|b| b.use_ticket_keys(keys.clone()));
        for v in [0x0303, 0x0304] {
            keys.set(&[&old]).unwrap();
            let c = client(v);
            assert_eq!(handshake(&c, &a), HandshakeKind::Full);
            // The new key seals; the old one still opens.
            keys.set(&[&new, &old]).unwrap();
            assert_eq!(handshake(&c, &b), HandshakeKind::Resumed, "{v:x}");
            // A ticket under the old key, then the old key removed: full
            // handshake, no error.
            keys.set(&[&old]).unwrap();
            let c = client(v);
            assert_eq!(handshake(&c, &a), HandshakeKind::Full);
            keys.set(&[&new]).unwrap();
            assert_eq!(handshake(&c, &b), HandshakeKind::Full, "{v:x}");
        }
    }

    /// One handshake; the suite the server chose.
    fn suite(client: &Arc<rustls::ClientConfig>, server: &Arc<rustls::ServerConfig>) -> u16 {
        let mut c =
            rustls::ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        crate::testutil::pump(&mut *c, &mut *s, 20);
        assert!(!s.is_handshaking());
        u16::from(s.negotiated_cipher_suite().unwrap().suite())
    }

    #[test]
    fn default_suite_order_is_the_servers_aes128_first() {
        // A client that prefers AES-256-GCM (OpenSSL's order), then ChaCha20.
        for (v, client_suites, ours) in [
            (0x0304, vec![0x1302, 0x1303, 0x1301], 0x1301),
            (0x0303, vec![0xc02c, 0xcca9, 0xc02b], 0xc02b),
        ] {
            let c = client_config(&Opts {
                versions: Some(vec![v]),
                suites: Some(client_suites.clone()),
                ..Opts::default()
            });
            assert_eq!(suite(&c, &server(|_| {})), ours, "{v:x}");
            // The client's order on request.
            let follow = server(|b| b.set_follow_client_order(true));
            assert_eq!(suite(&c, &follow), client_suites[0], "{v:x}");
            // An explicit list is the server's preference order.
            let listed = server(|b| {
                b.proto
                    .set_suites(&[0x1303, 0x1302, 0xcca9, 0xc02c])
                    .unwrap()
            });
            assert_eq!(
                suite(&c, &listed),
                if v == 0x0304 { 0x1303 } else { 0xcca9 }
            );
        }
    }

    #[test]
    fn default_resumption_is_the_stateful_cache_and_host_keys_make_tickets() {
        let default = server(|_| {});
        assert!(
            !default.ticketer.enabled(),
            "no stateless tickets by default"
        );
        assert_eq!(default.send_tls13_tickets, 2);
        let keyed = server(|b| b.set_ticket_keys(&[&[7u8; 80]]).unwrap());
        assert!(keyed.ticketer.enabled(), "host ticket keys turn tickets on");
        let keyed_off = server(|b| {
            b.set_ticket_keys(&[&[7u8; 80]]).unwrap();
            b.set_tickets(false);
        });
        assert!(!keyed_off.ticketer.enabled());
        assert!(server(|b| b.set_tickets(true)).ticketer.enabled());
        let none = server(|b| {
            b.set_session_cache_size(0);
        });
        assert_eq!(none.send_tls13_tickets, 0, "no resumption: no tickets");
        // Both versions resume through the cache by default, in the config
        // that issued the session.
        for v in [0x0303, 0x0304] {
            let c = client(v);
            assert_eq!(handshake(&c, &default), HandshakeKind::Full);
            assert_eq!(handshake(&c, &default), HandshakeKind::Resumed, "{v:x}");
        }
    }

    struct Store(Mutex<HashMap<Vec<u8>, Vec<u8>>>, Mutex<bool>);

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
        if *s.1.lock().unwrap() {
            return -1;
        }
        let key = std::slice::from_raw_parts(key, key_len);
        let mut m = s.0.lock().unwrap();
        let v = if remove {
            m.remove(key)
        } else {
            m.get(key).cloned()
        };
        match v {
            Some(v) if v.len() <= buf_len => {
                std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len());
                *out_len = v.len();
                1
            }
            _ => 0,
        }
    }

    unsafe extern "C" fn put(
        ud: *mut c_void,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> c_int {
        let s = &*(ud as *const Store);
        s.0.lock().unwrap().insert(
            std::slice::from_raw_parts(key, key_len).to_vec(),
            std::slice::from_raw_parts(value, value_len).to_vec(),
        );
        0
    }

    #[test]
    fn session_store_callbacks_resume_across_configs() {
        let store = Box::new(Store(Mutex::new(HashMap::new()), Mutex::new(false)));
        let ud = &*store as *const Store as *mut c_void;
        let with_store = |b: &mut ServerConfigBuilder| {
            b.set_tickets(false);
            b.set_session_store(session_cache::CallbackCache::new(get, put, ud));
        };
        let a = server(with_store);
        let b = server(with_store);
        for v in [0x0303, 0x0304] {
            let c = client(v);
            assert_eq!(handshake(&c, &a), HandshakeKind::Full);
            assert!(!store.0.lock().unwrap().is_empty());
            assert_eq!(handshake(&c, &b), HandshakeKind::Resumed, "{v:x}");
            // A failing store: full handshakes, no error.
            let c = client(v);
            assert_eq!(handshake(&c, &a), HandshakeKind::Full);
            *store.1.lock().unwrap() = true;
            assert_eq!(handshake(&c, &b), HandshakeKind::Full, "{v:x}");
            *store.1.lock().unwrap() = false;
        }
        drop((a, b));
    }
}
