//! An operator stops a hub the usual way (`systemctl stop`: SIGTERM) while
//! a function is moving to or from it. The hub must stop cleanly (exit 0),
//! and once it is back the function must run on exactly one hub, its
//! output without a gap or a duplicate and its memory intact.

use std::time::Duration;

use ferry_integration_tests::eventually;
use ferry_integration_tests::moves::{
    check_bigheap_checksums, check_consecutive, deploy_guest, loopback_pair, numbered_lines, settle, stdout_of,
    wait_peer_up,
};

const PATIENCE: Duration = Duration::from_secs(60);
const HEAP_MIB: usize = 48;

#[tokio::test]
async fn stopping_either_hub_mid_move_leaves_the_function_on_one_hub_with_its_output_whole() {
    let mut hubs = loopback_pair(&[], PATIENCE).await.unwrap();
    deploy_guest(&hubs[0], "examples/bigheap.wasm", "heap", &[&HEAP_MIB.to_string(), "0"]);
    eventually("the heap to fill and change", PATIENCE, || async {
        (numbered_lines(&stdout_of(&hubs[0], "heap"), "round ").len() >= 3).then_some(())
    })
    .await
    .unwrap();
    let mut owner = 0;
    // The source, then the destination, each stopped early, midway and
    // late in the move (a move of 48 MiB takes 100–400 ms here).
    let trials = [
        (true, 20),
        (false, 20),
        (true, 80),
        (false, 80),
        (true, 160),
        (false, 160),
    ];
    for (trial, (stop_source, delay_ms)) in trials.into_iter().enumerate() {
        let destination = 1 - owner;
        let victim = if stop_source { owner } else { destination };
        let mut command = hubs[owner].ferry_command();
        let mover = std::thread::spawn(move || {
            command
                .args(["migrate", "heap", "--to", &format!("hub-{destination}")])
                .output()
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let status = hubs[victim].terminate().unwrap();
        let moved = mover.join().unwrap();
        assert!(
            status.success(),
            "trial {trial}: a hub stopped mid-move exits 0, not {status}"
        );
        hubs[victim].restart().await.unwrap();
        for (index, hub) in hubs.iter().enumerate() {
            wait_peer_up(hub, &format!("hub-{}", 1 - index), PATIENCE)
                .await
                .unwrap();
        }
        owner = settle(&hubs, "heap", PATIENCE).await;
        eprintln!(
            "trial {trial}: stopped the {} after {delay_ms} ms; migrate {}: {}; runs on hub-{owner}",
            if stop_source { "source" } else { "destination" },
            if moved.status.success() { "succeeded" } else { "failed" },
            String::from_utf8_lossy(&moved.stderr).trim()
        );
    }
    // A few more rounds where it runs now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let logs = stdout_of(&hubs[owner], "heap");
    check_consecutive(&numbered_lines(&logs, "round "), "bigheap rounds across the stops").unwrap();
    check_bigheap_checksums(&logs, HEAP_MIB).unwrap();
}
