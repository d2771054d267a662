//! Moving a running function to another hub, as two pure state machines: a
//! [`Sender`] on the source and a [`Receiver`] on the destination. They
//! decide what to send, check what arrives (order, hashes, completeness) and
//! say who owns the function when something fails; they never touch a
//! socket, a store or an instance. The hub drives them over a gRPC stream
//! (`ferry.v1.Migration/Transfer`, frames in `transfer.proto`).
//!
//! # The handoff
//!
//! 1. `Offer` (spec, epoch, chunk size) → `Accept` (does it lack the
//!    module?) or `Refuse`.
//! 2. Pre-copy rounds while the function keeps running: each `Round` lists
//!    the chunk slots whose content changed since the previous round (the
//!    first: every non-zero slot) and the chunks of the volume's files not
//!    offered before (by hash and length); the destination answers `Need`
//!    with the distinct hashes it holds nowhere; the source sends those
//!    chunks. The last round thus leaves the destination with every chunk
//!    the sealed manifest's volume names. From the second round on, to a
//!    destination that said in `Accept` it takes them, a memory chunk the
//!    function wrote in a few pages may go as those pages over the version
//!    the previous round left in its slot ([`PageDelta`]).
//! 3. When a round was small enough, did not shrink (the function writes
//!    memory as fast as rounds send it), or after [`RoundPolicy::max_rounds`],
//!    the function is paused and the last round sent, then the log history
//!    and `Seal` (the complete manifest). The destination checks the manifest
//!    against the rounds, persists, answers `Prepared`.
//! 4. The source durably records the move under epoch + 1, then `Commit`;
//!    the destination starts the function and answers `Started`.
//!
//! # Who owns the function
//!
//! Until the source has recorded the move, the source does: any failure
//! ([`Sender::owner_after_failure`] is [`Owner::Source`]) makes it send
//! `Abort` if it can and continue the function itself. After that the
//! destination does, even if `Commit` never arrives: a destination whose
//! stream ended while prepared ([`Receiver::after_stream_end`] is
//! [`Disposition::Resolve`]) asks the source how the handoff ended and
//! starts the function only on "committed". A destination that lost the
//! stream before it was prepared discards what it received.

mod page_delta;
mod receiver;
mod sender;
mod stall;
#[cfg(test)]
mod tests;

pub use page_delta::{PageDelta, worth_sending as page_delta_worth_sending};
pub use receiver::{Disposition, Receiver, ReceiverStep, RoundPlan};
pub use sender::{ChunkAt, Heard, NextStep, Owner, PlannedRound, Sender, SenderStats, refusal_in};
pub use stall::StallLimit;

use ferry_proto::{ErrorCode, ServiceError};
use thiserror::Error;

use crate::checkpoint::ChunkHash;

/// When pre-copy stops and the function is paused for the last round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundPolicy {
    /// Pre-copy rounds at most (the paused last round comes after them).
    pub max_rounds: u32,
    /// A round that changed at most this many bytes is the last pre-copy round.
    pub small_round_bytes: u64,
    /// A round must change less than this share (in %) of the bytes the round
    /// before changed, or pre-copy stops: it is not converging.
    pub shrink_percent: u32,
    /// When a round did not shrink, the function is slowed down to these
    /// shares (in %) of the CPU it used, one step per round that still
    /// does not shrink, each with one more pre-copy round, before pre-copy
    /// stops (`NextStep::SlowDown`): a function writing memory faster than
    /// rounds send it then writes less of it while they do.
    pub slow_down_percent: &'static [u32],
}

impl Default for RoundPolicy {
    fn default() -> Self {
        RoundPolicy {
            max_rounds: 6,
            small_round_bytes: 512 * 1024,
            shrink_percent: 80,
            slow_down_percent: &[50, 20, 5],
        }
    }
}

/// Why a transfer cannot go on. The hub maps it to a gRPC status.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// The other hub refused, with its reason.
    #[error("{hub} refused: {reason}")]
    Refused {
        hub: &'static str,
        code: ErrorCode,
        reason: String,
    },
    /// A frame that is not allowed at this point, or malformed.
    #[error("protocol violation: {reason}")]
    Protocol { reason: String },
    /// A chunk whose content does not match its hash.
    #[error("chunk {hash} does not match its hash: {reason}")]
    ChunkMismatch { hash: ChunkHash, reason: String },
    /// The stream ended (or stalled) before the transfer was complete: the
    /// link failed, and another attempt over a fresh connection may not.
    #[error("the transfer stream ended early: {reason}")]
    Truncated { reason: String },
    /// This hub could not go on (the function could not be captured, a
    /// store could not be read or written): another attempt would meet the
    /// same.
    #[error("{reason}")]
    Local { reason: String },
    /// The offer names something this hub cannot take.
    #[error("{reason}")]
    Unacceptable { code: ErrorCode, reason: String },
}

impl TransferError {
    fn protocol(reason: impl Into<String>) -> TransferError {
        TransferError::Protocol { reason: reason.into() }
    }
}

impl ServiceError for TransferError {
    fn error_code(&self) -> ErrorCode {
        match self {
            TransferError::Refused { code, .. } | TransferError::Unacceptable { code, .. } => *code,
            TransferError::Protocol { .. } => ErrorCode::InvalidArgument,
            TransferError::ChunkMismatch { .. } => ErrorCode::DataLoss,
            TransferError::Truncated { .. } => ErrorCode::Unavailable,
            TransferError::Local { .. } => ErrorCode::Aborted,
        }
    }
}

/// The error code a `Refuse` frame carries, by name.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "InvalidArgument",
        ErrorCode::NotFound => "NotFound",
        ErrorCode::AlreadyExists => "AlreadyExists",
        ErrorCode::FailedPrecondition => "FailedPrecondition",
        ErrorCode::ResourceExhausted => "ResourceExhausted",
        ErrorCode::DeadlineExceeded => "DeadlineExceeded",
        ErrorCode::Unavailable => "Unavailable",
        ErrorCode::DataLoss => "DataLoss",
        ErrorCode::Aborted => "Aborted",
        ErrorCode::Unauthenticated => "Unauthenticated",
        ErrorCode::PermissionDenied => "PermissionDenied",
        ErrorCode::Internal => "Internal",
    }
}

/// The inverse of [`code_name`]; unknown names are `Internal`.
pub fn code_from_name(name: &str) -> ErrorCode {
    [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::ResourceExhausted,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unavailable,
        ErrorCode::DataLoss,
        ErrorCode::Aborted,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ]
    .into_iter()
    .find(|code| code_name(*code) == name)
    .unwrap_or(ErrorCode::Internal)
}

/// A manifest entry (empty or 32 bytes) as a hash, or a protocol error.
fn entry_hash(entry: &[u8]) -> Result<Option<ChunkHash>, TransferError> {
    ChunkHash::from_manifest_entry(entry)
        .map_err(|len| TransferError::protocol(format!("a chunk hash of {len} bytes (must be 0 or 32)")))
}
