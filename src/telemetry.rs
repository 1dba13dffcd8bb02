//! Decision log records: one JSON object per request, never containing the token.

use std::time::{Duration, SystemTime};

use crate::authz::context::rfc3339_utc;
use crate::pipeline::{Decided, Denial, Outcome, Verdict};

/// The decision label of an outcome: `allow`, `deny` (policy), `unauthenticated`, ...
pub fn decision_label(outcome: Option<&Outcome>) -> &'static str {
    let Some(outcome) = outcome else {
        return "none";
    };
    match &outcome.verdict {
        Verdict::Forward { decided, .. } if !decided.decision.allowed => "audit_deny",
        Verdict::Forward { .. } => "allow",
        Verdict::Refuse { denial, .. } => denial_label(denial),
    }
}

fn denial_label(denial: &Denial) -> &'static str {
    match denial {
        Denial::Forbidden | Denial::InsufficientScope(_) => "deny",
        Denial::Unauthenticated(_) => "unauthenticated",
        Denial::NotFound => "no_route",
        Denial::MethodNotAllowed(_) => "method_not_allowed",
        Denial::BadTarget(_)
        | Denial::BadHost(_)
        | Denial::HeadersTooLarge
        | Denial::MalformedHead(_)
        | Denial::BodyTooLarge { .. }
        | Denial::Undescribed(_) => "bad_request",
        Denial::Misdirected { .. } => "misdirected",
        Denial::RedirectToHttps { .. } => "redirect",
        Denial::Upstream(_) => "upstream_error",
        Denial::UntrustedPeer(_) => "untrusted_peer",
        Denial::Preflight(_) => "preflight",
        Denial::PreflightRefused(_) => "preflight_refused",
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
    let reason = outcome
        .and_then(Outcome::denial)
        .and_then(|denial| match denial {
            Denial::Unauthenticated(e) => Some(e.to_string()),
            Denial::BadTarget(e) => Some(e.to_string()),
            Denial::BadHost(e) => Some(e.to_string()),
            Denial::HeadersTooLarge
            | Denial::MalformedHead(_)
            | Denial::PreflightRefused(_)
            | Denial::InsufficientScope(_)
            | Denial::Misdirected { .. }
            | Denial::BodyTooLarge { .. }
            | Denial::UntrustedPeer(_)
            | Denial::Undescribed(_) => Some(denial.to_string()),
            _ => None,
        });
    let upstream_failure = failure.map(failure_label);
    let decided = outcome.and_then(Outcome::decided);
    let decision = decided.map(|d| &d.decision);
    let route = outcome.and_then(Outcome::route);
    let record = DecisionRecord {
        time: rfc3339_utc(SystemTime::now()),
        front,
        request_id,
        method,
        path: outcome.and_then(Outcome::path),
        route: route.map(|r| &*r.id),
        issuer: decided.and_then(Decided::issuer),
        principal: decided.map(|d| &**d.principal()),
        action: route.map(|r| &*r.action),
        resource: decided
            .and_then(|d| d.evaluated.as_ref())
            .map(|e| &*e.resource),
        decision: decision_label(outcome),
        mode: route.map(|r| r.mode.as_str()),
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
