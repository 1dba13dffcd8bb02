//! The load test's baseline: bare pingora, a pass-through `ProxyHttp` with no checks.
//!
//! It is what Portcullis is built on, with the same pingora version, build profile and
//! thread count, so the ratio of the two isolates what authentication, authorization,
//! request ids, metrics and the decision log cost. Upstream connections are pooled by pingora
//! exactly as they are for the gateway. With `--tls-cert`/`--tls-key` it terminates TLS (ALPN
//! h2 and http/1.1) as the gateway's `[server.tls]` does; with `--h2c` it takes h2c.
//!
//! Three flags add a piece of work every authorizing gateway does per forwarded request, and
//! nothing else, so the load test can show what that piece costs bare pingora (issue 15's
//! proof of a target that cannot be met); they combine:
//! - `--rewrite-headers`: the gateway's upstream rewrite of the load test's request, done the
//!   way the gateway does it (`src/proxy/forward.rs`): the request's `http` parts taken out of
//!   pingora's header, one pass over the names looking for spoofable and hop-by-hop ones, then
//!   the trusted identity headers (principal, roles, tenant, request id) and
//!   `X-Forwarded-For`/`-Proto`/`-Host` inserted;
//! - `--upstream-timeouts`: the gateway's default upstream connect, read and write timeouts on
//!   every upstream peer, which pingora enforces with a timer on each upstream read;
//! - `--decision-log FILE`: one decision record per request, serialized as the gateway's and
//!   handed to the gateway's own decision log writer (`portcullis::decision_log`);
//! - `--verify-jwt PEM --issuer ISS --audience AUD`: each request's bearer token validated as
//!   RFC 7519 §7.2 asks and nothing more, 401 when it fails: its header's `alg` read (RS256),
//!   its RS256 signature verified with this public key (aws-lc, parsed once, as the gateway's
//!   key store does), its claims decoded and `iss`, `aud`, `exp` and `nbf` checked. What any
//!   JWT-checking gateway must do for a token it has not seen: no strictness beyond serde's, no
//!   claim mapping, no cache;
//! - `--decide DIR` (with `--verify-jwt`): a Cedar decision for each request's caller, as any
//!   gateway deciding with Cedar must make for a caller it has not seen, in the least work the
//!   public API allows: the principal built from the token's `sub`, roles and tenant claims
//!   (`Entity::new`, the gateway's claim names), its parents closed over DIR's
//!   `entities.json`; a store of just it and the resource (the least evaluation can read);
//!   `Authorizer::is_authorized` on DIR's policies that can apply to the request's action,
//!   chosen once at start; 403 unless it allows. No schema checks, no context, no cache.
//!
//! The binary uses the gateway's allocator, so that a ratio to it measures work, not
//! allocators.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression,
};
use clap::Parser;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};
use portcullis::config::DecisionSink;
use portcullis::decision_log::{DecisionLog, LogMetrics};
use portcullis::proxy::{never_forwarded, RequestIds};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;

/// The gateway's allocator (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The gateway's default identity header names (`[headers]` in portcullis.toml).
const IDENTITY_HEADERS: [&str; 4] = [
    "x-portcullis-principal",
    "x-portcullis-roles",
    "x-portcullis-tenant",
    "x-request-id",
];

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Where every request goes.
    #[arg(long)]
    upstream: SocketAddr,
    /// pingora worker threads (the gateway's `[server] threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Terminate TLS (ALPN h2 and http/1.1) with this PEM certificate...
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<String>,
    /// ...and this key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<String>,
    /// Accept HTTP/2 with prior knowledge on plaintext.
    #[arg(long)]
    h2c: bool,
    /// Rewrite the upstream request's headers as the gateway does (see the module docs).
    #[arg(long)]
    rewrite_headers: bool,
    /// Put the gateway's default upstream timeouts on every upstream peer.
    #[arg(long)]
    upstream_timeouts: bool,
    /// Write one decision record per request to this file, as the gateway's decision log does.
    #[arg(long)]
    decision_log: Option<PathBuf>,
    /// Validate each request's bearer token (RS256 with this PEM public key, see the module
    /// docs)...
    #[arg(long, requires_all = ["issuer", "audience"])]
    verify_jwt: Option<PathBuf>,
    /// ...issued by this issuer...
    #[arg(long, requires = "verify_jwt")]
    issuer: Option<String>,
    /// ...for this audience.
    #[arg(long, requires = "verify_jwt")]
    audience: Option<String>,
    /// Decide each request with Cedar, on this directory's policies and entities.
    #[arg(long, requires = "verify_jwt")]
    decide: Option<PathBuf>,
}

/// The gateway's default upstream timeouts (`[upstreams.*.timeouts]`): connect, read, write.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_WRITE_TIMEOUT: Duration = Duration::from_secs(15);

struct PassThrough {
    upstream: SocketAddr,
    rewrite_headers: bool,
    upstream_timeouts: bool,
    decision_log: Option<Arc<DecisionLog>>,
    jwt: Option<JwtCheck>,
    decider: Option<Decider>,
    request_ids: RequestIds,
}

/// What a JWT check knows before any request: the issuer's key and the expected claims.
struct JwtCheck {
    key: ParsedPublicKey,
    issuer: String,
    audience: String,
}

/// The JOSE header field a check must read.
#[derive(serde::Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
}

/// The claims a check reads: the registered ones RFC 7519 §7.2 validates, and those the
/// gateway's claim mapping makes the principal of (the load test's configuration).
#[derive(serde::Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    iss: Cow<'a, str>,
    #[serde(borrow)]
    aud: Audience<'a>,
    exp: u64,
    nbf: Option<u64>,
    #[serde(borrow)]
    sub: Cow<'a, str>,
    #[serde(borrow, default, rename = "https://portcullis.dev/roles")]
    roles: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    org_id: Option<Cow<'a, str>>,
}

/// `aud`: one string or an array of them, read in one pass (serde's `untagged` would buffer it).
struct Audience<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Audience<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;
        impl<'de> serde::de::Visitor<'de> for OneOrMany {
            type Value = Audience<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E>(self, one: &'de str) -> Result<Self::Value, E> {
                Ok(Audience(vec![Cow::Borrowed(one)]))
            }
            fn visit_str<E>(self, one: &str) -> Result<Self::Value, E> {
                Ok(Audience(vec![Cow::Owned(one.to_string())]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(one) = seq.next_element::<Cow<'de, str>>()? {
                    all.push(one);
                }
                Ok(Audience(all))
            }
        }
        deserializer.deserialize_any(OneOrMany)
    }
}

impl Audience<'_> {
    fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|one| one == audience)
    }
}

impl JwtCheck {
    /// 200 when the request's bearer token is valid (and, with `decider`, its caller allowed);
    /// otherwise the status to refuse it with.
    fn status(&self, authorization: Option<&[u8]>, decider: Option<&Decider>) -> u16 {
        let Some(token) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return 401;
        };
        let mut parts = token.split(|&b| b == b'.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return 401;
        };
        let decode = |part: &[u8]| URL_SAFE_NO_PAD.decode(part).ok();
        let (Some(header), Some(payload), Some(signature)) = (
            decode(header_part),
            decode(payload_part),
            decode(signature_part),
        ) else {
            return 401;
        };
        let signed = &token[..header_part.len() + 1 + payload_part.len()];
        let rs256 = serde_json::from_slice::<JoseHeader>(&header).is_ok_and(|h| h.alg == "RS256");
        if !rs256 || self.key.verify_sig(signed, &signature).is_err() {
            return 401;
        }
        let Ok(claims) = serde_json::from_slice::<Claims>(&payload) else {
            return 401;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims.iss != self.issuer
            || !claims.aud.contains(&self.audience)
            || claims.exp <= now
            || claims.nbf.is_some_and(|nbf| nbf > now)
        {
            return 401;
        }
        match decider {
            Some(decider) if !decider.allows(&claims) => 403,
            _ => 200,
        }
    }
}

/// The load test's request as routes.toml's `read-task` route maps it.
const ACTION: &str = r#"Action::"ReadTask""#;
const RESOURCE: &str = r#"Task::"t1""#;

/// A Cedar decision for a caller known only from its token (see the module docs).
struct Decider {
    authorizer: Authorizer,
    /// The policies whose action scope admits the request's action.
    policies: PolicySet,
    directory: Entities,
    action: EntityUid,
    resource: EntityUid,
    /// The entity types of the gateway's claim mapping (`[issuers.claims]` in the load test).
    user: EntityTypeName,
    role: EntityTypeName,
    tenant: EntityTypeName,
}

impl Decider {
    fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("tasks.cedar")).expect("tasks.cedar reads");
        let all = PolicySet::from_str(&text).expect("tasks.cedar parses");
        let action = EntityUid::from_str(ACTION).expect("an action uid");
        let policies = PolicySet::from_policies(
            all.policies()
                .filter(|policy| match policy.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(uid) => uid == action,
                    ActionConstraint::In(uids) => uids.contains(&action),
                })
                .cloned(),
        )
        .expect("a policy set");
        let entities = std::fs::File::open(dir.join("entities.json")).expect("entities.json opens");
        let type_name = |name: &str| EntityTypeName::from_str(name).expect("an entity type");
        Decider {
            authorizer: Authorizer::new(),
            policies,
            directory: Entities::from_json_file(entities, None).expect("entities.json parses"),
            action,
            resource: EntityUid::from_str(RESOURCE).expect("a resource uid"),
            user: type_name("User"),
            role: type_name("Role"),
            tenant: type_name("Tenant"),
        }
    }

    fn allows(&self, claims: &Claims) -> bool {
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let principal_uid = uid(&self.user, &claims.sub);
        // The principal's parents closed over the directory (its roles and their ancestors),
        // so that the store needs no other entry for `principal in ...`.
        let mut parents = HashSet::new();
        for role in &claims.roles {
            let role = uid(&self.role, role);
            let ancestors = self.directory.ancestors(&role).into_iter().flatten();
            parents.extend(ancestors.cloned());
            parents.insert(role);
        }
        let attributes: HashMap<String, RestrictedExpression> = claims
            .org_id
            .iter()
            .map(|tenant| {
                let tenant = uid(&self.tenant, tenant);
                (
                    "tenant".to_string(),
                    RestrictedExpression::new_entity_uid(tenant),
                )
            })
            .collect();
        let Ok(principal) = Entity::new(principal_uid.clone(), attributes, parents) else {
            return false;
        };
        // The least store evaluation can read: the principal, and the resource as the directory
        // has it (its attributes, its ancestors closed).
        let mut included = vec![principal];
        included.extend(self.directory.get(&self.resource).cloned());
        let Ok(entities) = Entities::from_entities(included, None) else {
            return false;
        };
        let Ok(request) = Request::new(
            principal_uid,
            self.action.clone(),
            self.resource.clone(),
            Context::empty(),
            None,
        ) else {
            return false;
        };
        self.authorizer
            .is_authorized(&request, &self.policies, &entities)
            .decision()
            == Decision::Allow
    }
}

/// The load test's caller, as the gateway's identity headers name them.
fn rewrite(request: &mut RequestHeader, request_id: &str, peer: Option<SocketAddr>) -> Result<()> {
    use http::header::{HeaderName, HeaderValue};
    let invalid = |e| {
        pingora_core::Error::because(
            pingora_core::ErrorType::InternalError,
            "not a header value",
            e,
        )
    };
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(request, placeholder));
    let headers = &mut parts.headers;
    let host = headers.get(http::header::HOST).cloned();
    let removed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| never_forwarded(name.as_str(), &IDENTITY_HEADERS, &[], false))
        .cloned()
        .collect();
    for name in removed {
        headers.remove(&name);
    }
    const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    headers.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(FORWARDED_HOST, host);
    }
    let [principal, roles, tenant, id] = IDENTITY_HEADERS.map(HeaderName::from_static);
    headers.insert(principal, HeaderValue::from_static("alice"));
    headers.insert(roles, HeaderValue::from_static("manager"));
    headers.insert(tenant, HeaderValue::from_static("org_acme"));
    headers.insert(id, HeaderValue::from_str(request_id).map_err(invalid)?);
    if let Some(peer) = peer {
        let chain = HeaderValue::try_from(peer.ip().to_string()).map_err(invalid)?;
        headers.insert(FORWARDED_FOR, chain);
    }
    *request = RequestHeader::from(parts);
    Ok(())
}

/// A record of the gateway's decision log shape (`src/telemetry.rs`), for the load test's
/// request.
#[derive(serde::Serialize)]
struct Record<'a> {
    time: String,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    issuer: &'a str,
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
    decision: &'a str,
    mode: &'a str,
    reason: Option<String>,
    policies: &'a [&'a str],
    errors: &'a [&'a str],
    status: u16,
    proxy_error: Option<String>,
    upstream_failure: Option<&'a str>,
    latency_us: u64,
    snapshot: u64,
}

/// Per request: its id and when it began.
struct RequestState {
    id: String,
    started: Instant,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = Option<RequestState>;

    async fn request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Option<RequestState>,
    ) -> Result<bool> {
        let Some(check) = &self.jwt else {
            return Ok(false);
        };
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        match check.status(authorization, self.decider.as_ref()) {
            200 => Ok(false),
            refused => {
                session.respond_error(refused).await?;
                Ok(true)
            }
        }
    }

    fn new_ctx(&self) -> Option<RequestState> {
        // Without either flag, nothing per request (the plain baseline).
        (self.rewrite_headers || self.decision_log.is_some()).then(|| RequestState {
            id: self.request_ids.next(),
            started: Instant::now(),
        })
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Option<RequestState>,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.upstream_timeouts {
            peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
            peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT * 2);
            peer.options.read_timeout = Some(READ_WRITE_TIMEOUT);
            peer.options.write_timeout = Some(READ_WRITE_TIMEOUT);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Option<RequestState>,
    ) -> Result<()> {
        match ctx {
            Some(state) if self.rewrite_headers => {
                let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
                rewrite(upstream_request, &state.id, peer)
            }
            _ => Ok(()),
        }
    }

    async fn logging(
        &self,
        session: &mut Session,
        _error: Option<&pingora_core::Error>,
        ctx: &mut Option<RequestState>,
    ) {
        let (Some(log), Some(state)) = (&self.decision_log, ctx) else {
            return;
        };
        let header = session.req_header();
        let record = Record {
            time: portcullis::authz::context::rfc3339_utc(std::time::SystemTime::now()),
            request_id: &state.id,
            method: header.method.as_str(),
            path: header.uri.path(),
            route: "read-task",
            issuer: "http://127.0.0.1/",
            principal: "User::\"alice\"",
            action: "Action::\"ReadTask\"",
            resource: "Task::\"t1\"",
            decision: "allow",
            mode: "enforce",
            reason: None,
            policies: &["viewers-read"],
            errors: &[],
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            proxy_error: None,
            upstream_failure: None,
            latency_us: u64::try_from(state.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            snapshot: 1,
        };
        log.record(serde_json::to_string(&record).unwrap_or_default());
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = pingora_proxy::http_proxy_service(
        &server.configuration,
        PassThrough {
            upstream: args.upstream,
            rewrite_headers: args.rewrite_headers,
            upstream_timeouts: args.upstream_timeouts,
            decision_log: args.decision_log.as_ref().map(|path| {
                Arc::new(
                    DecisionLog::start(
                        &DecisionSink::File(path.clone()),
                        16_384,
                        LogMetrics::unregistered(),
                    )
                    .expect("the decision log file opens"),
                )
            }),
            jwt: args.verify_jwt.as_ref().map(|path| {
                let spki = SubjectPublicKeyInfoDer::from_pem_file(path).expect("a PEM public key");
                JwtCheck {
                    key: ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
                        .expect("an RSA public key"),
                    issuer: args.issuer.clone().unwrap_or_default(),
                    audience: args.audience.clone().unwrap_or_default(),
                }
            }),
            decider: args.decide.as_deref().map(Decider::load),
            request_ids: RequestIds::new(),
        },
    );
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = TlsSettings::intermediate(cert, key).expect("TLS settings");
            tls.enable_h2();
            service.add_tls_with_settings(&args.listen.to_string(), None, tls);
        }
        _ => service.add_tcp(&args.listen.to_string()),
    }
    if args.h2c {
        if let Some(proxy) = service.app_logic_mut() {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
    }
    server.add_service(service);
    server.run_forever();
}
