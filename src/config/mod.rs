//! Configuration: the files users write (`raw`), compiled into validated runtime types.
//!
//! `portcullis.toml` holds static settings (listener, issuers, header names); `routes.toml` and
//! `policies/` form the hot-reloadable part, compiled together into a `Snapshot` because routes
//! are checked against the Cedar schema. Every problem found is reported with file and line.

mod authz_server;
mod bundle;
mod cors;
mod decision_log;
mod directory;
pub mod raw;
use crate::diagnostics as source;
mod upstreams;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use http::HeaderName;
use jsonwebtoken::Algorithm;

use crate::authn::jwks::JwksError;
use crate::authn::{
    Authenticator, ClaimMapping, ClaimRules, FetchPolicy, Issuer, KeySource, KeyStore, ParentClaim,
    TenantClaim, ASYMMETRIC_ALGORITHMS,
};
use crate::authz::{
    DecisionCache, PolicyBundle, PrincipalMemo, ResourceSpec, RouteAuthz, CONTEXT_KINDS,
};
use crate::bundle::puller::ACTIVE;
use crate::bundle::BundleSettings;
use crate::canonical::canonicalize_host;
use crate::cors::CorsPolicy;
pub use crate::decision_log::DecisionSink;
use crate::directory::{Directory, DirectorySettings};
use crate::model::{AuthMode, CompiledRoute, EnforcementMode, Snapshot};
use crate::routes::{PathTemplate, RouteSpec, RouteTable};
use crate::tls::{CertificateFiles, CertificateStore};
use crate::trust::Cidr;
use crate::upstream::{Pool, Pools};
pub use authz_server::{AuthzServerSettings, NginxHeaders};
pub(crate) use directory::is_loopback;
use raw::{RawGatewayFile, RawIssuer, RawMode, RawRoute, RawRouteDefaults, RawRoutesFile};
pub use source::{ConfigError, ConfigProblem, SourceFile};

/// How the process shuts down and hands over its sockets (pingora's settings).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upgrade_socket: String,
    pub pid_file: String,
}

/// The TLS listener and its certificates.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// ALPN offers `h2`.
    pub h2: bool,
    /// Requests on the plaintext listener are redirected to this listener.
    pub redirect_plaintext: bool,
    /// The port redirects name.
    pub https_port: u16,
    pub certificates: Arc<CertificateStore>,
}

/// Names of the identity headers set on forwarded requests, and the deployment's own headers
/// removed from client requests (`[headers] strip`).
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub principal: HeaderName,
    pub roles: HeaderName,
    pub tenant: HeaderName,
    pub request_id: HeaderName,
    pub strip: Vec<HeaderName>,
}

/// One issuer's settings, validated.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// Line of the `[[issuers]]` table in portcullis.toml.
    pub line: Option<usize>,
    pub rules: ClaimRules,
    pub algorithms: Vec<Algorithm>,
    pub key_source: KeySource,
    pub fetch: FetchPolicy,
    pub mapping: ClaimMapping,
}

/// `portcullis.toml`, validated. Changing it needs a restart.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub threads: usize,
    pub realm: String,
    pub routes_file: PathBuf,
    pub policies_dir: PathBuf,
    pub headers: IdentityHeaders,
    pub anonymous_principal: EntityUid,
    pub max_token_bytes: usize,
    pub token_cache_entries: usize,
    /// Peers whose forwarding headers (`X-Forwarded-For`, `Forwarded`, ...) are believed.
    pub trusted_proxies: Vec<Cidr>,
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    /// Deadline for receiving a whole request head.
    pub request_head_timeout: Duration,
    /// Keep-alive idle timeout between requests on one connection.
    pub idle_timeout: Duration,
    /// Largest request body, unless a route sets its own.
    pub max_body_bytes: u64,
    /// HTTP/2 with prior knowledge on the plaintext listener.
    pub h2c: bool,
    /// The TLS listener, when configured.
    pub tls: Option<TlsListener>,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    pub decision_sink: DecisionSink,
    pub decision_buffer: usize,
    /// CORS for browser clients, when configured (`[cors]`).
    pub cors: Option<CorsPolicy>,
    /// The external authorization listener, when configured.
    pub authz_server: Option<AuthzServerSettings>,
    /// Directory sync from the identity provider, when configured.
    pub directory: Option<DirectorySettings>,
    /// Routes and policies from a signed OCI bundle, when configured.
    pub bundle: Option<BundleSettings>,
    /// Watch the routes and policies for changes; `None` when off.
    pub reload_debounce: Option<Duration>,
    pub lifecycle: Lifecycle,
    pub issuers: Vec<IssuerSettings>,
}

/// A header name from the configuration; a problem naming its line when it is none.
fn header_name(
    file: &SourceFile,
    spanned: &toml::Spanned<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<HeaderName> {
    HeaderName::from_str(spanned.get_ref())
        .map_err(|_| {
            problems.push(file.problem(
                Some(spanned.span()),
                format!("{:?} is not a valid HTTP header name", spanned.get_ref()),
            ))
        })
        .ok()
}

/// The CIDR ranges of the list `key`; a problem naming the line of each one that is none.
fn cidrs(
    file: &SourceFile,
    ranges: &[toml::Spanned<String>],
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<Cidr> {
    ranges
        .iter()
        .filter_map(|range| {
            range
                .get_ref()
                .parse::<Cidr>()
                .map_err(|e| problems.push(file.problem(Some(range.span()), format!("{key}: {e}"))))
                .ok()
        })
        .collect()
}

impl Settings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = SourceFile::read(path)?;
        let raw: RawGatewayFile = file.parse_toml()?;
        let mut problems = Vec::new();
        let base = path.parent().unwrap_or(Path::new("."));

        let listen = match raw.server.listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(file.problem(
                    Some(raw.server.listen.span()),
                    format!(
                        "listen = {:?} is not an address like \"127.0.0.1:8080\"",
                        raw.server.listen.get_ref()
                    ),
                ));
                None
            }
        };
        if raw.server.threads == 0 {
            problems.push(file.problem(None, "server.threads must be at least 1"));
        }

        let mut header =
            |spanned: &toml::Spanned<String>| header_name(&file, spanned, &mut problems);
        let headers = (
            header(&raw.headers.principal),
            header(&raw.headers.roles),
            header(&raw.headers.tenant),
            header(&raw.headers.request_id),
        );
        let strip: Vec<HeaderName> = raw
            .headers
            .strip
            .iter()
            .filter_map(|name| header_name(&file, name, &mut problems))
            .collect();

        let anonymous_principal =
            match EntityTypeName::from_str(raw.anonymous.principal_type.get_ref()) {
                Ok(ty) => Some(EntityUid::from_type_name_and_id(
                    ty,
                    EntityId::new(&raw.anonymous.principal_id),
                )),
                Err(e) => {
                    problems.push(file.problem(
                        Some(raw.anonymous.principal_type.span()),
                        format!("not a Cedar entity type: {e}"),
                    ));
                    None
                }
            };

        let admin_listen = match raw.admin.listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(file.problem(
                    Some(raw.admin.listen.span()),
                    format!(
                        "listen = {:?} is not an address like \"127.0.0.1:9901\"",
                        raw.admin.listen.get_ref()
                    ),
                ));
                None
            }
        };
        let decision_sink = match decision_log::compile_sink(&raw.decision_log, &file, base) {
            Ok(sink) => Some(sink),
            Err(found) => {
                problems.extend(found);
                None
            }
        };

        let cors = match (&raw.cors, &headers.3) {
            (Some(raw), Some(request_id)) => match cors::compile_cors(raw, &file, request_id) {
                Ok(policy) => Some(policy),
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
            _ => None,
        };

        let authz_server = match raw
            .authz_server
            .as_ref()
            .map(|raw| authz_server::compile_authz_server(raw, &file))
        {
            Some(Ok(compiled)) => Some(compiled),
            Some(Err(found)) => {
                problems.extend(found);
                None
            }
            None => None,
        };

        let bundle = match raw
            .bundle
            .as_ref()
            .map(|raw| bundle::compile_bundle(raw, &file, base))
        {
            Some(Ok(compiled)) => Some(compiled),
            Some(Err(found)) => {
                problems.extend(found);
                None
            }
            None => None,
        };

        let directory = match raw
            .directory
            .as_ref()
            .map(|raw| directory::compile_directory(raw, &file, base))
        {
            Some(Ok(compiled)) => Some(compiled),
            Some(Err(found)) => {
                problems.extend(found);
                None
            }
            None => None,
        };

        let trusted_proxies = cidrs(
            &file,
            &raw.server.trusted_proxies,
            "trusted_proxies",
            &mut problems,
        );

        if raw.limits.max_header_bytes < 1024 || raw.limits.max_header_count < 8 {
            problems.push(file.problem(
                None,
                "limits.max_header_bytes must be at least 1024 and limits.max_header_count at least 8",
            ));
        }
        if raw.limits.request_head_timeout_seconds == 0 || raw.limits.idle_timeout_seconds == 0 {
            problems.push(file.problem(
                None,
                "limits.request_head_timeout_seconds and limits.idle_timeout_seconds must be at least 1",
            ));
        }

        let tls = raw
            .server
            .tls
            .as_ref()
            .and_then(|tls| tls_listener(tls, &file, base, &mut problems));

        let max_token_bytes = *raw.tokens.max_bytes.get_ref();
        if max_token_bytes < 256 {
            problems.push(file.problem(
                Some(raw.tokens.max_bytes.span()),
                "tokens.max_bytes must be at least 256 (the default is 8192)",
            ));
        }

        let mut issuers = Vec::new();
        let mut seen = HashSet::new();
        for raw_issuer in &raw.issuers {
            let span = raw_issuer.span();
            if !seen.insert(raw_issuer.get_ref().issuer.get_ref().clone()) {
                problems.push(file.problem(Some(span.clone()), "this issuer is configured twice"));
            }
            match issuer_settings(raw_issuer.get_ref(), &file) {
                Ok(mut settings) => {
                    settings.line = Some(file.line_of(span.start));
                    issuers.push(settings);
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if issuers.is_empty() && problems.is_empty() {
            log::warn!(
                "{}: no [[issuers]]: only anonymous routes can be reached",
                path.display()
            );
        }

        match (
            listen,
            headers,
            anonymous_principal,
            admin_listen,
            decision_sink,
        ) {
            (
                Some(listen),
                (Some(principal), Some(roles), Some(tenant), Some(request_id)),
                Some(anonymous_principal),
                Some(admin_listen),
                Some(decision_sink),
            ) if problems.is_empty() => Ok(Settings {
                file: path.to_path_buf(),
                listen,
                threads: raw.server.threads,
                realm: raw.server.realm,
                routes_file: match &bundle {
                    Some(bundle) => bundle.cache_dir.join(ACTIVE).join("routes.toml"),
                    None => base.join(&raw.files.routes),
                },
                policies_dir: match &bundle {
                    Some(bundle) => bundle.cache_dir.join(ACTIVE).join("policies"),
                    None => base.join(&raw.files.policies),
                },
                headers: IdentityHeaders {
                    principal,
                    roles,
                    tenant,
                    request_id,
                    strip,
                },
                anonymous_principal,
                max_token_bytes,
                token_cache_entries: raw.tokens.cache_entries,
                trusted_proxies,
                max_header_bytes: raw.limits.max_header_bytes,
                max_header_count: raw.limits.max_header_count,
                request_head_timeout: Duration::from_secs(raw.limits.request_head_timeout_seconds),
                idle_timeout: Duration::from_secs(raw.limits.idle_timeout_seconds),
                max_body_bytes: raw.limits.max_body_bytes,
                h2c: raw.server.h2c,
                tls,
                admin_listen,
                decision_sink,
                decision_buffer: raw.decision_log.buffer_records,
                cors,
                authz_server,
                directory,
                // With a bundle, the puller reloads when it swaps one in.
                reload_debounce: (raw.reload.watch && bundle.is_none())
                    .then(|| Duration::from_millis(raw.reload.debounce_milliseconds)),
                bundle,
                lifecycle: Lifecycle {
                    grace_period: Duration::from_secs(raw.server.grace_period_seconds),
                    graceful_shutdown_timeout: Duration::from_secs(
                        raw.server.graceful_shutdown_timeout_seconds,
                    ),
                    upgrade_socket: raw.server.upgrade_socket.clone(),
                    pid_file: raw.server.pid_file.clone(),
                },
                issuers,
            }),
            _ => Err(problems.into()),
        }
    }

    /// Principal entity types of every issuer, for checking routes against the schema.
    fn authenticated_principal_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .issuers
            .iter()
            .map(|i| i.mapping.principal_type.clone())
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// Creates the authenticator (key stores are empty until fetched).
    pub fn authenticator(&self) -> Result<Authenticator, ConfigError> {
        self.authenticator_with(|issuer| KeyStore::new(issuer.key_source.clone(), issuer.fetch))
    }

    /// Creates the authenticator with key stores made by `keys`.
    pub fn authenticator_with(
        &self,
        keys: impl Fn(&IssuerSettings) -> Result<KeyStore, JwksError>,
    ) -> Result<Authenticator, ConfigError> {
        let mut issuers = Vec::new();
        for settings in &self.issuers {
            let keys = keys(settings)
                .map_err(|e| ConfigError::from(ConfigProblem::file(&self.file, e.to_string())))?;
            issuers.push(Issuer {
                rules: settings.rules.clone(),
                algorithms: settings.algorithms.clone(),
                mapping: settings.mapping.clone(),
                keys: Arc::new(keys),
            });
        }
        Ok(Authenticator::new(
            issuers,
            self.max_token_bytes,
            self.token_cache_entries,
        ))
    }
}

/// `[server.tls]`: the listener address and every certificate pair, loaded now so that a
/// broken pair is reported at its line.
fn tls_listener(
    raw: &raw::RawTls,
    file: &SourceFile,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<TlsListener> {
    let listen = match raw.listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(file.problem(
                Some(raw.listen.span()),
                format!(
                    "server.tls.listen = {:?} is not an address like \"0.0.0.0:8443\"",
                    raw.listen.get_ref()
                ),
            ));
            None
        }
    };
    if raw.certificates.get_ref().is_empty() {
        problems.push(file.problem(
            Some(raw.certificates.span()),
            "server.tls.certificates must list at least one { cert = \"...\", key = \"...\" }",
        ));
        return None;
    }
    let pairs = raw
        .certificates
        .get_ref()
        .iter()
        .map(|pair| CertificateFiles {
            cert: base.join(&pair.get_ref().cert),
            key: base.join(&pair.get_ref().key),
            hosts: pair.get_ref().hosts.clone(),
        })
        .collect();
    let certificates = match CertificateStore::load(pairs) {
        Ok(certificates) => certificates,
        Err(errors) => {
            for (index, error) in errors.0 {
                let span = raw.certificates.get_ref().get(index).map(|p| p.span());
                problems.push(file.problem(span, error.to_string()));
            }
            return None;
        }
    };
    Some(TlsListener {
        listen: listen?,
        h2: raw.h2,
        redirect_plaintext: raw.redirect_plaintext,
        https_port: raw.https_port,
        certificates: Arc::new(certificates),
    })
}

fn issuer_settings(
    raw: &RawIssuer,
    file: &SourceFile,
) -> Result<IssuerSettings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let issuer = raw.issuer.get_ref().clone();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        problems.push(file.problem(
            Some(raw.issuer.span()),
            format!("issuer {issuer:?} must be an http(s) URL, exactly as in the tokens' \"iss\""),
        ));
    }
    if raw.audiences.is_empty() {
        problems.push(file.problem(
            Some(raw.issuer.span()),
            "audiences must list at least one accepted \"aud\" value",
        ));
    }
    let mut algorithms = Vec::new();
    for alg in &raw.algorithms {
        match Algorithm::from_str(alg.get_ref()) {
            Ok(a) if ASYMMETRIC_ALGORITHMS.contains(&a) => algorithms.push(a),
            _ => problems.push(file.problem(
                Some(alg.span()),
                format!(
                    "algorithm {:?} is not allowed; use asymmetric ones: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                    alg.get_ref()
                ),
            )),
        }
    }
    if raw.algorithms.is_empty() {
        problems.push(file.problem(Some(raw.issuer.span()), "algorithms must not be empty"));
    }
    let key_source = match &raw.jwks_uri {
        Some(uri)
            if uri.get_ref().starts_with("https://") || uri.get_ref().starts_with("http://") =>
        {
            KeySource::JwksUri(uri.get_ref().clone())
        }
        Some(uri) => {
            problems.push(file.problem(Some(uri.span()), "jwks_uri must be an http(s) URL"));
            KeySource::JwksUri(String::new())
        }
        None => KeySource::Discovery {
            issuer: issuer.clone(),
        },
    };
    if [
        raw.jwks_refresh_seconds,
        raw.jwks_refresh_min_seconds,
        raw.jwks_refresh_max_seconds,
        raw.fetch_timeout_seconds,
        raw.jwks_cooldown_seconds,
    ]
    .contains(&0)
    {
        problems.push(file.problem(
            Some(raw.issuer.span()),
            "jwks_refresh_seconds, jwks_refresh_min_seconds, jwks_refresh_max_seconds, jwks_cooldown_seconds and fetch_timeout_seconds must be at least 1",
        ));
    }
    if raw.jwks_refresh_min_seconds > raw.jwks_refresh_max_seconds {
        problems.push(file.problem(
            Some(raw.issuer.span()),
            format!(
                "jwks_refresh_min_seconds ({}) must not exceed jwks_refresh_max_seconds ({})",
                raw.jwks_refresh_min_seconds, raw.jwks_refresh_max_seconds
            ),
        ));
    }
    let claims = &raw.claims;
    let parent = |p: &Option<toml::Spanned<raw::RawParentClaim>>| {
        p.as_ref().map(|p| ParentClaim {
            claim: p.get_ref().claim.clone(),
            entity_type: p.get_ref().entity_type.clone(),
        })
    };
    let mapping = ClaimMapping {
        principal_type: claims.principal_type.get_ref().clone(),
        principal_id_claim: claims.principal_id.clone(),
        roles: parent(&claims.roles),
        groups: parent(&claims.groups),
        permissions: parent(&claims.permissions),
        tenant: claims.tenant.as_ref().map(|t| TenantClaim {
            claim: t.get_ref().claim.clone(),
            entity_type: t.get_ref().entity_type.clone(),
            attribute: t.get_ref().attribute.clone(),
        }),
        scopes: claims.scopes.clone(),
        attributes: claims
            .attributes
            .iter()
            .map(|(attr, claim)| (attr.clone(), claim.clone()))
            .collect(),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(IssuerSettings {
        line: None,
        rules: ClaimRules {
            issuer,
            audiences: raw.audiences.clone(),
            leeway_seconds: raw.leeway_seconds,
            required: raw.required_claims.clone(),
            token_type: raw.token_type.clone(),
        },
        algorithms,
        key_source,
        fetch: FetchPolicy {
            refresh_every: Duration::from_secs(raw.jwks_refresh_seconds),
            refresh_min: Duration::from_secs(raw.jwks_refresh_min_seconds),
            refresh_max: Duration::from_secs(raw.jwks_refresh_max_seconds),
            unknown_kid_cooldown: Duration::from_secs(raw.jwks_cooldown_seconds),
            timeout: Duration::from_secs(raw.fetch_timeout_seconds),
        },
        mapping,
    })
}

/// Loads `routes.toml` and `policies/` into a snapshot, checking every route against the
/// schema. Reports every problem found.
pub fn load_snapshot(
    settings: &Settings,
    version: u64,
    previous: Option<&Snapshot>,
    directory: Option<&Arc<Directory>>,
) -> Result<Snapshot, ConfigError> {
    let mut directory_conflicts = 0;
    let bundle = PolicyBundle::load(&settings.policies_dir).and_then(|bundle| match directory {
        None => Ok(bundle),
        Some(directory) => bundle
            .with_directory(directory.clone(), &directory_user_types(settings))
            .map(|(bundle, conflicts)| {
                directory_conflicts = conflicts;
                bundle
            })
            .map_err(|e| {
                vec![ConfigProblem::file(
                    &settings.file,
                    format!("[directory]: {e}"),
                )]
            }),
    });
    let routes = SourceFile::read(&settings.routes_file)
        .and_then(|file| file.parse_toml::<RawRoutesFile>().map(|raw| (file, raw)));
    let (bundle, (routes_file, raw)) = match (bundle, routes) {
        (Ok(bundle), Ok(routes)) => (bundle, routes),
        (bundle, routes) => {
            let mut problems = bundle.err().unwrap_or_default();
            problems.extend(routes.err());
            return Err(problems.into());
        }
    };

    let mut problems = claim_mapping_problems(settings, &bundle);
    if let Some(directory) = &settings.directory {
        problems.extend(directory::directory_mapping_problems(
            directory,
            &settings.authenticated_principal_types(),
            &bundle,
            &settings.file,
        ));
    }
    let routes_dir = settings.routes_file.parent().unwrap_or(Path::new("."));
    let mut specs = BTreeMap::new();
    for (name, upstream) in &raw.upstreams {
        match upstreams::compile_upstream(name, upstream, &routes_file, routes_dir) {
            Ok(spec) => {
                specs.insert(name.clone(), spec);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    let pools = match Pools::build(&specs, previous.map(|p| &p.pools)) {
        Ok(pools) => pools,
        Err((name, e)) => {
            let span = raw.upstreams.get(&name).map(|u| u.span());
            problems.push(routes_file.problem(span, format!("upstream {name:?}: {e}")));
            Pools::default()
        }
    };
    let upstreams: BTreeMap<String, Arc<Pool>> = specs
        .keys()
        .filter_map(|name| pools.get(name).map(|pool| (name.clone(), pool.clone())))
        .collect();

    let authenticated_types = settings.authenticated_principal_types();
    let anonymous_types = vec![settings.anonymous_principal.type_name().to_string()];
    let mut specs = Vec::new();
    let mut lines = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for route in &raw.routes {
        let line = routes_file.line_of(route.span().start);
        let shared = RouteInputs {
            defaults: &raw.defaults,
            file: &routes_file,
            upstreams: &upstreams,
            bundle: &bundle,
            authenticated_types: &authenticated_types,
            anonymous_types: &anonymous_types,
            max_body_bytes: settings.max_body_bytes,
        };
        match compile_route(route.get_ref(), line, &shared) {
            Ok(spec) => {
                if let Some(first) = ids.insert(spec.payload.id.to_string(), line) {
                    problems.push(routes_file.problem(
                        Some(route.span()),
                        format!(
                            "route id {:?} is already used by the route at line {first}",
                            spec.payload.id
                        ),
                    ));
                }
                specs.push(spec);
                lines.push(line);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        return Err(problems.into());
    }
    let routes = RouteTable::build(specs).map_err(|overlaps| {
        ConfigError::from(
            overlaps
                .into_iter()
                .map(|o| ConfigProblem {
                    file: routes_file.path.clone(),
                    line: Some(lines[o.second]),
                    message: format!(
                        "this route overlaps the route at line {}: both match {} on the same path; make their paths or methods differ",
                        lines[o.first], o.method
                    ),
                })
                .collect::<Vec<_>>(),
        )
    })?;
    Ok(Snapshot {
        version,
        directory: directory.map(|d| d.version.clone()),
        directory_conflicts,
        routes,
        bundle,
        principals: PrincipalMemo::default(),
        decisions: DecisionCache::default(),
        pools,
    })
}

/// The entity types the directory sources' users have.
fn directory_user_types(settings: &Settings) -> Vec<String> {
    settings
        .directory
        .iter()
        .flat_map(|d| d.sources.iter().map(|s| s.users.entity_type.clone()))
        .collect()
}

/// Checks every issuer's claim mapping against the schema: the principal type exists, each
/// parent type (roles, groups, permissions, tenant) may be a parent of it, and each mapped
/// attribute is declared on it. Otherwise every token of that issuer would be denied.
fn claim_mapping_problems(settings: &Settings, bundle: &PolicyBundle) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for issuer in &settings.issuers {
        let mapping = &issuer.mapping;
        let mut problem = |message: String| {
            problems.push(ConfigProblem {
                file: settings.file.clone(),
                line: issuer.line,
                message: format!("issuer {:?}: {message}", issuer.rules.issuer),
            })
        };
        let Some(shape) = bundle.contexts.entity_type(&mapping.principal_type) else {
            problem(format!(
                "claims.principal_type {:?} is not an entity type of the schema",
                mapping.principal_type
            ));
            continue;
        };
        let parents = [
            ("roles", mapping.roles.as_ref().map(|p| &p.entity_type)),
            ("groups", mapping.groups.as_ref().map(|p| &p.entity_type)),
            (
                "permissions",
                mapping.permissions.as_ref().map(|p| &p.entity_type),
            ),
            ("tenant", mapping.tenant.as_ref().map(|t| &t.entity_type)),
        ];
        for (key, entity_type) in parents {
            let Some(entity_type) = entity_type else {
                continue;
            };
            if !shape.member_of.contains(entity_type) {
                problem(format!(
                    "claims.{key}: the schema does not allow {entity_type:?} as a parent of {:?}; declare `entity {} in [{entity_type}, ...]`",
                    mapping.principal_type, mapping.principal_type
                ));
            }
        }
        let attributes = mapping
            .attributes
            .iter()
            .map(|(attribute, _)| ("attributes", attribute))
            .chain(
                mapping
                    .tenant
                    .as_ref()
                    .map(|t| ("tenant.attribute", &t.attribute)),
            );
        for (key, attribute) in attributes {
            if !shape.attributes.contains(attribute) {
                problem(format!(
                    "claims.{key}: {:?} declares no attribute {attribute:?}",
                    mapping.principal_type
                ));
            }
        }
    }
    problems
}

/// The context kinds a route selects, checked against [`CONTEXT_KINDS`].
fn context_kinds(
    selection: Option<&toml::Spanned<Vec<String>>>,
    file: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<String> {
    let Some(selection) = selection else {
        return CONTEXT_KINDS.iter().map(|k| k.to_string()).collect();
    };
    for kind in selection.get_ref() {
        if !CONTEXT_KINDS.contains(&kind.as_str()) {
            problems.push(file.problem(
                Some(selection.span()),
                format!(
                    "context kind {kind:?} is unknown; use any of: {}",
                    CONTEXT_KINDS.join(", ")
                ),
            ));
        }
    }
    selection.get_ref().clone()
}

/// What every route of a routes.toml is compiled against.
struct RouteInputs<'a> {
    defaults: &'a RawRouteDefaults,
    file: &'a SourceFile,
    upstreams: &'a BTreeMap<String, Arc<Pool>>,
    bundle: &'a PolicyBundle,
    authenticated_types: &'a [String],
    anonymous_types: &'a [String],
    max_body_bytes: u64,
}

fn compile_route(
    route: &RawRoute,
    line: usize,
    inputs: &RouteInputs<'_>,
) -> Result<RouteSpec<CompiledRoute>, Vec<ConfigProblem>> {
    let RouteInputs {
        defaults,
        file,
        upstreams,
        bundle,
        authenticated_types,
        anonymous_types,
        max_body_bytes,
    } = *inputs;
    let mut problems = Vec::new();
    let template = PathTemplate::parse(route.path.get_ref())
        .map_err(|e| {
            problems.push(file.problem(
                Some(route.path.span()),
                format!("path {:?}: {e}", route.path.get_ref()),
            ))
        })
        .ok();
    let methods: Vec<String> = route.methods.get_ref().clone();
    if methods.is_empty() {
        problems.push(file.problem(
            Some(route.methods.span()),
            "methods must list at least one method",
        ));
    }
    for method in &methods {
        let is_token = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
        if !is_token {
            problems.push(file.problem(
                Some(route.methods.span()),
                format!("method {method:?} must be an upper-case HTTP method such as \"GET\""),
            ));
        }
    }
    let upstream = upstreams.get(route.upstream.get_ref()).cloned();
    if upstream.is_none() {
        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        problems.push(file.problem(
            Some(route.upstream.span()),
            format!(
                "unknown upstream {:?}; define it as [upstreams.{}] (defined: {})",
                route.upstream.get_ref(),
                route.upstream.get_ref(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let auth = match route.auth {
        raw::RawAuthMode::Required => AuthMode::Required,
        raw::RawAuthMode::Anonymous => AuthMode::Anonymous,
    };
    let principal_types = match auth {
        AuthMode::Required => authenticated_types,
        AuthMode::Anonymous => anonymous_types,
    };
    let mode = match route.mode.unwrap_or(defaults.mode) {
        RawMode::Enforce => EnforcementMode::Enforce,
        RawMode::Audit => EnforcementMode::Audit,
    };
    let kinds = context_kinds(
        route.context.as_ref().or(defaults.context.as_ref()),
        file,
        &mut problems,
    );
    let authz = template.as_ref().and_then(|template| {
        let params: Vec<&str> = template.param_names().collect();
        let resource = route.resource.get_ref();
        RouteAuthz::compile(
            route.action.get_ref(),
            &ResourceSpec {
                entity_type: &resource.entity_type,
                id: &resource.id,
                parents: &resource.parents,
            },
            &params,
            &kinds,
            principal_types,
            bundle,
        )
        .map_err(|e| problems.push(file.problem(Some(route.action.span()), e)))
        .ok()
    });
    let host = route.host.as_ref().and_then(|host| {
        let canonical = canonicalize_host(host.get_ref()).ok();
        if canonical.is_none() {
            problems.push(file.problem(
                Some(host.span()),
                format!(
                    "host {:?} must be a DNS name or an IP address, with an optional port",
                    host.get_ref()
                ),
            ));
        }
        canonical
    });
    let mut upgrades = Vec::new();
    for protocol in route.upgrade.iter().flat_map(|u| u.get_ref()) {
        if protocol.eq_ignore_ascii_case("websocket") {
            upgrades.push("websocket".to_string());
        } else if let Some(list) = &route.upgrade {
            problems.push(file.problem(
                Some(list.span()),
                format!("upgrade {protocol:?} is not supported; the only upgrade is \"websocket\""),
            ));
        }
    }
    match (template, upstream, authz) {
        (Some(template), Some(upstream), Some(authz)) if problems.is_empty() => {
            let id = route
                .id
                .clone()
                .unwrap_or_else(|| format!("{} {}", methods.join(","), route.path.get_ref()));
            Ok(RouteSpec {
                host,
                methods,
                template,
                payload: CompiledRoute {
                    id: id.into(),
                    action_name: authz.action.to_string().into(),
                    line,
                    upstream,
                    auth,
                    mode,
                    authz,
                    upgrades,
                    max_body_bytes: route.max_body_bytes.unwrap_or(max_body_bytes),
                },
            })
        }
        _ => Err(problems),
    }
}
