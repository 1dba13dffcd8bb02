//! Authorization: the Cedar request for a route, evaluated against the policy bundle.
//!
//! Only an `Allow` with no evaluation errors permits. Cedar skips a policy whose evaluation
//! errors (so an erroring `forbid` would not deny); the gateway treats any error as a deny.

pub mod bundle;
mod cache_key;
mod conforming;
pub mod context;
pub mod decision_cache;
pub mod principals;
pub mod request;
pub mod schema_info;
mod scope_forbids;
pub mod slice;
#[cfg(test)]
mod test_rng;
mod typed_entity;

use std::sync::Arc;

use cedar_policy::{Authorizer, Decision as CedarDecision, Entities, Request};

pub use bundle::PolicyBundle;
pub use context::{RequestFacts, CONTEXT_KINDS};
pub use decision_cache::{CachedDecision, DecisionCache};
pub use principals::{BuiltPrincipal, PrincipalMemo};
pub use request::{principal_entity, Caller, Principal, ResourceSpec, RouteAuthz};

/// The scopes a deny says the token lacks: when every policy that determined it is a forbid
/// standing for a scope requirement (`scope_forbids`), sorted; `None` for any other deny.
pub fn missing_scopes(bundle: &PolicyBundle, decision: &Decision) -> Option<Vec<String>> {
    if decision.allowed || !decision.errors.is_empty() || decision.policies.is_empty() {
        return None;
    }
    let mut scopes = decision
        .policies
        .iter()
        .map(|id| bundle.scope_forbids.get(id).cloned())
        .collect::<Option<Vec<String>>>()?;
    scopes.sort();
    scopes.dedup();
    Some(scopes)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("the principal entity does not conform to the schema: {0}")]
    Principal(String),
    #[error("the resource entity does not conform to the schema: {0}")]
    Resource(String),
    #[error("the request context does not conform to the schema: {0}")]
    Context(String),
    #[error("the request does not conform to the schema: {0}")]
    Request(String),
    #[error("the request entities are inconsistent: {0}")]
    Entities(String),
}

/// The outcome of evaluating the policies for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Evaluation errors; any error makes the decision a deny.
    pub errors: Vec<String>,
}

impl Decision {
    /// A deny that no policy produced (the request could not be built).
    pub fn error(error: &AuthzError) -> Self {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error.to_string()],
        }
    }
}

/// Evaluates `request` against the bundle's policies: those of its action's, principal's and
/// resource's slice, which gives the same response as the whole set (see `slice`).
pub fn authorize(bundle: &PolicyBundle, request: &Request, entities: &Entities) -> Decision {
    let slice = match (request.action(), request.principal(), request.resource()) {
        (Some(action), Some(principal), Some(resource)) => bundle
            .slices
            .for_request(action, principal, resource, entities),
        _ => None,
    };
    let policies = slice.as_deref().unwrap_or(&bundle.policies);
    let response = Authorizer::new().is_authorized(request, policies, entities);
    let mut policies: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|id| id.to_string())
        .collect();
    policies.sort();
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    Decision {
        allowed: response.decision() == CedarDecision::Allow && errors.is_empty(),
        policies,
        errors,
    }
}

/// A request's decision, and what it was made about.
#[derive(Debug)]
pub struct Decided {
    pub decision: Arc<Decision>,
    /// The resource, as `Type::"id"`.
    pub resource: Arc<str>,
    /// The Cedar request, when the policies were evaluated now (not on a cache hit).
    pub request: Option<Request>,
}

/// The decision for `caller`'s request on the route `route_id`: remembered by `cache`, or
/// evaluated now (and remembered unless it has errors).
pub fn decide(
    cache: &DecisionCache,
    bundle: &PolicyBundle,
    route_id: &str,
    route: &RouteAuthz,
    caller: Caller<'_>,
    facts: &RequestFacts<'_>,
) -> Decided {
    let key = route.decision_key(route_id, caller, facts);
    if let Some(cached) = cache.get(&key) {
        return Decided {
            decision: cached.decision.clone(),
            resource: cached.resource.clone(),
            request: None,
        };
    }
    let resource: Arc<str> = route.resource_name(facts.params).into();
    match route.build(bundle, caller, facts) {
        Ok((request, entities)) => {
            let decision = Arc::new(authorize(bundle, &request, &entities));
            cache.insert(
                key,
                Arc::new(CachedDecision {
                    decision: decision.clone(),
                    resource: resource.clone(),
                }),
            );
            Decided {
                decision,
                resource,
                request: Some(request),
            }
        }
        Err(e) => Decided {
            decision: Arc::new(Decision::error(&e)),
            resource,
            request: None,
        },
    }
}
