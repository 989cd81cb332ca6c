//! Webhooks across a crash, in real processes: a real `tessera serve` with a webhook
//! endpoint on a loopback port where nothing listens yet, events made (token revokes: the
//! outbox row is written in the revoke's own transaction), a first delivery attempt that
//! fails (connection refused), then the control plane SIGKILLed, the receiver started on
//! that port, and the control plane restarted on the same database: every message is
//! delivered after the restart, none lost, each signed as the Standard Webhooks
//! specification says (checked here with an HMAC of our own, not the server's code).
//! A last event is made and the control plane killed at once, whether or not its worker
//! got to it: it too arrives after the restart. Polls have a safety net only.
//!
//! Needs `TESSERA_CP_BIN`; `cargo xtask test` sets it.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tessera_host_tests::{control_plane_path, ControlPlane, ControlPlaneOptions};

/// A safety net for polling, not a measure (the first retry comes 5 s after a failure).
const SAFETY_NET: Duration = Duration::from_secs(60);

/// One request the receiver got: lower-cased header names and values, and the body.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A loopback receiver on a given port: answers every request 204 and records it.
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).expect("receiver port");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    if let Some(r) = read_request(&mut stream) {
                        seen.lock().expect("seen").push(r);
                        let _ = stream.write_all(
                            b"HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                        );
                    }
                }
            })
        };
        Receiver {
            seen,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// The Standard Webhooks check, written from the specification: the key is the base64
/// after `whsec_`; the signed content is `id.timestamp.body`; the header holds
/// space-separated `v1,<base64>` signatures, one of which must match.
fn verifies(secret: &str, r: &Received) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
    else {
        return false;
    };
    let (Some(id), Some(ts), Some(sigs)) = (
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
    ) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    sigs.split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}

fn deliveries(cp: &ControlPlane, admin: &str, hook: &str) -> Vec<Value> {
    cp.api(
        "GET",
        &format!(
            "/v1/orgs/{}/webhooks/{hook}/deliveries?per_page=500",
            cp.org()
        ),
        Some(admin),
        None,
    )
    .expect("deliveries")["deliveries"]
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn events_survive_a_sigkill_between_the_event_and_its_delivery() {
    // A port with nothing on it (yet): attempts fail with "connection refused".
    let port_holder = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = port_holder.local_addr().expect("addr");
    drop(port_holder);

    // The receiver is on loopback: allowed only with the operator's flag.
    let mut options = ControlPlaneOptions::new(&control_plane_path());
    options.serve_args = vec!["--webhook-private-destinations".into()];
    let mut cp = ControlPlane::start(&options).unwrap_or_else(|e| panic!("control plane: {e}"));
    let alice = cp.admin_token().to_owned();
    let created = cp
        .api(
            "POST",
            &format!("/v1/orgs/{}/webhooks", cp.org()),
            Some(&alice),
            Some(&json!({"url": format!("http://{addr}/hooks"), "events": ["token.revoked"]})),
        )
        .expect("create webhook");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let hook = created["webhook"]["id"].as_str().expect("id").to_owned();

    // Two events; each outbox row is committed with its revoke.
    let mut revoked = Vec::new();
    for name in ["one", "two"] {
        let (id, _) = cp
            .create_and_download(&alice, name, &["read"])
            .expect("token");
        cp.revoke(&alice, &id).expect("revoke");
        revoked.push(id);
    }
    // The worker tries once and fails (nothing listens): both are pending.
    let since = Instant::now();
    loop {
        let d = deliveries(&cp, &alice, &hook);
        if d.len() == 2 && d.iter().all(|m| m["attempts"].as_i64() >= Some(1)) {
            assert!(d.iter().all(|m| m["status"] == "pending"), "{d:?}");
            break;
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "no failed first attempts: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The crash, with both messages owed.
    cp.kill();
    let receiver = Receiver::start(addr);
    cp.restart().expect("restart");
    // A third event, and a crash at once after it (its delivery may or may not have begun).
    let (third, _) = cp
        .create_and_download(&alice, "three", &["read"])
        .expect("token");
    cp.revoke(&alice, &third).expect("revoke");
    revoked.push(third);
    cp.kill();
    cp.restart().expect("restart");

    // Every message arrives, signed; none is lost.
    let since = Instant::now();
    let messages = loop {
        let d = deliveries(&cp, &alice, &hook);
        let got = receiver.received();
        let ids: Vec<&str> = got.iter().filter_map(|r| r.header("webhook-id")).collect();
        if d.len() == 3
            && d.iter()
                .all(|m| ids.contains(&m["id"].as_str().unwrap_or("")))
        {
            break d;
        }
        assert!(
            since.elapsed() < SAFETY_NET,
            "not every message arrived: log {d:?}, received {got:?}\n{}",
            cp.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "[webhooks] {} messages delivered after the restarts, {:?} after the last one",
        messages.len(),
        since.elapsed()
    );
    let got = receiver.received();
    for r in &got {
        assert!(verifies(&secret, r), "a bad signature: {r:?}");
        assert!(!verifies(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            r
        ));
        let body: Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(body["type"], "token.revoked");
    }
    // Each revoked token's event arrived (at least once: receivers de-duplicate on the id).
    for id in &revoked {
        assert!(
            got.iter().any(|r| r.body.contains(id.as_str())),
            "no event for {id}: {got:?}"
        );
    }
    // The delivery log says so, and a resend sends the same id again.
    let since = Instant::now();
    loop {
        let d = deliveries(&cp, &alice, &hook);
        if d.iter().all(|m| m["status"] == "delivered") {
            break;
        }
        assert!(since.elapsed() < SAFETY_NET, "not marked delivered: {d:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = messages[0]["id"].as_str().expect("id").to_owned();
    let before = got.len();
    cp.api(
        "POST",
        &format!(
            "/v1/orgs/{}/webhooks/{hook}/deliveries/{first}/resend",
            cp.org()
        ),
        Some(&alice),
        None,
    )
    .expect("resend");
    let since = Instant::now();
    while receiver.received().len() == before {
        assert!(since.elapsed() < SAFETY_NET, "the resend did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = receiver.received().last().cloned().expect("one");
    assert_eq!(last.header("webhook-id"), Some(first.as_str()));
    assert!(verifies(&secret, &last));
}
