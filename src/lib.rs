//! Portcullis: an authorization enforcement gateway on pingora.
//!
//! Every request flows one way: canonicalize → route → authenticate → build the Cedar request
//! → authorize → forward or deny → log. The stages are pure modules (`canonical`, `routes`,
//! `authn`, `authz`, `pipeline`, `response`); `proxy` and `server` are the thin pingora glue,
//! and `upstream` holds the pools behind it.

// No `unwrap`/`expect` outside tests (`.clippy.toml` allows them there); the few provably
// infallible spots say why where they allow it.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod authn;
pub mod authz;
pub mod bundle;
pub mod canonical;
pub mod check;
pub mod cli;
pub mod config;
mod cors;
pub mod decision_log;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dev_issuer;
mod diagnostics;
pub mod directory;
pub mod explain;
pub mod ext_authz;
mod http_body;
pub mod http_server;
mod identity;
pub mod identity_headers;
mod inputs;
mod metrics;
mod model;
pub mod offline;
pub mod pipeline;
pub mod policy_test;
pub mod proxy;
pub mod reload;
mod response;
pub mod routes;
mod secret;
pub mod server;
pub mod snapshot;
mod telemetry;
mod tls;
mod trust;
mod upstream;

/// The module graph has no cycle: every top-level module imports only modules that do not
/// import it back, directly or through others. Read from the sources (`crate::<module>`
/// outside `#[cfg(test)]` modules), so a new cycle fails the test suite.
#[cfg(test)]
mod module_graph {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let relative = file.strip_prefix(&root).unwrap();
            let first = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let uses = edges.entry(module.clone()).or_default();
            for (index, _) in code.match_indices("crate::") {
                let name: String = code[index + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
        edges
    }

    /// A cycle through `start`, if there is one.
    fn cycle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        let mut stack = vec![(start.to_string(), vec![start.to_string()])];
        let mut seen = BTreeSet::new();
        while let Some((module, path)) = stack.pop() {
            for next in edges.get(&module).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
        None
    }

    #[test]
    fn the_modules_import_each_other_in_one_direction_only() {
        let edges = graph();
        assert!(edges.len() > 20, "the sources were not found: {edges:?}");
        let cycles: Vec<String> = edges
            .keys()
            .filter_map(|module| cycle_from(module, &edges))
            .map(|cycle| cycle.join(" -> "))
            .collect();
        assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
        // The check itself finds a cycle when there is one.
        let mut with_cycle = edges.clone();
        with_cycle
            .entry("routes".into())
            .or_default()
            .insert("config".into());
        assert!(cycle_from("routes", &with_cycle).is_some());
    }
}
