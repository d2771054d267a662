//! The rebalancer: once a second it gathers the figures, asks the policy,
//! and carries out what it decides — a move, a suspension for overload, a
//! resumption — through the supervisor and `migration`, like a user would.
//! Every decision is recorded as an event with its reason.
//!
//! `--rebalance recommend` records the decisions without acting; `off`
//! decides nothing — except for a drain, which a user asked for and which
//! runs whatever the mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ferry_discovery::PeerSnapshot;
use tokio::sync::{mpsc, watch};

use super::figures::{HubFigures, automatic_move};
use super::policy::{Decision, MoveCause, Policy};
use crate::config::RebalanceMode;
use crate::error::HubError;
use crate::events::{EventKind, HubEvents};
use crate::migration::{self, MigrationContext, Target};
use crate::peers::PeerFigures;

/// How often the policy looks at the figures: twice per one-second sample,
/// so a move follows the last one's end within half a second.
pub const TICK: Duration = Duration::from_millis(500);

/// What the rebalancer works with.
pub struct Rebalancer {
    pub mode: RebalanceMode,
    pub figures: HubFigures,
    pub peers: watch::Receiver<Vec<PeerSnapshot>>,
    pub peer_figures: PeerFigures,
    pub migration: MigrationContext,
    pub events: Arc<HubEvents>,
}

impl Rebalancer {
    /// Runs until aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let shared = Arc::new(self);
        let in_flight = Arc::new(AtomicU32::new(0));
        let mut policy = Policy::new(shared.figures.settings.clone());
        let mut reported: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let draining = shared.figures.supervisor.draining();
            if shared.mode == RebalanceMode::Off && !draining {
                continue;
            }
            let observation = {
                let peers = shared.peers.borrow().clone();
                shared
                    .figures
                    .observe(&peers, &shared.peer_figures, in_flight.load(Ordering::SeqCst))
            };
            for decision in policy.decide(&observation) {
                if let Decision::MarkUnbalanceable(decided) = &decision {
                    // Said once per cooldown, not at every wobble of the figures.
                    let now = Instant::now();
                    let quiet = shared.figures.settings.cooldown;
                    if reported
                        .get(&decided.function)
                        .is_some_and(|at| now.duration_since(*at) < quiet)
                    {
                        continue;
                    }
                    reported.insert(decided.function.clone(), now);
                }
                let drain_move = matches!(&decision, Decision::Move(decided) if decided.cause == MoveCause::Draining);
                // A function with nowhere to go is a finding, not an action.
                let finding = matches!(decision, Decision::MarkUnbalanceable(_));
                if shared.mode != RebalanceMode::On && !drain_move && !finding {
                    if shared.mode == RebalanceMode::Recommend {
                        shared.events.record(
                            EventKind::Recommend,
                            decision.function(),
                            "",
                            format!("would {decision}"),
                        );
                    }
                    continue;
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                let in_flight = Arc::clone(&in_flight);
                tokio::spawn(async move {
                    shared.carry_out(decision).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }

    /// The peer `hub_id` names, as a move's target.
    fn target(&self, hub_id: &str, automatic: ferry_proto::internal::v1::AutomaticMove) -> Result<Target, HubError> {
        let peers = self.peers.borrow();
        let peer = peers
            .iter()
            .find(|peer| peer.id() == Some(hub_id))
            .ok_or_else(|| HubError::HubNotFound { hub: hub_id.to_owned() })?;
        let address = peer.address.ok_or_else(|| HubError::PeerUnusable {
            hub: hub_id.to_owned(),
            reason: "its address is unknown".to_owned(),
        })?;
        Ok(Target {
            hub_id: hub_id.to_owned(),
            hub_name: peer.name().unwrap_or(hub_id).to_owned(),
            address,
            automatic: Some(automatic),
        })
    }

    /// Moves `function` to `target`; records how it went.
    async fn move_to(&self, function: &str, target: Target, reason: &str) {
        // Nobody watches an automatic move's progress.
        let (progress, _) = mpsc::channel(1);
        let supervisor = &self.figures.supervisor;
        match migration::migrate(supervisor, &self.migration, function, &target, progress).await {
            Ok(summary) => {
                self.events.record(
                    EventKind::Moved,
                    function,
                    &target.hub_name,
                    format!(
                        "{reason} (done: downtime {:.1} ms, {} sent)",
                        summary.downtime_micros as f64 / 1000.0,
                        bytesize::ByteSize::b(summary.bytes_sent).display().iec()
                    ),
                );
            }
            Err(error) => {
                let text = ferry_proto::error_chain(&error);
                let kind = if text.contains("has no room for it") {
                    EventKind::Refused
                } else {
                    EventKind::MoveFailed
                };
                self.events
                    .record(kind, function, &target.hub_name, format!("{reason}: failed: {text}"));
            }
        }
    }

    async fn carry_out(&self, decision: Decision) {
        let supervisor = &self.figures.supervisor;
        let reason = decision.to_string();
        match &decision {
            Decision::Move(decided) => match self.target(&decided.to, automatic_move(&decided.offer())) {
                Ok(target) => self.move_to(&decided.function, target, &reason).await,
                Err(error) => {
                    self.events.record(
                        EventKind::MoveFailed,
                        &decided.function,
                        &decided.to_name,
                        format!("{reason}: failed: {error}"),
                    );
                }
            },
            Decision::Suspend(decided) => match supervisor.suspend_for_overload(&decided.function).await {
                Ok(_) => {
                    self.events.record(EventKind::Suspended, &decided.function, "", reason);
                }
                Err(error) => tracing::info!(function = %decided.function, %error, "could not suspend for overload"),
            },
            Decision::Resume(decided) => match supervisor.resume_after_overload(&decided.function).await {
                Ok(_) => {
                    self.events.record(EventKind::Resumed, &decided.function, "", reason);
                }
                Err(error) => tracing::info!(function = %decided.function, %error, "could not resume after overload"),
            },
            Decision::ResumeOn(decided) => {
                // Resumed here for the moment of the move: the live move
                // carries it to the peer from where its checkpoint left off.
                let target = match self.target(&decided.to, automatic_move(&decided.offer())) {
                    Ok(target) => target,
                    Err(error) => {
                        tracing::info!(function = %decided.function, %error, "cannot resume on that peer");
                        return;
                    }
                };
                if let Err(error) = supervisor.resume_after_overload(&decided.function).await {
                    tracing::info!(function = %decided.function, %error, "could not resume after overload");
                    return;
                }
                self.events
                    .record(EventKind::Resumed, &decided.function, &decided.to_name, reason.clone());
                self.move_to(&decided.function, target, &reason).await;
            }
            Decision::MarkUnbalanceable(decided) => {
                self.events
                    .record(EventKind::Unbalanceable, &decided.function, "", reason);
            }
        }
    }
}
