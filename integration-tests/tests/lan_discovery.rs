//! Real `ferry agent` processes on a LAN of network namespaces (a bridge in
//! its own namespace, one namespace per hub, veth pairs, private addresses
//! that exist only there), finding each other with mDNS and judging each
//! other alive by probes.
//!
//! Every hub runs inside a namespace the test created, so mDNS never sees
//! this machine's interfaces. Needs root; without it the tests are skipped
//! with a message unless `FERRY_REQUIRE_NETNS` or `CI` is set (then they
//! fail). Timings are printed, never asserted: every wait has only a
//! generous safety timeout.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferry_integration_tests::netns::{LAN_HUB_PORT, namespaces_with_prefix};
use ferry_integration_tests::{HubOptions, HubProcess, Lan, all_pairs, netns_or_skip, wait_for_peer_states};
use serde_json::Value;

/// Safety net for every wait; not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(60);

const CLUSTER: &str = "lan-test";

/// The LAN tests measure how fast hubs notice each other; running them one
/// at a time keeps the figures honest on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hub_options(name: &str) -> HubOptions {
    HubOptions::named(name).args(["--cluster-id", CLUSTER])
}

/// Starts a hub named `hub-<index>` on each host of `lan` and returns the
/// hubs with their ids.
async fn start_hubs(lan: &Lan) -> (Vec<HubProcess>, Vec<String>) {
    let mut hubs = Vec::new();
    for index in 0..lan.len() {
        hubs.push(
            lan.start_hub(index, hub_options(&format!("hub-{index}")))
                .await
                .unwrap(),
        );
    }
    let ids = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    (hubs, ids)
}

fn latest(observations: &[ferry_integration_tests::Observation]) -> Instant {
    observations.iter().map(|seen| seen.at).max().expect("observations")
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::test]
async fn three_hubs_on_a_namespace_lan_see_each_other_up_then_kill_restart_and_graceful_stop() {
    if !netns_or_skip("three_hubs_on_a_namespace_lan") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let lan = Lan::new(3).unwrap();
    let prefix = lan.prefix().to_owned();
    eprintln!("lan {} on {}", prefix, lan.subnet());
    {
        let (mut hubs, ids) = start_hubs(&lan).await;
        let last_start = hubs.iter().map(HubProcess::started_at).max().unwrap();
        let first_start = hubs.iter().map(HubProcess::started_at).min().unwrap();
        let offsets: Vec<String> = hubs.iter().map(|hub| millis(hub.started_at() - first_start)).collect();
        eprintln!("hubs spawned at +{}", offsets.join(", +"));

        // Every hub lists the other two as Up.
        let observers: Vec<&HubProcess> = hubs.iter().collect();
        let up = wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
        eprintln!(
            "discovery: all 6 Up observations {} after the last hub was spawned",
            millis(latest(&up) - last_start)
        );
        for seen in &up {
            eprintln!(
                "  hub-{} saw {} up after {}",
                seen.observer,
                seen.peer_id,
                millis(seen.at.saturating_duration_since(last_start))
            );
        }
        for (index, hub) in hubs.iter().enumerate() {
            let peers = hub.peers().unwrap();
            assert_eq!(peers.len(), 2, "hub-{index} lists exactly the other two: {peers:#?}");
            for peer in &peers {
                let other = ids.iter().position(|id| *id == peer.id).expect("a known hub id");
                assert_ne!(other, index, "a hub never lists itself: {peers:#?}");
                assert_eq!(peer.name, format!("hub-{other}"));
                assert_eq!(peer.address, lan.hub_address(other).to_string());
                // Found by mDNS, or it probed us first and we probed it back.
                assert!(["mdns", "learned"].contains(&peer.source.as_str()), "{peer:#?}");
                assert_eq!(peer.compatibility.as_deref(), Some("compatible"));
                assert!(peer.usable, "{peer:#?}");
                assert!(peer.last_seen_ms_ago.is_some(), "{peer:#?}");
            }
            let table = String::from_utf8_lossy(&hub.ferry(&["peers"]).stdout).into_owned();
            for (other, id) in ids.iter().enumerate().filter(|(other, _)| *other != index) {
                assert!(table.contains(id) && table.contains(&format!("hub-{other}")), "{table}");
            }
        }

        // kill -9: no goodbye, the mDNS records linger; probes make it Down.
        let killed_id = ids[1].clone();
        let killed_at = Instant::now();
        hubs[1].kill().unwrap();
        let survivors = [&hubs[0], &hubs[2]];
        let down = wait_for_peer_states(&survivors, &[(0, &killed_id), (1, &killed_id)], "down", PATIENCE).unwrap();
        eprintln!(
            "kill -9: hub-1 Down on both others {} after the kill (target 3 s)",
            millis(latest(&down) - killed_at)
        );

        // Restart on the same data dir: Up again under the same hub id.
        hubs[1].restart().await.unwrap();
        let restarted_at = hubs[1].started_at();
        assert_eq!(hubs[1].hub_id().unwrap(), killed_id, "the hub id survives a restart");
        let observers: Vec<&HubProcess> = hubs.iter().collect();
        let back = wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
        eprintln!(
            "restart: all 6 Up observations {} after hub-1 was spawned again",
            millis(latest(&back).saturating_duration_since(restarted_at))
        );
        for (index, hub) in hubs.iter().enumerate() {
            let peers = hub.peers().unwrap();
            let entries = peers.iter().filter(|peer| peer.id == killed_id).count();
            if index != 1 {
                assert_eq!(entries, 1, "one entry per hub id after a restart: {peers:#?}");
            }
            assert_eq!(peers.len(), 2, "hub-{index}: {peers:#?}");
        }

        // Graceful stop: the goodbye makes it Down without waiting for probes.
        let stopped_id = ids[2].clone();
        let stopping_at = Instant::now();
        hubs[2].signal_terminate().unwrap();
        let survivors = [&hubs[0], &hubs[1]];
        let gone = wait_for_peer_states(&survivors, &[(0, &stopped_id), (1, &stopped_id)], "down", PATIENCE).unwrap();
        eprintln!(
            "graceful stop: hub-2 Down on both others {} after SIGTERM",
            millis(latest(&gone) - stopping_at)
        );
        for hub in survivors {
            let peers = hub.peers().unwrap();
            assert!(
                peers
                    .iter()
                    .any(|peer| peer.id == stopped_id && peer.is_down() && !peer.usable),
                "a stopped hub stays listed, down and unusable: {peers:#?}"
            );
        }
        let status = hubs[2].wait().unwrap();
        assert!(status.success(), "SIGTERM ends the hub cleanly: {status}");
    }
    let namespaces = lan.namespaces();
    assert!(
        namespaces_with_prefix(&prefix).len() == namespaces.len(),
        "{namespaces:?}"
    );
    drop(lan);
    assert_eq!(
        namespaces_with_prefix(&prefix),
        Vec::<String>::new(),
        "every namespace of the Lan is removed"
    );
}

#[tokio::test]
async fn hub_of_another_cluster_is_listed_but_never_usable() {
    if !netns_or_skip("hub_of_another_cluster_is_listed_but_never_usable") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let lan = Lan::new(3).unwrap();
    let members = [
        lan.start_hub(0, hub_options("member-0")).await.unwrap(),
        lan.start_hub(1, hub_options("member-1")).await.unwrap(),
    ];
    let stranger = lan
        .start_hub(2, HubOptions::named("stranger").args(["--cluster-id", "elsewhere"]))
        .await
        .unwrap();
    let member_ids: Vec<String> = members.iter().map(|hub| hub.hub_id().unwrap()).collect();
    let stranger_id = stranger.hub_id().unwrap();

    wait_for_peer_states(&[&members[0], &members[1]], &all_pairs(&member_ids), "up", PATIENCE).unwrap();
    let listed = ferry_integration_tests::eventually("the stranger in both members' tables", PATIENCE, || async {
        let tables: Vec<_> = members.iter().map(|hub| hub.peers().ok()).collect::<Option<_>>()?;
        let all_listed = tables.iter().all(|peers: &Vec<ferry_integration_tests::Peer>| {
            peers
                .iter()
                .any(|peer| peer.id == stranger_id && peer.compatibility.as_deref() == Some("foreign-cluster"))
        });
        all_listed.then_some(tables)
    })
    .await
    .unwrap();
    for peers in &listed {
        let foreign = peers.iter().find(|peer| peer.id == stranger_id).unwrap();
        assert!(
            !foreign.usable,
            "a hub of another cluster is never usable: {foreign:#?}"
        );
        assert_eq!(foreign.name, "stranger");
        for member in peers.iter().filter(|peer| member_ids.contains(&peer.id)) {
            assert!(member.usable, "{member:#?}");
            assert_eq!(member.compatibility.as_deref(), Some("compatible"));
        }
    }
    // And the stranger sees the members as foreign in turn.
    ferry_integration_tests::eventually("the members as foreign in the stranger's table", PATIENCE, || async {
        let peers = stranger.peers().ok()?;
        member_ids
            .iter()
            .all(|id| {
                peers.iter().any(|peer| {
                    peer.id == *id && peer.compatibility.as_deref() == Some("foreign-cluster") && !peer.usable
                })
            })
            .then_some(())
    })
    .await
    .unwrap();
}

fn browse_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/browse_ferry.py")
}

/// Runs the python-zeroconf browser inside host `index`'s namespace and
/// returns the instances it printed.
fn browse(lan: &Lan, index: usize, python: &PathBuf) -> Vec<Value> {
    let output = lan
        .command(index, python)
        .arg(browse_script())
        .args(["--seconds", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "browse_ferry.py failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stdout)));
    printed.as_array().expect("a JSON array").clone()
}

#[tokio::test]
async fn python_zeroconf_browser_sees_every_hub_with_its_txt_record() {
    if !netns_or_skip("python_zeroconf_browser_sees_every_hub_with_its_txt_record") {
        return;
    }
    let Some(python) = ferry_integration_tests::corpus::venv_python() else {
        let message = "the zeroconf venv is missing: run scripts/install-deps (or set FERRY_VENV)";
        if std::env::var_os("FERRY_REQUIRE_NETNS").is_some() || std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("skipping python_zeroconf_browser_sees_every_hub_with_its_txt_record: {message}");
        return;
    };
    let _serial = SERIAL.lock().await;
    let lan = Lan::new(3).unwrap();
    let (hubs, ids) = start_hubs(&lan).await;
    let observers: Vec<&HubProcess> = hubs.iter().collect();
    wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
    let infos: Vec<Value> = hubs.iter().map(|hub| hub.info().unwrap()).collect();

    // The browser runs on host 0's LAN; what hub-0 lists is the reference.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let instances = browse(&lan, 0, &python);
        let reference = hubs[0].peers().unwrap();
        let mut problems = Vec::new();
        let by_id: BTreeMap<&str, &Value> = instances
            .iter()
            .filter_map(|instance| Some((instance["properties"]["id"].as_str()?, instance)))
            .collect();
        for index in 1..3 {
            let id = ids[index].as_str();
            let Some(instance) = by_id.get(id) else {
                problems.push(format!("hub-{index} ({id}) not browsed"));
                continue;
            };
            let txt = &instance["properties"];
            let listed = reference.iter().find(|peer| peer.id == id).expect("hub-0 lists it");
            let expected = [
                ("id", id.to_owned()),
                ("name", format!("hub-{index}")),
                ("port", LAN_HUB_PORT.to_string()),
                ("proto", infos[index]["protocol_version"].to_string()),
                ("cluster", CLUSTER.to_owned()),
                ("load", listed.load.to_string()),
            ];
            for (key, value) in expected {
                if txt[key].as_str() != Some(value.as_str()) {
                    problems.push(format!("hub-{index}: TXT {key}={} but expected {value}", txt[key]));
                }
            }
            if instance["port"].as_u64() != Some(u64::from(LAN_HUB_PORT)) {
                problems.push(format!("hub-{index}: SRV port {}", instance["port"]));
            }
            let address = lan.host_ip(index).to_string();
            let addresses = instance["addresses"].as_array().cloned().unwrap_or_default();
            if !addresses.iter().any(|listed| listed.as_str() == Some(address.as_str())) {
                problems.push(format!("hub-{index}: addresses {addresses:?} lack {address}"));
            }
            assert_eq!(instance["type"], "_ferry._tcp.local.", "{instance}");
        }
        if problems.is_empty() {
            eprintln!(
                "python-zeroconf saw: {}",
                serde_json::to_string_pretty(&instances).unwrap_or_default()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "python-zeroconf never saw the hubs right: {problems:#?}\nit saw: {instances:#?}"
        );
        eprintln!("browsing again: {problems:?}");
    }
}

#[tokio::test]
async fn lan_and_its_hubs_are_removed_even_when_the_test_panics() {
    if !netns_or_skip("lan_and_its_hubs_are_removed_even_when_the_test_panics") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (sender, receiver) = std::sync::mpsc::channel();
    // A test body that fails with a hub running on a Lan.
    let failing = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let lan = Lan::new(2).unwrap();
            let hub = lan.start_hub(0, hub_options("doomed").arg("--no-mdns")).await.unwrap();
            sender.send((lan.prefix().to_owned(), hub.pid().unwrap())).unwrap();
            panic!("deliberate failure with a Lan and a hub running");
        })
    });
    assert!(failing.join().is_err(), "the test body panicked");
    let (prefix, pid) = receiver.recv().unwrap();
    assert_eq!(
        namespaces_with_prefix(&prefix),
        Vec::<String>::new(),
        "no namespace is left"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the hub process {pid} is gone"
    );
}

/// A third-party mDNS client advertises a fake hub with a real member's id
/// and name at another address. The fake never becomes up, a move to that
/// name goes to the real member only, and the fake receives nothing but TLS
/// handshakes that it cannot complete.
#[tokio::test]
async fn a_spoofed_mdns_record_of_a_member_is_never_up_and_receives_nothing() {
    if !netns_or_skip("a_spoofed_mdns_record_of_a_member_is_never_up_and_receives_nothing") {
        return;
    }
    let Some(python) = ferry_integration_tests::corpus::venv_python() else {
        let message = "the zeroconf venv is missing: run scripts/install-deps (or set FERRY_VENV)";
        if std::env::var_os("FERRY_REQUIRE_NETNS").is_some() || std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("skipping a_spoofed_mdns_record_of_a_member_is_never_up_and_receives_nothing: {message}");
        return;
    };
    let _serial = SERIAL.lock().await;
    let lan = Lan::new(3).unwrap();
    // hub-0 founds the cluster, hub-1 joins it; host 2 is the impostor's.
    let in_cluster = ferry_integration_tests::moves::in_cluster;
    let founder = lan
        .start_hub(0, in_cluster(hub_options("hub-0"), None).unwrap())
        .await
        .unwrap();
    let member = lan
        .start_hub(1, in_cluster(hub_options("hub-1"), Some(&founder)).unwrap())
        .await
        .unwrap();
    let ids = vec![founder.hub_id().unwrap(), member.hub_id().unwrap()];
    wait_for_peer_states(&[&founder, &member], &all_pairs(&ids), "up", PATIENCE).unwrap();
    ferry_integration_tests::moves::deploy_guest(&founder, "examples/ticker.wasm", "ticker", &["50"]);

    let member_info = member.info().unwrap();
    let impostor_address = lan.host_ip(2).to_string();
    let txt = [
        format!("id={}", ids[1]),
        "name=hub-1".to_owned(),
        format!("port={LAN_HUB_PORT}"),
        format!("proto={}", member_info["protocol_version"]),
        format!("cluster={CLUSTER}"),
        "load=0".to_owned(),
    ];
    let mut impostor = lan.command(2, &python);
    impostor
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/fake_hub.py"))
        .args([
            "--address",
            &impostor_address,
            "--port",
            &LAN_HUB_PORT.to_string(),
            "--seconds",
            "10",
        ])
        .args(txt.iter().flat_map(|field| ["--txt", field.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let impostor = impostor.spawn().unwrap();

    // While it advertises: no peer at its address is ever up on either hub,
    // and the real member stays usable.
    let impostor_endpoint = format!("{impostor_address}:{LAN_HUB_PORT}");
    let watch_until = Instant::now() + Duration::from_secs(7);
    let mut moved = false;
    while Instant::now() < watch_until {
        for hub in [&founder, &member] {
            let peers = hub.ferry_json(&["peers"]).unwrap();
            for peer in peers.as_array().unwrap() {
                assert!(
                    !(peer["address"] == impostor_endpoint.as_str() && peer["state"] == "up"),
                    "the impostor is up: {peers:#}"
                );
            }
        }
        if !moved && Instant::now() + Duration::from_secs(4) < watch_until {
            let summary = ferry_integration_tests::moves::migrate(&founder, "ticker", "hub-1").unwrap();
            assert!(summary["epoch"].as_u64() > Some(0), "{summary}");
            moved = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(moved);
    assert_eq!(
        ferry_integration_tests::function_info(&member, "ticker")["state"],
        "running"
    );

    let output = impostor.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fake_hub.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("the impostor saw: {seen}");
    for (first, bytes) in seen["first_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(seen["bytes"].as_array().unwrap())
    {
        // 0x16: a TLS handshake record (a ClientHello); nothing after it,
        // since the handshake never completes.
        assert!(
            first.is_null() || first == 0x16,
            "the impostor got non-TLS bytes: {seen}"
        );
        assert!(
            bytes.as_u64() < Some(4096),
            "the impostor got more than a ClientHello: {seen}"
        );
    }
}
