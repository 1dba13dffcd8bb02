//! `portcullis test`: policy test suites (`policies/tests/*.toml`) run through the real
//! pipeline without sockets.
//!
//! Each case names a request, a caller and the expected outcome. The request is routed, its
//! token (signed by `offline`) verified and mapped, and the Cedar decision made exactly as the
//! running gateway would. A failing case prints its file and line, what it got, and the policies
//! that determined the decision, so that a policy change that breaks a promise is caught before
//! it ships.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::config::{ConfigError, ConfigProblem, SourceFile};
use crate::offline::{OfflineCaller, OfflineError, OfflineGateway, OfflineRequest};
use crate::pipeline::Outcome;
use crate::response::deny_response;
use crate::snapshot::Snapshot;

/// One suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    #[serde(default)]
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    request: RawRequest,
    caller: RawCaller,
    /// Entities added to the directory for this case (Cedar entity JSON).
    #[serde(default)]
    entities: Vec<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: String,
    /// Path, optionally with `?query`.
    path: String,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCaller {
    /// `"anonymous"`.
    Keyword(String),
    Claims {
        claims: Map<String, Value>,
    },
    Token {
        token: String,
    },
}

/// `"allow"`, `"deny"`, or the HTTP status the gateway answers (200 when forwarded).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Expect {
    Word(String),
    Status(u16),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Word(word) => f.write_str(word),
            Expect::Status(status) => write!(f, "{status}"),
        }
    }
}

/// What a case got.
struct Got {
    /// `allow`, `deny` (policy) or `none` (no decision: refused before authorization).
    decision: &'static str,
    status: u16,
}

impl Got {
    fn of(outcome: &Outcome, realm: &str) -> Self {
        let decision = match outcome.decided() {
            Some(d) if d.decision.allowed => "allow",
            Some(_) => "deny",
            None => "none",
        };
        let status = match outcome.denial() {
            None => 200,
            Some(denial) => deny_response(denial, "test", realm).status,
        };
        Got { decision, status }
    }

    fn matches(&self, expect: &Expect) -> Result<bool, String> {
        match expect {
            Expect::Word(word) if word == "allow" || word == "deny" => Ok(self.decision == word),
            Expect::Word(word) => Err(format!(
                "expect = {word:?}: use \"allow\", \"deny\" or an HTTP status such as 401"
            )),
            Expect::Status(status) => Ok(self.status == *status),
        }
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

/// The suite files of a directory, sorted.
pub fn suite_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ConfigError::from(ConfigProblem::file(
            dir,
            format!("cannot read the test directory: {e}"),
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs every case of `files`, appending a line per failing case to `report`.
pub async fn run_suites(
    gateway: &OfflineGateway,
    files: &[PathBuf],
    report: &mut String,
) -> Result<Summary, ConfigError> {
    let mut summary = Summary::default();
    let mut problems = Vec::new();
    for path in files {
        let file = SourceFile::read(path)?;
        let suite: RawSuite = match file.parse_toml() {
            Ok(suite) => suite,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for case in &suite.cases {
            let line = file.line_of(case.span().start);
            let location = format!("{}:{line}", path.display());
            match run_case(gateway, case.get_ref()).await {
                Ok(None) => summary.passed += 1,
                Ok(Some(failure)) => {
                    summary.failed += 1;
                    let _ = writeln!(
                        report,
                        "FAIL {location} {:?}: {failure}",
                        case.get_ref().name
                    );
                }
                Err(e) => problems.push(file.problem(
                    Some(case.span()),
                    format!("case {:?}: {e}", case.get_ref().name),
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems.into())
    }
}

/// `Ok(None)` when the case passes, `Ok(Some(why))` when it fails.
async fn run_case(gateway: &OfflineGateway, case: &RawCase) -> Result<Option<String>, String> {
    let caller = match &case.caller {
        RawCaller::Keyword(word) if word == "anonymous" => OfflineCaller::Anonymous,
        RawCaller::Keyword(word) => {
            return Err(format!(
                "caller = {word:?}: use \"anonymous\", {{ claims = {{ ... }} }} or {{ token = \"...\" }}"
            ))
        }
        RawCaller::Claims { claims } => OfflineCaller::Claims(claims.clone()),
        RawCaller::Token { token } => OfflineCaller::Token(token.clone()),
    };
    let request = &case.request;
    let target = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let offline = OfflineRequest {
        method: request.method.clone(),
        target,
        host: request.host.clone(),
        headers: request
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        client_ip: request.client_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        caller,
    };
    let shared;
    let with_entities;
    let snapshot: &Snapshot = if case.entities.is_empty() {
        shared = gateway.gateway.snapshot();
        &shared
    } else {
        with_entities = gateway
            .snapshot_with(&case.entities)
            .map_err(|e| e.to_string())?;
        &with_entities
    };
    let outcome = gateway
        .evaluate(snapshot, &offline)
        .await
        .map_err(|e: OfflineError| e.to_string())?;
    let got = Got::of(&outcome, &gateway.gateway.settings.realm);
    if got.matches(&case.expect)? {
        return Ok(None);
    }
    let mut why = format!(
        "expected {}, got {} ({})",
        case.expect, got.decision, got.status
    );
    let decision = outcome.decided().map(|d| &d.decision);
    if let (Some(denial), None) = (outcome.denial(), decision) {
        let _ = write!(why, ": {denial}");
    }
    if let Some(decision) = decision {
        let _ = write!(
            why,
            "; determining policies: [{}]",
            decision.policies.join(", ")
        );
        if !decision.errors.is_empty() {
            let _ = write!(why, "; errors: {}", decision.errors.join("; "));
        }
    }
    Ok(Some(why))
}
