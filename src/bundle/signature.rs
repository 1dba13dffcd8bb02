//! Bundle signatures: Ed25519 over the bundle manifest's digest (with a domain prefix), keys
//! in PEM files (`openssl genpkey -algorithm ed25519`, or `portcullis bundle keygen`). A
//! gateway trusts a list of public keys; a signature names its key by id (the first 16 hex
//! digits of the SHA-256 of the raw public key). Hand-written on aws-lc-rs: the format is ours,
//! and small enough to read whole.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::BundleError;

/// What is signed: this prefix, then the manifest digest (`sha256:...`).
const DOMAIN: &[u8] = b"portcullis-bundle-v1\n";
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The signature artifact's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDocument {
    pub digest: String,
    pub key_id: String,
    pub signature: String,
}

pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// A PKCS#8 `PRIVATE KEY` PEM.
    pub fn from_pem(text: &str) -> Result<Self, BundleError> {
        let der = pem(text, "PRIVATE KEY")?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map(SigningKey)
            .map_err(|_| {
                BundleError::Signature("the private key is not an Ed25519 PKCS#8 key".into())
            })
    }

    /// A new key: (private PKCS#8 PEM, public SPKI PEM).
    pub fn generate() -> Result<(String, String), BundleError> {
        let document = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| BundleError::Signature("cannot generate a key".into()))?;
        let key = Ed25519KeyPair::from_pkcs8(document.as_ref())
            .map_err(|_| BundleError::Signature("cannot read the generated key".into()))?;
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        Ok((
            to_pem("PRIVATE KEY", document.as_ref()),
            to_pem("PUBLIC KEY", &spki),
        ))
    }

    pub fn sign(&self, digest: &str) -> SignatureDocument {
        let signature = self.0.sign(&message(digest));
        SignatureDocument {
            digest: digest.to_string(),
            key_id: key_id(self.0.public_key().as_ref()),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        }
    }
}

/// A public key a gateway trusts.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: String,
    raw: Vec<u8>,
}

impl TrustedKey {
    /// An Ed25519 SPKI `PUBLIC KEY` PEM.
    pub fn from_pem(text: &str) -> Result<Self, BundleError> {
        let der = pem(text, "PUBLIC KEY")?;
        let raw = der
            .strip_prefix(&SPKI_PREFIX[..])
            .filter(|raw| raw.len() == 32)
            .ok_or_else(|| BundleError::Signature("the public key is not an Ed25519 key".into()))?;
        Ok(TrustedKey {
            id: key_id(raw),
            raw: raw.to_vec(),
        })
    }
}

/// Checks `document` against `digest` and the trusted keys: it must be for this digest, by a
/// trusted key, and verify.
pub fn verify(
    document: &SignatureDocument,
    digest: &str,
    trusted: &[TrustedKey],
) -> Result<String, BundleError> {
    if document.digest != digest {
        return Err(BundleError::Signature(format!(
            "the signature is for {}, not for the bundle's {digest}",
            document.digest
        )));
    }
    let key = trusted
        .iter()
        .find(|k| k.id == document.key_id)
        .ok_or_else(|| {
            BundleError::Signature(format!(
                "signed by key {}, which is not trusted",
                document.key_id
            ))
        })?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&document.signature)
        .map_err(|_| BundleError::Signature("the signature is not base64".into()))?;
    UnparsedPublicKey::new(&ED25519, &key.raw)
        .verify(&message(digest), &signature)
        .map_err(|_| {
            BundleError::Signature(format!("the signature by key {} does not verify", key.id))
        })?;
    Ok(key.id.clone())
}

fn message(digest: &str) -> Vec<u8> {
    [DOMAIN, digest.as_bytes()].concat()
}

fn key_id(raw: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw)
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pem(text: &str, label: &str) -> Result<Vec<u8>, BundleError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| BundleError::Signature(format!("no {begin} block")))?;
    let joined: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .map_err(|_| BundleError::Signature(format!("the {label} block is not base64")))
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_digest_and_a_trusted_key() {
        let (private, public) = SigningKey::generate().unwrap();
        let key = SigningKey::from_pem(&private).unwrap();
        let trusted = [TrustedKey::from_pem(&public).unwrap()];
        let signed = key.sign("sha256:aa");
        assert_eq!(
            verify(&signed, "sha256:aa", &trusted).unwrap(),
            trusted[0].id
        );
        assert!(verify(&signed, "sha256:bb", &trusted).is_err());
        let (_, other) = SigningKey::generate().unwrap();
        assert!(verify(
            &signed,
            "sha256:aa",
            &[TrustedKey::from_pem(&other).unwrap()]
        )
        .unwrap_err()
        .to_string()
        .contains("not trusted"));
        let mut forged = signed.clone();
        forged.signature = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
        assert!(verify(&forged, "sha256:aa", &trusted)
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
    }

    #[test]
    fn openssl_style_keys_are_read() {
        // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`.
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHoBmLm8J3K7GvW0dbKhPFJ0UeYBQ1FwE2N6cJ3h7Vn1\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(private).unwrap();
        let signed = key.sign("sha256:cc");
        let public = to_pem(
            "PUBLIC KEY",
            &[&SPKI_PREFIX[..], key.0.public_key().as_ref()].concat(),
        );
        assert!(verify(
            &signed,
            "sha256:cc",
            &[TrustedKey::from_pem(&public).unwrap()]
        )
        .is_ok());
    }
}
