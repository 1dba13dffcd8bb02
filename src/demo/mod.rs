//! `portcullis demo`: the gateway with the repository's configuration, a development token
//! issuer and the sample tasks API, all in one process on loopback, plus curl lines to try.

pub mod error;
pub mod tasks_api;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::net::TcpListener;

pub use crate::dev_issuer::{serve_issuer, DevIssuer, SigningAlg};
pub use error::DemoError;
pub use tasks_api::serve_tasks_api;

use crate::admin::serve_admin;
use crate::server::{load_gateway, serve, start_decision_log};

/// The demo's users: (subject, roles, tenant).
pub const DEMO_USERS: &[(&str, &[&str], &str)] = &[
    ("alice", &["manager"], "org_acme"),
    ("bob", &["viewer"], "org_acme"),
    ("dave", &["admin"], "org_acme"),
    ("carol", &["admin"], "org_globex"),
];

/// Claims shaped like an Auth0 access token with RBAC and Organizations.
pub fn demo_claims(
    issuer: &str,
    audience: &str,
    subject: &str,
    roles: &[&str],
    tenant: &str,
) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    json!({
        "iss": issuer,
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "exp": now + 3600,
        "scope": "openid tasks:read tasks:write",
        "https://portcullis.dev/roles": roles,
        "org_id": tenant,
        "email": format!("{subject}@example.com"),
    })
}

pub async fn run_demo(config: &Path) -> Result<(), DemoError> {
    let settings = crate::config::Settings::load(config)?;
    let issuer_settings = settings
        .issuers
        .first()
        .ok_or_else(|| DemoError::Setup("the demo configuration needs one [[issuers]]".into()))?;
    let issuer_url = issuer_settings.rules.issuer.clone();
    let audience = issuer_settings
        .rules
        .audiences
        .first()
        .cloned()
        .unwrap_or_default();
    let issuer_address = issuer_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    let issuer = Arc::new(DevIssuer::generate(issuer_url.clone())?);
    let issuer_listener = TcpListener::bind(&issuer_address).await?;
    tokio::spawn(serve_issuer(issuer.clone(), issuer_listener));

    let routes: crate::config::raw::RawRoutesFile =
        crate::config::SourceFile::read(&settings.routes_file)
            .and_then(|f| f.parse_toml())
            .map_err(crate::config::ConfigError::from)?;
    let tasks_address = routes
        .upstreams
        .get("tasks")
        .and_then(|u| u.get_ref().address.as_ref())
        .map(|address| address.get_ref().clone())
        .ok_or_else(|| {
            DemoError::Setup(
                "routes.toml needs an upstream named \"tasks\" with one address".into(),
            )
        })?;
    let tasks_listener = TcpListener::bind(&tasks_address).await?;
    tokio::spawn(serve_tasks_api(tasks_listener));

    let gateway = Arc::new(load_gateway(config)?);
    let missing = gateway.fetch_keys().await;
    if !missing.is_empty() {
        return Err(DemoError::Setup(format!(
            "could not fetch keys of {}",
            missing.join(", ")
        )));
    }
    gateway.spawn_key_refresh();
    let listen = gateway.settings.listen;
    let listener = TcpListener::bind(listen).await?;
    let decision_log = start_decision_log(&gateway).map_err(|e| DemoError::Setup(e.to_string()))?;
    let admin = gateway.settings.admin_listen;
    let admin_listener = TcpListener::bind(admin).await?;
    tokio::spawn(serve_admin(admin_listener, gateway.clone()));
    tokio::spawn(serve(listener, gateway, decision_log));

    let token = |subject: &str| -> Result<String, DemoError> {
        let (_, roles, tenant) = DEMO_USERS
            .iter()
            .find(|(s, _, _)| *s == subject)
            .ok_or_else(|| DemoError::Setup(format!("no demo user {subject}")))?;
        Ok(issuer.mint(
            SigningAlg::Rs256,
            &demo_claims(&issuer_url, &audience, subject, roles, tenant),
        )?)
    };
    let base = format!("http://{listen}");
    println!("\nPortcullis demo is running.");
    println!("  gateway     {base}");
    println!("  dev issuer  {issuer_url} (JWKS {})", issuer.jwks_uri());
    println!("  tasks API   http://{tasks_address} (behind the gateway)\n");
    for (subject, roles, tenant) in DEMO_USERS {
        println!(
            "export {}_TOKEN={}",
            subject.to_uppercase(),
            token(subject)?
        );
        println!("#   {subject}: roles {roles:?}, tenant {tenant}\n");
    }
    println!("# Try these (expected status in the comment):");
    let lines = [
        ("200: alice (manager, acme) reads a task of her tenant", format!("curl -i -H \"Authorization: Bearer $ALICE_TOKEN\" {base}/lists/acme-roadmap/tasks/t1")),
        ("401: no token", format!("curl -i {base}/lists/acme-roadmap/tasks/t1")),
        ("403: a manager may not delete tasks", format!("curl -i -X DELETE -H \"Authorization: Bearer $ALICE_TOKEN\" {base}/lists/acme-roadmap/tasks/t1")),
        ("204: dave (admin, acme) may", format!("curl -i -X DELETE -H \"Authorization: Bearer $DAVE_TOKEN\" {base}/lists/acme-roadmap/tasks/t1")),
        ("201: a manager creates a task", format!("curl -i -X POST -H \"Authorization: Bearer $ALICE_TOKEN\" -H 'content-type: application/json' -d '{{\"title\":\"Plan Q3\"}}' {base}/lists/acme-roadmap/tasks")),
        ("200: bob owns t2 and may edit it", format!("curl -i -X PATCH -H \"Authorization: Bearer $BOB_TOKEN\" -H 'content-type: application/json' -d '{{\"done\":true}}' {base}/lists/acme-roadmap/tasks/t2")),
        ("403: alice does not own t2", format!("curl -i -X PATCH -H \"Authorization: Bearer $ALICE_TOKEN\" -H 'content-type: application/json' -d '{{\"done\":true}}' {base}/lists/acme-roadmap/tasks/t2")),
        ("403: carol (admin of globex) never sees acme's lists", format!("curl -i -H \"Authorization: Bearer $CAROL_TOKEN\" {base}/lists/acme-roadmap")),
        ("200: anonymous health check", format!("curl -i {base}/health")),
        ("404: no route", format!("curl -i -H \"Authorization: Bearer $ALICE_TOKEN\" {base}/admin")),
        ("metrics, liveness and readiness (admin listener)", format!("curl -s http://{admin}/metrics | grep portcullis_requests_total; curl -i http://{admin}/readyz")),
    ];
    for (comment, line) in lines {
        println!("# {comment}\n{line}\n");
    }
    println!("Decision log lines (JSON) appear below, on stdout. Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
