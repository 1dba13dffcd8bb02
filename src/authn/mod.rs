//! Authentication: bearer token → verified claims → `Identity`, with a verified-token cache.
//!
//! The token is first taken apart strictly (`token`), then its unverified `iss` only selects
//! which trusted issuer's rules and keys apply; the signature is checked with that issuer's key
//! (selected by `kid`, constrained by the JWK's own `alg` and type) for one of its allowed
//! algorithms (asymmetric only), then the issuer's claim rules and claim mapping run. Header
//! fields that could point at other keys (`jku`, `x5u`, `jwk`, `x5c`) are never consulted.

mod bearer;
pub mod cache;
mod error;
pub mod identity;
pub mod jwks;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;

pub use bearer::bearer_token;
pub use cache::{CacheStats, TokenCache, VerifiedToken};
pub use error::AuthnError;
pub use identity::{ClaimMapping, ForwardedIdentity, Identity, ParentClaim, TenantClaim};
pub use jwks::{FetchPolicy, KeySource, KeyStore};
pub use token::ClaimRules;

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

/// Longest bearer token accepted by default, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;

/// One trusted issuer with its verification rules and keys.
pub struct Issuer {
    pub rules: ClaimRules,
    pub algorithms: Vec<Algorithm>,
    pub mapping: ClaimMapping,
    pub keys: Arc<KeyStore>,
}

impl Issuer {
    pub fn name(&self) -> &str {
        &self.rules.issuer
    }
}

/// All trusted issuers, by exact `iss`, and the cache of tokens they issued.
pub struct Authenticator {
    issuers: HashMap<String, Arc<Issuer>>,
    max_token_bytes: usize,
    cache: Option<TokenCache>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new(Vec::new(), DEFAULT_MAX_TOKEN_BYTES, 0)
    }
}

impl Authenticator {
    /// `cache_entries` bounds the verified-token cache; 0 turns it off.
    pub fn new(issuers: Vec<Issuer>, max_token_bytes: usize, cache_entries: usize) -> Self {
        Authenticator {
            issuers: issuers
                .into_iter()
                .map(|i| (i.name().to_string(), Arc::new(i)))
                .collect(),
            max_token_bytes,
            cache: (cache_entries > 0).then(|| TokenCache::new(cache_entries)),
        }
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.values()
    }

    /// Whether every issuer has a key set.
    pub fn has_all_keys(&self) -> bool {
        self.issuers_without_keys().is_empty()
    }

    /// Issuers whose keys were never fetched: their tokens get 401.
    pub fn issuers_without_keys(&self) -> Vec<&str> {
        self.issuers()
            .filter(|issuer| issuer.keys.current().is_none())
            .map(|issuer| issuer.name())
            .collect()
    }

    /// The counters `/metrics` reads at scrape time.
    pub fn figures(&self) -> crate::metrics::AuthenticatorFigures {
        let stats = self.cache_stats();
        crate::metrics::AuthenticatorFigures {
            fetches: self
                .issuers()
                .map(|issuer| {
                    let counts = issuer.keys.fetch_counts();
                    (issuer.name().to_string(), counts.successes, counts.failures)
                })
                .collect(),
            issuers_without_keys: self.issuers_without_keys().len(),
            cache_hits: stats.hits,
            cache_misses: stats.misses,
        }
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .map(TokenCache::stats)
            .unwrap_or_default()
    }

    /// Verifies a compact JWS and maps its claims to an identity; served from the cache when
    /// this exact token was verified before and is still valid.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthnError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthnError::TooLarge(self.max_token_bytes));
        }
        let now = unix_now();
        let digest = match &self.cache {
            Some(cache) => {
                let digest = TokenCache::digest(token);
                let generation = |iss: &str| self.issuers.get(iss).map(|i| i.keys.generation());
                if let Some(hit) = cache.get(&digest, now as f64, generation) {
                    return Ok(hit);
                }
                Some(digest)
            }
            None => None,
        };
        let verified = Arc::new(self.verify(token, now).await?);
        if let (Some(cache), Some(digest)) = (&self.cache, digest) {
            cache.insert(digest, verified.clone());
        }
        Ok(verified)
    }

    async fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, AuthnError> {
        let parsed = token::parse(token, self.max_token_bytes)?;
        let issuer = self
            .issuers
            .get(parsed.issuer()?)
            .ok_or(AuthnError::UnknownIssuer)?;
        let alg = parsed.header.alg;
        if !issuer.algorithms.contains(&alg) {
            return Err(AuthnError::AlgorithmNotAllowed);
        }
        let kid = parsed.header.kid.as_deref();
        // Read before the key: if the set changes meanwhile, the entry is already stale.
        let mut generation = issuer.keys.generation();
        let key = match issuer.keys.current().and_then(|set| set.get(kid)) {
            Some(key) => key,
            None => {
                if issuer.keys.refresh_for_unknown_kid().await {
                    self.key_set_changed(issuer);
                }
                generation = issuer.keys.generation();
                let set = issuer.keys.current().ok_or(AuthnError::KeysUnavailable)?;
                set.get(kid).ok_or(AuthnError::UnknownKey)?
            }
        };
        if !key.accepts(alg) {
            return Err(AuthnError::AlgorithmNotAllowed);
        }
        if !key.verify(alg, parsed.signing_input.as_bytes(), &parsed.signature) {
            return Err(AuthnError::BadSignature);
        }
        let expires_at = issuer.rules.check(&parsed.header, &parsed.claims, now)?;
        let identity = issuer.mapping.identity(issuer.name(), &parsed.claims)?;
        // The claims are not kept: the identity holds all the gateway reads of them.
        Ok(VerifiedToken::new(identity, expires_at, generation))
    }

    fn key_set_changed(&self, issuer: &Issuer) {
        if let Some(cache) = &self.cache {
            cache.purge_issuer(issuer.name());
        }
    }

    /// Fetches every issuer's keys once. Returns the issuers whose keys could not be fetched.
    pub async fn fetch_keys(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for issuer in self.issuers() {
            if issuer.keys.refresh().await {
                self.key_set_changed(issuer);
            }
            if issuer.keys.current().is_none() {
                missing.push(issuer.name().to_string());
            }
        }
        missing
    }

    /// Refreshes one issuer's keys forever, as its key store schedules; run one per issuer.
    pub async fn refresh_periodically(self: Arc<Self>, issuer: Arc<Issuer>) {
        loop {
            tokio::time::sleep(issuer.keys.next_refresh()).await;
            if issuer.keys.refresh().await {
                self.key_set_changed(&issuer);
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_tokens_are_refused_before_anything_else() {
        let authenticator = Authenticator::new(Vec::new(), 16, 10);
        let result = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(authenticator.authenticate(&"a".repeat(17)));
        assert_eq!(result.map(|_| ()), Err(AuthnError::TooLarge(16)));
        assert_eq!(authenticator.cache_stats(), CacheStats::default());
    }
}
