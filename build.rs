//! Generates include/rktls.h with cbindgen and sets the shared library's SONAME.

use std::env;
use std::path::PathBuf;

/// ABI version: bumped on any incompatible change of the C ABI.
const ABI_VERSION: u32 = 0;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librktls.so.{ABI_VERSION}");

    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
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
         #define RKTLS_ABI_VERSION {ABI_VERSION}\n"
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
