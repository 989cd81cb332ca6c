//! Documents fetched from the control plane (JWKS, status lists) applied to a
//! [`Verifier`]: the one rule every host follows, whether its sync service publishes them
//! (the filter) or it fetches them itself (the edge worker).
//!
//! Keys in force are the configuration's keys, then each synced JWKS in the order its
//! source was first tracked, a `kid` already present winning. A refused document changes
//! nothing: what is in force stays.

use serde_json::Value;

use crate::jwks::KeySet;
use crate::status::StatusList;
use crate::Verifier;

/// The synced JWKS documents, by source (a URL, or a position in a published list).
#[derive(Clone, Debug, Default)]
pub struct SyncedKeys {
    /// Source → the document text and its keys, `None` until the first one arrives.
    sets: Vec<(String, Option<(String, KeySet)>)>,
}

impl SyncedKeys {
    /// Fixes the position of `source` in the union (first tracked wins a `kid` clash).
    pub fn track(&mut self, source: &str) {
        if !self.sets.iter().any(|(s, _)| s == source) {
            self.sets.push((source.to_owned(), None));
        }
    }

    /// Applies the JWKS document `text` fetched from `source`, validated as the
    /// configuration's `jwks` is. Returns whether the keys in force changed (a host then
    /// clears its token cache); an identical document changes nothing. Errors name the
    /// source and the bad member, and leave the keys in force as they were.
    pub fn apply(
        &mut self,
        verifier: &mut Verifier,
        source: &str,
        text: &str,
    ) -> Result<bool, String> {
        self.track(source);
        let Some((_, slot)) = self.sets.iter_mut().find(|(s, _)| s == source) else {
            return Ok(false);
        };
        if slot.as_ref().is_some_and(|(t, _)| t == text) {
            return Ok(false);
        }
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("JWKS {source}: not JSON: {e}"))?;
        let keys = KeySet::from_jwks(&doc, "jwks").map_err(|e| format!("JWKS {source}: {e}"))?;
        *slot = Some((text.to_owned(), keys));
        verifier.set_synced_keys(&self.union());
        Ok(true)
    }

    /// Applies a whole published list of documents (the filter's shared state: position
    /// `i` is source `"#i"`). Returns whether the keys changed, and the errors of the
    /// documents refused.
    pub fn apply_all(&mut self, verifier: &mut Verifier, texts: &[String]) -> (bool, Vec<String>) {
        let mut changed = false;
        let mut errors = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match self.apply(verifier, &format!("#{i}"), text) {
                Ok(c) => changed |= c,
                Err(e) => errors.push(e),
            }
        }
        (changed, errors)
    }

    /// The texts of the documents in force, in order (a host that needs the JWK objects
    /// themselves, such as WebCrypto, reads them from here).
    pub fn documents(&self) -> impl Iterator<Item = &str> {
        self.sets
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|(t, _)| t.as_str()))
    }

    fn union(&self) -> KeySet {
        let mut out = KeySet::default();
        for (_, keys) in self.sets.iter().filter_map(|(_, s)| s.as_ref()) {
            out = out.merged_with(keys);
        }
        out
    }
}

/// Parses a status-list document as the control plane serves it: `{"bits": 2, "lst":
/// "<base64url(zlib(bytes))>"}` (other members ignored). Errors name the member.
pub fn status_list_document(text: &str) -> Result<StatusList, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let bits = doc.get("bits").ok_or_else(|| "bits: missing".to_string())?;
    if bits.as_u64() != Some(2) {
        return Err(format!("bits: {bits} is not supported (must be 2)"));
    }
    let lst = doc
        .get("lst")
        .and_then(Value::as_str)
        .ok_or_else(|| "lst: missing or not a string".to_string())?;
    StatusList::from_lst(lst).map_err(|e| format!("lst: {e}"))
}

/// The scopes withdrawn from the list's tokens, from the same status-list document: its
/// optional `withdrawn` member (absent: nothing withdrawn). Errors name the member; the
/// host keeps what it had.
pub fn withdrawn_document(text: &str) -> Result<crate::withdrawn::WithdrawnScopes, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match doc.get("withdrawn") {
        None | Some(Value::Null) => Ok(crate::withdrawn::WithdrawnScopes::new()),
        Some(member) => {
            crate::withdrawn::WithdrawnScopes::from_json(member).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_testkit::{jwks, Alg, TestKey};

    fn verifier(inline: &TestKey) -> Verifier {
        let json = format!(
            r#"{{"issuers":["i"],"audiences":["a"],"jwks":{}}}"#,
            jwks(&[inline])
        );
        match Verifier::from_config_json(&json) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn union_keeps_configured_keys_and_source_order() {
        let inline = TestKey::generate(Alg::EdDSA, "a");
        let clash = TestKey::generate(Alg::EdDSA, "a");
        let b1 = TestKey::generate(Alg::ES256, "b");
        let b2 = TestKey::generate(Alg::EdDSA, "b");
        let mut v = verifier(&inline);
        let mut synced = SyncedKeys::default();
        synced.track("first");
        assert_eq!(
            synced.apply(&mut v, "second", &jwks(&[&b2]).to_string()),
            Ok(true)
        );
        assert_eq!(
            synced.apply(&mut v, "first", &jwks(&[&clash, &b1]).to_string()),
            Ok(true)
        );
        let keys = &v.config().keys;
        assert_eq!(keys.len(), 2);
        // The configured "a" wins; "first" was tracked first, so its "b" wins.
        assert_eq!(keys.get("b").map(|k| k.alg.name()), Some("ES256"));
        // The same text again changes nothing.
        assert_eq!(
            synced.apply(&mut v, "first", &jwks(&[&clash, &b1]).to_string()),
            Ok(false)
        );
        // A bad document is refused, naming the source; the keys stay.
        let err = synced.apply(&mut v, "first", "{\"keys\":[]}");
        assert!(err.is_err_and(|e| e.starts_with("JWKS first: jwks.keys")));
        assert_eq!(v.config().keys.len(), 2);
        assert_eq!(synced.documents().count(), 2);
    }

    #[test]
    fn status_documents() {
        let list = StatusList::from_entries(8, [(1, crate::TokenStatus::Revoked)]);
        let doc = format!(r#"{{"bits":2,"lst":"{}","ttl":30}}"#, list.to_lst());
        assert_eq!(
            status_list_document(&doc).map(|l| l.get(1)),
            Ok(Some(crate::TokenStatus::Revoked))
        );
        for (text, err) in [
            ("{", "not JSON"),
            (r#"{"lst":"x"}"#, "bits: missing"),
            (r#"{"bits":1,"lst":"x"}"#, "bits: 1 is not supported"),
            (r#"{"bits":2}"#, "lst: missing"),
            (r#"{"bits":2,"lst":"!"}"#, "lst: "),
        ] {
            assert!(
                status_list_document(text).is_err_and(|e| e.starts_with(err)),
                "{text}"
            );
        }
    }
}
