//! Moving running functions between hubs: the gRPC edges around the pure
//! state machines of `ferry_migrator::transfer`.
//!
//! - [`source`]: `ferry migrate` on the hub that runs the function.
//! - [`destination`]: the `Migration/Transfer` stream on the receiving hub.
//! - [`resolve`]: a destination holding a prepared function asks its source
//!   how the handoff ended.

mod destination;
mod resolve;
mod source;
mod watchdog;

pub use resolve::spawn_resolver;
pub use resolve::spawn_resolvers;
pub use source::{Target, migrate};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_migrator::transfer::{RoundPolicy, TransferError};
use ferry_proto::internal::v1::migration_client::MigrationClient;
use ferry_proto::internal::v1::migration_server::Migration;
use ferry_proto::internal::v1::{
    AutomaticMove, DeliverReplyRequest, DeliverReplyResponse, DestinationFrame, ResolveHandoffRequest,
    ResolveHandoffResponse, SourceFrame, TakeOutcomeRequest, TakeOutcomeResponse,
};
use futures::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::connector::PeerConnector;
use crate::runtime::Undelivered;
use crate::supervisor::Supervisor;

/// A transfer in which nothing moves for this long is dead (a cut link
/// stalls TCP rather than resetting it), unless its own history shows a
/// lossy link that recovers from longer stalls (see [`watchdog`]).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest stall a transfer waits out. A connection that stalls longer
/// is in deep retransmission backoff (which persists on that connection):
/// a fresh one does better, and a retry resumes from what arrived.
pub const STALL_MAX: Duration = Duration::from_secs(30);

/// How often a destination preparing a module says so (well inside
/// [`STALL_TIMEOUT`]).
pub const PREPARING_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the destination may take to persist (`Prepared`) or start (`Started`).
pub const DECISION_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames of up to one 16 MiB chunk or a module travel in one message.
pub use crate::connector::MAX_TRANSFER_FRAME_BYTES as MAX_FRAME_BYTES;

/// What both sides of a move need to know about this hub.
#[derive(Debug, Clone)]
pub struct MigrationContext {
    pub cluster_id: String,
    /// The address this hub serves on (its port is what peers reach).
    pub listen_address: SocketAddr,
    pub policy: RoundPolicy,
    /// How this hub reaches its peers.
    pub connector: PeerConnector,
    /// Whether this hub takes a move its source's rebalancer offers (none:
    /// it takes every one).
    pub admission: Option<Arc<dyn Admission>>,
}

/// The destination's say on moves a source's rebalancer decided: two
/// overloaded hubs must not both dump onto the same idle one.
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// Accepts `function` (reserving room for it until its arrival shows
    /// in the figures) or refuses, with the reason.
    fn admit(&self, function: &str, offer: &AutomaticMove) -> Result<(), String>;
    /// The transfer of an admitted function ended; `arrived`: it runs here.
    fn settle(&self, function: &str, arrived: bool);
}

/// A client of another hub's `Migration` service.
pub fn migration_client(
    connector: &PeerConnector,
    address: &str,
    hub_id: &str,
) -> Result<MigrationClient<Channel>, TransferError> {
    connector
        .migration_client(address, hub_id)
        .map_err(|error| TransferError::Truncated {
            reason: error.to_string(),
        })
}

/// Implements `ferry.v1.Migration`.
pub struct MigrationService {
    supervisor: Supervisor,
    context: MigrationContext,
}

impl MigrationService {
    pub fn new(supervisor: Supervisor, context: MigrationContext) -> MigrationService {
        MigrationService { supervisor, context }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<DestinationFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Migration for MigrationService {
    type TransferStream = FrameStream;

    async fn transfer(
        &self,
        request: Request<Streaming<SourceFrame>>,
    ) -> Result<Response<Self::TransferStream>, Status> {
        let remote = request.remote_addr();
        // With TLS the offer must come from the hub it names as its source.
        let caller_hub_id = crate::trust::access::caller_identity(&request).and_then(|identity| identity.hub_id);
        let frames = destination::receive(
            self.supervisor.clone(),
            self.context.clone(),
            remote,
            caller_hub_id,
            request.into_inner(),
        );
        Ok(Response::new(Box::pin(frames)))
    }

    async fn deliver_reply(
        &self,
        request: Request<DeliverReplyRequest>,
    ) -> Result<Response<DeliverReplyResponse>, Status> {
        let request = request.into_inner();
        let delivered = self
            .supervisor
            .deliver_reply(&request.function, request.invocation_id, request.data);
        tracing::debug!(function = %request.function, delivered, "a reply came back from a moved function");
        Ok(Response::new(DeliverReplyResponse { delivered }))
    }

    async fn take_outcome(
        &self,
        request: Request<TakeOutcomeRequest>,
    ) -> Result<Response<TakeOutcomeResponse>, Status> {
        let request = request.into_inner();
        let Some(outcome) = self.supervisor.take_outcome(&request.function, request.number) else {
            tracing::debug!(function = %request.function, "asked for an outcome that is not kept");
            return Ok(Response::new(TakeOutcomeResponse::default()));
        };
        // The outcome comes on a channel the guest's thread would block on.
        let sent = tokio::task::spawn_blocking(move || outcome.recv().unwrap_or(Err(Undelivered::Failed)))
            .await
            .unwrap_or(Err(Undelivered::Failed));
        tracing::debug!(function = %request.function, ok = sent.is_ok(), "handed over the outcome of a moved function's message");
        Ok(Response::new(match sent {
            Ok(data) => TakeOutcomeResponse {
                found: true,
                data,
                undelivered: 0,
            },
            Err(undelivered) => TakeOutcomeResponse {
                found: true,
                data: Vec::new(),
                undelivered: undelivered.code(),
            },
        }))
    }

    async fn resolve_handoff(
        &self,
        request: Request<ResolveHandoffRequest>,
    ) -> Result<Response<ResolveHandoffResponse>, Status> {
        let request = request.into_inner();
        let outcome = self
            .supervisor
            .handoff_outcome(&request.name, request.epoch, &request.destination_hub_id);
        tracing::info!(function = %request.name, epoch = request.epoch, ?outcome, "answered a handoff resolution");
        Ok(Response::new(ResolveHandoffResponse {
            outcome: outcome as i32,
        }))
    }
}
