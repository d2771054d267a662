//! Whole hubs against each other: every simulated second each hub's policy
//! decides on what it sees (the other hubs as peers), and the decisions are
//! carried out at once — a move or a resume elsewhere only if the
//! destination admits it, its reservation counting for the rest of that
//! second. Figures follow the wants with no lag (see `measure`).

use super::*;

struct SimHub {
    id: String,
    capacity: f64,
    specs: Vec<Spec>,
    policy: Policy,
    /// Absent hubs are nobody's peer and decide nothing.
    present: bool,
}

/// A function that changed hubs.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    at: u64,
    function: String,
    from: String,
    to: String,
}

struct Sim {
    now: u64,
    hubs: Vec<SimHub>,
    decided: Vec<(u64, String, Decision)>,
    sent: Vec<Sent>,
    refused: Vec<(u64, String, Refused)>,
}

impl Sim {
    fn new(hubs: &[(&str, f64)]) -> Sim {
        Sim {
            now: 0,
            hubs: hubs
                .iter()
                .map(|(id, capacity)| SimHub {
                    id: (*id).to_owned(),
                    capacity: *capacity,
                    specs: Vec::new(),
                    policy: Policy::new(Settings::default()),
                    present: true,
                })
                .collect(),
            decided: Vec::new(),
            sent: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn index(&self, id: &str) -> usize {
        self.hubs.iter().position(|hub| hub.id == id).unwrap()
    }

    fn hub(&mut self, id: &str) -> &mut SimHub {
        let index = self.index(id);
        &mut self.hubs[index]
    }

    fn this_hub(&self, index: usize) -> (ThisHub, Vec<Function>) {
        let hub = &self.hubs[index];
        let functions = measure(hub.capacity, &hub.specs);
        let this = ThisHub {
            id: hub.id.clone(),
            ..this_hub(hub.capacity, &functions)
        };
        (this, functions)
    }

    fn observation(&self, index: usize) -> Observation {
        let (hub, functions) = self.this_hub(index);
        let peers = self
            .hubs
            .iter()
            .enumerate()
            .filter(|(other, peer)| *other != index && peer.present)
            .map(|(other, peer)| {
                let (figures, functions) = self.this_hub(other);
                Peer {
                    id: peer.id.clone(),
                    name: peer.id.clone(),
                    usable: true,
                    capacity: figures.capacity,
                    usage: figures.usage,
                    demand: figures.demand,
                    functions: functions.len() as u32,
                    free_memory: figures.free_memory,
                    draining: false,
                    throughput: None,
                    lacking: BTreeMap::new(),
                }
            })
            .collect();
        Observation {
            now: secs(self.now),
            hub,
            functions,
            peers,
            moves_in_flight: 0,
        }
    }

    /// One second: every present hub decides, then the decisions happen.
    fn step(&mut self) {
        let mut decided = Vec::new();
        for index in 0..self.hubs.len() {
            if self.hubs[index].present {
                let observation = self.observation(index);
                decided.push((index, self.hubs[index].policy.decide(&observation)));
            }
        }
        let mut reserved = vec![0.0; self.hubs.len()];
        let mut arrivals = Vec::new();
        for (index, decisions) in decided {
            for decision in decisions {
                match &decision {
                    Decision::Move(found) => self.send(
                        index,
                        &found.function,
                        &found.to,
                        &found.offer(),
                        &mut reserved,
                        &mut arrivals,
                    ),
                    Decision::ResumeOn(found) => self.send(
                        index,
                        &found.function,
                        &found.to,
                        &found.offer(),
                        &mut reserved,
                        &mut arrivals,
                    ),
                    Decision::Suspend(_) => {
                        self.set_state(index, decision.function(), FunctionState::SuspendedForOverload)
                    }
                    Decision::Resume(_) => self.set_state(index, decision.function(), FunctionState::Running),
                    Decision::MarkUnbalanceable(_) => {}
                }
                self.decided.push((self.now, self.hubs[index].id.clone(), decision));
            }
        }
        for (index, spec) in arrivals {
            self.hubs[index].specs.push(spec);
        }
        self.now += 1;
    }

    fn steps(&mut self, count: u64) {
        for _ in 0..count {
            self.step();
        }
    }

    fn set_state(&mut self, index: usize, function: &str, state: FunctionState) {
        let spec = self.hubs[index]
            .specs
            .iter_mut()
            .find(|spec| spec.name == function)
            .unwrap();
        spec.state = state;
    }

    /// Offers `function` to `to`; moves it there (running) if admitted.
    fn send(
        &mut self,
        from: usize,
        function: &str,
        to: &str,
        offer: &Offer,
        reserved: &mut [f64],
        arrivals: &mut Vec<(usize, Spec)>,
    ) {
        let destination = self.index(to);
        let (mut here, _) = self.this_hub(destination);
        here.reserved = reserved[destination];
        if let Err(refused) = admit(&Settings::default(), &here, offer) {
            self.refused.push((self.now, to.to_owned(), refused));
            return;
        }
        reserved[destination] += offer.want;
        let specs = &mut self.hubs[from].specs;
        let position = specs.iter().position(|spec| spec.name == function).unwrap();
        let mut spec = specs.remove(position);
        spec.state = FunctionState::Running;
        spec.arrival = Some(Arrival {
            at: secs(self.now),
            from: self.hubs[from].id.clone(),
        });
        arrivals.push((destination, spec));
        self.sent.push(Sent {
            at: self.now,
            function: function.to_owned(),
            from: self.hubs[from].id.clone(),
            to: to.to_owned(),
        });
    }

    fn counts(&self) -> Vec<usize> {
        self.hubs.iter().map(|hub| hub.specs.len()).collect()
    }

    fn state_of(&self, function: &str) -> Option<(String, FunctionState)> {
        self.hubs.iter().find_map(|hub| {
            hub.specs
                .iter()
                .find(|spec| spec.name == function)
                .map(|spec| (hub.id.clone(), spec.state))
        })
    }

    /// The decisions of one kind, as (second, function).
    fn of_kind(&self, kind: fn(&Decision) -> bool) -> Vec<(u64, String)> {
        self.decided
            .iter()
            .filter(|(_, _, decision)| kind(decision))
            .map(|(now, _, decision)| (*now, decision.function().to_owned()))
            .collect()
    }

    /// No function visited a hub twice.
    fn assert_no_function_returns(&self) {
        let mut visited: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for sent in &self.sent {
            let path = visited
                .entry(&sent.function)
                .or_insert_with(|| vec![sent.from.as_str()]);
            assert!(
                !path.contains(&sent.to.as_str()),
                "{} went back: {path:?} → {}",
                sent.function,
                sent.to
            );
            path.push(&sent.to);
        }
    }
}

fn is_suspend(decision: &Decision) -> bool {
    matches!(decision, Decision::Suspend(_))
}

fn is_resume(decision: &Decision) -> bool {
    matches!(decision, Decision::Resume(_))
}

fn is_resume_on(decision: &Decision) -> bool {
    matches!(decision, Decision::ResumeOn(_))
}

#[test]
fn three_small_hubs_spread_twelve_cpu_bound_functions_four_each() {
    let mut sim = Sim::new(&[("hub-a", 0.5), ("hub-b", 0.5), ("hub-c", 0.5)]);
    sim.hub("hub-a").specs = (0..12).map(|index| spec(&format!("f{index:02}"), 1.0)).collect();
    while sim.counts() != [4, 4, 4] {
        assert!(sim.now < 120, "not spread after 120 s: {:?}", sim.counts());
        sim.step();
    }
    let spread_at = sim.now;
    sim.steps(60);
    assert_eq!(sim.counts(), [4, 4, 4]);
    let late: Vec<_> = sim
        .decided
        .iter()
        .filter(|(now, _, decision)| *now >= spread_at && !matches!(decision, Decision::MarkUnbalanceable(_)))
        .collect();
    assert_eq!(
        late,
        Vec::<&(u64, String, Decision)>::new(),
        "nothing moves once spread"
    );
    assert_eq!(sim.sent.len(), 8, "each of the 8 functions that left moved once");
    sim.assert_no_function_returns();
    assert_eq!(sim.of_kind(is_suspend), [], "one priority: nothing is suspended");
}

#[test]
fn two_hubs_never_pass_a_function_back_and_forth() {
    let mut sim = Sim::new(&[("hub-a", 1.0), ("hub-b", 1.0)]);
    sim.hub("hub-a").specs = cpu_bound(&["a1", "a2", "a3", "a4"]);
    sim.hub("hub-b").specs = cpu_bound(&["b1", "b2"]);
    sim.steps(200);
    assert_eq!(sim.counts(), [3, 3]);
    assert_eq!(sim.sent.len(), 1, "{:?}", sim.sent);

    // Mixed wants and capacities, well past every cooldown.
    let mut sim = Sim::new(&[("hub-a", 1.0), ("hub-b", 0.5), ("hub-c", 2.0)]);
    sim.hub("hub-a").specs = vec![spec("x", 1.0), spec("y", 1.0), spec("z", 0.6), spec("w", 0.3)];
    sim.hub("hub-b").specs = vec![spec("v", 0.4), spec("u", 1.0), spec("t", 0.7)];
    sim.hub("hub-c").specs = vec![spec("s", 1.0), spec("r", 1.0), spec("q", 1.0), spec("p", 0.9)];
    sim.steps(300);
    sim.assert_no_function_returns();
    let last = sim.sent.last().map_or(0, |sent| sent.at);
    assert!(last < 200, "still moving at {last}: {:?}", sim.sent);
}

#[test]
fn a_lone_small_hub_suspends_its_low_priorities_and_resumes_them_highest_first() {
    let mut sim = Sim::new(&[("hub-a", 0.5)]);
    sim.hub("hub-a").specs = priorities();
    sim.steps(5);
    assert_eq!(sim.of_kind(is_suspend), [], "not before the window");
    sim.steps(15);
    let shed = [(5, "p0-a"), (5, "p0-b"), (5, "p1-a"), (5, "p1-b")].map(|(now, name)| (now, name.to_owned()));
    assert_eq!(sim.of_kind(is_suspend), shed);
    assert_eq!(sim.of_kind(is_resume), []);

    // The priority-2 functions finish: priority 1 comes back first, and
    // priority 0 waits while priority 1 runs.
    sim.hub("hub-a").specs.retain(|spec| spec.priority != 2);
    sim.steps(20);
    let back = [(20, "p1-a"), (21, "p1-b")].map(|(now, name)| (now, name.to_owned()));
    assert_eq!(sim.of_kind(is_resume), back);
    assert_eq!(sim.state_of("p0-a").unwrap().1, FunctionState::SuspendedForOverload);

    sim.hub("hub-a").specs.retain(|spec| spec.priority != 1);
    sim.steps(20);
    let back = [(20, "p1-a"), (21, "p1-b"), (40, "p0-a"), (41, "p0-b")].map(|(now, name)| (now, name.to_owned()));
    assert_eq!(sim.of_kind(is_resume), back);
    assert_eq!(sim.of_kind(is_suspend), shed, "nothing more was suspended");
}

#[test]
fn a_hub_joining_later_takes_the_suspended_functions() {
    let mut sim = Sim::new(&[("hub-a", 0.5), ("hub-b", 8.0)]);
    sim.hub("hub-b").present = false;
    sim.hub("hub-a").specs = priorities();
    sim.steps(10);
    assert_eq!(sim.of_kind(is_suspend).len(), 4);

    sim.hub("hub-b").present = true;
    sim.steps(20);
    let resumed_there =
        [(12, "p1-a"), (13, "p1-b"), (14, "p0-a"), (15, "p0-b")].map(|(now, name)| (now, name.to_owned()));
    assert_eq!(sim.of_kind(is_resume_on), resumed_there);
    assert_eq!(sim.of_kind(is_resume), [], "nothing resumes on the small hub");
    for sent in sim
        .sent
        .iter()
        .filter(|sent| sent.function.starts_with("p0") || sent.function.starts_with("p1"))
    {
        assert_eq!(sent.to, "hub-b");
    }
    for function in ["p2-a", "p2-b", "p1-a", "p1-b", "p0-a", "p0-b"] {
        assert_eq!(sim.state_of(function).unwrap().1, FunctionState::Running, "{function}");
    }
    assert!(sim.of_kind(is_suspend).iter().all(|(_, name)| !name.starts_with("p2")));
    assert_eq!(sim.refused, []);
}

/// Six CPU-bound functions of priorities 2, 2, 1, 1, 0, 0.
fn priorities() -> Vec<Spec> {
    ["p2-a", "p2-b", "p1-a", "p1-b", "p0-a", "p0-b"]
        .iter()
        .map(|name| spec(name, 1.0).priority(name[1..2].parse().unwrap()))
        .collect()
}

#[test]
fn every_decision_reads_as_a_reason() {
    let mut sim = Sim::new(&[("hub-a", 0.5), ("hub-b", 8.0)]);
    sim.hub("hub-b").present = false;
    sim.hub("hub-a").specs = priorities();
    sim.steps(10);
    sim.hub("hub-b").present = true;
    sim.steps(6);
    let reasons: Vec<String> = sim
        .decided
        .iter()
        .map(|(now, hub, decision)| format!("{now:>2} {hub}: {decision}"))
        .collect();
    let expected = [
        " 5 hub-a: unbalanceable p0-a: no usable peer; pressure 11.0 over 5 s",
        " 5 hub-a: unbalanceable p0-b: no usable peer; pressure 11.0 over 5 s",
        " 5 hub-a: unbalanceable p1-a: no usable peer; pressure 11.0 over 5 s",
        " 5 hub-a: unbalanceable p1-b: no usable peer; pressure 11.0 over 5 s",
        " 5 hub-a: unbalanceable p2-a: no usable peer; pressure 11.0 over 5 s",
        " 5 hub-a: unbalanceable p2-b: no usable peer; pressure 11.0 over 5 s",
        " 5 hub-a: suspend p0-a: no peer has room; pressure 11.0 over 5 s; priority 0 is the lowest running (top 2 keeps running); pressure → 9.0 predicted",
        " 5 hub-a: suspend p0-b: no peer has room; pressure 11.0 over 5 s; priority 0 is the lowest running (top 2 keeps running); pressure → 7.0 predicted",
        " 5 hub-a: suspend p1-a: no peer has room; pressure 11.0 over 5 s; priority 1 is the lowest running (top 2 keeps running); pressure → 5.0 predicted",
        " 5 hub-a: suspend p1-b: no peer has room; pressure 11.0 over 5 s; priority 1 is the lowest running (top 2 keeps running); pressure → 3.0 predicted",
        "10 hub-a: move p2-a to hub-b: pressure 3.0 over 5 s; imbalance 4.0 → 1.9; cost 217 ms",
        "11 hub-a: move p2-b to hub-b: pressure 1.0 over 6 s; imbalance 1.8 → 0.4; cost 217 ms",
        "12 hub-a: resume p1-a on hub-b (from its checkpoint): hub-b has room (pressure 0.0 with it); priority 1 first; cost 217 ms",
        "13 hub-a: resume p1-b on hub-b (from its checkpoint): hub-b has room (pressure 0.0 with it); priority 1 first; cost 217 ms",
        "14 hub-a: resume p0-a on hub-b (from its checkpoint): hub-b has room (pressure 0.0 with it); priority 0 first; cost 217 ms",
        "15 hub-a: resume p0-b on hub-b (from its checkpoint): hub-b has room (pressure 0.0 with it); priority 0 first; cost 217 ms",
    ];
    assert_eq!(reasons, expected);
}
