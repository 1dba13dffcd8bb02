//! Building the Cedar request for a matched route: principal from the identity, action and
//! resource from the route, context as the schema declares it.
//!
//! Everything that can be checked without a request is checked when the route is compiled: the
//! action and resource type exist, the action applies to them, the templates name only path
//! parameters the route has, and a probe request with the route's context passes schema
//! validation. At request time only values are filled in.

use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, EvalResult, Request,
};
use serde_json::{json, Map, Value};

use super::bundle::PolicyBundle;
use super::cache_key::CacheKey;
use super::context::{ContextPlan, RequestFacts};
use super::decision_cache::ContextReads;
use super::typed_entity;
use super::AuthzError;
use crate::identity::Identity;

/// A resource id template such as `"{task_id}"` or `"tasks-{task_id}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(String),
}

impl IdTemplate {
    /// Parses a template; every `{name}` must be one of `params`.
    pub fn parse(template: &str, params: &[&str]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| format!("template {template:?} has an unclosed '{{'"))?;
            let name = &rest[open + 1..close];
            if !params.contains(&name) {
                return Err(format!(
                    "template {template:?} uses {{{name}}}, but the path has no such parameter (it has: {})",
                    if params.is_empty() { "none".to_string() } else { params.join(", ") }
                ));
            }
            pieces.push(Piece::Param(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template {template:?} has an unmatched '}}'"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("an entity id template must not be empty".to_string());
        }
        Ok(IdTemplate { pieces })
    }

    pub fn render(&self, params: &[(&str, String)]) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Param(name) => {
                    if let Some((_, value)) = params.iter().find(|(n, _)| n == name) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A principal built from a token by [`principal_entity`].
    Authenticated(&'a Principal),
    Anonymous(&'a EntityUid),
}

/// The Cedar principal built from a token, kept with the token in the verified-token cache.
#[derive(Debug)]
pub struct Principal {
    pub entity: Entity,
    /// Its parents and the entities its attributes name: where a request's slice of the
    /// directory starts from it (see [`request_entities`]).
    pub reaches: Vec<EntityUid>,
    /// Everything the entity was built from (`Identity::principal_key`): equal keys, equal
    /// principals.
    pub key: String,
}

/// The Cedar principal for an identity, whose `principal_key` is `key` (the caller has it: it
/// looked the principal up by it): token parents and attributes merged over its directory
/// entry, checked against the schema. The entity store a request is evaluated against is built
/// when a decision is not cached; a copy kept per principal cost memory for every cached token
/// (tens of KiB each with the example directory: 10,000 callers' tokens held 200 MiB).
pub fn principal_entity(
    bundle: &PolicyBundle,
    identity: &Identity,
    key: String,
) -> Result<Principal, AuthzError> {
    let type_name = match bundle.entity_type_names.get(&identity.principal_type) {
        Some(type_name) => type_name.clone(),
        None => EntityTypeName::from_str(&identity.principal_type)
            .map_err(|e| AuthzError::Principal(e.to_string()))?,
    };
    let uid = EntityUid::from_type_name_and_id(type_name, EntityId::new(&identity.principal_id));
    let typed = typed_entity::entity_uids(bundle, &identity.parents)
        .and_then(|parents| typed_entity::build(bundle, &uid, parents, &identity.attributes));
    let (entity, parents) = match typed {
        Some(built) => built,
        None => principal_from_json(bundle, &uid, identity)?,
    };
    let mut reaches = referenced_entities(&entity);
    reaches.extend(parents);
    Ok(Principal {
        entity,
        reaches,
        key,
    })
}

/// The principal through Cedar's JSON parser: what [`typed_entity`] leaves to it.
pub(super) fn principal_from_json(
    bundle: &PolicyBundle,
    uid: &EntityUid,
    identity: &Identity,
) -> Result<(Entity, HashSet<EntityUid>), AuthzError> {
    let parents = identity
        .parents
        .iter()
        .map(|(ty, id)| uid_json(ty, id))
        .collect();
    let entity = merged_entity(bundle, uid, identity.attributes.clone(), parents)?;
    let entity = entity_from_json(entity, bundle).map_err(AuthzError::Principal)?;
    let (_, _, parents) = entity.clone().into_inner();
    Ok((entity, parents))
}

/// The Cedar side of a route, compiled against the schema.
#[derive(Debug, Clone)]
pub struct RouteAuthz {
    pub action: EntityUid,
    resource_type: EntityTypeName,
    resource_id: IdTemplate,
    parents: Vec<(EntityTypeName, IdTemplate)>,
    context: ContextPlan,
    /// The context attributes the action's policies read.
    reads: ContextReads,
}

/// How a route names its resource, as written in routes.toml.
pub struct ResourceSpec<'a> {
    pub entity_type: &'a str,
    pub id: &'a str,
    pub parents: &'a [String],
}

/// Parses `Action::"x"` style uids; a bare name means `Action::"name"`.
pub fn action_uid(action: &str) -> Result<EntityUid, String> {
    let text = if action.contains("::") {
        action.to_string()
    } else {
        format!("Action::{}", serde_json::Value::from(action))
    };
    EntityUid::from_str(&text)
        .map_err(|e| format!("action {action:?} is not a valid Cedar action: {e}"))
}

fn entity_type(name: &str, schema_types: &[String]) -> Result<EntityTypeName, String> {
    let parsed = EntityTypeName::from_str(name)
        .map_err(|e| format!("{name:?} is not a valid Cedar entity type: {e}"))?;
    if !schema_types.iter().any(|t| *t == parsed.to_string()) {
        return Err(format!(
            "entity type {name:?} is not declared in the schema (declared: {})",
            schema_types.join(", ")
        ));
    }
    Ok(parsed)
}

/// Splits `List::"{list_id}"` into the type and the id template.
fn parse_parent(
    text: &str,
    params: &[&str],
    schema_types: &[String],
) -> Result<(EntityTypeName, IdTemplate), String> {
    let (ty, id) = text
        .split_once("::\"")
        .and_then(|(ty, rest)| rest.strip_suffix('"').map(|id| (ty, id)))
        .ok_or_else(|| format!("parent {text:?} must look like Type::\"{{param}}\""))?;
    Ok((
        entity_type(ty, schema_types)?,
        IdTemplate::parse(id, params)?,
    ))
}

impl RouteAuthz {
    /// Compiles a route's action, resource and context against the bundle's schema, for
    /// requests by principals of `principal_types`.
    pub fn compile(
        action: &str,
        resource: &ResourceSpec<'_>,
        route_params: &[&str],
        context_kinds: &[String],
        principal_types: &[String],
        bundle: &PolicyBundle,
    ) -> Result<Self, String> {
        let action_uid = action_uid(action)?;
        let declared_actions: Vec<String> =
            bundle.schema.actions().map(|a| a.to_string()).collect();
        if !declared_actions.contains(&action_uid.to_string()) {
            return Err(format!(
                "action {action_uid} is not declared in the schema (declared: {})",
                declared_actions.join(", ")
            ));
        }
        let schema_types: Vec<String> = bundle
            .schema
            .entity_types()
            .map(|t| t.to_string())
            .collect();
        let compiled = RouteAuthz {
            resource_type: entity_type(resource.entity_type, &schema_types)?,
            resource_id: IdTemplate::parse(resource.id, route_params)?,
            parents: resource
                .parents
                .iter()
                .map(|p| parse_parent(p, route_params, &schema_types))
                .collect::<Result<_, _>>()?,
            context: ContextPlan::compile(
                &bundle.contexts.context(&action_uid.to_string()),
                context_kinds,
                route_params,
            )?,
            reads: bundle
                .slices
                .context_reads(&action_uid)
                .cloned()
                .unwrap_or_else(|| ContextReads::of(&bundle.policies)),
            action: action_uid,
        };
        let resource_type = compiled.resource_type.to_string();
        let allowed = bundle
            .contexts
            .entity_type(&resource_type)
            .map(|shape| shape.member_of.clone())
            .unwrap_or_default();
        for (parent_type, _) in &compiled.parents {
            if !allowed.contains(&parent_type.to_string()) {
                return Err(format!(
                    "resource parent type {parent_type} is not allowed for {resource_type} by the schema (allowed: {})",
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                ));
            }
        }
        let probe_params: Vec<(&str, String)> = route_params
            .iter()
            .map(|p| (*p, "probe".to_string()))
            .collect();
        let (probe_query, probe_headers) = compiled.context.probe_inputs();
        let facts = RequestFacts {
            method: "GET",
            path: "/",
            params: &probe_params,
            client_ip: Some(IpAddr::from([127, 0, 0, 1])),
            scopes: &[],
            query: Some(&probe_query),
            headers: &probe_headers,
            time: std::time::SystemTime::now(),
        };
        for principal_type in principal_types {
            let principal = entity_type(principal_type, &schema_types)?;
            let principal = EntityUid::from_type_name_and_id(principal, EntityId::new("probe"));
            compiled
                .request(principal, &facts, Some(&bundle.schema), &probe_params)
                .map_err(|e| format!("{e}"))?;
        }
        Ok(compiled)
    }

    /// The decision cache's key for a request of `caller` on route `route_id` (see
    /// `decision_cache`).
    pub fn decision_key(
        &self,
        route_id: &str,
        caller: Caller<'_>,
        facts: &RequestFacts<'_>,
    ) -> Vec<u8> {
        let mut key = CacheKey::with_capacity(256);
        key.piece(route_id.as_bytes());
        match caller {
            Caller::Anonymous(_) => key.count(0),
            Caller::Authenticated(principal) => {
                key.count(1);
                key.piece(principal.key.as_bytes());
            }
        }
        key.count(facts.params.len());
        for (_, value) in facts.params {
            key.piece(value.as_bytes());
        }
        self.context.write_key(facts, &self.reads, &mut key);
        key.into_bytes()
    }

    /// The resource of a request, as the decision log names it.
    pub fn resource_name(&self, params: &[(&str, String)]) -> String {
        self.resource_uid(params).to_string()
    }

    fn resource_uid(&self, params: &[(&str, String)]) -> EntityUid {
        EntityUid::from_type_name_and_id(
            self.resource_type.clone(),
            EntityId::new(self.resource_id.render(params)),
        )
    }

    /// The Cedar request, checked against `schema` when one is given.
    fn request(
        &self,
        principal: EntityUid,
        facts: &RequestFacts<'_>,
        schema: Option<&cedar_policy::Schema>,
        params: &[(&str, String)],
    ) -> Result<Request, AuthzError> {
        let context = Context::from_pairs(self.context.build(facts)?)
            .map_err(|e| AuthzError::Context(e.to_string()))?;
        Request::new(
            principal,
            self.action.clone(),
            self.resource_uid(params),
            context,
            schema,
        )
        .map_err(|e| AuthzError::Request(e.to_string()))
    }

    /// Builds the Cedar request and the entities it is evaluated against (see
    /// [`request_entities`]): the principal, and, for a resource the directory does not know,
    /// the resource with the route's parents, over the directory's entries.
    pub fn build(
        &self,
        bundle: &PolicyBundle,
        caller: Caller<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<(Request, Entities), AuthzError> {
        let (principal_uid, overlay, mut starts) = self.request_parts(bundle, caller, facts)?;
        starts.push(self.action.clone());
        let entities = request_entities(bundle, overlay, starts)?;
        // The probe at compile time checked this route's requests against the schema: the
        // principal types, the action, the resource type and the context's shape and types.
        // Per request only values change, typed by the context plan, so release builds skip
        // the check (several microseconds); debug builds, the test suite's, check every one.
        let schema = cfg!(debug_assertions).then_some(&bundle.schema);
        let request = self.request(principal_uid, facts, schema, facts.params)?;
        Ok((request, entities))
    }

    /// The principal's uid, the entities a request adds over the directory (the principal
    /// built from a token, and a resource the directory lacks placed by the route's parents),
    /// and the uids its slice of the directory starts from.
    fn request_parts(
        &self,
        bundle: &PolicyBundle,
        caller: Caller<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<(EntityUid, Vec<Entity>, Vec<EntityUid>), AuthzError> {
        let resource = self.resource_uid(facts.params);
        let mut overlay = Vec::new();
        let mut starts = Vec::new();
        let principal_uid = match caller {
            Caller::Anonymous(uid) => {
                starts.push(uid.clone());
                uid.clone()
            }
            Caller::Authenticated(principal) => {
                overlay.push(principal.entity.clone());
                starts.extend(principal.reaches.iter().cloned());
                principal.entity.uid()
            }
        };
        // The directory is the source of truth for resources it knows: a path cannot move a
        // known task into another list. Route parents place resources the directory lacks.
        if !bundle.knows(&resource) && !self.parents.is_empty() {
            let parents: Vec<EntityUid> = self
                .parents
                .iter()
                .map(|(ty, id)| {
                    EntityUid::from_type_name_and_id(
                        ty.clone(),
                        EntityId::new(id.render(facts.params)),
                    )
                })
                .collect();
            let entity = match typed_entity::build(bundle, &resource, parents.clone(), &Map::new())
            {
                Some((entity, _)) => entity,
                None => resource_from_json(bundle, &resource, &parents)?,
            };
            overlay.push(entity);
            starts.extend(parents);
        } else {
            starts.push(resource);
        }
        Ok((principal_uid, overlay, starts))
    }

    /// The request and the whole directory with the request's entities upserted: what
    /// `build` computed before it sliced, kept as the reference the differential test checks
    /// the slice against.
    #[cfg(test)]
    pub fn build_with_whole_directory(
        &self,
        bundle: &PolicyBundle,
        caller: Caller<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<(Request, Entities), AuthzError> {
        let (principal_uid, overlay, _) = self.request_parts(bundle, caller, facts)?;
        let mut users = Vec::new();
        if let Some(directory) = &bundle.synced_users.directory() {
            for synced in directory.sources.iter().flat_map(|s| &s.entities) {
                let value = serde_json::to_value(synced)
                    .map_err(|e| AuthzError::Entities(e.to_string()))?;
                let entity = Entity::from_json_value(value, Some(&bundle.schema))
                    .map_err(|e| AuthzError::Entities(e.to_string()))?;
                if bundle.synced_users.get(&entity.uid()).is_some() {
                    users.push(entity);
                }
            }
        }
        let entities = bundle
            .entities
            .clone()
            .add_entities(users, Some(&bundle.schema))
            .map_err(|e| AuthzError::Entities(e.to_string()))?
            .upsert_entities(overlay, Some(&bundle.schema))
            .map_err(|e| AuthzError::Entities(e.to_string()))?;
        let request = self.request(principal_uid, facts, Some(&bundle.schema), facts.params)?;
        Ok((request, entities))
    }
}

/// The entities a request is evaluated against: `overlay` (the principal and resource the
/// request built) and, from the directory, the entries `starts` names (the overlay's parents,
/// the action, a known resource), the entries of the policies' entity literals whose data a
/// condition reads, and, to any depth, every entity their attributes name. That is all
/// evaluation can read: entity values come only from those (a request's context holds none),
/// and `in` reads the left side's ancestors, which a store entry carries closed and the
/// overlay's parents supply. A synced user (outside the store, its parents not closed) brings
/// its parents, and a store entry the synced users it is in. Everything else in the directory
/// (another 100,000 synced users) is left out: cloning the whole store per request cost time
/// in proportion to its size. The decision cache's differential test checks the slice against
/// the whole store.
fn request_entities(
    bundle: &PolicyBundle,
    overlay: Vec<Entity>,
    starts: Vec<EntityUid>,
) -> Result<Entities, AuthzError> {
    let mut seen: HashSet<EntityUid> = overlay.iter().map(Entity::uid).collect();
    let mut queue = starts;
    queue.extend(bundle.read_literals.iter().cloned());
    let mut included = overlay;
    while let Some(uid) = queue.pop() {
        if !seen.insert(uid.clone()) {
            continue;
        }
        let entity = if let Some(entity) = bundle.entities.get(&uid) {
            if !bundle.synced_users.is_empty() {
                if let Some(ancestors) = bundle.entities.ancestors(&uid) {
                    queue.extend(
                        ancestors
                            .filter(|a| bundle.synced_users.get(a).is_some())
                            .cloned(),
                    );
                }
            }
            entity.clone()
        } else if let Some(user) = bundle.synced_users.entity(&uid, &bundle.schema) {
            let user = user.map_err(AuthzError::Entities)?;
            let (_, _, parents) = user.clone().into_inner();
            queue.extend(parents);
            user
        } else {
            continue;
        };
        if let Some(named) = bundle.references.get(&uid) {
            queue.extend(named.iter().cloned());
        }
        included.push(entity);
    }
    Entities::from_entities(included, None).map_err(|e| AuthzError::Entities(e.to_string()))
}

/// The entities an entity's attribute values name, at any depth of sets and records.
pub fn referenced_entities(entity: &Entity) -> Vec<EntityUid> {
    fn walk(value: &EvalResult, out: &mut Vec<EntityUid>) {
        match value {
            EvalResult::EntityUid(uid) => out.push(uid.clone()),
            EvalResult::Set(set) => set.iter().for_each(|v| walk(v, out)),
            EvalResult::Record(record) => record.iter().for_each(|(_, v)| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, value) in entity.attrs() {
        if let Ok(value) = value {
            walk(&value, &mut out);
        }
    }
    out
}

/// A resource the directory lacks, placed by the route's parents, through Cedar's JSON parser:
/// what [`typed_entity`] leaves to it.
pub(super) fn resource_from_json(
    bundle: &PolicyBundle,
    resource: &EntityUid,
    parents: &[EntityUid],
) -> Result<Entity, AuthzError> {
    let json = parents
        .iter()
        .map(|p| uid_json(&p.type_name().to_string(), p.id().unescaped()))
        .collect();
    let entity = merged_entity(bundle, resource, Map::new(), json)?;
    entity_from_json(entity, bundle).map_err(AuthzError::Resource)
}

fn uid_json(ty: &str, id: &str) -> Value {
    json!({"type": ty, "id": id})
}

/// Entity JSON for `uid`: its directory entry (if any) with `attrs` laid over its attributes
/// and `parents` added to its parents.
fn merged_entity(
    bundle: &PolicyBundle,
    uid: &EntityUid,
    attrs: Map<String, Value>,
    parents: Vec<Value>,
) -> Result<Value, AuthzError> {
    let mut entity = match bundle.entry_json(uid) {
        Some(existing) => existing.map_err(AuthzError::Entities)?,
        None => {
            json!({"uid": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()}, "attrs": {}, "parents": []})
        }
    };
    if let Some(existing) = entity.get_mut("attrs").and_then(Value::as_object_mut) {
        existing.extend(attrs);
    }
    if let Some(existing) = entity.get_mut("parents").and_then(Value::as_array_mut) {
        for parent in parents {
            if !existing.contains(&parent) {
                existing.push(parent);
            }
        }
    }
    Ok(entity)
}

fn entity_from_json(value: Value, bundle: &PolicyBundle) -> Result<Entity, String> {
    Entity::from_json_value(value, Some(&bundle.schema)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_templates() {
        let t = IdTemplate::parse("tasks-{task_id}", &["list_id", "task_id"]).unwrap();
        assert_eq!(
            t.render(&[("list_id", "l".into()), ("task_id", "t9".into())]),
            "tasks-t9"
        );
        assert_eq!(IdTemplate::parse("app", &[]).unwrap().render(&[]), "app");
        assert!(IdTemplate::parse("{nope}", &["task_id"])
            .unwrap_err()
            .contains("no such parameter"));
        assert!(IdTemplate::parse("{open", &["open"]).is_err());
        assert!(IdTemplate::parse("x}", &[]).is_err());
        assert!(IdTemplate::parse("", &[]).is_err());
    }

    /// The principal's cached store and a store built per request give the same decisions,
    /// for resources the directory knows and for one it does not (added with route parents).
    #[test]
    fn action_uids() {
        assert_eq!(action_uid("read").unwrap().to_string(), r#"Action::"read""#);
        assert_eq!(
            action_uid(r#"Tasks::Action::"read""#).unwrap().to_string(),
            r#"Tasks::Action::"read""#
        );
        assert!(action_uid("Tasks::Action::read").is_err());
    }
}
