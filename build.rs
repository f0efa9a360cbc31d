//! Generates include/rktls.h with cbindgen and sets the shared library's SONAME.

use std::env;
use std::path::PathBuf;

/// The ABI version, written once: `abi-version` under
/// `[package.metadata.rktls]` in Cargo.toml (the Makefile reads it too).
fn abi_version(manifest: &str) -> u32 {
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("abi-version = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Cargo.toml: [package.metadata.rktls] abi-version = N")
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.toml");

    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let abi = abi_version(&manifest);
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librktls.so.{abi}");
    let version = env::var("CARGO_PKG_VERSION").unwrap();
    let mut parts = version.split(['.', '-']);
    let mut next = || parts.next().unwrap_or("0").to_string();
    let (major, minor, patch) = (next(), next(), next());

    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    config.after_includes = Some(format!(
        "\n/* Major version of the rktls this header belongs to (Cargo.toml). */\n\
         #define RKTLS_VERSION_MAJOR {major}\n\
         /* Minor version. */\n#define RKTLS_VERSION_MINOR {minor}\n\
         /* Patch version. */\n#define RKTLS_VERSION_PATCH {patch}\n\
         /* The whole version, as rktls_version() returns it. */\n\
         #define RKTLS_VERSION_STRING \"{version}\"\n\
         /* ABI version: the N of the shared library's SONAME librktls.so.N. */\n\
         #define RKTLS_ABI_VERSION {abi}\n"
    ));
    match cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(dir.join("include/rktls.h"));
        }
        Err(e) => panic!("cbindgen failed: {e}"),
    }
}
