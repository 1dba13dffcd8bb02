//! What `portcullis check` prints about a configuration that loaded cleanly, and the warnings
//! it gives about configurations that load but cannot be what was meant.

use std::collections::HashSet;
use std::fmt::Write;

use cedar_policy::{ActionConstraint, Effect, EntityUid};

use crate::authn::jwks::KeySource;
use crate::config::{is_loopback, ConfigProblem};
use crate::identity_headers::FRAMEWORK_INTERNAL;
use crate::routes::TemplateSegment;
use crate::snapshot::{AuthMode, EnforcementMode, Gateway};

/// The machine-readable report of `check --format json`.
pub fn json_report(errors: &[ConfigProblem], warnings: &[ConfigProblem]) -> String {
    let list = |problems: &[ConfigProblem]| -> Vec<serde_json::Value> {
        problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "file": p.file.display().to_string(),
                    "line": p.line,
                    "message": p.message,
                })
            })
            .collect()
    };
    serde_json::json!({
        "ok": errors.is_empty(),
        "errors": list(errors),
        "warnings": list(warnings),
    })
    .to_string()
}

/// Warnings: actions of the schema that no route uses, and routes whose action no `permit`
/// policy can apply to (every request on them is denied).
pub fn warnings(gateway: &Gateway) -> Vec<ConfigProblem> {
    let settings = &gateway.settings;
    let snapshot = gateway.snapshot();
    let bundle = &snapshot.bundle;
    let mut warnings = Vec::new();
    let routed: HashSet<&EntityUid> = snapshot
        .routes
        .routes()
        .map(|r| &r.payload.authz.action)
        .collect();
    let schema_file = settings.policies_dir.join("schema.cedarschema");
    let schema_text = std::fs::read_to_string(&schema_file).unwrap_or_default();
    for action in bundle.schema.actions() {
        if routed.contains(action) {
            continue;
        }
        let name = action.id().unescaped().to_string();
        let line = schema_text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("action {name} "))
                    || l.starts_with(&format!("action \"{name}\""))
            })
            .map(|i| i + 1);
        warnings.push(ConfigProblem {
            file: schema_file.clone(),
            line,
            message: format!("action {action} is used by no route"),
        });
    }
    for issuer in &settings.issuers {
        let url = match &issuer.key_source {
            KeySource::JwksUri(uri) => uri.as_str(),
            KeySource::Discovery { issuer } => issuer.as_str(),
            KeySource::Inline => continue,
        };
        let plain = url::Url::parse(url)
            .is_ok_and(|parsed| parsed.scheme() == "http" && !is_loopback(&parsed));
        if plain {
            warnings.push(ConfigProblem {
                file: settings.file.clone(),
                line: issuer.line,
                message: format!(
                    "issuer {:?}: keys are fetched over plain http from {url}, which is not a loopback address: anyone on the path can substitute the keys; use https",
                    issuer.rules.issuer
                ),
            });
        }
    }
    let groups = bundle.schema.action_entities().ok();
    for route in snapshot.routes.routes() {
        let action = &route.payload.authz.action;
        let mut covering: Vec<EntityUid> = vec![action.clone()];
        if let Some(ancestors) = groups.as_ref().and_then(|g| g.ancestors(action)) {
            covering.extend(ancestors.cloned());
        }
        let permitted = bundle
            .policies
            .policies()
            .filter(|p| p.effect() == Effect::Permit)
            .any(|p| match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(uid) => covering.contains(&uid),
                ActionConstraint::In(uids) => uids.iter().any(|u| covering.contains(u)),
            });
        if !permitted {
            warnings.push(ConfigProblem {
                file: settings.routes_file.clone(),
                line: Some(route.payload.line),
                message: format!(
                    "route {:?}: no permit policy applies to {action}, so every request is denied",
                    route.payload.id
                ),
            });
        }
    }
    warnings
}

pub fn summary(gateway: &Gateway) -> String {
    let settings = &gateway.settings;
    let snapshot = gateway.snapshot();
    let mut out = String::new();
    let _ = writeln!(out, "configuration OK: {}", settings.file.display());
    let _ = writeln!(
        out,
        "  listen: {}{}",
        settings.listen,
        if settings.h2c {
            " (HTTP/1.1 and h2c)"
        } else {
            ""
        }
    );
    if let Some(tls) = &settings.tls {
        let _ = writeln!(
            out,
            "  tls: {} ({}), certificates for {}",
            tls.listen,
            if tls.h2 { "h2, http/1.1" } else { "http/1.1" },
            tls.certificates.current().names().join(", ")
        );
    }
    if let Some(bundle) = &settings.bundle {
        let _ = writeln!(
            out,
            "  bundle: {} (every {} s, {} trusted key(s)); routes and policies read from {}",
            bundle.reference,
            bundle.poll.as_secs(),
            bundle.trusted.len(),
            bundle
                .cache_dir
                .join(crate::bundle::puller::ACTIVE)
                .display()
        );
    }
    if let Some(authz) = &settings.authz_server {
        let _ = writeln!(
            out,
            "  authz_server: {} (nginx, ingress-nginx, traefik, caddy, envoy-http), {} trusted peer range(s)",
            authz.listen,
            authz.trusted_peers.len()
        );
    }
    if let Some(directory) = &settings.directory {
        for source in &directory.sources {
            let mappings: Vec<String> = source
                .mappings()
                .iter()
                .map(|(key, mapping)| format!("{key} → {}", mapping.entity_type))
                .collect();
            let _ = writeln!(
                out,
                "  directory source: {} ({}, every {} s): {}",
                source.name,
                source.url,
                directory.interval.as_secs(),
                mappings.join(", ")
            );
        }
    }
    for issuer in &settings.issuers {
        let _ = writeln!(
            out,
            "  issuer: {} (audiences: {}; principal: {}::\"<{}>\")",
            issuer.rules.issuer,
            issuer.rules.audiences.join(", "),
            issuer.mapping.principal_type,
            issuer.mapping.principal_id_claim
        );
    }
    let names = &settings.headers;
    let stripped: Vec<&str> = [
        &names.principal,
        &names.roles,
        &names.tenant,
        &names.request_id,
    ]
    .into_iter()
    .chain(&names.strip)
    .map(http::HeaderName::as_str)
    .chain(FRAMEWORK_INTERNAL.iter().map(|header| header.name))
    .collect();
    let _ = writeln!(
        out,
        "  removed from client requests, in any spelling: {} and method overrides",
        stripped.join(", ")
    );
    let bundle = &snapshot.bundle;
    let _ = writeln!(
        out,
        "  policies: {} from {} ({} directory entities)",
        bundle.policies.policies().count(),
        settings.policies_dir.display(),
        bundle
            .entities
            .iter()
            .filter(|e| !e.uid().type_name().basename().eq("Action"))
            .count()
    );
    let _ = writeln!(out, "  routes ({}):", snapshot.routes.routes().count());
    for route in snapshot.routes.routes() {
        let path: String = if route.template.segments.is_empty() {
            "/".to_string()
        } else {
            route
                .template
                .segments
                .iter()
                .map(|s| match s {
                    TemplateSegment::Literal(l) => format!("/{l}"),
                    TemplateSegment::Param(p) => format!("/{{{p}}}"),
                    TemplateSegment::CatchAll(p) => format!("/{{*{p}}}"),
                })
                .collect()
        };
        let payload = &route.payload;
        let _ = writeln!(
            out,
            "    {:<24} {:<12} {:<36} → {} ({}, {}{})",
            payload.id,
            route.methods.join(","),
            path,
            payload.authz.action,
            payload.upstream.name,
            match payload.auth {
                AuthMode::Required => "token required",
                AuthMode::Anonymous => "anonymous",
            },
            if payload.mode == EnforcementMode::Audit {
                ", audit only: denials are logged, not enforced"
            } else {
                ""
            }
        );
    }
    out
}
