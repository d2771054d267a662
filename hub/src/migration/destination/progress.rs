//! The destination's progress reports (the `Received` frame), by which the
//! source judges its stall limit.

use std::time::Instant;

use ferry_proto::internal::v1::{DestinationFrame, Received, SourceFrame, destination_frame};

/// What the destination tells the source of its progress (see the
/// `Received` frame): the bytes read, at most once per [`REPORT_EVERY`],
/// the first one [`REPORT_EVERY`] after the transfer began.
pub(super) struct ProgressReport {
    bytes: u64,
    last: Instant,
}

impl Default for ProgressReport {
    fn default() -> Self {
        ProgressReport {
            bytes: 0,
            last: Instant::now(),
        }
    }
}

/// How often a destination reports the bytes it has read.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl ProgressReport {
    /// A report of what was read so far, at once: a heartbeat while this
    /// side works between two frames.
    pub(super) fn heartbeat(&self) -> DestinationFrame {
        DestinationFrame {
            frame: Some(destination_frame::Frame::Received(Received { bytes: self.bytes })),
        }
    }

    pub(super) fn on_frame(&mut self, frame: &SourceFrame) -> Option<DestinationFrame> {
        self.bytes += prost::Message::encoded_len(frame) as u64;
        let now = Instant::now();
        if now.duration_since(self.last) < REPORT_EVERY {
            return None;
        }
        self.last = now;
        Some(DestinationFrame {
            frame: Some(destination_frame::Frame::Received(Received { bytes: self.bytes })),
        })
    }
}
