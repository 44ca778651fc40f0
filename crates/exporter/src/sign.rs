//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! what lets a receiver tell Weir's requests from anyone's.
//!
//! ## What is signed
//! The signing string is `{webhook-id}.{webhook-timestamp}.{body}`, where
//! `body` is exactly the bytes sent — with `--gzip`, the compressed bytes
//! (a receiver verifies before it inflates). The id is the downstream id
//! (hex: never a `.`), the timestamp unix seconds at send time, taken
//! afresh for every attempt, so a retry is never refused as stale.
//!
//! ## The header
//! `webhook-signature` is a space-separated list: `v1,<base64 HMAC-SHA256>`
//! for each `whsec_` secret, in the order given, then `v1a,<base64 ed25519
//! signature>` when a `whsk_` key is set. Several secrets at once are how a
//! secret rotates with no failed verification: the receiver accepts a
//! request when any entry verifies.
//!
//! ## Keys
//! - `whsec_<base64>`: the HMAC key is the decoded bytes, 24 to 64 of them
//!   (the specification's range).
//! - `whsk_<base64>`: an ed25519 secret key, either the 32-byte seed or the
//!   64-byte keypair (seed then public key, as libsodium and Go write it;
//!   the public half must match the seed). The receiver's key is the public
//!   key, `whpk_<base64 of its 32 bytes>`, which the exporter logs at start.
//!
//! The crypto is RustCrypto's `hmac` and `sha2`, and `ed25519-dalek`.

use crate::secret::Secret;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a key cannot be used. The key itself is never in the message.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a signing secret must start with whsec_")]
    NotWhsec,
    #[error("a signing key must start with whsk_")]
    NotWhsk,
    #[error("the key after its prefix is not standard base64")]
    Base64(#[source] base64::DecodeError),
    #[error("a whsec_ secret must hold 24 to 64 bytes, this one holds {0}")]
    SecretLength(usize),
    #[error("a whsk_ key must be a 32-byte seed or a 64-byte keypair, this one holds {0} bytes")]
    KeyLength(usize),
    #[error("the whsk_ keypair's public half does not match its seed")]
    KeypairMismatch,
}

/// The HMAC keys and the ed25519 key a request is signed with.
#[derive(Default)]
pub struct Signer {
    hmac_keys: Vec<Vec<u8>>,
    ed25519: Option<ed25519_dalek::SigningKey>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("secrets", &self.hmac_keys.len())
            .field("ed25519", &self.ed25519.is_some())
            .finish()
    }
}

fn decode(text: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(KeyError::Base64)
}

fn hmac_key(secret: &Secret) -> Result<Vec<u8>, KeyError> {
    let b64 = secret.expose().trim().strip_prefix("whsec_").ok_or(KeyError::NotWhsec)?;
    let key = decode(b64)?;
    if !(24..=64).contains(&key.len()) {
        return Err(KeyError::SecretLength(key.len()));
    }
    Ok(key)
}

fn ed25519_key(key: &Secret) -> Result<ed25519_dalek::SigningKey, KeyError> {
    let b64 = key.expose().trim().strip_prefix("whsk_").ok_or(KeyError::NotWhsk)?;
    let bytes = decode(b64)?;
    match bytes.len() {
        32 => {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&bytes);
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        64 => {
            let mut pair = [0u8; 64];
            pair.copy_from_slice(&bytes);
            ed25519_dalek::SigningKey::from_keypair_bytes(&pair).map_err(|_| KeyError::KeypairMismatch)
        }
        n => Err(KeyError::KeyLength(n)),
    }
}

impl Signer {
    /// A signer of `secrets` (`whsec_…`, in order) and `key` (`whsk_…`).
    pub fn new(secrets: &[Secret], key: Option<&Secret>) -> Result<Signer, KeyError> {
        let hmac_keys = secrets.iter().map(hmac_key).collect::<Result<_, _>>()?;
        let ed25519 = key.map(ed25519_key).transpose()?;
        Ok(Signer { hmac_keys, ed25519 })
    }

    /// Whether requests are signed at all.
    pub fn signs(&self) -> bool {
        !self.hmac_keys.is_empty() || self.ed25519.is_some()
    }

    /// The public key receivers verify `v1a` with, as `whpk_<base64>`.
    pub fn public_key(&self) -> Option<String> {
        self.ed25519.as_ref().map(|k| format!("whpk_{}", protocol::b64_encode(k.verifying_key().as_bytes())))
    }

    /// The `webhook-signature` value for this id, timestamp and body.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mut entries: Vec<String> = Vec::with_capacity(self.hmac_keys.len() + 1);
        for key in &self.hmac_keys {
            // Any key length is valid for HMAC: `new_from_slice` cannot fail here.
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { continue };
            for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
                mac.update(part);
            }
            entries.push(format!("v1,{}", protocol::b64_encode(&mac.finalize().into_bytes())));
        }
        if let Some(key) = &self.ed25519 {
            // Ed25519 hashes its message twice: it needs it in one piece.
            let mut message = Vec::with_capacity(id.len() + ts.len() + 2 + body.len());
            for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
                message.extend_from_slice(part);
            }
            entries.push(format!("v1a,{}", protocol::b64_encode(&key.sign(&message).to_bytes())));
        }
        entries.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' test
    /// suites (the same secret, id, timestamp and body in each of them).
    #[test]
    fn the_reference_example_signs_to_the_reference_signature() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let signer = Signer::new(&[secret], None).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn every_secret_signs_and_the_ed25519_key_verifies_from_seed_or_keypair() {
        let a = Secret::new(format!("whsec_{}", protocol::b64_encode(&[1u8; 32])));
        let b = Secret::new(format!("whsec_{}", protocol::b64_encode(&[2u8; 24])));
        let seed = [7u8; 32];
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pair = sk.to_keypair_bytes();
        for key in [protocol::b64_encode(&seed), protocol::b64_encode(&pair)] {
            let signer = Signer::new(&[a.clone(), b.clone()], Some(&Secret::new(format!("whsk_{key}")))).unwrap();
            let header = signer.signature("abc", 5, b"{}");
            let parts: Vec<&str> = header.split(' ').collect();
            assert_eq!(parts.len(), 3, "{header}");
            assert!(parts[0].starts_with("v1,") && parts[1].starts_with("v1,") && parts[0] != parts[1]);
            let sig = protocol::b64_decode(parts[2].strip_prefix("v1a,").unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            sk.verifying_key().verify_strict(b"abc.5.{}", &sig).unwrap();
            assert_eq!(
                signer.public_key().unwrap(),
                format!("whpk_{}", protocol::b64_encode(sk.verifying_key().as_bytes()))
            );
        }
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        let bad = |s: &str| Signer::new(&[Secret::new(s)], None).unwrap_err().to_string();
        assert!(bad("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").contains("whsec_"));
        assert!(bad("whsec_!!!").contains("base64"));
        assert!(bad("whsec_AAAA").contains("holds 3"));
        let mut pair = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).to_keypair_bytes();
        pair[63] ^= 1;
        let e = Signer::new(&[], Some(&Secret::new(format!("whsk_{}", protocol::b64_encode(&pair))))).unwrap_err();
        assert!(matches!(e, KeyError::KeypairMismatch), "{e}");
        assert!(!Signer::default().signs());
    }
}
