//! Network namespaces for multi-hub tests: a whole LAN on this machine that
//! no packet can leave.
//!
//! A [`Lan`] is a Linux bridge in a namespace of its own and one namespace
//! per host, each joined to the bridge by a veth pair whose ends are created
//! directly inside those namespaces (nothing is ever added to this machine's
//! own network). Hosts get private IPv4 addresses that exist only there
//! (`10.213.<n>.0/24`) and `lo` up. A [`NetNs`] is a single namespace with
//! only `lo`, for several hubs sharing one network stack.
//!
//! Hubs run inside them through `ip netns exec`, so mDNS (which joins
//! multicast groups on every interface that is up) only ever sees the
//! namespace's own interfaces.
//!
//! Names start with [`NAMESPACE_PREFIX`] followed by the test process's pid,
//! so the leftovers of a run that crashed (or was killed with `kill -9`,
//! which no `Drop` survives) are recognised by their dead owner and removed,
//! with any process still inside them, the next time a namespace is created.
//!
//! Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Tests
//! call [`netns_or_skip`] first: without root they are skipped with a
//! message, unless `FERRY_REQUIRE_NETNS` is set or `CI` says this is a CI
//! run, where a skip would hide a failure and the test fails instead (the
//! convention of `discovery/tests/loopback_mdns.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::hub::{HubOptions, HubProcess, Placement};

/// Every namespace the harness creates starts with this, then the pid of
/// the test process that owns it and a `-`.
pub const NAMESPACE_PREFIX: &str = "ferry-it-";

/// gRPC port of every hub of a [`Lan`]: each has an address of its own.
pub const LAN_HUB_PORT: u16 = 7411;

/// The interface of a [`Lan`] host, inside its namespace.
pub const LAN_INTERFACE: &str = "lan0";

/// The bridge, inside the bridge namespace.
const BRIDGE: &str = "br0";

/// First host number of a Lan's subnet: host `i` is `10.213.<n>.(10 + i)`.
const FIRST_HOST: u8 = 10;

/// Lans and namespaces created by this process so far.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

static REAP_STALE: Once = Once::new();

/// Whether network-namespace tests can run here; if not, either panics (CI,
/// or `FERRY_REQUIRE_NETNS` set) or prints why `test_name` is skipped and
/// returns `false`.
pub fn netns_or_skip(test_name: &str) -> bool {
    let Some(reason) = why_netns_unavailable() else {
        return true;
    };
    if netns_required() {
        panic!("{test_name}: {reason}; FERRY_REQUIRE_NETNS or CI is set, so this fails instead of skipping");
    }
    eprintln!("skipping {test_name}: {reason} (set FERRY_REQUIRE_NETNS=1 to fail instead)");
    false
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.is_empty() && value != "0" && !value.eq_ignore_ascii_case("false"))
}

fn netns_required() -> bool {
    env_flag("FERRY_REQUIRE_NETNS") || env_flag("CI")
}

fn why_netns_unavailable() -> Option<String> {
    match std::fs::metadata("/proc/self") {
        Ok(metadata) if metadata.uid() == 0 => {}
        Ok(metadata) => {
            return Some(format!(
                "creating network namespaces needs root (running as uid {})",
                metadata.uid()
            ));
        }
        Err(error) => return Some(format!("cannot tell who this process runs as: {error}")),
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => None,
        _ => Some("iproute2's `ip` is not installed (run scripts/install-deps)".to_owned()),
    }
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Names of every named network namespace on the machine (`ip netns list`).
pub fn list_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Named namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    list_namespaces()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// The pid in a harness namespace's name.
fn owner_pid(namespace: &str) -> Option<u32> {
    namespace
        .strip_prefix(NAMESPACE_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Removes the namespaces of earlier test processes that are gone, with
/// whatever still runs in them. Runs once per process, before the first
/// namespace is created.
fn reap_stale_namespaces() {
    REAP_STALE.call_once(|| {
        let own = std::process::id();
        for namespace in namespaces_with_prefix(NAMESPACE_PREFIX) {
            let Some(pid) = owner_pid(&namespace) else {
                continue;
            };
            if pid == own || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            eprintln!("removing stale network namespace {namespace} (its test process {pid} is gone)");
            if let Err(error) = remove_namespace(&namespace) {
                eprintln!("could not remove stale namespace {namespace}: {error:#}");
            }
        }
    });
}

/// Processes that run inside `namespace`.
fn pids_in(namespace: &str) -> Vec<String> {
    ip(&["netns", "pids", namespace])
        .map(|text| text.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Kills every process in `namespace` (bounded wait for them to go), then
/// deletes it; its links go with it.
fn remove_namespace(namespace: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_in(namespace);
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("processes {pids:?} in {namespace} survived SIGKILL; deleting the namespace anyway");
            break;
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(&["netns", "delete", namespace])?;
    Ok(())
}

/// One network namespace owned by the test: `lo` up, nothing else unless a
/// [`Lan`] adds it. Removed on drop, with every process in it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new namespace with only `lo` (up), named
    /// `ferry-it-<pid>-<n>-<label>`.
    pub fn create(label: &str) -> anyhow::Result<NetNs> {
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        NetNs::create_named(format!("{NAMESPACE_PREFIX}{}-{sequence}-{label}", std::process::id()))
    }

    fn create_named(name: String) -> anyhow::Result<NetNs> {
        reap_stale_namespaces();
        ip(&["netns", "add", &name])?;
        let namespace = NetNs { name };
        ip(&["-n", &namespace.name, "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `ip ARGS` on this namespace (`ip -n NAME ARGS`).
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `program ARGS` inside this namespace and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// Starts a `ferry agent` inside this namespace (on `127.0.0.1:0` unless
    /// `options.listen` says otherwise) and waits until it answers. mDNS is
    /// on unless the options say otherwise: it sees only this namespace.
    pub async fn start_hub(&self, options: HubOptions) -> anyhow::Result<HubProcess> {
        HubProcess::start_placed(options, Placement::Namespace(self.name.clone())).await
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(error) = remove_namespace(&self.name) {
            eprintln!("could not remove network namespace {}: {error:#}", self.name);
        }
    }
}

/// A LAN of network namespaces: a bridge in its own namespace and one
/// namespace per host, each joined to the bridge by a veth pair, with a
/// private address per host. Dropping it kills everything still running in
/// it and removes every namespace (and with them every link).
#[derive(Debug)]
pub struct Lan {
    /// Declared before `bridge`: hosts are removed first.
    hosts: Vec<NetNs>,
    bridge: NetNs,
    prefix: String,
    subnet: u8,
}

impl Lan {
    /// A LAN with `hosts` hosts (more can be added with [`Lan::add_host`]).
    pub fn new(hosts: usize) -> anyhow::Result<Lan> {
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{NAMESPACE_PREFIX}{pid}-{sequence}-");
        // The addresses exist only inside this Lan's namespaces, so two Lans
        // with the same subnet could not even see each other; a subnet per
        // Lan just keeps logs of parallel tests readable.
        let subnet = u8::try_from(1 + (pid.wrapping_mul(7).wrapping_add(sequence)) % 250).expect("1..=250");
        let bridge = NetNs::create_named(format!("{prefix}br"))?;
        bridge.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        bridge.ip(&["link", "set", BRIDGE, "up"])?;
        let mut lan = Lan {
            hosts: Vec::new(),
            bridge,
            prefix,
            subnet,
        };
        for _ in 0..hosts {
            lan.add_host()?;
        }
        Ok(lan)
    }

    /// Adds a host: a namespace `<prefix>h<i>` whose `lan0` is joined to the
    /// bridge through port `h<i>`, with address `10.213.<n>.(10 + i)/24`.
    /// Returns its index.
    pub fn add_host(&mut self) -> anyhow::Result<usize> {
        let index = self.hosts.len();
        anyhow::ensure!(index < 200, "a Lan has at most 200 hosts");
        let host = NetNs::create_named(format!("{}h{index}", self.prefix))?;
        let port = Lan::bridge_port(index);
        // Both ends are created directly in their namespaces: nothing ever
        // appears in this machine's own network.
        ip(&[
            "link",
            "add",
            LAN_INTERFACE,
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.bridge.name(),
        ])?;
        self.bridge.ip(&["link", "set", &port, "master", BRIDGE])?;
        self.bridge.ip(&["link", "set", &port, "up"])?;
        let address = format!("{}/24", self.host_ip(index));
        host.ip(&["addr", "add", &address, "dev", LAN_INTERFACE])?;
        host.ip(&["link", "set", LAN_INTERFACE, "up"])?;
        self.hosts.push(host);
        Ok(index)
    }

    fn bridge_port(index: usize) -> String {
        format!("h{index}")
    }

    /// Start of every namespace name of this Lan.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Lan's subnet, e.g. `10.213.7.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.213.{}.0/24", self.subnet)
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `index`'s namespace.
    pub fn host(&self, index: usize) -> &NetNs {
        &self.hosts[index]
    }

    /// The bridge's namespace.
    pub fn bridge(&self) -> &NetNs {
        &self.bridge
    }

    /// Every namespace of this Lan, bridge included.
    pub fn namespaces(&self) -> Vec<String> {
        self.hosts
            .iter()
            .chain(std::iter::once(&self.bridge))
            .map(|namespace| namespace.name().to_owned())
            .collect()
    }

    /// Host `index`'s address on the Lan.
    pub fn host_ip(&self, index: usize) -> Ipv4Addr {
        let host = u8::try_from(index).expect("at most 200 hosts") + FIRST_HOST;
        Ipv4Addr::new(10, 213, self.subnet, host)
    }

    /// The gRPC address a hub on host `index` listens on.
    pub fn hub_address(&self, index: usize) -> SocketAddr {
        SocketAddr::from((self.host_ip(index), LAN_HUB_PORT))
    }

    /// A command that runs `program` inside host `index`'s namespace.
    pub fn command(&self, index: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.hosts[index].command(program)
    }

    /// Starts a real `ferry agent` on host `index`, listening on
    /// [`Lan::hub_address`] (unless `options.listen` says otherwise), with
    /// mDNS on (unless the options say otherwise), and waits until it
    /// answers. The handle runs the CLI inside the namespace; restarting it
    /// keeps its data dir, address and so its hub id.
    pub async fn start_hub(&self, index: usize, mut options: HubOptions) -> anyhow::Result<HubProcess> {
        anyhow::ensure!(index < self.hosts.len(), "the Lan has no host {index}");
        options.listen.get_or_insert(self.hub_address(index));
        self.hosts[index].start_hub(options).await
    }

    /// Cuts host `index` off the Lan, as an unplugged cable: its bridge port
    /// goes down (and its `lan0` loses carrier).
    pub fn cut_link(&self, index: usize) -> anyhow::Result<()> {
        self.bridge.ip(&["link", "set", &Lan::bridge_port(index), "down"])?;
        Ok(())
    }

    /// Plugs host `index` back in after [`Lan::cut_link`].
    pub fn restore_link(&self, index: usize) -> anyhow::Result<()> {
        self.bridge.ip(&["link", "set", &Lan::bridge_port(index), "up"])?;
        Ok(())
    }
}
