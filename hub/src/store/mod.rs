//! The hub's sled database: identity, modules, compiled artifacts, function
//! records, logs and accepted asynchronous invocations. One `sled::Db` per data directory; each kind of data has
//! its own tree so that a key of one kind can never be read as another.

mod artifacts;
mod blocking;
pub mod dir_lock;
mod functions;
mod invocations;
mod logs;
pub mod reserve;

use std::path::Path;
use std::sync::Arc;

use ferry_migrator::checkpoint::room::{DiskRoom, KEEP_FREE_BYTES, NoRoom};
use ferry_proto::{ErrorCode, ServiceError};
use thiserror::Error;

pub use artifacts::ArtifactKey;
pub(crate) use blocking::off_worker;
pub use logs::{LOG_BYTES_KEPT, LOG_ENTRIES_KEPT, LogPage, LogsAppended};

/// Failures of the hub store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store i/o failed")]
    Sled(#[from] sled::Error),
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("module {hash} is not in the store")]
    ModuleMissing { hash: String },
    /// A big value refused before it was written (the database would keep
    /// the error of a write that found the disk full).
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
}

impl ServiceError for StoreError {
    fn error_code(&self) -> ErrorCode {
        match self {
            StoreError::Sled(_) => ErrorCode::Internal,
            StoreError::Corrupt { .. } => ErrorCode::DataLoss,
            StoreError::ModuleMissing { .. } => ErrorCode::NotFound,
            StoreError::NoRoom(_) => ErrorCode::ResourceExhausted,
        }
    }
}

/// Handle to the hub's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    modules: sled::Tree,
    artifacts: sled::Tree,
    functions: sled::Tree,
    logs: sled::Tree,
    invocations: sled::Tree,
    /// Room on the data disk, claimed before big values are written.
    room: Arc<DiskRoom>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(dir).flush_every_ms(Some(200)).open()?;
        Ok(Store {
            meta: db.open_tree("meta")?,
            modules: db.open_tree("modules")?,
            artifacts: db.open_tree("artifacts")?,
            functions: db.open_tree("functions")?,
            logs: db.open_tree("logs")?,
            invocations: db.open_tree("invocations")?,
            room: DiskRoom::shared(dir, KEEP_FREE_BYTES),
            db,
        })
    }

    /// Claims room on the data disk for a value of `bytes` about to be
    /// written: sled writes it to its log, then again as it compacts.
    fn claim_room(&self, bytes: usize) -> Result<(), StoreError> {
        Ok(self.room.claim(2 * bytes as u64)?)
    }

    /// A metadata value (hub id, hub name, ...).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        off_worker(|| match self.meta.get(key)? {
            None => Ok(None),
            Some(value) => String::from_utf8(value.to_vec())
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    what: format!("metadata {key}"),
                    reason: "not UTF-8".to_owned(),
                }),
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        off_worker(|| {
            self.meta.insert(key, value.as_bytes())?;
            Ok(())
        })
    }

    /// Stores a module under its BLAKE3 hash (hex) and returns the hash.
    pub fn put_module(&self, bytes: &[u8]) -> Result<String, StoreError> {
        off_worker(|| {
            let hash = blake3::hash(bytes).to_hex().to_string();
            if !self.modules.contains_key(&hash)? {
                self.claim_room(bytes.len())?;
                self.modules.insert(&hash, bytes)?;
            }
            Ok(hash)
        })
    }

    /// A module by hash, verified against its hash.
    pub fn module(&self, hash: &str) -> Result<Vec<u8>, StoreError> {
        off_worker(|| {
            let bytes = self
                .modules
                .get(hash)?
                .ok_or_else(|| StoreError::ModuleMissing { hash: hash.to_owned() })?;
            let actual = blake3::hash(&bytes).to_hex();
            if actual.as_str() != hash {
                return Err(StoreError::Corrupt {
                    what: format!("module {hash}"),
                    reason: format!("its content hashes to {actual}"),
                });
            }
            Ok(bytes.to_vec())
        })
    }

    /// The underlying database, for stores that keep their own trees in it
    /// (the checkpoint store).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        off_worker(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    /// Forces everything written so far to disk, on a blocking thread of
    /// the async runtime. Not sled's `flush_async`: that runs each flush on
    /// sled's own small thread pool, which also writes the buffers a flush
    /// waits for, so eight flushes at once (eight asynchronous invocations
    /// accepted together) took every pool thread and the store hung.
    pub async fn flush_off_runtime(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|error| StoreError::Sled(sled::Error::ReportableBug(format!("the flush task failed: {error}"))))?
    }
}

#[cfg(test)]
mod tests;
