//! The hubs removed from the cluster (`ferry cluster rm`).
//!
//! The list is made and signed by a hub that holds the CA key, and spread
//! by probing: every probe answer carries the newest list its hub holds,
//! and the prober adopts it if the CA's signature verifies and its sequence
//! is higher. A member checks the list on every TLS handshake (a removed
//! hub's certificate is refused as revoked), on every call (a connection
//! made before the removal), and before it connects to a peer.
//!
//! Removal is by hub id, not by certificate serial: it covers every
//! certificate the hub ever got, and a signer refuses to renew it or to let
//! it join again under the same id.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ferry_proto::internal::v1::RevocationList;
use prost::Message;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TrustError;
use super::authority::ClusterAuthority;
use super::credential::write_private;

const FILE: &str = "revocations.bin";

/// A revocation list and the CA's signature over its encoding, as probe
/// answers carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedList {
    pub list: Vec<u8>,
    pub signature: Vec<u8>,
}

impl SignedList {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The file form: the two parts, each after its length (u32 LE).
    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.list.len() + self.signature.len());
        for part in [&self.list, &self.signature] {
            bytes.extend_from_slice(&(part.len() as u32).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        bytes
    }

    fn from_bytes(mut bytes: &[u8]) -> Option<SignedList> {
        let mut part = || {
            let length = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let value = bytes.get(4..4 + length)?.to_vec();
            bytes = &bytes[4 + length..];
            Some(value)
        };
        let list = part()?;
        let signature = part()?;
        Some(SignedList { list, signature })
    }
}

/// Why a revocation list was not adopted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RevocationError {
    #[error("the revocation list is not signed by this cluster's CA")]
    BadSignature,
    #[error("the revocation list cannot be decoded: {0}")]
    Malformed(String),
}

/// The public key of the CA certificate `ca_der` (an uncompressed P-256
/// point: the CA is made with rcgen's default ECDSA P-256 key).
fn ca_public_key(ca_der: &[u8]) -> Result<Vec<u8>, TrustError> {
    let (_, certificate) =
        X509Certificate::from_der(ca_der).map_err(|error| TrustError::Parse(format!("the CA certificate: {error}")))?;
    Ok(certificate.public_key().subject_public_key.data.to_vec())
}

/// Checks `signed` against the CA's public key and decodes it.
pub fn verify(ca_public_key: &[u8], signed: &SignedList) -> Result<RevocationList, RevocationError> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ca_public_key)
        .verify(&signed.list, &signed.signature)
        .map_err(|_| RevocationError::BadSignature)?;
    RevocationList::decode(signed.list.as_slice()).map_err(|error| RevocationError::Malformed(error.to_string()))
}

/// The list held now.
#[derive(Debug, Default)]
struct Held {
    sequence: u64,
    hubs: BTreeSet<String>,
    signed: SignedList,
}

/// A hub's copy of the revocation list: shared by the TLS verifier, the
/// access layer, the connector and the prober; kept in `tls/revocations.bin`.
#[derive(Debug)]
pub struct Revocations {
    ca_public_key: Vec<u8>,
    path: Option<PathBuf>,
    held: RwLock<Held>,
}

impl Revocations {
    /// The list kept in `tls_dir`, checked against the CA `ca_der`; none
    /// yet: an empty list. A file that does not verify is set aside (and
    /// the list is learned again from peers).
    pub fn open(tls_dir: &Path, ca_der: &[u8]) -> Result<Revocations, TrustError> {
        let revocations = Revocations {
            ca_public_key: ca_public_key(ca_der)?,
            path: Some(tls_dir.join(FILE)),
            held: RwLock::default(),
        };
        let path = tls_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let adopted = SignedList::from_bytes(&bytes)
                    .ok_or_else(|| RevocationError::Malformed("truncated".to_owned()))
                    .and_then(|signed| revocations.adopt(&signed));
                if let Err(error) = adopted {
                    tracing::warn!(path = %path.display(), %error, "set aside a revocation list that does not verify");
                    let _ = std::fs::rename(&path, path.with_extension("bin.bad"));
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrustError::Read { path, source }),
        }
        Ok(revocations)
    }

    /// An empty list kept in memory only (tests).
    pub fn in_memory(ca_der: &[u8]) -> Result<Revocations, TrustError> {
        Ok(Revocations {
            ca_public_key: ca_public_key(ca_der)?,
            path: None,
            held: RwLock::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_revoked(&self, hub_id: &str) -> bool {
        self.read().hubs.contains(hub_id)
    }

    pub fn sequence(&self) -> u64 {
        self.read().sequence
    }

    /// The list as probe answers carry it (empty: no hub was ever removed).
    pub fn signed(&self) -> SignedList {
        self.read().signed.clone()
    }

    /// Takes `signed` if it verifies and is newer than the list held;
    /// returns whether it was taken. A list that does not verify changes
    /// nothing.
    pub fn adopt(&self, signed: &SignedList) -> Result<bool, RevocationError> {
        // Probe answers repeat the list every second: the one held already
        // is not verified again.
        if signed.is_empty() || self.read().signed == *signed {
            return Ok(false);
        }
        let list = verify(&self.ca_public_key, signed)?;
        let mut held = self.write();
        if list.sequence <= held.sequence {
            return Ok(false);
        }
        self.persist(signed);
        *held = Held {
            sequence: list.sequence,
            hubs: list.hub_ids.into_iter().collect(),
            signed: signed.clone(),
        };
        Ok(true)
    }

    /// Adds `hub_id` to the list and signs the new list (a hub holding the
    /// CA key). Returns the new sequence number.
    pub fn revoke(&self, authority: &ClusterAuthority, hub_id: &str) -> Result<u64, TrustError> {
        let mut held = self.write();
        let mut hubs = held.hubs.clone();
        hubs.insert(hub_id.to_owned());
        let list = RevocationList {
            sequence: held.sequence + 1,
            hub_ids: hubs.iter().cloned().collect(),
            issued_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let encoded = list.encode_to_vec();
        let signed = SignedList {
            signature: authority.sign(&encoded)?,
            list: encoded,
        };
        self.persist(&signed);
        *held = Held {
            sequence: list.sequence,
            hubs,
            signed,
        };
        Ok(list.sequence)
    }

    /// Writes the list; a failure is logged (the list in memory holds, and
    /// peers hand it back after a restart).
    fn persist(&self, signed: &SignedList) {
        let Some(path) = &self.path else { return };
        if let Err(error) = write_private(path, &signed.to_bytes()) {
            tracing::warn!(%error, "cannot keep the revocation list on disk");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (ClusterAuthority, Revocations) {
        let authority = ClusterAuthority::create("test").unwrap();
        let revocations = Revocations::in_memory(&authority.certificate_der().unwrap()).unwrap();
        (authority, revocations)
    }

    #[test]
    fn a_removed_hub_is_revoked_and_a_member_adopts_the_signed_list() {
        let (authority, founder) = cluster();
        assert_eq!(founder.revoke(&authority, "hub-00000000000000aa").unwrap(), 1);
        assert!(founder.is_revoked("hub-00000000000000aa"));
        assert!(!founder.is_revoked("hub-00000000000000bb"));

        let member = Revocations::in_memory(&authority.certificate_der().unwrap()).unwrap();
        assert_eq!(member.adopt(&founder.signed()), Ok(true));
        assert!(member.is_revoked("hub-00000000000000aa"));
        // The same list again, or an older one, changes nothing.
        assert_eq!(member.adopt(&founder.signed()), Ok(false));
        let older = founder.signed();
        founder.revoke(&authority, "hub-00000000000000bb").unwrap();
        assert_eq!(member.adopt(&founder.signed()), Ok(true));
        assert_eq!(member.adopt(&older), Ok(false));
        assert!(member.is_revoked("hub-00000000000000bb"));
        assert_eq!(member.sequence(), 2);
    }

    #[test]
    fn a_list_not_signed_by_the_cluster_ca_is_refused() {
        let (_, member) = cluster();
        let (stranger, strangers_list) = cluster();
        strangers_list.revoke(&stranger, "hub-00000000000000aa").unwrap();
        assert_eq!(
            member.adopt(&strangers_list.signed()),
            Err(RevocationError::BadSignature)
        );
        let mut tampered = strangers_list.signed();
        tampered.list.push(0);
        assert_eq!(strangers_list.adopt(&tampered), Err(RevocationError::BadSignature));
        assert!(!member.is_revoked("hub-00000000000000aa"));
    }

    #[test]
    fn the_list_is_kept_on_disk_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let authority = ClusterAuthority::create("test").unwrap();
        let ca = authority.certificate_der().unwrap();
        let revocations = Revocations::open(dir.path(), &ca).unwrap();
        revocations.revoke(&authority, "hub-00000000000000aa").unwrap();
        let again = Revocations::open(dir.path(), &ca).unwrap();
        assert!(again.is_revoked("hub-00000000000000aa"));

        let path = dir.path().join(FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let reopened = Revocations::open(dir.path(), &ca).unwrap();
        assert_eq!(reopened.sequence(), 0);
        assert!(dir.path().join("revocations.bin.bad").exists());
    }
}
