//! Forwarding: a hub asked about a function that moved away passes the
//! request on to the hub its forward pointer names (which may forward it
//! again), so callers never need to know where a function runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ferry_proto::v1::hub_client::HubClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Request header counting how often a request was forwarded.
pub const HOPS_HEADER: &str = "ferry-forward-hops";
/// A request forwarded this often is in a loop of stale pointers.
pub const MAX_HOPS: u32 = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One lazily connected client per peer address.
#[derive(Default)]
pub struct Forwarder {
    clients: Mutex<HashMap<String, HubClient<Channel>>>,
}

impl Forwarder {
    /// A client of the hub at `address`.
    pub fn client(&self, address: &str) -> Result<HubClient<Channel>, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| Status::internal(format!("bad forward address {address}: {error}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        let client = HubClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }
}

/// How often `request` was forwarded already.
pub fn hops<T>(request: &Request<T>) -> u32 {
    request
        .metadata()
        .get(HOPS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// `message` as a request forwarded once more than one that came `hops` times.
pub fn onward<T>(message: T, hops: u32, hub_name: &str) -> Result<Request<T>, Status> {
    if hops >= MAX_HOPS {
        return Err(Status::failed_precondition(format!(
            "the request was forwarded {hops} times (last toward hub {hub_name}): the forward pointers form a loop"
        )));
    }
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(HOPS_HEADER, MetadataValue::from(hops + 1));
    Ok(request)
}

/// A status from a hub that cannot be reached, naming it.
pub fn unreachable(hub_name: &str, address: &str, status: &Status) -> Status {
    if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
        Status::unavailable(format!(
            "the function runs on hub {hub_name} ({address}), which cannot be reached: {}",
            status.message()
        ))
    } else {
        status.clone()
    }
}
