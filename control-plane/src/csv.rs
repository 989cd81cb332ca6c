//! CSV for exports: RFC 4180 through the `csv` crate, with spreadsheet formulas neutralised.
//!
//! **The neutralisation rule** (OWASP, "CSV Injection"): a cell whose first character is
//! `=`, `+`, `-`, `@`, TAB (U+0009) or CR (U+000D) gets a single quote `'` in front, so a
//! spreadsheet shows it as text instead of evaluating it. Nothing else in the cell changes;
//! the `csv` crate then quotes it when it holds a comma, a quote, CR or LF (inner quotes
//! doubled). Every cell is treated alike, headers too, so `-1` is written as `'-1`. Records
//! end with CRLF.

use std::io::{self, Write};

/// The first characters a spreadsheet may take as the start of a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// The cell as it is written: with `'` in front when it starts with one of
/// [`FORMULA_STARTS`] (not yet quoted; the writer quotes).
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Writes CSV records to `W` as they come, so an export of any size streams in flat memory.
///
/// ```
/// let mut w = tessera_control_plane::csv::CsvWriter::new(Vec::new());
/// w.header(&["name", "n"]).unwrap();
/// w.row(&["=1+1", "2"]).unwrap();
/// assert_eq!(w.into_inner().unwrap(), b"name,n\r\n'=1+1,2\r\n");
/// ```
pub struct CsvWriter<W: Write> {
    inner: ::csv::Writer<W>,
}

fn writer<W: Write>(out: W) -> ::csv::Writer<W> {
    ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::CRLF)
        .quote_style(::csv::QuoteStyle::Necessary)
        .flexible(true)
        .from_writer(out)
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        CsvWriter { inner: writer(out) }
    }

    /// The header record (neutralised like any other).
    pub fn header<S: AsRef<str>>(&mut self, columns: &[S]) -> io::Result<()> {
        self.row(columns)
    }

    /// One record, each cell neutralised.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) -> io::Result<()> {
        self.inner
            .write_record(cells.iter().map(|c| neutralise(c.as_ref()).into_owned()))
            .map_err(into_io)
    }

    /// Pushes what is buffered to `W`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// `W` itself (what was written reaches it on [`flush`](Self::flush)).
    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }

    /// Flushes and gives back `W`.
    pub fn into_inner(self) -> io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

impl CsvWriter<Vec<u8>> {
    /// The bytes written since the last call, for a streamed response body.
    pub fn take_chunk(&mut self) -> io::Result<Vec<u8>> {
        std::mem::replace(&mut self.inner, writer(Vec::new()))
            .into_inner()
            .map_err(|e| e.into_error())
    }
}

fn into_io(e: ::csv::Error) -> io::Error {
    match e.into_kind() {
        ::csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("csv: {other:?}")),
    }
}

/// One record, neutralised and CRLF-terminated.
pub fn row<S: AsRef<str>>(cells: &[S]) -> String {
    let mut w = CsvWriter::new(Vec::new());
    // Writing to a Vec cannot fail, and every cell is a valid `str`.
    let bytes = w
        .row(cells)
        .and_then(|()| w.into_inner())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads CSV text (for tests and the CLI): every record, with quoted cells unquoted. Cells
/// are returned as written, so a neutralised cell keeps its `'`. Reading stops at the first
/// malformed record (not valid UTF-8).
pub fn parse(text: &str) -> Vec<Vec<String>> {
    ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .into_records()
        .map_while(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell, and how it must appear in the file (between the commas).
    const HOSTILE: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("", ""),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tX", "'\tX"),
        ("\rX", "\"'\rX\""),
        (
            "=HYPERLINK(\"http://x\",\"y\")",
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
        ),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ("two\nlines", "\"two\nlines\""),
        ("all, \"three\"\r\nkinds", "\"all, \"\"three\"\"\r\nkinds\""),
        ("x=1", "x=1"),
        (" =1", " =1"),
        ("'quoted", "'quoted"),
        ("ünïcødé ✓ 日本", "ünïcødé ✓ 日本"),
        ("＝1", "＝1"),
        ("\u{1b}[2K", "\u{1b}[2K"),
    ];

    #[test]
    fn hostile_cells_are_neutralised_and_quoted() {
        for (cell, written) in HOSTILE {
            assert_eq!(
                row(&[cell, &"end"]),
                format!("{written},end\r\n"),
                "{cell:?}"
            );
        }
    }

    #[test]
    fn the_csv_reader_reads_back_what_was_meant() {
        let mut w = CsvWriter::new(Vec::new());
        w.header(&["cell", "kind"]).unwrap();
        for (cell, _) in HOSTILE {
            w.row(&[cell.to_string(), "k".to_string()]).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let mut reader = ::csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap(), vec!["cell", "kind"]);
        let read: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(read.len(), HOSTILE.len());
        for ((cell, _), rec) in HOSTILE.iter().zip(&read) {
            assert_eq!(rec[0], neutralise(cell), "{cell:?}");
            assert_eq!(rec[1], "k");
        }
        // `parse` agrees with the crate's reader.
        let text = String::from_utf8(bytes).unwrap();
        let parsed = parse(&text);
        assert_eq!(parsed[0], vec!["cell", "kind"]);
        assert_eq!(parsed[1..], read[..]);
    }

    #[test]
    fn only_the_listed_first_characters_are_neutralised() {
        for c in ['=', '+', '-', '@', '\t', '\r'] {
            assert!(neutralise(&format!("{c}x")).starts_with('\''), "{c:?}");
        }
        for c in ['a', '0', ' ', '\n', '\'', '"', '#', '%', '(', '|'] {
            assert_eq!(neutralise(&format!("{c}x")), format!("{c}x"), "{c:?}");
        }
    }

    #[test]
    fn streams_in_chunks() {
        let mut w = CsvWriter::new(Vec::new());
        w.header(&["n"]).unwrap();
        let mut all = w.take_chunk().unwrap();
        assert_eq!(all, b"n\r\n");
        for i in 0..1000 {
            w.row(&[i.to_string()]).unwrap();
            if i % 100 == 99 {
                let chunk = w.take_chunk().unwrap();
                assert!(!chunk.is_empty());
                all.extend(chunk);
            }
        }
        all.extend(w.into_inner().unwrap());
        let rows = parse(std::str::from_utf8(&all).unwrap());
        assert_eq!(rows.len(), 1001);
        assert_eq!(rows[1000], vec!["999"]);
    }

    #[test]
    fn parses_what_the_old_writer_wrote() {
        assert!(parse("").is_empty());
        assert_eq!(
            parse("a,\"b,c\"\r\n,\"say \"\"hi\"\"\"\r\n'=1,\"x\ny\"\n"),
            vec![
                vec!["a", "b,c"],
                vec!["", "say \"hi\""],
                vec!["'=1", "x\ny"]
            ]
        );
    }
}
