//! `targets_list` (the targets the caller may use, with what they may do there) and
//! `targets_check` (connectivity and credentials of the target it runs on; fan out with
//! `targets`). Checks go through `targets::Target::check`, never to a client library.

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Annotations, Requirement, Risk, Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use crate::policy::{self, Area, Level, Scope};
use crate::targets::Health;

pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![Arc::new(List::new()), Arc::new(Check::new())]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// The targets this caller may use.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TargetList {
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TargetView {
    pub id: String,
    /// `local`, `ssh`, `docker` or `http`.
    pub kind: String,
    pub groups: Vec<String>,
    /// Scopes this caller holds here (grants within the target's own ceiling).
    pub scopes: Vec<String>,
    /// The target's ceiling, if it has one.
    pub target_allows: Option<Vec<String>>,
    pub max_concurrent: usize,
    pub timeout_secs: u64,
}

struct List {
    spec: ToolSpec,
}

impl List {
    fn new() -> List {
        List {
            spec: ToolSpec {
                name: "targets_list",
                title: "List targets",
                description: "The systems you may operate through this server (this host is `local`), each with its \
                              kind (local, ssh, docker, http), groups, and the scopes you hold there. Pass a target's \
                              id as `target` to other tools, or several ids / `group:NAME` as `targets` to fan out.",
                requires: Requirement::AnyGrant,
                risk: Risk::Low,
                annotations: Annotations {
                    read_only: true,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                input_schema: super::input_schema::<NoArgs>(),
                output_schema: super::output_schema::<TargetList>(),
            },
        }
    }
}

impl Tool for List {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            let _: NoArgs = super::parse_args(args)?;
            let TargetList { targets } = visible(&ctx.targets, &ctx.grants);
            let mut text = format!("{} target(s) you may use:\n", targets.len());
            for t in &targets {
                text.push_str(&format!("  {:<16} {:<7} {}\n", t.id, t.kind, t.scopes.join(", ")));
            }
            ToolOutput::new(&TargetList { targets }, text)
        })
    }
}

/// The targets a caller with `grants` may use, with the scopes they hold on each (also the
/// `tailopsmcp://targets` resource).
pub fn visible(registry: &crate::targets::Registry, grants: &policy::Effective) -> TargetList {
    let targets = registry
        .all()
        .iter()
        .filter_map(|t| {
            let granted: Vec<Scope> = policy::scopes_on(grants, &t.id).into_iter().map(|(s, _)| s).collect();
            let scopes: Vec<String> = effective_scopes(&granted, t.scopes.as_deref())
                .into_iter()
                .map(|s| s.to_string())
                .collect();
            (!scopes.is_empty()).then(|| TargetView {
                id: t.id.clone(),
                kind: t.kind.as_str().to_string(),
                groups: t.groups.clone(),
                scopes,
                target_allows: t.scopes.as_ref().map(|v| v.iter().map(|s| s.to_string()).collect()),
                max_concurrent: t.max_concurrent,
                timeout_secs: t.limits.timeout.as_secs(),
            })
        })
        .collect();
    TargetList { targets }
}

/// What a caller can do on a target: every scope both the grants and the target's ceiling cover,
/// keeping only the highest level per area.
fn effective_scopes(granted: &[Scope], ceiling: Option<&[Scope]>) -> Vec<Scope> {
    let candidates: Vec<Scope> = granted.iter().chain(ceiling.unwrap_or(&[])).copied().collect();
    let mut out: Vec<Scope> = candidates
        .into_iter()
        .filter(|x| granted.iter().any(|g| g.covers(*x)))
        .filter(|x| ceiling.is_none_or(|c| c.iter().any(|have| have.covers(*x))))
        .collect();
    out.sort();
    out.dedup();
    let keep: Vec<Scope> = out
        .iter()
        .copied()
        .filter(|x| !out.iter().any(|y| y != x && y.covers(*x)))
        .collect();
    keep
}

struct Check {
    spec: ToolSpec,
}

impl Check {
    fn new() -> Check {
        Check {
            spec: ToolSpec {
                name: "targets_check",
                title: "Check a target",
                description: "Connect to the target (default `local`), authenticate, and run the cheapest real \
                              operation; reports ok, latency and what failed (unreachable, host key or TLS \
                              verification, credentials). Use `targets` to check several at once.",
                requires: Requirement::Scope(Scope::new(Area::Targets, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations {
                    read_only: true,
                    destructive: false,
                    idempotent: true,
                    open_world: true,
                },
                input_schema: super::input_schema::<NoArgs>(),
                output_schema: super::output_schema::<Health>(),
            },
        }
    }
}

impl Tool for Check {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            let _: NoArgs = super::parse_args(args)?;
            let health = ctx.target.check().await;
            let text = format!(
                "{} ({}): {} in {:.1} ms: {}",
                health.target,
                health.kind,
                if health.ok { "ok" } else { "FAILED" },
                health.latency_ms,
                health.detail
            );
            if health.ok {
                ToolOutput::new(&health, text)
            } else {
                Err(ToolError::Failed(text))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(granted: &[&str], ceiling: Option<&[&str]>, expected: &[&str]) {
        let p = |v: &[&str]| v.iter().map(|s| s.parse::<Scope>().unwrap()).collect::<Vec<_>>();
        let ceiling = ceiling.map(p);
        let got: Vec<String> = effective_scopes(&p(granted), ceiling.as_deref())
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, expected, "{granted:?} within {ceiling:?}");
    }

    #[test]
    fn grants_are_cut_to_the_ceiling() {
        check(&["system:admin"], Some(&["system:read"]), &["system:read"]);
        check(&["system:read"], Some(&["system:admin"]), &["system:read"]);
        check(&["system:read", "logs:control"], None, &["system:read", "logs:control"]);
        check(&["system:control", "system:read"], None, &["system:control"]);
        check(&["logs:read"], Some(&["system:admin"]), &[]);
    }
}
