//! Policy slicing: for each request, only the policies whose scope can match it.
//!
//! Cedar evaluates every policy in the set it is given. A policy whose scope does not match the
//! request is not applicable: its condition is never evaluated, so it can neither determine the
//! decision nor produce an error. Leaving such policies out therefore changes nothing in the
//! response (decision, determining policies, errors) while the work shrinks to the policies
//! that concern the request.
//!
//! First by action, built once per snapshot. The action hierarchy is the schema's (action
//! groups), which is the hierarchy Cedar sees: action entities come from the schema.
//! Template-linked policies are not sliced; a set with any of them is used whole.
//!
//! Then, within an action, by principal and resource scope: `== E`, `in E` and `is T in E`
//! cannot match an entity that neither is `E` nor has `E` among its ancestors in the store the
//! request is evaluated against. A request's *scope key* is the set of such entities its
//! principal and resource are (or are in); the set for each key is built on first use and
//! remembered. Keys only count entities that some policy of the action names, so role- and
//! tenant-based policy sets have few of them.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Entities, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema,
};

use super::decision_cache::ContextReads;

/// How many scope keys an action's slice remembers (`quick_cache`); beyond that (policies about
/// thousands of single resources), the keys not used lately make room.
const REMEMBERED_KEYS: usize = 4096;

/// The policy set, sliced by action, then by principal and resource scope.
#[derive(Debug, Default)]
pub struct PolicySlices {
    by_action: HashMap<EntityUid, ActionSlice>,
}

/// The policies whose action scope can match one action.
#[derive(Debug)]
struct ActionSlice {
    all: Arc<PolicySet>,
    /// The context attributes those policies read (what the decision cache keys on).
    reads: ContextReads,
    /// Each policy with the scope entities it requires, as indexes into the maps below.
    policies: Vec<ScopedPolicy>,
    /// The entities named by principal scopes, and those named by resource scopes, numbered
    /// from one sequence: a number stands for one entity of one of the two maps.
    principal_scopes: HashMap<EntityUid, u32>,
    resource_scopes: HashMap<EntityUid, u32>,
    /// Sets already built, by scope key (sorted indexes).
    by_key: quick_cache::sync::Cache<Vec<u32>, Arc<PolicySet>>,
}

#[derive(Debug)]
struct ScopedPolicy {
    policy: Policy,
    principal: Option<u32>,
    resource: Option<u32>,
}

impl ScopedPolicy {
    fn applies(&self, key: &[u32]) -> bool {
        let satisfied = |scope: Option<u32>| scope.is_none_or(|i| key.binary_search(&i).is_ok());
        satisfied(self.principal) && satisfied(self.resource)
    }
}

/// The entity a principal scope names, if any (`principal` and `principal is T` name none).
fn principal_scope(policy: &Policy) -> Option<EntityUid> {
    match policy.principal_constraint() {
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
        PrincipalConstraint::Eq(entity)
        | PrincipalConstraint::In(entity)
        | PrincipalConstraint::IsIn(_, entity) => Some(entity),
    }
}

/// The entity a resource scope names, if any.
fn resource_scope(policy: &Policy) -> Option<EntityUid> {
    match policy.resource_constraint() {
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
        ResourceConstraint::Eq(entity)
        | ResourceConstraint::In(entity)
        | ResourceConstraint::IsIn(_, entity) => Some(entity),
    }
}

/// The number of `entity` in `numbers`, numbering it `next` if it is new.
fn number(numbers: &mut HashMap<EntityUid, u32>, entity: EntityUid, next: &mut u32) -> u32 {
    *numbers.entry(entity).or_insert_with(|| {
        *next += 1;
        *next - 1
    })
}

impl PolicySlices {
    /// Slices `policies` for every action of `schema`. Empty (no slicing) when the schema's
    /// action hierarchy cannot be read or a policy cannot be copied into a slice.
    pub fn build(policies: &PolicySet, schema: &Schema) -> Self {
        Self::try_build(policies, schema).unwrap_or_default()
    }

    fn try_build(policies: &PolicySet, schema: &Schema) -> Option<Self> {
        let hierarchy = schema.action_entities().ok()?;
        let mut by_action = HashMap::new();
        for action in schema.actions() {
            let mut in_scope: Vec<&EntityUid> = vec![action];
            in_scope.extend(hierarchy.ancestors(action).into_iter().flatten());
            let applicable =
                policies
                    .policies()
                    .filter(|policy| match policy.action_constraint() {
                        ActionConstraint::Any => true,
                        ActionConstraint::Eq(only) => only == *action,
                        ActionConstraint::In(groups) => {
                            groups.iter().any(|g| in_scope.contains(&g))
                        }
                    });
            let mut all = PolicySet::new();
            let mut sliced = Vec::new();
            let (mut principal_scopes, mut resource_scopes) = (HashMap::new(), HashMap::new());
            let mut next = 0;
            for policy in applicable {
                all.add(policy.clone()).ok()?;
                sliced.push(ScopedPolicy {
                    policy: policy.clone(),
                    principal: principal_scope(policy)
                        .map(|e| number(&mut principal_scopes, e, &mut next)),
                    resource: resource_scope(policy)
                        .map(|e| number(&mut resource_scopes, e, &mut next)),
                });
            }
            by_action.insert(
                action.clone(),
                ActionSlice {
                    reads: ContextReads::of(&all),
                    all: Arc::new(all),
                    policies: sliced,
                    principal_scopes,
                    resource_scopes,
                    by_key: quick_cache::sync::Cache::new(REMEMBERED_KEYS),
                },
            );
        }
        Some(PolicySlices { by_action })
    }

    /// The context attributes the policies of `action` read; `None` when the action is not
    /// sliced.
    pub fn context_reads(&self, action: &EntityUid) -> Option<&ContextReads> {
        self.by_action.get(action).map(|slice| &slice.reads)
    }

    /// The policies that can apply to `action`; `None` when the action is not sliced (unknown
    /// to the schema, or slicing is off). The differential test compares it with the whole set.
    #[cfg(test)]
    fn for_action(&self, action: &EntityUid) -> Option<&PolicySet> {
        self.by_action.get(action).map(|slice| slice.all.as_ref())
    }

    /// The policies that can apply to a request of `principal` on `resource` for `action`:
    /// the action's slice without the policies whose principal or resource scope names an
    /// entity that the principal (resource) neither is nor is in. `entities` is the store the
    /// request is evaluated against, which holds their ancestors. Such a policy's scope cannot
    /// match, so leaving it out changes nothing in the response.
    pub fn for_request(
        &self,
        action: &EntityUid,
        principal: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Option<Arc<PolicySet>> {
        let slice = self.by_action.get(action)?;
        if slice.principal_scopes.is_empty() && slice.resource_scopes.is_empty() {
            return Some(slice.all.clone());
        }
        let mut key = Vec::new();
        scope_numbers(&slice.principal_scopes, principal, entities, &mut key);
        scope_numbers(&slice.resource_scopes, resource, entities, &mut key);
        key.sort_unstable();
        key.dedup();
        if let Some(set) = slice.by_key.get(&key) {
            return Some(set);
        }
        let mut set = PolicySet::new();
        for scoped in slice.policies.iter().filter(|p| p.applies(&key)) {
            if set.add(scoped.policy.clone()).is_err() {
                return Some(slice.all.clone());
            }
        }
        let set = Arc::new(set);
        slice.by_key.insert(key, set.clone());
        Some(set)
    }
}

/// Appends to `key` the numbers of `uid` and of its ancestors in `entities` that `scopes`
/// names.
fn scope_numbers(
    scopes: &HashMap<EntityUid, u32>,
    uid: &EntityUid,
    entities: &Entities,
    key: &mut Vec<u32>,
) {
    if scopes.is_empty() {
        return;
    }
    let ancestors = entities.ancestors(uid).into_iter().flatten();
    key.extend(
        std::iter::once(uid)
            .chain(ancestors)
            .filter_map(|e| scopes.get(e).copied()),
    );
}

#[cfg(test)]
mod tests {
    //! Differential test: sliced and whole-set evaluation agree on every request.

    use super::*;
    use cedar_policy::{Authorizer, Context, Entities, Request, Response};
    use std::str::FromStr;

    use crate::authz::test_rng::Rng;

    const ACTIONS: u64 = 100;
    const GROUPS: u64 = 10;
    const USERS: u64 = 20;
    const TEAMS: u64 = 5;
    const DOCS: u64 = 20;
    const FOLDERS: u64 = 5;

    /// 100 actions, each in one of 10 groups, and the groups in one `all` group.
    fn schema() -> Schema {
        let mut text = String::from(
            "entity Team;\nentity User in [Team] = { level: Long };\nentity Folder in [Folder];\n\
             entity Doc in [Folder] = { owner: User, level: Long };\naction all;\n",
        );
        for g in 0..GROUPS {
            text.push_str(&format!("action g{g} in [all];\n"));
        }
        for a in 0..ACTIONS {
            text.push_str(&format!(
                "action a{a} in [g{}] appliesTo {{ principal: User, resource: Doc, \
                 context: {{ n?: Long }} }};\n",
                a % GROUPS
            ));
        }
        Schema::from_cedarschema_str(&text).unwrap().0
    }

    fn policy_text(rng: &mut Rng, id: usize) -> String {
        let forbid = rng.below(10) == 0;
        // Mostly policies about one action or a group, as real policy sets are; a few about
        // every action.
        let action = match rng.below(100) {
            0..=1 => "action".to_string(),
            2..=3 => "action in Action::\"all\"".to_string(),
            4..=23 => format!("action in Action::\"g{}\"", rng.below(GROUPS)),
            24..=43 => format!(
                "action in [Action::\"a{}\", Action::\"g{}\"]",
                rng.below(ACTIONS),
                rng.below(GROUPS)
            ),
            _ => format!("action == Action::\"a{}\"", rng.below(ACTIONS)),
        };
        let principal = match rng.below(6) {
            0 => format!("principal == User::\"u{}\"", rng.below(USERS)),
            1 | 2 => format!("principal in Team::\"t{}\"", rng.below(TEAMS)),
            3 => format!("principal is User in Team::\"t{}\"", rng.below(TEAMS)),
            4 => "principal is User".to_string(),
            _ => "principal".to_string(),
        };
        let resource = match rng.below(6) {
            0 => format!("resource == Doc::\"d{}\"", rng.below(DOCS)),
            1 | 2 => format!("resource in Folder::\"f{}\"", rng.below(FOLDERS)),
            3 => format!("resource is Doc in Folder::\"f{}\"", rng.below(FOLDERS)),
            4 => "resource is Doc".to_string(),
            _ => "resource".to_string(),
        };
        // Some conditions error on purpose (a context attribute that is often missing). A
        // forbid always has a condition, or a few would deny everything.
        let condition = match rng.below(5) {
            0 if !forbid => String::new(),
            0 => "when { principal.level > 3 }".to_string(),
            1 => "when { resource.owner == principal }".to_string(),
            2 => format!("when {{ principal.level > {} }}", rng.below(5)),
            3 => format!("when {{ context.n > {} }}", rng.below(5)),
            _ => "unless { resource.level < principal.level }".to_string(),
        };
        let effect = if forbid { "forbid" } else { "permit" };
        format!("@id(\"p{id}\")\n{effect} ({principal}, {action}, {resource}) {condition};\n")
    }

    fn entities(schema: &Schema, rng: &mut Rng) -> Entities {
        let mut list = Vec::new();
        for t in 0..TEAMS {
            list.push(serde_json::json!({
                "uid": {"type": "Team", "id": format!("t{t}")}, "attrs": {}, "parents": []
            }));
        }
        for u in 0..USERS {
            // Members of zero, one or two teams.
            let teams: Vec<_> = (0..rng.below(3))
                .map(
                    |_| serde_json::json!({"type": "Team", "id": format!("t{}", rng.below(TEAMS))}),
                )
                .collect();
            list.push(serde_json::json!({
                "uid": {"type": "User", "id": format!("u{u}")},
                "attrs": {"level": rng.below(5)}, "parents": teams
            }));
        }
        // Folders 1 and 2 are inside folder 0, so `in` goes through two levels.
        for f in 0..FOLDERS {
            let parents: Vec<_> = (1..=2)
                .contains(&f)
                .then(|| serde_json::json!({"type": "Folder", "id": "f0"}))
                .into_iter()
                .collect();
            list.push(serde_json::json!({
                "uid": {"type": "Folder", "id": format!("f{f}")}, "attrs": {}, "parents": parents
            }));
        }
        for d in 0..DOCS {
            // In zero, one or two folders.
            let folders: Vec<_> = (0..rng.below(3))
                .map(|_| serde_json::json!({"type": "Folder", "id": format!("f{}", rng.below(FOLDERS))}))
                .collect();
            list.push(serde_json::json!({
                "uid": {"type": "Doc", "id": format!("d{d}")},
                "attrs": {
                    "owner": {"__entity": {"type": "User", "id": format!("u{}", rng.below(USERS))}},
                    "level": rng.below(5)
                },
                "parents": folders
            }));
        }
        Entities::from_json_value(serde_json::Value::Array(list), Some(schema)).unwrap()
    }

    fn summary(response: &Response) -> (bool, Vec<String>, Vec<String>) {
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        reasons.sort();
        let mut errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        errors.sort();
        (
            response.decision() == cedar_policy::Decision::Allow,
            reasons,
            errors,
        )
    }

    #[test]
    fn sliced_and_whole_set_evaluation_agree_on_every_request() {
        let schema = schema();
        let mut rng = Rng(0x5EED_CAFE_F00D_1234);
        let text: String = (0..1000).map(|id| policy_text(&mut rng, id)).collect();
        let policies = PolicySet::from_str(&text).unwrap();
        let slices = PolicySlices::build(&policies, &schema);
        // Every action and action group of the schema (100 + 10 + `all`) has its slice.
        assert_eq!(slices.by_action.len(), (ACTIONS + GROUPS + 1) as usize);
        let largest = slices
            .by_action
            .values()
            .map(|s| s.all.policies().count())
            .max();
        assert!(
            largest.unwrap() < 300,
            "slicing removed little: {largest:?}"
        );
        let entities = entities(&schema, &mut rng);
        let authorizer = Authorizer::new();
        let (mut allows, mut with_errors) = (0, 0);
        for _ in 0..1000 {
            let action =
                EntityUid::from_str(&format!("Action::\"a{}\"", rng.below(ACTIONS))).unwrap();
            let principal =
                EntityUid::from_str(&format!("User::\"u{}\"", rng.below(USERS))).unwrap();
            let resource = EntityUid::from_str(&format!("Doc::\"d{}\"", rng.below(DOCS))).unwrap();
            let context = if rng.below(2) == 0 {
                Context::empty()
            } else {
                Context::from_json_value(serde_json::json!({"n": rng.below(6)}), None).unwrap()
            };
            let request = Request::new(principal, action.clone(), resource, context, None).unwrap();
            let whole = summary(&authorizer.is_authorized(&request, &policies, &entities));
            let slice = slices.for_action(&action).unwrap();
            let sliced = summary(&authorizer.is_authorized(&request, slice, &entities));
            assert_eq!(sliced, whole, "{request}");
            let narrowed = slices
                .for_request(
                    &action,
                    request.principal().unwrap(),
                    request.resource().unwrap(),
                    &entities,
                )
                .unwrap();
            assert!(narrowed.policies().count() <= slice.policies().count());
            let by_principal = summary(&authorizer.is_authorized(&request, &narrowed, &entities));
            assert_eq!(by_principal, whole, "{request}");
            allows += usize::from(whole.0);
            with_errors += usize::from(!whole.2.is_empty());
        }
        // The generated set exercises both outcomes and evaluation errors.
        assert!(allows > 10 && allows < 990, "allows: {allows}");
        assert!(with_errors > 50, "requests with errors: {with_errors}");
    }

    #[test]
    fn unknown_actions_are_not_sliced() {
        let schema = schema();
        let policies = PolicySet::from_str("permit (principal, action, resource);").unwrap();
        let slices = PolicySlices::build(&policies, &schema);
        let unknown = EntityUid::from_str("Action::\"elsewhere\"").unwrap();
        assert!(slices.for_action(&unknown).is_none());
    }
}
