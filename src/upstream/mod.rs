//! Upstream pools: the addresses of an upstream, which one serves a request, whether each is
//! healthy, and how it is reached (protocol, TLS, timeouts).
//!
//! Membership, active health checks and selection are pingora-load-balancing's `LoadBalancer`;
//! DNS names are resolved by our discovery (`dns.rs`) at run time and again on an
//! interval, never while loading the configuration. Added here: least-connections selection
//! (pingora-load-balancing has none), passive ejection after consecutive connect failures, and
//! the `HttpPeer` each request is sent to. A pool does no I/O until `start`; a reload that keeps
//! an upstream's definition keeps its pool, so health state survives reloads.

mod dns;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderName;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::WrappedX509;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use dns::DnsDiscovery;

/// How an upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 with prior knowledge over plaintext (gRPC services inside a cluster).
    H2c,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// SNI sent and the name the certificate must carry.
    pub sni: String,
    /// CA certificates trusted instead of the system's.
    pub ca_file: Option<PathBuf>,
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The authenticated principal (anonymous requests hash on the client address).
    Principal,
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    RoundRobin,
    LeastConnections,
    Random,
    ConsistentHash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub path: String,
    pub interval: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub after_failures: u32,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub total: Duration,
    /// Read and write timeout of an upgraded (WebSocket) connection, which may be quiet long.
    pub tunnel_idle: Duration,
}

/// One `host:port` of an upstream, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port` (IPv6 in brackets) without resolving anything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("address {text:?} must be host:port");
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let plausible = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
        if !plausible {
            return Err(invalid());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// The address when the host is an IP literal.
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// An upstream as configured, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub addresses: Vec<HostPort>,
    pub resolve_every: Duration,
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTls>,
    pub selection: Selection,
    pub health_check: Option<HealthCheckSpec>,
    pub ejection: Option<Ejection>,
    pub timeouts: Timeouts,
    pub retries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
}

/// The selection structure, by policy. Least-connections keeps a round-robin balancer for
/// membership and health and picks by its own counters.
enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

/// Addresses tried per selection before giving up (pingora's bound on the search).
const MAX_SELECTION_STEPS: usize = 256;

/// Connect-failure bookkeeping of one address.
#[derive(Default)]
struct AddressState {
    consecutive_failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    in_flight: AtomicUsize,
}

/// A running upstream: its balancer and health, and how to reach it.
pub struct Pool {
    pub name: String,
    pub spec: UpstreamSpec,
    balancer: Balancer,
    /// Bookkeeping per address, read on every selection: swapped, never locked, on the
    /// request path; addresses no longer members are dropped as new ones come.
    addresses: ArcSwap<HashMap<SocketAddr, Arc<AddressState>>>,
    ca: Option<Arc<[WrappedX509]>>,
    /// SHA-256 of the CA file as loaded, so that a reload notices a CA rotated in place.
    ca_fingerprint: Vec<u8>,
    /// Where least-connections starts looking, so that ties rotate.
    next_start: AtomicUsize,
    /// Some address has been ejected at some point: only then are ejections looked up.
    ejected_any: AtomicBool,
    started: AtomicBool,
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Ends the discovery and health-check loop of this pool (no receiver: never started).
        let _ = self.stop.send(true);
    }
}

impl Pool {
    /// Builds the pool; no I/O beyond reading the CA file. IP-literal addresses are members at
    /// once, DNS names after the first resolution in `start`.
    pub fn build(name: &str, spec: UpstreamSpec) -> Result<Self, PoolError> {
        let ca_fingerprint = ca_fingerprint(&spec);
        let ca = match spec.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            Some(path) => Some(load_ca(path)?),
            None => None,
        };
        let balancer = match &spec.selection {
            Selection::RoundRobin | Selection::LeastConnections => {
                Balancer::RoundRobin(Arc::new(balancer(&spec, ca.as_ref())))
            }
            Selection::Random => Balancer::Random(Arc::new(balancer(&spec, ca.as_ref()))),
            Selection::ConsistentHash(_) => {
                Balancer::Consistent(Arc::new(balancer(&spec, ca.as_ref())))
            }
        };
        let (stop, _) = tokio::sync::watch::channel(false);
        Ok(Pool {
            name: name.to_string(),
            spec,
            balancer,
            addresses: ArcSwap::from_pointee(HashMap::new()),
            ca,
            ca_fingerprint,
            next_start: AtomicUsize::new(0),
            ejected_any: AtomicBool::new(false),
            started: AtomicBool::new(false),
            stop,
        })
    }

    /// Starts discovery and health checks on the current tokio runtime, once; they end when
    /// the pool is dropped.
    pub fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shutdown = self.stop.subscribe();
        match &self.balancer {
            Balancer::RoundRobin(lb) => spawn_balancer(lb.clone(), shutdown),
            Balancer::Random(lb) => spawn_balancer(lb.clone(), shutdown),
            Balancer::Consistent(lb) => spawn_balancer(lb.clone(), shutdown),
        }
    }

    /// Picks a healthy, not ejected address; `key` feeds consistent hashing.
    pub fn select(&self, key: &[u8]) -> Option<SocketAddr> {
        let now = Instant::now();
        let usable = |backend: &Backend, healthy: bool| {
            healthy && backend_addr(backend).is_some_and(|addr| !self.is_ejected(addr, now))
        };
        let backend = match (&self.balancer, &self.spec.selection) {
            (Balancer::RoundRobin(lb), Selection::LeastConnections) => {
                return self.least_connections(lb, now)
            }
            (Balancer::RoundRobin(lb), _) => select_from(lb, key, usable),
            (Balancer::Random(lb), _) => select_from(lb, key, usable),
            (Balancer::Consistent(lb), _) => select_from(lb, key, usable),
        };
        backend.as_ref().and_then(backend_addr)
    }

    /// The usable address with the fewest requests in flight; ties rotate, so that light
    /// traffic is spread too.
    fn least_connections(&self, lb: &LoadBalancer<RoundRobin>, now: Instant) -> Option<SocketAddr> {
        let backends = lb.backends();
        let members = backends.get_backend();
        let usable: Vec<SocketAddr> = members
            .iter()
            .filter(|b| backends.ready(b))
            .filter_map(backend_addr)
            .filter(|addr| !self.is_ejected(*addr, now))
            .collect();
        if usable.is_empty() {
            return None;
        }
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % usable.len();
        usable
            .iter()
            .cycle()
            .skip(start)
            .take(usable.len())
            .min_by_key(|addr| self.state(**addr).in_flight.load(Ordering::Relaxed))
            .copied()
    }

    fn state(&self, addr: SocketAddr) -> Arc<AddressState> {
        if let Some(state) = self.addresses.load().get(&addr) {
            return state.clone();
        }
        let members: Vec<SocketAddr> = self.members().into_iter().map(|(a, _)| a).collect();
        self.addresses.rcu(|addresses| {
            let mut kept: HashMap<SocketAddr, Arc<AddressState>> = addresses
                .iter()
                .filter(|(known, _)| members.contains(known))
                .map(|(known, state)| (*known, state.clone()))
                .collect();
            kept.entry(addr).or_default();
            kept
        });
        self.addresses
            .load()
            .get(&addr)
            .cloned()
            .unwrap_or_default()
    }

    fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        if !self.ejected_any.load(Ordering::Relaxed) {
            return false;
        }
        let state = self.state(addr);
        let until = state
            .ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        until.is_some_and(|until| now < until)
    }

    /// Counts a request sent to `addr` until the guard is dropped; only least-connections
    /// needs the count, so other pools count nothing.
    pub fn begin_request(&self, addr: SocketAddr) -> InFlightRequest {
        if self.spec.selection != Selection::LeastConnections {
            return InFlightRequest(None);
        }
        let state = self.state(addr);
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightRequest(Some(state))
    }

    /// A connect to `addr` failed; enough in a row eject it for a while. Returns whether this
    /// failure ejected it.
    pub fn connect_failed(&self, addr: SocketAddr) -> bool {
        let Some(ejection) = self.spec.ejection else {
            return false;
        };
        let state = self.state(addr);
        let failures = state.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < ejection.after_failures {
            return false;
        }
        state.consecutive_failures.store(0, Ordering::Release);
        self.ejected_any.store(true, Ordering::Relaxed);
        *state
            .ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + ejection.duration);
        true
    }

    /// A connect to `addr` succeeded: its failure count starts again.
    pub fn connect_succeeded(&self, addr: SocketAddr) {
        if self.spec.ejection.is_some() && self.has_failures(addr) {
            self.state(addr)
                .consecutive_failures
                .store(0, Ordering::Release);
        }
    }

    /// Whether `addr` has connect failures on record (without creating its state).
    fn has_failures(&self, addr: SocketAddr) -> bool {
        self.addresses
            .load()
            .get(&addr)
            .is_some_and(|state| state.consecutive_failures.load(Ordering::Relaxed) > 0)
    }

    /// The peer a request to `addr` is sent to: protocol, TLS and timeouts of this upstream.
    /// A request that may become a tunnel (`upgrade`) gets the tunnel's idle timeouts.
    pub fn peer(&self, addr: SocketAddr, upgrade: bool) -> HttpPeer {
        let spec = &self.spec;
        let sni = spec.tls.as_ref().map(|t| t.sni.clone()).unwrap_or_default();
        let mut peer = HttpPeer::new(addr, spec.tls.is_some(), sni);
        let options = &mut peer.options;
        let timeouts = &spec.timeouts;
        options.connection_timeout = Some(timeouts.connect);
        options.total_connection_timeout = Some(timeouts.connect * 2);
        let (read, write) = if upgrade {
            (timeouts.tunnel_idle, timeouts.tunnel_idle)
        } else {
            (
                timeouts.read.min(timeouts.total),
                timeouts.write.min(timeouts.total),
            )
        };
        options.read_timeout = Some(read);
        options.write_timeout = Some(write);
        match spec.protocol {
            UpstreamProtocol::Http1 => options.alpn = ALPN::H1,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
                options.alpn = ALPN::H2;
                options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
            }
        }
        if let Some(tls) = &spec.tls {
            options.verify_cert = tls.verify;
            options.verify_hostname = tls.verify;
            options.ca = self.ca.clone();
        }
        peer
    }

    /// Addresses currently members of the pool, with whether each is ready to serve.
    pub fn members(&self) -> Vec<(SocketAddr, bool)> {
        fn of<S>(lb: &LoadBalancer<S>) -> Vec<(SocketAddr, bool)>
        where
            S: pingora_load_balancing::selection::BackendSelection + 'static,
            S::Iter: pingora_load_balancing::selection::BackendIter,
        {
            let backends = lb.backends();
            backends
                .get_backend()
                .iter()
                .filter_map(|b| backend_addr(b).map(|addr| (addr, backends.ready(b))))
                .collect()
        }
        match &self.balancer {
            Balancer::RoundRobin(lb) => of(lb),
            Balancer::Random(lb) => of(lb),
            Balancer::Consistent(lb) => of(lb),
        }
    }
}

/// Concurrent streams one h2 upstream connection carries before another is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Ends the count of a request in flight to one address.
pub struct InFlightRequest(Option<Arc<AddressState>>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn backend_addr(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
}

fn balancer<S>(spec: &UpstreamSpec, ca: Option<&Arc<[WrappedX509]>>) -> LoadBalancer<S>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    let discovery = DnsDiscovery::new(spec.addresses.clone());
    let literal_only = discovery.is_literal();
    let mut backends = Backends::new(Box::new(discovery));
    if let Some(check) = health_check(spec, ca) {
        backends.set_health_check(check);
    }
    let mut lb = LoadBalancer::<S>::from_backends(backends);
    if literal_only {
        // No name to resolve: the members are known now, and are never rediscovered.
        use futures::FutureExt;
        let _ = lb.update().now_or_never();
    } else {
        lb.update_frequency = Some(spec.resolve_every);
    }
    lb.health_check_frequency = spec.health_check.as_ref().map(|h| h.interval);
    lb.parallel_health_check = true;
    lb
}

fn health_check(
    spec: &UpstreamSpec,
    ca: Option<&Arc<[WrappedX509]>>,
) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let check = spec.health_check.as_ref()?;
    let tls = spec.tls.is_some();
    let host = spec
        .tls
        .as_ref()
        .map(|t| t.sni.clone())
        .or_else(|| spec.addresses.first().map(|a| a.host.clone()))
        .unwrap_or_default();
    if spec.protocol == UpstreamProtocol::H2c {
        // An h2c service (gRPC) need not answer HTTP/1.1: its check is a TCP connect.
        let mut tcp = TcpHealthCheck::new();
        tcp.consecutive_success = check.healthy_threshold;
        tcp.consecutive_failure = check.unhealthy_threshold;
        tcp.peer_template.options.connection_timeout = Some(check.timeout);
        return Some(tcp);
    }
    let mut http = HttpHealthCheck::new(&host, tls);
    http.consecutive_success = check.healthy_threshold;
    http.consecutive_failure = check.unhealthy_threshold;
    http.peer_template.options.connection_timeout = Some(check.timeout);
    http.peer_template.options.read_timeout = Some(check.timeout);
    if let Some(upstream_tls) = &spec.tls {
        // Checked the way requests are sent: the same CA, verification and protocol.
        let options = &mut http.peer_template.options;
        options.verify_cert = upstream_tls.verify;
        options.verify_hostname = upstream_tls.verify;
        options.ca = ca.cloned();
        if spec.protocol == UpstreamProtocol::H2 {
            options.alpn = ALPN::H2;
        }
    }
    if let Ok(uri) = check.path.parse::<http::Uri>() {
        http.req.set_uri(uri);
    }
    Some(Box::new(http))
}

/// The balancer's choice; a pool of one member is answered without it, since there is
/// nothing to choose (pingora's selection allocates a set of the members it tried).
fn select_from<S>(
    lb: &LoadBalancer<S>,
    key: &[u8],
    usable: impl Fn(&Backend, bool) -> bool,
) -> Option<Backend>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    let backends = lb.backends();
    let members = backends.get_backend();
    if let (1, Some(only)) = (members.len(), members.iter().next()) {
        return usable(only, backends.ready(only)).then(|| only.clone());
    }
    lb.select_with(key, MAX_SELECTION_STEPS, usable)
}

fn spawn_balancer<S>(lb: Arc<LoadBalancer<S>>, shutdown: tokio::sync::watch::Receiver<bool>)
where
    S: pingora_load_balancing::selection::BackendSelection + Send + Sync + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    tokio::spawn(async move { lb.run(shutdown, None).await });
}

/// SHA-256 of the upstream's CA file (empty without one, or when it cannot be read).
fn ca_fingerprint(spec: &UpstreamSpec) -> Vec<u8> {
    let Some(path) = spec.tls.as_ref().and_then(|t| t.ca_file.as_ref()) else {
        return Vec::new();
    };
    std::fs::read(path)
        .map(|bytes| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
                .as_ref()
                .to_vec()
        })
        .unwrap_or_default()
}

fn load_ca(path: &PathBuf) -> Result<Arc<[WrappedX509]>, PoolError> {
    let error = |reason: String| PoolError::CaFile {
        path: path.clone(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(format!("not a PEM certificate file: {e}")))?;
    if certificates.is_empty() {
        return Err(error("holds no PEM certificate".to_string()));
    }
    let mut wrapped = Vec::with_capacity(certificates.len());
    for der in certificates {
        let raw = der.as_ref().to_vec();
        if x509_parser::parse_x509_certificate(&raw).is_err() {
            return Err(error("holds a certificate that does not parse".to_string()));
        }
        wrapped.push(WrappedX509::new(raw, |raw| {
            pingora_core::utils::tls::parse_x509(raw)
        }));
    }
    Ok(Arc::from(wrapped))
}

/// The pools of one snapshot, by upstream name.
#[derive(Debug, Default)]
pub struct Pools(BTreeMap<String, Arc<Pool>>);

impl Pools {
    /// Builds the pools for `specs`, taking over from `previous` every pool whose definition is
    /// unchanged (its membership and health stay).
    pub fn build(
        specs: &BTreeMap<String, UpstreamSpec>,
        previous: Option<&Pools>,
    ) -> Result<Self, (String, PoolError)> {
        let mut pools = BTreeMap::new();
        for (name, spec) in specs {
            let kept = previous
                .and_then(|p| p.0.get(name))
                .filter(|pool| pool.spec == *spec && pool.ca_fingerprint == ca_fingerprint(spec))
                .cloned();
            let pool = match kept {
                Some(pool) => pool,
                None => Arc::new(Pool::build(name, spec.clone()).map_err(|e| (name.clone(), e))?),
            };
            pools.insert(name.clone(), pool);
        }
        Ok(Pools(pools))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.0.get(name)
    }

    /// Starts every pool not yet running (on the current tokio runtime).
    pub fn start(&self) {
        for pool in self.0.values() {
            pool.start();
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.0.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(addresses: &[&str], selection: Selection) -> UpstreamSpec {
        UpstreamSpec {
            addresses: addresses
                .iter()
                .map(|a| HostPort::parse(a).unwrap())
                .collect(),
            resolve_every: Duration::from_secs(5),
            protocol: UpstreamProtocol::Http1,
            tls: None,
            selection,
            health_check: None,
            ejection: Some(Ejection {
                after_failures: 2,
                duration: Duration::from_secs(60),
            }),
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                read: Duration::from_secs(1),
                write: Duration::from_secs(1),
                total: Duration::from_secs(1),
                tunnel_idle: Duration::from_secs(60),
            },
            retries: 1,
        }
    }

    #[test]
    fn host_port_parsing_resolves_nothing() {
        assert_eq!(
            HostPort::parse("tasks.default.svc.cluster.local:8080").unwrap(),
            HostPort {
                host: "tasks.default.svc.cluster.local".into(),
                port: 8080
            }
        );
        assert_eq!(
            HostPort::parse("[::1]:80").unwrap().literal(),
            Some("[::1]:80".parse().unwrap())
        );
        assert!(HostPort::parse("no-port").is_err());
        assert!(HostPort::parse("a b:80").is_err());
        assert!(HostPort::parse(":80").is_err());
    }

    #[test]
    fn round_robin_over_literal_addresses_and_passive_ejection() {
        let pool = Pool::build(
            "p",
            spec(&["127.0.0.1:1", "127.0.0.1:2"], Selection::RoundRobin),
        )
        .unwrap();
        let picks: Vec<_> = (0..4).map(|_| pool.select(b"").unwrap().port()).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
        let one: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!pool.connect_failed(one));
        assert!(pool.connect_failed(one));
        assert!((0..4).all(|_| pool.select(b"").unwrap().port() == 2));
    }

    #[test]
    fn least_connections_prefers_the_idle_address() {
        let pool = Pool::build(
            "p",
            spec(&["127.0.0.1:1", "127.0.0.1:2"], Selection::LeastConnections),
        )
        .unwrap();
        let busy = pool.begin_request("127.0.0.1:1".parse().unwrap());
        assert!((0..4).all(|_| pool.select(b"").unwrap().port() == 2));
        drop(busy);
        // Idle addresses tie: the choice rotates over them.
        let picks: Vec<_> = (0..4).map(|_| pool.select(b"").unwrap().port()).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn consistent_hash_is_stable_per_key() {
        let pool = Pool::build(
            "p",
            spec(
                &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                Selection::ConsistentHash(HashKey::Principal),
            ),
        )
        .unwrap();
        let first = pool.select(b"alice");
        assert!((0..8).all(|_| pool.select(b"alice") == first));
    }

    #[test]
    fn an_unchanged_definition_keeps_its_pool() {
        let specs = BTreeMap::from([
            (
                "a".to_string(),
                spec(&["127.0.0.1:1"], Selection::RoundRobin),
            ),
            (
                "b".to_string(),
                spec(&["127.0.0.1:2"], Selection::RoundRobin),
            ),
        ]);
        let first = Pools::build(&specs, None).unwrap();
        let mut changed = specs.clone();
        changed.get_mut("b").unwrap().retries = 0;
        let second = Pools::build(&changed, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.get("a").unwrap(),
            second.get("a").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            first.get("b").unwrap(),
            second.get("b").unwrap()
        ));
    }
}
