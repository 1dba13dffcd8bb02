//! TLS termination: the certificate is chosen by SNI (exact name, wildcard, default), only TLS
//! 1.2+ is spoken, a certificate rotated on disk (as a Kubernetes Secret's `..data` swap does
//! it) is served without a restart, a Host that is not the SNI gets 421, and the plaintext
//! listener can redirect to HTTPS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

use crate::common::eventually;
use crate::edge::support::{curl, resolve, TestCa};
use crate::edge::{edge_env, edge_env_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_and_an_unknown_name_gets_the_default() {
    let (env, ca) = edge_env().await;
    let tls = env.gateway_tls.unwrap();
    let ca = ca.to_str().unwrap();
    for (host, subject) in [
        ("api.example.com", "CN=api"),
        ("shop.apps.example.com", "CN=wild"),
        ("default.test", "CN=default"),
    ] {
        let response = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve(host, tls),
            &format!("https://{host}:{}/health", tls.port()),
        ]);
        assert_eq!(response.status, 200, "{host}: {response:?}");
        assert_eq!(response.certificate_subject(), Some(subject), "{host}");
    }
    // A name no certificate carries gets the default one (which curl then rejects unless -k).
    let unknown = curl(&[
        "-k",
        "--resolve",
        &resolve("unknown.example.org", tls),
        &format!("https://unknown.example.org:{}/health", tls.port()),
    ]);
    assert_eq!(unknown.status, 200, "{unknown:?}");
    assert_eq!(unknown.certificate_subject(), Some("CN=default"));
    let verified = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve("unknown.example.org", tls),
        &format!("https://unknown.example.org:{}/health", tls.port()),
    ]);
    assert_eq!(
        verified.status, 0,
        "the default certificate must not claim the name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_later_are_accepted() {
    let (env, ca) = edge_env().await;
    let tls = env.gateway_tls.unwrap();
    let url = format!("https://api.example.com:{}/health", tls.port());
    let ca = ca.to_str().unwrap();
    let route = resolve("api.example.com", tls);
    let old = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &route,
        "--tls-max",
        "1.1",
        &url,
    ]);
    assert_eq!(old.status, 0, "TLS 1.1 must fail the handshake: {old:?}");
    for version in ["1.2", "1.3"] {
        let flag = format!("--tlsv{version}");
        let response = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &route,
            &flag,
            "--tls-max",
            version,
            &url,
        ]);
        assert_eq!(response.status, 200, "TLS {version}: {response:?}");
    }
}

/// Lays out a Kubernetes TLS Secret volume: `tls.crt`/`tls.key` are symlinks through `..data`
/// to a timestamped directory, which an update replaces by swapping `..data`.
fn write_secret_revision(secret: &Path, revision: &str, ca: &TestCa, common_name: &str) {
    let dir = secret.join(revision);
    std::fs::create_dir_all(&dir).unwrap();
    ca.write_leaf(&dir, "tls", common_name, &["api.example.com"]);
    let staging = secret.join("..data_tmp");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(revision, &staging).unwrap();
    std::fs::rename(&staging, secret.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = secret.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_by_a_secret_update_is_served_without_a_restart() {
    let ca = TestCa::new();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().to_path_buf();
    write_secret_revision(&secret, "..2026_12_01_00_00_00.1", &ca, "first");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(ca_dir.path());
    let cert = secret.join("tls.crt");
    let key = secret.join("tls.key");
    // A gateway whose only certificate is the Secret's.
    let env = crate::common::TestEnv::start_with(|dir, _| {
        crate::edge::support::append_config(
            dir,
            &format!(
                "\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = {cert:?}, key = {key:?} }}]\n"
            ),
        );
    })
    .await;
    let watcher = tokio::spawn(portcullis::reload::watch(
        env.state.clone(),
        Duration::from_millis(100),
    ));
    let tls = env.gateway_tls.unwrap();
    let served = || {
        curl(&[
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &resolve("api.example.com", tls),
            &format!("https://api.example.com:{}/health", tls.port()),
        ])
    };
    assert_eq!(served().certificate_subject(), Some("CN=first"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    write_secret_revision(&secret, "..2026_12_02_00_00_00.2", &ca, "second");
    eventually("the rotated certificate is served", async || {
        served().certificate_subject() == Some("CN=second")
    })
    .await;

    // A broken update keeps the last good certificate.
    let broken = secret.join("..2026_12_03_00_00_00.3");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(broken.join("tls.key"), "not a key").unwrap();
    let staging = secret.join("..data_tmp");
    std::os::unix::fs::symlink("..2026_12_03_00_00_00.3", &staging).unwrap();
    std::fs::rename(&staging, secret.join("..data")).unwrap();
    let metrics = || {
        let page = std::process::Command::new("curl")
            .args(["-s", &format!("http://{}/metrics", env.admin)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&page.stdout).into_owned()
    };
    eventually("the failed reload is counted", async || {
        metrics().contains("portcullis_tls_certificate_reloads_total{result=\"failure\"} 1")
    })
    .await;
    let response = served();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.certificate_subject(), Some("CN=second"));
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_the_sni_is_misdirected() {
    let (env, ca) = edge_env().await;
    let tls = env.gateway_tls.unwrap();
    let ca = ca.to_str().unwrap();
    let url = format!("https://api.example.com:{}/health", tls.port());
    let route = resolve("api.example.com", tls);
    for http in ["--http1.1", "--http2"] {
        let other = curl(&[
            http,
            "--cacert",
            ca,
            "--resolve",
            &route,
            "-H",
            "Host: shop.apps.example.com",
            &url,
        ]);
        other.assert_refusal(421);
        assert_eq!(other.json()["error"], "misdirected_request");
        let same = curl(&[
            http,
            "--cacert",
            ca,
            "--resolve",
            &route,
            "-H",
            "Host: API.example.com:443",
            &url,
        ]);
        assert_eq!(same.status, 200, "{http}: {same:?}");
    }
    assert_eq!(
        env.upstream.count(),
        2,
        "a misdirected request is not forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_requests_redirect_to_https_when_configured() {
    let (env, ca) = edge_env_with("redirect_plaintext = true\nhttps_port = 8443").await;
    let plain = curl(&[&format!("http://{}/lists/acme-roadmap?x=1", env.gateway)]);
    plain.assert_refusal(308);
    assert_eq!(
        plain.header("location"),
        Some("https://127.0.0.1:8443/lists/acme-roadmap?x=1")
    );
    let tls = env.gateway_tls.unwrap();
    let secure = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve("api.example.com", tls),
        &format!("https://api.example.com:{}/health", tls.port()),
    ]);
    assert_eq!(secure.status, 200, "{secure:?}");
    assert_eq!(
        env.upstream.count(),
        1,
        "the redirected request is not forwarded"
    );
}

/// A gateway with a TLS listener for `api.example.com` and these `[limits]`.
async fn tls_env_with_limits(ca: &TestCa, limits: &str) -> crate::common::TestEnv {
    crate::common::TestEnv::start_with(|dir, _| {
        crate::edge::write_certificates(ca, &dir.join("certs"));
        crate::edge::support::set_limits(dir, limits);
        crate::edge::support::append_config(
            dir,
            "\n[server.tls]\nlisten = \"127.0.0.1:0\"\n\
             certificates = [{ cert = \"certs/api.crt\", key = \"certs/api.key\" }]\n",
        );
    })
    .await
}

/// A TLS connection to the gateway for `api.example.com`, offering `alpn`.
async fn tls_connect(
    env: &crate::common::TestEnv,
    ca: &TestCa,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(env.gateway_tls.unwrap())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("api.example.com").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// True once the gateway has closed `tls` (EOF or error), waiting at most `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(tls: &mut S, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tokio::io::AsyncReadExt::read(tls, &mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_chose_h2_and_sends_no_preface_is_disconnected() {
    let ca = TestCa::new();
    let env = tls_env_with_limits(&ca, "request_head_timeout_seconds = 1").await;
    let mut tls = tls_connect(&env, &ca, b"h2").await;
    // Nothing is sent: the gateway must close the connection, well within this bound.
    assert!(
        closed_within(&mut tls, Duration::from_secs(15)).await,
        "a silent h2 client kept its TLS connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_head_on_a_kept_alive_tls_connection_is_cut_off_at_the_head_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new();
    // The idle timeout is far longer than the head deadline: the next head's deadline runs
    // from its own first byte, not from the end of the previous request plus the idle wait.
    let env = tls_env_with_limits(
        &ca,
        "request_head_timeout_seconds = 1\nidle_timeout_seconds = 60",
    )
    .await;
    let mut tls = tls_connect(&env, &ca, b"http/1.1").await;
    let request = b"GET /health HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
    tls.write_all(request).await.unwrap();
    let mut response = vec![0u8; 4096];
    let read = tls.read(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..read]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Idle for longer than the head deadline: waiting is not slow sending.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: api.example.com\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut tls, Duration::from_secs(10)).await,
        "an unfinished head on a kept-alive TLS connection stayed open"
    );
}
