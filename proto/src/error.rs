//! The one mapping from Ferry's error kinds to gRPC status codes.

use std::error::Error;
use std::fmt::Write as _;

/// What kind of failure an error is, independent of transport. Every typed
/// error a service can return names one of these; [`ErrorCode::grpc_code`] is
/// the only place where they become gRPC codes, and
/// [`ErrorCode::from_grpc_code`] the only place where a client turns a status
/// back into a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request itself is wrong (malformed module, bad name, bad size).
    InvalidArgument,
    /// The named thing does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The system is not in a state that allows the request (function not running).
    FailedPrecondition,
    /// A limit was hit (memory, queue, storage).
    ResourceExhausted,
    /// The operation did not finish in time.
    DeadlineExceeded,
    /// The service or a peer cannot be reached right now; retrying may help.
    Unavailable,
    /// Stored or received data does not verify (corrupt checkpoint, bad hash).
    DataLoss,
    /// The operation was aborted by a concurrent one or by a fence.
    Aborted,
    /// The caller did not prove who it is (no credential, or one of
    /// another cluster).
    Unauthenticated,
    /// The caller's role does not allow the request.
    PermissionDenied,
    /// A bug or an unexpected environment failure.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this kind.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DataLoss => tonic::Code::DataLoss,
            ErrorCode::Aborted => tonic::Code::Aborted,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status for this kind, for the HTTP API: the mapping Google's
    /// API design guide gives between gRPC codes and HTTP.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists | ErrorCode::Aborted => 409,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::DataLoss | ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::DeadlineExceeded => 504,
        }
    }

    /// The kind a client should assume for a status it received.
    pub fn from_grpc_code(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::DeadlineExceeded,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            tonic::Code::DataLoss => ErrorCode::DataLoss,
            tonic::Code::Aborted => ErrorCode::Aborted,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            _ => ErrorCode::Internal,
        }
    }
}

/// An error a Ferry service can return to a client.
pub trait ServiceError: Error {
    /// The kind of failure, which decides the gRPC status code.
    fn error_code(&self) -> ErrorCode;

    /// The status to send: the kind's code and the whole cause chain as text.
    fn to_status(&self) -> tonic::Status
    where
        Self: Sized,
    {
        tonic::Status::new(self.error_code().grpc_code(), error_chain(self))
    }
}

/// `error: cause: cause`, the way a user should read an error in one line.
pub fn error_chain(error: &(dyn Error + '_)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::ResourceExhausted,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unavailable,
        ErrorCode::DataLoss,
        ErrorCode::Aborted,
        ErrorCode::Internal,
    ];

    #[test]
    fn every_error_code_survives_a_round_trip_through_grpc() {
        for code in ALL {
            assert_eq!(ErrorCode::from_grpc_code(code.grpc_code()), code);
        }
    }

    #[test]
    fn every_error_code_has_the_http_status_of_its_grpc_code() {
        let expected = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::AlreadyExists, 409),
            (ErrorCode::FailedPrecondition, 400),
            (ErrorCode::ResourceExhausted, 429),
            (ErrorCode::DeadlineExceeded, 504),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::DataLoss, 500),
            (ErrorCode::Aborted, 409),
            (ErrorCode::Internal, 500),
        ];
        assert_eq!(expected.len(), ALL.len());
        for (code, status) in expected {
            assert_eq!(code.http_status(), status, "{code:?}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner reason")]
    struct Inner;

    impl ServiceError for Outer {
        fn error_code(&self) -> ErrorCode {
            ErrorCode::DataLoss
        }
    }

    #[test]
    fn status_carries_code_and_whole_cause_chain() {
        let status = Outer(Inner).to_status();
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert_eq!(status.message(), "outer failed: inner reason");
    }
}
