//! Why a checkpoint could not be written, read or verified.

use ferry_proto::{ErrorCode, ServiceError};
use thiserror::Error;

use super::ChunkHash;

/// Failures of the checkpoint codec and store.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Stored or received data does not verify (checksum, hash, structure).
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    /// A manifest names a chunk the store does not hold.
    #[error("chunk {hash} is missing from the checkpoint store")]
    ChunkMissing { hash: ChunkHash },
    /// A manifest written in another format version.
    #[error("checkpoint format version {found} is not supported (this hub reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// A checkpoint captured under another instrumentation version: its
    /// saved stack and globals belong to another rewrite of the module.
    #[error(
        "the checkpoint was captured under instrumentation version {found} and this hub restores version {supported} only; \
         its saved stack would not fit this hub's rewrite of the module (run the function on a hub of the version that captured it)"
    )]
    OtherInstrumentation { found: u32, supported: u32 },
    /// What the caller asked to store is not a valid checkpoint.
    #[error("invalid checkpoint: {reason}")]
    InvalidCheckpoint { reason: String },
    /// The fingerprints passed as the base of an incremental checkpoint were
    /// not computed for the base manifest passed with them.
    #[error("incremental checkpoint base does not match its fingerprints: {reason}")]
    BaseMismatch { reason: String },
    /// A checkpoint with this function and sequence is stored already, with
    /// other content.
    #[error("checkpoint {sequence} of function {function} exists already")]
    AlreadyExists { function: String, sequence: u64 },
    /// The database failed.
    #[error("checkpoint store i/o failed")]
    Sled(#[from] sled::Error),
    /// A pack file of chunk bodies could not be written or read.
    #[error("checkpoint pack file {path} i/o failed")]
    Pack {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The disk has no room for what was to be written (nothing was).
    #[error(transparent)]
    NoRoom(#[from] super::room::NoRoom),
    /// zstd could not set up a (de)compression context.
    #[error("chunk compression failed")]
    Compression(#[source] std::io::Error),
}

impl CheckpointError {
    /// Shorthand for [`CheckpointError::Corrupt`].
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl ServiceError for CheckpointError {
    fn error_code(&self) -> ErrorCode {
        match self {
            CheckpointError::Corrupt { .. } | CheckpointError::ChunkMissing { .. } => ErrorCode::DataLoss,
            CheckpointError::UnsupportedVersion { .. } | CheckpointError::OtherInstrumentation { .. } => {
                ErrorCode::FailedPrecondition
            }
            CheckpointError::InvalidCheckpoint { .. } | CheckpointError::BaseMismatch { .. } => {
                ErrorCode::InvalidArgument
            }
            CheckpointError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            CheckpointError::NoRoom(_) => ErrorCode::ResourceExhausted,
            CheckpointError::Sled(_) | CheckpointError::Pack { .. } | CheckpointError::Compression(_) => {
                ErrorCode::Internal
            }
        }
    }
}
