//! Sealing what replicas share: AES-256-GCM under a key derived (HKDF-SHA256) from the
//! account's client secret, so neither a Redis dump nor a replica without that secret can
//! read a token. The namespace and account are in the key derivation and the associated
//! data, so a record copied to another account's key fails to open.
//!
//! Envelope: `0x01 (version) ‖ 96-bit random nonce ‖ ciphertext+tag`. The plaintext is a
//! small JSON record; nothing in the envelope is readable.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Secret;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Fixed per format version: changing the derivation means a new version byte.
const HKDF_SALT: &[u8] = b"hubspot-auth-proxy fleet token seal v1";

/// An OAuth token as the fleet shares it. Debug prints no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedToken {
    pub access_token: Secret<String>,
    /// Unix seconds.
    pub expires_at: u64,
    /// HubSpot may rotate it; replicas write the fleet's back to their own files.
    pub refresh_token: Option<Secret<String>>,
    /// Raised by one on every fenced write; a record never goes backwards.
    pub generation: u64,
}

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    access_token: &'a str,
    expires_at: u64,
    refresh_token: Option<&'a str>,
    generation: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Wrong client secret, another account's record, or tampering: GCM cannot tell which.
    #[error("the shared token record cannot be opened with this account's client secret")]
    Open,
    #[error("the shared token record has an unknown format (version {0})")]
    Version(u8),
}

/// One account's sealing key; built once, from its client secret.
pub(crate) struct Sealer {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
}

impl Sealer {
    pub(crate) fn new(namespace: &str, account: &str, client_secret: &Secret<String>) -> Sealer {
        let context = format!("{namespace}\0{account}");
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), client_secret.expose().as_bytes());
        let mut key = [0u8; 32];
        hk.expand(context.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
            aad: context.into_bytes(),
        }
    }

    pub(crate) fn seal(&self, token: &SharedToken) -> Vec<u8> {
        let record = Record {
            access_token: token.access_token.expose(),
            expires_at: token.expires_at,
            refresh_token: token.refresh_token.as_ref().map(|t| t.expose().as_str()),
            generation: token.generation,
        };
        let plaintext = serde_json::to_vec(&record).expect("a record always serializes");
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: &plaintext,
                    aad: &self.aad,
                },
            )
            .expect("AES-GCM encryption of a small record cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub(crate) fn open(&self, sealed: &[u8]) -> Result<SharedToken, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if version != VERSION {
            return Err(SealError::Version(version));
        }
        if rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &self.aad,
                },
            )
            .map_err(|_| SealError::Open)?;
        let record: Record = serde_json::from_slice(&plaintext).map_err(|_| SealError::Open)?;
        Ok(SharedToken {
            access_token: Secret::new(record.access_token.to_owned()),
            expires_at: record.expires_at,
            refresh_token: record.refresh_token.map(|t| Secret::new(t.to_owned())),
            generation: record.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = "CJSP5qf1KhICAQEYs-gDIIGOBii1hQIyGQAf3xBKmlwHjX7OIpuIFEavB2-qYAGQsF4";
    const REFRESH: &str = "na1-6a7e-2c4f-4c1b-9f70-1234567890ab";

    fn secret(s: &str) -> Secret<String> {
        Secret::new(s.to_string())
    }

    fn token() -> SharedToken {
        SharedToken {
            access_token: secret(ACCESS),
            expires_at: 1_900_000_000,
            refresh_token: Some(secret(REFRESH)),
            generation: 7,
        }
    }

    #[test]
    fn a_sealed_token_opens_with_the_same_secret() {
        let sealer = Sealer::new("ns", "main", &secret("client-secret"));
        let sealed = sealer.seal(&token());
        assert_eq!(sealer.open(&sealed).unwrap(), token());
        // Fresh nonce each time: the same token never seals to the same bytes.
        assert_ne!(sealed, sealer.seal(&token()));
    }

    #[test]
    fn another_secret_account_or_namespace_cannot_open_it() {
        let sealed = Sealer::new("ns", "main", &secret("client-secret")).seal(&token());
        for other in [
            Sealer::new("ns", "main", &secret("other-secret")),
            Sealer::new("ns", "other", &secret("client-secret")),
            Sealer::new("ns2", "main", &secret("client-secret")),
        ] {
            assert_eq!(other.open(&sealed), Err(SealError::Open));
        }
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_refused() {
        let sealer = Sealer::new("ns", "main", &secret("client-secret"));
        let sealed = sealer.seal(&token());
        for i in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(sealer.open(&tampered), Err(SealError::Open), "byte {i}");
        }
        assert_eq!(sealer.open(&sealed[..20]), Err(SealError::Open));
        assert_eq!(sealer.open(&[]), Err(SealError::Open));
        let mut other_version = sealed;
        other_version[0] = 2;
        assert_eq!(sealer.open(&other_version), Err(SealError::Version(2)));
    }

    #[test]
    fn nothing_of_the_tokens_is_readable_in_the_envelope_or_debug() {
        let sealed = Sealer::new("ns", "main", &secret("client-secret")).seal(&token());
        let text = String::from_utf8_lossy(&sealed);
        for secret in [ACCESS, REFRESH, "client-secret"] {
            // Any 8-byte window of the secret would be a leak, not just the whole.
            for part in secret.as_bytes().windows(8) {
                let part = std::str::from_utf8(part).unwrap();
                assert!(!text.contains(part), "{part:?} readable in the envelope");
            }
        }
        let debug = format!("{:?}", token());
        assert!(
            !debug.contains(ACCESS) && !debug.contains(REFRESH),
            "{debug}"
        );
        assert!(!text.contains("access_token"), "field names are sealed too");
    }
}
