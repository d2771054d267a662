//! Three hubs on a LAN of network namespaces (mDNS on), each giving its
//! functions half a core: twelve CPU-bound functions deployed on one of
//! them spread over all three on their own — each moved at most once, then
//! left alone — and print what an uninterrupted run prints. Figures are
//! printed, never asserted as times (see BENCHMARKS.md for the benchmark).

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_integration_tests::moves::{running_on, stdout_of, wait_exited};
use ferry_integration_tests::{
    HubOptions, HubProcess, Lan, all_pairs, eventually, expect_success as ok, guest, netns_or_skip,
    wait_for_peer_states,
};
use serde_json::Value;

/// Safety net for every wait; not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(300);
const CLUSTER: &str = "rebalance-test";
/// How long nothing may move once the functions are spread.
const QUIET: Duration = Duration::from_secs(60);
/// Enough work to run on through the spreading and the quiet minute, with
/// room to spare on a fast hour: each function gets an eighth of a core,
/// and 85 million ran out after 71 s once (spread at 13.6 s, quiet from
/// 16.6 s to 76.6 s), so the hubs rebalanced the ones left, rightly; 110
/// million ran out after 69 s on a quiet hour (2026-12-05, spread at 12.5 s).
const WORK: [&str; 2] = ["200000000", "5000000"];

fn moved_events(hub: &HubProcess) -> Vec<Value> {
    ok(hub.ferry(&["events", "--json"]))
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["kind"] == "moved")
        .collect()
}

/// Functions running on each hub (by index), as the hubs themselves say.
fn spread(hubs: &[&HubProcess], names: &[String]) -> Vec<usize> {
    let mut counts = vec![0; hubs.len()];
    for name in names {
        for index in running_on(hubs, name) {
            counts[index] += 1;
        }
    }
    counts
}

/// What `primes` prints when nothing interrupts it (a hub on loopback,
/// mDNS off, before the LAN exists).
async fn reference_output() -> String {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let module = guest("examples/primes.wasm");
    let mut args = vec!["deploy", module.to_str().unwrap(), "--name", "reference", "--"];
    args.extend_from_slice(&WORK);
    ok(hub.ferry(&args));
    wait_exited(&hub, "reference", PATIENCE).await.unwrap();
    stdout_of(&hub, "reference")
}

#[tokio::test]
async fn twelve_busy_functions_spread_over_three_half_core_hubs_each_moving_at_most_once() {
    if !netns_or_skip("twelve_busy_functions_spread_over_three_half_core_hubs") {
        return;
    }
    let reference = reference_output().await;
    let lan = Lan::new(3).unwrap();
    let mut hubs = Vec::new();
    for index in 0..3 {
        let options = HubOptions::named(format!("hub-{index}")).args([
            "--cluster-id",
            CLUSTER,
            "--cpus",
            "0.5",
            "--rebalance",
            "on",
        ]);
        hubs.push(lan.start_hub(index, options).await.unwrap());
    }
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    let all: Vec<&HubProcess> = hubs.iter().collect();
    wait_for_peer_states(&all, &all_pairs(&ids), "up", PATIENCE).unwrap();

    let module = guest("examples/primes.wasm");
    let names: Vec<String> = (0..12).map(|index| format!("busy-{index:02}")).collect();
    let deployed = Instant::now();
    for name in &names {
        let mut args = vec!["deploy", module.to_str().unwrap(), "--name", name, "--"];
        args.extend_from_slice(&WORK);
        ok(hubs[0].ferry(&args));
    }

    let balanced = eventually("the functions to spread 4/4/4", PATIENCE, || async {
        let counts = spread(&all, &names);
        (counts.iter().all(|count| *count == 4)).then_some(counts)
    })
    .await
    .unwrap();
    let time_to_balance = deployed.elapsed();
    // Loads once the moves' effects show in the one-second figures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let loads: Vec<f64> = hubs
        .iter()
        .map(|hub| {
            let info = hub.info().unwrap();
            info["cpu_usage"].as_f64().unwrap() / info["cpu_capacity"].as_f64().unwrap()
        })
        .collect();
    let moves_to_balance: usize = hubs.iter().map(|hub| moved_events(hub).len()).sum();
    println!(
        "balanced {balanced:?} {:.1} s after the deploys with {moves_to_balance} moves; loads {loads:.2?}",
        time_to_balance.as_secs_f64()
    );
    let busiest = loads.iter().cloned().fold(f64::MIN, f64::max);
    let idlest = loads.iter().cloned().fold(f64::MAX, f64::min);
    assert!(busiest <= 1.5 * idlest, "loads {loads:?}");

    // No function moved more than once.
    let mut moves_per_function: BTreeMap<String, usize> = BTreeMap::new();
    for hub in &hubs {
        for event in moved_events(hub) {
            *moves_per_function
                .entry(event["function"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert!(
        moves_per_function.values().all(|moves| *moves == 1),
        "{moves_per_function:?}"
    );

    // Then nothing moves for a minute, while they all still run.
    tokio::time::sleep(QUIET).await;
    // Functions that ended leave their hub lighter, and the others rightly
    // move: say so first.
    let still = spread(&all, &names);
    assert_eq!(still, vec![4, 4, 4], "the test's work ran out too early: {still:?}");
    let moves_after: usize = hubs.iter().map(|hub| moved_events(hub).len()).sum();
    assert_eq!(moves_after, moves_to_balance, "functions moved after the spread");

    // The output of every function equals an uninterrupted run's.
    for name in &names {
        wait_exited(&hubs[0], name, PATIENCE).await.unwrap();
        assert_eq!(stdout_of(&hubs[0], name), reference, "output of {name}");
    }
}
