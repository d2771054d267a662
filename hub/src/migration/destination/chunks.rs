//! What an arrival keeps in the checkpoint store while it runs and after
//! it ends: the staged set of earlier rounds, the hold a failed transfer
//! leaves for a retry, and the chunks nothing names any more.

use ferry_migrator::checkpoint::ChunkHash;
use ferry_proto::internal::v1::CheckpointManifest;

use super::Arrival;

/// How long a hub keeps the chunks of a transfer that failed, for a retry.
const HOLD_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// The names of the staged sets that hold chunks of `name`'s failed
/// transfers start with this (a transfer's own set has one space).
fn held_prefix(name: &str) -> String {
    format!("held {name} ")
}

impl Arrival {
    /// Makes what earlier rounds brought durable and referenced, on a
    /// blocking thread, and waits for it: the seal (inside the downtime)
    /// then only counts and flushes the last round's chunks.
    pub(super) async fn stage_settled(&mut self, settled: Vec<Option<ChunkHash>>) {
        let store = self.supervisor.checkpoint_store().clone();
        let staged = self.staged.clone().filter(|_| !settled.is_empty());
        let staging = tokio::task::spawn_blocking(move || {
            if let Some(staged) = staged
                && let Err(error) = store.stage(&staged, &settled)
            {
                // The seal then counts every chunk itself.
                tracing::debug!(%staged, %error, "could not stage the chunks received so far");
            }
            if let Err(error) = store.flush() {
                tracing::warn!(%error, "flush of received chunks failed");
            }
        });
        if let Err(error) = staging.await {
            tracing::warn!(%error, "staging task failed");
        }
    }

    /// Keeps what this discarded transfer brought (its staged set and every
    /// chunk it received) for [`HOLD_FOR`], so that a retried move of the
    /// function sends only what this hub still lacks; a later hold of the
    /// same function replaces it, and its seal or a restart ends it.
    pub(super) fn hold_what_arrived(&mut self, name: &str) {
        let store = self.supervisor.checkpoint_store().clone();
        let received = std::mem::take(&mut self.received);
        let staged = self.staged.take();
        if name.is_empty() {
            if let Some(staged) = staged
                && let Err(error) = store.unstage(&staged)
            {
                tracing::warn!(%error, "could not drop the staged chunks of a discarded transfer");
            }
            self.drop_received(&received);
            return;
        }
        let prefix = held_prefix(name);
        let hold = format!("{prefix}{}", self.move_id());
        let function = name.to_owned();
        tokio::spawn(async move {
            let holding = hold.clone();
            let held = tokio::task::spawn_blocking(move || {
                let held = store.hold(staged.as_deref(), &holding, &received)?;
                if held == 0 {
                    // Nothing arrived (a refused offer): earlier holds stay.
                    store.unstage(&holding)?;
                } else {
                    // After the new hold, so that chunks both name stay stored.
                    store.unstage_prefixed(&prefix, Some(&holding))?;
                }
                Ok::<_, ferry_migrator::checkpoint::CheckpointError>((store, held))
            })
            .await;
            let store = match held {
                Ok(Ok((_, 0))) => return,
                Ok(Ok((store, chunks))) => {
                    tracing::info!(function = %function, chunks, "keeping the chunks of a discarded transfer for a retry");
                    store
                }
                Ok(Err(error)) => {
                    tracing::warn!(function = %function, %error, "could not keep the chunks of a discarded transfer");
                    return;
                }
                Err(_) => return,
            };
            tokio::time::sleep(HOLD_FOR).await;
            let dropped = tokio::task::spawn_blocking(move || store.unstage(&hold)).await;
            if let Ok(Err(error)) = dropped {
                tracing::warn!(function = %function, %error, "could not drop the kept chunks of a discarded transfer");
            }
        });
    }

    /// Ends, in the background, every hold of this function's chunks: the
    /// sealed checkpoint names what it needs of them.
    pub(super) fn end_holds(&self, name: &str) {
        let store = self.supervisor.checkpoint_store().clone();
        let prefix = held_prefix(name);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.unstage_prefixed(&prefix, None) {
                tracing::warn!(%error, "could not drop the kept chunks of an earlier transfer");
            }
        });
    }

    /// Drops, in the background, chunks this transfer stored that
    /// `manifest` does not name.
    pub(super) fn drop_unneeded(&mut self, manifest: &CheckpointManifest) {
        let received = std::mem::take(&mut self.received);
        let files = manifest
            .volume
            .iter()
            .flat_map(|volume| volume.entries.iter())
            .flat_map(|entry| entry.chunk_hashes.iter());
        let named: std::collections::HashSet<Vec<u8>> = manifest.chunk_hashes.iter().chain(files).cloned().collect();
        let store = self.supervisor.checkpoint_store().clone();
        tokio::task::spawn_blocking(move || {
            let unneeded: Vec<ChunkHash> = received
                .into_iter()
                .filter(|hash| !named.contains(hash.as_bytes().as_slice()))
                .collect();
            if let Err(error) = store.drop_unreferenced(&unneeded) {
                tracing::warn!(%error, "could not drop unreferenced received chunks");
            }
        });
    }

    /// Drops `hashes` unless something names them.
    pub(super) fn drop_received(&self, hashes: &[ChunkHash]) {
        if let Err(error) = self.supervisor.checkpoint_store().drop_unreferenced(hashes) {
            tracing::warn!(%error, "could not drop unreferenced received chunks");
        }
    }
}
