//! The rounds of a move: pre-copy captures while the function runs, the
//! paused last round, then the logs and the seal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ferry_migrator::checkpoint::volume::volume_chunk_lengths;
use ferry_migrator::checkpoint::{CHECKPOINT_FORMAT_VERSION, ChunkHash};
use ferry_migrator::transfer::{ChunkAt, NextStep, Sender, TransferError};
use ferry_proto::internal::v1::SourceFrame;
use ferry_proto::v1::{RoundProgress, migrate_progress};
use tokio::sync::mpsc;

use super::hashes::hash_changes;
use super::wire::{Answers, send};
use super::{MoveRun, local};
use crate::checkpoint_codec::manifest_template;
use crate::logs::unix_ms_now;
use crate::runtime::MemoryWanted;

impl MoveRun<'_> {
    /// Pre-copy rounds, the paused last round, the logs and the seal.
    pub(super) async fn rounds(
        &mut self,
        sender: &mut Sender,
        outbound: &mpsc::Sender<SourceFrame>,
        inbound: &mut Answers,
    ) -> Result<(), TransferError> {
        let wanted = MemoryWanted::Changes {
            set: self.dirty_set(),
            chunk_size: sender.chunk_size(),
        };
        let mut base: Option<Vec<Option<ChunkHash>>> = None;
        if let Some(used) = self.supervisor.cpu_used(self.name) {
            self.cpu_at_start = Some((used, Instant::now()));
        }
        let mut last = false;
        // The first round reads only the files changed since the latest
        // checkpoint, the function stopped for less (`shared_view`).
        let (mut view_lock, mut pin) = match self.candidate.spec.volume {
            Some(_) => self
                .supervisor
                .share_checkpoint_view(self.name, &self.dirty_set())
                .await
                .unzip(),
            None => (None, None),
        };
        loop {
            let capture_started = Instant::now();
            let snapshot = if last {
                let (snapshot, paused_at) = self
                    .supervisor
                    .pause_for_move(self.name, wanted.clone())
                    .await
                    .map_err(|error| local(format!("cannot pause the function: {error}")))?;
                self.paused_at = Some(paused_at);
                self.memory_bytes = snapshot.memory.memory_bytes();
                self.paused = Some(Arc::clone(&snapshot));
                snapshot
            } else {
                self.supervisor
                    .capture_for_round(self.name, wanted.clone())
                    .await
                    .map_err(|error| local(format!("cannot capture the function: {error}")))?
            };
            let capture = capture_started.elapsed();
            // The capture took the view: checkpoints may go on (the pin
            // keeps what the round sends from the store).
            drop(view_lock.take());
            if pin.is_some() && !self.unread_chunks_stored(&snapshot).await {
                pin = None;
                // Captured again, whole.
                self.supervisor.forget_dirty_set(self.name, &self.dirty_set());
                continue;
            }
            self.volume_bytes_read += snapshot.files.as_ref().map_or(0, |files| files.bytes_read);
            let round_started = Instant::now();
            let hashes = hash_changes(Arc::clone(&snapshot), sender.chunk_size(), base.take()).await?;
            let hashed = round_started.elapsed();
            let memory_bytes = snapshot.memory.memory_bytes();
            let entries = snapshot.files.as_ref().and_then(|files| files.volume.clone());
            let volume = entries.as_ref().map(volume_chunk_lengths).unwrap_or_default();
            let planned = sender.plan_round_with_volume(&hashes, memory_bytes, &volume, entries, last);
            base = Some(hashes);
            send(&self.watchdog, outbound, planned.frame).await?;
            let need = self.receive(sender, inbound, None).await?;
            let to_send = sender.on_need(need)?;
            let file_chunk_lengths: HashMap<ChunkHash, u32> = volume.iter().copied().collect();
            let bytes_to_send: u64 = to_send
                .iter()
                .map(|(hash, at)| match at {
                    ChunkAt::Memory(_) => u64::from(sender.chunk_size()),
                    ChunkAt::Volume => u64::from(file_chunk_lengths.get(hash).copied().unwrap_or_default()),
                })
                .sum();
            let round_number = sender.stats().rounds;
            self.report(migrate_progress::Event::Round(RoundProgress {
                number: round_number,
                last,
                bytes_to_send: bytes_to_send.min(planned.changed_bytes),
                bytes_deduplicated: planned.changed_bytes.saturating_sub(bytes_to_send),
            }));
            let needed = round_started.elapsed();
            self.send_chunks(sender, outbound, &snapshot, (to_send, file_chunk_lengths))
                .await?;
            // The first round's chunks are sent: what it sent from the
            // store may go.
            pin = None;
            tracing::debug!(
                function = %self.name,
                round = round_number,
                last,
                capture_us = capture.as_micros() as u64,
                hash_us = hashed.as_micros() as u64,
                need_us = (needed - hashed).as_micros() as u64,
                send_us = (round_started.elapsed() - needed).as_micros() as u64,
                bytes = bytes_to_send,
                "round sent"
            );
            if last {
                self.send_logs(outbound).await?;
                let mut manifest = manifest_template(
                    &snapshot,
                    self.candidate.spec.clone(),
                    self.candidate.epoch,
                    1,
                    unix_ms_now(),
                );
                let hashes = base.as_ref().expect("set above");
                manifest.format_version = CHECKPOINT_FORMAT_VERSION;
                manifest.memory_bytes = memory_bytes;
                manifest.chunk_size = sender.chunk_size();
                manifest.chunk_hashes = hashes
                    .iter()
                    .map(|hash| hash.map(|hash| hash.0.to_vec()).unwrap_or_default())
                    .collect();
                send(&self.watchdog, outbound, sender.seal(manifest)?).await?;
                self.final_round = round_started.elapsed();
                return Ok(());
            }
            match sender.next_step(planned.changed_bytes) {
                NextStep::AnotherRound => {}
                NextStep::SlowDown { percent } => self.slow_down(percent),
                NextStep::Pause => last = true,
            }
        }
    }

    /// Holds the function to `percent` % of the CPU it used since the
    /// rounds began (until the move ends, whichever way): it writes memory
    /// as fast as the rounds send it, and the last round — with the
    /// function paused — would carry all of it.
    fn slow_down(&mut self, percent: u32) {
        let Some(used) = self.supervisor.cpu_used(self.name) else {
            return;
        };
        let rate = *self.cpu_rate.get_or_insert_with(|| match self.cpu_at_start {
            Some((before, at)) => used.saturating_sub(before).as_secs_f64() / at.elapsed().as_secs_f64().max(1e-3),
            None => 1.0,
        });
        let cores = (rate * f64::from(percent) / 100.0).max(MIN_SLOWED_CORES);
        self.supervisor.slow_for_move(self.name, Some(cores));
        self.slowed_to_cores = Some(cores);
        tracing::info!(function = %self.name, percent, used_cores = rate, cores, "slowing the function down: it writes memory as fast as the rounds send it");
    }
}

/// The least a move holds a function to.
const MIN_SLOWED_CORES: f64 = 0.005;
