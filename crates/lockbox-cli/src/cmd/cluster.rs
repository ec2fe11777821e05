//! `lockbox dev cluster`: a whole development fleet on loopback, as child processes of this
//! binary: a dev identity provider, N vault nodes, the fleet ceremony, one gateway, and the
//! `client.toml` a device needs to reach it with pinned keys. Nothing here is a production
//! layout: the PINs are dev constants, the witness sits beside the fleet key, every port is on
//! 127.0.0.1 without TLS.
//!
//! [`start`] returns once every process answers; the [`Cluster`] owns the processes and stops
//! them (SIGTERM, SIGKILL after [`STOP_GRACE`]) when dropped, so `lockbox demo` can run one in
//! process. Call it from synchronous code: it drives its own runtime. It handles SIGINT and
//! SIGTERM from the moment it starts, so a signal during the start stops the cluster instead of
//! orphaning its processes (which run in their own process groups); tokio keeps those handlers
//! for the rest of the process.

use anyhow::{Context, Result, bail, ensure};
use lockbox_proto::manifest::Pin;
use lockbox_token::{AuthConfig, DEV_AUDIENCE, Issuer};
use serde::Serialize;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::fleet::Pins;

/// DEV ONLY: the PINs of the cluster's SoftHSM2 tokens. A real HSM's PIN comes from its
/// operator (`pin_file` or LOCKBOX_HSM_PIN), never from source code.
const DEV_HSM_USER_PIN: &str = "lockbox-dev-pin";
const DEV_HSM_SO_PIN: &str = "lockbox-dev-so-pin";
/// How long a started process may take to answer before the cluster gives up on it.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a process may take to stop after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// The gRPC service the gateway reports healthy (`grpc.health.v1`).
const GATEWAY_HEALTH_SERVICE: &str = "lockbox.vault.v1.Vault";
/// Lines of a failed process's log quoted in the error.
const LOG_TAIL_LINES: usize = 15;

/// What [`start`] builds.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A new or empty directory for everything the cluster writes.
    pub dir: PathBuf,
    /// Every node holds a replica of every partition: one Raft group of `nodes` voters per
    /// partition, bootstrapped by node 1.
    pub nodes: u32,
    pub partitions: u32,
    /// Seal with SoftHSM2 tokens (one per node) instead of software key files.
    pub hsm: bool,
    /// Configured for load: light client Argon2id accepted, gateway rate limits off.
    pub bench: bool,
}

/// A running cluster. Dropping it stops every process it started.
#[derive(Debug)]
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    signals: Signals,
    members: Vec<Member>,
    dir: PathBuf,
    client_config: PathBuf,
    gateway_url: String,
}

#[derive(Debug)]
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

/// One child process: a node or the gateway.
#[derive(Debug)]
struct Member {
    name: String,
    role: Role,
    url: String,
    child: Child,
    pid_file: PathBuf,
    log: PathBuf,
    /// The child's first stdout line, once it has written one (or an empty line at EOF).
    first_line: Option<tokio::sync::oneshot::Receiver<String>>,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// A node, checked by asking it for one of its partitions' keys.
    Node {
        partition: u32,
    },
    Gateway,
}

/// What ended [`Cluster::wait_for_exit_or_signal`].
enum Event {
    Signal,
    Exited(usize, ExitStatus),
}

/// The node configs, each with the partitions it serves.
struct NodePlan {
    config: PathBuf,
    partitions: Vec<u32>,
}

/// Times a start is tried again when a port picked free was taken by another process before a
/// node could bind it.
const PORT_RACE_ATTEMPTS: usize = 3;

/// Creates the cluster in `opts.dir` and returns once every node and the gateway answer.
/// If any step fails, every process already started is stopped. A port taken by another
/// process between being picked and being bound starts the cluster again, with new ports.
pub fn start(opts: &ClusterOptions) -> Result<Cluster> {
    validate(opts)?;
    let mut attempt = 1;
    loop {
        let dir = create_dir(&opts.dir)?;
        match start_in(&dir, opts) {
            Err(e)
                if attempt < PORT_RACE_ATTEMPTS
                    && format!("{e:#}").contains("Address already in use") =>
            {
                tracing::warn!(attempt, "a picked port was taken meanwhile; starting again");
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot clear {}", dir.display()))?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn start_in(dir: &Path, opts: &ClusterOptions) -> Result<Cluster> {
    let dir = dir.to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let signals = Signals::new(&rt)?;
    let issuer = super::dev::new_issuer(&dir.join("issuer.key"))?;
    let n = opts.nodes as usize;
    let ports = free_ports(2 * n + 1)?;
    let gateway_url = format!("http://127.0.0.1:{}", ports[0]);
    let env = child_env(&dir, opts)?;
    let nodes = write_nodes(&dir, opts, &issuer, &ports[1..=n], &ports[n + 1..])?;
    fleet_init(&dir, &nodes, &gateway_url, &env)?;
    let pins = Pins::load(&dir.join("fleet"))?;
    write_gateway(&dir, ports[0], &issuer, opts.bench)?;
    let client_config = write_client(&dir, &gateway_url, &pins)?;
    let mut cluster = Cluster {
        rt,
        signals,
        members: Vec::new(),
        dir,
        client_config,
        gateway_url,
    };
    for (i, (node, port)) in nodes.iter().zip(&ports[1..=n]).enumerate() {
        cluster.spawn_node(i + 1, node, *port, &env)?;
    }
    cluster.spawn_gateway(&env)?;
    cluster.wait_ready(&pins.pin()?)?;
    Ok(cluster)
}

/// `lockbox dev cluster`: start, say `ready`, run until a signal or a failure.
pub fn run(opts: &ClusterOptions) -> Result<()> {
    let cluster = start(opts)?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").and_then(|()| out.flush())?;
    }
    eprint!("{}", cluster.summary(opts));
    cluster.wait_for_exit_or_signal()
}

impl Cluster {
    /// The device config (`client.toml`): the gateway, the pinned fleet keys and the dev
    /// token issuer.
    pub fn client_config(&self) -> &Path {
        &self.client_config
    }

    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    /// SIGKILLs vault node `i` (1-based), as a machine that dies would: no shutdown, no
    /// flush. The cluster stops watching it.
    pub fn kill_node(&mut self, i: usize) -> Result<u32> {
        let name = format!("node-{i}");
        let at = self
            .members
            .iter()
            .position(|m| m.name == name)
            .with_context(|| format!("no running {name}"))?;
        let mut m = self.members.remove(at);
        let pid = m.child.id();
        m.child
            .kill()
            .with_context(|| format!("cannot kill {name}"))?;
        m.child.wait()?;
        let _ = std::fs::remove_file(&m.pid_file);
        Ok(pid)
    }

    /// Fails if SIGINT or SIGTERM arrived since the cluster started. The cluster takes both
    /// signals (so that it can stop its processes), so a program that runs one between its own
    /// steps asks here after each: its Ctrl-C then stops it, and dropping the cluster stops
    /// the processes.
    pub fn check_interrupted(&mut self) -> Result<()> {
        let signals = &mut self.signals;
        let arrived = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::ZERO, signals.next()).await })
            .is_ok();
        ensure!(!arrived, "interrupted; stopping the dev cluster");
        Ok(())
    }

    /// Runs until SIGINT or SIGTERM (then stops every process: `Ok`) or until a process exits
    /// on its own (then stops the others: an error naming it).
    pub fn wait_for_exit_or_signal(mut self) -> Result<()> {
        let event = self
            .rt
            .block_on(watch(&mut self.members, &mut self.signals));
        match event {
            Event::Signal => {
                self.stop();
                Ok(())
            }
            Event::Exited(i, status) => {
                let failure = self.members[i].failure(&format!("exited unexpectedly ({status})"));
                self.stop();
                Err(failure.context("the dev cluster stopped"))
            }
        }
    }

    fn spawn_node(&mut self, i: usize, plan: &NodePlan, port: u16, env: &ChildEnv) -> Result<()> {
        let node_dir = plan
            .config
            .parent()
            .context("node config has no directory")?;
        let partition = *plan
            .partitions
            .first()
            .context("a node without partitions")?;
        let mut cmd = self_command(env)?;
        cmd.args(["vault", "serve", "--config"]).arg(&plan.config);
        let member = Member::spawn(
            format!("node-{i}"),
            Role::Node { partition },
            format!("http://127.0.0.1:{port}"),
            cmd,
            node_dir.join("log"),
            node_dir.join("pid"),
        )?;
        self.members.push(member);
        Ok(())
    }

    fn spawn_gateway(&mut self, env: &ChildEnv) -> Result<()> {
        let mut cmd = self_command(env)?;
        cmd.args(["gateway", "serve", "--config"])
            .arg(self.dir.join("gateway.toml"));
        let member = Member::spawn(
            "gateway".into(),
            Role::Gateway,
            self.gateway_url.clone(),
            cmd,
            self.dir.join("gateway.log"),
            self.dir.join("gateway.pid"),
        )?;
        self.members.push(member);
        Ok(())
    }

    /// Every member answers, in order; a signal meanwhile abandons the start.
    fn wait_ready(&mut self, pin: &Pin) -> Result<()> {
        let members = &mut self.members;
        let signals = &mut self.signals;
        self.rt.block_on(async {
            tokio::select! {
                biased;
                () = signals.next() => bail!("interrupted while the dev cluster was starting"),
                ready = all_ready(members, pin) => ready,
            }
        })
    }

    fn summary(&self, opts: &ClusterOptions) -> String {
        let sealer = if opts.hsm {
            "SoftHSM2 tokens"
        } else {
            "software key files"
        };
        let mut s = format!(
            "dev cluster {DEV_AUDIENCE}: {} nodes, {} partitions, sealed with {sealer}\n",
            opts.nodes, opts.partitions
        );
        for m in &self.members {
            s += &format!(
                "  {:<8} {}  pid {}  log {}\n",
                m.name,
                m.url,
                m.child.id(),
                m.log.display()
            );
        }
        s += &format!(
            "devices: lockbox --config {} key deposit|recover|status ...\n\
             (the gateway {}, the pinned fleet keys and the dev token issuer are in that file)\n\
             stop with Ctrl-C or SIGTERM\n",
            self.client_config().display(),
            self.gateway_url()
        );
        s
    }

    /// SIGTERM to every running member, SIGKILL to those still running after [`STOP_GRACE`];
    /// removes the pid files. Idempotent.
    fn stop(&mut self) {
        for m in &mut self.members {
            m.terminate();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for m in &mut self.members {
            m.reap(deadline);
        }
        self.members.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Signals {
    /// Registered before any process starts, so a signal during the start is not lost.
    fn new(rt: &tokio::runtime::Runtime) -> Result<Self> {
        let _in_runtime = rt.enter();
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}

impl Member {
    /// Starts `cmd` with stderr to `log`, its first stdout line awaited later, in its
    /// own process group (a Ctrl-C on the terminal reaches the cluster, which stops it), and
    /// writes its pid file.
    fn spawn(
        name: String,
        role: Role,
        url: String,
        mut cmd: Command,
        log: PathBuf,
        pid_file: PathBuf,
    ) -> Result<Member> {
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let first_line = child.stdout.take().map(read_first_line);
        let member = Member {
            name,
            role,
            url,
            child,
            pid_file,
            log,
            first_line,
        };
        std::fs::write(&member.pid_file, format!("{}\n", member.child.id()))
            .with_context(|| format!("cannot write {}", member.pid_file.display()))?;
        Ok(member)
    }

    async fn ready(&mut self, pin: &Pin) -> Result<()> {
        let line = match self.first_line.take() {
            Some(rx) => rx.await.unwrap_or_default(),
            None => String::new(),
        };
        if !line.starts_with("listening on ") {
            self.settle().await;
            let status = match self.child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                _ => format!("wrote {:?} instead of `listening on ADDR`", line.trim()),
            };
            return Err(self.failure(&format!("{status} before it was listening")));
        }
        match tokio::time::timeout(READY_WITHIN, self.answers(pin)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure(&format!(
                "did not answer at {} within {} s",
                self.url,
                READY_WITHIN.as_secs()
            ))),
        }
    }

    /// Until the member answers a real request: a node its partition's keys, the gateway its
    /// health and a manifest log the pins accept (what a device with `client.toml` needs).
    async fn answers(&self, pin: &Pin) {
        loop {
            let answered = match self.role {
                Role::Node { partition } => {
                    lockbox_client::VaultClient::discover(&self.url, partition)
                        .await
                        .is_ok()
                }
                Role::Gateway => gateway_answers(&self.url, pin).await,
            };
            if answered {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Gives a process whose stdout closed a moment to exit, so its status can be reported.
    async fn settle(&mut self) {
        for _ in 0..20 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An error naming this member, its pid and the end of its log.
    fn failure(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} (pid {}) {what}; last lines of {}:\n{}",
            self.name,
            self.child.id(),
            self.log.display(),
            log_tail(&self.log)
        )
    }

    fn terminate(&mut self) {
        use nix::sys::signal::{Signal as Sig, kill};
        // Only a child not yet reaped: its pid cannot have been reused.
        if let (Ok(None), Ok(pid)) = (self.child.try_wait(), i32::try_from(self.child.id())) {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Sig::SIGTERM);
        }
    }

    fn reap(&mut self, deadline: Instant) {
        loop {
            match self.child.try_wait() {
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => break,
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

async fn all_ready(members: &mut [Member], pin: &Pin) -> Result<()> {
    for m in members {
        m.ready(pin).await?;
    }
    Ok(())
}

async fn watch(members: &mut [Member], signals: &mut Signals) -> Event {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            biased;
            () = signals.next() => return Event::Signal,
            _ = tick.tick() => {
                for (i, m) in members.iter_mut().enumerate() {
                    if let Ok(Some(status)) = m.child.try_wait() {
                        return Event::Exited(i, status);
                    }
                }
            }
        }
    }
}

async fn gateway_answers(url: &str, pin: &Pin) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let request = HealthCheckRequest {
        service: GATEWAY_HEALTH_SERVICE.into(),
    };
    let serving = HealthClient::new(channel)
        .check(request)
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
    serving
        && lockbox_client::fleet::update(url, None, pin, None, lockbox_proto::unix_now_ms())
            .await
            .is_ok()
}

/// Reads the child's first stdout line on a thread of its own, then drains the rest, so the
/// child never blocks on a full pipe.
fn read_first_line(stdout: std::process::ChildStdout) -> tokio::sync::oneshot::Receiver<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .is_err()
    {
        return "  (no log)".into();
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        return "  (empty)".into();
    }
    tail.iter().map(|l| format!("  {l}\n")).collect::<String>()
}

fn validate(opts: &ClusterOptions) -> Result<()> {
    ensure!(opts.nodes >= 1, "--nodes must be at least 1");
    ensure!(opts.partitions >= 1, "--partitions must be at least 1");
    Ok(())
}

/// Creates `dir` (absent or empty) and returns its absolute path.
fn create_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("--dir {} is not a readable directory", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "--dir {} is not empty: a dev cluster starts in a new or empty directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir.join("nodes"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

/// `count` distinct free loopback ports, all held at once while they are picked. Another
/// process may still take one before the cluster binds it; starting again picks new ones.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find a free loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The environment every child gets: with `--hsm softhsm`, SoftHSM2's config (after one token
/// per node is initialised in it) and the dev PIN.
type ChildEnv = Vec<(&'static str, OsString)>;

fn child_env(dir: &Path, opts: &ClusterOptions) -> Result<ChildEnv> {
    if !opts.hsm {
        return Ok(Vec::new());
    }
    let hsm_dir = dir.join("softhsm");
    let conf = lockbox_hsm::softhsm::write_conf(&hsm_dir)?;
    for i in 1..=opts.nodes {
        lockbox_hsm::softhsm::init_token(
            &hsm_dir,
            &format!("node-{i}"),
            DEV_HSM_SO_PIN,
            DEV_HSM_USER_PIN,
        )?;
    }
    Ok(vec![
        (lockbox_hsm::softhsm::CONF_ENV, conf.into_os_string()),
        (lockbox_hsm::PIN_ENV_VAR, DEV_HSM_USER_PIN.into()),
    ])
}

/// This binary, with the cluster's environment.
fn self_command(env: &ChildEnv) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the lockbox binary")?;
    let mut cmd = Command::new(exe);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// `nodes/<i>/vault.toml`.
#[derive(Serialize)]
struct NodeToml {
    node_id: String,
    listen: String,
    advertise: String,
    data_dir: &'static str,
    partitions: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_entries_per_account: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealer: Option<Pkcs11Toml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_client_ksf: Option<KsfToml>,
    replication: ReplicationToml,
}

/// The client Argon2id floor a `--bench` cluster accepts (the benchmark's own parameters).
#[derive(Serialize)]
struct KsfToml {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

impl KsfToml {
    fn bench() -> Self {
        let k = lockbox_bench::load::KSF;
        Self {
            m_cost_kib: k.m_cost_kib(),
            t_cost: k.t_cost(),
            p_cost: k.p_cost(),
        }
    }
}

#[derive(Serialize)]
struct ReplicationToml {
    raft_id: u64,
    peer_listen: String,
    bootstrap: bool,
    members: Vec<lockbox_vault::config::Member>,
}

#[derive(Serialize)]
struct Pkcs11Toml {
    kind: &'static str,
    module: &'static str,
    token_label: String,
}

fn write_nodes(
    dir: &Path,
    opts: &ClusterOptions,
    issuer: &Issuer,
    ports: &[u16],
    peer_ports: &[u16],
) -> Result<Vec<NodePlan>> {
    let members: Vec<lockbox_vault::config::Member> = (1..=opts.nodes)
        .zip(peer_ports)
        .map(|(i, port)| lockbox_vault::config::Member {
            id: u64::from(i),
            addr: format!("127.0.0.1:{port}"),
        })
        .collect();
    let mut plans = Vec::new();
    for ((i, port), member) in (1..=opts.nodes).zip(ports).zip(&members) {
        let partitions: Vec<u32> = (0..opts.partitions).collect();
        let node = NodeToml {
            node_id: format!("node-{i}"),
            listen: format!("127.0.0.1:{port}"),
            advertise: format!("http://127.0.0.1:{port}"),
            data_dir: "data",
            partitions: partitions.clone(),
            sealer: opts.hsm.then(|| Pkcs11Toml {
                kind: "pkcs11",
                module: lockbox_hsm::softhsm::MODULE,
                token_label: format!("node-{i}"),
            }),
            min_client_ksf: opts.bench.then(KsfToml::bench),
            // A benchmark recovers a few accounts far more often than any device would.
            replay_entries_per_account: opts.bench.then_some(100_000),
            replication: ReplicationToml {
                raft_id: member.id,
                peer_listen: member.addr.clone(),
                bootstrap: i == 1,
                members: members.clone(),
            },
        };
        let node_dir = dir.join("nodes").join(i.to_string());
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("cannot create {}", node_dir.display()))?;
        let config = node_dir.join("vault.toml");
        let text = format!(
            "{}\n{}",
            toml::to_string(&node)?,
            AuthConfig::toml_section(issuer, DEV_AUDIENCE)
        );
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        plans.push(NodePlan { config, partitions });
    }
    Ok(plans)
}

/// The ceremony, as a child process so that it sees the SoftHSM2 environment.
fn fleet_init(dir: &Path, nodes: &[NodePlan], gateway_url: &str, env: &ChildEnv) -> Result<()> {
    let mut cmd = self_command(env)?;
    cmd.args([
        "fleet",
        "init",
        "--fleet-id",
        DEV_AUDIENCE,
        "--gateway",
        gateway_url,
    ])
    .arg("--dir")
    .arg(dir.join("fleet"))
    .stdin(Stdio::null());
    for n in nodes {
        cmd.arg("--node").arg(&n.config);
    }
    let out = cmd.output().context("cannot run lockbox fleet init")?;
    if !out.status.success() {
        bail!(
            "lockbox fleet init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct GatewayToml {
    listen: String,
    manifest_log: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsToml>,
}

/// The gateway's rate limits, all off (0 disables a rate; logins never back off).
#[derive(Serialize)]
struct LimitsToml {
    global_per_second: u32,
    client_per_second: u32,
    account_per_minute: u32,
    login_free: u32,
}

impl LimitsToml {
    const OFF: Self = Self {
        global_per_second: 0,
        client_per_second: 0,
        account_per_minute: 0,
        login_free: u32::MAX,
    };
}

fn write_gateway(dir: &Path, port: u16, issuer: &Issuer, bench: bool) -> Result<()> {
    let gateway = GatewayToml {
        listen: format!("127.0.0.1:{port}"),
        manifest_log: dir.join("fleet").join("manifests"),
        limits: bench.then_some(LimitsToml::OFF),
    };
    let path = dir.join("gateway.toml");
    let text = format!(
        "{}\n{}",
        toml::to_string(&gateway)?,
        AuthConfig::toml_section(issuer, DEV_AUDIENCE)
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `client.toml`: what `lockbox --config` reads to reach this fleet.
#[derive(Serialize)]
struct ClientToml<'a> {
    gateway: &'a str,
    fleet_id: &'a str,
    fleet_public_key: &'a str,
    witness_public_key: &'a str,
    dev_issuer_key: PathBuf,
}

fn write_client(dir: &Path, gateway_url: &str, pins: &Pins) -> Result<PathBuf> {
    let client = ClientToml {
        gateway: gateway_url,
        fleet_id: &pins.fleet_id,
        fleet_public_key: &pins.fleet_public_key,
        witness_public_key: &pins.witness_public_key,
        dev_issuer_key: dir.join("issuer.key"),
    };
    let path = dir.join("client.toml");
    std::fs::write(&path, toml::to_string(&client)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    //! The start-failure paths, with a shell process standing in for a node: a real node cannot
    //! be made to fail on cue through `lockbox dev cluster` (its ports and files are its own).

    use super::*;
    use lockbox_proto::manifest::{FleetKey, WitnessKey};

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn member(dir: &Path, name: &str, script: &str) -> Member {
        Member::spawn(
            name.into(),
            Role::Node { partition: 0 },
            "http://127.0.0.1:9".into(),
            sh(script),
            dir.join(format!("{name}.log")),
            dir.join(format!("{name}.pid")),
        )
        .unwrap()
    }

    fn any_pin() -> Pin {
        Pin {
            fleet: FleetKey::generate().public_key(),
            witness: WitnessKey::generate().public_key(),
            fleet_id: DEV_AUDIENCE.into(),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_process_that_dies_before_listening_is_named_with_its_status_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = member(
            dir.path(),
            "node-7",
            "echo 'cannot bind 127.0.0.1:1' >&2; exit 3",
        );
        let err = runtime()
            .block_on(m.ready(&any_pin()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("node-7 (pid "), "{err}");
        assert!(
            err.contains("exited (exit status: 3) before it was listening"),
            "{err}"
        );
        assert!(err.contains("  cannot bind 127.0.0.1:1\n"), "{err}");
    }

    #[test]
    fn dropping_a_cluster_stops_what_it_started_and_removes_its_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let signals = Signals::new(&rt).unwrap();
        let m = member(
            dir.path(),
            "node-1",
            "echo 'listening on x'; exec sleep 600",
        );
        let pid = nix::unistd::Pid::from_raw(i32::try_from(m.child.id()).unwrap());
        assert!(dir.path().join("node-1.pid").exists());
        let cluster = Cluster {
            rt,
            signals,
            members: vec![m],
            dir: dir.path().to_path_buf(),
            client_config: dir.path().join("client.toml"),
            gateway_url: String::new(),
        };
        drop(cluster);
        // Reaped, not merely signalled: the pid no longer exists.
        assert_eq!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        );
        assert!(!dir.path().join("node-1.pid").exists());
    }
}
