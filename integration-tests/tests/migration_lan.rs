//! Moving running functions between real `ferry agent` processes on a LAN
//! of network namespaces (see `lan_discovery.rs` for the LAN itself): round
//! trips around three hubs, a lossy link and a cut link. Output is compared
//! with an uninterrupted run of the same function; timings are printed,
//! never asserted.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use ferry_integration_tests::moves::{
    Rng, check_consecutive, deploy_guest, migrate, migrate_refused, numbered_lines, running_on, stdout_of, wait_exited,
};
use ferry_integration_tests::{
    HubOptions, HubProcess, Lan, all_pairs, expect_success, netns_or_skip, wait_for_peer_states,
};

/// Safety net for every wait; not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(120);
const CLUSTER: &str = "move-test";

/// One LAN test at a time: they share 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A LAN of `count` hubs named `hub-N` that all see each other Up.
async fn lan_with_hubs(count: usize) -> (Lan, Vec<HubProcess>) {
    let lan = Lan::new(count).unwrap();
    let mut hubs = Vec::new();
    // hub-0 founds the cluster, the others join it with a token: every
    // connection on the LAN is mutual TLS.
    for index in 0..count {
        let options = HubOptions::named(format!("hub-{index}")).args(["--cluster-id", CLUSTER]);
        let options = ferry_integration_tests::moves::in_cluster(options, hubs.first()).unwrap();
        hubs.push(lan.start_hub(index, options).await.unwrap());
    }
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    let observers: Vec<&HubProcess> = hubs.iter().collect();
    wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
    (lan, hubs)
}

fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

#[tokio::test]
async fn two_running_functions_move_around_three_hubs_ten_times_and_print_what_an_uninterrupted_run_prints() {
    if !netns_or_skip("two_running_functions_move_around_three_hubs") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (_lan, hubs) = lan_with_hubs(3).await;
    let all: Vec<&HubProcess> = hubs.iter().collect();
    // Both run far longer than the 20 moves take (heap_walk ≈ 35 s alone,
    // sleeper ≥ 15 s of virtual sleep), so every move catches them running.
    let functions: [(&str, &str, &[&str]); 2] = [
        ("cpu", "guests/heap_walk.wasm", &["4", "4000"]),
        ("sleepy", "guests/sleeper.wasm", &["300", "50"]),
    ];
    // The uninterrupted runs, on the last hub, alongside the moving ones.
    for (name, module, args) in functions {
        deploy_guest(&hubs[2], module, &format!("{name}-ref"), args);
        deploy_guest(&hubs[0], module, name, args);
    }
    let mut rng = Rng::new("moves");
    let moves = 10;
    let mut downtimes = Vec::new();
    for round in 0..moves {
        for (name, ..) in functions {
            let to = format!("hub-{}", (round + 1) % 3);
            // Always asked of hub-0: after the first move it forwards.
            let summary =
                migrate(&hubs[0], name, &to).unwrap_or_else(|error| panic!("move {round} of {name}: {error}"));
            assert_eq!(summary["to_hub"], to.as_str());
            assert_eq!(summary["epoch"], round + 1, "{summary}");
            assert_eq!(summary["start_confirmed"], true, "{summary}");
            assert_eq!(
                running_on(&all, name),
                vec![(round + 1) % 3],
                "{name} runs on exactly its new hub"
            );
            downtimes.push(summary["downtime_micros"].as_u64().unwrap());
            eprintln!(
                "{name} → {to}: rounds {}, memory {} KiB, sent {} KiB, total {}, downtime {}",
                summary["rounds"],
                summary["memory_bytes"].as_u64().unwrap() / 1024,
                summary["bytes_sent"].as_u64().unwrap() / 1024,
                ms(summary["total_micros"].as_u64().unwrap()),
                ms(summary["downtime_micros"].as_u64().unwrap()),
            );
            tokio::time::sleep(Duration::from_millis(50) + rng.duration(Duration::from_millis(250))).await;
        }
    }
    downtimes.sort_unstable();
    eprintln!(
        "downtime over {} moves: median {}, max {}",
        downtimes.len(),
        ms(downtimes[downtimes.len() / 2]),
        ms(*downtimes.last().unwrap())
    );
    for (name, ..) in functions {
        // heap_walk's work alone takes 35 s on a quiet machine and over two
        // minutes on a busy one: wait long, it is only a safety net.
        wait_exited(&hubs[0], name, PATIENCE * 4).await.unwrap();
        wait_exited(&hubs[2], &format!("{name}-ref"), PATIENCE * 4)
            .await
            .unwrap();
        let moved = stdout_of(&hubs[0], name);
        let reference = stdout_of(&hubs[2], &format!("{name}-ref"));
        assert_eq!(
            moved, reference,
            "{name}: output after 10 moves differs from the uninterrupted run"
        );
        assert!(!moved.contains("BACKWARDS") && !moved.contains("TOO SHORT") && !moved.contains("short sleep"));
        // Every hub's ps shows where it runs now.
        for hub in &hubs {
            let info = ferry_integration_tests::function_info(hub, name);
            assert_eq!(info["hub_name"], format!("hub-{}", moves % 3), "{info}");
        }
    }
    let events = expect_success(hubs[1].ferry(&["logs", "sleepy", "--events"]));
    assert_eq!(events.matches("moved here from hub").count(), moves, "{events}");
}

/// Host 1's namespace drops `percent` % of the packets it receives and sends.
fn lossy(lan: &Lan, index: usize, percent: u32) {
    let rules = format!(
        "table inet ferry_loss {{\n  chain input {{ type filter hook input priority 0; numgen random mod 100 < {percent} drop; }}\n  chain output {{ type filter hook output priority 0; numgen random mod 100 < {percent} drop; }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("ferry-loss-{}.nft", std::process::id()));
    std::fs::write(&path, rules).unwrap();
    let output = lan.host(index).run("nft", &["-f", path.to_str().unwrap()]).unwrap();
    assert!(
        output.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_file(path);
}

/// Lifts [`lossy`]'s rules again.
fn lossless(lan: &Lan, index: usize) {
    let output = lan
        .host(index)
        .run("nft", &["delete", "table", "inet", "ferry_loss"])
        .unwrap();
    assert!(
        output.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fails unless `numbers` count up by one from the first (the log keeps
/// only the newest entries, so a long run may not start at 1).
fn check_consecutive_from_first(numbers: &[u64], what: &str) {
    let first = *numbers.first().unwrap_or_else(|| panic!("{what}: no output"));
    assert!(
        first == 1 || numbers.len() >= 9_000,
        "{what}: the log starts at {first} with only {} entries",
        numbers.len()
    );
    for (offset, number) in numbers.iter().enumerate() {
        assert_eq!(*number, first + offset as u64, "{what}: entry {offset}");
    }
}

#[tokio::test]
async fn a_16_mib_move_across_a_link_losing_a_fifth_of_its_packets_completes_with_identical_output() {
    if !netns_or_skip("a_move_across_a_lossy_link_completes") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (lan, hubs) = lan_with_hubs(2).await;
    // 16 MiB written once, a 256 KiB region rewritten all the time.
    deploy_guest(&hubs[0], "examples/hotheap.wasm", "heap", &["16", "256"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 20 % loss each way on the destination (mDNS and probes suffer too):
    // TCP stalls for seconds at a time, and the move must wait that out.
    lossy(&lan, 1, 20);
    let started = Instant::now();
    let output = hubs[0].ferry(&["migrate", "heap", "--to", "hub-1", "--json"]);
    lossless(&lan, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the move failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!(
        "16 MiB over a 20 % lossy link: {} KiB sent in {:?}, {} attempt(s), {} rounds in the last, downtime {}",
        summary["bytes_sent"].as_u64().unwrap() / 1024,
        started.elapsed(),
        summary["attempts"],
        summary["rounds"],
        ms(summary["downtime_micros"].as_u64().unwrap())
    );
    assert_eq!(summary["start_confirmed"], true);
    // The user is told of every retry as it starts.
    for attempt in 2..=summary["attempts"].as_u64().unwrap() {
        let told = format!("attempt {attempt} on a fresh connection");
        assert!(stderr.contains(&told), "no {told:?} in: {stderr}");
    }
    let all: Vec<&HubProcess> = hubs.iter().collect();
    assert_eq!(running_on(&all, "heap"), vec![1]);
    let rounds = numbered_lines(&stdout_of(&hubs[0], "heap"), "round ");
    check_consecutive_from_first(&rounds, "hotheap rounds after a lossy move");
}

#[tokio::test]
async fn a_link_cut_mid_transfer_aborts_and_the_function_runs_on_at_the_source() {
    if !netns_or_skip("a_link_cut_mid_transfer_aborts") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (lan, hubs) = lan_with_hubs(2).await;
    deploy_guest(&hubs[0], "examples/bigheap.wasm", "heap", &["96", "0"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mover = {
        let mut command = hubs[0].ferry_command();
        std::thread::spawn(move || command.args(["migrate", "heap", "--to", "hub-1"]).output().unwrap())
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    lan.cut_link(1).unwrap();
    let cut_at = Instant::now();
    let output = mover.join().unwrap();
    eprintln!("migrate ended {:?} after the cut", cut_at.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the move cannot complete over a cut link");
    assert!(stderr.contains("continues on hub hub-0"), "{stderr}");
    // Before giving up, it tried again, and said so.
    assert!(stderr.contains("attempt 2 on a fresh connection"), "{stderr}");
    // The source runs it, and keeps printing.
    let all: Vec<&HubProcess> = hubs[..1].iter().collect();
    assert_eq!(running_on(&all, "heap"), vec![0]);
    let before = numbered_lines(&stdout_of(&hubs[0], "heap"), "round ").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = numbered_lines(&stdout_of(&hubs[0], "heap"), "round ");
    assert!(after.len() > before, "rounds went on after the failed move");
    check_consecutive(&after, "bigheap rounds after a cut").unwrap();
    // With the link back the destination has discarded its copy, and a move works.
    lan.restore_link(1).unwrap();
    ferry_integration_tests::eventually("hub-1 to be usable again", PATIENCE, || async {
        hubs[0]
            .peers()
            .ok()?
            .iter()
            .any(|peer| peer.name == "hub-1" && peer.is_up())
            .then_some(())
    })
    .await
    .unwrap();
    let (_, refused) = migrate_refused(&hubs[0], "nope", "hub-1");
    assert!(refused.contains("not found"), "{refused}");
    let summary = migrate(&hubs[0], "heap", "hub-1").unwrap();
    assert_eq!(summary["epoch"], 1, "the aborted move did not take an epoch: {summary}");
    let both: Vec<&HubProcess> = hubs.iter().collect();
    assert_eq!(running_on(&both, "heap"), vec![1]);
    let rounds = numbered_lines(&stdout_of(&hubs[0], "heap"), "round ");
    check_consecutive(&rounds, "bigheap rounds after the second move").unwrap();
}
