//! Test harness: real `ferry agent` processes with temporary data
//! directories, the `ferry` CLI against them, and helpers to wait for a
//! condition without fixed sleeps.
//!
//! Hubs run either on this machine's loopback with mDNS off
//! ([`HubProcess::start`]), or inside network namespaces the test creates
//! ([`NetNs`], and [`Lan`]: a bridge with one namespace per hub), where mDNS
//! can run without a single packet reaching the machine's interfaces.
//! Every hub is killed when its [`HubProcess`] is dropped and every
//! namespace is removed when its owner is dropped, also when the test fails.

pub mod corpus;
mod hub;
pub mod memory;
pub mod moves;
pub mod netns;

pub use hub::{HubOptions, HubProcess, client_tls, ferry_binary, rerun_with_dev_ferry};
pub use netns::{Lan, NetNs, netns_or_skip};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Path of a guest module shipped in the repository, e.g. `examples/ticker.wasm`
/// or `guests/trap.wasm`.
pub fn guest(relative: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = match relative.split_once('/') {
        Some(("examples", file)) => root.join("deploy/examples").join(file),
        Some(("guests", file)) => root.join("integration-tests/guests").join(file),
        _ => root.join(relative),
    };
    assert!(
        path.exists(),
        "guest module {} is missing; run deploy/examples/build.sh",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
/// The timeout is a safety net for a hung test, not a performance assertion.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `name` has ended on `hub` — exited or failed — and returns
/// its `ps` entry.
pub async fn wait_ended(hub: &HubProcess, name: &str, patience: Duration) -> anyhow::Result<serde_json::Value> {
    eventually(&format!("{name} to end"), patience, || async {
        let info = function_info_or_null(hub, name);
        matches!(info["state"].as_str(), Some("exited") | Some("failed")).then_some(info)
    })
    .await
}

/// One row of `ferry peers --json`, checked field by field so a test notices
/// when the CLI's JSON contract changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Hub id; empty for a static peer that never answered.
    pub id: String,
    pub name: String,
    /// The gRPC address probes use.
    pub address: String,
    /// `up`, `suspect`, `down` or `unknown`.
    pub state: String,
    pub load: u64,
    pub last_seen_ms_ago: Option<u64>,
    /// `mdns` or `static`.
    pub source: String,
    /// `compatible`, `foreign-cluster`, `incompatible-protocol`, or `None`
    /// while unknown.
    pub compatibility: Option<String>,
    pub usable: bool,
}

impl Peer {
    /// Parses one object of `ferry peers --json`.
    pub fn parse(value: &serde_json::Value) -> anyhow::Result<Peer> {
        use anyhow::Context;
        let text = |key: &str| -> anyhow::Result<String> {
            value[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("peer field {key:?} is not a string in {value}"))
        };
        let state = text("state")?;
        anyhow::ensure!(
            ["up", "suspect", "down", "unknown"].contains(&state.as_str()),
            "unexpected peer state {state:?} in {value}"
        );
        let source = text("source")?;
        anyhow::ensure!(
            ["mdns", "static", "learned"].contains(&source.as_str()),
            "unexpected peer source {source:?} in {value}"
        );
        let compatibility = match &value["compatibility"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some(text.clone()),
            other => anyhow::bail!("peer field \"compatibility\" is {other} in {value}"),
        };
        let last_seen_ms_ago = match &value["last_seen_ms_ago"] {
            serde_json::Value::Null => None,
            other => Some(
                other
                    .as_u64()
                    .with_context(|| format!("peer field \"last_seen_ms_ago\" is {other} in {value}"))?,
            ),
        };
        Ok(Peer {
            id: text("id")?,
            name: text("name")?,
            address: text("address")?,
            state,
            load: value["load"]
                .as_u64()
                .with_context(|| format!("peer field \"load\" is not a number in {value}"))?,
            last_seen_ms_ago,
            source,
            compatibility,
            usable: value["usable"]
                .as_bool()
                .with_context(|| format!("peer field \"usable\" is not a boolean in {value}"))?,
        })
    }

    /// Parses the array `ferry peers --json` prints.
    pub fn parse_list(value: &serde_json::Value) -> anyhow::Result<Vec<Peer>> {
        use anyhow::Context;
        value
            .as_array()
            .with_context(|| format!("ferry peers --json printed {value}, not an array"))?
            .iter()
            .map(Peer::parse)
            .collect()
    }

    pub fn is_up(&self) -> bool {
        self.state == "up"
    }

    pub fn is_down(&self) -> bool {
        self.state == "down"
    }
}

/// When an observing hub first listed a peer in the awaited state.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Index of the observing hub in the slice given to [`wait_for_peer_states`].
    pub observer: usize,
    pub peer_id: String,
    /// When the `ferry peers` call that showed it returned.
    pub at: std::time::Instant,
}

/// Polls `ferry peers --json` on every observer at once until each
/// `(observer, peer id)` of `expected` is listed in `state`, and returns when
/// each was first seen so. Fails after `timeout` (a safety net, not a
/// performance assertion) with every observer's last peer list.
pub fn wait_for_peer_states(
    observers: &[&HubProcess],
    expected: &[(usize, &str)],
    state: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Observation>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen: Vec<Option<std::time::Instant>> = vec![None; expected.len()];
    let mut last: Vec<String> = vec![String::new(); observers.len()];
    loop {
        let lists: Vec<(anyhow::Result<Vec<Peer>>, std::time::Instant)> = std::thread::scope(|scope| {
            let polls: Vec<_> = observers
                .iter()
                .map(|hub| scope.spawn(move || (hub.peers(), std::time::Instant::now())))
                .collect();
            polls
                .into_iter()
                .map(|poll| poll.join().expect("peer poll thread"))
                .collect()
        });
        for (observer, (peers, at)) in lists.iter().enumerate() {
            let Ok(peers) = peers else {
                last[observer] = format!("{peers:?}");
                continue;
            };
            last[observer] = format!("{peers:#?}");
            for (slot, (expected_observer, peer_id)) in seen.iter_mut().zip(expected) {
                if slot.is_none()
                    && *expected_observer == observer
                    && peers.iter().any(|peer| peer.id == *peer_id && peer.state == state)
                {
                    *slot = Some(*at);
                }
            }
        }
        if seen.iter().all(Option::is_some) {
            return Ok(expected
                .iter()
                .zip(seen)
                .map(|((observer, peer_id), at)| Observation {
                    observer: *observer,
                    peer_id: (*peer_id).to_owned(),
                    at: at.expect("all seen"),
                })
                .collect());
        }
        if std::time::Instant::now() >= deadline {
            let missing: Vec<_> = expected
                .iter()
                .zip(&seen)
                .filter(|(_, at)| at.is_none())
                .map(|((observer, peer_id), _)| format!("hub {observer} seeing {peer_id}"))
                .collect();
            anyhow::bail!(
                "timed out after {timeout:?} waiting for peers to be {state}: missing {missing:?}; last peer lists: {last:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every ordered pair of distinct hubs: `(observer index, id of the other)`.
pub fn all_pairs(ids: &[String]) -> Vec<(usize, &str)> {
    let mut pairs = Vec::new();
    for observer in 0..ids.len() {
        for (peer, id) in ids.iter().enumerate() {
            if peer != observer {
                pairs.push((observer, id.as_str()));
            }
        }
    }
    pairs
}

/// A command's stdout as text.
pub fn stdout_text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The stdout of a command that must have succeeded; panics with its stderr otherwise.
pub fn expect_success(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed with {}: stdout={} stderr={}",
        output.status,
        stdout_text(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout_text(&output)
}

/// `ferry ps --json`'s entry for `name`, or `Null` if the hub lists none or
/// cannot be asked (it may be down).
pub fn function_info_or_null(hub: &HubProcess, name: &str) -> serde_json::Value {
    let output = hub.ferry(&["ps", "--json"]);
    let Ok(list) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return serde_json::Value::Null;
    };
    list.as_array()
        .and_then(|functions| functions.iter().find(|function| function["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// `ferry ps --json`'s entry for `name`, or `Null` if the hub lists none.
pub fn function_info(hub: &HubProcess, name: &str) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&expect_success(hub.ferry(&["ps", "--json"]))).expect("ps --json");
    list.as_array()
        .and_then(|functions| functions.iter().find(|function| function["name"] == name).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// The tick numbers in the output of `ticker.wasm`, in order.
pub fn ticks_in(logs: &str) -> Vec<u64> {
    logs.lines()
        .filter_map(|line| line.strip_prefix("tick "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}
