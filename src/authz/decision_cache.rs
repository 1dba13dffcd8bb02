//! The decision cache: a decision is remembered per snapshot under everything it can depend on.
//!
//! Within one snapshot (policies, schema and directory fixed), a route's decision is a function
//! of the principal entity, the resource (from the path parameters) and the context. The key
//! holds exactly those inputs that can change the outcome:
//! - the route, whose action, resource template and context plan are fixed;
//! - the caller: the anonymous principal, or everything the principal entity is built from
//!   (`Principal::key`);
//! - every path parameter value (resource id, parents and `context.params`);
//! - of the context, the attributes the action's policies read (`ContextReads`), plus the
//!   inputs whose absence or malformation makes the context fail to build (query and header
//!   fields, a missing client address), so that a request that would be denied with an error
//!   never hits the entry of one that was not.
//!
//! A context attribute no policy of the action reads cannot change the decision, so requests
//! that differ only there (another client address, another path spelling of the same
//! parameters) share an entry. A policy that uses `context` as a whole, and any template-linked
//! policy, makes every attribute part of the key. Errors are not remembered. The differential
//! test below compares cached and uncached decisions on random policies and requests.

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::PolicySet;
use serde_json::Value;

use super::Decision;

/// Decisions one snapshot remembers (a few hundred bytes each).
pub const DECISION_CACHE_ENTRIES: usize = 16_384;

/// Which context attributes a set of policies reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextReads {
    /// Some policy uses `context` other than as `context.attribute` or `context has attribute`.
    whole: bool,
    attributes: BTreeSet<String>,
}

impl ContextReads {
    /// The context attributes `policies` read, from each policy's JSON form.
    pub fn of(policies: &PolicySet) -> Self {
        let mut reads = ContextReads::default();
        if policies.templates().next().is_some() {
            reads.whole = true;
            return reads;
        }
        for policy in policies.policies() {
            match policy.to_json() {
                Ok(json) => reads.collect(&json),
                Err(_) => reads.whole = true,
            }
        }
        reads
    }

    /// Every attribute counts as read.
    pub fn everything() -> Self {
        ContextReads {
            whole: true,
            attributes: BTreeSet::new(),
        }
    }

    /// Whether some policy can read `attribute`.
    pub fn reads(&self, attribute: &str) -> bool {
        self.whole || self.attributes.contains(attribute)
    }

    fn collect(&mut self, json: &Value) {
        match json {
            Value::Object(map) => {
                if map.get("Var").and_then(Value::as_str) == Some("context") {
                    self.whole = true;
                    return;
                }
                for (operator, operand) in map {
                    match context_attribute(operator, operand) {
                        Some(attribute) => {
                            self.attributes.insert(attribute.to_string());
                        }
                        None => self.collect(operand),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.collect(item)),
            _ => {}
        }
    }
}

/// `attribute` when `operator: operand` is `context.attribute` or `context has attribute`.
fn context_attribute<'a>(operator: &str, operand: &'a Value) -> Option<&'a str> {
    if operator != "." && operator != "has" {
        return None;
    }
    let left = operand.get("left")?;
    (left.get("Var").and_then(Value::as_str) == Some("context"))
        .then(|| operand.get("attr").and_then(Value::as_str))
        .flatten()
}

/// A remembered decision, with the resource it was made for (for the decision log).
#[derive(Debug)]
pub struct CachedDecision {
    pub decision: Arc<Decision>,
    pub resource: Arc<str>,
}

/// The decisions of one snapshot.
pub struct DecisionCache {
    entries: quick_cache::sync::Cache<Vec<u8>, Arc<CachedDecision>>,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache::new(DECISION_CACHE_ENTRIES)
    }
}

impl DecisionCache {
    pub fn new(capacity: usize) -> Self {
        DecisionCache {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Arc<CachedDecision>> {
        self.entries.get(key)
    }

    /// Remembers a decision; decisions with evaluation errors are not kept.
    pub fn insert(&self, key: Vec<u8>, decision: Arc<CachedDecision>) {
        if decision.decision.errors.is_empty() {
            self.entries.insert(key, decision);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::str::FromStr;
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderValue};
    use serde_json::Map;

    use crate::authz::test_rng::Rng;
    use crate::authz::{
        authorize, decide, principal_entity, Caller, PolicyBundle, RequestFacts, ResourceSpec,
        RouteAuthz, CONTEXT_KINDS,
    };
    use crate::directory::{Directory, SourceEntities};
    use crate::identity::Identity;

    fn reads(text: &str) -> ContextReads {
        ContextReads::of(&PolicySet::from_str(text).unwrap())
    }

    #[test]
    fn attributes_read_by_name() {
        let read = reads(
            r#"permit (principal, action, resource) when { context.scopes.contains("x") };
               forbid (principal, action, resource) unless { context has path && context.params.id == "a" };"#,
        );
        assert!(read.reads("scopes") && read.reads("path") && read.reads("params"));
        assert!(!read.reads("client_ip") && !read.reads("time") && !read.reads("method"));
    }

    #[test]
    fn no_condition_reads_nothing() {
        let read = reads(r#"permit (principal == User::"a", action, resource);"#);
        assert!(!read.reads("scopes") && !read.reads("path"));
    }

    #[test]
    fn context_as_a_whole_reads_everything() {
        let read =
            reads(r#"permit (principal, action, resource) when { context == {"method": "GET"} };"#);
        assert!(read.reads("client_ip") && read.reads("anything"));
        let templates =
            PolicySet::from_str(r#"permit (principal == ?principal, action, resource);"#).unwrap();
        assert!(ContextReads::of(&templates).reads("method"));
    }

    const SCHEMA: &str = r#"
entity Role in [Role];
entity User in [Role] { manager?: User, clearance?: Long, teams?: Set<Role> };
entity Folder in [User] { owner?: User };
entity Doc in [Folder] { level: Long, author?: User, meta?: { reviewer: User } };
entity Anonymous;
action Read appliesTo {
  principal: [User, Anonymous],
  resource: [Doc],
  context: {
    method: String,
    path: String,
    client_ip: ipaddr,
    scopes: Set<String>,
    time: datetime,
    params: { folder: String, doc: String },
    query?: { mode?: String },
    headers?: { "x-level"?: Long },
  }
};
action Write appliesTo { principal: [User], resource: [Doc], context: {} };
"#;

    /// Users u0 and u1 are callers; u2 and u3 are reached only through attributes (a
    /// manager, an author, a reviewer, a folder's owner), u4 only as a policy's literal, u5
    /// only as a folder's parent.
    const ENTITIES: &str = r#"[
  {"uid": {"type": "Doc", "id": "d0"}, "attrs": {"level": 1, "author": {"__entity": {"type": "User", "id": "u3"}}}, "parents": [{"type": "Folder", "id": "f0"}]},
  {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"level": 3, "meta": {"reviewer": {"__entity": {"type": "User", "id": "u2"}}}}, "parents": [{"type": "Folder", "id": "f1"}]},
  {"uid": {"type": "Folder", "id": "f1"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "u3"}}}, "parents": []},
  {"uid": {"type": "Folder", "id": "f0"}, "attrs": {}, "parents": [{"type": "User", "id": "u5"}]},
  {"uid": {"type": "User", "id": "u5"}, "attrs": {}, "parents": [{"type": "Role", "id": "r2"}]},
  {"uid": {"type": "User", "id": "u0"}, "attrs": {"manager": {"__entity": {"type": "User", "id": "u2"}}, "clearance": 2}, "parents": []},
  {"uid": {"type": "User", "id": "u2"}, "attrs": {"clearance": 9, "teams": [{"__entity": {"type": "Role", "id": "r1"}}]}, "parents": [{"type": "Role", "id": "r1"}]},
  {"uid": {"type": "User", "id": "u3"}, "attrs": {"manager": {"__entity": {"type": "User", "id": "u2"}}, "clearance": 4}, "parents": [{"type": "Role", "id": "r2"}]},
  {"uid": {"type": "User", "id": "u4"}, "attrs": {"teams": [{"__entity": {"type": "Role", "id": "r1"}}]}, "parents": []},
  {"uid": {"type": "Role", "id": "r1"}, "attrs": {}, "parents": [{"type": "Role", "id": "r0"}]},
  {"uid": {"type": "Role", "id": "r2"}, "attrs": {}, "parents": [{"type": "Role", "id": "r1"}]}
]"#;

    /// A policy about `Read` whose condition (one of `conditions`) reads one context
    /// attribute or none.
    fn policy_text(rng: &mut Rng, id: usize, conditions: &[u64]) -> String {
        let effect = if rng.below(3) == 0 {
            "forbid"
        } else {
            "permit"
        };
        let principal = match rng.below(3) {
            0 => format!("principal in Role::\"r{}\"", rng.below(2)),
            1 => "principal is Anonymous".to_string(),
            _ => "principal".to_string(),
        };
        let resource = match rng.below(3) {
            0 => format!("resource in Folder::\"f{}\"", rng.below(3)),
            _ => "resource".to_string(),
        };
        let condition = match conditions[rng.below(conditions.len() as u64) as usize] {
            0 => format!("context.scopes.contains(\"s{}\")", rng.below(2)),
            1 => format!("context.path like \"*/d{}\"", rng.below(3)),
            2 => format!("context.method == \"{}\"", ["GET", "POST"][rng.below(2) as usize]),
            3 => "context.client_ip.isInRange(ip(\"10.0.0.0/8\"))".to_string(),
            4 => format!("context.params.doc == \"d{}\"", rng.below(3)),
            5 => format!(
                "context has headers && context.headers has \"x-level\" && context.headers[\"x-level\"] > {}",
                rng.below(4)
            ),
            6 => format!(
                "context has query && context.query has mode && context.query.mode == \"m{}\"",
                rng.below(2)
            ),
            7 => "resource.level > 2".to_string(),
            // An error for resources the directory lacks (no `level`): cached decisions must
            // reproduce it too.
            8 => "resource.level < 3 || context.scopes.isEmpty()".to_string(),
            9 => "context.time > datetime(\"2020-01-01\")".to_string(),
            // Data only reachable through attributes, at several depths, and a literal's.
            10 => format!(
                "principal has manager && principal.manager has clearance && principal.manager.clearance > {}",
                [3, 9][rng.below(2) as usize]
            ),
            11 => "resource has author && resource.author has manager && resource.author.manager has clearance && resource.author.manager.clearance > 5 && resource.author in Role::\"r0\"".to_string(),
            12 => "resource has meta && resource.meta.reviewer has teams && resource.meta.reviewer.teams.contains(Role::\"r1\")".to_string(),
            13 => format!("resource in Folder::\"f1\" && Folder::\"f1\" has owner && Folder::\"f1\".owner has clearance && Folder::\"f1\".owner.clearance > {}", rng.below(6)),
            14 => "User::\"u4\" has teams && principal in User::\"u4\".teams".to_string(),
            // d0 is in f0, in u5, in r2, in r1, in r0: through a user's parents.
            15 => "resource in Role::\"r0\"".to_string(),
            // d1's reviewer u2 is in r1, which is in r0.
            16 => "resource has meta && resource.meta.reviewer in Role::\"r0\"".to_string(),
            _ => "true".to_string(),
        };
        format!(
            "@id(\"p{id}\") {effect} ({principal}, action == Action::\"Read\", {resource}) when {{ {condition} }};\n"
        )
    }

    fn bundle(policies: &str) -> (tempfile::TempDir, PolicyBundle) {
        bundle_with(policies, false)
    }

    /// With `synced_users`, the users of `ENTITIES` come from a synced directory (kept
    /// outside the store) instead of entities.json.
    fn bundle_with(policies: &str, synced_users: bool) -> (tempfile::TempDir, PolicyBundle) {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<serde_json::Value> = serde_json::from_str(ENTITIES).unwrap();
        let (users, file): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|e| synced_users && e["uid"]["type"] == "User");
        std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
        std::fs::write(
            dir.path().join("entities.json"),
            serde_json::to_string(&file).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("generated.cedar"), policies).unwrap();
        let bundle = PolicyBundle::load(dir.path()).unwrap();
        if !synced_users {
            return (dir, bundle);
        }
        let directory = Directory::new(vec![SourceEntities {
            source: "idp".into(),
            synced_at: 0,
            entities: users
                .into_iter()
                .map(|u| serde_json::from_value(u).unwrap())
                .collect(),
        }]);
        let (bundle, overridden) = bundle
            .with_directory(std::sync::Arc::new(directory), &["User".to_string()])
            .unwrap();
        assert_eq!(overridden, 0);
        assert!(!bundle.synced_users.is_empty());
        (dir, bundle)
    }

    fn identity(rng: &mut Rng) -> Identity {
        // r2, which no policy names, is in r1.
        let roles: Vec<String> = (0..3)
            .filter(|_| rng.below(2) == 0)
            .map(|r| format!("r{r}"))
            .collect();
        Identity {
            issuer: "https://issuer/".into(),
            principal_type: "User".into(),
            principal_id: format!("u{}", rng.below(2)),
            parents: roles.iter().map(|r| ("Role".into(), r.clone())).collect(),
            roles,
            tenant: None,
            scopes: (0..2)
                .filter(|_| rng.below(2) == 0)
                .map(|s| format!("s{s}"))
                .collect(),
            attributes: Map::new(),
        }
    }

    /// The cached decision of every request equals the decision evaluated from scratch, over
    /// random policies and requests. Each round draws policies from two kinds of condition
    /// (so the context attributes read differ from round to round) and requests from a space
    /// small enough to repeat; the context values no policy reads vary freely.
    #[test]
    fn cached_and_uncached_decisions_agree_on_every_request() {
        let mut rng = Rng(0xDEC1_5104_CA11_AB1E);
        let anonymous = cedar_policy::EntityUid::from_str(r#"Anonymous::"anonymous""#).unwrap();
        let ips: [IpAddr; 3] = [
            [10, 1, 2, 3].into(),
            [192, 168, 0, 1].into(),
            [10, 9, 9, 9].into(),
        ];
        let (mut hits, mut allows, mut errors, mut requests) = (0, 0, 0, 0);
        for round in 0..20 {
            // Rounds with synced users always draw one condition that reaches entities
            // through attributes, literals or a user's parents.
            let conditions = if round % 2 == 1 {
                [rng.below(17), 10 + rng.below(7)]
            } else {
                [rng.below(17), rng.below(17)]
            };
            let text: String = (0..12)
                .map(|id| policy_text(&mut rng, id, &conditions))
                .collect();
            // Every other round, the users are synced (outside the store).
            let (_dir, bundle) = bundle_with(&text, round % 2 == 1);
            let mut kinds: Vec<String> =
                ["method", "path", "client_ip", "scopes", "time", "params"]
                    .iter()
                    .map(|k| k.to_string())
                    .collect();
            let with_query = conditions.contains(&6) || rng.below(2) == 0;
            let with_headers = conditions.contains(&5) || rng.below(2) == 0;
            if with_query {
                kinds.push("query".into());
            }
            if with_headers {
                kinds.push("headers".into());
            }
            let route = RouteAuthz::compile(
                "Read",
                &ResourceSpec {
                    entity_type: "Doc",
                    id: "{doc}",
                    parents: &["Folder::\"{folder}\"".to_string()],
                },
                &["folder", "doc"],
                &kinds,
                &["User".to_string(), "Anonymous".to_string()],
                &bundle,
            )
            .unwrap();
            let cache = DecisionCache::new(4096);
            for _ in 0..300 {
                let identity = identity(&mut rng);
                let principal =
                    principal_entity(&bundle, &identity, identity.principal_key()).unwrap();
                let caller = if rng.below(5) == 0 {
                    Caller::Anonymous(&anonymous)
                } else {
                    Caller::Authenticated(&principal)
                };
                let params = vec![
                    ("folder", format!("f{}", rng.below(2))),
                    ("doc", format!("d{}", rng.below(3))),
                ];
                let slash = ["", "/"][rng.below(2) as usize];
                let path = format!("/{}/{}{slash}", params[0].1, params[1].1);
                let mut headers = HeaderMap::new();
                for _ in 0..rng.below(4) / 2 {
                    let value = ["1", "5", "high"][rng.below(3) as usize];
                    headers.append("x-level", HeaderValue::from_static(value));
                }
                let query = ["", "mode=m0", "mode=m0&mode=m1"][rng.below(3) as usize];
                let facts = RequestFacts {
                    method: ["GET", "POST"][rng.below(2) as usize],
                    path: &path,
                    params: &params,
                    client_ip: (rng.below(10) != 0).then(|| ips[rng.below(3) as usize]),
                    scopes: &identity.scopes,
                    query: (!query.is_empty()).then_some(query),
                    headers: &headers,
                    time: SystemTime::UNIX_EPOCH
                        + Duration::from_secs(1_700_000_000 + rng.below(2)),
                };
                let decided = decide(&cache, &bundle, "read-doc", &route, caller, &facts);
                let fresh = match route.build(&bundle, caller, &facts) {
                    Ok((request, entities)) => authorize(&bundle, &request, &entities),
                    Err(e) => Decision::error(&e),
                };
                // The request's slice of the directory decides as the whole directory does.
                let whole = match route.build_with_whole_directory(&bundle, caller, &facts) {
                    Ok((request, entities)) => authorize(&bundle, &request, &entities),
                    Err(e) => Decision::error(&e),
                };
                assert_eq!(fresh, whole, "policies:\n{text}\n{facts:?}");
                assert_eq!(*decided.decision, fresh, "policies:\n{text}\n{facts:?}");
                assert_eq!(&*decided.resource, route.resource_name(&params));
                hits += usize::from(decided.request.is_none() && fresh.errors.is_empty());
                allows += usize::from(fresh.allowed);
                errors += usize::from(!fresh.errors.is_empty());
                requests += 1;
            }
        }
        assert!(hits > requests / 20, "cache hits: {hits} of {requests}");
        assert!(
            allows > requests / 20 && allows < requests - requests / 20,
            "allows: {allows}"
        );
        assert!(errors > requests / 50, "decisions with errors: {errors}");
    }

    /// A context attribute no policy of the action reads is left out of the key: requests that
    /// differ only there share one entry.
    #[test]
    fn unread_context_is_not_keyed() {
        let (_dir, bundle) = bundle(
            r#"permit (principal, action == Action::"Read", resource) when { context.method == "GET" };"#,
        );
        let kinds: Vec<String> = CONTEXT_KINDS.iter().map(|k| k.to_string()).collect();
        let route = RouteAuthz::compile(
            "Read",
            &ResourceSpec {
                entity_type: "Doc",
                id: "{doc}",
                parents: &[],
            },
            &["folder", "doc"],
            &kinds,
            &["Anonymous".to_string()],
            &bundle,
        )
        .unwrap();
        let anonymous = cedar_policy::EntityUid::from_str(r#"Anonymous::"a""#).unwrap();
        let params = vec![("folder", "f0".to_string()), ("doc", "d0".to_string())];
        let headers = HeaderMap::new();
        let facts = |path: &'static str, ip: [u8; 4], method: &'static str| RequestFacts {
            method,
            path,
            params: &params,
            client_ip: Some(ip.into()),
            scopes: &[],
            query: None,
            headers: &headers,
            time: SystemTime::now(),
        };
        let key = |facts: &RequestFacts<'_>| {
            route.decision_key("r", Caller::Anonymous(&anonymous), facts)
        };
        assert_eq!(
            key(&facts("/f0/d0", [10, 0, 0, 1], "GET")),
            key(&facts("/f0/d0/", [10, 0, 0, 2], "GET"))
        );
        assert_ne!(
            key(&facts("/f0/d0", [10, 0, 0, 1], "GET")),
            key(&facts("/f0/d0", [10, 0, 0, 1], "POST"))
        );
    }
}
