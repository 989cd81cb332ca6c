//! A bounded cache of verified tokens, keyed by the SHA-256 of the token text.
//!
//! Only tokens whose signature and static claims passed are kept; everything that depends
//! on the request or the clock (time claims, status, IP, scopes) is checked on every hit.
//! Two generations give approximate LRU in O(1): when the young map fills, it becomes the
//! old one and the previous old one is dropped; a hit in the old map moves the entry back.
//! Each generation holds `cache_size` entries, so the `cache_size` most recently used
//! tokens are always kept (a working set that size hits on every request) and at most
//! twice that many are held.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::verify::VerifiedToken;

/// The cache key: the token's SHA-256.
pub type TokenDigest = [u8; 32];

/// Digests a token.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Keys are already uniform (SHA-256), so the first 8 bytes are a fine hash and no random
/// seed is needed (wasm hosts have none to give).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (i * 8);
        }
    }
}

type Map = HashMap<TokenDigest, Rc<VerifiedToken>, BuildHasherDefault<DigestHasher>>;

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
    pub fn get(&mut self, key: &TokenDigest, now: u64) -> Option<Rc<VerifiedToken>> {
        if self.generation_size == 0 {
            return None;
        }
        if let Some(v) = self.young.get(key) {
            return Some(Rc::clone(v));
        }
        let v = self.old.remove(key)?;
        if v.exp <= now {
            return None;
        }
        self.insert(*key, Rc::clone(&v));
        Some(v)
    }

    /// Adds a verified token.
    pub fn insert(&mut self, key: TokenDigest, value: Rc<VerifiedToken>) {
        if self.generation_size == 0 {
            return;
        }
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
