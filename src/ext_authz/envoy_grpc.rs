//! Envoy's ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`, Istio's
//! `envoyExtAuthzGrpc`), with the Envoy protos of the `envoy-types` crate.
//!
//! The `CheckRequest`'s HTTP attributes are the original request: method, `path` (with the
//! query), `host` (`:authority`), `scheme`, the headers (`header_map` when Envoy sends raw
//! values, else `headers`) and the source address. A permit is an `OkHttpResponse` that sets the
//! identity headers and removes every other spelling of them the client sent
//! (`headers_to_remove`: unlike the HTTP fronts, Envoy can remove, so such a request is not
//! refused); a refusal is a `DeniedHttpResponse` carrying the gateway's status, challenge and
//! JSON body, which Envoy sends to the client.

use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue as EnvoyHeader, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::ext_authz::v3::CheckRequestExt;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Request};

use super::fronts::OriginalRequest;
use super::{never_let_through, DecisionService, NeverLetThrough};
use crate::canonical::is_token_byte;
use crate::http_server::Peer;
use crate::pipeline::Denial;
use crate::response::deny_response;

/// The decision log's name of this front end.
pub const FRONT: &str = "envoy-grpc";

/// The path of the `Check` method.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// google.rpc.Code values.
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_UNAUTHENTICATED: i32 = 16;

/// Whether a request on the listener is a gRPC `Check` call (h2, the method's path).
pub fn is_check<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_2 && request.uri().path() == CHECK_PATH
}

/// The original request a `CheckRequest` describes.
pub fn original_request(check: &CheckRequest) -> Result<OriginalRequest, String> {
    let http = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or("the CheckRequest has no HTTP request attributes")?;
    if http.method.is_empty() || !http.method.bytes().all(is_token_byte) {
        return Err("the original method is not an HTTP method token".to_string());
    }
    if !http.path.starts_with('/') {
        return Err("the original path is missing or not in origin form".to_string());
    }
    let mut headers = HeaderMap::new();
    let raw = http.header_map.as_ref().map(|m| m.headers.as_slice());
    let pairs: Vec<(&str, &[u8])> = match raw {
        Some(raw) if !raw.is_empty() => raw
            .iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                (h.key.as_str(), value)
            })
            .collect(),
        _ => http
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
    };
    for (name, value) in pairs {
        // Pseudo-headers (`:path`, `:authority`, ...) are the fields read above.
        if name.starts_with(':') {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("the value of {name} is not a header value"))?;
        headers.append(name, value);
    }
    headers.remove(HOST);
    if !http.host.is_empty() {
        let host = HeaderValue::from_str(&http.host)
            .map_err(|_| "the original host is not a header value".to_string())?;
        headers.insert(HOST, host);
    }
    Ok(OriginalRequest {
        method: http.method.clone(),
        target: http.path.as_bytes().to_vec(),
        headers,
        client_ip: check.get_client_address().and_then(|a| a.parse().ok()),
        secure: http.scheme.eq_ignore_ascii_case("https"),
    })
}

#[tonic::async_trait]
impl Authorization for DecisionService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let request_id = self.ids.next();
        let peer = request.extensions().get::<Peer>().map(|peer| peer.0);
        let described = original_request(request.get_ref());
        // What the answer may have to remove, read before the request goes to the pipeline.
        let (method, never_sent_on): (String, Vec<HeaderName>) = match &described {
            Ok(original) => (
                original.method.clone(),
                never_let_through(&original.headers, &self.gateway.settings.headers)
                    .cloned()
                    .collect(),
            ),
            Err(_) => ("-".to_string(), Vec::new()),
        };
        let mut outcome = match self.untrusted(peer) {
            Some(refused) => refused,
            None => self.decide(described, NeverLetThrough::Remove).await,
        };
        let (response, status) = match self.identity_headers(&mut outcome, &request_id) {
            Ok(identity) => {
                // Every one the answer does not overwrite.
                let remove = never_sent_on
                    .iter()
                    .filter(|name| !identity.contains_key(*name))
                    .map(|name| name.as_str().to_string())
                    .collect();
                (allowed(&identity, remove), 200)
            }
            Err(denial) => {
                let realm = &self.gateway.settings.realm;
                denied(&denial, &request_id, realm)
            }
        };
        self.record(FRONT, &request_id, &method, &outcome, status, started);
        Ok(tonic::Response::new(response))
    }
}

fn header_option(name: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// OK: set the identity headers, remove the client's other spellings of them.
fn allowed(identity: &HeaderMap, remove: Vec<String>) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus {
            code: RPC_OK,
            ..RpcStatus::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: identity
                .iter()
                .map(|(name, value)| header_option(name.as_str(), value.as_bytes()))
                .collect(),
            headers_to_remove: remove,
            ..OkHttpResponse::default()
        })),
        ..CheckResponse::default()
    }
}

/// Denied: the gateway's refusal, for Envoy to send to the client; and its HTTP status.
fn denied(denial: &Denial, request_id: &str, realm: &str) -> (CheckResponse, u16) {
    let refusal = deny_response(denial, request_id, realm);
    let mut headers: Vec<HeaderValueOption> = refusal
        .headers
        .iter()
        .map(|(name, value)| header_option(name, value.as_bytes()))
        .collect();
    headers.push(header_option("x-request-id", request_id.as_bytes()));
    let code = match refusal.status {
        401 => RPC_UNAUTHENTICATED,
        _ => RPC_PERMISSION_DENIED,
    };
    let response = CheckResponse {
        status: Some(RpcStatus {
            code,
            message: denial.to_string(),
            ..RpcStatus::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(refusal.status),
            }),
            headers,
            body: String::from_utf8_lossy(&refusal.body).into_owned(),
        })),
        ..CheckResponse::default()
    };
    (response, refusal.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::ext_authz::v3::pb::Address;
    use envoy_types::pb::envoy::config::core::v3::SocketAddress;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer as EnvoyPeer, Request as EnvoyRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

    fn check(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(EnvoyPeer {
                    address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: "203.0.113.9".to_string(),
                            ..SocketAddress::default()
                        })),
                    }),
                    ..EnvoyPeer::default()
                }),
                request: Some(EnvoyRequest {
                    http: Some(HttpRequest {
                        method: method.to_string(),
                        path: path.to_string(),
                        host: "tasks.example.com".to_string(),
                        scheme: "https".to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..HttpRequest::default()
                    }),
                    ..EnvoyRequest::default()
                }),
                ..AttributeContext::default()
            }),
        }
    }

    #[test]
    fn a_check_request_describes_the_original_request() {
        let request = check(
            "GET",
            "/lists/a?x=1",
            &[
                (":authority", "evil.example"),
                ("authorization", "Bearer t"),
                ("host", "h"),
            ],
        );
        let original = original_request(&request).unwrap();
        assert_eq!(original.method, "GET");
        assert_eq!(original.target, b"/lists/a?x=1");
        assert_eq!(original.headers["host"], "tasks.example.com");
        assert_eq!(original.headers.get_all("host").iter().count(), 1);
        assert_eq!(original.headers["authorization"], "Bearer t");
        assert_eq!(original.client_ip, Some("203.0.113.9".parse().unwrap()));
        assert!(original.secure);
    }

    #[test]
    fn incomplete_check_requests_are_errors() {
        assert!(original_request(&CheckRequest::default()).is_err());
        assert!(original_request(&check("G T", "/", &[])).is_err());
        assert!(original_request(&check("GET", "lists", &[])).is_err());
        assert!(original_request(&check("GET", "/", &[("bad name", "v")])).is_err());
    }
}
