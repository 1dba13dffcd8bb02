//! pingora glue: each hook hands the request to the pipeline or applies its result.
//!
//! `request_filter` runs the whole decision and answers refusals itself; only a permitted
//! request has a `Forward` in its context, and `upstream_peer` fails without one, so nothing
//! reaches an upstream without a permit. Every failure after the decision (no healthy address,
//! connect failure, timeout, an oversized body) is answered by `fail_to_proxy` through the same
//! `response.rs` mapping as the refusals. `logging` runs for every request and writes the
//! decision log line.

mod client_deadlines;
mod connection;
mod forward;
mod request_id;
mod tls;
mod unserved;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session, Unserved};

use crate::decision_log::DecisionLog;
use crate::identity_headers::is_valid_request_id;
use crate::metrics::{InFlight, RequestObservation, NO_ROUTE};
use crate::pipeline::{evaluate, Denial, Forward, Incoming, Outcome, Transport, UpstreamFailure};
use crate::response::{deny_response, grpc_deny_response, is_grpc, refusal_status, DenyResponse};
use crate::snapshot::Gateway;
use crate::telemetry::{decision_label, decision_record, failure_label};
use crate::trust;
use crate::upstream::{HashKey, InFlightRequest, Selection};

pub use connection::{ConnectionLimits, Edge, GatewayApp};
pub use forward::never_forwarded;
pub use request_id::RequestIds;
pub use tls::{tls_settings, ConnectionTls};

/// How much of a refused HTTP/2 request's body is read so that its stream closes cleanly.
const MAX_DRAINED_BODY_BYTES: usize = 64 * 1024;

/// The proxy application.
pub struct Proxy {
    gateway: Arc<Gateway>,
    decision_log: Arc<DecisionLog>,
    request_ids: RequestIds,
}

impl Proxy {
    pub fn new(gateway: Arc<Gateway>, decision_log: Arc<DecisionLog>) -> Self {
        Proxy {
            gateway,
            decision_log,
            request_ids: RequestIds::new(),
        }
    }

    /// Writes a refusal (JSON, or gRPC-shaped for gRPC requests) with the request id.
    async fn write_refusal(
        &self,
        session: &mut Session,
        ctx: &RequestContext,
        denial: &Denial,
    ) -> Result<()> {
        let settings = &self.gateway.settings;
        let grpc = is_grpc(
            session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
        );
        let response: DenyResponse = if grpc {
            grpc_deny_response(denial, &ctx.request_id, &settings.realm)
        } else {
            deny_response(denial, &ctx.request_id, &settings.realm)
        };
        let mut header = self.refusal_header(&response, &ctx.request_id)?;
        if let (Some(cors), false) = (&settings.cors, matches!(denial, Denial::Preflight(_))) {
            // A script on an allowed origin reads the refusal, not a network error.
            let origin = session.req_header().headers.get(http::header::ORIGIN);
            for (name, value) in cors.response_headers(origin) {
                header.append_header(name, value)?;
            }
        }
        let is_head = session.req_header().method == http::Method::HEAD;
        if grpc || response.status == 204 {
            // A trailers-only gRPC response (the status is in the headers) or a preflight's
            // answer: no body follows, and a 204 has no Content-Length.
            return session.write_response_header(Box::new(header), true).await;
        }
        header.insert_header(http::header::CONTENT_LENGTH, response.body.len())?;
        session
            .write_response_header(Box::new(header), is_head)
            .await?;
        if !is_head {
            session
                .write_response_body(Some(Bytes::from(response.body)), true)
                .await?;
        }
        if session.is_http2() {
            self.drain_refused_body(session).await;
        }
        Ok(())
    }

    /// The response head of a refusal, with the request id.
    fn refusal_header(&self, response: &DenyResponse, request_id: &str) -> Result<ResponseHeader> {
        // Without pingora's header-case map: the names are the gateway's own, and pingora
        // writes them title-cased (standard ones) or in lower case, as Envoy does.
        let mut header =
            ResponseHeader::build_no_case(response.status, Some(response.headers.len() + 2))?;
        for (name, value) in &response.headers {
            header.insert_header(*name, value)?;
        }
        header.insert_header(self.gateway.settings.headers.request_id.clone(), request_id)?;
        Ok(header)
    }

    /// Reads what is left of a refused HTTP/2 request's body, a bounded amount for a bounded
    /// time. An h2 stream dropped while its client still sends can be reset before the
    /// refusal queued on it is flushed, and the client then sees a stream error instead of our
    /// answer; a stream read to its end closes cleanly. Past the bounds the reset is accepted.
    async fn drain_refused_body(&self, session: &mut Session) {
        let drain = async {
            let mut drained = 0usize;
            while drained <= MAX_DRAINED_BODY_BYTES {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => drained += chunk.len(),
                    Ok(None) | Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(self.gateway.settings.request_head_timeout, drain).await;
    }
}

/// Per-request state.
pub struct RequestContext {
    request_id: String,
    started: Instant,
    outcome: Option<Outcome>,
    /// The TCP peer.
    peer_ip: Option<std::net::IpAddr>,
    /// The client: the peer, or what a trusted proxy says it forwarded for.
    client_ip: Option<std::net::IpAddr>,
    /// The connection is TLS.
    secure: bool,
    /// The upstream address of the current attempt, and its in-flight count.
    upstream: Option<(SocketAddr, InFlightRequest)>,
    /// Attempts made so far (a retry after a connect failure adds one).
    attempts: u32,
    /// When the first upstream attempt began (the total timeout counts from here).
    upstream_started: Option<Instant>,
    /// Request body bytes seen so far.
    body_bytes: u64,
    /// Why the request failed after the decision, when it did.
    failure: Option<Denial>,
    _in_flight: InFlight,
}

impl RequestContext {
    /// The permit of this request; without one nothing may be forwarded.
    fn permit(&self) -> Result<&Forward> {
        self.outcome
            .as_ref()
            .and_then(Outcome::forward)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no permit for this request"))
    }
}

/// The refusal for an error that ended a permitted request.
fn classify_failure(error: &Error) -> Denial {
    use ErrorType::*;
    let failure = match error.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => UpstreamFailure::Timeout,
        ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
        | TLSHandshakeTimedout | InvalidCert | HandshakeError | ConnectProxyFailure
        | SocketError | BindError | AcceptError => UpstreamFailure::Unreachable,
        _ => UpstreamFailure::BadResponse,
    };
    Denial::Upstream(failure)
}

/// The consistent-hashing key of a request: the principal (the client's address for anonymous
/// requests), or a header's value.
fn hash_key(selection: &Selection, session: &Session, ctx: &RequestContext) -> Vec<u8> {
    let Ok(forward) = ctx.permit() else {
        return Vec::new();
    };
    match selection {
        Selection::ConsistentHash(HashKey::Principal) => forward
            .token
            .as_ref()
            .map(|t| t.identity.principal_id.as_bytes().to_vec())
            .or_else(|| ctx.client_ip.map(|ip| ip.to_string().into_bytes()))
            .unwrap_or_default(),
        Selection::ConsistentHash(HashKey::Header(name)) => session
            .req_header()
            .headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestContext;

    async fn refuse_unserved(&self, session: &mut ServerSession, unserved: Unserved<'_>) {
        let started = Instant::now();
        let _in_flight = self.gateway.metrics.request_started();
        let request_id = self.request_ids.next();
        let denial = unserved::denial(unserved);
        let response = deny_response(&denial, &request_id, &self.gateway.settings.realm);
        let status = response.status;
        let written = async {
            let mut header = self.refusal_header(&response, &request_id)?;
            let body = Bytes::from(response.body);
            header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
            // Closes the connection after the answer: what follows an unreadable head is
            // never read as a request.
            session.write_error_response(header, body).await
        };
        let error = written.await.err();
        let outcome = Outcome::refused(&self.gateway.snapshot(), denial);
        if let Some(e) = &error {
            log::debug!("cannot answer an unserved request: {e}");
        }
        let duration = started.elapsed();
        self.gateway.metrics.observe_request(RequestObservation {
            route: NO_ROUTE,
            decision: decision_label(Some(&outcome)),
            status,
            duration,
            authorization: None,
            upstream_error: None,
        });
        let method = matches!(unserved, Unserved::Connect).then_some("CONNECT");
        self.decision_log.record(decision_record(
            "proxy",
            &request_id,
            method,
            Some(&outcome),
            status,
            error.map(|e| e.to_string()),
            None,
            duration,
        ));
    }

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            request_id: self.request_ids.next(),
            started: Instant::now(),
            outcome: None,
            peer_ip: None,
            client_ip: None,
            secure: false,
            upstream: None,
            attempts: 0,
            upstream_started: None,
            body_bytes: 0,
            failure: None,
            _in_flight: self.gateway.metrics.request_started(),
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<bool> {
        connection::mark_head_received();
        let snapshot = self.gateway.snapshot();
        let settings = &self.gateway.settings;
        ctx.peer_ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        let peer_trusted = ctx
            .peer_ip
            .is_some_and(|peer| trust::is_trusted(peer, &settings.trusted_proxies));
        let request = session.req_header();
        // A trusted proxy's request id is kept, so one id follows the request end to end.
        if let Some(id) = peer_trusted
            .then(|| request.headers.get(&settings.headers.request_id))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_valid_request_id(id))
        {
            ctx.request_id = id.to_string();
        }
        let client_ip = ctx.peer_ip.map(|peer| {
            let forwarded_for: Vec<&str> = request
                .headers
                .get_all(forward::FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            trust::client_address(peer, &forwarded_for, &settings.trusted_proxies)
        });
        ctx.client_ip = client_ip;
        let connection_tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|ssl| ssl.extension.get::<ConnectionTls>());
        ctx.secure = connection_tls.is_some();
        let http2 = session.is_http2();
        let incoming = Incoming {
            method: request.method.as_str(),
            target: request.raw_path(),
            headers: &request.headers,
            host_required: http2 || request.version >= http::Version::HTTP_11,
            authority: if http2 {
                request.uri.authority().map(|a| a.as_str())
            } else {
                None
            },
            client_ip,
            transport: Transport {
                secure: ctx.secure,
                sni: connection_tls.flatten().and_then(|t| t.sni.as_deref()),
            },
            cors: settings.cors.as_ref(),
        };
        let outcome = evaluate(&self.gateway, &snapshot, &incoming).await;
        let denial = outcome.denial().cloned();
        ctx.outcome = Some(outcome);
        let Some(denial) = denial else {
            return Ok(false);
        };
        if session.is_upgrade_req() {
            // Whatever follows a refused upgrade's head must never be read as HTTP.
            session.set_keepalive(None);
        }
        self.write_refusal(session, ctx, &denial).await?;
        Ok(true)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        let Some(cors) = &self.gateway.settings.cors else {
            return Ok(());
        };
        // The gateway answers for CORS: the application's own CORS headers are replaced by
        // the configured ones (none for an origin that is not allowed).
        let theirs: Vec<http::HeaderName> = upstream_response
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in theirs {
            upstream_response.remove_header(&name);
        }
        let origin = session.req_header().headers.get(http::header::ORIGIN);
        for (name, value) in cors.response_headers(origin) {
            upstream_response.append_header(name, value)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let limit = ctx.permit()?.max_body_bytes;
        if session.was_upgraded() {
            // What flows through a tunnel is no request body.
            return Ok(());
        }
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > limit {
            ctx.failure = Some(Denial::BodyTooLarge { limit });
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Box<HttpPeer>> {
        let forward = ctx.permit()?;
        let (pool, upgrade) = (forward.upstream.clone(), forward.upgrade);
        let key = hash_key(&pool.spec.selection, session, ctx);
        let Some(address) = pool.select(&key) else {
            ctx.failure = Some(Denial::Upstream(UpstreamFailure::NoHealthyAddress));
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                format!("upstream {:?} has no healthy address", pool.name),
            );
        };
        ctx.attempts += 1;
        ctx.upstream_started.get_or_insert_with(Instant::now);
        ctx.upstream = Some((address, pool.begin_request(address)));
        Ok(Box::new(pool.peer(address, upgrade)))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Ok(forward) = ctx.permit() else {
            return e;
        };
        let pool = forward.upstream.clone();
        let upgrade = forward.upgrade;
        if let Some((address, _)) = ctx.upstream.take() {
            if pool.connect_failed(address) {
                log::warn!(
                    "upstream {:?}: {address} ejected for {:?} after {} connect failures",
                    pool.name,
                    pool.spec.ejection.map(|e| e.duration).unwrap_or_default(),
                    pool.spec
                        .ejection
                        .map(|e| e.after_failures)
                        .unwrap_or_default()
                );
            }
        }
        // Nothing reached the upstream yet; still, only idempotent requests are sent again.
        let retry = session.req_header().method.is_idempotent()
            && ctx.attempts <= pool.spec.retries
            && !upgrade;
        e.set_retry(retry);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        // Only a new connection says the address accepts connects.
        if let (false, Ok(forward), Some((address, _))) = (reused, ctx.permit(), &ctx.upstream) {
            forward.upstream.connect_succeeded(*address);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let forward = ctx.permit()?;
        forward::prepare_upstream_request(
            upstream_request,
            forward,
            &forward::Downstream {
                names: &self.gateway.settings.headers,
                request_id: &ctx.request_id,
                peer_ip: ctx.peer_ip,
                trusted_proxies: &self.gateway.settings.trusted_proxies,
                scheme: if ctx.secure { "https" } else { "http" },
            },
        )
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<Option<std::time::Duration>> {
        let forward = ctx.permit()?;
        let total = forward.upstream.spec.timeouts.total;
        let expired = !forward.upgrade
            && ctx
                .upstream_started
                .is_some_and(|started| started.elapsed() > total);
        if expired {
            return Error::e_explain(
                ErrorType::ReadTimedout,
                format!("upstream exchange exceeded the total timeout of {total:?}"),
            );
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let refused = ctx.outcome.as_ref().and_then(Outcome::denial).cloned();
        let denial = match (&ctx.failure, refused, e.esource()) {
            (Some(denial), _, _) => denial.clone(),
            // Answering a refusal failed: the refusal stands, never an upstream failure.
            (None, Some(refusal), _) => refusal,
            (None, None, ErrorSource::Downstream) => {
                // The client went away or sent a broken body: nobody to answer.
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            (None, None, _) => classify_failure(e),
        };
        if ctx.permit().is_ok() {
            ctx.failure = Some(denial.clone());
        }
        let status = refusal_status(&denial);
        if session.response_written().is_none() {
            if let Err(write_error) = self.write_refusal(session, ctx, &denial).await {
                log::debug!("cannot answer a failed request: {write_error}");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
        connection::mark_request_done();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let duration = ctx.started.elapsed();
        let outcome = ctx.outcome.as_ref();
        self.gateway.metrics.observe_request(RequestObservation {
            route: outcome.and_then(Outcome::route).map_or(NO_ROUTE, |r| &r.id),
            decision: decision_label(outcome),
            status,
            duration,
            authorization: outcome
                .and_then(Outcome::decided)
                .map(|d| d.authorization_time),
            upstream_error: (error.is_some() && ctx.permit().is_ok())
                .then(|| ctx.failure.as_ref().map_or("other", failure_label)),
        });
        self.decision_log.record(decision_record(
            "proxy",
            &ctx.request_id,
            Some(session.req_header().method.as_str()),
            outcome,
            status,
            error.map(|e| e.to_string()),
            ctx.failure.as_ref(),
            duration,
        ));
    }
}
