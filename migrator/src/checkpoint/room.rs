//! Room on the disk that holds a hub's data. The hub's database keeps the
//! first write error it meets until it is reopened (sled), so a disk that
//! fills up under it costs a restart and every write meanwhile. Bulk
//! writers (checkpoint packs, modules, compiled artifacts, volume files)
//! therefore ask [`DiskRoom::claim`] first: a write that would leave less
//! than [`KEEP_FREE_BYTES`] free is refused before it starts, with a
//! [`NoRoom`] that says how much is free and what was asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use thiserror::Error;

/// What bulk writes leave free on the data disk: room for the database's
/// own small writes (records, output) while the user frees space.
pub const KEEP_FREE_BYTES: u64 = 8 << 20;

/// The most bytes claimed without looking at the disk again: other writers
/// (the database, other programs) use it meanwhile.
const MOST_CREDIT_BYTES: u64 = 64 << 20;

/// A write refused because the disk has no room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "the data disk has no room: {} more would leave less than the {} the hub keeps free for its database ({} free); free space on the disk or remove functions",
    size(*needed),
    size(*keep_free),
    size(*available)
)]
pub struct NoRoom {
    pub needed: u64,
    pub available: u64,
    pub keep_free: u64,
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..0x10_0000 => format!("{} KiB", bytes.div_ceil(1024)),
        _ => format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20)),
    }
}

/// Free space on one disk as bulk writers claim it. Cheap: the disk is
/// looked at (a `statvfs`) once per [`MOST_CREDIT_BYTES`] claimed or
/// [`CREDIT_LIFETIME`], whichever comes first, and at every claim when it
/// is nearly full. (What others write meanwhile — other programs — is why
/// a credit does not last: one that outlived a look taken before another
/// program filled the disk let a checkpoint fill it.)
#[derive(Debug)]
pub struct DiskRoom {
    dir: PathBuf,
    keep_free: u64,
    /// Bytes that may still be claimed without looking again, and until when.
    credit: Mutex<(u64, Instant)>,
}

/// How long a look at the disk stands for claims within its credit.
const CREDIT_LIFETIME: Duration = Duration::from_millis(50);

/// The rooms of this process, one per file system and margin: every
/// writer to a disk claims from the same credit, so that several (the
/// store, the packs, each volume) never together write past the margin.
static SHARED: LazyLock<Mutex<HashMap<RoomKey, Weak<DiskRoom>>>> = LazyLock::new(Default::default);

/// A file system (its device number) and a margin.
type RoomKey = (u64, u64);

impl DiskRoom {
    /// Room on the disk holding `dir`, keeping `keep_free` bytes free.
    pub fn new(dir: &Path, keep_free: u64) -> DiskRoom {
        DiskRoom {
            dir: dir.to_owned(),
            keep_free,
            credit: Mutex::new((0, Instant::now())),
        }
    }

    /// The room of the file system holding `dir`, shared with every other
    /// writer of this process to it (a private one if `dir` cannot be
    /// looked at).
    pub fn shared(dir: &Path, keep_free: u64) -> Arc<DiskRoom> {
        let Ok(stat) = rustix::fs::stat(dir) else {
            return Arc::new(DiskRoom::new(dir, keep_free));
        };
        let mut rooms = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        rooms.retain(|_, room| room.strong_count() > 0);
        let key = (stat.st_dev, keep_free);
        if let Some(room) = rooms.get(&key).and_then(Weak::upgrade) {
            return room;
        }
        let room = Arc::new(DiskRoom::new(dir, keep_free));
        rooms.insert(key, Arc::downgrade(&room));
        room
    }

    /// Claims room for `bytes` about to be written, or says why there is
    /// none. A disk that cannot be looked at is not refused (the write
    /// itself will say what is wrong).
    pub fn claim(&self, bytes: u64) -> Result<(), NoRoom> {
        let mut credit = self.credit.lock().unwrap_or_else(PoisonError::into_inner);
        let (left, until) = *credit;
        if bytes <= left && Instant::now() < until {
            credit.0 = left - bytes;
            return Ok(());
        }
        let Ok(available) = available_bytes(&self.dir) else {
            return Ok(());
        };
        let over = available.saturating_sub(self.keep_free);
        if bytes > over {
            credit.0 = 0;
            return Err(self.no_room(bytes, available));
        }
        // Half of what is left: the other writers on the disk get the rest.
        *credit = (
            ((over - bytes) / 2).min(MOST_CREDIT_BYTES),
            Instant::now() + CREDIT_LIFETIME,
        );
        Ok(())
    }

    /// Whether fewer than `bytes` could be claimed now.
    pub fn is_short_of(&self, bytes: u64) -> bool {
        available_bytes(&self.dir).is_ok_and(|available| available < bytes.saturating_add(self.keep_free))
    }

    /// After a write failed for want of room anyway (someone else filled
    /// the disk): looks again at the next claim, and says how it stands.
    pub fn ran_out(&self, needed: u64) -> NoRoom {
        self.credit.lock().unwrap_or_else(PoisonError::into_inner).0 = 0;
        self.no_room(needed, available_bytes(&self.dir).unwrap_or(0))
    }

    fn no_room(&self, needed: u64, available: u64) -> NoRoom {
        NoRoom {
            needed,
            available,
            keep_free: self.keep_free,
        }
    }
}

/// Free bytes on the file system holding `path`, for an unprivileged writer.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Whether an i/o error means the disk is full.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || error.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_past_the_free_space_less_the_margin_is_refused_with_the_figures() {
        let directory = tempfile::tempdir().unwrap();
        let available = available_bytes(directory.path()).unwrap();
        let room = DiskRoom::new(directory.path(), available / 2);
        let refused = room.claim(available).unwrap_err();
        assert_eq!(refused.needed, available);
        assert_eq!(refused.keep_free, available / 2);
        assert!(refused.to_string().contains("free space on the disk"), "{refused}");
        room.claim(1 << 20).unwrap();
    }

    #[test]
    fn a_credit_does_not_outlive_its_look_at_the_disk() {
        let directory = tempfile::tempdir().unwrap();
        let room = DiskRoom::new(directory.path(), 0);
        room.claim(1).unwrap();
        room.credit.lock().unwrap().1 = Instant::now();
        // Expired, a claim looks again: with a margin over the whole disk,
        // refused (within its credit, it would have passed).
        let room = DiskRoom {
            keep_free: available_bytes(directory.path()).unwrap() + (1 << 30),
            ..room
        };
        assert!(room.claim(1).is_err());
    }

    #[test]
    fn writers_to_one_disk_share_one_room() {
        let directory = tempfile::tempdir().unwrap();
        let inside = directory.path().join("inside");
        std::fs::create_dir(&inside).unwrap();
        let first = DiskRoom::shared(directory.path(), 1 << 20);
        let second = DiskRoom::shared(&inside, 1 << 20);
        assert!(Arc::ptr_eq(&first, &second));
        let other_margin = DiskRoom::shared(&inside, 2 << 20);
        assert!(!Arc::ptr_eq(&first, &other_margin));
    }

    #[test]
    fn claims_within_the_credit_do_not_look_at_the_disk_again() {
        // (Within its lifetime: the test claims at once.)
        let directory = tempfile::tempdir().unwrap();
        let room = DiskRoom::new(directory.path(), 0);
        room.claim(1).unwrap();
        let credit = room.credit.lock().unwrap().0;
        assert!(credit > 0 && credit <= MOST_CREDIT_BYTES);
        room.claim(credit).unwrap();
        assert_eq!(room.credit.lock().unwrap().0, 0);
        let _ = room.ran_out(1);
        assert_eq!(room.credit.lock().unwrap().0, 0);
    }
}
