//! Canonicalization plus route matching, with 10 and with 10,000 routes: the work every request
//! does before authentication. The route table is a trie, so the cost should barely depend on
//! the number of routes.
//!
//! Run with `cargo bench --bench routing`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::canonical::canonicalize;
use portcullis::routes::{Lookup, PathTemplate, RouteSpec, RouteTable};

/// `count` routes shaped like a real API: `/service{i}/items/{item_id}` and a few siblings.
fn table(count: usize) -> RouteTable<usize> {
    let shapes = [
        "/service{i}/items/{item_id}",
        "/service{i}/items/{item_id}/comments",
        "/service{i}/items",
        "/service{i}/owners/{owner_id}/items/{item_id}",
    ];
    let routes = (0..count)
        .map(|n| {
            let template = shapes[n % shapes.len()].replace("{i}", &(n / shapes.len()).to_string());
            RouteSpec {
                host: None,
                methods: vec!["GET".to_string(), "POST".to_string()],
                template: PathTemplate::parse(&template).expect("valid template"),
                payload: n,
            }
        })
        .collect();
    RouteTable::build(routes).expect("no overlapping routes")
}

fn canonicalize_and_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonicalize_and_route");
    for count in [10usize, 10_000] {
        let routes = table(count);
        // A route in the middle of the table, with percent-encoding to normalize.
        let service = count / 4 / 2;
        let target = format!("/service{service}/owners/u%2D42/items/item-7?expand=owner");
        group.bench_with_input(BenchmarkId::from_parameter(count), &target, |b, target| {
            b.iter(|| {
                let canonical = canonicalize(target.as_bytes()).expect("canonical target");
                match routes.lookup(None, "GET", &canonical.segments) {
                    Lookup::Matched { route, params } => (*route, params.len()),
                    _ => panic!("the target is routed"),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, canonicalize_and_route);
criterion_main!(benches);
