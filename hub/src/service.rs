//! The client-facing gRPC service (`ferry.v1.Hub`).

use std::pin::Pin;
use std::time::Duration;

use ferry_proto::v1::hub_server::Hub;
use ferry_proto::v1::{
    DeployRequest, DeployResponse, FunctionInfo, GetFunctionRequest, GetHubInfoRequest, HubInfo, InvokeRequest,
    InvokeResponse, ListFunctionsRequest, ListFunctionsResponse, LogEntry, LogsRequest, RemoveRequest, RemoveResponse,
    StopRequest,
};
use ferry_proto::{PROTOCOL_VERSION, ServiceError};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::runtime::WASMER_VERSION;
use crate::supervisor::Supervisor;

/// Implements `ferry.v1.Hub` on top of the supervisor.
pub struct HubService {
    supervisor: Supervisor,
    listen_address: String,
}

impl HubService {
    pub fn new(supervisor: Supervisor, listen_address: String) -> HubService {
        HubService {
            supervisor,
            listen_address,
        }
    }
}

type LogStreamResult = Pin<Box<dyn Stream<Item = Result<LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl Hub for HubService {
    async fn get_hub_info(&self, _request: Request<GetHubInfoRequest>) -> Result<Response<HubInfo>, Status> {
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
        _request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        Ok(Response::new(ListFunctionsResponse {
            functions: self.supervisor.list(),
        }))
    }

    async fn get_function(&self, request: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        Ok(Response::new(self.supervisor.get(&request.into_inner().name)?))
    }

    type LogsStream = LogStreamResult;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
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
        Ok(Response::new(self.supervisor.stop(&request.into_inner().name).await?))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        self.supervisor.remove(&request.into_inner().name).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let request = request.into_inner();
        let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(u64::from(request.timeout_ms)));
        let data = self.supervisor.invoke(&request.name, request.data, timeout).await?;
        Ok(Response::new(InvokeResponse { data }))
    }
}
