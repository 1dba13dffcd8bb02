//! Who the caller is, as the token says: what authentication produces and authorization reads.
//! A leaf, so that neither of the two imports the other for it.

use serde_json::{Map, Value};

/// Who the caller is, as far as the token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub issuer: String,
    pub principal_type: String,
    pub principal_id: String,
    pub roles: Vec<String>,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    /// (entity type, id) of every parent: roles, groups, permissions, tenant.
    pub parents: Vec<(String, String)>,
    /// Principal attributes in Cedar's entity JSON form (entity references as `__entity`).
    pub attributes: Map<String, Value>,
}

impl Identity {
    /// Everything a principal entity is built from (type, id, parents, attributes), as one
    /// string: serde_json writes it the same way every time, so equal keys mean equal
    /// principals. The principal memo and the decision cache key by it.
    pub fn principal_key(&self) -> String {
        // Strings, string pairs and a JSON object with string keys: serialization cannot fail.
        serde_json::to_string(&(
            &self.principal_type,
            &self.principal_id,
            &self.parents,
            &self.attributes,
        ))
        .unwrap_or_default()
    }
}
