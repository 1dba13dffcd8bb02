//! `portcullis explain`: one request, taken through the pipeline, printed stage by stage —
//! canonical path, route, the Cedar principal with its parents and attributes, action,
//! resource, context, decision, determining policies and evaluation errors.
//!
//! It answers "why was this allowed (or denied)?" with what the gateway really built, not with
//! a re-derivation: everything printed comes from the pipeline's `Outcome`.

use std::fmt::Write;

use serde_json::Value;

use crate::offline::OfflineRequest;
use crate::pipeline::{Outcome, Verdict};
use crate::response::deny_response;
use crate::snapshot::Snapshot;

/// The explanation of `outcome`, as text.
pub fn render(
    request: &OfflineRequest,
    outcome: &Outcome,
    snapshot: &Snapshot,
    realm: &str,
) -> String {
    let mut out = String::new();
    let none = || "-".to_string();
    let _ = writeln!(out, "request:    {} {}", request.method, request.target);
    let _ = writeln!(
        out,
        "canonical:  {}",
        outcome.path().map_or_else(none, str::to_string)
    );
    let route = outcome.route();
    let _ = writeln!(
        out,
        "route:      {}{}",
        route.map_or_else(none, |r| r.id.to_string()),
        route
            .map(|r| format!(" (mode: {})", r.mode.as_str()))
            .unwrap_or_default()
    );
    let decided = outcome.decided();
    let evaluated = decided.and_then(|d| d.evaluated.as_ref());
    let cedar = evaluated.and_then(|e| e.cedar_request.as_ref());
    let built = evaluated.and_then(|e| e.principal_entity.as_ref());
    let principal = match built {
        Some(built) => Some(built.1.entity.uid()),
        None => cedar.and_then(|r| r.principal().cloned()),
    };
    let _ = writeln!(
        out,
        "principal:  {}",
        principal
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| decided.map(|d| d.principal().to_string()))
            .unwrap_or_else(none)
    );
    let principal_json = match built {
        Some(built) => built
            .1
            .entity
            .to_json_value()
            .ok()
            .map(|json| with_ancestors(json, snapshot)),
        None => principal
            .as_ref()
            .and_then(|uid| snapshot.bundle.entities.get(uid))
            .and_then(|e| e.to_json_value().ok()),
    };
    write_entity(&mut out, principal_json.as_ref());
    let _ = writeln!(
        out,
        "action:     {}",
        route.map_or_else(none, |r| r.action.to_string())
    );
    let resource = cedar.and_then(|r| r.resource().cloned());
    let _ = writeln!(
        out,
        "resource:   {}",
        resource
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(none)
    );
    match resource
        .as_ref()
        .and_then(|uid| snapshot.bundle.entities.get(uid))
    {
        Some(entity) => write_entity(&mut out, entity.to_json_value().ok().as_ref()),
        None if resource.is_some() => {
            let _ = writeln!(
                out,
                "  (not in the directory; placed by the route's parents, if any)"
            );
        }
        None => {}
    }
    let context = cedar
        .and_then(|r| r.context())
        .and_then(|c| c.to_json_value().ok());
    let _ = writeln!(
        out,
        "context:    {}",
        context.map(|c| c.to_string()).unwrap_or_else(none)
    );
    let decision = decided.map(|d| &d.decision);
    let _ = writeln!(
        out,
        "decision:   {}",
        match decision {
            Some(d) if d.allowed => "allow",
            Some(_) => "deny",
            None => "none (refused before authorization)",
        }
    );
    let _ = writeln!(
        out,
        "policies:   {}",
        match decision {
            Some(d) if !d.policies.is_empty() => d.policies.join(", "),
            Some(d) if !d.allowed => "none (no policy permits)".to_string(),
            _ => "none".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "errors:     {}",
        decision
            .filter(|d| !d.errors.is_empty())
            .map(|d| d.errors.join("; "))
            .unwrap_or_else(|| "none".to_string())
    );
    let _ = match &outcome.verdict {
        Verdict::Forward { decided, .. } if !decided.decision.allowed => {
            writeln!(out, "status:     200 (forwarded: audit mode)")
        }
        Verdict::Forward { .. } => writeln!(out, "status:     200 (forwarded)"),
        Verdict::Refuse { denial, .. } => writeln!(
            out,
            "status:     {} ({denial})",
            deny_response(denial, "explain", realm).status
        ),
    };
    out
}

/// A token-built entity's parents plus their ancestors in the directory (directory entities
/// already list all their ancestors).
fn with_ancestors(mut entity: Value, snapshot: &Snapshot) -> Value {
    let mut all: Vec<Value> = entity["parents"].as_array().cloned().unwrap_or_default();
    for parent in all.clone() {
        let uid = cedar_policy::EntityUid::from_json(parent).ok();
        let inherited = uid
            .and_then(|uid| snapshot.bundle.entities.get(&uid))
            .and_then(|e| e.to_json_value().ok());
        for ancestor in inherited
            .and_then(|e| e["parents"].as_array().cloned())
            .unwrap_or_default()
        {
            if !all.contains(&ancestor) {
                all.push(ancestor);
            }
        }
    }
    entity["parents"] = Value::Array(all);
    entity
}

/// `  ancestors: ...` (parents and theirs, as Cedar evaluates `in`) and `  attributes: ...` of
/// an entity in Cedar's JSON form.
fn write_entity(out: &mut String, entity: Option<&Value>) {
    let Some(entity) = entity else { return };
    let mut parents: Vec<String> = entity["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}::{}", p["type"].as_str().unwrap_or_default(), p["id"]))
        .collect();
    parents.sort();
    let _ = writeln!(
        out,
        "  ancestors:  {}",
        if parents.is_empty() {
            "none".to_string()
        } else {
            parents.join(", ")
        }
    );
    let _ = writeln!(out, "  attributes: {}", entity["attrs"]);
}
