fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Vendored protoc: building needs no system protoc.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tokbench_v1_descriptor.bin"))
        .compile_protos(&["proto/tokbench/v1/tokbench.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
