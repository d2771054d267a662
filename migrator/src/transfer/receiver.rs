//! The destination's side of a transfer: it checks that every frame comes
//! in order, that every chunk matches its hash and that the sealed manifest
//! describes exactly the memory the rounds built; the hub does the storing.

use std::collections::{HashMap, HashSet};

use ferry_proto::PROTOCOL_VERSION;
use ferry_proto::internal::v1::{
    Accept, CheckpointManifest, DestinationFrame, Need, Offer, Prepared, Preparing, Refuse, SourceFrame, Started,
    VolumeState, destination_frame, source_frame,
};
use ferry_proto::v1::LogEntry;

use super::page_delta::PageDelta;
use super::{TransferError, code_name, entry_hash};
use crate::checkpoint::codec::ChunkDecoder;
use crate::checkpoint::manifest::{validate_chunk_size, validate_memory_bytes};
use crate::checkpoint::volume::validate_volume;
use crate::checkpoint::{ChunkHash, DELTA_PAGE, MAX_CHUNK_SIZE, check_instrumentation, chunk_count, validate_manifest};

/// Log entries one transfer may carry at most.
const MAX_LOG_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitOffer,
    /// The offer went to the hub for checks.
    Offered,
    Receiving,
    /// The last round was received; chunks, logs and the seal follow.
    LastRound,
    /// The seal went to the hub to persist.
    Sealed,
    Prepared,
    Committed,
    /// Started here after the commit.
    Done,
    /// Refused or aborted.
    Aborted,
}

/// One round as the hub applies it to the function's memory image.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPlan {
    pub number: u32,
    pub last: bool,
    /// The memory grows to this size first (it never shrinks).
    pub memory_bytes: u64,
    /// Slots whose content is now all zeros.
    pub zeroed: Vec<u32>,
    /// Every distinct hash of the round and the slots that now hold it. The
    /// hub says which it lacks with [`Receiver::need`] and fills the others
    /// from its store.
    pub slots_by_hash: Vec<(ChunkHash, Vec<u32>)>,
    /// The image as the previous rounds left it, every chunk of it
    /// received (empty before the first round): what the hub may reference
    /// durably ahead of the seal.
    pub settled: Vec<Option<ChunkHash>>,
    /// The volume chunks earlier rounds offered, every one of them held
    /// or received: referenced ahead of the seal like `settled`.
    pub settled_volume: Vec<ChunkHash>,
    /// The volume as the previous round found it, every chunk of it held
    /// or received: what the hub may lay out ahead of the seal.
    pub settled_entries: Option<VolumeState>,
}

/// What the hub must do for a frame.
#[derive(Debug)]
pub enum ReceiverStep {
    /// Check the offer (name, epoch, cluster, module), then answer with
    /// [`Receiver::accept`] or [`Receiver::refuse`].
    Offer(Offer),
    /// The module, verified against the offered hash: store and prepare it.
    Module(Vec<u8>),
    /// Apply a round to the image, then answer with [`Receiver::need`].
    Round(RoundPlan),
    /// A chunk that matches its hash: store `encoded`, copy `bytes` into
    /// `slots` (none for a chunk of the volume only).
    Chunk {
        hash: ChunkHash,
        encoded: Vec<u8>,
        bytes: Vec<u8>,
        slots: Vec<u32>,
    },
    /// A chunk sent as the pages written over its previous version: read
    /// that version (`delta.base`), rebuild the chunk with
    /// [`PageDelta::apply`] (which checks its hash), store it and copy it
    /// into `slots`.
    Delta { delta: PageDelta, slots: Vec<u32> },
    /// Log history of the function, oldest first: `early` is what it had
    /// written before the rounds (sent while it still runs, to store ahead
    /// of the downtime); the rest comes in the last round.
    Logs { entries: Vec<LogEntry>, early: bool },
    /// Everything arrived and matches: persist the function under the
    /// manifest's (new) epoch, then answer with [`Receiver::prepared`].
    Seal(CheckpointManifest),
    /// The source recorded the move: start the function, then answer with
    /// [`Receiver::started`]. The function has been paused on the source
    /// for `paused_micros` (as the source measured when it sent the commit).
    Commit { paused_micros: u64 },
    /// The source keeps the function: discard what arrived.
    Abort(String),
}

/// What to do with a received function when the stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Not prepared yet, or aborted: the source runs it; discard everything.
    Discard,
    /// Prepared but neither committed nor aborted: ask the source.
    Resolve,
    /// Committed: it runs here.
    Keep,
}

/// The destination's state machine.
pub struct Receiver {
    phase: Phase,
    offer: Option<Offer>,
    need_module: bool,
    module_received: bool,
    memory_bytes: u64,
    /// The hash each slot of the image holds (`None`: zeros).
    table: Vec<Option<ChunkHash>>,
    /// The table as the previous round left it: what a page delta's slot
    /// held before the current round.
    previous: Vec<Option<ChunkHash>>,
    /// The memory's size in the previous round.
    previous_memory_bytes: u64,
    round: u32,
    /// Slots of the current round per distinct hash.
    round_slots: HashMap<ChunkHash, Vec<u32>>,
    /// Needed chunks not yet received, with the slots they fill.
    outstanding: HashMap<ChunkHash, Vec<u32>>,
    /// Volume chunks offered in any round, and the length of each.
    volume: HashMap<ChunkHash, u32>,
    /// The volume's entries the current round sent (checked).
    entries: Option<VolumeState>,
    log_entries: usize,
    decoder: Option<ChunkDecoder>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Receiver")
            .field("phase", &self.phase)
            .field("round", &self.round)
            .field("outstanding", &self.outstanding.len())
            .finish_non_exhaustive()
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            phase: Phase::AwaitOffer,
            offer: None,
            need_module: false,
            module_received: false,
            memory_bytes: 0,
            table: Vec::new(),
            previous: Vec::new(),
            previous_memory_bytes: 0,
            round: 0,
            round_slots: HashMap::new(),
            outstanding: HashMap::new(),
            volume: HashMap::new(),
            entries: None,
            log_entries: 0,
            decoder: None,
        }
    }

    /// The offer, once received.
    pub fn offer(&self) -> Option<&Offer> {
        self.offer.as_ref()
    }

    /// The epoch the function runs under here.
    pub fn new_epoch(&self) -> u64 {
        self.offer.as_ref().map_or(0, |offer| offer.epoch + 1)
    }

    /// What to do when the stream ends (or fails) now.
    pub fn after_stream_end(&self) -> Disposition {
        match self.phase {
            Phase::Prepared => Disposition::Resolve,
            Phase::Committed | Phase::Done => Disposition::Keep,
            _ => Disposition::Discard,
        }
    }

    /// Checks one frame from the source and says what the hub must do.
    pub fn on_frame(&mut self, frame: SourceFrame) -> Result<ReceiverStep, TransferError> {
        let frame = frame.frame.ok_or_else(|| TransferError::protocol("an empty frame"))?;
        match frame {
            source_frame::Frame::Offer(offer) => self.on_offer(offer),
            source_frame::Frame::Module(module) => self.on_module(module.module),
            source_frame::Frame::Round(round) => self.on_round(round),
            source_frame::Frame::Chunk(chunk) => match chunk.delta_slot {
                None => self.on_chunk(chunk.hash, chunk.encoded),
                Some(slot) => self.on_delta(chunk.hash, chunk.encoded, slot, &chunk.delta_pages),
            },
            source_frame::Frame::Logs(batch) => self.on_logs(batch.entries),
            source_frame::Frame::Seal(seal) => self.on_seal(seal.manifest),
            source_frame::Frame::Commit(commit) => {
                self.expect(&[Phase::Prepared], "commit")?;
                self.phase = Phase::Committed;
                Ok(ReceiverStep::Commit {
                    paused_micros: commit.paused_micros,
                })
            }
            source_frame::Frame::Abort(abort) => {
                if matches!(self.phase, Phase::Committed | Phase::Done) {
                    return Err(TransferError::protocol("abort after commit"));
                }
                self.phase = Phase::Aborted;
                Ok(ReceiverStep::Abort(abort.reason))
            }
        }
    }

    /// The hub takes the offer; `need_module` when it lacks the module.
    pub fn accept(&mut self, need_module: bool) -> DestinationFrame {
        debug_assert_eq!(self.phase, Phase::Offered);
        self.need_module = need_module;
        self.phase = Phase::Receiving;
        DestinationFrame {
            frame: Some(destination_frame::Frame::Accept(Accept {
                need_module,
                takes_page_deltas: true,
            })),
        }
    }

    /// A refusal naming why; the transfer is over.
    pub fn refuse(&mut self, error: &TransferError, code: ferry_proto::ErrorCode) -> DestinationFrame {
        self.phase = Phase::Aborted;
        DestinationFrame {
            frame: Some(destination_frame::Frame::Refuse(Refuse {
                code: code_name(code).to_owned(),
                reason: error.to_string(),
            })),
        }
    }

    /// The answer to the current round: the hashes of it the hub lacks.
    pub fn need(&mut self, lacking: Vec<ChunkHash>) -> Result<DestinationFrame, TransferError> {
        let mut hashes = Vec::with_capacity(lacking.len());
        for hash in lacking {
            let slots = self
                .round_slots
                .remove(&hash)
                .ok_or_else(|| TransferError::protocol(format!("chunk {hash} is not part of round {}", self.round)))?;
            self.outstanding.insert(hash, slots);
            hashes.push(hash.0.to_vec());
        }
        self.round_slots.clear();
        Ok(DestinationFrame {
            frame: Some(destination_frame::Frame::Need(Need {
                round: self.round,
                hashes,
            })),
        })
    }

    /// A heartbeat while the module is being prepared: the source must not
    /// mistake a long compile for a dead peer.
    pub fn preparing(&self, elapsed: std::time::Duration, done: bool) -> DestinationFrame {
        DestinationFrame {
            frame: Some(destination_frame::Frame::Preparing(Preparing {
                elapsed_micros: elapsed.as_micros() as u64,
                done,
            })),
        }
    }

    /// The function is persisted here.
    /// `running`: how long the function has run here with its effects held
    /// (zero: it starts at the commit).
    pub fn prepared(&mut self, running: std::time::Duration) -> DestinationFrame {
        debug_assert_eq!(self.phase, Phase::Sealed);
        self.phase = Phase::Prepared;
        DestinationFrame {
            frame: Some(destination_frame::Frame::Prepared(Prepared {
                running_micros: u64::try_from(running.as_micros()).unwrap_or(u64::MAX),
            })),
        }
    }

    /// The function runs here; `held`: µs it ran with its effects held, and
    /// of them µs it waited at the gate, if it started at the seal.
    pub fn started(&mut self, start_micros: u64, held: Option<(u64, u64)>) -> DestinationFrame {
        debug_assert_eq!(self.phase, Phase::Committed);
        self.phase = Phase::Done;
        let (held_micros, held_waited_micros) = held.unwrap_or_default();
        DestinationFrame {
            frame: Some(destination_frame::Frame::Started(Started {
                start_micros,
                held_micros,
                held_waited_micros,
            })),
        }
    }

    fn on_offer(&mut self, offer: Offer) -> Result<ReceiverStep, TransferError> {
        self.expect(&[Phase::AwaitOffer], "offer")?;
        if offer.protocol_version != PROTOCOL_VERSION {
            return Err(TransferError::Unacceptable {
                code: ferry_proto::ErrorCode::FailedPrecondition,
                reason: format!(
                    "protocol version {} offered, this hub speaks {PROTOCOL_VERSION}",
                    offer.protocol_version
                ),
            });
        }
        if let Err(error) = check_instrumentation(offer.instrumentation_version) {
            return Err(TransferError::Unacceptable {
                code: ferry_proto::ErrorCode::FailedPrecondition,
                reason: format!("the source hub runs another version of Ferry: {error}"),
            });
        }
        let spec = offer
            .spec
            .as_ref()
            .ok_or_else(|| TransferError::protocol("the offer has no spec"))?;
        if spec.name.is_empty() || spec.module_hash.is_empty() {
            return Err(TransferError::protocol("the offer names no function or no module"));
        }
        if offer.epoch == u64::MAX {
            return Err(TransferError::protocol("the offered epoch cannot be incremented"));
        }
        validate_chunk_size(offer.chunk_size).map_err(|error| TransferError::protocol(error.to_string()))?;
        self.phase = Phase::Offered;
        self.offer = Some(offer.clone());
        Ok(ReceiverStep::Offer(offer))
    }

    fn on_module(&mut self, module: Vec<u8>) -> Result<ReceiverStep, TransferError> {
        self.expect(&[Phase::Receiving], "module")?;
        if !self.need_module || self.module_received {
            return Err(TransferError::protocol("a module that was not asked for"));
        }
        let expected = self.spec_module_hash();
        let actual = blake3::hash(&module).to_hex().to_string();
        if actual != expected {
            return Err(TransferError::Unacceptable {
                code: ferry_proto::ErrorCode::DataLoss,
                reason: format!("the module sent hashes to {actual}, the offer named {expected}"),
            });
        }
        self.module_received = true;
        Ok(ReceiverStep::Module(module))
    }

    fn on_round(&mut self, round: ferry_proto::internal::v1::Round) -> Result<ReceiverStep, TransferError> {
        self.expect(&[Phase::Receiving], "round")?;
        if round.number != self.round + 1 {
            return Err(TransferError::protocol(format!(
                "round {} after round {}",
                round.number, self.round
            )));
        }
        if let Some(hash) = self.outstanding.keys().next() {
            return Err(TransferError::Truncated {
                reason: format!(
                    "round {} began before chunk {hash} of round {} arrived",
                    round.number, self.round
                ),
            });
        }
        validate_memory_bytes(round.memory_bytes).map_err(|error| TransferError::protocol(error.to_string()))?;
        if round.memory_bytes < self.memory_bytes {
            return Err(TransferError::protocol(format!(
                "memory shrank from {} to {} bytes",
                self.memory_bytes, round.memory_bytes
            )));
        }
        let chunk_size = self.offer.as_ref().map_or(1, |offer| offer.chunk_size);
        let slots = chunk_count(round.memory_bytes, chunk_size) as usize;
        let settled = self.table.clone();
        self.previous.clone_from(&settled);
        self.previous_memory_bytes = self.memory_bytes;
        self.table.resize(slots, None);
        self.memory_bytes = round.memory_bytes;
        let mut zeroed = Vec::new();
        let mut by_hash: HashMap<ChunkHash, Vec<u32>> = HashMap::new();
        let mut order = Vec::new();
        let mut previous: Option<u32> = None;
        for change in round.changed {
            if previous.is_some_and(|previous| change.index <= previous) || change.index as usize >= slots {
                return Err(TransferError::protocol(format!(
                    "round {} names slot {} out of order or beyond {slots} slots",
                    round.number, change.index
                )));
            }
            previous = Some(change.index);
            let hash = entry_hash(&change.hash)?;
            self.table[change.index as usize] = hash;
            match hash {
                None => zeroed.push(change.index),
                Some(hash) => {
                    let slots = by_hash.entry(hash).or_default();
                    if slots.is_empty() {
                        order.push(hash);
                    }
                    slots.push(change.index);
                }
            }
        }
        let settled_volume = self.volume.keys().copied().collect();
        let mut offered_volume = HashSet::new();
        for chunk in round.volume_chunks {
            let hash = entry_hash(&chunk.hash)?
                .ok_or_else(|| TransferError::protocol("a volume chunk named by an empty hash"))?;
            if chunk.len == 0 || chunk.len > MAX_CHUNK_SIZE || !offered_volume.insert(hash) {
                return Err(TransferError::protocol(format!(
                    "round {} offers volume chunk {hash} twice or with length {} (chunks are 1..={MAX_CHUNK_SIZE} bytes)",
                    round.number, chunk.len
                )));
            }
            if self.volume.insert(hash, chunk.len).is_some() {
                return Err(TransferError::protocol(format!(
                    "round {} offers volume chunk {hash} again",
                    round.number
                )));
            }
            if let std::collections::hash_map::Entry::Vacant(slots) = by_hash.entry(hash) {
                slots.insert(Vec::new());
                order.push(hash);
            }
        }
        if let Some(entries) = &round.volume {
            validate_volume(entries).map_err(|error| TransferError::protocol(error.to_string()))?;
            if let Some(hash) = self.unoffered_volume_chunk(entries) {
                return Err(TransferError::protocol(format!(
                    "round {}'s volume names chunk {hash}, which no round offered so",
                    round.number
                )));
            }
        }
        // The previous round's chunks have all arrived (checked above).
        let settled_entries = std::mem::replace(&mut self.entries, round.volume);
        self.round = round.number;
        if round.last {
            self.phase = Phase::LastRound;
        }
        let slots_by_hash = order
            .iter()
            .map(|hash| (*hash, by_hash.get(hash).cloned().unwrap_or_default()))
            .collect();
        self.round_slots = by_hash;
        Ok(ReceiverStep::Round(RoundPlan {
            number: round.number,
            last: round.last,
            memory_bytes: round.memory_bytes,
            zeroed,
            slots_by_hash,
            settled,
            settled_volume,
            settled_entries,
        }))
    }

    fn on_chunk(&mut self, hash: Vec<u8>, encoded: Vec<u8>) -> Result<ReceiverStep, TransferError> {
        self.expect(&[Phase::Receiving, Phase::LastRound], "chunk")?;
        let hash = entry_hash(&hash)?.ok_or_else(|| TransferError::protocol("a chunk named by an empty hash"))?;
        let slots = self
            .outstanding
            .remove(&hash)
            .ok_or_else(|| TransferError::protocol(format!("chunk {hash} was not asked for")))?;
        let chunk_size = self.offer.as_ref().map_or(1, |offer| offer.chunk_size);
        let len = match slots.first() {
            Some(&first) => {
                let start = u64::from(first) * u64::from(chunk_size);
                self.memory_bytes.saturating_sub(start).min(u64::from(chunk_size)) as usize
            }
            None => self.volume.get(&hash).copied().unwrap_or_default() as usize,
        };
        let mut bytes = vec![0u8; len];
        self.decoder()?
            .decode_into(&encoded, &mut bytes)
            .and_then(|()| crate::checkpoint::codec::verify_chunk(&bytes, &hash))
            .map_err(|reason| TransferError::ChunkMismatch { hash, reason })?;
        Ok(ReceiverStep::Chunk {
            hash,
            encoded,
            bytes,
            slots,
        })
    }

    /// A memory chunk as the pages written over the version the previous
    /// round left in `slot` (see `page_delta`).
    fn on_delta(
        &mut self,
        hash: Vec<u8>,
        encoded: Vec<u8>,
        slot: u32,
        bitmap: &[u8],
    ) -> Result<ReceiverStep, TransferError> {
        self.expect(&[Phase::Receiving, Phase::LastRound], "chunk")?;
        let hash = entry_hash(&hash)?.ok_or_else(|| TransferError::protocol("a chunk named by an empty hash"))?;
        let Some(slots) = self.outstanding.remove(&hash) else {
            return Err(TransferError::protocol(format!("chunk {hash} was not asked for")));
        };
        if !slots.contains(&slot) {
            return Err(TransferError::protocol(format!(
                "chunk {hash} came as pages over slot {slot}, which the round does not give it"
            )));
        }
        let chunk_size = self.offer.as_ref().map_or(1, |offer| offer.chunk_size);
        let start = u64::from(slot) * u64::from(chunk_size);
        let chunk_len = self.memory_bytes.saturating_sub(start).min(u64::from(chunk_size)) as usize;
        let base = self.previous.get(slot as usize).copied();
        let Some(base) = base.filter(|_| start + chunk_len as u64 <= self.previous_memory_bytes) else {
            return Err(TransferError::protocol(format!(
                "chunk {hash} came as pages over slot {slot}, which the previous round's memory did not hold whole"
            )));
        };
        let pages = PageDelta::pages(bitmap, chunk_len)
            .map_err(|reason| TransferError::protocol(format!("chunk {hash} came as pages: {reason}")))?;
        let mut bytes = vec![0u8; pages.len() * DELTA_PAGE];
        self.decoder()?
            .decode_into(&encoded, &mut bytes)
            .map_err(|reason| TransferError::ChunkMismatch {
                hash,
                reason: format!("its pages do not decode: {reason}"),
            })?;
        Ok(ReceiverStep::Delta {
            delta: PageDelta {
                hash,
                base,
                chunk_len,
                pages,
                bytes,
                encoded,
            },
            slots,
        })
    }

    fn decoder(&mut self) -> Result<&mut ChunkDecoder, TransferError> {
        match &mut self.decoder {
            Some(decoder) => Ok(decoder),
            empty => Ok(
                empty.insert(ChunkDecoder::new().map_err(|error| TransferError::Unacceptable {
                    code: ferry_proto::ErrorCode::Internal,
                    reason: error.to_string(),
                })?),
            ),
        }
    }

    fn on_logs(&mut self, entries: Vec<LogEntry>) -> Result<ReceiverStep, TransferError> {
        let early = self.phase == Phase::Receiving && self.round == 0;
        if !early {
            self.expect(&[Phase::LastRound], "logs")?;
        }
        self.log_entries += entries.len();
        if self.log_entries > MAX_LOG_ENTRIES {
            return Err(TransferError::protocol(format!(
                "more than {MAX_LOG_ENTRIES} log entries"
            )));
        }
        Ok(ReceiverStep::Logs { entries, early })
    }

    fn on_seal(&mut self, manifest: Option<CheckpointManifest>) -> Result<ReceiverStep, TransferError> {
        self.expect(&[Phase::LastRound], "seal")?;
        if let Some(hash) = self.outstanding.keys().next() {
            return Err(TransferError::Truncated {
                reason: format!("sealed before chunk {hash} arrived"),
            });
        }
        if self.need_module && !self.module_received {
            return Err(TransferError::Unacceptable {
                code: ferry_proto::ErrorCode::FailedPrecondition,
                reason: format!(
                    "module {} is unknown here and the source did not send it",
                    self.spec_module_hash()
                ),
            });
        }
        let mut manifest = manifest.ok_or_else(|| TransferError::protocol("a seal without a manifest"))?;
        validate_manifest(&manifest).map_err(|error| TransferError::protocol(error.to_string()))?;
        let offer = self
            .offer
            .as_ref()
            .ok_or_else(|| TransferError::protocol("seal without an offer"))?;
        let offered = offer.spec.as_ref().map(|spec| (&spec.name, &spec.module_hash));
        let sealed = manifest.spec.as_ref().map(|spec| (&spec.name, &spec.module_hash));
        if offered != sealed || manifest.module_hash != self.spec_module_hash() {
            return Err(TransferError::protocol(
                "the sealed manifest is of another function or module",
            ));
        }
        if manifest.instrumentation_version != offer.instrumentation_version {
            return Err(TransferError::protocol(format!(
                "the sealed manifest was captured under instrumentation version {}, the offer said {}",
                manifest.instrumentation_version, offer.instrumentation_version
            )));
        }
        if manifest.chunk_size != offer.chunk_size || manifest.memory_bytes != self.memory_bytes {
            return Err(TransferError::protocol(
                "the sealed manifest's memory layout differs from the rounds",
            ));
        }
        for (index, (entry, held)) in manifest.chunk_hashes.iter().zip(&self.table).enumerate() {
            if entry_hash(entry)? != *held {
                return Err(TransferError::protocol(format!(
                    "the sealed manifest names another chunk at slot {index} than the rounds sent"
                )));
            }
        }
        if let Some(hash) = manifest
            .volume
            .as_ref()
            .and_then(|volume| self.unoffered_volume_chunk(volume))
        {
            return Err(TransferError::protocol(format!(
                "the sealed manifest's volume names chunk {hash}, which no round offered so"
            )));
        }
        manifest.epoch = offer.epoch + 1;
        self.phase = Phase::Sealed;
        Ok(ReceiverStep::Seal(manifest))
    }

    /// A chunk `volume` names that no round offered with that length.
    fn unoffered_volume_chunk(&self, volume: &VolumeState) -> Option<ChunkHash> {
        crate::checkpoint::volume::volume_chunk_lengths(volume)
            .into_iter()
            .find(|(hash, len)| self.volume.get(hash) != Some(len))
            .map(|(hash, _)| hash)
    }

    fn spec_module_hash(&self) -> String {
        self.offer
            .as_ref()
            .and_then(|offer| offer.spec.as_ref())
            .map(|spec| spec.module_hash.clone())
            .unwrap_or_default()
    }

    fn expect(&self, phases: &[Phase], what: &str) -> Result<(), TransferError> {
        if phases.contains(&self.phase) {
            Ok(())
        } else {
            Err(TransferError::protocol(format!("{what} while {:?}", self.phase)))
        }
    }
}
