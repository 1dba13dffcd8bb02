//! Policies with principal and resource scopes through the real gateway: the resource's
//! ancestors come from the route's parent template and the directory, and a policy scoped to
//! an ancestor must still apply after slicing (a slice keyed on the resource alone would drop
//! it and answer 403).

use crate::common::TestEnv;

const SCHEMA: &str = r#"
entity Role in [Role];
entity Permission;
entity Tenant;
entity User in [Role, Permission, Tenant] { email?: String, tenant?: Tenant };
entity Anonymous;
entity Folder in [Folder];
entity Doc in [Folder];

action ReadDoc appliesTo { principal: [User], resource: [Doc], context: {} };
"#;

/// `team` and `locked` sit inside `public`; nothing is known about `elsewhere`.
const ENTITIES: &str = r#"[
  {"uid": {"type": "Folder", "id": "public"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Folder", "id": "team"}, "attrs": {}, "parents": [{"type": "Folder", "id": "public"}]},
  {"uid": {"type": "Folder", "id": "locked"}, "attrs": {}, "parents": [{"type": "Folder", "id": "public"}]}
]"#;

const POLICIES: &str = r#"
@id("viewers-read-public")
permit (principal in Role::"viewer", action == Action::"ReadDoc", resource in Folder::"public");

@id("anyone-reads-the-open-doc")
permit (principal, action == Action::"ReadDoc", resource == Doc::"open");

@id("admins-read-team-docs")
permit (principal in Role::"admin", action == Action::"ReadDoc", resource is Doc in Folder::"team");

@id("locked-is-locked")
forbid (principal, action == Action::"ReadDoc", resource in Folder::"locked");
"#;

const ROUTES: &str = r#"
[upstreams.docs]
address = "{upstream}"

[[routes]]
id = "doc"
methods = ["GET"]
path = "/folders/{folder}/docs/{doc}"
upstream = "docs"
action = "ReadDoc"
resource = { type = "Doc", id = "{doc}", parents = ['Folder::"{folder}"'] }
context = []
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_and_resource_scopes_decide_through_the_gateway() {
    let env = TestEnv::start_with_files(
        ROUTES,
        &[
            ("schema.cedarschema", SCHEMA),
            ("docs.cedar", POLICIES),
            ("entities.json", ENTITIES),
        ],
    )
    .await;
    let cases = [
        // bob is a viewer, dave an admin (roles from the token).
        ("bob", "/folders/public/docs/d1", 200),
        // `team` is in `public`: the permit on the ancestor applies.
        ("bob", "/folders/team/docs/d1", 200),
        ("bob", "/folders/elsewhere/docs/d1", 403),
        ("bob", "/folders/elsewhere/docs/open", 200),
        // The forbid on `locked` overrides the permit on `public`, and the `==` permit.
        ("bob", "/folders/locked/docs/d1", 403),
        ("bob", "/folders/locked/docs/open", 403),
        ("dave", "/folders/team/docs/d2", 200),
        ("dave", "/folders/public/docs/d2", 403),
    ];
    for (subject, target, status) in cases {
        let before = env.upstream.count();
        let response = env.get_as(subject, target).await;
        assert_eq!(
            response.status, status,
            "{subject} {target}: {}",
            response.body
        );
        let forwarded = usize::from(status == 200);
        assert_eq!(
            env.upstream.count(),
            before + forwarded,
            "{subject} {target}"
        );
    }
}
