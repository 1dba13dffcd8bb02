//! CORS (the Fetch standard's HTTP side) for browser clients on other origins.
//!
//! The gateway answers a preflight itself: a browser sends it without credentials, so it would
//! otherwise be refused for lacking a token (or, on most routes, for its `OPTIONS` method)
//! before the real request is ever tried. And it puts the CORS response headers on every
//! response to an allowed origin, its own refusals included, so that a script reads a 401 or
//! 403 with its JSON body instead of an opaque network error. CORS grants nothing: the request
//! that follows a preflight is authenticated and authorized like any other.
//!
//! Pure: origins and header lists in, response header pairs out.

use http::HeaderValue;

/// The response headers a CORS answer adds, by name.
pub type CorsHeaders = Vec<(&'static str, String)>;

/// Which origins may read responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: any origin.
    Any,
    /// One origin, `scheme://host[:port]`, compared exactly (origins are serialized in lower
    /// case by browsers).
    Exact(String),
    /// `scheme://*.domain[:port]`: any subdomain of `domain`, at any depth, not `domain` itself.
    Subdomains { scheme: String, suffix: String },
}

impl OriginPattern {
    /// Parses one `allow_origins` entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let (scheme, rest) = text
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .ok_or_else(|| {
                format!("{text:?} is not an origin like \"https://app.example.com\" (or \"*\")")
            })?;
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || text != text.to_lowercase() {
            return Err(format!(
                "{text:?} is not an origin: scheme://host[:port] in lower case, without a path"
            ));
        }
        match rest.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                Ok(OriginPattern::Subdomains {
                    scheme: format!("{scheme}://"),
                    suffix: format!(".{domain}"),
                })
            }
            Some(_) => Err(format!(
                "{text:?}: a wildcard must be \"*.\" before a domain"
            )),
            None if rest.contains('*') => Err(format!(
                "{text:?}: a wildcard must be \"*.\" at the start of the host"
            )),
            None => Ok(OriginPattern::Exact(text.to_string())),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(exact) => origin == exact,
            OriginPattern::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|host| host.strip_suffix(suffix.as_str()))
                .is_some_and(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                }),
        }
    }
}

/// The CORS settings, validated.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    pub origins: Vec<OriginPattern>,
    /// Request headers a preflight may ask for, lower case (`Access-Control-Allow-Headers`).
    pub allow_headers: Vec<String>,
    /// Response headers a script may read beyond the safelisted ones, as the
    /// `Access-Control-Expose-Headers` value (joined once, at load); empty for none.
    pub expose_headers: String,
    pub allow_credentials: bool,
    pub max_age_seconds: u64,
}

/// Why a preflight was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightRefusal {
    #[error("the origin is not allowed")]
    Origin,
    #[error("the request header {0:?} is not allowed")]
    Header(String),
}

impl CorsPolicy {
    /// The origin of a request, when it is one whose responses may be read.
    fn allowed_origin<'a>(&self, origin: Option<&'a HeaderValue>) -> Option<&'a str> {
        let origin = origin?.to_str().ok()?;
        self.origins
            .iter()
            .any(|pattern| pattern.matches(origin))
            .then_some(origin)
    }

    /// The headers every response to this origin carries. A request from an origin not
    /// allowed gets only `Vary: Origin` (the browser withholds the response; a shared cache
    /// must not serve it to an allowed origin), one without an `Origin` nothing.
    pub fn response_headers(&self, origin: Option<&HeaderValue>) -> CorsHeaders {
        let Some(origin) = self.allowed_origin(origin) else {
            return match origin {
                Some(_) => vec![("vary", "Origin".to_string())],
                None => Vec::new(),
            };
        };
        let mut headers = self.origin_headers(origin);
        if !self.expose_headers.is_empty() {
            headers.push(("access-control-expose-headers", self.expose_headers.clone()));
        }
        headers
    }

    /// The answer to a preflight for `method`, which a route serves on the path: the
    /// `Access-Control-Allow-*` headers, or why the browser must not send the request.
    pub fn preflight(
        &self,
        origin: Option<&HeaderValue>,
        method: &str,
        requested_headers: Option<&HeaderValue>,
    ) -> Result<CorsHeaders, PreflightRefusal> {
        let origin = self
            .allowed_origin(origin)
            .ok_or(PreflightRefusal::Origin)?;
        let requested: Vec<String> = requested_headers
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        if let Some(refused) = requested
            .iter()
            .find(|name| !self.allow_headers.contains(name))
        {
            return Err(PreflightRefusal::Header(refused.clone()));
        }
        let mut headers = self.origin_headers(origin);
        headers.push(("access-control-allow-methods", method.to_string()));
        if !requested.is_empty() {
            headers.push(("access-control-allow-headers", requested.join(", ")));
        }
        headers.push(("access-control-max-age", self.max_age_seconds.to_string()));
        Ok(headers)
    }

    /// `Access-Control-Allow-Origin` (the origin itself, never `*`, so that one answer fits
    /// credentialed and plain requests alike), `-Allow-Credentials`, and `Vary: Origin` for
    /// caches.
    fn origin_headers(&self, origin: &str) -> CorsHeaders {
        let mut headers = vec![
            ("access-control-allow-origin", origin.to_string()),
            ("vary", "Origin".to_string()),
        ];
        if self.allow_credentials {
            headers.push(("access-control-allow-credentials", "true".to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy {
            origins: origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
            allow_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: "x-request-id".into(),
            allow_credentials: true,
            max_age_seconds: 600,
        }
    }

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    fn header<'a>(headers: &'a CorsHeaders, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn origins_are_matched_exactly_or_by_subdomain() {
        let cors = policy(&["https://app.example.com", "https://*.tenants.example.com"]);
        for allowed in [
            "https://app.example.com",
            "https://acme.tenants.example.com",
            "https://a.b.tenants.example.com",
        ] {
            let headers = cors.response_headers(Some(&value(allowed)));
            assert_eq!(
                header(&headers, "access-control-allow-origin"),
                Some(allowed)
            );
            assert_eq!(header(&headers, "vary"), Some("Origin"));
            assert_eq!(
                header(&headers, "access-control-expose-headers"),
                Some("x-request-id")
            );
        }
        for refused in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.test",
            "https://tenants.example.com",
            "https://evil.test/.tenants.example.com",
            "https://eviltenants.example.com",
            "null",
        ] {
            assert_eq!(
                cors.response_headers(Some(&value(refused))),
                [("vary", "Origin".to_string())],
                "{refused}"
            );
        }
        assert!(cors.response_headers(None).is_empty());
        let any = policy(&["*"]);
        let headers = any.response_headers(Some(&value("https://x.test")));
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some("https://x.test")
        );
    }

    #[test]
    fn preflights_name_the_method_and_only_allowed_headers() {
        let cors = policy(&["https://app.example.com"]);
        let origin = value("https://app.example.com");
        let headers = cors
            .preflight(
                Some(&origin),
                "PATCH",
                Some(&value("Authorization, content-type")),
            )
            .unwrap();
        assert_eq!(
            header(&headers, "access-control-allow-methods"),
            Some("PATCH")
        );
        assert_eq!(
            header(&headers, "access-control-allow-headers"),
            Some("authorization, content-type")
        );
        assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
        assert_eq!(
            header(&headers, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            cors.preflight(Some(&origin), "GET", Some(&value("x-debug"))),
            Err(PreflightRefusal::Header("x-debug".into()))
        );
        assert_eq!(
            cors.preflight(Some(&value("https://evil.test")), "GET", None),
            Err(PreflightRefusal::Origin)
        );
        assert_eq!(
            cors.preflight(None, "GET", None),
            Err(PreflightRefusal::Origin)
        );
    }

    #[test]
    fn origin_patterns_are_checked() {
        for bad in [
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://App.example.com",
            "https://a*.example.com",
            "https://*.",
            "https://",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            OriginPattern::parse("https://*.example.com"),
            Ok(OriginPattern::Subdomains {
                scheme: "https://".into(),
                suffix: ".example.com".into()
            })
        );
    }
}
