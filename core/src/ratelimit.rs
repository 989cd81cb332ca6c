//! Per-token rate limits and quotas at the edge (issue 25): the admission decision for a
//! token given the budget the edge holds. Pure: no I/O, the time is an argument.
//!
//! **The model: a bucket per window, filled only by leases.** The control plane grants an
//! edge, per limited token and per limited window kind ([`Window`]: second, minute, hour,
//! UTC day, UTC month, total), a [`Lease`]: "in each window with index `first..=last`
//! you may admit `per_window` requests". Windows are aligned to the Unix epoch (and UTC
//! months), so every edge and the control plane name the same windows. The edge admits a
//! request when, for every window kind the token is limited on, the current window has a
//! lease and fewer than its `per_window` admissions were made in it; it then counts one
//! in each. Nothing refills with time: a new window's allowance comes only from a lease.
//! So an edge never admits more in a window than its lease, and when the control plane
//! never hands out more than the limit for a window in total, the fleet never admits more
//! than the limit in that window — by construction, with no call per request.
//!
//! Why not GCRA: GCRA (or a time-refilled token bucket) refills from the local clock, so
//! each edge would need a *rate* share, and a share of a rate bounds a sliding interval
//! only up to the burst tolerance: with a burst equal to the share, an interval of one
//! window can see twice the share. Re-apportioning a rate across edges changes it while
//! the old one may still be spent. A count per named window composes exactly: the sum of
//! the leases for window `i` bounds what the fleet admits in window `i`.
//!
//! **Allowances only grow.** [`Budget::grant`] keeps, for a window index it already holds
//! an allowance for, the larger of the held and the new one: the control plane tops a
//! window up only from what no edge holds (a quota's day, a burst of demand) and never
//! takes back what an edge may already have spent, so a lease re-sent, late, or sent by
//! another replica can never make the fleet's allowances for a window sum past the limit.
//!
//! Within an Envoy process several worker VMs share one [`Budget`] through shared data:
//! [`Budget::encode`] / [`Budget::decode`] give its compact text, and the filter updates it
//! with compare-and-swap, so N workers never admit more than the process holds.

use std::fmt::Write as _;

use crate::decision::Reason;
use crate::plan::Reply;

/// A window kind: the period a limit counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    Second,
    Minute,
    Hour,
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
    /// The token's whole life: one window, index 0.
    Total,
}

const DAY_MS: u64 = 86_400_000;

impl Window {
    /// Every kind, shortest first.
    pub const ALL: [Window; 6] = [
        Window::Second,
        Window::Minute,
        Window::Hour,
        Window::Day,
        Window::Month,
        Window::Total,
    ];

    /// The name used on the wire and in the `RateLimit-Policy` header (the control
    /// plane's field names).
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Second => "per_second",
            Window::Minute => "per_minute",
            Window::Hour => "per_hour",
            Window::Day => "per_day",
            Window::Month => "per_month",
            Window::Total => "total",
        }
    }

    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == s)
    }

    fn fixed_ms(self) -> Option<u64> {
        match self {
            Window::Second => Some(1000),
            Window::Minute => Some(60_000),
            Window::Hour => Some(3_600_000),
            Window::Day => Some(DAY_MS),
            Window::Month | Window::Total => None,
        }
    }

    /// The index of the window holding `now_ms` (Unix milliseconds).
    pub fn index(self, now_ms: u64) -> u64 {
        match self {
            Window::Month => {
                let (y, m, _) = civil_from_days(now_ms / DAY_MS);
                (y - 1970) * 12 + (m - 1)
            }
            Window::Total => 0,
            w => now_ms / w.fixed_ms().unwrap_or(1),
        }
    }

    /// When window `index` starts, Unix milliseconds.
    pub fn start_ms(self, index: u64) -> u64 {
        match self {
            Window::Month => days_from_civil(1970 + index / 12, index % 12 + 1) * DAY_MS,
            Window::Total => 0,
            w => index.saturating_mul(w.fixed_ms().unwrap_or(1)),
        }
    }

    /// When window `index` ends (the next one starts); `None` for [`Window::Total`].
    pub fn end_ms(self, index: u64) -> Option<u64> {
        match self {
            Window::Total => None,
            w => Some(w.start_ms(index.saturating_add(1))),
        }
    }

    /// The window's length in seconds as the `RateLimit-Policy` header's `w` says it
    /// (a month counts 30 days; `None` for the total).
    pub fn policy_seconds(self) -> Option<u64> {
        match self {
            Window::Month => Some(30 * 86_400),
            Window::Total => None,
            w => w.fixed_ms().map(|ms| ms / 1000),
        }
    }
}

/// Sorts a short list in place (`after(a, b)`: `a` goes after `b`). A budget holds a few
/// dozen leases at most, and the standard library's sorts cost the filter module several
/// kilobytes per element type.
fn insertion_sort<T: Copy>(v: &mut [T], after: impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && after(&v[j - 1], &v[j]) {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Leases by window kind, then first window.
fn sort_leases(leases: &mut [Lease]) {
    insertion_sort(leases, |a, b| (a.window, a.first) > (b.window, b.first));
}

/// Year, month (1–12), day (1–31) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of the first day of month `m` (1–12) of year `y` (≥ 1970).
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An allowance the control plane granted an edge for one token and window kind: at
/// most `per_window` admissions in each window with index `first..=last`. `limit` is the
/// token's whole limit for the window (for the headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub window: Window,
    pub first: u64,
    pub last: u64,
    pub per_window: u64,
    pub limit: u64,
}

/// Why a request was refused, with what the `429` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The window kind whose allowance is spent (the shortest one, when several are).
    pub window: Window,
    /// The token's limit for that window.
    pub limit: u64,
    /// Seconds until the window ends (at least 1), or until the lease would cover a window
    /// again; `None` when no window end will help (a spent total quota).
    pub retry_after: Option<u64>,
}

/// The outcome of [`Budget::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted: forward it.
    Admit,
    /// Refuse with 429 `rate_limited`.
    Refuse(Refusal),
}

/// Admissions and refusals counted in one window of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Count {
    window: Window,
    index: u64,
    admitted: u64,
    refused: u64,
}

/// What one token's budget holds at one edge: the allowances leased per window kind and
/// what was admitted and refused in each kind's latest window and the one before it
/// (what the edge reports as its spend and demand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Non-overlapping per kind, sorted by (window, first).
    leases: Vec<Lease>,
    /// Per kind at most two: the latest window counted in, and the one counted before it.
    counts: Vec<Count>,
    /// Per kind, the limit its latest lease named: kept after the leases ran out, so the
    /// fallback ([`decide_lost`]) knows what to share.
    known: Vec<(Window, u64)>,
}

/// The most leases one budget keeps (a few per kind); older ranges go first.
const MAX_LEASES: usize = 24;

impl Budget {
    pub fn new() -> Budget {
        Budget::default()
    }

    /// Whether the token is limited at all here.
    pub fn is_limited(&self) -> bool {
        !self.leases.is_empty()
    }

    /// Whether every limited kind has a lease covering the window a request at `now_ms`
    /// counts in (an allowance of 0 covers too). Otherwise the edge holds no lease for
    /// now — its leases ran out while no answer came — and asks before admitting.
    pub fn covers(&self, now_ms: u64) -> bool {
        self.kinds()
            .all(|w| self.allowance(w, self.current(w, now_ms)).is_some())
    }

    /// The leases held, by window kind then range.
    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// Admissions made in window `index` of kind `window` (the latest two windows counted
    /// in are kept).
    pub fn spent(&self, window: Window, index: u64) -> u64 {
        self.count(window, index).map_or(0, |c| c.admitted)
    }

    /// Refusals counted in window `index` of kind `window`.
    pub fn refused(&self, window: Window, index: u64) -> u64 {
        self.count(window, index).map_or(0, |c| c.refused)
    }

    fn count(&self, window: Window, index: u64) -> Option<&Count> {
        self.counts
            .iter()
            .find(|c| c.window == window && c.index == index)
    }

    /// The count of window `index` of kind `w`, made the latest (the one before it stays
    /// as the previous; older ones go). `index` is never before the latest
    /// ([`Budget::current`]).
    fn count_mut(&mut self, w: Window, index: u64) -> &mut Count {
        let latest = self
            .counts
            .iter()
            .filter(|c| c.window == w)
            .map(|c| c.index)
            .max();
        if latest != Some(index) {
            if let Some(latest) = latest {
                self.counts.retain(|c| c.window != w || c.index == latest);
            }
            self.counts.push(Count {
                window: w,
                index,
                admitted: 0,
                refused: 0,
            });
        }
        let at = self
            .counts
            .iter()
            .position(|c| c.window == w && c.index == index)
            .unwrap_or(self.counts.len() - 1);
        &mut self.counts[at]
    }

    /// What this edge reports of the token (`SpendReport`): per kind, what it admitted and
    /// refused in the latest window counted in and the one before it.
    pub fn spend(&self, token_id: &str) -> Vec<TokenSpend> {
        self.counts
            .iter()
            .filter(|c| c.admitted > 0 || c.refused > 0)
            .map(|c| TokenSpend {
                token_id: token_id.to_string(),
                window: c.window.as_str().to_string(),
                index: c.index,
                admitted: c.admitted,
                refused: c.refused,
            })
            .collect()
    }

    /// Takes a lease. Allowances only grow: for a window index it already holds an
    /// allowance for, it keeps the larger of the two (the control plane tops a window up
    /// only from what no other edge holds, and never takes back what an edge may already
    /// have spent). Windows before `now_ms`'s are dropped. A lease with `first > last` is
    /// ignored.
    pub fn grant(&mut self, lease: Lease, now_ms: u64) {
        self.known.retain(|(w, _)| *w != lease.window);
        self.known.push((lease.window, lease.limit));
        self.forget_past(now_ms);
        // Windows already over are of no use.
        let lease = Lease {
            first: lease.first.max(lease.window.index(now_ms)),
            ..lease
        };
        if lease.first > lease.last {
            return;
        }
        let (mut same, others): (Vec<Lease>, Vec<Lease>) = self
            .leases
            .drain(..)
            .partition(|l| l.window == lease.window);
        self.leases = others;
        // Elementary segments between every range boundary of the kind.
        let mut cuts: Vec<u64> = Vec::with_capacity(2 * same.len() + 2);
        for l in same.iter().chain(std::iter::once(&lease)) {
            cuts.push(l.first);
            cuts.push(l.last.saturating_add(1));
        }
        insertion_sort(&mut cuts, |a, b| a > b);
        cuts.dedup();
        let value = |i: u64, held: &[Lease]| -> Option<u64> {
            let h = held
                .iter()
                .find(|l| l.first <= i && i <= l.last)
                .map(|l| l.per_window);
            let n = (lease.first <= i && i <= lease.last).then_some(lease.per_window);
            h.max(n)
        };
        let mut merged: Vec<Lease> = Vec::new();
        for pair in cuts.windows(2) {
            let (a, b) = (pair[0], pair[1] - 1);
            let Some(v) = value(a, &same) else { continue };
            match merged.last_mut() {
                Some(m) if m.last.saturating_add(1) == a && m.per_window == v => m.last = b,
                _ => merged.push(Lease {
                    first: a,
                    last: b,
                    per_window: v,
                    ..lease
                }),
            }
        }
        same.clear();
        self.leases.extend(merged);
        sort_leases(&mut self.leases);
        while self.leases.len() > MAX_LEASES {
            // Keep the nearest ranges: drop the one starting latest.
            let far = self
                .leases
                .iter()
                .enumerate()
                .max_by_key(|(_, l)| l.first)
                .map(|(i, _)| i);
            if let Some(i) = far {
                self.leases.remove(i);
            }
        }
    }

    fn forget_past(&mut self, now_ms: u64) {
        self.leases.retain(|l| l.last >= l.window.index(now_ms));
    }

    /// The allowance for `window` at index `index`, if a lease covers it.
    fn allowance(&self, window: Window, index: u64) -> Option<&Lease> {
        self.leases
            .iter()
            .find(|l| l.window == window && l.first <= index && index <= l.last)
    }

    /// The limited window kinds, shortest first, once each.
    fn kinds(&self) -> impl Iterator<Item = Window> + '_ {
        Window::ALL
            .into_iter()
            .filter(|w| self.leases.iter().any(|l| l.window == *w))
    }

    /// The window of kind `w` a request at `now_ms` counts in: the clock's, or a later
    /// one already counted in (time never goes back within a budget, so worker VMs that
    /// read the clock in one order and update the shared budget in another cannot reopen
    /// a window that has ended).
    fn current(&self, w: Window, now_ms: u64) -> u64 {
        let seen = self
            .counts
            .iter()
            .filter(|c| c.window == w)
            .map(|c| c.index)
            .max()
            .unwrap_or(0);
        w.index(now_ms).max(seen)
    }

    /// Decides one request at `now_ms`: admitted (and counted in every limited kind's
    /// current window) only when every limited kind has an allowance left now. A refusal
    /// admits nothing and is counted as a refusal in every limited kind's current window
    /// (the demand the edge reports). A budget without leases limits nothing and always
    /// admits (the adapters ask for a lease first: [`decide`]).
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        self.admit_on(now_ms, None)
    }

    /// The limit of kind `w` as last leased.
    fn limit_of(&self, w: Window) -> u64 {
        self.known
            .iter()
            .find(|(k, _)| *k == w)
            .map(|(_, l)| *l)
            .or_else(|| self.leases.iter().find(|l| l.window == w).map(|l| l.limit))
            .unwrap_or(0)
    }

    /// Whether a limit of any kind was ever leased here (what the fallback can share).
    pub fn knows_limits(&self) -> bool {
        !self.known.is_empty() || self.is_limited()
    }

    /// The limited kinds: with `share_of` (the fallback), every kind a limit is known of.
    fn kinds_on(&self, share_of: Option<u64>) -> Vec<Window> {
        match share_of {
            None => self.kinds().collect(),
            Some(_) => Window::ALL
                .into_iter()
                .filter(|w| {
                    self.known.iter().any(|(k, _)| k == w)
                        || self.leases.iter().any(|l| l.window == *w)
                })
                .collect(),
        }
    }

    /// [`Budget::admit`], or with `share_of` = `Some(edges)` the fallback's rule: a window
    /// no lease covers allows `limit ÷ edges` ([`fallback_share`]) instead of nothing.
    pub fn admit_on(&mut self, now_ms: u64, share_of: Option<u64>) -> Admission {
        let kinds = self.kinds_on(share_of);
        let mut refusal: Option<Refusal> = None;
        for &w in &kinds {
            let i = self.current(w, now_ms);
            let limit = self.limit_of(w);
            let allowance = match (self.allowance(w, i), share_of) {
                (Some(l), _) => Some(l.per_window),
                (None, Some(edges)) => Some(fallback_share(limit, edges)),
                (None, None) => None,
            };
            if allowance.is_none_or(|a| self.spent(w, i) >= a) && refusal.is_none() {
                refusal = Some(Refusal {
                    window: w,
                    limit,
                    retry_after: self.retry_after(w, i, now_ms, share_of.is_some()),
                });
            }
        }
        for w in kinds {
            let i = self.current(w, now_ms);
            let c = self.count_mut(w, i);
            if refusal.is_some() {
                c.refused = c.refused.saturating_add(1);
            } else {
                c.admitted = c.admitted.saturating_add(1);
            }
        }
        match refusal {
            Some(r) => Admission::Refuse(r),
            None => Admission::Admit,
        }
    }

    /// Seconds (at least 1) to wait: until the window ends when its allowance is spent,
    /// one second when no lease covers the window yet (one is on its way); `None` for a
    /// spent total.
    fn retry_after(&self, w: Window, index: u64, now_ms: u64, shared: bool) -> Option<u64> {
        let end = w.end_ms(index)?;
        let wait_ms = if shared || self.allowance(w, index).is_some() {
            end.saturating_sub(now_ms)
        } else {
            1000
        };
        Some(wait_ms.div_ceil(1000).max(1))
    }

    /// What the headers of an answer at `now_ms` say: per limited kind, (kind, limit,
    /// remaining in this window at this edge, seconds until the window ends).
    pub fn status(&self, now_ms: u64) -> Vec<(Window, u64, u64, Option<u64>)> {
        self.kinds_on(Some(1))
            .into_iter()
            .map(|w| {
                let i = w.index(now_ms);
                let (left, limit) = match self.allowance(w, i) {
                    Some(l) => (l.per_window.saturating_sub(self.spent(w, i)), l.limit),
                    None => (0, self.limit_of(w)),
                };
                let reset = w.end_ms(i).map(|e| e.saturating_sub(now_ms).div_ceil(1000));
                (w, limit, left, reset)
            })
            .collect()
    }

    /// The compact text kept in shared data: `b1` then `;L,<kind>,<first>,<last>,<n>,<limit>`
    /// per lease, `;C,<kind>,<index>,<admitted>,<refused>` per count and `;K,<kind>,<limit>`
    /// per limit known.
    pub fn encode(&self) -> String {
        let mut s = String::from("b1");
        for l in &self.leases {
            let _ = write!(
                s,
                ";L,{},{},{},{},{}",
                l.window.as_str(),
                l.first,
                l.last,
                l.per_window,
                l.limit
            );
        }
        for c in &self.counts {
            let _ = write!(
                s,
                ";C,{},{},{},{}",
                c.window.as_str(),
                c.index,
                c.admitted,
                c.refused
            );
        }
        for (w, limit) in &self.known {
            let _ = write!(s, ";K,{},{limit}", w.as_str());
        }
        s
    }

    /// Reads [`Budget::encode`]'s text; `None` for anything else (never panics).
    pub fn decode(text: &str) -> Option<Budget> {
        let mut parts = text.split(';');
        if parts.next()? != "b1" {
            return None;
        }
        let mut b = Budget::default();
        for p in parts {
            let f: Vec<&str> = p.split(',').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            match (f.first().copied(), f.get(1).and_then(|w| Window::parse(w))) {
                (Some("L"), Some(window)) if f.len() == 6 => b.leases.push(Lease {
                    window,
                    first: num(2)?,
                    last: num(3)?,
                    per_window: num(4)?,
                    limit: num(5)?,
                }),
                (Some("C"), Some(window)) if f.len() == 5 => b.counts.push(Count {
                    window,
                    index: num(2)?,
                    admitted: num(3)?,
                    refused: num(4)?,
                }),
                (Some("K"), Some(window)) if f.len() == 3 => b.known.push((window, num(2)?)),
                _ => return None,
            }
        }
        if b.leases.len() > MAX_LEASES
            || b.counts.len() > 2 * Window::ALL.len()
            || b.known.len() > Window::ALL.len()
        {
            return None;
        }
        sort_leases(&mut b.leases);
        Some(b)
    }
}

/// The `429` for a refusal: `Retry-After` (RFC 9110 §10.2.3, delay-seconds), and the
/// `RateLimit-Policy` and `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-09
/// (Structured Field lists; one item per limited window, named as the window):
///
/// ```text
/// RateLimit-Policy: "per_second";q=10;w=1, "per_day";q=10000;w=86400
/// RateLimit: "per_second";r=0;t=1, "per_day";r=9412;t=51000
/// ```
///
/// `q` is the token's limit (the whole fleet's), `r` what this edge has left of its lease
/// in the current window, `t` the seconds until that window ends. The total quota has no
/// `w` and no `t`. The body is `{"error":"temporarily_unavailable","reason":"rate_limited"}`.
pub fn refusal_reply(budget: &Budget, refusal: &Refusal, now_ms: u64) -> Reply {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
    ];
    if let Some(s) = refusal.retry_after {
        headers.push(("retry-after", s.to_string()));
    }
    let (policy, state) = rate_limit_fields(budget, now_ms);
    headers.push(("ratelimit-policy", policy));
    headers.push(("ratelimit", state));
    let reason = Reason::RateLimited;
    Reply {
        status: reason.http_status(),
        headers,
        body: crate::decision::Deny::new(reason, "", &[]).body(),
        reason,
    }
}

/// The `RateLimit-Policy` and `RateLimit` values for `budget` at `now_ms` (see
/// [`refusal_reply`]).
pub fn rate_limit_fields(budget: &Budget, now_ms: u64) -> (String, String) {
    let mut policy = String::new();
    let mut state = String::new();
    for (w, limit, left, reset) in budget.status(now_ms) {
        if !policy.is_empty() {
            policy.push_str(", ");
            state.push_str(", ");
        }
        let _ = write!(policy, "\"{}\";q={limit}", w.as_str());
        if let Some(secs) = w.policy_seconds() {
            let _ = write!(policy, ";w={secs}");
        }
        let _ = write!(state, "\"{}\";r={left}", w.as_str());
        if let Some(t) = reset {
            let _ = write!(state, ";t={t}");
        }
    }
    (policy, state)
}

/// What an edge holds of one token: the control plane's word that it has no limit, or a
/// budget. Holding nothing (no entry) means the edge has not heard of the token yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holding {
    /// The control plane answered that the token has no limit (its own or its org's).
    Unlimited,
    /// Leases and counts.
    Budget(Budget),
}

impl Holding {
    /// The shared-data text: `u1` for [`Holding::Unlimited`], else [`Budget::encode`].
    pub fn encode(&self) -> String {
        match self {
            Holding::Unlimited => "u1".to_string(),
            Holding::Budget(b) => b.encode(),
        }
    }

    /// Reads [`Holding::encode`]'s text; `None` for anything else (never panics).
    pub fn decode(text: &str) -> Option<Holding> {
        if text == "u1" {
            return Some(Holding::Unlimited);
        }
        Budget::decode(text).map(Holding::Budget)
    }

    /// Takes a lease ([`Budget::grant`]); a token held as unlimited becomes limited.
    pub fn grant(&mut self, lease: Lease, now_ms: u64) {
        if let Holding::Unlimited = self {
            *self = Holding::Budget(Budget::new());
        }
        if let Holding::Budget(b) = self {
            b.grant(lease, now_ms);
        }
    }
}

/// What an edge knows of its organization's limits, from the last usage answer that
/// carried it (`limited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrgMode {
    /// No answer yet: the edge has not reached the control plane since it started.
    Unknown,
    /// No token of the organization is limited: a token the edge holds nothing for is
    /// admitted without asking.
    Unlimited,
    /// Some or every token is limited: a token the edge holds nothing for waits for its
    /// lease (or the control plane's word that it is unlimited) before it is admitted.
    Limited,
}

impl OrgMode {
    /// The text kept in shared data (`L`, `U`; nothing for unknown).
    pub fn as_str(self) -> &'static str {
        match self {
            OrgMode::Unknown => "",
            OrgMode::Unlimited => "U",
            OrgMode::Limited => "L",
        }
    }

    /// Reads [`OrgMode::as_str`]; anything else is [`OrgMode::Unknown`].
    pub fn parse(text: &[u8]) -> OrgMode {
        match text {
            b"U" => OrgMode::Unlimited,
            b"L" => OrgMode::Limited,
            _ => OrgMode::Unknown,
        }
    }
}

/// What an edge does with one request of an allowed token ([`decide`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not limited: forward, nothing to count.
    Pass,
    /// Counted in the budget: forward (the budget changed; write it back).
    Admitted,
    /// Spent: answer [`refusal_reply`] (the refusal was counted in the budget; writing it
    /// back is only a demand hint).
    Refused(Refusal),
    /// The edge holds no lease of the token and its organization limits tokens (or the
    /// edge does not know yet): ask the control plane at once and decide again when the
    /// answer is in; when it cannot wait longer, [`unleased`] decides.
    Ask,
}

/// The admission decision for a token given what the edge holds of it (`None`: nothing)
/// and what it knows of the organization. Never admits a limited token without a lease,
/// so the fleet's admissions stay within the leases the control plane counted; never
/// waits for a token of an organization without limits.
pub fn decide(holding: Option<&mut Holding>, org: OrgMode, now_ms: u64) -> Step {
    if needs_lease(holding.as_deref(), org, now_ms) {
        return Step::Ask;
    }
    match holding {
        Some(Holding::Budget(b)) => match b.admit(now_ms) {
            Admission::Admit => Step::Admitted,
            Admission::Refuse(r) => Step::Refused(r),
        },
        _ => Step::Pass,
    }
}

/// Whether [`decide`] would ask for a lease (without deciding anything): the edge holds
/// nothing for the token and the org may limit it, or holds a budget without a lease for
/// now.
pub fn needs_lease(holding: Option<&Holding>, org: OrgMode, now_ms: u64) -> bool {
    match holding {
        None => org != OrgMode::Unlimited,
        Some(Holding::Unlimited) => false,
        Some(Holding::Budget(b)) => !b.is_limited() || !b.covers(now_ms),
    }
}

/// The fallback's share of `limit` at one edge: `limit ÷ edges`, rounded down (so the
/// edges' shares never sum past the limit).
pub fn fallback_share(limit: u64, edges: u64) -> u64 {
    limit / edges.max(1)
}

/// The decision while the control plane is lost ([`Contact::lost`]), for a request
/// [`decide`] would have paused to ask for a lease: no lease can come, so the edge
/// decides alone. A budget admits within its leases where they still cover the window,
/// and within [`fallback_share`] of the limit its leases named (`edges`: the edges
/// sharing it) where they do not; a token the edge knows no limit of (it held nothing
/// for it, or only the word that it is unlimited) passes — the edge cannot know its
/// limit, as before its first answer ([`unleased`]).
pub fn decide_lost(holding: Option<&mut Holding>, now_ms: u64, edges: u64) -> Step {
    match holding {
        Some(Holding::Budget(b)) if b.knows_limits() => match b.admit_on(now_ms, Some(edges)) {
            Admission::Admit => Step::Admitted,
            Admission::Refuse(r) => Step::Refused(r),
        },
        _ => Step::Pass,
    }
}

/// What an edge knows of its contact with the control plane, for the fallback: when a
/// report was last answered, when the first report since then left (unanswered, or
/// failed), and how many edges the control plane said share the limits. The filter keeps
/// it in shared data ([`Contact::encode`]), the worker per isolate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    /// Unix ms of the last answer; 0: never answered.
    pub heard: u64,
    /// Unix ms the first report since the last answer was sent; 0: none waits.
    pub unanswered: u64,
    /// The edges sharing the organization's limits, from the last answer that said; 0:
    /// never said.
    pub edges: u64,
}

/// How long a report may wait for its answer before the fallback starts, at most: an
/// answer on a working control plane takes milliseconds, so the fallback never starts
/// merely because a report is in flight when `fallback_after_ms` has passed.
pub const ANSWER_GRACE_MS: u64 = 200;

impl Contact {
    /// A report is sent at `now_ms`.
    pub fn sent(&mut self, now_ms: u64) {
        if self.unanswered == 0 {
            self.unanswered = now_ms.max(1);
        }
    }

    /// A report was answered at `now_ms` (`edges`: the count the answer said, if any).
    pub fn answered(&mut self, now_ms: u64, edges: Option<u64>) {
        self.heard = now_ms.max(1);
        self.unanswered = 0;
        if let Some(e) = edges.filter(|e| *e > 0) {
            self.edges = e;
        }
    }

    /// Whether the control plane is lost at `now_ms`: it answered before (an edge that
    /// never reached it knows no limit), nothing was heard for `after_ms`, and a report
    /// has been waiting for its answer (or failed) for [`ANSWER_GRACE_MS`] or `after_ms`,
    /// whichever is shorter.
    pub fn lost(&self, now_ms: u64, after_ms: u64) -> bool {
        self.heard != 0
            && self.unanswered != 0
            && now_ms.saturating_sub(self.heard) >= after_ms
            && now_ms.saturating_sub(self.unanswered) >= after_ms.min(ANSWER_GRACE_MS)
    }

    /// The edges a limit is divided by in the fallback: `configured`, else the control
    /// plane's last count, else 1.
    pub fn edges(&self, configured: Option<u64>) -> u64 {
        configured.unwrap_or(self.edges).max(1)
    }

    /// The shared-data text: `<heard>,<unanswered>,<edges>`.
    pub fn encode(&self) -> String {
        format!("{},{},{}", self.heard, self.unanswered, self.edges)
    }

    /// Reads [`Contact::encode`]'s text; anything else is the default (never heard).
    pub fn decode(text: &[u8]) -> Contact {
        let text = std::str::from_utf8(text).unwrap_or("");
        let n: Vec<u64> = text.split(',').filter_map(|v| v.parse().ok()).collect();
        match n[..] {
            [heard, unanswered, edges] => Contact {
                heard,
                unanswered,
                edges,
            },
            _ => Contact::default(),
        }
    }
}

/// The final word on a request still without a lease when it cannot wait longer
/// ([`Step::Ask`] after the wait): `None` admits — only when the edge has never reached
/// the control plane (it knows of no limit, and no lease could exist) — otherwise the 429
/// to answer, `Retry-After: 1`, without `RateLimit` fields (no lease to describe).
pub fn unleased(org: OrgMode) -> Option<Reply> {
    if org == OrgMode::Unknown {
        return None;
    }
    Some(unavailable_reply())
}

/// The 429 `rate_limited` with `Retry-After: 1` and no `RateLimit` fields: no lease yet,
/// or the edge could not read or update the budget.
pub fn unavailable_reply() -> Reply {
    let reason = Reason::RateLimited;
    Reply {
        status: reason.http_status(),
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("cache-control", "no-store".to_string()),
            ("retry-after", "1".to_string()),
        ],
        body: crate::decision::Deny::new(reason, "", &[]).body(),
        reason,
    }
}

/// What an edge reads from the answer to a usage batch that carried `spend` (the control
/// plane's `UsageAccepted`; other members are ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageAnswer {
    /// Its next leases.
    pub leases: Vec<LeaseGrant>,
    /// Tokens it reported or asked about that have no limit.
    pub unlimited: Vec<String>,
    /// Whether any token of its organization is limited (absent when the batch carried no
    /// `spend`).
    pub limited: Option<bool>,
    /// How many edges share the organization's limits (the fallback's divisor).
    pub edges: Option<u64>,
}

/// One lease as the usage answer carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub token_id: String,
    pub window: String,
    pub first: u64,
    pub last: u64,
    pub per_window: u64,
    pub limit: u64,
}

impl LeaseGrant {
    /// The lease, `None` for an unknown window kind.
    pub fn lease(&self) -> Option<Lease> {
        Some(Lease {
            window: Window::parse(&self.window)?,
            first: self.first,
            last: self.last,
            per_window: self.per_window,
            limit: self.limit,
        })
    }
}

impl UsageAnswer {
    /// Parses the answer; `None` when it is not one (never panics). Read through
    /// `serde_json::Value`, which the filter module links anyway (a derived
    /// deserializer added tens of kilobytes to it).
    pub fn from_json(body: &[u8]) -> Option<UsageAnswer> {
        use serde_json::Value;
        let text = std::str::from_utf8(body).ok()?;
        let Value::Object(mut doc) = serde_json::from_str::<Value>(text).ok()? else {
            return None;
        };
        let mut list = |name: &str| -> Option<Vec<Value>> {
            match doc.remove(name) {
                None | Some(Value::Null) => Some(Vec::new()),
                Some(Value::Array(a)) => Some(a),
                Some(_) => None,
            }
        };
        let (leases, unlimited) = (list("leases")?, list("unlimited")?);
        let mut answer = UsageAnswer::default();
        for l in leases {
            let Value::Object(mut l) = l else { return None };
            let mut text = |k: &str| match l.remove(k) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            };
            let (token_id, window) = (text("token_id")?, text("window")?);
            let num = |k: &str| l.get(k).and_then(Value::as_u64);
            answer.leases.push(LeaseGrant {
                token_id,
                window,
                first: num("first")?,
                last: num("last")?,
                per_window: num("per_window")?,
                limit: num("limit")?,
            });
        }
        for id in unlimited {
            let Value::String(id) = id else { return None };
            answer.unlimited.push(id);
        }
        answer.limited = match doc.get("limited") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_bool()?),
        };
        answer.edges = match doc.get("edges") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64()?),
        };
        Some(answer)
    }

    /// The answer to a report that carried `spend`, as an edge takes a 2xx body: what it
    /// says, and whether it was readable. One that does not say `limited` (or cannot be
    /// read) comes from a control plane that grants no leases, so no token is limited:
    /// the edge stops asking.
    pub fn of_report(body: &[u8]) -> (UsageAnswer, bool) {
        let parsed = UsageAnswer::from_json(body);
        let readable = parsed.is_some();
        let mut answer = parsed.unwrap_or_default();
        if answer.limited.is_none() {
            answer.limited = Some(false);
        }
        (answer, readable)
    }

    /// What the answer says of the organization.
    pub fn org_mode(&self) -> OrgMode {
        match self.limited {
            Some(true) => OrgMode::Limited,
            Some(false) => OrgMode::Unlimited,
            None => OrgMode::Unknown,
        }
    }
}

/// What an edge sends with a usage batch (`POST /v1/usage`, member `spend`): who it is and,
/// per limited token and window kind, what it admitted and refused in one window. The
/// refusals are this count, never one usage record each, so a flood is one number.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SpendReport {
    /// The edge process's id (stable for its life; at most 64 characters): several edges
    /// may share one edge credential.
    pub edge: String,
    /// At most 1,000 entries.
    #[serde(default)]
    pub tokens: Vec<TokenSpend>,
    /// Tokens the edge holds nothing for and was asked to admit (at most 1,000): the
    /// answer carries their leases, or names them `unlimited`.
    #[serde(default)]
    pub wanted: Vec<String>,
}

impl SpendReport {
    /// The JSON the edge sends (written by hand, like the usage records: the filter
    /// module needs no JSON serializer otherwise).
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"edge\":");
        crate::plan::json_str(out, &self.edge);
        out.push_str(",\"tokens\":[");
        for (i, t) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"token_id\":");
            crate::plan::json_str(out, &t.token_id);
            out.push_str(",\"window\":");
            crate::plan::json_str(out, &t.window);
            let _ = write!(
                out,
                ",\"index\":{},\"admitted\":{},\"refused\":{}}}",
                t.index, t.admitted, t.refused
            );
        }
        out.push_str("],\"wanted\":[");
        for (i, t) in self.wanted.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::plan::json_str(out, t);
        }
        out.push_str("]}");
    }
}

/// The most tokens one spend report names (each list), as the control plane accepts.
pub const MAX_REPORTED: usize = 1000;

/// One token's spend in one window at one edge.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenSpend {
    /// The API token's id (an access token reports its parent's).
    pub token_id: String,
    /// The window kind ([`Window::as_str`]).
    pub window: String,
    /// The window's index.
    pub index: u64,
    /// Requests admitted in it.
    pub admitted: u64,
    /// Requests refused `rate_limited` in it.
    pub refused: u64,
}

/// How many windows of each kind one lease covers ahead: enough that an edge keeps
/// admitting between two usage reports, few enough that demand moves shares quickly.
pub fn lease_span(window: Window) -> u64 {
    match window {
        Window::Second => 10,
        Window::Minute => 2,
        _ => 1,
    }
}

/// How the control plane splits a window's `limit` among edges by demand: each edge's
/// share for the windows it leases next, given what it wanted (`demand`: what it admitted
/// plus what it refused in its busiest recent window). With `cap = min(floor, limit /
/// edges)`, every edge first keeps a floor: an edge that wanted something keeps
/// `min(cap, demand)` — never a floor it would leave unspent — and an edge that wanted
/// nothing yet a quarter of the cap (at least 1, at most the cap), so its first requests
/// need not wait; the rest goes by what each wants beyond its floor (largest remainders
/// first); what is still left goes evenly, at most `cap` each, to the edges that want
/// something (headroom for demand that grows before the next report). So when the fleet
/// wants more than the limit, every share but the floors follows demand and the
/// demand-heavy edges get all the rest. The shares never sum to more than `limit`, and
/// any rest beyond the headroom stays unleased (a reserve for top-ups and edges that
/// appear).
pub fn apportion(limit: u64, demand: &[u64], floor: u64) -> Vec<u64> {
    /// An edge's floor in [`apportion`].
    fn edge_floor(cap: u64, demand: u64) -> u64 {
        match demand {
            0 => cap.min((cap / 4).max(1)),
            d => cap.min(d),
        }
    }
    let n = demand.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let cap = floor.min(limit / n);
    let mut shares: Vec<u64> = demand.iter().map(|d| edge_floor(cap, *d)).collect();
    let rest = limit - shares.iter().sum::<u64>();
    // What each edge wants beyond its floor.
    let want: Vec<u64> = demand
        .iter()
        .zip(&shares)
        .map(|(d, base)| d.saturating_sub(*base))
        .collect();
    let wanted: u128 = want.iter().map(|w| u128::from(*w)).sum();
    if wanted == 0 || rest == 0 {
        return shares;
    }
    let give = u128::from(rest).min(wanted);
    let mut given: u64 = 0;
    let mut extra = vec![0u64; demand.len()];
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(demand.len());
    for (i, w) in want.iter().enumerate() {
        let exact = give * u128::from(*w);
        let part = u64::try_from(exact / wanted).unwrap_or(0);
        extra[i] = part;
        given += part;
        remainders.push((exact % wanted, i));
    }
    // The units the division left over go to the largest remainders, one each.
    let mut left = u64::try_from(give).unwrap_or(0).saturating_sub(given);
    insertion_sort(&mut remainders, |a, b| (b.0, a.1) > (a.0, b.1));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        if extra[i] < want[i] {
            extra[i] += 1;
            left -= 1;
        }
    }
    for (s, e) in shares.iter_mut().zip(extra) {
        *s += e;
    }
    // Headroom: what no one wanted is split evenly among the edges that want something,
    // at most `cap` each, so demand that grows between two reports is not refused while
    // the limit has room (when the fleet wants more than the limit, nothing is left).
    let left = limit - shares.iter().sum::<u64>();
    let wanting = demand.iter().filter(|d| **d > 0).count() as u64;
    if let Some(each) = left.checked_div(wanting).map(|e| e.min(cap)) {
        for (s, d) in shares.iter_mut().zip(demand) {
            if *d > 0 {
                *s += each;
            }
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(window: Window, first: u64, last: u64, n: u64) -> Lease {
        Lease {
            window,
            first,
            last,
            per_window: n,
            limit: n * 2,
        }
    }

    #[test]
    fn apportion_keeps_floors_and_follows_demand() {
        // 90/10 demand over two edges for a limit of 100, floor 5.
        assert_eq!(apportion(100, &[108, 12], 5), vec![89, 11]);
        // Idle edges keep 1 each, not the floor; the rest stays unleased.
        assert_eq!(apportion(100, &[0, 0, 0], 5), vec![1, 1, 1]);
        // An edge that wants less than the floor keeps what it wants: the busy edge gets
        // all the rest (1.2× the limit, 90 % on one of 6 edges).
        assert_eq!(
            apportion(600, &[648, 14, 15, 14, 15, 14], 30),
            vec![528, 14, 15, 14, 15, 14]
        );
        // More edges than the limit can floor.
        assert_eq!(apportion(3, &[10, 10, 10, 10], 5), vec![1, 1, 1, 0]);
        assert_eq!(apportion(0, &[10], 5), vec![0]);
        assert!(apportion(10, &[], 5).is_empty());
    }

    #[test]
    fn windows_are_aligned_to_the_epoch_and_utc_months() {
        // 2026-12-07T17:00:00Z
        let t = 1_796_662_800_000;
        assert_eq!(Window::Second.index(t), t / 1000);
        assert_eq!(Window::Minute.start_ms(Window::Minute.index(t + 59_999)), t);
        let m = Window::Month.index(t);
        assert_eq!(m, (2026 - 1970) * 12 + 11);
        // December 2026 starts 2026-12-01T00:00:00Z and ends 2027-01-01T00:00:00Z.
        assert_eq!(Window::Month.start_ms(m), 1_796_083_200_000);
        assert_eq!(Window::Month.end_ms(m), Some(1_798_761_600_000));
        // February of a leap year has 29 days.
        let feb = (2028 - 1970) * 12 + 1;
        assert_eq!(
            Window::Month.end_ms(feb).unwrap() - Window::Month.start_ms(feb),
            29 * DAY_MS
        );
        assert_eq!(Window::Total.index(t), 0);
        assert_eq!(Window::Total.end_ms(0), None);
        for w in Window::ALL {
            assert_eq!(Window::parse(w.as_str()), Some(w));
        }
    }

    #[test]
    fn admits_up_to_the_lease_then_refuses_until_the_next_window() {
        let mut b = Budget::new();
        let t = 10_000_500; // window 10000 of the seconds, 500 ms in
        b.grant(lease(Window::Second, 10_000, 10_009, 3), t);
        for _ in 0..3 {
            assert_eq!(b.admit(t), Admission::Admit);
        }
        let Admission::Refuse(r) = b.admit(t + 100) else {
            panic!("admitted past the lease");
        };
        assert_eq!(
            (r.window, r.limit, r.retry_after),
            (Window::Second, 6, Some(1))
        );
        // The next second has its own allowance.
        assert_eq!(b.admit(t + 600), Admission::Admit);
        // Past the lease's range: nothing left until a new lease comes.
        let after = 10_010_000;
        assert!(matches!(b.admit(after), Admission::Refuse(_)));
        b.grant(lease(Window::Second, 10_010, 10_019, 1), after);
        assert_eq!(b.admit(after), Admission::Admit);
    }

    #[test]
    fn allowances_only_grow() {
        let mut b = Budget::new();
        let now = 5 * 60_000;
        b.grant(lease(Window::Minute, 5, 9, 2), now);
        // A smaller lease over held windows changes nothing there, and adds the windows
        // not held yet; a larger one tops the held windows up.
        b.grant(lease(Window::Minute, 3, 12, 1), now);
        let held = |b: &Budget| -> Vec<(u64, u64, u64)> {
            b.leases()
                .iter()
                .map(|l| (l.first, l.last, l.per_window))
                .collect()
        };
        assert_eq!(held(&b), vec![(5, 9, 2), (10, 12, 1)]);
        assert_eq!(b.admit(now), Admission::Admit);
        assert_eq!(b.admit(now), Admission::Admit);
        assert!(matches!(b.admit(now), Admission::Refuse(_)));
        b.grant(lease(Window::Minute, 5, 5, 3), now);
        assert_eq!(held(&b), vec![(5, 5, 3), (6, 9, 2), (10, 12, 1)]);
        assert_eq!(b.admit(now), Admission::Admit);
        assert!(matches!(b.admit(now), Admission::Refuse(_)));
    }

    #[test]
    fn every_limited_kind_must_have_room_and_a_refusal_counts_nothing() {
        let mut b = Budget::new();
        b.grant(lease(Window::Second, 0, 100, 5), 0);
        b.grant(lease(Window::Total, 0, 0, 2), 0);
        assert_eq!(b.admit(0), Admission::Admit);
        assert_eq!(b.admit(1000), Admission::Admit);
        let Admission::Refuse(r) = b.admit(2000) else {
            panic!()
        };
        assert_eq!((r.window, r.retry_after), (Window::Total, None));
        assert_eq!(b.spent(Window::Second, 2), 0);
    }

    #[test]
    fn unleased_tokens_are_admitted_and_encode_round_trips() {
        let mut b = Budget::new();
        assert_eq!(b.admit(0), Admission::Admit);
        assert!(!b.is_limited());
        b.grant(lease(Window::Second, 0, 9, 3), 0);
        b.grant(lease(Window::Day, 0, 0, 100), 0);
        b.admit(10);
        let text = b.encode();
        assert_eq!(Budget::decode(&text), Some(b.clone()));
        for bad in [
            "",
            "b2",
            "b1;L,per_second,1,2",
            "b1;X,total,0,0",
            "b1;S,per_year,0,0",
        ] {
            assert_eq!(Budget::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refusals_are_counted_and_the_spend_names_the_latest_two_windows() {
        let mut b = Budget::new();
        b.grant(lease(Window::Second, 0, 9, 2), 0);
        for t in [0, 10, 20, 1000, 1010, 1020, 1030, 2000] {
            b.admit(t);
        }
        // Window 0 is gone; window 1 admitted 2 and refused 2; window 2 admitted 1.
        assert_eq!(
            (b.spent(Window::Second, 0), b.refused(Window::Second, 0)),
            (0, 0)
        );
        assert_eq!(
            (b.spent(Window::Second, 1), b.refused(Window::Second, 1)),
            (2, 2)
        );
        assert_eq!(
            (b.spent(Window::Second, 2), b.refused(Window::Second, 2)),
            (1, 0)
        );
        let spend: Vec<(u64, u64, u64)> = b
            .spend("tok_a")
            .iter()
            .map(|t| (t.index, t.admitted, t.refused))
            .collect();
        assert_eq!(spend, vec![(1, 2, 2), (2, 1, 0)]);
        assert_eq!(Budget::decode(&b.encode()), Some(b.clone()));
        let report = SpendReport {
            edge: "envoy-1\"x".into(),
            tokens: b.spend("tok_a"),
            wanted: vec!["tok_b".into()],
        };
        let mut json = String::new();
        report.write_json(&mut json);
        let back: SpendReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn a_token_held_as_nothing_is_asked_for_unless_the_org_has_no_limits() {
        let now = 5_000;
        assert_eq!(decide(None, OrgMode::Unlimited, now), Step::Pass);
        assert_eq!(decide(None, OrgMode::Limited, now), Step::Ask);
        assert_eq!(decide(None, OrgMode::Unknown, now), Step::Ask);
        let mut h = Holding::Unlimited;
        assert_eq!(decide(Some(&mut h), OrgMode::Limited, now), Step::Pass);
        // A budget that holds no lease any more, or none for now, asks again.
        let mut h = Holding::Budget(Budget::new());
        assert_eq!(decide(Some(&mut h), OrgMode::Limited, now), Step::Ask);
        h.grant(lease(Window::Second, 5, 6, 1), now);
        assert_eq!(decide(Some(&mut h), OrgMode::Limited, 7_000), Step::Ask);
        // A lease turns the unlimited token into a limited one.
        let mut h = Holding::Unlimited;
        h.grant(lease(Window::Second, 5, 5, 1), now);
        assert_eq!(decide(Some(&mut h), OrgMode::Limited, now), Step::Admitted);
        assert!(matches!(
            decide(Some(&mut h), OrgMode::Limited, now),
            Step::Refused(_)
        ));
        for h in [Holding::Unlimited, h] {
            assert_eq!(Holding::decode(&h.encode()), Some(h.clone()));
        }
        assert_eq!(Holding::decode("u2"), None);
        // After the wait: admitted only by an edge that never reached the control plane.
        assert_eq!(unleased(OrgMode::Unknown), None);
        let reply = unleased(OrgMode::Limited).unwrap();
        assert_eq!((reply.status, reply.reason), (429, Reason::RateLimited));
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| *k == "retry-after" && v == "1"));
        for m in [OrgMode::Unknown, OrgMode::Unlimited, OrgMode::Limited] {
            assert_eq!(OrgMode::parse(m.as_str().as_bytes()), m);
        }
    }

    #[test]
    fn the_usage_answer_is_read_leniently_and_never_panics() {
        let body = br#"{"accepted":1,"unknown_tokens":[],"leases":[{"token_id":"tok_a","window":"per_minute","first":3,"last":4,"per_window":7,"limit":50}],"unlimited":["tok_b"],"limited":true}"#;
        let a = UsageAnswer::from_json(body).unwrap();
        assert_eq!(a.org_mode(), OrgMode::Limited);
        assert_eq!(a.unlimited, vec!["tok_b".to_string()]);
        assert_eq!(
            a.leases[0].lease(),
            Some(Lease {
                window: Window::Minute,
                first: 3,
                last: 4,
                per_window: 7,
                limit: 50
            })
        );
        let plain = UsageAnswer::from_json(br#"{"accepted":0,"unknown_tokens":[]}"#).unwrap();
        assert_eq!(plain.org_mode(), OrgMode::Unknown);
        // As the answer to a report: a control plane that grants no leases limits nothing.
        let (a, readable) = UsageAnswer::of_report(br#"{"accepted":0,"unknown_tokens":[]}"#);
        assert!(readable);
        assert_eq!(a.org_mode(), OrgMode::Unlimited);
        let (a, readable) = UsageAnswer::of_report(b"");
        assert!(!readable);
        assert_eq!(a.org_mode(), OrgMode::Unlimited);
        assert_eq!(UsageAnswer::of_report(body).0.org_mode(), OrgMode::Limited);
        for bad in [
            &b""[..],
            b"7",
            b"[]",
            b"{\"leases\":7}",
            b"{\"leases\":[{\"token_id\":1}]}",
            b"{\"limited\":\"yes\"}",
            b"\xff",
        ] {
            assert_eq!(UsageAnswer::from_json(bad), None);
        }
    }

    #[test]
    fn the_refusal_carries_retry_after_and_the_draft_headers() {
        let mut b = Budget::new();
        b.grant(lease(Window::Second, 0, 9, 1), 0);
        b.grant(lease(Window::Day, 0, 0, 50), 0);
        assert_eq!(b.admit(200), Admission::Admit);
        let Admission::Refuse(r) = b.admit(300) else {
            panic!()
        };
        let reply = refusal_reply(&b, &r, 300);
        assert_eq!(reply.status, 429);
        assert_eq!(reply.reason, Reason::RateLimited);
        let h = |n: &str| {
            reply
                .headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("retry-after"), Some("1"));
        assert_eq!(
            h("ratelimit-policy"),
            Some("\"per_second\";q=2;w=1, \"per_day\";q=100;w=86400")
        );
        assert_eq!(
            h("ratelimit"),
            Some("\"per_second\";r=0;t=1, \"per_day\";r=49;t=86400")
        );
        assert_eq!(
            reply.body,
            "{\"error\":\"temporarily_unavailable\",\"reason\":\"rate_limited\"}"
        );
    }

    #[test]
    fn the_contact_says_when_the_control_plane_is_lost() {
        let mut c = Contact::default();
        // Never answered: never lost (the edge knows no limit to share).
        c.sent(1_000);
        assert!(!c.lost(10_000, 1000));
        c.answered(10_000, Some(4));
        assert_eq!((c.edges(None), c.edges(Some(2))), (4, 2));
        // Nothing waits for an answer: not lost, however long since the last one.
        assert!(!c.lost(19_000, 1000));
        // A report in flight after the interval: lost only once it had time to be
        // answered.
        c.sent(19_000);
        assert!(!c.lost(19_199, 1000));
        assert!(c.lost(19_200, 1000));
        c.answered(19_300, None);
        assert_eq!(c.edges, 4);
        assert!(!c.lost(19_300, 1000));
        // Reports failing since 19 400: lost once nothing was heard for the interval.
        c.sent(19_400);
        c.sent(19_600);
        assert_eq!(c.unanswered, 19_400);
        assert!(!c.lost(20_299, 1000));
        assert!(c.lost(20_300, 1000));
        assert_eq!(Contact::decode(c.encode().as_bytes()), c);
        assert_eq!(Contact::decode(b"1,2"), Contact::default());
        assert_eq!(Contact::default().edges(None), 1);
    }

    #[test]
    fn while_lost_leases_still_rule_their_windows_and_the_share_the_others() {
        let minute = 60_000;
        let mut h = Holding::Budget(Budget::new());
        h.grant(
            Lease {
                window: Window::Minute,
                first: 1,
                last: 1,
                per_window: 3,
                limit: 40,
            },
            minute,
        );
        // Within the lease's window, the lease.
        for _ in 0..3 {
            assert_eq!(decide_lost(Some(&mut h), minute, 4), Step::Admitted);
        }
        assert!(matches!(
            decide_lost(Some(&mut h), minute + 10, 4),
            Step::Refused(_)
        ));
        // The next window has no lease: the edge would ask; lost, it takes 40 ÷ 4.
        let next = 2 * minute;
        assert_eq!(decide(Some(&mut h), OrgMode::Limited, next), Step::Ask);
        let admitted = (0..20)
            .filter(|_| decide_lost(Some(&mut h), next, 4) == Step::Admitted)
            .count();
        assert_eq!(admitted, 10);
        let Step::Refused(r) = decide_lost(Some(&mut h), next + 30_000, 4) else {
            panic!("admitted past the share");
        };
        assert_eq!(
            (r.window, r.limit, r.retry_after),
            (Window::Minute, 40, Some(30))
        );
        let Holding::Budget(b) = &h else { panic!() };
        let reply = refusal_reply(b, &r, next + 30_000);
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| *k == "ratelimit-policy" && v == "\"per_minute\";q=40;w=60"));
        // The limit is kept in the shared text after its leases ran out.
        assert_eq!(Holding::decode(&h.encode()), Some(h.clone()));
        // What the edge knows no limit of passes.
        assert_eq!(decide_lost(None, next, 4), Step::Pass);
        assert_eq!(
            decide_lost(Some(&mut Holding::Unlimited), next, 4),
            Step::Pass
        );
        // Answered again: leases take over.
        let later = 3 * minute;
        h.grant(
            Lease {
                window: Window::Minute,
                first: 3,
                last: 4,
                per_window: 1,
                limit: 40,
            },
            later,
        );
        assert_eq!(
            decide(Some(&mut h), OrgMode::Limited, later),
            Step::Admitted
        );
        assert!(matches!(
            decide(Some(&mut h), OrgMode::Limited, later),
            Step::Refused(_)
        ));
        assert_eq!(fallback_share(5, 6), 0);
        assert_eq!(fallback_share(50, 0), 50);
    }
}
