//! Auth0's Management API v2: a machine-to-machine token by client credentials (kept until
//! shortly before it expires), then users, roles and their members, organizations and their
//! members with their organization roles.
//!
//! `/api/v2/users` pages by `page`/`per_page` and stops at 1,000 results, so a larger tenant's
//! users are read through a bulk export job instead; the member lists
//! (`/roles/{id}/users`, `/organizations`, `/organizations/{id}/members`) use checkpoint
//! pagination (`take`, then `from` = the previous answer's `next`), which has no such limit.

use std::time::Duration;

use reqwest::Url;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::api::ApiClient;
use super::builder::{DirectoryBuilder, EntityMapping, FieldPath};
use super::settings::Auth0Settings;
use super::{SourceSettings, SyncError, SyncedEntity};

const PER_PAGE: usize = 100;
/// Auth0's page-based listing returns at most this many results.
const PAGED_LIMIT: u64 = 1000;
/// How often a users export job is polled, and how long it may take.
const EXPORT_POLL: Duration = Duration::from_secs(2);
const EXPORT_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

pub struct Auth0 {
    base: Url,
    settings: Auth0Settings,
    users: EntityMapping,
    token: Mutex<Option<(String, Instant)>>,
}

impl Auth0 {
    pub fn new(source: &SourceSettings, settings: &Auth0Settings) -> Self {
        Auth0 {
            base: source.url.clone(),
            settings: settings.clone(),
            users: source.users.clone(),
            token: Mutex::new(None),
        }
    }

    /// One full read of the tenant.
    pub async fn fetch(&self, client: &ApiClient) -> Result<(Vec<SyncedEntity>, usize), SyncError> {
        let authorization = format!("Bearer {}", self.access_token(client).await?);
        let mut builder = DirectoryBuilder::default();
        self.read_users(client, &authorization, &mut builder)
            .await?;
        if let Some(roles) = &self.settings.roles {
            self.read_roles(client, &authorization, roles, &mut builder)
                .await?;
        }
        if let Some(organizations) = &self.settings.organizations {
            self.read_organizations(client, &authorization, organizations, &mut builder)
                .await?;
        }
        let unmapped = builder.unmapped();
        Ok((builder.finish(), unmapped))
    }

    async fn access_token(&self, client: &ApiClient) -> Result<String, SyncError> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if Instant::now() + TOKEN_MARGIN < *expires {
                return Ok(token.clone());
            }
        }
        let url = self.url("oauth/token")?;
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.read().map_err(|e| SyncError::Secret(e.to_string()))?,
            "audience": self.settings.audience,
        });
        let answer = client
            .post(&url, "application/json", body.to_string())
            .await
            .map_err(|e| SyncError::Credentials(format!("client credentials exchange: {e}")))?;
        let token = answer.body["access_token"]
            .as_str()
            .ok_or_else(|| malformed(&url, "the token response has no access_token"))?
            .to_string();
        let lifetime = answer.body["expires_in"].as_u64().unwrap_or(0);
        *cached = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        Ok(token)
    }

    async fn read_users(
        &self,
        client: &ApiClient,
        authorization: &str,
        builder: &mut DirectoryBuilder,
    ) -> Result<(), SyncError> {
        let fields: Vec<&str> = self.users.fields().into_iter().collect();
        let mut page = 0;
        let mut seen = 0u64;
        loop {
            let mut url = self.url("api/v2/users")?;
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("per_page", &PER_PAGE.to_string())
                .append_pair("include_totals", "true")
                .append_pair("fields", &fields.join(","))
                .append_pair("include_fields", "true");
            let answer = client.get(&url, authorization).await?;
            let total = answer.body["total"]
                .as_u64()
                .ok_or_else(|| malformed(&url, "no \"total\" (include_totals)"))?;
            if total > PAGED_LIMIT {
                return self
                    .export_users(client, authorization, &fields, builder)
                    .await;
            }
            let users = array(&answer.body, "users", &url)?;
            for user in users {
                builder.add(&self.users, user);
            }
            seen += users.len() as u64;
            if users.is_empty() || seen >= total {
                return Ok(());
            }
            page += 1;
        }
    }

    /// Reads every user through a bulk export job (`/api/v2/jobs/users-exports`, JSON lines,
    /// gzip), which has no result limit: create it, poll it until it completes, then stream
    /// the file from its signed `location` (fetched without the management token).
    async fn export_users(
        &self,
        client: &ApiClient,
        authorization: &str,
        fields: &[&str],
        builder: &mut DirectoryBuilder,
    ) -> Result<(), SyncError> {
        let create = self.url("api/v2/jobs/users-exports")?;
        let request = json!({
            "format": "json",
            "fields": fields.iter().map(|name| json!({"name": name})).collect::<Vec<_>>(),
        });
        let job = client
            .post_authorized(&create, authorization, request.to_string())
            .await?;
        let id = string_field(&job.body, "id", &create)?.to_string();
        let started = Instant::now();
        let location = loop {
            let status_url = self.url(&format!("api/v2/jobs/{id}"))?;
            let job = client.get(&status_url, authorization).await?;
            match job.body["status"].as_str() {
                Some("completed") => {
                    break string_field(&job.body, "location", &status_url)?.to_string()
                }
                Some("pending" | "processing") if started.elapsed() < EXPORT_DEADLINE => {
                    tokio::time::sleep(EXPORT_POLL).await;
                }
                status => {
                    return Err(malformed(
                        &status_url,
                        &format!(
                            "the users export job {id} ended {status:?} after {} s",
                            started.elapsed().as_secs()
                        ),
                    ))
                }
            }
        };
        let location = Url::parse(&location).map_err(|e| {
            malformed(
                &self.base,
                &format!("the export location is not a URL: {e}"),
            )
        })?;
        if location.scheme() != "https" && location.origin() != self.base.origin() {
            return Err(malformed(&location, "the export location is not https"));
        }
        client
            .get_gzip_lines(&location, |line| {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(());
                }
                let user: Value = serde_json::from_slice(line).map_err(|e| {
                    malformed(&location, &format!("an exported line is not JSON: {e}"))
                })?;
                builder.add(&self.users, &user);
                Ok(())
            })
            .await
    }

    async fn read_roles(
        &self,
        client: &ApiClient,
        authorization: &str,
        roles: &EntityMapping,
        builder: &mut DirectoryBuilder,
    ) -> Result<(), SyncError> {
        let mut page = 0;
        let mut listed = Vec::new();
        loop {
            let mut url = self.url("api/v2/roles")?;
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("per_page", &PER_PAGE.to_string())
                .append_pair("include_totals", "true");
            let answer = client.get(&url, authorization).await?;
            let total = answer.body["total"].as_u64().unwrap_or(0);
            let batch = array(&answer.body, "roles", &url)?;
            listed.extend(batch.iter().cloned());
            if batch.is_empty() || listed.len() as u64 >= total {
                break;
            }
            page += 1;
        }
        for role in &listed {
            let Some(uid) = builder.add(roles, role) else {
                continue;
            };
            let id = string_field(role, "id", &self.base)?;
            let path = ["api", "v2", "roles", id, "users"];
            self.checkpoint(client, authorization, &path, &[], "users", |user| {
                builder.add_member(&self.users, user, &uid)
            })
            .await?;
        }
        Ok(())
    }

    async fn read_organizations(
        &self,
        client: &ApiClient,
        authorization: &str,
        organizations: &EntityMapping,
        builder: &mut DirectoryBuilder,
    ) -> Result<(), SyncError> {
        let mut listed = Vec::new();
        self.checkpoint(
            client,
            authorization,
            &["api", "v2", "organizations"],
            &[],
            "organizations",
            |organization| listed.push(organization.clone()),
        )
        .await?;
        let member_roles = self.settings.organization_roles.as_ref();
        let mut fields: Vec<&str> = self.users.fields().into_iter().collect();
        if member_roles.is_some() {
            fields.push("roles");
        }
        let fields = fields.join(",");
        let role_name = self
            .settings
            .roles
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_else(|| FieldPath::field("name"));
        for organization in &listed {
            let Some(uid) = builder.add(organizations, organization) else {
                continue;
            };
            let id = string_field(organization, "id", &self.base)?;
            let path = ["api", "v2", "organizations", id, "members"];
            let query = [("fields", fields.as_str()), ("include_fields", "true")];
            self.checkpoint(client, authorization, &path, &query, "members", |member| {
                builder.add_member(&self.users, member, &uid);
                let (Some(mapping), Some(user)) = (member_roles, self.users.uid_of(member)) else {
                    return;
                };
                let roles = member["roles"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                for role in roles {
                    if let Some(Value::String(name)) = role_name.get(role) {
                        let parent = super::Uid {
                            entity_type: mapping.entity_type.clone(),
                            id: mapping.id_for(&uid.id, name),
                        };
                        builder.add_parent(&user, parent);
                    }
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Walks a checkpoint-paginated list (`take`, then `from` = `next`), handing each item of
    /// the answer's `key` array to `each`.
    async fn checkpoint(
        &self,
        client: &ApiClient,
        authorization: &str,
        path: &[&str],
        query: &[(&str, &str)],
        key: &str,
        mut each: impl FnMut(&Value),
    ) -> Result<(), SyncError> {
        let mut from: Option<String> = None;
        loop {
            let mut url = self.base.clone();
            url.path_segments_mut()
                .map_err(|()| malformed(&self.base, "cannot be a base URL"))?
                .pop_if_empty()
                .extend(path);
            {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("take", &PER_PAGE.to_string());
                if let Some(from) = &from {
                    pairs.append_pair("from", from);
                }
                for (name, value) in query {
                    pairs.append_pair(name, value);
                }
            }
            let answer = client.get(&url, authorization).await?;
            let items = array(&answer.body, key, &url)?;
            items.iter().for_each(&mut each);
            match answer.body.get("next").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && !items.is_empty() => {
                    from = Some(next.to_string())
                }
                _ => return Ok(()),
            }
        }
    }

    fn url(&self, path: &str) -> Result<Url, SyncError> {
        let base = self.base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{path}")).map_err(|e| malformed(&self.base, &e.to_string()))
    }
}

fn array<'a>(body: &'a Value, key: &str, url: &Url) -> Result<&'a Vec<Value>, SyncError> {
    body.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(url, &format!("no {key:?} array in the answer")))
}

fn string_field<'a>(record: &'a Value, key: &str, url: &Url) -> Result<&'a str, SyncError> {
    record
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(url, &format!("a listed object has no {key:?}")))
}

fn malformed(url: &Url, reason: &str) -> SyncError {
    SyncError::Malformed {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}
