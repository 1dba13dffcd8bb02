//! A synced directory of 1,000 and of 100,000 users (with 1,000 roles and 100 tenants): what
//! building a snapshot with it costs (time; resident memory of the directory and the snapshot's
//! bundle together), and what a decision costs for a
//! caller seen for the first time — principal built over its directory entry, request built
//! on its slice of the directory, policies evaluated — with p50 and p99 over 20,000 callers.
//! The target (issue 17): the decision's p99 does not grow with the directory.
//!
//! Run with `cargo bench --bench directory`.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::HeaderMap;
use portcullis::authn::Identity;
use portcullis::authz::{
    authorize, principal_entity, Caller, PolicyBundle, RequestFacts, ResourceSpec, RouteAuthz,
};
use portcullis::directory::{Directory, EntityRef, SourceEntities, SyncedEntity};
use serde_json::{Map, Value};

const SIZES: [usize; 2] = [1_000, 100_000];
const ROLES: usize = 1_000;
const TENANTS: usize = 100;
const DOCS: usize = 1_000;
const TIMED_DECISIONS: usize = 20_000;

const SCHEMA: &str = r#"
entity Tenant;
entity Role in [Role];
entity User in [Role, Tenant] { email?: String, plan?: String };
entity Doc in [Tenant] { owner?: User };
action Read appliesTo { principal: [User], resource: [Doc], context: {} };
"#;

/// Roles grant reading; owners read their documents; tenants are isolated; a plan attribute
/// from the directory bounds the free tier.
const POLICIES: &str = r#"
permit (principal in Role::"r1", action == Action::"Read", resource);
permit (principal in Role::"r2", action == Action::"Read", resource);
permit (principal, action == Action::"Read", resource) when { resource has owner && resource.owner == principal };
forbid (principal, action, resource) unless { resource in Tenant::"t0" || principal in Tenant::"t1" };
forbid (principal, action, resource) when { principal has plan && principal.plan == "suspended" };
"#;

fn reference(entity_type: &str, id: String) -> EntityRef {
    EntityRef {
        entity_type: entity_type.to_string(),
        id,
    }
}

/// `users` users, each in one role and one tenant, with two attributes.
fn directory(users: usize) -> Directory {
    let mut entities: Vec<SyncedEntity> = (0..ROLES)
        .map(|r| SyncedEntity {
            uid: reference("Role", format!("r{r}")),
            attrs: Map::new(),
            parents: if r > 2 {
                vec![reference("Role", format!("r{}", r % 3))]
            } else {
                vec![]
            },
        })
        .collect();
    entities.extend((0..users).map(|u| SyncedEntity {
        uid: reference("User", format!("u{u}")),
        attrs: Map::from_iter([
            (
                "email".to_string(),
                Value::from(format!("u{u}@example.com")),
            ),
            (
                "plan".to_string(),
                Value::from(["free", "pro", "suspended"][u % 3]),
            ),
        ]),
        parents: vec![
            reference("Role", format!("r{}", u % ROLES)),
            reference("Tenant", format!("t{}", u % TENANTS)),
        ],
    }));
    Directory::new(vec![SourceEntities {
        source: "bench".into(),
        synced_at: 0,
        entities,
    }])
}

fn documents() -> String {
    let docs: Vec<String> = (0..DOCS)
        .map(|d| {
            format!(
                r#"{{"uid": {{"type": "Doc", "id": "d{d}"}}, "attrs": {{"owner": {{"__entity": {{"type": "User", "id": "u{d}"}}}}}}, "parents": [{{"type": "Tenant", "id": "t{}"}}]}}"#,
                d % TENANTS
            )
        })
        .collect();
    format!("[{}]", docs.join(",\n"))
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn identity(user: usize) -> Identity {
    Identity {
        issuer: "https://issuer/".into(),
        principal_type: "User".into(),
        principal_id: format!("u{user}"),
        roles: vec![],
        tenant: None,
        scopes: vec![],
        parents: vec![],
        attributes: Map::new(),
    }
}

fn decisions(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).expect("schema");
    std::fs::write(dir.path().join("policies.cedar"), POLICIES).expect("policies");
    std::fs::write(dir.path().join("entities.json"), documents()).expect("entities");
    let mut group = c.benchmark_group("directory");
    group.measurement_time(Duration::from_secs(3));
    let mut report = Vec::new();
    for users in SIZES {
        // The synced directory and the snapshot's bundle built from it, as the gateway
        // holds them.
        let before = resident_bytes();
        let synced = std::sync::Arc::new(directory(users));
        let started = Instant::now();
        let bundle = PolicyBundle::load(dir.path()).expect("bundle");
        let (bundle, _) = bundle
            .with_directory(synced, &["User".to_string()])
            .expect("the directory fits the schema");
        let build = started.elapsed();
        let grown = resident_bytes().saturating_sub(before);
        let route = RouteAuthz::compile(
            "Read",
            &ResourceSpec {
                entity_type: "Doc",
                id: "{doc}",
                parents: &[],
            },
            &["doc"],
            &[],
            &["User".to_string()],
            &bundle,
        )
        .expect("route");
        let headers = HeaderMap::new();
        let decide = |n: usize| {
            let user = (n * 7919) % users;
            let identity = identity(user);
            let key = format!("u{user}");
            let principal = principal_entity(&bundle, &identity, key).expect("principal");
            let params = [("doc", format!("d{}", n % DOCS))];
            let facts = RequestFacts {
                method: "GET",
                path: "/",
                params: &params,
                client_ip: Some(IpAddr::from([127, 0, 0, 1])),
                scopes: &[],
                query: None,
                headers: &headers,
                time: SystemTime::now(),
            };
            let (request, entities) = route
                .build(&bundle, Caller::Authenticated(&principal), &facts)
                .expect("request");
            authorize(&bundle, &request, &entities).allowed
        };
        group.bench_with_input(BenchmarkId::new("new_caller", users), &users, |b, _| {
            let mut n = 0;
            b.iter(|| {
                n += 1;
                decide(n)
            })
        });
        let mut times: Vec<Duration> = (0..TIMED_DECISIONS)
            .map(|n| {
                let started = Instant::now();
                std::hint::black_box(decide(n));
                started.elapsed()
            })
            .collect();
        times.sort();
        report.push((
            users,
            build,
            grown,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
        ));
    }
    group.finish();
    println!("\n   users  snapshot build  resident growth   decision p50   decision p99");
    for (users, build, grown, p50, p99) in &report {
        println!(
            "{users:>8}  {:>14.2?}  {:>11.1} MiB  {p50:>13.2?}  {p99:>13.2?}",
            build,
            *grown as f64 / (1024.0 * 1024.0)
        );
    }
    if let [(_, _, _, _, small), (_, _, _, _, large)] = report.as_slice() {
        println!(
            "decision p99 with {} users / with {}: {:.2}",
            SIZES[1],
            SIZES[0],
            large.as_secs_f64() / small.as_secs_f64()
        );
    }
}

criterion_group!(benches, decisions);
criterion_main!(benches);
