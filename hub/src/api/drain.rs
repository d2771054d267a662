//! `ferry drain`, `ferry undrain` and `ferry events`: the hub's own
//! decisions, and the switch that makes it move everything off.

use std::time::{Duration, Instant};

use ferry_proto::v1::{DrainProgress, DrainRequest, DrainSummary, EventsRequest, HubEvent, HubInfo, UndrainRequest};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{AnswerStream, HubApi};
use crate::error::HubError;
use crate::events::EventKind;
use crate::supervisor::{Phase, Suspender};

/// A drain that moved nothing for this long gives up reporting (the drain
/// itself stays in effect) and says what is left.
const DRAIN_PATIENCE: Duration = Duration::from_secs(60);

/// What a drain finds on its hub.
#[derive(Default)]
struct Candidates {
    movable: Vec<String>,
    pinned: Vec<String>,
    stuck: Vec<String>,
    /// No peer takes functions (none is up, or every one drains): nothing
    /// can move until one does.
    no_peer_up: bool,
    /// Functions that do not run, as `name (state)`: a drain leaves them.
    not_running: Vec<String>,
}

/// Which hub a drain names.
enum HubRef {
    Here,
    Peer(super::forward::PeerAt),
}

impl HubApi {
    /// The hub's decisions: the last `tail` kept (all when 0), then, with
    /// `follow`, each new one.
    pub fn events(&self, request: EventsRequest) -> AnswerStream<HubEvent> {
        self.inner
            .events
            .stream(request.tail as usize, request.follow)
            .map(Ok)
            .boxed()
    }

    fn hub_ref(&self, hub: &str) -> Result<HubRef, HubError> {
        let identity = self.supervisor().identity();
        if hub == identity.id || hub == identity.name {
            return Ok(HubRef::Here);
        }
        let peers = self.inner.peers.borrow();
        let peer = peers
            .iter()
            .find(|peer| peer.id() == Some(hub) || peer.name() == Some(hub))
            .ok_or_else(|| HubError::HubNotFound { hub: hub.to_owned() })?;
        let address = peer.address.ok_or_else(|| HubError::PeerUnusable {
            hub: hub.to_owned(),
            reason: "its address is unknown".to_owned(),
        })?;
        Ok(HubRef::Peer(super::forward::PeerAt {
            id: peer.id().map(str::to_owned),
            name: peer.name().unwrap_or(hub).to_owned(),
            address: address.to_string(),
        }))
    }

    /// Moves every movable function off the hub `request.hub` names and
    /// keeps new deploys off it: progress as functions leave, then a summary.
    pub async fn drain(&self, request: DrainRequest, hops: u32) -> Result<AnswerStream<DrainProgress>, HubError> {
        if let HubRef::Peer(peer) = self.hub_ref(&request.hub)? {
            let progress = self
                .forward_to(&peer, request, hops, async |mut hub, request| hub.drain(request).await)
                .await?;
            return Ok(progress.map(|item| item.map_err(HubError::from_status)).boxed());
        }
        // Subscribe before the flag is set, so no move is missed.
        let live = self.inner.events.subscribe();
        self.supervisor().set_draining(true)?;
        let hub_name = self.supervisor().identity().name.clone();
        self.inner.events.record(
            EventKind::Drain,
            "",
            "",
            format!("draining hub {hub_name}: moving its functions off, refusing new deploys"),
        );
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(self.clone().report_drain(live, sender));
        Ok(ReceiverStream::new(receiver).boxed())
    }

    /// Ends a drain of the hub `request.hub` names.
    pub async fn undrain(&self, request: UndrainRequest, hops: u32) -> Result<HubInfo, HubError> {
        if let HubRef::Peer(peer) = self.hub_ref(&request.hub)? {
            return self
                .forward_to(&peer, request, hops, async |mut hub, request| {
                    hub.undrain(request).await
                })
                .await;
        }
        self.supervisor().set_draining(false)?;
        let hub_name = self.supervisor().identity().name.clone();
        self.inner.events.record(
            EventKind::Undrain,
            "",
            "",
            format!("hub {hub_name} takes functions again"),
        );
        Ok(self.hub_info())
    }

    /// Running functions a drain moves, the pinned ones it leaves, and
    /// those no usable peer can take (`name: why`), which it does not wait
    /// for. With no usable peer at all, nothing is stuck: one may come.
    fn drain_candidates(&self) -> Candidates {
        let peers: Vec<_> = self
            .usable_peers()
            .iter()
            .map(|peer| peer.id.as_deref().and_then(|id| self.inner.figures.get(id)))
            .collect();
        // A draining peer takes nothing either.
        let takers = peers
            .iter()
            .filter(|figures| !figures.as_ref().is_some_and(|info| info.draining))
            .count();
        let mut candidates = Candidates {
            no_peer_up: takers == 0,
            ..Candidates::default()
        };
        let peer_resources: Vec<&[_]> = peers
            .iter()
            .map(|figures| figures.as_ref().map_or(&[][..], |info| &info.resources[..]))
            .collect();
        for function in self.supervisor().function_loads() {
            // Exited functions ran to their end: nothing of them moves. One
            // the hub suspended for load is resumed on a peer by the drain.
            if matches!(
                function.phase,
                Phase::Stopped | Phase::Suspended(Suspender::User) | Phase::Failed
            ) {
                let state = crate::supervisor::phase_words(function.phase);
                candidates.not_running.push(format!("{} ({state})", function.name));
                continue;
            }
            if !matches!(function.phase, Phase::Running | Phase::Parked | Phase::MovingOut) {
                continue;
            }
            if function.pinned {
                candidates.pinned.push(function.name);
                continue;
            }
            let stuck = (function.phase != Phase::MovingOut)
                .then(|| self.supervisor().spec(&function.name))
                .flatten()
                .and_then(|spec| crate::resources::refusal_everywhere(&spec, &peer_resources));
            match stuck {
                Some(why) => candidates.stuck.push(format!("{}: {why}", function.name)),
                None => candidates.movable.push(function.name),
            }
        }
        candidates
    }

    /// Passes on the moves of a drain until nothing movable is left (or
    /// nothing moved for [`DRAIN_PATIENCE`], or no peer takes
    /// anything: then at once), then the summary.
    async fn report_drain(
        self,
        mut live: broadcast::Receiver<HubEvent>,
        sender: mpsc::Sender<Result<DrainProgress, HubError>>,
    ) {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let (mut moved, mut failed) = (0u32, 0u32);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let Candidates {
                movable,
                pinned,
                stuck,
                no_peer_up,
                not_running,
            } = self.drain_candidates();
            let waiting_for_nothing = no_peer_up && !movable.is_empty();
            if movable.is_empty()
                || waiting_for_nothing
                || last_progress.elapsed() >= DRAIN_PATIENCE
                || !self.supervisor().draining()
            {
                let summary = DrainSummary {
                    hub_name: self.supervisor().identity().name.clone(),
                    moved,
                    failed,
                    left: movable,
                    pinned,
                    duration_ms: started.elapsed().as_millis() as u64,
                    stuck,
                    no_peer_up: waiting_for_nothing,
                    not_running,
                };
                let last = DrainProgress {
                    progress: Some(ferry_proto::v1::drain_progress::Progress::Summary(summary)),
                };
                let _ = sender.send(Ok(last)).await;
                return;
            }
            let event = tokio::select! {
                event = live.recv() => event,
                _ = tick.tick() => continue,
                () = sender.closed() => return,
            };
            let event = match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match event.kind.as_str() {
                "moved" => moved += 1,
                "move-failed" => failed += 1,
                _ => continue,
            }
            last_progress = Instant::now();
            let progress = DrainProgress {
                progress: Some(ferry_proto::v1::drain_progress::Progress::Moved(event)),
            };
            if sender.send(Ok(progress)).await.is_err() {
                return;
            }
        }
    }
}
