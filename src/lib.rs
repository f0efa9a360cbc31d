//! rktls: a TLS library for C and C++ servers, built on rustls.
//!
//! One module per C object (`config`, `connection`), the boundary helpers in
//! `ffi`, the socket syscalls in `sys`. The C header `include/rktls.h` is
//! generated from the doc comments of the exported items by `build.rs`.
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
#[cfg(test)]
mod kernel_emul;
pub mod ktls;
pub mod logging;
pub mod offload;
mod record;
pub mod result;
mod sys;

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
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            format!(
                "rktls {} (rustls, {})\0",
                env!("CARGO_PKG_VERSION"),
                crypto::PROVIDER_NAME
            )
        })
        .as_ptr()
        .cast()
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
