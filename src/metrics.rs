//! Prometheus metrics. Labels are bounded by the configuration: route id, decision label,
//! status class, issuer — never a principal, a path or a token.
//!
//! Counters the authenticator keeps itself (JWKS fetches, token-cache hits) are read when
//! `/metrics` is scraped rather than mirrored on every request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::bundle::puller::BundleStatus;
use crate::decision_log::LogMetrics;
use crate::directory::DirectoryStatus;

/// Latency buckets from 50 µs to 10 s: the gateway's own work sits at the low end, upstream
/// round trips at the high end.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Route label of requests that matched no route.
pub const NO_ROUTE: &str = "";

/// One finished request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestObservation<'a> {
    pub route: &'a str,
    pub decision: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub authorization: Option<Duration>,
    /// The request was forwarded and the upstream exchange failed, with the cause.
    pub upstream_error: Option<&'a str>,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    authorization_seconds: Histogram,
    upstream_errors: IntCounterVec,
    in_flight: IntGauge,
    reloads: IntCounterVec,
    last_reload_success: Gauge,
    snapshot_version: IntGauge,
    decision_records: IntCounterVec,
    decision_ship_failures: IntCounter,
    decision_spool_bytes: IntGauge,
    certificate_reloads: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    // The metric names and help texts are constants checked by the tests: building and
    // registering them cannot fail.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests by route, decision (allow, deny, audit_deny, unauthenticated, no_route, ...) and status class.",
            ),
            &["route", "decision", "status_class"],
        )
        .expect("valid metric definition");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from the request head to the end of the response, by route.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric definition");
        let authorization_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "portcullis_authorization_duration_seconds",
                "Time spent building the Cedar request and evaluating the policies.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_upstream_errors_total",
                "Permitted requests that failed after the decision, by route and cause (no_healthy_address, unreachable, timeout, bad_response, body_too_large: a streamed body over the limit, other).",
            ),
            &["route", "cause"],
        )
        .expect("valid metric definition");
        let in_flight = IntGauge::new(
            "portcullis_requests_in_flight",
            "Requests being processed now.",
        )
        .expect("valid metric definition");
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_reloads_total",
                "Reloads of routes and policies, by result (success, failure).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        let last_reload_success = Gauge::new(
            "portcullis_reload_last_success_timestamp_seconds",
            "Unix time of the last successful load of routes and policies.",
        )
        .expect("valid metric definition");
        let snapshot_version = IntGauge::new(
            "portcullis_snapshot_version",
            "Version of the routes and policies snapshot serving new requests.",
        )
        .expect("valid metric definition");
        let decision_records = IntCounterVec::new(
            Opts::new(
                "portcullis_decision_log_records_total",
                "Decision records, by outcome: written (to the sink; the spool for the HTTP sink), dropped (the sink fell behind, or the spool was full), shipped (taken by the HTTP sink's collector).",
            ),
            &["outcome"],
        )
        .expect("valid metric definition");
        let decision_ship_failures = IntCounter::new(
            "portcullis_decision_log_ship_failures_total",
            "POSTs of decision records the collector did not take (each retried).",
        )
        .expect("valid metric definition");
        let decision_spool_bytes = IntGauge::new(
            "portcullis_decision_log_spool_bytes",
            "Bytes of decision records in the HTTP sink's spool, waiting for the collector.",
        )
        .expect("valid metric definition");
        let certificate_reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_tls_certificate_reloads_total",
                "Reloads of the TLS certificates after their files changed, by result (success, failure).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        let collectors: [Box<dyn Collector>; 12] = [
            Box::new(certificate_reloads.clone()),
            Box::new(requests.clone()),
            Box::new(request_seconds.clone()),
            Box::new(authorization_seconds.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_success.clone()),
            Box::new(snapshot_version.clone()),
            Box::new(decision_records.clone()),
            Box::new(decision_ship_failures.clone()),
            Box::new(decision_spool_bytes.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("metric names are distinct");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are distinct");
        // Both outcomes exist from the start, so a dropped count of 0 is visible.
        for outcome in ["written", "dropped", "shipped"] {
            decision_records.with_label_values(&[outcome]);
        }
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
            certificate_reloads.with_label_values(&[result]);
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            authorization_seconds,
            upstream_errors,
            in_flight,
            reloads,
            last_reload_success,
            snapshot_version,
            decision_records,
            decision_ship_failures,
            decision_spool_bytes,
            certificate_reloads,
        }
    }

    pub fn observe_request(&self, request: RequestObservation<'_>) {
        let status_class = match request.status {
            0 => "none",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[request.route, request.decision, status_class])
            .inc();
        self.request_seconds
            .with_label_values(&[request.route])
            .observe(request.duration.as_secs_f64());
        if let Some(authorization) = request.authorization {
            self.authorization_seconds
                .observe(authorization.as_secs_f64());
        }
        if let Some(cause) = request.upstream_error {
            self.upstream_errors
                .with_label_values(&[request.route, cause])
                .inc();
        }
    }

    /// A gauge guard: counts one request in flight until dropped.
    pub fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn snapshot_loaded(&self, version: u64) {
        self.reloads.with_label_values(&["success"]).inc();
        self.snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload_success.set(now);
    }

    pub fn certificates_reloaded(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.certificate_reloads.with_label_values(&[result]).inc();
    }

    pub fn reload_failed(&self) {
        self.reloads.with_label_values(&["failure"]).inc();
    }

    /// The decision log's counters.
    pub fn decision_log(&self) -> LogMetrics {
        LogMetrics {
            written: self.decision_records.with_label_values(&["written"]),
            dropped: self.decision_records.with_label_values(&["dropped"]),
            shipped: self.decision_records.with_label_values(&["shipped"]),
            ship_failures: self.decision_ship_failures.clone(),
            spool_bytes: self.decision_spool_bytes.clone(),
        }
    }

    /// The Prometheus text exposition of every metric, the authenticator's included.
    pub fn render(
        &self,
        authenticator: &AuthenticatorFigures,
        directory: &DirectoryStatus,
        bundle: Option<&BundleStatus>,
    ) -> String {
        let mut families = self.registry.gather();
        families.extend(authenticator_families(authenticator));
        families.extend(directory_families(directory));
        families.extend(bundle.map(bundle_families).unwrap_or_default());
        let mut text = Vec::new();
        // Encoding into a Vec cannot fail; an empty page is the worst case.
        let _ = TextEncoder::new().encode(&families, &mut text);
        String::from_utf8(text).unwrap_or_default()
    }
}

// Constant metric definitions: building them cannot fail.
#[allow(clippy::expect_used)]
/// Policy bundle figures, read from its status at scrape time.
fn bundle_families(bundle: &BundleStatus) -> Vec<prometheus::proto::MetricFamily> {
    let activations = IntCounter::new(
        "portcullis_bundle_activations_total",
        "Bundles pulled, verified and swapped in while running (the one at start not counted).",
    )
    .expect("valid metric definition");
    let refusals = IntCounterVec::new(
        Opts::new(
            "portcullis_bundle_refusals_total",
            "Bundles (or registry checks) refused, by reason: unsigned, untrusted_key, bad_signature, tampered, downgrade, invalid, registry, io.",
        ),
        &["reason"],
    )
    .expect("valid metric definition");
    let version = IntGauge::new("portcullis_bundle_version", "Version of the active bundle.")
        .expect("valid metric definition");
    let activated = IntGauge::new(
        "portcullis_bundle_activated_timestamp_seconds",
        "When the active bundle became active (Unix time).",
    )
    .expect("valid metric definition");
    activations.inc_by(bundle.activations());
    for (reason, count) in bundle.failures() {
        refusals.with_label_values(&[reason]).inc_by(count);
    }
    if let Some(active) = bundle.active() {
        version.set(i64::try_from(active.version).unwrap_or(i64::MAX));
        activated.set(i64::try_from(active.activated_at).unwrap_or(i64::MAX));
    }
    let mut families = activations.collect();
    families.extend(refusals.collect());
    families.extend(version.collect());
    families.extend(activated.collect());
    families
}

// Constant metric definitions: building them cannot fail.
#[allow(clippy::expect_used)]
/// Directory sync figures, read from the sources' status at scrape time.
fn directory_families(directory: &DirectoryStatus) -> Vec<prometheus::proto::MetricFamily> {
    let sources = directory.sources();
    if sources.is_empty() {
        return Vec::new();
    }
    let gauge = |name: &str, help: &str| {
        prometheus::GaugeVec::new(Opts::new(name, help), &["source"])
            .expect("valid metric definition")
    };
    let counter = |name: &str, help: &str, labels: &[&str]| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
    };
    let entities = gauge(
        "portcullis_directory_entities",
        "Entities in each source's last good sync.",
    );
    let last_success = gauge(
        "portcullis_directory_last_success_timestamp_seconds",
        "When each source's last good sync finished (Unix time; 0 before the first).",
    );
    let duration = gauge(
        "portcullis_directory_sync_duration_seconds",
        "How long each source's last sync took.",
    );
    let syncs = counter(
        "portcullis_directory_syncs_total",
        "Syncs per source, by result (success, failure).",
        &["source", "result"],
    );
    let rate_limited = counter(
        "portcullis_directory_rate_limited_total",
        "Requests a source's API answered 429 (each waited out and retried).",
        &["source"],
    );
    let age = Gauge::new(
        "portcullis_directory_age_seconds",
        "Age of the oldest source's last good sync.",
    )
    .expect("valid metric definition");
    let conflicts = IntGauge::new(
        "portcullis_directory_conflicts",
        "Synced entities the running snapshot takes from entities.json instead.",
    )
    .expect("valid metric definition");
    let now = SystemTime::now();
    for source in &sources {
        let name = source.name.as_str();
        entities
            .with_label_values(&[name])
            .set(source.entities as f64);
        last_success.with_label_values(&[name]).set(
            source
                .last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        duration
            .with_label_values(&[name])
            .set(source.last_duration.map_or(0.0, |d| d.as_secs_f64()));
        syncs
            .with_label_values(&[name, "success"])
            .inc_by(source.successes);
        syncs
            .with_label_values(&[name, "failure"])
            .inc_by(source.failures);
        rate_limited
            .with_label_values(&[name])
            .inc_by(source.rate_limited);
    }
    if let Some(oldest) = directory.age(now) {
        age.set(oldest.as_secs_f64());
    }
    conflicts.set(i64::try_from(directory.conflicts()).unwrap_or(i64::MAX));
    let mut families = Vec::new();
    for collector in [&entities, &last_success, &duration] {
        families.extend(collector.collect());
    }
    families.extend(syncs.collect());
    families.extend(rate_limited.collect());
    families.extend(age.collect());
    families.extend(conflicts.collect());
    families
}

/// Decrements the in-flight gauge when the request is done.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// JWKS and token-cache counters, read from the authenticator at scrape time.
/// What the authenticator counts itself, as `/metrics` reports it (`Authenticator::figures`).
#[derive(Debug, Clone, Default)]
pub struct AuthenticatorFigures {
    /// Per issuer: its name, and its successful and failed key fetches.
    pub fetches: Vec<(String, u64, u64)>,
    pub issuers_without_keys: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

// Constant metric definitions: building them cannot fail.
#[allow(clippy::expect_used)]
fn authenticator_families(figures: &AuthenticatorFigures) -> Vec<prometheus::proto::MetricFamily> {
    let fetches = IntCounterVec::new(
        Opts::new(
            "portcullis_jwks_fetches_total",
            "JWKS (and discovery) fetches per issuer, by result (success, failure).",
        ),
        &["issuer", "result"],
    )
    .expect("valid metric definition");
    let without_keys = IntGauge::new(
        "portcullis_issuers_without_keys",
        "Issuers whose keys have never been fetched (their tokens get 401).",
    )
    .expect("valid metric definition");
    let cache = IntCounterVec::new(
        Opts::new(
            "portcullis_token_cache_lookups_total",
            "Verified-token cache lookups, by result (hit, miss).",
        ),
        &["result"],
    )
    .expect("valid metric definition");
    for (issuer, successes, failures) in &figures.fetches {
        fetches
            .with_label_values(&[issuer.as_str(), "success"])
            .inc_by(*successes);
        fetches
            .with_label_values(&[issuer.as_str(), "failure"])
            .inc_by(*failures);
    }
    without_keys.set(i64::try_from(figures.issuers_without_keys).unwrap_or(i64::MAX));
    cache.with_label_values(&["hit"]).inc_by(figures.cache_hits);
    cache
        .with_label_values(&["miss"])
        .inc_by(figures.cache_misses);
    let mut families = fetches.collect();
    families.extend(without_keys.collect());
    families.extend(cache.collect());
    families
}
