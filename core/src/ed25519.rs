//! Ed25519 verification (RFC 8032) with a per-key table, as strict as ed25519-dalek's
//! `verify_strict`.
//!
//! A JWKS key verifies many tokens, so the work that depends only on the key is done once:
//! when the key loads, `A` is decompressed and refused when of small order; on the key's
//! first verify, a radix-16 table of `-A` is built (curve25519-dalek's
//! `EdwardsBasepointTable`, the kind of table it ships for the base point `B`) and kept,
//! shared by the key's clones. Built lazily, a JWKS of many keys (one or two per
//! organization) costs neither load time nor memory for the keys no token uses. A verify then computes `R' = [s]B + [k](-A)` with two
//! table multiplications instead of one double-scalar multiplication, and compares `R'`'s
//! encoding with the signature's `R` bytes. The table of `B` is built once, on first use,
//! rather than linked from curve25519-dalek's constant (30 KB more in every module).
//! Measured inside wasm: BENCHMARKS.md, "Ed25519 inside wasm: the candidates"; the reason
//! for hand-writing these lines is in ARCHITECTURE.md.
//!
//! The verdict is verify_strict's: `s` must be canonical (`s < l`); `A` and `R` must not
//! be of small order; `R` must decode. Equal encodings mean that `R` is the canonical
//! encoding of the point `R'`, so `R` decodes and its order is `R'`'s (checked on `R'`).

use std::sync::{Arc, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable as _;
use sha2::{Digest as _, Sha512};

/// Multiples of the base point `B` (30,720 bytes, once per process).
fn b_table() -> &'static EdwardsBasepointTable {
    static TABLE: OnceLock<Box<EdwardsBasepointTable>> = OnceLock::new();
    TABLE.get_or_init(|| Box::new(EdwardsBasepointTable::create(&ED25519_BASEPOINT_POINT)))
}

/// An Ed25519 public key, checked and prepared for verification when loaded.
#[derive(Clone)]
pub struct Ed25519Key {
    /// The key as published (`A`'s encoding, hashed into every `k`).
    bytes: [u8; 32],
    /// `-A`, decoded and checked at load.
    point: EdwardsPoint,
    /// Multiples of `-A` (30,720 bytes), built on the first verify and shared by the key's
    /// clones.
    minus_a: Arc<OnceLock<Box<EdwardsBasepointTable>>>,
}

impl Ed25519Key {
    /// The key for a 32-byte encoding, or `None` when it does not decode to a point or
    /// the point has small order (no signature could ever be accepted for it).
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let a = CompressedEdwardsY(*bytes).decompress()?;
        if a.is_small_order() {
            return None;
        }
        Some(Self {
            bytes: *bytes,
            point: -a,
            minus_a: Arc::new(OnceLock::new()),
        })
    }

    /// The key's encoding, as published.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Whether `signature` (`R || s`) is valid for `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let (r, s) = signature.split_at(32);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(s);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r)
                .chain_update(self.bytes)
                .chain_update(message)
                .finalize()
                .into(),
        );
        let minus_a = self
            .minus_a
            .get_or_init(|| Box::new(EdwardsBasepointTable::create(&self.point)));
        let r_prime: EdwardsPoint = b_table().mul_base(&s) + minus_a.mul_base(&k);
        r_prime.compress().as_bytes()[..] == *r && !r_prime.is_small_order()
    }
}

#[cfg(test)]
mod tests {
    //! Differential: core's verify must give ed25519-dalek's `verify_strict` verdict on
    //! keys, messages and signatures generated here and on hostile inputs. The one place it
    //! is stricter on purpose: a small-order key is refused when it loads (verify_strict
    //! refuses every signature for it, so no token that verified before is refused now).

    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

    /// Deterministic bytes derived from a label and a counter (fixtures made at run time).
    fn bytes(label: &str, i: u64) -> [u8; 64] {
        Sha512::new()
            .chain_update(label)
            .chain_update(i.to_le_bytes())
            .finalize()
            .into()
    }

    /// ed25519-dalek's verdict (a key it cannot parse verifies nothing).
    fn dalek(public: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(public).is_ok_and(|vk| {
            vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(sig))
                .is_ok()
        })
    }

    /// Core's verdict (a key it refuses at load verifies nothing).
    fn core(public: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
        Ed25519Key::from_bytes(public).is_some_and(|k| k.verify(message, sig))
    }

    fn agree(public: &[u8; 32], message: &[u8], sig: &[u8; 64], what: &str) -> bool {
        let (d, c) = (dalek(public, message, sig), core(public, message, sig));
        assert_eq!(c, d, "{what}: core {c}, verify_strict {d}");
        d
    }

    /// Adds the group order `l` to a little-endian 32-byte scalar (wrapping).
    fn add_order(s: &mut [u8]) {
        // l = (l - 1) + 1; l - 1 ends in 0xec, so the + 1 does not carry.
        let mut l = (-Scalar::ONE).to_bytes();
        l[0] += 1;
        let mut carry = 0u16;
        for (b, l) in s.iter_mut().zip(l) {
            let v = u16::from(*b) + u16::from(l) + carry;
            *b = v.to_le_bytes()[0];
            carry = v >> 8;
        }
    }

    /// The secret scalar `a` of a seed (RFC 8032 §5.1.5).
    fn secret_scalar(seed: &[u8; 32]) -> Scalar {
        let h = Sha512::digest(seed);
        let mut a = [0u8; 32];
        a.copy_from_slice(&h[..32]);
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        Scalar::from_bytes_mod_order(a)
    }

    /// `k = SHA-512(R || A || M) mod l`.
    fn challenge(r: &[u8; 32], public: &[u8; 32], message: &[u8]) -> Scalar {
        Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r)
                .chain_update(public)
                .chain_update(message)
                .finalize()
                .into(),
        )
    }

    /// Every 32-byte string that encodes a point of small order: the eight canonical
    /// encodings, the same with the sign bit flipped, and `y + p` for the `y` below 19.
    fn small_order_encodings() -> Vec<[u8; 32]> {
        // p = 2^255 - 19, little-endian.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut out = Vec::new();
        for t in EIGHT_TORSION {
            let e = t.compress().to_bytes();
            let mut flipped = e;
            flipped[31] ^= 0x80;
            out.extend([e, flipped]);
            if e[1..31].iter().all(|&b| b == 0) && e[31] & 0x7f == 0 && e[0] < 19 {
                let mut big = p;
                big[0] += e[0];
                let mut big_flipped = big;
                big_flipped[31] ^= 0x80;
                out.extend([big, big_flipped]);
            }
        }
        out.retain(|e| {
            CompressedEdwardsY(*e)
                .decompress()
                .is_some_and(|pt| pt.is_small_order())
        });
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn agrees_with_verify_strict_on_generated_keys_messages_and_signatures() {
        let mut accepted = 0;
        for i in 0..24u64 {
            let seed: [u8; 32] = bytes("seed", i)[..32].try_into().unwrap();
            let sk = SigningKey::from_bytes(&seed);
            let public = sk.verifying_key().to_bytes();
            let len = usize::from(bytes("len", i)[0]) + usize::try_from(i).unwrap();
            let message: Vec<u8> = (0..len).map(|j| bytes("msg", i)[j % 64]).collect();
            let sig = sk.sign(&message).to_bytes();
            assert!(agree(&public, &message, &sig, "valid"));
            accepted += 1;

            // Every bit of the signature flipped, one at a time, for the first keys; every
            // seventh bit (a different one for each key) for the others.
            let step = if i < 2 { 1 } else { 7 };
            for bit in (usize::try_from(i % 7).unwrap()..512).step_by(step) {
                let mut s = sig;
                s[bit / 8] ^= 1 << (bit % 8);
                agree(&public, &message, &s, &format!("signature bit {bit}"));
            }
            // A flipped message bit, and a shorter or longer message.
            if !message.is_empty() {
                let mut m = message.clone();
                m[len / 2] ^= 1 << (i % 8);
                agree(&public, &m, &sig, "message bit");
                agree(&public, &message[1..], &sig, "message shortened");
            }
            let mut longer = message.clone();
            longer.push(0);
            agree(&public, &longer, &sig, "message extended");
            // Non-canonical s: s + l (the same point equation), and high bits set.
            let mut s_plus_l = sig;
            add_order(&mut s_plus_l[32..]);
            assert!(!agree(&public, &message, &s_plus_l, "s + l"));
            let mut s_high = sig;
            s_high[63] |= 0xe0;
            agree(&public, &message, &s_high, "s with the top bits set");
            // A key bit flipped: another key (or none) for the same signature.
            let mut other = public;
            other[usize::try_from(i % 32).unwrap()] ^= 1 << (i % 8);
            agree(&other, &message, &sig, "key bit");
        }
        assert_eq!(accepted, 24);
    }

    #[test]
    fn small_order_r_is_refused_like_verify_strict() {
        let encodings = small_order_encodings();
        // 8 canonical, the identity's and the order-2 point's sign-flipped forms, and the
        // y + p forms of y = 0 and y = 1 with either sign bit.
        assert_eq!(encodings.len(), 14, "{encodings:02x?}");
        let seed = [42u8; 32];
        let sk = SigningKey::from_bytes(&seed);
        let public = sk.verifying_key().to_bytes();
        let a = secret_scalar(&seed);
        let message = b"small-order R";
        let mut equation_holds = 0;
        for r in &encodings {
            // s = k * a gives [s]B - [k]A = identity: the equation holds when R encodes
            // the identity, so only the small-order rule refuses it.
            let k = challenge(r, &public, message);
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(r);
            sig[32..].copy_from_slice((k * a).as_bytes());
            let minus_a = -CompressedEdwardsY(public).decompress().unwrap();
            let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &(k * a));
            if r_prime.compress().to_bytes() == *r {
                equation_holds += 1;
            }
            assert!(!agree(&public, message, &sig, &format!("R = {r:02x?}")));
            sig[32..].fill(0);
            assert!(!agree(
                &public,
                message,
                &sig,
                &format!("R = {r:02x?}, s = 0")
            ));
        }
        // The canonical identity: a signature a cofactorless check without the
        // small-order rule would accept.
        assert_eq!(equation_holds, 1);
    }

    #[test]
    fn small_order_keys_are_refused_when_loaded() {
        for a in small_order_encodings() {
            assert!(Ed25519Key::from_bytes(&a).is_none(), "A = {a:02x?}");
            // Stricter on purpose: verify_strict takes the key but refuses every
            // signature for it, even R = A = identity with s = 0, which satisfies the
            // equation for every message.
            let mut identity = [0u8; 64];
            identity[0] = 1;
            assert!(!dalek(&a, b"m", &identity), "A = {a:02x?}");
        }
    }

    #[test]
    fn non_canonical_encodings_are_judged_like_verify_strict() {
        // y + p for every y < 19 (either sign bit) as A and as R: decoding is the same
        // function in both, so keys are taken alike (except small order, refused at load)
        // and no signature with such an R is accepted.
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let public = sk.verifying_key().to_bytes();
        let a = secret_scalar(&[9u8; 32]);
        let message = b"non-canonical";
        let small = small_order_encodings();
        for y in 0u8..19 {
            for sign in [0u8, 0x80] {
                let mut e = [0xffu8; 32];
                e[0] = 0xed + y;
                e[31] = 0x7f | sign;
                let dalek_takes = VerifyingKey::from_bytes(&e).is_ok();
                let core_takes = Ed25519Key::from_bytes(&e).is_some();
                assert_eq!(
                    core_takes,
                    dalek_takes && !small.contains(&e),
                    "A = {e:02x?}"
                );
                if let Some(k) = Ed25519Key::from_bytes(&e) {
                    assert_eq!(k.as_bytes(), &e);
                }
                let k = challenge(&e, &public, message);
                for s in [k * a, Scalar::ZERO, Scalar::ONE] {
                    let mut sig = [0u8; 64];
                    sig[..32].copy_from_slice(&e);
                    sig[32..].copy_from_slice(s.as_bytes());
                    assert!(!agree(&public, message, &sig, &format!("R = {e:02x?}")));
                }
            }
        }
    }
}
