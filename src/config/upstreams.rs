//! `[upstreams.NAME]` of routes.toml → `UpstreamSpec`. Nothing is resolved here: a DNS name is
//! checked for shape only, so `portcullis check` works outside the cluster the names live in.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::raw::{RawSelection, RawUpstream, RawUpstreamProtocol};
use super::{ConfigProblem, SourceFile};
use crate::upstream::{
    Ejection, HashKey, HealthCheckSpec, HostPort, Selection, Timeouts, UpstreamProtocol,
    UpstreamSpec, UpstreamTls,
};

/// pingora stops after 16 attempts of one request, whatever the hook says.
const MAX_RETRIES: u32 = 15;

pub fn compile_upstream(
    name: &str,
    raw: &Spanned<RawUpstream>,
    file: &SourceFile,
    base: &Path,
) -> Result<UpstreamSpec, Vec<ConfigProblem>> {
    let span = raw.span();
    let raw = raw.get_ref();
    let mut problems = Vec::new();
    let mut problem = |span: std::ops::Range<usize>, message: String| {
        problems.push(file.problem(Some(span), format!("upstream {name:?}: {message}")))
    };

    let written: Vec<(String, std::ops::Range<usize>)> = match (&raw.address, &raw.addresses) {
        (Some(one), None) => vec![(one.get_ref().clone(), one.span())],
        (None, Some(many)) => many
            .get_ref()
            .iter()
            .map(|a| (a.clone(), many.span()))
            .collect(),
        (Some(_), Some(_)) => {
            problem(
                span.clone(),
                "set either address or addresses, not both".into(),
            );
            Vec::new()
        }
        (None, None) => {
            problem(
                span.clone(),
                "needs address = \"host:port\" or addresses = [\"host:port\", ...]".into(),
            );
            Vec::new()
        }
    };
    let mut addresses = Vec::new();
    for (text, span) in written {
        match HostPort::parse(&text) {
            Ok(address) => addresses.push(address),
            Err(reason) => problem(span, reason),
        }
    }
    if raw
        .addresses
        .as_ref()
        .is_some_and(|a| a.get_ref().is_empty())
    {
        problem(span.clone(), "addresses must not be empty".into());
    }

    let protocol = match raw.protocol {
        RawUpstreamProtocol::Http1 => UpstreamProtocol::Http1,
        RawUpstreamProtocol::H2 => UpstreamProtocol::H2,
        RawUpstreamProtocol::H2c => UpstreamProtocol::H2c,
    };
    let default_sni = addresses
        .first()
        .map(|a| a.host.clone())
        .unwrap_or_default();
    let tls = match (&raw.tls, protocol) {
        (Some(tls), UpstreamProtocol::H2c) => {
            problem(
                tls.span(),
                "protocol = \"h2c\" is HTTP/2 without TLS; remove [tls] or use protocol = \"h2\""
                    .into(),
            );
            None
        }
        (Some(tls), _) => {
            let tls = tls.get_ref();
            if !tls.verify {
                log::warn!(
                    "{}: upstream {name:?} has tls.verify = false: its certificate is NOT checked, \
                     and anyone on the path can impersonate it",
                    file.path.display()
                );
            }
            Some(UpstreamTls {
                sni: tls.sni.clone().unwrap_or(default_sni),
                ca_file: tls.ca_file.as_ref().map(|f| base.join(f.get_ref())),
                verify: tls.verify,
            })
        }
        (None, UpstreamProtocol::H2) => Some(UpstreamTls {
            sni: default_sni,
            ca_file: None,
            verify: true,
        }),
        (None, _) => None,
    };

    let selection = match (raw.selection, &raw.hash_key) {
        (RawSelection::ConsistentHash, Some(key)) => match parse_hash_key(key.get_ref()) {
            Ok(key) => Selection::ConsistentHash(key),
            Err(reason) => {
                problem(key.span(), reason);
                Selection::RoundRobin
            }
        },
        (RawSelection::ConsistentHash, None) => {
            problem(
                span.clone(),
                "selection = \"consistent_hash\" needs hash_key = \"principal\" or \"header:<name>\""
                    .into(),
            );
            Selection::RoundRobin
        }
        (_, Some(key)) => {
            problem(
                key.span(),
                "hash_key is only used with selection = \"consistent_hash\"".into(),
            );
            Selection::RoundRobin
        }
        (RawSelection::RoundRobin, None) => Selection::RoundRobin,
        (RawSelection::LeastConnections, None) => Selection::LeastConnections,
        (RawSelection::Random, None) => Selection::Random,
    };

    let health_check = raw.health_check.as_ref().and_then(|check| {
        let raw_check = check.get_ref();
        let valid = raw_check.path.starts_with('/')
            && raw_check.path.parse::<http::Uri>().is_ok()
            && raw_check.interval_seconds > 0
            && raw_check.healthy_threshold > 0
            && raw_check.unhealthy_threshold > 0
            && raw_check.timeout_milliseconds > 0;
        if !valid {
            problem(
                check.span(),
                "health_check needs a path starting with \"/\", and interval_seconds, \
                 healthy_threshold, unhealthy_threshold and timeout_milliseconds of at least 1"
                    .into(),
            );
            return None;
        }
        Some(HealthCheckSpec {
            path: raw_check.path.clone(),
            interval: Duration::from_secs(raw_check.interval_seconds),
            healthy_threshold: raw_check.healthy_threshold,
            unhealthy_threshold: raw_check.unhealthy_threshold,
            timeout: Duration::from_millis(raw_check.timeout_milliseconds),
        })
    });

    let t = &raw.timeouts;
    if [
        t.connect_milliseconds,
        t.read_milliseconds,
        t.write_milliseconds,
        t.total_milliseconds,
        t.tunnel_idle_milliseconds,
    ]
    .contains(&0)
        || raw.resolve_interval_seconds == 0
    {
        problem(
            span.clone(),
            "timeouts and resolve_interval_seconds must be at least 1".into(),
        );
    }
    let timeouts = Timeouts {
        connect: Duration::from_millis(t.connect_milliseconds),
        read: Duration::from_millis(t.read_milliseconds),
        write: Duration::from_millis(t.write_milliseconds),
        total: Duration::from_millis(t.total_milliseconds),
        tunnel_idle: Duration::from_millis(t.tunnel_idle_milliseconds),
    };
    if raw.retries > MAX_RETRIES {
        problem(
            span.clone(),
            format!(
                "retries = {} is more than pingora makes ({MAX_RETRIES})",
                raw.retries
            ),
        );
    }
    let ejection = (raw.eject_after_failures > 0).then(|| Ejection {
        after_failures: raw.eject_after_failures,
        duration: Duration::from_secs(raw.ejection_seconds.max(1)),
    });

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(UpstreamSpec {
        addresses,
        resolve_every: Duration::from_secs(raw.resolve_interval_seconds),
        protocol,
        tls,
        selection,
        health_check,
        ejection,
        timeouts,
        retries: raw.retries,
    })
}

fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    if text == "principal" {
        return Ok(HashKey::Principal);
    }
    text.strip_prefix("header:")
        .and_then(|name| HeaderName::from_str(name.trim()).ok())
        .map(HashKey::Header)
        .ok_or_else(|| {
            format!("hash_key {text:?} must be \"principal\" or \"header:<header name>\"")
        })
}
