//! Membership over time with real hubs: a hub removed with `ferry cluster
//! rm` is refused by every member within seconds, and short-lived hub
//! certificates are renewed while functions move.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_integration_tests::moves::{deploy_guest, free_loopback_address, in_cluster, migrate_refused};
use ferry_integration_tests::{HubOptions, HubProcess, client_tls, eventually, expect_success};
use ferry_proto::v1::GetHubInfoRequest;
use ferry_proto::v1::hub_client::HubClient;

const PATIENCE: Duration = Duration::from_secs(30);
/// The bound: every member refuses a removed hub within 5 s.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// An error and every cause under it: a refused TLS handshake shows up as
/// a transport error whose innermost cause is the alert.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Calls `GetHubInfo` on the hub at `address` with the credential in
/// `credential_file`: what a removed hub would do to stay in touch.
async fn ask_as(credential_file: &Path, address: SocketAddr) -> Result<String, String> {
    let text = std::fs::read_to_string(credential_file).map_err(|error| error.to_string())?;
    let tls = client_tls(&text).map_err(|error| error.to_string())?;
    let channel = tonic::transport::Channel::from_shared(format!("https://{address}"))
        .map_err(|error| error.to_string())?
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| causes(&error))?;
    HubClient::new(channel)
        .get_hub_info(GetHubInfoRequest::default())
        .await
        .map(|info| info.into_inner().hub_id)
        .map_err(|status| format!("{:?}: {}", status.code(), causes(&status)))
}

fn is_up(observer: &HubProcess, hub_id: &str) -> bool {
    observer
        .peers()
        .is_ok_and(|peers| peers.iter().any(|peer| peer.id == hub_id && peer.is_up()))
}

/// A founder and two members on loopback that all know each other.
async fn three_hub_cluster(founder_args: &[&str]) -> Vec<HubProcess> {
    let addresses = [
        free_loopback_address(),
        free_loopback_address(),
        free_loopback_address(),
    ];
    let peer = |index: usize| addresses[index].to_string();
    let founder = HubProcess::start(
        in_cluster(HubOptions::named("hub-0"), None)
            .unwrap()
            .listen(addresses[0])
            .args(["--peer", &peer(1), "--peer", &peer(2)])
            .args(founder_args.iter().copied()),
    )
    .await
    .unwrap();
    let mut hubs = vec![founder];
    for (index, other) in [(1, 2), (2, 1)] {
        let member = HubProcess::start(
            in_cluster(HubOptions::named(format!("hub-{index}")), Some(&hubs[0]))
                .unwrap()
                .listen(addresses[index])
                .args(["--peer", &peer(other)]),
        )
        .await
        .unwrap();
        hubs.push(member);
    }
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    for observer in &hubs {
        for id in &ids {
            if *id != observer.hub_id().unwrap() {
                eventually("every hub to see every other up", PATIENCE, || async {
                    is_up(observer, id).then_some(())
                })
                .await
                .unwrap();
            }
        }
    }
    hubs
}

#[tokio::test]
async fn a_removed_hub_is_refused_by_every_member_within_seconds() {
    let mut hubs = three_hub_cluster(&[]).await;
    let (founder, member, removed) = (&hubs[0], &hubs[1], &hubs[2]);
    let removed_id = removed.hub_id().unwrap();
    let removed_credential = removed.data_dir().join("tls/hub.cred");
    deploy_guest(founder, "examples/bigheap.wasm", "heap", &["4", "0"]);

    // Before: the hub's own credential is good at both members.
    for hub in [founder, member] {
        assert_eq!(
            ask_as(&removed_credential, hub.address()).await,
            Ok(hub.hub_id().unwrap())
        );
    }

    // Only the hub holding the CA key removes hubs; an unknown name is named.
    let output = member.ferry(&["cluster", "rm", &removed_id]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("does not hold the cluster CA key"), "{text}");
    let output = founder.ferry(&["cluster", "rm", "no-such-hub"]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("no hub named \"no-such-hub\""), "{text}");
    assert!(is_up(founder, &removed_id) && is_up(member, &removed_id));

    // It runs a function: the removal says it is cut off with it.
    deploy_guest(removed, "examples/ticker.wasm", "far", &["100"]);
    eventually("the founder to hear of hub-2's function", PATIENCE, || async {
        let peers = founder.ferry_json(&["peers"]).ok()?;
        let row = peers
            .as_array()?
            .iter()
            .find(|peer| peer["id"] == removed_id.as_str())?
            .clone();
        (row["functions_total"] == 1).then_some(())
    })
    .await
    .unwrap();
    let removing = Instant::now();
    let removal = founder.ferry(&["cluster", "rm", "hub-2"]);
    let said = String::from_utf8_lossy(&removal.stderr).into_owned();
    assert!(removal.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "warning: hub {removed_id} held 1 functions when it last reported"
        )),
        "{said}"
    );
    for hub in [founder, member] {
        eventually("the removed hub to be refused", REFUSED_WITHIN, || async {
            let refused = ask_as(&removed_credential, hub.address()).await.err()?;
            (!is_up(hub, &removed_id)).then_some(refused)
        })
        .await
        .unwrap();
    }
    println!("every member refused the removed hub after {:?}", removing.elapsed());
    // Each refused it for the reason: its certificate, in the handshake.
    // (The client may see only a closed connection: under TLS 1.3 the
    // server's alert can arrive after the client sent its request.)
    for hub in [founder, member] {
        refused_in_handshake(hub, &removed_id);
    }

    // Nothing moves to it, by id or by name.
    let (_, text) = migrate_refused(founder, "heap", &removed_id);
    assert!(text.contains("removed from the cluster"), "{text}");
    let (_, text) = migrate_refused(founder, "heap", "hub-2");
    assert!(text.contains("removed from the cluster"), "{text}");
    // `ferry peers` says so.
    for hub in [founder, member] {
        let peers = hub.ferry_json(&["peers"]).unwrap();
        let row = peers
            .as_array()
            .and_then(|peers| peers.iter().find(|peer| peer["id"] == removed_id.as_str()))
            .cloned()
            .unwrap_or_default();
        assert!(row["removed"] == true && row["usable"] == false, "{peers}");
        let table = ferry_integration_tests::expect_success(hub.ferry(&["peers"]));
        assert!(table.contains("removed from the cluster"), "{table}");
    }

    // The others stay whole, and removing it again changes nothing.
    let member_id = member.hub_id().unwrap();
    assert!(is_up(founder, &member_id) && is_up(member, &founder.hub_id().unwrap()));
    let again = founder.ferry_json(&["cluster", "rm", &removed_id]).unwrap();
    assert_eq!(again["removed"], removed_id.as_str(), "{again}");
    let first = String::from_utf8_lossy(&removal.stdout).into_owned();
    let sequence = again["revocation_list"].as_u64().unwrap();
    assert!(
        first.contains(&format!("(revocation list {sequence})")),
        "{first} {again}"
    );

    // The list lives on every member, on disk: with the founder gone and
    // the member restarted, the removed hub is refused at once.
    hubs[0].kill().unwrap();
    hubs[1].restart().await.unwrap();
    let refusals_before = handshake_refusals(&hubs[1], &removed_id);
    ask_as(&removed_credential, hubs[1].address()).await.unwrap_err();
    assert!(handshake_refusals(&hubs[1], &removed_id) > refusals_before);
}

/// How often `hub` logged that it refused `hub_id`'s certificate.
fn handshake_refusals(hub: &HubProcess, hub_id: &str) -> usize {
    hub.agent_log()
        .lines()
        .filter(|line| {
            line.contains("refused the certificate of a hub removed from the cluster") && line.contains(hub_id)
        })
        .count()
}

fn refused_in_handshake(hub: &HubProcess, hub_id: &str) {
    assert!(
        handshake_refusals(hub, hub_id) > 0,
        "{} never refused {hub_id}'s certificate",
        hub.address()
    );
}

/// Hub certificates that live 15 s: each hub renews its own every ~10 s
/// (the founder signs its own, the member asks the founder) while a
/// function moves back and forth between them. Every move completes, a
/// renewal happens while a move is under way, and the cluster keeps
/// working past the first certificates' end.
#[tokio::test]
async fn certificates_renewed_during_moves_keep_moves_and_the_cluster_working() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("short.toml");
    std::fs::write(&config, "hub-certificate-lifetime = \"15s\"\n").unwrap();
    let addresses = [free_loopback_address(), free_loopback_address()];
    let founder = HubProcess::start(
        in_cluster(HubOptions::named("hub-0"), None)
            .unwrap()
            .listen(addresses[0])
            .args(["--peer", &addresses[1].to_string()])
            .args(["--config", config.to_str().unwrap()]),
    )
    .await
    .unwrap();
    let member = HubProcess::start(
        in_cluster(HubOptions::named("hub-1"), Some(&founder))
            .unwrap()
            .listen(addresses[1]),
    )
    .await
    .unwrap();
    let hubs = [&founder, &member];
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    for (observer, peer) in [(&founder, &ids[1]), (&member, &ids[0])] {
        eventually("the peers to see each other up", PATIENCE, || async {
            is_up(observer, peer).then_some(())
        })
        .await
        .unwrap();
    }
    deploy_guest(&founder, "examples/bigheap.wasm", "heap", &["16", "0"]);
    let credential = |hub: &HubProcess| std::fs::read(hub.data_dir().join("tls/hub.cred")).unwrap();
    let first = [credential(&founder), credential(&member)];
    let started = Instant::now();
    let mut renewed_during_a_move = [false, false];
    let mut moves = 0;
    let mut at = 0;
    while started.elapsed() < Duration::from_secs(90)
        && !(renewed_during_a_move.iter().all(|renewed| *renewed) && started.elapsed() > Duration::from_secs(20))
    {
        let (source, destination) = (hubs[at], &ids[1 - at]);
        let before = [credential(&founder), credential(&member)];
        let mut child = source
            .ferry_command()
            .args(["migrate", "heap", "--to", destination])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut changed = [false, false];
        let status = loop {
            for (index, hub) in hubs.iter().enumerate() {
                changed[index] |= credential(hub) != before[index];
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let output = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(status.success(), "move {moves} failed: {text}");
        // The credential file is written once per renewal: a change seen
        // while the CLI waited for the move is a renewal during the move.
        for index in 0..2 {
            renewed_during_a_move[index] |= changed[index];
        }
        moves += 1;
        at = 1 - at;
    }
    println!(
        "{moves} moves in {:?}; a renewal during a move: founder {}, member {}",
        started.elapsed(),
        renewed_during_a_move[0],
        renewed_during_a_move[1]
    );
    assert!(renewed_during_a_move[1], "the member never renewed during a move");
    assert!(renewed_during_a_move[0], "the founder never renewed during a move");
    assert_ne!(credential(&founder), first[0]);
    assert_ne!(credential(&member), first[1]);
    // Past the first certificates' end: new connections (the CLI, probes)
    // still get through, so each hub presents its renewed certificate.
    for hub in hubs {
        expect_success(hub.ferry(&["ps"]));
    }
    for (observer, peer) in [(&founder, &ids[1]), (&member, &ids[0])] {
        eventually("each hub to see the other up after renewals", PATIENCE, || async {
            is_up(observer, peer).then_some(())
        })
        .await
        .unwrap();
    }
    let holder = if ferry_integration_tests::function_info(&founder, "heap")["state"] == "running" {
        &founder
    } else {
        &member
    };
    assert_eq!(
        ferry_integration_tests::function_info(holder, "heap")["state"],
        "running"
    );
}
