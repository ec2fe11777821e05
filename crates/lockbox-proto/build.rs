// Generates the protobuf/gRPC code with a vendored `protoc`, so no system package is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .bytes(".")
        .compile_with_config(config, &["proto/lockbox/vault/v1/vault.proto"], &["proto"])?;
    Ok(())
}
