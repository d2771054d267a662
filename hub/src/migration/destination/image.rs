//! The arrival image and the warm instance it is mirrored into.

use std::sync::Arc;

use super::Arrival;

impl Arrival {
    /// Instantiates the function now, while the rounds stream, so that the
    /// arriving memory goes straight into it and the commit only rewinds.
    /// Without one the start is cold (instantiate, then copy the image).
    pub(super) async fn warm_up(&mut self) {
        let Some(spec) = self.receiver.offer().and_then(|offer| offer.spec.clone()) else {
            return;
        };
        match self.supervisor.warm_instance(&spec).await {
            Ok(warm) => self.warm = Some(warm),
            Err(error) => {
                tracing::info!(function = %spec.name, error = %ferry_proto::error_chain(&error), "no warm instance; the start will be cold");
            }
        }
    }

    /// Writes the image's slot into the warm instance too.
    pub(super) fn mirror(&self, slot: u32) {
        if let Some(warm) = &self.warm {
            let start = slot as usize * self.chunk_size;
            let end = (start + self.chunk_size).min(self.image.len());
            if let Some(bytes) = self.image.get(start..end) {
                warm.write(start as u64, Arc::new(bytes.to_vec()));
            }
        }
    }

    /// Grows the image to `bytes` (memory only grows). A first image is
    /// allocated zeroed, which the kernel does lazily: no 64 MiB memset
    /// before the first round's answer.
    pub(super) fn grow_image(&mut self, bytes: usize) {
        if self.image.is_empty() {
            self.image = vec![0; bytes];
        } else {
            self.image.resize(bytes, 0);
        }
    }

    pub(super) fn slot(&mut self, slot: u32) -> &mut [u8] {
        let start = slot as usize * self.chunk_size;
        let end = (start + self.chunk_size).min(self.image.len());
        &mut self.image[start..end]
    }
}
