//! The encoding of one memory chunk, at rest and on the wire: one codec byte,
//! then the payload — a zstd frame ([`CODEC_ZSTD`]) or, when compression does
//! not make the chunk smaller, the raw bytes ([`CODEC_RAW`]).
//!
//! Decoding is bounded: a chunk never decodes to more than the length the
//! caller expects, or than [`MAX_CHUNK_SIZE`] when it expects none.

use super::{CheckpointError, ChunkHash, MAX_CHUNK_SIZE, chunking::hash_chunk};

/// Codec byte of a chunk stored uncompressed.
pub const CODEC_RAW: u8 = 0;
/// Codec byte of a chunk stored as one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// zstd level of new chunks: fast, since checkpoints sit on the downtime path.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// Encodes chunks, reusing one zstd context.
pub struct ChunkEncoder {
    compressor: zstd::bulk::Compressor<'static>,
}

impl ChunkEncoder {
    /// An encoder compressing at zstd `level`.
    pub fn new(level: i32) -> Result<ChunkEncoder, CheckpointError> {
        let compressor = zstd::bulk::Compressor::new(level).map_err(CheckpointError::Compression)?;
        Ok(ChunkEncoder { compressor })
    }

    /// The encoded form of `bytes`.
    pub fn encode(&mut self, bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
        let compressed = self.compressor.compress(bytes).map_err(CheckpointError::Compression)?;
        if compressed.len() >= bytes.len() {
            return Ok(raw(bytes));
        }
        let mut encoded = Vec::with_capacity(1 + compressed.len());
        encoded.push(CODEC_ZSTD);
        encoded.extend_from_slice(&compressed);
        Ok(encoded)
    }
}

/// A chunk "paid" for its compression when it shrank below this many
/// 1/16ths of its size.
const PAYS_SIXTEENTHS: usize = 14;
/// The longest stretch of chunks [`StreamEncoder`] sends raw without a try.
const MAX_SKIP: u32 = 32;

/// Encodes a stream of chunks (a transfer), compressing only where it
/// pays: after a chunk that did not shrink by an eighth, the next chunks
/// go raw without a try — one, then two, four, … up to [`MAX_SKIP`] while
/// the tries keep failing; one that pays resets it. Incompressible memory
/// (encrypted, random, already compressed) then costs one compression in
/// 33 chunks instead of every one; compressible memory is always compressed.
pub struct StreamEncoder {
    encoder: ChunkEncoder,
    /// A chunk pays when it shrinks below this many 1/16ths of its size.
    pays_sixteenths: usize,
    /// Chunks still to send raw without a try.
    skip: u32,
    /// The stretch the next failed try starts.
    stretch: u32,
    /// Compressions tried so far.
    tries: u64,
}

impl StreamEncoder {
    pub fn new(level: i32) -> Result<StreamEncoder, CheckpointError> {
        StreamEncoder::paying_below(level, PAYS_SIXTEENTHS)
    }

    /// An encoder for which compression pays only when a chunk shrinks
    /// below `sixteenths` 1/16ths of its size.
    pub fn paying_below(level: i32, sixteenths: usize) -> Result<StreamEncoder, CheckpointError> {
        Ok(StreamEncoder {
            encoder: ChunkEncoder::new(level)?,
            pays_sixteenths: sixteenths,
            skip: 0,
            stretch: 1,
            tries: 0,
        })
    }

    /// The encoded form of `bytes`: compressed, or raw.
    pub fn encode(&mut self, bytes: &[u8]) -> Result<Vec<u8>, CheckpointError> {
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(raw(bytes));
        }
        self.tries += 1;
        let encoded = self.encoder.encode(bytes)?;
        if (encoded.len() - 1) * 16 < bytes.len() * self.pays_sixteenths {
            self.stretch = 1;
        } else {
            self.skip = self.stretch;
            self.stretch = (self.stretch * 2).min(MAX_SKIP);
        }
        Ok(encoded)
    }

    /// Compressions tried so far.
    pub fn tries(&self) -> u64 {
        self.tries
    }
}

/// `bytes` encoded raw.
fn raw(bytes: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(1 + bytes.len());
    encoded.push(CODEC_RAW);
    encoded.extend_from_slice(bytes);
    encoded
}

/// Decodes chunks, reusing one zstd context.
pub struct ChunkDecoder {
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl ChunkDecoder {
    /// A decoder.
    pub fn new() -> Result<ChunkDecoder, CheckpointError> {
        let decompressor = zstd::bulk::Decompressor::new().map_err(CheckpointError::Compression)?;
        Ok(ChunkDecoder { decompressor })
    }

    /// Decodes `encoded` into `destination`, which it must fill exactly.
    /// The error is the reason, for the caller to name the chunk.
    pub fn decode_into(&mut self, encoded: &[u8], destination: &mut [u8]) -> Result<(), String> {
        let Some((&codec, payload)) = encoded.split_first() else {
            return Err("the stored chunk is empty".to_owned());
        };
        match codec {
            CODEC_RAW => {
                if payload.len() != destination.len() {
                    return Err(format!(
                        "raw chunk is {} bytes, expected {}",
                        payload.len(),
                        destination.len()
                    ));
                }
                destination.copy_from_slice(payload);
                Ok(())
            }
            CODEC_ZSTD => {
                let written = self
                    .decompressor
                    .decompress_to_buffer(payload, destination)
                    .map_err(|error| {
                        format!("zstd frame does not decompress to {} bytes: {error}", destination.len())
                    })?;
                if written != destination.len() {
                    return Err(format!(
                        "zstd frame decompresses to {written} bytes, expected {}",
                        destination.len()
                    ));
                }
                Ok(())
            }
            other => Err(format!("unknown chunk codec {other}")),
        }
    }

    /// Decodes `encoded`, whose length is unknown to the caller (at most
    /// [`MAX_CHUNK_SIZE`]), and checks that it is the chunk named `hash`.
    pub fn decode_verified(&mut self, encoded: &[u8], hash: &ChunkHash) -> Result<Vec<u8>, String> {
        let length = decoded_len(encoded)?;
        let mut bytes = vec![0u8; length];
        self.decode_into(encoded, &mut bytes)?;
        verify_chunk(&bytes, hash)?;
        Ok(bytes)
    }
}

/// The length `encoded` claims to decode to, refused above [`MAX_CHUNK_SIZE`].
fn decoded_len(encoded: &[u8]) -> Result<usize, String> {
    let Some((&codec, payload)) = encoded.split_first() else {
        return Err("the chunk is empty".to_owned());
    };
    let length = match codec {
        CODEC_RAW => payload.len() as u64,
        CODEC_ZSTD => match zstd::zstd_safe::get_frame_content_size(payload) {
            Ok(Some(length)) => length,
            Ok(None) => return Err("zstd frame does not declare its size".to_owned()),
            Err(_) => return Err("not a zstd frame".to_owned()),
        },
        other => return Err(format!("unknown chunk codec {other}")),
    };
    if length == 0 || length > u64::from(MAX_CHUNK_SIZE) {
        return Err(format!("chunk claims {length} bytes, outside 1..={MAX_CHUNK_SIZE}"));
    }
    usize::try_from(length).map_err(|_| format!("chunk claims {length} bytes"))
}

/// Checks that `bytes` are the chunk named `hash`.
pub fn verify_chunk(bytes: &[u8], hash: &ChunkHash) -> Result<(), String> {
    let actual = hash_chunk(bytes);
    if actual != *hash {
        return Err(format!("its {} bytes hash to {actual}", bytes.len()));
    }
    Ok(())
}

/// Encodes one chunk at `level` (convenience over [`ChunkEncoder`]).
pub fn encode_chunk(bytes: &[u8], level: i32) -> Result<Vec<u8>, CheckpointError> {
    ChunkEncoder::new(level)?.encode(bytes)
}

/// Decodes one chunk into `destination` and checks it is the chunk named
/// `hash` (convenience over [`ChunkDecoder`]).
pub fn decode_chunk_into(encoded: &[u8], hash: &ChunkHash, destination: &mut [u8]) -> Result<(), CheckpointError> {
    let what = || format!("chunk {hash}");
    ChunkDecoder::new()?
        .decode_into(encoded, destination)
        .and_then(|()| verify_chunk(destination, hash))
        .map_err(|reason| CheckpointError::corrupt(what(), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_chunks_are_compressed_and_random_ones_kept_raw() -> Result<(), CheckpointError> {
        let compressible = vec![7u8; 4096];
        let random = random_chunk(0x1234_5678, 4096);
        for (name, bytes, codec) in [
            ("compressible", &compressible, CODEC_ZSTD),
            ("random", &random, CODEC_RAW),
        ] {
            let encoded = encode_chunk(bytes, DEFAULT_COMPRESSION_LEVEL)?;
            assert_eq!(encoded[0], codec, "{name}");
            let hash = hash_chunk(bytes);
            let mut decoded = vec![0u8; bytes.len()];
            decode_chunk_into(&encoded, &hash, &mut decoded)?;
            assert_eq!(&decoded, bytes, "{name}");
            assert_eq!(
                &ChunkDecoder::new()?
                    .decode_verified(&encoded, &hash)
                    .map_err(|reason| { CheckpointError::corrupt(name, reason) })?,
                bytes
            );
        }
        Ok(())
    }

    fn random_chunk(seed: u32, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_stream_of_incompressible_chunks_is_tried_rarely_and_compressible_ones_always() -> Result<(), CheckpointError> {
        let mut encoder = StreamEncoder::new(DEFAULT_COMPRESSION_LEVEL)?;
        let mut decoder = ChunkDecoder::new()?;
        for index in 0..256 {
            let chunk = random_chunk(index, 4096);
            let encoded = encoder.encode(&chunk)?;
            assert_eq!(encoded[0], CODEC_RAW);
            let mut decoded = vec![0u8; chunk.len()];
            decoder
                .decode_into(&encoded, &mut decoded)
                .map_err(|reason| CheckpointError::corrupt("raw", reason))?;
            assert_eq!(decoded, chunk);
        }
        // 1 + 1 + 2 + 4 + 8 + 16 chunks up to the longest stretch, then one try per 33.
        assert!(encoder.tries() <= 6 + (256 - 32) / 33 + 1, "{} tries", encoder.tries());
        // The first compressible chunk after a stretch is compressed, and so is every one after it.
        let compressible = vec![7u8; 4096];
        let mut compressed = 0;
        for _ in 0..64 {
            if encoder.encode(&compressible)?[0] == CODEC_ZSTD {
                compressed += 1;
            }
        }
        assert!(compressed >= 64 - 32, "{compressed} of 64 compressed");
        let tries = encoder.tries();
        for _ in 0..16 {
            assert_eq!(encoder.encode(&compressible)?[0], CODEC_ZSTD);
        }
        assert_eq!(encoder.tries(), tries + 16);
        Ok(())
    }

    #[test]
    fn a_chunk_never_decodes_past_its_expected_length() -> Result<(), CheckpointError> {
        let encoded = encode_chunk(&vec![1u8; 8192], DEFAULT_COMPRESSION_LEVEL)?;
        let mut too_small = vec![0u8; 4096];
        let mut decoder = ChunkDecoder::new()?;
        assert!(decoder.decode_into(&encoded, &mut too_small).is_err());
        let mut too_large = vec![0u8; 16384];
        assert!(decoder.decode_into(&encoded, &mut too_large).is_err());
        Ok(())
    }

    #[test]
    fn hostile_encodings_are_refused() -> Result<(), CheckpointError> {
        let hash = hash_chunk(b"x");
        let mut decoder = ChunkDecoder::new()?;
        let cases: [(&str, Vec<u8>); 4] = [
            ("empty", vec![]),
            ("unknown codec", vec![9, 1, 2, 3]),
            ("garbage zstd", vec![CODEC_ZSTD, 1, 2, 3, 4, 5, 6, 7, 8]),
            ("wrong content", vec![CODEC_RAW, b'y']),
        ];
        for (name, encoded) in cases {
            assert!(decoder.decode_verified(&encoded, &hash).is_err(), "{name}");
        }
        Ok(())
    }
}
