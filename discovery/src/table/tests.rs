//! Scenario tests: each case is a list of timed inputs and expectations,
//! replayed against a fresh table. Peers render as one line each:
//! `key state source name load=… compatibility verified|claimed usable|unusable @address [addresses] seen=…`.

use super::*;

const SUSPECT_AFTER_MS: u64 = 750;
const DOWN_AFTER_MS: u64 = 2_000;
const SLOW_PROBE_MS: u64 = 1_000;

enum Step {
    AddStatic(u64, &'static str, bool),
    Advert(u64, &'static str, &'static str, &'static [&'static str]),
    Removed(u64, &'static str, Option<&'static str>),
    ProbeOk(u64, &'static str, &'static str, &'static str, &'static str),
    ProbeFailed(u64, &'static str),
    Tick(u64),
    Targets(u64, &'static [&'static str]),
    Peers(&'static [&'static str]),
}
use Step::*;

fn config() -> TableConfig {
    TableConfig {
        own_hub_id: "hub-a".into(),
        own_cluster_id: "lab".into(),
        own_protocol_version: 1,
        suspect_after: Duration::from_millis(SUSPECT_AFTER_MS),
        down_after: Duration::from_millis(DOWN_AFTER_MS),
        slow_probe_interval: Duration::from_millis(SLOW_PROBE_MS),
    }
}

/// `id/name/cluster/proto/load`
fn identity(spec: &str) -> PeerIdentity {
    let parts: Vec<&str> = spec.split('/').collect();
    assert_eq!(parts.len(), 5, "identity spec {spec}");
    PeerIdentity {
        hub_id: parts[0].into(),
        hub_name: parts[1].into(),
        cluster_id: parts[2].into(),
        protocol_version: parts[3].parse().expect("proto"),
        load: parts[4].parse().expect("load"),
    }
}

fn advert(spec: &str) -> HubAdvert {
    let who = identity(spec);
    HubAdvert {
        id: who.hub_id,
        name: who.hub_name,
        port: 7000,
        proto: who.protocol_version,
        cluster: who.cluster_id,
        load: who.load,
    }
}

/// `static:ADDR` or a hub id.
fn key(spec: &str) -> PeerKey {
    match spec.strip_prefix("static:") {
        Some(addr) => PeerKey::Static(addr.parse().expect("static addr")),
        None => PeerKey::Id(spec.into()),
    }
}

fn addr(spec: &str) -> SocketAddr {
    spec.parse().expect("socket addr")
}

fn render_outcome(outcome: &ProbeOutcome) -> String {
    match outcome {
        ProbeOutcome::Confirmed => "confirmed".into(),
        ProbeOutcome::Resolved => "resolved".into(),
        ProbeOutcome::OwnAddress => "own address".into(),
        ProbeOutcome::IdentityMismatch { expected, answered } => {
            format!("mismatch {expected}!={answered}")
        }
        ProbeOutcome::InvalidIdentity(error) => format!("invalid: {error}"),
        ProbeOutcome::UnknownPeer => "unknown peer".into(),
    }
}

fn render_peer(peer: &PeerSnapshot, base: Instant) -> String {
    let compatibility = match peer.compatibility {
        Some(Compatibility::Compatible) => "compatible",
        Some(Compatibility::ForeignCluster) => "foreign-cluster",
        Some(Compatibility::IncompatibleProtocol) => "incompatible-protocol",
        None => "-",
    };
    let source = match peer.source {
        PeerSource::Mdns => "mdns",
        PeerSource::Static => "static",
        PeerSource::Learned => "learned",
    };
    let addresses: Vec<String> = peer.addresses.iter().map(ToString::to_string).collect();
    format!(
        "{} {} {} {} load={} {} {} {} @{} [{}] seen={}",
        peer.key,
        peer.state,
        source,
        peer.name().unwrap_or("-"),
        peer.load().map_or("-".into(), |load| load.to_string()),
        compatibility,
        if peer.verified { "verified" } else { "claimed" },
        if peer.is_usable() { "usable" } else { "unusable" },
        peer.address.map_or("-".into(), |address| address.to_string()),
        addresses.join(","),
        peer.last_seen
            .map_or("-".into(), |seen| seen.duration_since(base).as_millis().to_string()),
    )
}

fn run(name: &str, steps: &[Step]) {
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let mut table = PeerTable::new(config());
    for (index, step) in steps.iter().enumerate() {
        let context = format!("case `{name}`, step {index}");
        match step {
            AddStatic(ms, address, added) => {
                assert_eq!(table.add_static_peer(addr(address), at(*ms)), *added, "{context}");
            }
            Advert(ms, instance, spec, addrs) => {
                let addrs: Vec<SocketAddr> = addrs.iter().map(|spec| addr(spec)).collect();
                table.on_advert(instance, &advert(spec), &addrs, at(*ms));
            }
            Removed(ms, instance, expected_key) => {
                let removed = table.on_advert_removed(instance, at(*ms));
                assert_eq!(removed, expected_key.map(key), "{context}");
            }
            ProbeOk(ms, peer, address, spec, expected) => {
                let outcome = table.on_probe_ok(&key(peer), addr(address), identity(spec), at(*ms));
                assert_eq!(render_outcome(&outcome), *expected, "{context}");
            }
            ProbeFailed(ms, peer) => table.on_probe_failed(&key(peer), at(*ms)),
            Tick(ms) => table.tick(at(*ms)),
            Targets(ms, expected) => {
                let targets: Vec<String> = table
                    .probe_targets(at(*ms))
                    .iter()
                    .map(|target| format!("{}@{}", target.key, target.addr))
                    .collect();
                assert_eq!(targets, *expected, "{context}");
            }
            Peers(expected) => {
                let peers: Vec<String> = table.peers().iter().map(|peer| render_peer(peer, base)).collect();
                assert_eq!(peers, *expected, "{context}");
            }
        }
    }
}

const B: &str = "hub-b/beta/lab/1/250";
const B_ADDR: &str = "10.0.0.2:7000";

#[test]
fn mdns_peers_are_suggested_then_confirmed_by_probes() {
    #[rustfmt::skip]
    let cases: &[(&str, &[Step])] = &[
        ("an advert lists the peer as unknown and due for a probe", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Peers(&["hub-b unknown mdns beta load=250 compatible claimed unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=-"]),
            Targets(0, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("a successful probe makes the peer up and usable", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(10, "hub-b", B_ADDR, "hub-b/beta/lab/1/300", "confirmed"),
            Peers(&["hub-b up mdns beta load=300 compatible verified usable @10.0.0.2:7000 [10.0.0.2:7000] seen=10"]),
            Targets(10, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("our own advert is never added", &[
            Advert(0, "a._ferry._tcp.local.", "hub-a/alpha/lab/1/0", &["10.0.0.1:7000"]),
            Peers(&[]),
            Targets(0, &[]),
        ]),
        ("a later advert refreshes a claimed identity", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Advert(100, "b._ferry._tcp.local.", "hub-b/beta-2/lab/2/400", &[B_ADDR]),
            Peers(&["hub-b unknown mdns beta-2 load=400 incompatible-protocol claimed unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=-"]),
        ]),
        ("after a probe an advert only updates load and adds addresses; the one that answered stays", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(10, "hub-b", B_ADDR, B, "confirmed"),
            Advert(100, "b._ferry._tcp.local.", "hub-b/mallory/evil/9/900", &["10.0.0.3:7000"]),
            Peers(&["hub-b up mdns beta load=900 compatible verified usable @10.0.0.2:7000 [10.0.0.2:7000,10.0.0.3:7000] seen=10"]),
            Targets(100, &["hub-b@10.0.0.2:7000"]),
            // Only when the proven address stops answering is the new one tried.
            ProbeFailed(200, "hub-b"),
            Targets(200, &["hub-b@10.0.0.3:7000"]),
        ]),
        ("addresses prefer ipv4, then global ipv6, then link-local ipv6", &[
            Advert(0, "b._ferry._tcp.local.", B, &["[fe80::2%2]:7000", "[fd00::2]:7000", B_ADDR, B_ADDR]),
            Peers(&["hub-b unknown mdns beta load=250 compatible claimed unusable @10.0.0.2:7000 [10.0.0.2:7000,[fd00::2]:7000,[fe80::2%2]:7000] seen=-"]),
            Targets(0, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("peers sort by name, nameless static peers last", &[
            AddStatic(0, "10.0.0.9:7000", true),
            Advert(0, "z._ferry._tcp.local.", "hub-z/alpha/lab/1/0", &["10.0.0.26:7000"]),
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Peers(&[
                "hub-z unknown mdns alpha load=0 compatible claimed unusable @10.0.0.26:7000 [10.0.0.26:7000] seen=-",
                "hub-b unknown mdns beta load=250 compatible claimed unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=-",
                "static:10.0.0.9:7000 unknown static - load=- - claimed unusable @10.0.0.9:7000 [10.0.0.9:7000] seen=-",
            ]),
        ]),
    ];
    for (name, steps) in cases {
        run(name, steps);
    }
}

#[test]
fn silence_makes_peers_suspect_then_down_and_answers_bring_them_back() {
    #[rustfmt::skip]
    let cases: &[(&str, &[Step])] = &[
        ("an up peer without answers goes suspect after 750 ms and down after 2 s", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            Tick(749),
            Peers(&["hub-b up mdns beta load=250 compatible verified usable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
            Tick(750),
            Peers(&["hub-b suspect mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
            Tick(1_999),
            Peers(&["hub-b suspect mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
            Tick(2_000),
            Peers(&["hub-b down mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
        ]),
        ("a failed probe makes an up peer suspect at once", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            ProbeFailed(250, "hub-b"),
            Peers(&["hub-b suspect mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
            Targets(250, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("a suspect peer that answers is up again", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            ProbeFailed(250, "hub-b"),
            ProbeOk(500, "hub-b", B_ADDR, B, "confirmed"),
            Peers(&["hub-b up mdns beta load=250 compatible verified usable @10.0.0.2:7000 [10.0.0.2:7000] seen=500"]),
        ]),
        ("a down peer that answers is up again, under the same id", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            Tick(5_000),
            ProbeOk(5_100, "hub-b", B_ADDR, B, "confirmed"),
            Tick(5_200),
            Peers(&["hub-b up mdns beta load=250 compatible verified usable @10.0.0.2:7000 [10.0.0.2:7000] seen=5100"]),
        ]),
        ("ticks leave never-probed peers unknown", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeFailed(100, "hub-b"),
            Tick(60_000),
            Peers(&["hub-b unknown mdns beta load=250 compatible claimed unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=-"]),
        ]),
        ("an mdns goodbye marks the peer down at once and keeps it listed", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            Removed(100, "B._ferry._tcp.local.", Some("hub-b")),
            Peers(&["hub-b down mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
            Removed(200, "b._ferry._tcp.local.", None),
            Removed(200, "unknown._ferry._tcp.local.", None),
        ]),
        ("a fresh advert does not make a down peer up: only a probe does", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            Removed(100, "b._ferry._tcp.local.", Some("hub-b")),
            Advert(3_000, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Peers(&["hub-b down mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
            Targets(3_000, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("an instance name taken over by another hub belongs to the new one", &[
            Advert(0, "x._ferry._tcp.local.", B, &[B_ADDR]),
            Advert(10, "x._ferry._tcp.local.", "hub-c/gamma/lab/1/0", &["10.0.0.3:7000"]),
            Removed(20, "x._ferry._tcp.local.", Some("hub-c")),
            Peers(&[
                "hub-b unknown mdns beta load=250 compatible claimed unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=-",
                "hub-c down mdns gamma load=0 compatible claimed unusable @10.0.0.3:7000 [10.0.0.3:7000] seen=-",
            ]),
        ]),
    ];
    for (name, steps) in cases {
        run(name, steps);
    }
}

#[test]
fn quiet_peers_are_probed_slowly_until_a_fresh_advert() {
    #[rustfmt::skip]
    let cases: &[(&str, &[Step])] = &[
        ("up and suspect peers are probed every round", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            Targets(250, &["hub-b@10.0.0.2:7000"]),
            ProbeFailed(250, "hub-b"),
            Targets(500, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("a down peer whose probe fails waits the slow interval", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            Tick(2_000),
            ProbeFailed(2_250, "hub-b"),
            Targets(3_249, &[]),
            Targets(3_250, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("a goodbye defers the next probe by the slow interval", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Removed(100, "b._ferry._tcp.local.", Some("hub-b")),
            Targets(1_099, &[]),
            Targets(1_100, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("a fresh advert gets a down peer probed at once", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Removed(100, "b._ferry._tcp.local.", Some("hub-b")),
            Advert(200, "b._ferry._tcp.local.", B, &[B_ADDR]),
            Targets(200, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("a txt refresh does not speed up probing of a quiet peer", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeFailed(2_000, "hub-b"),
            Advert(2_500, "b._ferry._tcp.local.", "hub-b/beta/lab/1/999", &[B_ADDR]),
            Targets(2_500, &[]),
            Targets(3_000, &["hub-b@10.0.0.2:7000"]),
        ]),
        ("new addresses get a quiet peer probed at once", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeFailed(2_000, "hub-b"),
            Advert(2_500, "b._ferry._tcp.local.", B, &["10.0.0.3:7000"]),
            Targets(2_500, &["hub-b@10.0.0.3:7000"]),
        ]),
        ("an unknown peer silent for 2 s goes to slow probing", &[
            AddStatic(0, "10.0.0.9:7000", true),
            ProbeFailed(1_999, "static:10.0.0.9:7000"),
            Targets(1_999, &["static:10.0.0.9:7000@10.0.0.9:7000"]),
            ProbeFailed(2_000, "static:10.0.0.9:7000"),
            Targets(2_999, &[]),
            Targets(3_000, &["static:10.0.0.9:7000@10.0.0.9:7000"]),
        ]),
        ("failures rotate through the addresses and an answer pins one", &[
            Advert(0, "b._ferry._tcp.local.", B, &["10.0.0.2:7000", "172.17.0.2:7000"]),
            Targets(0, &["hub-b@10.0.0.2:7000"]),
            ProbeFailed(0, "hub-b"),
            Targets(0, &["hub-b@172.17.0.2:7000"]),
            ProbeOk(250, "hub-b", "172.17.0.2:7000", B, "confirmed"),
            Targets(500, &["hub-b@172.17.0.2:7000"]),
            Peers(&["hub-b up mdns beta load=250 compatible verified usable @172.17.0.2:7000 [172.17.0.2:7000,10.0.0.2:7000] seen=250"]),
        ]),
        ("peers without any address are never targets", &[
            AddStatic(0, "10.0.0.9:7000", true),
            ProbeOk(0, "static:10.0.0.9:7000", "10.0.0.9:7000", B, "resolved"),
            ProbeOk(10, "hub-b", "10.0.0.9:7000", "hub-c/gamma/lab/1/0", "mismatch hub-b!=hub-c"),
            Targets(10, &["static:10.0.0.9:7000@10.0.0.9:7000"]),
        ]),
    ];
    for (name, steps) in cases {
        run(name, steps);
    }
}

#[test]
fn static_peers_are_known_by_address_until_a_probe_names_them() {
    #[rustfmt::skip]
    let cases: &[(&str, &[Step])] = &[
        ("a static peer is unknown and probed at once", &[
            AddStatic(0, "10.0.0.9:7000", true),
            AddStatic(0, "10.0.0.9:7000", false),
            Peers(&["static:10.0.0.9:7000 unknown static - load=- - claimed unusable @10.0.0.9:7000 [10.0.0.9:7000] seen=-"]),
            Targets(0, &["static:10.0.0.9:7000@10.0.0.9:7000"]),
        ]),
        ("the first answer keys the static peer by its hub id", &[
            AddStatic(0, "10.0.0.9:7000", true),
            ProbeOk(10, "static:10.0.0.9:7000", "10.0.0.9:7000", B, "resolved"),
            Peers(&["hub-b up static beta load=250 compatible verified usable @10.0.0.9:7000 [10.0.0.9:7000] seen=10"]),
            Targets(10, &["hub-b@10.0.0.9:7000"]),
            AddStatic(20, "10.0.0.9:7000", false),
        ]),
        ("a static peer also found by mdns is one peer, static addresses first", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            AddStatic(0, "192.168.1.2:7000", true),
            ProbeOk(10, "static:192.168.1.2:7000", "192.168.1.2:7000", B, "resolved"),
            Peers(&["hub-b up static beta load=250 compatible verified usable @192.168.1.2:7000 [192.168.1.2:7000,10.0.0.2:7000] seen=10"]),
        ]),
        ("two static addresses of one hub merge into one peer", &[
            AddStatic(0, "10.0.0.9:7000", true),
            AddStatic(0, "[fd00::9]:7000", true),
            ProbeOk(10, "static:10.0.0.9:7000", "10.0.0.9:7000", B, "resolved"),
            ProbeOk(10, "static:[fd00::9]:7000", "[fd00::9]:7000", B, "resolved"),
            Peers(&["hub-b up static beta load=250 compatible verified usable @[fd00::9]:7000 [10.0.0.9:7000,[fd00::9]:7000] seen=10"]),
        ]),
        ("a static address that is this hub is dropped for good", &[
            AddStatic(0, "127.0.0.1:7000", true),
            ProbeOk(10, "static:127.0.0.1:7000", "127.0.0.1:7000", "hub-a/alpha/lab/1/0", "own address"),
            Peers(&[]),
            Targets(10, &[]),
            AddStatic(20, "127.0.0.1:7000", false),
        ]),
        ("a static address now answering as another hub goes back to unresolved", &[
            AddStatic(0, "10.0.0.9:7000", true),
            ProbeOk(10, "static:10.0.0.9:7000", "10.0.0.9:7000", B, "resolved"),
            ProbeOk(20, "hub-b", "10.0.0.9:7000", "hub-c/gamma/lab/1/0", "mismatch hub-b!=hub-c"),
            ProbeOk(30, "static:10.0.0.9:7000", "10.0.0.9:7000", "hub-c/gamma/lab/1/0", "resolved"),
            Peers(&[
                "hub-b suspect static beta load=250 compatible verified unusable @- [] seen=10",
                "hub-c up static gamma load=0 compatible verified usable @10.0.0.9:7000 [10.0.0.9:7000] seen=30",
            ]),
        ]),
        ("an answer for a static key that already resolved is ignored", &[
            AddStatic(0, "10.0.0.9:7000", true),
            ProbeOk(10, "static:10.0.0.9:7000", "10.0.0.9:7000", B, "resolved"),
            ProbeOk(11, "static:10.0.0.9:7000", "10.0.0.9:7000", B, "unknown peer"),
        ]),
    ];
    for (name, steps) in cases {
        run(name, steps);
    }
}

#[test]
fn foreign_and_invalid_peers_are_listed_but_never_usable() {
    #[rustfmt::skip]
    let cases: &[(&str, &[Step])] = &[
        ("a peer of another cluster is listed, up but unusable", &[
            Advert(0, "f._ferry._tcp.local.", "hub-f/foreign/other/1/0", &["10.0.0.6:7000"]),
            ProbeOk(10, "hub-f", "10.0.0.6:7000", "hub-f/foreign/other/1/0", "confirmed"),
            Peers(&["hub-f up mdns foreign load=0 foreign-cluster verified unusable @10.0.0.6:7000 [10.0.0.6:7000] seen=10"]),
        ]),
        ("a peer speaking another protocol is listed, up but unusable", &[
            Advert(0, "p._ferry._tcp.local.", "hub-p/newer/lab/2/0", &["10.0.0.7:7000"]),
            ProbeOk(10, "hub-p", "10.0.0.7:7000", "hub-p/newer/lab/2/0", "confirmed"),
            Peers(&["hub-p up mdns newer load=0 incompatible-protocol verified unusable @10.0.0.7:7000 [10.0.0.7:7000] seen=10"]),
        ]),
        ("a foreign cluster outranks a protocol mismatch", &[
            Advert(0, "f._ferry._tcp.local.", "hub-f/foreign/other/2/0", &["10.0.0.6:7000"]),
            Peers(&["hub-f unknown mdns foreign load=0 foreign-cluster claimed unusable @10.0.0.6:7000 [10.0.0.6:7000] seen=-"]),
        ]),
        ("an invalid identity in an answer counts as a failed probe", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            ProbeOk(10, "hub-b", B_ADDR, "hub-b/be\ta/lab/1/250", "invalid: txt field `name` contains forbidden character U+0009"),
            ProbeOk(20, "hub-b", B_ADDR, "hub-b/beta/lab/1/99999", "invalid: txt field `load` is out of range 0..=10000 (got 99999)"),
            Peers(&["hub-b suspect mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
        ]),
        ("another hub answering at an mdns address counts as a failed probe", &[
            Advert(0, "b._ferry._tcp.local.", B, &[B_ADDR]),
            ProbeOk(0, "hub-b", B_ADDR, B, "confirmed"),
            ProbeOk(10, "hub-b", B_ADDR, "hub-a/alpha/lab/1/0", "mismatch hub-b!=hub-a"),
            Peers(&["hub-b suspect mdns beta load=250 compatible verified unusable @10.0.0.2:7000 [10.0.0.2:7000] seen=0"]),
        ]),
        ("an answer for a peer that is not listed is ignored", &[
            ProbeOk(0, "hub-x", "10.0.0.24:7000", "hub-x/x/lab/1/0", "unknown peer"),
            ProbeFailed(0, "hub-x"),
            Peers(&[]),
        ]),
    ];
    for (name, steps) in cases {
        run(name, steps);
    }
}

#[test]
fn a_peer_that_introduced_itself_is_probed_and_listed_as_learned() {
    let now = Instant::now();
    let mut table = PeerTable::new(TableConfig {
        own_hub_id: "hub-self".into(),
        own_cluster_id: "c".into(),
        own_protocol_version: 1,
        suspect_after: Duration::from_millis(750),
        down_after: Duration::from_secs(2),
        slow_probe_interval: Duration::from_secs(1),
    });
    let addr: SocketAddr = "10.0.0.2:7411".parse().unwrap();
    assert!(table.add_learned_peer(addr, now));
    assert!(!table.add_learned_peer(addr, now), "an address is suggested once");
    let targets = table.probe_targets(now);
    assert_eq!(targets.len(), 1);
    let identity = PeerIdentity {
        hub_id: "hub-b".into(),
        hub_name: "b".into(),
        cluster_id: "c".into(),
        protocol_version: 1,
        load: 0,
    };
    table.on_probe_ok(&targets[0].key, addr, identity, now);
    let peers = table.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].source, PeerSource::Learned);
    assert_eq!(peers[0].state, PeerState::Up);
}
