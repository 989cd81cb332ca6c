//! Long-poll fan-out: many edges hold a status-list long poll open, spread over the
//! control plane's replicas; one revoke must answer every one of them. Each poller is a
//! thread with a blocking loopback connection (1,000 threads are cheap here; the server's
//! side is what is measured).

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tessera_host_tests::Request;

use crate::tools::Result;

/// What the pollers saw.
pub struct FanOut {
    pub polls: usize,
    pub replicas: usize,
    /// Milliseconds from the revoke request being sent to each poll's answer, sorted.
    pub ms: Vec<f64>,
    /// Milliseconds the revoke request itself took.
    pub revoke_ms: f64,
}

impl FanOut {
    pub fn percentile(&self, p: f64) -> f64 {
        super::stats::percentile_or_nan(&self.ms, p)
    }
}

/// Opens `polls` long polls of `path` (e.g. `/v1/orgs/acme/status-list?since=7&wait=30`)
/// spread round-robin over `replicas`, waits until all are in flight, runs `revoke`, and
/// times each poll's answer from the moment `revoke` was called. Every poll must answer
/// 200 (the list changed), none before the revoke.
pub fn measure(
    replicas: &[SocketAddr],
    path: &str,
    polls: usize,
    revoke: impl FnOnce() -> Result<()>,
) -> Result<FanOut> {
    if replicas.is_empty() {
        return Err("no replica to poll".into());
    }
    let start_line = Arc::new(Barrier::new(polls + 1));
    let mut handles = Vec::with_capacity(polls);
    for i in 0..polls {
        let addr = replicas[i % replicas.len()];
        let path = path.to_string();
        let start_line = start_line.clone();
        let h = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                start_line.wait();
                let r = Request::get(&path)
                    .timeout(Duration::from_secs(60))
                    .send(addr);
                (Instant::now(), r.map(|r| r.status))
            })
            .map_err(|e| format!("could not start poller {i}: {e}"))?;
        handles.push(h);
    }
    start_line.wait();
    // The pollers connect and send within milliseconds; give the slowest a margin
    // before the change (an answer before it would be a failure below).
    std::thread::sleep(Duration::from_secs(3));
    let sent = Instant::now();
    revoke()?;
    let revoke_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let mut ms = Vec::with_capacity(polls);
    let mut failures = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok((at, Ok(200))) => {
                if at < sent {
                    failures.push(format!("poll {i} answered before the revoke"));
                } else {
                    ms.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                }
            }
            Ok((_, Ok(status))) => failures.push(format!("poll {i}: status {status}")),
            Ok((_, Err(e))) => failures.push(format!("poll {i}: {e}")),
            Err(_) => failures.push(format!("poll {i}: thread panicked")),
        }
    }
    if !failures.is_empty() {
        let n = failures.len();
        failures.truncate(5);
        return Err(format!(
            "{n} of {polls} long polls failed: {}",
            failures.join("; ")
        ));
    }
    ms.sort_by(f64::total_cmp);
    Ok(FanOut {
        polls,
        replicas: replicas.len(),
        ms,
        revoke_ms,
    })
}
