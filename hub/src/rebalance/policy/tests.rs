//! The rules one by one, on hand-made observations (rules 1–6 here,
//! `suspend` 7–8, `drain` 9, `admission` 10); `sim` runs whole hubs
//! against each other.

use std::time::Duration;

use super::*;

mod admission;
mod drain;
mod sim;
mod suspend;

const MIB: u64 = 1024 * 1024;

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// A function as a test describes it: the cores it would use alone.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    cpu: f64,
    memory: u64,
    priority: i32,
    pinned: bool,
    state: FunctionState,
    arrival: Option<Arrival>,
}

/// A running function wanting `cpu` cores, 8 MiB, priority 0.
fn spec(name: &str, cpu: f64) -> Spec {
    Spec {
        name: name.to_owned(),
        cpu,
        memory: 8 * MIB,
        priority: 0,
        pinned: false,
        state: FunctionState::Running,
        arrival: None,
    }
}

impl Spec {
    fn priority(mut self, priority: i32) -> Spec {
        self.priority = priority;
        self
    }

    fn pinned(mut self) -> Spec {
        self.pinned = true;
        self
    }

    fn state(mut self, state: FunctionState) -> Spec {
        self.state = state;
        self
    }

    fn memory(mut self, memory: u64) -> Spec {
        self.memory = memory;
        self
    }

    fn arrived(mut self, at: u64, from: &str) -> Spec {
        self.arrival = Some(Arrival {
            at: secs(at),
            from: from.to_owned(),
        });
        self
    }
}

/// What `specs` measure on a hub of `capacity` cores: when their wants
/// exceed it, each running function gets a share in proportion to what it
/// wants and waits for the rest (CPU-bound ones: usage C/n, demand 1 − C/n).
fn measure(capacity: f64, specs: &[Spec]) -> Vec<Function> {
    let wanted: f64 = specs
        .iter()
        .filter(|spec| spec.state == FunctionState::Running)
        .map(|spec| spec.cpu)
        .sum();
    let share = if wanted > capacity { capacity / wanted } else { 1.0 };
    specs
        .iter()
        .map(|spec| {
            let running = spec.state == FunctionState::Running;
            let usage = if running { spec.cpu * share } else { 0.0 };
            let demand = if running { spec.cpu - usage } else { 0.0 };
            Function {
                name: spec.name.clone(),
                usage,
                demand,
                cap: None,
                memory: spec.memory,
                priority: spec.priority,
                pinned: spec.pinned,
                barred: Default::default(),
                state: spec.state,
                arrival: spec.arrival.clone(),
            }
        })
        .collect()
}

/// This hub, `hub-a`, with the figures its functions measure.
fn this_hub(capacity: f64, functions: &[Function]) -> ThisHub {
    ThisHub {
        id: "hub-a".to_owned(),
        capacity,
        usage: functions.iter().map(|function| function.usage).sum(),
        demand: functions.iter().map(|function| function.demand).sum(),
        reserved: 0.0,
        free_memory: 1024 * MIB,
        draining: false,
    }
}

/// A usable peer of `capacity` cores running functions wanting `cpus`.
fn peer(id: &str, capacity: f64, cpus: &[f64]) -> Peer {
    let specs: Vec<Spec> = cpus.iter().map(|cpu| spec("x", *cpu)).collect();
    let functions = measure(capacity, &specs);
    Peer {
        id: id.to_owned(),
        name: id.to_owned(),
        usable: true,
        capacity,
        usage: functions.iter().map(|function| function.usage).sum(),
        demand: functions.iter().map(|function| function.demand).sum(),
        functions: cpus.len() as u32,
        free_memory: 1024 * MIB,
        draining: false,
        throughput: None,
        lacking: BTreeMap::new(),
    }
}

/// `hub-a` of `capacity` cores running `specs`, at second `now`.
fn observe(now: u64, capacity: f64, specs: &[Spec], peers: &[Peer]) -> Observation {
    let functions = measure(capacity, specs);
    Observation {
        now: secs(now),
        hub: this_hub(capacity, &functions),
        functions,
        peers: peers.to_vec(),
        moves_in_flight: 0,
    }
}

/// Calls `decide` once a second over `seconds`, with the observation
/// `scene` gives for each; returns every decision with its second.
fn run(
    policy: &mut Policy,
    seconds: std::ops::Range<u64>,
    mut scene: impl FnMut(u64) -> Observation,
) -> Vec<(u64, Decision)> {
    let mut decided = Vec::new();
    for now in seconds {
        for decision in policy.decide(&scene(now)) {
            decided.push((now, decision));
        }
    }
    decided
}

fn moves(decided: &[(u64, Decision)]) -> Vec<(u64, &Move)> {
    decided
        .iter()
        .filter_map(|(now, decision)| match decision {
            Decision::Move(found) => Some((*now, found)),
            _ => None,
        })
        .collect()
}

fn names(decided: &[(u64, Decision)]) -> Vec<(u64, String)> {
    decided
        .iter()
        .map(|(now, decision)| (*now, decision.function().to_owned()))
        .collect()
}

fn cpu_bound(names: &[&str]) -> Vec<Spec> {
    names.iter().map(|name| spec(name, 1.0)).collect()
}

// Rule 1: sustained overload only.

#[test]
fn a_single_spike_never_acts() {
    let mut policy = Policy::new(Settings::default());
    let idle = [peer("hub-b", 1.0, &[])];
    let decided = run(&mut policy, 0..30, |now| {
        // One second of two CPU-bound functions on one core, then four
        // seconds of it (one short of the window), else asleep.
        let cpu = if now == 3 || (10..14).contains(&now) { 1.0 } else { 0.0 };
        observe(now, 1.0, &[spec("a", cpu), spec("b", cpu)], &idle)
    });
    assert_eq!(decided, []);
}

#[test]
fn sustained_overload_moves_one_function() {
    let mut policy = Policy::new(Settings::default());
    let idle = [peer("hub-b", 1.0, &[])];
    let mut in_flight = 0;
    let mut decided = Vec::new();
    for now in 0..20 {
        let mut observation = observe(now, 1.0, &cpu_bound(&["a", "b", "c"]), &idle);
        observation.moves_in_flight = in_flight;
        for decision in policy.decide(&observation) {
            // The hub carries the move out: it is in flight from now on.
            in_flight = 1;
            decided.push((now, decision));
        }
    }
    assert_eq!(decided.len(), 1, "{decided:?}");
    let (when, found) = moves(&decided)[0];
    assert_eq!(when, 5, "the window is 5 s");
    assert_eq!((found.function.as_str(), found.to.as_str()), ("a", "hub-b"));
    assert_eq!(
        found.to_string(),
        "move a to hub-b: pressure 2.0 over 5 s; imbalance 3.0 → 1.0; cost 217 ms"
    );
}

#[test]
fn observations_further_apart_than_the_window_start_it_again() {
    let mut policy = Policy::new(Settings::default());
    let idle = [peer("hub-b", 1.0, &[])];
    let hot = |now| observe(now, 1.0, &cpu_bound(&["a", "b"]), &idle);
    assert_eq!(policy.decide(&hot(0)), []);
    // Six seconds of silence: nothing says pressure stayed up meanwhile.
    let decided = run(&mut policy, 6..12, hot);
    assert_eq!(names(&decided), [(11, "a".to_owned())]);
}

// Rule 2: what moves.

#[test]
fn the_function_freeing_the_most_want_per_byte_moves_first() {
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("big", 1.0).memory(64 * MIB),
        spec("small", 1.0),
        spec("half", 0.5).memory(2 * MIB),
        // Most want per byte of all, but it frees nothing worth a move.
        spec("sleeper", 0.01).memory(4096),
    ];
    let decided = run(&mut policy, 0..6, |now| {
        observe(now, 1.0, &specs, &[peer("hub-b", 1.0, &[])])
    });
    assert_eq!(names(&decided), [(5, "half".to_owned())]);
}

#[test]
fn pinned_functions_are_never_moved_or_suspended() {
    let mut policy = Policy::new(Settings::default());
    let pinned = [spec("p-1", 1.0).pinned(), spec("p-2", 1.0).pinned()];
    let decided = run(&mut policy, 0..30, |now| {
        observe(now, 1.0, &pinned, &[peer("hub-b", 1.0, &[])])
    });
    assert_eq!(decided, [], "nothing may move");

    // The lowest priority is pinned: the next one up is suspended instead.
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("keep", 1.0).priority(0).pinned(),
        spec("lo", 1.0).priority(1),
        spec("hi", 1.0).priority(2),
    ];
    let decided = run(&mut policy, 0..6, |now| observe(now, 1.0, &specs, &[]));
    let suspended: Vec<_> = decided
        .iter()
        .filter(|(_, decision)| matches!(decision, Decision::Suspend(_)))
        .map(|(_, decision)| decision.function())
        .collect();
    assert_eq!(suspended, ["lo"]);
}

#[test]
fn functions_in_cooldown_or_not_running_are_not_moved() {
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("arrived", 1.0).arrived(0, "hub-c"),
        spec("starting", 1.0).state(FunctionState::Other),
        spec("native", 1.0).memory(64 * MIB),
    ];
    let idle = [peer("hub-b", 2.0, &[])];
    let decided = run(&mut policy, 0..30, |now| observe(now, 1.0, &specs, &idle));
    assert_eq!(names(&decided), [(5, "native".to_owned())]);

    // (As if `native` had not gone.) Past its cooldown, the arrival is a
    // candidate like any other.
    let decided = run(&mut policy, 30..61, |now| observe(now, 1.0, &specs, &idle));
    assert_eq!(names(&decided), [(60, "arrived".to_owned())]);
}

// Rule 3: where to.

#[test]
fn a_destination_that_would_overload_is_passed_over_for_one_with_room() {
    let mut policy = Policy::new(Settings::default());
    let peers = [
        // Busy: it would end at pressure 1.2 with the function.
        peer("hub-b", 1.0, &[1.0, 0.2]),
        // Room: it ends at w 0.5.
        peer("hub-c", 2.0, &[]),
    ];
    let decided = run(&mut policy, 0..6, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b", "c"]), &peers)
    });
    let found = moves(&decided);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.to, "hub-c");

    // With only the busy one, the move still spreads CPU-bound work: the
    // imbalance 1.8 shrinks by more than the margin, to 0.2.
    let mut policy = Policy::new(Settings::default());
    let decided = run(&mut policy, 0..6, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b", "c"]), &peers[..1])
    });
    let found = moves(&decided);
    assert_eq!(found[0].1.to, "hub-b");
    assert!((found[0].1.imbalance_after() - 0.2).abs() < 1e-9);
}

#[test]
fn a_move_that_does_not_shrink_the_imbalance_by_the_margin_is_not_made() {
    let mut policy = Policy::new(Settings::default());
    // 3.0 here, 2.2 there: the move leaves 2.0 and 3.2, imbalance 0.8 → 1.2.
    let busy = [peer("hub-b", 1.0, &[1.0, 1.0, 0.2])];
    let decided = run(&mut policy, 0..10, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b", "c"]), &busy)
    });
    assert!(moves(&decided).is_empty(), "{decided:?}");
}

#[test]
fn the_reverse_of_an_accepted_move_is_always_refused() {
    let settings = Settings::default();
    let figures = [0.0, 0.3, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 8.0];
    let capacities = [0.5, 1.0, 2.0, 4.0];
    let wants = [0.05, 0.3, 1.0];
    let mut accepted = 0;
    for source in figures {
        for destination in figures {
            for source_capacity in capacities {
                for destination_capacity in capacities {
                    for want in wants {
                        let source_after = source - want / source_capacity;
                        let destination_after = destination + want / destination_capacity;
                        if source_after < 0.0
                            || super::admission::judge(&settings, source, source_after, destination, destination_after)
                                .is_err()
                        {
                            continue;
                        }
                        accepted += 1;
                        let back =
                            super::admission::judge(&settings, destination_after, destination, source_after, source);
                        assert!(
                            back.is_err(),
                            "{source} → {destination} ({want} cores) and back are both accepted"
                        );
                    }
                }
            }
        }
    }
    assert!(accepted > 100, "the grid must exercise accepted moves, got {accepted}");
}

#[test]
fn a_function_never_goes_back_to_where_it_came_from_within_its_cooldown() {
    let mut policy = Policy::new(Settings::default());
    // `came` arrived from hub-b; every other destination is as busy as here.
    let specs = [
        spec("top", 0.1).priority(1),
        spec("came", 1.0)
            .arrived(0, "hub-b")
            .state(FunctionState::SuspendedForOverload),
    ];
    let peers = [peer("hub-b", 1.0, &[]), peer("hub-c", 0.5, &[1.0])];
    let suspended = |now| observe(now, 0.5, &specs, &peers);
    let decided = run(&mut policy, 0..59, suspended);
    assert!(
        decided
            .iter()
            .all(|(_, decision)| !matches!(decision, Decision::ResumeOn(_)))
    );
    let decided = run(&mut policy, 60..61, suspended);
    assert!(matches!(&decided[..], [(60, Decision::ResumeOn(to))] if to.to == "hub-b"));
}

// Rule 4: cost and unbalanceable functions.

#[test]
fn a_move_costing_more_than_the_limit_is_not_made() {
    let mut policy = Policy::new(Settings::default());
    let specs = [
        spec("huge", 1.0).memory(1024 * MIB),
        spec("other", 1.0).memory(1024 * MIB),
    ];
    let mut slow = peer("hub-b", 1.0, &[]);
    slow.throughput = Some(10_000_000.0);
    let decided = run(&mut policy, 0..6, |now| observe(now, 1.0, &specs, &[slow.clone()]));
    assert!(moves(&decided).is_empty());
    assert_eq!(
        decided[0].1.to_string(),
        "unbalanceable huge: every move costs too much (cheapest: hub-b, 107.4 s over the 10.0 s limit); pressure 1.0 over 5 s"
    );

    // The peer holds all but 16 MiB of it already (an earlier checkpoint).
    slow.lacking.insert("huge".to_owned(), 16 * MIB);
    let decided = run(&mut policy, 6..7, |now| observe(now, 1.0, &specs, &[slow.clone()]));
    let found = moves(&decided);
    assert_eq!(found[0].1.function, "huge");
    assert_eq!(
        found[0].1.cost,
        Duration::from_secs_f64(16.0 * MIB as f64 / 1e7) + Duration::from_millis(50)
    );
}

#[test]
fn an_unbalanceable_function_is_reported_once() {
    let mut policy = Policy::new(Settings::default());
    let busy = [peer("hub-b", 1.0, &[1.0, 1.0])];
    let decided = run(&mut policy, 0..60, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b"]), &busy)
    });
    assert_eq!(names(&decided), [(5, "a".to_owned()), (5, "b".to_owned())]);
    assert_eq!(
        decided[0].1.to_string(),
        "unbalanceable a: no move shrinks the imbalance enough (closest: hub-b, 0.0 → 2.0); pressure 1.0 over 5 s"
    );

    // The peer frees up: the marks go and the work flows at once.
    let decided = run(&mut policy, 60..61, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b"]), &[peer("hub-b", 1.0, &[])])
    });
    assert_eq!(names(&decided), [(60, "a".to_owned())]);
}

// Rules 5 and 6: one at a time; new peers at once.

#[test]
fn no_new_move_or_suspension_while_a_move_is_in_flight() {
    let mut policy = Policy::new(Settings::default());
    let specs = [spec("hi", 1.0).priority(1), spec("lo", 1.0), spec("lo-2", 1.0)];
    let decided = run(&mut policy, 0..30, |now| {
        let mut observation = observe(now, 1.0, &specs, &[peer("hub-b", 1.0, &[])]);
        observation.moves_in_flight = 1;
        observation
    });
    assert_eq!(decided, []);
}

#[test]
fn what_this_policy_sent_counts_on_its_destination_until_its_figures_show_it() {
    let mut policy = Policy::new(Settings::default());
    // hub-b's figures lag: they do not show `a` arriving for a while.
    let peers = [peer("hub-b", 1.0, &[]), peer("hub-c", 1.0, &[])];
    let first = run(&mut policy, 0..6, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b", "c", "d"]), &peers)
    });
    assert_eq!(moves(&first)[0].1.to, "hub-b");
    let second = run(&mut policy, 6..7, |now| {
        observe(now, 1.0, &cpu_bound(&["b", "c", "d"]), &peers)
    });
    assert_eq!(moves(&second)[0].1.to, "hub-c");
}

#[test]
fn a_peer_that_joins_takes_work_at_once() {
    let mut policy = Policy::new(Settings::default());
    let decided = run(&mut policy, 0..20, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b"]), &[])
    });
    assert_eq!(
        decided[0].1.to_string(),
        "unbalanceable a: no usable peer; pressure 1.0 over 5 s"
    );
    let decided = run(&mut policy, 20..21, |now| {
        observe(now, 1.0, &cpu_bound(&["a", "b"]), &[peer("hub-new", 1.0, &[])])
    });
    assert!(matches!(&decided[..], [(20, Decision::Move(to))] if to.to == "hub-new"));
}

#[test]
fn a_down_or_foreign_cluster_peer_is_never_chosen() {
    let mut policy = Policy::new(Settings::default());
    let mut down = peer("hub-down", 8.0, &[]);
    down.usable = false;
    let mut foreign = peer("hub-foreign", 8.0, &[]);
    foreign.usable = false;
    let mut draining = peer("hub-draining", 8.0, &[]);
    draining.draining = true;
    let peers = [down, foreign, draining];
    let specs = [
        spec("a", 1.0),
        spec("b", 1.0),
        // Below the running ones, so only a peer could take it.
        spec("s", 1.0).priority(-1).state(FunctionState::SuspendedForOverload),
    ];
    let decided = run(&mut policy, 0..60, |now| observe(now, 1.0, &specs, &peers));
    assert!(
        decided
            .iter()
            .all(|(_, decision)| matches!(decision, Decision::MarkUnbalanceable(_))),
        "{decided:?}"
    );
}

// Hostile input and settings.

#[test]
fn hostile_figures_never_panic_and_never_choose_a_peer_without_capacity() {
    let mut policy = Policy::new(Settings::default());
    let weird = |id: &str, capacity: f64, usage: f64| Peer {
        capacity,
        usage,
        demand: f64::NAN,
        throughput: Some(f64::NAN),
        ..peer(id, 1.0, &[])
    };
    let peers = [
        weird("hub-zero", 0.0, 0.0),
        weird("hub-nan", f64::NAN, 0.0),
        weird("hub-inf", f64::INFINITY, 0.0),
        weird("hub-negative", -4.0, -1.0),
        weird("hub-a", 8.0, 0.0),
        weird("hub-ok", 1.0, f64::NEG_INFINITY),
        weird("hub-ok", 64.0, 0.0),
    ];
    let decided = run(&mut policy, 0..20, |now| {
        let mut specs = cpu_bound(&["a", "b", "c"]);
        specs.push(spec("huge", f64::NAN).memory(u64::MAX));
        let mut observation = observe(now, 1.0, &specs, &peers);
        observation.functions[0].cap = Some(f64::NAN);
        observation.functions[1].demand = f64::INFINITY;
        observation.hub.demand = 2.0;
        observation.hub.reserved = -3.0;
        observation
    });
    for (_, decision) in &decided {
        if let Decision::Move(found) = decision {
            assert_eq!(found.to, "hub-ok", "{decision}");
        }
    }
    assert!(!moves(&decided).is_empty());

    let mut observation = observe(0, 1.0, &cpu_bound(&["a"]), &peers);
    observation.hub.capacity = 0.0;
    assert_eq!(Policy::new(Settings::default()).decide(&observation), []);
}

#[test]
fn settings_are_checked() {
    assert_eq!(Settings::default().check(), Ok(()));
    let crossed = Settings {
        low_watermark: 0.5,
        ..Settings::default()
    };
    assert_eq!(crossed.check(), Err(SettingsError::Watermarks { low: 0.5, high: 0.25 }));
    let no_throughput = Settings {
        assumed_throughput: 0.0,
        ..Settings::default()
    };
    assert!(no_throughput.check().is_err());
    let negative_margin = Settings {
        margin: -1.0,
        ..Settings::default()
    };
    assert!(negative_margin.check().is_err());
}

/// The policy's invariant, checked on its source: no I/O, no clock, no
/// locks, no async, no proto types, no other hub module.
#[test]
fn the_policy_is_pure() {
    let sources = [
        ("mod.rs", include_str!("../mod.rs")),
        ("policy.rs", include_str!("../policy.rs")),
        ("admission.rs", include_str!("admission.rs")),
        ("decision.rs", include_str!("decision.rs")),
        ("moves.rs", include_str!("moves.rs")),
        ("observation.rs", include_str!("observation.rs")),
        ("settings.rs", include_str!("settings.rs")),
        ("suspend.rs", include_str!("suspend.rs")),
        ("view.rs", include_str!("view.rs")),
    ];
    let forbidden = [
        "crate::",
        "tokio",
        "Instant",
        "SystemTime",
        "std::sync",
        "std::fs",
        "std::io",
        "std::net",
        "std::thread",
        "ferry_",
        "async ",
        "unsafe",
    ];
    for (file, source) in sources {
        for word in forbidden {
            assert!(!source.contains(word), "{file} uses {word:?}");
        }
    }
}
