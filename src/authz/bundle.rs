//! The policy bundle: `policies/schema.cedarschema`, every `policies/*.cedar` file and
//! `policies/entities.json`, loaded together and checked against each other.
//!
//! Policies are validated strictly against the schema and the directory entities are checked
//! against it too; any problem refuses the whole bundle, with the file and line Cedar points at.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{
    Entities, Entity, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::Value;

use super::conforming::ConformingShapes;
use super::request::referenced_entities;
use super::schema_info::ContextShapes;
use super::scope_forbids::scope_forbids;
use super::slice::PolicySlices;
use crate::diagnostics::{ConfigProblem, SourceFile};
use crate::directory::{Directory, EntityRef, SyncedEntity};

pub const SCHEMA_FILE: &str = "schema.cedarschema";
pub const ENTITIES_FILE: &str = "entities.json";

/// Everything Cedar needs, validated.
pub struct PolicyBundle {
    pub schema: Schema,
    pub policies: PolicySet,
    /// `policies` sliced by action: what a request for that action evaluates.
    pub slices: PolicySlices,
    /// Directory entities (roles, groups, users, resources), closure computed once.
    pub entities: Entities,
    /// The entities the policies name and read data of (`User::"x".attr`, `has`, tags):
    /// every request's slice of the directory holds them.
    pub read_literals: Vec<EntityUid>,
    /// For each directory entity, the entities its attributes name (only those naming any).
    pub references: HashMap<EntityUid, Vec<EntityUid>>,
    /// Synced users, outside the store (see [`SyncedUsers`]).
    pub synced_users: SyncedUsers,
    pub contexts: ContextShapes,
    /// Policy id → the file it came from.
    pub policy_files: HashMap<String, PathBuf>,
    /// Forbid policy id → the OAuth scope it requires (see `scope_forbids`).
    pub scope_forbids: HashMap<String, String>,
    /// The schema's entity types by their printed name, parsed once (Cedar's parser runs for
    /// every `EntityTypeName::from_str`).
    pub entity_type_names: HashMap<String, EntityTypeName>,
    /// Shapes of entities built per request that passed the schema check (see
    /// [`ConformingShapes`]).
    pub conforming: ConformingShapes,
}

impl PolicyBundle {
    pub fn load(dir: &Path) -> Result<Self, Vec<ConfigProblem>> {
        let schema_file = SourceFile::read(&dir.join(SCHEMA_FILE)).map_err(|p| vec![p])?;
        let schema = match Schema::from_cedarschema_str(&schema_file.text) {
            Ok((schema, _warnings)) => schema,
            Err(e) => return Err(vec![diagnostic_problem(&schema_file, &e)]),
        };
        let contexts = ContextShapes::from_cedarschema(&schema_file.text)
            .map_err(|e| vec![schema_file.problem(None, e)])?;

        let mut problems = Vec::new();
        let (policies, policy_files, sources) = load_policies(dir, &mut problems);

        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for error in validation.validation_errors() {
            let id = error.policy_id().to_string();
            match sources.get(&id) {
                Some(file) => problems.push(diagnostic_problem(file, error)),
                None => problems.push(ConfigProblem::file(dir, error.to_string())),
            }
        }

        let entities_path = dir.join(ENTITIES_FILE);
        let entities = if entities_path.exists() {
            match SourceFile::read(&entities_path) {
                Ok(file) => match Entities::from_json_str(&file.text, Some(&schema)) {
                    Ok(entities) => Some(entities),
                    Err(e) => {
                        problems.push(diagnostic_problem(&file, &e));
                        None
                    }
                },
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            }
        } else {
            Some(Entities::empty())
        };

        match entities {
            Some(entities) if problems.is_empty() => Ok(PolicyBundle {
                slices: PolicySlices::build(&policies, &schema),
                read_literals: read_literals(&policies),
                scope_forbids: scope_forbids(&policies),
                entity_type_names: schema
                    .entity_types()
                    .map(|name| (name.to_string(), name.clone()))
                    .collect(),
                conforming: ConformingShapes::default(),
                references: references(entities.iter()),
                synced_users: SyncedUsers::default(),
                schema,
                policies,
                entities,
                contexts,
                policy_files,
            }),
            _ => Err(problems),
        }
    }
}

impl PolicyBundle {
    /// The bundle with the synced directory's entities added to `entities.json`'s: a file
    /// entry wins over a synced entity of the same uid, and the first source over later ones.
    /// Synced entities of `user_types` are kept as the directory holds them
    /// ([`SyncedUsers`]); the others (roles, groups, organizations) join the Cedar store.
    /// Returns how many synced entities were overridden. Every synced entity is checked
    /// against the schema; the first that fails refuses the whole directory.
    pub fn with_directory(
        self,
        directory: Arc<Directory>,
        user_types: &[String],
    ) -> Result<(Self, usize), String> {
        let file: HashSet<EntityUid> = self.entities.iter().map(Entity::uid).collect();
        let mut synced_uids: HashSet<&EntityRef> = HashSet::new();
        let mut added = Vec::new();
        let mut users = HashMap::new();
        let mut references = self.references;
        let mut overridden = 0;
        for (s, source) in directory.sources.iter().enumerate() {
            for (e, synced) in source.entities.iter().enumerate() {
                if !synced_uids.insert(&synced.uid) {
                    overridden += 1;
                    continue;
                }
                let entity = synced_entity(synced, &self.schema).map_err(|e| {
                    format!(
                        "directory source {:?}: entity {} does not fit the schema: {e}",
                        source.source, synced.uid
                    )
                })?;
                let uid = entity.uid();
                if file.contains(&uid) {
                    overridden += 1;
                    continue;
                }
                let named = referenced_entities(&entity);
                if !named.is_empty() {
                    references.insert(uid, named);
                }
                if user_types.contains(&synced.uid.entity_type) {
                    users.insert(synced.uid.clone(), (s, e));
                } else {
                    added.push(entity);
                }
            }
        }
        let entities = self
            .entities
            .add_entities(added, Some(&self.schema))
            .map_err(|e| {
                format!(
                    "the synced directory does not fit the schema: {}",
                    with_causes(&e)
                )
            })?;
        Ok((
            PolicyBundle {
                entities,
                references,
                synced_users: SyncedUsers {
                    index: users,
                    directory: Some(directory.clone()),
                },
                ..self
            },
            overridden,
        ))
    }

    /// The bundle with `extra` entities upserted into the store (policy test cases).
    pub fn with_entities(mut self, extra: Entities) -> Result<Self, String> {
        self.references.extend(references(extra.iter()));
        self.entities = self
            .entities
            .upsert_entities(extra, Some(&self.schema))
            .map_err(|e| with_causes(&e))?;
        Ok(self)
    }

    /// The directory's entry for `uid` in entity JSON: the store's, or a synced user's.
    pub fn entry_json(&self, uid: &EntityUid) -> Option<Result<Value, String>> {
        if let Some(entity) = self.entities.get(uid) {
            return Some(entity.to_json_value().map_err(|e| e.to_string()));
        }
        self.synced_users
            .get(uid)
            .map(|synced| serde_json::to_value(synced).map_err(|e| e.to_string()))
    }

    /// Whether the directory has an entry for `uid`.
    pub fn knows(&self, uid: &EntityUid) -> bool {
        self.entities.get(uid).is_some() || self.synced_users.get(uid).is_some()
    }
}

/// Synced users, kept as the directory holds them (a few hundred bytes each) and made Cedar
/// entities only when a request needs one: as its principal, or an entity its slice of the
/// directory reaches. As Cedar entities in the store, 100,000 users took 370 MiB.
#[derive(Default)]
pub struct SyncedUsers {
    directory: Option<Arc<Directory>>,
    /// Uid → (source, entity) in `directory`.
    index: HashMap<EntityRef, (usize, usize)>,
}

impl SyncedUsers {
    pub fn get(&self, uid: &EntityUid) -> Option<&SyncedEntity> {
        if self.index.is_empty() {
            return None;
        }
        let key = EntityRef {
            entity_type: uid.type_name().to_string(),
            id: uid.id().unescaped().to_string(),
        };
        let (source, entity) = self.index.get(&key)?;
        self.directory
            .as_ref()?
            .sources
            .get(*source)?
            .entities
            .get(*entity)
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The directory the users come from.
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// The Cedar entity of a synced user (its parents as the directory lists them, not
    /// closed), typed by the schema.
    pub fn entity(&self, uid: &EntityUid, schema: &Schema) -> Option<Result<Entity, String>> {
        self.get(uid).map(|synced| synced_entity(synced, schema))
    }
}

fn synced_entity(synced: &SyncedEntity, schema: &Schema) -> Result<Entity, String> {
    let value = serde_json::to_value(synced).map_err(|e| e.to_string())?;
    Entity::from_json_value(value, Some(schema)).map_err(|e| with_causes(&e))
}

fn references<'a>(
    entities: impl Iterator<Item = &'a Entity>,
) -> HashMap<EntityUid, Vec<EntityUid>> {
    entities
        .filter_map(|entity| {
            let named = referenced_entities(entity);
            (!named.is_empty()).then(|| (entity.uid(), named))
        })
        .collect()
}

/// The entity literals in the operand of an attribute or tag read (`.`, `has`, `getTag`,
/// `hasTag`) of any policy: the literals whose data evaluation may read. A literal only
/// compared or tested with `in` (`principal in Role::"admin"`) needs no data. Read from the
/// policies' JSON form; an operand that merely contains a literal (`(if c then User::"a" else
/// principal).x`) counts too.
fn read_literals(policies: &PolicySet) -> Vec<EntityUid> {
    fn literals_in(value: &Value, out: &mut Vec<EntityUid>) {
        match value {
            Value::Object(map) => {
                if let Some(uid) = map
                    .get("__entity")
                    .and_then(|e| EntityUid::from_json(e.clone()).ok())
                {
                    out.push(uid);
                }
                map.values().for_each(|v| literals_in(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| literals_in(v, out)),
            _ => {}
        }
    }
    fn reads(value: &Value, out: &mut Vec<EntityUid>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if matches!(key.as_str(), "." | "has" | "getTag" | "hasTag") {
                        if let Some(left) = inner.get("left") {
                            literals_in(left, out);
                        }
                    }
                    reads(inner, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| reads(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for policy in policies.policies() {
        match policy.to_json() {
            Ok(json) => reads(&json, &mut found),
            // Not expected for a parsed policy; every literal then, to stay exact.
            Err(_) => found.extend(policy.entity_literals()),
        }
    }
    found.sort();
    found.dedup();
    found
}

/// An error's message followed by its causes' (Cedar puts the detail in the causes).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

type LoadedPolicies = (
    PolicySet,
    HashMap<String, PathBuf>,
    HashMap<String, SourceFile>,
);

/// Reads every `*.cedar` file (sorted by name). A policy's id is its `@id("...")` annotation,
/// or `<file>#<n>` for the n-th policy of the file (0-based).
fn load_policies(dir: &Path, problems: &mut Vec<ConfigProblem>) -> LoadedPolicies {
    let mut set = PolicySet::new();
    let mut files_by_id = HashMap::new();
    let mut sources = HashMap::new();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
            .collect(),
        Err(e) => {
            problems.push(ConfigProblem::file(
                dir,
                format!("cannot read directory: {e}"),
            ));
            return (set, files_by_id, sources);
        }
    };
    paths.sort();
    if paths.is_empty() {
        problems.push(ConfigProblem::file(
            dir,
            "no *.cedar policy files: without policies every request is denied",
        ));
    }
    for path in paths {
        let file = match SourceFile::read(&path) {
            Ok(file) => file,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let parsed = match parse_policy_file(&file) {
            Ok(parsed) => parsed,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (index, policy) in parsed.into_iter().enumerate() {
            let id = policy
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{file_name}#{index}"));
            let policy = policy.new_id(PolicyId::new(&id));
            if let Err(e) = set.add(policy) {
                problems.push(file.problem(None, format!("policy id {id:?}: {e}")));
                continue;
            }
            files_by_id.insert(id.clone(), path.clone());
            sources.insert(id, file.clone());
        }
    }
    (set, files_by_id, sources)
}

/// Parses one file's policies, in source order.
fn parse_policy_file(file: &SourceFile) -> Result<Vec<Policy>, ConfigProblem> {
    {
        let parsed: PolicySet = file
            .text
            .parse()
            .map_err(|e: cedar_policy::ParseErrors| diagnostic_problem(file, &e))?;
        if parsed.templates().next().is_some() {
            return Err(file.problem(
                None,
                "policy templates are not supported; write static policies",
            ));
        }
        // Cedar names the policies of one parse policy0, policy1, ... in source order.
        let mut numbered: Vec<(usize, Policy)> = parsed
            .policies()
            .map(|p| {
                let n = p
                    .id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse()
                    .unwrap_or(usize::MAX);
                (n, p.clone())
            })
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        Ok(numbered.into_iter().map(|(_, p)| p).collect())
    }
}

/// A Cedar error as a problem, with the line of its first labelled span.
fn diagnostic_problem<E: Diagnostic + std::fmt::Display + ?Sized>(
    file: &SourceFile,
    error: &E,
) -> ConfigProblem {
    let span = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset()..label.offset() + label.len());
    let mut message = error.to_string();
    if let Some(related) = error.related() {
        for inner in related {
            message.push_str(&format!("; {inner}"));
        }
    }
    if let Some(help) = error.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    file.problem(span, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literals_whose_data_is_read_are_kept() {
        let policies: PolicySet = r#"
            permit (principal in Role::"admin", action == Action::"Read", resource in Folder::"f");
            permit (principal, action, resource) when { User::"u4".clearance > 1 };
            permit (principal, action, resource) when { User::"u5" has teams && principal in Group::"g" };
            permit (principal, action, resource) when { (if principal == User::"u6" then User::"u7" else principal).level > 1 };
            permit (principal, action, resource) when { principal == User::"u8" || resource.owner == User::"u9" };
        "#
        .parse()
        .unwrap();
        let found: Vec<String> = read_literals(&policies)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                r#"User::"u4""#,
                r#"User::"u5""#,
                r#"User::"u6""#,
                r#"User::"u7""#
            ]
        );
    }
}
