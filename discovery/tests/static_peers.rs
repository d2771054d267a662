//! The discovery runtime with mDNS disabled (`--no-mdns`): static peers,
//! an in-process fake prober and paused tokio time. No packet is sent.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Behaviour, FakeLan, advert, peer, wait_for_peers};
use ferry_discovery::{
    Compatibility, Discovery, DiscoveryConfig, DiscoveryError, DiscoveryHandle, HubAdvert, PeerKey, PeerSource,
    PeerState, resolve_static_peers,
};

const PEER_ADDR: &str = "192.0.2.10:7000";

fn peer_addr() -> SocketAddr {
    PEER_ADDR.parse().expect("peer addr")
}

fn static_config(local: HubAdvert, peers: &[SocketAddr]) -> DiscoveryConfig {
    let mut config = DiscoveryConfig::new(local);
    config.mdns_enabled = false;
    config.static_peers = peers.to_vec();
    config
}

fn start_with_peer(lan: &FakeLan) -> DiscoveryHandle {
    let config = static_config(advert("hub-a", "alpha", 7000), &[peer_addr()]);
    Discovery::start(config, lan.clone()).expect("discovery starts")
}

async fn wait_for_state(handle: &DiscoveryHandle, id: &str, state: PeerState) {
    wait_for_peers(handle, &format!("{id} {state}"), |peers| {
        peer(peers, id).is_some_and(|peer| peer.state == state)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn static_peer_is_up_under_its_hub_id_after_its_first_probe() {
    let lan = FakeLan::default();
    lan.answer(peer_addr(), &advert("hub-b", "beta", 7000));
    let discovery = start_with_peer(&lan);

    let before = discovery.peers();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].key, PeerKey::Static(peer_addr()));
    assert_eq!(before[0].state, PeerState::Unknown);

    let peers = wait_for_peers(&discovery, "hub-b up", |peers| {
        peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Up)
    })
    .await;
    assert_eq!(peers.len(), 1, "the static placeholder is replaced");
    let hub_b = &peers[0];
    assert_eq!(hub_b.key, PeerKey::Id("hub-b".into()));
    assert_eq!(hub_b.name(), Some("beta"));
    assert_eq!(hub_b.source, PeerSource::Static);
    assert_eq!(hub_b.address, Some(peer_addr()));
    assert_eq!(hub_b.compatibility, Some(Compatibility::Compatible));
    assert!(hub_b.verified);
    assert!(hub_b.is_usable());
    assert!(hub_b.last_seen.is_some());

    discovery.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn killed_peer_goes_suspect_then_down_and_comes_back_up_under_the_same_id() {
    let lan = FakeLan::default();
    let hub_b = advert("hub-b", "beta", 7000);
    lan.answer(peer_addr(), &hub_b);
    let discovery = start_with_peer(&lan);
    wait_for_state(&discovery, "hub-b", PeerState::Up).await;

    lan.set(peer_addr(), Behaviour::Refuse);
    wait_for_state(&discovery, "hub-b", PeerState::Suspect).await;
    let down = wait_for_peers(&discovery, "hub-b down", |peers| {
        peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Down)
    })
    .await;
    assert_eq!(down.len(), 1, "a down peer stays listed");
    assert!(!down[0].is_usable());

    lan.answer(peer_addr(), &hub_b);
    let back = wait_for_peers(&discovery, "hub-b up again", |peers| {
        peer(peers, "hub-b").is_some_and(|peer| peer.state == PeerState::Up)
    })
    .await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].key, PeerKey::Id("hub-b".into()));

    discovery.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn probe_that_never_answers_times_out_and_the_peer_goes_down() {
    let lan = FakeLan::default();
    lan.answer(peer_addr(), &advert("hub-b", "beta", 7000));
    let discovery = start_with_peer(&lan);
    wait_for_state(&discovery, "hub-b", PeerState::Up).await;

    lan.set(peer_addr(), Behaviour::Hang);
    wait_for_state(&discovery, "hub-b", PeerState::Down).await;

    discovery.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn static_peer_that_is_ourselves_is_dropped() {
    let lan = FakeLan::default();
    let local = advert("hub-a", "alpha", 7000);
    lan.answer(peer_addr(), &local);
    let discovery = start_with_peer(&lan);
    wait_for_peers(&discovery, "an empty peer list", <[_]>::is_empty).await;
    discovery.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn peers_of_another_cluster_or_protocol_are_listed_but_not_usable() {
    let foreign_addr: SocketAddr = "192.0.2.11:7000".parse().expect("addr");
    let newer_addr: SocketAddr = "192.0.2.12:7000".parse().expect("addr");
    let lan = FakeLan::default();
    let mut foreign = advert("hub-f", "foreign", 7000);
    foreign.cluster = "elsewhere".into();
    let mut newer = advert("hub-n", "newer", 7000);
    newer.proto = 2;
    lan.answer(foreign_addr, &foreign);
    lan.answer(newer_addr, &newer);
    let config = static_config(advert("hub-a", "alpha", 7000), &[foreign_addr, newer_addr]);
    let discovery = Discovery::start(config, lan.clone()).expect("discovery starts");

    let peers = wait_for_peers(&discovery, "both peers up", |peers| {
        peers.len() == 2 && peers.iter().all(|peer| peer.state == PeerState::Up)
    })
    .await;
    let expected = [
        ("hub-f", Compatibility::ForeignCluster),
        ("hub-n", Compatibility::IncompatibleProtocol),
    ];
    for (id, compatibility) in expected {
        let listed = peer(&peers, id).expect("listed");
        assert_eq!(listed.compatibility, Some(compatibility), "{id}");
        assert!(!listed.is_usable(), "{id}");
    }

    discovery.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_the_peer_watch() {
    let lan = FakeLan::default();
    let discovery = start_with_peer(&lan);
    let mut peers = discovery.watch_peers();
    discovery.shutdown().await.expect("clean shutdown");
    assert!(peers.changed().await.is_err());
}

#[test]
fn discovery_needs_a_tokio_runtime() {
    let config = static_config(advert("hub-a", "alpha", 7000), &[]);
    let outcome = Discovery::start(config, FakeLan::default());
    assert!(matches!(outcome, Err(DiscoveryError::NoRuntime)));
}

/// A change to a valid configuration.
type Mutation = fn(&mut DiscoveryConfig);

#[tokio::test]
async fn unusable_configurations_are_rejected_at_start() {
    #[rustfmt::skip]
    let cases: [(Mutation, &str); 6] = [
        (|config| config.local.port = 0, "invalid local advert: txt field `port` is out of range 1..=65535 (got 0)"),
        (|config| config.local.id = "hub a".into(), "invalid local advert: txt field `id` contains forbidden character U+0020"),
        (|config| config.probe_interval = Duration::ZERO, "invalid discovery config: `probe_interval` must be more than zero"),
        (|config| config.load_refresh_interval = Duration::ZERO, "invalid discovery config: `load_refresh_interval` must be more than zero"),
        (|config| config.down_after = config.suspect_after, "invalid discovery config: `down_after` must be longer than suspect_after"),
        (|config| config.mdns_interfaces = vec![String::new()], "invalid discovery config: `mdns_interfaces` interface names must not be empty"),
    ];
    for (mutate, expected) in cases {
        let mut config = static_config(advert("hub-a", "alpha", 7000), &[]);
        mutate(&mut config);
        let error = Discovery::start(config, FakeLan::default()).expect_err(expected);
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert_eq!(message, expected);
    }
}

#[tokio::test]
async fn static_peer_specs_resolve_in_order_without_duplicates() {
    let resolved = resolve_static_peers(&["192.0.2.10:7000", "[2001:db8::1]:7001", "192.0.2.10:7000"])
        .await
        .expect("literal addresses resolve");
    let rendered: Vec<String> = resolved.iter().map(ToString::to_string).collect();
    assert_eq!(rendered, ["192.0.2.10:7000", "[2001:db8::1]:7001"]);

    let error = resolve_static_peers(&["192.0.2.10"])
        .await
        .expect_err("a spec without port is rejected");
    assert_eq!(error.to_string(), "cannot resolve static peer `192.0.2.10`");
}
