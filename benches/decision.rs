//! The Cedar decision with 10, 100, 1,000 and 10,000 policies over 100 actions, evaluated on the
//! action's slice (what the gateway does) and on the whole set (plain Cedar).
//!
//! Besides criterion's estimates, it prints each case's p50 and p99 over up to 20,000 timed
//! decisions: the policy-slicing target is a p99 with 1,000 policies within 2× the 10-policy
//! value. Run with `cargo bench --bench decision`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{Context, EntityUid, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::authz::slice::PolicySlices;
use portcullis::authz::{authorize, PolicyBundle};

const ACTIONS: usize = 100;
const GROUPS: usize = 10;
const USERS: usize = 20;
const DOCS: usize = 20;
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const TIMED_DECISIONS: usize = 20_000;
/// The slowest cases (10,000 policies unsliced: about 20 ms each) stop early, after 100.
const TIMING_BUDGET: Duration = Duration::from_secs(3);

fn schema() -> String {
    let mut text = String::from(
        "entity Group;\nentity User in [Group] { level: Long };\n\
         entity Doc { level: Long, owner: User };\n",
    );
    for a in 0..ACTIONS {
        text.push_str(&format!(
            "action a{a} appliesTo {{ principal: User, resource: Doc, context: {{}} }};\n"
        ));
    }
    text
}

/// `count` policies, mostly permits for a group and one action with an attribute condition,
/// every tenth a forbid.
fn policies(count: usize) -> String {
    (0..count)
        .map(|i| {
            let action = i % ACTIONS;
            if i % 10 == 9 {
                format!(
                    "@id(\"p{i}\") forbid (principal, action == Action::\"a{action}\", resource) \
                     when {{ resource.owner != principal && resource.level > {} }};\n",
                    7 + i % 3
                )
            } else {
                format!(
                    "@id(\"p{i}\") permit (principal in Group::\"g{}\", action == Action::\"a{action}\", resource) \
                     when {{ resource.level <= principal.level + {} }};\n",
                    (i / ACTIONS) % GROUPS,
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
    for u in 0..USERS {
        items.push(format!(
            r#"{{"uid": {{"type": "User", "id": "u{u}"}}, "attrs": {{"level": {}}}, "parents": [{{"type": "Group", "id": "g{}"}}]}}"#,
            u % 10,
            u % GROUPS
        ));
    }
    for d in 0..DOCS {
        items.push(format!(
            r#"{{"uid": {{"type": "Doc", "id": "d{d}"}}, "attrs": {{"level": {}, "owner": {{"__entity": {{"type": "User", "id": "u{}"}}}}}}, "parents": []}}"#,
            d % 10,
            d % USERS
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
            let budget = Instant::now() + TIMING_BUDGET;
            let mut times: Vec<Duration> = (0..TIMED_DECISIONS)
                .take_while(|n| *n < 100 || Instant::now() < budget)
                .map(|n| {
                    let request = &requests[n % requests.len()];
                    let started = Instant::now();
                    std::hint::black_box(authorize(bundle, request, &bundle.entities));
                    started.elapsed()
                })
                .collect();
            times.sort();
            report.push((
                label,
                count,
                times.len(),
                percentile(&times, 0.5),
                percentile(&times, 0.99),
            ));
        }
    }
    group.finish();
    println!("\npolicies  evaluation   p50         p99   timed decisions");
    for (label, count, timed, p50, p99) in &report {
        println!("{count:>8}  {label:<9} {p50:>9.2?} {p99:>11.2?}   {timed}");
    }
    let p99 = |label: &str, count: usize| {
        report
            .iter()
            .find(|(l, c, _, _, _)| *l == label && *c == count)
            .map(|(_, _, _, _, p99)| p99.as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    println!(
        "sliced p99 at 1,000 policies / at 10: {:.2} (target ≤ 2); unsliced: {:.2}",
        p99("sliced", 1_000) / p99("sliced", 10),
        p99("unsliced", 1_000) / p99("unsliced", 10)
    );
}

criterion_group!(benches, decision);
criterion_main!(benches);
