//! The request context driving policies through the real gateway (query parameters and headers
//! typed per the schema, client IP, request time), per-route context selection, and audit
//! (shadow) mode forwarding a request the policies deny.

use std::net::IpAddr;

use crate::common::{raw_exchange_from, TestEnv};

const SCHEMA: &str = r#"
entity Role in [Role];
entity Permission;
entity Tenant;
entity User in [Role, Permission, Tenant] { email?: String, tenant?: Tenant };
entity Anonymous;
entity Report;

type ReportContext = {
  client_ip: ipaddr,
  time: datetime,
  query: { limit?: Long, format?: String },
  headers: { "x-export-approved"?: Bool },
};

action ReadReport appliesTo { principal: [User], resource: [Report], context: ReportContext };
action ReadSummary appliesTo {
  principal: [User], resource: [Report], context: { method?: String, query?: { limit?: Long } }
};
"#;

const POLICIES: &str = r#"
@id("bounded-reads")
permit (principal, action == Action::"ReadReport", resource)
when {
  context.query has limit && context.query.limit <= 100 &&
  context.time > datetime("2020-01-01") &&
  context.client_ip.isLoopback()
};

@id("csv-exports-need-approval")
forbid (principal, action == Action::"ReadReport", resource)
when { context.query has format && context.query.format == "csv" }
unless { context.headers has "x-export-approved" && context.headers["x-export-approved"] };

@id("no-reads-from-127.0.0.2")
forbid (principal, action == Action::"ReadReport", resource)
when { context.client_ip == ip("127.0.0.2") };

@id("summaries-with-a-query")
permit (principal, action == Action::"ReadSummary", resource)
when { context has query };
"#;

const ROUTES: &str = r#"
[defaults]
mode = "enforce"

[upstreams.reports]
address = "{upstream}"

[[routes]]
id = "report"
methods = ["GET"]
path = "/reports/{id}"
upstream = "reports"
action = "ReadReport"
resource = { type = "Report", id = "{id}" }

[[routes]]
id = "report-shadow"
methods = ["GET"]
path = "/shadow/reports/{id}"
upstream = "reports"
action = "ReadReport"
resource = { type = "Report", id = "{id}" }
mode = "audit"

[[routes]]
id = "summary"
methods = ["GET"]
path = "/summaries/{id}"
upstream = "reports"
action = "ReadSummary"
resource = { type = "Report", id = "{id}" }
context = ["method"]
"#;

/// (target, extra headers, expected status)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);

async fn env() -> TestEnv {
    TestEnv::start_with_files(
        ROUTES,
        &[("schema.cedarschema", SCHEMA), ("reports.cedar", POLICIES)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_headers_ip_and_time_drive_the_decision() {
    let env = env().await;
    let token = format!("Bearer {}", env.token("bob"));
    let cases: &[Case] = &[
        ("/reports/r1?limit=10", &[], 200),
        ("/reports/r1?limit=100&unrelated=x", &[], 200),
        ("/reports/r1?limit=1000", &[], 403),
        ("/reports/r1", &[], 403),
        // Typed per the schema: not a Long, or ambiguous, means no context, means deny.
        ("/reports/r1?limit=ten", &[], 403),
        ("/reports/r1?limit=10&limit=20", &[], 403),
        ("/reports/r1?limit=%31%30", &[], 200),
        // A header typed Bool by the schema.
        ("/reports/r1?limit=10&format=csv", &[], 403),
        (
            "/reports/r1?limit=10&format=csv",
            &[("X-Export-Approved", "true")],
            200,
        ),
        (
            "/reports/r1?limit=10&format=csv",
            &[("X-Export-Approved", "false")],
            403,
        ),
        (
            "/reports/r1?limit=10&format=csv",
            &[("X-Export-Approved", "yes")],
            403,
        ),
    ];
    for (target, extra, status) in cases {
        let mut headers = vec![("Authorization", token.as_str())];
        headers.extend_from_slice(extra);
        let before = env.upstream.count();
        let response = env.send("GET", target, &headers).await;
        assert_eq!(
            response.status, *status,
            "{target} {extra:?}: {}",
            response.body
        );
        let forwarded = usize::from(*status == 200);
        assert_eq!(env.upstream.count(), before + forwarded, "{target}");
        if *status == 200 {
            // The query is forwarded untouched.
            assert_eq!(env.upstream.last().target, *target);
        }
    }

    // The client IP is the TCP peer: the same request from 127.0.0.2 is forbidden.
    let request = format!(
        "GET /reports/r1?limit=10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: {token}\r\n\r\n"
    );
    let from = |ip: [u8; 4]| raw_exchange_from(IpAddr::from(ip), env.gateway, request.as_bytes());
    assert_eq!(from([127, 0, 0, 3]).await.status, 200);
    assert_eq!(from([127, 0, 0, 2]).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_narrow_its_context() {
    let env = env().await;
    // `summary` selects only `method`: the query never reaches Cedar, so the permit that
    // needs one cannot fire.
    let response = env.get_as("bob", "/summaries/r1?limit=10").await;
    assert_eq!(response.status, 403);
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_forwards_what_enforcement_would_deny() {
    let env = env().await;
    // Enforced: denied. Audited: the same request is forwarded, with identity headers.
    assert_eq!(
        env.get_as("bob", "/reports/r1?limit=1000").await.status,
        403
    );
    assert_eq!(env.upstream.count(), 0);
    let shadow = env.get_as("bob", "/shadow/reports/r1?limit=1000").await;
    assert_eq!(shadow.status, 200, "{}", shadow.body);
    assert_eq!(env.upstream.count(), 1);
    let seen = env.upstream.last();
    assert_eq!(seen.target, "/shadow/reports/r1?limit=1000");
    assert_eq!(seen.header_values("x-portcullis-principal"), ["bob"]);
    assert_eq!(
        env.get_as("bob", "/shadow/reports/r1?limit=1").await.status,
        200
    );
    // Audit covers the authorization decision only: authentication is still enforced.
    let anonymous = env.send("GET", "/shadow/reports/r1?limit=1000", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(env.upstream.count(), 2);
}
