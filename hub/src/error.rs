//! The hub's typed errors and their gRPC codes.

use ferry_proto::{ErrorCode, ServiceError};
use thiserror::Error;

use crate::runtime::RuntimeError;
use crate::store::StoreError;

/// Everything a hub operation can fail with.
#[derive(Debug, Error)]
pub enum HubError {
    #[error("function {name:?} not found on hub {hub}")]
    FunctionNotFound { name: String, hub: String },
    /// Not here, nor on any peer that answered; `silent`: the peers that
    /// could not be asked, where it may be.
    #[error(
        "function {name:?} is not on hub {hub} nor on any peer that answered; {silent} did not answer and may run it: try again once it is up"
    )]
    FunctionNotFoundYet { name: String, hub: String, silent: String },
    #[error("a function named {name:?} already exists (deploy with --replace to redeploy it)")]
    FunctionExists { name: String },
    #[error("invalid function name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("function {name:?} is not running (it is {state})")]
    NotRunning { name: String, state: &'static str },
    #[error("function {name:?} is {state}: only a running function moves{hint}")]
    NotMovable {
        name: String,
        state: &'static str,
        hint: String,
    },
    #[error(
        "function {name:?} ran to its end (exited): there is nothing left to resume; deploy it again to start it anew"
    )]
    Completed { name: String },
    #[error(
        "function {name:?} needs {needed_bytes} bytes of memory at start, above its memory limit of {limit_bytes} bytes: give it a larger --memory-limit"
    )]
    MemoryLimitBelowModule {
        name: String,
        needed_bytes: u64,
        limit_bytes: u64,
    },
    /// `now`: why, when the function was suspended meanwhile (`: it is
    /// suspended (it replies once resumed …)`), else empty.
    #[error("function {name:?} did not reply within {timeout_ms} ms{now}")]
    InvokeTimeout { name: String, timeout_ms: u64, now: String },
    #[error("function {name:?} took no message within {timeout_ms} ms, nothing was delivered: {refused}")]
    NotTaken {
        name: String,
        timeout_ms: u64,
        refused: String,
    },
    /// `ended`: how, `: it failed: …`, `: it exited with code N`, `: it
    /// was removed`, `: it was replaced by a redeploy`, `: it was stopped`
    /// (empty when its end was not recorded in time).
    #[error("function {name:?} ended before replying{ended}")]
    NoReply { name: String, ended: String },
    #[error("function {name:?} has {queued} messages waiting; its inbox is full")]
    InboxFull { name: String, queued: usize },
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("function {name:?} is already running")]
    AlreadyRunning { name: String },
    #[error(
        "function {name:?} has no checkpoint to resume from: `ferry deploy MODULE --name {name} --replace` starts it anew"
    )]
    NoCheckpoint { name: String },
    #[error("could not capture function {name:?}: {reason}")]
    CaptureFailed { name: String, reason: String },
    #[error("checkpoint of function {name:?} cannot be used: {reason}")]
    CheckpointUnusable { name: String, reason: String },
    #[error("function {name:?} runs on hub {hub} now: `deploy --replace` or `rm` it through any hub")]
    MovedAway { name: String, hub: String },
    #[error("function {name:?} is being moved between hubs; try again when the move is over")]
    Moving { name: String },
    #[error("no hub named {hub:?} is in the peer table (see `ferry peers`)")]
    HubNotFound { hub: String },
    #[error("hub {hub} is being drained and takes no new functions (`ferry undrain {hub}` ends that)")]
    Draining { hub: String },
    #[error("function {name:?} is {state}; try again when that is over")]
    Busy { name: String, state: &'static str },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{rule}")]
    MessagingDenied { rule: String },
    #[error("{0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error("no join token {id:?} on this hub (see `ferry cluster token ls`)")]
    TokenNotFound { id: String },
    #[error("the request was forwarded {hops} times (last toward hub {hub}): the forward pointers form a loop")]
    ForwardLoop { hops: u32, hub: String },
    #[error("log follower of function {name:?} fell behind and missed {missed} entries")]
    LogFollowerLagged { name: String, missed: u64 },
    /// What another hub answered to a forwarded request.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    #[error("function {name:?} is offered under epoch {offered}, but this hub knows epoch {known}: the offer is stale")]
    StaleEpoch { name: String, offered: u64, known: u64 },
    #[error("cannot move to hub {hub}: {reason}")]
    PeerUnusable { hub: String, reason: String },
    #[error("move of function {name:?} to hub {hub} failed, {where_now}: {error}")]
    MoveFailed {
        name: String,
        hub: String,
        /// Where the function is now: "the function continues on hub …",
        /// or that it ended during the move.
        where_now: String,
        error: Box<ferry_migrator::transfer::TransferError>,
    },
    #[error(transparent)]
    Transfer(ferry_migrator::transfer::TransferError),
    #[error(transparent)]
    Checkpoint(ferry_migrator::checkpoint::CheckpointError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError for HubError {
    fn error_code(&self) -> ErrorCode {
        match self {
            HubError::FunctionNotFound { .. } | HubError::HubNotFound { .. } | HubError::TokenNotFound { .. } => {
                ErrorCode::NotFound
            }
            HubError::FunctionExists { .. } => ErrorCode::AlreadyExists,
            HubError::InvalidName { .. } | HubError::InvalidRequest(_) => ErrorCode::InvalidArgument,
            HubError::NotRunning { .. }
            | HubError::NotMovable { .. }
            | HubError::Completed { .. }
            | HubError::NoReply { .. } => ErrorCode::FailedPrecondition,
            HubError::InvokeTimeout { .. } | HubError::NotTaken { .. } => ErrorCode::DeadlineExceeded,
            HubError::InboxFull { .. } | HubError::MemoryLimitBelowModule { .. } => ErrorCode::ResourceExhausted,
            HubError::ShuttingDown | HubError::FunctionNotFoundYet { .. } => ErrorCode::Unavailable,
            HubError::AlreadyRunning { .. } => ErrorCode::FailedPrecondition,
            HubError::NoCheckpoint { .. } => ErrorCode::NotFound,
            HubError::CaptureFailed { .. } => ErrorCode::Aborted,
            HubError::CheckpointUnusable { .. } => ErrorCode::DataLoss,
            HubError::Moving { .. } | HubError::Busy { .. } | HubError::Draining { .. } => {
                ErrorCode::FailedPrecondition
            }
            HubError::Internal(_) => ErrorCode::Internal,
            HubError::MessagingDenied { .. } => ErrorCode::PermissionDenied,
            HubError::Trust(crate::trust::TrustError::NotAnAuthority) => ErrorCode::FailedPrecondition,
            HubError::Trust(crate::trust::TrustError::Parse(_)) => ErrorCode::InvalidArgument,
            HubError::Trust(_) => ErrorCode::Internal,
            HubError::ForwardLoop { .. } => ErrorCode::FailedPrecondition,
            HubError::LogFollowerLagged { .. } => ErrorCode::ResourceExhausted,
            HubError::Remote { code, .. } => *code,
            HubError::MovedAway { .. } => ErrorCode::AlreadyExists,
            HubError::StaleEpoch { .. } => ErrorCode::Aborted,
            HubError::PeerUnusable { .. } => ErrorCode::FailedPrecondition,
            HubError::MoveFailed { error, .. } => error.error_code(),
            HubError::Transfer(error) => error.error_code(),
            HubError::Checkpoint(error) => error.error_code(),
            HubError::Runtime(error) => error.error_code(),
            HubError::Store(error) => error.error_code(),
        }
    }
}

impl HubError {
    /// What another hub's status means here: its kind and its text, as they were.
    pub fn from_status(status: tonic::Status) -> HubError {
        HubError::Remote {
            code: ErrorCode::from_grpc_code(status.code()),
            message: status.message().to_owned(),
        }
    }
}

impl From<HubError> for tonic::Status {
    fn from(error: HubError) -> Self {
        error.to_status()
    }
}

/// Function names are DNS-label-like so they are safe in keys, URLs and logs.
pub fn validate_function_name(name: &str) -> Result<(), HubError> {
    let invalid = |reason| {
        Err(HubError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 63 {
        return invalid("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.')
    {
        return invalid("only letters, digits, '-', '_' and '.' are allowed");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return invalid("it must start with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_follow_the_documented_rules() {
        let cases: &[(&str, bool)] = &[
            ("sensor", true),
            ("sensor-2.b_c", true),
            ("9lives", true),
            ("", false),
            ("-leading-dash", false),
            ("has space", false),
            ("slash/inside", false),
            ("nul\0", false),
            (&"x".repeat(64), false),
            (&"x".repeat(63), true),
        ];
        for (name, valid) in cases {
            assert_eq!(validate_function_name(name).is_ok(), *valid, "{name:?}");
        }
    }
}
