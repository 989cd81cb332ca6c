//! RFC 4180 CSV writing.

/// Quotes a field when it holds a comma, quote, CR or LF (doubling inner quotes). A field
/// starting with `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do not run it.
pub fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One record, CRLF-terminated.
pub fn row<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = fields
        .iter()
        .map(|f| field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    out
}

/// Parses CSV text (for tests and the CLI): quoted fields may hold commas, quotes, newlines.
pub fn parse(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut rec = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') => quoted = true,
            (false, ',') => rec.push(std::mem::take(&mut cur)),
            (false, '\r') => {}
            (false, '\n') => {
                rec.push(std::mem::take(&mut cur));
                rows.push(std::mem::take(&mut rec));
                any = false;
            }
            (false, c) => cur.push(c),
        }
    }
    if any {
        rec.push(cur);
        rows.push(rec);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_round_trips() {
        let fields = ["plain", "a,b", "say \"hi\"", "two\nlines", "", "=SUM(A1)"];
        let line = row(&fields);
        assert_eq!(
            line,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,'=SUM(A1)\r\n"
        );
        let parsed = parse(&line);
        assert_eq!(
            parsed,
            vec![vec![
                "plain",
                "a,b",
                "say \"hi\"",
                "two\nlines",
                "",
                "'=SUM(A1)"
            ]]
        );
    }
}
