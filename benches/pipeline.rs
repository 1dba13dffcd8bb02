//! The whole decision in process, request in → decision out: canonicalize, route, authenticate
//! (a verified-token cache hit), build the Cedar request and evaluate the repository's policies.
//! No sockets: what the gateway adds to pingora's own work for each request.
//!
//! `allow`, `deny` and `malformed_token` repeat one request, so after the first iteration the
//! decision comes from the decision cache (`src/authz/decision_cache.rs`). `decision_miss` is
//! `allow`'s caller asking for a different task each time, from more tasks than the cache
//! holds, so that nearly every decision is evaluated (tasks the directory does not know are
//! outside the caller's tenant: most are refused by `tenant-isolation`, as `deny` is from the
//! cache).
//!
//! `principal_build` builds the principal entity of `allow`'s caller from its verified token:
//! what a caller new to the gateway costs before its decision.
//!
//! Run with `cargo bench --bench pipeline`.

use std::net::IpAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use portcullis::authz::principal_entity;
use portcullis::demo::demo_claims;
use portcullis::offline::OfflineGateway;
use portcullis::pipeline::{evaluate, Incoming};

const TARGET: &str = "/lists/acme-roadmap/tasks/t1";

fn pipeline(c: &mut Criterion) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("portcullis.toml");
    let offline = OfflineGateway::load(&config).expect("the repository's configuration loads");
    let issuer = offline.gateway.settings.issuers[0].rules.issuer.clone();
    let audience = offline.gateway.settings.issuers[0].rules.audiences[0].clone();
    let token = |subject: &str, roles: &[&str], tenant: &str| {
        let claims = demo_claims(&issuer, &audience, subject, roles, tenant);
        let claims = claims.as_object().expect("claims are an object").clone();
        offline.token(&claims).expect("token")
    };
    let cases = [
        ("allow", Some(token("alice", &["manager"], "org_acme"))),
        ("deny", Some(token("carol", &["admin"], "org_globex"))),
        ("malformed_token", Some("not-a-token".to_string())),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let snapshot = offline.gateway.snapshot();
    let mut group = c.benchmark_group("pipeline");
    let allow_token = cases[0].1.clone();
    for (name, token) in cases {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_static("tasks.example.com"),
        );
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let incoming = Incoming {
            method: "GET",
            target: TARGET.as_bytes(),
            headers: &headers,
            host_required: true,
            authority: None,
            client_ip: Some(IpAddr::from([10, 0, 0, 7])),
            transport: Default::default(),
            cors: None,
        };
        let expected_forward = name == "allow";
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let outcome = runtime.block_on(evaluate(&offline.gateway, &snapshot, &incoming));
                assert_eq!(outcome.forward().is_some(), expected_forward);
                outcome
            })
        });
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("tasks.example.com"),
    );
    let bearer = format!(
        "Bearer {}",
        allow_token.as_deref().expect("the allow case has a token")
    );
    let bearer = HeaderValue::from_str(&bearer).expect("header value");
    headers.insert(http::header::AUTHORIZATION, bearer);
    // Four times the decision cache's entries: random eviction leaves about one hit in four.
    let targets: Vec<String> = (0..4 * portcullis::authz::decision_cache::DECISION_CACHE_ENTRIES)
        .map(|n| format!("/lists/acme-roadmap/tasks/t{n}"))
        .collect();
    let mut next = 0;
    group.bench_function(BenchmarkId::from_parameter("decision_miss"), |b| {
        b.iter(|| {
            next = (next + 1) % targets.len();
            let incoming = Incoming {
                method: "GET",
                target: targets[next].as_bytes(),
                headers: &headers,
                host_required: true,
                authority: None,
                client_ip: Some(IpAddr::from([10, 0, 0, 7])),
                transport: Default::default(),
                cors: None,
            };
            runtime.block_on(evaluate(&offline.gateway, &snapshot, &incoming))
        })
    });
    // Building a caller's principal entity: what a new caller costs before the decision.
    let allow_token = allow_token.expect("the allow case has a token");
    let verified = runtime
        .block_on(offline.gateway.authenticator.authenticate(&allow_token))
        .expect("the allow token verifies");
    let identity = &verified.identity;
    let key = identity.principal_key();
    group.bench_function(BenchmarkId::from_parameter("principal_build"), |b| {
        b.iter(|| principal_entity(&snapshot.bundle, identity, key.clone()).expect("principal"))
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
