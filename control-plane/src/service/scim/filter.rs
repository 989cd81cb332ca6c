//! The SCIM filter subset Tessera answers (RFC 7644 3.4.2.2): comparisons
//! `<attrPath> <op> <value>` joined by `and`, where `op` is `eq`, `ne`, `co`, `sw`, `ew`
//! or `pr` (no value) and the value a JSON literal (string, boolean, number, null),
//! read by serde_json. Anything else (`or`, `not`, parentheses, `[...]` value filters,
//! `gt`/`ge`/`lt`/`le`) is refused with `invalidFilter` naming what is not supported.
//! Why not a crate: the one published filter crate (`scim-filter`) has had no release
//! since January 2024, filters whole in-memory collections through chrono and
//! rust_decimal, and documents none of its API; the subset identity providers send
//! (`userName eq "..."`, `externalId eq "..."`, `displayName eq "..."`) is this small.

use super::resource::Fault;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Pr,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    path: Vec<String>,
    op: Op,
    value: Value,
}

/// A parsed filter: every comparison must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    all: Vec<Comparison>,
}

const SUPPORTED: &str =
    "supported: <attribute> eq|ne|co|sw|ew <JSON value>, <attribute> pr, joined by 'and'";

fn refuse(why: impl std::fmt::Display) -> Fault {
    Fault::invalid_filter(format!("{why} ({SUPPORTED})"))
}

/// Parses `text`.
pub fn parse(text: &str) -> Result<Filter, Fault> {
    let mut rest = text.trim();
    let mut all = Vec::new();
    loop {
        let (c, after) = comparison(rest)?;
        all.push(c);
        rest = after.trim_start();
        if rest.is_empty() {
            break;
        }
        let (word, after) = split_word(rest);
        if !word.eq_ignore_ascii_case("and") {
            return Err(refuse(format!("{word:?} is not supported here")));
        }
        rest = after.trim_start();
    }
    Ok(Filter { all })
}

fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    s.split_at(end)
}

fn comparison(s: &str) -> Result<(Comparison, &str), Fault> {
    let (attr, rest) = split_word(s);
    if attr.is_empty() {
        return Err(refuse("the filter is empty"));
    }
    if attr.starts_with('(') || attr.eq_ignore_ascii_case("not") {
        return Err(refuse(format!(
            "{attr:?}: grouping and 'not' are not supported"
        )));
    }
    let path = attr_path(attr)?;
    let (op_word, rest) = split_word(rest.trim_start());
    let op = match op_word.to_ascii_lowercase().as_str() {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "co" => Op::Co,
        "sw" => Op::Sw,
        "ew" => Op::Ew,
        "pr" => Op::Pr,
        "" => return Err(refuse(format!("no operator after {attr:?}"))),
        other => return Err(refuse(format!("the operator {other:?} is not supported"))),
    };
    if op == Op::Pr {
        return Ok((
            Comparison {
                path,
                op,
                value: Value::Null,
            },
            rest,
        ));
    }
    let rest = rest.trim_start();
    // The value is a JSON literal (RFC 7644 3.4.2.2): serde_json reads one and says where
    // it ended.
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    let value = match stream.next() {
        Some(Ok(v)) if !v.is_object() && !v.is_array() => v,
        _ => {
            return Err(refuse(format!(
            "the value after {attr} {op_word} must be a JSON string, number, true, false or null"
        )))
        }
    };
    let end = stream.byte_offset();
    Ok((Comparison { path, op, value }, &rest[end..]))
}

fn attr_path(attr: &str) -> Result<Vec<String>, Fault> {
    // A fully qualified name (`urn:...:User:userName`) names the core schema's attribute.
    let short = match attr.rfind(':') {
        Some(i)
            if attr
                .to_ascii_lowercase()
                .starts_with("urn:ietf:params:scim:schemas:core:2.0:") =>
        {
            &attr[i + 1..]
        }
        _ => attr,
    };
    let parts: Vec<String> = short.split('.').map(str::to_string).collect();
    let ok = parts.iter().all(|p| {
        !p.is_empty()
            && p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '$')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    });
    if !ok || parts.len() > 2 {
        return Err(refuse(format!(
            "{attr:?} is not an attribute path this server filters on"
        )));
    }
    Ok(parts)
}

/// The values at `path` in `doc` (attribute names case-insensitive; a multi-valued
/// attribute gives each of its elements' values).
fn values_at<'a>(doc: &'a Value, path: &[String]) -> Vec<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return vec![doc];
    };
    match doc {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(first))
            .flat_map(|(_, v)| values_at(v, rest))
            .collect(),
        Value::Array(items) => items.iter().flat_map(|v| values_at(v, path)).collect(),
        _ => Vec::new(),
    }
}

fn flatten(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

impl Comparison {
    fn holds(&self, doc: &Value) -> bool {
        // `id` and `externalId` are case-exact (RFC 7643 3.1); the rest this server keeps
        // are not.
        let exact = matches!(
            self.path.last().map(|s| s.to_ascii_lowercase()).as_deref(),
            Some("id" | "externalid" | "value" | "$ref")
        ) && self.path.len() == 1;
        let found: Vec<&Value> = values_at(doc, &self.path)
            .into_iter()
            .flat_map(flatten)
            .filter(|v| !v.is_null())
            .collect();
        if self.op == Op::Pr {
            return found
                .iter()
                .any(|v| v.as_str().is_none_or(|s| !s.is_empty()));
        }
        let hit = found.iter().any(|v| match (v, &self.value) {
            (Value::String(a), Value::String(b)) => {
                let (a, b) = if exact {
                    (a.clone(), b.clone())
                } else {
                    (a.to_lowercase(), b.to_lowercase())
                };
                match self.op {
                    Op::Eq | Op::Ne => a == b,
                    Op::Co => a.contains(&b),
                    Op::Sw => a.starts_with(&b),
                    Op::Ew => a.ends_with(&b),
                    Op::Pr => true,
                }
            }
            (a, b) => matches!(self.op, Op::Eq | Op::Ne) && *a == b,
        });
        if self.op == Op::Ne {
            !hit
        } else {
            hit
        }
    }
}

impl Filter {
    /// The `attr eq value` comparisons of one-name attributes, to build the element a
    /// value filter describes.
    pub fn equalities(&self) -> Vec<(String, Value)> {
        self.all
            .iter()
            .filter(|c| c.op == Op::Eq && c.path.len() == 1)
            .map(|c| (c.path[0].clone(), c.value.clone()))
            .collect()
    }

    /// Whether the resource (as its JSON) matches.
    pub fn matches(&self, doc: &Value) -> bool {
        self.all.iter().all(|c| c.holds(doc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_match_as_the_rfc_says() {
        let doc = json!({
            "id": "usr_1", "userName": "BJensen@example.com", "active": true,
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "bj@example.com", "type": "work"}],
        });
        for (f, want) in [
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"USERNAME EQ "bjensen@example.com""#, true),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen@example.com""#,
                true,
            ),
            (r#"userName eq "other""#, false),
            (r#"userName ne "other""#, true),
            (r#"id eq "USR_1""#, false),
            (r#"id eq "usr_1""#, true),
            (r#"name.givenName sw "bar""#, true),
            (r#"emails.value co "@example""#, true),
            (r#"emails.value ew ".org""#, false),
            ("active eq true", true),
            ("active eq false", false),
            ("externalId pr", false),
            ("userName pr", true),
            (
                r#"userName eq "bjensen@example.com" and active eq true"#,
                true,
            ),
            (
                r#"userName eq "bjensen@example.com" and active eq false"#,
                false,
            ),
            (r#"userName eq "with \" quote and more""#, false),
        ] {
            assert_eq!(parse(f).unwrap().matches(&doc), want, "{f}");
        }
    }

    #[test]
    fn unsupported_filters_are_refused_with_invalid_filter() {
        for f in [
            "",
            r#"userName eq "a" or userName eq "b""#,
            r#"(userName eq "a")"#,
            r#"not (userName eq "a")"#,
            r#"emails[type eq "work"].value eq "x""#,
            r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
            "userName eq",
            "userName eq bare",
            r#"userName eq "unterminated"#,
            r#"userName eq "a" junk"#,
            r#"userName eq {"a": 1}"#,
        ] {
            match parse(f) {
                Err(Fault::Scim {
                    status: 400,
                    scim_type: Some("invalidFilter"),
                    detail,
                }) => {
                    assert!(detail.contains("supported"), "{f}: {detail}")
                }
                other => panic!("{f}: {other:?}"),
            }
        }
    }
}
