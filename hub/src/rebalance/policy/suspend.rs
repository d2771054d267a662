//! Shedding load when no peer has room (rule 7) and taking it back when
//! room returns, here or on a peer (rule 8).

use std::time::Duration;

use super::decision::{Decision, Resume, ResumeCause, ResumeOn, Suspend};
use super::moves::Purpose;
use super::{Function, FunctionState, MIN_WANT, Policy, View, predicted_pressure};

impl Policy {
    /// Rule 7: the functions to suspend, lowest priority first, until the
    /// predicted pressure is below the high watermark or only functions of
    /// the top running priority (and pinned ones) are left.
    pub(super) fn shed(&self, view: &View<'_>, over: Duration) -> Vec<Suspend> {
        let Some(top_priority) = view.top_priority() else {
            return Vec::new();
        };
        let mut candidates: Vec<(&Function, f64)> = view
            .running()
            .filter(|function| !function.pinned && function.priority < top_priority)
            .map(|function| (function, function.want()))
            .filter(|(_, want)| *want >= MIN_WANT)
            .collect();
        candidates.sort_by(|(a, a_want), (b, b_want)| {
            a.priority
                .cmp(&b.priority)
                .then(b_want.total_cmp(a_want))
                .then(a.name.cmp(&b.name))
        });
        let mut w = view.w;
        let mut suspensions = Vec::new();
        for (function, want) in candidates {
            if predicted_pressure(w) < view.settings.high_watermark {
                break;
            }
            w -= want / view.capacity;
            suspensions.push(Suspend {
                function: function.name.clone(),
                priority: function.priority,
                top_priority,
                pressure: view.pressure,
                over,
                want,
                pressure_after: predicted_pressure(w),
            });
        }
        suspensions
    }

    /// Rule 8: the one function suspended for overload to resume now,
    /// highest priority first — here if this hub is cool and has room (once
    /// it has been cool for the window: a function that fits here waits for
    /// it rather than moving), else on a peer with room, else here if
    /// nothing of a higher priority runs. A draining hub only resumes on
    /// peers.
    pub(super) fn resume(&self, view: &View<'_>) -> Option<Decision> {
        let settings = view.settings;
        let hub = &view.observation.hub;
        let mut suspended: Vec<&Function> = view
            .observation
            .functions
            .iter()
            .filter(|function| {
                function.state == FunctionState::SuspendedForOverload && !self.pending(&function.name, view.now)
            })
            .collect();
        suspended.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
        let top_running = view.top_priority();
        for function in suspended {
            let want = self.expected_want(function);
            let w_after = view.w + want / view.capacity;
            let here = !hub.draining && hub.free_memory >= function.memory;
            let resume_here = |cause| {
                Some(Decision::Resume(Resume {
                    function: function.name.clone(),
                    priority: function.priority,
                    cause,
                    want,
                    w_after,
                }))
            };
            let room_here =
                here && view.pressure < settings.low_watermark && predicted_pressure(w_after) < settings.high_watermark;
            if room_here {
                // Here is preferred: wait for the window rather than move it.
                return view.cool_for.and_then(|over| {
                    resume_here(ResumeCause::Cool {
                        low_watermark: settings.low_watermark,
                        over,
                    })
                });
            }
            if view.observation.moves_in_flight == 0
                && !function.pinned
                && let Ok(placement) = self.place(view, function, want, Purpose::Resume)
            {
                return Some(Decision::ResumeOn(ResumeOn {
                    function: function.name.clone(),
                    to: placement.destination.peer.id.clone(),
                    to_name: placement.destination.peer.name.clone(),
                    priority: function.priority,
                    want,
                    memory: function.memory,
                    w: view.w,
                    to_w_before: placement.destination.w,
                    to_w_after: placement.w_after,
                    cost: placement.cost,
                }));
            }
            if here && top_running.is_none_or(|top| function.priority >= top) {
                return resume_here(ResumeCause::TopPriority { top_running });
            }
        }
        None
    }
}
