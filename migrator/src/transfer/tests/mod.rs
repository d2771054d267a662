//! The handoff state machines against each other, in memory, and against a
//! hostile peer: every frame is checked, nothing is stored.

use std::collections::HashMap;

use ferry_proto::v1::FunctionSpec;

use ferry_proto::internal::v1::{
    CheckpointManifest, DestinationFrame, HostState, Offer, PendingCall, SourceFrame, pending_call, source_frame,
};

mod page_deltas;

use super::*;
use crate::checkpoint::codec::encode_chunk;
use crate::checkpoint::{CHECKPOINT_FORMAT_VERSION, ChunkHash, hash_chunk, is_zero_chunk};
use crate::instrument::INSTRUMENTATION_VERSION;

const CHUNK: u32 = 64 * 1024;
const MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn spec() -> FunctionSpec {
    FunctionSpec {
        name: "ticker".to_owned(),
        module_hash: blake3::hash(MODULE).to_hex().to_string(),
        ..Default::default()
    }
}

fn offer(epoch: u64) -> SourceFrame {
    SourceFrame {
        frame: Some(source_frame::Frame::Offer(Offer {
            protocol_version: ferry_proto::PROTOCOL_VERSION,
            spec: Some(spec()),
            epoch,
            chunk_size: CHUNK,
            instrumentation_version: INSTRUMENTATION_VERSION,
            ..Default::default()
        })),
    }
}

fn hashes(memory: &[u8]) -> Vec<Option<ChunkHash>> {
    memory
        .chunks(CHUNK as usize)
        .map(|chunk| (!is_zero_chunk(chunk)).then(|| hash_chunk(chunk)))
        .collect()
}

fn manifest(memory: &[u8]) -> CheckpointManifest {
    CheckpointManifest {
        format_version: CHECKPOINT_FORMAT_VERSION,
        spec: Some(spec()),
        module_hash: spec().module_hash,
        epoch: 3,
        sequence: 1,
        memory_bytes: memory.len() as u64,
        chunk_size: CHUNK,
        chunk_hashes: hashes(memory)
            .iter()
            .map(|hash| hash.map(|hash| hash.0.to_vec()).unwrap_or_default())
            .collect(),
        host: Some(HostState {
            pending: Some(PendingCall {
                call: Some(pending_call::Call::Preempt(pending_call::Preempt {})),
            }),
            ..Default::default()
        }),
        instrumentation_version: INSTRUMENTATION_VERSION,
        ..Default::default()
    }
}

fn memory_with(pages: usize, fill: &[(usize, u8)]) -> Vec<u8> {
    let mut memory = vec![0u8; pages * CHUNK as usize];
    for (page, byte) in fill {
        memory[page * CHUNK as usize..(page + 1) * CHUNK as usize].fill(*byte);
    }
    memory
}

/// A destination: the receiver plus the image and chunk store a hub keeps.
struct Destination {
    receiver: Receiver,
    store: HashMap<ChunkHash, Vec<u8>>,
    image: Vec<u8>,
    has_module: bool,
    sealed: Option<CheckpointManifest>,
    started: bool,
    /// Log entries received: their numbers and whether they came early.
    logs: Vec<(u64, bool)>,
    /// The volume entries each round handed over as settled.
    settled_entries: Vec<Option<ferry_proto::internal::v1::VolumeState>>,
}

impl Destination {
    fn new(stored: &[&[u8]], has_module: bool) -> Destination {
        Destination {
            receiver: Receiver::new(),
            store: stored.iter().map(|chunk| (hash_chunk(chunk), chunk.to_vec())).collect(),
            image: Vec::new(),
            has_module,
            sealed: None,
            started: false,
            logs: Vec::new(),
            settled_entries: Vec::new(),
        }
    }

    /// Feeds one frame; returns the answer, if the frame calls for one.
    fn feed(&mut self, frame: SourceFrame) -> Result<Option<DestinationFrame>, TransferError> {
        match self.receiver.on_frame(frame)? {
            ReceiverStep::Offer(_) => Ok(Some(self.receiver.accept(!self.has_module))),
            ReceiverStep::Module(_) => {
                self.has_module = true;
                Ok(None)
            }
            ReceiverStep::Round(plan) => {
                // What the hub may reference ahead of the seal is exactly the
                // image so far, and every chunk of it has arrived.
                assert_eq!(plan.settled, hashes(&self.image), "round {}", plan.number);
                assert!(plan.settled.iter().flatten().all(|hash| self.store.contains_key(hash)));
                assert!(plan.settled_volume.iter().all(|hash| self.store.contains_key(hash)));
                self.settled_entries.push(plan.settled_entries.clone());
                self.image.resize(plan.memory_bytes as usize, 0);
                for slot in plan.zeroed {
                    self.slot(slot).fill(0);
                }
                let mut lacking = Vec::new();
                for (hash, slots) in plan.slots_by_hash {
                    match self.store.get(&hash).cloned() {
                        Some(bytes) => slots.iter().for_each(|slot| self.slot(*slot).copy_from_slice(&bytes)),
                        None => lacking.push(hash),
                    }
                }
                self.receiver.need(lacking).map(Some)
            }
            ReceiverStep::Chunk { hash, bytes, slots, .. } => {
                for slot in slots {
                    self.slot(slot).copy_from_slice(&bytes);
                }
                self.store.insert(hash, bytes);
                Ok(None)
            }
            ReceiverStep::Delta { delta, slots } => {
                let base = match &delta.base {
                    Some(hash) => self.store.get(hash).cloned().expect("the previous version is stored"),
                    None => vec![0; delta.chunk_len],
                };
                let bytes = delta.apply(base)?;
                for slot in slots {
                    self.slot(slot).copy_from_slice(&bytes);
                }
                self.store.insert(delta.hash, bytes);
                Ok(None)
            }
            ReceiverStep::Logs { entries, early } => {
                self.logs.extend(entries.into_iter().map(|entry| (entry.seq, early)));
                Ok(None)
            }
            ReceiverStep::Seal(manifest) => {
                self.sealed = Some(manifest);
                Ok(Some(self.receiver.prepared(std::time::Duration::from_micros(700))))
            }
            ReceiverStep::Commit { .. } => {
                self.started = true;
                Ok(Some(self.receiver.started(42, Some((3000, 250)))))
            }
            ReceiverStep::Abort(_) => Ok(None),
        }
    }

    fn slot(&mut self, slot: u32) -> &mut [u8] {
        let start = slot as usize * CHUNK as usize;
        &mut self.image[start..start + CHUNK as usize]
    }
}

/// Runs one round from `sender` into `destination` with `memory` as captured.
fn round(sender: &mut Sender, destination: &mut Destination, memory: &[u8], last: bool) -> u64 {
    round_with_volume(sender, destination, memory, &[], last)
}

/// [`round`] with the chunks of a volume's files as captured.
fn round_with_volume(
    sender: &mut Sender,
    destination: &mut Destination,
    memory: &[u8],
    volume: &[&[u8]],
    last: bool,
) -> u64 {
    let volume_chunks: Vec<(ChunkHash, u32)> = volume
        .iter()
        .map(|bytes| (hash_chunk(bytes), bytes.len() as u32))
        .collect();
    let planned = sender.plan_round(&hashes(memory), memory.len() as u64, &volume_chunks, last);
    let need = destination.feed(planned.frame).unwrap().expect("a need");
    for (hash, at) in sender.on_need(need).unwrap() {
        let bytes = match at {
            ChunkAt::Memory(slot) => {
                let start = slot as usize * CHUNK as usize;
                &memory[start..start + CHUNK as usize]
            }
            ChunkAt::Volume => *volume.iter().find(|bytes| hash_chunk(bytes) == hash).unwrap(),
        };
        let encoded = encode_chunk(bytes, 1).unwrap();
        sender.chunk_sent(bytes.len() as u64, encoded.len() as u64);
        let chunk = SourceFrame {
            frame: Some(source_frame::Frame::Chunk(ferry_proto::internal::v1::ChunkData {
                hash: hash.0.to_vec(),
                encoded,
                ..Default::default()
            })),
        };
        assert!(destination.feed(chunk).unwrap().is_none());
    }
    planned.changed_bytes
}

#[test]
fn a_function_moves_in_rounds_and_the_destination_image_equals_the_paused_memory() {
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], false);
    let accept = destination.feed(offer(2)).unwrap().unwrap();
    assert!(sender.on_accept(accept).unwrap(), "the destination lacks the module");
    destination
        .feed(SourceFrame {
            frame: Some(source_frame::Frame::Module(ferry_proto::internal::v1::ModuleData {
                module: MODULE.to_vec(),
            })),
        })
        .unwrap();

    let first = memory_with(8, &[(0, 1), (1, 2), (2, 2), (5, 3)]);
    assert_eq!(
        round(&mut sender, &mut destination, &first, false),
        4 * u64::from(CHUNK)
    );
    // Slots 1 and 2 hold the same bytes: sent once.
    assert_eq!(sender.stats().bytes_sent_uncompressed, 3 * u64::from(CHUNK));

    // The function ran on: slot 5 cleared, slot 0 rewritten, memory grew.
    let second = memory_with(10, &[(0, 9), (1, 2), (2, 2), (9, 1)]);
    let changed = round(&mut sender, &mut destination, &second, false);
    assert_eq!(changed, 2 * u64::from(CHUNK));
    // 128 KiB changed: below the default small-round bound.
    assert_eq!(sender.next_step(changed), NextStep::Pause);

    let last = memory_with(10, &[(0, 9), (1, 7), (2, 2), (9, 1)]);
    round(&mut sender, &mut destination, &last, true);
    assert_eq!(destination.image, last);

    let seal = sender.seal(manifest(&last)).unwrap();
    let prepared = destination.feed(seal).unwrap().unwrap();
    assert_eq!(
        destination.sealed.as_ref().unwrap().epoch,
        3,
        "the destination runs it under epoch + 1"
    );
    assert_eq!(
        sender.on_prepared(prepared).unwrap(),
        700,
        "the destination says how long the function has run there"
    );
    assert_eq!(sender.owner_after_failure(), Owner::Source);
    assert_eq!(destination.receiver.after_stream_end(), Disposition::Resolve);

    let commit = sender.move_recorded(std::time::Duration::from_micros(1500));
    assert!(
        matches!(&commit.frame, Some(source_frame::Frame::Commit(commit)) if commit.paused_micros == 1500),
        "the commit tells how long the function has been paused: {commit:?}"
    );
    assert_eq!(sender.owner_after_failure(), Owner::Destination);
    assert!(sender.abort("too late").is_none(), "no abort once the move is recorded");
    let started = destination.feed(commit).unwrap().unwrap();
    let started = sender.on_started(started).unwrap();
    assert_eq!(
        (started.start_micros, started.held_micros, started.held_waited_micros),
        (42, 3000, 250)
    );
    assert!(destination.started);
    assert_eq!(destination.receiver.after_stream_end(), Disposition::Keep);
    assert_eq!(sender.stats().rounds, 3);
}

#[test]
fn chunks_the_destination_holds_are_not_sent_again() {
    let memory = memory_with(4, &[(0, 1), (1, 2), (3, 3)]);
    let held = memory[0..CHUNK as usize].to_vec();
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[&held], true);
    let accept = destination.feed(offer(0)).unwrap().unwrap();
    assert!(!sender.on_accept(accept).unwrap());
    round(&mut sender, &mut destination, &memory, true);
    assert_eq!(destination.image, memory);
    assert_eq!(sender.stats().bytes_deduplicated, u64::from(CHUNK));
    assert_eq!(sender.stats().bytes_sent_uncompressed, 2 * u64::from(CHUNK));
}

#[test]
fn a_round_that_does_not_shrink_slows_the_function_down_step_by_step_then_pauses_it() {
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let first = round(&mut sender, &mut destination, &vec![1u8; 40 * CHUNK as usize], false);
    assert_eq!(
        sender.next_step(first),
        NextStep::AnotherRound,
        "one round says nothing about convergence"
    );
    // The function rewrites everything every round: 100 % of the round
    // before, however slow it goes.
    for (fill, percent) in [(2u8, 50), (3, 20), (4, 5)] {
        let again = round(&mut sender, &mut destination, &vec![fill; 40 * CHUNK as usize], false);
        assert_eq!(again, first);
        assert_eq!(sender.next_step(again), NextStep::SlowDown { percent });
    }
    let again = round(&mut sender, &mut destination, &vec![5u8; 40 * CHUNK as usize], false);
    assert_eq!(sender.next_step(again), NextStep::Pause, "every step taken");
    assert_eq!(sender.stats().slowed_to_percent, 5);
}

#[test]
fn a_slowed_function_gets_one_round_more_per_step_and_a_small_round_is_never_slowed() {
    let policy = RoundPolicy {
        max_rounds: 3,
        small_round_bytes: 4 * u64::from(CHUNK),
        shrink_percent: 80,
        slow_down_percent: &[50, 20],
    };
    let mut sender = Sender::new(CHUNK, policy);
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let full = round(&mut sender, &mut destination, &vec![1u8; 40 * CHUNK as usize], false);
    assert_eq!(sender.next_step(full), NextStep::AnotherRound);
    let same = round(&mut sender, &mut destination, &vec![2u8; 40 * CHUNK as usize], false);
    assert_eq!(sender.next_step(same), NextStep::SlowDown { percent: 50 });
    // Slowed, it changed half, then a quarter: converging, with one round
    // more than max_rounds.
    let mut memory = vec![2u8; 40 * CHUNK as usize];
    memory[..20 * CHUNK as usize].fill(3);
    let half = round(&mut sender, &mut destination, &memory, false);
    assert_eq!(sender.next_step(half), NextStep::AnotherRound);
    memory[..10 * CHUNK as usize].fill(4);
    let quarter = round(&mut sender, &mut destination, &memory, false);
    assert_eq!(
        sender.next_step(quarter),
        NextStep::Pause,
        "the rounds it was given are used"
    );
    assert_eq!(sender.stats().slowed_to_percent, 50);

    // A small round right after a large one is confirmed by one more
    // before the pause.
    let mut sender = Sender::new(
        CHUNK,
        RoundPolicy {
            max_rounds: 6,
            ..policy
        },
    );
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let full = round(&mut sender, &mut destination, &vec![1u8; 40 * CHUNK as usize], false);
    assert_eq!(sender.next_step(full), NextStep::AnotherRound);
    let mut memory = vec![1u8; 40 * CHUNK as usize];
    memory[0] = 2;
    let lull = round(&mut sender, &mut destination, &memory, false);
    assert_eq!(
        sender.next_step(lull),
        NextStep::AnotherRound,
        "a lull, not yet a small round"
    );
    memory[CHUNK as usize] = 2;
    let small = round(&mut sender, &mut destination, &memory, false);
    assert_eq!(sender.next_step(small), NextStep::Pause, "small twice: pause");

    // A small round pauses at once, never slowed.
    let mut sender = Sender::new(CHUNK, policy);
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let one = round(&mut sender, &mut destination, &memory_with(8, &[(0, 1)]), false);
    assert_eq!(sender.next_step(one), NextStep::Pause);
}

#[test]
fn the_policy_pauses_after_a_small_round_or_the_last_allowed_one() {
    let policy = RoundPolicy {
        max_rounds: 2,
        small_round_bytes: 100,
        shrink_percent: 80,
        slow_down_percent: &[50],
    };
    let mut sender = Sender::new(CHUNK, policy);
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    round(&mut sender, &mut destination, &memory_with(2, &[(0, 1)]), false);
    assert_eq!(sender.next_step(100), NextStep::Pause);
    assert_eq!(sender.next_step(101), NextStep::AnotherRound);
    round(&mut sender, &mut destination, &memory_with(2, &[(0, 2)]), false);
    assert_eq!(sender.next_step(u64::MAX), NextStep::Pause);
}

#[test]
fn a_small_round_whose_files_changed_is_followed_by_one_more_before_the_pause() {
    let (mut sender, mut destination, memory, content, entries) = accepted_with_one_file();
    // Small, but its files are new: the next round lets the destination
    // lay them out while the function runs.
    let first = round_with_one_file(
        &mut sender,
        &mut destination,
        (&memory, &content),
        entries.clone(),
        false,
    );
    assert_eq!(sender.next_step(first), NextStep::AnotherRound);
    // Nothing changed since: pause.
    let second = round_with_one_file(&mut sender, &mut destination, (&memory, &content), entries, false);
    assert_eq!(sender.next_step(second), NextStep::Pause);
}

/// A transfer accepted by its destination, of a function with one chunk
/// of memory and one file of 100 bytes (its content and volume entries).
fn accepted_with_one_file() -> (
    Sender,
    Destination,
    Vec<u8>,
    Vec<u8>,
    Option<ferry_proto::internal::v1::VolumeState>,
) {
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let memory = memory_with(1, &[(0, 1)]);
    let content = vec![7u8; 100];
    let entries = manifest_with_volume(&memory, &[&content]).volume;
    (sender, destination, memory, content, entries)
}

/// One round of one-chunk `memory` and a volume of one file, `content`
/// (whose entries are `entries`), fed through to `destination`; the bytes
/// the round changed.
fn round_with_one_file(
    sender: &mut Sender,
    destination: &mut Destination,
    (memory, content): (&[u8], &[u8]),
    entries: Option<ferry_proto::internal::v1::VolumeState>,
    last: bool,
) -> u64 {
    let volume = [(hash_chunk(content), content.len() as u32)];
    let planned = sender.plan_round_with_volume(&hashes(memory), memory.len() as u64, &volume, entries, last);
    let need = destination.feed(planned.frame).unwrap().expect("a need");
    for (hash, at) in sender.on_need(need).unwrap() {
        let bytes = match at {
            ChunkAt::Memory(slot) => &memory[slot as usize * CHUNK as usize..][..CHUNK as usize],
            ChunkAt::Volume => content,
        };
        destination.feed(chunk_frame(&hash, bytes)).unwrap();
    }
    planned.changed_bytes
}

/// A destination that has accepted and received round 1 offering slot 0.
fn after_first_round(memory: &[u8]) -> (Destination, ChunkHash) {
    let mut destination = Destination::new(&[], true);
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let planned = sender.plan_round(&hashes(memory), memory.len() as u64, &[], true);
    destination.feed(planned.frame).unwrap();
    (destination, hashes(memory)[0].unwrap())
}

fn chunk_frame(hash: &ChunkHash, bytes: &[u8]) -> SourceFrame {
    SourceFrame {
        frame: Some(source_frame::Frame::Chunk(ferry_proto::internal::v1::ChunkData {
            hash: hash.0.to_vec(),
            encoded: encode_chunk(bytes, 1).unwrap(),
            ..Default::default()
        })),
    }
}

#[test]
fn a_chunk_whose_bytes_do_not_match_its_hash_is_refused_and_nothing_is_prepared() {
    let memory = memory_with(1, &[(0, 1)]);
    let (mut destination, hash) = after_first_round(&memory);
    let forged = memory_with(1, &[(0, 2)]);
    let error = destination.feed(chunk_frame(&hash, &forged)).unwrap_err();
    assert!(matches!(error, TransferError::ChunkMismatch { .. }), "{error}");
    assert_eq!(error.error_code(), ferry_proto::ErrorCode::DataLoss);
    assert_eq!(destination.receiver.after_stream_end(), Disposition::Discard);
}

#[test]
fn a_seal_before_every_needed_chunk_arrived_is_a_truncated_stream() {
    let memory = memory_with(1, &[(0, 1)]);
    let (mut destination, _) = after_first_round(&memory);
    let seal = SourceFrame {
        frame: Some(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
            manifest: Some(manifest(&memory)),
        })),
    };
    let error = destination.feed(seal).unwrap_err();
    assert!(matches!(error, TransferError::Truncated { .. }), "{error}");
}

#[test]
fn a_chunk_nobody_asked_for_is_a_protocol_violation() {
    let memory = memory_with(1, &[(0, 1)]);
    let (mut destination, hash) = after_first_round(&memory);
    destination.feed(chunk_frame(&hash, &memory)).unwrap();
    let error = destination.feed(chunk_frame(&hash, &memory)).unwrap_err();
    assert!(matches!(error, TransferError::Protocol { .. }), "{error}");
}

#[test]
fn a_seal_for_a_module_that_was_never_sent_is_refused() {
    let memory = memory_with(1, &[]);
    let mut destination = Destination::new(&[], false);
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    destination
        .feed(
            sender
                .plan_round(&hashes(&memory), memory.len() as u64, &[], true)
                .frame,
        )
        .unwrap();
    let seal = SourceFrame {
        frame: Some(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
            manifest: Some(manifest(&memory)),
        })),
    };
    let error = destination.feed(seal).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is unknown here and the source did not send it"),
        "{error}"
    );
}

#[test]
fn a_module_that_does_not_match_the_offered_hash_is_refused() {
    let mut destination = Destination::new(&[], false);
    destination.feed(offer(0)).unwrap();
    let module = SourceFrame {
        frame: Some(source_frame::Frame::Module(ferry_proto::internal::v1::ModuleData {
            module: b"other".to_vec(),
        })),
    };
    let error = destination.feed(module).unwrap_err();
    assert_eq!(error.error_code(), ferry_proto::ErrorCode::DataLoss, "{error}");
}

fn logs(seqs: &[u64]) -> SourceFrame {
    SourceFrame {
        frame: Some(source_frame::Frame::Logs(ferry_proto::internal::v1::LogBatch {
            entries: seqs
                .iter()
                .map(|&seq| ferry_proto::v1::LogEntry {
                    seq,
                    ..Default::default()
                })
                .collect(),
        })),
    }
}

#[test]
fn logs_come_before_the_rounds_or_in_the_last_round_only() {
    let memory = memory_with(2, &[(0, 1)]);
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    assert!(destination.feed(logs(&[0, 1])).unwrap().is_none());
    round(&mut sender, &mut destination, &memory, false);
    let error = destination.feed(logs(&[2])).unwrap_err();
    assert!(matches!(error, TransferError::Protocol { .. }), "{error}");

    let mut destination = Destination::new(&[], true);
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    destination.feed(logs(&[0, 1])).unwrap();
    round(&mut sender, &mut destination, &memory, true);
    destination.feed(logs(&[2, 3])).unwrap();
    assert_eq!(destination.logs, [(0, true), (1, true), (2, false), (3, false)]);
    destination.feed(sender.seal(manifest(&memory)).unwrap()).unwrap();
}

#[test]
fn frames_out_of_order_are_protocol_violations() {
    let cases: Vec<(&str, Vec<SourceFrame>)> = vec![
        (
            "round before offer",
            vec![SourceFrame {
                frame: Some(source_frame::Frame::Round(ferry_proto::internal::v1::Round {
                    number: 1,
                    ..Default::default()
                })),
            }],
        ),
        (
            "commit before prepared",
            vec![
                offer(0),
                SourceFrame {
                    frame: Some(source_frame::Frame::Commit(ferry_proto::internal::v1::Commit::default())),
                },
            ],
        ),
        ("two offers", vec![offer(0), offer(0)]),
        (
            "round 2 first",
            vec![
                offer(0),
                SourceFrame {
                    frame: Some(source_frame::Frame::Round(ferry_proto::internal::v1::Round {
                        number: 2,
                        ..Default::default()
                    })),
                },
            ],
        ),
        ("empty frame", vec![SourceFrame { frame: None }]),
        ("logs before the offer", vec![logs(&[0])]),
    ];
    for (case, frames) in cases {
        let mut destination = Destination::new(&[], true);
        let count = frames.len();
        let results: Vec<_> = frames.into_iter().map(|frame| destination.feed(frame)).collect();
        assert!(
            results[..count - 1].iter().all(Result::is_ok),
            "{case}: early frames pass"
        );
        let error = results.last().unwrap().as_ref().unwrap_err();
        assert!(matches!(error, TransferError::Protocol { .. }), "{case}: {error}");
    }
}

#[test]
fn an_offer_of_another_protocol_version_is_refused() {
    let mut receiver = Receiver::new();
    let mut frame = offer(0);
    if let Some(source_frame::Frame::Offer(offer)) = &mut frame.frame {
        offer.protocol_version += 1;
    }
    let error = receiver.on_frame(frame).unwrap_err();
    assert_eq!(
        error.error_code(),
        ferry_proto::ErrorCode::FailedPrecondition,
        "{error}"
    );
}

#[test]
fn the_source_owns_the_function_until_the_move_is_recorded() {
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    assert_eq!(sender.owner_after_failure(), Owner::Source);
    assert!(sender.abort("link cut").is_some());
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let memory = memory_with(1, &[(0, 5)]);
    round(&mut sender, &mut destination, &memory, true);
    assert_eq!(sender.owner_after_failure(), Owner::Source);
    let prepared = destination
        .feed(sender.seal(manifest(&memory)).unwrap())
        .unwrap()
        .unwrap();
    sender.on_prepared(prepared).unwrap();
    assert_eq!(
        sender.owner_after_failure(),
        Owner::Source,
        "prepared is not yet the move"
    );
    sender.move_recorded(std::time::Duration::ZERO);
    assert_eq!(sender.owner_after_failure(), Owner::Destination);
}

#[test]
fn an_abort_before_commit_makes_the_destination_discard() {
    let memory = memory_with(1, &[(0, 1)]);
    let (mut destination, hash) = after_first_round(&memory);
    destination.feed(chunk_frame(&hash, &memory)).unwrap();
    let abort = SourceFrame {
        frame: Some(source_frame::Frame::Abort(ferry_proto::internal::v1::Abort {
            reason: "link cut".to_owned(),
        })),
    };
    assert!(destination.feed(abort).unwrap().is_none());
    assert_eq!(destination.receiver.after_stream_end(), Disposition::Discard);
}

#[test]
fn a_refusal_reaches_the_sender_as_an_error_with_its_code() {
    let mut receiver = Receiver::new();
    let refusal = receiver.refuse(
        &TransferError::Unacceptable {
            code: ferry_proto::ErrorCode::AlreadyExists,
            reason: "function ticker already runs here".to_owned(),
        },
        ferry_proto::ErrorCode::AlreadyExists,
    );
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let error = sender.on_accept(refusal).unwrap_err();
    assert_eq!(error.error_code(), ferry_proto::ErrorCode::AlreadyExists);
    assert!(error.to_string().contains("already runs here"), "{error}");
}

#[test]
fn an_offer_captured_under_another_instrumentation_version_is_refused_naming_both() {
    for found in [INSTRUMENTATION_VERSION - 1, INSTRUMENTATION_VERSION + 1] {
        let mut receiver = Receiver::new();
        let mut frame = offer(0);
        if let Some(source_frame::Frame::Offer(offer)) = &mut frame.frame {
            offer.instrumentation_version = found;
        }
        let error = receiver.on_frame(frame).unwrap_err();
        assert_eq!(
            error.error_code(),
            ferry_proto::ErrorCode::FailedPrecondition,
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("instrumentation version {found} "))
                && message.contains(&format!("restores version {INSTRUMENTATION_VERSION} ")),
            "{message}"
        );
    }
}

#[test]
fn an_offer_from_a_hub_that_did_not_record_its_instrumentation_version_reads_as_version_9() {
    let mut receiver = Receiver::new();
    let mut frame = offer(0);
    if let Some(source_frame::Frame::Offer(offer)) = &mut frame.frame {
        offer.instrumentation_version = 0;
    }
    let accepted = receiver.on_frame(frame);
    assert_eq!(
        accepted.is_ok(),
        INSTRUMENTATION_VERSION == crate::checkpoint::manifest::UNRECORDED_INSTRUMENTATION_VERSION,
        "{accepted:?}"
    );
}

#[test]
fn a_seal_captured_under_another_instrumentation_version_than_offered_is_refused() {
    let memory = memory_with(2, &[(0, 1)]);
    let (mut destination, hash) = after_first_round(&memory);
    destination.feed(chunk_frame(&hash, &memory[..CHUNK as usize])).unwrap();
    let mut sealed = manifest(&memory);
    sealed.instrumentation_version += 1;
    let seal = SourceFrame {
        frame: Some(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
            manifest: Some(sealed),
        })),
    };
    let error = destination.feed(seal).unwrap_err();
    assert!(error.to_string().contains("instrumentation version"), "{error}");
}

#[test]
fn a_seal_whose_manifest_differs_from_the_rounds_is_refused() {
    let memory = memory_with(2, &[(0, 1)]);
    let (mut destination, hash) = after_first_round(&memory);
    destination.feed(chunk_frame(&hash, &memory[..CHUNK as usize])).unwrap();
    let other = memory_with(2, &[(0, 1), (1, 1)]);
    let seal = SourceFrame {
        frame: Some(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
            manifest: Some(manifest(&other)),
        })),
    };
    let error = destination.feed(seal).unwrap_err();
    assert!(error.to_string().contains("slot 1"), "{error}");
}

#[test]
fn a_progress_report_is_heard_as_progress_in_any_phase_and_never_as_an_answer() {
    use ferry_proto::internal::v1::{Received, destination_frame};
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let report = DestinationFrame {
        frame: Some(destination_frame::Frame::Received(Received { bytes: 4096 })),
    };
    assert!(matches!(
        sender.hear(report.clone()).unwrap(),
        Heard::Received { bytes: 4096 }
    ));
    // Given where an answer is expected, it is not one.
    assert!(sender.on_accept(report).is_err());
}

#[test]
fn the_delivered_bytes_are_the_most_any_progress_report_named() {
    use ferry_proto::internal::v1::{Received, destination_frame};
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let report = |bytes| DestinationFrame {
        frame: Some(destination_frame::Frame::Received(Received { bytes })),
    };
    assert_eq!(sender.stats().bytes_delivered, 0);
    sender.hear(report(8192)).unwrap();
    // A report that trails a later one does not lower the count.
    sender.hear(report(4096)).unwrap();
    assert_eq!(sender.stats().bytes_delivered, 8192);
}

/// A manifest of `memory` whose volume is one file of `chunks` in order.
fn manifest_with_volume(memory: &[u8], chunks: &[&[u8]]) -> CheckpointManifest {
    use ferry_proto::internal::v1::{VolumeEntry, VolumeState, volume_entry};
    let mut manifest = manifest(memory);
    let size = chunks.iter().map(|chunk| chunk.len() as u64).sum();
    manifest.volume = Some(VolumeState {
        chunk_size: CHUNK,
        entries: vec![VolumeEntry {
            path: "db".to_owned(),
            kind: volume_entry::Kind::File as i32,
            size,
            chunk_hashes: chunks.iter().map(|chunk| hash_chunk(chunk).0.to_vec()).collect(),
            ..VolumeEntry::default()
        }],
    });
    manifest
}

#[test]
fn volume_chunks_are_offered_once_across_rounds_and_the_seal_must_name_only_offered_ones() {
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let memory = memory_with(2, &[(0, 1)]);
    let full = vec![7u8; CHUNK as usize];
    let tail = vec![8u8; 100];
    let changed = round_with_volume(&mut sender, &mut destination, &memory, &[&full, &tail], false);
    assert_eq!(
        changed,
        u64::from(CHUNK) * 2 + 100,
        "memory slot 0 and both volume chunks"
    );
    assert!(
        destination.store.contains_key(&hash_chunk(&tail)),
        "the short chunk arrived"
    );
    // The file's tail was rewritten: only the new chunk is offered again.
    let new_tail = vec![9u8; 50];
    let changed = round_with_volume(&mut sender, &mut destination, &memory, &[&full, &new_tail], true);
    assert_eq!(changed, 50);
    let sealed = manifest_with_volume(&memory, &[&full, &new_tail]);
    destination
        .feed(sender.seal(sealed.clone()).unwrap())
        .unwrap()
        .expect("prepared");
    assert_eq!(
        destination.sealed.as_ref().map(|manifest| &manifest.volume),
        Some(&sealed.volume)
    );
}

#[test]
fn a_seal_naming_a_volume_chunk_no_round_offered_is_refused_on_both_sides() {
    let memory = memory_with(1, &[(0, 1)]);
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], true);
    sender.on_accept(destination.feed(offer(0)).unwrap().unwrap()).unwrap();
    let offered = vec![3u8; 10];
    round_with_volume(&mut sender, &mut destination, &memory, &[&offered], true);
    let unsent = vec![4u8; 10];
    let sealed = manifest_with_volume(&memory, &[&unsent]);
    let error = sender.seal(sealed.clone()).unwrap_err();
    assert!(error.to_string().contains("no round offered"), "{error}");
    let seal = SourceFrame {
        frame: Some(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
            manifest: Some(sealed),
        })),
    };
    let error = destination.feed(seal).unwrap_err();
    assert!(error.to_string().contains("no round offered"), "{error}");
}

#[test]
fn a_round_s_volume_entries_are_handed_over_once_its_chunks_arrived_and_never_with_the_last_round() {
    let (mut sender, mut destination, memory, content, entries) = accepted_with_one_file();
    for last in [false, false, true] {
        round_with_one_file(
            &mut sender,
            &mut destination,
            (&memory, &content),
            entries.clone(),
            last,
        );
    }
    // Round 1 settles nothing; rounds 2 and 3 settle round 1's and round 2's
    // entries (the last round itself sends none).
    assert_eq!(destination.settled_entries, vec![None, entries.clone(), entries]);
}
