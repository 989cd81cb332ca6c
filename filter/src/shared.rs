//! What the sync service publishes to Envoy's shared data, and how workers read it.
//!
//! Two keys: a tiny `META` value (`"<version> <last_success_secs> <keys_fetched_ms>"`)
//! that workers read on
//! every request, and the `STATE` document (status lists and JWKS) that they read only
//! when the version moved. Keeping the per-request read small is what lets every worker
//! see a revocation at once without copying the lists per request.

/// Shared-data key of the small version record.
pub const META: &str = "tessera.sync.meta";
/// Shared-data key of the published lists and key sets.
pub const STATE: &str = "tessera.sync.state";

/// The small record read per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Bumped on every change of [`State`].
    pub version: u64,
    /// Unix seconds of the oldest of the status lists' last successful syncs; 0 until
    /// every list has synced once.
    pub last_success: u64,
    /// When the latest JWKS fetch that has ended (answered, refused or failed, for every
    /// JWKS URL) left, in Unix milliseconds; 0 before the first. A worker that paused a
    /// request for an unknown `kid` at `t` decides it for good once this is `>= t`: keys
    /// fetched after the token was minted did not have its kid.
    pub keys_fetched_ms: u64,
}

impl Meta {
    /// Encodes as ASCII.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{} {} {}",
            self.version, self.last_success, self.keys_fetched_ms
        )
        .into_bytes()
    }

    /// Decodes; `None` for anything malformed. The third field may be missing (a record
    /// written before it existed: no key fetch known).
    pub fn decode(b: &[u8]) -> Option<Meta> {
        let s = std::str::from_utf8(b).ok()?;
        let mut fields = s.split(' ');
        let version = fields.next()?.parse().ok()?;
        let last_success = fields.next()?.parse().ok()?;
        let keys_fetched_ms = match fields.next() {
            Some(k) => k.parse().ok()?,
            None => 0,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(Meta {
            version,
            last_success,
            keys_fetched_ms,
        })
    }
}

/// One published status list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedList {
    /// The `uri` tokens carry.
    pub uri: String,
    /// The draft's `lst` value.
    pub lst: String,
    /// The list document's `withdrawn` member (issue 22): `(scope, lst)` pairs.
    pub withdrawn: Vec<(String, String)>,
}

/// The published document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Status lists, by uri.
    pub lists: Vec<PublishedList>,
    /// JWKS documents, as fetched (JSON text, already validated by the sync service).
    pub jwks: Vec<String>,
}

const MAGIC: &[u8; 4] = b"TSS1";

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let v = b.get(4..4 + len)?;
    *b = &b[4 + len..];
    Some(v)
}

fn take_str(b: &mut &[u8]) -> Option<String> {
    take(b).and_then(|v| String::from_utf8(v.to_vec()).ok())
}

// A length-prefixed binary form rather than JSON: the module then needs no JSON
// serializer at all, which keeps it tens of kilobytes smaller.
impl State {
    /// Encodes: magic, then `L uri lst` (each followed by its `W scope lst`) / `J jwks`
    /// records with u32 length prefixes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for l in &self.lists {
            out.push(b'L');
            put(&mut out, l.uri.as_bytes());
            put(&mut out, l.lst.as_bytes());
            // `W scope lst` records belong to the list just before them.
            for (scope, lst) in &l.withdrawn {
                out.push(b'W');
                put(&mut out, scope.as_bytes());
                put(&mut out, lst.as_bytes());
            }
        }
        for j in &self.jwks {
            out.push(b'J');
            put(&mut out, j.as_bytes());
        }
        out
    }

    /// Decodes; `None` for anything malformed.
    pub fn decode(mut b: &[u8]) -> Option<State> {
        b = b.strip_prefix(MAGIC)?;
        let mut st = State::default();
        while let Some((&tag, rest)) = b.split_first() {
            b = rest;
            match tag {
                b'L' => {
                    let uri = take_str(&mut b)?;
                    let lst = take_str(&mut b)?;
                    st.lists.push(PublishedList {
                        uri,
                        lst,
                        withdrawn: Vec::new(),
                    });
                }
                b'W' => {
                    let scope = take_str(&mut b)?;
                    let lst = take_str(&mut b)?;
                    st.lists.last_mut()?.withdrawn.push((scope, lst));
                }
                b'J' => st.jwks.push(take_str(&mut b)?),
                _ => return None,
            }
        }
        Some(st)
    }
}

/// Whether a sync that last succeeded at `last_success` is still fresh at `now`.
pub fn is_fresh(last_success: u64, now: u64, max_staleness_secs: u64) -> bool {
    last_success != 0 && now.saturating_sub(last_success) <= max_staleness_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_garbage() {
        let m = Meta {
            version: 7,
            last_success: 1_800_000_000,
            keys_fetched_ms: 1_800_000_000_123,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        let old = Meta::decode(b"7 1800000000").unwrap();
        assert_eq!(old.keys_fetched_ms, 0);
        for bad in [
            &b""[..],
            b"7",
            b"x 1",
            b"1 y",
            b"\xff 1",
            b"1 2 z",
            b"1 2 3 4",
        ] {
            assert_eq!(Meta::decode(bad), None);
        }
    }

    #[test]
    fn state_round_trip_and_garbage() {
        let st = State {
            lists: vec![PublishedList {
                uri: "https://cp/v1/orgs/acme/status-list".into(),
                lst: "eNrbuRgAAhcBXQ".into(),
                withdrawn: vec![("write".into(), "eNpjAAAAAgAB".into())],
            }],
            jwks: vec!["{\"keys\":[]}".into()],
        };
        let enc = st.encode();
        assert_eq!(State::decode(&enc), Some(st));
        assert_eq!(State::decode(b"TSS1"), Some(State::default()));
        for bad in [
            &b""[..],
            b"XXXX",
            b"TSS1X",
            b"TSS1L\x05\0\0\0ab",
            &enc[..enc.len() - 1],
        ] {
            assert_eq!(State::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn freshness() {
        assert!(!is_fresh(0, 100, 30));
        assert!(is_fresh(100, 100, 30));
        assert!(is_fresh(100, 130, 30));
        assert!(!is_fresh(100, 131, 30));
        // A clock that went backwards is not staleness.
        assert!(is_fresh(100, 90, 30));
    }
}
