//! Cluster trust: the cluster's certificate authority, the certificates
//! that name a hub or a client and its role, credential files, the TLS
//! configurations built from them, and the check of each call against the
//! caller's role.
//!
//! Everything a hub or the CLI says about who someone is comes from a
//! certificate that chains to the cluster CA: the role and the hub id are
//! written into the certificate when it is issued ([`names`]), and read back
//! from the certificate the TLS handshake verified. Nothing here does I/O
//! beyond reading and writing the files it owns.

pub mod access;
pub mod authority;
pub mod credential;
pub mod join;
pub mod members;
pub mod names;
pub mod renewal;
pub mod revocation;
pub mod setup;
pub mod tls;
pub mod tokens;

use std::path::PathBuf;

use thiserror::Error;

pub use access::{AccessLayer, required_role};
pub use authority::ClusterAuthority;
pub use credential::Credential;
pub use names::{CertifiedIdentity, Role};
pub use setup::HubTrust;
pub use tls::ClientTls;

/// Why trust material could not be made, read or used.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a credential file: {reason}")]
    BadCredential { path: PathBuf, reason: String },
    #[error("{path} is readable by other users (mode {mode:o}): the cluster CA key must be mode 0600")]
    LooseKeyPermissions { path: PathBuf, mode: u32 },
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("bad certificate: {0}")]
    Parse(String),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("this hub cannot sign certificates: it does not hold the cluster CA key")]
    NotAnAuthority,
}
