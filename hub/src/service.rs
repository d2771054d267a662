//! The client-facing gRPC service (`ferry.v1.Hub`): a thin adapter of
//! [`HubApi`]. It reads what only gRPC carries (the forwarding hop count
//! in metadata, the caller's address) and turns [`HubError`]s into statuses;
//! everything else is the API's.

use std::pin::Pin;
use std::time::Duration;

use ferry_proto::ServiceError;
use ferry_proto::v1::hub_server::Hub;
use ferry_proto::v1::{
    CheckpointRequest, CheckpointResponse, CreateJoinTokenRequest, DeployRequest, DeployResponse, DrainProgress,
    DrainRequest, EventsRequest, FunctionInfo, GetFunctionRequest, GetHubInfoRequest, HubEvent, HubInfo, InvokeRequest,
    InvokeResponse, IssueCredentialRequest, IssueCredentialResponse, JoinToken, ListFunctionsRequest,
    ListFunctionsResponse, ListJoinTokensRequest, ListJoinTokensResponse, ListPeersRequest, ListPeersResponse,
    LogEntry, LogsRequest, MigrateProgress, MigrateRequest, RemoveHubRequest, RemoveHubResponse,
    RemoveJoinTokenRequest, RemoveJoinTokenResponse, RemoveRequest, RemoveResponse, ResumeRequest, StopRequest,
    SuspendRequest, SuspendResponse, UndrainRequest,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::api::{AnswerStream, Caller, HOPS_HEADER, HubApi};
use crate::error::HubError;

/// Implements `ferry.v1.Hub` on top of [`HubApi`].
pub struct HubService {
    api: HubApi,
}

impl HubService {
    pub fn new(api: HubApi) -> HubService {
        HubService { api }
    }
}

/// How often `request` was forwarded already.
fn hops<T>(request: &Request<T>) -> u32 {
    request
        .metadata()
        .get(HOPS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The answer, or the status of the error.
fn answer<T>(result: Result<T, HubError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|error| error.to_status())
}

type StatusStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn statuses<T: 'static>(stream: AnswerStream<T>) -> StatusStream<T> {
    Box::pin(stream.map(|item| item.map_err(|error| error.to_status())))
}

#[tonic::async_trait]
impl Hub for HubService {
    async fn get_hub_info(&self, request: Request<GetHubInfoRequest>) -> Result<Response<HubInfo>, Status> {
        let port = u16::try_from(request.get_ref().caller_port).unwrap_or(0);
        if let Some(remote) = request.remote_addr() {
            self.api.introduce(&Caller {
                hub_id: request.get_ref().caller_hub_id.clone(),
                address: std::net::SocketAddr::new(remote.ip(), port),
            });
        }
        Ok(Response::new(self.api.hub_info()))
    }

    async fn deploy(&self, request: Request<DeployRequest>) -> Result<Response<DeployResponse>, Status> {
        let hops = hops(&request);
        answer(self.api.deploy(request.into_inner(), hops).await)
    }

    async fn list_functions(
        &self,
        request: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        let hops = hops(&request);
        if request.get_ref().cluster && hops == 0 {
            return Ok(Response::new(self.api.cluster_functions().await));
        }
        Ok(Response::new(self.api.list_functions(hops).await))
    }

    async fn get_function(&self, request: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        let hops = hops(&request);
        answer(self.api.get_function(request.into_inner(), hops).await)
    }

    type LogsStream = StatusStream<LogEntry>;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let hops = hops(&request);
        answer(self.api.logs(request.into_inner(), hops).await.map(statuses))
    }

    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<FunctionInfo>, Status> {
        let hops = hops(&request);
        answer(self.api.stop(request.into_inner(), hops).await)
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let hops = hops(&request);
        answer(self.api.remove(request.into_inner(), hops).await)
    }

    async fn list_peers(&self, _request: Request<ListPeersRequest>) -> Result<Response<ListPeersResponse>, Status> {
        Ok(Response::new(self.api.list_peers()))
    }

    async fn checkpoint(&self, request: Request<CheckpointRequest>) -> Result<Response<CheckpointResponse>, Status> {
        let hops = hops(&request);
        answer(self.api.checkpoint(request.into_inner(), hops).await)
    }

    async fn suspend(&self, request: Request<SuspendRequest>) -> Result<Response<SuspendResponse>, Status> {
        let hops = hops(&request);
        answer(self.api.suspend(request.into_inner(), hops).await)
    }

    async fn resume(&self, request: Request<ResumeRequest>) -> Result<Response<FunctionInfo>, Status> {
        let hops = hops(&request);
        answer(self.api.resume(request.into_inner(), hops).await)
    }

    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let hops = hops(&request);
        let request = request.into_inner();
        if hops > 0 {
            return answer(self.api.invoke(request, hops).await);
        }
        // A client's invocation waits through a move of its function, as
        // over HTTP; a forwarded one was already sent by a hub that waits.
        let deadline = match request.timeout_ms {
            0 => self.api.invoke_timeout(),
            ms => Duration::from_millis(u64::from(ms)),
        };
        answer(self.api.invoke_through_moves(request, deadline, |_| {}).await)
    }

    type EventsStream = StatusStream<HubEvent>;

    async fn events(&self, request: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        Ok(Response::new(statuses(self.api.events(request.into_inner()))))
    }

    type DrainStream = StatusStream<DrainProgress>;

    async fn drain(&self, request: Request<DrainRequest>) -> Result<Response<Self::DrainStream>, Status> {
        let hops = hops(&request);
        answer(self.api.drain(request.into_inner(), hops).await.map(statuses))
    }

    async fn undrain(&self, request: Request<UndrainRequest>) -> Result<Response<HubInfo>, Status> {
        let hops = hops(&request);
        answer(self.api.undrain(request.into_inner(), hops).await)
    }

    async fn issue_credential(
        &self,
        request: Request<IssueCredentialRequest>,
    ) -> Result<Response<IssueCredentialResponse>, Status> {
        answer(self.api.issue_credential(request.into_inner()))
    }

    async fn create_join_token(&self, request: Request<CreateJoinTokenRequest>) -> Result<Response<JoinToken>, Status> {
        answer(self.api.create_join_token(request.into_inner()))
    }

    async fn list_join_tokens(
        &self,
        _request: Request<ListJoinTokensRequest>,
    ) -> Result<Response<ListJoinTokensResponse>, Status> {
        answer(self.api.list_join_tokens())
    }

    async fn remove_join_token(
        &self,
        request: Request<RemoveJoinTokenRequest>,
    ) -> Result<Response<RemoveJoinTokenResponse>, Status> {
        answer(
            self.api
                .remove_join_token(request.into_inner())
                .map(|()| RemoveJoinTokenResponse {}),
        )
    }

    async fn remove_hub(&self, request: Request<RemoveHubRequest>) -> Result<Response<RemoveHubResponse>, Status> {
        answer(self.api.remove_hub(request.into_inner()))
    }

    type MigrateStream = StatusStream<MigrateProgress>;

    async fn migrate(&self, request: Request<MigrateRequest>) -> Result<Response<Self::MigrateStream>, Status> {
        let hops = hops(&request);
        answer(self.api.migrate(request.into_inner(), hops).await.map(statuses))
    }
}
