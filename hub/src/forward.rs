//! Forwarding: a hub asked about a function that moved away passes the
//! request on to the hub its forward pointer names (which may forward it
//! again), so callers never need to know where a function runs.

use ferry_proto::v1::hub_client::HubClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::connector::{PeerConnector, Purpose};

/// Request header counting how often a request was forwarded.
pub const HOPS_HEADER: &str = "ferry-forward-hops";
/// A request forwarded this often is in a loop of stale pointers.
pub const MAX_HOPS: u32 = 8;

/// Clients of the hubs requests are forwarded to.
#[derive(Clone)]
pub struct Forwarder {
    connector: PeerConnector,
}

impl Forwarder {
    pub fn new(connector: PeerConnector) -> Forwarder {
        Forwarder { connector }
    }

    /// A client of the hub at `address`.
    pub fn client(&self, address: &str) -> Result<HubClient<Channel>, Status> {
        self.connector
            .hub_client(address, Purpose::Control)
            .map_err(|error| Status::internal(format!("cannot forward: {error}")))
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
