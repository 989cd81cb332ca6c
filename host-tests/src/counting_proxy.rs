//! A loopback HTTP/1.1 proxy that records every request passing through it, with when it
//! started and ended: put between Envoy and the control plane, it shows how many long
//! polls one Envoy process keeps open at a time, without touching the control plane.
//!
//! One request per connection: the request goes upstream with `Connection: close`, the
//! response streams back until the control plane closes, and the record ends when either
//! side closes (Envoy cancelling a call closes its side).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One proxied request.
#[derive(Clone, Debug)]
pub struct Record {
    /// The request target (path and query).
    pub path: String,
    /// When its head arrived.
    pub start: Instant,
    /// When the exchange ended (`None` while open).
    pub end: Option<Instant>,
}

/// The running proxy; dropping it stops accepting (open exchanges end with their peers).
pub struct CountingProxy {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn exchange(
    mut down: TcpStream,
    upstream: SocketAddr,
    records: &Mutex<Vec<Record>>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        let n = down.read(&mut chunk)?;
        if n == 0 || buf.len() > 65_536 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut content_length = 0usize;
    let mut rewritten = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("connection: close\r\n\r\n");
    let mut body = buf[end..].to_vec();
    while body.len() < content_length {
        let n = down.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }

    let index = {
        let mut r = records.lock().unwrap_or_else(|p| p.into_inner());
        r.push(Record {
            path,
            start: Instant::now(),
            end: None,
        });
        r.len() - 1
    };
    let finish = || {
        let mut r = records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = r.get_mut(index) {
            rec.end.get_or_insert_with(Instant::now);
        }
    };
    let mut up = match TcpStream::connect(upstream) {
        Ok(up) => up,
        Err(e) => {
            finish();
            return Err(e);
        }
    };
    up.write_all(rewritten.as_bytes())?;
    up.write_all(&body)?;
    // Envoy closing its side (a cancelled call) ends the exchange: watch for it.
    let (down_watch, up_watch) = (down.try_clone()?, up.try_clone()?);
    let watcher = std::thread::spawn(move || {
        let mut down_watch = down_watch;
        let mut sink = [0u8; 1024];
        while matches!(down_watch.read(&mut sink), Ok(n) if n > 0) {}
        let _ = up_watch.shutdown(Shutdown::Both);
    });
    let copied = io::copy(&mut up, &mut down);
    finish();
    let _ = down.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = watcher.join();
    copied.map(|_| ())
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<CountingProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (records.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let r = r.clone();
                        let _ = down.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let _ = exchange(down, upstream, &r);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(CountingProxy {
            addr,
            records,
            stop,
            accept: Some(accept),
        })
    }

    /// Where Envoy should send the control plane's traffic.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests matching `pred` that are open now.
    pub fn open(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.records()
            .iter()
            .filter(|r| r.end.is_none() && pred(&r.path))
            .count()
    }

    /// The largest number of requests matching `pred` that were ever open at once.
    pub fn max_concurrent(&self, pred: impl Fn(&str) -> bool) -> usize {
        let mut events: Vec<(Instant, i32)> = Vec::new();
        for r in self.records().iter().filter(|r| pred(&r.path)) {
            events.push((r.start, 1));
            if let Some(end) = r.end {
                events.push((end, -1));
            }
        }
        // Ends before starts at the same instant: a poll that follows another is not
        // concurrent with it.
        events.sort_by_key(|&(t, d)| (t, d));
        let (mut open, mut max) = (0i32, 0i32);
        for (_, d) in events {
            open += d;
            max = max.max(open);
        }
        usize::try_from(max).unwrap_or(0)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
