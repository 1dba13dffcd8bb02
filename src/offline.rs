//! The gateway without sockets or identity providers, for `portcullis test` and `explain`.
//!
//! The configuration is loaded exactly as `run` loads it, except that each issuer's key set is
//! replaced by a key pair generated here. A caller given as claims gets a token signed with that
//! key, so the request goes through the whole pipeline — token parsing, signature, claim rules,
//! claim mapping, route, Cedar — with nothing simulated but the identity provider.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::authn::jwks::KeySet;
use crate::authn::KeyStore;
use crate::config::{load_snapshot, ConfigError, Settings};
use crate::dev_issuer::{DevIssuer, SigningAlg};
use crate::pipeline::{evaluate, Incoming, Outcome, Transport};
use crate::server::load_gateway;
use crate::snapshot::{Gateway, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot sign a token here: {0}")]
    Signing(String),
    #[error("{0}")]
    KeyFetch(String),
    #[error("{0}")]
    Claims(String),
    #[error("{0}")]
    Request(String),
}

/// One request, as `portcullis test` and `explain` describe it.
#[derive(Debug, Clone)]
pub struct OfflineRequest {
    pub method: String,
    /// Path, with the query if any, exactly as a client would send it.
    pub target: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub client_ip: IpAddr,
    pub caller: OfflineCaller,
}

/// Who sends the request.
#[derive(Debug, Clone)]
pub enum OfflineCaller {
    /// No `Authorization` header.
    Anonymous,
    /// A token signed here carrying these claims (`iss`, `aud`, `iat` and `exp` are filled in
    /// when absent: the first issuer, its first audience, now, an hour from now).
    Claims(Map<String, Value>),
    /// This exact bearer token.
    Token(String),
}

pub struct OfflineGateway {
    pub gateway: Gateway,
    /// Issuer → the key that signs its tokens here.
    signers: HashMap<String, DevIssuer>,
    /// (issuer, first audience) of the first configured issuer.
    default_issuer: Option<(String, String)>,
    /// The version of the next snapshot made by `snapshot_with` (the gateway's own is 1).
    next_version: AtomicU64,
}

impl OfflineGateway {
    pub fn load(config: &Path) -> Result<Self, OfflineError> {
        let settings = Settings::load(config)?;
        let mut signers = HashMap::new();
        for issuer in &settings.issuers {
            let name = issuer.rules.issuer.clone();
            let signer = DevIssuer::generate(name.clone())
                .map_err(|e| OfflineError::Signing(e.to_string()))?;
            signers.insert(name, signer);
        }
        let authenticator = settings.authenticator_with(|issuer| {
            let jwks = signers
                .get(&issuer.rules.issuer)
                .map(|s| s.jwks().to_string())
                .unwrap_or_default();
            KeyStore::preloaded(KeySet::parse("generated", jwks.as_bytes())?, issuer.fetch)
        })?;
        let default_issuer = settings.issuers.first().map(|i| {
            (
                i.rules.issuer.clone(),
                i.rules.audiences.first().cloned().unwrap_or_default(),
            )
        });
        let snapshot = load_snapshot(&settings, 1, None, None)?;
        Ok(OfflineGateway {
            gateway: Gateway::new(settings, authenticator, snapshot, None),
            signers,
            default_issuer,
            next_version: AtomicU64::new(2),
        })
    }

    /// The configuration with the issuers' real key sets, fetched now (`explain --token`).
    /// Tokens must then come from the identity providers; claims cannot be signed.
    pub async fn load_live(config: &Path) -> Result<Self, OfflineError> {
        let gateway = load_gateway(config)?;
        let missing = gateway.fetch_keys().await;
        if !missing.is_empty() {
            return Err(OfflineError::KeyFetch(format!(
                "the keys of {} could not be fetched",
                missing.join(", ")
            )));
        }
        Ok(OfflineGateway {
            gateway,
            signers: HashMap::new(),
            default_issuer: None,
            next_version: AtomicU64::new(2),
        })
    }

    /// A fresh snapshot whose directory also holds `entities` (entity JSON, checked against the
    /// schema). It gets a version of its own: cached tokens keep what they built (principal and
    /// entity store) per snapshot version, so two snapshots must never share one.
    pub fn snapshot_with(&self, entities: &[Value]) -> Result<Snapshot, OfflineError> {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let mut snapshot = load_snapshot(&self.gateway.settings, version, None, None)?;
        let extra = cedar_policy::Entities::from_json_value(
            Value::Array(entities.to_vec()),
            Some(&snapshot.bundle.schema),
        )
        .map_err(|e| OfflineError::Request(format!("extra entities: {e}")))?;
        snapshot.bundle = snapshot
            .bundle
            .with_entities(extra)
            .map_err(|e| OfflineError::Request(format!("extra entities: {e}")))?;
        Ok(snapshot)
    }

    /// A token for `claims`, signed with the key generated for its issuer.
    pub fn token(&self, claims: &Map<String, Value>) -> Result<String, OfflineError> {
        let mut claims = claims.clone();
        let (default_issuer, audience) = self.default_issuer.clone().ok_or_else(|| {
            OfflineError::Claims(
                "claims can only be signed with generated keys, and portcullis.toml needs an [[issuers]] for them"
                    .to_string(),
            )
        })?;
        let issuer = match claims.get("iss") {
            Some(Value::String(iss)) => iss.clone(),
            _ => default_issuer,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let settings = self
            .gateway
            .settings
            .issuers
            .iter()
            .find(|i| i.rules.issuer == issuer)
            .ok_or_else(|| OfflineError::Claims(format!("issuer {issuer:?} is not configured")))?;
        let audience = settings
            .rules
            .audiences
            .first()
            .cloned()
            .unwrap_or(audience);
        claims
            .entry("iss")
            .or_insert_with(|| Value::from(issuer.clone()));
        claims.entry("aud").or_insert_with(|| Value::from(audience));
        claims.entry("iat").or_insert_with(|| Value::from(now));
        claims
            .entry("exp")
            .or_insert_with(|| Value::from(now + 3600));
        // Signed the way the issuer's real tokens are: an algorithm it accepts, its `typ`.
        let alg = if settings.algorithms.contains(&Algorithm::RS256) {
            SigningAlg::Rs256
        } else if settings.algorithms.contains(&Algorithm::ES256) {
            SigningAlg::Es256
        } else {
            return Err(OfflineError::Signing(format!(
                "issuer {issuer:?} accepts neither RS256 nor ES256, the algorithms tokens are signed with here"
            )));
        };
        let signer = self.signers.get(&issuer).ok_or_else(|| {
            OfflineError::Claims(format!("issuer {issuer:?} has no generated key"))
        })?;
        let header = serde_json::json!({
            "alg": alg.as_str(),
            "typ": settings.rules.token_type.as_deref().unwrap_or("JWT"),
            "kid": signer.kid(alg),
        });
        signer
            .mint_with_header(alg, &header, &Value::Object(claims))
            .map_err(|e| OfflineError::Signing(e.to_string()))
    }

    /// Runs the pipeline for one request against `snapshot`.
    pub async fn evaluate(
        &self,
        snapshot: &Snapshot,
        request: &OfflineRequest,
    ) -> Result<Outcome, OfflineError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| OfflineError::Request(format!("{name:?} is not a header name")))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                OfflineError::Request(format!("the value of {name} is not a header value"))
            })?;
            headers.append(name, value);
        }
        let bearer = match &request.caller {
            OfflineCaller::Anonymous => None,
            OfflineCaller::Claims(claims) => Some(self.token(claims)?),
            OfflineCaller::Token(token) => Some(token.clone()),
        };
        if let Some(host) = &request.host {
            let value = HeaderValue::from_str(host)
                .map_err(|_| OfflineError::Request(format!("{host:?} is not a header value")))?;
            headers.append(http::header::HOST, value);
        }
        if let Some(token) = bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| OfflineError::Request("the token is not a header value".into()))?;
            headers.append(http::header::AUTHORIZATION, value);
        }
        let incoming = Incoming {
            method: &request.method,
            target: request.target.as_bytes(),
            headers: &headers,
            host_required: false,
            authority: None,
            client_ip: Some(request.client_ip),
            // Evaluated as the request would be once it reached the gateway over HTTPS: a
            // plaintext redirect is not a decision to explain.
            transport: Transport {
                secure: true,
                sni: None,
            },
            cors: self.gateway.settings.cors.as_ref(),
        };
        Ok(evaluate(&self.gateway, snapshot, &incoming).await)
    }
}
