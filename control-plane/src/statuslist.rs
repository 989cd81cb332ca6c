//! The Token Status List encoding of ARCHITECTURE.md: 2 bits per index, index `i` in byte
//! `i / 4` at bit offset `2 * (i % 4)`, zlib-compressed, base64url without padding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Packs `(index, value)` pairs into a list of `len` entries (at least one byte).
pub fn encode(len: usize, entries: impl IntoIterator<Item = (usize, u8)>) -> String {
    let mut bytes = vec![0u8; len.div_ceil(4).max(1)];
    for (i, v) in entries {
        if let Some(b) = bytes.get_mut(i / 4) {
            *b |= (v & 0b11) << (2 * (i % 4));
        }
    }
    URL_SAFE_NO_PAD.encode(miniz_oxide::deflate::compress_to_vec_zlib(&bytes, 9))
}

/// The inverse of `encode`: one value per index.
pub fn decode(lst: &str) -> Result<Vec<u8>, String> {
    let z = URL_SAFE_NO_PAD.decode(lst).map_err(|e| e.to_string())?;
    let bytes = miniz_oxide::inflate::decompress_to_vec_zlib(&z).map_err(|e| format!("{e:?}"))?;
    Ok(bytes
        .iter()
        .flat_map(|b| (0..4).map(move |k| (b >> (2 * k)) & 0b11))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_least_significant_bits_first() {
        let lst = encode(6, [(0, 1), (1, 2), (5, 1)]);
        let z = URL_SAFE_NO_PAD.decode(&lst).unwrap();
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&z).unwrap();
        assert_eq!(raw, vec![0b0000_1001, 0b0000_0100]);
        assert_eq!(&decode(&lst).unwrap()[..6], &[1, 2, 0, 0, 0, 1]);
        assert_eq!(decode(&encode(0, [])).unwrap(), vec![0, 0, 0, 0]);
    }
}
