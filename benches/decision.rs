//! The Cedar decision with 10, 100, 1,000 and 10,000 policies over 100 actions, evaluated on the
//! request's slice (what the gateway does) and on the whole set (plain Cedar).
//!
//! Besides criterion's estimates, it prints each case's p50 and p99 over up to 20,000 timed
//! decisions, and how many policies a request evaluates on average: the policy-slicing target
//! is a p99 with 1,000 policies within 2× the 10-policy value (issue 15: 10,000).
//!
//! `applicable` is Cedar alone (`Authorizer::is_authorized`) on each request's slice, found
//! before the clock starts: only the policies whose scopes match the request, which must be
//! evaluated whatever a gateway does around them. Where its p99 misses the target on its own,
//! the target is out of reach of any slicing (issue 15's proof). Run with
//! `cargo bench --bench decision`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use cedar_policy::{Authorizer, Context, EntityUid, PolicySet, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::authz::slice::PolicySlices;
use portcullis::authz::{authorize, PolicyBundle};

const ACTIONS: usize = 100;
const GROUPS: usize = 10;
const USERS: usize = 20;
const DOCS: usize = 20;
const FOLDERS: usize = 10;
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const TIMED_DECISIONS: usize = 20_000;
/// The slowest cases (10,000 policies unsliced: about 20 ms each) stop early, after 100.
const TIMING_BUDGET: Duration = Duration::from_secs(3);

fn schema() -> String {
    let mut text = String::from(
        "entity Group;\nentity User in [Group] { level: Long };\nentity Folder;\n\
         entity Doc in [Folder] { level: Long, owner: User };\n",
    );
    for a in 0..ACTIONS {
        text.push_str(&format!(
            "action a{a} appliesTo {{ principal: User, resource: Doc, context: {{}} }};\n"
        ));
    }
    text
}

/// `count` policies, the i-th about action `i % 100`: permits for one group of users with an
/// attribute condition and, one in ten, a forbid on one folder of documents. With 1,000
/// policies each action has ten, of which a request's principal and resource scopes match
/// one or two; with 10, each of ten actions has one.
fn policies(count: usize) -> String {
    (0..count)
        .map(|i| {
            let action = i % ACTIONS;
            let copy = i / ACTIONS;
            if (copy + action) % 10 == 9 {
                format!(
                    "@id(\"p{i}\") forbid (principal, action == Action::\"a{action}\", resource in Folder::\"f{}\") \
                     when {{ resource.owner != principal && resource.level > {} }};\n",
                    copy % FOLDERS,
                    7 + i % 3
                )
            } else {
                format!(
                    "@id(\"p{i}\") permit (principal in Group::\"g{}\", action == Action::\"a{action}\", resource) \
                     when {{ resource.level <= principal.level + {} }};\n",
                    copy % GROUPS,
                    i % 4
                )
            }
        })
        .collect()
}

fn entities() -> String {
    let mut items = Vec::new();
    for g in 0..GROUPS {
        items.push(format!(
            r#"{{"uid": {{"type": "Group", "id": "g{g}"}}, "attrs": {{}}, "parents": []}}"#
        ));
    }
    for f in 0..FOLDERS {
        items.push(format!(
            r#"{{"uid": {{"type": "Folder", "id": "f{f}"}}, "attrs": {{}}, "parents": []}}"#
        ));
    }
    for u in 0..USERS {
        items.push(format!(
            r#"{{"uid": {{"type": "User", "id": "u{u}"}}, "attrs": {{"level": {}}}, "parents": [{{"type": "Group", "id": "g{}"}}]}}"#,
            u % 10,
            u % GROUPS
        ));
    }
    for d in 0..DOCS {
        items.push(format!(
            r#"{{"uid": {{"type": "Doc", "id": "d{d}"}}, "attrs": {{"level": {}, "owner": {{"__entity": {{"type": "User", "id": "u{}"}}}}}}, "parents": [{{"type": "Folder", "id": "f{}"}}]}}"#,
            d % 10,
            d % USERS,
            d % FOLDERS
        ));
    }
    format!("[{}]", items.join(",\n"))
}

fn bundle(count: usize) -> PolicyBundle {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("schema.cedarschema"), schema()).expect("schema");
    std::fs::write(dir.path().join("policies.cedar"), policies(count)).expect("policies");
    std::fs::write(dir.path().join("entities.json"), entities()).expect("entities");
    PolicyBundle::load(dir.path()).unwrap_or_else(|problems| panic!("{problems:?}"))
}

/// Requests for actions that have policies at every size, over every user and document.
fn requests(count: usize) -> Vec<Request> {
    let uid = |ty: &str, id: String| EntityUid::from_str(&format!("{ty}::\"{id}\"")).expect("uid");
    (0..997)
        .map(|n| {
            Request::new(
                uid("User", format!("u{}", n % USERS)),
                uid("Action", format!("a{}", (n * 7) % count.min(ACTIONS))),
                uid("Doc", format!("d{}", (n * 3) % DOCS)),
                Context::empty(),
                None,
            )
            .expect("request")
        })
        .collect()
}

/// One case of the printed table.
struct Timing {
    label: &'static str,
    count: usize,
    timed: usize,
    p50: Duration,
    p99: Duration,
    evaluated: f64,
}

/// The request's slice, if the bundle has one for it (else it is evaluated on the whole set).
fn slice_of(bundle: &PolicyBundle, request: &Request) -> Option<Arc<PolicySet>> {
    let (Some(action), Some(principal), Some(resource)) =
        (request.action(), request.principal(), request.resource())
    else {
        return None;
    };
    bundle
        .slices
        .for_request(action, principal, resource, &bundle.entities)
}

/// How many policies a request evaluates on average: its slice's size, or the whole set.
fn mean_evaluated(bundle: &PolicyBundle, requests: &[Request]) -> f64 {
    let total: usize = requests
        .iter()
        .map(|r| {
            slice_of(bundle, r).map_or_else(
                || bundle.policies.policies().count(),
                |slice| slice.policies().count(),
            )
        })
        .sum();
    total as f64 / requests.len() as f64
}

/// Each request's slice: the policies whose scopes match it (the whole set without a slice).
fn applicable(bundle: &PolicyBundle, requests: &[Request]) -> Vec<Arc<PolicySet>> {
    requests
        .iter()
        .map(|r| slice_of(bundle, r).unwrap_or_else(|| Arc::new(bundle.policies.clone())))
        .collect()
}

/// The sorted times of `decide` over the requests in turn, up to `TIMED_DECISIONS` of them.
fn time_decisions(requests: usize, decide: impl Fn(usize)) -> Vec<Duration> {
    let budget = Instant::now() + TIMING_BUDGET;
    let mut times: Vec<Duration> = (0..TIMED_DECISIONS)
        .take_while(|n| *n < 100 || Instant::now() < budget)
        .map(|n| {
            let started = Instant::now();
            decide(n % requests);
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(2));
    let mut report = Vec::new();
    for count in SIZES {
        let sliced = bundle(count);
        let mut whole = bundle(count);
        whole.slices = PolicySlices::default();
        let requests = requests(count);
        for (label, bundle) in [("sliced", &sliced), ("unsliced", &whole)] {
            group.bench_with_input(BenchmarkId::new(label, count), &requests, |b, requests| {
                let mut next = 0;
                b.iter(|| {
                    next = (next + 1) % requests.len();
                    authorize(bundle, &requests[next], &bundle.entities).allowed
                })
            });
            let times = time_decisions(requests.len(), |n| {
                std::hint::black_box(authorize(bundle, &requests[n], &bundle.entities));
            });
            report.push(Timing {
                label,
                count,
                timed: times.len(),
                p50: percentile(&times, 0.5),
                p99: percentile(&times, 0.99),
                evaluated: mean_evaluated(bundle, &requests),
            });
        }
        let slices = applicable(&sliced, &requests);
        let authorizer = Authorizer::new();
        let times = time_decisions(requests.len(), |n| {
            std::hint::black_box(authorizer.is_authorized(
                &requests[n],
                &slices[n],
                &sliced.entities,
            ));
        });
        report.push(Timing {
            label: "applicable",
            count,
            timed: times.len(),
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            evaluated: mean_evaluated(&sliced, &requests),
        });
    }
    group.finish();
    println!("\npolicies  evaluation   p50         p99   policies evaluated  timed decisions");
    for t in &report {
        println!(
            "{:>8}  {:<9} {:>9.2?} {:>11.2?}   {:>18.1}  {}",
            t.count, t.label, t.p50, t.p99, t.evaluated, t.timed
        );
    }
    let p99 = |label: &str, count: usize| {
        report
            .iter()
            .find(|t| t.label == label && t.count == count)
            .map(|t| t.p99.as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    for count in [1_000, 10_000] {
        println!(
            "sliced p99 at {count} policies / at 10: {:.2} (target ≤ 2); unsliced: {:.2}; \
             Cedar alone on the applicable policies at {count} / sliced at 10: {:.2}",
            p99("sliced", count) / p99("sliced", 10),
            p99("unsliced", count) / p99("unsliced", 10),
            p99("applicable", count) / p99("sliced", 10)
        );
    }
}

criterion_group!(benches, decision);
criterion_main!(benches);
