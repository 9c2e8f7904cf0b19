//! `targets_list` (the targets the caller may use, with what they may do there and their
//! health, checked at most every [`HEALTH_MAX_AGE`]) and `targets_check` (connectivity and
//! credentials of the target it runs on; fan out with `targets`). Checks go through
//! `targets::Target::check`, never to a client library; [`visible`] runs none (the
//! `tailopsmcp://targets` resource uses it).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ANY_KIND, Annotations, Declaration, Output, Requirement, Risk, Tool, ToolContext, ToolError, tool};
use crate::policy::{self, Area, Level, Scope};
use crate::targets::{Health, Registry, Target};

/// `targets_list` checks a target again when its recorded health is older than this.
pub const HEALTH_MAX_AGE: Duration = Duration::from_secs(30);

/// How many targets `targets_list` checks at once.
const CHECKS_AT_ONCE: usize = 8;

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "targets_list",
                title: "List targets",
                description: "The systems you may operate through this server (this host is `local`), each with its \
                    kind (local, ssh, docker, http), groups, the scopes you hold there, and its health \
                    (reachable with working credentials; checked at most every 30 s, `checked_at` says \
                    when). Pass a target's id as `target` to other tools, or several ids / `group:NAME` \
                    as `targets` to fan out.",
                requires: Requirement::AnyGrant,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: ANY_KIND,
            },
            list,
        ),
        tool(
            Declaration {
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
                kinds: ANY_KIND,
            },
            check,
        ),
    ]
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
    /// The target's last connectivity check; null until one ran.
    pub health: Option<TargetHealth>,
}

/// A target's last connectivity and credentials check (what `targets_check` reports).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TargetHealth {
    pub ok: bool,
    /// What was checked and what it found, or what failed (never a secret).
    pub detail: String,
    pub latency_ms: f64,
    /// When the check finished (RFC 3339, UTC).
    pub checked_at: String,
}

/// `targets_list`.
async fn list(ctx: ToolContext, _: NoArgs) -> Result<Output<TargetList>, ToolError> {
    refresh_health(&ctx.targets, &ctx.grants, HEALTH_MAX_AGE).await;
    let TargetList { targets } = visible(&ctx.targets, &ctx.grants);
    let mut text = format!("{} target(s) you may use:\n", targets.len());
    for t in &targets {
        let health = match &t.health {
            Some(h) if h.ok => "ok".to_string(),
            Some(h) => format!("FAILED: {}", h.detail),
            None => "unchecked".to_string(),
        };
        text.push_str(&format!(
            "  {:<16} {:<7} {:<40} {health}\n",
            t.id,
            t.kind,
            t.scopes.join(", ")
        ));
    }
    Ok(Output::new(TargetList { targets }, text))
}

/// The targets a caller with `grants` may use, with the scopes they hold on each and their
/// recorded health (also the `tailopsmcp://targets` resource). Runs no check.
pub fn visible(registry: &Registry, grants: &policy::Effective) -> TargetList {
    let targets = usable(registry, grants)
        .map(|(t, scopes)| TargetView {
            id: t.id.clone(),
            kind: t.kind.as_str().to_string(),
            groups: t.groups.clone(),
            scopes,
            target_allows: t.scopes.as_ref().map(|v| v.iter().map(|s| s.to_string()).collect()),
            max_concurrent: t.max_concurrent,
            timeout_secs: t.limits.timeout.as_secs(),
            health: t.last_check().map(|c| TargetHealth {
                ok: c.health.ok,
                detail: c.health.detail,
                latency_ms: c.health.latency_ms,
                checked_at: c.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }),
        })
        .collect();
    TargetList { targets }
}

/// Check, up to [`CHECKS_AT_ONCE`] at a time, the targets a caller with `grants` may use whose
/// recorded health is missing or older than `max_age` (each check is bounded by its target's
/// timeout). Targets the caller may not use are never checked.
pub async fn refresh_health(registry: &Registry, grants: &policy::Effective, max_age: Duration) {
    let stale: Vec<Arc<Target>> = usable(registry, grants)
        .map(|(t, _)| t.clone())
        .filter(|t| t.last_check().is_none_or(|c| c.age() >= max_age))
        .collect();
    futures::stream::iter(stale)
        .map(|t| async move { t.check().await })
        .buffer_unordered(CHECKS_AT_ONCE)
        .for_each(|_| async {})
        .await;
}

/// Each target a caller with `grants` may use, with the scopes they hold there.
fn usable<'a>(
    registry: &'a Registry,
    grants: &'a policy::Effective,
) -> impl Iterator<Item = (&'a Arc<Target>, Vec<String>)> + 'a {
    registry.all().iter().filter_map(move |t| {
        let granted: Vec<Scope> = policy::scopes_on(grants, &t.id).into_iter().map(|(s, _)| s).collect();
        let scopes: Vec<String> = effective_scopes(&granted, t.scopes.as_deref())
            .into_iter()
            .map(|s| s.to_string())
            .collect();
        (!scopes.is_empty()).then_some((t, scopes))
    })
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

/// `targets_check`: the call's target.
async fn check(ctx: ToolContext, _: NoArgs) -> Result<Output<Health>, ToolError> {
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
        Ok(Output::new(health, text))
    } else {
        Err(ToolError::Failed(text))
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

    #[tokio::test]
    async fn health_is_checked_once_per_max_age_and_only_where_the_caller_may_look() {
        let config = crate::config::Config::from_toml(
            "[[target]]\nid = \"other\"\nkind = \"local\"\n",
            std::path::Path::new("t.toml"),
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let registry = Registry::build(&config.targets).unwrap();
        let grants = policy::Effective {
            grants: vec![policy::Grant {
                source: policy::GrantSource::Config {
                    index: 0,
                    rule: "test".into(),
                },
                scopes: vec!["system:read".parse().unwrap()],
                targets: vec!["local".into()],
            }],
            ignored: Vec::new(),
        };
        let local = registry.get("local").unwrap();
        let other = registry.get("other").unwrap();
        assert!(
            visible(&registry, &grants).targets[0].health.is_none(),
            "nothing checked yet"
        );

        refresh_health(&registry, &grants, HEALTH_MAX_AGE).await;
        let first = local.last_check().expect("checked").at;
        assert!(
            other.last_check().is_none(),
            "a target the caller may not use is never checked"
        );
        let list = visible(&registry, &grants);
        let health = list.targets[0].health.as_ref().unwrap();
        assert!(health.ok && health.detail == "this host", "{health:?}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&health.checked_at).is_ok(),
            "{}",
            health.checked_at
        );

        refresh_health(&registry, &grants, HEALTH_MAX_AGE).await;
        assert_eq!(local.last_check().unwrap().at, first, "a fresh result is reused");
        refresh_health(&registry, &grants, Duration::ZERO).await;
        assert!(local.last_check().unwrap().at > first, "a stale one is checked again");
    }
}
