//! Token Status Lists (IETF OAuth draft): 2 bits per token, zlib-compressed, base64url.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Largest decompressed list accepted: 64 Mi entries at 2 bits.
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// The status of one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// 0: valid.
    Valid,
    /// 1: revoked (the draft's "invalid").
    Revoked,
    /// 2: suspended.
    Suspended,
    /// 3: the draft's application-specific value; Tessera's "rotated": the token's
    /// successor took over and the rotation's grace period is over (final, like revoked).
    Rotated,
}

impl TokenStatus {
    /// The status a 2-bit value stands for (higher bits are ignored).
    pub fn from_bits(b: u8) -> TokenStatus {
        match b & 0b11 {
            0 => TokenStatus::Valid,
            1 => TokenStatus::Revoked,
            2 => TokenStatus::Suspended,
            _ => TokenStatus::Rotated,
        }
    }

    /// The 2-bit value.
    pub fn bits(self) -> u8 {
        match self {
            TokenStatus::Valid => 0,
            TokenStatus::Revoked => 1,
            TokenStatus::Suspended => 2,
            TokenStatus::Rotated => 3,
        }
    }
}

/// Why a list could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusListError {
    /// `lst` is not base64url.
    Base64,
    /// `lst` is not a zlib stream, or decompresses beyond [`MAX_LIST_BYTES`].
    Zlib,
}

impl fmt::Display for StatusListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusListError::Base64 => f.write_str("is not valid base64url"),
            StatusListError::Zlib => {
                write!(f, "is not a zlib stream of at most {MAX_LIST_BYTES} bytes")
            }
        }
    }
}

impl std::error::Error for StatusListError {}

/// Inflates zlib data into a vector of exactly its size, in two passes: the first counts
/// the output through a 32 KiB window, the second fills an allocation of that size. A
/// growing vector would double past the size (a 10M-entry list, 2.4 MiB, would pass
/// through 4 MiB, and a realloc holds both): in a wasm VM, whose memory never shrinks,
/// that peak would stay for good. Decompression runs only when a list changes.
pub(crate) fn inflate_exact(compressed: &[u8], max: usize) -> Result<Vec<u8>, StatusListError> {
    use miniz_oxide::inflate::core::inflate_flags::{
        TINFL_FLAG_COMPUTE_ADLER32, TINFL_FLAG_PARSE_ZLIB_HEADER,
        TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    };
    use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;

    const WINDOW: usize = 32 * 1024;
    let flags = TINFL_FLAG_PARSE_ZLIB_HEADER | TINFL_FLAG_COMPUTE_ADLER32;
    let mut state = DecompressorOxide::new();
    let mut window = vec![0u8; WINDOW];
    let (mut in_pos, mut out_pos, mut total) = (0usize, 0usize, 0usize);
    loop {
        let input = compressed.get(in_pos..).unwrap_or_default();
        let (status, read, written) = decompress(&mut state, input, &mut window, out_pos, flags);
        in_pos += read;
        total += written;
        out_pos = (out_pos + written) % WINDOW;
        if total > max {
            return Err(StatusListError::Zlib);
        }
        match status {
            TINFLStatus::Done => break,
            TINFLStatus::HasMoreOutput => {}
            _ => return Err(StatusListError::Zlib),
        }
    }
    drop(window);
    let mut bytes = vec![0u8; total];
    let mut state = DecompressorOxide::new();
    let (status, _, written) = decompress(
        &mut state,
        compressed,
        &mut bytes,
        0,
        flags | TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    if status == TINFLStatus::Done && written == total {
        Ok(bytes)
    } else {
        Err(StatusListError::Zlib)
    }
}

/// A compact 2-bit status array. Entry `i` is in byte `i / 4` at bit offset `2 * (i % 4)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusList {
    bytes: Vec<u8>,
}

impl StatusList {
    /// A list of `len` entries, all valid.
    pub fn new(len: usize) -> StatusList {
        StatusList {
            bytes: vec![0; len.div_ceil(4)],
        }
    }

    /// A list of at least `len` entries with the given `(index, status)` entries set, the
    /// others valid (the control plane's list from its stored entries). An index at or
    /// beyond `len` grows the list.
    pub fn from_entries(
        len: usize,
        entries: impl IntoIterator<Item = (usize, TokenStatus)>,
    ) -> StatusList {
        let mut list = StatusList::new(len);
        for (idx, status) in entries {
            list.set(idx, status);
        }
        list
    }

    /// Decodes the draft's `lst` value (base64url of zlib-compressed bytes).
    pub fn from_lst(lst: &str) -> Result<StatusList, StatusListError> {
        let compressed = URL_SAFE_NO_PAD
            .decode(lst.trim_end_matches('='))
            .map_err(|_| StatusListError::Base64)?;
        Ok(StatusList {
            bytes: inflate_exact(&compressed, MAX_LIST_BYTES)?,
        })
    }

    /// Encodes as the draft's `lst` value.
    pub fn to_lst(&self) -> String {
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&self.bytes, 9);
        URL_SAFE_NO_PAD.encode(compressed)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len() * 4
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The status at `idx`, or `None` beyond the list.
    pub fn get(&self, idx: u64) -> Option<TokenStatus> {
        let byte = usize::try_from(idx / 4).ok()?;
        let b = *self.bytes.get(byte)?;
        Some(TokenStatus::from_bits(b >> ((idx % 4) * 2)))
    }

    /// Sets the status at `idx`, growing the list when needed.
    pub fn set(&mut self, idx: usize, status: TokenStatus) {
        let byte = idx / 4;
        if byte >= self.bytes.len() {
            self.bytes.resize(byte + 1, 0);
        }
        let shift = (idx % 4) * 2;
        self.bytes[byte] = (self.bytes[byte] & !(0b11 << shift)) | (status.bits() << shift);
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_to_exactly_the_size() {
        for len in [0usize, 1, 4, 1000, 32 * 1024 * 4 + 3, 3_000_001] {
            let mut l = StatusList::new(len);
            if len > 10 {
                l.set(len - 1, TokenStatus::Revoked);
                l.set(len / 2, TokenStatus::Suspended);
            }
            let back = StatusList::from_lst(&l.to_lst()).unwrap();
            assert_eq!(back, l, "{len}");
            assert_eq!(back.bytes.capacity(), back.bytes.len(), "{len}");
        }
        // Corrupt data (bad checksum, truncated) is refused, not returned short.
        let mut z = miniz_oxide::deflate::compress_to_vec_zlib(&[1, 2, 3, 4, 5], 6);
        let last = z.len() - 1;
        z[last] ^= 1;
        assert_eq!(
            inflate_exact(&z, MAX_LIST_BYTES),
            Err(StatusListError::Zlib)
        );
        let z = miniz_oxide::deflate::compress_to_vec_zlib(&[7; 100_000], 6);
        assert_eq!(
            inflate_exact(&z[..z.len() / 2], MAX_LIST_BYTES),
            Err(StatusListError::Zlib)
        );
    }

    #[test]
    fn from_entries_packs_like_the_testkit() {
        let statuses = [1u8, 2, 0, 0, 0, 1, 3];
        let l = StatusList::from_entries(
            10,
            statuses
                .iter()
                .enumerate()
                .map(|(i, s)| (i, TokenStatus::from_bits(*s))),
        );
        assert_eq!(l.len(), 12);
        let mut want = statuses.to_vec();
        want.resize(10, 0);
        assert_eq!(l.to_lst(), tessera_testkit::status_list_lst(&want));
        let grown = StatusList::from_entries(0, [(9, TokenStatus::Revoked)]);
        assert_eq!(grown.get(9), Some(TokenStatus::Revoked));
        assert_eq!(grown.get(8), Some(TokenStatus::Valid));
    }

    #[test]
    fn round_trip_and_layout() {
        let mut l = StatusList::new(10);
        l.set(0, TokenStatus::Revoked);
        l.set(5, TokenStatus::Suspended);
        l.set(7, TokenStatus::Rotated);
        assert_eq!(l.as_bytes()[0], 0b0000_0001);
        assert_eq!(l.as_bytes()[1], 0b1100_1000);
        let back = StatusList::from_lst(&l.to_lst()).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.get(0), Some(TokenStatus::Revoked));
        assert_eq!(back.get(1), Some(TokenStatus::Valid));
        assert_eq!(back.get(5), Some(TokenStatus::Suspended));
        assert_eq!(back.get(7), Some(TokenStatus::Rotated));
        assert_eq!(back.get(12), None);
        assert_eq!(back.get(u64::MAX), None);
    }

    #[test]
    fn agrees_with_the_independent_testkit_encoder() {
        let statuses = [0u8, 1, 2, 0, 0, 2, 1, 1, 0];
        let l = StatusList::from_lst(&tessera_testkit::status_list_lst(&statuses)).unwrap();
        for (i, s) in statuses.iter().enumerate() {
            let want = TokenStatus::from_bits(*s);
            assert_eq!(l.get(i as u64), Some(want), "idx {i}");
        }
    }

    #[test]
    fn the_drafts_example_bytes_decode() {
        // The draft's example list: byte array [0xb9, 0xa3] encodes as "eNrbuRgAAhcBXQ".
        let l = StatusList::from_lst("eNrbuRgAAhcBXQ").unwrap();
        assert_eq!(l.as_bytes(), &[0xb9, 0xa3]);
        // Read with 2 bits per entry, least significant first.
        let want = [1u8, 2, 3, 2, 3, 0, 2, 2];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(l.get(i as u64), Some(TokenStatus::from_bits(*w)), "idx {i}");
        }
    }

    #[test]
    fn refuses_garbage_and_bombs() {
        assert_eq!(StatusList::from_lst("!!"), Err(StatusListError::Base64));
        assert_eq!(StatusList::from_lst("AAAA"), Err(StatusListError::Zlib));
        let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; MAX_LIST_BYTES + 1], 9);
        assert_eq!(
            StatusList::from_lst(&URL_SAFE_NO_PAD.encode(bomb)),
            Err(StatusListError::Zlib)
        );
    }
}
