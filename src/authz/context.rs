//! The Cedar context of a request: which request facts enter it, typed as the schema says.
//!
//! Cedar records are closed, so the schema of the route's action decides which attributes can
//! appear; a route may narrow that further (`context = [...]` in routes.toml, default: every
//! kind). Query parameters and headers enter only as fields of the schema's `query` and
//! `headers` records, parsed to the field's type. A value that is missing (when required),
//! repeated, or does not parse makes the context fail to build, and the request is denied.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::RestrictedExpression;
use http::HeaderMap;

use super::cache_key::CacheKey;
use super::decision_cache::ContextReads;
use super::schema_info::{DeclaredAttribute, Scalar};
use super::AuthzError;

/// The kinds of request facts the gateway can put into a context.
pub const CONTEXT_KINDS: &[&str] = &[
    "method",
    "path",
    "params",
    "client_ip",
    "scopes",
    "time",
    "query",
    "headers",
];

/// The facts of one request that a Cedar request is built from.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// Canonical path.
    pub path: &'a str,
    pub params: &'a [(&'a str, String)],
    pub client_ip: Option<IpAddr>,
    /// OAuth scopes of the token (none for anonymous callers).
    pub scopes: &'a [String],
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Seconds since the epoch.
    pub time: SystemTime,
}

/// A typed field of the `query` or `headers` record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    /// The query parameter or (lower-case) header name, also the record key.
    name: String,
    scalar: Scalar,
    required: bool,
}

/// Which facts go into the context of a route, compiled against the action's schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextPlan {
    method: bool,
    path: bool,
    client_ip: bool,
    scopes: bool,
    time: bool,
    /// Path parameters to put in the `params` record.
    params: Option<Vec<String>>,
    query: Option<Vec<Field>>,
    headers: Option<Vec<Field>>,
}

impl ContextPlan {
    /// `kinds` is the route's selection among [`CONTEXT_KINDS`]; a kind the schema declares
    /// but the route leaves out is a load error when the schema requires it.
    pub fn compile(
        declared: &BTreeMap<String, DeclaredAttribute>,
        kinds: &[String],
        route_params: &[&str],
    ) -> Result<Self, String> {
        let mut plan = ContextPlan::default();
        for (name, attribute) in declared {
            let known = CONTEXT_KINDS.contains(&name.as_str());
            if !known || !kinds.contains(name) {
                if attribute.required {
                    return Err(if known {
                        format!("the schema requires context attribute {name:?}, but the route's context list leaves it out")
                    } else {
                        format!(
                            "the schema requires context attribute {name:?}, which the gateway does not provide (it provides: {})",
                            CONTEXT_KINDS.join(", ")
                        )
                    });
                }
                continue;
            }
            match name.as_str() {
                "method" => plan.method = true,
                "path" => plan.path = true,
                "client_ip" => plan.client_ip = true,
                "scopes" => plan.scopes = true,
                "time" => plan.time = true,
                "params" => plan.params = Some(params_plan(attribute, route_params)?),
                "query" => plan.query = Some(fields("query", attribute, false)?),
                _ => plan.headers = Some(fields("headers", attribute, true)?),
            }
        }
        Ok(plan)
    }

    /// A query string and headers carrying a well-typed value for every field, for the
    /// load-time probe request.
    pub fn probe_inputs(&self) -> (String, HeaderMap) {
        let sample = |field: &Field| match field.scalar {
            Scalar::Long => "0",
            Scalar::Bool => "false",
            Scalar::String => "probe",
        };
        let query = self
            .query
            .iter()
            .flatten()
            .map(|f| format!("{}={}", f.name, sample(f)))
            .collect::<Vec<_>>()
            .join("&");
        let mut headers = HeaderMap::new();
        for field in self.headers.iter().flatten() {
            if let Ok(name) = http::HeaderName::from_bytes(field.name.as_bytes()) {
                headers.insert(name, http::HeaderValue::from_static(sample(field)));
            }
        }
        (query, headers)
    }

    pub fn build(
        &self,
        facts: &RequestFacts<'_>,
    ) -> Result<Vec<(String, RestrictedExpression)>, AuthzError> {
        let mut pairs = Vec::new();
        let string = |s: &str| RestrictedExpression::new_string(s.to_string());
        if self.method {
            pairs.push(("method".to_string(), string(facts.method)));
        }
        if self.path {
            pairs.push(("path".to_string(), string(facts.path)));
        }
        if self.client_ip {
            let ip = facts
                .client_ip
                .ok_or_else(|| AuthzError::Context("the client address is unknown".to_string()))?;
            pairs.push(("client_ip".to_string(), ip_expression(ip)));
        }
        if self.scopes {
            pairs.push((
                "scopes".to_string(),
                RestrictedExpression::new_set(facts.scopes.iter().map(|s| string(s))),
            ));
        }
        if self.time {
            pairs.push((
                "time".to_string(),
                RestrictedExpression::new_datetime(rfc3339_utc(facts.time)),
            ));
        }
        if let Some(names) = &self.params {
            let record = names.iter().filter_map(|name| {
                facts
                    .params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| (name.clone(), string(v)))
            });
            pairs.push(("params".to_string(), record_of(record)?));
        }
        if let Some(fields) = &self.query {
            let mut record = Vec::new();
            for field in fields {
                let values = query_values(facts.query, &field.name)?;
                if let Some(value) = single("query parameter", field, values)? {
                    record.push((field.name.clone(), value));
                }
            }
            pairs.push(("query".to_string(), record_of(record)?));
        }
        if let Some(fields) = &self.headers {
            let mut record = Vec::new();
            for field in fields {
                let values = facts
                    .headers
                    .get_all(field.name.as_str())
                    .iter()
                    .map(|v| {
                        v.to_str().map(str::to_string).map_err(|_| {
                            AuthzError::Context(format!(
                                "header {:?} is not visible ASCII",
                                field.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(value) = single("header", field, values)? {
                    record.push((field.name.clone(), value));
                }
            }
            pairs.push(("headers".to_string(), record_of(record)?));
        }
        Ok(pairs)
    }
}

impl ContextPlan {
    /// Writes into `key` what of this request's context can change a decision: the attributes
    /// `reads` names, and the inputs that can make the context fail to build (see
    /// `decision_cache`). Path parameters are keyed by the route, not here.
    pub fn write_key(&self, facts: &RequestFacts<'_>, reads: &ContextReads, key: &mut CacheKey) {
        if self.method && reads.reads("method") {
            key.piece(facts.method.as_bytes());
        }
        if self.path && reads.reads("path") {
            key.piece(facts.path.as_bytes());
        }
        if self.client_ip {
            match facts.client_ip {
                None => key.piece(b""),
                Some(_) if !reads.reads("client_ip") => key.piece(b"known"),
                Some(IpAddr::V4(ip)) => key.piece(&ip.octets()),
                Some(IpAddr::V6(ip)) => key.piece(&ip.octets()),
            }
        }
        if self.scopes && reads.reads("scopes") {
            key.count(facts.scopes.len());
            facts.scopes.iter().for_each(|s| key.piece(s.as_bytes()));
        }
        if self.time && reads.reads("time") {
            let since = facts.time.duration_since(UNIX_EPOCH).unwrap_or_default();
            key.piece(&since.as_millis().to_le_bytes());
        }
        if self.query.is_some() {
            match facts.query {
                None => key.count(0),
                Some(query) => {
                    key.count(1);
                    key.piece(query.as_bytes());
                }
            }
        }
        for field in self.headers.iter().flatten() {
            let values = facts.headers.get_all(field.name.as_str());
            key.count(values.iter().count());
            values.iter().for_each(|v| key.piece(v.as_bytes()));
        }
    }
}

/// `ip("…")` for an address. cedar parses the extension's name on every `new_ip` call (its
/// lexer is regex-driven: several microseconds a request); clients come from few addresses, so
/// each thread keeps the expressions of the addresses it saw last.
fn ip_expression(ip: IpAddr) -> RestrictedExpression {
    const REMEMBERED: usize = 64;
    thread_local! {
        static RECENT: RefCell<Vec<(IpAddr, RestrictedExpression)>> = const { RefCell::new(Vec::new()) };
    }
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some((_, expression)) = recent.iter().find(|(seen, _)| *seen == ip) {
            return expression.clone();
        }
        let expression = RestrictedExpression::new_ip(ip.to_string());
        if recent.len() == REMEMBERED {
            recent.remove(0);
        }
        recent.push((ip, expression.clone()));
        expression
    })
}

fn params_plan(
    attribute: &DeclaredAttribute,
    route_params: &[&str],
) -> Result<Vec<String>, String> {
    let Some(record) = &attribute.record else {
        return Err("context attribute \"params\" must be a record of path parameters".to_string());
    };
    let mut names = Vec::new();
    for (param, declared) in record {
        if route_params.contains(&param.as_str()) {
            names.push(param.clone());
        } else if declared.required {
            return Err(format!(
                "the schema requires context.params.{param}, but the route's path has no {{{param}}}"
            ));
        }
    }
    Ok(names)
}

fn fields(kind: &str, attribute: &DeclaredAttribute, header: bool) -> Result<Vec<Field>, String> {
    let Some(record) = &attribute.record else {
        return Err(format!("context attribute {kind:?} must be a record"));
    };
    record
        .iter()
        .map(|(name, declared)| {
            if header
                && (http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || name.to_ascii_lowercase() != *name)
            {
                return Err(format!(
                    "context.headers.{name:?} must be a lower-case header name"
                ));
            }
            match declared.scalar {
                Some(scalar @ (Scalar::String | Scalar::Long | Scalar::Bool)) => Ok(Field {
                    name: name.clone(),
                    scalar,
                    required: declared.required,
                }),
                _ => Err(format!(
                    "context.{kind}.{name:?} must be a String, Long or Bool"
                )),
            }
        })
        .collect()
}

/// The one value of a field, typed; repeated values are refused as ambiguous.
fn single(
    what: &str,
    field: &Field,
    mut values: Vec<String>,
) -> Result<Option<RestrictedExpression>, AuthzError> {
    let fail = |reason: &str| {
        Err(AuthzError::Context(format!(
            "{what} {:?} {reason}",
            field.name
        )))
    };
    let value = match values.len() {
        0 if field.required => return fail("is required by the schema but missing"),
        0 => return Ok(None),
        1 => values.remove(0),
        _ => return fail("is repeated"),
    };
    Ok(Some(match field.scalar {
        Scalar::Long => match value.parse::<i64>() {
            Ok(n) => RestrictedExpression::new_long(n),
            Err(_) => return fail("is not an integer"),
        },
        Scalar::Bool => match value.as_str() {
            "true" => RestrictedExpression::new_bool(true),
            "false" => RestrictedExpression::new_bool(false),
            _ => return fail("is not true or false"),
        },
        _ => RestrictedExpression::new_string(value),
    }))
}

fn record_of(
    fields: impl IntoIterator<Item = (String, RestrictedExpression)>,
) -> Result<RestrictedExpression, AuthzError> {
    RestrictedExpression::new_record(fields).map_err(|e| AuthzError::Context(e.to_string()))
}

/// Every value of query parameter `name`, decoded as `application/x-www-form-urlencoded`.
fn query_values(query: Option<&str>, name: &str) -> Result<Vec<String>, AuthzError> {
    let mut values = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key)? == name {
            values.push(form_decode(value)?);
        }
    }
    Ok(values)
}

/// `application/x-www-form-urlencoded` decoding, strict: a `%` must be followed by two hex
/// digits, and the result must be UTF-8. Hand-written because `form_urlencoded` and
/// `percent-encoding` pass a malformed escape through as literal text, where a value the
/// policies read must either decode exactly or refuse the request.
fn form_decode(text: &str) -> Result<String, AuthzError> {
    let bad = || {
        AuthzError::Context(format!(
            "query component {text:?} is not valid percent-encoded UTF-8"
        ))
    };
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(b) = input.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [input.next().ok_or_else(bad)?, input.next().ok_or_else(bad)?];
                // from_str_radix alone would take a sign: "+5" as 5.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// `time` as Cedar's `datetime` literal, UTC with milliseconds.
pub fn rfc3339_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn datetimes_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_123);
        assert_eq!(rfc3339_utc(leap), "2000-02-29T00:00:00.123Z");
        let late = UNIX_EPOCH + Duration::from_secs(1_795_341_568);
        assert_eq!(rfc3339_utc(late), "2026-11-22T09:59:28.000Z");
    }

    #[test]
    fn query_values_are_form_decoded() {
        let query = Some("a=1&b=x+y%21&a=2&c&d=%zz");
        assert_eq!(query_values(query, "a").unwrap(), ["1", "2"]);
        assert_eq!(query_values(query, "b").unwrap(), ["x y!"]);
        assert_eq!(query_values(query, "c").unwrap(), [""]);
        assert!(query_values(query, "d").is_err());
        assert!(query_values(None, "a").unwrap().is_empty());
        assert!(query_values(Some("e=%C3%28"), "e").is_err());
        // A sign is not a hex digit (u8::from_str_radix("+5", 16) is Ok(5)).
        for malformed in ["%+5", "%-5", "%5", "%", "%5g", "% 5"] {
            assert!(
                query_values(Some(&format!("f={malformed}")), "f").is_err(),
                "{malformed}"
            );
        }
        assert_eq!(query_values(Some("f=%2B5%2b"), "f").unwrap(), ["+5+"]);
    }

    fn field(scalar: Scalar, required: bool) -> Field {
        Field {
            name: "page".into(),
            scalar,
            required,
        }
    }

    #[test]
    fn single_values_are_typed() {
        let one = |v: &str| vec![v.to_string()];
        assert!(single("q", &field(Scalar::Long, true), one("42"))
            .unwrap()
            .is_some());
        assert!(single("q", &field(Scalar::Long, true), one("4x")).is_err());
        assert!(single("q", &field(Scalar::Bool, true), one("true"))
            .unwrap()
            .is_some());
        assert!(single("q", &field(Scalar::Bool, true), one("yes")).is_err());
        assert!(single("q", &field(Scalar::String, true), vec![]).is_err());
        assert!(single("q", &field(Scalar::String, false), vec![])
            .unwrap()
            .is_none());
        assert!(single(
            "q",
            &field(Scalar::String, false),
            vec!["a".into(), "b".into()]
        )
        .is_err());
    }
}
