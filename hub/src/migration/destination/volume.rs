//! The arriving volume laid out ahead of the seal: each pre-copy round's
//! files, once their chunks are in, written out while the function still
//! runs at the source, so that the seal only patches what the last round
//! changed.
//!
//! A round is answered only once the layout of the round before it is
//! done (with heartbeats meanwhile, so the source's stall limit sees
//! work, not silence): the source pauses the function only after that
//! answer, so a large volume's writing falls in pre-copy, never in the
//! downtime (a 200 MiB file took 1.6 s of a move's downtime when the seal
//! waited for it).

use ferry_proto::internal::v1::VolumeState;

use super::Arrival;

impl Arrival {
    /// Lays out `entries` (the files as the rounds so far left them) over
    /// what the previous round laid out, and returns when it is done,
    /// telling the source every second that this hub works.
    pub(super) async fn lay_out_ahead(&mut self, entries: VolumeState) {
        let previous = self.prelaid();
        let (supervisor, name) = (self.supervisor.clone(), self.name());
        let mut laying = tokio::spawn(async move { supervisor.prelay_volume(&name, previous, entries).await });
        let (laid, _) = self
            .with_heartbeats(&mut laying, |arrival| arrival.progress.heartbeat())
            .await;
        self.prelaid = laid.ok().flatten();
    }

    /// What laying the volume out ahead of the seal laid out (`None`:
    /// nothing yet, or it failed: the seal lays the volume out afresh).
    pub(super) fn prelaid(&mut self) -> Option<VolumeState> {
        self.prelaid.take()
    }
}
