//! DER encodings hosts' native crypto wants: a key's SubjectPublicKeyInfo (computed once
//! when a JWKS loads, [`crate::jwks::Key::spki`]) and an ECDSA signature's
//! `SEQUENCE { r, s }` (JWS carries raw `r || s`). Plain encodings, no host calls.

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
fn length(out: &mut Vec<u8>, len: usize) {
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
fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    length(out, value.len());
    out.extend_from_slice(value);
}

fn integer(out: &mut Vec<u8>, big_endian: &[u8]) {
    let mut v = big_endian;
    while v.len() > 1 && v[0] == 0 {
        v = &v[1..];
    }
    let pad = v.first().is_some_and(|b| b & 0x80 != 0);
    out.push(0x02);
    length(out, v.len() + usize::from(pad));
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
    integer(&mut ints, n);
    integer(&mut ints, e);
    let mut rsa_public_key = Vec::with_capacity(ints.len() + 4);
    tlv(&mut rsa_public_key, 0x30, &ints);
    // BIT STRING: a leading byte of unused bits (0), then the key.
    let mut bits = Vec::with_capacity(rsa_public_key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&rsa_public_key);
    let mut body = RSA_ALGORITHM.to_vec();
    tlv(&mut body, 0x03, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    tlv(&mut out, 0x30, &body);
    out
}

/// Converts a JWS ES256 signature (`r || s`, 32 bytes each) to DER; `None` for any other
/// length (such a signature is simply invalid).
pub fn es256_signature_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let mut body = Vec::with_capacity(72);
    integer(&mut body, &raw[..32]);
    integer(&mut body, &raw[32..]);
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(0x30);
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    Some(out)
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

    #[cfg(feature = "rust-rsa")]
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
}
