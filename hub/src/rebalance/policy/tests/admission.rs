//! The destination's side (rule 10).

use super::*;

fn idle_hub(id: &str, capacity: f64) -> ThisHub {
    ThisHub {
        id: id.to_owned(),
        ..this_hub(capacity, &[])
    }
}

fn balancing(want: f64, source_w_before: f64, source_w_after: f64) -> Offer {
    Offer {
        function: "f".to_owned(),
        kind: OfferKind::Balance,
        want,
        memory: 8 * MIB,
        source_w_before,
        source_w_after,
    }
}

#[test]
fn two_hot_hubs_offering_to_one_idle_hub_the_second_is_refused_once_the_first_is_reserved() {
    let settings = Settings::default();
    let idle = [peer("hub-d", 1.0, &[])];
    // hub-a and hub-b, one core and two CPU-bound functions each, both see
    // hub-d idle and both decide to move one there.
    let offers: Vec<Offer> = ["hub-a", "hub-b"]
        .into_iter()
        .map(|source| {
            let mut policy = Policy::new(settings.clone());
            let decided = run(&mut policy, 0..6, |now| {
                let mut observation = observe(now, 1.0, &cpu_bound(&["f", "g"]), &idle);
                observation.hub.id = source.to_owned();
                observation
            });
            let found = moves(&decided);
            assert_eq!(found.len(), 1, "{source}: {decided:?}");
            assert_eq!(found[0].1.to, "hub-d");
            found[0].1.offer()
        })
        .collect();

    let mut here = idle_hub("hub-d", 1.0);
    // Each offer alone fits; together they would leave hub-d at pressure 1.0.
    assert!(admit(&settings, &here, &offers[1]).is_ok());
    let first = admit(&settings, &here, &offers[0]).expect("the first offer fits");
    assert_eq!(first.to_string(), "accepted: w 0.00 → 1.00, pressure 0.00 predicted");
    here.reserved += offers[0].want;

    let second = admit(&settings, &here, &offers[1]);
    assert_eq!(
        second,
        Err(Refused::WouldNotShrink {
            before: 1.0,
            after: 1.0
        })
    );
    assert_eq!(
        second.unwrap_err().to_string(),
        "the imbalance would not shrink: 1.00 → 1.00"
    );
}

#[test]
fn a_balancing_offer_to_a_busy_hub_must_shrink_the_imbalance_by_the_margin() {
    let settings = Settings::default();
    let here = ThisHub {
        usage: 1.0,
        ..idle_hub("hub-d", 1.0)
    };
    // 3.0 → 2.0 there, 1.0 → 2.0 here: imbalance 2.0 → 0.0.
    assert!(admit(&settings, &here, &balancing(1.0, 3.0, 2.0)).is_ok());
    // 2.1 → 1.1 there, 1.0 → 2.0 here: imbalance 1.1 → 0.9, short of the margin.
    let refused = admit(&settings, &here, &balancing(1.0, 2.1, 1.1)).unwrap_err();
    assert!(matches!(refused, Refused::BelowMargin { .. }), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        "the imbalance would shrink by less than the margin 0.25 (1.10 → 0.90) and pressure here would be 1.00, over the high watermark"
    );
    // Staying below the high watermark, any strict shrink will do.
    let light = idle_hub("hub-d", 4.0);
    assert!(admit(&settings, &light, &balancing(0.1, 1.3, 1.2)).is_ok());
}

#[test]
fn an_offer_is_refused_while_draining_or_short_of_memory() {
    let settings = Settings::default();
    let draining = ThisHub {
        draining: true,
        ..idle_hub("hub-d", 1.0)
    };
    assert_eq!(
        admit(&settings, &draining, &balancing(1.0, 3.0, 2.0)),
        Err(Refused::Draining)
    );
    let cramped = ThisHub {
        free_memory: MIB,
        ..idle_hub("hub-d", 1.0)
    };
    assert_eq!(
        admit(&settings, &cramped, &balancing(1.0, 3.0, 2.0)),
        Err(Refused::Memory {
            needed: 8 * MIB,
            free: MIB
        })
    );
    let broken = ThisHub {
        capacity: f64::NAN,
        ..idle_hub("hub-d", 1.0)
    };
    assert_eq!(
        admit(&settings, &broken, &balancing(1.0, 3.0, 2.0)),
        Err(Refused::NoCapacity)
    );
    let nonsense = balancing(1.0, f64::NAN, 2.0);
    assert!(admit(&settings, &idle_hub("hub-d", 1.0), &nonsense).is_err());
}

#[test]
fn a_drain_is_taken_whatever_the_pressure() {
    let settings = Settings::default();
    let busy = ThisHub {
        usage: 1.0,
        demand: 2.0,
        ..idle_hub("hub-d", 1.0)
    };
    let drain = Offer {
        kind: OfferKind::Drain,
        ..balancing(1.0, 1.0, 0.0)
    };
    assert_eq!(
        admit(&settings, &busy, &drain),
        Ok(Accepted {
            w_before: 3.0,
            w_after: 4.0
        })
    );
}

#[test]
fn a_resume_is_taken_only_if_this_hub_stays_below_the_high_watermark() {
    let settings = Settings::default();
    let resume = Offer {
        kind: OfferKind::Resume,
        ..balancing(1.0, 0.0, 0.0)
    };
    assert!(admit(&settings, &idle_hub("hub-d", 1.0), &resume).is_ok());
    let small = idle_hub("hub-d", 0.5);
    assert_eq!(
        admit(&settings, &small, &resume),
        Err(Refused::NoRoom {
            pressure_after: 1.0,
            high_watermark: 0.25
        })
    );
}
