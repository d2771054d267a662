//! Routes that read a stream: a function's output and the hub's events,
//! as one JSON list, or (`follow=1`) as Server-Sent Events that go on until
//! the client leaves.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_proto::v1::{EventsRequest, LogEntry, LogStream, LogsRequest};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::Http;
use super::answers::{self, ErrorBody, Json, code_name};
use super::query::Query;
use crate::api::AnswerStream;
use crate::error::{HubError, validate_function_name};
use ferry_proto::ServiceError;

#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamQuery {
    follow: Option<String>,
    tail: Option<u32>,
}

impl StreamQuery {
    fn follow(&self) -> bool {
        self.follow
            .as_deref()
            .is_some_and(|follow| matches!(follow, "" | "1" | "true" | "yes"))
    }
}

#[derive(Serialize)]
struct Entries<T> {
    entries: Vec<T>,
}

/// `GET /v1/functions/{name}/logs`: what the function wrote (stdout,
/// stderr and the hub's lines about it), wherever it runs.
pub(super) async fn logs(
    State(http): State<Http>,
    Path(name): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Response {
    if let Err(error) = validate_function_name(&name) {
        return answers::error(error);
    }
    let request = LogsRequest {
        name,
        follow: query.follow(),
        tail: query.tail.unwrap_or(0),
        from_seq: 0,
    };
    match http.api.logs(request, 0).await {
        Ok(entries) => {
            answer(
                entries.map(|entry| entry.map(LogLine::from)).boxed(),
                query.follow(),
                "log",
            )
            .await
        }
        Err(error) => answers::error(error),
    }
}

/// A line of output as the HTTP API shows it: the bytes as text.
#[derive(Serialize)]
struct LogLine {
    seq: u64,
    /// `stdout`, `stderr`, `log` (`ferry_log`) or `hub` (the hub's lines about the function).
    stream: &'static str,
    unix_ms: u64,
    /// The bytes written, as UTF-8 (invalid sequences replaced).
    text: String,
}

impl From<LogEntry> for LogLine {
    fn from(entry: LogEntry) -> Self {
        LogLine {
            seq: entry.seq,
            stream: match entry.stream() {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
                LogStream::GuestLog => "log",
                LogStream::Hub => "hub",
                LogStream::Unspecified => "unspecified",
            },
            unix_ms: entry.unix_ms,
            text: String::from_utf8_lossy(&entry.data).into_owned(),
        }
    }
}

/// `GET /v1/events`: the hub's decisions (moves, refusals, suspensions).
pub(super) async fn events(State(http): State<Http>, Query(query): Query<StreamQuery>) -> Response {
    let request = EventsRequest {
        follow: query.follow(),
        tail: query.tail.unwrap_or(0),
    };
    answer(http.api.events(request), query.follow(), "event").await
}

/// The whole stream as `{"entries": [...]}`, or each item as an SSE event
/// named `kind` while it lasts (an error ends it with an `error` event).
async fn answer<T: Serialize + Send + 'static>(items: AnswerStream<T>, follow: bool, kind: &'static str) -> Response {
    if follow {
        return Sse::new(server_events(items, kind))
            .keep_alive(KeepAlive::default())
            .into_response();
    }
    let mut entries = Vec::new();
    let mut items = items;
    while let Some(item) = items.next().await {
        match item {
            Ok(entry) => entries.push(entry),
            Err(error) => return answers::error(error),
        }
    }
    Json(Entries { entries }).into_response()
}

fn server_events<T: Serialize + Send + 'static>(
    items: AnswerStream<T>,
    kind: &'static str,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    items.scan(false, move |ended, item| {
        if *ended {
            return futures::future::ready(None);
        }
        let event = match item {
            Ok(entry) => Event::default().event(kind).json_data(entry),
            Err(error) => {
                // An error ends the stream: nothing comes after it.
                *ended = true;
                error_event(&error)
            }
        };
        let event = event.unwrap_or_else(|error| Event::default().event("error").data(error.to_string()));
        futures::future::ready(Some(Ok(event)))
    })
}

fn error_event(error: &HubError) -> Result<Event, axum::Error> {
    Event::default().event("error").json_data(ErrorBody {
        code: code_name(error.error_code()),
        message: ferry_proto::error_chain(error),
    })
}
