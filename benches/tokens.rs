//! Token verification cost: a full verification (RS256 and ES256: strict parsing, signature,
//! claim rules, claim mapping) against a hit in the verified-token cache.
//!
//! Keys are fetched once from a dev issuer serving its JWKS on loopback, as in production.
//! Run with `cargo bench --bench tokens`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::Algorithm;
use portcullis::authn::{
    Authenticator, ClaimMapping, ClaimRules, FetchPolicy, Issuer, KeySource, KeyStore, ParentClaim,
    TenantClaim,
};
use portcullis::demo::{serve_issuer, DevIssuer, SigningAlg};
use serde_json::json;
use tokio::runtime::Runtime;

const AUDIENCE: &str = "https://tasks.example.com";

fn authenticator(issuer: &DevIssuer, cache_entries: usize) -> Authenticator {
    let keys = KeyStore::new(
        KeySource::JwksUri(issuer.jwks_uri()),
        FetchPolicy {
            refresh_every: Duration::from_secs(300),
            refresh_min: Duration::from_secs(60),
            refresh_max: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        },
    )
    .expect("key store");
    Authenticator::new(
        vec![Issuer {
            rules: ClaimRules {
                issuer: issuer.issuer_url().to_string(),
                audiences: vec![AUDIENCE.to_string()],
                leeway_seconds: 30,
                required: vec!["sub".to_string()],
                token_type: None,
            },
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            mapping: ClaimMapping {
                principal_type: "User".to_string(),
                principal_id_claim: "sub".to_string(),
                roles: Some(ParentClaim {
                    claim: "https://tasks.example.com/roles".to_string(),
                    entity_type: "Role".to_string(),
                }),
                groups: None,
                permissions: Some(ParentClaim {
                    claim: "permissions".to_string(),
                    entity_type: "Permission".to_string(),
                }),
                tenant: Some(TenantClaim {
                    claim: "org_id".to_string(),
                    entity_type: "Tenant".to_string(),
                    attribute: "tenant".to_string(),
                }),
                scopes: Some("scope".to_string()),
                attributes: vec![("client_id".to_string(), "azp".to_string())],
            },
            keys: Arc::new(keys),
        }],
        8192,
        cache_entries,
    )
}

fn verification(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    let issuer = Arc::new(DevIssuer::generate(url).expect("issuer"));
    runtime.spawn(serve_issuer(issuer.clone(), listener));

    let uncached = authenticator(&issuer, 0);
    let cached = authenticator(&issuer, 10_000);
    for authenticator in [&uncached, &cached] {
        let missing = runtime.block_on(authenticator.fetch_keys());
        assert!(missing.is_empty(), "keys not fetched: {missing:?}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // An Auth0-shaped access token.
    let claims = json!({
        "https://tasks.example.com/roles": ["manager"],
        "iss": issuer.issuer_url(),
        "sub": "auth0|65f0c1d2e3a4b5c6d7e8f901",
        "aud": [AUDIENCE, format!("{}userinfo", issuer.issuer_url())],
        "iat": now,
        "exp": now + 86400,
        "scope": "openid profile email tasks:read tasks:write",
        "azp": "k2kL3bS9Zx1y5Hn7pQ4rT8uV0wX6yZ2a",
        "org_id": "org_acme",
        "permissions": ["read:tasks", "write:tasks"],
    });

    let mut group = c.benchmark_group("token");
    for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
        let token = issuer.mint(alg, &claims).expect("mint");
        assert!(runtime.block_on(uncached.authenticate(&token)).is_ok());
        group.bench_function(format!("verify_cold_{}", alg.as_str()), |b| {
            b.iter(|| runtime.block_on(uncached.authenticate(&token)))
        });
    }
    let token = issuer.mint(SigningAlg::Rs256, &claims).expect("mint");
    assert!(runtime.block_on(cached.authenticate(&token)).is_ok());
    group.bench_function("cache_hit", |b| {
        b.iter(|| runtime.block_on(cached.authenticate(&token)))
    });
    group.finish();
    assert!(cached.cache_stats().hits > 0);
}

criterion_group!(benches, verification);
criterion_main!(benches);
