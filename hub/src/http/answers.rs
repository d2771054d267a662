//! How the HTTP API answers: JSON bodies, errors with the HTTP status of
//! their kind, and the hub that served a request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_proto::{ErrorCode, ServiceError};
use serde::Serialize;

use super::SERVED_BY;
use crate::error::HubError;

/// A JSON body (`application/json`).
pub(super) struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(error) => failure(ErrorCode::Internal, format!("cannot encode the answer: {error}")),
        }
    }
}

/// The HTTP status of an error kind.
pub(super) fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The name the JSON error body gives a kind: gRPC's, as in `NOT_FOUND`.
pub(super) fn code_name(code: ErrorCode) -> String {
    let grpc = format!("{:?}", code.grpc_code());
    let mut name = String::new();
    for (index, letter) in grpc.chars().enumerate() {
        if letter.is_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(letter.to_ascii_uppercase());
    }
    name
}

#[derive(Serialize)]
pub(super) struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Serialize)]
pub(super) struct ErrorAnswer {
    pub error: ErrorBody,
}

/// A request refused before it reached the API: its kind and why.
#[derive(Debug)]
pub(super) struct Refusal(pub ErrorCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        failure(self.0, self.1)
    }
}

/// An error answer of kind `code`.
pub(super) fn failure(code: ErrorCode, message: String) -> Response {
    let body = ErrorAnswer {
        error: ErrorBody {
            code: code_name(code),
            message,
        },
    };
    (status_of(code), Json(body)).into_response()
}

/// The answer for a body the request could not deliver (too large: 413).
pub(super) fn bad_body(rejection: axum::extract::rejection::BytesRejection) -> Response {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "PAYLOAD_TOO_LARGE"
    } else {
        "INVALID_ARGUMENT"
    };
    let body = ErrorAnswer {
        error: ErrorBody {
            code: code.to_owned(),
            message: format!(
                "{} (a message is at most {} bytes)",
                rejection.body_text(),
                crate::runtime::MAX_MESSAGE_BYTES
            ),
        },
    };
    (status, Json(body)).into_response()
}

/// The answer for a hub error.
pub(super) fn error(error: HubError) -> Response {
    failure(error.error_code(), ferry_proto::error_chain(&error))
}

/// `response`, naming `hub` as the one that served it (when known).
pub(super) fn served_by(mut response: Response, hub: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(hub)
        && !hub.is_empty()
    {
        response.headers_mut().insert(SERVED_BY, value);
    }
    response
}

/// The answer to an invocation: the reply's bytes as they are, named by
/// the hub the function ran on.
pub(super) fn invoked(outcome: super::invocations::Outcome) -> Response {
    match outcome {
        Ok((data, hub)) => served_by(
            ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response(),
            &hub,
        ),
        Err((code, message)) => failure(code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_named_as_grpc_names_them() {
        assert_eq!(code_name(ErrorCode::NotFound), "NOT_FOUND");
        assert_eq!(code_name(ErrorCode::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(ErrorCode::Internal), "INTERNAL");
        assert_eq!(status_of(ErrorCode::DeadlineExceeded), StatusCode::GATEWAY_TIMEOUT);
    }
}
