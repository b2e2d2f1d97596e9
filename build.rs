// Compiles proto/csi.proto and proto/pluginregistration.proto (the kubelet's plugin registration
// API) with protox (pure Rust), so a fresh machine needs no protoc to build.
// Release builds of the binary also get the linker's symbol ordering (see `link_hot_first`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    let descriptors = protox::compile(["csi.proto", "pluginregistration.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    link_hot_first();
    Ok(())
}

/// Lays out the functions a serving driver runs (link/hot-symbols.txt, made by
/// scripts/hot-symbols.sh) first and together in the release binary: the kernel maps code 64 KiB
/// around each page touched, so code scattered over the whole text keeps most of it resident.
/// Only for rust-lld, the linker rustc uses on x86_64 Linux; names the list lacks (or no longer
/// has) are laid out as usual.
fn link_hot_first() {
    let list = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    // The one target this applies to; a linker set for it by hand may not know the option.
    const LINKER_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER";
    println!("cargo:rerun-if-env-changed={LINKER_VAR}");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let lld_target = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    let own_linker = std::env::var_os(LINKER_VAR).is_some()
        || std::env::var("CARGO_ENCODED_RUSTFLAGS")
            .is_ok_and(|f| f.contains("linker") || f.contains("fuse-ld"));
    if release && lld_target && !own_linker && list.exists() {
        let arg = format!("-Wl,--symbol-ordering-file={}", list.display());
        println!("cargo:rustc-link-arg-bin=ferrovol={arg}");
        println!("cargo:rustc-link-arg-bin=ferrovol=-Wl,--no-warn-symbol-ordering");
    }
}
