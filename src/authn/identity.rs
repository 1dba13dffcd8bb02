//! Claim mapping: which claims of a verified token name the principal, its roles, groups,
//! permissions and tenant, and which become principal attributes. Pure; the Cedar entity is
//! built from the resulting `Identity` by `authz`.

use serde_json::{Map, Value};

use super::AuthnError;

/// A claim whose values become Cedar parents of the principal.
#[derive(Debug, Clone)]
pub struct ParentClaim {
    pub claim: String,
    pub entity_type: String,
}

/// The tenant claim: a parent and an attribute (an entity reference) of the principal.
#[derive(Debug, Clone)]
pub struct TenantClaim {
    pub claim: String,
    pub entity_type: String,
    pub attribute: String,
}

#[derive(Debug, Clone)]
pub struct ClaimMapping {
    pub principal_type: String,
    pub principal_id_claim: String,
    pub roles: Option<ParentClaim>,
    pub groups: Option<ParentClaim>,
    pub permissions: Option<ParentClaim>,
    pub tenant: Option<TenantClaim>,
    /// The claim holding OAuth scopes: a space-separated string (`scope`, RFC 8693 and Auth0)
    /// or an array of strings (Okta's `scp`).
    pub scopes: Option<String>,
    /// (principal attribute, claim) pairs.
    pub attributes: Vec<(String, String)>,
}

pub use crate::identity::Identity;

/// The identity as the gateway passes it on: the trusted header values and the principal as
/// the decision log names it. Made once per verified token, not once per request.
#[derive(Debug, Clone)]
pub struct ForwardedIdentity {
    /// `Type::"id"`.
    pub principal_label: std::sync::Arc<str>,
    /// The principal id, the roles joined by `,`, the tenant; `None` when a value cannot be a
    /// header field value (control characters): forwarding it then fails, never silently.
    pub principal_id: Option<http::HeaderValue>,
    pub roles: Option<http::HeaderValue>,
    pub tenant: Option<http::HeaderValue>,
}

impl ForwardedIdentity {
    pub fn of(identity: &Identity) -> Self {
        let value = |text: &str| http::HeaderValue::from_str(text).ok();
        ForwardedIdentity {
            principal_label: format!("{}::{:?}", identity.principal_type, identity.principal_id)
                .into(),
            principal_id: value(&identity.principal_id),
            roles: value(&identity.roles.join(",")),
            tenant: identity.tenant.as_deref().and_then(value),
        }
    }
}

impl ClaimMapping {
    /// Maps verified claims to an identity. Claims that a mapping names but the token lacks are
    /// simply absent; only the principal id is required.
    pub fn identity(
        &self,
        issuer: &str,
        claims: &Map<String, Value>,
    ) -> Result<Identity, AuthnError> {
        let principal_id = match claims.get(&self.principal_id_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(_) => return Err(AuthnError::InvalidClaim(self.principal_id_claim.clone())),
            None => return Err(AuthnError::MissingClaim(self.principal_id_claim.clone())),
        };
        let mut parents = Vec::new();
        let mut roles = Vec::new();
        for (mapping, is_roles) in [
            (&self.roles, true),
            (&self.groups, false),
            (&self.permissions, false),
        ] {
            let Some(mapping) = mapping else { continue };
            let values = string_list(claims, &mapping.claim)?;
            if is_roles {
                roles.clone_from(&values);
            }
            parents.extend(values.into_iter().map(|v| (mapping.entity_type.clone(), v)));
        }
        let mut attributes = Map::new();
        for (attribute, claim) in &self.attributes {
            if let Some(value) = claims.get(claim) {
                attributes.insert(attribute.clone(), value.clone());
            }
        }
        let mut tenant = None;
        if let Some(mapping) = &self.tenant {
            match claims.get(&mapping.claim) {
                None => {}
                Some(Value::String(id)) if !id.is_empty() => {
                    parents.push((mapping.entity_type.clone(), id.clone()));
                    attributes.insert(
                        mapping.attribute.clone(),
                        serde_json::json!({"__entity": {"type": mapping.entity_type, "id": id}}),
                    );
                    tenant = Some(id.clone());
                }
                Some(_) => return Err(AuthnError::InvalidClaim(mapping.claim.clone())),
            }
        }
        let scopes = match &self.scopes {
            None => Vec::new(),
            Some(claim) => match claims.get(claim) {
                Some(Value::String(joined)) => {
                    joined.split_ascii_whitespace().map(String::from).collect()
                }
                _ => string_list(claims, claim)?,
            },
        };
        Ok(Identity {
            issuer: issuer.to_string(),
            principal_type: self.principal_type.clone(),
            principal_id,
            roles,
            tenant,
            scopes,
            parents,
            attributes,
        })
    }
}

/// A claim holding one string or an array of strings; absent means empty.
fn string_list(claims: &Map<String, Value>, claim: &str) -> Result<Vec<String>, AuthnError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(AuthnError::InvalidClaim(claim.to_string())),
            })
            .collect(),
        Some(_) => Err(AuthnError::InvalidClaim(claim.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> ClaimMapping {
        ClaimMapping {
            principal_type: "User".into(),
            principal_id_claim: "sub".into(),
            roles: Some(ParentClaim {
                claim: "https://example.com/roles".into(),
                entity_type: "Role".into(),
            }),
            groups: Some(ParentClaim {
                claim: "groups".into(),
                entity_type: "Group".into(),
            }),
            permissions: None,
            tenant: Some(TenantClaim {
                claim: "org_id".into(),
                entity_type: "Tenant".into(),
                attribute: "tenant".into(),
            }),
            scopes: Some("scope".into()),
            attributes: vec![
                ("email".into(), "email".into()),
                ("level".into(), "lvl".into()),
            ],
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn maps_parents_attributes_and_tenant() {
        let id = mapping()
            .identity(
                "iss",
                &claims(json!({
                    "sub": "alice",
                    "https://example.com/roles": ["manager", "viewer"],
                    "groups": "eng",
                    "org_id": "org_acme",
                    "email": "alice@example.com",
                    "lvl": 3
                })),
            )
            .unwrap();
        assert_eq!(id.principal_id, "alice");
        assert_eq!(id.roles, ["manager", "viewer"]);
        assert_eq!(id.tenant.as_deref(), Some("org_acme"));
        assert_eq!(
            id.parents,
            [
                ("Role".to_string(), "manager".to_string()),
                ("Role".into(), "viewer".into()),
                ("Group".into(), "eng".into()),
                ("Tenant".into(), "org_acme".into())
            ]
        );
        assert_eq!(id.attributes["email"], json!("alice@example.com"));
        assert_eq!(id.attributes["level"], json!(3));
        assert_eq!(
            id.attributes["tenant"],
            json!({"__entity": {"type": "Tenant", "id": "org_acme"}})
        );
    }

    #[test]
    fn scopes_come_from_a_string_or_an_array() {
        let joined = mapping()
            .identity(
                "iss",
                &claims(json!({"sub": "a", "scope": " read:tasks  write:tasks "})),
            )
            .unwrap();
        assert_eq!(joined.scopes, ["read:tasks", "write:tasks"]);
        let okta = ClaimMapping {
            scopes: Some("scp".into()),
            ..mapping()
        };
        let listed = okta
            .identity(
                "iss",
                &claims(json!({"sub": "a", "scp": ["openid", "tasks.read"]})),
            )
            .unwrap();
        assert_eq!(listed.scopes, ["openid", "tasks.read"]);
        assert_eq!(
            okta.identity("iss", &claims(json!({"sub": "a", "scp": {"x": 1}}))),
            Err(AuthnError::InvalidClaim("scp".into()))
        );
    }

    #[test]
    fn missing_optional_claims_are_absent() {
        let id = mapping()
            .identity("iss", &claims(json!({"sub": "bob"})))
            .unwrap();
        assert!(id.parents.is_empty());
        assert!(id.attributes.is_empty());
        assert!(id.scopes.is_empty());
        assert_eq!(id.tenant, None);
    }

    #[test]
    fn principal_id_is_required_and_typed() {
        assert_eq!(
            mapping().identity("iss", &claims(json!({}))),
            Err(AuthnError::MissingClaim("sub".into()))
        );
        assert_eq!(
            mapping().identity("iss", &claims(json!({"sub": 7}))),
            Err(AuthnError::InvalidClaim("sub".into()))
        );
        assert_eq!(
            mapping().identity("iss", &claims(json!({"sub": "a", "groups": [1]}))),
            Err(AuthnError::InvalidClaim("groups".into()))
        );
    }
}
