// Compiles proto/csi.proto, proto/pluginregistration.proto (the kubelet's plugin registration
// API) and proto/admin.proto (ferrovol's own admin API) with protox (pure Rust), so a fresh
// machine needs no protoc to build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    println!("cargo:rerun-if-changed=proto/admin.proto");
    let descriptors = protox::compile(
        ["csi.proto", "pluginregistration.proto", "admin.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
