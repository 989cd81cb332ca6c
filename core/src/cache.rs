//! A bounded cache of verified tokens, keyed by the token text itself.
//!
//! Only tokens whose signature and static claims passed are kept; everything that depends
//! on the request or the clock (time claims, status, IP, scopes) is checked on every hit.
//! Two generations give approximate LRU in O(1): when the young map fills, it becomes the
//! old one and the previous old one is dropped; a hit in the old map moves the entry back.
//! Each generation holds `cache_size` entries, so the `cache_size` most recently used
//! tokens are always kept (a working set that size hits on every request) and at most
//! twice that many are held.
//!
//! The key is the whole token, compared in full on every hit (as Envoy's `jwt_authn`
//! cache does), so the hash only has to spread keys, not resist forgery: a fast
//! multiply-rotate hash over 8-byte words, with no seed (wasm hosts have no entropy to
//! give). Only tokens that verified are ever inserted, so a client cannot choose keys to
//! crowd one bucket. A cryptographic digest here cost more than the rest of a cache hit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::verify::VerifiedToken;

/// A multiply-rotate hash over 8-byte little-endian words.
#[derive(Default)]
struct WordHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

type Map = HashMap<Box<str>, Rc<VerifiedToken>, BuildHasherDefault<WordHasher>>;

/// Bounded verified-token cache.
pub struct TokenCache {
    young: Map,
    old: Map,
    generation_size: usize,
}

impl TokenCache {
    /// A cache that keeps the `capacity` most recently used tokens, holding at most
    /// `2 * capacity` (0 disables it).
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            young: Map::default(),
            old: Map::default(),
            generation_size: capacity,
        }
    }

    /// Looks a token up; expired entries are dropped.
    pub fn get(&mut self, token: &str, now: u64) -> Option<Rc<VerifiedToken>> {
        if self.generation_size == 0 {
            return None;
        }
        if let Some(v) = self.young.get(token) {
            return Some(Rc::clone(v));
        }
        let (key, v) = self.old.remove_entry(token)?;
        if v.exp <= now {
            return None;
        }
        self.insert_key(key, Rc::clone(&v));
        Some(v)
    }

    /// Adds a verified token.
    pub fn insert(&mut self, token: &str, value: Rc<VerifiedToken>) {
        if self.generation_size == 0 {
            return;
        }
        self.insert_key(token.into(), value);
    }

    fn insert_key(&mut self, key: Box<str>, value: Rc<VerifiedToken>) {
        if self.young.len() >= self.generation_size {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything (used when keys or configuration change).
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}
