//! `[decision_log]` of portcullis.toml → `DecisionSink`: stdout, a file, or an HTTP collector
//! fed from an on-disk spool.

use std::path::Path;
use std::time::Duration;

use reqwest::Url;

use super::raw::{RawDecisionLog, RawShipFormat, RawSink};
use super::{ConfigProblem, SourceFile};
use crate::decision_log::{DecisionSink, HttpSink, ShipFormat};
use crate::secret::Secret;

pub fn compile_sink(
    raw: &RawDecisionLog,
    file: &SourceFile,
    base: &Path,
) -> Result<DecisionSink, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let http_only = [
        ("url", raw.url.as_ref().map(|u| u.span())),
        ("spool_dir", raw.spool_dir.as_ref().map(|d| d.span())),
    ];
    if raw.sink != RawSink::Http {
        for (key, span) in http_only {
            if let Some(span) = span {
                problems.push(file.problem(
                    Some(span),
                    format!("decision_log.{key} is only used with sink = \"http\"; add that or remove it"),
                ));
            }
        }
        if raw.token_file.is_some() || raw.token_env.is_some() {
            problems.push(file.problem(
                None,
                "decision_log.token_file and token_env are only used with sink = \"http\"",
            ));
        }
    }
    let sink = match (raw.sink, &raw.path) {
        (RawSink::Stdout, None) => Some(DecisionSink::Stdout),
        (RawSink::File, Some(path)) => Some(DecisionSink::File(base.join(path.get_ref()))),
        (RawSink::Http, None) => http_sink(raw, file, base, &mut problems).map(DecisionSink::Http),
        (_, Some(path)) => {
            problems.push(file.problem(
                Some(path.span()),
                "decision_log.path is only used with sink = \"file\"; add that or remove the path",
            ));
            None
        }
        (RawSink::File, None) => {
            problems.push(file.problem(
                None,
                "decision_log: sink = \"file\" needs path = \"/where/decisions.log\"",
            ));
            None
        }
    };
    if raw.buffer_records == 0 {
        problems.push(file.problem(None, "decision_log.buffer_records must be at least 1"));
    }
    match sink {
        Some(sink) if problems.is_empty() => Ok(sink),
        _ => Err(problems),
    }
}

fn http_sink(
    raw: &RawDecisionLog,
    file: &SourceFile,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<HttpSink> {
    let url = match &raw.url {
        None => {
            problems.push(file.problem(
                None,
                "decision_log: sink = \"http\" needs url = \"http://collector:8080/...\"",
            ));
            None
        }
        Some(url) => match Url::parse(url.get_ref()) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(parsed),
            _ => {
                problems.push(file.problem(
                    Some(url.span()),
                    format!(
                        "decision_log.url {:?} is not an http:// or https:// URL",
                        url.get_ref()
                    ),
                ));
                None
            }
        },
    };
    let spool_dir = match &raw.spool_dir {
        Some(dir) => Some(base.join(dir.get_ref())),
        None => {
            problems.push(file.problem(
                None,
                "decision_log: sink = \"http\" needs spool_dir = \"/var/lib/portcullis/decisions\" \
                 (records wait there until the collector has them, across restarts)",
            ));
            None
        }
    };
    let token = match (&raw.token_file, &raw.token_env) {
        (Some(path), None) => Some(Secret::File(base.join(path))),
        (None, Some(name)) => Some(Secret::Env(name.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            problems.push(file.problem(
                None,
                "decision_log: give one of token_file and token_env, not both",
            ));
            None
        }
    };
    if raw.batch_bytes == 0 || raw.spool_max_bytes < raw.batch_bytes {
        problems.push(file.problem(
            None,
            "decision_log: batch_bytes must be at least 1 and no more than spool_max_bytes",
        ));
    }
    Some(HttpSink {
        url: url?,
        format: match raw.format {
            RawShipFormat::Ndjson => ShipFormat::Ndjson,
            RawShipFormat::SplunkHec => ShipFormat::SplunkHec,
        },
        token,
        spool_dir: spool_dir?,
        spool_max_bytes: raw.spool_max_bytes,
        batch_bytes: raw.batch_bytes.max(1),
        batch_interval: Duration::from_millis(raw.batch_milliseconds.max(1)),
        timeout: Duration::from_secs(raw.timeout_seconds.max(1)),
    })
}
