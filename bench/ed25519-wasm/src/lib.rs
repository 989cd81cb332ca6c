//! Ed25519 verification candidates for the filter, exported to a wasm host so each can be
//! timed where it would run (V8, the engine of Envoy's wasm runtime and of workerd).
//!
//! Exports (no imports): `candidates()` is the number of candidates; `check(c)` returns 1
//! when candidate `c` accepts a valid signature and refuses a tampered message, a
//! tampered signature, a non-canonical `s`, a small-order `R` and a small-order key (so a
//! fast but wrong candidate is never picked); `verify_n(c, n)` prepares the key once (what
//! a candidate keeps per key is built when a JWKS loads) and verifies the valid signature
//! `n` times, returning how many passed. Keys come from a fixed seed: this crate measures,
//! it protects nothing.

#![allow(clippy::missing_panics_doc)]

const SEED: [u8; 32] = [7; 32];
const MESSAGE: &[u8] = b"eyJhbGciOiJFZERTQSIsImtpZCI6ImJlbmNoIiwidHlwIjoidGVzc2VyYS1hcGkrand0In0.\
eyJpc3MiOiJodHRwczovL3Rlc3NlcmEuZXhhbXBsZSIsInN1YiI6InVzZXJfMSIsImF1ZCI6InRlc3NlcmEiLCJleHAiOjE4MDAwMDAwMDB9";

/// The candidates, in export order.
pub const NAMES: [&str; 8] = [
    "ed25519-compact 2",
    "ed25519-dalek 2 (verify_strict)",
    "ed25519-dalek 2 (verify_strict, key parsed once)",
    "per key: VartimePrecomputedStraus [B, -A]",
    "double-base [s]B - [k]A, R compared as bytes",
    "per key: radix-16 table of -A, static radix-16 B",
    "per key: radix-32 tables of B and -A",
    "per key: radix-64 tables of B and -A",
];

struct Fixture {
    public: [u8; 32],
    signature: [u8; 64],
}

fn fixture() -> Fixture {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(SEED));
    let sig = kp.sk.sign(MESSAGE, None);
    Fixture {
        public: *kp.pk,
        signature: *sig,
    }
}

/// What a candidate keeps per key (built once, when the key is loaded).
pub enum Prepared {
    /// Candidates 0 and 1 parse the key on every verify (as they always were measured).
    Bytes(u32, [u8; 32]),
    /// The key parsed once.
    Dalek(ed25519_dalek::VerifyingKey),
    /// The key's bytes, `-A`, and the key's static-point tables.
    Straus([u8; 32], Box<VartimeEdwardsPrecomputation>),
    /// The key's bytes and `-A`.
    Point([u8; 32], EdwardsPoint),
    /// The key's bytes and a radix-16 table of `-A`.
    Radix16([u8; 32], Box<EdwardsBasepointTable>),
    /// The key's bytes and radix-32 tables of `B` and `-A`.
    Radix32(
        [u8; 32],
        Box<EdwardsBasepointTableRadix32>,
        Box<EdwardsBasepointTableRadix32>,
    ),
    /// The key's bytes and radix-64 tables of `B` and `-A`.
    Radix64(
        [u8; 32],
        Box<EdwardsBasepointTableRadix64>,
        Box<EdwardsBasepointTableRadix64>,
    ),
}

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, ED25519_BASEPOINT_TABLE};
use curve25519_dalek::edwards::{
    CompressedEdwardsY, EdwardsBasepointTable, EdwardsBasepointTableRadix32,
    EdwardsBasepointTableRadix64, EdwardsPoint, VartimeEdwardsPrecomputation,
};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{BasepointTable, VartimePrecomputedMultiscalarMul};
use sha2::{Digest, Sha512};

/// `-A` for a public key that decompresses and is not of small order (as verify_strict).
fn minus_a(public: &[u8; 32]) -> Option<EdwardsPoint> {
    let a = CompressedEdwardsY(*public).decompress()?;
    if a.is_small_order() {
        return None;
    }
    Some(-a)
}

/// Prepares candidate `c`'s per-key state.
pub fn prepare(c: u32, public: &[u8; 32]) -> Option<Prepared> {
    Some(match c {
        0 | 1 => Prepared::Bytes(c, *public),
        2 => Prepared::Dalek(ed25519_dalek::VerifyingKey::from_bytes(public).ok()?),
        3 => Prepared::Straus(
            *public,
            Box::new(VartimeEdwardsPrecomputation::new([
                ED25519_BASEPOINT_POINT,
                minus_a(public)?,
            ])),
        ),
        4 => Prepared::Point(*public, minus_a(public)?),
        5 => Prepared::Radix16(
            *public,
            Box::new(EdwardsBasepointTable::create(&minus_a(public)?)),
        ),
        6 => Prepared::Radix32(
            *public,
            Box::new(EdwardsBasepointTableRadix32::create(
                &ED25519_BASEPOINT_POINT,
            )),
            Box::new(EdwardsBasepointTableRadix32::create(&minus_a(public)?)),
        ),
        7 => Prepared::Radix64(
            *public,
            Box::new(EdwardsBasepointTableRadix64::create(
                &ED25519_BASEPOINT_POINT,
            )),
            Box::new(EdwardsBasepointTableRadix64::create(&minus_a(public)?)),
        ),
        _ => return None,
    })
}

/// `s` when canonical, and `k = SHA-512(R || A || M) mod l`.
fn scalars(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Option<(Scalar, Scalar)> {
    let mut s = [0u8; 32];
    s.copy_from_slice(&signature[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
    let mut h = Sha512::new();
    h.update(&signature[..32]);
    h.update(public);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Some((s, k))
}

/// Accepts when `R'` encodes to the signature's `R` bytes and is not of small order.
/// Equal bytes mean `R` is canonical, decompresses, and is the point `R'`; so this is
/// verify_strict's verdict without decompressing `R`.
fn r_matches(r_prime: &EdwardsPoint, signature: &[u8; 64]) -> bool {
    r_prime.compress().as_bytes()[..] == signature[..32] && !r_prime.is_small_order()
}

/// Verifies with candidate `c`'s per-key state.
pub fn verify_prepared(p: &Prepared, message: &[u8], signature: &[u8; 64]) -> bool {
    match p {
        Prepared::Bytes(c, public) => verify(*c, public, message, signature),
        Prepared::Dalek(vk) => vk
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok(),
        Prepared::Straus(public, pre) => {
            let Some((s, k)) = scalars(public, message, signature) else {
                return false;
            };
            let mut r = [0u8; 32];
            r.copy_from_slice(&signature[..32]);
            let Some(r_point) = CompressedEdwardsY(r).decompress() else {
                return false;
            };
            if r_point.is_small_order() {
                return false;
            }
            let r_prime = pre.vartime_multiscalar_mul([s, k]);
            r_prime.compress().as_bytes()[..] == signature[..32]
        }
        Prepared::Point(public, minus_a) => {
            let Some((s, k)) = scalars(public, message, signature) else {
                return false;
            };
            let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, minus_a, &s);
            r_matches(&r_prime, signature)
        }
        Prepared::Radix16(public, a_table) => {
            let Some((s, k)) = scalars(public, message, signature) else {
                return false;
            };
            let r_prime = ED25519_BASEPOINT_TABLE.mul_base(&s) + a_table.mul_base(&k);
            r_matches(&r_prime, signature)
        }
        Prepared::Radix32(public, b_table, a_table) => {
            let Some((s, k)) = scalars(public, message, signature) else {
                return false;
            };
            let r_prime = b_table.mul_base(&s) + a_table.mul_base(&k);
            r_matches(&r_prime, signature)
        }
        Prepared::Radix64(public, b_table, a_table) => {
            let Some((s, k)) = scalars(public, message, signature) else {
                return false;
            };
            let r_prime = b_table.mul_base(&s) + a_table.mul_base(&k);
            r_matches(&r_prime, signature)
        }
    }
}

/// Verifies with candidate `c`.
pub fn verify(c: u32, public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    match c {
        0 => match (
            ed25519_compact::PublicKey::from_slice(public),
            ed25519_compact::Signature::from_slice(signature),
        ) {
            (Ok(pk), Ok(sig)) => pk.verify(message, &sig).is_ok(),
            _ => false,
        },
        1 => match ed25519_dalek::VerifyingKey::from_bytes(public) {
            Ok(vk) => vk
                .verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
                .is_ok(),
            Err(_) => false,
        },
        _ => match prepare(c, public) {
            Some(p) => verify_prepared(&p, message, signature),
            None => false,
        },
    }
}

/// Number of candidates.
#[no_mangle]
pub extern "C" fn candidates() -> u32 {
    NAMES.len() as u32
}

/// A signature whose `R` is the identity (small order), written canonically or not, that
/// satisfies the cofactorless equation: `s = k * a`, so `[s]B - [k]A` is the identity.
/// verify_strict refuses both: `R` is of small order.
fn small_order_r(r: [u8; 32]) -> [u8; 64] {
    let expanded = Sha512::digest(SEED);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&expanded[..32]);
    secret[0] &= 248;
    secret[31] &= 127;
    secret[31] |= 64;
    let a = Scalar::from_bytes_mod_order(secret);
    let f = fixture();
    let k = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(r)
            .chain_update(f.public)
            .chain_update(MESSAGE)
            .finalize()
            .into(),
    );
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice((k * a).as_bytes());
    sig
}

/// 1 if candidate `c` gives the right verdict on a valid and several bad inputs.
#[no_mangle]
pub extern "C" fn check(c: u32) -> u32 {
    let f = fixture();
    let mut other = MESSAGE.to_vec();
    other[0] ^= 1;
    let mut flipped = f.signature;
    flipped[5] ^= 1;
    // s + L: the same point equation, but a non-canonical scalar (RFC 8032 §5.1.7).
    let mut non_canonical = f.signature;
    add_order(&mut non_canonical[32..]);
    let good = verify(c, &f.public, MESSAGE, &f.signature);
    // The identity as R, canonical (y = 1) and not (y = p + 1).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_p1 = [0xffu8; 32];
    identity_p1[0] = 0xee;
    identity_p1[31] = 0x7f;
    // The identity as A with R = identity and s = 0: [0]B - [k]A = R for every k.
    let mut zero_sig = [0u8; 64];
    zero_sig[..32].copy_from_slice(&identity);
    let bad = verify(c, &f.public, &other, &f.signature)
        || verify(c, &f.public, MESSAGE, &flipped)
        || verify(c, &f.public, MESSAGE, &non_canonical)
        || verify(c, &f.public, MESSAGE, &small_order_r(identity))
        || verify(c, &f.public, MESSAGE, &small_order_r(identity_p1))
        || verify(c, &identity, MESSAGE, &zero_sig);
    u32::from(good && !bad)
}

/// Adds the group order L to a little-endian 32-byte scalar (wrapping).
fn add_order(s: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let v = u16::from(*b) + u16::from(l) + carry;
        *b = (v & 0xff) as u8;
        carry = v >> 8;
    }
}

/// Verifies the fixture's signature `n` times with candidate `c`; returns the passes.
#[no_mangle]
pub extern "C" fn verify_n(c: u32, n: u32) -> u32 {
    let f = fixture();
    let Some(p) = prepare(c, &f.public) else {
        return 0;
    };
    let mut ok = 0;
    for _ in 0..n {
        if verify_prepared(&p, MESSAGE, &f.signature) {
            ok += 1;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_is_correct() {
        for c in 0..candidates() {
            assert_eq!(check(c), 1, "{}", NAMES[c as usize]);
            assert_eq!(verify_n(c, 3), 3);
        }
    }

    /// The small-order-R signatures of `check` do satisfy the cofactorless equation, so
    /// refusing them tests the small-order rule and not the equation.
    #[test]
    fn small_order_r_satisfies_the_equation() {
        let f = fixture();
        let minus_a = minus_a(&f.public).unwrap();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let sig = small_order_r(identity);
        let (s, k) = scalars(&f.public, MESSAGE, &sig).unwrap();
        let r = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s);
        assert_eq!(r.compress().to_bytes(), identity);
    }
}
