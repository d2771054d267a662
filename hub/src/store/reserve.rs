//! Room kept on the data disk for the hub itself. Edge devices fill their
//! SD cards; a hub whose disk is full must still start, keep its functions
//! and say why it is degraded. The reserve is a file of [`RESERVE_BYTES`]
//! set aside in the data directory while the disk has room; when the disk
//! is full at start, the hub gives it up so its database can open, runs
//! degraded, and sets it aside again once the disk has room. (The reserve
//! is kept while the hub runs: a program that fills the disk would take it
//! too, and the hub could not start again. The hub's own bulk writes —
//! chunks, modules, artifacts, volume files — are refused before they
//! would leave less than 8 MiB free: `ferry_migrator::checkpoint::room`.)

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use ferry_migrator::checkpoint::room::KEEP_FREE_BYTES;
pub use ferry_migrator::checkpoint::room::available_bytes;

use super::Store;

/// Size of the reserve: room for the database to open, recover and record
/// what changes while the user frees space.
pub const RESERVE_BYTES: u64 = 16 << 20;
/// Below this much free space the disk counts as full: something other
/// than the hub's bulk writes ate into the room they leave.
pub const FULL_BELOW_BYTES: u64 = 4 << 20;
/// Below this much free space the disk counts as nearly full: bulk writes
/// (which leave `KEEP_FREE_BYTES`) are being refused, or soon will be.
pub const NEARLY_FULL_BELOW_BYTES: u64 = 2 * KEEP_FREE_BYTES;
const RESERVE_FILE: &str = "reserve";

/// The reserve file and why the hub is degraded, if it is.
#[derive(Debug)]
pub struct DiskReserve {
    data_dir: PathBuf,
    degraded: Mutex<Option<String>>,
    /// This process saw the disk full: its database may hold on to a write
    /// error (sled keeps the first one it meets until it is reopened).
    was_full: AtomicBool,
    /// The database, asked once the disk has room again whether it still
    /// holds a write error.
    database: OnceLock<Store>,
}

impl DiskReserve {
    pub fn new(data_dir: &Path) -> DiskReserve {
        DiskReserve {
            data_dir: data_dir.to_owned(),
            degraded: Mutex::new(None),
            was_full: AtomicBool::new(false),
            database: OnceLock::new(),
        }
    }

    /// The database to ask, once the disk has room again after it was full,
    /// whether it still writes.
    pub fn watch_database(&self, store: Store) {
        let _ = self.database.set(store);
    }

    /// Whether the database writes (a flush); `true` when none is watched.
    fn database_writes(&self) -> bool {
        self.database.get().is_none_or(|store| store.flush().is_ok())
    }

    fn path(&self) -> PathBuf {
        self.data_dir.join(RESERVE_FILE)
    }

    /// Whether the reserve is set aside.
    pub fn is_set_aside(&self) -> bool {
        std::fs::metadata(self.path()).is_ok_and(|metadata| metadata.len() == RESERVE_BYTES)
    }

    /// Sets the reserve aside (real blocks, not a sparse file). A partial
    /// file is removed again on failure.
    pub fn set_aside(&self) -> io::Result<()> {
        if self.is_set_aside() {
            return Ok(());
        }
        let path = self.path();
        let written = (|| {
            let mut file = File::create(&path)?;
            let block = vec![0u8; 1 << 20];
            for _ in 0..RESERVE_BYTES / block.len() as u64 {
                file.write_all(&block)?;
            }
            file.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        written
    }

    /// Gives the reserve up; whether there was one.
    pub fn release(&self) -> bool {
        std::fs::remove_file(self.path()).is_ok()
    }

    /// Free bytes on the data disk for an unprivileged writer.
    pub fn available_bytes(&self) -> io::Result<u64> {
        available_bytes(&self.data_dir)
    }

    /// Why the hub is degraded (`None`: it is not).
    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set_degraded(&self, reason: Option<String>) {
        *self.degraded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = reason;
    }

    /// Before the database opens: gives the reserve up if the disk is full
    /// (the database needs room to open), and says so. Returns whether the
    /// reserve was given up.
    pub fn make_room_to_start(&self) -> bool {
        let full = self
            .available_bytes()
            .is_ok_and(|available| available < FULL_BELOW_BYTES);
        if !full || !self.release() {
            return false;
        }
        self.was_full.store(true, Ordering::SeqCst);
        let reason = format!(
            "the data disk was full at start: the hub gave up its {} MiB reserve to open its database; remove functions or free space on the disk",
            RESERVE_BYTES >> 20
        );
        tracing::warn!(data_dir = %self.data_dir.display(), %reason, "starting degraded");
        self.set_degraded(Some(reason));
        true
    }

    /// Sets the reserve aside once the disk has room for it and a margin,
    /// and says whether the hub is degraded: while the disk is full, while
    /// the reserve is not set aside, and — once this process saw the disk
    /// full — until the hub restarts, because its database keeps the write
    /// error it met (sled reports it until it is reopened).
    pub fn recheck(&self) {
        let available = self.available_bytes().unwrap_or(u64::MAX);
        if !self.is_set_aside() && available >= 2 * RESERVE_BYTES && self.set_aside().is_ok() {
            tracing::info!(reserve_mib = RESERVE_BYTES >> 20, "disk reserve set aside");
        }
        let available = self.available_bytes().unwrap_or(u64::MAX);
        let reason = if available < FULL_BELOW_BYTES {
            self.was_full.store(true, Ordering::SeqCst);
            Some(format!(
                "the data disk is full ({available} bytes free): checkpoints, deploys and output fail until space is freed"
            ))
        } else if available < NEARLY_FULL_BELOW_BYTES {
            Some(format!(
                "the data disk is nearly full ({available} bytes free): checkpoints, deploys, moves to this hub and volume writes that would leave less than {} MiB free are refused until space is freed",
                KEEP_FREE_BYTES >> 20
            ))
        } else if !self.is_set_aside() {
            Some(format!(
                "the data disk has no room for the hub's {} MiB reserve ({available} bytes free): free space on it",
                RESERVE_BYTES >> 20
            ))
        } else if self.was_full.load(Ordering::SeqCst) && self.database_writes() {
            self.was_full.store(false, Ordering::SeqCst);
            None
        } else if self.was_full.load(Ordering::SeqCst) {
            Some(
                "the data disk has room again: restart the hub so its database writes again (it keeps the error it met while the disk was full)"
                    .to_owned(),
            )
        } else {
            None
        };
        // Said when the kind of trouble changes, not each time the free
        // bytes it names do.
        match (&reason, self.degraded()) {
            (Some(reason), previous) if previous.as_deref().map(without_figures) != Some(without_figures(reason)) => {
                tracing::warn!(%reason, "degraded")
            }
            (None, Some(_)) => tracing::info!("the data disk has room again; no longer degraded"),
            _ => {}
        }
        self.set_degraded(reason);
    }
}

/// A reason without its digits: two reasons of one kind compare equal.
fn without_figures(reason: &str) -> String {
    reason.chars().filter(|letter| !letter.is_ascii_digit()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_set_aside_once_and_given_up_on_request() {
        let directory = tempfile::tempdir().unwrap();
        let reserve = DiskReserve::new(directory.path());
        assert!(!reserve.is_set_aside());
        reserve.set_aside().unwrap();
        assert!(reserve.is_set_aside());
        assert_eq!(
            std::fs::metadata(directory.path().join(RESERVE_FILE)).unwrap().len(),
            RESERVE_BYTES
        );
        reserve.set_aside().unwrap();
        assert!(reserve.release());
        assert!(!reserve.release());
    }

    #[test]
    fn a_disk_with_room_is_not_degraded_after_a_recheck() {
        let directory = tempfile::tempdir().unwrap();
        let reserve = DiskReserve::new(directory.path());
        reserve.set_degraded(Some("earlier".to_owned()));
        assert!(!reserve.make_room_to_start(), "this disk is not full");
        reserve.recheck();
        assert_eq!(reserve.degraded(), None);
        // Once full in this process, room again means: no longer degraded
        // if the database still writes (restart it if it does not).
        let store = Store::open(&directory.path().join("db")).unwrap();
        reserve.watch_database(store);
        reserve.was_full.store(true, Ordering::SeqCst);
        reserve.recheck();
        assert_eq!(reserve.degraded(), None);
        assert!(!reserve.was_full.load(Ordering::SeqCst));
        assert!(reserve.is_set_aside());
    }

    #[test]
    fn free_space_is_measured() {
        let directory = tempfile::tempdir().unwrap();
        assert!(available_bytes(directory.path()).unwrap() > 0);
    }
}
