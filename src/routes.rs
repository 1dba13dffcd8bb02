//! The compiled route table: (host, method, canonical path segments) → route and parameters.
//!
//! Templates are parsed and checked once at load into a segment trie per host. Matching walks
//! the trie left to right; at each segment a literal beats a parameter, which beats a final
//! catch-all, and a branch is left (backtracking) only when nothing below it can match. A route
//! is a candidate only if it accepts the method (a GET route also serves HEAD), so the winner is
//! always the most specific route for this method. Two routes with the same shape, host and a
//! shared method would make the choice arbitrary, so they are a load error.

use std::collections::HashMap;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateSegment {
    Literal(String),
    Param(String),
    CatchAll(String),
}

/// A parsed path template such as `/lists/{list_id}/tasks/{*rest}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub segments: Vec<TemplateSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("path must start with '/'")]
    NoLeadingSlash,
    #[error("path has an empty segment ('//')")]
    EmptySegment,
    #[error("segment {0:?}: a parameter must be a whole segment written {{name}} or {{*name}}")]
    MalformedParam(String),
    #[error("parameter name {0:?} must be letters, digits and '_' and not start with a digit")]
    BadParamName(String),
    #[error("parameter {0:?} appears twice")]
    DuplicateParam(String),
    #[error("catch-all {{*{0}}} must be the last segment")]
    CatchAllNotLast(String),
    #[error("segment {0:?} has a character that must be percent-encoded in a canonical path")]
    NonCanonicalLiteral(String),
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_canonical_literal(segment: &str) -> bool {
    segment.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            )
    }) && segment != "."
        && segment != ".."
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let rest = template
            .strip_prefix('/')
            .ok_or(TemplateError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        if rest.is_empty() {
            return Ok(PathTemplate { segments });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let last = parts.len() - 1;
        let mut names = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let segment =
                if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    let (name, catch_all) = match inner.strip_prefix('*') {
                        Some(name) => (name, true),
                        None => (inner, false),
                    };
                    if !is_identifier(name) {
                        return Err(TemplateError::BadParamName(name.to_string()));
                    }
                    if names.contains(&name) {
                        return Err(TemplateError::DuplicateParam(name.to_string()));
                    }
                    names.push(name);
                    if catch_all {
                        if i != last {
                            return Err(TemplateError::CatchAllNotLast(name.to_string()));
                        }
                        TemplateSegment::CatchAll(name.to_string())
                    } else {
                        TemplateSegment::Param(name.to_string())
                    }
                } else if part.contains('{') || part.contains('}') {
                    return Err(TemplateError::MalformedParam(part.to_string()));
                } else if part.is_empty() && i != last {
                    return Err(TemplateError::EmptySegment);
                } else if !is_canonical_literal(part) {
                    return Err(TemplateError::NonCanonicalLiteral(part.to_string()));
                } else {
                    TemplateSegment::Literal(part.to_string())
                };
            segments.push(segment);
        }
        Ok(PathTemplate { segments })
    }

    /// Names of the parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            TemplateSegment::Param(n) | TemplateSegment::CatchAll(n) => Some(n.as_str()),
            TemplateSegment::Literal(_) => None,
        })
    }

    /// The template with parameter names erased: two templates with the same shape match
    /// exactly the same paths.
    fn shape(&self) -> Vec<TemplateSegment> {
        self.segments
            .iter()
            .map(|s| match s {
                TemplateSegment::Literal(l) => TemplateSegment::Literal(l.clone()),
                TemplateSegment::Param(_) => TemplateSegment::Param(String::new()),
                TemplateSegment::CatchAll(_) => TemplateSegment::CatchAll(String::new()),
            })
            .collect()
    }
}

/// Does a route that lists `methods` serve a request with `method`? HEAD is served by GET.
fn serves(methods: &[String], method: &str) -> bool {
    methods.iter().any(|m| m == method) || (method == "HEAD" && methods.iter().any(|m| m == "GET"))
}

/// What a route table needs to know about a route; the payload `T` is everything else.
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    pub host: Option<String>,
    pub methods: Vec<String>,
    pub template: PathTemplate,
    pub payload: T,
}

/// Two routes that could match the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub first: usize,
    pub second: usize,
    pub method: String,
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<String, Node>,
    param: Option<Box<Node>>,
    /// Routes ending in a catch-all at this depth.
    catch_all: Vec<usize>,
    /// Routes ending exactly here.
    endpoints: Vec<usize>,
}

impl Node {
    fn insert(&mut self, segments: &[TemplateSegment], route: usize) {
        match segments.split_first() {
            None => self.endpoints.push(route),
            Some((TemplateSegment::Literal(l), rest)) => self
                .literals
                .entry(l.clone())
                .or_default()
                .insert(rest, route),
            Some((TemplateSegment::Param(_), rest)) => self
                .param
                .get_or_insert_with(Box::default)
                .insert(rest, route),
            Some((TemplateSegment::CatchAll(_), _)) => self.catch_all.push(route),
        }
    }
}

/// The result of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Matched {
        route: &'a T,
        /// Path parameters in template order; a catch-all holds the rest of the path.
        params: Vec<(&'a str, String)>,
    },
    /// The path is routed, but not for this method.
    MethodNotAllowed {
        allowed: Vec<String>,
    },
    NotFound,
}

/// Routes compiled into one trie per host plus one for routes without a host.
#[derive(Debug)]
pub struct RouteTable<T> {
    routes: Vec<RouteSpec<T>>,
    by_host: HashMap<String, Node>,
    any_host: Node,
}

impl<T> RouteTable<T> {
    /// Builds the table, or returns every pair of overlapping routes (indices into `routes`).
    pub fn build(routes: Vec<RouteSpec<T>>) -> Result<Self, Vec<Overlap>> {
        let mut overlaps = Vec::new();
        let mut seen: HashMap<(Option<String>, Vec<TemplateSegment>), Vec<usize>> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            let key = (route.host.clone(), route.template.shape());
            let same_shape = seen.entry(key).or_default();
            for &j in same_shape.iter() {
                let other = &routes[j];
                let shared = route
                    .methods
                    .iter()
                    .map(String::as_str)
                    .chain(["HEAD"])
                    .find(|m| serves(&other.methods, m) && serves(&route.methods, m));
                if let Some(method) = shared {
                    overlaps.push(Overlap {
                        first: j,
                        second: i,
                        method: method.to_string(),
                    });
                }
            }
            same_shape.push(i);
        }
        if !overlaps.is_empty() {
            return Err(overlaps);
        }
        let mut by_host: HashMap<String, Node> = HashMap::new();
        let mut any_host = Node::default();
        for (i, route) in routes.iter().enumerate() {
            let node = match &route.host {
                Some(host) => by_host.entry(host.clone()).or_default(),
                None => &mut any_host,
            };
            node.insert(&route.template.segments, i);
        }
        Ok(RouteTable {
            routes,
            by_host,
            any_host,
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = &RouteSpec<T>> {
        self.routes.iter()
    }

    /// Finds the route for a request. Routes for the request's host are searched first; routes
    /// without a host apply when the host has no route for this path. Hosts, the routes' and
    /// the request's, are in `canonicalize_host` form.
    pub fn lookup(&self, host: Option<&str>, method: &str, segments: &[String]) -> Lookup<'_, T> {
        let mut allowed = Vec::new();
        let host_node = host.and_then(|h| self.by_host.get(h));
        for node in host_node.into_iter().chain([&self.any_host]) {
            if let Some(route) = self.walk(node, segments, method, &mut allowed) {
                let spec = &self.routes[route];
                return Lookup::Matched {
                    route: &spec.payload,
                    params: bind_params(&spec.template, segments),
                };
            }
            if !allowed.is_empty() {
                break;
            }
        }
        if allowed.is_empty() {
            return Lookup::NotFound;
        }
        if allowed.iter().any(|m| m == "GET") && !allowed.iter().any(|m| m == "HEAD") {
            allowed.push("HEAD".to_string());
        }
        allowed.sort();
        allowed.dedup();
        Lookup::MethodNotAllowed { allowed }
    }

    /// Depth-first, most specific branch first. Returns the first route that serves `method`;
    /// collects the methods of routes whose path matched but whose method did not.
    fn walk(
        &self,
        node: &Node,
        segments: &[String],
        method: &str,
        allowed: &mut Vec<String>,
    ) -> Option<usize> {
        let Some((first, rest)) = segments.split_first() else {
            return self.pick(&node.endpoints, method, allowed);
        };
        if let Some(child) = node.literals.get(first) {
            if let Some(found) = self.walk(child, rest, method, allowed) {
                return Some(found);
            }
        }
        if !first.is_empty() {
            if let Some(child) = &node.param {
                if let Some(found) = self.walk(child, rest, method, allowed) {
                    return Some(found);
                }
            }
            if !segments.iter().all(String::is_empty) {
                return self.pick(&node.catch_all, method, allowed);
            }
        }
        None
    }

    fn pick(&self, candidates: &[usize], method: &str, allowed: &mut Vec<String>) -> Option<usize> {
        for &i in candidates {
            let methods = &self.routes[i].methods;
            if serves(methods, method) {
                return Some(i);
            }
            allowed.extend(methods.iter().cloned());
        }
        None
    }
}

fn bind_params<'a>(template: &'a PathTemplate, segments: &[String]) -> Vec<(&'a str, String)> {
    let mut params = Vec::new();
    for (i, segment) in template.segments.iter().enumerate() {
        match segment {
            TemplateSegment::Literal(_) => {}
            TemplateSegment::Param(name) => params.push((name.as_str(), segments[i].clone())),
            TemplateSegment::CatchAll(name) => {
                params.push((name.as_str(), segments[i..].join("/")))
            }
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(methods: &[&str], path: &str, name: &'static str) -> RouteSpec<&'static str> {
        RouteSpec {
            host: None,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            template: PathTemplate::parse(path).unwrap(),
            payload: name,
        }
    }

    fn segs(path: &str) -> Vec<String> {
        crate::canonical::canonicalize(path.as_bytes())
            .unwrap()
            .segments
    }

    fn table() -> RouteTable<&'static str> {
        RouteTable::build(vec![
            spec(&["GET"], "/lists", "lists"),
            spec(&["POST"], "/lists", "create-list"),
            spec(&["GET"], "/lists/{list_id}", "list"),
            spec(&["GET"], "/lists/mine", "my-lists"),
            spec(&["GET", "PUT"], "/lists/{list_id}/tasks/{task_id}", "task"),
            spec(
                &["DELETE"],
                "/lists/{list_id}/tasks/{task_id}",
                "delete-task",
            ),
            spec(&["GET"], "/lists/{list_id}/archive", "archive"),
            spec(&["GET"], "/lists/mine/tasks/{task_id}/x", "deep"),
            spec(&["GET"], "/files/{*rest}", "files"),
            spec(&["GET"], "/", "root"),
        ])
        .unwrap()
    }

    fn matched(
        t: &RouteTable<&'static str>,
        method: &str,
        path: &str,
    ) -> (&'static str, Vec<(String, String)>) {
        match t.lookup(None, method, &segs(path)) {
            Lookup::Matched { route, params } => (
                *route,
                params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn literal_beats_parameter_beats_catch_all() {
        let t = table();
        assert_eq!(matched(&t, "GET", "/lists/mine").0, "my-lists");
        assert_eq!(matched(&t, "GET", "/lists/l1").0, "list");
        let (name, params) = matched(&t, "GET", "/lists/l1/tasks/t9");
        assert_eq!(name, "task");
        assert_eq!(
            params,
            [
                ("list_id".into(), "l1".into()),
                ("task_id".into(), "t9".into())
            ]
        );
        assert_eq!(matched(&t, "DELETE", "/lists/l1/tasks/t9").0, "delete-task");
        assert_eq!(matched(&t, "GET", "/").0, "root");
    }

    #[test]
    fn backtracks_out_of_a_literal_branch() {
        let t = table();
        // `/lists/mine/...` has a literal branch, but only `/tasks/{id}/x` lives under it.
        let (name, params) = matched(&t, "GET", "/lists/mine/tasks/t1");
        assert_eq!(name, "task");
        assert_eq!(params[0], ("list_id".into(), "mine".into()));
        assert_eq!(matched(&t, "GET", "/lists/mine/archive").0, "archive");
    }

    #[test]
    fn catch_all_takes_the_rest() {
        let t = table();
        let (name, params) = matched(&t, "GET", "/files/a/b%20c/d");
        assert_eq!(name, "files");
        assert_eq!(params, [("rest".to_string(), "a/b c/d".to_string())]);
        assert_eq!(t.lookup(None, "GET", &segs("/files/")), Lookup::NotFound);
        assert_eq!(t.lookup(None, "GET", &segs("/files")), Lookup::NotFound);
    }

    #[test]
    fn head_is_served_by_get_and_405_lists_methods() {
        let t = table();
        assert_eq!(matched(&t, "HEAD", "/lists").0, "lists");
        assert_eq!(
            t.lookup(None, "PATCH", &segs("/lists/l1/tasks/t1")),
            Lookup::MethodNotAllowed {
                allowed: vec!["DELETE".into(), "GET".into(), "HEAD".into(), "PUT".into()]
            }
        );
        assert_eq!(t.lookup(None, "GET", &segs("/nope")), Lookup::NotFound);
        assert_eq!(
            t.lookup(None, "get", &segs("/lists")),
            Lookup::MethodNotAllowed {
                allowed: vec!["GET".into(), "HEAD".into(), "POST".into()]
            }
        );
    }

    #[test]
    fn trailing_slash_is_significant() {
        let t = table();
        assert_eq!(t.lookup(None, "GET", &segs("/lists/")), Lookup::NotFound);
    }

    #[test]
    fn host_routes_take_precedence() {
        let mut host_route = spec(&["GET"], "/lists", "host-lists");
        host_route.host = Some("api.example.com".into());
        let t = RouteTable::build(vec![
            host_route,
            spec(&["GET"], "/lists", "lists"),
            spec(&["GET"], "/other", "other"),
        ])
        .unwrap();
        assert_eq!(
            t.lookup(Some("api.example.com"), "GET", &segs("/lists")),
            Lookup::Matched {
                route: &"host-lists",
                params: vec![]
            }
        );
        assert_eq!(
            t.lookup(Some("other.example.com"), "GET", &segs("/lists")),
            Lookup::Matched {
                route: &"lists",
                params: vec![]
            }
        );
        assert_eq!(
            t.lookup(Some("api.example.com"), "GET", &segs("/other")),
            Lookup::Matched {
                route: &"other",
                params: vec![]
            }
        );
    }

    #[test]
    fn same_shape_and_method_is_an_overlap() {
        let overlaps = RouteTable::build(vec![
            spec(&["GET"], "/lists/{a}", "x"),
            spec(&["POST"], "/lists/{b}", "y"),
            spec(&["PUT", "GET"], "/lists/{c}", "z"),
        ])
        .unwrap_err();
        assert_eq!(
            overlaps,
            vec![Overlap {
                first: 0,
                second: 2,
                method: "GET".into()
            }]
        );
        let head = RouteTable::build(vec![spec(&["GET"], "/a", "x"), spec(&["HEAD"], "/a", "y")])
            .unwrap_err();
        assert_eq!(head[0].method, "HEAD");
        assert!(RouteTable::build(vec![
            spec(&["GET"], "/a/{x}", "x"),
            spec(&["GET"], "/a/b", "y")
        ])
        .is_ok());
        let mut first = spec(&["GET"], "/a", "x");
        first.host = Some("api.example.com".into());
        let mut second = spec(&["GET"], "/a", "y");
        second.host = Some("api.example.com".into());
        assert_eq!(RouteTable::build(vec![first, second]).unwrap_err().len(), 1);
    }

    #[test]
    fn template_errors() {
        assert_eq!(
            PathTemplate::parse("lists"),
            Err(TemplateError::NoLeadingSlash)
        );
        assert_eq!(
            PathTemplate::parse("/a//b"),
            Err(TemplateError::EmptySegment)
        );
        assert_eq!(
            PathTemplate::parse("/a/{x}/{x}"),
            Err(TemplateError::DuplicateParam("x".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/{*x}/b"),
            Err(TemplateError::CatchAllNotLast("x".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/x{y}"),
            Err(TemplateError::MalformedParam("x{y}".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/{1x}"),
            Err(TemplateError::BadParamName("1x".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a b"),
            Err(TemplateError::NonCanonicalLiteral("a b".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/.."),
            Err(TemplateError::NonCanonicalLiteral("..".into()))
        );
        let t = PathTemplate::parse("/a/{x}/{*rest}").unwrap();
        assert_eq!(t.param_names().collect::<Vec<_>>(), ["x", "rest"]);
    }
}
