//! The decision pipeline, free of any proxy framework:
//! canonicalize → route → authenticate → build Cedar request → authorize.
//!
//! `evaluate` returns either what to forward or why to refuse, plus everything the decision
//! log needs. Nothing is forwarded unless the authorize stage produced a permit, or the route is
//! in audit mode, where a policy deny is logged and the request forwarded anyway.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderMap;

use crate::authn::{bearer_token, AuthnError, VerifiedToken};
use crate::authz::{decide, missing_scopes, Caller, Decision, PolicyBundle, RequestFacts};
use crate::canonical::{
    canonicalize, canonicalize_host, check_connection_nominations, CanonicalTarget, HeadError,
    HostError, TargetError,
};
use crate::config::Settings;
use crate::cors::{CorsHeaders, CorsPolicy, PreflightRefusal};
use crate::model::CompiledRoute;
use crate::routes::Lookup;
use crate::snapshot::{AuthMode, EnforcementMode, Gateway, Snapshot};
use crate::upstream::Pool;

mod outcome;

pub use outcome::{CallerFacts, Decided, Evaluated, Outcome, Reached, RouteTaken, Verdict};

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

/// A refusal inside the pipeline, with how far the request got.
struct Refused {
    denial: Denial,
    reached: Option<Reached>,
}

impl From<Denial> for Refused {
    fn from(denial: Denial) -> Self {
        Refused {
            denial,
            reached: None,
        }
    }
}

impl Refused {
    fn at_path(denial: Denial, path: &str) -> Refused {
        Refused {
            denial,
            reached: Some(Reached::Path(path.to_string())),
        }
    }

    fn at_route(denial: Denial, path: &str, route: &RouteTaken) -> Refused {
        Refused {
            denial,
            reached: Some(Reached::Route {
                path: path.to_string(),
                route: route.clone(),
            }),
        }
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

/// The method a CORS preflight asks about: an `OPTIONS` request with an `Origin` and an
/// `Access-Control-Request-Method` (the Fetch standard's definition).
fn preflight_method<'a>(incoming: &Incoming<'a>) -> Option<&'a str> {
    let headers = incoming.headers;
    (incoming.method == "OPTIONS" && headers.contains_key(http::header::ORIGIN))
        .then(|| headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|method| method.to_str().ok())
}

/// Runs the whole decision for one request against one snapshot.
pub async fn evaluate(gateway: &Gateway, snapshot: &Snapshot, incoming: &Incoming<'_>) -> Outcome {
    let verdict = match run_stages(gateway, snapshot, incoming).await {
        Ok((forward, decided)) => Verdict::Forward { forward, decided },
        Err(Refused { denial, reached }) => Verdict::Refuse { denial, reached },
    };
    Outcome {
        snapshot_version: snapshot.version,
        directory_version: snapshot.directory.clone(),
        verdict,
    }
}

/// The stages in order. Each refuses with `?`, and the refusal carries how far the request
/// got.
async fn run_stages(
    gateway: &Gateway,
    snapshot: &Snapshot,
    incoming: &Incoming<'_>,
) -> Result<(Forward, Decided), Refused> {
    let settings = &gateway.settings;
    check_head_size(settings, incoming.headers)?;
    check_connection_nominations(
        incoming
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    )
    .map_err(Denial::MalformedHead)?;
    let host = request_host(incoming).map_err(Denial::BadHost)?;
    let target = canonicalize(incoming.target).map_err(Denial::BadTarget)?;
    check_transport(settings, incoming.transport, host.as_deref(), &target)
        .map_err(|denial| Refused::at_path(denial, &target.path))?;

    let preflight = incoming.cors.zip(preflight_method(incoming));
    let method = preflight.map_or(incoming.method, |(_, method)| method);
    let (route, params) = match snapshot
        .routes
        .lookup(host.as_deref(), method, &target.segments)
    {
        Lookup::Matched { route, params } => (route, params),
        Lookup::MethodNotAllowed { allowed } => {
            let denial = Denial::MethodNotAllowed(allowed);
            return Err(Refused::at_path(denial, &target.path));
        }
        Lookup::NotFound => return Err(Refused::at_path(Denial::NotFound, &target.path)),
    };
    let taken = RouteTaken {
        id: route.id.clone(),
        action: route.action_name.clone(),
        mode: route.mode,
    };
    let refuse_at_route = |denial| Refused::at_route(denial, &target.path, &taken);
    if let Some((cors, method)) = preflight {
        return Err(refuse_at_route(answer_preflight(cors, method, incoming)));
    }
    check_body_length(route, incoming.headers).map_err(refuse_at_route)?;
    let token = authenticate(gateway, route, incoming)
        .await
        .map_err(refuse_at_route)?;
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
    let decided = authorize(
        gateway,
        snapshot,
        route,
        token.as_deref(),
        &facts,
        target.path.clone(),
        taken,
    );
    if let Err(denial) = enforce(&snapshot.bundle, route.mode, &decided.decision) {
        return Err(Refused {
            denial,
            reached: Some(Reached::Decided(Box::new(decided))),
        });
    }
    let forward = Forward {
        upstream: route.upstream.clone(),
        path_and_query: target.path_and_query(),
        token,
        upgrade: upgrade_allowed(route, incoming.headers),
        max_body_bytes: route.max_body_bytes,
    };
    Ok((forward, decided))
}

/// The head's size limits (`max_header_bytes`, `max_header_count`).
fn check_head_size(settings: &Settings, headers: &HeaderMap) -> Result<(), Denial> {
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > settings.max_header_bytes || headers.len() > settings.max_header_count {
        return Err(Denial::HeadersTooLarge);
    }
    Ok(())
}

/// The gateway's own answer to a CORS preflight: 204 with the allowed headers, or a refusal.
fn answer_preflight(cors: &CorsPolicy, method: &str, incoming: &Incoming<'_>) -> Denial {
    let headers = incoming.headers;
    match cors.preflight(
        headers.get(http::header::ORIGIN),
        method,
        headers.get(http::header::ACCESS_CONTROL_REQUEST_HEADERS),
    ) {
        Ok(answer) => Denial::Preflight(answer),
        Err(refusal) => Denial::PreflightRefused(refusal),
    }
}

/// A declared `Content-Length` over the route's limit is refused before authentication.
fn check_body_length(route: &CompiledRoute, headers: &HeaderMap) -> Result<(), Denial> {
    let declared_length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > route.max_body_bytes) {
        return Err(Denial::BodyTooLarge {
            limit: route.max_body_bytes,
        });
    }
    Ok(())
}

/// The verified token of a route that requires one; `None` on anonymous routes.
async fn authenticate(
    gateway: &Gateway,
    route: &CompiledRoute,
    incoming: &Incoming<'_>,
) -> Result<Option<Arc<VerifiedToken>>, Denial> {
    match route.auth {
        AuthMode::Anonymous => Ok(None),
        AuthMode::Required => {
            let authorization: Vec<&[u8]> = incoming
                .headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            let token = bearer_token(&authorization).map_err(Denial::Unauthenticated)?;
            let verified = gateway.authenticator.authenticate(token).await;
            verified.map(Some).map_err(Denial::Unauthenticated)
        }
    }
}

/// Builds the principal (once per identity and snapshot) and asks the policies.
fn authorize(
    gateway: &Gateway,
    snapshot: &Snapshot,
    route: &CompiledRoute,
    token: Option<&VerifiedToken>,
    facts: &RequestFacts<'_>,
    path: String,
    route_taken: RouteTaken,
) -> Decided {
    let started = Instant::now();
    let (caller, principal) = match token {
        Some(token) => {
            let identity = &token.identity;
            // The snapshot remembers principals by identity: other tokens of the same caller
            // (and later requests with this one) find it there.
            let principal = snapshot.principals.principal(
                snapshot.version,
                &snapshot.bundle,
                identity,
                &token.principal_key,
            );
            let caller = CallerFacts::Token {
                issuer: identity.issuer.clone(),
                principal: token.forwarded.principal_label.clone(),
            };
            (caller, Some(principal))
        }
        None => {
            let anonymous = &gateway.settings.anonymous_principal;
            let caller = CallerFacts::Anonymous {
                principal: anonymous.to_string().into(),
            };
            (caller, None)
        }
    };
    let (decision, evaluated) = match principal {
        Some(Err(e)) => (Arc::new(Decision::error(&e)), None),
        principal => {
            let principal = principal.and_then(Result::ok);
            let asking = match &principal {
                Some(built) => Caller::Authenticated(&built.1),
                None => Caller::Anonymous(&gateway.settings.anonymous_principal),
            };
            let decided = decide(
                &snapshot.decisions,
                &snapshot.bundle,
                &route.id,
                &route.authz,
                asking,
                facts,
            );
            let evaluated = Evaluated {
                resource: decided.resource,
                principal_entity: principal,
                cedar_request: decided.request.map(Box::new),
            };
            (decided.decision, Some(evaluated))
        }
    };
    Decided {
        path,
        route: route_taken,
        caller,
        decision,
        evaluated,
        authorization_time: started.elapsed(),
    }
}

/// A deny refuses the request unless the route is in audit mode. A deny decided only by
/// forbids that require scopes the token lacks is `insufficient_scope` (RFC 6750 §3.1).
fn enforce(
    bundle: &PolicyBundle,
    mode: EnforcementMode,
    decision: &Decision,
) -> Result<(), Denial> {
    if decision.allowed || mode == EnforcementMode::Audit {
        return Ok(());
    }
    Err(match missing_scopes(bundle, decision) {
        Some(scopes) => Denial::InsufficientScope(scopes),
        None => Denial::Forbidden,
    })
}

/// The request asks for a protocol upgrade the route allows.
fn upgrade_allowed(route: &CompiledRoute, headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|asked| {
            route
                .upgrades
                .iter()
                .any(|allowed| asked.trim().eq_ignore_ascii_case(allowed))
        })
}

/// What the connection alone decides: a plaintext request redirected to HTTPS, or a request
/// whose `Host` is not the name its TLS connection was made for (421, RFC 9110 §15.5.20: the
/// certificate, and any route chosen by host, belong to the SNI).
fn check_transport(
    settings: &Settings,
    transport: Transport<'_>,
    host: Option<&str>,
    target: &CanonicalTarget,
) -> Result<(), Denial> {
    if !transport.secure {
        let Some(tls) = settings.tls.as_ref().filter(|tls| tls.redirect_plaintext) else {
            return Ok(());
        };
        let port = match tls.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let host = host.unwrap_or("localhost");
        return Err(Denial::RedirectToHttps {
            location: format!("https://{host}{port}{}", target.path_and_query()),
        });
    }
    let (Some(sni), Some(host)) = (transport.sni, host) else {
        return Ok(());
    };
    match canonicalize_host(sni) {
        Ok(sni) if sni != host => Err(Denial::Misdirected {
            host: host.to_string(),
            sni,
        }),
        _ => Ok(()),
    }
}
