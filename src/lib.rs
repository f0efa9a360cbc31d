//! rktls: a TLS library for C and C++ servers, built on rustls.
//!
//! The C header `include/rktls.h` is generated from the doc comments of the
//! exported items by `build.rs`. The modules follow a connection's life;
//! where a C object has protocol logic, its exports live in a separate
//! `ffi.rs` beside it.
//!
//! 1. Configuration: [`config`] (server and client configs and their
//!    builders), `crypto` (the provider: aws-lc-rs or ring), [`offload`]
//!    (what a config chooses for the kernel: directions, key limit).
//! 2. Accepting: [`acceptor`] reads the ClientHello before a config is
//!    chosen (`acceptor/mod.rs`; C API in `acceptor/ffi.rs`), with
//!    `hello` (what a ClientHello shows) and [`alert`] (alert messages
//!    and the alert owed to a refused peer; C API in `alert/ffi.rs`).
//! 3. The connection, [`connection`]: `mod.rs` (the type, constructors,
//!    getters), `engine.rs` (driving rustls' unbuffered state machine),
//!    `transport.rs` (fd mode and buffer mode), `ops.rs` (handshake, read,
//!    write, flush, shutdown, sendfile), `reneg.rs` (TLS 1.2 renegotiation
//!    refused), `ffi.rs` (every `rktls_connection_*` export).
//! 4. The switch to the kernel: `connection/to_kernel.rs` (validate, the
//!    point of no return, build and install, commit), over [`ktls`] (the
//!    kernel's TLS socket options and probes) and `sys` (every syscall,
//!    the seam tests use).
//! 5. Offloaded I/O and control records: `connection/kernel.rs` (records
//!    read from and sent to a kTLS socket), `connection/control.rs` (the
//!    state machine for alerts, KeyUpdate, tickets and key limits),
//!    `connection/events.rs` (the `rktls_events` object of the event
//!    style), and `record` (a userspace record layer for a direction the
//!    kernel does not carry).
//! 6. Shared everywhere: `wire` (record headers, content types, sizes),
//!    [`result`] (result codes and errors), [`ffi`] (the C boundary: handles,
//!    panic guard, pointer checks), [`logging`] (the host's log callback).
//!
//! Tests only: `kernel_emul` (an emulated kTLS kernel behind `sys`),
//! `testutil` (a throwaway PKI and configs); [`fuzzing`] serves `fuzz/`.
#![allow(non_camel_case_types)]
// Exported functions check their pointers themselves; see `ffi`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod acceptor;
pub mod alert;
pub mod config;
pub mod connection;
mod crypto;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
mod hello;
#[cfg(any(test, feature = "fuzzing"))]
mod kernel_emul;
pub mod ktls;
pub mod logging;
pub mod offload;
mod record;
pub mod result;
mod suites;
mod sys;
mod wire;

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod fault_tests;

/// The library version ("MAJOR.MINOR.PATCH") and crypto provider, e.g.
/// "rktls 0.1.0 (rustls, aws-lc-rs)". Static string: never free it.
/// Compare with the `RKTLS_VERSION_*` macros to detect a header/library
/// mismatch. Thread-safe.
#[no_mangle]
pub extern "C" fn rktls_version() -> *const std::ffi::c_char {
    static VERSION: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();
    ffi::guard_value(std::ptr::null(), || {
        VERSION
            .get_or_init(|| {
                let v = format!(
                    "rktls {} (rustls, {})",
                    env!("CARGO_PKG_VERSION"),
                    crypto::PROVIDER_NAME
                );
                std::ffi::CString::new(v).unwrap_or_default()
            })
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names_package_and_provider() {
        let v = unsafe { std::ffi::CStr::from_ptr(super::rktls_version()) }
            .to_str()
            .unwrap();
        assert!(v.starts_with(&format!("rktls {} ", env!("CARGO_PKG_VERSION"))));
        let expect = if cfg!(feature = "aws-lc-rs") {
            "aws-lc-rs"
        } else {
            "ring"
        };
        assert!(v.ends_with(&format!("(rustls, {expect})")), "{v}");
    }
}
