//! Configuration errors are reported by the real binary with the file, the line and what to
//! change, and nothing starts.

use crate::common::{repo_path, run_portcullis, write_config};

/// Writes the example configuration into a temp dir, applies `edit` to one file, runs
/// `portcullis check`, and returns (exit success, stderr).
fn check_with(file: &str, edit: impl FnOnce(String) -> String) -> (bool, String) {
    let (ok, _, stderr) = check_edited(vec![(file, Box::new(edit))], &[]);
    (ok, stderr)
}

type Edit<'a> = (&'a str, Box<dyn FnOnce(String) -> String + 'a>);

/// `check_with` for several edited files and extra arguments; returns (success, stdout, stderr).
fn check_edited(edits: Vec<Edit<'_>>, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9/",
        "127.0.0.1:9".parse().unwrap(),
    );
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for name in ["schema.cedarschema", "tasks.cedar", "entities.json"] {
        std::fs::copy(repo_path("policies").join(name), policies.join(name)).unwrap();
    }
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let policies_line = text
        .lines()
        .find(|l| l.starts_with("policies ="))
        .unwrap()
        .to_string();
    std::fs::write(
        &config,
        text.replace(&policies_line, "policies = \"policies\""),
    )
    .unwrap();
    for (file, edit) in edits {
        let target = dir.path().join(file);
        let original = std::fs::read_to_string(&target).unwrap();
        std::fs::write(&target, edit(original)).unwrap();
    }
    run_portcullis("check", &config, args)
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_example_configuration_is_clean() {
    let (ok, stderr) = check_with("routes.toml", |s| s);
    assert!(ok, "{stderr}");
}

#[test]
fn unknown_key_names_file_and_line() {
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        s.replace("threads = 2", "threads = 2\nthreadz = 4")
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap();
    let line = line_of(&text, "threads = 2") + 1;
    assert!(
        stderr.contains(&format!("portcullis.toml:{line}:")),
        "{stderr}"
    );
    assert!(stderr.contains("threadz"), "{stderr}");
}

#[test]
fn an_authz_server_section_is_checked_line_by_line() {
    let section = "\n[authz_server]\nlisten = \"127.0.0.1:9191\"\n\
                   trusted_peers = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n\
                   nginx_uri_header = \"bad header\"\n";
    let (ok, stdout, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(move |s: String| format!("{s}{section}")),
        )],
        &[],
    );
    assert!(!ok, "{stdout}");
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap();
    let first = text.lines().count() + 3;
    for (line, what) in [(first + 1, "10.0.0.1/8"), (first + 2, "bad header")] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("portcullis.toml:{line}:")) && l.contains(what)),
            "line {line}, {what}: {stderr}"
        );
    }
    let (ok, stdout, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(|s: String| {
                format!("{s}\n[authz_server]\nlisten = \"127.0.0.1:9191\"\ntrusted_peers = [\"127.0.0.1\"]\n")
            }),
        )],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("authz_server: 127.0.0.1:9191"), "{stdout}");
    let (ok, _, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(|s: String| {
                format!("{s}\n[authz_server]\nlisten = \"127.0.0.1:9191\"\ntrusted_peers = []\n")
            }),
        )],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("trusted_peers is empty"), "{stderr}");
}

#[test]
fn unknown_key_in_a_route_names_its_line() {
    let (ok, stderr) = check_with("routes.toml", |s| {
        s.replace("id = \"read-list\"", "id = \"read-list\"\nmethod = \"GET\"")
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("routes.toml")).unwrap();
    let line = line_of(&text, "id = \"read-list\"") + 1;
    assert!(stderr.contains(&format!("routes.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("method"), "{stderr}");
}

#[test]
fn unknown_upstream_is_reported() {
    let (ok, stderr) = check_with("routes.toml", |s| {
        s.replacen("upstream = \"tasks\"", "upstream = \"taks\"", 1)
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("routes.toml")).unwrap();
    let line = line_of(&text, "upstream = \"tasks\"");
    assert!(stderr.contains(&format!("routes.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("unknown upstream \"taks\""), "{stderr}");
}

#[test]
fn action_not_in_schema_is_reported() {
    let (ok, stderr) = check_with("routes.toml", |s| {
        s.replace("action = \"DeleteTask\"", "action = \"RemoveTask\"")
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("routes.toml")).unwrap();
    let line = line_of(&text, "action = \"DeleteTask\"");
    assert!(stderr.contains(&format!("routes.toml:{line}:")), "{stderr}");
    assert!(
        stderr.contains("Action::\"RemoveTask\" is not declared in the schema"),
        "{stderr}"
    );
}

#[test]
fn overlapping_routes_are_reported_with_both_lines() {
    let extra = "\n[[routes]]\nid = \"shadow\"\nmethods = [\"GET\"]\npath = \"/lists/{list_id}\"\nupstream = \"tasks\"\naction = \"ReadList\"\nresource = { type = \"List\", id = \"{list_id}\" }\n";
    let (ok, stderr) = check_with("routes.toml", |s| format!("{s}{extra}"));
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("routes.toml")).unwrap();
    let first = line_of(&text, "id = \"read-list\"") - 1;
    let second = text.lines().count() + 2;
    assert!(
        stderr.contains(&format!(
            "routes.toml:{second}: this route overlaps the route at line {first}"
        )),
        "{stderr}"
    );
}

#[test]
fn policy_that_fails_validation_is_reported() {
    let (ok, stderr) = check_with("policies/tasks.cedar", |s| {
        format!("{s}\n@id(\"typo\")\npermit (principal, action == Action::\"ReadTask\", resource) when {{ resource.ownr == principal }};\n")
    });
    assert!(!ok);
    assert!(stderr.contains("tasks.cedar:"), "{stderr}");
    assert!(stderr.contains("ownr"), "{stderr}");
}

#[test]
fn route_context_and_mode_mistakes_are_reported() {
    // (inserted line, the line the problem must point at, message)
    for (edit, at, message) in [
        (
            "context = [\"method\", \"cookies\"]",
            "context = [",
            "context kind \"cookies\" is unknown",
        ),
        (
            "context = [\"method\"]",
            "action = \"ReadList\"",
            "the schema requires context attribute \"client_ip\", but the route's context list leaves it out",
        ),
        ("mode = \"shadow\"", "mode = ", "unknown variant `shadow`"),
    ] {
        let edited = std::fs::read_to_string(repo_path("routes.toml"))
            .unwrap()
            .replace("id = \"read-list\"", &format!("id = \"read-list\"\n{edit}"));
        let line = line_of(&edited, at);
        let (ok, stderr) = check_with("routes.toml", |_| edited.clone());
        assert!(!ok, "{edit}");
        assert!(
            stderr.contains(&format!("routes.toml:{line}: ")) && stderr.contains(message),
            "{edit}: expected line {line} and {message:?} in {stderr}"
        );
    }
}

#[test]
fn directory_sources_are_checked_line_by_line_and_their_mappings_against_the_schema() {
    // Settings: a secret written in the file, plain http to another host, a key of the other
    // kind, no credential.
    let section = "\n[directory]\n\n[[directory.sources]]\nname = \"okta\"\nkind = \"okta\"\n\
                   url = \"http://idp.example.com\"\nclient_secret_file = \"secret\"\n\
                   users = { entity_type = \"User\", id = \"id\" }\n";
    let (ok, stderr) = check_with("portcullis.toml", |s| format!("{s}{section}"));
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap() + section;
    for (needle, message) in [
        (
            "url = \"http://idp",
            "directory source \"okta\": url \"http://idp.example.com\" must be https://",
        ),
        (
            "name = \"okta\"",
            "directory source \"okta\": `client_secret_file` does not apply to a okta source",
        ),
        (
            "name = \"okta\"",
            "an okta source authenticates with either an API token",
        ),
    ] {
        let line = line_of(&text, needle);
        assert!(
            stderr.contains(&format!("portcullis.toml:{line}: ")) && stderr.contains(message),
            "line {line}, {message:?} in {stderr}"
        );
    }
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        format!(
            "{s}{}",
            section.replace("client_secret_file = \"secret\"", "api_token = \"00abc\"")
        )
    });
    assert!(!ok);
    assert!(stderr.contains("unknown field `api_token`"), "{stderr}");

    // Against the schema: an undeclared attribute, a type that is not a parent of User, a type
    // the schema lacks, a user type no issuer maps tokens to.
    let section = "\n[directory]\n\n[[directory.sources]]\nname = \"auth0\"\nkind = \"auth0\"\n\
                   url = \"https://tenant.auth0.com\"\nclient_id = \"c\"\nclient_secret_env = \"S\"\n\
                   users = { entity_type = \"User\", id = \"user_id\", attributes = { nickname = \"nickname\" } }\n\
                   roles = { entity_type = \"List\", id = \"name\" }\n\
                   organizations = { entity_type = \"Org\", id = \"id\" }\n\
                   \n[[directory.sources]]\nname = \"apps\"\nkind = \"okta\"\n\
                   url = \"https://org.okta.com\"\napi_token_env = \"T\"\n\
                   users = { entity_type = \"Application\", id = \"id\" }\n";
    let (ok, stdout, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(|s: String| format!("{s}{section}")),
        )],
        &[],
    );
    assert!(!ok, "{stdout}");
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap() + section;
    let auth0 = line_of(&text, "name = \"auth0\"") - 1;
    let apps = line_of(&text, "name = \"apps\"") - 1;
    for (line, message) in [
        (auth0, "directory source \"auth0\": users.attributes: \"User\" declares no attribute \"nickname\""),
        (auth0, "directory source \"auth0\": roles: the schema does not allow \"List\" as a parent of \"User\""),
        (auth0, "directory source \"auth0\": organizations.entity_type \"Org\" is not an entity type of the schema"),
        (apps, "directory source \"apps\": users.entity_type \"Application\" is no issuer's claims.principal_type"),
    ] {
        assert!(
            stderr.contains(&format!("portcullis.toml:{line}: {message}")),
            "line {line}, {message:?} in {stderr}"
        );
    }

    // A correct source is listed by check.
    let good = "\n[directory]\ninterval_seconds = 60\n\n[[directory.sources]]\nname = \"auth0\"\nkind = \"auth0\"\n\
                url = \"https://tenant.auth0.com\"\nclient_id = \"c\"\nclient_secret_env = \"S\"\n\
                users = { entity_type = \"User\", id = \"user_id\", attributes = { email = \"email\" } }\n\
                roles = { entity_type = \"Role\", id = \"name\" }\n";
    let (ok, stdout, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(|s: String| format!("{s}{good}")),
        )],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("directory source: auth0 (https://tenant.auth0.com/, every 60 s): users → User, roles → Role"),
        "{stdout}"
    );
}

#[test]
fn an_http_decision_log_sink_is_checked_line_by_line() {
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap();
    for (edit, needle, message) in [
        (
            "sink = \"http\"\nurl = \"ftp://collector/\"\nspool_dir = \"spool\"",
            "url = ",
            "decision_log.url \"ftp://collector/\" is not an http:// or https:// URL",
        ),
        (
            "sink = \"http\"\nurl = \"http://collector:8080/\"",
            "sink = \"http\"",
            "sink = \"http\" needs spool_dir",
        ),
        (
            "sink = \"stdout\"\nspool_dir = \"spool\"",
            "spool_dir = ",
            "decision_log.spool_dir is only used with sink = \"http\"",
        ),
        (
            "sink = \"http\"\nurl = \"http://c/\"\nspool_dir = \"s\"\nformat = \"gelf\"",
            "format = ",
            "unknown variant `gelf`, expected `ndjson` or `splunk_hec`",
        ),
    ] {
        let edited = text.replace("sink = \"stdout\"", edit);
        let line = line_of(&edited, needle);
        let (ok, stderr) = check_with("portcullis.toml", |_| edited.clone());
        assert!(!ok, "{edit}");
        assert!(
            stderr.contains("portcullis.toml:") && stderr.contains(message),
            "{edit}: expected {message:?} in {stderr}"
        );
        if needle != "sink = \"http\"" {
            assert!(
                stderr.contains(&format!("portcullis.toml:{line}: ")),
                "{edit}: expected line {line} in {stderr}"
            );
        }
    }
}

#[test]
fn a_bundle_section_is_checked_line_by_line() {
    let section = "\n[bundle]\nreference = \"not a reference!\"\n\
                   public_keys = [\"missing.pub\"]\ncache_dir = \"bundles\"\n";
    let (ok, stderr) = check_with("portcullis.toml", |s| format!("{s}{section}"));
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap() + section;
    for (needle, message) in [
        (
            "reference = ",
            "bundle.reference \"not a reference!\" is not an image reference",
        ),
        ("public_keys = ", "bundle.public_keys: "),
    ] {
        let line = line_of(&text, needle);
        assert!(
            stderr.contains(&format!("portcullis.toml:{line}: ")) && stderr.contains(message),
            "line {line}, {message:?} in {stderr}"
        );
    }
    assert!(stderr.contains("missing.pub"), "{stderr}");
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        format!("{s}\n[bundle]\nreference = \"r.example/p:prod\"\npublic_keys = []\ncache_dir = \"b\"\n")
    });
    assert!(!ok);
    assert!(stderr.contains("bundle.public_keys is empty"), "{stderr}");
}

/// The README's copy-paste `[directory]` blocks pass `check` with this repository's policies.
#[test]
fn the_readme_directory_configurations_check_clean() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let section = readme
        .split("## Directory sync")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert_eq!(blocks.len(), 2, "an Auth0 and an Okta block");
    for (block, listed) in blocks.iter().zip([
        "directory source: auth0 (https://your_tenant.auth0.com/, every 300 s): users → User, roles → Role, organizations → Tenant",
        "directory source: okta (https://your_org.okta.com/, every 300 s): users → User, groups → Group",
    ]) {
        let (ok, stdout, stderr) = check_edited(
            vec![("portcullis.toml", Box::new(|s: String| format!("{s}\n{block}")))],
            &[],
        );
        assert!(ok, "{block}\n{stderr}");
        assert!(stdout.contains(listed), "{stdout}");
    }
}

#[test]
fn claim_mappings_are_checked_against_the_schema() {
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        s.replace("entity_type = \"Role\"", "entity_type = \"Rol\"")
            .replace(
                "attributes = { email = \"email\" }",
                "attributes = { email = \"email\", nickname = \"nick\" }",
            )
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap();
    let line = line_of(&text, "[[issuers]]");
    for message in [
        "claims.roles: the schema does not allow \"Rol\" as a parent of \"User\"",
        "claims.attributes: \"User\" declares no attribute \"nickname\"",
    ] {
        assert!(
            stderr.contains(&format!(
                "portcullis.toml:{line}: issuer \"http://127.0.0.1:9/\": {message}"
            )),
            "{message} in {stderr}"
        );
    }
}

#[test]
fn unused_actions_and_unpermitted_routes_are_warnings() {
    let route = "\n[[routes]]\nid = \"archive\"\nmethods = [\"POST\"]\npath = \"/lists/{list_id}/archive\"\nupstream = \"tasks\"\naction = \"ArchiveList\"\nresource = { type = \"List\", id = \"{list_id}\" }\n";
    let actions = "\naction ArchiveList appliesTo { principal: [User], resource: [List], context: ListContext };\naction Export appliesTo { principal: [User], resource: [List] };\n";
    let edits = || -> Vec<Edit<'static>> {
        vec![
            ("routes.toml", Box::new(move |s| format!("{s}{route}"))),
            (
                "policies/schema.cedarschema",
                Box::new(move |s| format!("{s}{actions}")),
            ),
        ]
    };
    let routes_lines = std::fs::read_to_string(repo_path("routes.toml"))
        .unwrap()
        .lines()
        .count();
    let schema_lines = std::fs::read_to_string(repo_path("policies/schema.cedarschema"))
        .unwrap()
        .lines()
        .count();
    let (ok, stdout, stderr) = check_edited(edits(), &[]);
    assert!(ok, "warnings alone do not fail: {stderr}");
    assert!(stdout.starts_with("configuration OK"), "{stdout}");
    let unpermitted = format!(
        "routes.toml:{}: route \"archive\": no permit policy applies to Action::\"ArchiveList\", so every request is denied",
        routes_lines + 2
    );
    let unused = format!(
        "schema.cedarschema:{}: action Action::\"Export\" is used by no route",
        schema_lines + 3
    );
    assert!(stderr.contains(&unpermitted), "{stderr}");
    assert!(stderr.contains(&unused), "{stderr}");
    assert_eq!(stderr.matches("warning: ").count(), 2, "{stderr}");

    let (ok, _, stderr) = check_edited(edits(), &["--strict"]);
    assert!(!ok);
    assert!(stderr.contains("2 warning(s) and --strict"), "{stderr}");

    let (ok, stdout, _) = check_edited(edits(), &["--format", "json"]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["errors"].as_array().unwrap().len(), 0);
    assert_eq!(report["warnings"].as_array().unwrap().len(), 2);
    assert_eq!(report["warnings"][0]["line"], schema_lines + 3);
}

#[test]
fn json_format_reports_every_problem_with_file_and_line() {
    let edits: Vec<Edit<'static>> = vec![
        (
            "routes.toml",
            Box::new(|s| s.replacen("upstream = \"tasks\"", "upstream = \"taks\"", 1)),
        ),
        (
            "portcullis.toml",
            Box::new(|s| s.replace("threads = 2", "threads = 2\nthreadz = 4")),
        ),
    ];
    let (ok, stdout, _) = check_edited(edits, &["--format", "json"]);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    let errors = report["errors"].as_array().unwrap();
    assert!(!errors.is_empty());
    for error in errors {
        assert!(
            error["file"].as_str().unwrap().ends_with(".toml"),
            "{error}"
        );
        assert!(error["line"].as_u64().is_some(), "{error}");
    }
}

#[test]
fn a_route_parent_the_schema_does_not_allow_is_reported() {
    let (ok, stderr) = check_with("routes.toml", |s| {
        s.replacen(
            "resource = { type = \"List\", id = \"{list_id}\" }",
            "resource = { type = \"List\", id = \"{list_id}\", parents = ['Role::\"{list_id}\"'] }",
            1,
        )
    });
    assert!(!ok);
    assert!(
        stderr.contains(
            "resource parent type Role is not allowed for List by the schema (allowed: Tenant)"
        ),
        "{stderr}"
    );
}

#[test]
fn every_class_of_route_and_entity_mistake_names_its_line() {
    let routes = std::fs::read_to_string(repo_path("routes.toml")).unwrap();
    let read_list = line_of(&routes, "id = \"read-list\"");
    // (file, text to replace, replacement, line of the problem, message)
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        (
            "routes.toml",
            "path = \"/lists/{list_id}\"",
            "path = \"/lists/{list_id\"",
            read_list + 2,
            "path \"/lists/{list_id\"",
        ),
        (
            "routes.toml",
            "resource = { type = \"List\", id = \"{list_id}\" }",
            "resource = { type = \"List\", id = \"{list}\" }",
            read_list + 4,
            "uses {list}, but the path has no such parameter (it has: list_id)",
        ),
        (
            "routes.toml",
            "resource = { type = \"List\", id = \"{list_id}\" }",
            "resource = { type = \"Task\", id = \"{list_id}\" }",
            read_list + 4,
            "Task",
        ),
        (
            "routes.toml",
            "action = \"ReadList\"",
            "action = \"Health\"",
            read_list + 4,
            "Health",
        ),
        (
            "routes.toml",
            "path = \"/lists/{list_id}\"",
            "path = \"/lists/{list_id}\"\nhost = \"user@api.example.com\"",
            read_list + 3,
            "host \"user@api.example.com\" must be a DNS name or an IP address",
        ),
    ];
    for (file, from, to, line, message) in cases {
        let (ok, stderr) = check_with(file, |s| s.replacen(from, to, 1));
        assert!(!ok, "{to}");
        assert!(
            stderr.contains(&format!("{file}:{line}: ")) && stderr.contains(message),
            "{to}: expected {file}:{line} and {message:?} in {stderr}"
        );
    }
    // Entities that do not fit the schema name entities.json.
    let (ok, stderr) = check_with("policies/entities.json", |s| {
        s.replacen("\"name\": \"Roadmap\"", "\"name\": 7", 1)
    });
    assert!(!ok);
    assert!(stderr.contains("entities.json"), "{stderr}");
}

#[test]
fn a_bad_trusted_proxy_range_names_its_line() {
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        s.replace(
            "realm = \"tasks\"",
            "realm = \"tasks\"\ntrusted_proxies = [\"10.0.0.1/8\"]",
        )
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap();
    let line = line_of(&text, "realm = \"tasks\"") + 1;
    assert!(
        stderr.contains(&format!(
            "portcullis.toml:{line}: trusted_proxies: \"10.0.0.1/8\" has host bits set"
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_or_broken_certificate_names_its_line() {
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        format!(
            "{s}\n[server.tls]\nlisten = \"127.0.0.1:8443\"\ncertificates = [\n  \
             {{ cert = \"tls/missing.crt\", key = \"tls/missing.key\" }},\n]\n"
        )
    });
    assert!(!ok);
    let lines = std::fs::read_to_string(repo_path("portcullis.toml"))
        .unwrap()
        .lines()
        .count();
    // The certificate entry is the fourth line appended after the file's own.
    let line = lines + 5;
    assert!(
        stderr.contains(&format!("portcullis.toml:{line}:")),
        "{stderr}"
    );
    assert!(stderr.contains("missing.crt"), "{stderr}");
    assert!(stderr.contains("not a PEM certificate chain"), "{stderr}");
}

#[test]
fn upstream_mistakes_name_their_line_and_resolve_nothing() {
    for (upstream, expected) in [
        ("addresses = []", "addresses must not be empty"),
        ("address = \"no-port\"", "must be host:port"),
        (
            "address = \"a:1\"\naddresses = [\"b:1\"]",
            "either address or addresses",
        ),
        (
            "address = \"a:1\"\nprotocol = \"h2c\"\ntls = { sni = \"a\" }",
            "HTTP/2 without TLS",
        ),
        (
            "address = \"a:1\"\nselection = \"consistent_hash\"",
            "needs hash_key",
        ),
        (
            "address = \"a:1\"\nhealth_check = { path = \"health\" }",
            "health_check needs a path",
        ),
        (
            "address = \"a:1\"\ntls = { ca_file = \"missing-ca.pem\" }",
            "ca_file",
        ),
    ] {
        let (ok, stderr) = check_with("routes.toml", |s| {
            s.replace("address = \"127.0.0.1:9\"", upstream)
        });
        assert!(!ok, "{upstream}");
        let text = std::fs::read_to_string(repo_path("routes.toml")).unwrap();
        let line = line_of(&text, "[upstreams.tasks]");
        assert!(
            stderr.contains("routes.toml:") && stderr.contains(expected),
            "{upstream}: {stderr}"
        );
        assert!(
            (line..line + 4).any(|l| stderr.contains(&format!("routes.toml:{l}:"))),
            "{upstream}: {stderr}"
        );
    }
    // A name that resolves nowhere here is no error: it is resolved at run time.
    let (ok, stderr) = check_with("routes.toml", |s| {
        s.replace(
            "address = \"127.0.0.1:9\"",
            "address = \"tasks.default.svc.cluster.local:8080\"",
        )
    });
    assert!(ok, "{stderr}");
}

/// Keys fetched over plain http from a host that is not loopback are a warning (the tests'
/// issuers on 127.0.0.1 are not).
#[test]
fn plain_http_key_sources_outside_loopback_are_warned_about() {
    let (ok, _, stderr) = check_edited(vec![], &[]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("plain http"), "{stderr}");
    let (ok, _, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(|s: String| s.replace("http://127.0.0.1:9/", "http://idp.example.com/")),
        )],
        &["--strict"],
    );
    assert!(!ok);
    assert!(
        stderr.contains("keys are fetched over plain http from http://idp.example.com/"),
        "{stderr}"
    );
}

/// Exit statuses: 0 ok, 1 problems found, 2 usage or an unreadable configuration file; the
/// configuration path may come from PORTCULLIS_CONFIG.
#[test]
fn exit_codes_mean_something_and_the_config_path_can_come_from_the_environment() {
    let status = |args: &[&str], env: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(args)
            .env("RUST_LOG", "off")
            .env_remove("PORTCULLIS_CONFIG");
        if let Some(config) = env {
            command.env("PORTCULLIS_CONFIG", config);
        }
        command.output().unwrap().status.code()
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9/",
        "127.0.0.1:9".parse().unwrap(),
    );
    let good = dir.path().join("portcullis.toml");
    let good = good.to_str().unwrap();
    assert_eq!(status(&["check", "--config", good], None), Some(0));
    assert_eq!(status(&["check"], Some(good)), Some(0));
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[server]\nlisten = \"nowhere\"\n").unwrap();
    assert_eq!(
        status(&["check", "--config", broken.to_str().unwrap()], None),
        Some(1)
    );
    assert_eq!(
        status(&["check", "--config", "/nonexistent/portcullis.toml"], None),
        Some(2)
    );
    assert_eq!(
        status(&["check"], Some("/nonexistent/portcullis.toml")),
        Some(2)
    );
    assert_eq!(status(&["check", "--no-such-flag"], None), Some(2));
}

#[test]
fn headers_to_strip_are_checked_and_listed() {
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        s.replace(
            "[headers]\n",
            "[headers]\nstrip = [\n  \"X-Internal-User\",\n  \"bad name\",\n]\n",
        )
    });
    assert!(!ok);
    let text = std::fs::read_to_string(repo_path("portcullis.toml")).unwrap();
    let line = line_of(&text, "[headers]") + 3;
    assert!(
        stderr.contains(&format!(
            "portcullis.toml:{line}: \"bad name\" is not a valid HTTP header name"
        )),
        "{stderr}"
    );
    let (ok, stdout, stderr) = check_edited(
        vec![(
            "portcullis.toml",
            Box::new(|s: String| {
                s.replace("[headers]\n", "[headers]\nstrip = [\"X-Internal-User\"]\n")
            }),
        )],
        &[],
    );
    assert!(ok, "{stderr}");
    let listed = stdout
        .lines()
        .find(|l| l.contains("removed from client requests"))
        .unwrap_or_default();
    for name in [
        "x-portcullis-principal",
        "x-internal-user",
        "x-middleware-subrequest",
    ] {
        assert!(listed.contains(name), "{name}: {stdout}");
    }
}

#[test]
fn a_cors_section_is_checked_line_by_line() {
    let (ok, stderr) = check_with("portcullis.toml", |s| {
        s + "\n[cors]\nallow_origins = [\n  \"*\",\n  \"app.example.com\",\n]\n\
             allow_credentials = true\nallow_headers = [\"bad header\"]\n"
    });
    assert!(!ok);
    let lines = std::fs::read_to_string(repo_path("portcullis.toml"))
        .unwrap()
        .lines()
        .count();
    let cors = lines + 2;
    for (line, what) in [
        (cors + 3, "\"app.example.com\" is not an origin"),
        (
            cors + 5,
            "allow_credentials = true with allow_origins = [\"*\"]",
        ),
        (cors + 6, "\"bad header\" is not a valid HTTP header name"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("portcullis.toml:{line}:")) && l.contains(what)),
            "line {line}, {what}: {stderr}"
        );
    }
}
