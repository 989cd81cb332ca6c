//! One rate-limit budget per token per Envoy process (issue 25), shared by the process's
//! worker VMs through shared data with compare-and-swap, and fed by the leases the
//! control plane answers the process's usage reports with.
//!
//! **Admission.** What a process holds of a token ([`Holding`]: a budget, or the control
//! plane's word that the token is unlimited) lives under `tessera.rl.<token id>` as its
//! compact text. A worker admits a request by reading the text and its CAS value,
//! deciding with core ([`tessera_core::ratelimit::decide`]) and writing the new text back
//! *with that CAS*; when another worker wrote in between, the write is refused
//! (`CasMismatch`) and the worker reads again and decides again. So each admission is
//! counted exactly once in the one shared budget, and N workers never admit more than the
//! process holds (without CAS a Wasm limiter admits anywhere in
//! `[limit/workers, limit×workers]`: istio-ecosystem/wasm-extensions#43). A refusal is
//! written back once, without retrying: its count is only the demand the process reports.
//!
//! **A token the process holds nothing for** is admitted at once only when the last usage
//! answer said no token of the organization is limited ([`MODE`]); otherwise the request
//! waits for a lease that the process asks for at once ([`Verdict::Ask`]; the request path
//! pauses it and the root context sends a report naming it), see ARCHITECTURE.md "Rate
//! limits and quotas".
//!
//! **Leases.** A root context that sends a usage batch adds the process's spend to it
//! ([`report`]: per token in [`INDEX`], what was admitted and refused in the latest
//! windows, and the tokens asked for) and merges the answer ([`apply`]: each lease into
//! its token's holding by CAS, `unlimited` tokens marked so, the organization's mode
//! stored, and [`VERSION`] bumped so paused requests are decided again). One root context
//! per process sends the periodic report ([`take_turn`]), so the control plane sees one
//! report per process per interval whatever `--concurrency` is. Shared data's CAS guards
//! only keys that exist, so a key is created with [`crate::lease::CREATE_ONLY`], which
//! succeeds only while the key is missing.
//!
//! Everything here is host-free behind [`Cas`]; `lib.rs` implements it with
//! `get_shared_data` / `set_shared_data`.

use tessera_core::config::RateLimitSettings;
use tessera_core::ratelimit::{
    decide, decide_lost, refusal_reply, unavailable_reply, Contact, Holding, Lease, OrgMode,
    SpendReport, Step, UsageAnswer, MAX_REPORTED,
};
use tessera_core::Reply;

use crate::lease::CREATE_ONLY;

/// Shared-data key prefix of the holdings.
pub const PREFIX: &str = "tessera.rl.";
/// The token ids the process holds something for, space-separated (at most
/// [`MAX_REPORTED`]): what its reports name.
pub const INDEX: &str = "tessera.ratelimit.index";
/// The organization's mode from the last answer that carried it (`L`, `U`).
pub const MODE: &str = "tessera.ratelimit.mode";
/// The process's edge id in its reports, made once by its first root context.
pub const EDGE: &str = "tessera.ratelimit.edge";
/// When (Unix ms) a root context last took the periodic report's turn.
pub const TURN: &str = "tessera.ratelimit.turn";
/// Bumped after each merged answer: paused requests are decided again when it moves.
pub const VERSION: &str = "tessera.ratelimit.version";
/// The process's contact with the control plane ([`Contact::encode`]): when a report was
/// last answered, when the first unanswered one since then left, the edges the control
/// plane counts. The fallback is read from it.
pub const CONTACT: &str = "tessera.ratelimit.contact";
/// How many times a worker reads again after losing a compare-and-swap before it refuses
/// (fail closed: the budget is that contended).
pub const MAX_TRIES: usize = 32;

/// The shared-data key of a token's holding.
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
    /// The token is not limited here (the control plane said so, or the organization
    /// limits no token): forward, nothing counted.
    Pass,
    /// Counted in the shared budget: forward.
    Admitted,
    /// Spent: answer this 429 (`rate_limited`).
    Refused(Reply),
    /// The process holds no lease of the token and must ask for one before admitting it.
    Ask,
    /// The budget could not be read or updated (unreadable, or contended past
    /// [`MAX_TRIES`]): refuse, fail closed, with this 429.
    Unavailable(Reply),
}

/// The organization's mode as the process knows it.
pub fn mode(shared: &mut dyn Cas) -> OrgMode {
    match shared.get(MODE) {
        Ok((Some(b), _)) => OrgMode::parse(&b),
        _ => OrgMode::Unknown,
    }
}

/// Decides one request of `token_id` at `now_ms` against the process's shared holding.
/// `reports`: whether this process reports usage (without reports no lease can come, so
/// a token it holds nothing for passes). A request that would ask for a lease while the
/// control plane is lost ([`lost`]) is decided on the local share instead
/// ([`decide_lost`]); the second member says so.
pub fn admit(
    shared: &mut dyn Cas,
    token_id: &str,
    now_ms: u64,
    reports: bool,
    fallback: &RateLimitSettings,
) -> (Verdict, bool) {
    let key = key(token_id);
    let mut edges: Option<Option<u64>> = None;
    for _ in 0..MAX_TRIES {
        let (mut holding, cas) = match shared.get(&key) {
            Ok((None, _)) => (None, CREATE_ONLY),
            Ok((Some(b), Some(cas))) => {
                match std::str::from_utf8(&b).ok().and_then(Holding::decode) {
                    Some(h) => (Some(h), cas),
                    None => return (Verdict::Unavailable(unavailable_reply()), false),
                }
            }
            Ok((Some(_), None)) | Err(_) => {
                return (Verdict::Unavailable(unavailable_reply()), false)
            }
        };
        let org = match (&holding, reports) {
            (Some(_), _) => OrgMode::Limited,
            (None, true) => mode(shared),
            (None, false) => OrgMode::Unlimited,
        };
        let mut step = decide(holding.as_mut(), org, now_ms);
        if step == Step::Ask {
            let lost_edges = *edges.get_or_insert_with(|| lost(shared, now_ms, fallback));
            match lost_edges {
                Some(n) => step = decide_lost(holding.as_mut(), now_ms, n),
                None => return (Verdict::Ask, false),
            }
        }
        let local = edges.is_some_and(|e| e.is_some());
        let verdict = match (step, holding) {
            (Step::Refused(r), Some(h @ Holding::Budget(_))) => {
                // The refusal's count is a demand hint: one try, lost if contended.
                let _ = shared.set(&key, h.encode().as_bytes(), cas);
                let Holding::Budget(budget) = &h else {
                    return (Verdict::Unavailable(unavailable_reply()), local);
                };
                Verdict::Refused(refusal_reply(budget, &r, now_ms))
            }
            (Step::Admitted, Some(h)) => match shared.set(&key, h.encode().as_bytes(), cas) {
                Ok(true) => Verdict::Admitted,
                Ok(false) => continue,
                Err(_) => Verdict::Unavailable(unavailable_reply()),
            },
            (Step::Ask, _) => Verdict::Ask,
            (Step::Pass, _) => Verdict::Pass,
            _ => Verdict::Unavailable(unavailable_reply()),
        };
        return (verdict, local);
    }
    (Verdict::Unavailable(unavailable_reply()), false)
}

/// The process's contact with the control plane, and its CAS ([`CREATE_ONLY`] when
/// missing).
pub fn contact(shared: &mut dyn Cas) -> (Contact, u32) {
    match shared.get(CONTACT) {
        Ok((Some(b), Some(cas))) => (Contact::decode(&b), cas),
        _ => (Contact::default(), CREATE_ONLY),
    }
}

/// `Some(edges)` to divide limits by when the control plane is lost at `now_ms`.
pub fn lost(shared: &mut dyn Cas, now_ms: u64, fallback: &RateLimitSettings) -> Option<u64> {
    let (c, _) = contact(shared);
    c.lost(now_ms, fallback.fallback_after_ms)
        .then(|| c.edges(fallback.fallback_edges))
}

/// Changes the process's contact by compare-and-swap (best effort).
pub fn touch(shared: &mut dyn Cas, change: &dyn Fn(&mut Contact)) {
    for _ in 0..MAX_TRIES {
        let (mut c, cas) = contact(shared);
        change(&mut c);
        if !matches!(shared.set(CONTACT, c.encode().as_bytes(), cas), Ok(false)) {
            return;
        }
    }
}

/// Changes the token's shared holding with `change` by compare-and-swap (creating it from
/// `None`, and adding the token to [`INDEX`]).
fn update(
    shared: &mut dyn Cas,
    token_id: &str,
    change: &dyn Fn(Option<Holding>) -> Holding,
) -> Result<(), String> {
    let key = key(token_id);
    for _ in 0..MAX_TRIES {
        let (holding, cas) = match shared.get(&key)? {
            (None, _) => (None, CREATE_ONLY),
            (Some(b), Some(cas)) => (std::str::from_utf8(&b).ok().and_then(Holding::decode), cas),
            (Some(_), None) => return Err("a holding without a CAS value".into()),
        };
        let created = cas == CREATE_ONLY;
        if shared.set(&key, change(holding).encode().as_bytes(), cas)? {
            if created {
                index_add(shared, token_id)?;
            }
            return Ok(());
        }
    }
    Err(format!("the budget of {token_id} stayed contended"))
}

/// Merges `lease` into the token's shared holding (creating it), by compare-and-swap.
pub fn grant(
    shared: &mut dyn Cas,
    token_id: &str,
    lease: Lease,
    now_ms: u64,
) -> Result<(), String> {
    update(shared, token_id, &|h| {
        let mut h = h.unwrap_or(Holding::Budget(Default::default()));
        h.grant(lease, now_ms);
        h
    })
}

/// Records the control plane's word that the token has no limit.
pub fn unlimited(shared: &mut dyn Cas, token_id: &str) -> Result<(), String> {
    update(shared, token_id, &|_| Holding::Unlimited)
}

/// The ids in [`INDEX`].
pub fn index(shared: &mut dyn Cas) -> Vec<String> {
    match shared.get(INDEX) {
        Ok((Some(b), _)) => String::from_utf8_lossy(&b)
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds `token_id` to [`INDEX`] (while it has room).
fn index_add(shared: &mut dyn Cas, token_id: &str) -> Result<(), String> {
    for _ in 0..MAX_TRIES {
        let (text, cas) = match shared.get(INDEX)? {
            (None, _) => (String::new(), CREATE_ONLY),
            (Some(b), Some(cas)) => (String::from_utf8_lossy(&b).into_owned(), cas),
            (Some(_), None) => return Err("the budget index has no CAS value".into()),
        };
        let ids: Vec<&str> = text.split(' ').filter(|s| !s.is_empty()).collect();
        if ids.contains(&token_id) || ids.len() >= MAX_REPORTED {
            return Ok(());
        }
        let next = if text.is_empty() {
            token_id.to_string()
        } else {
            format!("{text} {token_id}")
        };
        if shared.set(INDEX, next.as_bytes(), cas)? {
            return Ok(());
        }
    }
    Err("the budget index stayed contended".into())
}

/// The process's edge id: the one its first root context stored, else `candidate`
/// (stored now).
pub fn edge_id(shared: &mut dyn Cas, candidate: &str) -> String {
    for _ in 0..4 {
        match shared.get(EDGE) {
            Ok((Some(b), _)) if !b.is_empty() => return String::from_utf8_lossy(&b).into_owned(),
            Ok(_) => {
                let _ = shared.set(EDGE, candidate.as_bytes(), CREATE_ONLY);
            }
            Err(_) => break,
        }
    }
    candidate.to_string()
}

/// A shared number and the CAS to replace it with ([`CREATE_ONLY`] when missing);
/// `None` when unreadable.
fn number(shared: &mut dyn Cas, key: &str) -> Option<(Option<u64>, u32)> {
    match shared.get(key) {
        Ok((None, _)) => Some((None, CREATE_ONLY)),
        Ok((Some(b), Some(cas))) => Some((
            std::str::from_utf8(&b).ok().and_then(|t| t.parse().ok()),
            cas,
        )),
        _ => None,
    }
}

/// Whether this root context sends the process's periodic report now: the last turn
/// started `interval_ms` or more ago and this context took the turn (by CAS).
pub fn take_turn(shared: &mut dyn Cas, now_ms: u64, interval_ms: u64) -> bool {
    let Some((last, cas)) = number(shared, TURN) else {
        return false;
    };
    if last.is_some_and(|t| now_ms.saturating_sub(t) < interval_ms && t <= now_ms) {
        return false;
    }
    matches!(
        shared.set(TURN, now_ms.to_string().as_bytes(), cas),
        Ok(true)
    )
}

/// The version paused requests compare ([`VERSION`]).
pub fn version(shared: &mut dyn Cas) -> u64 {
    number(shared, VERSION).and_then(|(v, _)| v).unwrap_or(0)
}

/// Bumps [`VERSION`]: paused requests are decided again.
pub fn bump_version(shared: &mut dyn Cas) {
    for _ in 0..MAX_TRIES {
        let Some((v, cas)) = number(shared, VERSION) else {
            return;
        };
        let next = v.unwrap_or(0).wrapping_add(1);
        if matches!(
            shared.set(VERSION, next.to_string().as_bytes(), cas),
            Ok(true)
        ) {
            return;
        }
    }
}

/// The process's spend report: per token in [`INDEX`] held as a budget, what it admitted
/// and refused in the latest windows (a budget with nothing counted is named in
/// `wanted`, so the answer says whether it is still limited), and the tokens `asked`.
pub fn report(shared: &mut dyn Cas, edge: &str, asked: &[String]) -> SpendReport {
    let mut tokens = Vec::new();
    let mut wanted: Vec<String> = Vec::new();
    for id in index(shared) {
        let holding = match shared.get(&key(&id)) {
            Ok((Some(b), _)) => std::str::from_utf8(&b).ok().and_then(Holding::decode),
            _ => None,
        };
        if let Some(Holding::Budget(b)) = holding {
            let spend = b.spend(&id);
            if spend.is_empty() {
                wanted.push(id);
            } else if tokens.len() + spend.len() <= MAX_REPORTED {
                tokens.extend(spend);
            }
        }
    }
    for id in asked {
        if !wanted.contains(id) {
            wanted.push(id.clone());
        }
    }
    wanted.truncate(MAX_REPORTED);
    SpendReport {
        edge: edge.to_string(),
        tokens,
        wanted,
    }
}

/// What merging an answer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Leases merged.
    pub leases: u64,
    /// Tokens marked unlimited.
    pub unlimited: u64,
    /// Leases or marks that could not be written (contended or refused by the host).
    pub failed: u64,
}

/// Merges a usage answer into the process's shared holdings, stores the organization's
/// mode, and bumps [`VERSION`].
pub fn apply(shared: &mut dyn Cas, answer: &UsageAnswer, now_ms: u64) -> Applied {
    let mut applied = Applied::default();
    touch(shared, &|c| c.answered(now_ms, answer.edges));
    let mode = answer.org_mode();
    if mode != OrgMode::Unknown {
        let cas = match shared.get(MODE) {
            Ok((_, Some(cas))) => cas,
            _ => CREATE_ONLY,
        };
        let _ = shared.set(MODE, mode.as_str().as_bytes(), cas);
    }
    for g in &answer.leases {
        let ok = match g.lease() {
            Some(lease) => grant(shared, &g.token_id, lease, now_ms).is_ok(),
            None => false,
        };
        if ok {
            applied.leases += 1;
        } else {
            applied.failed += 1;
        }
    }
    for id in &answer.unlimited {
        if unlimited(shared, id).is_ok() {
            applied.unlimited += 1;
        } else {
            applied.failed += 1;
        }
    }
    bump_version(shared);
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tessera_core::ratelimit::{LeaseGrant, Window};

    const FB: RateLimitSettings = RateLimitSettings {
        fallback_after_ms: 1000,
        fallback_edges: None,
    };

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
    fn a_token_held_as_nothing_passes_only_where_no_token_is_limited() {
        let mut s = Shared::default();
        // No reports: no lease can come, nothing is limited.
        assert_eq!(admit(&mut s, "tok_a", 5, false, &FB).0, Verdict::Pass);
        // Reports, but no answer yet, or an org that limits tokens: ask first.
        assert_eq!(admit(&mut s, "tok_a", 5, true, &FB).0, Verdict::Ask);
        s.set(MODE, b"L", CREATE_ONLY).unwrap();
        assert_eq!(admit(&mut s, "tok_a", 5, true, &FB).0, Verdict::Ask);
        let cas = s.get(MODE).unwrap().1.unwrap();
        s.set(MODE, b"U", cas).unwrap();
        assert_eq!(admit(&mut s, "tok_a", 5, true, &FB).0, Verdict::Pass);
        // The control plane's word that a token is unlimited.
        unlimited(&mut s, "tok_b").unwrap();
        let cas = s.get(MODE).unwrap().1.unwrap();
        s.set(MODE, b"L", cas).unwrap();
        assert_eq!(admit(&mut s, "tok_b", 5, true, &FB).0, Verdict::Pass);
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
            if admit(&mut w, "tok_a", 10, true, &FB).0 == Verdict::Admitted {
                admitted += 1;
            }
        }
        for _ in 0..10 {
            if admit(&mut s, "tok_a", 20, true, &FB).0 == Verdict::Admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        let Verdict::Refused(reply) = admit(&mut s, "tok_a", 30, true, &FB).0 else {
            panic!("admitted past the budget");
        };
        assert_eq!(reply.status, 429);
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| *k == "retry-after" && v == "1"));
        // The next second has its own allowance.
        assert_eq!(
            admit(&mut s, "tok_a", 1_000, true, &FB).0,
            Verdict::Admitted
        );
    }

    #[test]
    fn leases_merge_into_the_shared_budget_and_garbage_fails_closed() {
        let mut s = Shared::default();
        grant(&mut s, "tok_b", lease(1), 0).unwrap();
        grant(&mut s, "tok_b", lease(2), 0).unwrap();
        assert_eq!(admit(&mut s, "tok_b", 0, true, &FB).0, Verdict::Admitted);
        assert_eq!(admit(&mut s, "tok_b", 0, true, &FB).0, Verdict::Admitted);
        assert!(matches!(
            admit(&mut s, "tok_b", 0, true, &FB).0,
            Verdict::Refused(_)
        ));
        s.map.insert(key("tok_c"), (b"garbage".to_vec(), 99));
        let Verdict::Unavailable(reply) = admit(&mut s, "tok_c", 0, true, &FB).0 else {
            panic!("an unreadable budget must refuse");
        };
        assert_eq!(reply.reason, tessera_core::Reason::RateLimited);
    }

    #[test]
    fn the_report_names_spend_and_asks_and_the_answer_merges() {
        let mut s = Shared::default();
        let edge = edge_id(&mut s, "envoy-a");
        // A second root context of the process adopts the first one's id.
        assert_eq!(edge_id(&mut s, "envoy-b"), edge);
        let answer = UsageAnswer {
            leases: vec![LeaseGrant {
                token_id: "tok_a".into(),
                window: "per_second".into(),
                first: 0,
                last: 9,
                per_window: 1,
                limit: 3,
            }],
            unlimited: vec!["tok_u".into()],
            limited: Some(true),
            edges: Some(2),
        };
        assert_eq!(version(&mut s), 0);
        let applied = apply(&mut s, &answer, 0);
        assert_eq!(
            (applied.leases, applied.unlimited, applied.failed),
            (1, 1, 0)
        );
        assert_eq!(version(&mut s), 1);
        assert_eq!(mode(&mut s), OrgMode::Limited);
        assert_eq!(index(&mut s), vec!["tok_a".to_string(), "tok_u".into()]);
        // Nothing spent yet: the budget is named so the answer says it still is limited.
        let r = report(&mut s, &edge, &["tok_new".into()]);
        assert_eq!(r.edge, "envoy-a");
        assert!(r.tokens.is_empty());
        assert_eq!(r.wanted, vec!["tok_a".to_string(), "tok_new".into()]);
        assert_eq!(admit(&mut s, "tok_a", 10, true, &FB).0, Verdict::Admitted);
        assert!(matches!(
            admit(&mut s, "tok_a", 20, true, &FB).0,
            Verdict::Refused(_)
        ));
        let r = report(&mut s, &edge, &[]);
        let t: Vec<(&str, u64, u64, u64)> = r
            .tokens
            .iter()
            .map(|t| (t.window.as_str(), t.index, t.admitted, t.refused))
            .collect();
        assert_eq!(t, vec![("per_second", 0, 1, 1)]);
        assert!(r.wanted.is_empty());
    }

    #[test]
    fn one_root_context_takes_the_turn_per_interval() {
        let mut s = Shared::default();
        assert!(take_turn(&mut s, 1_000, 200));
        assert!(!take_turn(&mut s, 1_100, 200));
        assert!(take_turn(&mut s, 1_200, 200));
        // A turn stamped in the future (a clock stepped back) does not stall reports.
        s.map.insert(TURN.into(), (b"9999999".to_vec(), 77));
        assert!(take_turn(&mut s, 1_300, 200));
    }

    #[test]
    fn a_lost_control_plane_turns_asks_into_the_local_share() {
        let mut s = Shared::default();
        let minute = 60_000;
        let answer = UsageAnswer {
            leases: vec![LeaseGrant {
                token_id: "tok_a".into(),
                window: "per_minute".into(),
                first: 1,
                last: 1,
                per_window: 2,
                limit: 12,
            }],
            unlimited: vec![],
            limited: Some(true),
            edges: Some(3),
        };
        touch(&mut s, &|c| c.sent(minute));
        apply(&mut s, &answer, minute);
        assert_eq!(contact(&mut s).0.edges, 3);
        assert_eq!(
            admit(&mut s, "tok_a", minute, true, &FB),
            (Verdict::Admitted, false)
        );
        // The next minute has no lease: a report is sent and goes unanswered.
        let next = 2 * minute;
        touch(&mut s, &|c| c.sent(next));
        assert_eq!(
            admit(&mut s, "tok_a", next, true, &FB),
            (Verdict::Ask, false)
        );
        // Nothing heard for a minute, but the report only just left.
        assert_eq!(lost(&mut s, next + 199, &FB), None);
        // Lost once it had time to be answered: 12 ÷ 3 edges, then refused; an unknown
        // token passes.
        let at = next + 1_000;
        assert_eq!(lost(&mut s, at, &FB), Some(3));
        for _ in 0..4 {
            assert_eq!(
                admit(&mut s, "tok_a", at, true, &FB),
                (Verdict::Admitted, true)
            );
        }
        assert!(matches!(
            admit(&mut s, "tok_a", at, true, &FB),
            (Verdict::Refused(_), true)
        ));
        assert_eq!(
            admit(&mut s, "tok_new", at, true, &FB),
            (Verdict::Pass, true)
        );
        // The configured count wins over the control plane's.
        let two = RateLimitSettings {
            fallback_edges: Some(2),
            ..FB
        };
        assert_eq!(lost(&mut s, at, &two), Some(2));
        assert_eq!(
            admit(&mut s, "tok_a", at, true, &two),
            (Verdict::Admitted, true)
        );
        // Answered again: the lease rules, the share no more.
        let again = UsageAnswer {
            leases: vec![LeaseGrant {
                token_id: "tok_a".into(),
                window: "per_minute".into(),
                first: 2,
                last: 3,
                per_window: 1,
                limit: 12,
            }],
            edges: None,
            ..answer
        };
        apply(&mut s, &again, at + 10);
        assert_eq!(lost(&mut s, at + 10, &FB), None);
        assert!(matches!(
            admit(&mut s, "tok_a", at + 10, true, &FB),
            (Verdict::Refused(_), false)
        ));
        assert_eq!(
            admit(&mut s, "tok_a", 3 * minute, true, &FB),
            (Verdict::Admitted, false)
        );
    }
}
