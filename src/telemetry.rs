//! Decision log records: one JSON object per request, never containing the token.

use std::time::{Duration, SystemTime};

use crate::authz::context::rfc3339_utc;
use crate::pipeline::{Denial, Outcome};

/// The decision label of an outcome: `allow`, `deny` (policy), `unauthenticated`, ...
pub fn decision_label(outcome: Option<&Outcome>) -> &'static str {
    match outcome.map(|o| &o.verdict) {
        None => "none",
        Some(Ok(_))
            if outcome
                .and_then(|o| o.decision.as_ref())
                .is_some_and(|d| !d.allowed) =>
        {
            "audit_deny"
        }
        Some(Ok(_)) => "allow",
        Some(Err(Denial::Forbidden | Denial::InsufficientScope(_))) => "deny",
        Some(Err(Denial::Unauthenticated(_))) => "unauthenticated",
        Some(Err(Denial::NotFound)) => "no_route",
        Some(Err(Denial::MethodNotAllowed(_))) => "method_not_allowed",
        Some(Err(
            Denial::BadTarget(_)
            | Denial::BadHost(_)
            | Denial::HeadersTooLarge
            | Denial::MalformedHead(_)
            | Denial::BodyTooLarge { .. },
        )) => "bad_request",
        Some(Err(Denial::Misdirected { .. })) => "misdirected",
        Some(Err(Denial::RedirectToHttps { .. })) => "redirect",
        Some(Err(Denial::Upstream(_))) => "upstream_error",
        Some(Err(Denial::UntrustedPeer(_))) => "untrusted_peer",
        Some(Err(Denial::Undescribed(_))) => "bad_request",
        Some(Err(Denial::Preflight(_))) => "preflight",
        Some(Err(Denial::PreflightRefused(_))) => "preflight_refused",
    }
}

/// The label of a failure after the decision, for metrics and the decision log.
pub fn failure_label(failure: &Denial) -> &'static str {
    match failure {
        Denial::Upstream(cause) => cause.as_str(),
        Denial::BodyTooLarge { .. } => "body_too_large",
        _ => "other",
    }
}

/// One decision record: a JSON object on one line. It names the caller (principal and issuer)
/// but never carries the token or its claims.
#[allow(clippy::too_many_arguments)]
pub fn decision_record(
    front: &str,
    request_id: &str,
    method: Option<&str>,
    outcome: Option<&Outcome>,
    status: u16,
    error: Option<String>,
    failure: Option<&Denial>,
    latency: Duration,
) -> String {
    let reason = outcome.and_then(|o| match &o.verdict {
        Err(Denial::Unauthenticated(e)) => Some(e.to_string()),
        Err(Denial::BadTarget(e)) => Some(e.to_string()),
        Err(Denial::BadHost(e)) => Some(e.to_string()),
        Err(
            denial @ (Denial::HeadersTooLarge
            | Denial::MalformedHead(_)
            | Denial::PreflightRefused(_)
            | Denial::InsufficientScope(_)
            | Denial::Misdirected { .. }
            | Denial::BodyTooLarge { .. }
            | Denial::UntrustedPeer(_)
            | Denial::Undescribed(_)),
        ) => Some(denial.to_string()),
        _ => None,
    });
    let upstream_failure = failure.map(failure_label);
    let decision = outcome.and_then(|o| o.decision.as_ref());
    let record = DecisionRecord {
        time: rfc3339_utc(SystemTime::now()),
        front,
        request_id,
        method,
        path: outcome.and_then(|o| o.canonical_path.as_deref()),
        route: outcome.and_then(|o| o.route_id.as_deref()),
        issuer: outcome.and_then(|o| o.issuer.as_deref()),
        principal: outcome.and_then(|o| o.principal.as_deref()),
        action: outcome.and_then(|o| o.action.as_deref()),
        resource: outcome.and_then(|o| o.resource.as_deref()),
        decision: decision_label(outcome),
        mode: outcome.and_then(|o| o.mode).map(|m| m.as_str()),
        reason,
        policies: decision.map_or(&[], |d| &d.policies),
        errors: decision.map_or(&[], |d| &d.errors),
        status,
        proxy_error: error,
        upstream_failure,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        snapshot: outcome.map(|o| o.snapshot_version),
        directory: outcome.and_then(|o| o.directory_version.as_deref()),
    };
    // Only strings, numbers and options of them: serialization cannot fail.
    serde_json::to_string(&record).unwrap_or_default()
}

/// One decision log line, serialized straight from borrowed fields (no intermediate JSON
/// tree: this runs for every request).
#[derive(serde::Serialize)]
struct DecisionRecord<'a> {
    time: String,
    /// Who asked: `proxy`, or the external authorization front end (`nginx`, `envoy-http`, ...).
    front: &'a str,
    request_id: &'a str,
    /// Absent when the request head could not be read.
    method: Option<&'a str>,
    path: Option<&'a str>,
    route: Option<&'a str>,
    issuer: Option<&'a str>,
    principal: Option<&'a str>,
    action: Option<&'a str>,
    resource: Option<&'a str>,
    decision: &'a str,
    mode: Option<&'a str>,
    reason: Option<String>,
    policies: &'a [String],
    errors: &'a [String],
    status: u16,
    proxy_error: Option<String>,
    /// Why a permitted request failed after the decision (`unreachable`, `timeout`, ...).
    upstream_failure: Option<&'static str>,
    latency_us: u64,
    snapshot: Option<u64>,
    /// The synced directory's version (`[directory]`), absent without directory sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    directory: Option<&'a str>,
}
