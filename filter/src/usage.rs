//! Usage records: buffered per VM, bounded, and sent in batches so that reporting never
//! delays a request. What does not fit is dropped and counted. The record is core's
//! [`tessera_core::UsageRecord`], the one wire type every host sends.

use std::collections::VecDeque;

use tessera_core::ratelimit::SpendReport;
use tessera_core::UsageRecord as Record;

/// A bounded queue of records.
#[derive(Debug)]
pub struct Buffer {
    records: VecDeque<Record>,
    capacity: usize,
    /// The batch being sent, kept until the control plane acknowledges it.
    in_flight: Option<Vec<Record>>,
    last_flush_ms: u64,
}

impl Buffer {
    /// A buffer holding at most `capacity` records (beyond a batch in flight).
    pub fn new(capacity: usize) -> Buffer {
        Buffer {
            records: VecDeque::new(),
            capacity,
            in_flight: None,
            last_flush_ms: 0,
        }
    }

    /// Adds a record; returns `false` (and drops it) when full.
    pub fn push(&mut self, r: Record) -> bool {
        if self.records.len() >= self.capacity {
            return false;
        }
        self.records.push_back(r);
        true
    }

    /// Queued records (not counting a batch in flight).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether a batch is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The next batch to send at `now_ms`, if one is due: nothing is in flight, and either
    /// `max_batch` records wait or the oldest has waited `interval_ms` — or `spend` is
    /// given (the rate-limit report goes now, with whatever records wait, even none).
    pub fn take_batch(
        &mut self,
        now_ms: u64,
        interval_ms: u64,
        max_batch: usize,
        spend: Option<&SpendReport>,
    ) -> Option<String> {
        if self.in_flight.is_some() || (self.records.is_empty() && spend.is_none()) {
            return None;
        }
        if spend.is_none()
            && self.records.len() < max_batch
            && now_ms.saturating_sub(self.last_flush_ms) < interval_ms
        {
            return None;
        }
        let n = self.records.len().min(max_batch);
        let batch: Vec<Record> = self.records.drain(..n).collect();
        let body = Record::batch_json_with(&batch, spend);
        self.in_flight = Some(batch);
        self.last_flush_ms = now_ms;
        Some(body)
    }

    /// The control plane took the batch in flight.
    pub fn acknowledged(&mut self) -> usize {
        self.in_flight.take().map_or(0, |b| b.len())
    }

    /// The batch in flight failed: it goes back to the front as far as room allows;
    /// returns how many records had to be dropped.
    pub fn failed(&mut self) -> usize {
        let Some(batch) = self.in_flight.take() else {
            return 0;
        };
        let room = self.capacity.saturating_sub(self.records.len());
        let keep = batch.len().min(room);
        let dropped = batch.len() - keep;
        for r in batch.into_iter().take(keep).rev() {
            self.records.push_front(r);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::plan::UsageOutcome;

    fn rec(i: u64) -> Record {
        Record {
            token_id: format!("tok_{i}"),
            parent: None,
            at: i,
            ip: Some("127.0.0.1".into()),
            outcome: UsageOutcome::Allow,
            reason: None,
            method: "GET".into(),
            path: "/".into(),
        }
    }

    #[test]
    fn batches_by_size_or_time_one_at_a_time() {
        let mut b = Buffer::new(10);
        for i in 0..3 {
            assert!(b.push(rec(i)));
        }
        // Not enough records, not long enough.
        b.last_flush_ms = 1000;
        assert_eq!(b.take_batch(1500, 1000, 5, None), None);
        // Long enough.
        let body = b.take_batch(2000, 1000, 5, None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 3);
        assert_eq!(v["events"][0]["token_id"], "tok_0");
        assert!(v["events"][0].get("reason").is_none());
        // One batch in flight at a time.
        b.push(rec(9));
        assert_eq!(b.take_batch(9000, 1000, 1, None), None);
        assert_eq!(b.acknowledged(), 3);
        assert!(b.take_batch(9000, 1000, 1, None).is_some());
    }

    #[test]
    fn a_spend_report_goes_at_once_even_without_records() {
        let mut b = Buffer::new(10);
        b.last_flush_ms = 1000;
        let spend = SpendReport {
            edge: "envoy-1".into(),
            tokens: vec![],
            wanted: vec!["tok_a".into()],
        };
        let body = b.take_batch(1001, 1000, 5, Some(&spend)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["events"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["spend"]["wanted"][0], "tok_a");
        assert!(b.in_flight());
        assert_eq!(b.take_batch(9000, 1000, 5, Some(&spend)), None);
        assert_eq!(b.acknowledged(), 0);
        assert!(!b.in_flight());
    }

    #[test]
    fn json_is_escaped_and_parses() {
        let mut r = rec(1);
        r.path = "/a\"b\\c\u{1}\u{e9}".into();
        r.parent = Some("tok_p".into());
        r.reason = Some("revoked".into());
        r.ip = None;
        let mut s = String::new();
        r.write_json(&mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\u{1}\u{e9}");
        assert_eq!(v["parent"], "tok_p");
        assert_eq!(v["reason"], "revoked");
        assert_eq!(v["at"], 1);
        assert!(v.get("ip").is_none());
    }

    #[test]
    fn bounded_and_failed_batches_return() {
        let mut b = Buffer::new(3);
        assert!(b.push(rec(0)) && b.push(rec(1)) && b.push(rec(2)));
        assert!(!b.push(rec(3)), "full buffer drops");
        assert!(b.take_batch(10_000, 1000, 2, None).is_some());
        assert_eq!(b.len(), 1);
        assert!(b.push(rec(4)));
        // Only room for one of the two failed records.
        assert_eq!(b.failed(), 1);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.records.front().map(|r| r.token_id.as_str()),
            Some("tok_0")
        );
    }
}
