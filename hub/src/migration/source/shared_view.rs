//! A move's first round and the files the latest checkpoint holds.
//!
//! A function's volume can be large, and a capture reads the files it
//! does not know with the function stopped. The periodic checkpoints keep
//! a view of the volume (each file's chunk hashes, and what was written
//! since); a move's dirty set starts from that view when it is the view of
//! the function's latest stored checkpoint, so its first capture reads only
//! what changed since that checkpoint. The chunks it does not read are in
//! this hub's store, and are sent as the store holds them. Until the first
//! round is sent, a pin ([`CheckpointPin`]) keeps that checkpoint, and
//! every later one, stored: checkpoints written meanwhile (a user's `ferry
//! checkpoint`) do not drop its chunks. If one is missing all the same,
//! the round is captured again, whole.
//!
//! [`CheckpointPin`]: crate::supervisor::CheckpointPin

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_migrator::checkpoint::{CheckpointStore, ChunkHash};

use super::MoveRun;
use crate::runtime::Snapshot;

impl MoveRun<'_> {
    /// Whether every file chunk that `snapshot` (a first round, its view
    /// shared with the checkpoints') names but did not read is in the
    /// store. Looked up while the function runs again.
    pub(super) async fn unread_chunks_stored(&self, snapshot: &Arc<Snapshot>) -> bool {
        let Some(files) = snapshot.files.as_ref() else {
            return true;
        };
        let read: HashSet<ChunkHash> = files.chunks.iter().map(|(hash, _)| *hash).collect();
        let unread: HashSet<ChunkHash> = files
            .volume
            .iter()
            .flat_map(|volume| volume.entries.iter())
            .flat_map(|entry| entry.chunk_hashes.iter())
            .filter_map(|hash| ChunkHash::from_manifest_entry(hash).ok().flatten())
            .filter(|hash| !read.contains(hash))
            .collect();
        if unread.is_empty() {
            return true;
        }
        let (store, count, bytes_read) = (
            self.supervisor.checkpoint_store().clone(),
            unread.len(),
            files.bytes_read,
        );
        let looked_up = tokio::task::spawn_blocking(move || {
            for hash in &unread {
                if !store.contains_chunk(hash)? {
                    return Ok(Some(*hash));
                }
            }
            Ok::<_, ferry_migrator::checkpoint::CheckpointError>(None)
        })
        .await;
        match looked_up {
            Ok(Ok(None)) => {
                tracing::info!(function = %self.name, unread = count, bytes_read, "first round read only the files changed since the latest checkpoint");
                true
            }
            Ok(Ok(Some(hash))) => {
                tracing::warn!(function = %self.name, %hash, "a chunk of the latest checkpoint's files is not stored; reading the volume whole");
                false
            }
            Ok(Err(error)) => {
                tracing::warn!(function = %self.name, %error, "cannot look the latest checkpoint's chunks up; reading the volume whole");
                false
            }
            Err(error) => {
                tracing::warn!(function = %self.name, %error, "lookup task failed; reading the volume whole");
                false
            }
        }
    }
}

/// A file chunk a round did not read, as `store` keeps it (codec byte and
/// payload, as it travels), with its length.
pub(super) fn stored_volume_chunk(
    store: &CheckpointStore,
    hash: &ChunkHash,
    lengths: &HashMap<ChunkHash, u32>,
) -> Result<(usize, Vec<u8>), String> {
    let len = lengths
        .get(hash)
        .copied()
        .ok_or_else(|| format!("volume chunk {hash} is in no file of the round"))?;
    let encoded = store
        .encoded_chunk(hash)
        .map_err(|error| format!("cannot read volume chunk {hash} from the store: {error}"))?
        .ok_or_else(|| format!("volume chunk {hash} was not read and is not in the store"))?;
    Ok((len as usize, encoded))
}
