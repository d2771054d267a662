//! Choosing a move: which function (rule 2), where to (rules 3 and 4), and
//! emptying a draining hub (rule 9).

use std::cmp::Ordering;
use std::time::Duration;

use super::admission::judge;
use super::decision::{Decision, Move, MoveCause, Stuck, Unbalanceable};
use super::{
    DEFAULT_THROUGHPUT, Destination, Function, MIN_WANT, Peer, Policy, Settings, View, positive, predicted_pressure,
};

/// What [`Policy::search`] found.
pub(super) struct Search {
    /// The move to make, if any.
    pub(super) found: Option<Move>,
    /// Candidates tried before it (or instead of it) that have nowhere to go.
    pub(super) stuck: Vec<Unbalanceable>,
}

/// How a destination must fit a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Rule 3: the imbalance must shrink; cost counts.
    Balance,
    /// Rule 9: any destination, those with room first; cost does not count.
    Drain,
    /// Rule 8: the destination must stay below the high watermark; cost counts.
    Resume,
}

/// The destination chosen for a function.
pub(super) struct Placement<'v> {
    pub(super) destination: &'v Destination<'v>,
    /// The destination's `w` with the function.
    pub(super) w_after: f64,
    /// The destination stays below the high watermark with it.
    pub(super) room: bool,
    pub(super) cost: Duration,
}

/// Why the closest destination that would not do did not, ranked by how
/// far it got (memory, then imbalance, then cost) and, within a rank, by
/// how close it came (lower is closer).
struct Miss {
    rank: u8,
    distance: f64,
    stuck: Stuck,
}

impl Policy {
    /// Rules 2–4: the first candidate, most want freed per byte first, that
    /// has a destination, and the candidates before it that have none.
    pub(super) fn search(&self, view: &View<'_>, over: Duration) -> Search {
        let mut candidates: Vec<(&Function, f64)> = view
            .running()
            .filter(|function| !function.pinned)
            .map(|function| (function, function.want()))
            .filter(|(function, want)| {
                *want >= MIN_WANT
                    && !view.arrived_within_cooldown(function)
                    && !self.sent_within_cooldown(&function.name, view.now)
                    && !self.marks.contains_key(&function.name)
            })
            .collect();
        candidates.sort_by(|(a, a_want), (b, b_want)| {
            per_byte(*b_want, b.memory)
                .total_cmp(&per_byte(*a_want, a.memory))
                .then(b_want.total_cmp(a_want))
                .then(a.name.cmp(&b.name))
        });
        let mut stuck = Vec::new();
        for (function, want) in candidates {
            match self.place(view, function, want, Purpose::Balance) {
                Ok(placement) => {
                    let found = moving(
                        view,
                        function,
                        want,
                        &placement,
                        MoveCause::Overload {
                            pressure: view.pressure,
                            over,
                        },
                    );
                    return Search {
                        found: Some(found),
                        stuck,
                    };
                }
                Err(why) => stuck.push(Unbalanceable {
                    function: function.name.clone(),
                    stuck: why,
                    pressure: view.pressure,
                    over,
                }),
            }
        }
        Search { found: None, stuck }
    }

    /// Rule 9: the next function off a draining hub, highest priority first;
    /// once none can leave, a function suspended for overload to a peer
    /// with room.
    pub(super) fn drain(&self, view: &View<'_>) -> Vec<Decision> {
        if view.observation.moves_in_flight > 0 {
            return Vec::new();
        }
        let mut leaving: Vec<&Function> = view
            .running()
            .filter(|function| !function.pinned && !self.pending(&function.name, view.now))
            .collect();
        leaving.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(per_byte(b.want(), b.memory).total_cmp(&per_byte(a.want(), a.memory)))
                .then(a.name.cmp(&b.name))
        });
        for function in leaving {
            let want = function.want();
            if let Ok(placement) = self.place(view, function, want, Purpose::Drain) {
                return vec![Decision::Move(moving(
                    view,
                    function,
                    want,
                    &placement,
                    MoveCause::Draining,
                ))];
            }
        }
        self.resume(view).into_iter().collect()
    }

    /// The best destination for `function` (wanting `want` cores), or why
    /// there is none.
    pub(super) fn place<'v>(
        &self,
        view: &'v View<'_>,
        function: &Function,
        want: f64,
        purpose: Purpose,
    ) -> Result<Placement<'v>, Stuck> {
        let settings = view.settings;
        let mut best: Option<Placement<'v>> = None;
        let mut closest: Option<Miss> = None;
        let mut miss = |missed: Miss| {
            let closer = closest.as_ref().is_none_or(|current| {
                missed
                    .rank
                    .cmp(&current.rank)
                    .then(current.distance.total_cmp(&missed.distance))
                    == Ordering::Greater
            });
            if closer {
                closest = Some(missed);
            }
        };
        for destination in &view.destinations {
            let peer = destination.peer;
            let came_from_there = function.arrival.as_ref().is_some_and(|arrival| {
                arrival.from == peer.id && view.now.saturating_sub(arrival.at) < settings.cooldown
            });
            if came_from_there || function.barred.contains(&peer.id) {
                continue;
            }
            if destination.free_memory < function.memory {
                miss(Miss {
                    rank: 0,
                    distance: -(destination.free_memory as f64),
                    stuck: Stuck::NoMemory {
                        peer: peer.name.clone(),
                        needed: function.memory,
                        free: destination.free_memory,
                    },
                });
                continue;
            }
            let w_after = destination.w + want / destination.capacity;
            let room = predicted_pressure(w_after) < settings.high_watermark;
            match purpose {
                Purpose::Balance => {
                    let w_here_after = view.w - want / view.capacity;
                    if judge(settings, view.w, w_here_after, destination.w, w_after).is_err() {
                        let (before, after) = (view.w - destination.w, (w_here_after - w_after).abs());
                        miss(Miss {
                            rank: 1,
                            distance: after - before,
                            stuck: Stuck::NoShrink {
                                peer: peer.name.clone(),
                                before,
                                after,
                            },
                        });
                        continue;
                    }
                }
                Purpose::Resume if !room => continue,
                Purpose::Resume | Purpose::Drain => {}
            }
            let cost = move_cost(settings, peer, function);
            if purpose != Purpose::Drain && cost > settings.max_move_cost {
                miss(Miss {
                    rank: 2,
                    distance: cost.as_secs_f64(),
                    stuck: Stuck::TooCostly {
                        peer: peer.name.clone(),
                        cost,
                        max: settings.max_move_cost,
                    },
                });
                continue;
            }
            let candidate = Placement {
                destination,
                w_after,
                room,
                cost,
            };
            if best.as_ref().is_none_or(|current| preferred(&candidate, current)) {
                best = Some(candidate);
            }
        }
        best.ok_or_else(|| closest.map_or(Stuck::NoPeer, |missed| missed.stuck))
    }
}

/// Rule 3's order: room first, then the most headroom, then the cheapest,
/// then the fewest functions, then the hub id (so the choice never depends
/// on the order peers are listed in).
fn preferred(candidate: &Placement<'_>, current: &Placement<'_>) -> bool {
    let (new, old) = (candidate.destination.peer, current.destination.peer);
    current
        .room
        .cmp(&candidate.room)
        .then(candidate.w_after.total_cmp(&current.w_after))
        .then(candidate.cost.cmp(&current.cost))
        .then(new.functions.cmp(&old.functions))
        .then(new.id.cmp(&old.id))
        == Ordering::Less
}

/// The move of `function` to `placement`.
fn moving(view: &View<'_>, function: &Function, want: f64, placement: &Placement<'_>, cause: MoveCause) -> Move {
    Move {
        function: function.name.clone(),
        to: placement.destination.peer.id.clone(),
        to_name: placement.destination.peer.name.clone(),
        cause,
        want,
        memory: function.memory,
        w_before: view.w,
        w_after: view.w - want / view.capacity,
        to_w_before: placement.destination.w,
        to_w_after: placement.w_after,
        cost: placement.cost,
    }
}

/// Rule 4: the bytes `peer` lacks of `function` over the link's throughput,
/// plus the expected pause.
pub(super) fn move_cost(settings: &Settings, peer: &Peer, function: &Function) -> Duration {
    let lacking = peer.lacking.get(&function.name).copied().unwrap_or(function.memory);
    let throughput = peer
        .throughput
        .and_then(positive)
        .or_else(|| positive(settings.assumed_throughput))
        .unwrap_or(DEFAULT_THROUGHPUT);
    Duration::try_from_secs_f64(lacking as f64 / throughput)
        .unwrap_or(Duration::MAX)
        .saturating_add(settings.expected_pause)
}

/// Want freed per byte moved.
fn per_byte(want: f64, memory: u64) -> f64 {
    want / memory.max(1) as f64
}
