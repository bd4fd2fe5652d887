//! Compiles `rke2ops/v1/*.proto` with protox (a pure-Rust protobuf compiler), so building
//! the workspace never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["rke2ops/v1/agent.proto", "rke2ops/v1/admin.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    // `build_transport(false)`: the generated `connect` constructor would clash with the
    // `Connect` RPC; clients are built with `AgentServiceClient::new(channel)` instead.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
