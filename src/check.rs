//! What `portcullis check` prints about a configuration that loaded cleanly.

use std::fmt::Write;

use crate::routes::TemplateSegment;
use crate::snapshot::{AuthMode, Gateway};

pub fn summary(gateway: &Gateway) -> String {
    let settings = &gateway.settings;
    let snapshot = gateway.snapshot();
    let mut out = String::new();
    let _ = writeln!(out, "configuration OK: {}", settings.file.display());
    let _ = writeln!(out, "  listen: {}", settings.listen);
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
            "    {:<24} {:<12} {:<36} → {} ({}, {})",
            payload.id,
            route.methods.join(","),
            path,
            payload.authz.action,
            payload.upstream.name,
            match payload.auth {
                AuthMode::Required => "token required",
                AuthMode::Anonymous => "anonymous",
            }
        );
    }
    out
}
