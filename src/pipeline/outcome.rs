//! What the pipeline decided about a request, and how far the request got: the verdict
//! (forward, with the decision that permitted it, or refuse) and the facts each stage learned,
//! for the response, the decision log and `portcullis explain`.

use std::sync::Arc;
use std::time::Duration;

use super::{Denial, Forward};
use crate::authz::{BuiltPrincipal, Decision};
use crate::snapshot::{EnforcementMode, Snapshot};

/// What happened to a request, for the response and the decision log.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub snapshot_version: u64,
    /// The version of the synced directory the snapshot holds, if any.
    pub directory_version: Option<Arc<str>>,
    pub verdict: Verdict,
}

/// Forward, with the decision that permitted it; or refuse, with how far the request got.
#[derive(Debug, Clone)]
pub enum Verdict {
    Forward {
        forward: Forward,
        decided: Decided,
    },
    Refuse {
        denial: Denial,
        /// `None`: the head was refused before its path was canonical.
        reached: Option<Reached>,
    },
}

/// How far a refused request got through the stages.
#[derive(Debug, Clone)]
pub enum Reached {
    /// The path is canonical; no route was chosen.
    Path(String),
    /// A route matched; the policies were not consulted.
    Route { path: String, route: RouteTaken },
    /// The policies decided.
    Decided(Box<Decided>),
}

/// The route a request matched, as the decision log names it.
#[derive(Debug, Clone)]
pub struct RouteTaken {
    pub id: Arc<str>,
    pub action: Arc<str>,
    /// With `Audit`, a denied request is forwarded anyway.
    pub mode: EnforcementMode,
}

/// A request the policies decided on.
#[derive(Debug, Clone)]
pub struct Decided {
    pub path: String,
    pub route: RouteTaken,
    pub caller: CallerFacts,
    pub decision: Arc<Decision>,
    /// What the policies were evaluated on; absent when the token's principal could not be
    /// built (the decision is then a deny carrying the error).
    pub evaluated: Option<Evaluated>,
    /// Time spent building the Cedar request and evaluating the policies.
    pub authorization_time: Duration,
}

/// Who asked.
#[derive(Debug, Clone)]
pub enum CallerFacts {
    /// An anonymous route's configured principal.
    Anonymous { principal: Arc<str> },
    /// A verified token: its `iss` and the principal it names.
    Token { issuer: String, principal: Arc<str> },
}

/// The Cedar request the policies were evaluated on.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The resource (`Type::"id"`).
    pub resource: Arc<str>,
    /// The principal entity built from the token; absent for the anonymous principal.
    pub principal_entity: Option<BuiltPrincipal>,
    /// The whole request (for `portcullis explain`); absent when the decision came from the
    /// decision cache.
    pub cedar_request: Option<Box<cedar_policy::Request>>,
}

impl Outcome {
    /// The outcome of a request refused before the pipeline ran (by a front end).
    pub fn refused(snapshot: &Snapshot, denial: Denial) -> Self {
        Outcome {
            snapshot_version: snapshot.version,
            directory_version: snapshot.directory.clone(),
            verdict: Verdict::Refuse {
                denial,
                reached: None,
            },
        }
    }

    pub fn forward(&self) -> Option<&Forward> {
        match &self.verdict {
            Verdict::Forward { forward, .. } => Some(forward),
            Verdict::Refuse { .. } => None,
        }
    }

    pub fn denial(&self) -> Option<&Denial> {
        match &self.verdict {
            Verdict::Forward { .. } => None,
            Verdict::Refuse { denial, .. } => Some(denial),
        }
    }

    /// The canonical path, once the target was read.
    pub fn path(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Forward { decided, .. } => Some(&decided.path),
            Verdict::Refuse { reached, .. } => reached.as_ref().map(Reached::path),
        }
    }

    /// The route, once one matched.
    pub fn route(&self) -> Option<&RouteTaken> {
        match &self.verdict {
            Verdict::Forward { decided, .. } => Some(&decided.route),
            Verdict::Refuse { reached, .. } => reached.as_ref().and_then(Reached::route),
        }
    }

    /// The policies' decision, once they were consulted.
    pub fn decided(&self) -> Option<&Decided> {
        match &self.verdict {
            Verdict::Forward { decided, .. } => Some(decided),
            Verdict::Refuse {
                reached: Some(Reached::Decided(decided)),
                ..
            } => Some(decided),
            Verdict::Refuse { .. } => None,
        }
    }

    /// Refuses a request after all, keeping what was decided (a permit whose identity cannot
    /// be passed on is refused: fail closed).
    pub fn revoke(&mut self, denial: Denial) {
        let reached = match std::mem::replace(
            &mut self.verdict,
            Verdict::Refuse {
                denial: denial.clone(),
                reached: None,
            },
        ) {
            Verdict::Forward { decided, .. } => Some(Reached::Decided(Box::new(decided))),
            Verdict::Refuse { reached, .. } => reached,
        };
        self.verdict = Verdict::Refuse { denial, reached };
    }
}

impl Reached {
    fn path(&self) -> &str {
        match self {
            Reached::Path(path) | Reached::Route { path, .. } => path,
            Reached::Decided(decided) => &decided.path,
        }
    }

    fn route(&self) -> Option<&RouteTaken> {
        match self {
            Reached::Path(_) => None,
            Reached::Route { route, .. } => Some(route),
            Reached::Decided(decided) => Some(&decided.route),
        }
    }
}

impl Decided {
    /// The principal as the decision log names it.
    pub fn principal(&self) -> &Arc<str> {
        match &self.caller {
            CallerFacts::Anonymous { principal } | CallerFacts::Token { principal, .. } => {
                principal
            }
        }
    }

    pub fn issuer(&self) -> Option<&str> {
        match &self.caller {
            CallerFacts::Anonymous { .. } => None,
            CallerFacts::Token { issuer, .. } => Some(issuer),
        }
    }
}
