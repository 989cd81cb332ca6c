//! A tiny HTTP/1.1 client for tests: one request per connection (`Connection: close`),
//! any headers (duplicates included), and an optional local address to connect from.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::wire::{bad, Conn, Framing};

/// An HTTP request to send with [`Request::send`].
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    local: Option<IpAddr>,
    timeout: Duration,
}

impl Request {
    /// A request with `method` for `target` (origin form, e.g. `/api/x?y=1`).
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            local: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// `GET target`.
    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    /// Adds a header field; calling it twice with one name sends the field twice.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sets the body (sent with `Content-Length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Connects from this local address (port chosen by the system), e.g. `127.0.0.2`
    /// or `::1`, so the peer address Envoy sees is known.
    pub fn bind(mut self, local: IpAddr) -> Request {
        self.local = Some(local);
        self
    }

    /// Connect, read and write timeout (default 30 s; a safety net, not an assertion).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// The headers that will be sent, in order (without the ones `send` adds).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The request method.
    pub fn method_name(&self) -> &str {
        &self.method
    }

    /// The request target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The bytes `send` writes: the request line, the headers given (plus `Host` unless
    /// one was given, `Content-Length` when there is a body, and `Connection: close`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            head.push_str("host: tessera.test\r\n");
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        head.push_str("connection: close\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Connects to `to`, sends the request and reads the whole response.
    pub fn send(&self, to: SocketAddr) -> io::Result<Response> {
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
        if let Some(local) = self.local {
            socket.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
        }
        socket.connect_timeout(&SockAddr::from(to), self.timeout)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        let local_addr = stream.local_addr()?;
        (&stream).write_all(&self.to_bytes())?;
        let mut conn = Conn::new(&stream, None);
        let head = conn
            .read_head()?
            .ok_or_else(|| bad("connection closed before a response".into()))?;
        let mut parts = head.start_line.splitn(3, ' ');
        let _version = parts.next();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {:?}", head.start_line)))?;
        let framing = head.framing()?;
        let body = if self.method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else if framing == Framing::None {
            conn.read_to_end()?
        } else {
            conn.read_body(framing)?
        };
        Ok(Response {
            status,
            headers: head.headers,
            body,
            local_addr,
        })
    }
}

/// A response read by [`Request::send`].
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields in arrival order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The local address the request was sent from.
    pub local_addr: SocketAddr,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// All values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `reason` from a Tessera deny body.
    pub fn reason(&self) -> Option<String> {
        self.json()?.get("reason")?.as_str().map(str::to_owned)
    }

    /// `error` from a Tessera deny body.
    pub fn error(&self) -> Option<String> {
        self.json()?.get("error")?.as_str().map(str::to_owned)
    }

    /// The echo upstream's description of the request, if the response came from it.
    pub fn upstream(&self) -> Option<Value> {
        let v = self.json()?;
        (v.get("echo")?.as_str()? == "tessera-upstream").then_some(v)
    }

    /// Every value of request header `name` (case-insensitive) that reached the echo
    /// upstream; empty when none did (or the response did not come from it).
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        let Some(v) = self.upstream() else {
            return Vec::new();
        };
        v.get("headers")
            .and_then(Value::as_array)
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|pair| {
                        let n = pair.get(0)?.as_str()?;
                        let value = pair.get(1)?.as_str()?;
                        n.eq_ignore_ascii_case(name).then(|| value.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A one-line summary for failure messages.
    pub fn summary(&self) -> String {
        let mut body = self.text();
        if body.len() > 300 {
            let mut cut = 300;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        format!(
            "{} www-authenticate={:?} body={}",
            self.status,
            self.header("www-authenticate"),
            body
        )
    }
}
