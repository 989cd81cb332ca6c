//! HTTP/1.1 message framing shared by the client and the echo upstream: just enough of
//! RFC 9112 for talking to Envoy (heads, `Content-Length`, chunked bodies).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest head accepted (request line or status line plus headers).
pub(crate) const MAX_HEAD: usize = 1 << 20;
/// Largest body accepted.
pub(crate) const MAX_BODY: usize = 16 << 20;

/// A message head: the start line and the header fields in arrival order.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// All values of `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any value of `name`, split on commas, equals `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The body framing this head announces.
    pub fn framing(&self) -> io::Result<Framing> {
        if self.has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        let mut lengths = self.values("content-length");
        match lengths.next() {
            None => Ok(Framing::None),
            Some(v) => {
                let n: usize = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("bad content-length {v:?}")))?;
                if lengths.any(|other| other.trim() != v.trim()) {
                    return Err(bad("conflicting content-length".into()));
                }
                if n > MAX_BODY {
                    return Err(bad(format!("body of {n} bytes is too large")));
                }
                Ok(Framing::Length(n))
            }
        }
    }
}

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(usize),
    Chunked,
}

pub(crate) fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A buffered reader over a stream with a read timeout. When `stop` is given, a timeout
/// only ends the read once `stop` is set (the echo upstream polls it); without `stop`, a
/// timeout is an error (the client).
pub(crate) struct Conn<'s, R: Read> {
    inner: R,
    buf: Vec<u8>,
    stop: Option<&'s AtomicBool>,
}

impl<'s, R: Read> Conn<'s, R> {
    pub fn new(inner: R, stop: Option<&'s AtomicBool>) -> Self {
        Conn {
            inner,
            buf: Vec::new(),
            stop,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.inner.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    match self.stop {
                        Some(stop) if !stop.load(Ordering::SeqCst) => continue,
                        _ => return Err(e),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one head. `Ok(None)` if the stream ended cleanly before any byte of it.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        let end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("head too large".into()));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(bad("stream ended inside a head".into()));
            }
        };
        let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Some(Head {
            start_line,
            headers,
        }))
    }

    /// Takes exactly `n` bytes.
    pub fn read_exact_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(bad("stream ended inside a body".into()));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("line too long".into()));
            }
            if self.fill()? == 0 {
                return Err(bad("stream ended inside a line".into()));
            }
        }
    }

    /// Decodes a chunked body (trailers are read and dropped).
    pub fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("chunked body too large".into()));
            }
            if size == 0 {
                // Trailer section up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact_bytes(size)?);
            if !self.read_line()?.is_empty() {
                return Err(bad("chunk not followed by CRLF".into()));
            }
        }
    }

    /// Reads the body announced by `framing`; `Framing::None` reads nothing.
    pub fn read_body(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => self.read_exact_bytes(n),
            Framing::Chunked => self.read_chunked(),
        }
    }

    /// Reads everything up to the end of the stream.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? != 0 {
            if self.buf.len() > MAX_BODY {
                return Err(bad("body too large".into()));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
