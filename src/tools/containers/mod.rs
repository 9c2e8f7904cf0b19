//! The `containers` toolset: Docker containers, images, networks and volumes on `docker`
//! targets — list, inspect, logs, stats, start/stop/restart/pause/unpause, remove, image list and
//! pull, update (pull + recreate), each declared as data next to its handler.
//!
//! Tools here parse and validate arguments (container names and image references before any
//! engine call), call `exec::docker`, and render a compact text next to the structured result.
//! Every changing tool takes `dry_run` and returns its `plan` (the engine API calls, in order).
//! They are declared for `docker` targets only, so the call pipeline refuses a `local` or `ssh`
//! target rather than guess at an engine (one on this host is a `[[target]]` of kind `docker`
//! with its socket as endpoint).
//! They never touch bollard, never check scopes (the `call` pipeline does) and never write audit rows.

use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Step, StepKind, Tool, ToolContext, ToolError, Truncated,
    bounded, tool, undeclared_kind,
};
use crate::exec::ExecError;
use crate::exec::docker::{
    self, ActionResult, ApiCall, ContainerAction, ContainerDetails, ContainerSummary, Docker, ImageInfo, ImageRef,
    LogQuery, Logs, NetworkInfo, Stats, UpdateOptions, VolumeInfo,
};
use crate::policy::{Area, Level, Scope};
use crate::text::human_bytes;

/// `limit` of the list tools.
pub const LIST_LIMIT_MAX: i64 = 500;
pub const LIST_LIMIT_DEFAULT: i64 = 100;
/// `lines` of `containers_logs`.
pub const LINES_MAX: i64 = 10_000;
pub const LINES_DEFAULT: i64 = 100;
/// `max_bytes` of `containers_logs`.
pub const LOG_BYTES_MAX: i64 = 1024 * 1024;
pub const LOG_BYTES_DEFAULT: i64 = 64 * 1024;
/// Longest `name` filter.
const MAX_FILTER_LEN: usize = 255;

/// The sentence every description ends with.
macro_rules! docker_only {
    () => {
        " Runs on `docker` targets only (for this host's engine, configure a target of kind `docker` with \
         endpoint unix:///var/run/docker.sock)."
    };
}

/// A Docker engine's API, through a `docker` target.
const KINDS: &[Kind] = &[Kind::Docker];

/// `containers:<level>` on the call's target.
const fn containers(level: Level) -> Requirement {
    Requirement::Scope(Scope::new(Area::Containers, level))
}

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "containers_list",
                title: "List containers",
                description: concat!(
                    "Containers on the engine, sorted by name: short id, name, image, state (running, exited, \
                     paused, …), human status, creation time, published ports, Compose project/service and labels. \
                     Running ones only unless `all`; `name` keeps names containing that text; at most `limit` \
                     (1-500, default 100), with `total` and `truncated` saying what the limit cut.",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            list,
        ),
        tool(
            Declaration {
                name: "containers_inspect",
                title: "Inspect a container",
                description: concat!(
                    "A trimmed `docker inspect` of one container: ids, image and image id, command and \
                     entrypoint, environment (values of secret-looking keys such as *PASSWORD*, *TOKEN*, *KEY* and \
                     passwords inside URLs are replaced by [REDACTED]), labels, state (status, pid, exit code, \
                     health), restart policy and count, mounts, networks with addresses, published ports, \
                     privileges, capabilities and resource limits.",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            inspect,
        ),
        tool(
            Declaration {
                name: "containers_logs",
                title: "Container logs",
                description: concat!(
                    "The last `lines` lines (1-10000, default 100) of a container's stdout and stderr, oldest \
                     first, each with its stream and timestamp; `since` (RFC 3339 or an age like `15m`) limits \
                     them to recent ones; `grep` keeps the lines containing a text (or matching a regular \
                     expression with `regex: true`). The newest lines are kept within `max_bytes` (default 65536, \
                     at most 1 MiB and the target's output cap); `truncated` states the cap and the bytes left \
                     out, `lines_read`/`lines_matched`/`truncated_lines` the counts.",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            logs,
        ),
        tool(
            Declaration {
                name: "containers_stats",
                title: "Container resource use",
                description: concat!(
                    "One sample of a running container's resource use (takes about a second): CPU percent of \
                     one CPU (can exceed 100 with several), memory in use without page cache, its limit and \
                     percent, network rx/tx bytes summed over interfaces, block read/write bytes, pids.",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            stats,
        ),
        tool(
            Declaration {
                name: "containers_start",
                title: "Start a container",
                description: concat!(
                    "Starts a stopped container (a running one is left as it is). Returns the state before and after and the `plan` (the engine API \
                     call, e.g. `POST /containers/web/start`); `dry_run: true` only checks that the \
                     container exists and returns the plan.",
                    docker_only!()
                ),
                requires: containers(Level::Control),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, a: ActionArgs| action(ctx, ContainerAction::Start, a.container, None, a.dry_run),
        ),
        tool(
            Declaration {
                name: "containers_stop",
                title: "Stop a container",
                description: concat!(
                    "Stops a container: its stop signal, then SIGKILL after `timeout_secs` (its own \
                     setting or 10 s). Stopping a stopped container changes nothing. Returns the state before and after and the `plan` (the engine API \
                     call, e.g. `POST /containers/web/stop`); `dry_run: true` only checks that the \
                     container exists and returns the plan.",
                    docker_only!()
                ),
                requires: containers(Level::Control),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, a: StopArgs| action(ctx, ContainerAction::Stop, a.container, a.timeout_secs, a.dry_run),
        ),
        tool(
            Declaration {
                name: "containers_restart",
                title: "Restart a container",
                description: concat!(
                    "Restarts a container (stop as `containers_stop`, then start). Returns the state before and after and the `plan` (the engine API \
                     call, e.g. `POST /containers/web/restart`); `dry_run: true` only checks that the \
                     container exists and returns the plan.",
                    docker_only!()
                ),
                requires: containers(Level::Control),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, a: StopArgs| action(ctx, ContainerAction::Restart, a.container, a.timeout_secs, a.dry_run),
        ),
        tool(
            Declaration {
                name: "containers_pause",
                title: "Pause a container",
                description: concat!(
                    "Freezes a running container's processes (cgroup freezer). Returns the state before and after and the `plan` (the engine API \
                     call, e.g. `POST /containers/web/pause`); `dry_run: true` only checks that the \
                     container exists and returns the plan.",
                    docker_only!()
                ),
                requires: containers(Level::Control),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, a: ActionArgs| action(ctx, ContainerAction::Pause, a.container, None, a.dry_run),
        ),
        tool(
            Declaration {
                name: "containers_unpause",
                title: "Unpause a container",
                description: concat!(
                    "Thaws a paused container. Returns the state before and after and the `plan` (the engine API \
                     call, e.g. `POST /containers/web/unpause`); `dry_run: true` only checks that the \
                     container exists and returns the plan.",
                    docker_only!()
                ),
                requires: containers(Level::Control),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, a: ActionArgs| action(ctx, ContainerAction::Unpause, a.container, None, a.dry_run),
        ),
        tool(
            Declaration {
                name: "containers_remove",
                title: "Remove a container",
                description: concat!(
                    "Removes a container for good (its writable layer is lost). A running container is refused \
                     unless `force` (then it is killed first). `volumes: true` also removes its anonymous \
                     volumes; named volumes are always kept. Returns the plan (`DELETE /containers/NAME…`) and \
                     which volumes went and stayed; `dry_run: true` only checks the container exists.",
                    docker_only!()
                ),
                requires: containers(Level::Admin),
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
        tool(
            Declaration {
                name: "containers_images",
                title: "List images",
                description: concat!(
                    "Images on the engine, newest first: id (sha256: + 12 hex digits), repository:tag names \
                     (none for a dangling image), digests, creation time, size, and the number of containers using \
                     it when the engine counts them. `name` keeps images with a name containing that text; at most \
                     `limit` (1-500, default 100).",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            images,
        ),
        tool(
            Declaration {
                name: "containers_image_pull",
                title: "Pull an image",
                description: concat!(
                    "Pulls an image reference from its registry (anonymously: private registries that need a \
                     login are not supported) within the target's operation timeout, and reports the image id \
                     before and after and whether it changed. Running containers are not touched (see \
                     `containers_update`). The plan is `POST /images/create?fromImage=NAME&tag=TAG`.",
                    docker_only!()
                ),
                requires: containers(Level::Control),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: true,
                },
                kinds: KINDS,
            },
            pull,
        ),
        tool(
            Declaration {
                name: "containers_update",
                title: "Update a container's image",
                description: concat!(
                    "Pulls the container's image reference (unless `pull: false`) and, when it now names a \
                     different image, recreates the container with the same configuration: stop, rename the old \
                     one aside, create a new one under the same name (environment, command, mounts, ports, \
                     restart policy, labels, networks; values the old image supplied are left to the new image; \
                     anonymous volumes are re-mounted so their data stays), start it if the old one ran, remove \
                     the old one. Anything written inside the old container's own filesystem is lost. A failure \
                     after the rename puts the old container back. Containers started with `--rm` are refused; Compose-managed ones keep their labels but are \
                     better updated through their stack. Reports old and new image and container ids; \
                     `dry_run: true` inspects and returns the full plan of API calls without changing anything.",
                    docker_only!()
                ),
                requires: containers(Level::Admin),
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: false,
                    open_world: true,
                },
                kinds: KINDS,
            },
            update,
        ),
        tool(
            Declaration {
                name: "containers_networks",
                title: "List networks",
                description: concat!(
                    "Networks on the engine, by name: short id, driver, scope, internal/attachable, IPAM subnets \
                     and gateways, creation time, labels. At most `limit` (1-500, default 100).",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            networks,
        ),
        tool(
            Declaration {
                name: "containers_volumes",
                title: "List volumes",
                description: concat!(
                    "Volumes on the engine, by name: driver, mountpoint on the engine's host, creation time, \
                     scope, labels, and the containers (running or not) that mount each one (`used_by` empty = \
                     unused). At most `limit` (1-500, default 100).",
                    docker_only!()
                ),
                requires: containers(Level::Read),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            volumes,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// Arguments of `containers_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Include stopped containers (default: running ones only).
    #[serde(default)]
    pub all: bool,
    /// Only containers whose name contains this text.
    #[serde(default)]
    pub name: Option<String>,
    /// Most containers to return, 1 to 500 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// Arguments of the tools that name one container and change nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerArgs {
    /// Container name or id (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 characters).
    pub container: String,
}

/// Arguments of `containers_logs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// Container name or id.
    pub container: String,
    /// How many of the most recent lines to read, 1 to 10000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 10000))]
    pub lines: Option<i64>,
    /// Only lines logged since then: RFC 3339 (`2026-11-21T06:00:00Z`) or an age such as
    /// `30s`, `15m`, `2h`, `1d`.
    #[serde(default)]
    pub since: Option<String>,
    /// Keep only the lines (of those read) containing this text (case-sensitive), or matching it
    /// as a regular expression when `regex` is true.
    #[serde(default)]
    pub grep: Option<String>,
    /// Treat `grep` as a regular expression (Rust regex syntax).
    #[serde(default)]
    pub regex: bool,
    /// Most bytes of line text to return, 1 to 1048576 (default 65536); the newest lines are kept.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_bytes: Option<i64>,
}

/// Arguments of `containers_start`, `containers_pause`, `containers_unpause`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionArgs {
    /// Container name or id.
    pub container: String,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `containers_stop` and `containers_restart`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    /// Container name or id.
    pub container: String,
    /// Seconds to wait after the stop signal before killing (the container's own setting, or
    /// 10, when absent); must be below the target's operation timeout.
    #[serde(default)]
    pub timeout_secs: Option<i64>,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `containers_remove`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// Container name or id.
    pub container: String,
    /// Kill and remove a running container (otherwise a running container is refused).
    #[serde(default)]
    pub force: bool,
    /// Also remove its anonymous volumes (named volumes are never removed).
    #[serde(default)]
    pub volumes: bool,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `containers_images`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesArgs {
    /// Only images with a `repository:tag` containing this text.
    #[serde(default)]
    pub name: Option<String>,
    /// Most images to return, 1 to 500 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// Arguments of `containers_image_pull`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullArgs {
    /// Image reference: `[registry[:port]/]name[:tag|@sha256:digest]`; no tag means `latest`.
    pub image: String,
    /// Return the plan (and the image id the reference names now) without pulling.
    #[serde(default)]
    pub dry_run: bool,
}

/// Arguments of `containers_update`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// Container name or id.
    pub container: String,
    /// Pull the container's image reference first (default true); false recreates from what the
    /// reference names on the engine now (an image built or loaded there).
    #[serde(default = "yes")]
    pub pull: bool,
    /// Seconds the old container gets to stop before it is killed.
    #[serde(default)]
    pub timeout_secs: Option<i64>,
    /// Inspect only and return the plan without changing anything.
    #[serde(default)]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

/// Arguments of `containers_networks` and `containers_volumes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListOnlyArgs {
    /// Most entries to return, 1 to 500 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// `structuredContent` of `containers_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Containers that matched (before `limit`).
    pub total: usize,
    pub containers: Vec<ContainerSummary>,
    /// Set when `limit` cut the list.
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `containers_logs`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LogsOutput {
    #[serde(flatten)]
    pub logs: Logs,
    /// Set when the byte cap left lines or bytes out (`omitted` counts bytes).
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of the start/stop/restart/pause/unpause tools.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionOutput {
    pub dry_run: bool,
    /// The engine API calls made (or, in a dry run, that would be made).
    pub plan: Vec<Step>,
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    pub state_before: String,
    /// `None` in a dry run.
    pub state_after: Option<String>,
}

/// `structuredContent` of `containers_remove`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RemoveOutput {
    pub dry_run: bool,
    pub plan: Vec<Step>,
    pub id: String,
    pub name: String,
    pub state_before: String,
    pub removed: bool,
    /// Anonymous volumes removed with it (`volumes: true`).
    pub volumes_removed: Vec<String>,
    /// Volumes it used that remain.
    pub volumes_kept: Vec<String>,
}

/// `structuredContent` of `containers_images`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ImagesOutput {
    pub total: usize,
    pub images: Vec<ImageInfo>,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `containers_image_pull`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PullOutput {
    pub dry_run: bool,
    pub plan: Vec<Step>,
    /// The reference, normalized (`name:tag` or `name@digest`).
    pub image: String,
    pub image_id_before: Option<String>,
    /// `None` in a dry run.
    pub image_id_after: Option<String>,
    /// Whether the reference now names a different image (`None` in a dry run).
    pub changed: Option<bool>,
    /// The engine's last status line.
    pub status: Option<String>,
}

/// `structuredContent` of `containers_update`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateOutput {
    pub dry_run: bool,
    pub plan: Vec<Step>,
    pub name: String,
    /// The image reference the container is (re)created from.
    pub image: String,
    pub old_container_id: String,
    pub new_container_id: Option<String>,
    pub old_image_id: String,
    pub new_image_id: Option<String>,
    /// The reference already named the running image: nothing was recreated.
    pub up_to_date: Option<bool>,
    pub recreated: bool,
    pub state_before: String,
    pub state_after: Option<String>,
}

/// `structuredContent` of `containers_networks`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NetworksOutput {
    pub total: usize,
    pub networks: Vec<NetworkInfo>,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `containers_volumes`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VolumesOutput {
    pub total: usize,
    pub volumes: Vec<VolumeInfo>,
    pub truncated: Option<Truncated>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn list(ctx: ToolContext, args: ListArgs) -> Result<Output<ListOutput>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)?;
    let filter = filter_arg("name", args.name)?;
    let d = engine(&ctx)?;
    let mut containers = d.list(args.all).await.map_err(exec_err)?;
    if let Some(f) = &filter {
        containers.retain(|c| c.name.contains(f.as_str()));
    }
    let (containers, total, truncated) = capped(containers, limit);
    let out = ListOutput {
        total,
        containers,
        truncated,
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} container(s){}{}",
        out.total,
        if args.all { "" } else { " running" },
        shown_note(out.containers.len(), out.total)
    );
    for c in &out.containers {
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| match p.public_port {
                Some(pp) => format!(
                    "{}:{pp}->{}/{}",
                    p.host_ip.as_deref().unwrap_or(""),
                    p.private_port,
                    p.protocol
                ),
                None => format!("{}/{}", p.private_port, p.protocol),
            })
            .collect();
        let _ = writeln!(
            t,
            "  {}  {}  {}  {}  {}{}",
            c.id,
            c.name,
            c.image,
            c.state,
            c.status,
            if ports.is_empty() {
                String::new()
            } else {
                format!("  {}", ports.join(", "))
            }
        );
    }
    Ok(Output::new(out, t))
}

async fn inspect(ctx: ToolContext, args: ContainerArgs) -> Result<Output<ContainerDetails>, ToolError> {
    container_arg(&args.container)?;
    let d = engine(&ctx)?;
    let c = d.inspect(&args.container).await.map_err(exec_err)?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} ({}) image {} [{}]",
        c.name,
        &c.id.chars().take(12).collect::<String>(),
        c.image.as_deref().unwrap_or("?"),
        c.image_id.as_deref().unwrap_or("?")
    );
    let _ = writeln!(
        t,
        "state: {}{}, restart policy {} (restarted {}×)",
        c.state.status,
        c.state.exit_code.map(|e| format!(" (exit {e})")).unwrap_or_default(),
        if c.restart_policy.name.is_empty() {
            "no"
        } else {
            &c.restart_policy.name
        },
        c.restart_count
    );
    let _ = writeln!(
        t,
        "command: {}",
        [c.entrypoint.clone(), c.cmd.clone()].concat().join(" ")
    );
    for e in &c.env {
        let _ = writeln!(t, "  env {}={}", e.name, e.value);
    }
    for m in &c.mounts {
        let _ = writeln!(
            t,
            "  mount {} {} -> {} ({})",
            m.kind.as_deref().unwrap_or("?"),
            m.name.as_deref().or(m.source.as_deref()).unwrap_or("?"),
            m.destination.as_deref().unwrap_or("?"),
            if m.read_write { "rw" } else { "ro" }
        );
    }
    for n in &c.networks {
        let _ = writeln!(t, "  network {} {}", n.name, n.ip_address.as_deref().unwrap_or(""));
    }
    Ok(Output::new(c, t))
}

async fn logs(ctx: ToolContext, args: LogsArgs) -> Result<Output<LogsOutput>, ToolError> {
    container_arg(&args.container)?;
    let tail = bounded("lines", args.lines, LINES_DEFAULT, 1, LINES_MAX)?;
    let max_bytes = bounded("max_bytes", args.max_bytes, LOG_BYTES_DEFAULT, 1, LOG_BYTES_MAX)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    if let Some(g) = &args.grep
        && (g.is_empty() || g.len() > docker::MAX_GREP_LEN)
    {
        return Err(ToolError::InvalidArgs(format!(
            "`grep` must be 1 to {} bytes",
            docker::MAX_GREP_LEN
        )));
    }
    let d = engine(&ctx)?;
    let q = LogQuery {
        tail,
        since,
        grep: args.grep,
        regex: args.regex,
        max_bytes,
    };
    let logs = d.logs(&args.container, q).await.map_err(exec_err)?;
    let truncated = (logs.truncated_lines > 0 || logs.truncated_bytes > 0).then(|| Truncated {
        cap: format!("{} bytes", logs.max_bytes),
        omitted: Some(logs.truncated_bytes),
    });
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{}: {} line(s) shown of {} read ({} matched){}",
        logs.name,
        logs.lines.len(),
        logs.lines_read,
        logs.lines_matched,
        match &truncated {
            Some(tr) => format!(
                "; cut to {}: {} older line(s), {} byte(s) left out",
                tr.cap, logs.truncated_lines, logs.truncated_bytes
            ),
            None => String::new(),
        }
    );
    for l in &logs.lines {
        let stream = match l.stream {
            docker::LogStream::Stderr => "E ",
            _ => "",
        };
        let _ = writeln!(
            t,
            "{}{}{}",
            l.timestamp.as_deref().map(|s| format!("{s} ")).unwrap_or_default(),
            stream,
            l.text
        );
    }
    Ok(Output::new(LogsOutput { logs, truncated }, t))
}

async fn stats(ctx: ToolContext, args: ContainerArgs) -> Result<Output<Stats>, ToolError> {
    container_arg(&args.container)?;
    let d = engine(&ctx)?;
    let s = d.stats(&args.container).await.map_err(exec_err)?;
    let opt_pct = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "?".into());
    let opt_bytes = |v: Option<u64>| v.map(human_bytes).unwrap_or_else(|| "?".into());
    let t = format!(
        "{} ({}): cpu {}, memory {} of {} ({}), net rx {} tx {}, block read {} write {}, pids {}\n",
        s.name,
        s.id,
        opt_pct(s.cpu_percent),
        opt_bytes(s.memory_usage_bytes),
        opt_bytes(s.memory_limit_bytes),
        opt_pct(s.memory_percent),
        human_bytes(s.net_rx_bytes),
        human_bytes(s.net_tx_bytes),
        human_bytes(s.block_read_bytes),
        human_bytes(s.block_write_bytes),
        s.pids.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
    );
    Ok(Output::new(s, t))
}

/// `containers_start`, `_stop`, `_restart`, `_pause` and `_unpause`.
async fn action(
    ctx: ToolContext,
    action: ContainerAction,
    container: String,
    timeout_secs: Option<i64>,
    dry_run: bool,
) -> Result<Output<ActionOutput>, ToolError> {
    container_arg(&container)?;
    let d = engine(&ctx)?;
    let plan = steps(&ctx, &[docker::action_call(action, &container, timeout_secs)]);
    let out = if dry_run {
        let c = d.inspect(&container).await.map_err(exec_err)?;
        ActionOutput {
            dry_run,
            plan,
            id: c.id.chars().take(12).collect(),
            name: c.name,
            state_before: c.state.status,
            state_after: None,
        }
    } else {
        let r: ActionResult = match action {
            ContainerAction::Start => d.start(&container).await,
            ContainerAction::Stop => d.stop(&container, timeout_secs).await,
            ContainerAction::Restart => d.restart(&container, timeout_secs).await,
            ContainerAction::Pause => d.pause(&container).await,
            ContainerAction::Unpause => d.unpause(&container).await,
        }
        .map_err(exec_err)?;
        ActionOutput {
            dry_run,
            plan,
            id: r.id,
            name: r.name,
            state_before: r.state_before,
            state_after: Some(r.state_after),
        }
    };
    let t = match &out.state_after {
        Some(after) => format!(
            "{} {} ({}): {} -> {}\n{}",
            action.verb(),
            out.name,
            out.id,
            out.state_before,
            after,
            render_plan(&out.plan, false)
        ),
        None => format!(
            "dry run: would {} {} ({}, now {})\n{}",
            action.verb(),
            out.name,
            out.id,
            out.state_before,
            render_plan(&out.plan, true)
        ),
    };
    Ok(Output::new(out, t))
}

async fn remove(ctx: ToolContext, args: RemoveArgs) -> Result<Output<RemoveOutput>, ToolError> {
    container_arg(&args.container)?;
    let d = engine(&ctx)?;
    let plan = steps(&ctx, &[docker::remove_call(&args.container, args.force, args.volumes)]);
    let out = if args.dry_run {
        let c = d.inspect(&args.container).await.map_err(exec_err)?;
        if c.state.running && !args.force {
            return Err(ToolError::Failed(format!(
                "container `{}` is running: it would not be removed without `force: true`",
                c.name
            )));
        }
        RemoveOutput {
            dry_run: true,
            plan,
            id: c.id.chars().take(12).collect(),
            name: c.name,
            state_before: c.state.status,
            removed: false,
            volumes_removed: Vec::new(),
            volumes_kept: c.mounts.iter().filter_map(|m| m.name.clone()).collect(),
        }
    } else {
        let r = d
            .remove(&args.container, args.force, args.volumes)
            .await
            .map_err(exec_err)?;
        RemoveOutput {
            dry_run: false,
            plan,
            id: r.id,
            name: r.name,
            state_before: r.state_before,
            removed: true,
            volumes_removed: r.volumes_removed,
            volumes_kept: r.volumes_kept,
        }
    };
    let mut t = if out.dry_run {
        format!(
            "dry run: would remove {} ({}, {})\n",
            out.name, out.id, out.state_before
        )
    } else {
        format!("removed {} ({}, was {})\n", out.name, out.id, out.state_before)
    };
    if !out.volumes_removed.is_empty() {
        let _ = writeln!(t, "volumes removed: {}", out.volumes_removed.join(", "));
    }
    if !out.volumes_kept.is_empty() {
        let _ = writeln!(t, "volumes kept: {}", out.volumes_kept.join(", "));
    }
    t.push_str(&render_plan(&out.plan, out.dry_run));
    Ok(Output::new(out, t))
}

async fn images(ctx: ToolContext, args: ImagesArgs) -> Result<Output<ImagesOutput>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)?;
    let filter = filter_arg("name", args.name)?;
    let d = engine(&ctx)?;
    let mut images = d.images().await.map_err(exec_err)?;
    if let Some(f) = &filter {
        images.retain(|i| i.tags.iter().any(|t| t.contains(f.as_str())));
    }
    let (images, total, truncated) = capped(images, limit);
    let mut t = format!("{total} image(s){}\n", shown_note(images.len(), total));
    for i in &images {
        let tags = if i.tags.is_empty() {
            "<none>".to_string()
        } else {
            i.tags.join(", ")
        };
        let _ = writeln!(
            t,
            "  {}  {}  {}  {}",
            i.id,
            tags,
            human_bytes(i.size_bytes),
            i.created.as_deref().unwrap_or("?")
        );
    }
    Ok(Output::new(
        ImagesOutput {
            total,
            images,
            truncated,
        },
        t,
    ))
}

async fn pull(ctx: ToolContext, args: PullArgs) -> Result<Output<PullOutput>, ToolError> {
    let image = ImageRef::parse(&args.image).map_err(|e| arg_err("image", e))?;
    let d = engine(&ctx)?;
    let plan = steps(&ctx, &[docker::pull_call(&image)]);
    let out = if args.dry_run {
        PullOutput {
            dry_run: true,
            plan,
            image: image.reference(),
            image_id_before: d.image_id_of(&image).await.map_err(exec_err)?,
            image_id_after: None,
            changed: None,
            status: None,
        }
    } else {
        let r = d.pull(&image).await.map_err(exec_err)?;
        PullOutput {
            dry_run: false,
            plan,
            image: r.image,
            image_id_before: r.image_id_before,
            image_id_after: Some(r.image_id_after),
            changed: Some(r.changed),
            status: r.status,
        }
    };
    let t = match (&out.image_id_after, out.changed) {
        (Some(after), Some(changed)) => format!(
            "pulled {}: {} ({})\n{}",
            out.image,
            after,
            if changed { "new image" } else { "unchanged" },
            render_plan(&out.plan, false)
        ),
        _ => format!("dry run: would pull {}\n{}", out.image, render_plan(&out.plan, true)),
    };
    Ok(Output::new(out, t))
}

async fn update(ctx: ToolContext, args: UpdateArgs) -> Result<Output<UpdateOutput>, ToolError> {
    container_arg(&args.container)?;
    let d = engine(&ctx)?;
    let r = d
        .update(
            &args.container,
            UpdateOptions {
                pull: args.pull,
                stop_timeout_secs: args.timeout_secs,
                dry_run: args.dry_run,
            },
        )
        .await
        .map_err(exec_err)?;
    let out = UpdateOutput {
        dry_run: args.dry_run,
        plan: steps(&ctx, &r.plan),
        name: r.name,
        image: r.image,
        old_container_id: r.old_container_id,
        new_container_id: r.new_container_id,
        old_image_id: r.old_image_id,
        new_image_id: r.new_image_id,
        up_to_date: r.up_to_date,
        recreated: r.recreated,
        state_before: r.state_before,
        state_after: r.state_after,
    };
    let mut t = if out.dry_run {
        format!(
            "dry run: would update {} ({}) from {} (running image {})\n",
            out.name, out.old_container_id, out.image, out.old_image_id
        )
    } else if out.recreated {
        format!(
            "updated {}: image {} -> {}, container {} -> {}, {}\n",
            out.name,
            out.old_image_id,
            out.new_image_id.as_deref().unwrap_or("?"),
            out.old_container_id,
            out.new_container_id.as_deref().unwrap_or("?"),
            out.state_after.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "{} is up to date: {} is still {}\n",
            out.name, out.image, out.old_image_id
        )
    };
    t.push_str(&render_plan(&out.plan, out.dry_run));
    Ok(Output::new(out, t))
}

async fn networks(ctx: ToolContext, args: ListOnlyArgs) -> Result<Output<NetworksOutput>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)?;
    let d = engine(&ctx)?;
    let (networks, total, truncated) = capped(d.networks().await.map_err(exec_err)?, limit);
    let mut t = format!("{total} network(s){}\n", shown_note(networks.len(), total));
    for n in &networks {
        let _ = writeln!(
            t,
            "  {}  {}  {}  {}{}",
            n.id,
            n.name,
            n.driver.as_deref().unwrap_or("?"),
            n.subnets.join(", "),
            if n.internal { "  internal" } else { "" }
        );
    }
    Ok(Output::new(
        NetworksOutput {
            total,
            networks,
            truncated,
        },
        t,
    ))
}

async fn volumes(ctx: ToolContext, args: ListOnlyArgs) -> Result<Output<VolumesOutput>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)?;
    let d = engine(&ctx)?;
    let (volumes, total, truncated) = capped(d.volumes().await.map_err(exec_err)?, limit);
    let mut t = format!("{total} volume(s){}\n", shown_note(volumes.len(), total));
    for v in &volumes {
        let _ = writeln!(
            t,
            "  {}  {}  {}",
            v.name,
            v.driver,
            if v.used_by.is_empty() {
                "unused".to_string()
            } else {
                format!("used by {}", v.used_by.join(", "))
            }
        );
    }
    Ok(Output::new(
        VolumesOutput {
            total,
            volumes,
            truncated,
        },
        t,
    ))
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The target's engine.
fn engine(ctx: &ToolContext) -> Result<&Docker, ToolError> {
    match &ctx.target.executor {
        crate::targets::Executor::Docker(d) => Ok(d),
        _ => Err(undeclared_kind(ctx)),
    }
}

/// Checks a container name or id before anything reaches the engine.
fn container_arg(container: &str) -> Result<(), ToolError> {
    docker::validate_ref(container).map_err(|e| arg_err("container", e))
}

fn arg_err(name: &str, e: ExecError) -> ToolError {
    match e {
        ExecError::Refused(msg) => ToolError::InvalidArgs(format!("`{name}`: {msg}")),
        other => ToolError::InvalidArgs(format!("`{name}`: {other}")),
    }
}

/// A text filter: at most [`MAX_FILTER_LEN`] bytes, no control characters.
fn filter_arg(name: &str, value: Option<String>) -> Result<Option<String>, ToolError> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_FILTER_LEN || v.chars().any(char::is_control) => {
            Err(ToolError::InvalidArgs(format!(
                "`{name}` must be 1 to {MAX_FILTER_LEN} bytes without control characters"
            )))
        }
        other => Ok(other),
    }
}

/// Engine failures are the call's failure; a request the target's constraints refuse (a stop
/// timeout past the target's timeout, an invalid regex) is a bad argument.
fn exec_err(e: ExecError) -> ToolError {
    match e {
        ExecError::Refused(msg) => ToolError::InvalidArgs(msg),
        other => ToolError::Failed(other.to_string()),
    }
}

/// The first `limit` items, the total, and what the cut left out.
fn capped<T>(mut items: Vec<T>, limit: usize) -> (Vec<T>, usize, Option<Truncated>) {
    let total = items.len();
    let truncated = (total > limit).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((total - limit) as u64),
    });
    items.truncate(limit);
    (items, total, truncated)
}

fn shown_note(shown: usize, total: usize) -> String {
    if shown < total {
        format!(", {shown} shown (limit)")
    } else {
        String::new()
    }
}

fn steps(ctx: &ToolContext, calls: &[ApiCall]) -> Vec<Step> {
    calls
        .iter()
        .map(|c| Step {
            kind: StepKind::Api,
            target: ctx.target.id.clone(),
            detail: c.to_string(),
        })
        .collect()
}

fn render_plan(plan: &[Step], dry_run: bool) -> String {
    let mut t = String::from(if dry_run { "plan (not run):\n" } else { "plan:\n" });
    for s in plan {
        let _ = writeln!(t, "  {} {}", s.target, s.detail);
    }
    t
}

/// `since`: RFC 3339, or an age (`30s`, `15m`, `2h`, `7d`) before now; Unix seconds.
fn parse_since(s: &str) -> Result<i64, ToolError> {
    parse_since_at(s, chrono::Utc::now().timestamp())
}

fn parse_since_at(s: &str, now: i64) -> Result<i64, ToolError> {
    let bad = || {
        ToolError::InvalidArgs(format!(
            "`since` {:?}: expected an RFC 3339 time (2026-11-21T06:00:00Z) or an age like 30s, 15m, 2h, 7d",
            s.chars().take(64).collect::<String>()
        ))
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        let secs = t.timestamp();
        return if secs < 0 { Err(bad()) } else { Ok(secs) };
    }
    // An age in `when`'s grammar, but in seconds to days: the engine's `since` takes no weeks.
    if s.ends_with('w') {
        return Err(bad());
    }
    let age = crate::when::age(s)
        .map(|d| d.num_seconds())
        .filter(|a| *a <= now)
        .ok_or_else(bad)?;
    Ok(now - age)
}

#[cfg(test)]
mod tests;
