//! The admin listener: `/metrics`, `/healthz` and `/readyz`, on their own address (loopback by
//! default) so that they are never reachable through the proxy's routes.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tokio::net::TcpListener;

use crate::http_server::{error_response, json_response, serve, ResponseBody};
use crate::snapshot::Gateway;

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, gateway: Arc<Gateway>) {
    serve(listener, move |request: Request<hyper::body::Incoming>| {
        let response = respond(&gateway, request.method(), request.uri().path());
        async move { response }
    })
    .await;
}

fn respond(gateway: &Gateway, method: &Method, path: &str) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    match path {
        "/healthz" => json_response(StatusCode::OK, &json!({ "status": "alive" })),
        "/readyz" => readiness(gateway),
        "/metrics" => {
            let text = gateway.metrics.render(
                &gateway.authenticator.figures(),
                &gateway.directory_status,
                gateway
                    .settings
                    .bundle
                    .as_ref()
                    .map(|_| &*gateway.bundle_status),
            );
            let mut response = Response::new(Full::new(text.into()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => error_response(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Ready once every issuer has keys (before that its tokens would get 401) and, with
/// `[directory]`, a directory is in use (synced, or read from the cache file: a later API
/// outage keeps it and readiness); until a shutdown or upgrade begins. The snapshot is always
/// loaded (the process does not start without one).
fn readiness(gateway: &Gateway) -> Response<ResponseBody> {
    if gateway.is_draining() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "draining", "reason": "shutting down or handing over to a new process" }),
        );
    }
    let waiting = gateway.authenticator.issuers_without_keys();
    let snapshot = gateway.snapshot().version;
    let syncing = gateway.settings.directory.is_some();
    let mut body = json!({ "snapshot": snapshot });
    if syncing {
        body["directory"] = gateway.directory_status.describe(SystemTime::now());
    }
    if gateway.settings.bundle.is_some() {
        body["bundle"] = gateway.bundle_status.describe();
    }
    let (status, reason) = if !waiting.is_empty() {
        body["issuers_without_keys"] = json!(waiting);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("no keys fetched yet for some issuers"),
        )
    } else if syncing && !gateway.directory_status.has_directory() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("the directory has not been synced yet (and no cache file was read)"),
        )
    } else {
        (StatusCode::OK, None)
    };
    body["status"] = json!(if reason.is_some() {
        "not ready"
    } else {
        "ready"
    });
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    json_response(status, &body)
}
