//! Authentication: bearer token → verified claims → `Identity`.
//!
//! The token's unverified `iss` only selects which trusted issuer's rules and keys apply; the
//! token is then verified with that issuer's keys (selected by `kid`), its allowed algorithms
//! (asymmetric only), exact issuer, audiences and lifetime. Header fields that could point at
//! other keys (`jku`, `x5u`, `jwk`, `x5c`) are never consulted.

mod bearer;
mod error;
pub mod identity;
pub mod jwks;

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

pub use bearer::bearer_token;
pub use error::AuthnError;
pub use identity::{ClaimMapping, Identity, ParentClaim, TenantClaim};
pub use jwks::{FetchPolicy, KeySource, KeyStore};

/// Algorithms an issuer may be configured to accept.
pub const ASYMMETRIC_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One trusted issuer with its verification rules and keys.
pub struct Issuer {
    pub issuer: String,
    pub mapping: ClaimMapping,
    pub keys: Arc<KeyStore>,
    /// One prepared validation per allowed algorithm.
    validations: HashMap<Algorithm, Validation>,
}

impl Issuer {
    pub fn new(
        issuer: String,
        audiences: &[String],
        algorithms: &[Algorithm],
        leeway_seconds: u64,
        mapping: ClaimMapping,
        keys: Arc<KeyStore>,
    ) -> Self {
        let validations = algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[&issuer]);
                validation.set_audience(audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.leeway = leeway_seconds;
                (alg, validation)
            })
            .collect();
        Issuer {
            issuer,
            mapping,
            keys,
            validations,
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub claims: Map<String, Value>,
}

/// All trusted issuers, by exact `iss`.
#[derive(Default)]
pub struct Authenticator {
    issuers: HashMap<String, Arc<Issuer>>,
}

impl Authenticator {
    pub fn new(issuers: Vec<Issuer>) -> Self {
        Authenticator {
            issuers: issuers
                .into_iter()
                .map(|i| (i.issuer.clone(), Arc::new(i)))
                .collect(),
        }
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.values()
    }

    /// Verifies a compact JWS and maps its claims to an identity.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthnError> {
        let payload = compact_payload(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::InvalidHeader)?;
        if header.crit.is_some() {
            return Err(AuthnError::UnsupportedCritical);
        }
        let iss = unverified_issuer(payload)?;
        let issuer = self.issuers.get(&iss).ok_or(AuthnError::UnknownIssuer)?;
        let validation = issuer
            .validations
            .get(&header.alg)
            .ok_or(AuthnError::AlgorithmNotAllowed)?;
        let kid = header.kid.as_deref();
        let key = match issuer.keys.current().and_then(|set| set.get(kid)) {
            Some(key) => key,
            None => {
                issuer.keys.refresh_for_unknown_kid().await;
                let set = issuer.keys.current().ok_or(AuthnError::KeysUnavailable)?;
                set.get(kid).ok_or(AuthnError::UnknownKey)?
            }
        };
        if !key.accepts(header.alg) {
            return Err(AuthnError::AlgorithmNotAllowed);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation)
            .map_err(|e| verification_error(e.kind()))?;
        let identity = issuer.mapping.identity(&issuer.issuer, &data.claims)?;
        Ok(Authenticated {
            identity,
            claims: data.claims,
        })
    }
}

/// Checks the compact serialization (three non-empty base64url parts) and returns the payload.
fn compact_payload(token: &str) -> Result<&str, AuthnError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthnError::Malformed);
    };
    let base64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(base64url(header) && base64url(payload) && base64url(signature)) {
        return Err(AuthnError::Malformed);
    }
    Ok(payload)
}

/// Reads `iss` from the payload before verification, only to pick the issuer's rules.
fn unverified_issuer(payload: &str) -> Result<String, AuthnError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AuthnError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct IssuerOnly {
        iss: Option<String>,
    }
    let claims: IssuerOnly = serde_json::from_slice(&bytes).map_err(|_| AuthnError::Malformed)?;
    claims
        .iss
        .ok_or(AuthnError::MissingClaim("iss".to_string()))
}

fn verification_error(kind: &ErrorKind) -> AuthnError {
    match kind {
        ErrorKind::InvalidSignature => AuthnError::BadSignature,
        ErrorKind::ExpiredSignature => AuthnError::Expired,
        ErrorKind::ImmatureSignature => AuthnError::NotYetValid,
        ErrorKind::InvalidAudience => AuthnError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthnError::UnknownIssuer,
        ErrorKind::MissingRequiredClaim(claim) => AuthnError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthnError::AlgorithmNotAllowed
        }
        ErrorKind::InvalidClaimFormat(claim) => AuthnError::InvalidClaim(claim.clone()),
        _ => AuthnError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_form_is_checked() {
        assert_eq!(compact_payload("a.b.c"), Ok("b"));
        for bad in ["a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "a.b+.c", "a.b=.c"] {
            assert_eq!(compact_payload(bad), Err(AuthnError::Malformed), "{bad}");
        }
    }

    #[test]
    fn issuer_is_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://x/","sub":"a"}"#);
        assert_eq!(unverified_issuer(&payload), Ok("https://x/".to_string()));
        let no_iss = URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#);
        assert_eq!(
            unverified_issuer(&no_iss),
            Err(AuthnError::MissingClaim("iss".into()))
        );
        assert_eq!(unverified_issuer("!!"), Err(AuthnError::Malformed));
    }
}
