// Generates the protobuf/gRPC code with a vendored `protoc`, so no system package is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    // The request carries the account token, a credential for up to 24 h: its Debug is
    // written by hand (lib.rs) and redacts it.
    config.skip_debug([".lockbox.vault.v1.Request"]);
    tonic_prost_build::configure()
        .bytes(".")
        .compile_with_config(
            config,
            &[
                "proto/lockbox/vault/v1/vault.proto",
                "proto/lockbox/fleet/v1/manifest.proto",
                "proto/lockbox/raft/v1/raft.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
