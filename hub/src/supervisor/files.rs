//! A function's files on this hub: its volume removed when it goes, an
//! arriving volume laid out, patched and swapped in beside a move, the
//! files a restored function holds open checked.

use std::sync::Arc;

use ferry_proto::internal::v1::{CheckpointManifest, VolumeState};
use ferry_proto::v1::FunctionSpec;

use super::{Phase, Supervisor};
use crate::error::HubError;
use crate::runtime::Snapshot;

impl Supervisor {
    /// Removes everything of `name` on disk (its volume): it was removed,
    /// or it runs on another hub now. False when that failed (logged).
    pub(super) fn remove_files(&self, name: &str) -> bool {
        let files = crate::resources::function_dir(&self.inner.config.data_dir, name);
        if let Err(error) = std::fs::remove_dir_all(&files)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(function = %name, path = %files.display(), %error, "could not remove the function's files");
            return false;
        }
        true
    }

    /// Removes the files of `name` unless it lives on this hub (any phase
    /// but moved away): what a discarded arrival laid out.
    pub fn remove_files_unless_here(&self, name: &str) {
        let here = {
            let slots = self.inner.lock_slots();
            slots.get(name).is_some_and(|slot| slot.phase != Phase::Moved)
        };
        if !here {
            self.remove_files(name);
        }
    }

    /// Removes the files of every function that does not live here: a
    /// crash may have come between a move's record and the removal of
    /// what it left, or in the middle of an arrival that never installed.
    pub(super) fn sweep_files_left_behind(&self) {
        let root = self.inner.config.data_dir.join("functions");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                self.remove_files_unless_here(name);
            }
        }
    }

    /// Runs `work` on the arriving volume of `name` on a blocking thread
    /// (with the store, the data directory and the name), logging how long
    /// it took, or why it failed (`None`: the caller lays the volume out
    /// afresh at the seal).
    pub(super) async fn arriving_volume_task<T: Send + 'static>(
        &self,
        name: &str,
        what: &'static str,
        work: impl FnOnce(&ferry_migrator::checkpoint::CheckpointStore, &std::path::Path, &str) -> Result<T, String>
        + Send
        + 'static,
    ) -> Option<T> {
        let (store, data_dir, owned) = (
            self.inner.checkpoints.clone(),
            self.inner.config.data_dir.clone(),
            name.to_owned(),
        );
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || work(&store, &data_dir, &owned)).await {
            Ok(Ok(done)) => {
                tracing::debug!(function = %name, task = what, elapsed_us = started.elapsed().as_micros() as u64, "arriving volume task done");
                Some(done)
            }
            Ok(Err(reason)) => {
                tracing::warn!(function = %name, task = what, %reason, "arriving volume task failed; the seal lays the volume out afresh");
                None
            }
            Err(error) => {
                tracing::warn!(function = %name, task = what, %error, "arriving volume task ended abnormally; the seal lays the volume out afresh");
                None
            }
        }
    }

    /// Lays an arriving function's volume out ahead of its seal, as a
    /// pre-copy round found it (`entries`), over what the previous call laid
    /// out (`previous`). Returns what is laid out now; `None` if that
    /// failed (the seal lays the volume out afresh).
    pub async fn prelay_volume(
        &self,
        name: &str,
        previous: Option<VolumeState>,
        entries: VolumeState,
    ) -> Option<VolumeState> {
        self.arriving_volume_task(name, "lay out ahead of the seal", move |store, data_dir, name| {
            let laid = crate::volume_layout::prelay(store, data_dir, name, previous.as_ref(), &entries)?;
            tracing::debug!(function = %name, files = laid.files, bytes = laid.bytes, "arriving volume laid out ahead of the seal");
            Ok(entries)
        })
        .await
    }

    /// Whether the open files of `snapshot` (function `spec`) open again on
    /// this hub: its volume as laid out, its mounts as this hub offers
    /// them. An arrival asks before the commit; a file missing here refuses
    /// the move, and the function goes on where it was.
    pub async fn check_open_files(&self, spec: &FunctionSpec, snapshot: &Arc<Snapshot>) -> Result<(), String> {
        let Some(files) = snapshot.files.as_ref().filter(|files| !files.descriptors.is_empty()) else {
            return Ok(());
        };
        // Without quotas: opening a quota'd area walks its files to count
        // them, which the start does anyway, and this runs at the seal.
        let preopens: Vec<_> =
            crate::resources::preopens(spec, &self.inner.config.resources, &self.inner.config.data_dir)?
                .into_iter()
                .map(|preopen| crate::runtime::PreopenSpec {
                    quota_bytes: None,
                    ..preopen
                })
                .collect();
        let descriptors = files.descriptors.clone();
        tokio::task::spawn_blocking(move || crate::runtime::check_descriptors(&preopens, &descriptors))
            .await
            .map_err(|error| format!("the check of its open files failed: {error}"))?
    }

    /// Patches the volume of an arrival laid out ahead (`prelaid`) to its
    /// sealed checkpoint `manifest`, beside the function's volume; the
    /// seal runs it while the checkpoint is made durable. Whether it is
    /// patched: if not, [`finish_volume_layout`](Self::finish_volume_layout)
    /// lays the volume out afresh.
    pub async fn patch_arriving_volume(&self, manifest: &CheckpointManifest, prelaid: Option<VolumeState>) -> bool {
        let (Some(prelaid), Some(volume)) = (prelaid, manifest.volume.clone()) else {
            return false;
        };
        let name = manifest
            .spec
            .as_ref()
            .map(|spec| spec.name.as_str())
            .unwrap_or_default();
        self.arriving_volume_task(name, "patch to the sealed checkpoint", move |store, data_dir, name| {
            let laid = crate::volume_layout::patch_arrival(store, data_dir, name, &prelaid, &volume)?;
            tracing::info!(function = %name, files = laid.files, bytes = laid.bytes, "arriving volume patched to the sealed checkpoint");
            Ok(())
        })
        .await
        .is_some()
    }

    /// Puts the volume of an arrival in place as its sealed checkpoint
    /// `manifest` holds it: the one [`patch_arriving_volume`](Self::patch_arriving_volume)
    /// patched (`patched`), or one laid out from scratch.
    pub async fn finish_volume_layout(&self, manifest: &CheckpointManifest, patched: bool) -> Result<(), HubError> {
        let name = manifest
            .spec
            .as_ref()
            .map(|spec| spec.name.as_str())
            .unwrap_or_default();
        if patched
            && manifest.volume.is_some()
            && self
                .arriving_volume_task(name, "swap in", |_, data_dir, name| {
                    crate::volume_layout::swap_in_arrival(data_dir, name)
                })
                .await
                .is_some()
        {
            return Ok(());
        }
        self.inner.lay_out_volume(manifest).await
    }
}
