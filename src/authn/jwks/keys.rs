//! A JWKS document → verification keys. Pure: no I/O, no clock.
//!
//! Each JWK becomes a key only if it is usable for signatures, of an accepted type and size,
//! and consistent with its own `alg` (which then pins the one algorithm it verifies); anything
//! else is skipped, and a set with no usable key is an error.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url} failed: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} did not return a usable document: {reason}")]
    Document { url: String, reason: String },
}

/// A key that may verify tokens: parsed once for each algorithm it may verify, so that a
/// verification does no key parsing (jsonwebtoken's `DecodingKey` rebuilds the aws-lc key, and
/// for RSA its Montgomery constants, on every verification: about half of an RS256 check).
pub struct VerificationKey {
    /// The algorithm the JWK pins, or every algorithm its key type allows, each with the key.
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl VerificationKey {
    /// Can this key verify a token signed with `alg`?
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(accepted, _)| *accepted == alg)
    }

    /// Is `signature` a valid `alg` signature of `message` by this key? False for an `alg`
    /// the key does not accept.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(accepted, _)| *accepted == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// The usable keys of one JWKS document, by `kid`.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerificationKey>>,
    /// Keys published without a `kid`; used only when the set holds exactly one key.
    without_kid: Vec<Arc<VerificationKey>>,
    /// SHA-256 of the document, to tell a changed key set from a refetched identical one.
    pub(super) fingerprint: [u8; 32],
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures (encryption keys, symmetric
    /// keys, short RSA keys, unknown types) are skipped with a warning rather than failing the
    /// whole set; a document with no usable key at all is an error.
    pub fn parse(url: &str, body: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body).map_err(|e| JwksError::Document {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let mut set = KeySet::default();
        set.fingerprint
            .copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body).as_ref());
        for value in document.keys {
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(e) => {
                    log::warn!("{url}: skipping a key that is not a valid JWK: {e}");
                    continue;
                }
            };
            let kid = jwk.common.key_id.clone();
            match verification_key(&jwk) {
                Ok(key) => match kid {
                    Some(kid) => {
                        set.by_kid.insert(kid, Arc::new(key));
                    }
                    None => set.without_kid.push(Arc::new(key)),
                },
                Err(reason) => log::warn!(
                    "{url}: skipping key {}: {reason}",
                    kid.as_deref().unwrap_or("without kid")
                ),
            }
        }
        if set.is_empty() {
            return Err(JwksError::Document {
                url: url.to_string(),
                reason: "no usable signature key".to_string(),
            });
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for a token's `kid`. A token without `kid` is accepted only when the issuer
    /// publishes exactly one key, so that the choice is never ambiguous.
    pub fn get(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.len() == 1 => self
                .by_kid
                .values()
                .chain(self.without_kid.iter())
                .next()
                .cloned(),
            None => None,
        }
    }
}

fn verification_key(jwk: &Jwk) -> Result<VerificationKey, String> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("its \"use\" is not \"sig\"".to_string());
    }
    let pinned =
        match jwk.common.key_algorithm {
            None => None,
            Some(alg) => Some(signature_algorithm(alg).ok_or_else(|| {
                format!("its alg {alg:?} is not an asymmetric signature algorithm")
            })?),
        };
    let decode = |what: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("its {what} is not base64url"))
    };
    let public_key = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let modulus = decode("modulus", &rsa.n)?;
            let exponent = decode("exponent", &rsa.e)?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err(format!(
                    "RSA key of {} bits is shorter than 2048",
                    significant * 8
                ));
            }
            PublicKey::Rsa {
                modulus: modulus[modulus.len() - significant..].to_vec(),
                exponent,
            }
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (coordinate_bytes, key): (usize, fn(Vec<u8>) -> PublicKey) = match ec.curve {
                EllipticCurve::P256 => (32, PublicKey::EcP256),
                EllipticCurve::P384 => (48, PublicKey::EcP384),
                ref other => return Err(format!("curve {other:?} is not supported")),
            };
            let (x, y) = (decode("x", &ec.x)?, decode("y", &ec.y)?);
            if x.len() != coordinate_bytes || y.len() != coordinate_bytes {
                return Err(format!(
                    "its coordinates are not {coordinate_bytes} bytes each"
                ));
            }
            // SEC 1 uncompressed point: 0x04 || x || y.
            key([&[4u8][..], &x, &y].concat())
        }
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => PublicKey::Ed25519(decode("x", &okp.x)?),
            ref other => return Err(format!("curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never accepted".to_string())
        }
        _ => return Err("unknown key type".to_string()),
    };
    if let Some(pinned) = pinned.filter(|pinned| !public_key.fits(*pinned)) {
        return Err(format!("its alg {pinned:?} does not fit its key type"));
    }
    let verifiers = super::super::ASYMMETRIC_ALGORITHMS
        .iter()
        .filter(|alg| public_key.fits(**alg) && pinned.is_none_or(|pinned| pinned == **alg))
        .map(|alg| public_key.parse(*alg).map(|key| (*alg, key)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VerificationKey { verifiers })
}

/// The public key material of a JWK, decoded.
enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// Uncompressed points.
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Can a key of this type verify `alg` signatures?
    fn fits(&self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                PublicKey::Rsa { .. },
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (PublicKey::EcP256(_), Algorithm::ES256)
                | (PublicKey::EcP384(_), Algorithm::ES384)
                | (PublicKey::Ed25519(_), Algorithm::EdDSA)
        )
    }

    /// The key parsed for `alg`, which it [fits](Self::fits). JWS ECDSA signatures are the
    /// fixed-size `r || s` (RFC 7518 §3.4).
    fn parse(&self, alg: Algorithm) -> Result<ParsedPublicKey, String> {
        let parsed = match self {
            PublicKey::Rsa { modulus, exponent } => {
                let params: &'static RsaParameters = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    // PS512: `fits` admits no other algorithm for an RSA key.
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents {
                    n: modulus,
                    e: exponent,
                }
                .to_parsed_public_key(params)
            }
            PublicKey::EcP256(point) => {
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            }
            PublicKey::EcP384(point) => {
                ParsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
            }
            PublicKey::Ed25519(x) => ParsedPublicKey::new(&signature::ED25519, x),
        };
        parsed.map_err(|e| format!("its key is not a valid {alg:?} key: {e}"))
    }
}

/// Maps a JWK `alg` to a signature algorithm we accept; symmetric and encryption ones are None.
fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk(kid: &str, modulus_bytes: usize, extra: serde_json::Value) -> serde_json::Value {
        let mut n = vec![0xc5u8; modulus_bytes];
        n[modulus_bytes - 1] |= 1;
        let mut jwk = serde_json::json!({
            "kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"
        });
        if let (Some(jwk), Some(extra)) = (jwk.as_object_mut(), extra.as_object()) {
            jwk.extend(extra.clone());
        }
        jwk
    }

    fn parse(keys: Vec<serde_json::Value>) -> Result<KeySet, JwksError> {
        let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
        KeySet::parse("test", &body)
    }

    /// Every accepted algorithm, signed by aws-lc with a fresh key: the key's JWK verifies the
    /// signature under that algorithm only, and not a tampered message.
    #[test]
    fn each_algorithm_verifies_its_own_signatures_only() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let rng = SystemRandom::new();
        let message = b"header.payload";
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let rsa_jwk = serde_json::json!({
            "kty": "RSA", "kid": "rsa",
            "n": b64(rsa.public_key().modulus().big_endian_without_leading_zero()),
            "e": b64(rsa.public_key().exponent().big_endian_without_leading_zero()),
        });
        let rsa_signature = |encoding: &'static dyn signature::RsaEncoding| {
            let mut out = vec![0; rsa.public_modulus_len()];
            rsa.sign(encoding, &rng, message, &mut out).unwrap();
            out
        };
        let ec = |signing, curve: &str, kid: &str| {
            let pair = EcdsaKeyPair::generate(signing).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let half = (point.len() - 1) / 2;
            let jwk = serde_json::json!({
                "kty": "EC", "kid": kid, "crv": curve,
                "x": b64(&point[1..=half]), "y": b64(&point[half + 1..]),
            });
            (jwk, pair.sign(&rng, message).unwrap().as_ref().to_vec())
        };
        let (p256_jwk, es256) = ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", "p256");
        let (p384_jwk, es384) = ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", "p384");
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_jwk = serde_json::json!({
            "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())
        });
        let set = parse(vec![rsa_jwk, p256_jwk, p384_jwk, ed_jwk]).unwrap();
        let cases = [
            (
                "rsa",
                Algorithm::RS256,
                rsa_signature(&signature::RSA_PKCS1_SHA256),
            ),
            (
                "rsa",
                Algorithm::RS384,
                rsa_signature(&signature::RSA_PKCS1_SHA384),
            ),
            (
                "rsa",
                Algorithm::RS512,
                rsa_signature(&signature::RSA_PKCS1_SHA512),
            ),
            (
                "rsa",
                Algorithm::PS256,
                rsa_signature(&signature::RSA_PSS_SHA256),
            ),
            (
                "rsa",
                Algorithm::PS384,
                rsa_signature(&signature::RSA_PSS_SHA384),
            ),
            (
                "rsa",
                Algorithm::PS512,
                rsa_signature(&signature::RSA_PSS_SHA512),
            ),
            ("p256", Algorithm::ES256, es256),
            ("p384", Algorithm::ES384, es384),
            ("ed", Algorithm::EdDSA, ed.sign(message).as_ref().to_vec()),
        ];
        let every_alg: Vec<Algorithm> = cases.iter().map(|(_, alg, _)| *alg).collect();
        for (kid, alg, sig) in &cases {
            let key = set.get(Some(kid)).unwrap();
            for other in &every_alg {
                assert_eq!(
                    key.verify(*other, message, sig),
                    other == alg,
                    "{kid} signed with {alg:?}, checked as {other:?}"
                );
            }
            assert!(!key.verify(*alg, b"header.payloaD", sig), "{alg:?}");
        }
    }

    #[test]
    fn a_pinned_alg_is_the_only_one_accepted() {
        let set = parse(vec![rsa_jwk(
            "pinned",
            256,
            serde_json::json!({"alg": "PS256"}),
        )])
        .unwrap();
        let key = set.get(Some("pinned")).unwrap();
        assert!(key.accepts(Algorithm::PS256));
        assert!(!key.accepts(Algorithm::RS256));
        assert!(parse(vec![rsa_jwk(
            "odd",
            256,
            serde_json::json!({"alg": "ES256"})
        )])
        .is_err());
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let set = parse(vec![
            rsa_jwk(
                "good",
                256,
                serde_json::json!({"use": "sig", "alg": "RS256"}),
            ),
            rsa_jwk("short", 128, serde_json::json!({})),
            rsa_jwk("enc", 256, serde_json::json!({"use": "enc"})),
            serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            serde_json::json!({"kty": "weird", "kid": "x"}),
        ])
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.get(Some("good")).is_some());
        assert!(set.get(Some("short")).is_none());
        assert!(set.get(Some("hmac")).is_none());
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        assert!(parse(vec![rsa_jwk("short", 128, serde_json::json!({}))]).is_err());
        assert!(KeySet::parse("test", b"<html>").is_err());
    }

    #[test]
    fn pinned_algorithm_and_key_type_constrain_tokens() {
        let set = parse(vec![
            rsa_jwk("pinned", 256, serde_json::json!({"alg": "RS256"})),
            rsa_jwk("free", 256, serde_json::json!({})),
        ])
        .unwrap();
        let pinned = set.get(Some("pinned")).unwrap();
        assert!(pinned.accepts(Algorithm::RS256));
        assert!(!pinned.accepts(Algorithm::PS256));
        let free = set.get(Some("free")).unwrap();
        assert!(free.accepts(Algorithm::PS256));
        assert!(!free.accepts(Algorithm::ES256));
        assert!(!free.accepts(Algorithm::HS256));
    }

    #[test]
    fn kid_less_tokens_need_a_single_key() {
        let one = parse(vec![rsa_jwk("a", 256, serde_json::json!({}))]).unwrap();
        assert!(one.get(None).is_some());
        let two = parse(vec![
            rsa_jwk("a", 256, serde_json::json!({})),
            rsa_jwk("b", 256, serde_json::json!({})),
        ])
        .unwrap();
        assert!(two.get(None).is_none());
    }
}
