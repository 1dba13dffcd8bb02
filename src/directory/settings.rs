//! What `[directory]` of portcullis.toml compiles to (`config::directory` checks it).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::builder::EntityMapping;
pub use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct DirectorySettings {
    /// Time between the end of one full sync and the start of the next.
    pub interval: Duration,
    /// The last good directory, read at start and written after every sync that changed it.
    pub cache_file: Option<PathBuf>,
    /// Deadline of one API request.
    pub request_timeout: Duration,
    pub sources: Vec<SourceSettings>,
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// The source's label in logs, metrics and `/readyz`.
    pub name: String,
    /// Line of the source in portcullis.toml, for problems found against the schema.
    pub line: usize,
    /// The tenant's base URL (`https://TENANT.auth0.com`, `https://ORG.okta.com`).
    pub url: Url,
    pub kind: SourceKind,
    /// Users: which entity type, which field is the id, which fields become attributes.
    pub users: EntityMapping,
}

impl SourceSettings {
    /// Every mapping: (its key in the configuration, the mapping).
    pub fn mappings(&self) -> Vec<(&'static str, &EntityMapping)> {
        let mut all = vec![("users", &self.users)];
        match &self.kind {
            SourceKind::Auth0(auth0) => {
                all.extend(auth0.roles.iter().map(|m| ("roles", m)));
                all.extend(auth0.organizations.iter().map(|m| ("organizations", m)));
            }
            SourceKind::Okta { groups, .. } => all.extend(groups.iter().map(|m| ("groups", m))),
        }
        all
    }
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Auth0(Auth0Settings),
    Okta {
        auth: OktaAuth,
        /// Okta groups and their members become entities (the user's parents).
        groups: Option<EntityMapping>,
        /// Okta's `search` expression for `/api/v1/groups` (e.g. `type eq "OKTA_GROUP"`).
        group_search: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Auth0Settings {
    pub client_id: String,
    pub client_secret: Secret,
    /// The Management API's identifier (`https://TENANT.auth0.com/api/v2/`).
    pub audience: String,
    /// Roles and their members (`/api/v2/roles`, `/api/v2/roles/{id}/users`).
    pub roles: Option<EntityMapping>,
    /// Organizations and their members (`/api/v2/organizations`, `/members`).
    pub organizations: Option<EntityMapping>,
    /// Members' organization roles, as parents named by a template.
    pub organization_roles: Option<OrganizationRoles>,
}

/// A member's role in an organization becomes the parent `entity_type::id`, where `id` is the
/// template with `{organization}` (the organization's entity id) and `{role}` (the role's name)
/// filled in.
#[derive(Debug, Clone)]
pub struct OrganizationRoles {
    pub entity_type: String,
    pub id: String,
}

impl OrganizationRoles {
    pub fn id_for(&self, organization: &str, role: &str) -> String {
        self.id
            .replace("{organization}", organization)
            .replace("{role}", role)
    }
}

#[derive(Debug, Clone)]
pub enum OktaAuth {
    /// An API token: `Authorization: SSWS <token>`.
    ApiToken(Secret),
    /// OAuth 2.0 for Okta: client credentials with a `private_key_jwt` client assertion.
    PrivateKey {
        client_id: String,
        /// PEM private key (RSA or EC P-256) whose public half is registered on the app.
        key: Secret,
        /// The `kid` of the registered key, when Okta holds several.
        key_id: Option<String>,
        scopes: Vec<String>,
    },
}
