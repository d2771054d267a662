//! The client-facing gRPC service (`ferry.v1.Hub`). Requests about a
//! function that moved away are forwarded to the hub running it
//! ([`routing`]).

mod routing;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_discovery::{PeerSnapshot, PeerSuggester};
use ferry_proto::v1::hub_server::Hub;
use ferry_proto::v1::{
    CheckpointRequest, CheckpointResponse, DeployRequest, DeployResponse, FunctionInfo, GetFunctionRequest,
    GetHubInfoRequest, HubInfo, InvokeRequest, InvokeResponse, ListFunctionsRequest, ListFunctionsResponse,
    ListPeersRequest, ListPeersResponse, LogEntry, LogsRequest, MigrateProgress, MigrateRequest, RemoveRequest,
    RemoveResponse, ResumeRequest, StopRequest, SuspendRequest, SuspendResponse, migrate_progress,
};
use ferry_proto::{PROTOCOL_VERSION, ServiceError};
use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::forward::{self, Forwarder};
use crate::migration::{self, MigrationContext};
use crate::peers::{LoadGauge, peer_info};
use crate::runtime::WASMER_VERSION;
use crate::supervisor::Supervisor;
use routing::{forward_call, forward_if_moved};

/// Implements `ferry.v1.Hub` on top of the supervisor.
pub struct HubService {
    supervisor: Supervisor,
    listen_address: String,
    cluster_id: String,
    load: Arc<LoadGauge>,
    peers: watch::Receiver<Vec<PeerSnapshot>>,
    suggester: PeerSuggester,
    forwarder: Forwarder,
    migration: MigrationContext,
}

impl HubService {
    pub fn new(
        supervisor: Supervisor,
        listen_address: String,
        cluster_id: String,
        load: Arc<LoadGauge>,
        peers: watch::Receiver<Vec<PeerSnapshot>>,
        suggester: PeerSuggester,
        migration: MigrationContext,
    ) -> HubService {
        HubService {
            supervisor,
            listen_address,
            cluster_id,
            load,
            peers,
            suggester,
            forwarder: Forwarder::new(migration.connector.clone()),
            migration,
        }
    }

    /// A probing hub we do not know yet introduced itself: probe it back.
    fn learn_caller(&self, request: &Request<GetHubInfoRequest>) {
        let message = request.get_ref();
        let (Some(remote), Ok(port)) = (request.remote_addr(), u16::try_from(message.caller_port)) else {
            return;
        };
        if message.caller_hub_id.is_empty() || port == 0 || message.caller_hub_id == self.supervisor.identity().id {
            return;
        }
        let known = self
            .peers
            .borrow()
            .iter()
            .any(|peer| peer.id() == Some(message.caller_hub_id.as_str()));
        if !known {
            self.suggester.suggest(std::net::SocketAddr::new(remote.ip(), port));
        }
    }
}

type LogStreamResult = Pin<Box<dyn Stream<Item = Result<LogEntry, Status>> + Send>>;
type MigrateStreamResult = Pin<Box<dyn Stream<Item = Result<MigrateProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Hub for HubService {
    async fn get_hub_info(&self, request: Request<GetHubInfoRequest>) -> Result<Response<HubInfo>, Status> {
        self.learn_caller(&request);
        let functions = self.supervisor.list();
        let running = functions
            .iter()
            .filter(|function| function.state == ferry_proto::v1::FunctionState::Running as i32)
            .count();
        let identity = self.supervisor.identity();
        Ok(Response::new(HubInfo {
            hub_id: identity.id.clone(),
            hub_name: identity.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            listen_address: self.listen_address.clone(),
            functions_running: running as u32,
            functions_total: functions.len() as u32,
            wasmer_version: WASMER_VERSION.to_owned(),
            target: self.supervisor.runtime().target().to_owned(),
            cluster_id: self.cluster_id.clone(),
            load: self.load.get(),
            degraded: self.supervisor.degraded().unwrap_or_default(),
        }))
    }

    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<DeployResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.clone();
        let (function, prepared) = self.supervisor.deploy(request).await.inspect_err(|error| {
            tracing::info!(function = %name, error = %ferry_proto::error_chain(error), "deploy refused");
        })?;
        tracing::info!(function = %name, module = %prepared.hash, cache_hit = prepared.cache_hit, "function deployed");
        Ok(Response::new(DeployResponse {
            function: Some(function),
            artifact_cache_hit: prepared.cache_hit,
            prepare_micros: prepared.prepare_time.as_micros() as u64,
        }))
    }

    async fn list_functions(
        &self,
        request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        // Functions that moved away are asked of their hubs, all at once.
        let hops = forward::hops(&request);
        let views = self
            .supervisor
            .list()
            .into_iter()
            .map(|local| self.moved_info(local, hops));
        let functions = futures::future::join_all(views).await;
        Ok(Response::new(ListFunctionsResponse { functions }))
    }

    async fn get_function(&self, request: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        let hops = forward::hops(&request);
        let local = self.supervisor.get(&request.get_ref().name)?;
        Ok(Response::new(self.moved_info(local, hops).await))
    }

    type LogsStream = LogStreamResult;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        if let Some(pointer) = self.supervisor.forward_pointer(&request.get_ref().name) {
            let entries = forward_call!(self, request, pointer, logs)?;
            return Ok(Response::new(Box::pin(entries.into_inner())));
        }
        let request = request.into_inner();
        if !self.supervisor.contains(&request.name) {
            return Err(self.supervisor.get(&request.name).unwrap_err().to_status());
        }
        let subscription = self
            .supervisor
            .logs()
            .subscribe(&request.name, request.tail as usize, request.follow)
            .map_err(|error| error.to_status())?;
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut last_seq = None;
            for entry in subscription.history {
                last_seq = Some(entry.seq);
                if sender.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = subscription.live else { return };
            loop {
                let entry = tokio::select! {
                    entry = live.recv() => entry,
                    () = sender.closed() => return,
                };
                match entry {
                    Ok(entry) if last_seq.is_some_and(|last| entry.seq <= last) => {}
                    Ok(entry) => {
                        last_seq = Some(entry.seq);
                        if sender.send(Ok(entry)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let status =
                            Status::resource_exhausted(format!("log follower fell behind and missed {missed} entries"));
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<FunctionInfo>, Status> {
        forward_if_moved!(self, request, stop);
        Ok(Response::new(self.supervisor.stop(&request.into_inner().name).await?))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let name = request.get_ref().name.clone();
        if let Some(pointer) = self.supervisor.forward_pointer(&name) {
            forward_call!(self, request, pointer, remove)?;
            self.supervisor.forget(&name)?;
            return Ok(Response::new(RemoveResponse {}));
        }
        self.supervisor.remove(&request.into_inner().name).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    async fn list_peers(&self, _request: Request<ListPeersRequest>) -> Result<Response<ListPeersResponse>, Status> {
        let now = tokio::time::Instant::now();
        let peers = self.peers.borrow().iter().map(|peer| peer_info(peer, now)).collect();
        Ok(Response::new(ListPeersResponse { peers }))
    }

    async fn checkpoint(&self, request: Request<CheckpointRequest>) -> Result<Response<CheckpointResponse>, Status> {
        forward_if_moved!(self, request, checkpoint);
        let checkpoint = self.supervisor.checkpoint(&request.into_inner().name).await?;
        Ok(Response::new(CheckpointResponse {
            checkpoint: Some(checkpoint),
        }))
    }

    async fn suspend(&self, request: Request<SuspendRequest>) -> Result<Response<SuspendResponse>, Status> {
        forward_if_moved!(self, request, suspend);
        let (function, checkpoint) = self.supervisor.suspend(&request.into_inner().name).await?;
        Ok(Response::new(SuspendResponse {
            function: Some(function),
            checkpoint: Some(checkpoint),
        }))
    }

    async fn resume(&self, request: Request<ResumeRequest>) -> Result<Response<FunctionInfo>, Status> {
        forward_if_moved!(self, request, resume);
        Ok(Response::new(self.supervisor.resume(&request.into_inner().name).await?))
    }

    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        forward_if_moved!(self, request, invoke);
        let request = request.into_inner();
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(u64::from(request.timeout_ms)));
        let data = self.supervisor.invoke(&request.name, request.data, timeout).await?;
        Ok(Response::new(InvokeResponse { data }))
    }

    type MigrateStream = MigrateStreamResult;

    async fn migrate(&self, request: Request<MigrateRequest>) -> Result<Response<Self::MigrateStream>, Status> {
        if let Some(pointer) = self.supervisor.forward_pointer(&request.get_ref().name) {
            let events = forward_call!(self, request, pointer, migrate)?;
            return Ok(Response::new(Box::pin(events.into_inner())));
        }
        let request = request.into_inner();
        if !self.supervisor.contains(&request.name) {
            return Err(self.supervisor.get(&request.name).unwrap_err().to_status());
        }
        let target = self.resolve_target(&request.to)?;
        let (progress_tx, mut progress_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(256);
        let supervisor = self.supervisor.clone();
        let context = self.migration.clone();
        // The move goes on even if the client stops listening.
        tokio::spawn(async move {
            let moving = migration::migrate(&supervisor, &context, &request.name, &target, progress_tx);
            tokio::pin!(moving);
            let result = loop {
                tokio::select! {
                    result = &mut moving => break result,
                    Some(event) = progress_rx.recv() => {
                        let _ = events_tx.send(Ok(event)).await;
                    }
                }
            };
            while let Ok(event) = progress_rx.try_recv() {
                let _ = events_tx.send(Ok(event)).await;
            }
            let last = match result {
                Ok(summary) => Ok(MigrateProgress {
                    event: Some(migrate_progress::Event::Summary(summary)),
                }),
                Err(error) => {
                    tracing::warn!(function = %request.name, error = %ferry_proto::error_chain(&error), "move failed");
                    Err(error.to_status())
                }
            };
            let _ = events_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(events_rx))))
    }
}
