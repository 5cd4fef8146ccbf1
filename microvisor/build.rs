//! Links the microvisor with bootkit's linker script (image at 1 MiB, PT_NOTE
//! for the PVH entry note).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&dir).join("../bootkit/link.ld");
    // Bins only: host unit tests of the library link normally.
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
}
