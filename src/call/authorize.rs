//! Who may run a call where: each named target's decision (grants and the target's ceiling
//! together), and the second look after a wait for a person.

use std::sync::Arc;

use super::Pipeline;
use crate::audit::Sink;
use crate::model::{Caller, Requirement, Reresolve};
use crate::policy;
use crate::targets::Target;

/// Who may run a call where: each named target's decision (grants and ceiling together).
pub(super) struct Authorized {
    pub(super) decisions: Vec<(Arc<Target>, policy::Decision)>,
    pub(super) allowed: Vec<Arc<Target>>,
    pub(super) grants: Vec<String>,
}

impl Authorized {
    /// The targets as the audit row names them.
    pub(super) fn target_list(&self) -> String {
        self.decisions
            .iter()
            .map(|(t, _)| t.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn denied(&self) -> Vec<String> {
        self.decisions
            .iter()
            .filter(|(_, d)| !d.allowed)
            .map(|(t, d)| format!("{}: {}", t.id, d.reason))
            .collect()
    }

    /// Why nothing is allowed.
    pub(super) fn denial(&self, fanout: bool) -> String {
        match (&self.decisions[..], fanout) {
            ([(_, d)], false) => d.reason.clone(),
            _ => self.denied().join("; "),
        }
    }

    /// Why the call may run (and where it may not, under fan-out).
    pub(super) fn reason(&self) -> String {
        let denied = self.denied();
        if denied.is_empty() {
            self.decisions
                .iter()
                .map(|(_, d)| d.reason.clone())
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            format!("partly denied: {}", denied.join("; "))
        }
    }
}

/// Decide `requires` on each of `targets`. Across targets (the approvals tools), only the
/// targets that allow it count, and the call is denied when none does.
pub(super) fn authorize_all(
    effective: &policy::Effective,
    requires: Requirement,
    targets: Vec<Arc<Target>>,
    across: bool,
) -> Authorized {
    let mut decisions: Vec<(Arc<Target>, policy::Decision)> = targets
        .into_iter()
        .map(|t| {
            let d = t.authorize(effective, requires);
            (t, d)
        })
        .collect();
    if across {
        let any = decisions.iter().find(|(_, d)| !d.allowed).map(|(_, d)| d.clone());
        decisions.retain(|(_, d)| d.allowed);
        if decisions.is_empty() {
            let (scope, why) = match requires {
                Requirement::Across(s) | Requirement::Scope(s) => (s.to_string(), any.map(|d| d.reason)),
                Requirement::AnyGrant => ("a grant".into(), None),
            };
            return Authorized {
                decisions: vec![(
                    Arc::new(Target::local()),
                    policy::Decision {
                        allowed: false,
                        reason: format!(
                            "{scope} is not granted on any target{}",
                            why.map(|w| format!(" ({w})")).unwrap_or_default()
                        ),
                        grants: Vec::new(),
                    },
                )],
                allowed: Vec::new(),
                grants: Vec::new(),
            };
        }
    }
    let allowed = decisions
        .iter()
        .filter(|(_, d)| d.allowed)
        .map(|(t, _)| t.clone())
        .collect();
    let mut grants: Vec<String> = decisions.iter().flat_map(|(_, d)| d.grants.clone()).collect();
    grants.sort();
    grants.dedup();
    Authorized {
        decisions,
        allowed,
        grants,
    }
}

/// After a wait for a person: ask tailscaled again who is behind the connection (no cache)
/// and check that it is the same principal and node and still holds the call's scope on every
/// target it was allowed on. Any doubt refuses.
pub(super) async fn still_authorized<A: Sink>(
    again: Option<&dyn Reresolve>,
    pipeline: &Pipeline<A>,
    caller: &Caller,
    requires: Requirement,
    authorized: &Authorized,
) -> Result<(), String> {
    let again =
        again.ok_or_else(|| "authorization could not be checked again after the wait; nothing ran".to_string())?;
    let now = again
        .fresh()
        .await
        .map_err(|e| format!("authorization checked again after the wait: {e}; nothing ran"))?;
    if now.principal != caller.principal || now.node_id != caller.node_id {
        return Err(format!(
            "authorization checked again after the wait: the connection is now {} on {}, not {} on {}; nothing ran",
            now.principal, now.node_id, caller.principal, caller.node_id
        ));
    }
    let effective = pipeline.effective(&now);
    let lost: Vec<String> = authorized
        .allowed
        .iter()
        .filter_map(|t| {
            let d = t.authorize(&effective, requires);
            (!d.allowed).then(|| format!("{}: {}", t.id, d.reason))
        })
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "authorization revoked during the wait ({}); nothing ran",
            lost.join("; ")
        ))
    }
}
