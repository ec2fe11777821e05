//! Azurite (Microsoft's Azure Storage emulator, blob service) for tests of `az://` storage.

use std::path::Path;
use std::process::Command;

use super::{
    BUCKET, ServerProcess, StorageServer, free_port, hermetic_options, provider_options, tool,
};
use crate::StoreOptions;

const AZURITE_BLOB: &str = "azurite/node_modules/.bin/azurite-blob";
const NODE_MODULES: &str = "azurite/node_modules";

/// Storage account Azurite is started with (instead of its well-known default account).
pub const AZURE_ACCOUNT: &str = "lockboxtest";
/// Base64 SharedKey of [`AZURE_ACCOUNT`]; a test value, not a secret.
pub const AZURE_ACCOUNT_KEY: &str =
    "bG9ja2JveCBhenVyaXRlIHRlc3QgYWNjb3VudCBrZXksIG5vdCBhIHNlY3JldCEh";

/// Creates a container with Microsoft's own SDK (installed next to Azurite), so that no
/// SharedKey signing is written by hand here. Arguments: service URL, account, key, container.
const CREATE_CONTAINER_JS: &str = r#"
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");
const [url, account, key, container] = process.argv.slice(1);
new BlobServiceClient(url, new StorageSharedKeyCredential(account, key))
  .getContainerClient(container)
  .create()
  .catch((e) => { console.error(e.message); process.exit(1); });
"#;

/// An Azurite blob service on `127.0.0.1` with account [`AZURE_ACCOUNT`] and container
/// [`BUCKET`], keeping its data in a fresh directory; killed on drop.
///
/// Azurite checks SharedKey signatures. It keeps blobs in its own extent files, not one file
/// per blob, so tests look at the storage through the API.
#[derive(Debug)]
pub struct AzureServer {
    process: ServerProcess,
}

impl AzureServer {
    /// Starts Azurite on a free port, waits until it accepts connections and creates the
    /// container.
    pub fn start() -> AzureServer {
        let data = tempfile::TempDir::new().expect("temp dir for azurite");
        let port = free_port();
        let mut command = Command::new(tool(AZURITE_BLOB, "azurite"));
        command
            .env(
                "AZURITE_ACCOUNTS",
                format!("{AZURE_ACCOUNT}:{AZURE_ACCOUNT_KEY}"),
            )
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--silent", "--disableTelemetry", "--disableProductStyleUrl"])
            // The SDK that creates the container speaks a newer API version than Azurite 3.
            .arg("--skipApiVersionCheck")
            .arg("--location")
            .arg(data.path());
        let server = AzureServer {
            process: ServerProcess::start("azurite-blob", command, port, data),
        };
        server.create_container(BUCKET);
        server
    }

    /// Kills the server now; the data directory stays until drop. Idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// `http://127.0.0.1:PORT/ACCOUNT` (path-style account, as Azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURE_ACCOUNT}", self.process.port)
    }

    /// The standard `AZURE_*` environment variables that point a child process (using
    /// [`crate::Store::open`]) at this server: account, key, endpoint, plain HTTP allowed.
    /// Set them on the child's `Command`, never on the test process.
    pub fn azure_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURE_ACCOUNT.to_owned()),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURE_ACCOUNT_KEY.to_owned()),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint()),
            ("AZURE_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// The directory Azurite keeps its database and extents in.
    pub fn data_dir(&self) -> &Path {
        self.process.data.path()
    }

    fn create_container(&self, name: &str) {
        let modules = tool(NODE_MODULES, "@azure/storage-blob");
        let output = Command::new("node")
            .env("NODE_PATH", modules)
            .args(["-e", CREATE_CONTAINER_JS])
            .args([&self.endpoint(), AZURE_ACCOUNT, AZURE_ACCOUNT_KEY, name])
            .output()
            .unwrap_or_else(|e| panic!("running node to create container {name}: {e}"));
        assert!(
            output.status.success(),
            "creating container {name} in azurite failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl StorageServer for AzureServer {
    fn url(&self, prefix: &str) -> String {
        format!("az://{BUCKET}/{prefix}")
    }

    fn options(&self) -> StoreOptions {
        azure_options(&self.endpoint(), AZURE_ACCOUNT, AZURE_ACCOUNT_KEY)
    }
}

/// Options for an Azure blob endpoint with SharedKey credentials, short retries, no
/// environment.
pub fn azure_options(endpoint: &str, account: &str, key: &str) -> StoreOptions {
    StoreOptions {
        provider_options: provider_options(&[
            ("azure_storage_endpoint", endpoint),
            ("azure_storage_account_name", account),
            ("azure_storage_account_key", key),
            ("azure_allow_http", "true"),
        ]),
        ..hermetic_options()
    }
}
