//! How the CLI shows what the API answers: tables, key/value lists, JSON and CSV.
//!
//! Everything the server sends is data, never terminal control: in tables and key/value
//! output, control characters (C0, DEL, C1) and the Unicode bidirectional controls are
//! shown escaped (`\u{1b}`, `\r`, `\n`, `\t`), so a token named `x\e[2K\r\e[1Afake` cannot
//! rewrite the admin's screen. JSON output escapes them too (C0 by JSON itself, C1 and bidi
//! controls as `\u` escapes). CSV is data for a file: its cells are neutralised as
//! `crate::csv` describes and otherwise written as they are.
//!
//! Every function writes to the `Write` it is given and returns the write error, so a
//! closed pipe (`tessera tokens list | head -2`) ends the command instead of a panic.

use crate::csv::CsvWriter;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{self, Write};

/// Output format (`--output`, `-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Csv,
}

/// The columns of `tessera tokens list` as a table.
pub const TOKEN_TABLE: [&str; 7] = [
    "id",
    "username",
    "name",
    "status",
    "expires_at",
    "scopes",
    "last_used_at",
];

/// Whether `c` must not reach a terminal raw: the service's one rule for names
/// (`service::input::is_control`: Cc, Cf, Zl, Zp and invisible fillers).
fn is_terminal_control(c: char) -> bool {
    crate::service::input::is_control(c)
}

/// `s` with every terminal control written as an escape (`\n`, `\r`, `\t`, else `\u{..}`).
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(is_terminal_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_terminal_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// JSON text with the characters JSON leaves raw but a terminal may act on (C1, bidi
/// controls) written as `\uXXXX`. They can only occur inside strings, where the escape means
/// the same character.
fn escape_json_text(json: &str) -> String {
    if !json.chars().any(is_terminal_control) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_terminal_control(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as one table or CSV cell (arrays space-separated, null empty).
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    }
}

/// A list of tokens: the token table, every column as CSV, or JSON.
pub fn tokens(w: &mut dyn Write, out: Output, tokens: &[Value]) -> io::Result<()> {
    match out {
        Output::Csv => list(w, out, tokens, &crate::service::views::TOKEN_COLUMNS),
        _ => list(w, out, tokens, &TOKEN_TABLE),
    }
}

/// One token: as a one-row token table, CSV, or its JSON.
pub fn token(w: &mut dyn Write, out: Output, token: &Value) -> io::Result<()> {
    match out {
        Output::Json => one(w, out, token),
        _ => tokens(w, out, std::slice::from_ref(token)),
    }
}

/// One object: `key  value` lines, a one-row CSV with its keys as header, or JSON.
pub fn one(w: &mut dyn Write, out: Output, v: &Value) -> io::Result<()> {
    match (out, v) {
        (Output::Json, _) => json(w, v),
        (_, Value::Object(m)) => {
            if out == Output::Csv {
                let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                return list(w, out, std::slice::from_ref(v), &keys);
            }
            // Nested objects (`/v1/me`'s user and org) as `user.username` lines.
            let mut lines = Vec::new();
            flatten("", v, &mut lines);
            let width = lines
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0);
            for (k, val) in lines {
                writeln!(
                    w,
                    "{:width$}  {}",
                    escape_controls(&k),
                    escape_controls(&val)
                )?;
            }
            Ok(())
        }
        _ => writeln!(w, "{}", escape_json_text(&v.to_string())),
    }
}

/// `(dotted key, cell)` of every non-object value under `v`, in order.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, val, out);
            }
        }
        other => out.push((prefix.to_string(), cell(Some(other)))),
    }
}

/// Rows as a table of `cols` (headers upper-cased, columns padded), CSV, or a JSON array.
pub fn list(w: &mut dyn Write, out: Output, rows: &[Value], cols: &[&str]) -> io::Result<()> {
    match out {
        Output::Json => json(w, &Value::from(rows.to_vec())),
        Output::Csv => {
            let mut csv = CsvWriter::new(w);
            csv.header(cols)?;
            for r in rows {
                let cells: Vec<String> = cols.iter().map(|c| cell(r.get(*c))).collect();
                csv.row(&cells)?;
            }
            csv.flush()
        }
        Output::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|c| escape_controls(&cell(r.get(*c))))
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    cells
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([c.chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |fields: Vec<String>| {
                fields
                    .iter()
                    .zip(&widths)
                    .map(|(f, w)| format!("{f:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            writeln!(
                w,
                "{}",
                line(cols.iter().map(|c| c.to_uppercase()).collect())
            )?;
            for r in cells {
                writeln!(w, "{}", line(r))?;
            }
            Ok(())
        }
    }
}

/// Pretty JSON, terminal controls escaped.
pub fn json(w: &mut dyn Write, v: &Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(io::Error::other)?;
    writeln!(w, "{}", escape_json_text(&text))
}

/// One line of plain text from the server (a JWT, a message), terminal controls escaped.
pub fn line(w: &mut dyn Write, text: &str) -> io::Result<()> {
    writeln!(w, "{}", escape_controls(text))
}

/// A note for the person at the terminal, on stderr. A closed stderr is ignored: notes are
/// never the command's output.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr(), "{}", escape_controls(text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut buf = Vec::new();
        f(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// No byte a terminal acts on: C0 except the line feeds the renderer itself writes,
    /// DEL, and the UTF-8 forms of C1 and the bidi controls.
    fn assert_inert(text: &str) {
        for (i, c) in text.char_indices() {
            assert!(
                c == '\n' || !is_terminal_control(c),
                "raw {c:?} at byte {i} in {text:?}"
            );
        }
    }

    #[test]
    fn escapes_each_kind_of_control() {
        for (raw, shown) in [
            ("plain name", "plain name"),
            (
                "legit\u{1b}[2K\r\u{1b}[1Afake",
                "legit\\u{1b}[2K\\r\\u{1b}[1Afake",
            ),
            ("bell\u{7}", "bell\\u{7}"),
            ("two\nlines", "two\\nlines"),
            ("tab\there", "tab\\there"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("osc\u{9d}0;title\u{9c}", "osc\\u{9d}0;title\\u{9c}"),
            ("rtl\u{202e}gnp.exe", "rtl\\u{202e}gnp.exe"),
            ("isolate\u{2066}x\u{2069}", "isolate\\u{2066}x\\u{2069}"),
            ("ünïcødé ✓ 日本", "ünïcødé ✓ 日本"),
            ("back\\slash", "back\\slash"),
        ] {
            assert_eq!(escape_controls(raw), shown, "{raw:?}");
            assert_inert(&escape_controls(raw));
        }
    }

    const HOSTILE: &str = "legit\u{1b}[2K\r\u{1b}[1Afake\u{7}\u{9b}2J\u{202e}";

    #[test]
    fn tables_and_key_values_show_controls_escaped() {
        let t = json!({
            "id": "tok_1", "username": "bob\u{1b}]0;pwned\u{7}", "name": HOSTILE,
            "description": "d\re", "status": "enabled", "expires_at": "2026-01-01T00:00:00Z",
            "scopes": ["read\u{1b}", "write"], "last_used_at": null,
        });
        let table = render(|w| tokens(w, Output::Table, std::slice::from_ref(&t)));
        assert_inert(&table);
        assert!(table.contains("legit\\u{1b}[2K\\r\\u{1b}[1Afake\\u{7}\\u{9b}2J\\u{202e}"));
        assert!(table.contains("bob\\u{1b}]0;pwned\\u{7}"));
        assert!(table.contains("read\\u{1b} write"));
        assert_eq!(table.lines().count(), 2);
        assert!(table.starts_with("ID"));

        let kv = render(|w| one(w, Output::Table, &t));
        assert_inert(&kv);
        assert!(kv.contains("description   d\\re\n"));
        assert_eq!(kv.lines().count(), 8);

        let user = json!({"id": "usr_1", "display_name": HOSTILE});
        let users = render(|w| list(w, Output::Table, &[user], &["id", "display_name"]));
        assert_inert(&users);
    }

    #[test]
    fn json_output_escapes_controls_and_keeps_the_value() {
        let v = json!({"name": HOSTILE, "list": [HOSTILE]});
        let text = render(|w| one(w, Output::Json, &v));
        assert_inert(&text);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        let text = render(|w| list(w, Output::Json, std::slice::from_ref(&v), &["name"]));
        assert_inert(&text);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!([v]));
    }

    #[test]
    fn csv_output_is_neutralised_data() {
        let t = json!({"id": "tok_1", "name": "=cmd", "scopes": ["a", "b"]});
        let text = render(|w| list(w, Output::Csv, &[t], &["id", "name", "scopes"]));
        assert_eq!(text, "id,name,scopes\r\ntok_1,'=cmd,a b\r\n");
    }

    #[test]
    fn table_layout() {
        let rows = [json!({"a": "x", "b": 1}), json!({"a": "longer", "b": null})];
        let text = render(|w| list(w, Output::Table, &rows, &["a", "b"]));
        assert_eq!(text, "A       B\nx       1\nlonger\n");
    }

    #[test]
    fn nested_objects_are_dotted_lines_not_json() {
        let me = json!({
            "user": {"id": "usr_1", "username": "bob", "role": "user"},
            "org": {"id": "acme", "name": "Acme"},
            "token": "tok_1",
        });
        let text = render(|w| one(w, Output::Table, &me));
        assert!(!text.contains('{'), "{text}");
        assert!(text.contains("user.username  bob\n"), "{text}");
        assert!(text.contains("org.name       Acme\n"), "{text}");
        assert!(text.contains("token          tok_1\n"), "{text}");
        assert_eq!(text.lines().count(), 6);
    }

    /// A writer that is a closed pipe.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_pipe_is_an_error_not_a_panic() {
        let rows = [json!({"id": "x"})];
        for out in [Output::Table, Output::Json, Output::Csv] {
            let e = list(&mut ClosedPipe, out, &rows, &["id"]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{out:?}");
            let e = one(&mut ClosedPipe, out, &rows[0]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{out:?}");
        }
    }
}
