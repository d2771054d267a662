//! One `ferry agent` child process, on this machine's loopback or inside a
//! network namespace the test created.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_proto::v1::GetHubInfoRequest;
use ferry_proto::v1::hub_client::HubClient;
use serde_json::Value;
use tonic::transport::Channel;

/// How long a hub may take to start answering before a test gives up.
/// A safety net against hangs, not a performance requirement.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The `ferry` binary built by this workspace (or `$FERRY_BIN`).
pub fn ferry_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FERRY_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let binary = profile_dir.join("ferry");
    assert!(
        binary.exists(),
        "{} does not exist; build it first with `cargo build -p ferry-hub --bin ferry`",
        binary.display()
    );
    binary
}

/// For a benchmark (built in the bench profile, in target/release/deps,
/// where [`ferry_binary`] would look for target/release/ferry): runs this
/// executable again with `FERRY_BIN` pointing at the dev profile's binary
/// (set for the child only) and exits with its status.
pub fn rerun_with_dev_ferry() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .with_context(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let ferry = target.join("debug").join("ferry");
    anyhow::ensure!(
        ferry.exists(),
        "{} does not exist; build it first with `cargo build -p ferry-hub --bins`",
        ferry.display()
    );
    let status = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("FERRY_BIN", &ferry)
        .status()?;
    std::process::exit(status.code().unwrap_or(1));
}

/// How to start a hub.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    pub name: Option<String>,
    /// Extra `ferry agent` arguments.
    pub extra_args: Vec<String>,
    /// Address to listen on. `None`: `127.0.0.1:0` for a hub on this
    /// machine's loopback; a namespace chooses its own default.
    pub listen: Option<SocketAddr>,
    /// Where the hub keeps its data. `None`: a temporary directory (which
    /// also holds the agent's log; with a data directory of its own, the
    /// log stays there).
    pub data_dir: Option<PathBuf>,
    /// Mutual TLS under the hub's own cluster CA (the CLI uses the
    /// `admin.cred` it writes). `false`: the hub runs `--insecure`, as
    /// tests of several hubs do until they join one cluster.
    pub secure: bool,
    /// The credential the CLI uses with a secure hub. `None`: the
    /// `admin.cred` the hub wrote (a hub that joined writes none).
    pub credentials: Option<PathBuf>,
}

impl HubOptions {
    /// Options with `--name NAME`.
    pub fn named(name: impl Into<String>) -> HubOptions {
        HubOptions {
            name: Some(name.into()),
            ..HubOptions::default()
        }
    }

    /// Adds one `ferry agent` argument.
    pub fn arg(mut self, arg: impl Into<String>) -> HubOptions {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds `ferry agent` arguments.
    pub fn args<I, S>(mut self, args: I) -> HubOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Listens on `address` (a fixed port survives restarts).
    pub fn listen(mut self, address: SocketAddr) -> HubOptions {
        self.listen = Some(address);
        self
    }

    /// Runs the hub with TLS on, as users run it.
    pub fn secure(mut self) -> HubOptions {
        self.secure = true;
        self
    }

    /// Runs the hub with TLS on, joining the cluster of the hub at `peer`
    /// with `token`; the CLI talks to it with `credentials`.
    pub fn joining(mut self, token: &str, peer: SocketAddr, credentials: impl Into<PathBuf>) -> HubOptions {
        self.secure = true;
        self.credentials = Some(credentials.into());
        self.extra_args.extend([
            "--join".to_owned(),
            token.to_owned(),
            "--peer".to_owned(),
            peer.to_string(),
        ]);
        self
    }

    /// Keeps the hub's data in `directory` (the test cleans it up).
    pub fn data_dir(mut self, directory: impl Into<PathBuf>) -> HubOptions {
        self.data_dir = Some(directory.into());
        self
    }

    fn has_arg(&self, flag: &str) -> bool {
        self.extra_args
            .iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
    }
}

/// Where a hub's process runs.
#[derive(Debug, Clone)]
pub(crate) enum Placement {
    /// In the test's own network namespace (this machine's): mDNS is always
    /// off, so nothing but loopback traffic can come from it.
    Host,
    /// Inside the named network namespace, which the test created.
    Namespace(String),
}

/// A running `ferry agent` with its own temporary data directory.
pub struct HubProcess {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    options: HubOptions,
    placement: Placement,
    address: SocketAddr,
    log_path: PathBuf,
    started_at: Instant,
}

impl HubProcess {
    /// Starts a hub on this machine's loopback (`127.0.0.1:0` unless
    /// `options.listen` says otherwise) with mDNS off, and waits until it
    /// answers. Hubs that use mDNS must run in a namespace: see
    /// [`crate::NetNs`] and [`crate::Lan`].
    pub async fn start(options: HubOptions) -> anyhow::Result<HubProcess> {
        if options.has_arg("--mdns-interface") {
            bail!(
                "a hub on this machine's own network must not use mDNS (its daemon joins multicast \
                 groups on every interface before --mdns-interface applies); start it in a NetNs or a Lan"
            );
        }
        if let Some(listen) = options.listen
            && !listen.ip().is_loopback()
        {
            bail!("a hub on this machine's own network listens on loopback only, not {listen}");
        }
        HubProcess::start_placed(options, Placement::Host).await
    }

    pub(crate) async fn start_placed(options: HubOptions, placement: Placement) -> anyhow::Result<HubProcess> {
        let data_dir = tempfile::Builder::new().prefix("ferry-test-hub").tempdir()?;
        let log_path = data_dir.path().join("agent.log");
        let listen = options.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut hub = HubProcess {
            child: None,
            data_dir,
            options,
            placement,
            address: listen,
            log_path,
            started_at: Instant::now(),
        };
        hub.spawn().await?;
        Ok(hub)
    }

    fn listen(&self) -> SocketAddr {
        self.options
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A command that runs `program` where this hub runs.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.placement {
            Placement::Host => Command::new(program),
            Placement::Namespace(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(program);
                command
            }
        }
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let address_file = self.data_dir().join("hub.addr");
        let _ = std::fs::remove_file(&address_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let listen = self.listen();
        let mut command = self.command(ferry_binary());
        command
            .arg("agent")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(listen.to_string())
            .args(
                self.options
                    .name
                    .iter()
                    .flat_map(|name| ["--name".to_owned(), name.clone()]),
            );
        if matches!(self.placement, Placement::Host) && !self.options.has_arg("--no-mdns") {
            // Hubs outside a test namespace never use mDNS: its daemon would
            // join multicast groups on every interface of this machine.
            command.arg("--no-mdns");
        }
        if !self.options.secure {
            command.arg("--insecure");
            if !listen.ip().is_loopback() && !self.options.has_arg("--config") {
                // Beyond loopback a hub runs insecure only if its config
                // file says so too.
                let config = self.data_dir().join("insecure.toml");
                std::fs::write(&config, "insecure = true\n")?;
                command.arg("--config").arg(config);
            }
        }
        if !self.options.has_arg("--rebalance") {
            // Tests place functions themselves; the rebalancing tests say
            // `--rebalance on` (the default of a hub users start).
            command.args(["--rebalance", "off"]);
        }
        command
            .args(&self.options.extra_args)
            .env("FERRY_LOG", "info,ferry_hub=debug,ferry_discovery=debug")
            // Nothing from the caller's environment may turn mDNS back on or
            // add peers behind the test's back.
            .env_remove("FERRY_HUB")
            .env_remove("FERRY_NO_MDNS")
            .env_remove("FERRY_MDNS_INTERFACES")
            .env_remove("FERRY_PEERS")
            .env_remove("FERRY_CLUSTER_ID")
            .env_remove("FERRY_CONFIG")
            .env_remove("FERRY_REBALANCE")
            .env_remove("FERRY_CPUS")
            .env_remove("FERRY_INSECURE")
            .env_remove("FERRY_CREDENTIALS")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.started_at = Instant::now();
        self.child = Some(command.spawn().context("spawning ferry agent")?);

        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().transpose()) {
                let status = status?;
                self.child = None;
                bail!(
                    "ferry agent exited with {status} before answering; agent log:\n{}",
                    self.agent_log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "ferry agent did not answer within {START_PATIENCE:?}; agent log:\n{}",
                    self.agent_log()
                );
            }
            if listen.port() == 0 {
                match std::fs::read_to_string(&address_file)
                    .ok()
                    .and_then(|text| text.trim().parse::<SocketAddr>().ok())
                {
                    Some(address) => self.address = address,
                    None => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            } else {
                self.address = listen;
            }
            if self.answers().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the hub answers `GetHubInfo` now.
    async fn answers(&self) -> bool {
        match self.placement {
            Placement::Host => match self.client().await {
                Ok(mut client) => client.get_hub_info(GetHubInfoRequest::default()).await.is_ok(),
                Err(_) => false,
            },
            Placement::Namespace(_) => self.ferry(&["info"]).status.success(),
        }
    }

    /// The address the hub serves gRPC on (inside its namespace, if any).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn data_dir(&self) -> &Path {
        self.options.data_dir.as_deref().unwrap_or(self.data_dir.path())
    }

    /// The network namespace the hub runs in, `None` for this machine's.
    pub fn namespace(&self) -> Option<&str> {
        match &self.placement {
            Placement::Host => None,
            Placement::Namespace(namespace) => Some(namespace),
        }
    }

    /// When the current process was spawned (the last start or restart).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Process id of the running agent, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The agent's resident memory now and at its peak.
    pub fn resident_memory(&self) -> anyhow::Result<crate::memory::ResidentMemory> {
        crate::memory::resident_memory(self.pid().context("hub is not running")?)
    }

    /// Makes the agent's peak resident memory its current one, so that
    /// [`HubProcess::resident_memory`] shows the peak from here on.
    pub fn reset_peak_memory(&self) -> anyhow::Result<()> {
        crate::memory::reset_peak(self.pid().context("hub is not running")?)
    }

    /// What the agent printed so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A gRPC client of this hub. Only for hubs on this machine's network:
    /// a hub inside a namespace is reachable only from there, through
    /// [`HubProcess::ferry`].
    pub async fn client(&self) -> anyhow::Result<HubClient<Channel>> {
        if let Placement::Namespace(namespace) = &self.placement {
            bail!(
                "hub {} runs in network namespace {namespace}; use ferry() to reach it",
                self.address
            );
        }
        Ok(HubClient::new(self.channel().await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// A gRPC channel to this hub: mutual TLS with the hub's `admin.cred`
    /// for a secure hub. Only for hubs on this machine's network.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        if let Placement::Namespace(namespace) = &self.placement {
            bail!(
                "hub {} runs in network namespace {namespace}; use ferry() to reach it",
                self.address
            );
        }
        Ok(match self.options.secure {
            true => {
                let tls = client_tls(&std::fs::read_to_string(self.admin_credential())?)?;
                Channel::from_shared(format!("https://{}", self.address))?
                    .tls_config(tls)?
                    .connect()
                    .await?
            }
            false => {
                Channel::from_shared(format!("http://{}", self.address))?
                    .connect()
                    .await?
            }
        })
    }

    /// The credential the CLI uses with this hub: the one the options
    /// name, else the operator credential the hub wrote into its data
    /// directory.
    pub fn admin_credential(&self) -> PathBuf {
        self.options
            .credentials
            .clone()
            .unwrap_or_else(|| self.data_dir().join("admin.cred"))
    }

    /// A `ferry` command aimed at this hub (inside the hub's namespace, if
    /// any) with the means to talk to it: the hub's `admin.cred`, or
    /// `--insecure` for an insecure hub.
    pub fn ferry_command(&self) -> Command {
        let mut command = self.command(ferry_binary());
        command
            .env("FERRY_HUB", self.address.to_string())
            .env_remove("FERRY_CREDENTIALS")
            .env_remove("FERRY_INSECURE");
        match self.options.secure {
            true => command.env("FERRY_CREDENTIALS", self.admin_credential()),
            false => command.env("FERRY_INSECURE", "1"),
        };
        command
    }

    /// Runs the `ferry` CLI against this hub (inside the hub's namespace, if any).
    pub fn ferry(&self, args: &[&str]) -> Output {
        self.ferry_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the ferry CLI")
    }

    /// Runs `ferry ARGS --json` and parses its output; fails with the CLI's
    /// stderr if it did not succeed.
    pub fn ferry_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        let output = self.ferry(&args);
        if !output.status.success() {
            bail!(
                "ferry {} failed with {}: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "ferry {} printed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// `ferry info --json`.
    pub fn info(&self) -> anyhow::Result<Value> {
        self.ferry_json(&["info"])
    }

    /// The hub id, from `ferry info`.
    pub fn hub_id(&self) -> anyhow::Result<String> {
        let info = self.info()?;
        info["hub_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no hub_id in {info}"))
    }

    /// The hub's peer table, from `ferry peers --json`.
    pub fn peers(&self) -> anyhow::Result<Vec<crate::Peer>> {
        let value = self.ferry_json(&["peers"])?;
        crate::Peer::parse_list(&value)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("hub is not running")?;
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        Ok(child.wait()?)
    }

    /// Sends SIGTERM without waiting; [`HubProcess::wait`] collects the exit.
    pub fn signal_terminate(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("hub is not running")?;
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed: {status}", child.id());
        Ok(())
    }

    /// Waits for the process to exit (after a signal).
    pub fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("hub is not running")?;
        Ok(child.wait()?)
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("hub is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the hub again on the same data directory and address (after
    /// terminate/kill); its hub id stays.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn().await
    }

    /// [`HubProcess::restart`] listening on another address (loopback).
    pub async fn restart_on(&mut self, listen: SocketAddr) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.options.listen = Some(listen);
        self.address = listen;
        self.spawn().await
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let place = self.namespace().map(|ns| format!(" in {ns}")).unwrap_or_default();
            eprintln!("--- agent log of {}{place} ---\n{}", self.address, self.agent_log());
        }
    }
}

/// The TLS of a client holding the credential file `text` (its key, its
/// certificate, the cluster CA, as PEM blocks in that order) talking to any
/// hub of the cluster.
pub fn client_tls(text: &str) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let mut pems = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let end = block.find("-----END ").context("a PEM block without its end")?;
        let close = block[end + 9..].find("-----").context("a PEM block without its end")? + end + 9 + 5;
        pems.push(block[..close].to_owned());
        rest = &block[close..];
    }
    anyhow::ensure!(pems.len() == 3, "a credential holds 3 PEM blocks, not {}", pems.len());
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pems[2]))
        .identity(tonic::transport::Identity::from_pem(&pems[1], &pems[0]))
        .domain_name("hub.ferry"))
}
