//! Compiled-artifact cache: serialized Wasmer modules keyed by everything that
//! decides the machine code, stored with a BLAKE3 checksum.

use super::{Store, StoreError, off_worker};

/// What a compiled artifact depends on. An artifact is only ever loaded by a
/// hub whose key matches exactly, so no hub runs native code built for
/// another Wasmer, another CPU or another instrumentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactKey {
    pub module_hash: String,
    pub instrumentation_version: u32,
    pub wasmer_version: &'static str,
    pub target: String,
}

impl ArtifactKey {
    pub(super) fn encode(&self) -> String {
        format!(
            "{}/instrumentation-{}/wasmer-{}/{}",
            self.module_hash, self.instrumentation_version, self.wasmer_version, self.target
        )
    }
}

const CHECKSUM_LEN: usize = 32;

impl Store {
    /// A cached artifact, or `None` when absent. A cached artifact whose
    /// checksum does not match is dropped and reported as absent.
    pub fn artifact(&self, key: &ArtifactKey) -> Result<Option<Vec<u8>>, StoreError> {
        off_worker(|| {
            let encoded = key.encode();
            let Some(value) = self.artifacts.get(&encoded)? else {
                return Ok(None);
            };
            if value.len() >= CHECKSUM_LEN {
                let (checksum, bytes) = value.split_at(CHECKSUM_LEN);
                if blake3::hash(bytes).as_bytes() == checksum {
                    return Ok(Some(bytes.to_vec()));
                }
            }
            tracing::warn!(key = %encoded, "dropping a cached artifact that fails its checksum");
            self.artifacts.remove(&encoded)?;
            Ok(None)
        })
    }

    pub fn put_artifact(&self, key: &ArtifactKey, bytes: &[u8]) -> Result<(), StoreError> {
        off_worker(|| {
            self.claim_room(CHECKSUM_LEN + bytes.len())?;
            let mut value = Vec::with_capacity(CHECKSUM_LEN + bytes.len());
            value.extend_from_slice(blake3::hash(bytes).as_bytes());
            value.extend_from_slice(bytes);
            self.artifacts.insert(key.encode(), value)?;
            Ok(())
        })
    }
}
