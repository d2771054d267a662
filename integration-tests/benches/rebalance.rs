//! Rebalancing on a LAN of three hubs, each giving its functions half a
//! core (`--cpus 0.5`, mDNS on, in network namespaces: run as root), with
//! every figure a ratio against a baseline measured in this run (the
//! machine is noisy: nothing here asserts a time).
//!
//! 1. Baseline: one `work_units` function alone on a hub on loopback — the
//!    units per second one core gives.
//! 2. Twelve `work_units` functions deployed on one of the three hubs: the
//!    time from the first deploy to an even spread (4/4/4), the number of
//!    automatic moves, and the functions' aggregate progress (units per
//!    second, from the timestamps of their output lines) before the spread
//!    (first seconds, all on one hub) and after it, as a ratio of the ideal:
//!    three hubs' capacity (1.5 cores) at the baseline's rate.
//!
//! Goals (issue 11): balanced within 15 s, at most one move per function,
//! aggregate rate ≥ 0.9 of the ideal once balanced.
//!
//! The hubs are the dev-profile `ferry` binary (`target/debug/ferry`, or
//! `$FERRY_BIN`): build it first with `cargo build -p ferry-hub --bins`.
//!
//! Run: `cargo bench --profile dev -p ferry-integration-tests --bench rebalance`

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use ferry_integration_tests::moves::running_on;
use ferry_integration_tests::{
    HubOptions, HubProcess, Lan, all_pairs, eventually, expect_success, guest, netns_or_skip, wait_for_peer_states,
};
use serde_json::Value;

/// Safety net against a hung hub, not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(300);
/// Mixing rounds per work unit (about 20 ms of one core).
const ITERATIONS_PER_UNIT: &str = "5000000";
const FUNCTIONS: usize = 12;
const HUBS: usize = 3;
const CAPACITY: f64 = 0.5;
/// The window before the spread over which the first rate is taken.
const BEFORE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));
/// How long after the spread the second rate starts, and how long it lasts.
const AFTER_SETTLE: Duration = Duration::from_secs(3);
const AFTER_LENGTH: Duration = Duration::from_secs(10);

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

fn deploy_units(hub: &HubProcess, name: &str) -> anyhow::Result<()> {
    let module = guest("guests/work_units.wasm");
    expect_success(hub.ferry(&[
        "deploy",
        module.to_str().context("module path")?,
        "--name",
        name,
        "--",
        "0",
        ITERATIONS_PER_UNIT,
    ]));
    Ok(())
}

/// Timestamps (unix ms) of the function's `unit N` lines.
fn unit_times(hub: &HubProcess, name: &str) -> anyhow::Result<Vec<u64>> {
    let text = expect_success(hub.ferry(&["logs", name, "--json"]));
    let mut times = Vec::new();
    for line in text.lines() {
        let entry: Value = serde_json::from_str(line)?;
        if entry["text"].as_str().is_some_and(|text| text.starts_with("unit ")) {
            times.push(entry["unix_ms"].as_u64().context("unix_ms")?);
        }
    }
    Ok(times)
}

/// Units per second over `[from, to)` (unix ms), all functions together.
fn rate(times: &BTreeMap<String, Vec<u64>>, from: u64, to: u64) -> f64 {
    let units: usize = times
        .values()
        .map(|times| times.iter().filter(|time| (from..to).contains(*time)).count())
        .sum();
    units as f64 / ((to - from) as f64 / 1000.0)
}

async fn baseline_units_per_core_second() -> anyhow::Result<f64> {
    let hub = HubProcess::start(HubOptions::default()).await?;
    deploy_units(&hub, "alone")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let times = BTreeMap::from([("alone".to_owned(), unit_times(&hub, "alone")?)]);
    let now = unix_ms_now();
    Ok(rate(&times, now - 4000, now))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !netns_or_skip("rebalance benchmark") {
        return Ok(());
    }
    let per_core = baseline_units_per_core_second().await?;
    println!("baseline: one function alone, {per_core:.1} units/s on one core");

    let lan = Lan::new(HUBS)?;
    let mut hubs = Vec::new();
    for index in 0..HUBS {
        let options = HubOptions::named(format!("hub-{index}")).args([
            "--cluster-id".to_owned(),
            "rebalance-bench".to_owned(),
            "--cpus".to_owned(),
            CAPACITY.to_string(),
            "--rebalance".to_owned(),
            "on".to_owned(),
        ]);
        // As users run them: one cluster, mutual TLS.
        let options = ferry_integration_tests::moves::in_cluster(options, hubs.first())?;
        hubs.push(lan.start_hub(index, options).await?);
    }
    let ids: Vec<String> = hubs.iter().map(HubProcess::hub_id).collect::<anyhow::Result<_>>()?;
    let all: Vec<&HubProcess> = hubs.iter().collect();
    wait_for_peer_states(&all, &all_pairs(&ids), "up", PATIENCE)?;

    let names: Vec<String> = (0..FUNCTIONS).map(|index| format!("units-{index:02}")).collect();
    let deployed_ms = unix_ms_now();
    let deployed = Instant::now();
    for name in &names {
        deploy_units(&hubs[0], name)?;
    }
    eventually("an even spread", PATIENCE, || async {
        let mut counts = [0; HUBS];
        for name in &names {
            for index in running_on(&all, name) {
                counts[index] += 1;
            }
        }
        counts.iter().all(|count| *count == FUNCTIONS / HUBS).then_some(())
    })
    .await?;
    let to_balance = deployed.elapsed();
    let balanced_ms = unix_ms_now();
    tokio::time::sleep(AFTER_SETTLE + AFTER_LENGTH + Duration::from_secs(1)).await;

    let mut moves: BTreeMap<String, usize> = BTreeMap::new();
    let mut timeline = Vec::new();
    for hub in &hubs {
        for line in expect_success(hub.ferry(&["events", "--json"])).lines() {
            let event: Value = serde_json::from_str(line)?;
            if event["kind"] == "moved" {
                *moves
                    .entry(event["function"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
                let at = event["unix_ms"]
                    .as_u64()
                    .unwrap_or_default()
                    .saturating_sub(deployed_ms);
                timeline.push((at, event["text"].as_str().unwrap_or_default().to_owned()));
            }
        }
    }
    timeline.sort();
    println!("moves, seconds after the first deploy (when each ended):");
    for (at, text) in &timeline {
        println!("  +{:.1} s  {text}", *at as f64 / 1000.0);
    }
    let mut times = BTreeMap::new();
    for name in &names {
        times.insert(name.clone(), unit_times(&hubs[0], name)?);
    }
    let ideal = HUBS as f64 * CAPACITY * per_core;
    let before = rate(
        &times,
        deployed_ms + BEFORE.0.as_millis() as u64,
        deployed_ms + BEFORE.1.as_millis() as u64,
    );
    let after_from = balanced_ms + AFTER_SETTLE.as_millis() as u64;
    let after = rate(&times, after_from, after_from + AFTER_LENGTH.as_millis() as u64);
    let total_moves: usize = moves.values().sum();
    let most_moves = moves.values().copied().max().unwrap_or(0);
    ensure!(total_moves > 0, "nothing moved");

    println!("\n## Rebalancing: 12 CPU-bound functions deployed on one of three 0.5-core hubs\n");
    println!("| figure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| deploys → 4/4/4 | {:.1} s | ≤ 15 s ({}) |",
        to_balance.as_secs_f64(),
        if to_balance <= Duration::from_secs(15) {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "| automatic moves | {total_moves} (at most {most_moves} per function) | ≤ 1 per function ({}) |",
        if most_moves <= 1 { "met" } else { "not met" }
    );
    println!(
        "| aggregate rate before the spread / ideal | {:.2} ({before:.1} of {ideal:.1} units/s) | — (one hub: 0.33) |",
        before / ideal
    );
    println!(
        "| aggregate rate once spread / ideal | **{:.2}** ({after:.1} of {ideal:.1} units/s) | ≥ 0.9 ({}) |",
        after / ideal,
        if after / ideal >= 0.9 { "met" } else { "not met" }
    );
    drop(hubs);
    drop(lan);
    Ok(())
}
