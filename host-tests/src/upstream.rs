//! The echo upstream: answers every request `200` with a JSON description of what it got.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::wire::Conn;

/// How often a connection thread looks at the stop flag while waiting for bytes.
const POLL: Duration = Duration::from_millis(100);

type Conns = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// A std-only HTTP/1.1 server on `127.0.0.1:<ephemeral>` (one thread per connection,
/// keep-alive supported). Every request gets `200` and a JSON body:
///
/// ```json
/// {"echo": "tessera-upstream", "method": "GET", "path": "/x", "version": "HTTP/1.1",
///  "request_line": "GET /x HTTP/1.1", "headers": [["host", "..."], ...], "body_bytes": 0}
/// ```
///
/// Headers are listed in arrival order, duplicates included, names as received. Every
/// request is also recorded (see [`EchoUpstream::requests`]). Dropping the value stops the
/// accept loop and every connection thread and waits for them.
pub struct EchoUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    conns: Conns,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl EchoUpstream {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> io::Result<EchoUpstream> {
        EchoUpstream::start_with(None)
    }

    /// Like [`EchoUpstream::start`], but every request is answered with `body` (a fixed
    /// document, such as a key set a test publishes); requests are still recorded.
    pub fn serving(body: Value) -> io::Result<EchoUpstream> {
        EchoUpstream::start_with(Some(Arc::new(body)))
    }

    fn start_with(fixed: Option<Arc<Value>>) -> io::Result<EchoUpstream> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            let seen = Arc::clone(&seen);
            std::thread::Builder::new()
                .name("echo-accept".into())
                .spawn(move || accept_loop(listener, stop, conns, seen, fixed))?
        };
        Ok(EchoUpstream {
            addr,
            stop,
            acceptor: Some(acceptor),
            conns,
            seen,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request served so far, as the JSON bodies that were sent back.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// How many requests were served so far.
    pub fn request_count(&self) -> usize {
        self.seen.lock().map(|v| v.len()).unwrap_or(0)
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let conns = match self.conns.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => Vec::new(),
        };
        for (stream, handle) in conns {
            let _ = stream.shutdown(Shutdown::Both);
            let _ = handle.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    conns: Conns,
    seen: Arc<Mutex<Vec<Value>>>,
    fixed: Option<Arc<Value>>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(control) = stream.try_clone() else {
            continue;
        };
        let stop_c = Arc::clone(&stop);
        let seen_c = Arc::clone(&seen);
        let fixed_c = fixed.clone();
        let spawned = std::thread::Builder::new()
            .name("echo-conn".into())
            .spawn(move || {
                let _ = serve(stream, &stop_c, &seen_c, fixed_c.as_deref());
            });
        if let (Ok(handle), Ok(mut list)) = (spawned, conns.lock()) {
            // Reap finished connections so the list stays short.
            let mut i = 0;
            while i < list.len() {
                if list[i].1.is_finished() {
                    let (_, h) = list.swap_remove(i);
                    let _ = h.join();
                } else {
                    i += 1;
                }
            }
            list.push((control, handle));
        }
    }
}

fn serve(
    stream: TcpStream,
    stop: &AtomicBool,
    seen: &Mutex<Vec<Value>>,
    fixed: Option<&Value>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut conn = Conn::new(stream, Some(stop));
    loop {
        let Some(head) = conn.read_head()? else {
            return Ok(());
        };
        let framing = match head.framing() {
            Ok(f) => f,
            Err(e) => {
                let _ = out.write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                return Err(e);
            }
        };
        let body = conn.read_body(framing)?;
        let mut parts = head.start_line.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let version = parts.next().unwrap_or_default().to_owned();
        let close = head.has_token("connection", "close")
            || (version == "HTTP/1.0" && !head.has_token("connection", "keep-alive"));
        let description = json!({
            "echo": "tessera-upstream",
            "method": method,
            "path": path,
            "version": version,
            "request_line": head.start_line,
            "headers": head.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "body_bytes": body.len(),
        });
        let payload =
            serde_json::to_vec(fixed.unwrap_or(&description)).map_err(io::Error::other)?;
        if let Ok(mut s) = seen.lock() {
            s.push(description);
        }
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            payload.len(),
            if close { "connection: close\r\n" } else { "" }
        )
        .into_bytes();
        if method != "HEAD" {
            response.extend_from_slice(&payload);
        }
        out.write_all(&response)?;
        out.flush()?;
        if close {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
