//! The verified-token cache: most requests carry a token the gateway has already verified, and
//! verifying a signature costs far more than the rest of the request.
//!
//! Entries are keyed by the SHA-256 of the whole token, so a token differing in any byte is a
//! miss. Only tokens that passed every check are inserted. A hit is re-checked against `exp` (the
//! stored deadline includes the issuer's leeway, so hit and miss agree) and against the issuer's
//! key-set generation: when the key set changes, the issuer's entries are removed. The cache is
//! bounded (`quick_cache`, the crate the decision cache uses): an entry found expired or stale
//! is removed, and a full cache evicts what is not being hit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{ForwardedIdentity, Identity};

/// SHA-256 of a token.
pub type TokenDigest = [u8; 32];

/// A token that passed every check, with what was derived from it.
pub struct VerifiedToken {
    pub identity: Identity,
    /// `identity` as it is forwarded and logged.
    pub forwarded: ForwardedIdentity,
    /// Seconds since the epoch (leeway included) after which the token is expired.
    pub expires_at: f64,
    /// Generation of the issuer's key set the signature was checked with.
    pub key_generation: u64,
    /// `identity.principal_key()`: what the snapshot's principal memo finds the caller's
    /// principal by. Tokens do not hold principals: the memo bounds how many are alive.
    pub principal_key: String,
}

impl VerifiedToken {
    pub fn new(identity: Identity, expires_at: f64, key_generation: u64) -> Self {
        VerifiedToken {
            forwarded: ForwardedIdentity::of(&identity),
            principal_key: identity.principal_key(),
            identity,
            expires_at,
            key_generation,
        }
    }
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("identity", &self.identity)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

pub struct TokenCache {
    tokens: quick_cache::sync::Cache<TokenDigest, Arc<VerifiedToken>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TokenCache {
    /// A cache holding at most `max_entries` tokens.
    pub fn new(max_entries: usize) -> Self {
        TokenCache {
            tokens: quick_cache::sync::Cache::new(max_entries.max(1)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The entry for `digest` if it is not expired at `now` and `current_generation` (the key
    /// set generation of its issuer, looked up by issuer) still matches.
    pub fn get(
        &self,
        digest: &TokenDigest,
        now: f64,
        current_generation: impl Fn(&str) -> Option<u64>,
    ) -> Option<Arc<VerifiedToken>> {
        let fresh = self.tokens.get(digest).filter(|entry| {
            now <= entry.expires_at
                && current_generation(&entry.identity.issuer) == Some(entry.key_generation)
        });
        if fresh.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.tokens.remove(digest);
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    pub fn insert(&self, digest: TokenDigest, token: Arc<VerifiedToken>) {
        self.tokens.insert(digest, token);
    }

    /// Removes every entry of `issuer` (its key set changed).
    pub fn purge_issuer(&self, issuer: &str) {
        self.tokens
            .retain(|_, entry| entry.identity.issuer != issuer);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.tokens.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn verified(issuer: &str, expires_at: f64, generation: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::new(
            Identity {
                issuer: issuer.into(),
                principal_type: "User".into(),
                principal_id: "alice".into(),
                roles: Vec::new(),
                tenant: None,
                scopes: Vec::new(),
                parents: Vec::new(),
                attributes: Map::new(),
            },
            expires_at,
            generation,
        ))
    }

    fn generation(g: u64) -> impl Fn(&str) -> Option<u64> {
        move |_| Some(g)
    }

    #[test]
    fn hits_until_expiry() {
        let cache = TokenCache::new(100);
        let digest = TokenCache::digest("token-a");
        assert_ne!(digest, TokenCache::digest("token-b"));
        cache.insert(digest, verified("i", 100.0, 1));
        assert!(cache.get(&digest, 100.0, generation(1)).is_some());
        assert!(cache.get(&digest, 100.5, generation(1)).is_none());
        // The expired entry was removed, not just skipped.
        assert!(cache.get(&digest, 0.0, generation(1)).is_none());
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                entries: 0
            }
        );
    }

    #[test]
    fn a_changed_key_set_invalidates() {
        let cache = TokenCache::new(100);
        let digest = TokenCache::digest("t");
        cache.insert(digest, verified("i", 100.0, 1));
        assert!(cache.get(&digest, 0.0, generation(2)).is_none());
        assert!(cache.get(&digest, 0.0, |_| None).is_none());

        let (a, b) = (TokenCache::digest("a"), TokenCache::digest("b"));
        cache.insert(a, verified("one", 100.0, 1));
        cache.insert(b, verified("two", 100.0, 1));
        cache.purge_issuer("one");
        assert!(cache.get(&a, 0.0, generation(1)).is_none());
        assert!(cache.get(&b, 0.0, generation(1)).is_some());
    }

    #[test]
    fn size_is_bounded() {
        let cache = TokenCache::new(16);
        for i in 0..2000 {
            let digest = TokenCache::digest(&format!("token-{i}"));
            cache.insert(digest, verified("i", 100.0, 1));
        }
        assert!(cache.stats().entries <= 16, "{:?}", cache.stats());
    }
}
