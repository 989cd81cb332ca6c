//! ES256 and RS256 signatures checked by Envoy's BoringSSL through the `verify_signature`
//! foreign function, instead of P-256 or RSA arithmetic in wasm (several times slower,
//! and the module would carry both).
//!
//! The foreign function takes a protobuf `VerifySignatureArguments` {hash_function = 1,
//! public_key = 2 (DER SubjectPublicKeyInfo), signature = 3, text = 4} and returns a
//! `VerifySignatureResult` {result = 1, error = 2}. BoringSSL wants ECDSA signatures in
//! DER, while JWS carries raw `r || s`. The encoders here are small and host-free, so
//! they are unit-tested natively; the whole path runs in the Envoy host tests.

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of
/// 66 bytes), followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The DER SubjectPublicKeyInfo of a P-256 key given as its SEC1 uncompressed point.
pub fn p256_spki(uncompressed_point: &[u8]) -> Option<Vec<u8>> {
    if uncompressed_point.len() != 65 || uncompressed_point[0] != 4 {
        return None;
    }
    let mut out = P256_SPKI_PREFIX.to_vec();
    out.extend_from_slice(uncompressed_point);
    Some(out)
}

/// A DER length (short form below 128, long form above).
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

/// A DER tag-length-value.
fn der_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    der_len(out, value.len());
    out.extend_from_slice(value);
}

fn der_integer(out: &mut Vec<u8>, big_endian: &[u8]) {
    let mut v = big_endian;
    while v.len() > 1 && v[0] == 0 {
        v = &v[1..];
    }
    let pad = v.first().is_some_and(|b| b & 0x80 != 0);
    out.push(0x02);
    der_len(out, v.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
}

/// DER of the AlgorithmIdentifier rsaEncryption (1.2.840.113549.1.1.1) with NULL params.
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// The DER SubjectPublicKeyInfo of an RSA key given as modulus and exponent (big-endian).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 8);
    der_integer(&mut ints, n);
    der_integer(&mut ints, e);
    let mut rsa_public_key = Vec::with_capacity(ints.len() + 4);
    der_tlv(&mut rsa_public_key, 0x30, &ints);
    // BIT STRING: a leading byte of unused bits (0), then the key.
    let mut bits = Vec::with_capacity(rsa_public_key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&rsa_public_key);
    let mut body = RSA_ALGORITHM.to_vec();
    der_tlv(&mut body, 0x03, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_tlv(&mut out, 0x30, &body);
    out
}

/// Converts a JWS ES256 signature (`r || s`, 32 bytes each) to DER; `None` for any other
/// length (such a signature is simply invalid).
pub fn es256_signature_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let mut body = Vec::with_capacity(72);
    der_integer(&mut body, &raw[..32]);
    der_integer(&mut body, &raw[32..]);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    Some(out)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encodes `VerifySignatureArguments`.
pub fn verify_args(hash: &str, public_key_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + public_key_der.len() + signature.len() + text.len());
    field_bytes(&mut out, 1, hash.as_bytes());
    field_bytes(&mut out, 2, public_key_der);
    field_bytes(&mut out, 3, signature);
    field_bytes(&mut out, 4, text);
    out
}

fn read_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Decodes `VerifySignatureResult.result`; `None` if the bytes are not such a message.
/// An empty message is a valid encoding of `result = false`.
pub fn verify_result(mut b: &[u8]) -> Option<bool> {
    let mut result = false;
    while !b.is_empty() {
        let key = read_varint(&mut b)?;
        match (key >> 3, key & 7) {
            (1, 0) => result = read_varint(&mut b)? != 0,
            (_, 0) => {
                read_varint(&mut b)?;
            }
            (_, 2) => {
                let len = usize::try_from(read_varint(&mut b)?).ok()?;
                b = b.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_signatures_are_minimal() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[31] = 1;
        raw[63] = 5; // s is tiny: leading zeros stripped
        let der = es256_signature_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(der[5], 0x80);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 5]);
        assert_eq!(der[1] as usize, der.len() - 2);
        assert!(es256_signature_der(&[0; 63]).is_none());
    }

    #[test]
    fn der_matches_the_p256_crate() {
        use p256::ecdsa::signature::Signer as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sig: p256::ecdsa::Signature = sk.sign(b"message");
        let ours = es256_signature_der(&sig.to_bytes()).unwrap();
        assert_eq!(ours, sig.to_der().as_bytes());
        let point = sk.verifying_key().to_encoded_point(false);
        let spki = p256_spki(point.as_bytes()).unwrap();
        assert_eq!(spki.len(), 91);
    }

    #[test]
    fn rsa_spki_matches_the_rsa_crate() {
        use base64::Engine as _;
        use rsa::pkcs8::EncodePublicKey as _;
        let key = tessera_testkit::TestKey::generate(tessera_testkit::Alg::RS256, "r");
        let jwks = tessera_testkit::jwks(&[&key]);
        let b64 = |name: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwks["keys"][0][name].as_str().unwrap())
                .unwrap()
        };
        let (n, e) = (b64("n"), b64("e"));
        let expected = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from_bytes_be(&e),
        )
        .unwrap()
        .to_public_key_der()
        .unwrap();
        assert_eq!(rsa_spki(&n, &e), expected.as_bytes());
    }

    #[test]
    fn protobuf_round_trip() {
        let args = verify_args("sha256", &[1, 2], &[3], &[4, 5, 6]);
        assert_eq!(
            args,
            vec![
                0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', 0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 3, 4,
                5, 6
            ]
        );
        assert_eq!(verify_result(&[0x08, 1]), Some(true));
        assert_eq!(verify_result(&[0x08, 0, 0x12, 2, b'n', b'o']), Some(false));
        assert_eq!(verify_result(&[0x12, 2, b'n', b'o']), Some(false));
        assert_eq!(verify_result(&[]), Some(false));
        assert_eq!(verify_result(&[0x12, 9, 1]), None);
        assert_eq!(verify_result(&[0x0b]), None);
    }
}
