//! Property (issue 25): whatever leases arrive, in whatever order, and however requests
//! fall in time — also with worker VMs reading the clock in one order and updating the
//! shared budget in another — an edge never admits more in a window than the largest
//! allowance a lease covering that window gave. Every step goes through the budget's
//! shared-data text (`encode`/`decode`), as the Envoy filter's workers do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::collections::HashMap;
use tessera_core::ratelimit::{apportion, Admission, Budget, Lease, Window};

#[derive(Clone, Debug)]
enum Step {
    /// A lease: window kind, first window offset from now's, length, per window.
    Grant(usize, u64, u64, u64),
    /// A request this many ms after the previous clock reading, read this many ms late.
    Request(u64, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0usize..4, 0u64..4, 0u64..6, 0u64..5).prop_map(|(k, a, n, p)| Step::Grant(k, a, n, p)),
        6 => (0u64..700, 0u64..300).prop_map(|(dt, late)| Step::Request(dt, late)),
    ]
}

// Second, minute, and the quotas; hours behave as minutes, months as days.
const KINDS: [Window; 4] = [Window::Second, Window::Minute, Window::Day, Window::Total];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn admissions_in_a_window_never_exceed_the_lease(
        start in 1_700_000_000_000u64..1_800_000_000_000,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut shared = Budget::new().encode();
        let mut clock = start;
        // The allowance of each (kind, window index): the largest lease covering it.
        let mut allowance: HashMap<(Window, u64), u64> = HashMap::new();
        // Admissions per (kind, window index), the window being the latest the budget
        // counted in (a late clock reading counts in the window already reached).
        let mut admitted: HashMap<(Window, u64), u64> = HashMap::new();
        let mut reached: HashMap<Window, u64> = HashMap::new();
        for s in steps {
            let mut b = Budget::decode(&shared).expect("own text");
            match s {
                Step::Grant(k, a, n, p) => {
                    let w = KINDS[k];
                    let first = w.index(clock) + a;
                    let lease = Lease { window: w, first, last: first + n, per_window: p, limit: 100 };
                    b.grant(lease, clock);
                    for i in first..=first + n {
                        let a = allowance.entry((w, i)).or_insert(0);
                        *a = (*a).max(p);
                    }
                }
                Step::Request(dt, late) => {
                    clock += dt;
                    let read = clock.saturating_sub(late);
                    let limited: Vec<Window> = KINDS
                        .into_iter()
                        .filter(|w| b.leases().iter().any(|l| l.window == *w))
                        .collect();
                    if b.admit(read) == Admission::Admit {
                        for w in limited {
                            let r = reached.entry(w).or_insert(0);
                            *r = (*r).max(w.index(read));
                            *admitted.entry((w, *r)).or_insert(0) += 1;
                        }
                    }
                }
            }
            shared = b.encode();
        }
        for ((w, i), n) in admitted {
            let most = allowance.get(&(w, i)).copied().unwrap_or(0);
            prop_assert!(n <= most, "{w:?} window {i}: admitted {n}, lease {most}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The control plane's split never leases more than the limit in total, gives each
    /// edge its floor (of `cap = min(floor, limit / edges)`: `min(cap, demand)`, or a
    /// quarter of the cap, at least 1 and at most the cap, to an edge that wanted nothing)
    /// and never more than the larger of its floor and what it wanted plus the cap (its
    /// headroom), and hands out the whole limit when the demand covers it.
    #[test]
    fn apportioned_shares_never_exceed_the_limit(
        limit in 0u64..100_000,
        demand in proptest::collection::vec(0u64..200_000, 0..12),
        floor in 0u64..50,
    ) {
        let shares = apportion(limit, &demand, floor);
        prop_assert_eq!(shares.len(), demand.len());
        let total: u64 = shares.iter().sum();
        prop_assert!(total <= limit, "{shares:?} over {limit}");
        let n = demand.len() as u64;
        if let Some(even) = limit.checked_div(n) {
            let cap = floor.min(even);
            let bases: Vec<u64> = demand
                .iter()
                .map(|d| if *d == 0 { cap.min((cap / 4).max(1)) } else { cap.min(*d) })
                .collect();
            for ((s, d), base) in shares.iter().zip(&demand).zip(&bases) {
                prop_assert!(*s >= *base && *s <= (*base).max(*d) + cap, "{s} for demand {d}, floor {base}");
            }
            let wanted: u64 = demand.iter().zip(&bases).map(|(d, b)| d.saturating_sub(*b)).sum();
            if wanted >= limit - bases.iter().sum::<u64>() {
                prop_assert_eq!(total, limit, "{:?} leaves some of {} unleased", shares, limit);
            }
        }
    }
}
