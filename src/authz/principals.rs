//! Principals remembered by identity, per snapshot.
//!
//! A principal is a function of the snapshot and of the identity's principal type, id, parents
//! and attributes, not of the token that carried them. A new token for a caller already seen
//! (a refreshed token, a second session, a machine client fetching a token per job) reuses
//! the principal built for the first one instead of building the entity and its store again
//! (tens of microseconds). Bounded (`quick_cache`): past the limit, callers not seen lately
//! make room.

use std::sync::Arc;

use super::{principal_entity, AuthzError, PolicyBundle, Principal};
use crate::identity::Identity;

/// How many distinct identities a snapshot remembers.
const REMEMBERED_IDENTITIES: usize = 4096;

/// A principal with the version of the snapshot it was built for.
pub type BuiltPrincipal = Arc<(u64, Principal)>;

pub struct PrincipalMemo {
    by_identity: quick_cache::sync::Cache<String, BuiltPrincipal>,
}

impl Default for PrincipalMemo {
    fn default() -> Self {
        PrincipalMemo {
            by_identity: quick_cache::sync::Cache::new(REMEMBERED_IDENTITIES),
        }
    }
}

impl std::fmt::Debug for PrincipalMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalMemo")
            .field("remembered", &self.by_identity.len())
            .finish()
    }
}

impl PrincipalMemo {
    /// The principal for `identity`, whose `principal_key` is `key`, in the snapshot of
    /// `version` and `bundle`: remembered, or built now and remembered.
    pub fn principal(
        &self,
        version: u64,
        bundle: &PolicyBundle,
        identity: &Identity,
        key: &str,
    ) -> Result<BuiltPrincipal, AuthzError> {
        if let Some(built) = self.by_identity.get(key) {
            return Ok(built);
        }
        let built = Arc::new((
            version,
            principal_entity(bundle, identity, key.to_string())?,
        ));
        self.by_identity.insert(key.to_string(), built.clone());
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn identity(issuer: &str, role: &str, email: &str) -> Identity {
        let mut attributes = Map::new();
        attributes.insert("email".into(), json!(email));
        Identity {
            issuer: issuer.into(),
            principal_type: "User".into(),
            principal_id: "alice".into(),
            roles: vec![role.into()],
            tenant: None,
            scopes: vec!["tasks:read".into()],
            parents: vec![("Role".into(), role.into())],
            attributes,
        }
    }

    #[test]
    fn equal_identities_share_a_principal_and_any_difference_builds_another() {
        let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let bundle = PolicyBundle::load(&policies).unwrap();
        let memo = PrincipalMemo::default();
        let principal = |identity: &Identity| {
            memo.principal(7, &bundle, identity, &identity.principal_key())
                .unwrap()
        };
        let first = principal(&identity("https://a/", "viewer", "a@example.com"));
        assert_eq!(first.0, 7);
        // Another token of the same caller (issuer and scopes do not enter the entity).
        let again = principal(&identity("https://b/", "viewer", "a@example.com"));
        assert!(Arc::ptr_eq(&first, &again));
        let other_role = principal(&identity("https://a/", "manager", "a@example.com"));
        let other_email = principal(&identity("https://a/", "viewer", "b@example.com"));
        // Cedar's entity equality compares uids only; the JSON form compares everything.
        let json = |built: &BuiltPrincipal| built.1.entity.to_json_value().unwrap();
        for other in [&other_role, &other_email] {
            assert!(!Arc::ptr_eq(&first, other));
            assert_ne!(json(&first), json(other));
        }
        let identity = identity("https://a/", "manager", "a@example.com");
        let built = principal_entity(&bundle, &identity, identity.principal_key());
        assert_eq!(
            json(&other_role),
            built.unwrap().entity.to_json_value().unwrap()
        );
    }
}
