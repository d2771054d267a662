//! Every (phase, request) pair, against a table a reviewer reads line by
//! line (`decisions.txt`), and the properties the table must keep.
//! `FERRY_UPDATE_DECISIONS=1 cargo test -p ferry-hub lifecycle` rewrites the
//! table from the code; review the diff before committing it.

use super::*;

fn phase_name(phase: Phase) -> String {
    match phase {
        Phase::Suspending(by) => format!("suspending-{}", suspender_name(by)),
        Phase::Suspended(by) => format!("suspended-{}", suspender_name(by)),
        other => kebab(&format!("{other:?}")),
    }
}

fn suspender_name(by: Suspender) -> &'static str {
    match by {
        Suspender::User => "user",
        Suspender::Overload => "overload",
    }
}

fn request_name(request: Request) -> String {
    match request {
        Request::Ended(end) => format!("ended-{}", kebab(&format!("{end:?}"))),
        other => kebab(&format!("{other:?}")),
    }
}

fn kebab(camel: &str) -> String {
    let mut out = String::new();
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('-');
        }
        out.push(character.to_ascii_lowercase());
    }
    out
}

fn render(decision: Result<Transition, Refusal>) -> String {
    match decision {
        Ok(Transition {
            next,
            effect: Effect::Nothing,
        }) => format!("-> {}", phase_name(next)),
        Ok(Transition { next, effect }) => format!("-> {} + {}", phase_name(next), kebab(&format!("{effect:?}"))),
        Err(refusal) => format!("refused: {}", kebab(&format!("{refusal:?}"))),
    }
}

fn rendered_table() -> String {
    let mut table = String::new();
    for phase in PHASES {
        for request in REQUESTS {
            table.push_str(&format!(
                "{:<20} {:<22} {}\n",
                phase_name(phase),
                request_name(request),
                render(decide(phase, request))
            ));
        }
        table.push('\n');
    }
    table
}

#[test]
fn every_phase_and_request_decides_as_the_table_says() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/supervisor/lifecycle/decisions.txt");
    let actual = rendered_table();
    if std::env::var_os("FERRY_UPDATE_DECISIONS").is_some() {
        std::fs::write(path, &actual).unwrap();
        return;
    }
    let expected = include_str!("decisions.txt");
    for (line, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(got, want, "decisions.txt line {} differs", line + 1);
    }
    assert_eq!(
        expected.lines().count(),
        actual.lines().count(),
        "decisions.txt has another number of lines"
    );
}

#[test]
fn the_tables_list_every_phase_and_request_once() {
    let phases: std::collections::HashSet<_> = PHASES.iter().collect();
    let requests: std::collections::HashSet<_> = REQUESTS.iter().collect();
    assert_eq!(phases.len(), PHASES.len());
    assert_eq!(requests.len(), REQUESTS.len());
}

/// A function that may be running elsewhere, or whose run is still in
/// flight here, is never started by a user's request.
#[test]
fn no_user_request_starts_a_function_that_may_run_elsewhere() {
    let user = [
        Request::Stop,
        Request::Remove,
        Request::Suspend,
        Request::Resume,
        Request::Checkpoint,
        Request::MigrateOut,
        Request::OverloadSuspend,
        Request::OverloadResume,
    ];
    for phase in [Phase::MovingOut, Phase::PausedForMove, Phase::Arriving, Phase::Moved] {
        for request in user {
            let decision = decide(phase, request);
            assert!(
                !matches!(
                    decision,
                    Ok(Transition {
                        effect: Effect::StartRun,
                        ..
                    })
                ),
                "{phase:?} {request:?} starts a run"
            );
            if request != Request::Checkpoint || phase != Phase::MovingOut {
                assert!(
                    matches!(decision, Err(Refusal::Moving | Refusal::MovedAway)) || request == Request::Remove,
                    "{phase:?} {request:?} is not refused as moving: {decision:?}"
                );
            }
        }
    }
}

/// Only these pairs start a run; every one of them starts from a phase in
/// which no run of the function exists anywhere. (`Recover` is asked only
/// at hub start, of phases read from records, when nothing runs yet.)
#[test]
fn runs_start_only_where_none_exists() {
    let mut starts = Vec::new();
    for phase in PHASES {
        for request in REQUESTS {
            if let Ok(Transition {
                effect: Effect::StartRun,
                next,
            }) = decide(phase, request)
            {
                assert!(
                    !phase.is_live() || request == Request::Recover,
                    "{phase:?} {request:?} starts a second run"
                );
                assert!(
                    matches!(next, Phase::Starting | Phase::Warming),
                    "{phase:?} {request:?}"
                );
                starts.push(request);
            }
        }
    }
    for request in starts {
        assert!(
            matches!(
                request,
                Request::Resume
                    | Request::MoveFailed
                    | Request::Commit
                    | Request::SuspendNotPersisted
                    | Request::Recover
                    | Request::OverloadResume
            ),
            "{request:?} starts a run"
        );
    }
}

/// A run's end never makes a function live, and a function whose run
/// ended on its own is never shown as running.
#[test]
fn the_end_of_a_run_never_leaves_a_function_live() {
    for phase in PHASES {
        for end in [
            RunEnd::Exited,
            RunEnd::Stopped,
            RunEnd::Suspended,
            RunEnd::Paused,
            RunEnd::Failed,
        ] {
            let next = decide(phase, Request::Ended(end)).unwrap().next;
            assert!(!next.is_live(), "{phase:?} ended {end:?} -> {next:?}");
        }
    }
}

/// Walks a move with a user's request between every two steps, on both
/// hubs, and checks that the function is never live on both at once and is
/// live on one of them at the end.
#[test]
fn a_move_interleaved_with_any_user_request_never_runs_twice() {
    let user = [
        Request::Stop,
        Request::Suspend,
        Request::Resume,
        Request::Checkpoint,
        Request::MigrateOut,
    ];
    let steps: [(bool, Request); 4] = [
        (true, Request::MigrateOut),
        (true, Request::PauseForMove),
        (true, Request::MoveRecorded),
        (false, Request::Commit),
    ];
    for interleave_at in 0..=steps.len() {
        for request in user {
            for on_source in [true, false] {
                let mut source = Phase::Running;
                // The destination knows the name from an earlier move away.
                let mut destination = Phase::Moved;
                let mut arrived = false;
                for (index, (at_source, step)) in steps.iter().enumerate() {
                    if index == interleave_at {
                        let phase = if on_source { &mut source } else { &mut destination };
                        if let Ok(transition) = decide(*phase, request) {
                            *phase = transition.next;
                        }
                    }
                    if index == 2 && !arrived {
                        // The last round landed: the destination installs the arrival.
                        if let Ok(transition) = decide(destination, Request::Arrive) {
                            destination = transition.next;
                            arrived = true;
                        }
                    }
                    let phase = if *at_source { &mut source } else { &mut destination };
                    if let Ok(transition) = decide(*phase, *step) {
                        *phase = transition.next;
                    }
                    assert!(
                        !(is_running_or_starting(source) && is_running_or_starting(destination)),
                        "{request:?} on {} before step {interleave_at}: source {source:?}, destination {destination:?}",
                        if on_source { "source" } else { "destination" }
                    );
                }
            }
        }
    }
}

fn is_running_or_starting(phase: Phase) -> bool {
    phase.is_live() || phase == Phase::MovingOut
}
