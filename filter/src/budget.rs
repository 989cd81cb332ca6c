//! One rate-limit budget per token per Envoy process (issue 25), shared by the process's
//! worker VMs through shared data with compare-and-swap.
//!
//! A limited token's [`tessera_core::ratelimit::Budget`] lives under `tessera.rl.<token id>`
//! as its compact text. A worker admits a request by reading the text and its CAS value,
//! deciding with core ([`Budget::admit`]) and writing the new text back *with that CAS*;
//! when another worker wrote in between, the write is refused (`CasMismatch`) and the
//! worker reads again and decides again. So each admission is counted exactly once in the
//! one shared budget, and N workers never admit more than the process holds (without CAS
//! a Wasm limiter admits anywhere in `[limit/workers, limit×workers]`:
//! istio-ecosystem/wasm-extensions#43). A refusal writes nothing. Leases from the control
//! plane are merged the same way ([`grant`]). Shared data's CAS guards only keys that
//! exist, so a budget is created with [`crate::lease::CREATE_ONLY`], which succeeds only
//! while the key is missing.
//!
//! Everything here is host-free behind [`Cas`]; `lib.rs` implements it with
//! `get_shared_data` / `set_shared_data`.

use tessera_core::ratelimit::{refusal_reply, Admission, Budget, Lease};
use tessera_core::Reply;

use crate::lease::CREATE_ONLY;

/// Shared-data key prefix of the budgets.
pub const PREFIX: &str = "tessera.rl.";
/// How many times a worker reads again after losing a compare-and-swap before it refuses
/// (fail closed: the budget is that contended).
pub const MAX_TRIES: usize = 32;

/// The shared-data key of a token's budget.
pub fn key(token_id: &str) -> String {
    format!("{PREFIX}{token_id}")
}

/// Shared data with compare-and-swap, as proxy-wasm offers it.
pub trait Cas {
    /// The value and its CAS, `(None, _)` when the key is missing.
    fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String>;
    /// Writes `value` if the key's CAS still is `cas`: `Ok(false)` on a mismatch.
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String>;
}

/// What the budget said about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The process holds no budget for the token: it is not limited here.
    Unlimited,
    /// Counted in the shared budget: forward.
    Admitted,
    /// Spent: answer this 429 (`rate_limited`).
    Refused(Reply),
    /// The budget could not be read or updated (unreadable, or contended past
    /// [`MAX_TRIES`]): refuse, fail closed, with this 429.
    Unavailable(Reply),
}

/// The 429 when the budget cannot be updated: `Retry-After: 1`, no lease to describe.
fn busy() -> Reply {
    let reason = tessera_core::Reason::RateLimited;
    Reply {
        status: reason.http_status(),
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("cache-control", "no-store".to_string()),
            ("retry-after", "1".to_string()),
        ],
        body: tessera_core::Deny::new(reason, "", &[]).body(),
        reason,
    }
}

/// Decides one request of `token_id` at `now_ms` against the process's shared budget.
pub fn admit(shared: &mut impl Cas, token_id: &str, now_ms: u64) -> Verdict {
    let key = key(token_id);
    for _ in 0..MAX_TRIES {
        let (bytes, cas) = match shared.get(&key) {
            Ok((None, _)) => return Verdict::Unlimited,
            Ok((Some(b), Some(cas))) => (b, cas),
            Ok((Some(_), None)) | Err(_) => return Verdict::Unavailable(busy()),
        };
        let Some(mut budget) = std::str::from_utf8(&bytes).ok().and_then(Budget::decode) else {
            return Verdict::Unavailable(busy());
        };
        match budget.admit(now_ms) {
            Admission::Refuse(r) => {
                return Verdict::Refused(refusal_reply(&budget, &r, now_ms));
            }
            Admission::Admit => match shared.set(&key, budget.encode().as_bytes(), cas) {
                Ok(true) => return Verdict::Admitted,
                Ok(false) => continue,
                Err(_) => return Verdict::Unavailable(busy()),
            },
        }
    }
    Verdict::Unavailable(busy())
}

/// Merges `lease` into the token's shared budget (creating it), by compare-and-swap.
pub fn grant(
    shared: &mut impl Cas,
    token_id: &str,
    lease: Lease,
    now_ms: u64,
) -> Result<(), String> {
    let key = key(token_id);
    for _ in 0..MAX_TRIES {
        let (budget, cas) = match shared.get(&key)? {
            (None, _) => (Budget::new(), CREATE_ONLY),
            (Some(b), Some(cas)) => (
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(Budget::decode)
                    .unwrap_or_default(),
                cas,
            ),
            (Some(_), None) => return Err("a budget without a CAS value".into()),
        };
        let mut budget = budget;
        budget.grant(lease, now_ms);
        if shared.set(&key, budget.encode().as_bytes(), cas)? {
            return Ok(());
        }
    }
    Err(format!("the budget of {token_id} stayed contended"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tessera_core::ratelimit::Window;

    /// Envoy's shared data as its CAS behaves: every write bumps the key's CAS; a write
    /// with another key's CAS is refused; any CAS is accepted for a missing key.
    #[derive(Default)]
    struct Shared {
        map: HashMap<String, (Vec<u8>, u32)>,
        next: u32,
    }

    impl Cas for Shared {
        fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            Ok(match self.map.get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            })
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
            if let Some((_, c)) = self.map.get(key) {
                if *c != cas {
                    return Ok(false);
                }
            }
            self.next += 1;
            self.map.insert(key.into(), (value.to_vec(), self.next));
            Ok(true)
        }
    }

    /// A worker whose reads are all answered from a snapshot taken before the other
    /// workers' writes, once: the interleaving that loses updates without CAS.
    struct Stale<'a> {
        shared: &'a mut Shared,
        snapshot: Option<(Option<Vec<u8>>, Option<u32>)>,
    }

    impl Cas for Stale<'_> {
        fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            match self.snapshot.take() {
                Some(s) => Ok(s),
                None => self.shared.get(key),
            }
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
            self.shared.set(key, value, cas)
        }
    }

    fn lease(n: u64) -> Lease {
        Lease {
            window: Window::Second,
            first: 0,
            last: 1_000,
            per_window: n,
            limit: n,
        }
    }

    #[test]
    fn a_token_without_a_budget_is_unlimited_here() {
        let mut s = Shared::default();
        assert_eq!(admit(&mut s, "tok_a", 5), Verdict::Unlimited);
    }

    #[test]
    fn workers_racing_on_one_budget_never_admit_more_than_it_holds() {
        let mut s = Shared::default();
        grant(&mut s, "tok_a", lease(5), 0).unwrap();
        // Four workers each read the budget, then all decide: every one but the first
        // to write loses its CAS, reads again and is counted against the new value.
        let snapshot = s.get(&key("tok_a")).unwrap();
        let mut admitted = 0;
        for _ in 0..4 {
            let mut w = Stale {
                shared: &mut s,
                snapshot: Some(snapshot.clone()),
            };
            if admit(&mut w, "tok_a", 10) == Verdict::Admitted {
                admitted += 1;
            }
        }
        for _ in 0..10 {
            if admit(&mut s, "tok_a", 20) == Verdict::Admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        let Verdict::Refused(reply) = admit(&mut s, "tok_a", 30) else {
            panic!("admitted past the budget");
        };
        assert_eq!(reply.status, 429);
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| *k == "retry-after" && v == "1"));
        // The next second has its own allowance.
        assert_eq!(admit(&mut s, "tok_a", 1_000), Verdict::Admitted);
    }

    #[test]
    fn leases_merge_into_the_shared_budget_and_garbage_fails_closed() {
        let mut s = Shared::default();
        grant(&mut s, "tok_b", lease(1), 0).unwrap();
        grant(&mut s, "tok_b", lease(2), 0).unwrap();
        assert_eq!(admit(&mut s, "tok_b", 0), Verdict::Admitted);
        assert_eq!(admit(&mut s, "tok_b", 0), Verdict::Admitted);
        assert!(matches!(admit(&mut s, "tok_b", 0), Verdict::Refused(_)));
        s.map.insert(key("tok_c"), (b"garbage".to_vec(), 99));
        let Verdict::Unavailable(reply) = admit(&mut s, "tok_c", 0) else {
            panic!("an unreadable budget must refuse");
        };
        assert_eq!(reply.reason, tessera_core::Reason::RateLimited);
    }
}
