//! The hub ids that joined through this signer (`tls/members.json`, mode
//! 0600): a token lets a new hub in, never lets it take the id — and with
//! it the certificate — of a hub already in the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::TrustError;
use super::credential::{read_json_or_default, write_private};

const FILE: &str = "members.json";

/// Hub ids this signer gave a certificate to at join, with when (Unix
/// seconds); its own id counts as taken too.
#[derive(Debug)]
pub struct Members {
    path: PathBuf,
    own_id: String,
    joined: Mutex<BTreeMap<String, i64>>,
}

/// A join for an id that is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hub id {0} is already a member of this cluster; a new hub joins with an id of its own (a new data directory)")]
pub struct AlreadyMember(pub String);

impl Members {
    /// The members kept in `dir` (none yet if the file does not exist).
    pub fn open(dir: &Path, own_id: &str) -> Result<Members, TrustError> {
        let path = dir.join(FILE);
        let joined = read_json_or_default(&path)?;
        Ok(Members {
            path,
            own_id: own_id.to_owned(),
            joined: Mutex::new(joined),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.joined.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn save(&self, joined: &BTreeMap<String, i64>) -> Result<(), TrustError> {
        write_private(&self.path, &serde_json::to_vec_pretty(joined).expect("ids serialize"))
    }

    /// Takes `hub_id` for a joining hub, durably, unless it is taken.
    pub fn admit(&self, hub_id: &str) -> Result<Result<(), AlreadyMember>, TrustError> {
        let mut joined = self.lock();
        if hub_id == self.own_id || joined.contains_key(hub_id) {
            return Ok(Err(AlreadyMember(hub_id.to_owned())));
        }
        joined.insert(hub_id.to_owned(), time::OffsetDateTime::now_utc().unix_timestamp());
        self.save(&joined)?;
        Ok(Ok(()))
    }

    /// Gives `hub_id` back (its join failed after it was admitted).
    pub fn release(&self, hub_id: &str) {
        let mut joined = self.lock();
        if joined.remove(hub_id).is_some()
            && let Err(error) = self.save(&joined)
        {
            tracing::warn!(%error, %hub_id, "cannot keep the member list on disk");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_admitted_once_and_the_signers_own_never() {
        let dir = tempfile::tempdir().unwrap();
        let members = Members::open(dir.path(), "hub-000000000000000a").unwrap();
        assert_eq!(members.admit("hub-000000000000000b").unwrap(), Ok(()));
        let taken = members.admit("hub-000000000000000b").unwrap().unwrap_err();
        assert!(taken.to_string().contains("already a member"), "{taken}");
        assert!(members.admit("hub-000000000000000a").unwrap().is_err());
        // Kept across a restart; a released id is free again.
        let reopened = Members::open(dir.path(), "hub-000000000000000a").unwrap();
        assert!(reopened.admit("hub-000000000000000b").unwrap().is_err());
        reopened.release("hub-000000000000000b");
        let again = Members::open(dir.path(), "hub-000000000000000a").unwrap();
        assert_eq!(again.admit("hub-000000000000000b").unwrap(), Ok(()));
    }
}
