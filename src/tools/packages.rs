//! The `packages` toolset: available upgrades, upgrade and install on apt hosts (`local` and
//! `ssh` targets). Other package managers are detected and named, and refused.
//!
//! Reading runs `apt` as the server's user. Upgrade and install need root: they are requests to
//! the root helper unit `tailopsmcp-helper@.service` (see ARCHITECTURE.md, "Privilege"), whose
//! instance name carries the operation and validated package names — never options. Package
//! names are checked against Debian's grammar here and again in the helper.

use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::services::{Host, helper_plan};
use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Step, Tool, ToolContext, ToolError, Truncated, bounded,
    tool,
};
use crate::exec::packages::{self, Upgrade};
use crate::exec::systemd::{self, HelperOp, HelperRequest, HelperResult, MAX_INSTALL_PACKAGES, UNIT_NAME_MAX};
use crate::policy::{Area, Level, Scope};

pub const UPDATES_LIMIT_DEFAULT: i64 = 100;
pub const UPDATES_LIMIT_MAX: i64 = 1000;

/// apt on this host or over SSH.
const KINDS: &[Kind] = &[Kind::Local, Kind::Ssh];

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "packages_updates",
                title: "Available package upgrades",
                description: "Upgrades apt offers on the host (`apt list --upgradable`, as of the host's last \
                    `apt-get update`): package, installed version (`from`), candidate version (`to`), suites and \
                    architecture. `limit` caps the rows (1-1000, default 100); `truncated` says how many were left \
                    out. Hosts with another package manager (dnf, yum, zypper, pacman, apk) get an error naming it.",
                requires: Requirement::Scope(Scope::new(Area::Packages, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            updates,
        ),
        tool(
            Declaration {
                name: "packages_upgrade",
                title: "Upgrade packages",
                description: "Upgrade the installed packages of an apt host: the root helper unit \
                    (tailopsmcp-helper@.service) runs `apt-get update` then `apt-get upgrade -y` (no new \
                    recommends, changed config files kept) and reports every package whose version changed \
                    (`from` → `to`) and the end of apt's output. `dry_run: true` returns the plan and the \
                    upgrades apt offers now, without doing anything; the plan is returned either way.",
                requires: Requirement::Scope(Scope::new(Area::Packages, Level::Admin)),
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: true,
                    open_world: true,
                },
                kinds: KINDS,
            },
            upgrade,
        ),
        tool(
            Declaration {
                name: "packages_install",
                title: "Install packages",
                description: "Install Debian packages (1 to 8 names; Debian's name grammar: a-z 0-9 + - ., \
                    no versions, architectures, paths or options) on an apt host: the root helper unit \
                    (tailopsmcp-helper@.service) runs `apt-get update` then `apt-get install -y -- NAMES` \
                    (no recommends) and reports every package whose version changed, dependencies included. \
                    Installing software is root-equivalent. `dry_run: true` returns the plan without doing \
                    anything; the plan is returned either way.",
                requires: Requirement::Scope(Scope::new(Area::Packages, Level::Admin)),
                risk: Risk::Critical,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: true,
                },
                kinds: KINDS,
            },
            install,
        ),
    ]
}

/// Arguments of `packages_updates`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatesArgs {
    /// Rows to return, 1 to 1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// `structuredContent` of `packages_updates`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UpdatesOutput {
    /// The package manager found (`apt`).
    pub manager: String,
    /// Upgrades available.
    pub count: usize,
    pub upgrades: Vec<Upgrade>,
    pub truncated: Option<Truncated>,
}

/// Arguments of `packages_upgrade`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeArgs {
    /// Return the plan (and the upgrades apt currently offers) without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `packages_install`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallArgs {
    /// Debian package names (1 to 8): lowercase letters, digits, `+`, `-`, `.`. No versions,
    /// architectures, paths or options.
    pub packages: Vec<String>,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// `structuredContent` of `packages_upgrade` and `packages_install`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChangeOutput {
    pub manager: String,
    pub dry_run: bool,
    /// What runs (or, with `dry_run`, would run), in order.
    pub plan: Vec<Step>,
    /// For an upgrade dry run: the upgrades apt offers now (as of the last `apt-get update`;
    /// the real run refreshes the lists first).
    pub pending: Option<Vec<Upgrade>>,
    /// What the root helper reported (`null` for a dry run).
    pub result: Option<HelperResult>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `packages_updates`.
async fn updates(ctx: ToolContext, args: UpdatesArgs) -> Result<Output<UpdatesOutput>, ToolError> {
    let limit = bounded("limit", args.limit, UPDATES_LIMIT_DEFAULT, 1, UPDATES_LIMIT_MAX)?;
    let host = Host::of(&ctx, None)?;
    let manager = require_apt(host.runner(), &ctx.target.id).await?;
    let mut upgrades = packages::apt_upgrades(host.runner()).await?;
    let count = upgrades.len();
    upgrades.truncate(limit);
    let truncated = (count > upgrades.len()).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((count - upgrades.len()) as u64),
    });
    let out = UpdatesOutput {
        manager: manager.to_string(),
        count,
        upgrades,
        truncated,
    };
    let text = render_updates(&out);
    Ok(Output::new(out, text))
}

/// `packages_upgrade`.
async fn upgrade(ctx: ToolContext, args: UpgradeArgs) -> Result<Output<ChangeOutput>, ToolError> {
    let inner = "apt-get update; apt-get upgrade -y".to_string();
    change(ctx, HelperOp::AptUpgrade, args.dry_run, inner, true).await
}

/// `packages_install`.
async fn install(ctx: ToolContext, args: InstallArgs) -> Result<Output<ChangeOutput>, ToolError> {
    if args.packages.is_empty() || args.packages.len() > MAX_INSTALL_PACKAGES {
        return Err(ToolError::InvalidArgs(format!(
            "`packages` must name 1 to {MAX_INSTALL_PACKAGES} packages, got {}",
            args.packages.len()
        )));
    }
    for p in &args.packages {
        packages::validate_package(p).map_err(ToolError::InvalidArgs)?;
    }
    let mut names = args.packages.clone();
    names.dedup();
    let inner = format!("apt-get update; apt-get install -y -- {}", names.join(" "));
    change(ctx, HelperOp::AptInstall(names), args.dry_run, inner, false).await
}

/// Run `op` through the root helper (`inner` is what it runs as root, for the plan); a dry run
/// lists the upgrades apt offers now when `pending`.
async fn change(
    ctx: ToolContext,
    op: HelperOp,
    dry_run: bool,
    inner: String,
    pending: bool,
) -> Result<Output<ChangeOutput>, ToolError> {
    let host = Host::of(&ctx, Some(ctx.config.services.helper_timeout))?;
    let manager = require_apt(host.runner(), &ctx.target.id).await?;
    let req = HelperRequest::new(op);
    // systemd refuses unit names over 255 bytes (each `-` of a name takes 4 escaped).
    if req.unit().len() > UNIT_NAME_MAX {
        return Err(ToolError::InvalidArgs(format!(
            "these package names make a root-helper request of {} bytes, over systemd's {UNIT_NAME_MAX}-byte \
             unit name limit; install fewer packages at once",
            req.unit().len()
        )));
    }
    let mut out = ChangeOutput {
        manager: manager.to_string(),
        dry_run,
        plan: helper_plan(&ctx.target.id, &req, &inner),
        pending: None,
        result: None,
    };
    if dry_run {
        if pending {
            out.pending = Some(packages::apt_upgrades(host.runner()).await?);
        }
    } else {
        let result = systemd::run_helper(host.runner(), &req).await?;
        if !result.ok {
            return Err(ToolError::Failed(format!(
                "{}: {}",
                result.summary,
                systemd::cut(result.output_tail.trim(), 1500)
            )));
        }
        out.result = Some(result);
    }
    let text = render_change(&out);
    Ok(Output::new(out, text))
}

/// `apt`, or an error naming the package manager that was found instead.
async fn require_apt(r: &dyn crate::exec::remote::Runner, target: &str) -> Result<&'static str, ToolError> {
    match packages::detect(r).await? {
        Some("apt") => Ok("apt"),
        Some(other) => Err(ToolError::Failed(format!(
            "target `{target}` uses {other}; only apt (Debian, Ubuntu) is supported by the packages tools"
        ))),
        None => Err(ToolError::Failed(format!(
            "no supported package manager found on target `{target}` (looked for apt-get, dnf, yum, zypper, pacman, apk)"
        ))),
    }
}

fn render_updates(out: &UpdatesOutput) -> String {
    let mut t = format!("{} upgrade(s) available ({})", out.count, out.manager);
    for u in &out.upgrades {
        let _ = write!(
            t,
            "\n  {} {} -> {} ({})",
            u.package,
            u.from.as_deref().unwrap_or("?"),
            u.to,
            u.suites.join(",")
        );
    }
    if let Some(tr) = &out.truncated {
        let _ = write!(t, "\n  … {} more ({})", tr.omitted.unwrap_or(0), tr.cap);
    }
    t
}

fn render_change(out: &ChangeOutput) -> String {
    let mut t = String::new();
    match (&out.result, &out.pending) {
        (Some(r), _) => {
            let _ = writeln!(t, "{}", r.summary);
            for c in &r.changed {
                let _ = writeln!(
                    t,
                    "  {} {} -> {}",
                    c.package,
                    c.from.as_deref().unwrap_or("(new)"),
                    c.to.as_deref().unwrap_or("(removed)")
                );
            }
        }
        (None, pending) => {
            let _ = writeln!(t, "dry run: nothing was changed");
            if let Some(p) = pending {
                let _ = writeln!(t, "  {} upgrade(s) offered now", p.len());
            }
        }
    }
    for s in &out.plan {
        let _ = writeln!(t, "  $ {}", s.detail);
    }
    t.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::{self, invalid};
    use crate::tools::{ToolOutput, ToolSpec};
    use serde_json::{Value, json};

    async fn call(name: &str, args: Value) -> Result<ToolOutput, ToolError> {
        testing::call(tools(), name, args).await
    }

    #[test]
    fn specs() {
        let specs: Vec<ToolSpec> = tools().iter().map(|t| t.spec().clone()).collect();
        let got: Vec<(&str, Risk, Level)> = specs
            .iter()
            .map(|s| {
                let Requirement::Scope(sc) = s.requires else { panic!() };
                assert_eq!(sc.area, Area::Packages);
                (s.name, s.risk, sc.level)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("packages_updates", Risk::Low, Level::Read),
                ("packages_upgrade", Risk::High, Level::Admin),
                ("packages_install", Risk::Critical, Level::Admin)
            ]
        );
    }

    #[tokio::test]
    async fn bad_package_names_are_refused_before_anything_runs() {
        for bad in [
            "-y",
            "--allow-unauthenticated",
            "foo;id",
            "../x",
            "pkg=1.0",
            "Hello",
            "a b",
            "x",
        ] {
            invalid(
                call("packages_install", json!({"packages": [bad]})).await,
                "package name",
            );
        }
        invalid(
            call("packages_install", json!({"packages": []})).await,
            "1 to 8 packages",
        );
        let nine: Vec<String> = (0..9).map(|i| format!("pkg{i}")).collect();
        invalid(
            call("packages_install", json!({"packages": nine})).await,
            "1 to 8 packages",
        );
        invalid(
            call("packages_updates", json!({"limit": 0})).await,
            "between 1 and 1000",
        );
        invalid(call("packages_upgrade", json!({"yes": true})).await, "unknown field");
    }
}
