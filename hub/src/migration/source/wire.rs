//! The source's side of the stream: frames out and answers in, both
//! within the stall limit, and how a failed stream reads as an error.

use std::time::Duration;

use ferry_migrator::transfer::{TransferError, code_from_name, refusal_in};
use ferry_proto::ErrorCode;
use ferry_proto::internal::v1::{DestinationFrame, SourceFrame};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::truncated;
use crate::migration::watchdog::Watchdog;

/// What the destination says, as the reader task hands it on.
pub(super) type Answers = mpsc::UnboundedReceiver<Result<DestinationFrame, tonic::Status>>;

pub(super) async fn send(
    watchdog: &Watchdog,
    outbound: &mpsc::Sender<SourceFrame>,
    frame: SourceFrame,
) -> Result<(), TransferError> {
    match watchdog.guard(outbound.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(truncated("the destination closed the stream".to_owned())),
        Err(limit) => Err(truncated(format!("the destination took nothing for {limit:?}"))),
    }
}

/// The next frame from the destination: within the stall limit, or, for a
/// decision (the destination persisting or starting), within `decision`
/// or the stall limit, whichever is longer.
pub(super) async fn recv(
    watchdog: &Watchdog,
    inbound: &mut Answers,
    decision: Option<Duration>,
) -> Result<DestinationFrame, TransferError> {
    let heard = match decision {
        None => watchdog.guard(inbound.recv()).await,
        Some(decision) => {
            let wait = decision.max(watchdog.limit());
            tokio::time::timeout(wait, inbound.recv()).await.map_err(|_| wait)
        }
    };
    match heard {
        Ok(Some(Ok(frame))) => Ok(frame),
        Ok(None) => Err(truncated("the destination closed the stream".to_owned())),
        Ok(Some(Err(status))) => Err(status_error(status)),
        Err(waited) => Err(truncated(format!("the destination said nothing for {waited:?}"))),
    }
}

/// How long a stream that closed under a send is searched for the
/// refusal that closed it.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// A send that failed because the stream closed: the destination may
/// have refused the transfer (a chunk it could not store) and closed it.
/// Its refusal, if one is among the answers still to read, says why, and
/// is no link failure to retry; otherwise `error` stands.
pub(super) async fn refusal_behind(error: TransferError, inbound: &mut Answers) -> TransferError {
    if !matches!(error, TransferError::Truncated { .. }) {
        return error;
    }
    let deadline = tokio::time::Instant::now() + REFUSAL_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, inbound.recv()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(refusal) = refusal_in(&frame) {
                    return refusal;
                }
            }
            Ok(Some(Err(_)) | None) | Err(_) => return error,
        }
    }
}

/// Reads the destination's frames on their own task, so that its progress
/// reports reach the stall limit while this side is busy sending; the
/// task ends with the stream or when the returned guard is dropped.
pub(super) fn read_answers(mut inbound: Streaming<DestinationFrame>, watchdog: Watchdog) -> (Answers, AbortOnDrop) {
    let (answers, received) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(frame)) => {
                    watchdog.progressed();
                    if answers.send(Ok(frame)).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    let _ = answers.send(Err(status));
                    break;
                }
            }
        }
    });
    (received, AbortOnDrop(reader))
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn status_error(status: tonic::Status) -> TransferError {
    let code = ErrorCode::from_grpc_code(status.code());
    if code == ErrorCode::Unavailable || code == ErrorCode::DeadlineExceeded || code == ErrorCode::Internal {
        truncated(format!("the connection failed: {}", status.message()))
    } else {
        TransferError::Refused {
            hub: "the destination",
            code: code_from_name(ferry_migrator::transfer::code_name(code)),
            reason: status.message().to_owned(),
        }
    }
}
