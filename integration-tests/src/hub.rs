//! One `ferry agent` child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_proto::v1::GetHubInfoRequest;
use ferry_proto::v1::hub_client::HubClient;
use tonic::transport::Channel;

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

/// How to start a hub.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    pub name: Option<String>,
    /// Extra `ferry agent` arguments.
    pub extra_args: Vec<String>,
}

/// A running `ferry agent` with its own temporary data directory.
pub struct HubProcess {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    options: HubOptions,
    address: SocketAddr,
    log_path: PathBuf,
}

impl HubProcess {
    /// Starts a hub on `127.0.0.1:0` and waits until it answers.
    pub async fn start(options: HubOptions) -> anyhow::Result<HubProcess> {
        let data_dir = tempfile::Builder::new().prefix("ferry-test-hub").tempdir()?;
        let log_path = data_dir.path().join("agent.log");
        let mut hub = HubProcess {
            child: None,
            data_dir,
            options,
            address: "127.0.0.1:0".parse()?,
            log_path,
        };
        hub.spawn().await?;
        Ok(hub)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let address_file = self.data_dir().join("hub.addr");
        let _ = std::fs::remove_file(&address_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = Command::new(ferry_binary());
        command
            .arg("agent")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(
                self.options
                    .name
                    .iter()
                    .flat_map(|name| ["--name".to_owned(), name.clone()]),
            )
            .args(&self.options.extra_args)
            .env("FERRY_LOG", "info,ferry_hub=debug")
            .env_remove("FERRY_HUB")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(command.spawn().context("spawning ferry agent")?);
        let address = crate::eventually("the hub to write its address", Duration::from_secs(60), || {
            let address_file = address_file.clone();
            async move {
                let text = std::fs::read_to_string(&address_file).ok()?;
                text.trim().parse::<SocketAddr>().ok()
            }
        })
        .await;
        let address = match address {
            Ok(address) => address,
            Err(error) => bail!("{error}; agent log:\n{}", self.agent_log()),
        };
        self.address = address;
        let mut client = self.client().await?;
        client.get_hub_info(GetHubInfoRequest {}).await?;
        Ok(())
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// What the agent printed so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn client(&self) -> anyhow::Result<HubClient<Channel>> {
        Ok(HubClient::connect(format!("http://{}", self.address)).await?)
    }

    /// Runs the `ferry` CLI against this hub.
    pub fn ferry(&self, args: &[&str]) -> Output {
        Command::new(ferry_binary())
            .args(args)
            .env("FERRY_HUB", self.address.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("running the ferry CLI")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("hub is not running")?;
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        Ok(child.wait()?)
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("hub is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the hub again on the same data directory (after terminate/kill).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
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
            eprintln!("--- agent log of {} ---\n{}", self.address, self.agent_log());
        }
    }
}
