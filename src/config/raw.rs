//! Serde mirror of the files users write. Unknown keys are errors everywhere; nothing here is
//! validated beyond its shape — `config::compile` and the stage modules turn these into runtime
//! types and report every problem with its line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `portcullis.toml`: static settings. Changing them needs a restart.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayFile {
    pub server: RawServer,
    #[serde(default)]
    pub files: RawFiles,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub anonymous: RawAnonymous,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub decision_log: RawDecisionLog,
    pub authz_server: Option<RawAuthzServer>,
    pub cors: Option<RawCors>,
    pub directory: Option<RawDirectory>,
    pub bundle: Option<RawBundle>,
    #[serde(default)]
    pub reload: RawReload,
    #[serde(default)]
    pub issuers: Vec<Spanned<RawIssuer>>,
}

/// The admin listener: metrics and health.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port` of `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_admin_listen")]
    pub listen: Spanned<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_string())
}

/// CORS for browser clients on other origins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Origins whose scripts may read responses: `scheme://host[:port]`,
    /// `scheme://*.domain`, or `*`.
    pub allow_origins: Spanned<Vec<Spanned<String>>>,
    /// Request headers a preflight may ask for.
    #[serde(default = "default_cors_allow_headers")]
    pub allow_headers: Vec<Spanned<String>>,
    /// Response headers scripts may read beyond the safelisted ones; by default the request id
    /// header.
    pub expose_headers: Option<Vec<Spanned<String>>>,
    #[serde(default = "default_false")]
    pub allow_credentials: Spanned<bool>,
    #[serde(default = "default_cors_max_age")]
    pub max_age_seconds: u64,
}

fn default_cors_allow_headers() -> Vec<Spanned<String>> {
    ["authorization", "content-type"]
        .into_iter()
        .map(|name| Spanned::new(0..0, name.to_string()))
        .collect()
}

fn default_false() -> Spanned<bool> {
    Spanned::new(0..0, false)
}

fn default_cors_max_age() -> u64 {
    600
}

/// The decision listener for a proxy beside the gateway (external authorization).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthzServer {
    /// `host:port` of the decision listener.
    pub listen: Spanned<String>,
    /// CIDRs of the proxies that may ask.
    pub trusted_peers: Spanned<Vec<Spanned<String>>>,
    /// nginx `auth_request`: the headers carrying the original method, URI and host.
    #[serde(default = "default_nginx_method_header")]
    pub nginx_method_header: Spanned<String>,
    #[serde(default = "default_nginx_uri_header")]
    pub nginx_uri_header: Spanned<String>,
    #[serde(default = "default_nginx_host_header")]
    pub nginx_host_header: Spanned<String>,
}

fn default_nginx_method_header() -> Spanned<String> {
    Spanned::new(0..0, "x-original-method".to_string())
}

fn default_nginx_uri_header() -> Spanned<String> {
    Spanned::new(0..0, "x-original-uri".to_string())
}

fn default_nginx_host_header() -> Spanned<String> {
    Spanned::new(0..0, "host".to_string())
}

/// Routes and policies from a signed bundle in an OCI registry, instead of `[files]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundle {
    /// `registry/repository:tag` or `registry/repository@sha256:...`.
    pub reference: Spanned<String>,
    /// Time between two checks of the registry.
    #[serde(default = "default_bundle_poll")]
    pub poll_seconds: u64,
    /// Ed25519 public keys (PEM) that may sign; any one is enough.
    pub public_keys: Spanned<Vec<Spanned<String>>>,
    /// Where bundles are unpacked; the active one is kept for a restart with the registry down.
    pub cache_dir: Spanned<String>,
    /// Talk HTTP to the registry (loopback, a cluster-internal registry).
    #[serde(default)]
    pub plain_http: bool,
    /// A Docker config file (`docker login`'s `config.json`) with the registry's credentials.
    pub docker_config: Option<String>,
    /// Or the user name and password from these environment variables.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
}

fn default_bundle_poll() -> u64 {
    30
}

/// Directory sync from the identity provider's management API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    /// Time between the end of one full sync and the start of the next.
    #[serde(default = "default_directory_interval")]
    pub interval_seconds: Spanned<u64>,
    /// The last good directory, served after a restart while the API is down.
    pub cache_file: Option<Spanned<String>>,
    /// Deadline of one API request.
    #[serde(default = "default_directory_timeout")]
    pub request_timeout_seconds: u64,
    pub sources: Spanned<Vec<Spanned<RawDirectorySource>>>,
}

fn default_directory_interval() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}

fn default_directory_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSourceKind {
    Auth0,
    Okta,
}

/// One identity provider tenant. Secrets are named (a file, an environment variable), never
/// written here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectorySource {
    pub name: Spanned<String>,
    pub kind: RawSourceKind,
    /// `https://TENANT.auth0.com`, `https://ORG.okta.com`.
    pub url: Spanned<String>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// Auth0: the Management API identifier; default `<url>/api/v2/`.
    pub audience: Option<String>,
    /// Okta: an API token (`SSWS`).
    pub api_token_file: Option<String>,
    pub api_token_env: Option<String>,
    /// Okta: the PEM private key of an OAuth 2.0 service app (`private_key_jwt`).
    pub private_key_file: Option<String>,
    pub private_key_env: Option<String>,
    pub key_id: Option<String>,
    /// Okta OAuth scopes; default `okta.users.read okta.groups.read`.
    pub scopes: Option<Vec<String>>,
    pub users: Spanned<RawEntityMapping>,
    /// Auth0 roles and their members.
    pub roles: Option<Spanned<RawEntityMapping>>,
    /// Okta groups and their members.
    pub groups: Option<Spanned<RawEntityMapping>>,
    /// Okta's `search` expression for the groups listed.
    pub group_search: Option<String>,
    /// Auth0 organizations and their members.
    pub organizations: Option<Spanned<RawEntityMapping>>,
    /// Auth0 members' organization roles.
    pub organization_roles: Option<Spanned<RawOrganizationRoles>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntityMapping {
    pub entity_type: String,
    /// The field of the API's record that is the entity id (dotted: `profile.login`).
    pub id: String,
    /// Cedar attribute → field of the API's record.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrganizationRoles {
    pub entity_type: String,
    /// Template with `{organization}` and `{role}`.
    pub id: String,
}

/// Where decision records go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecisionLog {
    #[serde(default)]
    pub sink: RawSink,
    /// The file, for `sink = "file"`.
    pub path: Option<Spanned<String>>,
    /// Records waiting to be written; more are dropped (and counted).
    #[serde(default = "default_decision_log_buffer")]
    pub buffer_records: usize,
    /// The collector, for `sink = "http"`.
    pub url: Option<Spanned<String>>,
    /// `"ndjson"` (Vector `http_server`, Fluent Bit `http`, Logstash `http`) or `"splunk_hec"`.
    #[serde(default)]
    pub format: RawShipFormat,
    /// A token for the collector (`Authorization: Bearer`, or `Splunk` with HEC).
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    /// Where records wait until the collector has them.
    pub spool_dir: Option<Spanned<String>>,
    /// The spool's size limit; past it, records are dropped (and counted).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// A batch (one POST) holds at most this many bytes...
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
    /// ...and is sent at the latest this long after its first record.
    #[serde(default = "default_batch_milliseconds")]
    pub batch_milliseconds: u64,
    /// Deadline of one POST.
    #[serde(default = "default_ship_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawShipFormat {
    #[default]
    Ndjson,
    SplunkHec,
}

fn default_spool_max_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_batch_bytes() -> u64 {
    1024 * 1024
}

fn default_batch_milliseconds() -> u64 {
    1000
}

fn default_ship_timeout() -> u64 {
    10
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSink {
    #[default]
    Stdout,
    File,
    Http,
}

impl Default for RawDecisionLog {
    fn default() -> Self {
        RawDecisionLog {
            sink: RawSink::default(),
            path: None,
            buffer_records: default_decision_log_buffer(),
            url: None,
            format: RawShipFormat::default(),
            token_file: None,
            token_env: None,
            spool_dir: None,
            spool_max_bytes: default_spool_max_bytes(),
            batch_bytes: default_batch_bytes(),
            batch_milliseconds: default_batch_milliseconds(),
            timeout_seconds: default_ship_timeout(),
        }
    }
}

fn default_decision_log_buffer() -> usize {
    16_384
}

/// Hot reload of routes and policies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// Watch the routes file's and the policies' directories for changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet time after the last change before reloading.
    #[serde(default = "default_debounce_milliseconds")]
    pub debounce_milliseconds: u64,
}

impl Default for RawReload {
    fn default() -> Self {
        RawReload {
            watch: true,
            debounce_milliseconds: default_debounce_milliseconds(),
        }
    }
}

fn default_https_port() -> u16 {
    443
}

fn default_true() -> bool {
    true
}

fn default_debounce_milliseconds() -> u64 {
    200
}

/// Bounds on what a client may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Total size of the request's header fields (names, values, `: ` and CRLF); more → 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Number of header fields; more → 431.
    #[serde(default = "default_max_header_count")]
    pub max_header_count: usize,
    /// From a connection's accept, or the first byte of a request on a kept-alive connection,
    /// until the request head is complete; a slower client is disconnected.
    #[serde(default = "default_request_head_timeout_seconds")]
    pub request_head_timeout_seconds: u64,
    /// How long a kept-alive connection may wait for its next request.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// Largest request body forwarded, unless a route sets its own; larger → 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_bytes: default_max_header_bytes(),
            max_header_count: default_max_header_count(),
            request_head_timeout_seconds: default_request_head_timeout_seconds(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_header_count() -> usize {
    100
}

fn default_request_head_timeout_seconds() -> u64 {
    10
}

fn default_idle_timeout_seconds() -> u64 {
    60
}

fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}

/// Limits and caching that apply to every bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    /// Longer tokens are rejected before any decoding.
    #[serde(default = "default_max_token_bytes")]
    pub max_bytes: Spanned<usize>,
    /// Size of the verified-token cache; 0 turns it off.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            max_bytes: default_max_token_bytes(),
            cache_entries: default_cache_entries(),
        }
    }
}

fn default_max_token_bytes() -> Spanned<usize> {
    Spanned::new(0..0, crate::authn::DEFAULT_MAX_TOKEN_BYTES)
}

fn default_cache_entries() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `host:port` the proxy listens on.
    pub listen: Spanned<String>,
    /// Worker threads of the proxy service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Realm in `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Peers (CIDR ranges or addresses) whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// After SIGTERM: how long in-flight requests may run before the runtimes stop.
    #[serde(default = "default_grace_period_seconds")]
    pub grace_period_seconds: u64,
    /// Then: how long the runtimes get to finish their tasks.
    #[serde(default = "default_graceful_shutdown_timeout_seconds")]
    pub graceful_shutdown_timeout_seconds: u64,
    /// Unix socket the listening sockets are handed over on in a graceful upgrade.
    #[serde(default = "default_upgrade_socket")]
    pub upgrade_socket: String,
    /// Where the pid is written (for sending SIGQUIT/SIGHUP).
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plaintext listener.
    #[serde(default)]
    pub h2c: bool,
    /// The TLS listener.
    #[serde(default)]
    pub tls: Option<RawTls>,
}

/// TLS termination: a listener and the certificates it serves, chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `host:port` of the TLS listener.
    pub listen: Spanned<String>,
    /// Offer HTTP/2 by ALPN (`h2`, then `http/1.1`).
    #[serde(default = "default_true")]
    pub h2: bool,
    /// Answer every request on the plaintext listener with a redirect to HTTPS.
    #[serde(default)]
    pub redirect_plaintext: bool,
    /// The port clients reach the TLS listener on (behind a LoadBalancer Service, not
    /// necessarily `listen`'s), for redirects.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Certificate/key pairs; the first is the default (served to unknown or absent SNI).
    pub certificates: Spanned<Vec<Spanned<RawCertificate>>>,
}

/// One PEM certificate chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first (`tls.crt` of a Kubernetes TLS Secret).
    pub cert: String,
    /// PEM private key (`tls.key`).
    pub key: String,
    /// Names served; default: the certificate's subjectAltName DNS names.
    #[serde(default)]
    pub hosts: Vec<String>,
}

fn default_grace_period_seconds() -> u64 {
    10
}

fn default_graceful_shutdown_timeout_seconds() -> u64 {
    5
}

fn default_upgrade_socket() -> String {
    "/tmp/portcullis-upgrade.sock".to_string()
}

fn default_pid_file() -> String {
    "/tmp/portcullis.pid".to_string()
}

fn default_threads() -> usize {
    2
}

fn default_realm() -> String {
    "portcullis".to_string()
}

/// Where the hot-reloadable files live, relative to `portcullis.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    #[serde(default = "default_routes_file")]
    pub routes: String,
    #[serde(default = "default_policies_dir")]
    pub policies: String,
}

impl Default for RawFiles {
    fn default() -> Self {
        RawFiles {
            routes: default_routes_file(),
            policies: default_policies_dir(),
        }
    }
}

fn default_routes_file() -> String {
    "routes.toml".to_string()
}

fn default_policies_dir() -> String {
    "policies".to_string()
}

/// Names of the trusted identity headers the gateway sets on forwarded requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default = "default_principal_header")]
    pub principal: Spanned<String>,
    #[serde(default = "default_roles_header")]
    pub roles: Spanned<String>,
    #[serde(default = "default_tenant_header")]
    pub tenant: Spanned<String>,
    #[serde(default = "default_request_id_header")]
    pub request_id: Spanned<String>,
    /// More headers removed from every client request (beside the built-in list).
    #[serde(default)]
    pub strip: Vec<Spanned<String>>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            principal: default_principal_header(),
            roles: default_roles_header(),
            tenant: default_tenant_header(),
            request_id: default_request_id_header(),
            strip: Vec::new(),
        }
    }
}

fn default_principal_header() -> Spanned<String> {
    Spanned::new(0..0, "x-portcullis-principal".to_string())
}

fn default_roles_header() -> Spanned<String> {
    Spanned::new(0..0, "x-portcullis-roles".to_string())
}

fn default_tenant_header() -> Spanned<String> {
    Spanned::new(0..0, "x-portcullis-tenant".to_string())
}

fn default_request_id_header() -> Spanned<String> {
    Spanned::new(0..0, "x-request-id".to_string())
}

/// The Cedar principal used on `auth = "anonymous"` routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnonymous {
    #[serde(default = "default_anonymous_type")]
    pub principal_type: Spanned<String>,
    #[serde(default = "default_anonymous_id")]
    pub principal_id: String,
}

impl Default for RawAnonymous {
    fn default() -> Self {
        RawAnonymous {
            principal_type: default_anonymous_type(),
            principal_id: default_anonymous_id(),
        }
    }
}

fn default_anonymous_type() -> Spanned<String> {
    Spanned::new(0..0, "Anonymous".to_string())
}

fn default_anonymous_id() -> String {
    "anonymous".to_string()
}

/// One trusted token issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Exact value of the `iss` claim (Auth0 keeps the trailing slash).
    pub issuer: Spanned<String>,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Spanned<String>>,
    /// JWKS location; when absent it is read from OIDC discovery.
    #[serde(default)]
    pub jwks_uri: Option<Spanned<String>>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Claims a token must carry besides `iss`, `aud` and `exp`.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Required JOSE `typ`, e.g. `"at+jwt"` for RFC 9068 access tokens.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Background refresh interval when the JWKS response has no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// Bounds on the refresh interval, whatever `max-age` says.
    #[serde(default = "default_jwks_refresh_min")]
    pub jwks_refresh_min_seconds: u64,
    #[serde(default = "default_jwks_refresh_max")]
    pub jwks_refresh_max_seconds: u64,
    /// Minimum time between two refetches triggered by an unknown `kid`.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_cooldown_seconds: u64,
    /// Timeout of one discovery or JWKS fetch.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_seconds: u64,
    #[serde(default)]
    pub claims: RawClaimMapping,
}

fn default_algorithms() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "RS256".to_string())]
}

fn default_leeway() -> u64 {
    30
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_jwks_refresh_min() -> u64 {
    60
}

fn default_jwks_refresh_max() -> u64 {
    3600
}

fn default_jwks_cooldown() -> u64 {
    30
}

fn default_fetch_timeout() -> u64 {
    5
}

/// How token claims become the Cedar principal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimMapping {
    #[serde(default = "default_principal_type")]
    pub principal_type: Spanned<String>,
    #[serde(default = "default_principal_claim")]
    pub principal_id: String,
    #[serde(default)]
    pub roles: Option<Spanned<RawParentClaim>>,
    #[serde(default)]
    pub groups: Option<Spanned<RawParentClaim>>,
    #[serde(default)]
    pub permissions: Option<Spanned<RawParentClaim>>,
    #[serde(default)]
    pub tenant: Option<Spanned<RawTenantClaim>>,
    /// Claim holding the token's OAuth scopes (`scope` string or `scp` array).
    #[serde(default)]
    pub scopes: Option<String>,
    /// Principal attribute name → claim name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Default for RawClaimMapping {
    fn default() -> Self {
        RawClaimMapping {
            principal_type: default_principal_type(),
            principal_id: default_principal_claim(),
            roles: None,
            groups: None,
            permissions: None,
            tenant: None,
            scopes: None,
            attributes: BTreeMap::new(),
        }
    }
}

fn default_principal_type() -> Spanned<String> {
    Spanned::new(0..0, "User".to_string())
}

fn default_principal_claim() -> String {
    "sub".to_string()
}

/// A claim whose values (one string, or an array of strings) become Cedar parents of the
/// principal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParentClaim {
    pub claim: String,
    pub entity_type: String,
}

/// The tenant claim (Auth0 Organizations' `org_id`): a parent and an attribute of the principal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantClaim {
    pub claim: String,
    pub entity_type: String,
    #[serde(default = "default_tenant_attribute")]
    pub attribute: String,
}

fn default_tenant_attribute() -> String {
    "tenant".to_string()
}

/// `routes.toml`: upstreams and routes. Hot-reloadable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutesFile {
    #[serde(default)]
    pub defaults: RawRouteDefaults,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

/// Settings every route takes unless it sets its own.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouteDefaults {
    #[serde(default)]
    pub mode: RawMode,
    /// Kinds of request facts that may enter the Cedar context (default: all).
    #[serde(default)]
    pub context: Option<Spanned<Vec<String>>>,
}

/// Whether a route's authorization decision is enforced or only logged.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    #[default]
    Enforce,
    Audit,
}

/// An upstream: a pool of addresses, how one is chosen, how it is checked and reached.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// One `host:port`; a DNS name is resolved at run time and again every
    /// `resolve_interval_seconds` (a headless Service's pods are followed).
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    /// Several `host:port`s, each resolved like `address`.
    #[serde(default)]
    pub addresses: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_resolve_interval_seconds")]
    pub resolve_interval_seconds: u64,
    /// `http1` (default), `h2` (HTTP/2 over TLS) or `h2c` (HTTP/2 over plaintext, as gRPC uses).
    #[serde(default)]
    pub protocol: RawUpstreamProtocol,
    /// TLS to the upstream; `protocol = "h2"` implies it.
    #[serde(default)]
    pub tls: Option<Spanned<RawUpstreamTls>>,
    /// `round_robin` (default), `least_connections`, `random`, or `consistent_hash`.
    #[serde(default)]
    pub selection: RawSelection,
    /// For `consistent_hash`: `"principal"` or `"header:<name>"`.
    #[serde(default)]
    pub hash_key: Option<Spanned<String>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
    /// Consecutive connect failures that eject an address; 0 turns passive ejection off.
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    #[serde(default = "default_ejection_seconds")]
    pub ejection_seconds: u64,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Further attempts after a connect failure, for idempotent methods only.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawUpstreamProtocol {
    #[default]
    Http1,
    H2,
    H2c,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawSelection {
    #[default]
    RoundRobin,
    LeastConnections,
    Random,
    ConsistentHash,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// SNI and the name the certificate must carry; default: the host of the address.
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM file of the CA certificates to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// `false` skips certificate verification (logged loudly at every load).
    #[serde(default = "default_true")]
    pub verify: bool,
}

/// Active health checks: an HTTP GET of `path` on every address.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    #[serde(default = "default_health_interval_seconds")]
    pub interval_seconds: u64,
    /// Consecutive successes that make an address healthy again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: usize,
    /// Consecutive failures that make it unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: usize,
    #[serde(default = "default_health_timeout_milliseconds")]
    pub timeout_milliseconds: u64,
}

/// Upstream timeouts (milliseconds).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default = "default_connect_milliseconds")]
    pub connect_milliseconds: u64,
    /// Longest wait for any one read from the upstream.
    #[serde(default = "default_read_milliseconds")]
    pub read_milliseconds: u64,
    /// Longest wait for any one write to the upstream.
    #[serde(default = "default_write_milliseconds")]
    pub write_milliseconds: u64,
    /// The whole upstream exchange, as Envoy's route timeout.
    #[serde(default = "default_total_milliseconds")]
    pub total_milliseconds: u64,
    /// Read/write timeout of an upgraded (WebSocket) connection instead of the two above.
    #[serde(default = "default_tunnel_idle_milliseconds")]
    pub tunnel_idle_milliseconds: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            connect_milliseconds: default_connect_milliseconds(),
            read_milliseconds: default_read_milliseconds(),
            write_milliseconds: default_write_milliseconds(),
            total_milliseconds: default_total_milliseconds(),
            tunnel_idle_milliseconds: default_tunnel_idle_milliseconds(),
        }
    }
}

fn default_resolve_interval_seconds() -> u64 {
    5
}

fn default_eject_after_failures() -> u32 {
    3
}

fn default_ejection_seconds() -> u64 {
    30
}

fn default_retries() -> u32 {
    1
}

fn default_health_interval_seconds() -> u64 {
    5
}

fn default_healthy_threshold() -> usize {
    2
}

fn default_unhealthy_threshold() -> usize {
    3
}

fn default_health_timeout_milliseconds() -> u64 {
    1_000
}

fn default_connect_milliseconds() -> u64 {
    2_000
}

fn default_read_milliseconds() -> u64 {
    15_000
}

fn default_write_milliseconds() -> u64 {
    15_000
}

fn default_total_milliseconds() -> u64 {
    15_000
}

fn default_tunnel_idle_milliseconds() -> u64 {
    3_600_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Stable name used in logs and metrics; defaults to `"<METHODS> <path>"`.
    #[serde(default)]
    pub id: Option<String>,
    pub methods: Spanned<Vec<String>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    pub action: Spanned<String>,
    pub resource: Spanned<RawResource>,
    #[serde(default)]
    pub auth: RawAuthMode,
    /// `enforce` or `audit`; defaults to `[defaults] mode`.
    #[serde(default)]
    pub mode: Option<RawMode>,
    /// Kinds of request facts that may enter the Cedar context; defaults to `[defaults]`.
    #[serde(default)]
    pub context: Option<Spanned<Vec<String>>>,
    /// Protocol upgrades passed through after a permit (only `"websocket"`).
    #[serde(default)]
    pub upgrade: Option<Spanned<Vec<String>>>,
    /// Largest request body; defaults to `limits.max_body_bytes` of portcullis.toml.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Template such as `"{task_id}"`; `{name}` refers to a path parameter.
    pub id: String,
    /// Templates such as `'List::"{list_id}"'`.
    #[serde(default)]
    pub parents: Vec<String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawAuthMode {
    #[default]
    Required,
    Anonymous,
}
