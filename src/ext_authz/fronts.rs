//! What each proxy that asks for a decision says about the original request, turned into the
//! pipeline's view of it. Pure: no I/O.
//!
//! Each front end has its own contract, taken from its documentation:
//! - nginx `auth_request` (ngx_http_auth_request_module): a subrequest carrying the original
//!   request's headers; the method and URI come in headers the `location` sets
//!   (`X-Original-Method`, `X-Original-URI` by convention) and the host in `Host`
//!   (`proxy_set_header Host $host`); all three names are configurable.
//! - ingress-nginx (`nginx.ingress.kubernetes.io/auth-url`): its auth location sets
//!   `X-Original-Method` and `X-Original-URL` (`$scheme://$http_host$request_uri`); the host
//!   and scheme come from that URL. A front of its own, so that a client's `X-Original-URL`
//!   means nothing to the plain nginx front, nor a client's `X-Original-URI` to this one.
//! - Traefik ForwardAuth and Caddy `forward_auth`: the original headers plus
//!   `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Uri`.
//! - Envoy's HTTP ext_authz: the original method, the original path and query appended to the
//!   service's `path_prefix`, the original `Host`, and the headers its allow-list passes.
//!
//! The client address is the last entry of `X-Forwarded-For`, which each of them appends (the
//! nginx configuration sets `$proxy_add_x_forwarded_for`), else the peer's. The headers that
//! only describe the original request are removed from the view the pipeline sees, and its
//! `Host` is the original one: the auth request's own `Host` names this listener.

use std::net::IpAddr;

use http::header::{HeaderName, HOST};
use http::HeaderMap;

use crate::canonical::is_token_byte;
use crate::config::NginxHeaders;

/// The proxy asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Nginx,
    IngressNginx,
    Traefik,
    Caddy,
    EnvoyHttp,
}

/// The path prefix of Envoy's HTTP mode (its `http_service.path_prefix`).
pub const ENVOY_PREFIX: &str = "/envoy";

impl Front {
    /// The decision log's and metrics' name of the front end.
    pub fn label(self) -> &'static str {
        match self {
            Front::Nginx => "nginx",
            Front::IngressNginx => "ingress-nginx",
            Front::Traefik => "traefik",
            Front::Caddy => "caddy",
            Front::EnvoyHttp => "envoy-http",
        }
    }

    /// The front end a decision request's target names: `/nginx`, `/ingress-nginx`,
    /// `/traefik`, `/caddy`, or
    /// Envoy's `/envoy` followed by the original path and query (returned with it).
    pub fn of_target(target: &[u8]) -> Option<(Front, &[u8])> {
        if let Some(original) = target.strip_prefix(ENVOY_PREFIX.as_bytes()) {
            return original
                .starts_with(b"/")
                .then_some((Front::EnvoyHttp, original));
        }
        let path = target.split(|b| *b == b'?').next().unwrap_or_default();
        let front = match path {
            b"/nginx" => Front::Nginx,
            b"/ingress-nginx" => Front::IngressNginx,
            b"/traefik" => Front::Traefik,
            b"/caddy" => Front::Caddy,
            _ => return None,
        };
        Some((front, b""))
    }
}

/// The original request, as the proxy describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalRequest {
    pub method: String,
    /// The request target exactly as described (origin form), for the canonicalizer.
    pub target: Vec<u8>,
    /// The original request's header fields, `Host` the original host.
    pub headers: HeaderMap,
    pub client_ip: Option<IpAddr>,
    /// The client reached the proxy over TLS (`X-Forwarded-Proto: https`).
    pub secure: bool,
}

const ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The original request of a decision request from `front`, whose own method is `method`,
/// whose target held `envoy_target` after the front's path (Envoy's mode only), with its
/// `headers`, from `peer`. An error names what is missing or malformed.
pub fn original_request(
    front: Front,
    method: &str,
    envoy_target: &[u8],
    headers: &HeaderMap,
    peer: IpAddr,
    nginx: &NginxHeaders,
) -> Result<OriginalRequest, String> {
    let mut headers = headers.clone();
    let client_ip = client_ip(&headers).unwrap_or(peer);
    let mut secure = single(&headers, &FORWARDED_PROTO)?
        .is_some_and(|proto| proto.eq_ignore_ascii_case(b"https"));
    let (method, target, host) = match front {
        Front::IngressNginx => {
            let method = required(&headers, &ORIGINAL_METHOD)?;
            let url = required(&headers, &ORIGINAL_URL)?;
            let (https, host, target) = split_absolute_url(&url)?;
            secure = https;
            for name in [&ORIGINAL_METHOD, &ORIGINAL_URL] {
                headers.remove(name);
            }
            (method, target.to_vec(), Some(host.to_vec()))
        }
        Front::Nginx => {
            let method = required(&headers, &nginx.method)?;
            let target = required(&headers, &nginx.uri)?;
            let host = single(&headers, &nginx.host)?.map(<[u8]>::to_vec);
            for name in [&nginx.method, &nginx.uri, &nginx.host] {
                headers.remove(name);
            }
            (method, target, host)
        }
        Front::Traefik | Front::Caddy => {
            let method = required(&headers, &FORWARDED_METHOD)?;
            let target = required(&headers, &FORWARDED_URI)?;
            let host = Some(required(&headers, &FORWARDED_HOST)?);
            for name in [&FORWARDED_METHOD, &FORWARDED_URI, &FORWARDED_HOST] {
                headers.remove(name);
            }
            (method, target, host)
        }
        Front::EnvoyHttp => {
            let host = single(&headers, &HOST)?.map(<[u8]>::to_vec);
            (method.as_bytes().to_vec(), envoy_target.to_vec(), host)
        }
    };
    let method = String::from_utf8(method)
        .ok()
        .filter(|m| !m.is_empty() && m.bytes().all(is_token_byte))
        .ok_or("the original method is not an HTTP method token")?;
    headers.remove(HOST);
    if let Some(host) = host {
        let host = http::HeaderValue::from_bytes(&host)
            .map_err(|_| "the original host is not a header value")?;
        headers.insert(HOST, host);
    }
    Ok(OriginalRequest {
        method,
        target,
        headers,
        client_ip: Some(client_ip),
        secure,
    })
}

/// `http(s)://authority/path?query` → (TLS, authority, origin-form target), bytes untouched.
fn split_absolute_url(url: &[u8]) -> Result<(bool, &[u8], Vec<u8>), String> {
    let lower = |n: usize| url.get(..n).map(<[u8]>::to_ascii_lowercase);
    let (https, rest) = if lower(8).as_deref() == Some(b"https://") {
        (true, &url[8..])
    } else if lower(7).as_deref() == Some(b"http://") {
        (false, &url[7..])
    } else {
        return Err("x-original-url is not an absolute http(s) URL".to_string());
    };
    let end = rest
        .iter()
        .position(|b| *b == b'/' || *b == b'?')
        .unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() {
        return Err("x-original-url has no host".to_string());
    }
    let target = if target.starts_with(b"/") {
        target.to_vec()
    } else {
        [b"/", target].concat()
    };
    Ok((https, authority, target))
}

/// A header's one value; two are an error (which would the proxy have meant?).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a [u8]>, String> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(format!("{name} appears more than once")),
        (value, _) => Ok(value.map(http::HeaderValue::as_bytes)),
    }
}

fn required(headers: &HeaderMap, name: &HeaderName) -> Result<Vec<u8>, String> {
    single(headers, name)?
        .filter(|value| !value.is_empty())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("the {name} header is missing"))
}

/// The last address of `X-Forwarded-For`: the one the asking proxy appended.
fn client_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(FORWARDED_FOR).iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx() -> NginxHeaders {
        NginxHeaders {
            method: HeaderName::from_static("x-original-method"),
            uri: HeaderName::from_static("x-original-uri"),
            host: HOST,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn fronts_by_target() {
        assert_eq!(Front::of_target(b"/nginx"), Some((Front::Nginx, &b""[..])));
        assert_eq!(
            Front::of_target(b"/traefik?x=1"),
            Some((Front::Traefik, &b""[..]))
        );
        assert_eq!(
            Front::of_target(b"/envoy/lists/a?b=c"),
            Some((Front::EnvoyHttp, &b"/lists/a?b=c"[..]))
        );
        assert_eq!(Front::of_target(b"/envoyx"), None);
        assert_eq!(Front::of_target(b"/nginx/more"), None);
        assert_eq!(Front::of_target(b"/"), None);
    }

    #[test]
    fn nginx_describes_the_request_in_its_headers() {
        let asked = headers(&[
            ("x-original-method", "PATCH"),
            ("x-original-uri", "/lists/a/tasks/t1?x=%2F"),
            ("host", "tasks.example.com"),
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7"),
        ]);
        let original = original_request(Front::Nginx, "GET", b"", &asked, PEER, &nginx()).unwrap();
        assert_eq!(original.method, "PATCH");
        assert_eq!(original.target, b"/lists/a/tasks/t1?x=%2F");
        assert_eq!(original.headers["host"], "tasks.example.com");
        assert_eq!(original.headers["authorization"], "Bearer t");
        assert!(!original.headers.contains_key("x-original-method"));
        assert_eq!(original.client_ip, Some("198.51.100.7".parse().unwrap()));
        assert!(!original.secure);
    }

    #[test]
    fn ingress_nginx_sends_the_original_url() {
        let asked = headers(&[
            ("x-original-method", "GET"),
            (
                "x-original-url",
                "HTTPS://tasks.example.com:8443/lists/a%2Fb?q=1",
            ),
            ("x-original-uri", "/chosen-by-the-client"),
            ("host", "portcullis.portcullis.svc"),
        ]);
        let original =
            original_request(Front::IngressNginx, "GET", b"", &asked, PEER, &nginx()).unwrap();
        assert_eq!(original.target, b"/lists/a%2Fb?q=1");
        assert_eq!(original.headers["host"], "tasks.example.com:8443");
        assert!(original.secure);
        let bare = headers(&[
            ("x-original-method", "GET"),
            ("x-original-url", "http://h?x"),
        ]);
        let original =
            original_request(Front::IngressNginx, "GET", b"", &bare, PEER, &nginx()).unwrap();
        assert_eq!(original.target, b"/?x");
        for bad in ["/relative", "ftp://h/", "http:///path"] {
            let asked = headers(&[("x-original-method", "GET"), ("x-original-url", bad)]);
            assert!(
                original_request(Front::IngressNginx, "GET", b"", &asked, PEER, &nginx()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn traefik_and_caddy_use_x_forwarded_headers() {
        let asked = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/lists/a"),
            ("x-forwarded-host", "tasks.example.com"),
            ("x-forwarded-proto", "https"),
            ("host", "portcullis:9191"),
        ]);
        for front in [Front::Traefik, Front::Caddy] {
            let original = original_request(front, "GET", b"", &asked, PEER, &nginx()).unwrap();
            assert_eq!(original.headers["host"], "tasks.example.com");
            assert_eq!(original.target, b"/lists/a");
            assert!(original.secure);
            assert_eq!(original.client_ip, Some(PEER));
        }
    }

    #[test]
    fn envoy_http_sends_the_original_method_path_and_host() {
        let asked = headers(&[("host", "tasks.example.com")]);
        let original = original_request(
            Front::EnvoyHttp,
            "DELETE",
            b"/lists/a/tasks/t1",
            &asked,
            PEER,
            &nginx(),
        )
        .unwrap();
        assert_eq!(original.method, "DELETE");
        assert_eq!(original.target, b"/lists/a/tasks/t1");
        assert_eq!(original.headers["host"], "tasks.example.com");
    }

    #[test]
    fn incomplete_or_ambiguous_descriptions_are_errors() {
        let missing = headers(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/")]);
        let error = original_request(Front::Traefik, "GET", b"", &missing, PEER, &nginx());
        assert!(error.unwrap_err().contains("x-forwarded-host"));
        let twice = headers(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/a"),
            ("x-original-uri", "/b"),
        ]);
        let error = original_request(Front::Nginx, "GET", b"", &twice, PEER, &nginx());
        assert!(error.unwrap_err().contains("more than once"));
        let bad_method = headers(&[("x-original-method", "GE T"), ("x-original-uri", "/")]);
        assert!(original_request(Front::Nginx, "GET", b"", &bad_method, PEER, &nginx()).is_err());
    }
}
