//! What a client can ask of a hub, independent of the transport it asks
//! over. The gRPC service ([`crate::service`]) merely adapts this; an HTTP
//! adapter is meant to be the second user.
//!
//! Requests and answers are the public `ferry.v1` messages (the API's
//! vocabulary, whatever the encoding); errors are [`HubError`], which knows
//! its gRPC code and HTTP status. Every request about one function is either
//! answered here or forwarded to the hub its forward pointer names
//! ([`forward`]), with the number of hops it has made so far passed in by the
//! adapter. Log follow and move progress are plain streams.
//!
//! Invariant: nothing here knows which transport the caller used; nothing
//! below (`supervisor`, `migration`, `logs`) knows about forwarding.

mod credentials;
mod drain;
mod forward;
mod logs_follow;
mod messages;
mod progress;
mod target;

pub use forward::{HOPS_HEADER, MAX_HOPS};
pub use messages::worth_retrying;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_discovery::{PeerSnapshot, PeerSuggester};
use ferry_proto::v1::{
    CheckpointRequest, CheckpointResponse, DeployRequest, DeployResponse, FunctionInfo, FunctionState,
    GetFunctionRequest, HubInfo, ListFunctionsResponse, ListPeersResponse, LogEntry, LogsRequest, MigrateProgress,
    MigrateRequest, RemoveRequest, RemoveResponse, ResumeRequest, StopRequest, SuspendRequest, SuspendResponse,
    migrate_progress,
};
use ferry_proto::{ErrorCode, PROTOCOL_VERSION};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::config::RebalanceMode;
use crate::error::HubError;
use crate::events::HubEvents;
use crate::migration::{self, MigrationContext};
use crate::peers::{LoadGauge, PeerFigures, peer_info};
use crate::runtime::WASMER_VERSION;
use crate::supervisor::Supervisor;

/// A stream of answers that ends early with an error if something fails.
pub type AnswerStream<T> = BoxStream<'static, Result<T, HubError>>;

/// A hub that probed this one and said who it is.
#[derive(Debug, Clone)]
pub struct Caller {
    pub hub_id: String,
    /// The caller's address with the port it serves on.
    pub address: SocketAddr,
}

/// The hub's API: the supervisor, the peer table and moves, behind one
/// cheap-to-clone handle.
#[derive(Clone)]
pub struct HubApi {
    inner: Arc<ApiParts>,
}

/// What the API is made of.
pub struct ApiParts {
    pub supervisor: Supervisor,
    /// The address this hub serves on, as `info` shows it.
    pub listen_address: String,
    pub cluster_id: String,
    pub load: Arc<LoadGauge>,
    pub peers: watch::Receiver<Vec<PeerSnapshot>>,
    pub suggester: PeerSuggester,
    pub migration: MigrationContext,
    /// What peers reported in their probe answers.
    pub figures: PeerFigures,
    pub rebalance: RebalanceMode,
    pub events: Arc<HubEvents>,
    /// The cluster CA, on a hub that holds its key.
    pub authority: Option<Arc<crate::trust::ClusterAuthority>>,
    /// The join tokens this hub made (with the CA key only).
    pub tokens: Option<Arc<crate::trust::tokens::JoinTokens>>,
    /// The hubs removed from the cluster (with TLS only).
    pub revocations: Option<Arc<crate::trust::revocation::Revocations>>,
}

impl HubApi {
    /// The API over `parts`; its supervisor's functions reach the
    /// cluster's through it (when made inside the tokio runtime).
    pub fn new(parts: ApiParts) -> HubApi {
        let api = HubApi { inner: Arc::new(parts) };
        if let Some(messenger) = messages::Messenger::of(&api) {
            api.supervisor().set_outbound(Arc::new(messenger));
        }
        api
    }

    fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    /// This hub's identity and figures.
    pub fn hub_info(&self) -> HubInfo {
        let functions = self.supervisor().list();
        let running = functions
            .iter()
            .filter(|function| function.state == FunctionState::Running as i32)
            .count();
        let identity = self.supervisor().identity();
        let cpu = self.inner.load.cpu();
        let revocations = self
            .inner
            .revocations
            .as_ref()
            .map(|revocations| revocations.signed())
            .unwrap_or_default();
        HubInfo {
            hub_id: identity.id.clone(),
            hub_name: identity.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            listen_address: self.inner.listen_address.clone(),
            functions_running: running as u32,
            functions_total: functions.len() as u32,
            wasmer_version: WASMER_VERSION.to_owned(),
            target: self.supervisor().runtime().target().to_owned(),
            cluster_id: self.inner.cluster_id.clone(),
            load: self.inner.load.get(),
            degraded: self.supervisor().degraded().unwrap_or_default(),
            cpu_capacity: self.supervisor().runtime().governor().capacity(),
            cpu_usage: cpu.usage,
            cpu_demand: cpu.demand,
            free_memory_bytes: free_memory_bytes().unwrap_or_default(),
            draining: self.supervisor().draining(),
            rebalance: self.inner.rebalance.as_str().to_owned(),
            dirty_tracking: crate::runtime::TrackingMode::of_this_hub().describe().to_owned(),
            revocation_list: revocations.list,
            revocation_signature: revocations.signature,
            signer: self.inner.authority.is_some(),
            resources: crate::resources::describe(self.supervisor().resources()),
            instrumentation_version: ferry_migrator::INSTRUMENTATION_VERSION,
        }
    }

    /// The hub's store, for adapters that keep their own records in it
    /// (the HTTP API's asynchronous invocations).
    pub fn store(&self) -> &crate::store::Store {
        self.supervisor().store()
    }

    /// How long an invocation waits for its reply unless told otherwise.
    pub fn invoke_timeout(&self) -> Duration {
        self.supervisor().invoke_timeout()
    }

    /// The metrics text to scrape: this hub's own view of its functions
    /// (one that moved away counts as moved; no peer is asked).
    pub fn metrics_text(&self) -> String {
        let info = self.hub_info();
        let load = if info.cpu_capacity > 0.0 {
            info.cpu_usage / info.cpu_capacity
        } else {
            0.0
        };
        let peers = self.list_peers().peers;
        self.supervisor()
            .metrics()
            .render(&self.supervisor().list(), load, &peers)
    }

    /// A probing hub we do not know yet, or not at this address (it
    /// restarted on another), introduced itself: probe it back.
    pub fn introduce(&self, caller: &Caller) {
        if caller.hub_id.is_empty() || caller.address.port() == 0 || caller.hub_id == self.supervisor().identity().id {
            return;
        }
        let known = self
            .inner
            .peers
            .borrow()
            .iter()
            .any(|peer| peer.id() == Some(caller.hub_id.as_str()) && peer.addresses.contains(&caller.address));
        if !known {
            self.inner.suggester.suggest(caller.address);
        }
    }

    pub async fn deploy(&self, request: DeployRequest, hops: u32) -> Result<DeployResponse, HubError> {
        let name = request.name.clone();
        // A pointer left by a move whose function was removed where it
        // went is forgotten here (as `ps` does), not held against the name.
        if self.supervisor().forward_pointer(&name).is_some()
            && let Ok(local) = self.supervisor().get(&name)
        {
            self.moved_info(local, hops).await;
        }
        // A redeploy replaces the function where it runs now.
        if request.replace
            && let Some(pointer) = self.supervisor().forward_pointer(&name)
        {
            return self
                .forward(&pointer, request, hops, async |mut hub, request| {
                    hub.deploy(request).await
                })
                .await;
        }
        let (function, prepared) = self.supervisor().deploy(request).await.inspect_err(|error| {
            tracing::info!(function = %name, error = %ferry_proto::error_chain(error), "deploy refused");
        })?;
        tracing::info!(function = %name, module = %prepared.hash, cache_hit = prepared.cache_hit, "function deployed");
        Ok(DeployResponse {
            function: Some(function),
            artifact_cache_hit: prepared.cache_hit,
            prepare_micros: prepared.prepare_time.as_micros() as u64,
        })
    }

    /// Every function of this hub; those that moved away as their hubs
    /// see them, all asked at once.
    pub async fn list_functions(&self, hops: u32) -> ListFunctionsResponse {
        let views = self
            .supervisor()
            .list()
            .into_iter()
            .map(|local| self.moved_info(local, hops));
        ListFunctionsResponse {
            functions: futures::future::join_all(views).await.into_iter().flatten().collect(),
        }
    }

    pub async fn get_function(&self, request: GetFunctionRequest, hops: u32) -> Result<FunctionInfo, HubError> {
        let local = match self.supervisor().get(&request.name) {
            Ok(local) => local,
            Err(not_found @ HubError::FunctionNotFound { .. }) if hops == 0 => {
                let peer = self.locate(&request.name).await.or(not_found)?;
                let mut info = self
                    .forward_to(&peer, request, hops, async |mut hub, request| {
                        hub.get_function(request).await
                    })
                    .await?;
                info.forwarded = true;
                return Ok(info);
            }
            Err(error) => return Err(error),
        };
        self.moved_info(local, hops)
            .await
            .ok_or_else(|| HubError::FunctionNotFound {
                name: request.name,
                hub: self.supervisor().identity().name.clone(),
            })
    }

    pub fn list_peers(&self) -> ListPeersResponse {
        let now = tokio::time::Instant::now();
        let peers = self
            .inner
            .peers
            .borrow()
            .iter()
            .map(|peer| {
                let figures = peer.id().and_then(|id| self.inner.figures.get(id));
                let mut info = peer_info(peer, figures.as_ref(), now);
                info.removed = self
                    .inner
                    .revocations
                    .as_ref()
                    .is_some_and(|revocations| revocations.is_revoked(&info.hub_id));
                info.usable &= !info.removed;
                info
            })
            .collect();
        ListPeersResponse { peers }
    }

    /// The function's stored output, then (when following) what it writes
    /// from now on, without gaps or repeats — across its moves when this
    /// hub is the one the client asked (see `logs_follow`).
    pub async fn logs(&self, request: LogsRequest, hops: u32) -> Result<AnswerStream<LogEntry>, HubError> {
        let (entries, here) = self.logs_from_where_it_runs(request.clone(), hops).await?;
        if !request.follow || hops > 0 {
            return Ok(entries);
        }
        Ok(logs_follow::across_moves(self.clone(), request, entries, here))
    }

    /// [`HubApi::logs`] from the hub the function runs on, without
    /// following it further; whether that is this hub.
    async fn logs_from_where_it_runs(
        &self,
        request: LogsRequest,
        hops: u32,
    ) -> Result<(AnswerStream<LogEntry>, bool), HubError> {
        if let Some(peer) = self.elsewhere(&request.name, hops).await? {
            let entries = self
                .forward_to(&peer, request, hops, async |mut hub, request| hub.logs(request).await)
                .await?;
            return Ok((
                entries
                    .map(move |entry| entry.map_err(|status| forward::stream_error(&peer, status)))
                    .boxed(),
                false,
            ));
        }
        self.supervisor().get(&request.name)?;
        let logs = self.supervisor().logs();
        let subscription = match request.from_seq {
            0 => logs.subscribe(&request.name, request.tail as usize, request.follow)?,
            from => logs.subscribe_from(&request.name, from, request.follow)?,
        };
        let entries = subscription.into_stream(request.name.clone()).boxed();
        if !request.follow {
            return Ok((entries, true));
        }
        Ok((logs_follow::until_ended(self.clone(), request.name, entries), true))
    }

    pub async fn stop(&self, request: StopRequest, hops: u32) -> Result<FunctionInfo, HubError> {
        self.forward_or_run(
            request,
            hops,
            async |mut hub, request| hub.stop(request).await,
            async |request| self.supervisor().stop(&request.name).await,
        )
        .await
    }

    /// Removes the function; one that moved away is removed where it runs
    /// and its forward pointer here is forgotten.
    pub async fn remove(&self, request: RemoveRequest, hops: u32) -> Result<RemoveResponse, HubError> {
        let name = request.name.clone();
        if let Some(pointer) = self.supervisor().forward_pointer(&name) {
            let removed = self
                .forward(&pointer, request, hops, async |mut hub, request| {
                    hub.remove(request).await
                })
                .await;
            match removed {
                Ok(_) => {}
                // Not there (its hub lost its data, or it was removed there):
                // what is left to remove is the pointer.
                Err(HubError::Remote {
                    code: ErrorCode::NotFound,
                    message,
                }) => {
                    tracing::info!(function = %name, hub = %pointer.hub_name, %message, "removing a forward pointer to a function its hub does not have");
                }
                Err(error) => return Err(error),
            }
            self.supervisor().forget(&name)?;
            return Ok(RemoveResponse {});
        }
        self.supervisor().remove(&name).await?;
        Ok(RemoveResponse {})
    }

    pub async fn checkpoint(&self, request: CheckpointRequest, hops: u32) -> Result<CheckpointResponse, HubError> {
        self.forward_or_run(
            request,
            hops,
            async |mut hub, request| hub.checkpoint(request).await,
            async |request| {
                let checkpoint = self.supervisor().checkpoint(&request.name).await?;
                Ok(CheckpointResponse {
                    checkpoint: Some(checkpoint),
                })
            },
        )
        .await
    }

    pub async fn suspend(&self, request: SuspendRequest, hops: u32) -> Result<SuspendResponse, HubError> {
        self.forward_or_run(
            request,
            hops,
            async |mut hub, request| hub.suspend(request).await,
            async |request| {
                let (function, checkpoint) = self.supervisor().suspend(&request.name).await?;
                Ok(SuspendResponse {
                    function: Some(function),
                    checkpoint: Some(checkpoint),
                })
            },
        )
        .await
    }

    pub async fn resume(&self, request: ResumeRequest, hops: u32) -> Result<FunctionInfo, HubError> {
        self.forward_or_run(
            request,
            hops,
            async |mut hub, request| hub.resume(request).await,
            async |request| self.supervisor().resume(&request.name).await,
        )
        .await
    }

    /// Moves the function to the peer `to` names while it runs: a stream of
    /// progress that ends with the summary, or with the reason it failed.
    /// The move goes on even if the caller stops listening.
    pub async fn migrate(&self, request: MigrateRequest, hops: u32) -> Result<AnswerStream<MigrateProgress>, HubError> {
        if let Some(peer) = self.elsewhere(&request.name, hops).await? {
            let events = self
                .forward_to(&peer, request, hops, async |mut hub, request| {
                    hub.migrate(request).await
                })
                .await?;
            return Ok(events
                .map(move |event| event.map_err(|status| forward::stream_error(&peer, status)))
                .boxed());
        }
        self.supervisor().get(&request.name)?;
        let identity = self.supervisor().identity();
        if request.to == identity.id || request.to == identity.name {
            return Err(HubError::PeerUnusable {
                hub: request.to,
                reason: format!("function {:?} runs there already", request.name),
            });
        }
        let target = self.resolve_target(&request.to)?;
        if let Some(spec) = self.supervisor().spec(&request.name) {
            // The destination's resources first: that refusal outlasts the next one.
            if let Some(info) = self.inner.figures.get(&target.hub_id)
                && let Some(reason) = crate::resources::placement_refusal(&spec, &info.resources)
            {
                return Err(HubError::PeerUnusable {
                    hub: request.to.clone(),
                    reason,
                });
            }
        }
        let (progress_tx, progress_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(256);
        let supervisor = self.supervisor().clone();
        let context = self.inner.migration.clone();
        tokio::spawn(async move {
            let moving = migration::migrate(&supervisor, &context, &request.name, &target, progress_tx);
            let result = progress::relay(moving, progress_rx, &events_tx).await;
            let last = result
                .map(|summary| MigrateProgress {
                    event: Some(migrate_progress::Event::Summary(summary)),
                })
                .inspect_err(|error| {
                    tracing::warn!(function = %request.name, error = %ferry_proto::error_chain(error), "move failed");
                });
            let _ = events_tx.send(last).await;
        });
        Ok(ReceiverStream::new(events_rx).boxed())
    }
}

/// Memory the machine has available (`MemAvailable` in `/proc/meminfo`).
pub fn free_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
