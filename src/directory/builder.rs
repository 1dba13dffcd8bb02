//! IdP records → Cedar entities (pure). A mapping names the entity type, the field that is
//! the entity's id and the fields that become attributes; memberships become parents. The
//! builder keeps only what the mapping selects, so a sync holds a compact directory, not the
//! API's records.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{EntityRef, SyncedEntity};

/// A field of an API record: `email`, `app_metadata.plan`, `profile.login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parses a dotted path; every segment must be non-empty.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "{text:?} is not a field path: write field names joined by dots, like \"app_metadata.plan\""
            ));
        }
        Ok(FieldPath(segments))
    }

    /// The top-level field `name`.
    pub fn field(name: &str) -> Self {
        FieldPath(vec![name.to_string()])
    }

    /// The value at the path, if the record has one that is not `null`.
    pub fn get<'a>(&self, record: &'a Value) -> Option<&'a Value> {
        let mut value = record;
        for segment in &self.0 {
            value = value.get(segment)?;
        }
        (!value.is_null()).then_some(value)
    }

    /// The first segment: the top-level field an API must return for the path to resolve.
    pub fn top_level(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or_default()
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Which entity an API record becomes.
#[derive(Debug, Clone)]
pub struct EntityMapping {
    pub entity_type: String,
    pub id: FieldPath,
    /// Cedar attribute name → field.
    pub attributes: Vec<(String, FieldPath)>,
}

impl EntityMapping {
    /// The entity a record names: its id field as a string (numbers are written out), or
    /// `None` when the record has no usable id.
    pub fn uid_of(&self, record: &Value) -> Option<Uid> {
        let id = match self.id.get(record)? {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(Uid {
            entity_type: self.entity_type.clone(),
            id,
        })
    }

    /// The top-level fields the API must return for this mapping.
    pub fn fields(&self) -> BTreeSet<&str> {
        std::iter::once(&self.id)
            .chain(self.attributes.iter().map(|(_, path)| path))
            .map(FieldPath::top_level)
            .collect()
    }

    fn attributes_of(&self, record: &Value) -> Map<String, Value> {
        self.attributes
            .iter()
            .filter_map(|(name, path)| path.get(record).map(|v| (name.clone(), v.clone())))
            .collect()
    }
}

pub type Uid = EntityRef;

#[derive(Debug, Default)]
struct Node {
    attrs: Map<String, Value>,
    parents: BTreeSet<Uid>,
}

/// Collects the entities of one source's sync.
#[derive(Debug, Default)]
pub struct DirectoryBuilder {
    entities: BTreeMap<Uid, Node>,
    /// Records skipped because their id field was missing or not a string.
    unmapped: usize,
}

impl DirectoryBuilder {
    /// Adds the entity `record` maps to, with its attributes (laid over any it has already).
    /// Returns its uid, or `None` (and counts it) when the record has no id.
    pub fn add(&mut self, mapping: &EntityMapping, record: &Value) -> Option<Uid> {
        let Some(uid) = mapping.uid_of(record) else {
            self.unmapped += 1;
            return None;
        };
        let node = self.entities.entry(uid.clone()).or_default();
        node.attrs.extend(mapping.attributes_of(record));
        Some(uid)
    }

    /// Adds the entity `record` maps to (if new, without attributes: a member list's record
    /// is not the full user) as a child of `parent`.
    pub fn add_member(&mut self, mapping: &EntityMapping, record: &Value, parent: &Uid) {
        let Some(uid) = mapping.uid_of(record) else {
            self.unmapped += 1;
            return;
        };
        self.add_parent(&uid, parent.clone());
    }

    /// Makes `parent` a parent of `child` (creating `child` if it is new).
    pub fn add_parent(&mut self, child: &Uid, parent: Uid) {
        self.entities
            .entry(child.clone())
            .or_default()
            .parents
            .insert(parent);
    }

    pub fn unmapped(&self) -> usize {
        self.unmapped
    }

    /// The entities, sorted by uid (so equal directories serialize equally).
    pub fn finish(self) -> Vec<SyncedEntity> {
        self.entities
            .into_iter()
            .map(|(uid, node)| SyncedEntity {
                uid,
                attrs: node.attrs,
                parents: node.parents.into_iter().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn users() -> EntityMapping {
        EntityMapping {
            entity_type: "User".into(),
            id: FieldPath::parse("user_id").unwrap(),
            attributes: vec![
                ("email".into(), FieldPath::parse("email").unwrap()),
                (
                    "plan".into(),
                    FieldPath::parse("app_metadata.plan").unwrap(),
                ),
            ],
        }
    }

    fn role(id: &str) -> Uid {
        Uid {
            entity_type: "Role".into(),
            id: id.into(),
        }
    }

    #[test]
    fn field_paths() {
        let record = json!({"a": {"b": 3, "n": null}, "s": "x"});
        assert_eq!(
            FieldPath::parse("a.b").unwrap().get(&record),
            Some(&json!(3))
        );
        assert_eq!(FieldPath::parse("a.n").unwrap().get(&record), None);
        assert_eq!(FieldPath::parse("a.c").unwrap().get(&record), None);
        assert_eq!(FieldPath::parse("s.t").unwrap().get(&record), None);
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse("").is_err());
        assert_eq!(FieldPath::parse("a.b").unwrap().top_level(), "a");
    }

    #[test]
    fn records_become_entities_with_selected_attributes_and_member_parents() {
        let mut builder = DirectoryBuilder::default();
        let alice = json!({"user_id": "auth0|alice", "email": "a@x", "app_metadata": {"plan": "pro", "secret": 1}, "name": "Alice"});
        builder.add(&users(), &alice).unwrap();
        // Members listed by a role carry fewer fields: the attributes stay.
        builder.add_member(&users(), &json!({"user_id": "auth0|alice"}), &role("admin"));
        builder.add_member(
            &users(),
            &json!({"user_id": "auth0|bob", "email": "b@x"}),
            &role("viewer"),
        );
        builder.add_member(&users(), &json!({"email": "no-id@x"}), &role("viewer"));
        builder.add(&users(), &json!({"user_id": ""}));
        assert_eq!(builder.unmapped(), 2);
        let entities = builder.finish();
        assert_eq!(
            serde_json::to_value(&entities).unwrap(),
            json!([
                {"uid": {"type": "User", "id": "auth0|alice"}, "attrs": {"email": "a@x", "plan": "pro"}, "parents": [{"type": "Role", "id": "admin"}]},
                {"uid": {"type": "User", "id": "auth0|bob"}, "attrs": {}, "parents": [{"type": "Role", "id": "viewer"}]},
            ])
        );
    }

    #[test]
    fn the_fields_a_mapping_needs() {
        assert_eq!(
            users().fields().into_iter().collect::<Vec<_>>(),
            ["app_metadata", "email", "user_id"]
        );
    }
}
