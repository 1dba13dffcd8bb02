//! A local server with the shapes of Auth0's Management API v2 and Okta's management API, for
//! the directory sync tests: the client-credentials exchanges (Auth0's client secret, Okta's
//! `private_key_jwt`), page-based and checkpoint pagination (Auth0), `Link` pagination
//! (Okta), and, on demand, 429s with each API's reset headers, 503s and malformed bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::http_server::{json_response, serve, ResponseBody};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const AUTH0_CLIENT_ID: &str = "m2m-client";
pub const AUTH0_CLIENT_SECRET: &str = "m2m-secret-value";
pub const OKTA_API_TOKEN: &str = "okta-api-token-value";
pub const OKTA_CLIENT_ID: &str = "0oa-service-app";

/// An organization member: `user_id` and the names of the member's organization roles.
pub type Member = (String, Vec<String>);

/// Everything the tenant holds, and what the server should do wrong next.
#[derive(Default)]
pub struct Tenant {
    /// Auth0 user records (`user_id`, `email`, `app_metadata`, ...) or Okta ones (`id`,
    /// `profile`).
    pub users: Vec<Value>,
    /// Auth0 roles (`id`, `name`) with their members' `user_id`s.
    pub roles: Vec<(Value, Vec<String>)>,
    /// Auth0 organizations (`id`, `name`) with members: `user_id` and organization role names.
    pub organizations: Vec<(Value, Vec<Member>)>,
    /// Okta groups (`id`, `profile.name`) with their members' `id`s.
    pub groups: Vec<(Value, Vec<String>)>,
    /// Answer the next N API requests with 429.
    pub rate_limit_next: u32,
    /// Answer every request with 503.
    pub down: bool,
    /// Answer the next N API requests with a body that is not JSON.
    pub malformed_next: u32,
    /// The public key (PEM) Okta's token endpoint checks client assertions with.
    pub okta_public_key: Option<String>,
    /// Requests answered, by path; 429s served.
    pub requests: HashMap<String, u32>,
    pub rate_limited: u32,
    /// Users export jobs: the fields asked for, and how often the job was polled.
    pub exports: Vec<(Vec<String>, u32)>,
    /// Access tokens the token endpoints issued.
    pub issued: Vec<String>,
}

pub struct IdpApis {
    pub url: String,
    pub tenant: Arc<Mutex<Tenant>>,
    task: JoinHandle<()>,
}

impl Drop for IdpApis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IdpApis {
    pub async fn start(tenant: Tenant) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{address}");
        let tenant = Arc::new(Mutex::new(tenant));
        let state = tenant.clone();
        let base = url.clone();
        let task = tokio::spawn(serve(
            listener,
            move |request: Request<hyper::body::Incoming>| {
                let state = state.clone();
                let base = base.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut tenant = state.lock().unwrap();
                    respond(&mut tenant, &base, &parts, &body)
                }
            },
        ));
        IdpApis { url, tenant, task }
    }

    pub fn with<T>(&self, change: impl FnOnce(&mut Tenant) -> T) -> T {
        change(&mut self.tenant.lock().unwrap())
    }

    pub fn requests_to(&self, path: &str) -> u32 {
        self.with(|t| t.requests.get(path).copied().unwrap_or(0))
    }
}

fn respond(
    tenant: &mut Tenant,
    base: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Response<ResponseBody> {
    let path = parts.uri.path().to_string();
    *tenant.requests.entry(path.clone()).or_default() += 1;
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let okta = path.starts_with("/api/v1/") || path.starts_with("/oauth2/");
    if tenant.down {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "down"}));
    }
    if tenant.rate_limit_next > 0 {
        tenant.rate_limit_next -= 1;
        tenant.rate_limited += 1;
        let reset = (portcullis_now() + 1).to_string();
        let mut response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": "too_many_requests"}),
        );
        let headers = response.headers_mut();
        if okta {
            headers.insert("x-rate-limit-limit", "600".parse().unwrap());
            headers.insert("x-rate-limit-remaining", "0".parse().unwrap());
            headers.insert("x-rate-limit-reset", reset.parse().unwrap());
        } else {
            headers.insert("x-ratelimit-limit", "50".parse().unwrap());
            headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
            headers.insert("x-ratelimit-reset", reset.parse().unwrap());
        }
        return response;
    }
    if tenant.malformed_next > 0 && parts.method == Method::GET {
        tenant.malformed_next -= 1;
        let mut response = Response::new(ResponseBody::from("{\"users\": [ {\"user_id\": "));
        *response.status_mut() = StatusCode::OK;
        return response;
    }
    if let Some(job) = path.strip_prefix("/exports/") {
        return export_file(tenant, job, parts);
    }
    match (&parts.method, path.as_str()) {
        (&Method::POST, "/oauth/token") => auth0_token(tenant, body),
        (&Method::POST, "/api/v2/jobs/users-exports") => {
            if !bearer_issued(tenant, parts) {
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "invalid credentials"}),
                );
            }
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let fields: Vec<String> = request["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["name"].as_str().map(str::to_string))
                .collect();
            if request["format"] != "json" || fields.is_empty() {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "bad export request"}),
                );
            }
            tenant.exports.push((fields, 0));
            let id = format!("job_{}", tenant.exports.len());
            json_response(
                StatusCode::CREATED,
                &json!({"id": id, "type": "users_export", "status": "pending", "format": "json"}),
            )
        }
        (&Method::POST, "/oauth2/v1/token") => okta_token(tenant, base, body),
        (&Method::GET, _) => {
            let authorization = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let allowed = bearer_issued(tenant, parts)
                || (okta && authorization == format!("SSWS {OKTA_API_TOKEN}"));
            if !allowed {
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "invalid credentials"}),
                );
            }
            if okta {
                okta_get(tenant, base, &path, &query)
            } else if let Some(job) = path.strip_prefix("/api/v2/jobs/") {
                export_job(tenant, base, job)
            } else {
                auth0_get(tenant, &path, &query)
            }
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

fn bearer_issued(tenant: &Tenant, parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| tenant.issued.iter().any(|i| i == t))
}

/// A users export job: processing at the first poll, completed at the next.
fn export_job(tenant: &mut Tenant, base: &str, job: &str) -> Response<ResponseBody> {
    let Some(index) = job
        .strip_prefix("job_")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such job"}));
    };
    let Some((_, polls)) = tenant.exports.get_mut(index.wrapping_sub(1)) else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such job"}));
    };
    *polls += 1;
    if *polls < 2 {
        return json_response(
            StatusCode::OK,
            &json!({"id": job, "type": "users_export", "status": "processing"}),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"id": job, "type": "users_export", "status": "completed", "location": format!("{base}/exports/{job}.json.gz")}),
    )
}

/// The export file at its signed location: gzip-compressed JSON lines of the requested
/// fields. Like a pre-signed storage URL, it refuses a request that carries credentials.
fn export_file(
    tenant: &Tenant,
    name: &str,
    parts: &http::request::Parts,
) -> Response<ResponseBody> {
    use std::io::Write;
    if parts.headers.contains_key("authorization") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "only one auth mechanism allowed"}),
        );
    }
    let index = name
        .strip_prefix("job_")
        .and_then(|n| n.strip_suffix(".json.gz"))
        .and_then(|n| n.parse::<usize>().ok());
    let Some((fields, _)) = index.and_then(|i| tenant.exports.get(i.wrapping_sub(1))) else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such export"}));
    };
    let query: HashMap<String, String> = [("fields".to_string(), fields.join(","))].into();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for user in &tenant.users {
        encoder
            .write_all(select(user, &query).to_string().as_bytes())
            .unwrap();
        encoder.write_all(b"\n").unwrap();
    }
    Response::new(ResponseBody::from(encoder.finish().unwrap()))
}

fn auth0_token(tenant: &mut Tenant, body: &[u8]) -> Response<ResponseBody> {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    if request["grant_type"] != "client_credentials"
        || request["client_id"] != AUTH0_CLIENT_ID
        || request["client_secret"] != AUTH0_CLIENT_SECRET
        || !request["audience"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/api/v2/")
    {
        return json_response(StatusCode::UNAUTHORIZED, &json!({"error": "access_denied"}));
    }
    issue(tenant)
}

fn okta_token(tenant: &mut Tenant, base: &str, body: &[u8]) -> Response<ResponseBody> {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let denied = || {
        json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client"}),
        )
    };
    let (Some(key), Some(assertion)) = (&tenant.okta_public_key, form.get("client_assertion"))
    else {
        return denied();
    };
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[format!("{base}/oauth2/v1/token")]);
    validation.set_issuer(&[OKTA_CLIENT_ID]);
    validation.sub = Some(OKTA_CLIENT_ID.to_string());
    let verified = DecodingKey::from_ec_pem(key.as_bytes())
        .ok()
        .and_then(|key| jsonwebtoken::decode::<Value>(assertion, &key, &validation).ok());
    if verified.is_none()
        || form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_assertion_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        || form.get("scope").map(String::as_str) != Some("okta.users.read okta.groups.read")
    {
        return denied();
    }
    issue(tenant)
}

fn issue(tenant: &mut Tenant) -> Response<ResponseBody> {
    let token = format!("management-token-{}", tenant.issued.len() + 1);
    tenant.issued.push(token.clone());
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": 86400}),
    )
}

fn number(query: &HashMap<String, String>, name: &str, default: usize) -> usize {
    query
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Auth0's page-based listing: `page`, `per_page` (at most 100), `include_totals`; no more
/// than 1,000 results.
fn paged(items: Vec<Value>, key: &str, query: &HashMap<String, String>) -> Response<ResponseBody> {
    let per_page = number(query, "per_page", 50);
    let page = number(query, "page", 0);
    if per_page > 100 || (page + 1) * per_page > 1000 {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "Requesting page exceeds the allowed maximum of 1000 records"}),
        );
    }
    let start = page * per_page;
    let slice: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
    json_response(
        StatusCode::OK,
        &json!({"start": start, "limit": per_page, "length": slice.len(), "total": items.len(), key: slice}),
    )
}

/// Auth0's checkpoint pagination: `take`, then `from` = the previous answer's `next`.
fn checkpoint(
    items: Vec<Value>,
    key: &str,
    query: &HashMap<String, String>,
) -> Response<ResponseBody> {
    let take = number(query, "take", 50);
    let from = query
        .get("from")
        .map(|f| {
            f.strip_prefix("cp-")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX)
        })
        .unwrap_or(0);
    let slice: Vec<Value> = items.iter().skip(from).take(take).cloned().collect();
    let mut body = json!({ key: slice });
    if from + take < items.len() {
        body["next"] = json!(format!("cp-{}", from + take));
    }
    json_response(StatusCode::OK, &body)
}

/// Only the fields asked for (`fields`, `include_fields=true`).
fn select(record: &Value, query: &HashMap<String, String>) -> Value {
    let Some(fields) = query.get("fields") else {
        return record.clone();
    };
    let wanted: Vec<&str> = fields.split(',').collect();
    let mut out = serde_json::Map::new();
    for (name, value) in record.as_object().into_iter().flatten() {
        if wanted.contains(&name.as_str()) {
            out.insert(name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

fn member_record(tenant: &Tenant, user_id: &str) -> Value {
    let user = tenant
        .users
        .iter()
        .find(|u| u["user_id"] == user_id)
        .cloned()
        .unwrap_or_else(|| json!({"user_id": user_id}));
    json!({"user_id": user_id, "email": user["email"], "name": user["name"]})
}

fn auth0_get(
    tenant: &Tenant,
    path: &str,
    query: &HashMap<String, String>,
) -> Response<ResponseBody> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v2", "users"] => {
            let users = tenant.users.iter().map(|u| select(u, query)).collect();
            paged(users, "users", query)
        }
        ["api", "v2", "roles"] => paged(
            tenant.roles.iter().map(|(r, _)| r.clone()).collect(),
            "roles",
            query,
        ),
        ["api", "v2", "roles", id, "users"] => {
            let Some((_, members)) = tenant.roles.iter().find(|(r, _)| r["id"] == *id) else {
                return json_response(StatusCode::NOT_FOUND, &json!({"error": "no such role"}));
            };
            let users = members.iter().map(|m| member_record(tenant, m)).collect();
            checkpoint(users, "users", query)
        }
        ["api", "v2", "organizations"] => checkpoint(
            tenant
                .organizations
                .iter()
                .map(|(o, _)| o.clone())
                .collect(),
            "organizations",
            query,
        ),
        ["api", "v2", "organizations", id, "members"] => {
            let Some((_, members)) = tenant.organizations.iter().find(|(o, _)| o["id"] == *id)
            else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no such organization"}),
                );
            };
            let with_roles = query
                .get("fields")
                .is_some_and(|f| f.split(',').any(|x| x == "roles"));
            let records = members
                .iter()
                .map(|(user_id, roles)| {
                    let mut record = member_record(tenant, user_id);
                    if with_roles {
                        record["roles"] = roles
                            .iter()
                            .map(|name| json!({"id": format!("rol_{name}"), "name": name}))
                            .collect();
                    }
                    select(&record, query)
                })
                .collect();
            checkpoint(records, "members", query)
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

/// Okta's listing: `limit`, `after`, and `Link: <...>; rel="next"`.
fn linked(
    items: Vec<Value>,
    base: &str,
    path: &str,
    query: &HashMap<String, String>,
) -> Response<ResponseBody> {
    let limit = number(query, "limit", 200).min(200);
    let after = number(query, "after", 0);
    let slice: Vec<Value> = items.iter().skip(after).take(limit).cloned().collect();
    let mut response = json_response(StatusCode::OK, &Value::Array(slice));
    let headers = response.headers_mut();
    headers.append(
        "link",
        format!("<{base}{path}?limit={limit}>; rel=\"self\"")
            .parse()
            .unwrap(),
    );
    if after + limit < items.len() {
        headers.append(
            "link",
            format!(
                "<{base}{path}?after={}&limit={limit}>; rel=\"next\"",
                after + limit
            )
            .parse()
            .unwrap(),
        );
    }
    headers.insert("x-rate-limit-limit", "600".parse().unwrap());
    headers.insert("x-rate-limit-remaining", "599".parse().unwrap());
    headers.insert(
        "x-rate-limit-reset",
        (portcullis_now() + 60).to_string().parse().unwrap(),
    );
    response
}

fn okta_get(
    tenant: &Tenant,
    base: &str,
    path: &str,
    query: &HashMap<String, String>,
) -> Response<ResponseBody> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "users"] => linked(tenant.users.clone(), base, path, query),
        ["api", "v1", "groups"] => {
            let groups = tenant
                .groups
                .iter()
                .map(|(g, _)| g.clone())
                .filter(|g| match query.get("search").map(String::as_str) {
                    Some("type eq \"OKTA_GROUP\"") => g["type"] == "OKTA_GROUP",
                    _ => true,
                })
                .collect();
            linked(groups, base, path, query)
        }
        ["api", "v1", "groups", id, "users"] => {
            let Some((_, members)) = tenant.groups.iter().find(|(g, _)| g["id"] == *id) else {
                return json_response(StatusCode::NOT_FOUND, &json!({"errorCode": "E0000007"}));
            };
            let users = members
                .iter()
                .filter_map(|m| tenant.users.iter().find(|u| u["id"] == *m).cloned())
                .collect();
            linked(users, base, path, query)
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"errorCode": "E0000022"})),
    }
}

fn portcullis_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
