//! Real mDNS between several discovery instances in one process, on
//! loopback only.
//!
//! Each test runs in a private network namespace created for its own thread
//! (`unshare(CLONE_NEWNET)`), whose only interface is a fresh `lo`: not even
//! the IGMP/MLD reports mdns-sd triggers when it starts can reach the host's
//! interfaces, and the host's `lo` flags are never touched. The namespace
//! disappears with the test's threads. `lo` there is brought up but keeps
//! its default flags (no MULTICAST): mdns-sd does not need the flag.
//!
//! Creating a namespace needs CAP_SYS_ADMIN (root in CI). Without it the
//! tests are skipped with a message, unless `FERRY_REQUIRE_NETNS=1` is set,
//! which CI does so that a skip cannot hide a failure.

#![cfg(target_os = "linux")]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{Behaviour, FakeLan, Unreachable, advert, peer, wait_for_peers};
use ferry_discovery::{
    Compatibility, Discovery, DiscoveryConfig, HubAdvert, LOAD_MAX, PeerSource, PeerState, SERVICE_TYPE,
};
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo, TxtProperty};
use nix::sched::{CloneFlags, unshare};

/// Runs `test` on a new thread inside a new network namespace with `lo` up.
fn in_private_network_namespace<F, Fut>(test_name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let setup = std::thread::spawn(move || -> Result<(), String> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|errno| format!("cannot create a network namespace: {errno}"))?;
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(|error| format!("cannot run `ip`: {error}"))?;
        if !status.success() {
            return Err(format!("`ip link set lo up` failed: {status}"));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot build a tokio runtime: {error}"))?;
        runtime.block_on(test());
        Ok(())
    })
    .join();
    match setup {
        Ok(Ok(())) => {}
        Ok(Err(reason)) if std::env::var_os("FERRY_REQUIRE_NETNS").is_none() => {
            eprintln!("skipping {test_name}: {reason} (needs root; set FERRY_REQUIRE_NETNS=1 to fail instead)");
        }
        Ok(Err(reason)) => panic!("{test_name}: {reason}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn loopback_config(local: HubAdvert) -> DiscoveryConfig {
    let mut config = DiscoveryConfig::new(local);
    config.mdns_interfaces = vec!["lo".into()];
    config
}

#[test]
fn two_hubs_on_loopback_find_each_other_and_see_a_graceful_stop_at_once() {
    in_private_network_namespace("two_hubs_on_loopback", || async {
        let lan = FakeLan::default();
        let hub_a = advert("hub-a", "alpha", 7001);
        let hub_b = advert("hub-b", "beta", 7002);
        lan.answer(loopback(7001), &hub_a);
        lan.answer(loopback(7002), &hub_b);

        // Hub a would take hours to call a silent peer down: only the mDNS
        // goodbye can make hub b down on it during this test.
        let mut config_a = loopback_config(hub_a);
        config_a.suspect_after = Duration::from_secs(3_600);
        config_a.down_after = Duration::from_secs(7_200);
        let started = tokio::time::Instant::now();
        let discovery_a = Discovery::start(config_a, lan.clone()).expect("hub a starts");
        let discovery_b = Discovery::start(loopback_config(hub_b), lan.clone()).expect("hub b starts");

        let seen_by_a = wait_for_peers(&discovery_a, "hub-b up on hub a", |peers| {
            peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Up)
        })
        .await;
        let seen_by_b = wait_for_peers(&discovery_b, "hub-a up on hub b", |peers| {
            peer(peers, "hub-a").is_some_and(|peer| peer.state == PeerState::Up)
        })
        .await;
        // Informational only (visible with --nocapture), never asserted.
        eprintln!("both hubs up on each other {:?} after start", started.elapsed());
        for (peers, id, port) in [(&seen_by_a, "hub-b", 7002), (&seen_by_b, "hub-a", 7001)] {
            assert_eq!(peers.len(), 1, "only the other hub is listed: {peers:#?}");
            let other = peer(peers, id).expect("listed");
            assert_eq!(other.source, PeerSource::Mdns);
            assert_eq!(other.address, Some(loopback(port)));
            assert_eq!(other.compatibility, Some(Compatibility::Compatible));
            assert!(other.is_usable());
        }

        lan.set(loopback(7002), Behaviour::Refuse);
        let stopping = tokio::time::Instant::now();
        discovery_b.shutdown().await.expect("hub b stops");
        let after_stop = wait_for_peers(&discovery_a, "hub-b down on hub a", |peers| {
            peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Down)
        })
        .await;
        eprintln!("hub-b down on hub a {:?} after its shutdown began", stopping.elapsed());
        assert_eq!(after_stop.len(), 1, "a stopped hub stays listed");

        discovery_a.shutdown().await.expect("hub a stops");
    });
}

#[test]
fn advertised_load_reaches_peers_through_the_txt_record() {
    in_private_network_namespace("advertised_load", || async {
        let lan = FakeLan::default();
        let hub_b = advert("hub-b", "beta", 7002);
        lan.answer(loopback(7002), &hub_b);
        // Hub a never reaches hub b by probe, so every load it sees for hub b
        // comes from hub b's TXT record.
        let discovery_a =
            Discovery::start(loopback_config(advert("hub-a", "alpha", 7001)), Unreachable).expect("hub a starts");
        let discovery_b = Discovery::start(loopback_config(hub_b), lan).expect("hub b starts");

        let load_on_a = |load: u32| {
            move |peers: &[ferry_discovery::PeerSnapshot]| {
                peer(peers, "hub-b").is_some_and(|peer| peer.load() == Some(load))
            }
        };
        wait_for_peers(&discovery_a, "hub-b with load 0", load_on_a(0)).await;
        discovery_b.set_load(4_321);
        let peers = wait_for_peers(&discovery_a, "hub-b with load 4321", load_on_a(4_321)).await;
        let hub_b_on_a = peer(&peers, "hub-b").expect("listed");
        assert_eq!(hub_b_on_a.state, PeerState::Unknown);
        assert!(!hub_b_on_a.verified);
        discovery_b.set_load(50_000);
        wait_for_peers(&discovery_a, "hub-b with a clamped load", load_on_a(LOAD_MAX)).await;

        discovery_b.shutdown().await.expect("hub b stops");
        discovery_a.shutdown().await.expect("hub a stops");
    });
}

/// A registration of raw TXT strings, bypassing `HubAdvert`.
fn raw_service(instance: &str, port: u16, txt: &[(&str, &[u8])]) -> ServiceInfo {
    let properties: Vec<TxtProperty> = txt
        .iter()
        .map(|(key, value)| TxtProperty::from((*key, *value)))
        .collect();
    let mut info = ServiceInfo::new(
        SERVICE_TYPE,
        instance,
        &format!("{instance}.local."),
        "127.0.0.1",
        port,
        properties,
    )
    .expect("raw service info")
    .enable_addr_auto();
    info.set_requires_probe(false);
    info
}

#[test]
fn hostile_and_own_adverts_never_enter_the_table_as_usable() {
    in_private_network_namespace("hostile_adverts", || async {
        let discovery_a = Discovery::start(loopback_config(advert("hub-a", "alpha", 7001)), FakeLan::default())
            .expect("hub a starts");

        let raw = ServiceDaemon::new().expect("raw daemon");
        raw.disable_interface(IfKind::All).expect("disable all");
        raw.enable_interface("lo").expect("enable lo");
        #[rustfmt::skip]
        let registrations = [
            raw_service("zero-port", 7100, &[("id", b"hub-p"), ("name", b"p"), ("port", b"0"), ("proto", b"1"), ("cluster", b"lab"), ("load", b"0")]),
            raw_service("huge-load", 7101, &[("id", b"hub-l"), ("name", b"l"), ("port", b"7101"), ("proto", b"1"), ("cluster", b"lab"), ("load", b"99999999999999999999")]),
            raw_service("bad-utf8", 7102, &[("id", b"hub-u"), ("name", b"\xff\xfe"), ("port", b"7102"), ("proto", b"1"), ("cluster", b"lab"), ("load", b"0")]),
            raw_service("no-id", 7103, &[("name", b"n"), ("port", b"7103"), ("proto", b"1"), ("cluster", b"lab"), ("load", b"0")]),
            raw_service("impostor", 7104, &[("id", b"hub-a"), ("name", b"fake alpha"), ("port", b"7104"), ("proto", b"1"), ("cluster", b"lab"), ("load", b"0")]),
            raw_service("foreign", 7105, &[("id", b"hub-f"), ("name", b"foreign"), ("port", b"7105"), ("proto", b"1"), ("cluster", b"other"), ("load", b"0")]),
            // Registered last: once hub a lists it, it has seen all the others.
            raw_service("valid", 7106, &[("id", b"hub-z"), ("name", b"zulu"), ("port", b"7106"), ("proto", b"1"), ("cluster", b"lab"), ("load", b"0")]),
        ];
        for info in registrations {
            raw.register(info).expect("raw register");
        }

        // mDNS answers arrive in any order under load: wait for both valid
        // adverts, then give the hostile ones a moment to (not) show up.
        wait_for_peers(&discovery_a, "hub-z and hub-f listed", |peers| {
            peer(peers, "hub-z").is_some() && peer(peers, "hub-f").is_some()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let peers = discovery_a.peers();
        let mut ids: Vec<&str> = peers.iter().filter_map(|peer| peer.id()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["hub-f", "hub-z"], "{peers:#?}");
        let foreign = peer(&peers, "hub-f").expect("listed");
        assert_eq!(foreign.compatibility, Some(Compatibility::ForeignCluster));
        assert!(peers.iter().all(|peer| !peer.is_usable()));

        let stopped = raw.shutdown().expect("raw shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(5), stopped.recv_async()).await;
        discovery_a.shutdown().await.expect("hub a stops");
    });
}

#[test]
fn dropping_the_handle_still_says_goodbye() {
    in_private_network_namespace("dropping_the_handle", || async {
        let lan = FakeLan::default();
        let hub_b = advert("hub-b", "beta", 7002);
        lan.answer(loopback(7002), &hub_b);
        let mut config_a = loopback_config(advert("hub-a", "alpha", 7001));
        config_a.suspect_after = Duration::from_secs(3_600);
        config_a.down_after = Duration::from_secs(7_200);
        let discovery_a = Discovery::start(config_a, lan.clone()).expect("hub a starts");
        let discovery_b = Discovery::start(loopback_config(hub_b), lan.clone()).expect("hub b starts");
        wait_for_peers(&discovery_a, "hub-b up on hub a", |peers| {
            peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Up)
        })
        .await;

        lan.set(loopback(7002), Behaviour::Refuse);
        drop(discovery_b);
        wait_for_peers(&discovery_a, "hub-b down on hub a", |peers| {
            peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Down)
        })
        .await;

        discovery_a.shutdown().await.expect("hub a stops");
    });
}
