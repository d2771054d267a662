//! The HTTP API: a second adapter of [`HubApi`], served on the same address
//! as gRPC (the server tells them apart by path and content type). JSON
//! bodies follow the protobuf JSON mapping of the `ferry.v1` messages;
//! invoking takes and gives the function's raw bytes. Errors are
//! `{"error": {"code": …, "message": …}}` with the HTTP status of their kind.
//!
//! Who may call: on a hub with cluster security, the same mutual TLS and
//! roles as gRPC (`AccessLayer::refusal`, asked by [`admit`]); on an
//! insecure hub, only callers on loopback unless the operator opted in
//! (`--http-remote`).
//!
//! Invariant: this module only translates; what a request does is
//! [`HubApi`]'s, so gRPC and HTTP can never disagree.

mod actions;
mod answers;
mod body_limit;
mod invocations;
mod query;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_proto::ErrorCode;
use ferry_proto::v1::{GetFunctionRequest, InvokeRequest};
use serde::Deserialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::api::HubApi;
use crate::error::validate_function_name;
use crate::trust::access::AccessLayer;
use answers::{Json, Refusal, failure};
use invocations::Invocations;
use query::Query;

/// Response header naming the hub that answered (for an invocation: the
/// hub the function ran on).
pub const SERVED_BY: &str = "ferry-served-by";
/// Request header giving an invocation's deadline in milliseconds (the
/// `timeout_ms` query parameter does the same).
pub const TIMEOUT_HEADER: &str = "ferry-timeout-ms";
/// Request header making a retried POST run once.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Who may use the HTTP API.
#[derive(Debug, Clone)]
pub enum HttpAccess {
    /// Mutual TLS decides: the caller's certificate must carry the role
    /// (`viewer` to read, `operator` for the rest).
    ClusterCredentials(AccessLayer),
    /// An insecure hub: loopback callers only.
    LoopbackOnly,
    /// An insecure hub whose operator opened HTTP to every caller.
    Anyone,
}

#[derive(Clone)]
struct Http {
    api: HubApi,
    invocations: Arc<Invocations>,
    hub_name: HeaderValue,
}

/// The HTTP routes, to merge with the gRPC services' router.
pub fn router(api: HubApi, access: HttpAccess) -> Router {
    let hub_name =
        HeaderValue::from_str(&api.hub_info().hub_name).unwrap_or_else(|_| HeaderValue::from_static("unnamed"));
    let state = Http {
        invocations: Arc::new(Invocations::new(api.clone())),
        api,
        hub_name,
    };
    Router::new()
        .route("/v1/hub", get(hub_info))
        .route("/v1/peers", get(peers))
        .route("/v1/events", get(streams::events))
        .route(
            "/v1/functions",
            get(list_functions)
                .post(actions::deploy)
                .layer(DefaultBodyLimit::max(DEPLOY_BODY_BYTES)),
        )
        .route("/v1/functions/{name}", get(get_function).delete(actions::remove))
        .route("/v1/functions/{name}/stop", post(actions::stop))
        .route("/v1/functions/{name}/suspend", post(actions::suspend))
        .route("/v1/functions/{name}/resume", post(actions::resume))
        .route("/v1/functions/{name}/checkpoint", post(actions::checkpoint))
        .route("/v1/functions/{name}/migrate", post(actions::migrate))
        .route("/v1/functions/{name}/logs", get(streams::logs))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/functions/{name}/invocations", post(invocations::start))
        .route(
            "/v1/invocations/{id}",
            get(invocations::status).delete(invocations::cancel),
        )
        .route("/v1/invocations/{id}/result", get(invocations::result))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .method_not_allowed_fallback(query::method_not_allowed)
        // The same limits as `body_limit::limit_for`.
        .layer(DefaultBodyLimit::max(body_limit::MESSAGE_BODY_BYTES))
        .layer(middleware::from_fn(body_limit::refuse_oversized))
        .layer(middleware::from_fn_with_state(state.clone(), served_by))
        .layer(middleware::from_fn_with_state(access, admit))
        .with_state(state)
}

/// The answer to a path no route takes: gRPC's `unimplemented` to a gRPC
/// call, a JSON 404 to anything else.
pub async fn fallback(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no gRPC method {}", request.uri().path()))
            .into_http::<axum::body::Body>()
            .into_response();
    }
    failure(
        ErrorCode::NotFound,
        format!(
            "no route {} {} (the API is under /v1/)",
            request.method(),
            request.uri().path()
        ),
    )
}

/// How much of a refused request's body is read before the answer: a
/// client still sending when the answer comes (and the stream is reset)
/// may report the reset rather than the answer.
const REFUSED_BODY_READ: usize = 1 << 20;

/// Refuses a caller the hub's access rule leaves out.
async fn admit(State(access): State<HttpAccess>, request: Request, next: Next) -> Response {
    let refusal = match &access {
        HttpAccess::ClusterCredentials(layer) => layer.refusal(&request).map(|status| {
            tracing::info!(
                path = request.uri().path(),
                reason = status.message(),
                "http request refused"
            );
            Refusal(ErrorCode::from_grpc_code(status.code()), status.message().to_owned())
        }),
        HttpAccess::LoopbackOnly if !remote_address(&request).is_some_and(|remote| remote.ip().is_loopback()) => {
            Some(Refusal(
                ErrorCode::PermissionDenied,
                "this insecure hub serves HTTP to loopback callers only (start it with --http-remote to open it)"
                    .to_owned(),
            ))
        }
        HttpAccess::LoopbackOnly | HttpAccess::Anyone => None,
    };
    match refusal {
        Some(refusal) => {
            let _ = axum::body::to_bytes(request.into_body(), REFUSED_BODY_READ).await;
            refusal.into_response()
        }
        None => next.run(request).await,
    }
}

fn remote_address(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

/// Names this hub on every answer that does not name another.
async fn served_by(State(http): State<Http>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(SERVED_BY) {
        response.headers_mut().insert(SERVED_BY, http.hub_name.clone());
    }
    response
}

async fn hub_info(State(http): State<Http>) -> Response {
    Json(http.api.hub_info()).into_response()
}

async fn peers(State(http): State<Http>) -> Response {
    Json(http.api.list_peers()).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    /// `cluster`: every hub's functions, not only this hub's.
    scope: Option<String>,
}

/// `GET /v1/functions`: this hub's functions (`?scope=cluster`: the
/// cluster's, each as the hub running it sees it).
async fn list_functions(State(http): State<Http>, Query(query): Query<ListQuery>) -> Response {
    match query.scope.as_deref() {
        None | Some("hub") => Json(http.api.list_functions(0).await).into_response(),
        Some("cluster") => Json(http.api.cluster_functions().await).into_response(),
        Some(other) => failure(
            ErrorCode::InvalidArgument,
            format!("scope {other:?}: say hub (the default) or cluster"),
        ),
    }
}

/// `GET /`: the hub's web page (embedded; it reads the API above).
async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
        .into_response()
}

async fn get_function(State(http): State<Http>, Path(name): Path<String>) -> Response {
    if let Err(error) = validate_function_name(&name) {
        return answers::error(error);
    }
    match http.api.get_function(GetFunctionRequest { name }, 0).await {
        Ok(info) => {
            let served_by = info.hub_name.clone();
            answers::served_by(Json(info).into_response(), &served_by)
        }
        Err(error) => answers::error(error),
    }
}

#[derive(Debug, Default, Deserialize)]
struct InvokeQuery {
    timeout_ms: Option<u32>,
}

/// The deadline a request asked for (0: the hub's default), from its query
/// or its header; a header that is not a number is an error.
fn deadline_ms(query: &InvokeQuery, headers: &HeaderMap) -> Result<u32, Refusal> {
    if let Some(timeout) = query.timeout_ms {
        return Ok(timeout);
    }
    match headers.get(TIMEOUT_HEADER) {
        None => Ok(0),
        Some(value) => value.to_str().ok().and_then(|value| value.parse().ok()).ok_or_else(|| {
            Refusal(
                ErrorCode::InvalidArgument,
                format!("the {TIMEOUT_HEADER} header must be a number of milliseconds"),
            )
        }),
    }
}

/// What an invocation's POST says: the message, how long the caller waits
/// (its deadline, else the hub's invoke timeout) and its idempotency key.
pub(super) struct Asked {
    pub request: InvokeRequest,
    pub deadline: Duration,
    pub key: Option<String>,
}

impl FromRequest<Http> for Asked {
    type Rejection = Response;

    async fn from_request(request: Request, http: &Http) -> Result<Asked, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(name) = Path::<String>::from_request_parts(&mut parts, http)
            .await
            .map_err(IntoResponse::into_response)?;
        validate_function_name(&name).map_err(answers::error)?;
        let Query(query) = Query::<InvokeQuery>::from_request_parts(&mut parts, http)
            .await
            .map_err(IntoResponse::into_response)?;
        let deadline = match deadline_ms(&query, &parts.headers).map_err(IntoResponse::into_response)? {
            0 => http.api.invoke_timeout(),
            timeout_ms => Duration::from_millis(u64::from(timeout_ms)),
        };
        let key = parts
            .headers
            .get(IDEMPOTENCY_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = Bytes::from_request(Request::from_parts(parts, body), http)
            .await
            .map_err(answers::bad_body)?;
        Ok(Asked {
            request: InvokeRequest {
                name,
                data: body.to_vec(),
                timeout_ms: 0,
                ..Default::default()
            },
            deadline,
            key,
        })
    }
}

/// `POST /v1/functions/{name}/invoke`: the body to the function, its reply
/// back; a function that is moving or suspended is waited for until the
/// deadline (504 when it passes).
async fn invoke(State(http): State<Http>, asked: Asked) -> Response {
    let answer = http
        .invocations
        .invoke_once(asked.key, asked.request, asked.deadline)
        .await;
    answers::invoked(answer)
}

async fn metrics(State(http): State<Http>) -> Response {
    let text = http.api.metrics_text();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A deploy's body: a module of up to 64 MiB (what gRPC takes), base64.
const DEPLOY_BODY_BYTES: usize = 96 << 20;

/// How long a finished asynchronous invocation, or an idempotency key's
/// answer, is kept.
const KEPT_FOR: Duration = Duration::from_secs(600);
/// How many are kept at most (the oldest go first).
const KEPT_AT_MOST: usize = 10_000;
