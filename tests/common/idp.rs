//! A local identity provider that plays Auth0 or Okta: their issuer URL shapes, discovery and
//! JWKS locations and `Cache-Control`, signing keys that can be rotated, and a JWKS endpoint
//! that can go down, answer 503, serve garbage or hold its answer until released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};
use portcullis::demo::{DevIssuer, SigningAlg};
use portcullis::http_server::{json_response, serve as serve_http, ResponseBody};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `https://TENANT.auth0.com/`: trailing slash, JWKS at `/.well-known/jwks.json`.
    Auth0,
    /// `https://TENANT.okta.com/oauth2/default`: JWKS at `{issuer}/v1/keys`.
    Okta,
}

/// How the JWKS endpoint behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    Serve,
    /// 503 Service Unavailable.
    Unavailable,
    /// 200 with a body that is not a JWKS.
    Garbage,
    /// Waits until `release_held` before answering normally.
    Hold,
    /// The real key set, padded to 2 MiB: valid, but larger than the gateway reads.
    Huge,
}

struct State {
    issuer: String,
    jwks_path: String,
    discovery_path: String,
    signer: Mutex<Arc<DevIssuer>>,
    published: Mutex<Vec<Arc<DevIssuer>>>,
    mode: Mutex<JwksMode>,
    cache_control: Mutex<String>,
    released: Semaphore,
    held: AtomicU64,
    jwks_requests: AtomicU64,
}

pub struct TestIssuer {
    pub url: String,
    pub flavor: Flavor,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TestIssuer {
    pub async fn start(flavor: Flavor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = Self::new(flavor, listener.local_addr().unwrap());
        issuer.serve_on(listener);
        issuer
    }

    /// An issuer whose address is reserved but not served yet (connection refused) until
    /// `come_up`.
    pub async fn down(flavor: Flavor) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        Self::new(flavor, address)
    }

    fn new(flavor: Flavor, address: std::net::SocketAddr) -> Self {
        let (url, path, jwks, cache_control) = match flavor {
            Flavor::Auth0 => (
                format!("http://{address}/"),
                String::new(),
                "/.well-known/jwks.json".to_string(),
                "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400",
            ),
            Flavor::Okta => (
                format!("http://{address}/oauth2/default"),
                "/oauth2/default".to_string(),
                "/oauth2/default/v1/keys".to_string(),
                "max-age=3985, must-revalidate",
            ),
        };
        let key = Arc::new(DevIssuer::generate(url.clone()).unwrap());
        let state = Arc::new(State {
            issuer: url.clone(),
            discovery_path: format!("{path}/.well-known/openid-configuration"),
            jwks_path: jwks,
            signer: Mutex::new(key.clone()),
            published: Mutex::new(vec![key]),
            mode: Mutex::new(JwksMode::Serve),
            cache_control: Mutex::new(cache_control.to_string()),
            released: Semaphore::new(0),
            held: AtomicU64::new(0),
            jwks_requests: AtomicU64::new(0),
        });
        TestIssuer {
            url,
            flavor,
            state,
            task: Mutex::new(None),
        }
    }

    fn serve_on(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(serve_http(listener, move |req| {
            let state = state.clone();
            async move { state.respond(req.uri().path()).await }
        }));
        *self.task.lock().unwrap() = Some(task);
    }

    /// Starts serving on the reserved address.
    pub async fn come_up(&self) {
        let address = self.url.trim_start_matches("http://");
        let address = &address[..address.find('/').unwrap()];
        let listener = TcpListener::bind(address).await.unwrap();
        self.serve_on(listener);
    }

    /// Stops serving: connections are refused from now on.
    pub fn go_down(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    pub fn set_mode(&self, mode: JwksMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.lock().unwrap() = value.to_string();
    }

    /// JWKS requests answered or held so far, whatever the answer.
    pub fn jwks_requests(&self) -> u64 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// JWKS requests currently held (mode `Hold`).
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Lets every held and future held request through.
    pub fn release_held(&self) {
        self.state.released.add_permits(1000);
    }

    pub fn signer(&self) -> Arc<DevIssuer> {
        self.state.signer.lock().unwrap().clone()
    }

    pub fn kid(&self) -> String {
        self.signer().kid(SigningAlg::Rs256).to_string()
    }

    /// Signs with the current key (RS256), header as the IdP writes it.
    pub fn token(&self, claims: &Value) -> String {
        let signer = self.signer();
        let header = match self.flavor {
            Flavor::Auth0 => {
                json!({"alg": "RS256", "typ": "JWT", "kid": signer.kid(SigningAlg::Rs256)})
            }
            Flavor::Okta => json!({"kid": signer.kid(SigningAlg::Rs256), "alg": "RS256"}),
        };
        signer
            .mint_with_header(SigningAlg::Rs256, &header, claims)
            .unwrap()
    }

    /// A new signing key, published beside the old ones.
    pub fn rotate(&self) {
        let key = Arc::new(DevIssuer::generate(self.url.clone()).unwrap());
        self.state.published.lock().unwrap().push(key.clone());
        *self.state.signer.lock().unwrap() = key;
    }

    /// Publishes only the current signing key.
    pub fn retire_old_keys(&self) {
        let signer = self.signer();
        *self.state.published.lock().unwrap() = vec![signer];
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.go_down();
    }
}

impl State {
    async fn respond(&self, path: &str) -> Response<ResponseBody> {
        if path == self.discovery_path {
            let jwks_uri = format!(
                "http://{}{}",
                self.issuer
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap(),
                self.jwks_path
            );
            return json_response(
                StatusCode::OK,
                &json!({
                    "issuer": self.issuer,
                    "jwks_uri": jwks_uri,
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            );
        }
        if path != self.jwks_path {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        self.jwks_requests.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            JwksMode::Unavailable => {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"error": "unavailable"}),
                )
            }
            JwksMode::Garbage => {
                return json_response(StatusCode::OK, &json!({"keys": "not a list"}))
            }
            JwksMode::Hold => {
                self.held.fetch_add(1, Ordering::SeqCst);
                let _permit = self.released.acquire().await.unwrap();
                self.held.fetch_sub(1, Ordering::SeqCst);
            }
            JwksMode::Serve | JwksMode::Huge => {}
        }
        let keys: Vec<Value> = self
            .published
            .lock()
            .unwrap()
            .iter()
            .flat_map(|k| k.jwks()["keys"].as_array().unwrap().clone())
            .collect();
        let mut document = json!({ "keys": keys });
        if mode == JwksMode::Huge {
            document["padding"] = json!("x".repeat(2 * 1024 * 1024));
        }
        let mut response = json_response(StatusCode::OK, &document);
        let cache_control = self.cache_control.lock().unwrap().clone();
        response
            .headers_mut()
            .insert(http::header::CACHE_CONTROL, cache_control.parse().unwrap());
        response
    }
}
