//! Emptying a draining hub (rule 9).

use super::*;

#[test]
fn a_draining_hub_moves_every_function_off_one_at_a_time() {
    let mut policy = Policy::new(Settings::default());
    let mut specs = vec![
        spec("a", 1.0),
        spec("b", 0.5).priority(2),
        spec("pin", 1.0).priority(5).pinned(),
        spec("s", 1.0).priority(1).state(FunctionState::SuspendedForOverload),
    ];
    let mut draining_peer = peer("hub-d", 8.0, &[]);
    draining_peer.draining = true;
    let mut peers = vec![peer("hub-b", 1.0, &[]), peer("hub-c", 2.0, &[]), draining_peer];
    let mut in_flight = 0;
    let mut decided = Vec::new();
    for now in 0..20 {
        let mut observation = observe(now, 1.0, &specs, &peers);
        observation.hub.draining = true;
        observation.moves_in_flight = in_flight;
        in_flight = 0;
        for decision in policy.decide(&observation) {
            assert_eq!(observation.moves_in_flight, 0, "one at a time");
            let (to, want) = match &decision {
                Decision::Move(found) => (found.to.clone(), found.want),
                Decision::ResumeOn(found) => (found.to.clone(), found.want),
                other => panic!("a draining hub only sends functions away: {other}"),
            };
            specs.retain(|spec| spec.name != decision.function());
            let destination = peers.iter_mut().find(|peer| peer.id == to).unwrap();
            destination.usage += want;
            in_flight = 1;
            decided.push((now, decision));
        }
    }
    let sent: Vec<_> = decided
        .iter()
        .map(|(now, decision)| match decision {
            Decision::Move(found) => (*now, found.function.as_str(), found.to.as_str()),
            Decision::ResumeOn(found) => (*now, found.function.as_str(), found.to.as_str()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(sent, [(0, "b", "hub-c"), (2, "a", "hub-b"), (4, "s", "hub-c")]);
    assert_eq!(specs.len(), 1, "the pinned function stays");
    assert_eq!(
        decided[0].1.to_string(),
        "move b to hub-c: this hub is draining; hub-c at w 0.0 → 0.2; cost 217 ms"
    );
}
