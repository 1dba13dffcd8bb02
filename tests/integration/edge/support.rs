//! What the edge tests share: certificates made at test time (never committed keys), curl as
//! the real client, and edits of the test configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A test certificate authority and the leaf certificates it signs.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portcullis test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes `<name>.crt` / `<name>.key` for `sans`, common name `common_name`.
    pub fn write_leaf(&self, dir: &Path, name: &str, common_name: &str, sans: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

/// Inserts `lines` right after the `[server]` header of `<dir>/portcullis.toml`.
pub fn add_to_server_section(dir: &Path, lines: &str) {
    let path = dir.join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1),
    )
    .unwrap();
}

/// Adds a `[limits]` table with `lines` to `<dir>/portcullis.toml` (before `[tokens]`).
pub fn set_limits(dir: &Path, lines: &str) {
    let path = dir.join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let limits = format!("\n[limits]\n{lines}\n\n[tokens]");
    std::fs::write(&path, text.replacen("\n[tokens]", &limits, 1)).unwrap();
}

/// Appends `text` to `<dir>/portcullis.toml`.
pub fn append_config(dir: &Path, text: &str) {
    let path = dir.join("portcullis.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(&path, config).unwrap();
}

/// What curl got.
#[derive(Debug)]
pub struct CurlResponse {
    pub status: u16,
    /// `1.1` or `2`.
    pub http_version: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// curl's verbose log (TLS details: the served certificate's subject).
    pub verbose: String,
}

impl CurlResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The subject line of the certificate the server presented.
    pub fn certificate_subject(&self) -> Option<&str> {
        self.verbose
            .lines()
            .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
    }

    /// A refusal: our JSON body, with the request id also in the header.
    pub fn assert_refusal(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        let id = body["request_id"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "no request id: {self:?}");
        assert_eq!(self.header("x-request-id"), Some(id), "{self:?}");
    }
}

/// Runs curl with `args` (the URL among them); `-sS -v`, a 20 s bound, headers collected.
pub fn curl(args: &[&str]) -> CurlResponse {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--max-time",
            "20",
            "-D",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl runs (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let verbose = String::from_utf8_lossy(&output.stderr).into_owned();
    let (rest, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, http_version) = trailer.split_once(' ').unwrap_or(("0", ""));
    // The last header block is the final response's (after a 100 Continue, say).
    let (head, body) = match rest.rfind("\r\n\r\n") {
        Some(end) if rest[..end].contains("HTTP/") => {
            let start = rest[..end].rfind("HTTP/").unwrap_or(0);
            (&rest[start..end], &rest[end + 4..])
        }
        _ => ("", rest),
    };
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    CurlResponse {
        status: status.parse().unwrap_or(0),
        http_version: http_version.to_string(),
        headers,
        body: body.to_string(),
        verbose,
    }
}

/// `--resolve` so that `host` reaches `address` with SNI `host`.
pub fn resolve(host: &str, address: SocketAddr) -> String {
    format!("{host}:{}:{}", address.port(), address.ip())
}
