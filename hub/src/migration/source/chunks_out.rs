//! A round's chunks on their way out: encoded on a blocking thread (memory
//! chunks and the file chunks the round read; file chunks it did not read
//! as the store keeps them) and streamed to the destination.

use std::sync::Arc;

use ferry_migrator::checkpoint::ChunkHash;
use ferry_migrator::checkpoint::codec::StreamEncoder;
use ferry_migrator::transfer::{ChunkAt, Sender, TransferError};
use ferry_proto::internal::v1::{ChunkData, SourceFrame, source_frame};
use ferry_proto::v1::migrate_progress;
use tokio::sync::mpsc;

use super::{MoveRun, PROGRESS_EVERY, frame, local, send, shared_view};
use crate::runtime::{Snapshot, SnapshotMemory};

impl MoveRun<'_> {
    /// Encodes the chunks on a blocking thread and streams them out.
    pub(super) async fn send_chunks(
        &self,
        sender: &mut Sender,
        outbound: &mpsc::Sender<SourceFrame>,
        snapshot: &Arc<Snapshot>,
        (to_send, lengths): (Vec<(ChunkHash, ChunkAt)>, std::collections::HashMap<ChunkHash, u32>),
    ) -> Result<(), TransferError> {
        let (encoded_tx, mut encoded_rx) = mpsc::channel::<(u64, SourceFrame)>(16);
        let captured = Arc::clone(snapshot);
        let store = self.supervisor.checkpoint_store().clone();
        let encoder = tokio::task::spawn_blocking(move || {
            let SnapshotMemory::Changes(changes) = &captured.memory else {
                return Err("the round captured the whole memory, not its changes".to_owned());
            };
            let mut encoder = StreamEncoder::new(ferry_migrator::checkpoint::codec::DEFAULT_COMPRESSION_LEVEL)
                .map_err(|error| error.to_string())?;
            let volume: std::collections::HashMap<ChunkHash, &[u8]> = captured
                .files
                .iter()
                .flat_map(|files| files.chunks.iter())
                .map(|(hash, bytes)| (*hash, &bytes[..]))
                .collect();
            for (hash, at) in to_send {
                let (len, encoded) = match at {
                    ChunkAt::Memory(slot) => {
                        let bytes = changes
                            .chunk(slot)
                            .ok_or_else(|| format!("chunk {slot} changed but was not captured"))?;
                        (bytes.len(), encoder.encode(bytes).map_err(|error| error.to_string())?)
                    }
                    ChunkAt::Volume => match volume.get(&hash) {
                        Some(bytes) => (bytes.len(), encoder.encode(bytes).map_err(|error| error.to_string())?),
                        // Unchanged since the latest checkpoint (the round's
                        // view started from it): sent as the store keeps it.
                        None => shared_view::stored_volume_chunk(&store, &hash, &lengths)?,
                    },
                };
                let chunk = frame(source_frame::Frame::Chunk(ChunkData {
                    hash: hash.0.to_vec(),
                    encoded,
                }));
                if encoded_tx.blocking_send((len as u64, chunk)).is_err() {
                    break;
                }
            }
            Ok::<(), String>(())
        });
        let mut since_report = 0;
        let mut round_sent = 0;
        while let Some((uncompressed, chunk)) = encoded_rx.recv().await {
            let encoded_len = match &chunk.frame {
                Some(source_frame::Frame::Chunk(data)) => data.encoded.len() as u64,
                _ => 0,
            };
            send(&self.watchdog, outbound, chunk).await?;
            sender.chunk_sent(uncompressed, encoded_len);
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
