//! `[directory]` of portcullis.toml → `DirectorySettings`: the sources, their credentials
//! (named, never written in the file) and their mappings. What needs the schema (entity types,
//! attributes, parents) is checked with the policies, in `directory_mapping_problems`.

use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use toml::Spanned;

use super::raw::{RawDirectory, RawDirectorySource, RawEntityMapping, RawSourceKind};
use super::{ConfigProblem, SourceFile};
use crate::authz::PolicyBundle;
use crate::directory::{
    Auth0Settings, DirectorySettings, EntityMapping, FieldPath, OktaAuth, OrganizationRoles,
    Secret, SourceKind, SourceSettings,
};

const DEFAULT_OKTA_SCOPES: [&str; 2] = ["okta.users.read", "okta.groups.read"];

pub fn compile_directory(
    raw: &RawDirectory,
    file: &SourceFile,
    config_dir: &Path,
) -> Result<DirectorySettings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    if *raw.interval_seconds.get_ref() == 0 {
        problems.push(file.problem(
            Some(raw.interval_seconds.span()),
            "directory.interval_seconds must be at least 1",
        ));
    }
    if raw.sources.get_ref().is_empty() {
        problems.push(file.problem(
            Some(raw.sources.span()),
            "[directory] has no [[directory.sources]]: add an auth0 or okta source, or remove [directory]",
        ));
    }
    let mut sources = Vec::new();
    for source in raw.sources.get_ref() {
        let line = file.line_of(source.span().start);
        let name = source.get_ref().name.get_ref();
        if sources.iter().any(|s: &SourceSettings| &s.name == name) {
            problems.push(file.problem(
                Some(source.get_ref().name.span()),
                format!("a second directory source is named {name:?}; names must differ"),
            ));
        }
        let mut source_problems = Vec::new();
        if let Some(compiled) = compile_source(
            source.get_ref(),
            line,
            file,
            config_dir,
            &mut source_problems,
        ) {
            sources.push(compiled);
        }
        problems.append(&mut source_problems);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(DirectorySettings {
        interval: Duration::from_secs(*raw.interval_seconds.get_ref()),
        cache_file: raw
            .cache_file
            .as_ref()
            .map(|f| config_dir.join(f.get_ref())),
        request_timeout: Duration::from_secs(raw.request_timeout_seconds.max(1)),
        sources,
    })
}

fn compile_source(
    raw: &RawDirectorySource,
    line: usize,
    file: &SourceFile,
    config_dir: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<SourceSettings> {
    let name = raw.name.get_ref().clone();
    let mut problem = |span: Option<std::ops::Range<usize>>, message: String| {
        problems.push(file.problem(
            span.or(Some(raw.name.span())),
            format!("directory source {name:?}: {message}"),
        ))
    };
    let url = match Url::parse(raw.url.get_ref()) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) => {
            Some(url)
        }
        Ok(_) => {
            problem(
                Some(raw.url.span()),
                format!(
                    "url {:?} must be https:// (plain http only to a loopback address): it carries the API credentials",
                    raw.url.get_ref()
                ),
            );
            None
        }
        Err(e) => {
            problem(
                Some(raw.url.span()),
                format!("url {:?} is not a URL: {e}", raw.url.get_ref()),
            );
            None
        }
    };
    let users = mapping(&raw.users, "users", &mut problem);
    let misplaced: &[(&str, bool)] = match raw.kind {
        RawSourceKind::Auth0 => &[
            ("groups", raw.groups.is_some()),
            ("group_search", raw.group_search.is_some()),
            ("api_token_file", raw.api_token_file.is_some()),
            ("api_token_env", raw.api_token_env.is_some()),
            ("private_key_file", raw.private_key_file.is_some()),
            ("private_key_env", raw.private_key_env.is_some()),
            ("key_id", raw.key_id.is_some()),
            ("scopes", raw.scopes.is_some()),
        ],
        RawSourceKind::Okta => &[
            ("roles", raw.roles.is_some()),
            ("organizations", raw.organizations.is_some()),
            ("organization_roles", raw.organization_roles.is_some()),
            ("client_secret_file", raw.client_secret_file.is_some()),
            ("client_secret_env", raw.client_secret_env.is_some()),
            ("audience", raw.audience.is_some()),
        ],
    };
    for (key, present) in misplaced {
        if *present {
            let kind = match raw.kind {
                RawSourceKind::Auth0 => "auth0",
                RawSourceKind::Okta => "okta",
            };
            problem(
                None,
                format!("`{key}` does not apply to a {kind} source; remove it"),
            );
        }
    }
    let kind = match raw.kind {
        RawSourceKind::Auth0 => {
            let secret = one_secret(
                config_dir,
                raw.client_secret_file.as_deref(),
                raw.client_secret_env.as_deref(),
                "client_secret_file",
                "client_secret_env",
                &mut problem,
            );
            let client_id = raw.client_id.as_ref().map(|c| c.get_ref().clone());
            if client_id.is_none() {
                problem(None, "an auth0 source needs `client_id` (a machine-to-machine application authorized for the Management API)".into());
            }
            let roles = raw
                .roles
                .as_ref()
                .map(|m| mapping(m, "roles", &mut problem));
            let organizations = raw
                .organizations
                .as_ref()
                .map(|m| mapping(m, "organizations", &mut problem));
            let organization_roles = raw.organization_roles.as_ref().map(|spanned| {
                let raw_roles = spanned.get_ref();
                let leftover = raw_roles
                    .id
                    .replace("{organization}", "")
                    .replace("{role}", "");
                if leftover.contains(['{', '}']) || !raw_roles.id.contains("{role}") {
                    problem(
                        Some(spanned.span()),
                        format!(
                            "organization_roles.id {:?} must contain {{role}} and may contain {{organization}}, and no other {{...}}",
                            raw_roles.id
                        ),
                    );
                }
                OrganizationRoles {
                    entity_type: raw_roles.entity_type.clone(),
                    id: raw_roles.id.clone(),
                }
            });
            if organization_roles.is_some() && organizations.is_none() {
                problem(None, "organization_roles needs organizations (the roles are read from the organizations' member lists)".into());
            }
            let audience = raw.audience.clone().or_else(|| {
                url.as_ref()
                    .map(|u| format!("{}/api/v2/", u.as_str().trim_end_matches('/')))
            });
            match (secret, client_id, roles, organizations, audience) {
                (Some(client_secret), Some(client_id), roles, organizations, Some(audience))
                    if roles.as_ref().is_none_or(Option::is_some)
                        && organizations.as_ref().is_none_or(Option::is_some) =>
                {
                    SourceKind::Auth0(Auth0Settings {
                        client_id,
                        client_secret,
                        audience,
                        roles: roles.flatten(),
                        organizations: organizations.flatten(),
                        organization_roles,
                    })
                }
                _ => return None,
            }
        }
        RawSourceKind::Okta => {
            let token = (raw.api_token_file.is_some() || raw.api_token_env.is_some()).then(|| {
                one_secret(
                    config_dir,
                    raw.api_token_file.as_deref(),
                    raw.api_token_env.as_deref(),
                    "api_token_file",
                    "api_token_env",
                    &mut problem,
                )
            });
            let key =
                (raw.private_key_file.is_some() || raw.private_key_env.is_some()).then(|| {
                    one_secret(
                        config_dir,
                        raw.private_key_file.as_deref(),
                        raw.private_key_env.as_deref(),
                        "private_key_file",
                        "private_key_env",
                        &mut problem,
                    )
                });
            let auth = match (token, key, &raw.client_id) {
                (Some(token), None, None) => token.map(OktaAuth::ApiToken),
                (None, Some(key), Some(client_id)) => key.map(|key| OktaAuth::PrivateKey {
                    client_id: client_id.get_ref().clone(),
                    key,
                    key_id: raw.key_id.clone(),
                    scopes: raw.scopes.clone().unwrap_or_else(|| {
                        DEFAULT_OKTA_SCOPES.iter().map(|s| s.to_string()).collect()
                    }),
                }),
                _ => {
                    problem(None, "an okta source authenticates with either an API token (`api_token_file` or `api_token_env`) or OAuth 2.0 (`client_id` with `private_key_file` or `private_key_env`), not both".into());
                    None
                }
            };
            let groups = raw
                .groups
                .as_ref()
                .map(|m| mapping(m, "groups", &mut problem));
            match (auth, groups) {
                (Some(auth), groups) if groups.as_ref().is_none_or(Option::is_some) => {
                    SourceKind::Okta {
                        auth,
                        groups: groups.flatten(),
                        group_search: raw.group_search.clone(),
                    }
                }
                _ => return None,
            }
        }
    };
    Some(SourceSettings {
        name,
        line,
        url: url?,
        kind,
        users: users?,
    })
}

/// A mapping with its field paths parsed.
fn mapping(
    raw: &Spanned<RawEntityMapping>,
    key: &str,
    problem: &mut impl FnMut(Option<std::ops::Range<usize>>, String),
) -> Option<EntityMapping> {
    let span = Some(raw.span());
    let raw = raw.get_ref();
    let mut ok = true;
    let mut path = |field: &str, what: String| {
        FieldPath::parse(field)
            .map_err(|e| {
                problem(span.clone(), format!("{key}.{what}: {e}"));
                ok = false;
            })
            .ok()
    };
    let id = path(&raw.id, "id".to_string());
    let attributes: Vec<(String, FieldPath)> = raw
        .attributes
        .iter()
        .filter_map(|(name, field)| {
            path(field, format!("attributes.{name}")).map(|p| (name.clone(), p))
        })
        .collect();
    match id {
        Some(id) if ok => Some(EntityMapping {
            entity_type: raw.entity_type.clone(),
            id,
            attributes,
        }),
        _ => None,
    }
}

/// Exactly one of a file (relative to portcullis.toml) and an environment variable.
fn one_secret(
    config_dir: &Path,
    file: Option<&str>,
    env: Option<&str>,
    file_key: &str,
    env_key: &str,
    problem: &mut impl FnMut(Option<std::ops::Range<usize>>, String),
) -> Option<Secret> {
    match (file, env) {
        (Some(file), None) => Some(Secret::File(config_dir.join(file))),
        (None, Some(env)) => Some(Secret::Env(env.to_string())),
        (None, None) => {
            problem(
                None,
                format!("name the secret with `{file_key}` or `{env_key}` (secrets are never written in portcullis.toml)"),
            );
            None
        }
        (Some(_), Some(_)) => {
            problem(
                None,
                format!("give one of `{file_key}` and `{env_key}`, not both"),
            );
            None
        }
    }
}

/// Whether `url`'s host is a loopback address (or `localhost`).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks every source's mappings against the schema: the types exist, users may have the
/// roles, groups and organizations as parents, every attribute is declared, and the user type
/// is an issuer's principal type (otherwise no token would ever be one of these users).
pub fn directory_mapping_problems(
    settings: &DirectorySettings,
    principal_types: &[String],
    bundle: &PolicyBundle,
    file: &Path,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for source in &settings.sources {
        let mut problem = |message: String| {
            problems.push(ConfigProblem {
                file: file.to_path_buf(),
                line: Some(source.line),
                message: format!("directory source {:?}: {message}", source.name),
            })
        };
        let users = &source.users.entity_type;
        if !principal_types.contains(users) {
            problem(format!(
                "users.entity_type {users:?} is no issuer's claims.principal_type ({}): tokens would never be these users",
                principal_types.join(", ")
            ));
        }
        let user_parents = bundle
            .contexts
            .entity_type(users)
            .map(|shape| shape.member_of.clone())
            .unwrap_or_default();
        let mut parent_types: Vec<(&str, &str)> = Vec::new();
        for (key, mapping) in source.mappings() {
            let Some(shape) = bundle.contexts.entity_type(&mapping.entity_type) else {
                problem(format!(
                    "{key}.entity_type {:?} is not an entity type of the schema",
                    mapping.entity_type
                ));
                continue;
            };
            for (attribute, _) in &mapping.attributes {
                if !shape.attributes.contains(attribute) {
                    problem(format!(
                        "{key}.attributes: {:?} declares no attribute {attribute:?}; declare it in the schema or remove it",
                        mapping.entity_type
                    ));
                }
            }
            if key != "users" {
                parent_types.push((key, &mapping.entity_type));
            }
        }
        if let SourceKind::Auth0(Auth0Settings {
            organization_roles: Some(roles),
            ..
        }) = &source.kind
        {
            parent_types.push(("organization_roles", &roles.entity_type));
        }
        for (key, parent) in parent_types {
            if bundle.contexts.entity_type(parent).is_some()
                && !user_parents.iter().any(|p| p == parent)
            {
                problem(format!(
                    "{key}: the schema does not allow {parent:?} as a parent of {users:?}; declare `entity {users} in [{parent}, ...]`"
                ));
            }
        }
    }
    problems
}
