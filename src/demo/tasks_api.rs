//! The sample application that `portcullis demo` puts behind the gateway: a tiny in-memory
//! tasks service.
//!
//! It knows nothing about authentication or authorization and trusts the gateway completely,
//! which is the point of the demo: every access decision is made by Portcullis in front of it.
//! The only gateway-provided input it reads is the `x-portcullis-principal` header, used to
//! record a new task's owner. The seeded ids (`org_acme`, `acme-roadmap`, `t1`, ...) are
//! referenced by the demo policies.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::http_server::{empty_response, error_response, json_response, serve, ResponseBody};

/// Header set by the gateway with the authenticated principal's id.
pub const PRINCIPAL_HEADER: &str = "x-portcullis-principal";

/// Largest request body accepted (the API only takes tiny JSON documents).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Serves the tasks API over HTTP/1.1 on `listener` (one tokio task per connection,
/// keep-alive on) until the task is dropped or aborted. Starts from the seed data.
pub async fn serve_tasks_api(listener: TcpListener) {
    let state = Arc::new(TasksState::seeded());
    serve(listener, move |req| handle_request(Arc::clone(&state), req)).await;
}

#[derive(Debug, Clone, Serialize)]
struct TaskList {
    id: String,
    tenant: String,
    name: String,
}

#[derive(Debug, Clone, Serialize)]
struct Task {
    id: String,
    list_id: String,
    title: String,
    owner: String,
    done: bool,
}

#[derive(Debug, Deserialize)]
struct NewTask {
    title: String,
}

#[derive(Debug, Deserialize)]
struct TaskPatch {
    title: Option<String>,
    done: Option<bool>,
}

#[derive(Debug)]
struct Store {
    lists: Vec<TaskList>,
    tasks: Vec<Task>,
    next_task_number: u64,
}

/// The service's whole state, shared by all connections.
#[derive(Debug)]
struct TasksState {
    store: Mutex<Store>,
}

/// What a request produced: status and optional JSON body (none for 204).
type Reply = (StatusCode, Option<Value>);

fn not_found(what: &str) -> Reply {
    (StatusCode::NOT_FOUND, Some(json!({ "error": what })))
}

fn bad_request(message: String) -> Reply {
    (StatusCode::BAD_REQUEST, Some(json!({ "error": message })))
}

fn ok(value: Value) -> Reply {
    (StatusCode::OK, Some(value))
}

fn to_json<T: Serialize>(value: &T) -> Value {
    // Serialising these plain structs (string/bool fields) into a `Value` cannot fail;
    // fall back to null rather than panic.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl TasksState {
    fn seeded() -> Self {
        let list = |id: &str, tenant: &str, name: &str| TaskList {
            id: id.into(),
            tenant: tenant.into(),
            name: name.into(),
        };
        let task = |id: &str, list_id: &str, title: &str, owner: &str| Task {
            id: id.into(),
            list_id: list_id.into(),
            title: title.into(),
            owner: owner.into(),
            done: false,
        };
        Self {
            store: Mutex::new(Store {
                lists: vec![
                    list("acme-roadmap", "org_acme", "Acme roadmap"),
                    list("globex-ops", "org_globex", "Globex operations"),
                ],
                tasks: vec![
                    task("t1", "acme-roadmap", "Ship v1", "alice"),
                    task("t2", "acme-roadmap", "Write docs", "bob"),
                    task("t3", "globex-ops", "Rotate keys", "carol"),
                ],
                next_task_number: 4,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-updated in a way that
        // matters for a demo; keep serving.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes and executes one request. `principal` is the gateway-provided principal header.
    fn handle(&self, method: &Method, path: &str, principal: Option<&str>, body: &[u8]) -> Reply {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut store = self.lock();
        match (method, segments.as_slice()) {
            (&Method::GET, ["health"]) => ok(json!({ "status": "ok" })),
            (&Method::GET, ["lists"]) => ok(to_json(&store.lists)),
            (&Method::GET, ["lists", list_id]) => match store.list(list_id) {
                Some(list) => {
                    let mut value = to_json(list);
                    value["tasks"] = to_json(&store.tasks_of(list_id));
                    ok(value)
                }
                None => not_found("list not found"),
            },
            (&Method::GET, ["lists", list_id, "tasks"]) => match store.list(list_id) {
                Some(_) => ok(to_json(&store.tasks_of(list_id))),
                None => not_found("list not found"),
            },
            (&Method::POST, ["lists", list_id, "tasks"]) => {
                if store.list(list_id).is_none() {
                    return not_found("list not found");
                }
                let new: NewTask = match serde_json::from_slice(body) {
                    Ok(new) => new,
                    Err(err) => return bad_request(format!("invalid JSON body: {err}")),
                };
                if new.title.trim().is_empty() {
                    return bad_request("title must not be empty".into());
                }
                let task = Task {
                    id: format!("t{}", store.next_task_number),
                    list_id: (*list_id).to_owned(),
                    title: new.title,
                    owner: principal.unwrap_or("unknown").to_owned(),
                    done: false,
                };
                store.next_task_number += 1;
                let value = to_json(&task);
                store.tasks.push(task);
                (StatusCode::CREATED, Some(value))
            }
            (&Method::GET, ["lists", list_id, "tasks", task_id]) => {
                match store.task_index(list_id, task_id) {
                    Some(i) => ok(to_json(&store.tasks[i])),
                    None => not_found("task not found"),
                }
            }
            (&Method::PATCH, ["lists", list_id, "tasks", task_id]) => {
                let Some(i) = store.task_index(list_id, task_id) else {
                    return not_found("task not found");
                };
                let patch: TaskPatch = match serde_json::from_slice(body) {
                    Ok(patch) => patch,
                    Err(err) => return bad_request(format!("invalid JSON body: {err}")),
                };
                if patch.title.as_deref().is_some_and(|t| t.trim().is_empty()) {
                    return bad_request("title must not be empty".into());
                }
                let task = &mut store.tasks[i];
                if let Some(title) = patch.title {
                    task.title = title;
                }
                if let Some(done) = patch.done {
                    task.done = done;
                }
                ok(to_json(task))
            }
            (&Method::DELETE, ["lists", list_id, "tasks", task_id]) => {
                match store.task_index(list_id, task_id) {
                    Some(i) => {
                        store.tasks.remove(i);
                        (StatusCode::NO_CONTENT, None)
                    }
                    None => not_found("task not found"),
                }
            }
            _ => not_found("not found"),
        }
    }
}

impl Store {
    fn list(&self, list_id: &str) -> Option<&TaskList> {
        self.lists.iter().find(|l| l.id == list_id)
    }

    fn tasks_of(&self, list_id: &str) -> Vec<&Task> {
        self.tasks.iter().filter(|t| t.list_id == list_id).collect()
    }

    fn task_index(&self, list_id: &str, task_id: &str) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| t.list_id == list_id && t.id == task_id)
    }
}

async fn handle_request(state: Arc<TasksState>, req: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let body: Bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(err) => {
            log::debug!("tasks API: failed to read request body: {err}");
            return error_response(StatusCode::BAD_REQUEST, "could not read request body");
        }
    };
    let principal = parts
        .headers
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok());
    match state.handle(&parts.method, parts.uri.path(), principal, &body) {
        (status, Some(value)) => json_response(status, &value),
        (status, None) => empty_response(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(state: &TasksState, method: Method, path: &str, body: &str) -> Reply {
        state.handle(&method, path, Some("alice"), body.as_bytes())
    }

    #[test]
    fn reads_seed_data() {
        let s = TasksState::seeded();
        assert_eq!(
            call(&s, Method::GET, "/health", "").1,
            Some(json!({"status": "ok"}))
        );
        let (status, lists) = call(&s, Method::GET, "/lists", "");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(lists.unwrap()[1]["tenant"], "org_globex");
        let (_, list) = call(&s, Method::GET, "/lists/acme-roadmap", "");
        let list = list.unwrap();
        assert_eq!(list["tenant"], "org_acme");
        assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
        let (_, task) = call(&s, Method::GET, "/lists/globex-ops/tasks/t3", "");
        assert_eq!(
            task.unwrap(),
            json!({"id": "t3", "list_id": "globex-ops", "title": "Rotate keys",
                   "owner": "carol", "done": false})
        );
        // A task is only reachable through its own list.
        assert_eq!(
            call(&s, Method::GET, "/lists/acme-roadmap/tasks/t3", "").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&s, Method::GET, "/lists/nope", "").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&s, Method::GET, "/nope", "").1,
            Some(json!({"error": "not found"}))
        );
        assert_eq!(call(&s, Method::PUT, "/lists", "").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn create_update_delete() {
        let s = TasksState::seeded();
        let (status, created) = call(
            &s,
            Method::POST,
            "/lists/acme-roadmap/tasks",
            r#"{"title":"New"}"#,
        );
        assert_eq!(status, StatusCode::CREATED);
        let created = created.unwrap();
        assert_eq!(created["id"], "t4");
        assert_eq!(created["owner"], "alice");
        let anonymous = s.handle(
            &Method::POST,
            "/lists/globex-ops/tasks",
            None,
            br#"{"title":"x"}"#,
        );
        assert_eq!(anonymous.1.unwrap()["owner"], "unknown");

        let (status, patched) = call(
            &s,
            Method::PATCH,
            "/lists/acme-roadmap/tasks/t4",
            r#"{"done":true}"#,
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(patched.unwrap()["done"], true);
        assert_eq!(
            call(&s, Method::DELETE, "/lists/acme-roadmap/tasks/t4", ""),
            (StatusCode::NO_CONTENT, None)
        );
        assert_eq!(
            call(&s, Method::GET, "/lists/acme-roadmap/tasks/t4", "").0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn rejects_bad_bodies() {
        let s = TasksState::seeded();
        for body in ["{", r#"{"title": 3}"#, r#"{"title": "  "}"#, ""] {
            assert_eq!(
                call(&s, Method::POST, "/lists/acme-roadmap/tasks", body).0,
                StatusCode::BAD_REQUEST,
                "{body}"
            );
        }
        assert_eq!(
            call(
                &s,
                Method::PATCH,
                "/lists/acme-roadmap/tasks/t1",
                r#"{"done":"yes"}"#
            )
            .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&s, Method::POST, "/lists/nope/tasks", r#"{"title":"x"}"#).0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn serves_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve_tasks_api(listener));
        let client = reqwest::Client::new();

        let created = client
            .post(format!("{base}/lists/globex-ops/tasks"))
            .header(PRINCIPAL_HEADER, "carol")
            .body(r#"{"title":"Audit"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
        assert_eq!(created.headers()["content-type"], "application/json");
        let created: Value = serde_json::from_str(&created.text().await.unwrap()).unwrap();
        assert_eq!(created["owner"], "carol");

        let deleted = client
            .delete(format!(
                "{base}/lists/globex-ops/tasks/{}",
                created["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
        server.abort();
    }
}
