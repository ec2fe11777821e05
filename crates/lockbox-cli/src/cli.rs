use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
GETTING STARTED:
    lockbox enable --account ID --store URL --password   protect the key with a password
    lockbox backup ~/chats                               back up (later: just `lockbox backup`)
    lockbox restore DEST --account ID --store URL --password   on a new phone
    lockbox status                                       what this device and the vault say

ENVIRONMENT:
    LOCKBOX_HOME           this device's home directory (default: ~/.local/share/lockbox)
    LOCKBOX_RECOVERY_CODE  the recovery code, instead of --key-file (for scripts)
    LOCKBOX_PASSWORD       the vault password, instead of the prompt (for scripts)
    LOCKBOX_NEW_PASSWORD   the new vault password for `key change-password` (for scripts)
    LOCKBOX_CONFIG         path of the TOML config file (default: ~/.config/lockbox/config.toml)
    LOCKBOX_LOG            log filter, e.g. `info` or `lockbox=debug` (logs go to stderr)
    LOCKBOX_STORAGE        storage URL, instead of --to/--from
    LOCKBOX_STORAGE_RETRIES how often a failed storage request is retried (default 10)
    AWS_*                  S3 credentials, region and AWS_ENDPOINT_URL for s3:// URLs

EXIT STATUS:
    0  success
    1  usage or runtime error (bad arguments, unreachable storage, full disk, ...)
    2  authentication failure: wrong or malformed recovery code, wrong vault password
    3  integrity failure: the backup was tampered with, truncated, reordered or swapped
    4  the vault record was destroyed after too many wrong passwords

STORAGE URLS:
    file:///abs/path      a local folder (created on first backup)
    s3://bucket/prefix    Amazon S3 or any S3-compatible service
    gs://bucket/prefix    Google Cloud Storage (when built with the `gcs` feature)
    az://container/prefix Azure Blob Storage (when built with the `azure` feature)";

/// End-to-end encrypted chat backups.
///
/// lockbox encrypts a directory as one continuous authenticated stream under a random 256-bit
/// backup key and stores it in object storage you choose. The key stays on this device (its
/// home directory) and is protected for the day the phone is lost either by a password, which
/// the Backup Key Vault guards (it counts every guess and destroys the key after the limit), or
/// by a 64-digit recovery code you keep. Neither the storage provider, the vault's gateway nor
/// anyone else can read, reorder, truncate or swap your backups without lockbox noticing.
///
/// The device commands (enable, backup, restore, status, password, key rotate, disable) work
/// on the home directory; the low-level ones (key new/deposit/recover, encrypt, decrypt, and
/// backup/restore with --to/--store and a key file) take everything from their flags.
#[derive(Debug, Parser)]
#[command(name = "lockbox", version, after_long_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// More log output on stderr (-v: info, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Config file (TOML) with defaults for storage, key file and retention; give it before
    /// the subcommand (`lockbox --config FILE backup ...`)
    #[arg(long, env = "LOCKBOX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This device's home directory: its settings, its backup key (mode 0600), the pinned
    /// fleet and the newest fleet manifest it accepted
    #[arg(long, env = "LOCKBOX_HOME", value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn on backups on this device, protected by a vault password or a recovery code
    ///
    /// Makes a new random backup key and keeps it in the home directory (mode 0600). With
    /// --password the key is deposited in the Backup Key Vault (through the gateway and under
    /// the fleet keys pinned in the config file), which releases it on a new phone only to the
    /// right password and destroys it after --max-attempts wrong ones in a row. With
    /// --recovery-code the key is printed once as a 64-digit code: write it down.
    Enable(EnableArgs),
    /// Back up a directory to object storage and print the backup id
    ///
    /// On an enabled device, `lockbox backup [DIR]` uses its store and key (DIR defaults to
    /// the directory of the last backup). With --to or --key-file, everything comes from the
    /// flags, the environment and the config file instead.
    Backup(BackupArgs),
    /// Restore a backup (the latest by default) into a new or empty directory
    ///
    /// On a new phone, `lockbox restore DEST --account ID --store URL --password` gets the key
    /// from the vault (one attempt; a wrong password says how many are left) or, with
    /// --recovery-code-file, from the code, restores the newest intact backup, and enables
    /// this home for the account. On an enabled device, `lockbox restore DEST` restores its
    /// newest backup with its own key. The restore is written beside DEST and moved into place
    /// only once every byte verified: a failed restore never leaves a directory that looks
    /// complete.
    Restore(RestoreArgs),
    /// Show this device's settings, the vault record's attempts left, and its backups
    Status(StatusArgs),
    /// Change the vault password (the backup key stays the same)
    #[command(subcommand)]
    Password(PasswordCommand),
    /// Manage backup keys: rotate this device's key, or low-level recovery-code and vault tools
    #[command(subcommand)]
    Key(KeyCommand),
    /// Turn off backups on this device: destroy the vault record, wipe the home directory
    ///
    /// Asks for the vault password (a password-protected device). With --delete-backups every
    /// backup made under this device's key is deleted as well; without it they stay, and the
    /// key is printed as a recovery code, the only way left to open them.
    Disable(DisableArgs),
    /// List the backups at a storage URL, oldest first
    List(ListArgs),
    /// Verify this device's incremental repository: catalog, index, snapshots and packs
    ///
    /// Checks that the catalog's chain is whole and does not end before this device last saw
    /// it, that every index and snapshot authenticates, that every chunk a snapshot names is
    /// indexed, and that every pack is stored at its full length. With --read-data, every
    /// pack is downloaded and every chunk opened and verified against its id.
    Check(CheckArgs),
    /// Delete old backups, keeping the newest N whose headers verify under the key
    ///
    /// Objects that do not verify (planted, damaged, made under another key) are reported and
    /// neither counted nor deleted.
    Prune(PruneArgs),
    /// Encrypt a stream (stdin to stdout by default) in the lockbox format
    Encrypt(CryptArgs),
    /// Decrypt a lockbox stream (stdin to stdout by default)
    ///
    /// Only verified plaintext is ever written. With -o, the output appears under its name only
    /// after the whole stream verified; on stdout, a tampered or truncated stream stops with exit
    /// status 3 after the verified prefix.
    Decrypt(CryptArgs),
    /// Walk the whole story on a sample chat directory, locally, with embedded defaults
    Demo(DemoArgs),
    /// Development tools: a dev fleet on loopback, and a dev identity provider for tokens
    #[command(subcommand)]
    Dev(DevCommand),
    /// The fleet ceremony and its signed manifest log (what devices pin)
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Run the gateway that relays devices' sealed requests to the vault
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Run or manage a Backup Key Vault node
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Measure a running fleet under load
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Create a dev identity-provider key (mode 0600) and print its public key
    ///
    /// Put the printed public key in each vault node's `[auth] issuer_public_key`. In
    /// production the messaging service's login holds this key and nodes only its public half.
    Issuer {
        /// Where to write the secret key; refuses to overwrite an existing file
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Mint an account token with a dev identity-provider key and print it
    ///
    /// The token says "this request acts for ACCOUNT" to vault nodes whose `[auth]` names the
    /// same issuer key and audience. Give it to `lockbox key ...` with --token-file or
    /// LOCKBOX_ACCOUNT_TOKEN.
    Token {
        /// The dev issuer key from `lockbox dev issuer`
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// Account the token acts for
        #[arg(long, value_name = "ID")]
        account: String,
        /// The vault fleet's name (`[auth] audience` in the nodes' config)
        #[arg(long, value_name = "NAME", default_value = "lockbox-dev")]
        audience: String,
        /// Lifetime in seconds (at most 86400)
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        ttl: u64,
    },
    /// Run a whole dev fleet on loopback: vault nodes, the fleet ceremony, a gateway
    ///
    /// Writes into DIR a dev issuer key, one vault.toml per node (every node holds a replica
    /// of every partition: one Raft group of NODES voters per partition, node 1 bootstraps
    /// them), the fleet (DIR/fleet), gateway.toml and client.toml (the gateway, the
    /// pinned fleet keys and the issuer key, for `lockbox --config DIR/client.toml ...`), then
    /// starts every node and the gateway (logs in DIR/nodes/N/log and DIR/gateway.log, pids
    /// beside them). Prints `ready` on stdout once all answer, and runs until SIGINT or
    /// SIGTERM (exit 0, everything stopped) or until one of them exits (exit 1, naming it).
    /// For development only: dev PINs, the witness beside the fleet key, no TLS.
    Cluster {
        /// A new or empty directory for everything the cluster writes
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Vault nodes (1-9); the cluster survives losing fewer than half of them
        #[arg(long, value_name = "N", default_value_t = 5,
              value_parser = clap::value_parser!(u32).range(1..=9))]
        nodes: u32,
        /// Partitions, each one Raft group (at most 64)
        #[arg(long, value_name = "P", default_value_t = 8,
              value_parser = clap::value_parser!(u32).range(1..=64))]
        partitions: u32,
        /// Seal with SoftHSM2 tokens (one per node, dev PINs) instead of software key files
        #[arg(long, value_name = "KIND", value_parser = ["softhsm"])]
        hsm: Option<String>,
        /// Configure for load (`lockbox bench vault`, chaos tests): the vault accepts a light
        /// client Argon2id and keeps 100,000 replay entries per account, and the gateway's rate
        /// limits are off. Never for real accounts
        #[arg(long)]
        bench: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load a running fleet through its gateway and report throughput and latency
    ///
    /// Reaches the fleet as a device does (the config's gateway and pinned fleet keys; dev
    /// tokens from its `dev_issuer_key`), enrolls ACCOUNTS fresh accounts with real OPAQUE
    /// registrations, then runs, each for at most SECONDS with CONCURRENCY tasks: status reads,
    /// recoveries with the right password (each key checked), and wrong guesses (at most 4 per
    /// account, so no record is destroyed). Prints per phase: operations/s, p50, p99, p99.9 and
    /// errors, and the single-core server ceiling measured in the same run (in process, no
    /// network). Client Argon2id is lowered for load generation, so the fleet must accept it:
    /// start it with `lockbox dev cluster --bench`.
    Vault {
        /// Accounts to enroll
        #[arg(long, value_name = "N", default_value_t = 200)]
        accounts: usize,
        /// Concurrent tasks
        #[arg(long, value_name = "C", default_value_t = 64)]
        concurrency: usize,
        /// Seconds per timed phase
        #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
        duration: f64,
        /// Seconds for the single-core ceiling
        #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
        ceiling_duration: f64,
        /// Also write the report as JSON to FILE (`-` for stdout, then without the table)
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Serve the vault's gRPC protocol for the partitions in the config file
    ///
    /// On first start the node creates its partition secrets and seals them (and every record)
    /// with its sealer: a 0600 software key file by default, or a PKCS#11 token
    /// (`[sealer] kind = "pkcs11"`, PIN from LOCKBOX_HSM_PIN). Prints `listening on ADDR` on
    /// stdout once bound; stops cleanly on SIGINT or SIGTERM after in-flight requests finish.
    Serve {
        /// The node's TOML config (see docs/operations.md)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List or change the members of the partitions' Raft groups, through this node
    ///
    /// Run on a vault node with its config: the command speaks to the node's peer port with the
    /// node's own peer certificate (`[replication.tls]`), and changes go to each partition's
    /// leader. A node id is never used twice: a node that lost its state, or was removed,
    /// comes back with an empty Raft state and a new, higher `raft_id`.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Every partition's voters, learners and leader, as this node sees them
    List {
        /// The node's TOML config
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Add a started node to every partition this node hosts: it catches up as a learner,
    /// then votes
    Add {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The new node's `raft_id` (above every id the cluster has used)
        #[arg(long, value_name = "ID")]
        id: u64,
        /// The new node's peer address (`peer_advertise`, or `peer_listen`)
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
    },
    /// Remove a node from every partition this node hosts; its id is spent for good
    Remove {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "ID")]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create a fleet: its keys, every partition's secrets sealed to its nodes, manifest 1
    ///
    /// Reads each node's vault.toml (its partitions, sealer, database and `advertise` URL),
    /// makes each partition's HPKE and OPAQUE secrets once, seals them under every replica's
    /// sealer into that node's database (never written in the clear; refuses a node that holds
    /// secrets already), then writes DIR/fleet.key (0600), DIR/pins.toml (the public keys
    /// devices pin), DIR/witness/ (a dev witness; in production the auditor's, elsewhere) and
    /// DIR/manifests/00000001.manifest, fleet-signed and countersigned. Run it before the nodes
    /// first start. Every node's `[auth] audience` must be FLEET_ID.
    Init {
        /// The fleet directory to create (must be empty or absent)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The fleet's name; also the audience of its account tokens
        #[arg(long, value_name = "FLEET_ID")]
        fleet_id: String,
        /// A node's vault.toml (repeat for every node)
        #[arg(long = "node", value_name = "VAULT_TOML", required = true)]
        nodes: Vec<PathBuf>,
        /// A gateway URL devices may use (repeat)
        #[arg(long = "gateway", value_name = "URL", required = true)]
        gateways: Vec<String>,
        /// Days until the manifest expires (devices refuse an expired newest manifest)
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        valid_days: u64,
    },
    /// Fleet-sign the next manifest (same content, new validity) for the witness
    ///
    /// Verifies the whole log first, then writes DIR/manifests/NNNNNNNN.pending and prints its
    /// path; `lockbox fleet witness` turns it into the next .manifest.
    Publish {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        valid_days: u64,
    },
    /// Countersign a fleet-signed manifest, only if it extends the chain this witness has seen
    Witness {
        /// The witness's directory (witness.key, state)
        #[arg(long, value_name = "DIR")]
        witness_dir: PathBuf,
        /// The fleet public key (hex) the witness checks the fleet signature with
        #[arg(long, value_name = "HEX")]
        fleet_public_key: String,
        /// The .pending file `lockbox fleet publish` wrote
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the countersigned manifest
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print what a manifest says (signatures are not checked: use verify-log)
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Replay the whole manifest log from manifest 1 under the pinned keys (exit 3 if it breaks)
    VerifyLog {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Relay devices' sealed vault requests to the vault nodes (the "ChatD" role)
    ///
    /// Checks the account token each device presents (`authorization: Bearer …`), applies the
    /// global, per-client and per-account rate limits and the login backoff in `[limits]`, and
    /// forwards each envelope unchanged to a replica of its partition. It cannot open envelopes
    /// and holds no vault secret. Serves gRPC health (`grpc.health.v1`) and, with
    /// `metrics_listen`, Prometheus metrics. Prints `listening on ADDR` on stdout once bound;
    /// stops cleanly on SIGINT or SIGTERM.
    Serve {
        /// The gateway's TOML config (see docs/operations.md)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    /// Account id the backups and the vault record belong to (e.g. a phone number)
    #[arg(long, value_name = "ID")]
    pub account: String,
    /// Storage URL for the backups (file:///path, s3://bucket/prefix, ...)
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Protect the key with a vault password (asked twice, or LOCKBOX_PASSWORD)
    #[arg(
        long,
        required_unless_present = "recovery_code",
        conflicts_with = "recovery_code"
    )]
    pub password: bool,
    /// Protect the key with a 64-digit recovery code, printed once
    #[arg(long)]
    pub recovery_code: bool,
    /// Wrong passwords in a row before the vault destroys the key (1-100)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_attempts: u8,
    /// Replace the key the vault already holds for the account (another device's); without
    /// it, enabling is refused then: a new phone takes the record over with `lockbox restore`
    #[arg(long, requires = "password")]
    pub replace: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// The account token the vault acts on.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// File holding the account token from the messaging service's login (default:
    /// LOCKBOX_ACCOUNT_TOKEN, then `token_file` in the config, then a dev token minted with the
    /// config's `dev_issuer_key`)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// JSON, for scripts
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

#[derive(Debug, Subcommand)]
pub enum PasswordCommand {
    /// Asks for the current password (LOCKBOX_PASSWORD), which spends an attempt and gives it
    /// back, then for the new one twice (LOCKBOX_NEW_PASSWORD)
    Change {
        #[command(flatten)]
        token: TokenArgs,
    },
}

#[derive(Debug, Args)]
pub struct DisableArgs {
    /// Delete every backup made under this device's key as well, and its incremental repository
    #[arg(long)]
    pub delete_backups: bool,
    #[command(flatten)]
    pub token: TokenArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Replace this device's backup key with a new one
    ///
    /// Makes a new key, backs up DIR (default: the last backup's directory) under it, reads
    /// that backup back from the store and verifies every byte, re-deposits the new key in the
    /// vault under the same password (asked for, and proved first), and only then deletes the
    /// backups made under the old key, and the old key's incremental repository with its
    /// snapshots (the next `backup --incremental` starts a new one under the new key).
    /// Interrupted, it can be run again and finishes the same rotation. A recovery-code device
    /// prints its new code.
    Rotate {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Create a new random backup key and write its recovery code to FILE (mode 0600)
    New {
        /// Where to write the recovery code; refuses to overwrite an existing file
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Protect the backup key with a password: deposit it in the Backup Key Vault
    ///
    /// The password is asked for twice on the terminal (or read from LOCKBOX_PASSWORD) and never
    /// leaves this machine: the vault learns only an OPAQUE registration. Anyone who later
    /// knows the password can recover the key with `lockbox key recover`; after --attempts
    /// wrong passwords in a row the vault destroys the record for good. Depositing again
    /// replaces the account's record.
    Deposit {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        vault: VaultArgs,
        /// Wrong passwords allowed before the record is destroyed (1-100)
        #[arg(long, value_name = "N", default_value_t = 10)]
        attempts: u8,
    },
    /// Recover the backup key from the vault with the password; write its recovery code to FILE
    ///
    /// Every try spends one of the record's attempts, right or wrong, until the right password
    /// resets the count. A wrong password exits with status 2 and says how many attempts are
    /// left; a destroyed record exits with status 4.
    Recover {
        #[command(flatten)]
        vault: VaultArgs,
        /// Where to write the recovery code (mode 0600); refuses to overwrite an existing file
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Show whether the vault holds a record for the account, and its attempts left
    Status {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Change the vault password (the backup key stays the same)
    ///
    /// Asks for the current password (or LOCKBOX_PASSWORD), which spends an attempt like a
    /// recovery, then for the new one twice (or LOCKBOX_NEW_PASSWORD).
    ChangePassword {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Delete the account's vault record after proving the password
    ///
    /// Backups stay readable with the recovery code; only the password path is gone.
    Forget {
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// Where the Backup Key Vault is and which account's record to use.
#[derive(Debug, Args)]
pub struct VaultArgs {
    /// Vault endpoint (http://host:port, or https:// with TLS); default: `vault` in the config
    #[arg(long, value_name = "URL")]
    pub vault: Option<String>,
    /// Account id the record is filed under (e.g. a phone number); default: `account` in the
    /// config
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// PEM file of the CA that signed the vault's TLS certificate; default: `vault_ca` in the
    /// config
    #[arg(long, value_name = "FILE")]
    pub vault_ca: Option<PathBuf>,
    /// Vault partition that holds the account (a node serves the partitions in its config)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub partition: u32,
    /// File holding the account token the messaging service's login issued (the vault acts
    /// for an account only with its token); default: LOCKBOX_ACCOUNT_TOKEN, then `token_file`
    /// in the config
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// File holding the recovery code (64 hex digits; spaces and dashes are ignored).
    /// Without it, LOCKBOX_RECOVERY_CODE is used.
    #[arg(long, value_name = "FILE", visible_alias = "recovery-code-file")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CryptArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Output file (default: stdout)
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Input file (default: stdin)
    #[arg(value_name = "IN")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to back up (on an enabled device: default the last one backed up)
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Storage URL (file:///path, s3://bucket/prefix, ...)
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// After a successful backup, delete older backups, keeping the newest N that verify
    /// under the key, this one included
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// For a snapshot: also keep the newest snapshot of each of the last N days that have one
    /// (UTC days), when pruning after the backup
    #[arg(long, value_name = "N", conflicts_with_all = ["to", "stream"])]
    pub keep_daily: Option<usize>,
    /// For a snapshot: also keep the newest snapshot of each of the last N weeks that have one
    /// (ISO weeks, Monday to Sunday, UTC), when pruning after the backup
    #[arg(long, value_name = "N", conflicts_with_all = ["to", "stream"])]
    pub keep_weekly: Option<usize>,
    /// Make an incremental snapshot in the device's repository: only chunks the repository
    /// does not hold yet are uploaded. The default on an enabled device (kept for scripts).
    /// With `--keep N`, the snapshots are then pruned to the newest N (see `prune --snapshots`)
    #[arg(long, conflicts_with_all = ["to", "stream"])]
    pub incremental: bool,
    /// On an enabled device: make one single-stream backup instead of a snapshot (the whole
    /// directory as one sealed stream, as `--to` always makes)
    #[arg(long)]
    pub stream: bool,
    /// For a snapshot: print the result as JSON on stdout
    #[arg(long, conflicts_with_all = ["to", "stream"])]
    pub json: bool,
    /// On a password device: the account token for pinning the catalog's new end at the vault
    #[command(flatten)]
    pub token: TokenArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Storage URL
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// List this device's incremental snapshots from the repository's authenticated catalog
    /// (checked against where this device last saw it end). The default on an enabled device
    /// without --from
    #[arg(long, conflicts_with = "from")]
    pub snapshots: bool,
    /// For snapshots: print them as JSON on stdout
    #[arg(long, conflicts_with = "from")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also download every pack and verify every chunk in it (reads the whole repository)
    #[arg(long)]
    pub read_data: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where to restore: must not exist yet, or be an empty directory that is not a mount point
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// Storage URL
    #[arg(long = "store", visible_alias = "from", value_name = "URL")]
    pub from: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Backup id (or a unique prefix of it); default: the newest backup whose header
    /// verifies under the key
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Restore an incremental snapshot of this device's repository: the one whose id starts
    /// with ID, or the newest with `--snapshot latest`
    #[arg(long, value_name = "ID", conflicts_with_all = ["backup", "from", "with_password"])]
    pub snapshot: Option<String>,
    /// With --snapshot: restore only this path of the snapshot (as it was below the backed-up
    /// directory, e.g. `Media/Images`) and what is below it, into DEST with its directories
    #[arg(long, value_name = "P", requires = "snapshot")]
    pub path: Option<PathBuf>,
    /// Get the backup key from the Backup Key Vault with your password instead of a recovery
    /// code (spends one attempt)
    #[arg(
        long = "password",
        visible_alias = "with-password",
        conflicts_with = "key_file"
    )]
    pub with_password: bool,
    #[command(flatten)]
    pub vault: VaultArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Storage URL
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// How many of the newest backups to keep (at least 1; required for single streams)
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// With --snapshots: also keep the newest snapshot of each of the last N days that have
    /// one (UTC days)
    #[arg(long, value_name = "N", requires = "snapshots")]
    pub keep_daily: Option<usize>,
    /// With --snapshots: also keep the newest snapshot of each of the last N weeks that have
    /// one (ISO weeks, Monday to Sunday, UTC)
    #[arg(long, value_name = "N", requires = "snapshots")]
    pub keep_weekly: Option<usize>,
    /// Prune this device's incremental snapshots instead: forget those no --keep rule keeps
    /// (a snapshot any rule keeps stays), delete the chunks only they held, and rewrite packs
    /// left mostly empty. Safe to interrupt: every kept snapshot stays restorable and the next
    /// prune finishes the job
    #[arg(long, conflicts_with_all = ["from", "key_file"])]
    pub snapshots: bool,
    /// With --snapshots: print the report as JSON on stdout
    #[arg(long, requires = "snapshots")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's files in this directory instead of a temporary one
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}
