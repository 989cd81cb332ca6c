//! ES256 and RS256 signatures checked by Envoy's BoringSSL through the `verify_signature`
//! foreign function, instead of P-256 or RSA arithmetic in wasm (several times slower,
//! and the module would carry both). The key's DER SubjectPublicKeyInfo is encoded once,
//! when its JWKS loads (`tessera_core::jwks::Key::spki`); the signature's DER form comes
//! from `tessera_core::der`.
//!
//! The foreign function takes a protobuf `VerifySignatureArguments` {hash_function = 1,
//! public_key = 2 (DER SubjectPublicKeyInfo), signature = 3, text = 4} and returns a
//! `VerifySignatureResult` {result = 1, error = 2}. BoringSSL wants ECDSA signatures in
//! DER, while JWS carries raw `r || s`. The encoders here are small and host-free, so
//! they are unit-tested natively; the whole path runs in the Envoy host tests.

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
