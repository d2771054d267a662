//! The peer table: a pure state machine of what this hub knows about its peers.
//!
//! No I/O and no clock: every input carries the time it happened, so the
//! whole life of a peer can be replayed in a test.
//!
//! Peers are keyed by hub id, never by mDNS instance name (mdns-sd renames
//! duplicate instances). A static peer is keyed by its address until its first
//! successful probe tells who it is. mDNS only *suggests* peers: a peer is
//! [`PeerState::Up`] only after a probe answered, [`PeerState::Suspect`] when
//! a probe failed or it has been quiet for `suspect_after`, and
//! [`PeerState::Down`] after `down_after` of silence or an mDNS goodbye.
//! Nothing is ever deleted on suspicion: down peers stay listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::probe::PeerIdentity;
use crate::txt::{HubAdvert, TxtError};

/// How the table knows a peer: by hub id, or by a static address that has
/// not yet answered a probe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// A peer whose hub id is known (from mDNS or from a probe).
    Id(String),
    /// A configured static address whose hub id is not known yet.
    Static(SocketAddr),
}

impl fmt::Display for PeerKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerKey::Id(id) => formatter.write_str(id),
            PeerKey::Static(addr) => write!(formatter, "static:{addr}"),
        }
    }
}

/// Liveness of a peer, as judged by probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Suggested (by mDNS or configuration) but never probed successfully.
    Unknown,
    /// The last probe answered within `suspect_after`.
    Up,
    /// A probe failed, or no probe answered for `suspect_after`.
    Suspect,
    /// No probe answered for `down_after`, or the peer said goodbye on mDNS.
    Down,
}

impl PeerState {
    /// Lowercase name, for tables and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Unknown => "unknown",
            PeerState::Up => "up",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Where a peer came from. A peer that is both configured and advertised
/// counts as [`PeerSource::Static`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerSource {
    /// Found by mDNS browsing.
    Mdns,
    /// Configured with `--peer` or in the config file.
    Static,
    /// Learned from the peer itself: it probed us first (it found us by mDNS
    /// before we heard of it) and said where it listens.
    Learned,
}

/// Whether this hub may work with a peer. Incompatible peers are listed but
/// never [usable](PeerSnapshot::is_usable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compatibility {
    /// Same cluster id and protocol version.
    Compatible,
    /// The peer belongs to another cluster.
    ForeignCluster,
    /// Same cluster, different protocol version.
    IncompatibleProtocol,
}

/// Who this hub is and how fast peers age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Our own hub id: never added to the table.
    pub own_hub_id: String,
    /// Our cluster id: peers of other clusters are [`Compatibility::ForeignCluster`].
    pub own_cluster_id: String,
    /// Our protocol version: peers speaking another are
    /// [`Compatibility::IncompatibleProtocol`].
    pub own_protocol_version: u32,
    /// An up peer without a successful probe for this long becomes suspect.
    pub suspect_after: Duration,
    /// A peer without a successful probe for this long becomes down; must
    /// be longer than `suspect_after`.
    pub down_after: Duration,
    /// Down peers, and peers unknown for `down_after`, are probed only this
    /// often (a fresh mDNS advert gets them probed at once).
    pub slow_probe_interval: Duration,
}

/// A peer to probe now, at one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The peer; give it back to [`PeerTable::on_probe_ok`] or
    /// [`PeerTable::on_probe_failed`].
    pub key: PeerKey,
    /// The address to probe.
    pub addr: SocketAddr,
}

/// What [`PeerTable::on_advert`] did with an advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertOutcome {
    /// A new peer is listed, in state [`PeerState::Unknown`].
    Added,
    /// A listed peer was refreshed.
    Updated,
    /// The advert carries our own hub id: ignored.
    OwnAdvert,
}

/// What [`PeerTable::on_probe_ok`] did with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The peer answered with the expected identity and is up.
    Confirmed,
    /// A static address told its hub id: the peer is now keyed by that id.
    Resolved,
    /// A static address turned out to be this hub: it is dropped and never probed again.
    OwnAddress,
    /// Another hub answered at the peer's address: counted as a failed probe.
    IdentityMismatch {
        /// The hub id the table expected.
        expected: String,
        /// The hub id that answered.
        answered: String,
    },
    /// The answer breaks the TXT rules: counted as a failed probe.
    InvalidIdentity(TxtError),
    /// The key is not in the table: ignored.
    UnknownPeer,
}

/// A copy of one peer's entry, for display and for the rest of the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// The table key of the peer.
    pub key: PeerKey,
    /// Who the peer is: from its last successful probe when `verified`,
    /// otherwise as its mDNS advert claims. `None` only for a static
    /// address that never answered.
    pub identity: Option<PeerIdentity>,
    /// Whether `identity` comes from a successful probe.
    pub verified: bool,
    /// Whether we may work with the peer; `None` exactly when `identity` is.
    pub compatibility: Option<Compatibility>,
    /// Every known address: static ones first, then the one that last
    /// answered, then the advertised ones (IPv4, then IPv6).
    pub addresses: Vec<SocketAddr>,
    /// The address to reach the peer at: the one that last answered a probe,
    /// or the next one to try.
    pub address: Option<SocketAddr>,
    /// Where the peer came from.
    pub source: PeerSource,
    /// Liveness.
    pub state: PeerState,
    /// When a probe last answered.
    pub last_seen: Option<Instant>,
}

impl PeerSnapshot {
    /// The hub id, if known.
    pub fn id(&self) -> Option<&str> {
        self.identity.as_ref().map(|identity| identity.hub_id.as_str())
    }

    /// The hub name, if known.
    pub fn name(&self) -> Option<&str> {
        self.identity.as_ref().map(|identity| identity.hub_name.as_str())
    }

    /// The last known load figure, if any.
    pub fn load(&self) -> Option<u32> {
        self.identity.as_ref().map(|identity| identity.load)
    }

    /// Whether the hub may send work to this peer: up and compatible.
    pub fn is_usable(&self) -> bool {
        self.state == PeerState::Up && self.verified && self.compatibility == Some(Compatibility::Compatible)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    source: PeerSource,
    identity: Option<PeerIdentity>,
    verified: bool,
    static_addrs: Vec<SocketAddr>,
    /// The address that last answered a probe. Kept when mDNS replaces the
    /// advertised addresses: a record that claims this peer's id at another
    /// address (a stale one, or a spoofed one) must not take a working
    /// address away from it.
    proven_addr: Option<SocketAddr>,
    mdns_addrs: Vec<SocketAddr>,
    mdns_instance: Option<String>,
    state: PeerState,
    last_seen: Option<Instant>,
    /// When mDNS or the configuration last suggested the peer.
    suggested_at: Instant,
    next_probe_at: Instant,
    /// Index in `addresses()` of the address to probe next.
    rotation: usize,
}

impl Entry {
    fn new(source: PeerSource, now: Instant) -> Self {
        Self {
            source,
            identity: None,
            verified: false,
            static_addrs: Vec::new(),
            proven_addr: None,
            mdns_addrs: Vec::new(),
            mdns_instance: None,
            state: PeerState::Unknown,
            last_seen: None,
            suggested_at: now,
            next_probe_at: now,
            rotation: 0,
        }
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        let mut addresses = self.static_addrs.clone();
        for addr in self.proven_addr.iter().chain(&self.mdns_addrs) {
            if !addresses.contains(addr) {
                addresses.push(*addr);
            }
        }
        addresses
    }

    fn current_address(&self) -> Option<SocketAddr> {
        let addresses = self.addresses();
        if addresses.is_empty() {
            return None;
        }
        Some(addresses[self.rotation % addresses.len()])
    }

    /// Down peers, and peers unknown for a long time, are probed slowly.
    fn is_quiet(&self, now: Instant, down_after: Duration) -> bool {
        match self.state {
            PeerState::Down => true,
            PeerState::Unknown => now.saturating_duration_since(self.suggested_at) >= down_after,
            PeerState::Up | PeerState::Suspect => false,
        }
    }

    fn confirm(&mut self, addr: SocketAddr, identity: PeerIdentity, now: Instant) {
        self.identity = Some(identity);
        self.verified = true;
        self.state = PeerState::Up;
        self.last_seen = Some(now);
        self.next_probe_at = now;
        self.proven_addr = Some(addr);
        if let Some(index) = self.addresses().iter().position(|known| *known == addr) {
            self.rotation = index;
        }
    }
}

/// The peer table: a pure state machine of what this hub knows about its
/// peers, without I/O or clock (every input carries its time).
///
/// Peers are keyed by hub id, never by mDNS instance name; a static peer is
/// keyed by its address until its first successful probe tells who it is.
/// mDNS only suggests peers: a peer is [`PeerState::Up`] only after a probe
/// answered. Nothing is deleted on suspicion: down peers stay listed.
#[derive(Debug, Clone)]
pub struct PeerTable {
    config: TableConfig,
    entries: BTreeMap<PeerKey, Entry>,
    /// Static addresses that answered with our own hub id.
    own_addrs: BTreeSet<SocketAddr>,
}

impl PeerTable {
    /// An empty table.
    pub fn new(config: TableConfig) -> Self {
        debug_assert!(config.suspect_after < config.down_after);
        Self {
            config,
            entries: BTreeMap::new(),
            own_addrs: BTreeSet::new(),
        }
    }

    /// The configuration the table was built with.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Adds a configured peer address, to be probed at once. Returns `false`
    /// when the address is already known (or is known to be this hub).
    pub fn add_static_peer(&mut self, addr: SocketAddr, now: Instant) -> bool {
        self.add_peer_address(addr, PeerSource::Static, now)
    }

    /// Adds an address a peer told us about itself (see
    /// [`PeerSource::Learned`]), to be probed at once. Like a static address
    /// it only suggests: the probe decides who is there.
    pub fn add_learned_peer(&mut self, addr: SocketAddr, now: Instant) -> bool {
        let known_by_mdns = self.entries.values().any(|entry| entry.mdns_addrs.contains(&addr));
        !known_by_mdns && self.add_peer_address(addr, PeerSource::Learned, now)
    }

    fn add_peer_address(&mut self, addr: SocketAddr, source: PeerSource, now: Instant) -> bool {
        let known = self.own_addrs.contains(&addr)
            || self
                .entries
                .iter()
                .any(|(key, entry)| *key == PeerKey::Static(addr) || entry.static_addrs.contains(&addr));
        if known {
            return false;
        }
        let mut entry = Entry::new(source, now);
        entry.static_addrs.push(addr);
        self.entries.insert(PeerKey::Static(addr), entry);
        true
    }

    /// An mDNS advert was resolved: `instance` is the mDNS instance full
    /// name, `advert` its parsed TXT record and `addrs` its addresses with
    /// the advertised gRPC port.
    ///
    /// The advert suggests the peer. A new instance or new addresses get an
    /// unknown or down peer probed at once; a mere TXT refresh does not.
    /// Once a probe has verified the peer, only the advert's load and
    /// addresses are taken.
    pub fn on_advert(
        &mut self,
        instance: &str,
        advert: &HubAdvert,
        addrs: &[SocketAddr],
        now: Instant,
    ) -> AdvertOutcome {
        if advert.id == self.config.own_hub_id {
            return AdvertOutcome::OwnAdvert;
        }
        let key = PeerKey::Id(advert.id.clone());
        // An instance name belongs to one peer at a time.
        for (other_key, entry) in &mut self.entries {
            if *other_key != key
                && entry
                    .mdns_instance
                    .as_deref()
                    .is_some_and(|known| known.eq_ignore_ascii_case(instance))
            {
                entry.mdns_instance = None;
            }
        }
        let outcome = if self.entries.contains_key(&key) {
            AdvertOutcome::Updated
        } else {
            AdvertOutcome::Added
        };
        let entry = self
            .entries
            .entry(key)
            .or_insert_with(|| Entry::new(PeerSource::Mdns, now));
        let mdns_addrs = sorted_mdns_addrs(addrs);
        // A new instance or new addresses are news; a refresh of the TXT
        // record (a load change) is not, and must not speed up probing.
        let fresh = outcome == AdvertOutcome::Added
            || entry
                .mdns_instance
                .as_deref()
                .is_none_or(|known| !known.eq_ignore_ascii_case(instance))
            || entry.mdns_addrs != mdns_addrs;
        entry.mdns_instance = Some(instance.to_owned());
        entry.mdns_addrs = mdns_addrs;
        match (&mut entry.identity, entry.verified) {
            (Some(identity), true) => identity.load = advert.load,
            _ => entry.identity = Some(PeerIdentity::from(advert)),
        }
        if fresh {
            entry.suggested_at = now;
            if matches!(entry.state, PeerState::Unknown | PeerState::Down) {
                entry.next_probe_at = now;
            }
        }
        outcome
    }

    /// mDNS said goodbye for `instance` (or its records expired): the peer
    /// is down at once. Returns the peer's key, if the instance was known.
    pub fn on_advert_removed(&mut self, instance: &str, now: Instant) -> Option<PeerKey> {
        let slow_probe_interval = self.config.slow_probe_interval;
        let (key, entry) = self.entries.iter_mut().find(|(_, entry)| {
            entry
                .mdns_instance
                .as_deref()
                .is_some_and(|known| known.eq_ignore_ascii_case(instance))
        })?;
        entry.mdns_instance = None;
        entry.state = PeerState::Down;
        entry.next_probe_at = now + slow_probe_interval;
        Some(key.clone())
    }

    /// The state of one peer, if listed.
    pub fn state(&self, key: &PeerKey) -> Option<PeerState> {
        self.entries.get(key).map(|entry| entry.state)
    }

    /// The peers due for a probe at `now`, each at the address to try next.
    /// Peers without any address are skipped.
    pub fn probe_targets(&self, now: Instant) -> Vec<ProbeTarget> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.next_probe_at <= now)
            .filter_map(|(key, entry)| {
                Some(ProbeTarget {
                    key: key.clone(),
                    addr: entry.current_address()?,
                })
            })
            .collect()
    }

    /// A probe of `key` at `addr` answered with `identity`.
    pub fn on_probe_ok(
        &mut self,
        key: &PeerKey,
        addr: SocketAddr,
        identity: PeerIdentity,
        now: Instant,
    ) -> ProbeOutcome {
        if !self.entries.contains_key(key) {
            return ProbeOutcome::UnknownPeer;
        }
        if let Err(error) = identity.validate() {
            self.on_probe_failed(key, now);
            return ProbeOutcome::InvalidIdentity(error);
        }
        match key {
            PeerKey::Static(static_addr) => {
                let source = self
                    .entries
                    .remove(key)
                    .map_or(PeerSource::Static, |entry| entry.source);
                if identity.hub_id == self.config.own_hub_id {
                    self.own_addrs.insert(*static_addr);
                    return ProbeOutcome::OwnAddress;
                }
                let entry = self
                    .entries
                    .entry(PeerKey::Id(identity.hub_id.clone()))
                    .or_insert_with(|| Entry::new(source, now));
                // Configuration wins over what mDNS or the peer suggested.
                if source == PeerSource::Static {
                    entry.source = PeerSource::Static;
                }
                if !entry.static_addrs.contains(static_addr) {
                    entry.static_addrs.push(*static_addr);
                }
                entry.confirm(addr, identity, now);
                ProbeOutcome::Resolved
            }
            PeerKey::Id(expected) => {
                if identity.hub_id != *expected {
                    // Another hub answers there now: the address proves
                    // nothing about this peer any more.
                    if let Some(entry) = self.entries.get_mut(key)
                        && entry.proven_addr == Some(addr)
                    {
                        entry.proven_addr = None;
                    }
                    self.detach_static_addr(key, addr, &identity.hub_id, now);
                    self.on_probe_failed(key, now);
                    return ProbeOutcome::IdentityMismatch {
                        expected: expected.clone(),
                        answered: identity.hub_id,
                    };
                }
                if let Some(entry) = self.entries.get_mut(key) {
                    entry.confirm(addr, identity, now);
                }
                ProbeOutcome::Confirmed
            }
        }
    }

    /// A probe of `key` failed (error or timeout). An up peer becomes
    /// suspect, and the next probe tries the peer's next address.
    pub fn on_probe_failed(&mut self, key: &PeerKey, now: Instant) {
        let down_after = self.config.down_after;
        let slow_probe_interval = self.config.slow_probe_interval;
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.state == PeerState::Up {
            entry.state = PeerState::Suspect;
        }
        entry.rotation = entry.rotation.wrapping_add(1);
        entry.next_probe_at = if entry.is_quiet(now, down_after) {
            now + slow_probe_interval
        } else {
            now
        };
    }

    /// Ages peers: up becomes suspect after `suspect_after` without a
    /// successful probe, up or suspect becomes down after `down_after`.
    pub fn tick(&mut self, now: Instant) {
        for entry in self.entries.values_mut() {
            if !matches!(entry.state, PeerState::Up | PeerState::Suspect) {
                continue;
            }
            let Some(last_seen) = entry.last_seen else {
                continue;
            };
            let quiet = now.saturating_duration_since(last_seen);
            if quiet >= self.config.down_after {
                entry.state = PeerState::Down;
            } else if quiet >= self.config.suspect_after {
                entry.state = PeerState::Suspect;
            }
        }
    }

    /// Every listed peer, sorted by name (peers without a name last), then
    /// by key.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let mut peers: Vec<PeerSnapshot> = self
            .entries
            .iter()
            .map(|(key, entry)| self.snapshot(key, entry))
            .collect();
        peers.sort_by(|left, right| {
            (left.name().is_none(), left.name(), &left.key).cmp(&(right.name().is_none(), right.name(), &right.key))
        });
        peers
    }

    fn snapshot(&self, key: &PeerKey, entry: &Entry) -> PeerSnapshot {
        PeerSnapshot {
            key: key.clone(),
            identity: entry.identity.clone(),
            verified: entry.verified,
            compatibility: entry.identity.as_ref().map(|identity| self.compatibility(identity)),
            addresses: entry.addresses(),
            address: entry.current_address(),
            source: entry.source,
            state: entry.state,
            last_seen: entry.last_seen,
        }
    }

    fn compatibility(&self, identity: &PeerIdentity) -> Compatibility {
        if identity.cluster_id != self.config.own_cluster_id {
            Compatibility::ForeignCluster
        } else if identity.protocol_version != self.config.own_protocol_version {
            Compatibility::IncompatibleProtocol
        } else {
            Compatibility::Compatible
        }
    }

    /// A static address of `key` answered as another hub: the address no
    /// longer belongs to `key` and goes back to being an unresolved static
    /// peer (or is dropped when it is this hub).
    fn detach_static_addr(&mut self, key: &PeerKey, addr: SocketAddr, answered: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if !entry.static_addrs.contains(&addr) {
            return;
        }
        entry.static_addrs.retain(|known| *known != addr);
        if answered == self.config.own_hub_id {
            self.own_addrs.insert(addr);
        } else {
            self.add_static_peer(addr, now);
        }
    }
}

/// mDNS addresses in a stable order: IPv4 before IPv6, link-local IPv6 last.
fn sorted_mdns_addrs(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut sorted = addrs.to_vec();
    sorted.sort_by_key(|addr| {
        let rank = match addr.ip() {
            IpAddr::V4(_) => 0,
            IpAddr::V6(ip) if ip.is_unicast_link_local() => 2,
            IpAddr::V6(_) => 1,
        };
        (rank, *addr)
    });
    sorted.dedup();
    sorted
}

#[cfg(test)]
mod tests;
