//! External authorization: the decision pipeline as a service for a proxy beside the gateway
//! (nginx `auth_request`, ingress-nginx, Traefik ForwardAuth, Caddy `forward_auth`, Envoy's
//! ext_authz over HTTP and gRPC).
//!
//! A front end only translates (`fronts`, `envoy_grpc`): the proxy's description of the
//! original request in, the same `Incoming` the proxy front end builds, the same `evaluate`,
//! and the `Outcome` back out as the answer that proxy understands: the trusted identity headers
//! to put on the original request, or the refusal the gateway would have sent, with its JSON
//! body, request id and challenge. Every decision is logged and counted as the proxy's are,
//! with the front end named. Only peers in `trusted_peers` are answered with a decision.
//! One port serves HTTP/1.1 (the HTTP fronts) and h2c (Envoy's gRPC `Check`).

pub mod envoy_grpc;
pub mod fronts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tonic::codegen::Service;

use crate::config::{AuthzServerSettings, IdentityHeaders};
use crate::decision_log::DecisionLog;
use crate::http_server::{serve_h1_and_h2c, Peer, ResponseBody};
use crate::identity_headers::{
    insert_identity_headers, is_method_override, is_stripped, loosely_equal,
};
use crate::metrics::{RequestObservation, NO_ROUTE};
use crate::pipeline::{evaluate, Denial, Incoming, Outcome, Transport, Verdict};
use crate::proxy::RequestIds;
use crate::response::deny_response;
use crate::snapshot::Gateway;
use crate::telemetry::{decision_label, decision_record};
use crate::trust;
use fronts::{original_request, Front, OriginalRequest};

/// Serves decisions on `listener` until the task is dropped. Does nothing without an
/// `[authz_server]` section.
pub async fn serve_authz(listener: TcpListener, gateway: Arc<Gateway>, log: Arc<DecisionLog>) {
    let Some(settings) = gateway.settings.authz_server.clone() else {
        return;
    };
    let service = Arc::new(DecisionService {
        gateway,
        log,
        ids: RequestIds::new(),
        settings,
    });
    let grpc = AuthorizationServer::from_arc(service.clone());
    serve_h1_and_h2c(listener, move |request: Request<hyper::body::Incoming>| {
        let (service, mut grpc) = (service.clone(), grpc.clone());
        async move {
            if envoy_grpc::is_check(&request) {
                match grpc.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            } else {
                http_answer(&service, request)
                    .await
                    .map(tonic::body::Body::new)
            }
        }
    })
    .await;
}

/// What every front end of the listener shares.
pub struct DecisionService {
    gateway: Arc<Gateway>,
    log: Arc<DecisionLog>,
    ids: RequestIds,
    settings: AuthzServerSettings,
}

/// What to do with a header of the original request the gateway never lets through (see
/// `never_let_through`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum NeverLetThrough {
    /// The proxy can only replace the exact names it copies: refuse the request.
    Refuse,
    /// The proxy removes what the answer lists (Envoy's `headers_to_remove`).
    Remove,
}

impl DecisionService {
    /// The refusal of a peer outside `trusted_peers` (or of a connection without a peer).
    fn untrusted(&self, peer: Option<SocketAddr>) -> Option<Outcome> {
        let trusted = peer.is_some_and(|p| trust::is_trusted(p.ip(), &self.settings.trusted_peers));
        (!trusted).then(|| {
            let ip = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.ip());
            Outcome::refused(&self.gateway.snapshot(), Denial::UntrustedPeer(ip))
        })
    }

    /// The pipeline's outcome for the original request a trusted proxy described.
    async fn decide(
        &self,
        described: Result<OriginalRequest, String>,
        never_let_through_headers: NeverLetThrough,
    ) -> Outcome {
        let snapshot = self.gateway.snapshot();
        let original = match described {
            Ok(original) => original,
            Err(why) => return Outcome::refused(&snapshot, Denial::Undescribed(why)),
        };
        if never_let_through_headers == NeverLetThrough::Refuse {
            if let Some(name) =
                never_let_through(&original.headers, &self.gateway.settings.headers).next()
            {
                let why = format!(
                    "the request carries {name}, which the gateway does not let through \
                     and the proxy cannot remove"
                );
                return Outcome::refused(&snapshot, Denial::Undescribed(why));
            }
        }
        let incoming = Incoming {
            method: &original.method,
            target: &original.target,
            headers: &original.headers,
            host_required: true,
            authority: None,
            client_ip: original.client_ip,
            transport: Transport {
                secure: original.secure,
                sni: None,
            },
            cors: None,
        };
        evaluate(&self.gateway, &snapshot, &incoming).await
    }

    /// The identity headers of a permitted request, or the refusal. A permit whose identity
    /// cannot be passed on is turned into a refusal in `outcome` too (fail closed), so that the
    /// decision log records what the proxy was told.
    fn identity_headers(
        &self,
        outcome: &mut Outcome,
        request_id: &str,
    ) -> Result<HeaderMap, Denial> {
        let forward = match &outcome.verdict {
            Verdict::Forward { forward, .. } => forward,
            Verdict::Refuse { denial, .. } => return Err(denial.clone()),
        };
        let mut headers = HeaderMap::new();
        insert_identity_headers(
            &mut headers,
            &self.gateway.settings.headers,
            forward.token.as_deref(),
            request_id,
        )
        .map_err(|e| {
            let denial = Denial::Undescribed(e.to_string());
            outcome.revoke(denial.clone());
            denial
        })?;
        Ok(headers)
    }

    /// Counts the decision and writes its decision-log line.
    fn record(
        &self,
        front: &str,
        request_id: &str,
        method: &str,
        outcome: &Outcome,
        status: u16,
        started: Instant,
    ) {
        let duration = started.elapsed();
        self.gateway.metrics.observe_request(RequestObservation {
            route: outcome.route().map_or(NO_ROUTE, |r| &r.id),
            decision: decision_label(Some(outcome)),
            status,
            duration,
            authorization: outcome.decided().map(|d| d.authorization_time),
            upstream_error: None,
        });
        self.log.record(decision_record(
            front,
            request_id,
            Some(method),
            Some(outcome),
            status,
            None,
            None,
            duration,
        ));
    }
}

/// The names of the original request's headers the gateway never lets through: the principal,
/// roles or tenant header in any spelling frameworks fold together (`X_Portcullis_Roles`), the
/// request id header in such a spelling, method overrides (`X-HTTP-Method-Override`), which
/// would make the application run another method than the one decided, and framework-internal
/// and `[headers] strip` headers (`X-Middleware-Subrequest`).
fn never_let_through<'a>(
    headers: &'a HeaderMap,
    names: &'a IdentityHeaders,
) -> impl Iterator<Item = &'a HeaderName> {
    headers.keys().filter(|name| {
        [&names.principal, &names.roles, &names.tenant]
            .iter()
            .any(|identity| loosely_equal(name.as_str(), identity.as_str()))
            || (**name != names.request_id
                && loosely_equal(name.as_str(), names.request_id.as_str()))
            || is_method_override(name.as_str())
            || is_stripped(name.as_str(), &names.strip)
    })
}

/// Decides and answers one decision request of an HTTP front end.
async fn http_answer<B>(service: &DecisionService, request: Request<B>) -> Response<ResponseBody> {
    let started = Instant::now();
    // Always the gateway's own: a decision request carries the client's headers, and a client's
    // `X-Request-Id` would otherwise become the id the proxy passes upstream.
    let request_id = service.ids.next();
    let peer = request.extensions().get::<Peer>().map(|peer| peer.0);
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .as_bytes();
    let front = Front::of_target(target);
    let mut outcome = match (service.untrusted(peer), front, peer) {
        (Some(refused), _, _) => refused,
        (None, Some((front, envoy_target)), Some(peer)) => {
            let described = original_request(
                front,
                request.method().as_str(),
                envoy_target,
                request.headers(),
                peer.ip(),
                &service.settings.nginx,
            );
            service.decide(described, NeverLetThrough::Refuse).await
        }
        (None, _, _) => Outcome::refused(&service.gateway.snapshot(), Denial::NotFound),
    };
    let front = front.map(|(front, _)| front);
    let response = http_response(service, &mut outcome, front, &request_id);
    service.record(
        front.map_or("authz-server", Front::label),
        &request_id,
        request.method().as_str(),
        &outcome,
        response.status().as_u16(),
        started,
    );
    response
}

/// The answer to an HTTP front end: 200 and the identity headers for a permitted request, or
/// the gateway's refusal. nginx treats any status but 2xx, 401 and 403 from `auth_request` as an
/// error of its own (500), so other refusals are answered 403 to it; the refusal's own status
/// is in the body's `error`, the decision log and `X-Portcullis-Status`.
fn http_response(
    service: &DecisionService,
    outcome: &mut Outcome,
    front: Option<Front>,
    request_id: &str,
) -> Response<ResponseBody> {
    let denial = match service.identity_headers(outcome, request_id) {
        Ok(headers) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.headers_mut() = headers;
            return response;
        }
        Err(denial) => denial,
    };
    let settings = &service.gateway.settings;
    let refusal = deny_response(&denial, request_id, &settings.realm);
    let status = match refusal.status {
        401 | 403 => refusal.status,
        _ if matches!(front, Some(Front::Nginx | Front::IngressNginx)) => 403,
        other => other,
    };
    let mut response = Response::new(Full::new(Bytes::from(refusal.body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let headers = response.headers_mut();
    for (name, value) in refusal.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(settings.headers.request_id.clone(), value);
    }
    if status != refusal.status {
        headers.insert(
            HeaderName::from_static("x-portcullis-status"),
            HeaderValue::from(refusal.status),
        );
    }
    response
}
