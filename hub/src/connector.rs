//! The one place where an address becomes a configured gRPC channel to a
//! hub: timeouts, HTTP/2 windows and message sizes per purpose — and, with
//! cluster trust, TLS and this hub's identity. The CLI, discovery probes,
//! forwarding and moves all connect through a [`PeerConnector`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferry_proto::internal::v1::migration_client::MigrationClient;
use ferry_proto::v1::hub_client::HubClient;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use crate::trust::ClientTls;
use crate::trust::revocation::Revocations;

/// Largest request or answer of the `Hub` service (a module, a log page).
pub const MAX_HUB_MESSAGE_BYTES: usize = 64 << 20;
/// Largest frame of a move: one memory chunk or a module.
pub const MAX_TRANSFER_FRAME_BYTES: usize = 256 << 20;

/// What a channel is for; decides its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Requests a user or a forwarding hub makes: patient connects.
    Control,
    /// Liveness probes: a peer that does not answer at once counts as down.
    Probe,
    /// Moves: large frames, wide flow-control windows, no Nagle delay.
    Transfer,
}

const CONTROL_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Three SYNs (at 0, 1 and 3 s): a lossy link still connects.
pub const TRANSFER_CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
const TRANSFER_STREAM_WINDOW: u32 = 8 << 20;
const TRANSFER_CONNECTION_WINDOW: u32 = 16 << 20;

/// Why no channel could be had.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("bad hub address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("cannot set up TLS to {address}: {reason}")]
    Tls { address: String, reason: String },
    #[error("cannot reach hub at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("hub {hub_id} was removed from the cluster (ferry cluster rm): this hub does not connect to it")]
    Revoked { hub_id: String },
}

/// Builds (and shares) channels to hubs. Cheap to clone; clones share
/// their channels, one lazily connected channel per address and purpose.
/// With TLS (`tls` set) every channel is mutual TLS under the cluster CA:
/// it presents this side's credential and accepts only a hub certificate
/// of the cluster, and a hub removed from the cluster is never connected
/// to by name.
#[derive(Clone, Default)]
pub struct PeerConnector {
    channels: Arc<Mutex<HashMap<ChannelKey, Channel>>>,
    /// Replaced when the hub's certificate is renewed.
    tls: Option<Arc<RwLock<ClientTls>>>,
    revocations: Option<Arc<Revocations>>,
}

/// One shared channel per address, purpose and the hub it must be (with
/// TLS, `Some(id)` accepts only the certificate of hub `id`).
type ChannelKey = (String, Purpose, Option<String>);

/// `http://` + `address`, unless it names its scheme.
pub fn address_uri(address: &str) -> String {
    scheme_uri(address, "http")
}

fn scheme_uri(address: &str, scheme: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("{scheme}://{address}")
    }
}

impl std::fmt::Debug for PeerConnector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels = self.channels.lock().map(|channels| channels.len()).unwrap_or_default();
        formatter
            .debug_struct("PeerConnector")
            .field("channels", &channels)
            .finish()
    }
}

impl PeerConnector {
    /// Plaintext channels (an `--insecure` hub or client).
    pub fn new() -> PeerConnector {
        PeerConnector::default()
    }

    /// Mutual-TLS channels presenting `tls`'s credential.
    pub fn with_tls(tls: ClientTls) -> PeerConnector {
        PeerConnector {
            channels: Arc::default(),
            tls: Some(Arc::new(RwLock::new(tls))),
            revocations: None,
        }
    }

    /// Refuses to connect by name to a hub on `revocations`'s list.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> PeerConnector {
        self.revocations = Some(revocations);
        self
    }

    /// Presents `tls` on every connection made from now on (a renewed
    /// certificate). Connections open now keep the old one, which stays
    /// valid until it ends: a move under way is not disturbed.
    pub fn replace_tls(&self, tls: ClientTls) {
        if let Some(current) = &self.tls {
            *current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = tls;
            self.channels
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
        }
    }

    /// The revocation list this connector honours (a hub with TLS).
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        self.revocations.as_ref()
    }

    fn refuse_revoked(&self, hub_id: Option<&str>) -> Result<(), ConnectError> {
        match (hub_id, &self.revocations) {
            (Some(hub_id), Some(revocations)) if revocations.is_revoked(hub_id) => Err(ConnectError::Revoked {
                hub_id: hub_id.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether channels are mutual TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint for `address` configured for `purpose`, to any hub of
    /// the cluster.
    pub fn endpoint(&self, address: &str, purpose: Purpose) -> Result<Endpoint, ConnectError> {
        self.endpoint_to(address, purpose, None)
    }

    /// The endpoint for `address` configured for `purpose`; with TLS and
    /// `hub_id`, only hub `hub_id`'s certificate is accepted.
    pub fn endpoint_to(&self, address: &str, purpose: Purpose, hub_id: Option<&str>) -> Result<Endpoint, ConnectError> {
        self.refuse_revoked(hub_id)?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(scheme_uri(address, scheme)).map_err(|error| ConnectError::BadAddress {
                address: address.to_owned(),
                reason: error.to_string(),
            })?;
        if let Some(tls) = &self.tls {
            let config = tls
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .config(hub_id);
            endpoint = endpoint.tls_config(config).map_err(|error| ConnectError::Tls {
                address: address.to_owned(),
                reason: innermost_reason(&error),
            })?;
        }
        Ok(match purpose {
            Purpose::Control => endpoint.connect_timeout(CONTROL_CONNECT_TIMEOUT).tcp_nodelay(true),
            Purpose::Probe => endpoint.connect_timeout(PROBE_TIMEOUT).timeout(PROBE_TIMEOUT),
            Purpose::Transfer => endpoint
                .connect_timeout(TRANSFER_CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .initial_stream_window_size(Some(TRANSFER_STREAM_WINDOW))
                .initial_connection_window_size(Some(TRANSFER_CONNECTION_WINDOW)),
        })
    }

    /// A lazily connected channel to `address`, shared by every caller
    /// with the same purpose; it reconnects by itself.
    pub fn channel(&self, address: &str, purpose: Purpose) -> Result<Channel, ConnectError> {
        self.channel_to(address, purpose, None)
    }

    /// Like [`PeerConnector::channel`], to hub `hub_id` only (with TLS: its
    /// certificate must name that hub).
    pub fn channel_to(&self, address: &str, purpose: Purpose, hub_id: Option<&str>) -> Result<Channel, ConnectError> {
        let key = (address.to_owned(), purpose, hub_id.map(str::to_owned));
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(revoked) = self.refuse_revoked(hub_id) {
            channels.remove(&key);
            return Err(revoked);
        }
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel = self.endpoint_to(address, purpose, hub_id)?.connect_lazy();
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// Drops the shared channel to `address` for `purpose`: the next caller
    /// gets a new connection (a stalled one stays in TCP's backoff).
    pub fn forget(&self, address: &str, purpose: Purpose) {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.retain(|(channel_address, channel_purpose, _), _| {
            channel_address != address || *channel_purpose != purpose
        });
    }

    /// A channel connected now: fails at once, with the reason, if the hub
    /// cannot be reached (what the CLI wants).
    pub async fn connect(&self, address: &str, purpose: Purpose) -> Result<Channel, ConnectError> {
        self.endpoint(address, purpose)?
            .connect()
            .await
            .map_err(|error| ConnectError::Unreachable {
                address: scheme_uri(address, if self.tls.is_some() { "https" } else { "http" }),
                reason: innermost_reason(&error),
            })
    }

    /// A `Hub` client of `address` (lazily connected), of hub `hub_id` if given.
    pub fn hub_client(
        &self,
        address: &str,
        purpose: Purpose,
        hub_id: Option<&str>,
    ) -> Result<HubClient<Channel>, ConnectError> {
        Ok(hub_client(self.channel_to(address, purpose, hub_id)?))
    }

    /// A `Migration` client of hub `hub_id` at `address` (lazily connected).
    pub fn migration_client(&self, address: &str, hub_id: &str) -> Result<MigrationClient<Channel>, ConnectError> {
        Ok(
            MigrationClient::new(self.channel_to(address, Purpose::Transfer, Some(hub_id))?)
                .max_decoding_message_size(MAX_TRANSFER_FRAME_BYTES)
                .max_encoding_message_size(MAX_TRANSFER_FRAME_BYTES),
        )
    }
}

/// A `Hub` client over `channel` that takes the service's largest messages.
pub fn hub_client(channel: Channel) -> HubClient<Channel> {
    HubClient::new(channel)
        .max_decoding_message_size(MAX_HUB_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_HUB_MESSAGE_BYTES)
}

/// The innermost cause of an error: for a refused connection, "Connection
/// refused (os error 111)" rather than "transport error".
pub(crate) fn innermost_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_are_http() {
        assert_eq!(address_uri("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(address_uri("https://hub.local:7070"), "https://hub.local:7070");
    }

    #[tokio::test]
    async fn one_channel_is_shared_per_address_and_purpose() {
        let connector = PeerConnector::new();
        connector.channel("127.0.0.1:1", Purpose::Probe).unwrap();
        connector.clone().channel("127.0.0.1:1", Purpose::Probe).unwrap();
        connector.channel("127.0.0.1:1", Purpose::Transfer).unwrap();
        assert_eq!(connector.channels.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_malformed_address_is_refused_by_name() {
        let error = PeerConnector::new()
            .endpoint("not an address", Purpose::Control)
            .unwrap_err();
        assert!(error.to_string().contains("not an address"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_hub_is_named_with_the_innermost_reason() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = PeerConnector::new()
            .connect(&format!("127.0.0.1:{port}"), Purpose::Control)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
