//! The seal: the last round's state made a checkpoint here, durable and
//! installed, the function started beside it with its effects held where
//! it can be, before the source is told this side is prepared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_migrator::transfer::TransferError;
use ferry_proto::ErrorCode;
use ferry_proto::internal::v1::{CheckpointManifest, DestinationFrame, Offer, PendingHandoff};
use ferry_proto::v1::LogEntry;

use super::{Arrival, EarlyLogs};
use crate::checkpoint_codec::snapshot_from_manifest;
use crate::error::HubError;
use crate::runtime::{Snapshot, SnapshotMemory, StoredMemory};
use crate::supervisor::ArrivalLogs;

impl Arrival {
    pub(super) async fn on_seal(&mut self, mut manifest: CheckpointManifest) -> Result<DestinationFrame, HubError> {
        let sealed = Instant::now();
        self.module_prepared().await?;
        self.early_logs_done().await;
        let waited = sealed.elapsed();
        let offer = self.receiver.offer().cloned().unwrap_or_default();
        let name = self.name();
        let store = self.supervisor.checkpoint_store().clone();
        let started = Instant::now();
        let sequence = store
            .list(&name)
            .map_err(HubError::Checkpoint)?
            .last()
            .map_or(0, |entry| entry.sequence)
            + 1;
        manifest.sequence = sequence;
        let memory = match &self.warm {
            // The memory is in the instance; should it turn out unusable,
            // the cold start reads the checkpoint imported below.
            Some(_) => SnapshotMemory::Stored(StoredMemory {
                store: store.clone(),
                manifest: Arc::new(manifest.clone()),
            }),
            None => SnapshotMemory::Whole(std::mem::take(&mut self.image)),
        };
        let snapshot = snapshot_from_manifest(&manifest, memory).map_err(|reason| HubError::CheckpointUnusable {
            name: name.clone(),
            reason,
        })?;
        let snapshot = Arc::new(snapshot);
        let snapshot_made = started.elapsed();
        self.start_held(&offer, &manifest, &snapshot).await;
        let resumed = started.elapsed();
        let imported = manifest.clone();
        let staged = self.staged.clone().unwrap_or_default();
        // install_arrival flushes the manifest together with the record.
        // The volume laid out ahead is patched to the seal beside the
        // function's while the chunks are made durable (mostly a wait for
        // the disk); the import's transaction comes after, as it would
        // hold up every chunk read of the patch.
        let syncing = tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.sync_chunks()
        });
        let patching = self.supervisor.patch_arriving_volume(&manifest, self.prelaid.take());
        // The last round's chunks that came as pages are indexed meanwhile
        // too (a sled transaction; the import below names them).
        let indexing = tokio::task::spawn_blocking({
            let store = store.clone();
            let mut pages = std::mem::take(&mut self.pages);
            move || store.index_received_pages(&mut pages)
        });
        let (synced, patched, indexed) = tokio::join!(syncing, patching, indexing);
        let task_failed = |error: tokio::task::JoinError| HubError::Internal(format!("import task failed: {error}"));
        synced.map_err(task_failed)?.map_err(HubError::Checkpoint)?;
        indexed.map_err(task_failed)?.map_err(HubError::Checkpoint)?;
        tokio::task::spawn_blocking(move || store.import_manifest_staged(&imported, &staged))
            .await
            .map_err(task_failed)?
            .map_err(HubError::Checkpoint)?;
        self.end_holds(&name);
        let import_done = started.elapsed();
        let source_address = match (self.remote, offer.source_address.parse::<SocketAddr>()) {
            (Some(remote), Ok(advertised)) => SocketAddr::new(remote.ip(), advertised.port()).to_string(),
            _ => offer.source_address.clone(),
        };
        let source = PendingHandoff {
            source_hub_id: offer.source_hub_id.clone(),
            source_hub_name: offer.source_hub_name.clone(),
            source_address,
        };
        let mut whole_logs = Vec::new();
        self.supervisor.install_arrival(
            offer.spec.clone().unwrap_or_default(),
            manifest.epoch,
            offer.starts,
            sequence,
            source,
            self.arrival_logs(&mut whole_logs),
        )?;
        self.installed = true;
        // Installed first: from here the volume directory is the arrival's.
        self.supervisor.finish_volume_layout(&manifest, patched).await?;
        let spec = offer.spec.clone().unwrap_or_default();
        self.supervisor
            .check_open_files(&spec, &snapshot)
            .await
            .map_err(|reason| {
                HubError::Transfer(TransferError::Unacceptable {
                    code: ErrorCode::FailedPrecondition,
                    reason: format!(
                        "function {name:?} cannot run on hub {}: {reason}",
                        self.supervisor.identity().name
                    ),
                })
            })?;
        let install_done = started.elapsed();
        self.drop_unneeded(&manifest);
        self.snapshot = Some(snapshot);
        tracing::info!(
            function = %name,
            epoch = manifest.epoch,
            sequence,
            wait_us = waited.as_micros() as u64,
            snapshot_us = snapshot_made.as_micros() as u64,
            resume_us = resumed.as_micros() as u64,
            import_us = (import_done - resumed).as_micros() as u64,
            install_us = (install_done - import_done).as_micros() as u64,
            "function prepared; waiting for the commit"
        );
        self.sealed = Some(manifest);
        let running = self
            .held
            .as_ref()
            .map_or(Duration::ZERO, |held| held.resumed_at().elapsed());
        Ok(self.receiver.prepared(running))
    }

    /// Starts the function from the sealed state in the filled instance
    /// with its effects held, so that it runs while this hub and the source
    /// make the move durable (ARCHITECTURE.md, "A move's last steps run
    /// beside the function"). Not for a function with files: its volume is
    /// laid out after the seal. Nothing changes if it cannot: the commit
    /// starts the function as it always did.
    async fn start_held(&mut self, offer: &Offer, manifest: &CheckpointManifest, snapshot: &Arc<Snapshot>) {
        let has_files = offer
            .spec
            .as_ref()
            .is_some_and(|spec| spec.volume.is_some() || !spec.mounts.is_empty());
        if has_files || manifest.volume.is_some() {
            return;
        }
        let Some(warm) = self.warm.take() else { return };
        match warm.start_held(Arc::clone(snapshot)).await {
            Ok(held) => self.held = Some(held),
            Err(reason) => {
                tracing::info!(function = %self.name(), %reason, "the function starts at the commit instead of the seal");
            }
        }
    }

    /// The log history to install: the rest, after an early part stored
    /// ahead, or all of it (put together in `whole`) when that failed.
    fn arrival_logs<'a>(&'a self, whole: &'a mut Vec<LogEntry>) -> ArrivalLogs<'a> {
        match self.early_logs_import {
            Some(EarlyLogs::Stored) => ArrivalLogs::Rest {
                move_id: self.receiver.offer().map_or("", |offer| offer.move_id.as_str()),
                entries: &self.logs,
            },
            _ if self.early_logs.is_empty() => ArrivalLogs::Whole(&self.logs),
            _ => {
                whole.extend_from_slice(&self.early_logs);
                whole.extend_from_slice(&self.logs);
                ArrivalLogs::Whole(whole)
            }
        }
    }
}
