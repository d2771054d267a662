//! Routes that change a function: deploy (a `DeployRequest` in JSON, the
//! module base64), stop, suspend, resume, checkpoint, move and remove.
//! Each answers with the same message the gRPC call does, in JSON.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_proto::ErrorCode;
use ferry_proto::v1::{
    CheckpointRequest, DeployRequest, MigrateRequest, RemoveRequest, ResumeRequest, StopRequest, SuspendRequest,
    migrate_progress,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Http;
use super::answers::{self, Json, failure};
use super::query::Query;
use crate::error::{HubError, validate_function_name};

/// `POST /v1/functions`: deploys the function the JSON body describes.
pub(super) async fn deploy(State(http): State<Http>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return answers::bad_body(rejection),
    };
    let request: DeployRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return failure(
                ErrorCode::InvalidArgument,
                format!("the body is not a DeployRequest in JSON (the module base64): {error}"),
            );
        }
    };
    match http.api.deploy(request, 0).await {
        Ok(deployed) => (StatusCode::CREATED, Json(deployed)).into_response(),
        Err(error) => answers::error(error),
    }
}

/// Runs `action` on the function `name` names, if that is a valid name;
/// its answer as JSON.
async fn act<R: Serialize>(name: String, action: impl AsyncFnOnce(String) -> Result<R, HubError>) -> Response {
    if let Err(error) = validate_function_name(&name) {
        return answers::error(error);
    }
    match action(name).await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => answers::error(error),
    }
}

pub(super) async fn stop(State(http): State<Http>, Path(name): Path<String>) -> Response {
    act(name, async |name| http.api.stop(StopRequest { name }, 0).await).await
}

pub(super) async fn suspend(State(http): State<Http>, Path(name): Path<String>) -> Response {
    act(name, async |name| http.api.suspend(SuspendRequest { name }, 0).await).await
}

pub(super) async fn resume(State(http): State<Http>, Path(name): Path<String>) -> Response {
    act(name, async |name| http.api.resume(ResumeRequest { name }, 0).await).await
}

pub(super) async fn checkpoint(State(http): State<Http>, Path(name): Path<String>) -> Response {
    act(name, async |name| {
        http.api.checkpoint(CheckpointRequest { name }, 0).await
    })
    .await
}

pub(super) async fn remove(State(http): State<Http>, Path(name): Path<String>) -> Response {
    act(name, async |name| http.api.remove(RemoveRequest { name }, 0).await).await
}

#[derive(Debug, Deserialize)]
pub(super) struct MoveQuery {
    to: Option<String>,
}

/// `POST /v1/functions/{name}/migrate?to=HUB`: moves the function while it
/// runs; answers when the move is over, with its summary.
pub(super) async fn migrate(
    State(http): State<Http>,
    Path(name): Path<String>,
    Query(query): Query<MoveQuery>,
) -> Response {
    let Some(to) = query.to.filter(|to| !to.is_empty()) else {
        return failure(
            ErrorCode::InvalidArgument,
            "say where to move it: ?to=HUB (a hub name or id from /v1/peers)".to_owned(),
        );
    };
    act(name, async |name| {
        let mut progress = http.api.migrate(MigrateRequest { name, to }, 0).await?;
        while let Some(event) = progress.next().await {
            if let Some(migrate_progress::Event::Summary(summary)) = event?.event {
                return Ok(summary);
            }
        }
        Err(HubError::Internal("the move ended without a summary".to_owned()))
    })
    .await
}
