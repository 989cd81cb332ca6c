//! Ed25519 verification candidates for the filter, exported to a wasm host so each can be
//! timed where it would run (V8, the engine of Envoy's wasm runtime and of workerd).
//!
//! Exports (no imports): `candidates()` is the number of candidates; `check(c)` returns 1
//! when candidate `c` accepts a valid signature and refuses a tampered message, a
//! tampered signature and a non-canonical `s` (so a fast but wrong candidate is never
//! picked); `verify_n(c, n)` verifies the valid signature `n` times and returns how many
//! passed. Keys come from a fixed seed: this crate measures, it protects nothing.

#![allow(clippy::missing_panics_doc)]

const SEED: [u8; 32] = [7; 32];
const MESSAGE: &[u8] = b"eyJhbGciOiJFZERTQSIsImtpZCI6ImJlbmNoIiwidHlwIjoidGVzc2VyYS1hcGkrand0In0.\
eyJpc3MiOiJodHRwczovL3Rlc3NlcmEuZXhhbXBsZSIsInN1YiI6InVzZXJfMSIsImF1ZCI6InRlc3NlcmEiLCJleHAiOjE4MDAwMDAwMDB9";

/// The candidates, in export order.
pub const NAMES: [&str; 2] = ["ed25519-compact 2", "ed25519-dalek 2 (verify_strict)"];

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
        _ => false,
    }
}

/// Number of candidates.
#[no_mangle]
pub extern "C" fn candidates() -> u32 {
    NAMES.len() as u32
}

/// 1 if candidate `c` gives the right verdict on a valid and three bad inputs.
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
    let bad = verify(c, &f.public, &other, &f.signature)
        || verify(c, &f.public, MESSAGE, &flipped)
        || verify(c, &f.public, MESSAGE, &non_canonical);
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
    let mut ok = 0;
    for _ in 0..n {
        if verify(c, &f.public, MESSAGE, &f.signature) {
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
}
