//! A round's chunks on their way out: encoded on a blocking thread (memory
//! chunks and the file chunks the round read; file chunks it did not read
//! as the store keeps them) and streamed to the destination. From the
//! second round on, a memory chunk of which the function wrote at most half
//! the pages since the round before goes as those pages
//! (`ferry_migrator::transfer::PageDelta`).

use std::collections::HashMap;
use std::sync::Arc;

use ferry_migrator::checkpoint::codec::StreamEncoder;
use ferry_migrator::checkpoint::store::gather_pages;
use ferry_migrator::checkpoint::{ChunkHash, DELTA_PAGE};
use ferry_migrator::transfer::{ChunkAt, Sender, TransferError, page_delta_worth_sending};
use ferry_proto::internal::v1::{ChunkData, SourceFrame, source_frame};
use ferry_proto::v1::migrate_progress;
use tokio::sync::mpsc;

use super::{MoveRun, PROGRESS_EVERY, frame, local, send, shared_view};
use crate::runtime::{MemoryChanges, Snapshot, SnapshotMemory};

/// One encoded chunk frame: the chunk's length, and for a chunk sent as
/// pages the length of those pages.
type Encoded = (u64, Option<u64>, SourceFrame);

/// The pages of each memory chunk the function wrote since the round
/// before (numbered within the chunk, ascending), for the chunks lying
/// whole below `below` bytes; empty when the capture does not know them.
fn written_pages_by_chunk(changes: &MemoryChanges, below: u64) -> HashMap<u32, Vec<u32>> {
    let mut by_chunk: HashMap<u32, Vec<u32>> = HashMap::new();
    let (Some(written), false) = (&changes.written_pages, changes.complete) else {
        return by_chunk;
    };
    let chunk_size = changes.chunk_size as usize;
    if below == 0 || !chunk_size.is_multiple_of(DELTA_PAGE) {
        return by_chunk;
    }
    let pages_per_chunk = (chunk_size / DELTA_PAGE) as u32;
    let chunks_below = (below / u64::from(changes.chunk_size)) as u32;
    for page in written {
        let chunk = page / pages_per_chunk;
        if chunk < chunks_below {
            by_chunk.entry(chunk).or_default().push(page % pages_per_chunk);
        }
    }
    for pages in by_chunk.values_mut() {
        pages.sort_unstable();
        pages.dedup();
    }
    by_chunk
}

impl MoveRun<'_> {
    /// Encodes the chunks on a blocking thread and streams them out.
    pub(super) async fn send_chunks(
        &self,
        sender: &mut Sender,
        outbound: &mpsc::Sender<SourceFrame>,
        snapshot: &Arc<Snapshot>,
        (to_send, lengths): (Vec<(ChunkHash, ChunkAt)>, HashMap<ChunkHash, u32>),
    ) -> Result<(), TransferError> {
        let (encoded_tx, mut encoded_rx) = mpsc::channel::<Encoded>(16);
        let pages_below = sender.page_deltas_below();
        let captured = Arc::clone(snapshot);
        let store = self.supervisor.checkpoint_store().clone();
        let encoder = tokio::task::spawn_blocking(move || {
            let SnapshotMemory::Changes(changes) = &captured.memory else {
                return Err("the round captured the whole memory, not its changes".to_owned());
            };
            let mut encoder = StreamEncoder::new(ferry_migrator::checkpoint::codec::DEFAULT_COMPRESSION_LEVEL)
                .map_err(|error| error.to_string())?;
            let written = written_pages_by_chunk(changes, pages_below);
            let volume: HashMap<ChunkHash, &[u8]> = captured
                .files
                .iter()
                .flat_map(|files| files.chunks.iter())
                .map(|(hash, bytes)| (*hash, &bytes[..]))
                .collect();
            for (hash, at) in to_send {
                let mut chunk = ChunkData {
                    hash: hash.0.to_vec(),
                    ..ChunkData::default()
                };
                let mut pages_len = None;
                let len = match at {
                    ChunkAt::Memory(slot) => {
                        let bytes = changes
                            .chunk(slot)
                            .ok_or_else(|| format!("chunk {slot} changed but was not captured"))?;
                        let as_pages = written
                            .get(&slot)
                            .and_then(|pages| Some((pages, page_delta_worth_sending(bytes.len(), pages)?)));
                        chunk.encoded = match as_pages {
                            Some((pages, bitmap)) => {
                                let gathered = gather_pages(bytes, pages);
                                pages_len = Some(gathered.len() as u64);
                                chunk.delta_slot = Some(slot);
                                chunk.delta_pages = bitmap;
                                encoder.encode(&gathered)
                            }
                            None => encoder.encode(bytes),
                        }
                        .map_err(|error| error.to_string())?;
                        bytes.len()
                    }
                    ChunkAt::Volume => {
                        let (len, encoded) = match volume.get(&hash) {
                            Some(bytes) => (bytes.len(), encoder.encode(bytes).map_err(|error| error.to_string())?),
                            // Unchanged since the latest checkpoint (the round's
                            // view started from it): sent as the store keeps it.
                            None => shared_view::stored_volume_chunk(&store, &hash, &lengths)?,
                        };
                        chunk.encoded = encoded;
                        len
                    }
                };
                let chunk = frame(source_frame::Frame::Chunk(chunk));
                if encoded_tx.blocking_send((len as u64, pages_len, chunk)).is_err() {
                    break;
                }
            }
            Ok::<(), String>(())
        });
        let mut since_report = 0;
        let mut round_sent = 0;
        while let Some((uncompressed, pages, chunk)) = encoded_rx.recv().await {
            let encoded_len = match &chunk.frame {
                Some(source_frame::Frame::Chunk(data)) => data.encoded.len() as u64,
                _ => 0,
            };
            send(&self.watchdog, outbound, chunk).await?;
            match pages {
                Some(pages) => sender.pages_sent(uncompressed, pages, encoded_len),
                None => sender.chunk_sent(uncompressed, encoded_len),
            }
            since_report += uncompressed;
            round_sent += uncompressed;
            if since_report >= PROGRESS_EVERY {
                since_report = 0;
                self.report(migrate_progress::Event::RoundBytesSent(round_sent));
            }
        }
        self.report(migrate_progress::Event::RoundBytesSent(round_sent));
        encoder
            .await
            .map_err(|error| local(format!("encoder failed: {error}")))?
            .map_err(|reason| local(format!("cannot encode a chunk: {reason}")))
    }
}
