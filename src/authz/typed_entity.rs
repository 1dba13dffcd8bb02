//! Entities built from values directly, without Cedar's JSON parser: the principal of a new
//! caller, and a resource the directory lacks that a route's parents place.
//!
//! Why: `Entity::from_json_value` reads every attribute value and parent through serde's
//! untagged enums, which build and drop an error for each variant they try before the one that
//! fits. For a small principal that was about 20 µs of every new caller's request.
//!
//! Here strings, integers, booleans, entity references and sets of them become Cedar values
//! directly, and Cedar itself checks the entity against the schema (`Entities::add_entities`
//! with the schema), so what is accepted is Cedar's rule, not a copy of it. That check is the
//! larger cost (about 15 µs); an entity without a directory entry whose shape passed it
//! before skips it (`conforming.rs`). Anything else is left to the JSON path, which then
//! decides exactly as before (and words the error):
//! - values the builder does not take literally: fractions, `null`, records, implicit entity
//!   references, and strings the schema reads as extension values;
//! - entity types the schema does not declare, actions among them;
//! - a directory entry with tags;
//! - an entity the schema check refuses;
//! - a user that directory sync provides.
//!
//! `tests` compares both paths on the same entities.

use std::collections::{HashMap, HashSet};

use cedar_policy::{Entities, Entity, EntityId, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};

use super::bundle::PolicyBundle;
use super::cache_key::CacheKey;

/// `uid`'s entity: its directory entry (if any) with `attributes` laid over its attributes
/// and `parents` added to its parents, and all its parents; `None` where the JSON path must
/// decide.
pub(super) fn build(
    bundle: &PolicyBundle,
    uid: &EntityUid,
    parents: impl IntoIterator<Item = EntityUid>,
    attributes: &Map<String, Value>,
) -> Option<(Entity, HashSet<EntityUid>)> {
    // Types the schema does not declare as entity types (actions among them: their ids are
    // the schema's) and synced users are the JSON path's.
    let entity_type = uid.type_name().to_string();
    if !bundle.entity_type_names.contains_key(&entity_type)
        || bundle.synced_users.get(uid).is_some()
    {
        return None;
    }
    let entry = bundle.entities.get(uid);
    // An entry's tags would not survive `into_inner`.
    if entry.is_some_and(|entry| entry.tags().next().is_some()) {
        return None;
    }
    let entry_less = entry.is_none();
    let (mut all_attributes, mut all_parents) = match entry {
        Some(entry) => {
            let (_, attributes, parents) = entry.clone().into_inner();
            (attributes, parents)
        }
        None => (HashMap::new(), HashSet::new()),
    };
    all_parents.extend(parents);
    for (name, value) in attributes {
        all_attributes.insert(name.clone(), cedar_value(bundle, value)?);
    }
    let entity = Entity::new(uid.clone(), all_attributes, all_parents.clone()).ok()?;
    // A directory entry's own attributes are not in `attributes`: its entity is checked
    // every time (a caller with an entry is built once per snapshot and identity anyway).
    let shape = entry_less.then(|| shape(bundle, &entity_type, uid, &all_parents, attributes));
    if shape
        .as_deref()
        .is_some_and(|shape| bundle.conforming.accepted(shape))
    {
        return Some((entity, all_parents));
    }
    Entities::empty()
        .add_entities([entity.clone()], Some(&bundle.schema))
        .ok()?;
    if let Some(shape) = shape {
        bundle.conforming.remember(shape);
    }
    Some((entity, all_parents))
}

/// Everything Cedar's schema check reads from an entity without a directory entry (see
/// `conforming.rs`), as unambiguous bytes.
fn shape(
    bundle: &PolicyBundle,
    entity_type: &str,
    uid: &EntityUid,
    parents: &HashSet<EntityUid>,
    attributes: &Map<String, Value>,
) -> Vec<u8> {
    let mut key = CacheKey::with_capacity(128);
    entity_shape(&mut key, bundle, entity_type, uid.id().unescaped());
    let mut parents: Vec<(String, &str)> = parents
        .iter()
        .map(|parent| (parent.type_name().to_string(), parent.id().unescaped()))
        .collect();
    parents.sort_unstable();
    key.count(parents.len());
    for (entity_type, id) in &parents {
        entity_shape(&mut key, bundle, entity_type, id);
    }
    key.count(attributes.len());
    for (name, value) in attributes {
        key.piece(name.as_bytes());
        value_shape(&mut key, bundle, value);
    }
    key.into_bytes()
}

/// An entity's type, and its id where the type is enumerated.
fn entity_shape(key: &mut CacheKey, bundle: &PolicyBundle, entity_type: &str, id: &str) {
    key.piece(entity_type.as_bytes());
    let enumerated = bundle
        .contexts
        .entity_type(entity_type)
        .is_some_and(|shape| shape.enumerated);
    key.piece(if enumerated { id.as_bytes() } else { b"" });
}

/// The kind of a value [`cedar_value`] took literally, with the entities it names.
fn value_shape(key: &mut CacheKey, bundle: &PolicyBundle, value: &Value) {
    match value {
        Value::String(_) => key.piece(b"string"),
        Value::Bool(_) => key.piece(b"bool"),
        Value::Number(_) => key.piece(b"long"),
        Value::Array(items) => {
            key.piece(b"set");
            key.count(items.len());
            items.iter().for_each(|item| value_shape(key, bundle, item));
        }
        Value::Object(object) => {
            key.piece(b"entity");
            let reference = object.get("__entity").unwrap_or(&Value::Null);
            let text = |field: &str| reference[field].as_str().unwrap_or_default();
            entity_shape(key, bundle, text("type"), text("id"));
        }
        Value::Null => key.piece(b"null"),
    }
}

/// `(type, id)` pairs as uids, when the schema declares every type.
pub(super) fn entity_uids(
    bundle: &PolicyBundle,
    pairs: &[(String, String)],
) -> Option<Vec<EntityUid>> {
    pairs
        .iter()
        .map(|(entity_type, id)| entity_uid(bundle, entity_type, id))
        .collect()
}

/// A JSON value as the Cedar value it stands for, when it is one of the kinds this builder
/// takes literally.
fn cedar_value(bundle: &PolicyBundle, value: &Value) -> Option<RestrictedExpression> {
    match value {
        Value::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Value::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Value::Number(number) => number.as_i64().map(RestrictedExpression::new_long),
        Value::Array(items) => items
            .iter()
            .map(|item| cedar_value(bundle, item))
            .collect::<Option<Vec<_>>>()
            .map(RestrictedExpression::new_set),
        Value::Object(object) => {
            // Only the explicit `{"__entity": {"type": ..., "id": ...}}` form.
            let Some(Value::Object(reference)) = object.get("__entity") else {
                return None;
            };
            if object.len() != 1 || reference.len() != 2 {
                return None;
            }
            let entity_type = reference.get("type")?.as_str()?;
            let id = reference.get("id")?.as_str()?;
            entity_uid(bundle, entity_type, id).map(RestrictedExpression::new_entity_uid)
        }
        Value::Null => None,
    }
}

/// `Type::"id"` for an entity type the schema declares.
fn entity_uid(bundle: &PolicyBundle, entity_type: &str, id: &str) -> Option<EntityUid> {
    let type_name = bundle.entity_type_names.get(entity_type)?;
    Some(EntityUid::from_type_name_and_id(
        type_name.clone(),
        EntityId::new(id),
    ))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use serde_json::{json, Map};

    use super::*;
    use crate::authz::request::{principal_from_json, resource_from_json};
    use crate::authz::test_rng::Rng;
    use crate::directory::{Directory, SourceEntities};
    use crate::identity::Identity;

    const SCHEMA: &str = r#"
entity Role in [Role];
entity Tenant;
entity Color enum ["red", "blue"];
entity Doc in [Tenant] { title?: String };
entity Page in [Doc] { size: Long };
entity User in [Role, Tenant, Color] {
  color?: Color,
  email?: String,
  level?: Long,
  admin?: Bool,
  tenant?: Tenant,
  teams?: Set<Role>,
  tags?: Set<String>,
  home?: ipaddr,
  profile?: { plan: String },
} tags String;
action Read appliesTo { principal: [User], resource: [Doc] };
"#;

    /// u0 has a directory entry with attributes and parents; u1 has one with a tag only; the
    /// other callers have none (their entities' shapes are remembered).
    const ENTITIES: &str = r#"[
  {"uid": {"type": "User", "id": "u0"}, "attrs": {"email": "u0@example.com", "level": 3, "teams": [{"__entity": {"type": "Role", "id": "r1"}}]}, "parents": [{"type": "Role", "id": "r2"}, {"type": "Tenant", "id": "t0"}]},
  {"uid": {"type": "User", "id": "u1"}, "attrs": {}, "parents": [], "tags": {"clearance": "high"}},
  {"uid": {"type": "Role", "id": "r1"}, "attrs": {}, "parents": [{"type": "Role", "id": "r0"}]},
  {"uid": {"type": "Role", "id": "r2"}, "attrs": {}, "parents": [{"type": "Role", "id": "r1"}]}
]"#;

    fn bundle(dir: &std::path::Path) -> PolicyBundle {
        std::fs::write(dir.join("schema.cedarschema"), SCHEMA).unwrap();
        std::fs::write(dir.join("entities.json"), ENTITIES).unwrap();
        std::fs::write(
            dir.join("p.cedar"),
            r#"permit (principal in Role::"r0", action, resource);"#,
        )
        .unwrap();
        PolicyBundle::load(dir).unwrap()
    }

    fn entity_ref(entity_type: &str, id: &str) -> Value {
        json!({"__entity": {"type": entity_type, "id": id}})
    }

    /// A value for an attribute: mostly what the schema declares, sometimes a form the
    /// builder leaves to the JSON path, sometimes a wrong type.
    fn value(rng: &mut Rng, name: &str) -> Value {
        let right = match name {
            "email" => {
                json!(["a@example.com", "with \"quotes\" and \u{e9}", ""][rng.below(3) as usize])
            }
            "level" => json!([0, -7, i64::MAX][rng.below(3) as usize]),
            "admin" => json!(rng.below(2) == 0),
            "tenant" => entity_ref("Tenant", ["t0", "t\"1", "t 2"][rng.below(3) as usize]),
            "teams" => Value::Array(
                (0..rng.below(3))
                    .map(|r| entity_ref("Role", &format!("r{r}")))
                    .collect(),
            ),
            "tags" => json!(["x", "y", "x"][..rng.below(4) as usize]),
            "color" => entity_ref("Color", ["red", "blue", "purple"][rng.below(3) as usize]),
            "home" => json!("10.0.0.1"),
            "profile" => json!({"plan": "pro"}),
            _ => json!("undeclared"),
        };
        match rng.below(30) {
            0 => json!(1.5),
            1 => Value::Null,
            2 => json!({"type": "Tenant", "id": "t0"}),
            3 => json!({"__entity": {"type": "Tenant", "id": "t0"}, "extra": 1}),
            4 => entity_ref("Nowhere", "x"),
            5 => json!("a string"),
            6 => json!(7),
            _ => right,
        }
    }

    fn identity(rng: &mut Rng) -> Identity {
        let names = [
            "email", "level", "admin", "tenant", "teams", "tags", "color", "home", "profile",
            "unknown",
        ];
        let mut attributes = Map::new();
        for name in names {
            let chance = if name == "unknown" { 12 } else { 5 };
            if rng.below(chance) == 0 {
                attributes.insert(name.to_string(), value(rng, name));
            }
        }
        let mut parents: Vec<(String, String)> = (0..rng.below(3))
            .map(|r| ("Role".to_string(), format!("r{r}")))
            .collect();
        match rng.below(8) {
            0 => parents.push(("Tenant".into(), "t0".into())),
            1 => parents.push(("Doc".into(), "d0".into())),
            2 => parents.push(("Nowhere".into(), "x".into())),
            3 => parents.push(("Color".into(), "red".into())),
            4 => parents.push(("Color".into(), "green".into())),
            _ => {}
        }
        Identity {
            issuer: "https://issuer/".into(),
            principal_type: "User".into(),
            principal_id: format!("u{}", rng.below(6)),
            roles: Vec::new(),
            tenant: None,
            scopes: Vec::new(),
            parents,
            attributes,
        }
    }

    /// The entity as Cedar's JSON with its parents sorted: equal for equal entities.
    fn normalized(entity: &Entity) -> Value {
        let mut json = entity.to_json_value().unwrap();
        if let Some(parents) = json["parents"].as_array_mut() {
            parents.sort_by_key(|p| p.to_string());
        }
        json
    }

    /// Wherever the typed builder answers, the JSON path gives the same entity and parents;
    /// where it does not, the JSON path decides alone. Both kinds occur, and the JSON path
    /// refuses some identities the builder left to it. Most callers have no directory entry,
    /// so most typed answers for them come from remembered shapes: a shape that left out
    /// something the schema check reads (an enumerated id, a parent's type, an attribute's
    /// kind) would accept what the JSON path refuses.
    #[test]
    fn typed_and_json_principals_agree() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = bundle(dir.path());
        let mut rng = Rng(0x7E57_ED00_C0FF_EE11);
        let (mut typed, mut left, mut refused) = (0, 0, 0);
        for _ in 0..6000 {
            let identity = identity(&mut rng);
            let uid = EntityUid::from_type_name_and_id(
                bundle.entity_type_names["User"].clone(),
                EntityId::new(&identity.principal_id),
            );
            let from_json = principal_from_json(&bundle, &uid, &identity);
            let built = entity_uids(&bundle, &identity.parents)
                .and_then(|parents| build(&bundle, &uid, parents, &identity.attributes));
            match built {
                Some((entity, parents)) => {
                    typed += 1;
                    let (json_entity, json_parents) = from_json.unwrap_or_else(|e| {
                        panic!("typed accepted what JSON refuses: {e}\n{identity:?}")
                    });
                    assert_eq!(
                        normalized(&entity),
                        normalized(&json_entity),
                        "{identity:?}"
                    );
                    assert_eq!(parents, json_parents, "{identity:?}");
                }
                None => {
                    left += 1;
                    refused += usize::from(from_json.is_err());
                }
            }
        }
        assert!(typed > 300, "typed: {typed}");
        assert!(
            bundle.conforming.accepted_count() > 20,
            "{:?}",
            bundle.conforming
        );
        assert!(
            left > 300 && refused > 100,
            "left: {left}, refused: {refused}"
        );
        assert!(
            refused < left,
            "the JSON path accepts some: {refused} of {left}"
        );
    }

    /// A resource the directory lacks, placed by a route's parents: the same entity both
    /// ways, and refused by both when the schema requires an attribute a placed resource
    /// cannot have, or does not allow the parent.
    #[test]
    fn typed_and_json_resources_agree() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = bundle(dir.path());
        let uid = |entity_type: &str, id: &str| entity_uid(&bundle, entity_type, id).unwrap();
        let cases = [
            (uid("Doc", "d9"), vec![uid("Tenant", "t0")], true),
            (
                uid("Doc", "d\"9"),
                vec![uid("Tenant", "t0"), uid("Tenant", "t1")],
                true,
            ),
            (uid("Doc", "d9"), vec![], true),
            (uid("Doc", "d9"), vec![uid("Role", "r1")], false),
            (uid("Page", "p1"), vec![uid("Doc", "d9")], false),
        ];
        let action = EntityUid::from_str(r#"Action::"Read""#).unwrap();
        assert!(build(&bundle, &action, [], &Map::new()).is_none());
        for (resource, parents, accepted) in cases {
            let from_json = resource_from_json(&bundle, &resource, &parents);
            match build(&bundle, &resource, parents.clone(), &Map::new()) {
                Some((entity, all_parents)) => {
                    assert!(accepted, "{resource} in {parents:?}");
                    let json_entity = from_json.unwrap();
                    assert_eq!(normalized(&entity), normalized(&json_entity));
                    assert_eq!(all_parents, parents.into_iter().collect());
                }
                None => {
                    assert!(!accepted, "{resource} in {parents:?}");
                    assert!(from_json.is_err(), "{resource} in {parents:?}");
                }
            }
        }
    }

    /// A synced user's principal is always built by the JSON path.
    #[test]
    fn synced_users_take_the_json_path() {
        let dir = tempfile::tempdir().unwrap();
        let directory = Directory::new(vec![SourceEntities {
            source: "idp".into(),
            synced_at: 0,
            entities: vec![serde_json::from_value(json!(
                {"uid": {"type": "User", "id": "s0"}, "attrs": {"email": "s0@example.com"}, "parents": []}
            ))
            .unwrap()],
        }]);
        let (bundle, _) = bundle(dir.path())
            .with_directory(std::sync::Arc::new(directory), &["User".to_string()])
            .unwrap();
        let mut identity = identity(&mut Rng(1));
        identity.principal_id = "s0".into();
        identity.attributes = Map::new();
        identity.parents = Vec::new();
        let uid = EntityUid::from_type_name_and_id(
            bundle.entity_type_names["User"].clone(),
            EntityId::new("s0"),
        );
        assert!(build(&bundle, &uid, [], &identity.attributes).is_none());
        let (entity, _) = principal_from_json(&bundle, &uid, &identity).unwrap();
        assert_eq!(
            normalized(&entity)["attrs"]["email"],
            json!("s0@example.com")
        );
    }
}
