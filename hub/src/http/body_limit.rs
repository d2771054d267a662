//! Bodies larger than a route takes, refused from their declared length.
//!
//! Without this, a too-large body was read up to the route's limit and
//! then refused, and the hub closed the connection with the rest of the
//! body unread. The kernel answers unread data with a reset, which can
//! reach an HTTP/1.1 client before the 413 does: the client saw "connection
//! reset" or "broken pipe" instead of the reason (seen with a 17 MiB invoke
//! body while other requests kept the hub busy). Now a body whose
//! `Content-Length` is over the limit is refused before a byte of it is
//! read:
//!
//! - a client that sent `Expect: 100-continue` (curl does for large
//!   bodies) gets the 413 instead of the go-ahead and never sends the body;
//! - any other client's body is read and thrown away first (up to
//!   [`DRAIN_AT_MOST`] bytes and [`DRAIN_PATIENCE`], as nginx's lingering
//!   close does), so the 413 arrives on a connection with nothing unread.
//!
//! A body without a declared length (chunked) is still cut at the limit by
//! `DefaultBodyLimit` as before.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_stream::StreamExt;

use super::DEPLOY_BODY_BYTES;
use super::answers::{ErrorAnswer, ErrorBody, Json};
use crate::runtime::MAX_MESSAGE_BYTES;

/// The largest body of every route but a deploy: one message, with room
/// for JSON's framing.
pub(super) const MESSAGE_BODY_BYTES: usize = MAX_MESSAGE_BYTES as usize + 4096;

/// The most a refused body is read for, beyond which the connection is
/// just closed.
pub(super) const DRAIN_AT_MOST: u64 = 128 << 20;
/// How long a refused body is read for at most.
pub(super) const DRAIN_PATIENCE: Duration = Duration::from_secs(10);

/// The largest body a request to `path` with `method` may carry: a deploy
/// takes a module, everything else at most one message with room for
/// JSON's framing.
pub(super) fn limit_for(method: &Method, path: &str) -> usize {
    if method == Method::POST && path.trim_end_matches('/') == "/v1/functions" {
        DEPLOY_BODY_BYTES
    } else {
        MESSAGE_BODY_BYTES
    }
}

/// Middleware: refuses a request whose declared body is over its route's
/// limit (see the module's documentation).
pub(super) async fn refuse_oversized(request: Request, next: Next) -> Response {
    let limit = limit_for(request.method(), request.uri().path()) as u64;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let Some(declared) = declared.filter(|declared| *declared > limit) else {
        return next.run(request).await;
    };
    let expects_go_ahead = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_go_ahead && declared <= DRAIN_AT_MOST {
        let drained = tokio::time::timeout(DRAIN_PATIENCE, drain(request.into_body())).await;
        if drained.is_err() {
            tracing::debug!(declared, "a refused body was still arriving; the connection is closed");
        }
    }
    too_large(declared, limit)
}

/// Reads `body` to its end (or its first error), keeping nothing.
async fn drain(body: axum::body::Body) {
    let mut data = body.into_data_stream();
    while let Some(Ok(_)) = data.next().await {}
}

fn too_large(declared: u64, limit: u64) -> Response {
    let answer = ErrorAnswer {
        error: ErrorBody {
            code: "PAYLOAD_TOO_LARGE".to_owned(),
            message: format!("the body is {declared} bytes; this route takes at most {limit} bytes"),
        },
    };
    (StatusCode::PAYLOAD_TOO_LARGE, Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_takes_a_module_and_every_other_route_one_message() {
        assert_eq!(limit_for(&Method::POST, "/v1/functions"), DEPLOY_BODY_BYTES);
        assert_eq!(limit_for(&Method::POST, "/v1/functions/"), DEPLOY_BODY_BYTES);
        let message = MESSAGE_BODY_BYTES;
        assert_eq!(limit_for(&Method::POST, "/v1/functions/echo/invoke"), message);
        assert_eq!(limit_for(&Method::GET, "/v1/functions"), message);
    }
}
