//! The destination's side of a move: drives a [`Receiver`] with the frames
//! of one `Transfer` stream, builds the function's memory image as chunks
//! arrive, persists it on `Seal` and starts it on `Commit`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_migrator::checkpoint::codec::ChunkDecoder;
use ferry_migrator::checkpoint::{ChunkHash, ReceivedPages};
use ferry_migrator::transfer::{Disposition, Receiver, ReceiverStep, RoundPlan, TransferError};
use ferry_proto::internal::v1::{CheckpointManifest, DestinationFrame, Offer, SourceFrame, VolumeState};
use ferry_proto::v1::LogEntry;
use ferry_proto::{ErrorCode, ServiceError};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::watchdog::Watchdog;
use super::{Admission, MigrationContext, PREPARING_HEARTBEAT, resolve};
use crate::error::HubError;
use crate::runtime::{HeldRun, PreparedModule, Snapshot, WarmInstance, WarmStart};
use crate::supervisor::Supervisor;

mod chunks;
mod image;
mod progress;
mod seal;
mod volume;

use progress::ProgressReport;

/// Answers one transfer; the frames to send back come out of the stream.
pub(super) fn receive(
    supervisor: Supervisor,
    context: MigrationContext,
    remote: Option<SocketAddr>,
    caller_hub_id: Option<String>,
    inbound: Streaming<SourceFrame>,
) -> impl Stream<Item = Result<DestinationFrame, Status>> {
    let (outbound, frames) = mpsc::channel(64);
    // The offer fills in which move this is and of what.
    let span = tracing::info_span!(
        "arrival",
        move_id = tracing::field::Empty,
        function = tracing::field::Empty
    );
    let task = async move {
        let mut arrival = Arrival {
            supervisor,
            context,
            remote,
            caller_hub_id,
            receiver: Receiver::new(),
            image: Vec::new(),
            memory_bytes: 0,
            chunk_size: 0,
            received: Vec::new(),
            early_logs: Vec::new(),
            early_logs_import: None,
            logs: Vec::new(),
            installed: false,
            preparing: None,
            snapshot: None,
            sealed: None,
            outbound,
            admitted: None,
            staged: None,
            warm: None,
            held: None,
            prelaid: None,
            progress: ProgressReport::default(),
            pages: ReceivedPages::default(),
            decoder: None,
            watchdog: Watchdog::default(),
        };
        arrival.run(inbound).await;
    };
    tokio::spawn(task.instrument(span));
    ReceiverStream::new(frames)
}

/// One function arriving.
struct Arrival {
    supervisor: Supervisor,
    context: MigrationContext,
    remote: Option<SocketAddr>,
    /// The hub id the caller's certificate names (TLS only).
    caller_hub_id: Option<String>,
    receiver: Receiver,
    /// The function's memory as the rounds built it, when there is no warm
    /// instance to build it in (empty otherwise).
    image: Vec<u8>,
    /// Size of the function's memory as the rounds so far announced it.
    memory_bytes: usize,
    chunk_size: usize,
    /// Chunks stored by this transfer, to drop those nothing names after all.
    received: Vec<ChunkHash>,
    /// The log history sent before the rounds, kept until the seal in case
    /// storing it ahead fails.
    early_logs: Vec<LogEntry>,
    /// Storing `early_logs` in the background during pre-copy; `Some` once started.
    early_logs_import: Option<EarlyLogs>,
    /// Log entries sent in the last round.
    logs: Vec<LogEntry>,
    installed: bool,
    /// The module being prepared, when the source sent it, and since when.
    preparing: Option<(Instant, tokio::task::JoinHandle<Result<(), HubError>>)>,
    snapshot: Option<Arc<Snapshot>>,
    /// The sealed checkpoint as stored here (what `snapshot` holds).
    sealed: Option<CheckpointManifest>,
    outbound: mpsc::Sender<Result<DestinationFrame, Status>>,
    /// Room reserved for a move the source's rebalancer offered.
    admitted: Option<Admitted>,
    /// The store's staged set for this transfer: the chunks of the rounds
    /// so far, referenced before the seal (see `CheckpointStore::stage`).
    staged: Option<String>,
    /// The instance the function will run in, filled as chunks arrive.
    warm: Option<WarmInstance>,
    /// The function running from the seal with its effects held until the
    /// commit (stopped, unseen, if the move ends otherwise).
    held: Option<HeldRun>,
    /// The volume as laid out ahead of the seal (`destination::volume`).
    prelaid: Option<VolumeState>,
    /// What this side read, reported to the source (and its heartbeats).
    progress: ProgressReport,
    /// Chunks that came as pages, kept as deltas, not indexed yet.
    pages: ReceivedPages,
    /// Reads stored chunks: those a round fills from the store, and the
    /// previous versions of chunks that come as pages.
    decoder: Option<ChunkDecoder>,
    /// This side's stall limit: every frame received is progress.
    watchdog: Watchdog,
}

/// The early log history being stored, or how that ended.
enum EarlyLogs {
    Storing(tokio::task::JoinHandle<Result<(), HubError>>),
    Stored,
    Failed,
}

/// An automatic move this hub admitted: its reservation is settled when
/// the transfer ends, whichever way.
struct Admitted {
    admission: Arc<dyn Admission>,
    function: String,
    arrived: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.settle(&self.function, self.arrived);
    }
}

impl Arrival {
    async fn run(&mut self, mut inbound: Streaming<SourceFrame>) {
        let ended = loop {
            let frame = match self.watchdog.guard(inbound.message()).await {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => break "the source closed the stream".to_owned(),
                Ok(Err(status)) => break format!("the stream failed: {}", status.message()),
                Err(limit) => break format!("the source sent nothing for {limit:?}"),
            };
            if let Some(received) = self.progress.on_frame(&frame) {
                // Never waits: a report that does not fit is replaced by the next.
                let _ = self.outbound.try_send(Ok(received));
            }
            match self.on_frame(frame).await {
                Ok(Some(answer)) => {
                    if self.outbound.send(Ok(answer)).await.is_err() {
                        break "the source stopped listening".to_owned();
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    let code = error.error_code();
                    tracing::warn!(function = %self.name(), error = %ferry_proto::error_chain(&error), "refusing a transfer");
                    let transfer_error = match error {
                        HubError::Transfer(error) => error,
                        other => TransferError::Unacceptable {
                            code,
                            reason: other.to_string(),
                        },
                    };
                    let refusal = self.receiver.refuse(&transfer_error, code);
                    let _ = self.outbound.send(Ok(refusal)).await;
                    break "refused".to_owned();
                }
            }
            if self.receiver.after_stream_end() == Disposition::Keep {
                return;
            }
        };
        self.after_end(&ended).await;
    }

    fn move_id(&self) -> String {
        self.receiver
            .offer()
            .map(|offer| offer.move_id.clone())
            .unwrap_or_default()
    }

    fn name(&self) -> String {
        self.receiver
            .offer()
            .and_then(|offer| offer.spec.as_ref())
            .map(|spec| spec.name.clone())
            .unwrap_or_default()
    }

    /// Handles one frame; the answer to send, if it calls for one.
    async fn on_frame(&mut self, frame: SourceFrame) -> Result<Option<DestinationFrame>, HubError> {
        let step = self.receiver.on_frame(frame).map_err(HubError::Transfer)?;
        match step {
            ReceiverStep::Offer(offer) => self.on_offer(offer).await.map(Some),
            ReceiverStep::Module(module) => {
                // Instrument and compile while the rounds stream; the seal waits for it.
                let runtime = Arc::clone(self.supervisor.runtime());
                self.preparing = Some((
                    Instant::now(),
                    tokio::task::spawn_blocking(move || {
                        runtime
                            .prepare(&module)
                            .and_then(PreparedModule::ready_to_rewind)
                            .map(|_| ())
                            .map_err(HubError::from)
                    }),
                ));
                Ok(None)
            }
            ReceiverStep::Round(plan) => self.on_round(plan).await.map(Some),
            ReceiverStep::Chunk {
                hash,
                encoded,
                bytes,
                slots,
            } => {
                if self
                    .supervisor
                    .checkpoint_store()
                    .put_verified_chunk(&hash, &encoded)
                    .map_err(HubError::Checkpoint)?
                {
                    self.received.push(hash);
                }
                // The warm instance takes the decoded chunk itself: no copy.
                let bytes = Arc::new(bytes);
                for slot in slots {
                    self.write_slot(slot, &bytes);
                }
                Ok(None)
            }
            ReceiverStep::Delta { delta, slots } => {
                self.take_pages(delta, slots)?;
                Ok(None)
            }
            ReceiverStep::Logs { entries, early: true } => {
                self.early_logs.extend(entries);
                Ok(None)
            }
            ReceiverStep::Logs { entries, early: false } => {
                self.logs.extend(entries);
                Ok(None)
            }
            ReceiverStep::Seal(manifest) => self.on_seal(manifest).await.map(Some),
            ReceiverStep::Commit { paused_micros } => {
                let started = Instant::now();
                let name = self.name();
                let gate = self
                    .held
                    .as_ref()
                    .map(|held| (Arc::clone(held.control()), held.resumed_at()));
                let warm = match self.held.take() {
                    Some(held) => Some(WarmStart::Held(held)),
                    None => self.warm.take().map(WarmStart::Filled),
                };
                self.supervisor
                    .commit_arrival(&name, self.snapshot.take(), (warm, self.sealed.take()))
                    .await?;
                if let Some(admitted) = self.admitted.as_mut() {
                    admitted.arrived = true;
                }
                let micros = started.elapsed().as_micros() as u64;
                // The run was started at the seal: its effects happen from
                // now on, the kept output first (written to the log store:
                // off the runtime's threads).
                let held = match gate {
                    Some((control, resumed_at)) => {
                        let waited = tokio::task::spawn_blocking(move || control.effects().release())
                            .await
                            .unwrap_or_default();
                        Some(HeldFigures {
                            held: resumed_at.elapsed(),
                            waited,
                        })
                    }
                    None => None,
                };
                // The source counted the pause up to the resume when the run
                // started at the seal; the waits for the commit are downtime too.
                let downtime = match &held {
                    Some(held) => Duration::from_micros(paused_micros) + held.waited,
                    None => Duration::from_micros(paused_micros.saturating_add(micros)),
                };
                self.supervisor.note_arrival_downtime(&name, downtime);
                tracing::info!(
                    function = %name,
                    epoch = self.receiver.new_epoch(),
                    start_us = micros,
                    held_us = held.as_ref().map_or(0, |held| held.held.as_micros() as u64),
                    held_waited_us = held.as_ref().map_or(0, |held| held.waited.as_micros() as u64),
                    "function moved here and runs"
                );
                Ok(Some(self.receiver.started(micros, held.map(HeldFigures::micros))))
            }
            ReceiverStep::Abort(reason) => {
                tracing::info!(function = %self.name(), %reason, "the source aborted the transfer");
                Ok(None)
            }
        }
    }

    async fn on_offer(&mut self, offer: Offer) -> Result<DestinationFrame, HubError> {
        let spec = offer.spec.clone().unwrap_or_default();
        let span = tracing::Span::current();
        span.record("move_id", tracing::field::display(&offer.move_id));
        span.record("function", tracing::field::display(&spec.name));
        // A retry over a link that stalled starts with the source's patience.
        self.watchdog = Watchdog::starting_at(std::time::Duration::from_millis(offer.stall_limit_millis));
        if offer.cluster_id != self.context.cluster_id {
            return Err(HubError::Transfer(TransferError::Unacceptable {
                code: ErrorCode::FailedPrecondition,
                reason: format!(
                    "the source belongs to cluster {:?}, this hub to {:?}",
                    offer.cluster_id, self.context.cluster_id
                ),
            }));
        }
        if let Some(caller) = self.caller_hub_id.as_deref()
            && caller != offer.source_hub_id
        {
            return Err(HubError::Transfer(TransferError::Unacceptable {
                code: ErrorCode::PermissionDenied,
                reason: format!(
                    "the offer names hub {:?} as its source, but the caller's certificate names {caller:?}",
                    offer.source_hub_id
                ),
            }));
        }
        self.supervisor
            .check_arrival(&spec.name, offer.epoch)
            .map_err(|error| match error {
                // Not the deploy's advice: a move replaces nothing.
                HubError::FunctionExists { name } => HubError::Transfer(TransferError::Unacceptable {
                    code: ErrorCode::AlreadyExists,
                    reason: format!(
                        "hub {} runs another function named {name:?} (names are per hub): remove one of them first",
                        self.supervisor.identity().name
                    ),
                }),
                other => other,
            })?;
        // A draining hub moves what it runs away: one moved in would leave again.
        if self.supervisor.draining() {
            let hub = &self.supervisor.identity().name;
            return Err(HubError::Transfer(TransferError::Unacceptable {
                code: ErrorCode::FailedPrecondition,
                reason: format!("hub {hub} is draining: it takes no functions until `ferry undrain {hub}`"),
            }));
        }
        // Mounted resources belong to hubs: a function comes only where they are.
        crate::resources::check_files(
            spec.volume.as_ref(),
            &spec.mounts,
            spec.messaging.as_ref(),
            self.supervisor.resources(),
            &self.supervisor.identity().name,
        )
        .map_err(|reason| HubError::InvalidRequest(format!("cannot take function {:?}: {reason}", spec.name)))?;
        if let (Some(automatic), Some(admission)) = (offer.automatic.as_ref(), self.context.admission.as_ref()) {
            admission.admit(&spec.name, automatic).map_err(|reason| {
                tracing::info!(function = %spec.name, from = %offer.source_hub_name, %reason, "refusing an automatic move");
                HubError::Transfer(TransferError::Unacceptable {
                    code: ErrorCode::ResourceExhausted,
                    reason: format!("hub {} has no room for it: {reason}", self.supervisor.identity().name),
                })
            })?;
            self.admitted = Some(Admitted {
                admission: Arc::clone(admission),
                function: spec.name.clone(),
                arrived: false,
            });
        }
        self.chunk_size = offer.chunk_size as usize;
        self.staged = Some(format!("{} {}", spec.name, offer.move_id));
        let need_module = self.supervisor.store().module(&spec.module_hash).is_err();
        if !need_module {
            // Compile (or load the cached artifact) now, not during the downtime.
            let runtime = Arc::clone(self.supervisor.runtime());
            let hash = spec.module_hash.clone();
            let started = Instant::now();
            let preparing = tokio::task::spawn_blocking(move || {
                runtime
                    .prepare_stored(&hash)
                    .and_then(PreparedModule::ready_to_rewind)
                    .map(|_| ())
            });
            // A cached artifact loads at once: report the time only if it
            // took long enough to need heartbeats.
            self.await_preparation(started, preparing, false).await?;
        }
        tracing::info!(function = %spec.name, from = %offer.source_hub_name, epoch = offer.epoch, need_module, "accepting a function");
        Ok(self.receiver.accept(need_module))
    }

    /// Waits for the module sent with the offer to be ready. Called before
    /// answering a round, so the compile overlaps pre-copy (the function
    /// still runs at the source) and never lands in the downtime.
    async fn module_prepared(&mut self) -> Result<(), HubError> {
        if let Some((started, preparing)) = self.preparing.take() {
            self.await_preparation(started, preparing, true).await?;
        }
        Ok(())
    }

    /// Waits for a module being instrumented and compiled, telling the source
    /// every [`PREPARING_HEARTBEAT`] that this hub is working (a 1 MB module
    /// takes longer than the source's stall limit on a slow board), then how
    /// long it took (always when `report`, else only after heartbeats).
    async fn await_preparation<E>(
        &self,
        started: Instant,
        mut preparing: tokio::task::JoinHandle<Result<(), E>>,
        report: bool,
    ) -> Result<(), HubError>
    where
        HubError: From<E>,
    {
        let (prepared, heartbeats) = self
            .with_heartbeats(&mut preparing, |arrival| {
                arrival.receiver.preparing(started.elapsed(), false)
            })
            .await;
        prepared.map_err(|error| HubError::Internal(format!("prepare task failed: {error}")))??;
        if report || heartbeats > 0 {
            let elapsed = started.elapsed();
            tracing::info!(function = %self.name(), elapsed_ms = elapsed.as_millis() as u64, "module prepared for an arriving function");
            let _ = self.outbound.send(Ok(self.receiver.preparing(elapsed, true))).await;
        }
        Ok(())
    }

    /// Waits for `task`, telling the source every [`PREPARING_HEARTBEAT`]
    /// that this hub works (the frame `heartbeat` makes), so that its stall
    /// limit judges silence, not work. Returns the task's end and how many
    /// heartbeats went out.
    async fn with_heartbeats<T>(
        &self,
        task: &mut tokio::task::JoinHandle<T>,
        heartbeat: impl Fn(&Self) -> DestinationFrame,
    ) -> (Result<T, tokio::task::JoinError>, u32) {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + PREPARING_HEARTBEAT, PREPARING_HEARTBEAT);
        let mut sent = 0u32;
        loop {
            tokio::select! {
                joined = &mut *task => return (joined, sent),
                _ = ticks.tick() => {
                    sent += 1;
                    // A source that went away is noticed by the next read.
                    let _ = self.outbound.send(Ok(heartbeat(self))).await;
                }
            }
        }
    }

    async fn on_round(&mut self, mut plan: RoundPlan) -> Result<DestinationFrame, HubError> {
        let answering = Instant::now();
        self.module_prepared().await?;
        // The previous round's chunks are looked up (staged, filled) now.
        self.index_pages()?;
        // The last round is short and the seal follows at once: what it
        // would stage is counted by the seal instead.
        if !plan.last {
            // Waited for: a flush of the first round's 64 MiB still running
            // when the source pauses the function would slow every write
            // of the last round and the seal (measured: the last round's
            // answer 10–27 ms late). The wait falls in pre-copy instead,
            // while the function runs.
            let mut settled = std::mem::take(&mut plan.settled);
            settled.extend(plan.settled_volume.drain(..).map(Some));
            self.stage_settled(settled).await;
            // Its chunks are in and staged: lay the previous round's volume
            // out now, while the function still runs at the source.
            if let Some(entries) = plan.settled_entries.take() {
                self.lay_out_ahead(entries).await;
            }
        }
        if self.early_logs_import.is_none() && !self.early_logs.is_empty() {
            let supervisor = self.supervisor.clone();
            let (name, move_id, entries) = (self.name(), self.move_id(), self.early_logs.clone());
            self.early_logs_import = Some(EarlyLogs::Storing(tokio::task::spawn_blocking(move || {
                supervisor.import_arrival_logs(&name, &move_id, &entries)
            })));
        }
        if plan.number == 1 {
            self.warm_up().await;
        }
        self.grow_memory(plan.memory_bytes as usize);
        for slot in &plan.zeroed {
            self.zero_slot(*slot);
        }
        let mut lacking = Vec::new();
        let store = self.supervisor.checkpoint_store().clone();
        for (hash, slots) in plan.slots_by_hash {
            // A chunk of the volume's files only (no slots): stored or asked for.
            if !store.contains_chunk(&hash).map_err(HubError::Checkpoint)? || !self.fill_from_store(&hash, &slots) {
                lacking.push(hash);
            }
        }
        tracing::debug!(
            function = %self.name(),
            round = plan.number,
            last = plan.last,
            answer_us = answering.elapsed().as_micros() as u64,
            "round answered"
        );
        self.receiver.need(lacking).map_err(HubError::Transfer)
    }

    /// Waits until the early log history is stored (or failed to be).
    async fn early_logs_done(&mut self) {
        if let Some(EarlyLogs::Storing(storing)) = self.early_logs_import.take() {
            let stored = match storing.await {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    tracing::warn!(function = %self.name(), error = %ferry_proto::error_chain(&error), "could not store the early log history; storing it with the rest");
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, "early log import task failed");
                    false
                }
            };
            self.early_logs_import = Some(if stored { EarlyLogs::Stored } else { EarlyLogs::Failed });
        }
    }

    /// The stream is over: discard, ask the source, or nothing (it runs here).
    async fn after_end(&mut self, why: &str) {
        self.early_logs_done().await;
        // A run started at the seal and not committed is stopped unseen.
        self.held = None;
        let name = self.name();
        match self.receiver.after_stream_end() {
            Disposition::Keep => {}
            Disposition::Discard => {
                if !name.is_empty() {
                    tracing::info!(function = %name, reason = %why, "transfer ended before the commit; discarding");
                }
                // (No volume is being laid out ahead now: a round is
                // answered only once its layout is done.)
                if self.installed
                    && let Err(error) = self
                        .supervisor
                        .discard_arrival(&name, self.receiver.new_epoch().saturating_sub(1))
                {
                    tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "could not discard an arrival");
                }
                if self.early_logs_import.is_some() && !self.installed {
                    self.supervisor.drop_arrival_logs(&name, &self.move_id());
                }
                if !self.installed && !name.is_empty() {
                    // The warm instance made its (empty) volume directory.
                    self.supervisor.remove_files_unless_here(&name);
                }
                // What came as pages is kept for a retry too.
                if let Err(error) = self.index_pages() {
                    tracing::warn!(function = %name, error = %ferry_proto::error_chain(&error), "could not index the chunks that came as pages");
                }
                self.hold_what_arrived(&name);
            }
            Disposition::Resolve => {
                tracing::warn!(function = %name, reason = %why, "transfer ended while prepared; resolving with the source");
                if let Some((_, epoch, source)) = self
                    .supervisor
                    .pending_arrivals()
                    .into_iter()
                    .find(|(pending, ..)| *pending == name)
                {
                    resolve::spawn_resolver(
                        self.supervisor.clone(),
                        self.context.connector.clone(),
                        name,
                        epoch,
                        source,
                        self.snapshot.take(),
                    );
                }
            }
        }
    }
}

/// What a run started at the seal went through before its effects were let out.
struct HeldFigures {
    /// From its resume to its effects let out.
    held: Duration,
    /// Of that, the time it waited to do something it could not do yet.
    waited: Duration,
}

impl HeldFigures {
    fn micros(self) -> (u64, u64) {
        (self.held.as_micros() as u64, self.waited.as_micros() as u64)
    }
}
