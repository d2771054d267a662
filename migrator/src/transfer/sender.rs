//! The source's side of a transfer: which chunks each round sends, when to
//! pause the function, and who owns it if the transfer fails.

use std::collections::{HashMap, HashSet};

use ferry_proto::internal::v1::{
    CheckpointManifest, ChunkRef, Commit, DestinationFrame, Round, SourceFrame, Started, VolumeChunk, VolumeState,
    destination_frame, source_frame,
};

use super::{RoundPolicy, TransferError, code_from_name, entry_hash};
use crate::checkpoint::ChunkHash;

/// Where the transfer stands, as far as the source knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Offered,
    Accepted,
    /// A round was offered; its `Need` is awaited.
    RoundOffered,
    /// Chunks of the round are being sent.
    Sending,
    Sealed,
    /// The destination persisted the function; the move is not recorded yet.
    Prepared,
    /// The move is durable here: the destination owns the function.
    MoveRecorded,
    Started,
}

/// Who runs the function if the transfer stops now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The source: it aborts and continues the function.
    Source,
    /// The destination: the source keeps a forward pointer; the destination
    /// starts the function once it learns the handoff committed.
    Destination,
}

/// What comes after a pre-copy round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    AnotherRound,
    /// Another round, with the function held to `percent` % of the CPU it
    /// used before: it wrote memory as fast as rounds send it.
    SlowDown {
        percent: u32,
    },
    /// Pause the function and send the last round.
    Pause,
}

/// What the source sent, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Rounds offered, the paused one included.
    pub rounds: u32,
    /// Uncompressed bytes of the changed non-zero chunks the rounds offered.
    pub bytes_offered: u64,
    /// Offered bytes the destination already held.
    pub bytes_deduplicated: u64,
    /// Encoded chunk bytes sent.
    pub bytes_sent: u64,
    /// Uncompressed bytes of the chunks sent.
    pub bytes_sent_uncompressed: u64,
    /// Bytes of the chunks sent as their written pages that those pages
    /// left out (see `page_delta`).
    pub bytes_left_out_by_pages: u64,
    /// The share (in %) of its CPU the function was last slowed down to
    /// (0: never).
    pub slowed_to_percent: u32,
    /// Time the destination said it spent preparing the module, in µs.
    pub module_prepare_micros: u64,
    /// The most the destination reported having read (its `Received`
    /// frames): what this stream delivered, as far as the source knows.
    pub bytes_delivered: u64,
}

/// A frame from the destination, sorted: a heartbeat the source only
/// notes, or an answer one of the `on_*` methods takes.
#[derive(Debug)]
pub enum Heard {
    /// The destination is preparing the module: not silent, not an answer.
    Preparing {
        elapsed_micros: u64,
        done: bool,
    },
    /// The destination has read this many bytes: progress, not an answer.
    Received {
        bytes: u64,
    },
    Answer(DestinationFrame),
}

/// Where the bytes of a chunk the destination needs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkAt {
    /// In this memory slot of the round's capture.
    Memory(u32),
    /// Among the volume chunks the round's capture read.
    Volume,
}

/// One planned round: the frame to send and the bytes it offers.
#[derive(Debug, Clone)]
pub struct PlannedRound {
    pub frame: SourceFrame,
    /// Uncompressed bytes of the changed non-zero chunks.
    pub changed_bytes: u64,
}

/// The source's state machine.
#[derive(Debug)]
pub struct Sender {
    phase: Phase,
    policy: RoundPolicy,
    chunk_size: u32,
    /// What the destination's image holds per chunk slot after the rounds so far.
    destination: Vec<Option<ChunkHash>>,
    memory_bytes: u64,
    round: u32,
    last: bool,
    /// Hash → a slot holding it, for the chunks of the current round.
    offered: HashMap<ChunkHash, u32>,
    /// Volume chunks offered in any round so far: the destination holds them.
    volume_offered: HashSet<ChunkHash>,
    /// Volume chunks new in the current round, with their lengths.
    volume_round: HashMap<ChunkHash, u32>,
    /// Bytes of the changed non-zero slots of the current round.
    round_bytes: u64,
    /// The same for the round before it.
    previous_round_bytes: Option<u64>,
    /// The volume's entries as the last round found them, and whether they
    /// differ from the round's before (files the destination has still to
    /// lay out).
    volume_entries: Option<VolumeState>,
    volume_changed: bool,
    /// The destination takes chunks as the pages written (`Accept`).
    takes_page_deltas: bool,
    /// The memory's size in the previous round (0 before the second).
    previous_memory_bytes: u64,
    /// Slow-down steps taken (see [`RoundPolicy::slow_down_percent`]).
    slowed: usize,
    stats: SenderStats,
}

impl Sender {
    /// A sender whose offer (built by the caller) was just sent.
    pub fn new(chunk_size: u32, policy: RoundPolicy) -> Sender {
        Sender {
            phase: Phase::Offered,
            policy,
            chunk_size,
            destination: Vec::new(),
            memory_bytes: 0,
            round: 0,
            last: false,
            offered: HashMap::new(),
            volume_offered: HashSet::new(),
            volume_round: HashMap::new(),
            round_bytes: 0,
            previous_round_bytes: None,
            volume_entries: None,
            volume_changed: false,
            takes_page_deltas: false,
            previous_memory_bytes: 0,
            slowed: 0,
            stats: SenderStats::default(),
        }
    }

    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The memory chunks of the current round may travel as the pages
    /// written since the previous round if they lie whole below this many
    /// bytes: the previous round's memory, when the destination takes page
    /// deltas (0 in the first round, or when it does not).
    pub fn page_deltas_below(&self) -> u64 {
        if self.takes_page_deltas {
            self.previous_memory_bytes
        } else {
            0
        }
    }

    /// Who owns the function if the transfer ends here.
    pub fn owner_after_failure(&self) -> Owner {
        match self.phase {
            Phase::MoveRecorded | Phase::Started => Owner::Destination,
            _ => Owner::Source,
        }
    }

    /// Sorts a frame: a `Preparing` heartbeat is taken here (valid until the
    /// destination is prepared) and the caller waits on; anything else is an
    /// answer for the `on_*` method of the current phase.
    pub fn hear(&mut self, frame: DestinationFrame) -> Result<Heard, TransferError> {
        match frame.frame {
            Some(destination_frame::Frame::Preparing(preparing)) => {
                if !matches!(
                    self.phase,
                    Phase::Offered | Phase::Accepted | Phase::RoundOffered | Phase::Sending | Phase::Sealed
                ) {
                    return Err(TransferError::protocol(format!("preparing while {:?}", self.phase)));
                }
                self.stats.module_prepare_micros = self.stats.module_prepare_micros.max(preparing.elapsed_micros);
                Ok(Heard::Preparing {
                    elapsed_micros: preparing.elapsed_micros,
                    done: preparing.done,
                })
            }
            // Reports may trail the frames they count: any phase.
            Some(destination_frame::Frame::Received(received)) => {
                self.stats.bytes_delivered = self.stats.bytes_delivered.max(received.bytes);
                Ok(Heard::Received { bytes: received.bytes })
            }
            other => Ok(Heard::Answer(DestinationFrame { frame: other })),
        }
    }

    /// The answer to the offer: whether the destination wants the module.
    pub fn on_accept(&mut self, frame: DestinationFrame) -> Result<bool, TransferError> {
        self.expect(Phase::Offered, "accept")?;
        match refused(frame)? {
            destination_frame::Frame::Accept(accept) => {
                self.phase = Phase::Accepted;
                self.takes_page_deltas = accept.takes_page_deltas;
                Ok(accept.need_module)
            }
            other => Err(unexpected(&other, "an accept")),
        }
    }

    /// Plans the next round from the hashes of memory as captured
    /// (`None`: an all-zero chunk) and the distinct chunks of the volume's
    /// files with their lengths. With `last` the function is paused and
    /// this round must leave the destination with exactly this memory and
    /// every chunk of this volume.
    pub fn plan_round(
        &mut self,
        chunk_hashes: &[Option<ChunkHash>],
        memory_bytes: u64,
        volume: &[(ChunkHash, u32)],
        last: bool,
    ) -> PlannedRound {
        self.plan_round_with_volume(chunk_hashes, memory_bytes, volume, None, last)
    }

    /// [`Sender::plan_round`] that also sends the volume's entries as the
    /// round's capture found them (for the destination to lay out ahead of
    /// the seal; left out of the last round).
    pub fn plan_round_with_volume(
        &mut self,
        chunk_hashes: &[Option<ChunkHash>],
        memory_bytes: u64,
        volume: &[(ChunkHash, u32)],
        entries: Option<VolumeState>,
        last: bool,
    ) -> PlannedRound {
        debug_assert!(matches!(self.phase, Phase::Accepted | Phase::Sending));
        self.round += 1;
        self.last = last;
        self.previous_memory_bytes = if self.round > 1 { self.memory_bytes } else { 0 };
        self.memory_bytes = memory_bytes;
        // Memory only grows; slots beyond the old end start as zero.
        if self.destination.len() < chunk_hashes.len() {
            self.destination.resize(chunk_hashes.len(), None);
        }
        self.offered.clear();
        let mut changed = Vec::new();
        let mut changed_bytes = 0;
        for (index, (held, current)) in self.destination.iter_mut().zip(chunk_hashes).enumerate() {
            if held == current {
                continue;
            }
            *held = *current;
            let index = index as u32;
            changed.push(ChunkRef {
                index,
                hash: current.map(|hash| hash.0.to_vec()).unwrap_or_default(),
            });
            if let Some(hash) = current {
                changed_bytes += slot_len(memory_bytes, self.chunk_size, index);
                self.offered.entry(*hash).or_insert(index);
            }
        }
        self.volume_round.clear();
        let mut volume_chunks = Vec::new();
        for &(hash, len) in volume {
            if self.volume_offered.insert(hash) {
                self.volume_round.insert(hash, len);
                volume_chunks.push(VolumeChunk {
                    hash: hash.0.to_vec(),
                    len,
                });
                changed_bytes += u64::from(len);
            }
        }
        if self.round > 1 {
            self.previous_round_bytes = Some(self.round_bytes);
        }
        self.volume_changed = entries.is_some() && entries != self.volume_entries;
        self.volume_entries.clone_from(&entries);
        self.round_bytes = changed_bytes;
        self.stats.rounds = self.round;
        self.stats.bytes_offered += changed_bytes;
        self.phase = Phase::RoundOffered;
        PlannedRound {
            frame: SourceFrame {
                frame: Some(source_frame::Frame::Round(Round {
                    number: self.round,
                    last,
                    memory_bytes,
                    changed,
                    volume_chunks,
                    volume: entries.filter(|_| !last),
                })),
            },
            changed_bytes,
        }
    }

    /// The destination's `Need` for the current round: the chunks to send,
    /// each with where its bytes are.
    pub fn on_need(&mut self, frame: DestinationFrame) -> Result<Vec<(ChunkHash, ChunkAt)>, TransferError> {
        self.expect(Phase::RoundOffered, "need")?;
        let need = match refused(frame)? {
            destination_frame::Frame::Need(need) => need,
            other => return Err(unexpected(&other, "a need")),
        };
        if need.round != self.round {
            return Err(TransferError::protocol(format!(
                "need for round {}, but round {} is current",
                need.round, self.round
            )));
        }
        let mut to_send = Vec::with_capacity(need.hashes.len());
        let mut seen = std::collections::HashSet::new();
        for entry in &need.hashes {
            let hash = entry_hash(entry)?.ok_or_else(|| TransferError::protocol("need names an all-zero chunk"))?;
            let at = match (self.offered.get(&hash), self.volume_round.contains_key(&hash)) {
                (Some(index), _) => ChunkAt::Memory(*index),
                (None, true) => ChunkAt::Volume,
                (None, false) => {
                    return Err(TransferError::protocol(format!(
                        "need names chunk {hash}, which round {} did not offer",
                        self.round
                    )));
                }
            };
            if !seen.insert(hash) {
                return Err(TransferError::protocol(format!("need names chunk {hash} twice")));
            }
            to_send.push((hash, at));
        }
        // Slots sharing a hash go once; what is not sent was deduplicated.
        let needed: u64 = to_send
            .iter()
            .map(|(hash, at)| match at {
                ChunkAt::Memory(index) => self.slot_len(*index),
                ChunkAt::Volume => u64::from(self.volume_round.get(hash).copied().unwrap_or_default()),
            })
            .sum();
        self.stats.bytes_deduplicated += self.round_bytes.saturating_sub(needed);
        self.phase = Phase::Sending;
        Ok(to_send)
    }

    /// Records one chunk as sent.
    pub fn chunk_sent(&mut self, uncompressed: u64, encoded: u64) {
        self.stats.bytes_sent += encoded;
        self.stats.bytes_sent_uncompressed += uncompressed;
    }

    /// Records one chunk of `chunk_len` bytes as sent as `pages_len` bytes
    /// of its written pages, `encoded` on the wire.
    pub fn pages_sent(&mut self, chunk_len: u64, pages_len: u64, encoded: u64) {
        self.chunk_sent(pages_len, encoded);
        self.stats.bytes_left_out_by_pages += chunk_len.saturating_sub(pages_len);
    }

    /// After a pre-copy round's chunks went out: another round, or pause —
    /// when the round was small, the rounds are used up, or the function
    /// dirties memory as fast as rounds send it (the round did not shrink to
    /// [`RoundPolicy::shrink_percent`] of the one before: more rounds would
    /// not make the paused one smaller). A small round whose volume entries
    /// changed is followed by one more: that round tells the destination
    /// the files are in, and it lays them out before it answers, while the
    /// function runs, instead of at the seal (10,000 small files: half a
    /// second of downtime).
    ///
    /// A round that did not shrink first slows the function down, one step
    /// of [`RoundPolicy::slow_down_percent`] at a time, each step with one
    /// more round than [`RoundPolicy::max_rounds`]; pre-copy stops when a
    /// round does not shrink with the steps used up.
    pub fn next_step(&mut self, changed_bytes: u64) -> NextStep {
        let converging = self.previous_round_bytes.is_none_or(|previous| {
            u128::from(changed_bytes) * 100 < u128::from(previous) * u128::from(self.policy.shrink_percent)
        });
        let small = changed_bytes <= self.policy.small_round_bytes;
        let out_of_rounds = self.round >= self.policy.max_rounds + self.slowed as u32;
        if out_of_rounds {
            return NextStep::Pause;
        }
        if small && !self.volume_changed {
            // A small round right after a large one may be a lull between
            // bursts of writes (measured: the pause then met the next burst,
            // 66 MB, 0.1–0.4 s of downtime): one more round confirms it.
            let after_large = self
                .previous_round_bytes
                .is_some_and(|previous| previous > self.policy.small_round_bytes);
            return if after_large {
                NextStep::AnotherRound
            } else {
                NextStep::Pause
            };
        }
        if converging {
            return NextStep::AnotherRound;
        }
        if small {
            // Nothing worth slowing the function for.
            return NextStep::Pause;
        }
        match self.policy.slow_down_percent.get(self.slowed) {
            Some(&percent) => {
                self.slowed += 1;
                self.stats.slowed_to_percent = percent;
                NextStep::SlowDown { percent }
            }
            None => NextStep::Pause,
        }
    }

    /// The `Seal` after the last round. The manifest must describe exactly
    /// the memory the rounds left at the destination.
    pub fn seal(&mut self, manifest: CheckpointManifest) -> Result<SourceFrame, TransferError> {
        self.expect(Phase::Sending, "seal")?;
        if !self.last {
            return Err(TransferError::protocol("seal before the last round"));
        }
        let entries: Vec<Option<ChunkHash>> = manifest
            .chunk_hashes
            .iter()
            .map(|entry| entry_hash(entry))
            .collect::<Result<_, _>>()?;
        if entries != self.destination || manifest.memory_bytes != self.memory_bytes {
            return Err(TransferError::protocol(
                "the manifest does not describe the memory the rounds sent",
            ));
        }
        if let Some(volume) = &manifest.volume
            && let Some(hash) =
                crate::checkpoint::volume::volume_chunks(volume).find(|hash| !self.volume_offered.contains(hash))
        {
            return Err(TransferError::protocol(format!(
                "the manifest names volume chunk {hash}, which no round offered"
            )));
        }
        self.phase = Phase::Sealed;
        Ok(SourceFrame {
            frame: Some(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
                manifest: Some(manifest),
            })),
        })
    }

    /// The destination persisted the function. The caller records the move
    /// durably, then calls [`Sender::move_recorded`].
    /// Returns how long the function has already run on the destination
    /// (µs, effects held; 0 if it starts at the commit).
    pub fn on_prepared(&mut self, frame: DestinationFrame) -> Result<u64, TransferError> {
        self.expect(Phase::Sealed, "prepared")?;
        match refused(frame)? {
            destination_frame::Frame::Prepared(prepared) => {
                self.phase = Phase::Prepared;
                Ok(prepared.running_micros)
            }
            other => Err(unexpected(&other, "prepared")),
        }
    }

    /// The move is durable here: from now on the destination owns the
    /// function, paused for `paused` so far. Returns the `Commit` to send.
    pub fn move_recorded(&mut self, paused: std::time::Duration) -> SourceFrame {
        debug_assert_eq!(self.phase, Phase::Prepared);
        self.phase = Phase::MoveRecorded;
        SourceFrame {
            frame: Some(source_frame::Frame::Commit(Commit {
                paused_micros: u64::try_from(paused.as_micros()).unwrap_or(u64::MAX),
            })),
        }
    }

    /// The destination runs the function; returns what it said of the start.
    pub fn on_started(&mut self, frame: DestinationFrame) -> Result<Started, TransferError> {
        self.expect(Phase::MoveRecorded, "started")?;
        match refused(frame)? {
            destination_frame::Frame::Started(started) => {
                self.phase = Phase::Started;
                Ok(started)
            }
            other => Err(unexpected(&other, "started")),
        }
    }

    /// The `Abort` to send when the transfer fails while the source owns
    /// the function; `None` once it does not.
    pub fn abort(&mut self, reason: &str) -> Option<SourceFrame> {
        (self.owner_after_failure() == Owner::Source).then(|| SourceFrame {
            frame: Some(source_frame::Frame::Abort(ferry_proto::internal::v1::Abort {
                reason: reason.to_owned(),
            })),
        })
    }

    fn slot_len(&self, index: u32) -> u64 {
        slot_len(self.memory_bytes, self.chunk_size, index)
    }

    fn expect(&self, phase: Phase, what: &str) -> Result<(), TransferError> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(TransferError::protocol(format!("{what} while {:?}", self.phase)))
        }
    }
}

/// Bytes of slot `index` (the last slot may be short).
fn slot_len(memory_bytes: u64, chunk_size: u32, index: u32) -> u64 {
    let start = u64::from(index) * u64::from(chunk_size);
    memory_bytes.saturating_sub(start).min(u64::from(chunk_size))
}

/// The frame's content, or the refusal it carries as an error.
fn refused(frame: DestinationFrame) -> Result<destination_frame::Frame, TransferError> {
    if let Some(refusal) = refusal_in(&frame) {
        return Err(refusal);
    }
    frame.frame.ok_or_else(|| TransferError::protocol("an empty frame"))
}

/// The refusal a destination's frame carries, as the error it means.
pub fn refusal_in(frame: &DestinationFrame) -> Option<TransferError> {
    match &frame.frame {
        Some(destination_frame::Frame::Refuse(refuse)) => Some(TransferError::Refused {
            hub: "the destination",
            code: code_from_name(&refuse.code),
            reason: refuse.reason.clone(),
        }),
        _ => None,
    }
}

fn unexpected(frame: &destination_frame::Frame, wanted: &str) -> TransferError {
    let got = match frame {
        destination_frame::Frame::Accept(_) => "accept",
        destination_frame::Frame::Need(_) => "need",
        destination_frame::Frame::Prepared(_) => "prepared",
        destination_frame::Frame::Started(_) => "started",
        destination_frame::Frame::Refuse(_) => "refuse",
        destination_frame::Frame::Preparing(_) => "preparing",
        destination_frame::Frame::Received(_) => "received",
    };
    TransferError::protocol(format!("got {got}, wanted {wanted}"))
}
