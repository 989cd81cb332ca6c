//! Ed25519 for jwt-compact, over `ed25519-compact` without its `random` feature.
//!
//! jwt-compact's own Ed25519 backend switches on `ed25519-compact/random`, which pulls a
//! wasm-bindgen entropy source into the module; a proxy-wasm module must import nothing
//! but the proxy-wasm ABI. Verification needs no randomness, so this adapter signs
//! deterministically and verifies exactly as the library does.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};

/// The `EdDSA` algorithm with the Ed25519 curve.
#[derive(Clone, Copy, Debug, Default)]
pub struct EdDsa;

/// A 64-byte Ed25519 signature.
#[derive(Clone, Debug)]
pub struct EdSignature(ed25519_compact::Signature);

impl AlgorithmSignature for EdSignature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(ed25519_compact::Signature::BYTES);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        ed25519_compact::Signature::from_slice(slice)
            .map(EdSignature)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.0.as_ref())
    }
}

impl Algorithm for EdDsa {
    type SigningKey = ed25519_compact::SecretKey;
    type VerifyingKey = ed25519_compact::PublicKey;
    type Signature = EdSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("EdDSA")
    }

    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        EdSignature(signing_key.sign(message, None))
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, &signature.0).is_ok()
    }
}
