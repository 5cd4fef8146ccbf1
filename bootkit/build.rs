//! Puts the linker script where a kernel's link finds it by name: copies
//! `link.ld` to `$OUT_DIR/pvops-boot.ld` and adds `$OUT_DIR` to the linker
//! search path (Cargo passes a dependency's `rustc-link-search` on to the
//! crates that depend on it). A kernel then links with
//! `-C link-arg=-Tpvops-boot.ld` in its `.cargo/config.toml`, without a
//! build script of its own.
fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = std::path::Path::new(&out);
    std::fs::copy("link.ld", out.join("pvops-boot.ld")).expect("copy link.ld to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
