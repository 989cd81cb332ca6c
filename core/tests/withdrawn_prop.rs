//! Property (issue 22): over random roles, grants, withdrawals, demotions and requests,
//! nothing is ever admitted beyond the holder's current grants. The tokens are issued
//! with scopes granted at issue time; then grants change at random; the withdrawn-scopes
//! document is computed as the control plane does (per live token index: carried less
//! granted now), sent through its wire form as an edge receives it, and every request is
//! decided by core.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::collections::BTreeSet;
use tessera_core::withdrawn::{first_missing, held, WithdrawnScopes};

const SCOPES: [&str; 5] = ["read", "write", "admin", "billing", "tessera:manage"];
const ROLES: usize = 3;

#[derive(Clone, Debug)]
enum Change {
    GrantRole(usize, usize),
    WithdrawRole(usize, usize),
    GrantUser(usize, usize),
    WithdrawUser(usize, usize),
    SetRole(usize, usize),
}

#[derive(Clone, Debug, Default)]
struct Org {
    role_of: Vec<usize>,
    by_role: Vec<BTreeSet<usize>>,
    by_user: Vec<BTreeSet<usize>>,
}

impl Org {
    fn granted(&self, user: usize) -> BTreeSet<usize> {
        self.by_role[self.role_of[user]]
            .union(&self.by_user[user])
            .copied()
            .collect()
    }

    fn apply(&mut self, c: &Change) {
        let users = self.role_of.len();
        match *c {
            Change::GrantRole(r, s) => {
                self.by_role[r % ROLES].insert(s % SCOPES.len());
            }
            Change::WithdrawRole(r, s) => {
                self.by_role[r % ROLES].remove(&(s % SCOPES.len()));
            }
            Change::GrantUser(u, s) => {
                self.by_user[u % users].insert(s % SCOPES.len());
            }
            Change::WithdrawUser(u, s) => {
                self.by_user[u % users].remove(&(s % SCOPES.len()));
            }
            Change::SetRole(u, r) => self.role_of[u % users] = r % ROLES,
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0..ROLES, 0..SCOPES.len()).prop_map(|(a, b)| Change::GrantRole(a, b)),
        (0..ROLES, 0..SCOPES.len()).prop_map(|(a, b)| Change::WithdrawRole(a, b)),
        (0..8usize, 0..SCOPES.len()).prop_map(|(a, b)| Change::GrantUser(a, b)),
        (0..8usize, 0..SCOPES.len()).prop_map(|(a, b)| Change::WithdrawUser(a, b)),
        (0..8usize, 0..ROLES).prop_map(|(a, b)| Change::SetRole(a, b)),
    ]
}

fn names(set: &BTreeSet<usize>) -> Vec<String> {
    set.iter().map(|s| SCOPES[*s].to_string()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn nothing_is_admitted_beyond_current_grants(
        roles in prop::collection::vec(0..ROLES, 1..8),
        initial in prop::collection::vec(change(), 0..20),
        // Per token: its user, and which of the user's granted scopes it asks for (a mask).
        tokens in prop::collection::vec((0..8usize, any::<u8>(), 0u32..5000), 1..12),
        later in prop::collection::vec(change(), 0..20),
        requests in prop::collection::vec((0..12usize, prop::collection::vec(0..SCOPES.len(), 0..3)), 1..30),
    ) {
        let users = roles.len();
        let mut org = Org {
            role_of: roles,
            by_role: vec![BTreeSet::new(); ROLES],
            by_user: vec![BTreeSet::new(); users],
        };
        for c in &initial {
            org.apply(c);
        }
        // Issued: each token carries a subset of its user's grants at the time (the
        // control plane's check at create), at a distinct index.
        let mut issued = Vec::new();
        let mut used = BTreeSet::new();
        for (u, mask, idx) in tokens {
            let u = u % users;
            if !used.insert(idx) {
                continue;
            }
            let carried: BTreeSet<usize> = org
                .granted(u)
                .into_iter()
                .filter(|s| mask & (1 << s) != 0)
                .collect();
            issued.push((u, carried, idx));
        }
        for c in &later {
            org.apply(c);
        }
        // The control plane's document, through the wire.
        let mut entries = Vec::new();
        for (u, carried, idx) in &issued {
            let now = org.granted(*u);
            for s in carried.difference(&now) {
                entries.push((SCOPES[*s], *idx));
            }
        }
        let doc = WithdrawnScopes::from_entries(entries.iter().copied());
        let edge = WithdrawnScopes::from_json(&doc.to_json()).unwrap();
        prop_assert_eq!(&edge, &doc);

        for (t, required) in requests {
            let (u, carried, idx) = &issued[t % issued.len()];
            let required: Vec<String> = required.iter().map(|s| SCOPES[*s].to_string()).collect();
            let carried_names = names(carried);
            let admitted = first_missing(&required, &carried_names, Some(u64::from(*idx)), Some(&edge)).is_none();
            let now = org.granted(*u);
            let within = required.iter().all(|r| {
                let s = SCOPES.iter().position(|x| x == r).unwrap();
                carried.contains(&s) && now.contains(&s)
            });
            // Never beyond the current grants, and nothing the token still holds is refused.
            prop_assert_eq!(admitted, within, "token {} of user {} asking {:?}", idx, u, required);
            let held_now = held(&carried_names, Some(u64::from(*idx)), Some(&edge));
            prop_assert_eq!(held_now, names(&carried.intersection(&now).copied().collect()));
        }
    }
}
