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
use crate::authz::{decide, missing_scopes, BuiltPrincipal, Caller, Decision, RequestFacts};
use crate::canonical::{
    canonicalize, canonicalize_host, check_connection_nominations, HeadError, HostError,
    TargetError,
};
use crate::cors::{CorsHeaders, CorsPolicy, PreflightRefusal};
use crate::routes::Lookup;
use crate::snapshot::{AuthMode, EnforcementMode, Gateway, Snapshot};
use crate::upstream::Pool;

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
    /// HTTP/2's `:authority`, which stands for `Host` (RFC 9113 §8.3.1).
    pub authority: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    /// How the connection was made: TLS or not, and the SNI it named.
    pub transport: Transport<'a>,
    /// CORS, where this front end answers preflights (the proxy's; a proxy asking the
    /// external authorization listener handles CORS itself).
    pub cors: Option<&'a CorsPolicy>,
}

/// The connection a request came in on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport<'a> {
    /// Over TLS.
    pub secure: bool,
    /// The server name the TLS client hello asked for.
    pub sni: Option<&'a str>,
}

/// A permitted request.
#[derive(Debug, Clone)]
pub struct Forward {
    pub upstream: Arc<Pool>,
    /// Canonical path plus the query (without `_method` parameters).
    pub path_and_query: String,
    /// The caller's token, absent on anonymous routes.
    pub token: Option<Arc<VerifiedToken>>,
    /// The request asks for a protocol upgrade the route allows: `Upgrade` is passed on.
    pub upgrade: bool,
    /// Largest request body the route forwards.
    pub max_body_bytes: u64,
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
    #[error("{0}")]
    MalformedHead(HeadError),
    #[error("no route matches")]
    NotFound,
    #[error("method not allowed (allowed: {})", .0.join(", "))]
    MethodNotAllowed(Vec<String>),
    #[error("not authenticated: {0}")]
    Unauthenticated(AuthnError),
    #[error("forbidden by the policies")]
    Forbidden,
    /// Forbidden by policies that each require a scope the token does not have.
    #[error("the token lacks the scope {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
    #[error("the Host names {host:?}, but the TLS connection was made for {sni:?}")]
    Misdirected { host: String, sni: String },
    #[error("plaintext requests are redirected to HTTPS")]
    RedirectToHttps { location: String },
    /// A CORS preflight the gateway answers itself (204), with these headers.
    #[error("a CORS preflight, answered by the gateway")]
    Preflight(CorsHeaders),
    #[error("CORS preflight refused: {0}")]
    PreflightRefused(PreflightRefusal),
    #[error("the request body is larger than the {limit} bytes this route accepts")]
    BodyTooLarge { limit: u64 },
    #[error("the upstream failed: {0}")]
    Upstream(UpstreamFailure),
    /// External authorization: the peer asking is not one of the configured proxies.
    #[error("{0} is not a trusted peer of the external authorization listener")]
    UntrustedPeer(IpAddr),
    /// External authorization: the proxy's account of the original request is incomplete or
    /// malformed.
    #[error("the original request is not described: {0}")]
    Undescribed(String),
}

/// Why a permitted request got no upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamFailure {
    #[error("no healthy upstream address")]
    NoHealthyAddress,
    #[error("the upstream could not be reached")]
    Unreachable,
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("the upstream's response was broken")]
    BadResponse,
}

impl UpstreamFailure {
    /// The label used in metrics and the decision log.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::NoHealthyAddress => "no_healthy_address",
            UpstreamFailure::Unreachable => "unreachable",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::BadResponse => "bad_response",
        }
    }
}

/// What happened to a request, for the response and the decision log.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Result<Forward, Denial>,
    pub snapshot_version: u64,
    /// The version of the synced directory the snapshot holds, if any.
    pub directory_version: Option<Arc<str>>,
    pub route_id: Option<Arc<str>>,
    pub canonical_path: Option<String>,
    pub principal: Option<Arc<str>>,
    pub action: Option<Arc<str>>,
    /// The route's enforcement mode; with `Audit`, a denied request is forwarded anyway.
    pub mode: Option<EnforcementMode>,
    pub decision: Option<Arc<Decision>>,
    /// The resource the decision is about (`Type::"id"`).
    pub resource: Option<Arc<str>>,
    /// The Cedar request that was evaluated (for `portcullis explain`); absent when the
    /// decision came from the decision cache.
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
            directory_version: snapshot.directory.clone(),
            route_id: None,
            canonical_path: None,
            principal: None,
            action: None,
            mode: None,
            decision: None,
            resource: None,
            cedar_request: None,
            principal_entity: None,
            issuer: None,
            authorization_time: None,
        }
    }

    /// The outcome of a request refused before the pipeline ran (by a front end).
    pub fn refused(snapshot: &Snapshot, denial: Denial) -> Self {
        Outcome::new(snapshot).deny(denial)
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
    if let Some(authority) = incoming.authority {
        // HTTP/2: `:authority` is the host; a `Host` beside it must name the same one.
        let host = canonicalize_host(authority)?;
        for other in hosts {
            let other = other.to_str().map_err(|_| HostError::Invalid)?;
            if canonicalize_host(other)? != host {
                return Err(HostError::Duplicate);
            }
        }
        return Ok(Some(host));
    }
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
/// The method a CORS preflight asks about: an `OPTIONS` request with an `Origin` and an
/// `Access-Control-Request-Method` (the Fetch standard's definition).
fn preflight_method<'a>(incoming: &Incoming<'a>) -> Option<&'a str> {
    let headers = incoming.headers;
    (incoming.method == "OPTIONS" && headers.contains_key(http::header::ORIGIN))
        .then(|| headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|method| method.to_str().ok())
}

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
    if let Err(e) = check_connection_nominations(
        incoming
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    ) {
        return outcome.deny(Denial::MalformedHead(e));
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
    if let Some(denial) = transport_denial(settings, incoming.transport, host.as_deref(), &target) {
        return outcome.deny(denial);
    }

    let preflight = incoming.cors.zip(preflight_method(incoming));
    let method = preflight.map_or(incoming.method, |(_, method)| method);
    let (route, params) = match snapshot
        .routes
        .lookup(host.as_deref(), method, &target.segments)
    {
        Lookup::Matched { route, params } => (route, params),
        Lookup::MethodNotAllowed { allowed } => {
            return outcome.deny(Denial::MethodNotAllowed(allowed))
        }
        Lookup::NotFound => return outcome.deny(Denial::NotFound),
    };
    outcome.route_id = Some(route.id.clone());
    outcome.action = Some(route.action_name.clone());
    outcome.mode = Some(route.mode);
    if let Some((cors, method)) = preflight {
        let headers = &incoming.headers;
        return outcome.deny(
            match cors.preflight(
                headers.get(http::header::ORIGIN),
                method,
                headers.get(http::header::ACCESS_CONTROL_REQUEST_HEADERS),
            ) {
                Ok(answer) => Denial::Preflight(answer),
                Err(refusal) => Denial::PreflightRefused(refusal),
            },
        );
    }
    let declared_length = incoming
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > route.max_body_bytes) {
        return outcome.deny(Denial::BodyTooLarge {
            limit: route.max_body_bytes,
        });
    }

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
            outcome.principal = Some(token.forwarded.principal_label.clone());
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
            outcome.principal = Some(anonymous.to_string().into());
            Ok(Caller::Anonymous(anonymous))
        }
    };
    let decision = match caller {
        Ok(caller) => {
            let decided = decide(
                &snapshot.decisions,
                &snapshot.bundle,
                &route.id,
                &route.authz,
                caller,
                &facts,
            );
            outcome.resource = Some(decided.resource);
            outcome.cedar_request = decided.request;
            decided.decision
        }
        Err(e) => Arc::new(Decision::error(&e)),
    };
    outcome.authorization_time = Some(authorization_started.elapsed());
    if !decision.allowed && route.mode == EnforcementMode::Enforce {
        let denial = match missing_scopes(&snapshot.bundle, &decision) {
            Some(scopes) => Denial::InsufficientScope(scopes),
            None => Denial::Forbidden,
        };
        outcome.decision = Some(decision);
        return outcome.deny(denial);
    }
    outcome.decision = Some(decision);
    let upgrade = incoming
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|asked| {
            route
                .upgrades
                .iter()
                .any(|allowed| asked.trim().eq_ignore_ascii_case(allowed))
        });
    outcome.verdict = Ok(Forward {
        upstream: route.upstream.clone(),
        path_and_query: target.path_and_query(),
        token,
        upgrade,
        max_body_bytes: route.max_body_bytes,
    });
    outcome
}

/// What the connection alone decides: a plaintext request redirected to HTTPS, or a request
/// whose `Host` is not the name its TLS connection was made for (421, RFC 9110 §15.5.20: the
/// certificate, and any route chosen by host, belong to the SNI).
fn transport_denial(
    settings: &crate::config::Settings,
    transport: Transport<'_>,
    host: Option<&str>,
    target: &crate::canonical::CanonicalTarget,
) -> Option<Denial> {
    if !transport.secure {
        let tls = settings.tls.as_ref().filter(|tls| tls.redirect_plaintext)?;
        let port = match tls.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let host = host.unwrap_or("localhost");
        return Some(Denial::RedirectToHttps {
            location: format!("https://{host}{port}{}", target.path_and_query()),
        });
    }
    let (sni, host) = (transport.sni?, host?);
    let sni = canonicalize_host(sni).ok()?;
    (sni != host).then(|| Denial::Misdirected {
        host: host.to_string(),
        sni,
    })
}
