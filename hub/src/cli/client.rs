//! Connecting to a hub and the errors a client command can end with.

use ferry_proto::ErrorCode;
use ferry_proto::v1::hub_client::HubClient;
use thiserror::Error;
use tonic::transport::Channel;

use crate::connector::{ConnectError, PeerConnector, Purpose, hub_client};

/// Hub address used when neither `--hub` nor `FERRY_HUB` is given.
pub const DEFAULT_HUB: &str = "127.0.0.1:7411";

/// Why a client command failed. Each maps to its own exit code (README).
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid hub address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error(
        "cannot reach hub at {address}: {reason} (is `ferry agent` running there? choose another hub with --hub or FERRY_HUB)"
    )]
    Unreachable { address: String, reason: String },
    #[error("{0}")]
    Hub(tonic::Status),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Hub(status)
    }
}

impl ClientError {
    /// What to print after `error: `.
    pub fn message(&self) -> String {
        match self {
            ClientError::Hub(status) if status.code() == tonic::Code::Unavailable => {
                format!("hub unavailable: {}", status.message())
            }
            ClientError::Hub(status) => status.message().to_owned(),
            other => other.to_string(),
        }
    }

    /// Exit codes: 1 other, 2 usage, 3 not found, 4 invalid input,
    /// 5 hub unreachable, 6 timed out, 7 wrong state, 8 already exists,
    /// 9 limit exceeded, 10 data loss.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Address { .. } | ClientError::Usage(_) => 2,
            ClientError::ReadFile { .. } => 4,
            ClientError::Unreachable { .. } => 5,
            ClientError::Output(_) => 1,
            ClientError::Hub(status) => match ErrorCode::from_grpc_code(status.code()) {
                ErrorCode::NotFound => 3,
                ErrorCode::InvalidArgument => 4,
                ErrorCode::Unavailable => 5,
                ErrorCode::DeadlineExceeded => 6,
                ErrorCode::FailedPrecondition | ErrorCode::Aborted => 7,
                ErrorCode::AlreadyExists => 8,
                ErrorCode::ResourceExhausted => 9,
                ErrorCode::DataLoss => 10,
                ErrorCode::Internal => 1,
            },
        }
    }
}

/// Connects to the hub at `address` (`HOST:PORT` or a full URL).
pub async fn connect(address: &str) -> Result<HubClient<Channel>, ClientError> {
    let channel = PeerConnector::new()
        .connect(address, Purpose::Control)
        .await
        .map_err(|error| match error {
            ConnectError::BadAddress { address, reason } => ClientError::Address { address, reason },
            ConnectError::Unreachable { address, reason } => ClientError::Unreachable { address, reason },
        })?;
    Ok(hub_client(channel))
}
