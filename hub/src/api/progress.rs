//! A move's progress on its way to the caller.

use std::future::Future;

use ferry_proto::v1::MigrateProgress;
use tokio::sync::mpsc;

/// Drives `moving` to its end while passing the progress it reports on
/// `progress` to the caller's `events`, and returns its result. Progress
/// never waits for the caller: one that stopped reading (a CLI suspended
/// with ^Z, a stalled pipe, a full forward) must not hold the move up —
/// in its last round, with the function paused. What does not fit is
/// dropped (each figure a later event repeats); the caller sends the
/// summary itself, waiting for room.
pub(super) async fn relay<T, E>(
    moving: impl Future<Output = T>,
    mut progress: mpsc::Receiver<MigrateProgress>,
    events: &mpsc::Sender<Result<MigrateProgress, E>>,
) -> T {
    tokio::pin!(moving);
    let result = loop {
        tokio::select! {
            result = &mut moving => break result,
            Some(event) = progress.recv() => {
                let _ = events.try_send(Ok(event));
            }
        }
    };
    while let Ok(event) = progress.try_recv() {
        let _ = events.try_send(Ok(event));
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_proto::v1::migrate_progress;

    use super::*;

    fn bytes_sent(bytes: u64) -> MigrateProgress {
        MigrateProgress {
            event: Some(migrate_progress::Event::RoundBytesSent(bytes)),
        }
    }

    #[tokio::test]
    async fn a_move_ends_while_its_caller_reads_none_of_its_progress() {
        let (progress_tx, progress_rx) = mpsc::channel(256);
        // Room for one event, and nobody reads it.
        let (events_tx, _events_rx) = mpsc::channel::<Result<MigrateProgress, ()>>(1);
        let moving = async move {
            for megabyte in 1..=20 {
                let _ = progress_tx.send(bytes_sent(megabyte << 20)).await;
                tokio::task::yield_now().await;
            }
            "moved"
        };
        let relayed = tokio::time::timeout(Duration::from_secs(10), relay(moving, progress_rx, &events_tx)).await;
        assert_eq!(relayed, Ok("moved"), "the move waited for its caller");
    }

    #[tokio::test]
    async fn a_caller_that_reads_gets_every_event_in_order() {
        let (progress_tx, progress_rx) = mpsc::channel(256);
        let (events_tx, mut events_rx) = mpsc::channel::<Result<MigrateProgress, ()>>(256);
        let moving = async move {
            for megabyte in 1..=5 {
                let _ = progress_tx.send(bytes_sent(megabyte)).await;
            }
        };
        relay(moving, progress_rx, &events_tx).await;
        drop(events_tx);
        let mut seen = Vec::new();
        while let Some(Ok(event)) = events_rx.recv().await {
            seen.push(event);
        }
        assert_eq!(seen, (1..=5).map(bytes_sent).collect::<Vec<_>>());
    }
}
