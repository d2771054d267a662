//! Connecting to a hub and the errors a client command can end with.

use std::path::{Path, PathBuf};

use ferry_proto::ErrorCode;
use ferry_proto::v1::hub_client::HubClient;
use thiserror::Error;
use tonic::transport::Channel;

use crate::connector::{ConnectError, PeerConnector, Purpose, hub_client};
use crate::trust::setup::ADMIN_CREDENTIAL_FILE;
use crate::trust::{ClientTls, Credential, TrustError};

/// Hub address used when neither `--hub` nor `FERRY_HUB` is given.
pub const DEFAULT_HUB: &str = "127.0.0.1:7411";

/// The hub a command talks to, and how. The credential is looked up when
/// the command connects, so that a command's own usage errors come first.
#[derive(Debug, Clone)]
pub struct HubTarget {
    pub address: String,
    /// `--credentials` (or `FERRY_CREDENTIALS`).
    pub credentials: Option<PathBuf>,
    /// `--insecure`: plaintext, no credential.
    pub insecure: bool,
}

impl std::fmt::Display for HubTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.address)
    }
}

/// Where the CLI looks for its credential when `--credentials` and
/// `FERRY_CREDENTIALS` name none: the data directory of a hub started here
/// with the defaults, then the user's configuration directory.
pub fn default_credential_paths() -> Vec<PathBuf> {
    let mut paths = vec![Path::new(crate::config::DEFAULT_DATA_DIR).join(ADMIN_CREDENTIAL_FILE)];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(config) = config {
        paths.push(config.join("ferry").join(ADMIN_CREDENTIAL_FILE));
    }
    paths
}

/// The TLS a client command uses: the credential named by `--credentials`
/// (or `FERRY_CREDENTIALS`), else the first of [`default_credential_paths`]
/// that exists. An expired or unreadable credential is refused here, with
/// the reason, before anything is sent.
pub fn client_tls(named: Option<&Path>) -> Result<ClientTls, ClientError> {
    let path = match named {
        Some(path) => path.to_owned(),
        None => {
            let candidates = default_credential_paths();
            match candidates.iter().find(|path| path.exists()) {
                Some(path) => path.clone(),
                None => {
                    let looked = candidates
                        .iter()
                        .map(|path| path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(ClientError::NoCredential { looked });
                }
            }
        }
    };
    let credential = Credential::read(&path).map_err(ClientError::Credential)?;
    let identity = credential.identity().map_err(ClientError::Credential)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if identity.not_after <= now {
        let expired = super::commands::timestamp(identity.not_after);
        return Err(ClientError::ExpiredCredential {
            path: path.display().to_string(),
            expired,
        });
    }
    Ok(ClientTls::new(&credential))
}

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
    #[error("manifest {path} is invalid: {reason}")]
    Manifest { path: String, reason: String },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(
        "no credential to talk to the hub with (looked for --credentials, FERRY_CREDENTIALS, then {looked}); ask an operator for one (`ferry cluster credentials create`), or pass --insecure for a hub started with --insecure"
    )]
    NoCredential { looked: String },
    #[error("{0}")]
    Credential(TrustError),
    #[error("the credential {path} expired at {expired}: ask an operator for a new one")]
    ExpiredCredential { path: String, expired: String },
    #[error("the hub at {address} and this credential are not of one cluster, or the credential was refused: {reason}")]
    NotTrusted { address: String, reason: String },
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
    /// 9 limit exceeded, 10 data loss, 11 not allowed (no credential, a
    /// credential that is expired, of another cluster, or without the role).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NoCredential { .. }
            | ClientError::Credential(_)
            | ClientError::ExpiredCredential { .. }
            | ClientError::NotTrusted { .. } => 11,
            ClientError::Address { .. } | ClientError::Usage(_) => 2,
            ClientError::ReadFile { .. } | ClientError::Manifest { .. } => 4,
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
                ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => 11,
                ErrorCode::Internal => 1,
            },
        }
    }
}

/// Whether `status` is the connection failing under a request (the hub
/// went away, or the two ends do not speak the same protocol), not an
/// answer of the hub: such a status carries the transport error as its
/// source, an answer never does.
pub fn connection_broke(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Internal
        )
}

/// Whether a hub that broke a plaintext connection refuses plaintext (it
/// speaks TLS), asked again: a hub that answers now, or that cannot be
/// reached at all, merely went away under the first request. Asked twice,
/// a moment apart, both times refusing: a hub killed a moment ago may
/// still hold its listening socket while its process is torn down, and
/// close the connection without a word, as a TLS hub does.
pub async fn refuses_plaintext(target: &HubTarget) -> bool {
    if !refuses_plaintext_now(target).await {
        return false;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    refuses_plaintext_now(target).await
}

async fn refuses_plaintext_now(target: &HubTarget) -> bool {
    let asked = async {
        let mut hub = connect(target).await?;
        hub.get_hub_info(ferry_proto::v1::GetHubInfoRequest::default()).await?;
        Ok::<(), ClientError>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), asked).await {
        // Refused or reset before any answer: nobody listens there now.
        Ok(Err(ClientError::Hub(status))) if connection_broke(&status) => {
            let reason = crate::connector::innermost_reason(&status).to_lowercase();
            !(reason.contains("refused") || reason.contains("reset"))
        }
        _ => false,
    }
}

/// Connects to the hub `target` names: a malformed address is reported
/// first, then a missing or unusable credential, then an unreachable hub.
pub async fn connect(target: &HubTarget) -> Result<HubClient<Channel>, ClientError> {
    if let Err(ConnectError::BadAddress { address, reason }) =
        PeerConnector::new().endpoint(&target.address, Purpose::Control)
    {
        return Err(ClientError::Address { address, reason });
    }
    let connector = match target.insecure {
        true => PeerConnector::new(),
        false => PeerConnector::with_tls(client_tls(target.credentials.as_deref())?),
    };
    let channel = connector
        .connect(&target.address, Purpose::Control)
        .await
        .map_err(|error| match error {
            ConnectError::BadAddress { address, reason } => ClientError::Address { address, reason },
            ConnectError::Unreachable { address, reason } if is_trust_failure(&reason) => {
                ClientError::NotTrusted { address, reason }
            }
            ConnectError::Unreachable { address, reason } => ClientError::Unreachable { address, reason },
            ConnectError::Tls { address, reason } => ClientError::NotTrusted { address, reason },
            // The CLI's connector holds no revocation list.
            revoked @ ConnectError::Revoked { .. } => ClientError::NotTrusted {
                address: target.address.clone(),
                reason: revoked.to_string(),
            },
        })?;
    Ok(hub_client(channel))
}

/// Whether a failed handshake was about certificates (this side refusing
/// the hub's, or the hub refusing ours), not about reaching the hub.
fn is_trust_failure(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    ["certificate", "alert", "unknownissuer", "tls handshake"]
        .iter()
        .any(|word| reason.contains(word))
}
