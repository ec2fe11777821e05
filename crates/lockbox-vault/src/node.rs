//! Bringing a node up: open the sealer and the database, and load (or, on first start, create)
//! each partition's secrets, sealed under the HSM key.
//!
//! First start generates a partition's secrets locally. With replication, secrets are made once
//! in a fleet ceremony and sealed to every replica's HSM; the sealed-blob slot and its AAD are
//! already the ones that ceremony will fill.

use lockbox_hsm::{
    FileMark, HsmPin, MarkStore, Pkcs11Config, Pkcs11Mark, Pkcs11Sealer, Sealer, SoftwareSealer,
};
use lockbox_proto::envelope::PartitionSecretKey;
use lockbox_vault_core::VaultSecrets;
use rand_core::OsRng;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

use crate::config::{SealerConfig, VaultConfig};
use crate::storage::RedbStore;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("sealer: {0}")]
    Sealer(#[from] lockbox_hsm::SealError),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read HSM PIN file {path}: {source}")]
    PinFile {
        path: String,
        source: std::io::Error,
    },
    #[error("partition {0} secrets are corrupt")]
    CorruptSecrets(u32),
    #[error(
        "this replicated node holds no secrets for partition {0}: every replica must hold the \
         same ones, installed by `lockbox fleet init`, never made by one node alone"
    )]
    NoSecrets(u32),
    #[error(
        "this node already holds secrets for partition {0}; a fleet ceremony never replaces them"
    )]
    SecretsExist(u32),
}

/// A partition's secrets: everything it needs at run time besides storage.
pub struct PartitionKeys {
    pub hpke: PartitionSecretKey,
    pub opaque: VaultSecrets,
}

impl core::fmt::Debug for PartitionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PartitionKeys").finish_non_exhaustive()
    }
}

pub fn open_sealer(cfg: &VaultConfig) -> Result<Arc<dyn Sealer>, NodeError> {
    Ok(match &cfg.sealer {
        SealerConfig::Software => {
            Arc::new(open_or_create_software(&cfg.data_dir.join("sealer.key"))?)
        }
        SealerConfig::SoftwareFile { key_file } => Arc::new(open_or_create_software(key_file)?),
        SealerConfig::Pkcs11 { .. } => {
            Arc::new(Pkcs11Sealer::open(&pkcs11_config(cfg)?.expect("pkcs11"))?)
        }
    })
}

fn pkcs11_config(cfg: &VaultConfig) -> Result<Option<Pkcs11Config>, NodeError> {
    let SealerConfig::Pkcs11 {
        module,
        token_label,
        pin_file,
    } = &cfg.sealer
    else {
        return Ok(None);
    };
    let mut p11 = Pkcs11Config::new(module.clone(), token_label.clone());
    if let Some(path) = pin_file {
        let pin = std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| NodeError::PinFile {
                path: path.display().to_string(),
                source,
            })?;
        p11 = p11.with_pin(HsmPin::new(pin.trim_end_matches(['\n', '\r'])));
    }
    Ok(Some(p11))
}

/// Where this replica's rollback mark lives: in the token with a PKCS#11 sealer (which a disk
/// copy cannot roll back), else in a file sealed by the node's sealer, beside the data
/// directory and never inside it, so that restoring a copy of the data directory does not
/// restore the mark with it (weaker: a copy of both is not detected).
pub fn open_marks(
    cfg: &VaultConfig,
    sealer: &Arc<dyn Sealer>,
    raft_id: u64,
) -> Result<Arc<dyn MarkStore>, NodeError> {
    let name = format!("{}/raft-{raft_id}", cfg.node_id);
    if let Some(p11) = pkcs11_config(cfg)? {
        return Ok(Arc::new(Pkcs11Mark::open(&p11, &name)?));
    }
    let path = cfg
        .replication
        .as_ref()
        .and_then(|r| r.mark_file.clone())
        .unwrap_or_else(|| default_mark_file(&cfg.data_dir));
    Ok(Arc::new(FileMark::new(path, sealer.clone(), &name)))
}

/// `<data_dir>.raft-mark`, next to the data directory.
pub fn default_mark_file(data_dir: &Path) -> std::path::PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "vault".into());
    name.push(".raft-mark");
    data_dir.with_file_name(name)
}

fn open_or_create_software(path: &Path) -> Result<SoftwareSealer, NodeError> {
    if path.exists() {
        Ok(SoftwareSealer::open(path)?)
    } else {
        Ok(SoftwareSealer::create(path)?)
    }
}

pub fn open_store(cfg: &VaultConfig) -> Result<RedbStore, NodeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| NodeError::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    })?;
    Ok(RedbStore::open(&cfg.data_dir.join("vault.redb"))?)
}

fn secret_name(partition: u32) -> String {
    format!("partition/{partition}")
}

fn secret_aad(partition: u32) -> Vec<u8> {
    let mut aad = b"lockbox/v1/partition-secrets".to_vec();
    aad.extend_from_slice(&partition.to_be_bytes());
    aad
}

impl PartitionKeys {
    /// Fresh secrets for one partition, from the OS RNG.
    pub fn generate() -> Self {
        let (hpke, _) = PartitionSecretKey::generate(&mut OsRng);
        let opaque = VaultSecrets::generate(&mut OsRng);
        Self { hpke, opaque }
    }

    /// A key for `label`, made from these secrets: the same on every replica of the partition.
    fn derive(&self, label: &[u8], partition: u32) -> Zeroizing<[u8; 32]> {
        let mut info = label.to_vec();
        info.extend_from_slice(&partition.to_be_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        lockbox_crypto::hkdf_expand(&self.to_bytes(), None, &info, key.as_mut());
        key
    }

    /// The key replicated records of this partition are sealed under.
    pub fn record_key(&self, partition: u32) -> Zeroizing<[u8; 32]> {
        self.derive(lockbox_crypto::labels::PARTITION_RECORD_KEY, partition)
    }

    /// The key that MAC-chains this partition's Raft log on every replica's disk.
    pub fn log_key(&self, partition: u32) -> lockbox_raft::LogKey {
        let key = self.derive(lockbox_crypto::labels::PARTITION_LOG_KEY, partition);
        lockbox_raft::LogKey::new(lockbox_crypto::Secret32::new(*key))
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut plain = Zeroizing::new(self.hpke.to_bytes().to_vec());
        plain.extend_from_slice(&self.opaque.to_bytes());
        plain
    }

    fn from_bytes(partition: u32, plain: &[u8]) -> Result<Self, NodeError> {
        let corrupt = || NodeError::CorruptSecrets(partition);
        let (hpke, opaque) = plain.split_at_checked(32).ok_or_else(corrupt)?;
        let hpke = PartitionSecretKey::from_bytes(hpke).map_err(|_| corrupt())?;
        let opaque = VaultSecrets::from_bytes(opaque).map_err(|_| corrupt())?;
        Ok(Self { hpke, opaque })
    }
}

/// Whether partition `partition`'s secrets are on this node already.
pub fn has_partition(store: &RedbStore, partition: u32) -> Result<bool, NodeError> {
    Ok(store.load_secret(&secret_name(partition))?.is_some())
}

/// The fleet ceremony's step on one node: seals `keys` under the node's sealer and stores them
/// as partition `partition`'s secrets. Refuses to replace secrets the node already has.
pub fn install_partition(
    store: &RedbStore,
    sealer: &dyn Sealer,
    partition: u32,
    keys: &PartitionKeys,
) -> Result<(), NodeError> {
    let sealed = sealer.seal(&secret_aad(partition), &keys.to_bytes())?;
    if store.store_secret_once(&secret_name(partition), &sealed)? {
        Ok(())
    } else {
        Err(NodeError::SecretsExist(partition))
    }
}

/// Loads a partition's secrets, creating and sealing them on the node's first start (a node
/// that took part in a fleet ceremony finds the ones the ceremony installed). A replicated
/// node (`create = false`) never creates them.
pub fn load_or_create_partition(
    store: &RedbStore,
    sealer: &dyn Sealer,
    partition: u32,
    create: bool,
) -> Result<PartitionKeys, NodeError> {
    let name = secret_name(partition);
    let sealed = match store.load_secret(&name)? {
        Some(sealed) => sealed,
        None if !create => return Err(NodeError::NoSecrets(partition)),
        None => {
            // A concurrent first start may have won the race; the stored value is the one used.
            match install_partition(store, sealer, partition, &PartitionKeys::generate()) {
                Ok(()) | Err(NodeError::SecretsExist(_)) => {}
                Err(e) => return Err(e),
            }
            store
                .load_secret(&name)?
                .ok_or(NodeError::CorruptSecrets(partition))?
        }
    };
    let plain = sealer.unseal(&secret_aad(partition), &sealed)?;
    PartitionKeys::from_bytes(partition, &plain)
}
