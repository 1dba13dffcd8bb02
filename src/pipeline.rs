//! The decision pipeline, free of any proxy framework:
//! canonicalize → route → authenticate → build Cedar request → authorize.
//!
//! `evaluate` returns either what to forward or why to refuse, plus everything the decision
//! log needs. Nothing is forwarded unless the authorize stage produced a permit, or the route is
//! in audit mode, where a policy deny is logged and the request forwarded anyway.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;

use crate::authn::{bearer_token, AuthnError, VerifiedToken};
use crate::authz::{authorize, BuiltPrincipal, Caller, Decision, RequestFacts};
use crate::canonical::{canonicalize, canonicalize_host, HostError, TargetError};
use crate::routes::Lookup;
use crate::snapshot::{AuthMode, EnforcementMode, Gateway, Snapshot, Upstream};

/// The parts of an incoming request the pipeline looks at.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub method: &'a str,
    /// The request target exactly as received.
    pub target: &'a [u8],
    /// All header fields, `Host` included.
    pub headers: &'a HeaderMap,
    /// HTTP/1.1 requests must carry a `Host` (RFC 9112 §3.2); HTTP/1.0 ones and offline
    /// evaluations need not.
    pub host_required: bool,
    pub client_ip: Option<IpAddr>,
}

/// A permitted request.
#[derive(Debug, Clone)]
pub struct Forward {
    pub upstream: Arc<Upstream>,
    /// Canonical path plus the query (without `_method` parameters).
    pub path_and_query: String,
    /// The caller's token, absent on anonymous routes.
    pub token: Option<Arc<VerifiedToken>>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denial {
    #[error("bad request target: {0}")]
    BadTarget(TargetError),
    #[error("bad Host: {0}")]
    BadHost(HostError),
    #[error("the request header fields are too large or too many")]
    HeadersTooLarge,
    #[error("no route matches")]
    NotFound,
    #[error("method not allowed (allowed: {})", .0.join(", "))]
    MethodNotAllowed(Vec<String>),
    #[error("not authenticated: {0}")]
    Unauthenticated(AuthnError),
    #[error("forbidden by the policies")]
    Forbidden,
}

/// What happened to a request, for the response and the decision log.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Result<Forward, Denial>,
    pub snapshot_version: u64,
    pub route_id: Option<String>,
    pub canonical_path: Option<String>,
    pub principal: Option<String>,
    pub action: Option<String>,
    /// The route's enforcement mode; with `Audit`, a denied request is forwarded anyway.
    pub mode: Option<EnforcementMode>,
    pub decision: Option<Decision>,
    /// The Cedar request that was evaluated (for `portcullis explain`).
    pub cedar_request: Option<cedar_policy::Request>,
    /// The principal entity it was evaluated with, when built from a token.
    pub principal_entity: Option<BuiltPrincipal>,
    /// `iss` of the verified token.
    pub issuer: Option<String>,
    /// Time spent building the Cedar request and evaluating the policies.
    pub authorization_time: Option<Duration>,
}

impl Outcome {
    fn new(snapshot: &Snapshot) -> Self {
        Outcome {
            verdict: Err(Denial::NotFound),
            snapshot_version: snapshot.version,
            route_id: None,
            canonical_path: None,
            principal: None,
            action: None,
            mode: None,
            decision: None,
            cedar_request: None,
            principal_entity: None,
            issuer: None,
            authorization_time: None,
        }
    }

    fn deny(mut self, denial: Denial) -> Self {
        self.verdict = Err(denial);
        self
    }
}

/// The canonical host of the request. Two `Host` headers are refused: the gateway and the
/// application could route by different ones.
fn request_host(incoming: &Incoming<'_>) -> Result<Option<String>, HostError> {
    let mut hosts = incoming.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(HostError::Duplicate),
        (None, _) if incoming.host_required => Err(HostError::Missing),
        (None, _) => Ok(None),
        (Some(host), None) => {
            let host = host.to_str().map_err(|_| HostError::Invalid)?;
            canonicalize_host(host).map(Some)
        }
    }
}

/// Runs the whole decision for one request against one snapshot.
pub async fn evaluate(gateway: &Gateway, snapshot: &Snapshot, incoming: &Incoming<'_>) -> Outcome {
    let mut outcome = Outcome::new(snapshot);
    let settings = &gateway.settings;
    let header_bytes: usize = incoming
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > settings.max_header_bytes
        || incoming.headers.len() > settings.max_header_count
    {
        return outcome.deny(Denial::HeadersTooLarge);
    }
    let host = match request_host(incoming) {
        Ok(host) => host,
        Err(e) => return outcome.deny(Denial::BadHost(e)),
    };
    let target = match canonicalize(incoming.target) {
        Ok(target) => target,
        Err(e) => return outcome.deny(Denial::BadTarget(e)),
    };
    outcome.canonical_path = Some(target.path.clone());

    let (route, params) =
        match snapshot
            .routes
            .lookup(host.as_deref(), incoming.method, &target.segments)
        {
            Lookup::Matched { route, params } => (route, params),
            Lookup::MethodNotAllowed { allowed } => {
                return outcome.deny(Denial::MethodNotAllowed(allowed))
            }
            Lookup::NotFound => return outcome.deny(Denial::NotFound),
        };
    outcome.route_id = Some(route.id.clone());
    outcome.action = Some(route.authz.action.to_string());
    outcome.mode = Some(route.mode);

    let token = match route.auth {
        AuthMode::Anonymous => None,
        AuthMode::Required => {
            let authorization: Vec<&[u8]> = incoming
                .headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            let authenticated = match bearer_token(&authorization) {
                Ok(token) => gateway.authenticator.authenticate(token).await,
                Err(e) => Err(e),
            };
            match authenticated {
                Ok(token) => Some(token),
                Err(e) => return outcome.deny(Denial::Unauthenticated(e)),
            }
        }
    };
    let facts = RequestFacts {
        method: incoming.method,
        path: &target.path,
        params: &params,
        client_ip: incoming.client_ip,
        scopes: token.as_ref().map_or(&[], |t| &t.identity.scopes),
        query: target.query.as_deref(),
        headers: incoming.headers,
        time: SystemTime::now(),
    };
    let authorization_started = Instant::now();
    let principal = match &token {
        Some(token) => {
            let identity = &token.identity;
            outcome.issuer = Some(identity.issuer.clone());
            outcome.principal = Some(format!(
                "{}::{:?}",
                identity.principal_type, identity.principal_id
            ));
            // Built once per identity and snapshot: cached tokens carry their principal, and
            // the snapshot remembers it for other tokens of the same identity.
            let principal = match token.principal_for(snapshot.version) {
                Some(built) => Ok(built),
                None => snapshot
                    .principals
                    .principal(snapshot.version, &snapshot.bundle, identity)
                    .map(|built| token.remember_principal(built)),
            };
            outcome.principal_entity = principal.as_ref().ok().cloned();
            Some(principal)
        }
        None => None,
    };
    let anonymous = &gateway.settings.anonymous_principal;
    let caller = match &principal {
        Some(Ok(built)) => Ok(Caller::Authenticated(&built.1)),
        Some(Err(e)) => Err(e.clone()),
        None => {
            outcome.principal = Some(anonymous.to_string());
            Ok(Caller::Anonymous(anonymous))
        }
    };
    let built = caller.and_then(|caller| route.authz.build(&snapshot.bundle, caller, &facts));
    let decision = match built {
        Ok((request, entities)) => {
            let decision = authorize(&snapshot.bundle, &request, &entities);
            outcome.cedar_request = Some(request);
            decision
        }
        Err(e) => Decision::error(&e),
    };
    outcome.authorization_time = Some(authorization_started.elapsed());
    let allowed = decision.allowed;
    outcome.decision = Some(decision);
    if !allowed && route.mode == EnforcementMode::Enforce {
        return outcome.deny(Denial::Forbidden);
    }
    outcome.verdict = Ok(Forward {
        upstream: route.upstream.clone(),
        path_and_query: target.path_and_query(),
        token,
    });
    outcome
}
