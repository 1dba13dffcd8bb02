//! End-to-end behaviour of the gateway over real sockets: the real proxy, a real echo upstream
//! and a real token issuer serving JWKS, with the repository's routes and example policies.

use crate::common::{b64, now, TestEnv, AUDIENCE};
use portcullis::demo::{demo_claims, SigningAlg};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_reaches_upstream_with_identity_and_canonical_path() {
    let env = TestEnv::start().await;
    let response = env
        .get_as("alice", "/lists/acme-roadmap/tasks/%74%31?x=%2F..&y=1")
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = env.upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/lists/acme-roadmap/tasks/t1?x=%2F..&y=1");
    assert_eq!(seen.header_values("x-portcullis-principal"), ["alice"]);
    assert_eq!(seen.header_values("x-portcullis-roles"), ["manager"]);
    assert_eq!(seen.header_values("x-portcullis-tenant"), ["org_acme"]);
    assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
    let request_id = seen.header_values("x-request-id");
    assert_eq!(request_id.len(), 1);
    assert!(!request_id[0].is_empty());
    // The application still gets the token it used to validate itself.
    assert_eq!(seen.header_values("authorization").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_accepted() {
    let env = TestEnv::start().await;
    let token = env
        .issuer
        .mint(SigningAlg::Es256, &env.claims("bob"))
        .unwrap();
    let response = env.get_with_token(&token, "/lists/acme-roadmap").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        env.upstream.last().header_values("x-portcullis-principal"),
        ["bob"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_request_gets_403_and_never_reaches_upstream() {
    let env = TestEnv::start().await;
    // alice is a manager: she may read and create tasks, not delete them.
    let response = env
        .send_as("alice", "DELETE", "/lists/acme-roadmap/tasks/t1")
        .await;
    assert_eq!(response.status, 403);
    let body = response.json();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["request_id"].as_str(), response.header("x-request-id"));
    for internal in ["Action::", "principal", "viewers-read", "tenant-isolation"] {
        assert!(
            !response.body.contains(internal),
            "policy details leaked: {}",
            response.body
        );
    }
    assert_eq!(env.upstream.count(), 0);
    // dave is an admin (admin ∈ manager ∈ viewer): he may.
    assert_eq!(
        env.send_as("dave", "DELETE", "/lists/acme-roadmap/tasks/t1")
            .await
            .status,
        200
    );
    assert_eq!(env.upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_gets_a_bearer_challenge_without_error() {
    let env = TestEnv::start().await;
    let response = env.send("GET", "/lists/acme-roadmap/tasks/t1", &[]).await;
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"tasks\"")
    );
    assert_eq!(response.json()["error"], "unauthorized");
    let basic = env
        .send(
            "GET",
            "/lists/acme-roadmap/tasks/t1",
            &[("Authorization", "Basic YWxpY2U6cHc=")],
        )
        .await;
    assert_eq!(basic.status, 401);
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_get_401_invalid_token() {
    let env = TestEnv::start().await;
    let mut cases: Vec<(&str, String)> = Vec::new();

    let mut expired = env.claims("alice");
    expired["exp"] = json!(now() - 3600);
    cases.push((
        "expired",
        env.issuer.mint(SigningAlg::Rs256, &expired).unwrap(),
    ));

    let mut wrong_aud = env.claims("alice");
    wrong_aud["aud"] = json!("https://other.example.com");
    cases.push((
        "wrong aud",
        env.issuer.mint(SigningAlg::Rs256, &wrong_aud).unwrap(),
    ));

    let mut wrong_iss = env.claims("alice");
    wrong_iss["iss"] = json!("https://evil.example.com/");
    cases.push((
        "wrong iss",
        env.issuer.mint(SigningAlg::Rs256, &wrong_iss).unwrap(),
    ));

    let mut no_exp = env.claims("alice");
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push((
        "no exp",
        env.issuer.mint(SigningAlg::Rs256, &no_exp).unwrap(),
    ));

    let mut not_yet = env.claims("alice");
    not_yet["nbf"] = json!(now() + 3600);
    cases.push((
        "nbf in the future",
        env.issuer.mint(SigningAlg::Rs256, &not_yet).unwrap(),
    ));

    // Same header and signature, but the payload says dave (an admin).
    let alice = env.token("alice");
    let parts: Vec<&str> = alice.split('.').collect();
    let forged_payload = b64(env.claims("dave").to_string().as_bytes());
    cases.push((
        "bad signature",
        format!("{}.{}.{}", parts[0], forged_payload, parts[2]),
    ));

    let payload = b64(env.claims("dave").to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        cases.push(("alg none", format!("{header}.{payload}.")));
        cases.push((
            "alg none with signature",
            format!("{header}.{payload}.c2ln"),
        ));
    }

    // HS256 keyed with the issuer's public RSA modulus (the classic key-confusion attack).
    let jwks = env.issuer.jwks();
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap();
    let header = b64(json!({"alg": "HS256", "typ": "JWT", "kid": rsa["kid"]})
        .to_string()
        .as_bytes());
    let signing_input = format!("{header}.{payload}");
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        rsa["n"].as_str().unwrap().as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    cases.push((
        "HS256 with the public key",
        format!("{signing_input}.{}", b64(tag.as_ref())),
    ));

    // RS256 signed, but the header claims ES256 with the RSA kid.
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": rsa["kid"]});
    cases.push((
        "alg and key disagree",
        env.issuer
            .mint_with_header(SigningAlg::Rs256, &header, &env.claims("alice"))
            .unwrap(),
    ));

    let unknown_kid = json!({"alg": "RS256", "typ": "JWT", "kid": "not-a-key"});
    cases.push((
        "unknown kid",
        env.issuer
            .mint_with_header(SigningAlg::Rs256, &unknown_kid, &env.claims("alice"))
            .unwrap(),
    ));
    cases.push(("garbage", "not-a-jwt".to_string()));

    for (name, token) in cases {
        let response = env
            .get_with_token(&token, "/lists/acme-roadmap/tasks/t1")
            .await;
        assert_eq!(response.status, 401, "{name}: {}", response.body);
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"tasks\", error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(!response.body.contains(&token), "{name}: token echoed");
    }
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_answers_404_405_and_serves_head_from_get() {
    let env = TestEnv::start().await;
    let missing = env.get_as("alice", "/admin").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");

    let wrong_method = env.send_as("alice", "PUT", "/lists/acme-roadmap").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"));

    let head = env
        .send_as("alice", "HEAD", "/lists/acme-roadmap/tasks/t1")
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(env.upstream.last().method, "HEAD");
    assert_eq!(env.upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_targets_are_rejected_before_routing() {
    let env = TestEnv::start().await;
    for target in [
        "/lists/acme-roadmap/tasks/..%2ft1",
        "/lists/acme-roadmap/../globex-ops",
        "/lists/%2e%2e/tasks",
        "/lists//acme-roadmap",
        "/lists/acme-roadmap;x=1/tasks/t1",
        "/lists/acme%252droadmap",
    ] {
        let response = env.get_as("alice", target).await;
        assert_eq!(response.status, 400, "{target}: {}", response.body);
        assert!(response.json()["request_id"].is_string());
    }
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_upstream() {
    let env = TestEnv::start().await;
    let token = format!("Bearer {}", env.token("bob"));
    let response = env
        .send(
            "GET",
            "/lists/acme-roadmap",
            &[
                ("Authorization", &token),
                ("X-Portcullis-Principal", "dave"),
                ("x_portcullis_roles", "admin"),
                ("X.Portcullis.Tenant", "org_globex"),
                ("X-Request-Id", "client-chosen"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("Connection", "x-secret"),
                ("X-Secret", "hop"),
            ],
        )
        .await;
    assert_eq!(response.status, 200);
    let seen = env.upstream.last();
    assert_eq!(seen.header_values("x-portcullis-principal"), ["bob"]);
    assert_eq!(seen.header_values("x-portcullis-roles"), ["viewer"]);
    assert_eq!(seen.header_values("x-portcullis-tenant"), ["org_acme"]);
    assert!(seen.header_values("x_portcullis_roles").is_empty());
    assert!(seen.header_values("x.portcullis.tenant").is_empty());
    assert!(seen.header_values("x-secret").is_empty());
    assert_ne!(seen.header_values("x-request-id"), ["client-chosen"]);
    // The client's own X-Forwarded-For is dropped: it is no trusted proxy.
    assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);

    // An anonymous route must not pass a forged principal either.
    let anonymous = env
        .send("GET", "/health", &[("X-Portcullis-Principal", "dave")])
        .await;
    assert_eq!(anonymous.status, 200);
    assert!(env
        .upstream
        .last()
        .header_values("x-portcullis-principal")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_route_needs_no_token() {
    let env = TestEnv::start().await;
    let response = env.send("GET", "/health", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(env.upstream.last().target, "/health");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_edit_their_tasks_and_tenants_are_isolated() {
    let env = TestEnv::start().await;
    // bob owns t2; alice (a manager) does not.
    assert_eq!(
        env.send_as("bob", "PATCH", "/lists/acme-roadmap/tasks/t2")
            .await
            .status,
        200
    );
    assert_eq!(
        env.send_as("alice", "PATCH", "/lists/acme-roadmap/tasks/t2")
            .await
            .status,
        403
    );
    // Managers create tasks; viewers do not.
    assert_eq!(
        env.send_as("alice", "POST", "/lists/acme-roadmap/tasks")
            .await
            .status,
        200
    );
    assert_eq!(
        env.send_as("bob", "POST", "/lists/acme-roadmap/tasks")
            .await
            .status,
        403
    );
    // carol is an admin, but of org_globex.
    assert_eq!(env.get_as("carol", "/lists/globex-ops").await.status, 200);
    assert_eq!(env.get_as("carol", "/lists/acme-roadmap").await.status, 403);
    assert_eq!(
        env.get_as("carol", "/lists/acme-roadmap/tasks/t1")
            .await
            .status,
        403
    );
    // A known task cannot be pulled into another tenant's list through the path.
    assert_eq!(
        env.get_as("alice", "/lists/acme-roadmap/tasks/t3")
            .await
            .status,
        403
    );
    // A task the directory does not know takes its list from the path.
    assert_eq!(
        env.get_as("alice", "/lists/acme-roadmap/tasks/t-new")
            .await
            .status,
        200
    );
    assert_eq!(
        env.get_as("carol", "/lists/acme-roadmap/tasks/t-new")
            .await
            .status,
        403
    );
    // A token without a tenant sees no list at all.
    let mut no_tenant = env.claims("dave");
    no_tenant.as_object_mut().unwrap().remove("org_id");
    let token = env.issuer.mint(SigningAlg::Rs256, &no_tenant).unwrap();
    let response = env.get_with_token(&token, "/lists/acme-roadmap").await;
    assert_eq!(response.status, 403);
    assert_eq!(env.upstream.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetches_keys_at_most_once_per_cooldown() {
    let env = TestEnv::start().await;
    let fetched_at_start = env.issuer.jwks_fetches();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "rotated-in-later"});
    let token = env
        .issuer
        .mint_with_header(SigningAlg::Rs256, &header, &env.claims("alice"))
        .unwrap();
    for _ in 0..3 {
        let response = env.get_with_token(&token, "/lists/acme-roadmap").await;
        assert_eq!(response.status, 401);
    }
    // The first unknown kid triggers one refetch; the cooldown (30 s) absorbs the others.
    assert_eq!(env.issuer.jwks_fetches(), fetched_at_start + 1);
    // Known kids keep working without any fetch.
    assert_eq!(env.get_as("alice", "/lists/acme-roadmap").await.status, 200);
    assert_eq!(env.issuer.jwks_fetches(), fetched_at_start + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_readers_come_from_the_directory_entry_of_the_caller() {
    let env = TestEnv::start().await;
    // erin's token carries no roles: her group membership is in policies/entities.json, and the
    // list names that group as its readers.
    let claims = demo_claims(env.issuer_url(), AUDIENCE, "erin", &[], "org_acme");
    let token = env.issuer.mint(SigningAlg::Es256, &claims).unwrap();
    assert_eq!(
        env.get_with_token(&token, "/lists/acme-roadmap")
            .await
            .status,
        200
    );
    assert_eq!(
        env.get_with_token(&token, "/lists/acme-roadmap/tasks")
            .await
            .status,
        200
    );
    assert_eq!(env.upstream.count(), 2);
    assert_eq!(
        env.get_with_token(&token, "/lists/globex-ops").await.status,
        403
    );
    assert_eq!(
        env.get_with_token(&token, "/lists/acme-roadmap/tasks/t1")
            .await
            .status,
        403
    );
    // Someone else with the same token shape but no directory entry is not a reader.
    let claims = demo_claims(env.issuer_url(), AUDIENCE, "frank", &[], "org_acme");
    let token = env.issuer.mint(SigningAlg::Es256, &claims).unwrap();
    assert_eq!(
        env.get_with_token(&token, "/lists/acme-roadmap")
            .await
            .status,
        403
    );
    assert_eq!(env.upstream.count(), 2);
}
