//! Okta's management API: users, groups and group members (`/api/v1/users`, `/api/v1/groups`,
//! `/api/v1/groups/{id}/users`), paginated by `limit` and the `Link: <...>; rel="next"`
//! header. Authenticated by an API token (`SSWS`) or by OAuth 2.0 for Okta: client
//! credentials with a `private_key_jwt` assertion, for the scopes `okta.users.read` and
//! `okta.groups.read`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Url;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::api::{next_link, ApiClient};
use super::builder::{DirectoryBuilder, EntityMapping};
use super::settings::OktaAuth;
use super::{SourceSettings, SyncError, SyncedEntity};

const LIMIT: usize = 200;
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

pub struct Okta {
    base: Url,
    auth: OktaAuth,
    users: EntityMapping,
    groups: Option<EntityMapping>,
    group_search: Option<String>,
    token: Mutex<Option<(String, Instant)>>,
}

impl Okta {
    pub fn new(
        source: &SourceSettings,
        auth: &OktaAuth,
        groups: Option<&EntityMapping>,
        group_search: Option<&str>,
    ) -> Self {
        Okta {
            base: source.url.clone(),
            auth: auth.clone(),
            users: source.users.clone(),
            groups: groups.cloned(),
            group_search: group_search.map(str::to_string),
            token: Mutex::new(None),
        }
    }

    pub async fn fetch(&self, client: &ApiClient) -> Result<(Vec<SyncedEntity>, usize), SyncError> {
        let authorization = self.authorization(client).await?;
        let mut builder = DirectoryBuilder::default();
        let read = self.read_all(client, &authorization, &mut builder).await;
        if let Err(SyncError::Status { status: 401, .. }) = read {
            // A revoked or expired access token: the next sync asks for a new one.
            *self.token.lock().await = None;
        }
        read?;
        let unmapped = builder.unmapped();
        Ok((builder.finish(), unmapped))
    }

    async fn read_all(
        &self,
        client: &ApiClient,
        authorization: &str,
        builder: &mut DirectoryBuilder,
    ) -> Result<(), SyncError> {
        let users = self.url(&["api", "v1", "users"], &[])?;
        self.walk(client, authorization, users, |user| {
            builder.add(&self.users, user);
        })
        .await?;
        let Some(groups) = &self.groups else {
            return Ok(());
        };
        let search: Vec<(&str, &str)> = self
            .group_search
            .iter()
            .map(|s| ("search", s.as_str()))
            .collect();
        let mut listed = Vec::new();
        let url = self.url(&["api", "v1", "groups"], &search)?;
        self.walk(client, authorization, url, |group| {
            listed.push(group.clone())
        })
        .await?;
        for group in &listed {
            let Some(uid) = builder.add(groups, group) else {
                continue;
            };
            let id = group["id"].as_str().ok_or_else(|| SyncError::Malformed {
                url: self.base.to_string(),
                reason: "a listed group has no \"id\"".into(),
            })?;
            let members = self.url(&["api", "v1", "groups", id, "users"], &[])?;
            self.walk(client, authorization, members, |user| {
                builder.add_member(&self.users, user, &uid)
            })
            .await?;
        }
        Ok(())
    }

    /// Follows `Link: rel="next"` from `url`, handing every item of every page to `each`.
    /// A next link to another origin is refused: it would receive the credentials.
    async fn walk(
        &self,
        client: &ApiClient,
        authorization: &str,
        mut url: Url,
        mut each: impl FnMut(&Value),
    ) -> Result<(), SyncError> {
        loop {
            let answer = client.get(&url, authorization).await?;
            let items = answer.body.as_array().ok_or_else(|| SyncError::Malformed {
                url: url.to_string(),
                reason: "the answer is not a JSON array".into(),
            })?;
            items.iter().for_each(&mut each);
            let Some(next) = next_link(&answer.headers) else {
                return Ok(());
            };
            let next = url.join(&next).map_err(|e| SyncError::Malformed {
                url: url.to_string(),
                reason: format!("the next link {next:?} is not a URL: {e}"),
            })?;
            if next.origin() != self.base.origin() {
                return Err(SyncError::Malformed {
                    url: url.to_string(),
                    reason: format!(
                        "the next link leaves {}: {next}",
                        self.base.origin().ascii_serialization()
                    ),
                });
            }
            if items.is_empty() || next == url {
                return Ok(());
            }
            url = next;
        }
    }

    async fn authorization(&self, client: &ApiClient) -> Result<String, SyncError> {
        match &self.auth {
            OktaAuth::ApiToken(token) => Ok(format!(
                "SSWS {}",
                token.read().map_err(|e| SyncError::Secret(e.to_string()))?
            )),
            OktaAuth::PrivateKey {
                client_id,
                key,
                key_id,
                scopes,
            } => {
                let mut cached = self.token.lock().await;
                if let Some((token, expires)) = cached.as_ref() {
                    if Instant::now() + TOKEN_MARGIN < *expires {
                        return Ok(format!("Bearer {token}"));
                    }
                }
                let token_url = self.url(&["oauth2", "v1", "token"], &[])?;
                let assertion = client_assertion(
                    client_id,
                    &key.read().map_err(|e| SyncError::Secret(e.to_string()))?,
                    key_id.as_deref(),
                    &token_url,
                )?;
                let body: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("scope", &scopes.join(" "))
                    .append_pair(
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    )
                    .append_pair("client_assertion", &assertion)
                    .finish();
                let answer = client
                    .post(&token_url, "application/x-www-form-urlencoded", body)
                    .await
                    .map_err(|e| {
                        SyncError::Credentials(format!("client credentials exchange: {e}"))
                    })?;
                let token = answer.body["access_token"]
                    .as_str()
                    .ok_or_else(|| {
                        SyncError::Credentials("the token response has no access_token".into())
                    })?
                    .to_string();
                let lifetime = answer.body["expires_in"].as_u64().unwrap_or(0);
                *cached = Some((
                    token.clone(),
                    Instant::now() + Duration::from_secs(lifetime),
                ));
                Ok(format!("Bearer {token}"))
            }
        }
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Url, SyncError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| SyncError::Malformed {
                url: self.base.to_string(),
                reason: "cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .extend(path);
        {
            let mut pairs = url.query_pairs_mut();
            if path.last() != Some(&"token") {
                pairs.append_pair("limit", &LIMIT.to_string());
            }
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }
}

/// The `private_key_jwt` client assertion Okta's token endpoint takes: signed by the app's
/// key, issued by and about the client, for the token endpoint, valid five minutes.
fn client_assertion(
    client_id: &str,
    pem: &str,
    key_id: Option<&str>,
    token_url: &Url,
) -> Result<String, SyncError> {
    let (algorithm, key) = if pem.contains("EC PRIVATE KEY") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes()))
    } else {
        match EncodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(key) => (Algorithm::RS256, Ok(key)),
            Err(_) => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
        }
    };
    let key = key.map_err(|e| {
        SyncError::Credentials(format!(
            "the private key is not an RSA or P-256 PEM key: {e}"
        ))
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| SyncError::Credentials(e.to_string()))?
        .as_secs();
    let mut header = Header::new(algorithm);
    header.kid = key_id.map(str::to_string);
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| SyncError::Credentials("no randomness".into()))?;
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url.as_str(),
        "iat": now,
        "exp": now + 300,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| SyncError::Credentials(format!("cannot sign the client assertion: {e}")))
}
