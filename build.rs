//! Link-time settings for the worker binary on Linux with glibc (see docs, "Building").

use std::path::Path;

fn main() {
    let cold_code = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/cold-code.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", cold_code.display());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || env != "gnu" {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36+, as in the Debian 12 images the
    // Dockerfile builds and runs on): the loader reads a few KiB of bitmaps at start
    // instead of ~600 KiB of RELA entries, which would stay resident for the life of the
    // process. The executable stays position-independent, so ASLR is kept.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // Start-up and command-line code placed apart from the job path (the script says why).
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", cold_code.display());
}
