//! The `stacks` toolset: compose stacks on this host — list, status, deploy from git, update
//! (pull + `up -d`), remove (`down`).
//!
//! Tools run on `local` targets only. They parse and validate arguments and call
//! `exec::compose`, which validates every name, URL, ref and path again before anything runs and
//! records the plan it follows. They never run commands or touch files themselves, never check
//! scopes and never write audit rows.
//!
//! Not done: progress notifications while a deploy runs. rmcp sends them through the request's
//! peer (`notify_progress` with the client's progress token), and `ToolContext` carries no peer;
//! the command log in the result shows what each step printed instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Step, StepKind, Tool, ToolContext, ToolError, Truncated,
    bounded, tool,
};
use crate::exec::compose::{ChangeReport, DeployRequest, StackError, StackListing, StackStatus, Stacks};
use crate::policy::{Area, Level, Scope};

/// `stacks_list.limit`: default, min, max.
pub const LIST_LIMIT: (i64, i64, i64) = (100, 1, 500);

/// Compose runs on this server's own host: `local` targets only.
const KINDS: &[Kind] = &[Kind::Local];

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "stacks_list",
                title: "List compose stacks",
                description: "Compose stacks on this host: every directory in the stacks directory with a compose file \
                    (deployed from git by this server = `managed`, or made by hand), merged by name with the compose \
                    projects the Docker engine knows from its containers' `com.docker.compose.project` labels. Each: \
                    name, directory and compose file (when on disk), container and running counts, the project's \
                    working directory (for projects started elsewhere) and any problem with its directory. At most \
                    `limit` stacks (1-500, default 100), sorted by name.",
                requires: Requirement::Scope(Scope::new(Area::Stacks, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            list,
        ),
        tool(
            Declaration {
                name: "stacks_status",
                title: "Compose stack status",
                description: "One stack's services (from `compose config --services`) and their containers on the engine \
                    (name, id, state, status, image), containers of services no longer defined, the directory and \
                    compose file, the `.env` keys (never values), the compose CLI used and, for stacks deployed from \
                    git, where from (URL, branch, commit, when). A compose project started outside the stacks \
                    directory is described from its containers' labels only.",
                requires: Requirement::Scope(Scope::new(Area::Stacks, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            status,
        ),
        tool(
            Declaration {
                name: "stacks_deploy",
                title: "Deploy a compose stack from git",
                description: "Clone a git repository (its host must be in the server's allowed_git_hosts; `branch` or \
                    `commit`, default branch otherwise) into the stack's directory, check that the compose file stays \
                    inside the checkout, write `env` to the stack's `.env` (mode 0600; values are never shown back), \
                    and run `compose up --detach --remove-orphans` with the stack name as project name. Deploying an \
                    existing stack that this server deployed replaces its checkout (redeploy; `.env` kept when `env` \
                    is omitted); any other existing directory or compose project of that name is refused. Returns \
                    the plan (exact commands and file writes), each command's output end, and the containers. \
                    `dry_run: true` returns the plan only.",
                requires: Requirement::Scope(Scope::new(Area::Stacks, Level::Admin)),
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: false,
                    open_world: true,
                },
                kinds: KINDS,
            },
            deploy,
        ),
        tool(
            Declaration {
                name: "stacks_update",
                title: "Update a compose stack",
                description: "Pull the stack's images (`compose pull --ignore-pull-failures`: an image that cannot be \
                    pulled, such as one built or imported locally, is a warning and keeps the local image) and \
                    `compose up --detach`, which recreates the containers whose image or configuration changed. \
                    Reports the services recreated and the containers afterwards. The compose file and the images it \
                    names are not changed (redeploy with stacks_deploy for that). `dry_run: true` returns the plan \
                    only.",
                requires: Requirement::Scope(Scope::new(Area::Stacks, Level::Control)),
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: true,
                    open_world: true,
                },
                kinds: KINDS,
            },
            update,
        ),
        tool(
            Declaration {
                name: "stacks_remove",
                title: "Remove a compose stack",
                description: "`compose down`: stop and remove the stack's containers and networks. Named volumes (the \
                    stack's data) are removed only with `volumes: true`; the stack's directory (checkout, `.env`, \
                    metadata) only with `delete_files: true`. `dry_run: true` returns the plan only.",
                requires: Requirement::Scope(Scope::new(Area::Stacks, Level::Admin)),
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            remove,
        ),
    ]
}

/// Arguments of `stacks_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// At most this many stacks, 1 to 500 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// Arguments of `stacks_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// The stack (its directory name and compose project name).
    pub name: String,
}

/// Arguments of `stacks_deploy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployArgs {
    /// Stack name: 1-63 of `a-z 0-9 _ -`, starting with a letter or digit. Also the compose
    /// project name.
    pub name: String,
    /// Git repository URL (`https://`, `http://`, `ssh://`, `git://`, or `file:///` when
    /// allowed); its host must be in the server's `[stacks] allowed_git_hosts`.
    pub repository: String,
    /// Branch or tag to deploy (default: the repository's default branch).
    #[serde(default)]
    pub branch: Option<String>,
    /// Commit id to deploy (7-64 hex digits), instead of `branch`.
    #[serde(default)]
    pub commit: Option<String>,
    /// Compose file path within the repository (default: the first of compose.yaml,
    /// compose.yml, docker-compose.yaml, docker-compose.yml at its root).
    #[serde(default)]
    pub compose_file: Option<String>,
    /// Values for the stack's `.env` (used for `${VAR}` in the compose file), written with mode
    /// 0600. Values are never shown back, in results, plans or the audit log. Omitted on a
    /// redeploy: the existing `.env` is kept.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `stacks_update`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    pub name: String,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `stacks_remove`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    pub name: String,
    /// Also remove the stack's named volumes (its data). Default false: volumes are kept.
    #[serde(default)]
    pub volumes: bool,
    /// Also delete the stack's directory (checkout, `.env`, metadata). Default false.
    #[serde(default)]
    pub delete_files: bool,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// `structuredContent` of `stacks_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    #[serde(flatten)]
    pub listing: StackListing,
    /// Stacks returned.
    pub count: usize,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `stacks_deploy`, `stacks_update` and `stacks_remove`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ChangeOutput {
    /// What ran (or, with `dry_run`, would run), in order: commands exactly as run, file
    /// writes with their mode and the env keys (never values).
    pub plan: Vec<Step>,
    #[serde(flatten)]
    pub report: ChangeReport,
}

/// Compose stacks of this host, under `[stacks]`, within the target's limits.
fn stacks(ctx: &ToolContext) -> Stacks {
    Stacks::new(ctx.config.stacks.clone(), ctx.target.limits)
}

fn stack_error(e: StackError) -> ToolError {
    match e {
        StackError::Invalid(m) => ToolError::InvalidArgs(m),
        StackError::Exec(e) => e.into(),
    }
}

fn change_output(ctx: &ToolContext, mut report: ChangeReport) -> Result<Output<ChangeOutput>, ToolError> {
    let plan: Vec<Step> = std::mem::take(&mut report.plan)
        .into_iter()
        .map(|s| Step {
            kind: if s.command { StepKind::Command } else { StepKind::File },
            target: ctx.target.id.clone(),
            detail: s.detail,
        })
        .collect();
    let out = ChangeOutput { plan, report };
    let text = render_change(&out);
    Ok(Output::new(out, text))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `stacks_list`.
async fn list(ctx: ToolContext, args: ListArgs) -> Result<Output<ListOutput>, ToolError> {
    let (default, min, max) = LIST_LIMIT;
    let limit = bounded("limit", args.limit, default, min, max)?;
    let stacks = stacks(&ctx);
    let mut listing = stacks.list().await?;
    let total = listing.stacks.len();
    listing.stacks.truncate(limit);
    let truncated = (total > limit).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((total - limit) as u64),
    });
    let out = ListOutput {
        count: listing.stacks.len(),
        listing,
        truncated,
    };
    let text = render_list(&out);
    Ok(Output::new(out, text))
}

/// `stacks_status`.
async fn status(ctx: ToolContext, args: StatusArgs) -> Result<Output<StackStatus>, ToolError> {
    let stacks = stacks(&ctx);
    let status = stacks.status(&args.name).await.map_err(stack_error)?;
    let text = render_status(&status);
    Ok(Output::new(status, text))
}

/// `stacks_deploy`.
async fn deploy(ctx: ToolContext, args: DeployArgs) -> Result<Output<ChangeOutput>, ToolError> {
    let stacks = stacks(&ctx).with_progress(ctx.progress_fn());
    let req = DeployRequest {
        name: args.name,
        repository: args.repository,
        branch: args.branch,
        commit: args.commit,
        compose_file: args.compose_file,
        env: args.env,
    };
    let report = stacks.deploy(req, args.dry_run).await.map_err(stack_error)?;
    change_output(&ctx, report)
}

/// `stacks_update`.
async fn update(ctx: ToolContext, args: UpdateArgs) -> Result<Output<ChangeOutput>, ToolError> {
    let stacks = stacks(&ctx).with_progress(ctx.progress_fn());
    let report = stacks.update(&args.name, args.dry_run).await.map_err(stack_error)?;
    change_output(&ctx, report)
}

/// `stacks_remove`.
async fn remove(ctx: ToolContext, args: RemoveArgs) -> Result<Output<ChangeOutput>, ToolError> {
    let stacks = stacks(&ctx);
    let report = stacks
        .remove(&args.name, args.volumes, args.delete_files, args.dry_run)
        .await
        .map_err(stack_error)?;
    change_output(&ctx, report)
}

// ---------------------------------------------------------------------------------------------
// Text renderings.

fn render_list(out: &ListOutput) -> String {
    let l = &out.listing;
    let mut t = format!(
        "{} stack(s) ({}{}; engine {})\n",
        out.count,
        l.dir,
        if l.dir_exists { "" } else { ", which does not exist" },
        l.docker_host
    );
    if let Some(e) = &l.engine_error {
        let _ = writeln!(t, "engine not reachable: {e}");
    }
    for s in &l.stacks {
        let place = match (&s.directory, &s.working_dir) {
            (Some(_), _) if s.managed => "managed".to_string(),
            (Some(_), _) => "directory".to_string(),
            (None, Some(w)) => format!("engine only, from {w}"),
            (None, None) => "engine only".to_string(),
        };
        let _ = write!(t, "  {:<24} {}/{} running  {place}", s.name, s.running, s.containers);
        if let Some(p) = &s.problem {
            let _ = write!(t, "  problem: {p}");
        }
        t.push('\n');
    }
    if let Some(tr) = &out.truncated {
        let _ = writeln!(t, "… {} more ({})", tr.omitted.unwrap_or(0), tr.cap);
    }
    t
}

fn render_status(s: &StackStatus) -> String {
    let mut t = format!(
        "stack {}: {}/{} containers running ({})\ncompose file: {}\n",
        s.name,
        s.running,
        s.containers,
        s.compose.as_deref().unwrap_or("no compose CLI used"),
        s.compose_file.as_deref().unwrap_or("unknown")
    );
    if let Some(o) = &s.origin {
        let _ = writeln!(
            t,
            "from {} {} at {} (deployed {})",
            o.url,
            o.branch.as_deref().unwrap_or("(default branch)"),
            o.commit,
            o.deployed_at
        );
    }
    if !s.env_keys.is_empty() {
        let _ = writeln!(t, ".env keys: {}", s.env_keys.join(", "));
    }
    if let Some(e) = &s.compose_error {
        let _ = writeln!(t, "compose could not read the stack: {e}");
    }
    for svc in &s.services {
        let _ = write!(t, "  {}", svc.service);
        if !svc.defined {
            t.push_str(" (not in the compose file)");
        }
        if svc.containers.is_empty() {
            t.push_str(": no container");
        }
        t.push('\n');
        for c in &svc.containers {
            let _ = writeln!(t, "    {} {} {} ({})", c.name, c.state, c.status, c.image);
        }
    }
    t
}

fn render_change(out: &ChangeOutput) -> String {
    let r = &out.report;
    let mut t = if r.dry_run {
        format!("dry run: stack {} — nothing was done; the plan:\n", r.stack)
    } else {
        format!("stack {} ({}):\n", r.stack, r.compose)
    };
    for s in &out.plan {
        let _ = writeln!(t, "  {}", s.detail);
    }
    for w in &r.warnings {
        let _ = writeln!(t, "warning: {w}");
    }
    if !r.dry_run {
        if !r.recreated.is_empty() {
            let _ = writeln!(t, "created or recreated: {}", r.recreated.join(", "));
        }
        let running = r.containers.iter().filter(|c| c.state == "running").count();
        let _ = writeln!(t, "{running}/{} containers running", r.containers.len());
        for c in &r.containers {
            let _ = writeln!(t, "  {} {} ({})", c.name, c.state, c.image);
        }
    }
    t
}
