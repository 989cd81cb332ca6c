//! Live sync without a bootstrap service: the filter's VMs of one Envoy process elect one
//! poller among themselves through shared data, with a lease.
//!
//! With `"sync": {"mode": "lease", ...}` every worker VM's root context ticks and looks at
//! one shared-data record, `"<holder> <expires_ms>"`. The holder renews it each tick with
//! a compare-and-swap; any other VM that finds it expired takes it over with a
//! compare-and-swap too, so exactly one write wins. The holder runs the same
//! [`crate::sync::Poller`] the singleton service runs and publishes in the same format
//! ([`crate::shared`]); every VM reads what is published. So the control plane still sees
//! one long poll per Envoy process, and when the holder stops (its listener is removed,
//! its VM is gone) another VM takes over once the lease runs out.
//!
//! Shared data's compare-and-swap only guards keys that exist (a write to a missing key
//! always succeeds), so the record is created empty, with a CAS value no existing record
//! can carry in practice, and the lease itself is only ever taken by a CAS on a record
//! that was read.
//!
//! Everything here is host-free; [`crate`]'s root context does the shared-data calls.

use serde_json::{Map, Value};
use tessera_core::config::ConfigError;

use crate::sync::SyncServiceConfig;

/// Shared-data key of the lease record.
pub const LEASE: &str = "tessera.sync.lease";
/// Shared-data key of the counter that gives each root context its holder id.
pub const SEQ: &str = "tessera.sync.seq";
/// The CAS value used to create a record only where none exists: Envoy accepts any CAS
/// for a missing key and refuses one that does not match an existing key's.
pub const CREATE_ONLY: u32 = u32::MAX;
/// How often VMs look at the lease (and the holder renews it).
pub const TICK_MS: u64 = 200;

/// The lease-mode settings taken out of the filter's `sync` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// What the elected VM polls, as the sync service would.
    pub poller: SyncServiceConfig,
    /// How long a lease lasts without renewal, in milliseconds.
    pub lease_ms: u64,
}

/// The fields of `sync` that only lease mode has (besides `mode`); they configure the
/// poller exactly as the sync service's fields of the same names do.
const POLLER_FIELDS: [&str; 7] = [
    "cluster",
    "authority",
    "status_lists",
    "jwks_urls",
    "poll_wait_secs",
    "jwks_refresh_secs",
    "retry_secs",
];

fn cerr(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// Splits a filter configuration into what core reads and the lease settings.
///
/// Without `sync.mode` (or with `"service"`, the singleton sync service) the text goes to
/// core as it is and there is no lease. With `"lease"`, the poller fields and `lease_secs`
/// are validated here (errors name `sync.<field>`) and removed, and the rest goes to core.
pub fn split_filter_config(json: &str) -> Result<(String, Option<LeaseConfig>), ConfigError> {
    let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(json) else {
        // Not an object: core reports the problem with its own precise message.
        return Ok((json.to_string(), None));
    };
    let Some(Value::Object(sync)) = root.get_mut("sync") else {
        return Ok((json.to_string(), None));
    };
    let mode = match sync.get("mode") {
        None => return Ok((json.to_string(), None)),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(cerr("sync.mode", "must be \"service\" or \"lease\"")),
    };
    sync.remove("mode");
    match mode.as_str() {
        "service" => {
            if let Some(f) = POLLER_FIELDS
                .iter()
                .chain(["lease_secs"].iter())
                .find(|f| sync.contains_key(**f))
            {
                return Err(cerr(
                    &format!("sync.{f}"),
                    "only in \"mode\": \"lease\" (the sync service has its own configuration)",
                ));
            }
            Ok((Value::Object(root).to_string(), None))
        }
        "lease" => {
            let mut poller = Map::new();
            poller.insert("role".into(), Value::String("sync".into()));
            for f in POLLER_FIELDS {
                if let Some(v) = sync.remove(f) {
                    poller.insert(f.into(), v);
                }
            }
            let poller = SyncServiceConfig::from_json(&Value::Object(poller).to_string())
                .map_err(|e| cerr(&format!("sync.{}", e.field), e.message))?;
            let lease_secs = match sync.remove("lease_secs") {
                None => 5,
                Some(v) => v
                    .as_u64()
                    .filter(|s| (1..=60).contains(s))
                    .ok_or_else(|| cerr("sync.lease_secs", "must be an integer in 1..=60"))?,
            };
            // The takeover must come before the published status goes stale.
            let staleness = sync
                .get("max_staleness_secs")
                .and_then(Value::as_u64)
                .unwrap_or(60);
            if lease_secs >= staleness {
                return Err(cerr(
                    "sync.lease_secs",
                    format!(
                        "must be less than sync.max_staleness_secs ({staleness}): a new poller \
                         must take over before the status goes stale"
                    ),
                ));
            }
            Ok((
                Value::Object(root).to_string(),
                Some(LeaseConfig {
                    poller,
                    lease_ms: lease_secs * 1000,
                }),
            ))
        }
        other => Err(cerr(
            "sync.mode",
            format!("must be \"service\" or \"lease\", not {other:?}"),
        )),
    }
}

/// The shared lease record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The holder's id; 0 means nobody.
    pub holder: u64,
    /// Unix milliseconds after which the lease is free.
    pub expires_ms: u64,
}

impl Record {
    /// Nobody holds it.
    pub const EMPTY: Record = Record {
        holder: 0,
        expires_ms: 0,
    };

    /// Encodes as ASCII.
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.holder, self.expires_ms).into_bytes()
    }

    /// Decodes; `None` for anything malformed (which is then treated as free).
    pub fn decode(b: &[u8]) -> Option<Record> {
        let s = std::str::from_utf8(b).ok()?;
        let (h, e) = s.split_once(' ')?;
        Some(Record {
            holder: h.parse().ok()?,
            expires_ms: e.parse().ok()?,
        })
    }
}

/// What a VM must do after reading the lease record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No record yet: create an empty one (with [`CREATE_ONLY`]).
    Create,
    /// Write `record` with this CAS; success means holding the lease until
    /// `record.expires_ms`.
    Write {
        /// The CAS of the record that was read.
        cas: u32,
        /// The new record.
        record: Record,
        /// True when this takes the lease from nobody or an expired holder.
        takeover: bool,
    },
    /// Someone else holds a live lease.
    Follow,
}

/// Decides one tick for the VM `me`, given the record read (bytes and CAS).
pub fn decide(me: u64, read: Option<(&[u8], u32)>, now_ms: u64, lease_ms: u64) -> Action {
    let Some((bytes, cas)) = read else {
        return Action::Create;
    };
    if me == 0 {
        // No holder id yet (ids start at 1).
        return Action::Follow;
    }
    let current = Record::decode(bytes).unwrap_or(Record::EMPTY);
    let mine = Record {
        holder: me,
        expires_ms: now_ms.saturating_add(lease_ms),
    };
    if current.holder == me {
        Action::Write {
            cas,
            record: mine,
            takeover: false,
        }
    } else if current.holder == 0 || now_ms >= current.expires_ms {
        Action::Write {
            cas,
            record: mine,
            takeover: true,
        }
    } else {
        Action::Follow
    }
}

/// The next value of the holder-id counter, from what was read (`None`: create it).
pub fn next_seq(read: Option<&[u8]>) -> Option<u64> {
    let current = std::str::from_utf8(read?).ok()?.parse::<u64>().ok()?;
    current.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""issuers":["https://cp/v1/orgs/acme"],"audiences":["api"]"#;

    fn split(sync: &str) -> Result<(String, Option<LeaseConfig>), ConfigError> {
        split_filter_config(&format!("{{{BASE},\"sync\":{sync}}}"))
    }

    #[test]
    fn lease_mode_is_split_off_and_the_rest_loads_in_core() {
        let (rest, lease) = split(
            r#"{"mode":"lease","cluster":"cp","status_lists":["http://cp/v1/orgs/acme/status-list"],
                "jwks_urls":["http://cp/v1/orgs/acme/jwks.json"],"lease_secs":3,"poll_wait_secs":5,
                "max_staleness_secs":10}"#,
        )
        .unwrap();
        let lease = lease.unwrap();
        assert_eq!(lease.lease_ms, 3000);
        assert_eq!(lease.poller.cluster, "cp");
        assert_eq!(lease.poller.poll_wait_secs, 5);
        let v = tessera_core::Verifier::from_config_json(&rest).unwrap();
        assert_eq!(v.config().sync.as_ref().unwrap().max_staleness_secs, 10);
    }

    #[test]
    fn without_mode_or_in_service_mode_core_sees_its_own_fields() {
        let text = format!("{{{BASE},\"sync\":{{\"max_staleness_secs\":5}}}}");
        assert_eq!(split_filter_config(&text).unwrap(), (text.clone(), None));
        let (rest, lease) = split(r#"{"mode":"service","max_staleness_secs":5}"#).unwrap();
        assert!(lease.is_none());
        assert!(tessera_core::Verifier::from_config_json(&rest).is_ok());
        // Garbage is left for core to refuse with its own message.
        assert_eq!(split_filter_config("[1]").unwrap().0, "[1]");
    }

    #[test]
    fn bad_lease_config_names_the_field() {
        for (sync, field) in [
            (r#"{"mode":"poll"}"#, "sync.mode"),
            (r#"{"mode":3}"#, "sync.mode"),
            (r#"{"mode":"lease","status_lists":["/a"]}"#, "sync.cluster"),
            (r#"{"mode":"lease","cluster":"c"}"#, "sync.status_lists"),
            (
                r#"{"mode":"lease","cluster":"c","status_lists":["x"]}"#,
                "sync.status_lists[0]",
            ),
            (
                r#"{"mode":"lease","cluster":"c","status_lists":["/a"],"poll_wait_secs":0}"#,
                "sync.poll_wait_secs",
            ),
            (
                r#"{"mode":"lease","cluster":"c","status_lists":["/a"],"lease_secs":0}"#,
                "sync.lease_secs",
            ),
            (
                r#"{"mode":"lease","cluster":"c","status_lists":["/a"],"lease_secs":"5"}"#,
                "sync.lease_secs",
            ),
            (
                r#"{"mode":"lease","cluster":"c","status_lists":["/a"],"lease_secs":10,"max_staleness_secs":10}"#,
                "sync.lease_secs",
            ),
            (r#"{"mode":"service","cluster":"c"}"#, "sync.cluster"),
            (r#"{"mode":"service","lease_secs":3}"#, "sync.lease_secs"),
        ] {
            assert_eq!(split(sync).unwrap_err().field, field, "{sync}");
        }
        // Unknown fields still reach core, which names them.
        let (rest, _) =
            split(r#"{"mode":"lease","cluster":"c","status_lists":["/a"],"extra":1}"#).unwrap();
        let e = tessera_core::Verifier::from_config_json(&rest).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }

    #[test]
    fn record_round_trip_and_garbage() {
        let r = Record {
            holder: 3,
            expires_ms: 1_800_000_000_000,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        for bad in [&b""[..], b"3", b"x 1", b"1 y", b"\xff 1", b"-1 5"] {
            assert_eq!(Record::decode(bad), None);
        }
    }

    #[test]
    fn one_holder_renews_others_follow_until_it_expires() {
        let lease = 2000;
        // No record: create it empty; nobody holds it yet.
        assert_eq!(decide(1, None, 0, lease), Action::Create);
        let empty = Record::EMPTY.encode();
        // A free record is taken with the CAS that was read.
        let take = decide(1, Some((&empty, 7)), 1000, lease);
        assert_eq!(
            take,
            Action::Write {
                cas: 7,
                record: Record {
                    holder: 1,
                    expires_ms: 3000
                },
                takeover: true
            }
        );
        let held = Record {
            holder: 1,
            expires_ms: 3000,
        }
        .encode();
        // The holder renews; the others follow while the lease is live.
        assert!(matches!(
            decide(1, Some((&held, 8)), 1200, lease),
            Action::Write {
                takeover: false,
                ..
            }
        ));
        assert_eq!(decide(2, Some((&held, 8)), 2999, lease), Action::Follow);
        // Once it expires, another takes it over.
        assert!(matches!(
            decide(2, Some((&held, 8)), 3000, lease),
            Action::Write {
                cas: 8,
                takeover: true,
                record: Record { holder: 2, .. }
            }
        ));
        // A malformed record counts as free; id 0 is never a holder.
        assert!(matches!(
            decide(2, Some((b"junk", 9)), 0, lease),
            Action::Write { takeover: true, .. }
        ));
        assert_eq!(
            decide(0, Some((&Record::EMPTY.encode(), 9)), 0, lease),
            Action::Follow
        );
    }

    #[test]
    fn holder_ids_count_up() {
        assert_eq!(next_seq(None), None);
        assert_eq!(next_seq(Some(b"0")), Some(1));
        assert_eq!(next_seq(Some(b"41")), Some(42));
        assert_eq!(next_seq(Some(b"x")), None);
        assert_eq!(next_seq(Some(u64::MAX.to_string().as_bytes())), None);
    }
}
