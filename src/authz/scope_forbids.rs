//! Forbid policies that stand for an OAuth scope requirement, so that a deny they cause can be
//! answered as RFC 6750 §3.1 says: `error="insufficient_scope"` with the `scope` the token
//! lacks, which tells a client to ask for that scope rather than that it may never do this.
//!
//! Recognized by shape, so existing policies need no annotation: a `forbid` whose only
//! condition is `unless { context.scopes.contains("S") }` or
//! `when { !context.scopes.contains("S") }`, `S` a string literal. Any other forbid, and a deny
//! no forbid caused (no permit applied), is a plain 403.

use std::collections::HashMap;

use cedar_policy::{Effect, PolicySet};
use serde_json::Value;

/// Policy id → the scope that forbid requires.
pub fn scope_forbids(policies: &PolicySet) -> HashMap<String, String> {
    policies
        .policies()
        .filter(|policy| policy.effect() == Effect::Forbid)
        .filter_map(|policy| {
            let json = policy.to_json().ok()?;
            required_scope(&json).map(|scope| (policy.id().to_string(), scope))
        })
        .collect()
}

/// The scope a forbid's JSON form requires, if it has the shape above.
fn required_scope(policy: &Value) -> Option<String> {
    let [condition] = policy.get("conditions")?.as_array()?.as_slice() else {
        return None;
    };
    let body = condition.get("body")?;
    let contains = match condition.get("kind")?.as_str()? {
        "unless" => body.get("contains")?,
        "when" => body.get("!")?.get("arg")?.get("contains")?,
        _ => return None,
    };
    let scopes = contains.get("left")?.get(".")?;
    let reads_context_scopes = scopes.get("left")?.get("Var")?.as_str()? == "context"
        && scopes.get("attr")?.as_str()? == "scopes";
    let scope = contains.get("right")?.get("Value")?.as_str()?;
    reads_context_scopes.then(|| scope.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbids(text: &str) -> HashMap<String, String> {
        scope_forbids(&text.parse().unwrap())
    }

    #[test]
    fn scope_requirements_are_recognized_by_shape() {
        let found = forbids(
            r#"
            @id("unless") forbid (principal, action, resource)
              unless { context.scopes.contains("tasks:write") };
            @id("when-not") forbid (principal, action, resource)
              when { !context.scopes.contains("admin") };
            @id("two-conditions") forbid (principal, action, resource)
              unless { context.scopes.contains("a") } when { principal has email };
            @id("other-attribute") forbid (principal, action, resource)
              unless { context.roles.contains("a") };
            @id("not-a-literal") forbid (principal, action, resource)
              unless { context.scopes.contains(principal.scope) };
            @id("a-permit") permit (principal, action, resource)
              unless { context.scopes.contains("a") };
            @id("when-contains") forbid (principal, action, resource)
              when { context.scopes.contains("a") };
            "#,
        );
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        assert_eq!(
            found,
            // Text parsed alone numbers its policies (the bundle names them by `@id`).
            [
                ("policy0".to_string(), "tasks:write".to_string()),
                ("policy1".to_string(), "admin".to_string())
            ]
        );
    }
}
