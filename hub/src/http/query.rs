//! A request's query string, parsed — or refused with the API's JSON error
//! (`INVALID_ARGUMENT`, 400) naming what is wrong, not axum's plain text.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use ferry_proto::ErrorCode;
use serde::de::DeserializeOwned;

use super::answers::failure;

/// `axum::extract::Query` with the API's error answer.
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query<T>, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(query)) => Ok(Query(query)),
            Err(rejection) => Err(failure(
                ErrorCode::InvalidArgument,
                format!("the query string is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// The answer to a method a route does not take (405): the API's JSON
/// error, naming the request.
pub(super) async fn method_not_allowed(request: axum::extract::Request) -> Response {
    let mut response = failure(
        ErrorCode::InvalidArgument,
        format!(
            "{} {} is not a method this route takes (see the Allow header)",
            request.method(),
            request.uri().path()
        ),
    );
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}
