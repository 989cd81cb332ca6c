//! Scopes withdrawn from live tokens (issue 22): when an org admin withdraws a grant or
//! demotes a user, the user's tokens keep their JWTs, and the edges learn, with the status
//! list, which scopes each token index lost. A request needing a lost scope is refused
//! `insufficient_scope`; the token's other scopes keep working.
//!
//! The document rides in the org's status-list document as an optional member,
//! `"withdrawn": {"<scope>": "<base64url(zlib(bitset))>", ...}`: per withdrawn scope, one
//! bit per status-list index (index `i` in byte `i / 8`, bit `i % 8`, least significant
//! first; 1 = withdrawn), compressed as the status list's `lst` is. Held in memory per
//! scope as the smaller of the bitset (1 bit per index) and the sorted indices set
//! (4 bytes each): never more than 1 bit per token index per withdrawn scope, and 4 bytes
//! per narrowed token when few are.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::status::{inflate_exact, MAX_LIST_BYTES};

/// Most scopes one document may withdraw.
pub const MAX_SCOPES: usize = 256;
/// Largest decompressed bitset of one scope: 1 bit for each index a status list may have.
pub const MAX_BITSET_BYTES: usize = MAX_LIST_BYTES / 2;
/// Most memory the kept document may take (the status list's own guard is 4 MiB at 10M
/// indices; this one bounds the narrowing beside it).
pub const MAX_KEPT_BYTES: usize = 4 * 1024 * 1024;

/// The token indices that lost one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Indices {
    /// Sorted, without repeats.
    Sparse(Vec<u32>),
    /// One bit per index.
    Dense(Vec<u8>),
}

impl Indices {
    fn contains(&self, idx: u64) -> bool {
        match self {
            Indices::Sparse(v) => u32::try_from(idx).is_ok_and(|i| v.binary_search(&i).is_ok()),
            Indices::Dense(b) => usize::try_from(idx / 8)
                .ok()
                .and_then(|byte| b.get(byte))
                .is_some_and(|byte| byte & (1 << (idx % 8)) != 0),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Indices::Sparse(v) => v.len() * 4,
            Indices::Dense(b) => b.len(),
        }
    }

    /// The smaller form of a bitset.
    fn from_bitset(bits: Vec<u8>) -> Indices {
        let ones: usize = bits.iter().map(|b| b.count_ones() as usize).sum();
        if ones * 4 < bits.len() {
            let mut v = Vec::with_capacity(ones);
            for (n, byte) in bits.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        if let Ok(i) = u32::try_from(n * 8 + bit) {
                            v.push(i);
                        }
                    }
                }
            }
            Indices::Sparse(v)
        } else {
            Indices::Dense(bits)
        }
    }

    fn to_bitset(&self) -> Vec<u8> {
        match self {
            Indices::Dense(b) => b.clone(),
            Indices::Sparse(v) => {
                let len = v.last().map_or(0, |last| *last as usize / 8 + 1);
                let mut b = vec![0u8; len];
                for i in v {
                    let i = *i as usize;
                    if let Some(byte) = b.get_mut(i / 8) {
                        *byte |= 1 << (i % 8);
                    }
                }
                b
            }
        }
    }
}

/// The scopes withdrawn from each token index of one status list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WithdrawnScopes {
    /// By scope name.
    scopes: BTreeMap<String, Indices>,
}

/// Why a document was refused; the edge keeps the last good one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawnError(pub String);

impl std::fmt::Display for WithdrawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WithdrawnError {}

impl WithdrawnScopes {
    /// Nothing withdrawn.
    pub fn new() -> WithdrawnScopes {
        WithdrawnScopes::default()
    }

    /// From `(scope, index)` pairs (the control plane's view of its grants).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, u32)>) -> WithdrawnScopes {
        let mut by: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (scope, idx) in entries {
            by.entry(scope.to_string()).or_default().push(idx);
        }
        let scopes = by
            .into_iter()
            .map(|(s, mut v)| {
                v.sort_unstable();
                v.dedup();
                let sparse = Indices::Sparse(v);
                let bits = sparse.to_bitset();
                (s, Indices::from_bitset(bits))
            })
            .collect();
        WithdrawnScopes { scopes }
    }

    /// Whether nothing is withdrawn.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Whether `scope` is withdrawn from the token at `idx`.
    pub fn is_withdrawn(&self, idx: u64, scope: &str) -> bool {
        self.scopes.get(scope).is_some_and(|i| i.contains(idx))
    }

    /// The scopes withdrawn from anyone, by name.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.keys().map(String::as_str)
    }

    /// Bytes held for the indices (what [`MAX_KEPT_BYTES`] bounds).
    pub fn memory_bytes(&self) -> usize {
        self.scopes.values().map(Indices::bytes).sum()
    }

    /// Parses the `withdrawn` member of a status-list document (a JSON object of scope to
    /// `lst`). Errors name the member; nothing is kept from a refused document.
    pub fn from_json(member: &Value) -> Result<WithdrawnScopes, WithdrawnError> {
        let err = |m: String| WithdrawnError(format!("withdrawn{m}"));
        let obj = member
            .as_object()
            .ok_or_else(|| err(": not an object of scope to lst".into()))?;
        if obj.len() > MAX_SCOPES {
            return Err(err(format!(": more than {MAX_SCOPES} scopes")));
        }
        let mut pairs = Vec::with_capacity(obj.len());
        for (name, lst) in obj {
            let lst = lst
                .as_str()
                .ok_or_else(|| err(format!(".{name}: not a string")))?;
            pairs.push((name.as_str(), lst));
        }
        WithdrawnScopes::from_pairs(pairs)
    }

    /// From `(scope, lst)` pairs: what [`WithdrawnScopes::from_json`] reads from the JSON
    /// member, also how a host passes it on without a JSON serializer.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<WithdrawnScopes, WithdrawnError> {
        let err = |m: String| WithdrawnError(format!("withdrawn{m}"));
        let mut scopes = BTreeMap::new();
        let mut kept = 0usize;
        for (n, (name, lst)) in pairs.into_iter().enumerate() {
            if n >= MAX_SCOPES {
                return Err(err(format!(": more than {MAX_SCOPES} scopes")));
            }
            let at = |m: &str| err(format!(".{name}: {m}"));
            if !crate::token::is_scope_token(name) {
                return Err(at("the name is not a scope-token"));
            }
            let compressed = URL_SAFE_NO_PAD
                .decode(lst.trim_end_matches('='))
                .map_err(|_| at("is not valid base64url"))?;
            let bits = inflate_exact(&compressed, MAX_BITSET_BYTES).map_err(|_| {
                at(&format!(
                    "is not a zlib stream of at most {MAX_BITSET_BYTES} bytes"
                ))
            })?;
            let indices = Indices::from_bitset(bits);
            kept = kept.saturating_add(indices.bytes());
            if kept > MAX_KEPT_BYTES {
                return Err(err(format!(": takes more than {MAX_KEPT_BYTES} bytes")));
            }
            scopes.insert(name.to_string(), indices);
        }
        Ok(WithdrawnScopes { scopes })
    }

    /// The `withdrawn` member the control plane serves.
    pub fn to_json(&self) -> Value {
        let map = self
            .scopes
            .iter()
            .map(|(name, i)| {
                let z = miniz_oxide::deflate::compress_to_vec_zlib(&i.to_bitset(), 9);
                (name.clone(), Value::String(URL_SAFE_NO_PAD.encode(z)))
            })
            .collect();
        Value::Object(map)
    }
}

/// The decision: the first scope `required` by the route that the token does not hold
/// now — not carried, or carried but withdrawn from its index — or `None` when it holds
/// them all. A token without a status index cannot be narrowed.
pub fn first_missing<'r>(
    required: &'r [String],
    carried: &[String],
    idx: Option<u64>,
    withdrawn: Option<&WithdrawnScopes>,
) -> Option<&'r str> {
    required
        .iter()
        .find(|s| {
            !carried.contains(s)
                || matches!((idx, withdrawn), (Some(i), Some(w)) if w.is_withdrawn(i, s))
        })
        .map(String::as_str)
}

/// The scopes the token holds now: those it carries, less those withdrawn from its index
/// (what the identity forwarded upstream names).
pub fn held(
    carried: &[String],
    idx: Option<u64>,
    withdrawn: Option<&WithdrawnScopes>,
) -> Vec<String> {
    carried
        .iter()
        .filter(|s| !matches!((idx, withdrawn), (Some(i), Some(w)) if w.is_withdrawn(i, s)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn decisions() {
        let w = WithdrawnScopes::from_entries([("write", 3), ("write", 9), ("admin", 3)]);
        let carried = s(&["read", "write", "admin"]);
        #[rustfmt::skip]
        let cases: [(&[&str], Option<u64>, Option<&str>); 9] = [
            (&[], Some(3), None),
            (&["read"], Some(3), None),
            (&["write"], Some(3), Some("write")),
            (&["read", "admin"], Some(3), Some("admin")),
            (&["write"], Some(4), None),
            (&["write"], Some(9), Some("write")),
            (&["admin"], Some(9), None),
            (&["other"], Some(4), Some("other")),
            // No index: nothing to narrow by.
            (&["write"], None, None),
        ];
        for (required, idx, want) in cases {
            let required = s(required);
            assert_eq!(
                first_missing(&required, &carried, idx, Some(&w)),
                want,
                "{required:?} at {idx:?}"
            );
        }
        assert_eq!(first_missing(&s(&["write"]), &carried, Some(3), None), None);
        assert_eq!(held(&carried, Some(3), Some(&w)), s(&["read"]));
        assert_eq!(held(&carried, Some(4), Some(&w)), carried);
    }

    #[test]
    fn documents_round_trip_and_pick_the_smaller_form() {
        let few = WithdrawnScopes::from_entries([("a", 1_000_000), ("a", 5)]);
        assert!(matches!(few.scopes["a"], Indices::Sparse(_)));
        assert_eq!(few.memory_bytes(), 8);
        let back = WithdrawnScopes::from_json(&few.to_json()).unwrap();
        assert_eq!(back, few);
        assert!(back.is_withdrawn(1_000_000, "a") && back.is_withdrawn(5, "a"));
        assert!(!back.is_withdrawn(6, "a") && !back.is_withdrawn(5, "b"));
        let many = WithdrawnScopes::from_entries((0..1000).map(|i| ("b", i)));
        assert!(matches!(many.scopes["b"], Indices::Dense(_)));
        assert_eq!(many.memory_bytes(), 125);
        assert_eq!(WithdrawnScopes::from_json(&many.to_json()).unwrap(), many);
    }

    #[test]
    fn one_bit_per_index_per_scope_at_most() {
        // Every index of 1M withdrawn from one scope: 1M bits.
        let all = WithdrawnScopes::from_entries((0..1_000_000).map(|i| ("s", i)));
        assert_eq!(all.memory_bytes(), 125_000);
        // Every fourth: still the bitset.
        let quarter = WithdrawnScopes::from_entries((0..250_000).map(|i| ("s", i * 4)));
        assert!(quarter.memory_bytes() <= 125_000);
    }

    #[test]
    fn bad_documents_are_refused_naming_the_member() {
        let bomb = URL_SAFE_NO_PAD.encode(miniz_oxide::deflate::compress_to_vec_zlib(
            &vec![0u8; MAX_BITSET_BYTES + 1],
            9,
        ));
        let dense = |n: usize| {
            URL_SAFE_NO_PAD.encode(miniz_oxide::deflate::compress_to_vec_zlib(
                &vec![0xffu8; n],
                9,
            ))
        };
        let too_many: serde_json::Map<String, Value> = (0..=MAX_SCOPES)
            .map(|i| (format!("s{i}"), json!("")))
            .collect();
        for (doc, want) in [
            (json!([]), "withdrawn: not an object"),
            (json!({"a": 1}), "withdrawn.a: not a string"),
            (json!({"a b": ""}), "withdrawn.a b: the name"),
            (json!({"a": "!!"}), "withdrawn.a: is not valid base64url"),
            (json!({"a": "AAAA"}), "withdrawn.a: is not a zlib stream"),
            (json!({"a": bomb}), "withdrawn.a: is not a zlib stream"),
            (
                json!({"a": dense(3 * 1024 * 1024), "b": dense(2 * 1024 * 1024)}),
                "withdrawn: takes more than",
            ),
            (Value::Object(too_many), "withdrawn: more than"),
        ] {
            match WithdrawnScopes::from_json(&doc) {
                Err(e) => assert!(e.0.starts_with(want), "{e} for {want}"),
                Ok(_) => panic!("accepted {want}"),
            }
        }
    }
}
