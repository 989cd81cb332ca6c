//! The usage records the edges send (core's `UsageRecord`, produced by the Envoy filter
//! and the edge worker alike) are what the control plane's `POST /v1/usage` ingest reads:
//! every shape core writes parses as the ingest's `UsageBatch`, field for field.

use tessera_control_plane::service::input::UsageBatch;
use tessera_core::plan::{UsageOutcome, UsageRecord, STATUS_FAIL_OPEN};

fn record(outcome: UsageOutcome, reason: Option<&'static str>) -> UsageRecord {
    UsageRecord {
        token_id: "tok_1".into(),
        parent: None,
        at: 1_800_000_000,
        ip: None,
        outcome,
        reason,
        method: "GET".into(),
        path: "/".into(),
    }
}

#[test]
fn every_record_core_writes_is_read_by_the_ingest() {
    let mut full = record(UsageOutcome::Allow, None);
    full.parent = Some("tok_0".into());
    full.ip = Some("2001:db8::7".into());
    full.path = "/caf\u{e9}/\"q\"\\x\u{1}".into();
    let records = vec![
        full,
        record(UsageOutcome::Allow, Some(STATUS_FAIL_OPEN)),
        record(UsageOutcome::Deny, Some("revoked")),
        record(UsageOutcome::Deny, Some("insufficient_scope")),
    ];
    let json = UsageRecord::batch_json(&records);
    let batch: UsageBatch = match serde_json::from_str(&json) {
        Ok(b) => b,
        Err(e) => panic!("the ingest refuses core's batch {json}: {e}"),
    };
    assert_eq!(batch.events.len(), records.len());
    for (e, r) in batch.events.iter().zip(&records) {
        assert_eq!(e.token_id, r.token_id);
        assert_eq!(e.parent, r.parent);
        assert_eq!(e.at.0, i64::try_from(r.at).unwrap());
        assert_eq!(e.ip, r.ip);
        assert_eq!(e.outcome, r.outcome.as_str());
        assert_eq!(e.reason.as_deref(), r.reason);
        assert_eq!(e.method.as_deref(), Some(r.method.as_str()));
        assert_eq!(e.path.as_deref(), Some(r.path.as_str()));
    }
}
