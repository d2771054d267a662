//! Several hubs on one machine, without a namespace per hub: the newcomer's
//! first try.
//!
//! - With mDNS: every hub restricted to `lo` (`--mdns-interface lo`) on its
//!   own port. The hubs share one network stack, but it is a namespace the
//!   test created whose only interface is `lo`: mdns-sd joins multicast
//!   groups on every interface that is up before the `lo` restriction
//!   applies, and those membership reports must not reach this machine's
//!   real interfaces. On a user's machine the same flags work as they are.
//! - Without mDNS: `--no-mdns` and static `--peer`s on this machine's real
//!   loopback (no namespace needed: nothing but loopback TCP is sent).

#![cfg(target_os = "linux")]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use ferry_integration_tests::{
    HubOptions, HubProcess, NetNs, Observation, all_pairs, netns_or_skip, wait_for_peer_states,
};

/// Safety net for every wait; not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(60);

const CLUSTER: &str = "one-machine";

fn spread(observations: &[Observation], since: std::time::Instant) -> String {
    let latest = observations.iter().map(|seen| seen.at).max().expect("observations");
    format!(
        "{:.0} ms",
        latest.saturating_duration_since(since).as_secs_f64() * 1000.0
    )
}

/// Checks that each hub lists exactly the other two, Up and usable, at the
/// address it serves on, from `source`.
fn assert_each_lists_the_others(hubs: &[HubProcess], ids: &[String], source: &str) {
    for (index, hub) in hubs.iter().enumerate() {
        let peers = hub.peers().unwrap();
        assert_eq!(peers.len(), 2, "hub {index} lists exactly the other two: {peers:#?}");
        for peer in &peers {
            let other = ids
                .iter()
                .position(|id| *id == peer.id)
                .unwrap_or_else(|| panic!("unknown peer {peer:#?}"));
            assert_ne!(other, index, "a hub never lists itself: {peers:#?}");
            assert!(peer.is_up() && peer.usable, "{peer:#?}");
            let learned_is_fine = source == "mdns" && peer.source == "learned";
            assert!(peer.source == source || learned_is_fine, "{peer:#?}");
            assert_eq!(peer.address, hubs[other].address().to_string(), "{peer:#?}");
        }
    }
}

#[tokio::test]
async fn three_hubs_sharing_one_network_stack_find_each_other_by_mdns_on_loopback() {
    if !netns_or_skip("three_hubs_sharing_one_network_stack_find_each_other_by_mdns_on_loopback") {
        return;
    }
    // One stack for all three hubs, with only `lo` in it.
    let stack = NetNs::create("lo-only").unwrap();
    let interfaces = stack.ip(&["-o", "link", "show"]).unwrap();
    assert_eq!(interfaces.lines().count(), 1, "only lo: {interfaces}");

    let mut hubs = Vec::new();
    for index in 0..3 {
        let options =
            HubOptions::named(format!("local-{index}")).args(["--mdns-interface", "lo", "--cluster-id", CLUSTER]);
        hubs.push(stack.start_hub(options).await.unwrap());
    }
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    let last_start = hubs.iter().map(HubProcess::started_at).max().unwrap();
    let observers: Vec<&HubProcess> = hubs.iter().collect();
    let up = wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
    eprintln!(
        "one stack, mDNS on lo: all 6 Up observations {} after the last hub was spawned",
        spread(&up, last_start)
    );
    for hub in &hubs {
        assert!(hub.address().ip().is_loopback(), "{}", hub.address());
    }
    assert_each_lists_the_others(&hubs, &ids, "mdns");
}

/// Free loopback ports for hubs that must know each other's address before
/// they start. The listeners are closed just before the hubs bind.
fn free_loopback_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap())
        .collect()
}

#[tokio::test]
async fn three_hubs_without_mdns_find_each_other_through_static_peers_on_loopback() {
    let addresses = free_loopback_addresses(3);
    let mut hubs = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let mut options =
            HubOptions::named(format!("static-{index}"))
                .listen(*address)
                .args(["--no-mdns", "--cluster-id", CLUSTER]);
        for (other, peer) in addresses.iter().enumerate() {
            if other != index {
                options = options.args(["--peer".to_owned(), peer.to_string()]);
            }
        }
        hubs.push(HubProcess::start(options).await.unwrap());
    }
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    let last_start = hubs.iter().map(HubProcess::started_at).max().unwrap();
    let observers: Vec<&HubProcess> = hubs.iter().collect();
    let up = wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
    eprintln!(
        "static peers on loopback: all 6 Up observations {} after the last hub was spawned",
        spread(&up, last_start)
    );
    assert_each_lists_the_others(&hubs, &ids, "static");

    // A static peer that stops is kept, and seen Down.
    let stopped = ids[2].clone();
    hubs[2].kill().unwrap();
    wait_for_peer_states(&[&hubs[0], &hubs[1]], &[(0, &stopped), (1, &stopped)], "down", PATIENCE).unwrap();
}
