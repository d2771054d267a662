//! The source's side of a move: pre-copy rounds while the function runs,
//! the paused last round, the durable record of the move, the commit. Any
//! failure before the record leaves the function running here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_migrator::checkpoint::DEFAULT_CHUNK_SIZE;
use ferry_migrator::transfer::{Heard, Owner, Sender, TransferError};
use ferry_proto::PROTOCOL_VERSION;
use ferry_proto::internal::v1::{
    AutomaticMove, DestinationFrame, ForwardPointer, LogBatch, ModuleData, Offer, SourceFrame, Started, source_frame,
};
use ferry_proto::v1::{FunctionState, LogEntry, MigrateProgress, MigrateSummary, MoveRetry, migrate_progress};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use tracing::Instrument;

mod chunks_out;
mod hashes;
mod retries;
mod rounds;
mod shared_view;
mod wire;

use retries::Retries;
use wire::{Answers, read_answers, recv, refusal_behind, send, status_error};

use super::watchdog::Watchdog;
use super::{DECISION_TIMEOUT, MigrationContext, STALL_TIMEOUT, migration_client};
use crate::connector::{Purpose, TRANSFER_CONNECT_TIMEOUT};
use crate::error::HubError;
use crate::runtime::Snapshot;
use crate::supervisor::{MoveCandidate, MoveStep, Supervisor};

/// Log entries per `LogBatch` frame.
const LOG_BATCH: usize = 512;
/// Progress is reported after every this many bytes sent.
const PROGRESS_EVERY: u64 = 1 << 20;

/// The hub a function moves to.
#[derive(Debug, Clone)]
pub struct Target {
    pub hub_id: String,
    pub hub_name: String,
    pub address: SocketAddr,
    /// Set for a move the rebalancer decided: what the destination weighs.
    pub automatic: Option<AutomaticMove>,
}

/// Moves `name` to `target` while it runs, reporting progress; returns the summary.
/// Every log line of the move, on this hub and (through the offer) on the
/// destination, carries its `move_id`.
pub async fn migrate(
    supervisor: &Supervisor,
    context: &MigrationContext,
    name: &str,
    target: &Target,
    progress: mpsc::Sender<MigrateProgress>,
) -> Result<MigrateSummary, HubError> {
    let result = attempts(supervisor, context, name, target, progress).await;
    // Whatever became of it, a function the move slowed down runs freely.
    supervisor.slow_for_move(name, None);
    result
}

/// [`migrate`]: the move's attempts, until one ends it.
async fn attempts(
    supervisor: &Supervisor,
    context: &MigrationContext,
    name: &str,
    target: &Target,
    progress: mpsc::Sender<MigrateProgress>,
) -> Result<MigrateSummary, HubError> {
    let mut retries = Retries::default();
    // What earlier attempts sent: (chunk bytes, module bytes).
    let mut sent_before = (0, 0);
    let mut watchdog = Watchdog::default();
    loop {
        let move_id = new_move_id();
        let span = tracing::info_span!("move", %move_id, function = %name, to = %target.hub_name);
        let outcome = migrate_as(
            supervisor,
            context,
            name,
            target,
            progress.clone(),
            move_id,
            watchdog.clone(),
        )
        .instrument(span)
        .await;
        match outcome {
            Attempt::Done(result) => {
                supervisor.metrics().migration(
                    result
                        .as_ref()
                        .ok()
                        .map(|summary| Duration::from_micros(summary.downtime_micros)),
                );
                return result.map(|mut summary| {
                    summary.attempts = retries.attempt();
                    summary.bytes_sent += sent_before.0;
                    summary.module_bytes_sent += sent_before.1;
                    summary
                });
            }
            Attempt::LinkFailed {
                error,
                sent,
                delivered,
                reason,
            } => {
                let attempt = retries.attempt();
                if !retries.retry_after_link_failure(delivered) {
                    supervisor.metrics().migration(None);
                    return Err(error);
                }
                sent_before = (sent_before.0 + sent.0, sent_before.1 + sent.1);
                tracing::info!(function = %name, to = %target.hub_name, attempt, delivered, error = %ferry_proto::error_chain(&error), "retrying the move over a fresh connection; the destination keeps what it received");
                let retry = MoveRetry {
                    attempt: retries.attempt(),
                    reason,
                    delivered_bytes: delivered,
                };
                let _ = progress.try_send(MigrateProgress {
                    event: Some(migrate_progress::Event::Retrying(retry)),
                });
                // A stalled connection stays in TCP's backoff: start anew,
                // and give the next attempt the patience this link needs.
                context.connector.forget(&target.address.to_string(), Purpose::Transfer);
                watchdog = Watchdog::starting_at(watchdog.limit().saturating_mul(RETRY_PATIENCE));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// The pause before a move is tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// A retry's stall limit starts at this many times the limit the failed
/// attempt ended with.
const RETRY_PATIENCE: u32 = 4;

/// How one attempt at a move ended.
enum Attempt {
    /// Moved, or failed for a reason another attempt would meet again.
    Done(Result<MigrateSummary, HubError>),
    /// The link stalled or broke; the function continues here. `sent`:
    /// the chunk and module bytes this attempt sent; `delivered`: the bytes
    /// the destination said it read.
    LinkFailed {
        error: HubError,
        sent: (u64, u64),
        delivered: u64,
        /// What failed, without the move's own wording around it.
        reason: String,
    },
}

/// A fresh move id: 64 random bits in hex.
fn new_move_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough for logs without an entropy source.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn migrate_as(
    supervisor: &Supervisor,
    context: &MigrationContext,
    name: &str,
    target: &Target,
    progress: mpsc::Sender<MigrateProgress>,
    move_id: String,
    watchdog: Watchdog,
) -> Attempt {
    let (candidate, _moving) = match supervisor.begin_move(name) {
        Ok(begun) => begun,
        Err(error) => return Attempt::Done(Err(error)),
    };
    let started = Instant::now();
    let mut sender = Sender::new(DEFAULT_CHUNK_SIZE, context.policy);
    let mut run = MoveRun {
        supervisor,
        move_id,
        name,
        target,
        candidate: &candidate,
        progress,
        paused: None,
        paused_at: None,
        memory_bytes: 0,
        volume_bytes_read: 0,
        cpu_at_start: None,
        cpu_rate: None,
        slowed_to_cores: None,
        module_bytes: 0,
        final_round: Duration::ZERO,
        prepare: Duration::ZERO,
        resumed_after: None,
        last_early_log: None,
        watchdog,
    };
    supervisor.note_move(
        name,
        MoveStep::Began {
            to_hub_name: &target.hub_name,
        },
    );
    let result = run.transfer(context, &mut sender).await;
    supervisor.note_move(name, MoveStep::Ended);
    supervisor.forget_dirty_set(name, &run.dirty_set());
    let stats = sender.stats();
    match result {
        Ok(start) => Attempt::Done(Ok(run.summary(&sender, started, Some(&start)))),
        Err(error) if sender.owner_after_failure() == Owner::Destination => {
            tracing::warn!(function = %name, to = %target.hub_name, error = %error, "moved, but the destination did not confirm the start; it starts the function when it resolves the handoff");
            Attempt::Done(Ok(run.summary(&sender, started, None)))
        }
        Err(error) => {
            tracing::warn!(function = %name, to = %target.hub_name, rounds = stats.rounds, error = %error, "move failed; the function continues here");
            if let Err(error) = supervisor.continue_after_failed_move(name, run.paused.take()).await {
                return Attempt::Done(Err(error));
            }
            let link_failed = matches!(error, TransferError::Truncated { .. });
            let reason = error.to_string();
            let source_hub = &supervisor.identity().name;
            // A function that ended during the pre-copy does not continue.
            let where_now = match supervisor.get(name).map(|info| info.state()) {
                Ok(state @ (FunctionState::Exited | FunctionState::Failed | FunctionState::Stopped)) => format!(
                    "the function ended during the move: it is {} on hub {source_hub}",
                    crate::supervisor::state_name(state as i32)
                ),
                _ => format!("the function continues on hub {source_hub}"),
            };
            let failed = HubError::MoveFailed {
                name: name.to_owned(),
                hub: target.hub_name.clone(),
                where_now,
                error: Box::new(error),
            };
            if link_failed {
                Attempt::LinkFailed {
                    error: failed,
                    sent: (stats.bytes_sent, run.module_bytes),
                    delivered: stats.bytes_delivered,
                    reason,
                }
            } else {
                Attempt::Done(Err(failed))
            }
        }
    }
}

struct MoveRun<'a> {
    supervisor: &'a Supervisor,
    move_id: String,
    name: &'a str,
    target: &'a Target,
    candidate: &'a MoveCandidate,
    progress: mpsc::Sender<MigrateProgress>,
    /// The snapshot the function was paused in, until it runs elsewhere.
    paused: Option<Arc<Snapshot>>,
    paused_at: Option<Instant>,
    memory_bytes: u64,
    /// File bytes the rounds' captures read.
    volume_bytes_read: u64,
    /// The function's CPU use when the rounds began, and since then, once
    /// the move first slowed it down: what the steps are shares of.
    cpu_at_start: Option<(Duration, Instant)>,
    cpu_rate: Option<f64>,
    /// The cores it was last held to (see `rounds::slow_down`).
    slowed_to_cores: Option<f64>,
    module_bytes: u64,
    final_round: Duration,
    prepare: Duration,
    /// From the pause here to the function running on the destination,
    /// when it started there at the seal (its effects held until the commit).
    resumed_after: Option<Duration>,
    /// The last log entry sent before the rounds: the last round sends
    /// only what follows it.
    last_early_log: Option<LogEntry>,
    /// This side's stall limit: every frame sent or heard is progress.
    watchdog: Watchdog,
}

impl MoveRun<'_> {
    /// The dirty set of this move's rounds in the function's instance.
    fn dirty_set(&self) -> String {
        format!("move {}", self.move_id)
    }

    /// The whole exchange; returns what the destination said of the start.
    async fn transfer(&mut self, context: &MigrationContext, sender: &mut Sender) -> Result<Started, TransferError> {
        let (outbound, frames) = mpsc::channel::<SourceFrame>(32);
        let offer = Offer {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: context.cluster_id.clone(),
            source_hub_id: self.supervisor.identity().id.clone(),
            source_hub_name: self.supervisor.identity().name.clone(),
            source_address: context.listen_address.to_string(),
            spec: Some(self.candidate.spec.clone()),
            epoch: self.candidate.epoch,
            chunk_size: sender.chunk_size(),
            starts: self.candidate.starts,
            move_id: self.move_id.clone(),
            automatic: self.target.automatic,
            stall_limit_millis: self.watchdog.limit().as_millis() as u64,
            instrumentation_version: ferry_migrator::INSTRUMENTATION_VERSION,
        };
        send(&self.watchdog, &outbound, frame(source_frame::Frame::Offer(offer))).await?;
        let mut client = migration_client(
            &context.connector,
            &self.target.address.to_string(),
            &self.target.hub_id,
        )?;
        // Connecting (with its own limit) and the answer to the offer.
        let open_limit = TRANSFER_CONNECT_TIMEOUT + STALL_TIMEOUT;
        let opened = tokio::time::timeout(open_limit, client.transfer(ReceiverStream::new(frames)))
            .await
            .map_err(|_| {
                truncated(format!(
                    "hub {} did not answer within {open_limit:?}",
                    self.target.hub_name
                ))
            })?
            .map_err(status_error)?;
        let (mut inbound, _reader) = read_answers(opened.into_inner(), self.watchdog.clone());

        let accept = self.receive(sender, &mut inbound, None).await?;
        let need_module = sender.on_accept(accept)?;
        if need_module {
            let module = self
                .supervisor
                .store()
                .module(&self.candidate.spec.module_hash)
                .map_err(|error| local(format!("cannot read the module: {error}")))?;
            self.module_bytes = module.len() as u64;
            send(
                &self.watchdog,
                &outbound,
                frame(source_frame::Frame::Module(ModuleData { module })),
            )
            .await?;
        }

        // The history so far travels while the function still runs; the
        // last round adds what it wrote meanwhile.
        let early = self.send_logs(&outbound).await;
        let result = match early {
            Ok(()) => self.rounds(sender, &outbound, &mut inbound).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            let error = refusal_behind(error, &mut inbound).await;
            return Err(abort(sender, &outbound, error));
        }
        let prepared_wait = Instant::now();
        let prepared = self.receive(sender, &mut inbound, Some(DECISION_TIMEOUT)).await;
        let running = match prepared.and_then(|prepared| sender.on_prepared(prepared)) {
            Ok(running) => running,
            Err(error) => return Err(abort(sender, &outbound, error)),
        };
        self.prepare = prepared_wait.elapsed();
        if running > 0
            && let Some(paused_at) = self.paused_at
        {
            self.resumed_after = Some(paused_at.elapsed().saturating_sub(Duration::from_micros(running)));
        }

        // A destination removed from the cluster while the function was on
        // its way never gets it: the record below is the point of no return.
        if context
            .connector
            .revocations()
            .is_some_and(|revocations| revocations.is_revoked(&self.target.hub_id))
        {
            let error = local(format!(
                "hub {} was removed from the cluster during the move",
                self.target.hub_id
            ));
            return Err(abort(sender, &outbound, error));
        }
        let new_epoch = self.candidate.epoch + 1;
        let pointer = ForwardPointer {
            hub_id: self.target.hub_id.clone(),
            hub_name: self.target.hub_name.clone(),
            address: self.target.address.to_string(),
        };
        if let Err(error) = self.supervisor.record_moved(self.name, new_epoch, pointer) {
            let error = local(format!("cannot record the move: {error}"));
            return Err(abort(sender, &outbound, error));
        }
        // The destination owns the function now. The paused instance and
        // the state left here are freed only once it has answered: both
        // take CPU (unmapping the memory, store writes) that the
        // destination's start needs on a small machine.
        let left_behind = self.paused.take();
        let paused = self
            .resumed_after
            .or_else(|| self.paused_at.map(|at| at.elapsed()))
            .unwrap_or_default();
        let recorded = send(&self.watchdog, &outbound, sender.move_recorded(paused)).await;
        let started = match recorded {
            Ok(()) => self.receive(sender, &mut inbound, Some(DECISION_TIMEOUT)).await,
            Err(error) => Err(error),
        };
        drop(left_behind);
        self.supervisor.drop_state_left_behind_later(self.name, new_epoch);
        let started = sender.on_started(started?)?;
        tracing::info!(function = %self.name, to = %self.target.hub_name, epoch = new_epoch, "function moved");
        Ok(started)
    }

    /// The next answer from the destination. `Preparing` heartbeats (the
    /// destination compiling the module) re-arm the stall limit and are
    /// shown as progress: only silence fails a move, never work.
    async fn receive(
        &mut self,
        sender: &mut Sender,
        inbound: &mut Answers,
        decision: Option<Duration>,
    ) -> Result<DestinationFrame, TransferError> {
        loop {
            match sender.hear(recv(&self.watchdog, inbound, decision).await?)? {
                Heard::Answer(frame) => return Ok(frame),
                Heard::Received { bytes } => {
                    tracing::trace!(function = %self.name, bytes, "destination progress");
                }
                Heard::Preparing { elapsed_micros, done } => {
                    tracing::debug!(function = %self.name, elapsed_us = elapsed_micros, done, "destination preparing the module");
                    self.report(migrate_progress::Event::ModulePreparingMicros(elapsed_micros));
                }
            }
        }
    }

    /// Sends the log history: all of it the first time (before the
    /// rounds), then what followed the last entry sent (in the last round).
    async fn send_logs(&mut self, outbound: &mpsc::Sender<SourceFrame>) -> Result<(), TransferError> {
        let unreadable = |error: HubError| local(format!("cannot read the logs: {error}"));
        let history = match &self.last_early_log {
            None => self.supervisor.log_history(self.name).map_err(unreadable)?,
            Some(last) => {
                let mut since = self
                    .supervisor
                    .log_history_from(self.name, last.seq)
                    .map_err(unreadable)?;
                match since.first() {
                    Some(first) if first == last => {
                        since.remove(0);
                    }
                    // The kept window moved past it: all of these are new.
                    Some(first) if first.seq > last.seq => {}
                    // Only a restart from a checkpoint rewrites a log; the
                    // move could not carry on from such a run.
                    _ => {
                        return Err(local("the function's log was rewound during the move".to_owned()));
                    }
                }
                since
            }
        };
        if let Some(last) = history.last() {
            self.last_early_log = Some(last.clone());
        }
        for batch in history.chunks(LOG_BATCH) {
            let logs = LogBatch {
                entries: batch.to_vec(),
            };
            send(&self.watchdog, outbound, frame(source_frame::Frame::Logs(logs))).await?;
        }
        Ok(())
    }

    fn report(&self, event: migrate_progress::Event) {
        match &event {
            migrate_progress::Event::Round(round) => self.supervisor.note_move(
                self.name,
                MoveStep::Round {
                    number: round.number,
                    last: round.last,
                },
            ),
            migrate_progress::Event::RoundBytesSent(bytes) => {
                self.supervisor.note_move(self.name, MoveStep::RoundBytes(*bytes));
            }
            _ => {}
        }
        // A client that stopped listening does not stop the move.
        let _ = self.progress.try_send(MigrateProgress { event: Some(event) });
    }

    /// `start`: what the destination said of the start, if it confirmed it.
    fn summary(&self, sender: &Sender, started: Instant, start: Option<&Started>) -> MigrateSummary {
        let stats = sender.stats();
        let micros = |duration: Duration| u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        // A function that ran on the destination from the seal was down from
        // the pause to that resume, and while it waited there for the commit.
        let downtime = match self.resumed_after {
            Some(resumed) => micros(resumed) + start.map_or(0, |start| start.held_waited_micros),
            None => self.paused_at.map_or(0, |at| micros(at.elapsed())),
        };
        MigrateSummary {
            function: self.name.to_owned(),
            from_hub: self.supervisor.identity().name.clone(),
            to_hub: self.target.hub_name.clone(),
            epoch: self.candidate.epoch + 1,
            rounds: stats.rounds,
            memory_bytes: self.memory_bytes,
            bytes_offered: stats.bytes_offered,
            bytes_deduplicated: stats.bytes_deduplicated,
            bytes_sent: stats.bytes_sent,
            bytes_left_out_by_pages: stats.bytes_left_out_by_pages,
            module_bytes_sent: self.module_bytes,
            total_micros: started.elapsed().as_micros() as u64,
            downtime_micros: downtime,
            final_round_micros: self.final_round.as_micros() as u64,
            prepare_micros: self.prepare.as_micros() as u64,
            start_micros: start.map_or(0, |start| start.start_micros),
            start_confirmed: start.is_some(),
            module_prepare_micros: stats.module_prepare_micros,
            attempts: 1,
            effects_held_micros: start.map_or(0, |start| start.held_micros),
            volume_bytes_read: self.volume_bytes_read,
            slowed_to_cores: self.slowed_to_cores.unwrap_or_default(),
        }
    }
}

/// Tells the destination the source keeps the function (best effort: the
/// stream may be gone already), and gives the error back.
fn abort(sender: &mut Sender, outbound: &mpsc::Sender<SourceFrame>, error: TransferError) -> TransferError {
    if let Some(abort) = sender.abort(&error.to_string()) {
        let _ = outbound.try_send(abort);
    }
    error
}

fn frame(frame: source_frame::Frame) -> SourceFrame {
    SourceFrame { frame: Some(frame) }
}

fn truncated(reason: String) -> TransferError {
    TransferError::Truncated { reason }
}

fn local(reason: String) -> TransferError {
    TransferError::Local { reason }
}
