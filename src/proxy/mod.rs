//! pingora glue: each hook hands the request to the pipeline or applies its result.
//!
//! `request_filter` runs the whole decision and answers refusals itself; only a permitted
//! request has a `Forward` in its context, and `upstream_peer` fails without one, so nothing
//! reaches an upstream without a permit. `logging` runs for every request and writes the
//! decision log line.

mod connection;
mod forward;
mod request_id;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::decision_log::DecisionLog;
use crate::metrics::{InFlight, RequestObservation, NO_ROUTE};
use crate::pipeline::{evaluate, Forward, Incoming, Outcome};
use crate::response::deny_response;
use crate::snapshot::Gateway;
use crate::telemetry::{decision_label, decision_record};
use crate::trust;

pub use connection::{ConnectionLimits, GatewayApp};
pub use request_id::RequestIds;

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
}

/// Per-request state.
pub struct RequestContext {
    request_id: String,
    started: Instant,
    outcome: Option<Outcome>,
    /// The TCP peer.
    peer_ip: Option<std::net::IpAddr>,
    _in_flight: InFlight,
}

impl RequestContext {
    /// The permit of this request; without one nothing may be forwarded.
    fn permit(&self) -> Result<&Forward> {
        self.outcome
            .as_ref()
            .and_then(|o| o.verdict.as_ref().ok())
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no permit for this request"))
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            request_id: self.request_ids.next(),
            started: Instant::now(),
            outcome: None,
            peer_ip: None,
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
        ctx.peer_ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        let request = session.req_header();
        let trusted = &self.gateway.settings.trusted_proxies;
        let client_ip = ctx.peer_ip.map(|peer| {
            let forwarded_for: Vec<&str> = request
                .headers
                .get_all(forward::FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            trust::client_address(peer, &forwarded_for, trusted)
        });
        let incoming = Incoming {
            method: request.method.as_str(),
            target: request.raw_path(),
            headers: &request.headers,
            host_required: request.version >= http::Version::HTTP_11,
            client_ip,
        };
        let outcome = evaluate(&self.gateway, &snapshot, &incoming).await;
        let denial = outcome.verdict.as_ref().err().cloned();
        ctx.outcome = Some(outcome);
        let Some(denial) = denial else {
            return Ok(false);
        };
        let response = deny_response(&denial, &ctx.request_id, &self.gateway.settings.realm);
        let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 2))?;
        for (name, value) in &response.headers {
            header.insert_header(*name, value)?;
        }
        header.insert_header(
            self.gateway.settings.headers.request_id.clone(),
            &ctx.request_id,
        )?;
        header.insert_header(http::header::CONTENT_LENGTH, response.body.len())?;
        let is_head = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), is_head)
            .await?;
        if !is_head {
            session
                .write_response_body(Some(Bytes::from(response.body)), true)
                .await?;
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Box<HttpPeer>> {
        let forward = ctx.permit()?;
        Ok(Box::new(HttpPeer::new(
            forward.upstream.address,
            false,
            String::new(),
        )))
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
            &self.gateway.settings.headers,
            &ctx.request_id,
            ctx.peer_ip,
            &self.gateway.settings.trusted_proxies,
        )
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let duration = ctx.started.elapsed();
        let outcome = ctx.outcome.as_ref();
        self.gateway.metrics.observe_request(RequestObservation {
            route: outcome
                .and_then(|o| o.route_id.as_deref())
                .unwrap_or(NO_ROUTE),
            decision: decision_label(outcome),
            status,
            duration,
            authorization: outcome.and_then(|o| o.authorization_time),
            upstream_error: error.is_some() && ctx.permit().is_ok(),
        });
        self.decision_log.record(decision_record(
            &ctx.request_id,
            session.req_header().method.as_str(),
            outcome,
            status,
            error.map(|e| e.to_string()),
            duration,
        ));
    }
}
