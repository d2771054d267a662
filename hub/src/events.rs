//! The hub's own decisions (rebalancing moves, refusals, suspensions,
//! resumptions, drains) with their reasons, for `ferry events`: the last
//! [`EVENTS_KEPT`] in memory, and a live stream for followers.

use std::collections::VecDeque;
use std::sync::Mutex;

use ferry_proto::v1::HubEvent;
use futures::{Stream, StreamExt, stream};
use tokio::sync::broadcast;

use crate::logs::unix_ms_now;

/// Events kept for `ferry events` without `--follow`.
pub const EVENTS_KEPT: usize = 1000;

/// What kind of decision an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Moved,
    MoveFailed,
    Refused,
    Suspended,
    Resumed,
    Unbalanceable,
    Recommend,
    Drain,
    Undrain,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Moved => "moved",
            EventKind::MoveFailed => "move-failed",
            EventKind::Refused => "refused",
            EventKind::Suspended => "suspended",
            EventKind::Resumed => "resumed",
            EventKind::Unbalanceable => "unbalanceable",
            EventKind::Recommend => "recommend",
            EventKind::Drain => "drain",
            EventKind::Undrain => "undrain",
        }
    }
}

struct Kept {
    next_seq: u64,
    recent: VecDeque<HubEvent>,
}

/// The hub's event log.
pub struct HubEvents {
    kept: Mutex<Kept>,
    live: broadcast::Sender<HubEvent>,
}

impl Default for HubEvents {
    fn default() -> Self {
        HubEvents {
            kept: Mutex::new(Kept {
                next_seq: 0,
                recent: VecDeque::new(),
            }),
            live: broadcast::channel(EVENTS_KEPT).0,
        }
    }
}

impl HubEvents {
    /// Records a decision: kept, sent to followers, and logged.
    pub fn record(&self, kind: EventKind, function: &str, peer: &str, text: String) -> HubEvent {
        tracing::info!(kind = kind.as_str(), function, peer, "{text}");
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let event = HubEvent {
            seq: kept.next_seq,
            unix_ms: unix_ms_now(),
            kind: kind.as_str().to_owned(),
            function: function.to_owned(),
            peer: peer.to_owned(),
            text,
        };
        kept.next_seq += 1;
        if kept.recent.len() == EVENTS_KEPT {
            kept.recent.pop_front();
        }
        kept.recent.push_back(event.clone());
        // Nobody following is fine.
        let _ = self.live.send(event.clone());
        event
    }

    /// Receives every event recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.live.subscribe()
    }

    /// The last `tail` kept events (all when 0), then, if `follow`, every
    /// later one; each once. A follower that falls more than
    /// [`EVENTS_KEPT`] behind skips what it missed.
    pub fn stream(&self, tail: usize, follow: bool) -> impl Stream<Item = HubEvent> + Send + 'static {
        let (history, live) = {
            let kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let skip = if tail == 0 {
                0
            } else {
                kept.recent.len().saturating_sub(tail)
            };
            let history: Vec<HubEvent> = kept.recent.iter().skip(skip).cloned().collect();
            (history, follow.then(|| self.live.subscribe()))
        };
        let last_seq = history.last().map(|event| event.seq);
        let live = stream::unfold((live, last_seq), |(live, last_seq)| async move {
            let mut live = live?;
            loop {
                match live.recv().await {
                    Ok(event) if last_seq.is_some_and(|last| event.seq <= last) => {}
                    Ok(event) => {
                        let seq = Some(event.seq);
                        return Some((event, (Some(live), seq)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        stream::iter(history).chain(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_follower_gets_the_kept_events_then_new_ones_each_once() {
        let events = HubEvents::default();
        events.record(EventKind::Moved, "a", "hub-b", "moved a to hub-b".to_owned());
        events.record(EventKind::Suspended, "b", "", "suspended b".to_owned());
        let mut followed = Box::pin(events.stream(1, true));
        assert_eq!(followed.next().await.unwrap().function, "b");
        events.record(EventKind::Resumed, "b", "", "resumed b".to_owned());
        let next = followed.next().await.unwrap();
        assert_eq!((next.kind.as_str(), next.seq), ("resumed", 2));
    }

    #[tokio::test]
    async fn only_the_newest_events_are_kept() {
        let events = HubEvents::default();
        for n in 0..EVENTS_KEPT + 5 {
            events.record(EventKind::Refused, "f", "", format!("refused {n}"));
        }
        let kept: Vec<HubEvent> = events.stream(0, false).collect().await;
        assert_eq!(kept.len(), EVENTS_KEPT);
        assert_eq!(kept[0].seq, 5);
    }
}
