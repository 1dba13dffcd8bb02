//! What the Cedar schema says about request contexts, read once at load.
//!
//! Cedar records are closed: a context with an attribute the schema does not declare fails
//! validation. So the gateway puts into each action's context exactly the attributes its
//! schema declares, and refuses to load when the schema requires one it cannot provide. Cedar's
//! public API does not expose context types, so they are read from the schema's JSON form.

use std::collections::{BTreeMap, HashMap};

use cedar_policy::SchemaFragment;
use serde_json::Value;

/// A context attribute the schema declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredAttribute {
    pub required: bool,
    /// For record-typed attributes, their own attributes.
    pub record: Option<BTreeMap<String, DeclaredAttribute>>,
    /// For primitive-typed attributes, the primitive.
    pub scalar: Option<Scalar>,
}

/// Primitive Cedar types the gateway can parse request values into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Long,
    Bool,
}

/// Declared context attributes per action, keyed by the action's uid as Cedar prints it
/// (`Action::"read"`, `Ns::Action::"read"`), and the shape of each entity type (its allowed
/// parent types and attribute names, fully qualified), for checking claim mappings at load.
#[derive(Debug, Default)]
pub struct ContextShapes {
    by_action: HashMap<String, BTreeMap<String, DeclaredAttribute>>,
    entity_types: HashMap<String, EntityShape>,
}

/// What the schema declares about one entity type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityShape {
    pub member_of: Vec<String>,
    pub attributes: Vec<String>,
    /// An enumerated type (`entity Color enum ["red", "blue"]`): the schema lists its ids.
    pub enumerated: bool,
}

impl ContextShapes {
    pub fn from_cedarschema(text: &str) -> Result<Self, String> {
        let (fragment, _warnings) =
            SchemaFragment::from_cedarschema_str(text).map_err(|e| e.to_string())?;
        let json = fragment.to_json_value().map_err(|e| e.to_string())?;
        Ok(Self::from_json(&json))
    }

    fn from_json(json: &Value) -> Self {
        let mut by_action = HashMap::new();
        let mut entity_types = HashMap::new();
        let Some(namespaces) = json.as_object() else {
            return ContextShapes::default();
        };
        for (namespace, body) in namespaces {
            let resolver = Resolver {
                root: namespaces,
                namespace,
            };
            let qualify = |name: &str| {
                if namespace.is_empty() || name.contains("::") {
                    name.to_string()
                } else {
                    format!("{namespace}::{name}")
                }
            };
            for (name, ty) in body
                .get("entityTypes")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let member_of = ty
                    .get("memberOfTypes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(qualify)
                    .collect();
                let attributes = ty
                    .get("shape")
                    .and_then(|shape| resolver.record(shape, 0))
                    .map(|record| record.into_keys().collect())
                    .unwrap_or_default();
                entity_types.insert(
                    qualify(name),
                    EntityShape {
                        member_of,
                        attributes,
                        enumerated: ty.get("enum").is_some(),
                    },
                );
            }
            let Some(actions) = body.get("actions").and_then(Value::as_object) else {
                continue;
            };
            for (name, action) in actions {
                let uid = if namespace.is_empty() {
                    format!("Action::{}", quote(name))
                } else {
                    format!("{namespace}::Action::{}", quote(name))
                };
                let context = action
                    .get("appliesTo")
                    .and_then(|a| a.get("context"))
                    .and_then(|c| resolver.record(c, 0))
                    .unwrap_or_default();
                by_action.insert(uid, context);
            }
        }
        ContextShapes {
            by_action,
            entity_types,
        }
    }

    /// The declared shape of an entity type, if the schema declares it.
    pub fn entity_type(&self, name: &str) -> Option<&EntityShape> {
        self.entity_types.get(name)
    }

    /// The declared context of an action (empty when it declares none).
    pub fn context(&self, action_uid: &str) -> BTreeMap<String, DeclaredAttribute> {
        self.by_action.get(action_uid).cloned().unwrap_or_default()
    }
}

fn quote(id: &str) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

struct Resolver<'a> {
    root: &'a serde_json::Map<String, Value>,
    namespace: &'a str,
}

impl Resolver<'_> {
    /// The attributes of a record type, following common-type references.
    fn record(&self, ty: &Value, depth: usize) -> Option<BTreeMap<String, DeclaredAttribute>> {
        if depth > 16 {
            return None;
        }
        let kind = ty.get("type").and_then(Value::as_str)?;
        match kind {
            "Record" => {
                let attributes = ty.get("attributes").and_then(Value::as_object)?;
                Some(
                    attributes
                        .iter()
                        .map(|(name, attr)| {
                            let required = attr
                                .get("required")
                                .and_then(Value::as_bool)
                                .unwrap_or(true);
                            let record = self.record(attr, depth + 1);
                            let scalar = self.scalar(attr, depth + 1);
                            (
                                name.clone(),
                                DeclaredAttribute {
                                    required,
                                    record,
                                    scalar,
                                },
                            )
                        })
                        .collect(),
                )
            }
            "EntityOrCommon" => {
                let name = ty.get("name").and_then(Value::as_str)?;
                self.common(name).and_then(|t| self.record(t, depth + 1))
            }
            other => self.common(other).and_then(|t| self.record(t, depth + 1)),
        }
    }

    /// The primitive a type names, following common-type references.
    fn scalar(&self, ty: &Value, depth: usize) -> Option<Scalar> {
        if depth > 16 {
            return None;
        }
        let kind = ty.get("type").and_then(Value::as_str)?;
        let name = match kind {
            "EntityOrCommon" => ty.get("name").and_then(Value::as_str)?,
            other => other,
        };
        match name.trim_start_matches("__cedar::") {
            "String" => Some(Scalar::String),
            "Long" => Some(Scalar::Long),
            "Bool" | "Boolean" => Some(Scalar::Bool),
            _ => self.common(name).and_then(|t| self.scalar(t, depth + 1)),
        }
    }

    fn common(&self, name: &str) -> Option<&Value> {
        let (namespace, short) = match name.rsplit_once("::") {
            Some((ns, short)) => (ns, short),
            None => (self.namespace, name),
        };
        self.root
            .get(namespace)
            .and_then(|ns| ns.get("commonTypes"))
            .and_then(|types| types.get(short))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_and_common_context_types() {
        let shapes = ContextShapes::from_cedarschema(
            r#"
            type Base = { method: String, path: String, client_ip?: ipaddr, params: { list_id: String } };
            entity User;
            entity List;
            action read appliesTo { principal: User, resource: List, context: Base };
            action write appliesTo { principal: User, resource: List, context: { method: String } };
            action none appliesTo { principal: User, resource: List };
            "#,
        )
        .unwrap();
        let read = shapes.context(r#"Action::"read""#);
        assert_eq!(
            read.keys().collect::<Vec<_>>(),
            ["client_ip", "method", "params", "path"]
        );
        assert!(!read["client_ip"].required);
        assert!(read["method"].required);
        let params = read["params"].record.as_ref().unwrap();
        assert!(params.contains_key("list_id"));
        assert_eq!(params["list_id"].scalar, Some(Scalar::String));
        assert_eq!(read["client_ip"].scalar, None);
        assert_eq!(shapes.context(r#"Action::"write""#).len(), 1);
        assert!(shapes.context(r#"Action::"none""#).is_empty());
    }

    #[test]
    fn reads_entity_parents_and_attributes() {
        let shapes = ContextShapes::from_cedarschema(
            "namespace App { entity Role; entity User in [Role] { email: String, tenant?: Role }; }",
        )
        .unwrap();
        let user = shapes.entity_type("App::User").unwrap();
        assert_eq!(user.member_of, ["App::Role"]);
        assert_eq!(user.attributes, ["email", "tenant"]);
        assert!(shapes.entity_type("User").is_none());
    }

    #[test]
    fn namespaced_actions_are_qualified() {
        let shapes = ContextShapes::from_cedarschema(
            r#"namespace Tasks { entity User; action "do it" appliesTo { principal: User, resource: User, context: { method: String } }; }"#,
        )
        .unwrap();
        assert_eq!(shapes.context(r#"Tasks::Action::"do it""#).len(), 1);
    }
}
