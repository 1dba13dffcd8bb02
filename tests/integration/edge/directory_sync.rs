//! Directory sync against local servers shaped like Auth0's and Okta's management APIs
//! (`idp_apis.rs`): the entities a sync builds decide requests, a change in the IdP changes
//! the decision for the same token at the next sync, outages and 429s lose nothing, and a
//! restart with the API down serves the persisted directory.

use std::net::SocketAddr;
use std::path::Path;

use portcullis::demo::SigningAlg;
use serde_json::{json, Value};

use crate::common::{
    decision_lines, eventually, now, raw_exchange, start_gateway_with_admin, Response, TestEnv,
    AUDIENCE,
};
use crate::edge::idp_apis::{
    IdpApis, Tenant, AUTH0_CLIENT_ID, AUTH0_CLIENT_SECRET, OKTA_API_TOKEN, OKTA_CLIENT_ID,
};
use crate::edge::support::append_config;

const TASK: &str = "/lists/acme-roadmap/tasks/t1";
const LIST: &str = "/lists/acme-roadmap";

fn auth0_config(url: &str) -> String {
    format!(
        r#"
[directory]
interval_seconds = 1
cache_file = "directory-cache.json"

[[directory.sources]]
name = "auth0"
kind = "auth0"
url = "{url}"
client_id = "{AUTH0_CLIENT_ID}"
client_secret_file = "auth0-client-secret"
users = {{ entity_type = "User", id = "user_id", attributes = {{ email = "email" }} }}
roles = {{ entity_type = "Role", id = "name" }}
organizations = {{ entity_type = "Tenant", id = "id" }}
organization_roles = {{ entity_type = "Role", id = "{{role}}" }}
"#
    )
}

/// The tasks example's gateway with `directory` appended to portcullis.toml and the Auth0
/// client secret in the file it names.
async fn env_with(directory: String) -> TestEnv {
    TestEnv::start_with(move |dir, _| {
        std::fs::write(
            dir.join("auth0-client-secret"),
            format!("{AUTH0_CLIENT_SECRET}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("okta-api-token"), OKTA_API_TOKEN).unwrap();
        append_config(dir, &directory);
    })
    .await
}

/// A token carrying no roles or groups: whatever the caller may do comes from the directory.
fn token_for(env: &TestEnv, subject: &str, scope: &str) -> String {
    let claims = json!({
        "iss": env.issuer_url(),
        "aud": AUDIENCE,
        "sub": subject,
        "org_id": "org_acme",
        "scope": scope,
        "iat": now(),
        "exp": now() + 3600,
    });
    env.issuer.mint(SigningAlg::Rs256, &claims).unwrap()
}

async fn send_to(address: SocketAddr, method: &str, target: &str, token: &str) -> Response {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: tasks.example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw_exchange(address, request.as_bytes()).await
}

async fn admin(address: SocketAddr, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    raw_exchange(address, request.as_bytes()).await
}

/// The value of the metric line that starts with `series`.
async fn metric(address: SocketAddr, series: &str) -> Option<f64> {
    admin(address, "/metrics")
        .await
        .body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn directory_status(address: SocketAddr) -> (u16, Value) {
    let response = admin(address, "/readyz").await;
    (response.status, response.json())
}

/// 150 users besides the named ones, so that users and role members span several pages.
fn auth0_tenant() -> Tenant {
    let mut users: Vec<Value> = (0..150)
        .map(|i| json!({"user_id": format!("auth0|filler{i}"), "email": format!("f{i}@acme.example"), "name": "Filler"}))
        .collect();
    users.push(json!({"user_id": "auth0|dora", "email": "dora@acme.example", "name": "Dora", "app_metadata": {"plan": "pro"}}));
    let mut viewers: Vec<String> = (0..120).map(|i| format!("auth0|filler{i}")).collect();
    viewers.push("auth0|dora".into());
    Tenant {
        users,
        roles: vec![
            (json!({"id": "rol_viewer", "name": "viewer"}), viewers),
            (json!({"id": "rol_admin", "name": "admin"}), vec![]),
        ],
        organizations: vec![(
            json!({"id": "org_acme", "name": "acme"}),
            vec![("auth0|dora".into(), vec!["manager".into()])],
        )],
        ..Tenant::default()
    }
}

#[tokio::test]
async fn auth0_roles_and_organization_roles_decide_and_a_removed_role_denies_the_same_token() {
    let apis = IdpApis::start(auth0_tenant()).await;
    let env = env_with(auth0_config(&apis.url)).await;
    let token = token_for(&env, "auth0|dora", "tasks:read tasks:write");

    // The viewer role, synced from the role's member list (its second checkpoint page).
    eventually("dora reads the task as a synced viewer", async || {
        send_to(env.gateway, "GET", TASK, &token).await.status == 200
    })
    .await;
    // The organization role "manager" from the organization's member list.
    let created = send_to(env.gateway, "POST", "/lists/acme-roadmap/tasks", &token).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(
        apis.requests_to("/api/v2/users") >= 2,
        "users span two pages"
    );
    assert_eq!(
        apis.requests_to("/oauth/token"),
        1,
        "the management token is reused"
    );

    let (status, ready) = directory_status(env.admin).await;
    assert_eq!(status, 200, "{ready}");
    let directory = &ready["directory"];
    let version = directory["version"].as_str().unwrap().to_string();
    assert_eq!(directory["sources"][0]["name"], "auth0");
    // 151 users, 2 roles, 1 organization.
    assert_eq!(directory["sources"][0]["entities"], 154);
    assert!(directory["sources"][0]["last_error"].is_null());
    // Role::"viewer", Role::"admin" and Tenant::"org_acme" are in entities.json too: the
    // file's entries win.
    assert_eq!(directory["conflicts"], 3);
    assert_eq!(
        metric(env.admin, "portcullis_directory_entities{source=\"auth0\"}").await,
        Some(154.0)
    );
    let line = decision_lines(&env.decision_log)
        .into_iter()
        .rfind(|l| l["path"] == TASK && l["decision"] == "allow")
        .unwrap();
    assert_eq!(line["directory"], version.as_str());

    // Revoked in the IdP: the same token is refused after the next sync.
    apis.with(|tenant| {
        tenant.roles[0].1.retain(|m| m != "auth0|dora");
        tenant.organizations[0].1.clear();
    });
    eventually("the removed role takes effect", async || {
        send_to(env.gateway, "GET", TASK, &token).await.status == 403
    })
    .await;
    assert_eq!(
        send_to(env.gateway, "POST", "/lists/acme-roadmap/tasks", &token)
            .await
            .status,
        403
    );
    // The writer flushes in batches: wait for the refusal's line.
    let last_for_task = || {
        decision_lines(&env.decision_log)
            .into_iter()
            .rfind(|l| l["path"] == TASK)
            .unwrap()
    };
    eventually("the refusal is logged", async || {
        last_for_task()["decision"] == "deny"
    })
    .await;
    assert_ne!(last_for_task()["directory"], version.as_str());
}

#[tokio::test]
async fn an_auth0_tenant_past_1000_users_syncs_through_an_export_job() {
    let mut tenant = auth0_tenant();
    tenant.users.splice(
        0..0,
        (150..1500).map(|i| json!({"user_id": format!("auth0|filler{i}"), "email": format!("f{i}@acme.example")})),
    );
    let apis = IdpApis::start(tenant).await;
    let env = env_with(auth0_config(&apis.url)).await;
    let token = token_for(&env, "auth0|dora", "tasks:read");

    eventually("the export is read", async || {
        directory_status(env.admin).await.1["directory"]["sources"][0]["entities"] == 1504
    })
    .await;
    assert_eq!(send_to(env.gateway, "GET", TASK, &token).await.status, 200);
    // One page told the total; the export job gave the users, in the fields the mapping reads.
    assert_eq!(apis.requests_to("/api/v2/users"), 1);
    let exports = apis.with(|t| t.exports.clone());
    assert_eq!(exports[0].0, ["email", "user_id"]);
    assert!(apis.requests_to("/exports/job_1.json.gz") >= 1);
}

#[tokio::test]
async fn rate_limits_slow_a_sync_and_an_outage_keeps_the_last_good_directory_across_a_restart() {
    let mut tenant = auth0_tenant();
    tenant.rate_limit_next = 4;
    let apis = IdpApis::start(tenant).await;
    let env = env_with(auth0_config(&apis.url)).await;
    let token = token_for(&env, "auth0|dora", "tasks:read");

    // Four 429s, each waited out: the first sync completes, nothing lost.
    eventually("the first sync", async || {
        send_to(env.gateway, "GET", TASK, &token).await.status == 200
    })
    .await;
    assert_eq!(apis.with(|t| t.rate_limited), 4);
    assert_eq!(
        metric(
            env.admin,
            "portcullis_directory_rate_limited_total{source=\"auth0\"}"
        )
        .await,
        Some(4.0)
    );
    assert_eq!(
        metric(
            env.admin,
            "portcullis_directory_syncs_total{result=\"failure\",source=\"auth0\"}"
        )
        .await,
        Some(0.0)
    );

    // The API goes down: syncs fail, the directory and readiness stay.
    apis.with(|t| t.down = true);
    eventually("a failed sync", async || {
        directory_status(env.admin).await.1["directory"]["sources"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503"))
    })
    .await;
    assert_eq!(send_to(env.gateway, "GET", TASK, &token).await.status, 200);
    assert_eq!(directory_status(env.admin).await.0, 200);

    // A body that is not JSON fails the sync the same way.
    apis.with(|t| {
        t.down = false;
        t.malformed_next = 1;
    });
    eventually("a malformed answer is reported", async || {
        directory_status(env.admin).await.1["directory"]["sources"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not JSON"))
    })
    .await;
    assert_eq!(send_to(env.gateway, "GET", TASK, &token).await.status, 200);

    // A second gateway started while the API is down serves the cache file at once.
    apis.with(|t| t.down = true);
    let config = env.dir.path().join("portcullis.toml");
    assert!(env.dir.path().join("directory-cache.json").exists());
    let restarted = start_gateway_with_admin(&config).await;
    let (status, ready) = directory_status(restarted.admin).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready["directory"]["age_seconds"].as_u64().is_some());
    assert_eq!(
        send_to(restarted.address, "GET", TASK, &token).await.status,
        200
    );
    for task in restarted.tasks {
        task.abort();
    }
}

fn okta_config(url: &str, auth: &str) -> String {
    format!(
        r#"
[directory]
interval_seconds = 1

[[directory.sources]]
name = "okta"
kind = "okta"
url = "{url}"
{auth}
users = {{ entity_type = "User", id = "id", attributes = {{ email = "profile.email" }} }}
groups = {{ entity_type = "Group", id = "profile.name" }}
group_search = 'type eq "OKTA_GROUP"'
"#
    )
}

/// 250 users besides frank (two pages of 200), and the list readers' group.
fn okta_tenant() -> Tenant {
    let mut users: Vec<Value> = (0..250)
        .map(|i| json!({"id": format!("00ufiller{i}"), "status": "ACTIVE", "profile": {"login": format!("f{i}@acme.example"), "email": format!("f{i}@acme.example")}}))
        .collect();
    users.push(json!({"id": "00ufrank", "status": "ACTIVE", "profile": {"login": "frank@acme.example", "email": "frank@acme.example"}}));
    Tenant {
        users,
        groups: vec![
            (
                json!({"id": "00groadmap", "type": "OKTA_GROUP", "profile": {"name": "roadmap-readers"}}),
                vec!["00ufiller1".into()],
            ),
            (
                json!({"id": "00gapp", "type": "APP_GROUP", "profile": {"name": "app-group"}}),
                vec!["00ufrank".into()],
            ),
        ],
        ..Tenant::default()
    }
}

#[tokio::test]
async fn okta_group_membership_grants_access_without_a_new_token() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut tenant = okta_tenant();
    tenant.okta_public_key = Some(key.public_key_pem());
    // Two 429s with Okta's headers (X-Rate-Limit-Remaining: 0 and the reset), waited out.
    tenant.rate_limit_next = 2;
    let apis = IdpApis::start(tenant).await;
    let auth = format!(
        "client_id = \"{OKTA_CLIENT_ID}\"\nprivate_key_file = \"okta-key.pem\"\nkey_id = \"k1\""
    );
    let key_pem = key.serialize_pem();
    let env = TestEnv::start_with({
        let config = okta_config(&apis.url, &auth);
        move |dir: &Path, _| {
            std::fs::write(dir.join("okta-key.pem"), key_pem).unwrap();
            append_config(dir, &config);
        }
    })
    .await;
    let token = token_for(&env, "00ufrank", "tasks:read");

    eventually("the first sync", async || {
        directory_status(env.admin).await.0 == 200
    })
    .await;
    assert_eq!(send_to(env.gateway, "GET", LIST, &token).await.status, 403);
    assert!(
        apis.requests_to("/api/v1/users") >= 2,
        "users span two pages"
    );
    // Only OKTA_GROUPs are listed (group_search): the app group's members are not read.
    assert_eq!(apis.requests_to("/api/v1/groups/00gapp/users"), 0);

    apis.with(|t| t.groups[0].1.push("00ufrank".into()));
    eventually("the group membership takes effect", async || {
        send_to(env.gateway, "GET", LIST, &token).await.status == 200
    })
    .await;
    // Two requests to the token endpoint were 429s; one token was issued and kept.
    assert_eq!(
        apis.with(|t| t.issued.len()),
        1,
        "the access token is reused"
    );
    assert_eq!(apis.with(|t| t.rate_limited), 2);
    assert_eq!(
        metric(
            env.admin,
            "portcullis_directory_syncs_total{result=\"failure\",source=\"okta\"}"
        )
        .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn a_refused_client_secret_is_reported_without_the_secret() {
    let apis = IdpApis::start(auth0_tenant()).await;
    let env = TestEnv::start_with({
        let config = auth0_config(&apis.url);
        move |dir: &Path, _| {
            std::fs::write(dir.join("auth0-client-secret"), "wrong-secret-value").unwrap();
            append_config(dir, &config);
        }
    })
    .await;
    eventually("the refusal is reported", async || {
        directory_status(env.admin).await.1["directory"]["sources"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("client credentials exchange") && e.contains("401"))
    })
    .await;
    let (status, ready) = directory_status(env.admin).await;
    assert_eq!(status, 503);
    assert!(!ready.to_string().contains("wrong-secret-value"), "{ready}");
    assert_eq!(apis.requests_to("/api/v2/users"), 0);
}

#[tokio::test]
async fn a_synced_entity_the_schema_refuses_is_not_applied() {
    let mut tenant = okta_tenant();
    // The schema declares User.email a String.
    tenant.users.last_mut().unwrap()["profile"]["email"] = json!(42);
    tenant.groups[0].1.push("00ufrank".into());
    let apis = IdpApis::start(tenant).await;
    let env = env_with(okta_config(
        &apis.url,
        "api_token_file = \"okta-api-token\"",
    ))
    .await;
    let token = token_for(&env, "00ufrank", "tasks:read");

    eventually("the refusal is reported", async || {
        directory_status(env.admin).await.1["directory"]["sources"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("00ufrank") && e.contains("email"))
    })
    .await;
    let (status, ready) = directory_status(env.admin).await;
    assert_eq!(status, 503, "no directory is in use yet: {ready}");
    assert_eq!(send_to(env.gateway, "GET", LIST, &token).await.status, 403);

    apis.with(|t| t.users.last_mut().unwrap()["profile"]["email"] = json!("frank@acme.example"));
    eventually("the corrected directory is applied", async || {
        send_to(env.gateway, "GET", LIST, &token).await.status == 200
    })
    .await;
    assert_eq!(directory_status(env.admin).await.0, 200);
}
