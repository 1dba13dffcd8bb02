//! The load test's fixture: the upstream, the token issuer, and the tokens the generator sends.
//!
//! It runs on the generator's cores, never on the proxy's:
//! - a keep-alive HTTP/1.1 upstream that answers every request with 1 KiB and counts the
//!   connections it accepts, so the harness can compute upstream connection reuse;
//! - a development issuer serving its JWKS, which the gateway fetches at start;
//! - token files minted with that issuer: `warm.txt` (one token allowed by the policies),
//!   `deny.txt` (a valid token the tenant-isolation policy forbids), `cold.txt` (a pool of
//!   distinct allowed tokens of alice, one per line), `cold_callers.txt` (as many allowed
//!   tokens, each of a different caller) and `rsa_public.pem` (the verification key, for the
//!   HAProxy peer);
//! - `tls.crt` / `tls.key`: a self-signed certificate for `localhost` and `127.0.0.1`, made
//!   anew each run, which the gateway and bare pingora terminate TLS with (`--tls`).
//!
//! `GET /` on the stats address answers `{"accepts": .., "requests": ..}`. The fixture prints
//! `ready` once every listener is bound and every file written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis::demo::{demo_claims, serve_issuer, DevIssuer, SigningAlg};
use portcullis::http_server::{json_response, serve, serve_counting_accepts};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The audience of the repository's example configuration.
const AUDIENCE: &str = "https://tasks.example.com";
/// Size of the upstream's response body.
const BODY_BYTES: usize = 1024;

#[derive(Parser)]
struct Args {
    /// The upstream's address.
    #[arg(long)]
    upstream: SocketAddr,
    /// The issuer's address; its URL is `http://{issuer}/`.
    #[arg(long)]
    issuer: SocketAddr,
    /// Where the upstream's counters are served.
    #[arg(long)]
    stats: SocketAddr,
    /// Directory the token files are written to.
    #[arg(long)]
    tokens: PathBuf,
    /// Number of distinct tokens in `cold.txt` and in `cold_callers.txt`.
    #[arg(long, default_value_t = 20_000)]
    cold_tokens: usize,
    /// Worker threads of the upstream.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let issuer_url = format!("http://{}/", args.issuer);
    let issuer = Arc::new(DevIssuer::generate(issuer_url.clone())?);
    write_tokens(&issuer, &issuer_url, &args)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let accepts = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let body = Bytes::from(vec![b'x'; BODY_BYTES]);
        let counted = requests.clone();
        let upstream = TcpListener::bind(args.upstream).await?;
        tokio::spawn(serve_counting_accepts(
            upstream,
            accepts.clone(),
            move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
                let body = body.clone();
                async move {
                    let mut response = Response::new(Full::new(body));
                    *response.status_mut() = StatusCode::OK;
                    response
                }
            },
        ));
        let stats = TcpListener::bind(args.stats).await?;
        tokio::spawn(serve(stats, move |_| {
            let counters = json!({
                "accepts": accepts.load(Ordering::Relaxed),
                "requests": requests.load(Ordering::Relaxed),
            });
            async move { json_response(StatusCode::OK, &counters) }
        }));
        tokio::spawn(serve_issuer(issuer, TcpListener::bind(args.issuer).await?));
        println!("ready");
        std::future::pending::<anyhow::Result<()>>().await
    })
}

/// Claims of a manager at acme, who may read acme's tasks, with a `jti` that makes each token
/// distinct. The demo's `alice` is in the directory; other callers are known from their
/// tokens only.
fn allowed_claims(issuer_url: &str, subject: &str, jti: usize) -> Value {
    let mut claims = demo_claims(issuer_url, AUDIENCE, subject, &["manager"], "org_acme");
    claims["jti"] = json!(format!("loadtest-{jti}"));
    claims
}

fn write_tokens(issuer: &DevIssuer, issuer_url: &str, args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.tokens)
        .with_context(|| format!("cannot create {}", args.tokens.display()))?;
    let write = |name: &str, text: String| {
        let path = args.tokens.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "warm.txt",
        issuer.mint(SigningAlg::Rs256, &allowed_claims(issuer_url, "alice", 0))?,
    )?;
    // carol is an admin of globex: the tenant-isolation policy forbids acme's tasks to her.
    let carol = demo_claims(issuer_url, AUDIENCE, "carol", &["admin"], "org_globex");
    write("deny.txt", issuer.mint(SigningAlg::Rs256, &carol)?)?;
    write("rsa_public.pem", issuer.rsa_public_key_pem()?)?;
    let key = rcgen::KeyPair::generate()?;
    let certificate =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
            .self_signed(&key)?;
    write("tls.crt", certificate.pem())?;
    write("tls.key", key.serialize_pem())?;
    write(
        "cold.txt",
        mint_pool(issuer, args.cold_tokens, |i| {
            allowed_claims(issuer_url, "alice", i + 1)
        })?,
    )?;
    write(
        "cold_callers.txt",
        mint_pool(issuer, args.cold_tokens, |i| {
            allowed_claims(issuer_url, &format!("caller-{i}"), i + 1)
        })?,
    )
}

/// `count` RS256 tokens, one a line, the i-th with `claims(i)`. RSA signing is slow (about
/// 1 ms a token): the pool is minted on every core.
fn mint_pool(
    issuer: &DevIssuer,
    count: usize,
    claims: impl Fn(usize) -> Value + Sync,
) -> anyhow::Result<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    let claims = &claims;
    let minted: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(count);
                scope.spawn(move || {
                    (start..end)
                        .map(|i| Ok(issuer.mint(SigningAlg::Rs256, &claims(i))?))
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a minting thread panicked")))
            })
            .collect()
    });
    let mut pool = String::new();
    for tokens in minted {
        for token in tokens? {
            pool.push_str(&token);
            pool.push('\n');
        }
    }
    Ok(pool)
}
