//! The placement policy: a pure state machine that looks at one hub's
//! figures, its functions and its peers about once a second and says which
//! function to move, suspend or resume — with the reason and the numbers.
//!
//! No I/O, no clock, no locks, no proto types, no other hub module: time
//! comes in the [`Observation`] (a [`Duration`] since an epoch the caller
//! picks and keeps, e.g. the hub's start), decisions go out as [`Decision`]
//! values, and the hub carries them out. [`admit`] is the destination's
//! side of a move. The figures are defined in the [module above](super).
//!
//! # Rules
//!
//! 1. **Sustained overload only.** A hub is *hot* once its pressure has
//!    been above the high watermark at every observation for the whole
//!    `window`, *cool* once below the low watermark for the window; one
//!    spike never acts. Observations further apart than the window start
//!    both clocks again.
//! 2. **What moves.** While hot, the candidates are running, unpinned
//!    functions wanting at least [`MIN_WANT`] cores, not arrived here (nor
//!    sent from here) within `cooldown`, not marked unbalanceable; the one
//!    freeing the most want per byte of memory is tried first.
//! 3. **Where to.** A destination is a usable peer (Up, verified, same
//!    cluster, compatible protocol), not draining, with the memory, and
//!    never the hub the function came from within its cooldown. If it
//!    stays below the high watermark with the function (predicted) the
//!    imbalance `w_here − w_there` must strictly shrink; otherwise it must
//!    shrink by more than the margin. Of those: the ones that stay below
//!    the high watermark, then the most headroom (lowest `w` after), then
//!    the cheapest, then the fewest functions. A strictly shrinking
//!    imbalance strictly lowers `Σ C·w²` over the hubs, so no placement
//!    repeats: two hubs never pass functions back and forth.
//! 4. **Cost.** cost = bytes the destination lacks / measured throughput
//!    (`assumed_throughput` if unmeasured) + `expected_pause`; moves costing
//!    more than `max_move_cost` are not made. A candidate with nowhere to go
//!    is reported unbalanceable once and skipped until a destination joins
//!    or leaves, a destination's `w` drops by the margin or its cost falls
//!    under the limit, this hub's `w` rises by the margin, or the function's
//!    want changes by the margin (`w` units). No such verdict is given while
//!    something this policy sent is still settling (rule 5).
//! 5. **One at a time.** While any move out of this hub is in flight (a
//!    user's or the policy's), nothing is moved, suspended or resumed
//!    elsewhere. What the policy sent to a peer counts on that peer's `w`
//!    and memory until `settle` after it was last seen in flight; what it
//!    resumed here counts until the function's own figures show it.
//! 6. **New peers** are destinations at once (no window for them) and clear
//!    every unbalanceable mark.
//! 7. **Suspend** when hot and no move was found: running, unpinned
//!    functions, lowest priority first (largest want first among equals),
//!    never one of the highest priority running here (those share the hub),
//!    until the predicted pressure is below the high watermark. Then a new
//!    window passes before anything more is shed or moved.
//! 8. **Resume** functions suspended for overload, highest priority first,
//!    one per decision: here if this hub is cool and stays below the high
//!    watermark with it (one that fits here waits out the window rather than
//!    move); else on a peer that stays below it with it (`ResumeOn`, from its
//!    checkpoint; rule 3's other checks and the cost limit apply); else here
//!    if its priority is at least the highest running here, or nothing runs:
//!    it would not have been suspended beside them. A function a user
//!    suspended is never resumed.
//! 9. **Draining.** A draining hub moves every running, unpinned function
//!    off, one at a time, highest priority first, to the destination with
//!    the most headroom (those that stay below the high watermark first) —
//!    no window, cooldown, margin or cost limit, but never back to where it
//!    came from within its cooldown; then it resumes its suspended functions
//!    on peers with room. It resumes nothing here and suspends nothing. A
//!    draining peer is never a destination.
//! 10. **Admission** ([`admit`]): a hub refuses an offer while draining
//!     (a move by hand too: `migration::destination` refuses every offer then),
//!     without the memory, or when its `w` *with its reservations* plus the
//!     function would not pass rule 3 (a balancing move) or would not stay
//!     below the high watermark (a resume). It reserves what it accepts
//!     until the arrival is measured, so a second overloaded hub's offer
//!     sees the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod admission;
mod decision;
mod moves;
mod observation;
mod settings;
mod suspend;
mod view;

pub use admission::{Accepted, Offer, OfferKind, Refused, admit};
pub use decision::{Decision, Move, MoveCause, Resume, ResumeCause, ResumeOn, Stuck, Suspend, Unbalanceable};
pub use observation::{Arrival, Function, FunctionState, Observation, Peer, ThisHub, predicted_pressure};
pub use settings::{DEFAULT_THROUGHPUT, Settings, SettingsError};

use view::{Destination, View};

/// A function wanting fewer cores than this frees nothing worth moving or
/// suspending it for (a sleeping function wants ≈ 0).
pub const MIN_WANT: f64 = 0.05;

/// The automatic rebalancing policy of one hub. Call [`Policy::decide`]
/// about once a second with fresh figures and carry out what it returns.
#[derive(Debug)]
pub struct Policy {
    settings: Settings,
    /// The previous observation's time.
    last_seen: Option<Duration>,
    /// Since when pressure has been above the high watermark.
    hot_since: Option<Duration>,
    /// Since when pressure has been below the low watermark.
    cool_since: Option<Duration>,
    /// Moves and resumes this policy decided, for reservations and cooldowns.
    sent: Vec<Sent>,
    /// Functions reported unbalanceable, with what the hub looked like then.
    marks: BTreeMap<String, Mark>,
    /// The want of functions this policy suspended, at the time.
    suspended_want: BTreeMap<String, f64>,
}

/// A move or resume this policy decided.
#[derive(Debug, Clone)]
struct Sent {
    function: String,
    /// The peer's hub id; `None` for a resume here.
    to: Option<String>,
    want: f64,
    memory: u64,
    decided_at: Duration,
    /// It counts on its destination until then.
    until: Duration,
}

/// The context a function was marked unbalanceable in.
#[derive(Debug, Clone)]
struct Mark {
    /// Each destination's `w` then.
    destinations: BTreeMap<String, f64>,
    /// Destinations the move cost too much to then.
    too_costly: BTreeSet<String>,
    /// This hub's `w` then.
    w: f64,
    /// The function's want then, in `w` units.
    function_w: f64,
}

impl Policy {
    pub fn new(settings: Settings) -> Policy {
        debug_assert!(settings.check().is_ok(), "{:?}", settings.check());
        Policy {
            settings,
            last_seen: None,
            hot_since: None,
            cool_since: None,
            sent: Vec::new(),
            marks: BTreeMap::new(),
            suspended_want: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What to do now. Every decision is also the policy's own record: it
    /// assumes the hub carries each out (a refused move keeps its cooldown
    /// and its reservation until they expire).
    pub fn decide(&mut self, observation: &Observation) -> Vec<Decision> {
        let now = observation.now;
        let pressure = ratio(observation.hub.demand, observation.hub.capacity);
        self.watch(now, pressure);
        self.expire(observation);
        let settings = self.settings.clone();
        let Some(view) = View::new(
            &settings,
            observation,
            &self.sent,
            self.sustained(self.hot_since, now),
            self.sustained(self.cool_since, now),
        ) else {
            return Vec::new();
        };
        self.clear_stale_marks(&view);
        let decisions = if observation.hub.draining {
            self.drain(&view)
        } else {
            self.balance(&view)
        };
        self.record(&view, &decisions);
        decisions
    }

    /// Rules 2–8 for a hub that is not draining.
    fn balance(&self, view: &View<'_>) -> Vec<Decision> {
        let mut decisions = Vec::new();
        if let Some(over) = view.hot_for
            && view.observation.moves_in_flight == 0
        {
            let search = self.search(view, over);
            // While something this policy sent still counts on a hub only
            // by its guess, a verdict of "nowhere to go" is provisional.
            if !self.settling(view.now) {
                decisions.extend(search.stuck.into_iter().map(Decision::MarkUnbalanceable));
            }
            if let Some(found) = search.found {
                decisions.push(Decision::Move(found));
                return decisions;
            }
            let shed = self.shed(view, over);
            if !shed.is_empty() {
                decisions.extend(shed.into_iter().map(Decision::Suspend));
                return decisions;
            }
        }
        decisions.extend(self.resume(view));
        decisions
    }

    /// Follows pressure against the watermarks (rule 1).
    fn watch(&mut self, now: Duration, pressure: f64) {
        let lost_track = self
            .last_seen
            .is_some_and(|last| now < last || now - last > self.settings.window);
        if lost_track {
            self.hot_since = None;
            self.cool_since = None;
        }
        self.last_seen = Some(now);
        self.hot_since = if pressure > self.settings.high_watermark {
            Some(self.hot_since.unwrap_or(now))
        } else {
            None
        };
        self.cool_since = if pressure < self.settings.low_watermark {
            Some(self.cool_since.unwrap_or(now))
        } else {
            None
        };
    }

    /// How long since `since`, if that is at least the window.
    fn sustained(&self, since: Option<Duration>, now: Duration) -> Option<Duration> {
        let held = now.checked_sub(since?)?;
        (held >= self.settings.window).then_some(held)
    }

    /// Forgets what no longer matters; keeps reservations of moves still in
    /// flight (rule 5).
    fn expire(&mut self, observation: &Observation) {
        let now = observation.now;
        let (settle, cooldown) = (self.settings.settle, self.settings.cooldown);
        if observation.moves_in_flight > 0 {
            for sent in self
                .sent
                .iter_mut()
                .filter(|sent| sent.to.is_some() && sent.until > now)
            {
                sent.until = sent.until.max(now.saturating_add(settle));
            }
        }
        self.sent
            .retain(|sent| sent.until > now || now.saturating_sub(sent.decided_at) < cooldown);
        let present: BTreeSet<&str> = observation.functions.iter().map(|f| f.name.as_str()).collect();
        self.suspended_want.retain(|name, _| present.contains(name.as_str()));
    }

    /// Drops marks whose function left or stopped running, or whose
    /// context changed materially (rules 4 and 6).
    fn clear_stale_marks(&mut self, view: &View<'_>) {
        let margin = self.settings.margin;
        let destinations = view.destination_figures();
        let settings = &self.settings;
        self.marks.retain(|name, mark| {
            let Some(function) = view.function(name) else {
                return false;
            };
            function.state == FunctionState::Running
                && mark.destinations.keys().eq(destinations.keys())
                && mark
                    .destinations
                    .iter()
                    .all(|(id, marked_w)| destinations[id] > marked_w - margin)
                && view.w < mark.w + margin
                && (function.want() / view.capacity - mark.function_w).abs() < margin
                && view.destinations.iter().all(|destination| {
                    !mark.too_costly.contains(&destination.peer.id)
                        || moves::move_cost(settings, destination.peer, function) > settings.max_move_cost
                })
        });
    }

    /// Remembers what was decided: reservations, cooldowns, marks, the want
    /// of suspended functions, and a new window after shedding (rule 7).
    fn record(&mut self, view: &View<'_>, decisions: &[Decision]) {
        let now = view.now;
        let until = now.saturating_add(self.settings.settle);
        for decision in decisions {
            match decision {
                Decision::Move(decided) => self.sent.push(Sent {
                    function: decided.function.clone(),
                    to: Some(decided.to.clone()),
                    want: decided.want,
                    memory: decided.memory,
                    decided_at: now,
                    until,
                }),
                Decision::ResumeOn(decided) => self.sent.push(Sent {
                    function: decided.function.clone(),
                    to: Some(decided.to.clone()),
                    want: decided.want,
                    memory: decided.memory,
                    decided_at: now,
                    until,
                }),
                Decision::Resume(decided) => self.sent.push(Sent {
                    function: decided.function.clone(),
                    to: None,
                    want: decided.want,
                    memory: 0,
                    decided_at: now,
                    until,
                }),
                Decision::Suspend(decided) => {
                    self.suspended_want.insert(decided.function.clone(), decided.want);
                    self.hot_since = Some(now);
                }
                Decision::MarkUnbalanceable(marked) => {
                    let Some(function) = view.function(&marked.function) else {
                        continue;
                    };
                    let too_costly = view
                        .destinations
                        .iter()
                        .filter(|destination| {
                            moves::move_cost(&self.settings, destination.peer, function) > self.settings.max_move_cost
                        })
                        .map(|destination| destination.peer.id.clone())
                        .collect();
                    self.marks.insert(
                        marked.function.clone(),
                        Mark {
                            destinations: view.destination_figures(),
                            too_costly,
                            w: view.w,
                            function_w: function.want() / view.capacity,
                        },
                    );
                }
            }
        }
    }

    /// The want a suspended function is expected to have once it runs.
    fn expected_want(&self, function: &Function) -> f64 {
        self.suspended_want
            .get(&function.name)
            .copied()
            .unwrap_or_else(|| function.cap.and_then(positive).unwrap_or(1.0))
    }

    /// Whether this policy sent `name` somewhere within the cooldown.
    fn sent_within_cooldown(&self, name: &str, now: Duration) -> bool {
        self.sent.iter().any(|sent| {
            sent.function == name && sent.to.is_some() && now.saturating_sub(sent.decided_at) < self.settings.cooldown
        })
    }

    /// Whether anything this policy sent still counts on its destination.
    fn settling(&self, now: Duration) -> bool {
        self.sent.iter().any(|sent| sent.until > now)
    }

    /// Whether a move or resume of `name` this policy decided may still be
    /// under way.
    fn pending(&self, name: &str, now: Duration) -> bool {
        self.sent.iter().any(|sent| sent.function == name && sent.until > now)
    }
}

/// `value` if it is a finite number above zero.
fn positive(value: f64) -> Option<f64> {
    (value.is_finite() && value > 0.0).then_some(value)
}

/// `value`, or zero if it is negative or not a number.
fn non_negative(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 { value } else { 0.0 }
}

/// `part / whole` for figures that may be hostile; zero without a whole.
fn ratio(part: f64, whole: f64) -> f64 {
    positive(whole).map_or(0.0, |whole| non_negative(part) / whole)
}

#[cfg(test)]
mod tests;
