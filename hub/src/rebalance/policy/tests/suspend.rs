//! Shedding load and taking it back (rules 7 and 8).

use super::*;

#[test]
fn no_room_anywhere_suspends_the_lowest_priority_never_the_top() {
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("top-1", 1.0).priority(3),
        spec("top-2", 1.0).priority(3),
        spec("mid", 1.0).priority(1),
        spec("low", 1.0).priority(0),
    ];
    let busy = [peer("hub-b", 1.0, &[1.0, 1.0, 1.0, 1.0])];
    let decided = run(&mut policy, 0..6, |now| observe(now, 1.0, &specs, &busy));
    let suspended: Vec<_> = decided
        .iter()
        .filter_map(|(now, decision)| match decision {
            Decision::Suspend(suspend) => Some((*now, suspend)),
            _ => None,
        })
        .collect();
    let order: Vec<_> = suspended
        .iter()
        .map(|(now, suspend)| (*now, suspend.function.as_str()))
        .collect();
    assert_eq!(order, [(5, "low"), (5, "mid")], "the top priority shares the hub");
    assert_eq!(
        suspended[0].1.to_string(),
        "suspend low: no peer has room; pressure 3.0 over 5 s; priority 0 is the lowest running (top 3 keeps running); pressure → 2.0 predicted"
    );
}

#[test]
fn functions_of_one_priority_share_the_hub() {
    let mut policy = Policy::new(Settings::default());
    let decided = run(&mut policy, 0..30, |now| {
        observe(now, 0.5, &cpu_bound(&["a", "b", "c"]), &[])
    });
    assert!(
        decided
            .iter()
            .all(|(_, decision)| matches!(decision, Decision::MarkUnbalanceable(_)))
    );
}

#[test]
fn suspension_stops_once_the_predicted_pressure_is_below_the_high_watermark() {
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("top", 1.0).priority(2),
        spec("a", 1.0),
        spec("b", 0.6),
        spec("c", 1.0).priority(1),
    ];
    let decided = run(&mut policy, 0..6, |now| observe(now, 2.0, &specs, &[]));
    let suspended: Vec<_> = decided
        .iter()
        .filter(|(_, decision)| matches!(decision, Decision::Suspend(_)))
        .map(|(_, decision)| decision.function())
        .collect();
    assert_eq!(suspended, ["a", "b"]);
}

#[test]
fn after_suspending_a_new_window_passes_before_more() {
    let mut policy = Policy::new(Settings::default());
    let specs = [spec("top", 1.0).priority(1), spec("a", 1.0), spec("b", 1.0)];
    // The figures do not change: as if the suspensions had not helped.
    let decided = run(&mut policy, 0..12, |now| observe(now, 0.5, &specs, &[]));
    let when: Vec<u64> = decided
        .iter()
        .filter(|(_, decision)| matches!(decision, Decision::Suspend(_)))
        .map(|(now, _)| *now)
        .collect();
    assert_eq!(when, [5, 5, 10, 10]);
}

#[test]
fn room_returning_resumes_the_highest_priority_first() {
    let mut policy = Policy::new(Settings::default());
    let mut specs = vec![
        spec("boss", 0.5).priority(5),
        spec("s0", 1.0).priority(0).state(FunctionState::SuspendedForOverload),
        spec("s1", 1.0).priority(1).state(FunctionState::SuspendedForOverload),
        spec("s2", 1.0).priority(2).state(FunctionState::SuspendedForOverload),
    ];
    let mut decided = Vec::new();
    for now in 0..20 {
        for decision in policy.decide(&observe(now, 4.0, &specs, &[])) {
            if let Decision::Resume(resume) = &decision {
                let resumed = specs.iter_mut().find(|spec| spec.name == resume.function).unwrap();
                resumed.state = FunctionState::Running;
            }
            decided.push((now, decision));
        }
    }
    assert_eq!(
        names(&decided),
        [(5, "s2".to_owned()), (6, "s1".to_owned()), (7, "s0".to_owned())]
    );
    assert_eq!(
        decided[0].1.to_string(),
        "resume s2: pressure below 0.05 for 5 s; priority 2 first; pressure → 0.0 predicted"
    );
}

#[test]
fn a_user_suspended_function_is_never_resumed() {
    let mut policy = Policy::new(Settings::default());
    let mut specs = vec![
        spec("mine", 1.0).priority(9).state(FunctionState::SuspendedByUser),
        spec("shed", 1.0).state(FunctionState::SuspendedForOverload),
    ];
    let roomy = [peer("hub-b", 8.0, &[])];
    let mut decided = Vec::new();
    for now in 0..60 {
        for decision in policy.decide(&observe(now, 4.0, &specs, &roomy)) {
            specs.retain(|spec| spec.name != decision.function() || spec.name == "mine");
            decided.push((now, decision));
        }
    }
    assert_eq!(names(&decided), [(5, "shed".to_owned())], "here is preferred once cool");
}

#[test]
fn a_suspended_function_resumes_on_a_peer_with_room_when_here_has_none() {
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("top", 1.0).priority(2),
        spec("s", 1.0).state(FunctionState::SuspendedForOverload),
    ];
    let mut down = peer("hub-down", 16.0, &[]);
    down.usable = false;
    let peers = [peer("hub-full", 1.0, &[1.0]), peer("hub-roomy", 2.0, &[0.5]), down];
    let decided = run(&mut policy, 0..1, |now| observe(now, 1.0, &specs, &peers));
    assert_eq!(
        decided
            .iter()
            .map(|(_, decision)| decision.to_string())
            .collect::<Vec<_>>(),
        [
            "resume s on hub-roomy (from its checkpoint): hub-roomy has room (pressure 0.0 with it); priority 0 first; cost 217 ms"
        ]
    );

    // Without it, nobody has room: `s` waits (priority 0 is below `top`).
    let mut policy = Policy::new(Settings::default());
    let decided = run(&mut policy, 0..30, |now| observe(now, 1.0, &specs, &peers[..1]));
    assert_eq!(decided, []);
}
