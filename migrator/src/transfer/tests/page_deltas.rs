//! Chunks that travel as the pages written since the previous round.

use super::*;
use crate::checkpoint::DELTA_PAGE;
use ferry_proto::internal::v1::{Accept, ChunkData, destination_frame};

const PAGE: usize = DELTA_PAGE;

/// A sender and a destination past the offer; `takes_page_deltas` is what
/// the destination's accept says.
fn accepted(takes_page_deltas: bool) -> (Sender, Destination) {
    let mut sender = Sender::new(CHUNK, RoundPolicy::default());
    let mut destination = Destination::new(&[], true);
    let mut accept = destination.feed(offer(0)).unwrap().unwrap();
    assert!(
        matches!(
            &accept.frame,
            Some(destination_frame::Frame::Accept(Accept {
                takes_page_deltas: true,
                ..
            }))
        ),
        "a receiver takes page deltas: {accept:?}"
    );
    if let Some(destination_frame::Frame::Accept(accept)) = &mut accept.frame {
        accept.takes_page_deltas = takes_page_deltas;
    }
    sender.on_accept(accept).unwrap();
    (sender, destination)
}

/// The frame of a chunk sent as `pages` of slot `slot` of `memory`.
fn pages_frame(hash: &ChunkHash, memory: &[u8], slot: u32, pages: &[u32]) -> SourceFrame {
    let chunk = &memory[slot as usize * CHUNK as usize..(slot as usize + 1) * CHUNK as usize];
    let mut gathered = Vec::new();
    for page in pages {
        gathered.extend_from_slice(&chunk[*page as usize * PAGE..(*page as usize + 1) * PAGE]);
    }
    SourceFrame {
        frame: Some(source_frame::Frame::Chunk(ChunkData {
            hash: hash.0.to_vec(),
            encoded: encode_chunk(&gathered, 1).unwrap(),
            delta_slot: Some(slot),
            delta_pages: page_delta_worth_sending(chunk.len(), pages).expect("few pages"),
        })),
    }
}

/// [`round`], sending each chunk of which `written` (pages of the memory)
/// names at most half the pages as those pages, where the sender allows.
fn round_sending_pages(
    sender: &mut Sender,
    destination: &mut Destination,
    memory: &[u8],
    written: &[u32],
    last: bool,
) -> u64 {
    let planned = sender.plan_round(&hashes(memory), memory.len() as u64, &[], last);
    let below = sender.page_deltas_below();
    let need = destination.feed(planned.frame).unwrap().expect("a need");
    let per_chunk = (CHUNK as usize / PAGE) as u32;
    for (hash, at) in sender.on_need(need).unwrap() {
        let ChunkAt::Memory(slot) = at else {
            panic!("no volume here")
        };
        let start = slot as usize * CHUNK as usize;
        let pages: Vec<u32> = written
            .iter()
            .filter(|page| **page / per_chunk == slot)
            .map(|page| page % per_chunk)
            .collect();
        let whole_below = (start + CHUNK as usize) as u64 <= below;
        let frame = match page_delta_worth_sending(CHUNK as usize, &pages).filter(|_| whole_below) {
            Some(_) => {
                let frame = pages_frame(&hash, memory, slot, &pages);
                let encoded = match &frame.frame {
                    Some(source_frame::Frame::Chunk(chunk)) => chunk.encoded.len() as u64,
                    _ => unreachable!(),
                };
                sender.pages_sent(u64::from(CHUNK), (pages.len() * PAGE) as u64, encoded);
                frame
            }
            None => {
                let bytes = &memory[start..start + CHUNK as usize];
                sender.chunk_sent(bytes.len() as u64, 0);
                chunk_frame(&hash, bytes)
            }
        };
        assert!(destination.feed(frame).unwrap().is_none());
    }
    planned.changed_bytes
}

/// Writes `byte` at `offset` of every page of `memory` named in `pages`.
fn write_pages(memory: &mut [u8], pages: &[u32], byte: u8) {
    for page in pages {
        memory[*page as usize * PAGE + 100] = byte;
    }
}

#[test]
fn chunks_written_in_a_few_pages_travel_as_those_pages_from_the_second_round_and_rebuild_the_memory() {
    let (mut sender, mut destination) = accepted(true);
    let mut memory: Vec<u8> = (0..8 * CHUNK as usize).map(|at| (at % 253) as u8).collect();
    assert_eq!(
        sender.page_deltas_below(),
        0,
        "nothing to go over before the first round"
    );
    round_sending_pages(&mut sender, &mut destination, &memory, &[], false);
    assert_eq!(sender.stats().bytes_left_out_by_pages, 0);

    // Pages 3 of chunk 0, 0 and 15 of chunk 5 written; a zero chunk (7)
    // written in one page; the memory grew by a chunk, written whole.
    memory[7 * CHUNK as usize..].fill(0);
    round_sending_pages(&mut sender, &mut destination, &memory, &[], false);
    let written = [3, 5 * 16, 5 * 16 + 15, 7 * 16 + 2];
    write_pages(&mut memory, &written, 0xEE);
    memory.extend((0..CHUNK).map(|at| (at % 7) as u8));
    round_sending_pages(&mut sender, &mut destination, &memory, &written, false);
    assert_eq!(
        sender.page_deltas_below(),
        8 * u64::from(CHUNK),
        "the previous round's memory"
    );
    assert_eq!(destination.image, memory);
    assert_eq!(
        sender.stats().bytes_left_out_by_pages,
        3 * u64::from(CHUNK) - 4 * PAGE as u64,
        "three chunks went as four pages"
    );

    // The last round too; the seal matches the rounds.
    let written = [16 + 1];
    write_pages(&mut memory, &written, 0x11);
    round_sending_pages(&mut sender, &mut destination, &memory, &written, true);
    assert_eq!(destination.image, memory);
    let prepared = destination.feed(sender.seal(manifest(&memory)).unwrap()).unwrap();
    assert!(prepared.is_some());
}

#[test]
fn a_destination_that_does_not_take_page_deltas_gets_whole_chunks() {
    let (mut sender, mut destination) = accepted(false);
    let mut memory = memory_with(4, &[(0, 1), (1, 2)]);
    round_sending_pages(&mut sender, &mut destination, &memory, &[], false);
    write_pages(&mut memory, &[0, 17], 9);
    round_sending_pages(&mut sender, &mut destination, &memory, &[0, 17], false);
    assert_eq!(sender.page_deltas_below(), 0);
    assert_eq!(sender.stats().bytes_left_out_by_pages, 0);
    assert_eq!(destination.image, memory);
}

/// A destination past round 2, whose plan changed slots 0 and 2 (the memory
/// grew from 2 to 3 chunks), and that memory.
fn in_second_round() -> (Destination, Vec<u8>, ChunkHash, ChunkHash) {
    let (mut sender, mut destination) = accepted(true);
    let mut memory = memory_with(2, &[(0, 1), (1, 2)]);
    round_sending_pages(&mut sender, &mut destination, &memory, &[], false);
    write_pages(&mut memory, &[0], 7);
    memory.extend(std::iter::repeat_n(5, CHUNK as usize));
    let planned = sender.plan_round(&hashes(&memory), memory.len() as u64, &[], false);
    destination.feed(planned.frame).unwrap().expect("a need");
    let hashes = hashes(&memory);
    (destination, memory, hashes[0].unwrap(), hashes[2].unwrap())
}

#[test]
fn pages_over_a_slot_the_round_does_not_give_the_chunk_or_past_the_previous_memory_are_refused() {
    let (mut destination, memory, first, grown) = in_second_round();
    let mut frame = pages_frame(&first, &memory, 0, &[0]);
    if let Some(source_frame::Frame::Chunk(chunk)) = &mut frame.frame {
        chunk.delta_slot = Some(1);
    }
    let error = destination.feed(frame).unwrap_err();
    assert!(error.to_string().contains("does not give it"), "{error}");

    let (mut destination, memory, _, _) = in_second_round();
    let error = destination.feed(pages_frame(&grown, &memory, 2, &[0])).unwrap_err();
    assert!(error.to_string().contains("did not hold whole"), "{error}");

    // In the first round there is no previous version at all.
    let (mut sender, mut destination) = accepted(true);
    let memory = memory_with(1, &[(0, 3)]);
    let planned = sender.plan_round(&hashes(&memory), memory.len() as u64, &[], false);
    destination.feed(planned.frame).unwrap();
    let error = destination
        .feed(pages_frame(&hashes(&memory)[0].unwrap(), &memory, 0, &[0]))
        .unwrap_err();
    assert!(error.to_string().contains("did not hold whole"), "{error}");
}

#[test]
fn pages_that_do_not_rebuild_the_chunk_named_are_a_mismatch() {
    let (mut destination, memory, first, _) = in_second_round();
    // Page 1 was not written: page 0 alone goes, but page 1 as sent claims
    // it was, with other bytes.
    let mut other = memory.clone();
    other[PAGE + 5] ^= 0xFF;
    let error = destination.feed(pages_frame(&first, &other, 0, &[0, 1])).unwrap_err();
    assert!(matches!(error, TransferError::ChunkMismatch { .. }), "{error}");
}
