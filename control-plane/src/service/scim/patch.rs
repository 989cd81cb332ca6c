//! SCIM PATCH (RFC 7644 3.5.2), applied to a resource's JSON: `add`, `replace` and
//! `remove` with no path (the value's attributes), an attribute path (`active`,
//! `name.givenName`, `emails`), or a value filter on a multi-valued attribute
//! (`emails[type eq "work"].value`, `members[value eq "usr_…"]`). The result is read
//! back into the resource's serde type, which checks it.

use super::filter;
use super::resource::{Fault, PATCH_SCHEMA};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A PATCH request body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PatchOp {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(rename = "Operations")]
    pub operations: Vec<Operation>,
}

/// One operation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct Operation {
    /// `add`, `replace` or `remove` (any case).
    pub op: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Replace,
    Remove,
}

/// A parsed path: `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`.
struct Path {
    attr: String,
    filter: Option<(filter::Filter, String)>,
    sub: Option<String>,
}

fn no_target(detail: String) -> Fault {
    Fault::new(400, Some("noTarget"), detail)
}

fn parse_path(text: &str) -> Result<Path, Fault> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let t = if lower.starts_with("urn:ietf:params:scim:schemas:core:2.0:") {
        match t.rfind(':') {
            Some(i) => &t[i + 1..],
            None => t,
        }
    } else {
        t
    };
    let bad = || Fault::invalid_path(format!("{text:?} is not a path this server applies"));
    let (head, filter, tail) = match t.find('[') {
        Some(open) => {
            let close = t.rfind(']').filter(|c| *c > open).ok_or_else(bad)?;
            let inner = &t[open + 1..close];
            let f = filter::parse(inner).map_err(|_| {
                Fault::invalid_path(format!(
                    "{text:?}: the value filter {inner:?} is not one this server applies"
                ))
            })?;
            let tail = &t[close + 1..];
            let tail = if tail.is_empty() {
                None
            } else {
                Some(tail.strip_prefix('.').ok_or_else(bad)?.to_string())
            };
            (&t[..open], Some((f, inner.to_string())), tail)
        }
        None => match t.split_once('.') {
            Some((a, s)) => (a, None, Some(s.to_string())),
            None => (t, None, None),
        },
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    if !name_ok(head) || tail.as_deref().is_some_and(|s| !name_ok(s)) {
        return Err(bad());
    }
    Ok(Path {
        attr: head.to_string(),
        filter,
        sub: tail,
    })
}

/// The key of `m` that is `name` case-insensitively, or `name` itself.
fn key_in(m: &Map<String, Value>, name: &str) -> String {
    m.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// Identity providers send booleans as strings ("False"); read them as booleans.
fn normalise(attr: &str, v: Value) -> Value {
    if attr.eq_ignore_ascii_case("active") {
        if let Value::String(s) = &v {
            if s.eq_ignore_ascii_case("true") {
                return Value::Bool(true);
            }
            if s.eq_ignore_ascii_case("false") {
                return Value::Bool(false);
            }
        }
    }
    v
}

fn add_into(slot: &mut Value, value: Value) {
    match (slot, value) {
        (Value::Array(items), Value::Array(new)) => {
            for v in new {
                if !items.contains(&v) {
                    items.push(v);
                }
            }
        }
        (Value::Array(items), v) => {
            if !items.contains(&v) {
                items.push(v);
            }
        }
        (Value::Object(m), Value::Object(new)) => {
            for (k, v) in new {
                let key = key_in(m, &k);
                m.insert(key, v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Applies the operations to `doc` (a resource as JSON) in order.
pub fn apply(doc: &mut Value, req: &PatchOp) -> Result<(), Fault> {
    if !req.schemas.is_empty() && !req.schemas.iter().any(|s| s == PATCH_SCHEMA) {
        return Err(Fault::new(
            400,
            Some("invalidSyntax"),
            format!("schemas must be [{PATCH_SCHEMA:?}]"),
        ));
    }
    for (n, op) in req.operations.iter().enumerate() {
        let kind = match op.op.to_ascii_lowercase().as_str() {
            "add" => Kind::Add,
            "replace" => Kind::Replace,
            "remove" => Kind::Remove,
            other => {
                return Err(Fault::new(
                    400,
                    Some("invalidSyntax"),
                    format!("Operations[{n}].op: {other:?} is not add, replace or remove"),
                ))
            }
        };
        let Value::Object(root) = doc else {
            return Err(Fault::internal("a resource is not an object"));
        };
        match (&op.path, kind) {
            (None, Kind::Remove) => {
                return Err(no_target(format!("Operations[{n}]: remove needs a path")))
            }
            (None, _) => {
                let Some(Value::Object(attrs)) = op.value.clone() else {
                    return Err(Fault::invalid_value(format!(
                        "Operations[{n}].value: without a path, the value is an object of attributes"
                    )));
                };
                for (k, v) in attrs {
                    // Some providers write sub-attributes as `name.givenName` keys.
                    let path = parse_path(&k)?;
                    set(root, &path, kind, Some(v), n)?;
                }
            }
            (Some(p), _) => {
                let path = parse_path(p)?;
                if kind != Kind::Remove && op.value.is_none() {
                    return Err(Fault::invalid_value(format!(
                        "Operations[{n}].value is required for {}",
                        op.op
                    )));
                }
                set(root, &path, kind, op.value.clone(), n)?;
            }
        }
    }
    Ok(())
}

fn set(
    root: &mut Map<String, Value>,
    path: &Path,
    kind: Kind,
    value: Option<Value>,
    n: usize,
) -> Result<(), Fault> {
    let key = key_in(root, &path.attr);
    let value = value.map(|v| normalise(&path.attr, v));
    match &path.filter {
        None => match (&path.sub, kind) {
            (None, Kind::Remove) => {
                root.remove(&key);
            }
            (None, Kind::Replace) => {
                root.insert(key, value.unwrap_or(Value::Null));
            }
            (None, Kind::Add) => {
                let v = value.unwrap_or(Value::Null);
                match root.get_mut(&key) {
                    Some(slot) if !slot.is_null() => add_into(slot, v),
                    _ => {
                        root.insert(key, v);
                    }
                }
            }
            (Some(sub), _) => {
                let slot = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if slot.is_null() {
                    *slot = Value::Object(Map::new());
                }
                let Value::Object(m) = slot else {
                    return Err(Fault::invalid_path(format!(
                        "Operations[{n}].path: {} has no sub-attribute {sub}",
                        path.attr
                    )));
                };
                let sk = key_in(m, sub);
                match kind {
                    Kind::Remove => {
                        m.remove(&sk);
                    }
                    _ => {
                        m.insert(sk, value.unwrap_or(Value::Null));
                    }
                }
            }
        },
        Some((f, text)) => {
            let items = match root.get_mut(&key) {
                Some(Value::Array(items)) => items,
                _ if kind == Kind::Remove => {
                    return Err(no_target(format!(
                        "Operations[{n}].path: no {} matches [{text}]",
                        path.attr
                    )))
                }
                _ => {
                    root.insert(key.clone(), Value::Array(Vec::new()));
                    match root.get_mut(&key) {
                        Some(Value::Array(items)) => items,
                        _ => return Err(Fault::internal("array vanished")),
                    }
                }
            };
            let hits: Vec<usize> = (0..items.len()).filter(|i| f.matches(&items[*i])).collect();
            if hits.is_empty() {
                if kind == Kind::Remove {
                    return Err(no_target(format!(
                        "Operations[{n}].path: no {} matches [{text}]",
                        path.attr
                    )));
                }
                // `add`/`replace` of `emails[type eq "work"].value` with no work e-mail
                // yet: the element the filter describes, with the value.
                let mut element = Map::new();
                for (k, v) in f.equalities() {
                    element.insert(k, v);
                }
                match (&path.sub, value) {
                    (Some(sub), Some(v)) => {
                        element.insert(sub.clone(), v);
                    }
                    (None, Some(Value::Object(m))) => element.extend(m),
                    _ => {
                        return Err(no_target(format!(
                            "Operations[{n}].path: no {} matches [{text}]",
                            path.attr
                        )))
                    }
                }
                items.push(Value::Object(element));
                return Ok(());
            }
            match kind {
                Kind::Remove => {
                    for i in hits.into_iter().rev() {
                        match &path.sub {
                            None => {
                                items.remove(i);
                            }
                            Some(sub) => {
                                if let Value::Object(m) = &mut items[i] {
                                    let sk = key_in(m, sub);
                                    m.remove(&sk);
                                }
                            }
                        }
                    }
                }
                _ => {
                    let v = value.unwrap_or(Value::Null);
                    for i in hits {
                        match (&path.sub, &mut items[i]) {
                            (Some(sub), Value::Object(m)) => {
                                let sk = key_in(m, sub);
                                m.insert(sk, v.clone());
                            }
                            (None, slot) => add_into(slot, v.clone()),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(doc: Value, ops: Value) -> Result<Value, Fault> {
        let mut doc = doc;
        let req: PatchOp = serde_json::from_value(json!({
            "schemas": [PATCH_SCHEMA],
            "Operations": ops,
        }))
        .unwrap();
        apply(&mut doc, &req)?;
        Ok(doc)
    }

    #[test]
    fn operations_apply_as_the_rfc_says() {
        let user = json!({
            "userName": "bj", "active": true, "displayName": "B J",
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "bj@example.com", "type": "work"}],
        });
        for (ops, want) in [
            (
                json!([{"op": "replace", "path": "active", "value": false}]),
                json!({"active": false}),
            ),
            (
                json!([{"op": "Replace", "path": "active", "value": "False"}]),
                json!({"active": false}),
            ),
            (
                json!([{"op": "replace", "value": {"active": false, "displayName": "X"}}]),
                json!({"active": false, "displayName": "X"}),
            ),
            (
                json!([{"op": "replace", "path": "name.familyName", "value": "Jensen"}]),
                json!({"name": {"givenName": "Barbara", "familyName": "Jensen"}}),
            ),
            (
                json!([{"op": "replace", "value": {"name.givenName": "Babs"}}]),
                json!({"name": {"givenName": "Babs"}}),
            ),
            (
                json!([{"op": "remove", "path": "name"}]),
                json!({"name": null}),
            ),
            (
                json!([{"op": "add", "path": "emails", "value": [{"value": "b@home.org", "type": "home"}]}]),
                json!({"emails": [{"value": "bj@example.com", "type": "work"}, {"value": "b@home.org", "type": "home"}]}),
            ),
            (
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}]),
                json!({"emails": [{"value": "new@example.com", "type": "work"}]}),
            ),
            (
                json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@home.org"}]),
                json!({"emails": [{"value": "bj@example.com", "type": "work"}, {"type": "home", "value": "h@home.org"}]}),
            ),
            (
                json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
                json!({"emails": []}),
            ),
            (
                json!([{"op": "replace", "path": "userName", "value": "bjensen"}]),
                json!({"userName": "bjensen"}),
            ),
        ] {
            let got = patch(user.clone(), ops.clone()).unwrap();
            for (k, v) in want.as_object().unwrap() {
                assert_eq!(got.get(k).unwrap_or(&Value::Null), v, "{ops}");
            }
        }
    }

    #[test]
    fn bad_operations_are_refused_with_their_scim_type() {
        let user = json!({"userName": "bj", "emails": []});
        for (ops, want) in [
            (
                json!([{"op": "move", "path": "active", "value": true}]),
                "invalidSyntax",
            ),
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
                "noTarget",
            ),
            (
                json!([{"op": "replace", "path": "emails[type eq", "value": 1}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "path": "a b", "value": 1}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "value": "not an object"}]),
                "invalidValue",
            ),
            (json!([{"op": "replace", "path": "active"}]), "invalidValue"),
        ] {
            match patch(user.clone(), ops.clone()) {
                Err(Fault::Scim {
                    status: 400,
                    scim_type: Some(t),
                    ..
                }) => assert_eq!(t, want, "{ops}"),
                other => panic!("{ops}: {other:?}"),
            }
        }
    }
}
