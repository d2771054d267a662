//! [`Writeback`]: starts writing a pack's appended bytes to disk while
//! more are still being appended, so that the sync a commit (or a full
//! pack) needs finds little left to write.
//!
//! Why: a pack takes 64 MiB, and a move's first round fills one as its
//! chunks arrive. Synced only when it is full (on the thread that appends,
//! inside the transfer) or before the next commit, the whole 64 MiB went
//! to disk at once: 35–45 ms in which nothing else of the move advanced
//! (BENCHMARKS.md, moves issue part 8). Written back as it fills, the disk
//! works while the network and the CPU do.
//!
//! An early writeback is only a head start, never a guarantee: it does not
//! mark anything durable, and [`Packs::sync`](super::packs::Packs) still
//! syncs every pack it must. A failed early writeback is ignored here; the
//! sync that counts reports it.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Appended bytes between two early writebacks of the current pack.
pub(super) const WRITEBACK_BYTES: u64 = 4 << 20;

/// One thread per pack directory, started at the first request and ended
/// when the directory's last handle is dropped.
#[derive(Default)]
pub(super) struct Writeback {
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    wanted: Mutex<Wanted>,
    wake: Condvar,
}

#[derive(Default)]
struct Wanted {
    /// The file to write back next; a newer request replaces an older one
    /// not yet taken (the same pack, or the one after it).
    file: Option<Arc<File>>,
    started: bool,
    stop: bool,
}

impl Writeback {
    /// Asks for `file`'s dirty pages to be written to disk soon, without
    /// waiting for it.
    pub(super) fn request(&self, file: Arc<File>) {
        let mut wanted = self.state.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        wanted.file = Some(file);
        if !wanted.started {
            wanted.started = true;
            let state = Arc::clone(&self.state);
            let spawned = std::thread::Builder::new()
                .name("ferry-pack-writeback".to_owned())
                .spawn(move || state.run());
            if let Err(error) = spawned {
                // The syncs that count still run; they only take longer.
                tracing::debug!(%error, "cannot start the pack writeback thread");
                wanted.file = None;
                return;
            }
        }
        self.state.wake.notify_one();
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        let mut wanted = self.state.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        wanted.stop = true;
        wanted.file = None;
        self.state.wake.notify_one();
    }
}

impl State {
    fn run(&self) {
        loop {
            let file = {
                let mut wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if wanted.stop {
                        return;
                    }
                    if let Some(file) = wanted.file.take() {
                        break file;
                    }
                    wanted = self.wake.wait(wanted).unwrap_or_else(PoisonError::into_inner);
                }
            };
            if let Err(error) = file.sync_data() {
                tracing::debug!(%error, "early writeback of a pack failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn a_requested_writeback_leaves_the_file_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack");
        let file = Arc::new(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap(),
        );
        let writeback = Writeback::default();
        for round in 0..8u8 {
            file.write_all_at(&[round; 4096], u64::from(round) * 4096).unwrap();
            writeback.request(Arc::clone(&file));
        }
        drop(writeback);
        let mut bytes = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 8 * 4096);
        assert!(
            bytes
                .chunks(4096)
                .enumerate()
                .all(|(round, page)| page.iter().all(|&b| b == round as u8))
        );
    }

    #[test]
    fn a_dropped_writeback_ends_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("pack")).unwrap());
        let writeback = Writeback::default();
        writeback.request(Arc::clone(&file));
        let state = Arc::clone(&writeback.state);
        drop(writeback);
        // The thread holds the state until it sees the stop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&state) > 1 {
            assert!(std::time::Instant::now() < deadline, "the writeback thread did not end");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
