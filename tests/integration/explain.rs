//! `portcullis explain` as users run it: an allow and a deny from claims (signed with a key
//! generated for the run), and a real token verified against a live issuer's JWKS.

use crate::common::{repo_path, run_portcullis, write_config};
use portcullis::demo::{demo_claims, SigningAlg};
use serde_json::json;

/// `portcullis explain` with stdout and stderr joined.
fn explain(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = run_portcullis("explain", config, args);
    (ok, format!("{stdout}{stderr}"))
}

fn claims_file(dir: &std::path::Path, claims: serde_json::Value) -> String {
    let path = dir.join("claims.json");
    std::fs::write(&path, claims.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn explains_an_allow_with_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let claims = claims_file(
        dir.path(),
        json!({"sub": "alice", "https://portcullis.dev/roles": ["manager"], "org_id": "org_acme",
               "email": "alice@example.com", "scope": "tasks:read tasks:write"}),
    );
    let (ok, out) = explain(
        &repo_path("portcullis.toml"),
        &[
            "GET",
            "/lists/acme-roadmap/tasks/%74%31?view=full",
            "--claims",
            &claims,
        ],
    );
    assert!(ok, "{out}");
    for line in [
        "request:    GET /lists/acme-roadmap/tasks/%74%31?view=full",
        "canonical:  /lists/acme-roadmap/tasks/t1",
        "route:      read-task (mode: enforce)",
        "principal:  User::\"alice\"",
        "  ancestors:  Role::\"manager\", Role::\"viewer\", Tenant::\"org_acme\"",
        "action:     Action::\"ReadTask\"",
        "resource:   Task::\"t1\"",
        "  ancestors:  List::\"acme-roadmap\", Tenant::\"org_acme\"",
        "decision:   allow",
        "policies:   viewers-read",
        "errors:     none",
        "status:     200 (forwarded)",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    let context = out.lines().find(|l| l.starts_with("context:")).unwrap();
    for fact in [
        "\"method\":\"GET\"",
        "\"task_id\":\"t1\"",
        "\"scopes\":[\"tasks:read\",\"tasks:write\"]",
        "\"arg\":\"127.0.0.1\"",
    ] {
        assert!(context.contains(fact), "{fact} not in {context}");
    }
}

#[test]
fn explains_a_deny_with_the_determining_policy() {
    let dir = tempfile::tempdir().unwrap();
    let claims = claims_file(
        dir.path(),
        json!({"sub": "carol", "https://portcullis.dev/roles": ["admin"], "org_id": "org_globex"}),
    );
    let (ok, out) = explain(
        &repo_path("portcullis.toml"),
        &["GET", "/lists/acme-roadmap", "--claims", &claims],
    );
    assert!(ok, "{out}");
    assert!(out.contains("\ndecision:   deny\n"), "{out}");
    assert!(out.contains("\npolicies:   tenant-isolation\n"), "{out}");
    assert!(
        out.contains("\nstatus:     403 (forbidden by the policies)\n"),
        "{out}"
    );

    let (_, unauthenticated) = explain(
        &repo_path("portcullis.toml"),
        &["GET", "/lists/acme-roadmap"],
    );
    assert!(
        unauthenticated.contains("decision:   none (refused before authorization)")
            && unauthenticated.contains("status:     401 (not authenticated: no bearer token)"),
        "{unauthenticated}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_a_real_token_verified_with_the_issuers_keys() {
    let (issuer, issuer_url, server) = crate::common::start_dev_issuer().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &issuer_url, "127.0.0.1:9".parse().unwrap());
    let config = dir.path().join("portcullis.toml");
    let token = issuer
        .mint(
            SigningAlg::Es256,
            &demo_claims(
                &issuer_url,
                crate::common::AUDIENCE,
                "bob",
                &["viewer"],
                "org_acme",
            ),
        )
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        explain(&config, &["GET", "/lists/acme-roadmap", "--token", &token])
    })
    .await
    .unwrap();
    server.abort();
    assert!(out.0, "{}", out.1);
    assert!(out.1.contains("principal:  User::\"bob\""), "{}", out.1);
    assert!(out.1.contains("decision:   allow"), "{}", out.1);
    assert!(issuer.jwks_fetches() >= 1);
}
