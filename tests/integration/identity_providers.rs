//! Auth0 and Okta for real: the example configurations as pasted (only the tenant changed),
//! tokens shaped exactly like theirs through one gateway, and the JWKS lifecycle: rotation,
//! removal, unknown-kid floods, outages at start and while warm, slow and broken key sets,
//! `Cache-Control: max-age`, and the verified-token cache agreeing with full verification.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::idp::{Flavor, JwksMode, TestIssuer};
use crate::common::{
    now, raw_exchange, repo_path, start_gateway_with_admin, EchoUpstream, Response,
};
use portcullis::snapshot::Gateway;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const AUTH0_API: &str = "https://tasks.example.com";
const OKTA_API: &str = "api://default";

/// One gateway trusting an Auth0 and an Okta issuer, configured from `examples/`.
struct IdpEnv {
    gateway: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    state: Arc<Gateway>,
    upstream: EchoUpstream,
    auth0: TestIssuer,
    okta: TestIssuer,
    _dir: tempfile::TempDir,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for IdpEnv {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// examples/auth0.toml followed by the `[[issuers]]` of examples/okta.toml, with the tenants
/// replaced by the local issuers, then `edit` applied.
fn combined_config(dir: &Path, auth0: &str, okta: &str, edit: impl Fn(String) -> String) -> String {
    let auth0_example = std::fs::read_to_string(repo_path("examples/auth0.toml")).unwrap();
    let okta_example = std::fs::read_to_string(repo_path("examples/okta.toml")).unwrap();
    let okta_issuers = &okta_example[okta_example.find("[[issuers]]").unwrap()..];
    let config = format!("{auth0_example}\n{okta_issuers}")
        .replace("https://YOUR_TENANT.auth0.com/", auth0)
        .replace("https://YOUR_ORG.okta.com/oauth2/default", okta)
        .replace(
            "policies = \"../policies\"",
            &format!("policies = {:?}", repo_path("policies")),
        )
        .replace("routes = \"../routes.toml\"", "routes = \"routes.toml\"");
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, edit(config)).unwrap();
    path.to_string_lossy().into_owned()
}

impl IdpEnv {
    async fn start() -> Self {
        Self::start_with(TestIssuer::start(Flavor::Auth0).await, |c| c).await
    }

    async fn start_with(auth0: TestIssuer, edit: impl Fn(String) -> String) -> Self {
        let okta = TestIssuer::start(Flavor::Okta).await;
        let upstream = EchoUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let routes = std::fs::read_to_string(repo_path("routes.toml"))
            .unwrap()
            .replace("127.0.0.1:8082", &upstream.address.to_string());
        std::fs::write(dir.path().join("routes.toml"), routes).unwrap();
        let config = combined_config(dir.path(), &auth0.url, &okta.url, edit);
        let started = start_gateway_with_admin(Path::new(&config)).await;
        IdpEnv {
            gateway: started.address,
            admin: started.admin,
            state: started.state,
            upstream,
            auth0,
            okta,
            _dir: dir,
            tasks: started.tasks,
        }
    }

    async fn call(&self, method: &str, target: &str, token: &str) -> Response {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: tasks.example.com\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        );
        raw_exchange(self.gateway, request.as_bytes()).await
    }
}

/// An Auth0 access token's claims: RBAC permissions, roles from a Post-Login Action under a
/// namespaced claim, Organizations, `scope` as one string, `aud` with the userinfo URL.
fn auth0_claims(
    issuer: &TestIssuer,
    roles: &[&str],
    permissions: &[&str],
    org: &str,
    scope: &str,
) -> Value {
    let now = now();
    json!({
        "https://tasks.example.com/roles": roles,
        "iss": issuer.url,
        "sub": "auth0|65f0c1d2e3a4b5c6d7e8f901",
        "aud": [AUTH0_API, format!("{}userinfo", issuer.url)],
        "iat": now,
        "exp": now + 86400,
        "scope": scope,
        "azp": "k2kL3bS9Zx1y5Hn7pQ4rT8uV0wX6yZ2a",
        "org_id": org,
        "org_name": "acme",
        "permissions": permissions,
    })
}

/// An Okta access token's claims from a custom authorization server: `scp` array, `cid`,
/// `uid`, `groups` and a custom `tenant` claim.
fn okta_claims(issuer: &TestIssuer, groups: &[&str], scp: &[&str]) -> Value {
    let now = now();
    json!({
        "ver": 1,
        "jti": "AT.b6OKvdk1N4j1oaygxTzv9SztRMYzKQ3lD84ooJrXxLk",
        "iss": issuer.url,
        "aud": OKTA_API,
        "iat": now,
        "exp": now + 3600,
        "cid": "0oa5hxr7wpQ2zLp8f5d7",
        "uid": "00u5hxs0bxJm3sZVY5d7",
        "scp": scp,
        "auth_time": now - 60,
        "sub": "dana@acme.example",
        "groups": groups,
        "tenant": "org_acme",
    })
}

const FULL_SCOPE: &str = "openid profile email tasks:read tasks:write";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth0_and_okta_tokens_map_to_principal_parents_and_tenant() {
    let env = IdpEnv::start().await;

    // Auth0: the role gives reads, the tenant comes from org_id, the identity headers carry it.
    let viewer = env.auth0.token(&auth0_claims(
        &env.auth0,
        &["viewer"],
        &["read:tasks"],
        "org_acme",
        FULL_SCOPE,
    ));
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &viewer).await.status,
        200
    );
    let seen = env.upstream.last();
    assert_eq!(
        seen.header_values("x-portcullis-principal"),
        ["auth0|65f0c1d2e3a4b5c6d7e8f901"]
    );
    assert_eq!(seen.header_values("x-portcullis-roles"), ["viewer"]);
    assert_eq!(seen.header_values("x-portcullis-tenant"), ["org_acme"]);
    // Tenant isolation holds for Auth0 organizations.
    assert_eq!(
        env.call("GET", "/lists/globex-ops", &viewer).await.status,
        403
    );
    // A viewer cannot delete...
    assert_eq!(
        env.call("DELETE", "/lists/acme-roadmap/tasks/t2", &viewer)
            .await
            .status,
        403
    );
    // ...unless the RBAC `permissions` array grants delete:tasks (a Permission parent).
    let deleter = env.auth0.token(&auth0_claims(
        &env.auth0,
        &["viewer"],
        &["read:tasks", "delete:tasks"],
        "org_acme",
        FULL_SCOPE,
    ));
    assert_eq!(
        env.call("DELETE", "/lists/acme-roadmap/tasks/t2", &deleter)
            .await
            .status,
        200
    );
    // The space-separated `scope` reaches context.scopes: no tasks:write, no writes.
    let read_only = env.auth0.token(&auth0_claims(
        &env.auth0,
        &["viewer"],
        &["read:tasks", "delete:tasks"],
        "org_acme",
        "openid tasks:read",
    ));
    let lacking = env
        .call("DELETE", "/lists/acme-roadmap/tasks/t2", &read_only)
        .await;
    assert_eq!(lacking.status, 403);
    // RFC 6750 §3.1: the forbid that fired stands for the scope, so the answer names it.
    assert_eq!(lacking.json()["error"], "insufficient_scope");
    assert_eq!(
        lacking.header("www-authenticate"),
        Some(
            "Bearer realm=\"tasks\", error=\"insufficient_scope\", \
             error_description=\"the token lacks the scope tasks:write\", scope=\"tasks:write\""
        )
    );
    // A deny no scope would lift (no permit for a viewer) stays a plain 403.
    let viewer = env.auth0.token(&auth0_claims(
        &env.auth0,
        &["viewer"],
        &["read:tasks"],
        "org_acme",
        FULL_SCOPE,
    ));
    let forbidden = env
        .call("DELETE", "/lists/acme-roadmap/tasks/t2", &viewer)
        .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.json()["error"], "forbidden");
    assert!(forbidden.header("www-authenticate").is_none());

    // Okta: groups are parents, and the directory places tasks-managers in Role::"manager".
    let manager = env.okta.token(&okta_claims(
        &env.okta,
        &["Everyone", "tasks-managers"],
        &["openid", "tasks:read", "tasks:write"],
    ));
    let created = env
        .call("POST", "/lists/acme-roadmap/tasks", &manager)
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let seen = env.upstream.last();
    assert_eq!(
        seen.header_values("x-portcullis-principal"),
        ["dana@acme.example"]
    );
    assert_eq!(seen.header_values("x-portcullis-tenant"), ["org_acme"]);
    assert!(seen.header_values("x-portcullis-roles").is_empty());
    // Without the group there is no manager role.
    let everyone = env.okta.token(&okta_claims(
        &env.okta,
        &["Everyone"],
        &["openid", "tasks:read", "tasks:write"],
    ));
    assert_eq!(
        env.call("POST", "/lists/acme-roadmap/tasks", &everyone)
            .await
            .status,
        403
    );
    // The `scp` array reaches context.scopes.
    let no_write = env.okta.token(&okta_claims(
        &env.okta,
        &["Everyone", "tasks-managers"],
        &["openid", "tasks:read"],
    ));
    assert_eq!(
        env.call("POST", "/lists/acme-roadmap/tasks", &no_write)
            .await
            .status,
        403
    );
    assert_eq!(
        env.call("GET", "/lists/globex-ops", &manager).await.status,
        403
    );
    let forwarded = env.upstream.count();

    // Each issuer's rules apply only to its own tokens.
    let okta_claims_auth0_key = env
        .auth0
        .signer()
        .mint_with_header(
            portcullis::demo::SigningAlg::Rs256,
            &json!({"alg": "RS256", "kid": env.auth0.kid()}),
            &okta_claims(&env.okta, &["tasks-managers"], &["tasks:write"]),
        )
        .unwrap();
    let mut wrong_audience = auth0_claims(&env.auth0, &["admin"], &[], "org_acme", FULL_SCOPE);
    wrong_audience["aud"] = json!(OKTA_API);
    let mut unknown_issuer = okta_claims(&env.okta, &["tasks-managers"], &["tasks:write"]);
    unknown_issuer["iss"] = json!(format!("{}/", env.okta.url));
    let mut no_cid = okta_claims(&env.okta, &["tasks-managers"], &["tasks:write"]);
    no_cid.as_object_mut().unwrap().remove("cid");
    for (name, token) in [
        ("Okta claims signed by the Auth0 key", okta_claims_auth0_key),
        (
            "Auth0 token for the Okta audience",
            env.auth0.token(&wrong_audience),
        ),
        (
            "iss with a trailing slash Okta never sends",
            env.okta.token(&unknown_issuer),
        ),
        (
            "Okta token without the required cid",
            env.okta.token(&no_cid),
        ),
    ] {
        let response = env.call("GET", "/lists/acme-roadmap", &token).await;
        assert_eq!(response.status, 401, "{name}: {}", response.body);
    }
    assert_eq!(env.upstream.count(), forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_work_after_one_refetch_and_removed_keys_stop_verifying() {
    let env = IdpEnv::start().await;
    let claims = auth0_claims(&env.auth0, &["viewer"], &[], "org_acme", FULL_SCOPE);
    let old_token = env.auth0.token(&claims);
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &old_token)
            .await
            .status,
        200
    );
    // Cached now: the next hit skips verification.
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &old_token)
            .await
            .status,
        200
    );

    env.auth0.rotate();
    let fetches = env.auth0.jwks_requests();
    let new_token = env.auth0.token(&claims);
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &new_token)
            .await
            .status,
        200
    );
    assert_eq!(
        env.auth0.jwks_requests(),
        fetches + 1,
        "one refetch for the new kid"
    );
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &old_token)
            .await
            .status,
        200
    );

    // The IdP drops the old key; the next refresh (the one the background task runs) applies
    // it, and the old token stops verifying even though it was cached.
    env.auth0.retire_old_keys();
    env.state.fetch_keys().await;
    let response = env.call("GET", "/lists/acme-roadmap", &old_token).await;
    assert_eq!(response.status, 401, "{}", response.body);
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &new_token)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_fetches_once_per_cooldown() {
    let env = IdpEnv::start().await;
    let fetches = env.okta.jwks_requests();
    let claims = okta_claims(&env.okta, &["tasks-managers"], &["tasks:read"]);
    let mut flood = Vec::new();
    for i in 0..40 {
        let header = json!({"alg": "RS256", "kid": format!("attacker-{i}")});
        let token = env
            .okta
            .signer()
            .mint_with_header(portcullis::demo::SigningAlg::Rs256, &header, &claims)
            .unwrap();
        let gateway = env.gateway;
        flood.push(tokio::spawn(async move {
            let request = format!(
                "GET /lists/acme-roadmap HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            );
            raw_exchange(gateway, request.as_bytes()).await.status
        }));
    }
    for request in flood {
        assert_eq!(request.await.unwrap(), 401);
    }
    // Concurrent unknown kids share one fetch, and the cooldown (30 s) absorbs the rest.
    assert_eq!(env.okta.jwks_requests(), fetches + 1);
    let known = env.okta.token(&claims);
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &known).await.status,
        200
    );
    assert_eq!(env.okta.jwks_requests(), fetches + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_outage_with_warm_keys_keeps_requests_passing() {
    // Cooldown 1 s so that each failure mode below really triggers a refetch.
    let env = IdpEnv::start_with(TestIssuer::start(Flavor::Auth0).await, |c| {
        c.replace(
            "jwks_refresh_max_seconds = 3600\n",
            "jwks_refresh_max_seconds = 3600\njwks_cooldown_seconds = 1\n",
        )
    })
    .await;
    let claims = auth0_claims(&env.auth0, &["viewer"], &[], "org_acme", FULL_SCOPE);
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &env.auth0.token(&claims))
            .await
            .status,
        200
    );
    let unknown_kid = env
        .auth0
        .signer()
        .mint_with_header(
            portcullis::demo::SigningAlg::Rs256,
            &json!({"alg": "RS256", "kid": "not-published"}),
            &claims,
        )
        .unwrap();
    // Huge: the real keys padded past the gateway's 1 MiB cap on a key-set document, so the
    // fetch fails (without the cap it would succeed: the keys are valid).
    for mode in [JwksMode::Unavailable, JwksMode::Garbage, JwksMode::Huge] {
        env.auth0.set_mode(mode);
        let counts = || {
            env.state
                .authenticator
                .issuers()
                .find(|i| i.name().starts_with(env.auth0.url.as_str()))
                .unwrap()
                .keys
                .fetch_counts()
        };
        let fetches_before = counts();
        let before = env.auth0.jwks_requests();
        // Retry the unknown kid until the gateway has refetched (and failed) at least once.
        while env.auth0.jwks_requests() == before {
            assert_eq!(
                env.call("GET", "/lists/acme-roadmap", &unknown_kid)
                    .await
                    .status,
                401
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A fresh token (not cached) with the known kid still verifies with the kept keys.
        let mut fresh = claims.clone();
        fresh["jti"] = json!(format!("{mode:?}"));
        let response = env
            .call("GET", "/lists/acme-roadmap", &env.auth0.token(&fresh))
            .await;
        assert_eq!(response.status, 200, "{mode:?}: {}", response.body);
        let fetches_after = counts();
        assert_eq!(
            fetches_after.successes, fetches_before.successes,
            "{mode:?}"
        );
        assert!(fetches_after.failures > fetches_before.failures, "{mode:?}");
    }
    env.auth0.go_down();
    env.state.fetch_keys().await;
    let mut fresh = claims.clone();
    fresh["jti"] = json!("down");
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &env.auth0.token(&fresh))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_down_at_cold_start_denies_until_its_keys_arrive() {
    let auth0 = TestIssuer::down(Flavor::Auth0).await;
    let env = IdpEnv::start_with(auth0, |c| {
        c.replace(
            "jwks_refresh_max_seconds = 3600\n",
            "jwks_refresh_max_seconds = 3600\njwks_cooldown_seconds = 1\n",
        )
    })
    .await;
    assert!(!env.state.authenticator.has_all_keys());
    // Not ready, and the reason names the issuer.
    let ready = raw_exchange(
        env.admin,
        b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(
        ready.json()["issuers_without_keys"][0],
        env.auth0.url.as_str()
    );
    let token = env.auth0.token(&auth0_claims(
        &env.auth0,
        &["admin"],
        &[],
        "org_acme",
        FULL_SCOPE,
    ));
    let response = env.call("GET", "/lists/acme-roadmap", &token).await;
    assert_eq!(response.status, 401, "{}", response.body);
    assert_eq!(
        response.json()["message"],
        "the key set of the issuer is not available"
    );
    // The other issuer is unaffected.
    let okta = env.okta.token(&okta_claims(
        &env.okta,
        &["tasks-managers"],
        &["tasks:read"],
    ));
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &okta).await.status,
        200
    );
    let forwarded = env.upstream.count();

    env.auth0.come_up().await;
    // The background refresh retries; every answer meanwhile is a 401, never an allow.
    let mut status = 401;
    for _ in 0..100 {
        status = env.call("GET", "/lists/acme-roadmap", &token).await.status;
        if status != 401 {
            break;
        }
        assert_eq!(env.upstream.count(), forwarded);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert!(env.state.authenticator.has_all_keys());
    let ready = raw_exchange(
        env.admin,
        b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_jwks_never_stalls_requests_with_a_known_kid() {
    let env = IdpEnv::start_with(TestIssuer::start(Flavor::Auth0).await, |c| {
        c.replace(
            "jwks_refresh_max_seconds = 3600\n",
            "jwks_refresh_max_seconds = 3600\nfetch_timeout_seconds = 60\n",
        )
    })
    .await;
    let claims = auth0_claims(&env.auth0, &["viewer"], &[], "org_acme", FULL_SCOPE);
    env.auth0.set_mode(JwksMode::Hold);
    let unknown_kid = env
        .auth0
        .signer()
        .mint_with_header(
            portcullis::demo::SigningAlg::Rs256,
            &json!({"alg": "RS256", "kid": "next-key"}),
            &claims,
        )
        .unwrap();
    let gateway = env.gateway;
    let waiting = tokio::spawn(async move {
        let request = format!(
            "GET /lists/acme-roadmap HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Authorization: Bearer {unknown_kid}\r\n\r\n"
        );
        raw_exchange(gateway, request.as_bytes()).await.status
    });
    while env.auth0.held() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The key fetch is in flight and held: known kids are answered meanwhile.
    for jti in ["a", "b", "c"] {
        let mut fresh = claims.clone();
        fresh["jti"] = json!(jti);
        let response = env
            .call("GET", "/lists/acme-roadmap", &env.auth0.token(&fresh))
            .await;
        assert_eq!(response.status, 200);
    }
    assert!(!waiting.is_finished());
    assert_eq!(env.auth0.held(), 1);
    env.auth0.release_held();
    assert_eq!(waiting.await.unwrap(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_drives_the_background_refresh() {
    let auth0 = TestIssuer::start(Flavor::Auth0).await;
    auth0.set_cache_control("public, max-age=1");
    let env = IdpEnv::start_with(auth0, |c| {
        c.replace(
            "jwks_refresh_min_seconds = 60",
            "jwks_refresh_min_seconds = 1",
        )
        .replacen(
            "jwks_refresh_max_seconds = 3600\n",
            "jwks_refresh_max_seconds = 3600\njwks_refresh_seconds = 3600\n",
            1,
        )
    })
    .await;
    let start = env.auth0.jwks_requests();
    // Without max-age the next refresh would be an hour away.
    for _ in 0..100 {
        if env.auth0.jwks_requests() >= start + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.auth0.jwks_requests() >= start + 2);
    // Okta's max-age (3985 s) is clamped to the hour: no refetch from it meanwhile.
    assert_eq!(env.okta.jwks_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_get_the_same_decisions_as_fully_verified_ones() {
    let cached = IdpEnv::start().await;
    let uncached = IdpEnv::start_with(TestIssuer::start(Flavor::Auth0).await, |c| {
        c.replace("cache_entries = 10000", "cache_entries = 0")
    })
    .await;
    let cases = [
        ("GET", "/lists/acme-roadmap", &["viewer"][..], "org_acme"),
        ("GET", "/lists/globex-ops", &["viewer"][..], "org_acme"),
        (
            "POST",
            "/lists/acme-roadmap/tasks",
            &["viewer"][..],
            "org_acme",
        ),
        (
            "POST",
            "/lists/acme-roadmap/tasks",
            &["manager"][..],
            "org_acme",
        ),
        (
            "DELETE",
            "/lists/globex-ops/tasks/t3",
            &["admin"][..],
            "org_globex",
        ),
    ];
    let mut statuses = Vec::new();
    for env in [&cached, &uncached] {
        let before = env.state.authenticator.cache_stats();
        let mut seen = Vec::new();
        for (i, (method, target, roles, org)) in cases.into_iter().enumerate() {
            let mut claims = auth0_claims(&env.auth0, roles, &[], org, FULL_SCOPE);
            claims["jti"] = json!(i);
            let token = env.auth0.token(&claims);
            let miss = env.call(method, target, &token).await;
            let hit = env.call(method, target, &token).await;
            assert_eq!(miss.status, hit.status, "{method} {target} {roles:?}");
            assert_eq!(miss.json()["error"], hit.json()["error"]);
            seen.push(miss.status);
        }
        let after = env.state.authenticator.cache_stats();
        statuses.push((seen, after.hits - before.hits));
    }
    assert_eq!(statuses[0].0, [200, 403, 403, 200, 200]);
    assert_eq!(statuses[0].0, statuses[1].0);
    assert_eq!(statuses[0].1, cases.len() as u64, "every second call hits");
    assert_eq!(statuses[1].1, 0, "the cache is off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_expires_on_time() {
    let env = IdpEnv::start_with(TestIssuer::start(Flavor::Auth0).await, |c| {
        c.replacen("leeway_seconds = 30", "leeway_seconds = 0", 1)
    })
    .await;
    let mut claims = auth0_claims(&env.auth0, &["viewer"], &[], "org_acme", FULL_SCOPE);
    claims["exp"] = json!(now() + 2);
    let token = env.auth0.token(&claims);
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &token).await.status,
        200
    );
    assert_eq!(
        env.call("GET", "/lists/acme-roadmap", &token).await.status,
        200
    );
    assert!(env.state.authenticator.cache_stats().hits >= 1);
    while now() <= claims["exp"].as_u64().unwrap() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = env.call("GET", "/lists/acme-roadmap", &token).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["message"], "the token has expired");
}
