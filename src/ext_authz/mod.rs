//! External authorization: the decision pipeline as a service for a proxy beside the gateway
//! (nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`, Envoy's HTTP ext_authz).
//!
//! A front end only translates (`fronts`): the proxy's description of the original request
//! in, the same `Incoming` the proxy front end builds, the same `evaluate`, and the `Outcome`
//! back out as the answer that proxy understands: 200 with the trusted identity headers to
//! copy onto the original request, or the refusal the gateway would have sent, with its JSON
//! body, request id and challenge. Every decision is logged and counted as the proxy's are,
//! with the front end named. Only peers in `trusted_peers` are answered with a decision.

pub mod fronts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::config::{AuthzServerSettings, IdentityHeaders};
use crate::decision_log::DecisionLog;
use crate::http_server::{serve, Peer, ResponseBody};
use crate::identity_headers::{insert_identity_headers, loosely_equal};
use crate::metrics::RequestObservation;
use crate::pipeline::{evaluate, Denial, Incoming, Outcome, Transport};
use crate::proxy::RequestIds;
use crate::response::deny_response;
use crate::snapshot::Gateway;
use crate::telemetry::{decision_label, decision_record};
use crate::trust;
use fronts::{original_request, Front};

/// The metrics' route label of a decision request that matched no route.
const NO_ROUTE: &str = "-";

/// Serves decisions on `listener` until the task is dropped. Does nothing without an
/// `[authz_server]` section.
pub async fn serve_authz(listener: TcpListener, gateway: Arc<Gateway>, log: Arc<DecisionLog>) {
    let Some(settings) = gateway.settings.authz_server.clone() else {
        return;
    };
    let ids = Arc::new(RequestIds::new());
    let settings = Arc::new(settings);
    serve(listener, move |request: Request<hyper::body::Incoming>| {
        let (gateway, log, ids, settings) =
            (gateway.clone(), log.clone(), ids.clone(), settings.clone());
        async move { answer(&gateway, &log, &ids, &settings, request).await }
    })
    .await;
}

/// Decides one decision request, logs and counts it, and answers it.
async fn answer<B>(
    gateway: &Gateway,
    log: &DecisionLog,
    ids: &RequestIds,
    settings: &AuthzServerSettings,
    request: Request<B>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let peer = request.extensions().get::<Peer>().map(|peer| peer.0);
    let trusted = peer.is_some_and(|peer| trust::is_trusted(peer.ip(), &settings.trusted_peers));
    // Always the gateway's own: a decision request carries the client's headers, and a client's
    // `X-Request-Id` would otherwise become the id the proxy passes upstream.
    let request_id = ids.next();
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .as_bytes();
    let front = Front::of_target(target);
    let mut outcome = match (peer, front) {
        (Some(peer), Some((front, envoy_target))) if trusted => {
            decide(gateway, settings, &request, peer, front, envoy_target).await
        }
        (Some(peer), _) if !trusted => {
            Outcome::refused(&gateway.snapshot(), Denial::UntrustedPeer(peer.ip()))
        }
        _ => Outcome::refused(&gateway.snapshot(), Denial::NotFound),
    };
    let front = front.map(|(front, _)| front);
    let response = respond(gateway, &mut outcome, front, &request_id);
    let front = front.map_or("authz-server", Front::label);
    let status = response.status().as_u16();
    let duration = started.elapsed();
    gateway.metrics.observe_request(RequestObservation {
        route: outcome.route_id.as_deref().unwrap_or(NO_ROUTE),
        decision: decision_label(Some(&outcome)),
        status,
        duration,
        authorization: outcome.authorization_time,
        upstream_error: None,
    });
    log.record(decision_record(
        front,
        &request_id,
        request.method().as_str(),
        Some(&outcome),
        status,
        None,
        None,
        duration,
    ));
    response
}

/// The pipeline's outcome for the original request `front` describes.
async fn decide<B>(
    gateway: &Gateway,
    settings: &AuthzServerSettings,
    request: &Request<B>,
    peer: SocketAddr,
    front: Front,
    envoy_target: &[u8],
) -> Outcome {
    let snapshot = gateway.snapshot();
    let original = match original_request(
        front,
        request.method().as_str(),
        envoy_target,
        request.headers(),
        peer.ip(),
        &settings.nginx,
    ) {
        Ok(original) => original,
        Err(why) => return Outcome::refused(&snapshot, Denial::Undescribed(why)),
    };
    if let Some(spoofed) = spoofed_identity(&original.headers, &gateway.settings.headers) {
        return Outcome::refused(&snapshot, Denial::Undescribed(spoofed));
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
    };
    evaluate(gateway, &snapshot, &incoming).await
}

/// A header of the original request that claims an identity the gateway asserts, which the
/// asking proxy may pass upstream beside the one it copies from the answer: the principal,
/// roles or tenant header in any spelling frameworks fold together (`X_Portcullis_Roles`),
/// or the request id header in such a spelling. The proxy replaces only the exact names it
/// copies, so such a request is refused rather than forwarded with both.
fn spoofed_identity(headers: &HeaderMap, names: &IdentityHeaders) -> Option<String> {
    headers.keys().find_map(|name| {
        let claims_identity = [&names.principal, &names.roles, &names.tenant]
            .iter()
            .any(|identity| loosely_equal(name.as_str(), identity.as_str()))
            || (name != names.request_id
                && loosely_equal(name.as_str(), names.request_id.as_str()));
        claims_identity
            .then(|| format!("the request carries {name}, which only the gateway may set"))
    })
}

/// The answer to the proxy: 200 and the identity headers for a permitted request, or the
/// gateway's refusal. nginx treats any status but 2xx, 401 and 403 from `auth_request` as an
/// error of its own (500), so other refusals are answered 403 to it; the refusal's own status
/// is in the body's `error`, the decision log and `X-Portcullis-Status`.
/// A permit whose identity cannot be passed on becomes a refusal in `outcome` too, so that the
/// decision log records what the proxy was told.
fn respond(
    gateway: &Gateway,
    outcome: &mut Outcome,
    front: Option<Front>,
    request_id: &str,
) -> Response<ResponseBody> {
    let settings = &gateway.settings;
    let denial = match &outcome.verdict {
        Ok(forward) => {
            let mut headers = HeaderMap::new();
            match insert_identity_headers(
                &mut headers,
                &settings.headers,
                forward.token.as_deref(),
                request_id,
            ) {
                Ok(()) => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.headers_mut() = headers;
                    return response;
                }
                // Fail closed: a permit whose identity cannot be passed on is not an allow.
                Err(e) => {
                    let denial = Denial::Undescribed(e.to_string());
                    outcome.verdict = Err(denial.clone());
                    denial
                }
            }
        }
        Err(denial) => denial.clone(),
    };
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
