//! Fuzzed route tables and requests: building and looking up never panics, and a match binds
//! exactly the template's parameters from the segments the template's literals accept.
//!
//! Input: lines of `METHOD TEMPLATE` (the routes), then an empty line, then `METHOD TARGET`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::canonical::canonicalize;
use portcullis::routes::{Lookup, PathTemplate, RouteSpec, RouteTable, TemplateSegment};

fuzz_target!(|input: &str| {
    let Some((routes, request)) = input.split_once("\n\n") else {
        return;
    };
    let specs: Vec<RouteSpec<usize>> = routes
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(method, template)| Some((method, PathTemplate::parse(template).ok()?)))
        .enumerate()
        .map(|(index, (method, template))| RouteSpec {
            host: None,
            methods: vec![method.to_string()],
            template,
            payload: index,
        })
        .collect();
    let Ok(table) = RouteTable::build(specs.clone()) else {
        return;
    };
    let Some((method, target)) = request.split_once(' ') else {
        return;
    };
    let Ok(target) = canonicalize(target.as_bytes()) else {
        return;
    };
    let Lookup::Matched { route, params } = table.lookup(None, method, &target.segments) else {
        return;
    };
    let spec = &specs[*route];
    assert!(spec.methods.iter().any(|m| m == method) || method == "HEAD");
    let mut bound = params.iter();
    for (i, segment) in spec.template.segments.iter().enumerate() {
        match segment {
            TemplateSegment::Literal(literal) => assert_eq!(&target.segments[i], literal),
            TemplateSegment::Param(name) => {
                let (bound_name, value) = bound.next().expect("a parameter was not bound");
                assert_eq!(bound_name, name);
                assert_eq!(value, &target.segments[i]);
            }
            TemplateSegment::CatchAll(name) => {
                let (bound_name, value) = bound.next().expect("the catch-all was not bound");
                assert_eq!(bound_name, name);
                assert_eq!(value, &target.segments[i..].join("/"));
            }
        }
    }
    assert!(bound.next().is_none(), "more parameters bound than the template has");
    let ends_in_catch_all = matches!(
        spec.template.segments.last(),
        Some(TemplateSegment::CatchAll(_))
    );
    if !ends_in_catch_all {
        assert_eq!(spec.template.segments.len(), target.segments.len());
    }
});
