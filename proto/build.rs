//! Compiles `heisen.proto` with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=heisen.proto");
    let descriptors = protox::compile(["heisen.proto"], ["."])?;
    tonic_build::configure().compile_fds(descriptors)?;
    Ok(())
}
