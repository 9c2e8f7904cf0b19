//! Compose stacks on this host: one directory per stack under the stacks directory, driven by the
//! `docker compose` CLI (v2, as a Docker CLI plugin) or, when that is missing, `docker-compose`
//! (v1 or a standalone v2), and `git` for checkouts. Every command is an argument vector run by
//! [`exec::process`](crate::exec::process); the containers of a stack are read from the engine
//! by their `com.docker.compose.project` label through [`exec::docker`](crate::exec::docker).
//!
//! Layout of a stack `NAME` (a directory `DIR/NAME`):
//! - deployed from git by this server: `repo/` (the checkout), `.env` (mode 0600, the values
//!   given at deploy), `.tailopsmcp-stack.json` (where it came from: URL, branch, commit,
//!   compose file, env keys — never values);
//! - made by hand (Dockge's `/opt/stacks` layout): a compose file (`compose.yaml`, `compose.yml`,
//!   `docker-compose.yaml` or `docker-compose.yml`) and optionally `.env` in `DIR/NAME` itself.
//!
//! Every changing operation is written as a sequence of steps through one plan recorder
//! (`plan::Plan`): with `dry_run` the recorder only records, otherwise it records and runs, so
//! the plan returned is exactly what ran (or would run). Everything that reaches a command line
//! or a path is validated first by the pure functions of `validate` (stack names, git URLs and
//! their hosts, branches, commits, compose paths, env keys and values).
//!
//! Knows nothing about callers or policy; it enforces the `[stacks]` settings (directory,
//! allowed git hosts, engine) and the target's limits.
//!
//! Here: the `[stacks]` settings and the layout's names. Then, each using only this file and
//! those listed before it: `validate`, `model` (what the operations report), `files` (what is
//! on disk), `plan` (the recorder), `cli` (the compose command and how its output reads),
//! `stacks` ([`Stacks`]: list, status, deploy, update, remove).

mod cli;
mod files;
mod model;
mod plan;
mod stacks;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

pub use cli::ComposeCli;
pub use model::{
    ChangeReport, CommandLog, DeployRequest, GitOrigin, PlanStep, ServiceStatus, StackContainer, StackError,
    StackFiles, StackListing, StackStatus, StackSummary,
};
pub use plan::render_command;
pub use stacks::Stacks;
pub use validate::{
    GitHostRule, GitSource, parse_git_url, parse_host_rule, resolve_within, validate_branch, validate_commit,
    validate_compose_path, validate_env, validate_stack_name,
};

/// Where stacks live unless `[stacks] dir` says otherwise: inside the service's own
/// `StateDirectory=`, the one place the hardened unit may write without extra `ReadWritePaths=`.
pub const DEFAULT_DIR: &str = "/var/lib/tailopsmcp/stacks";

/// The engine compose talks to unless `[stacks] docker_host` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Default time one git or compose command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The metadata file of a stack deployed by this server.
pub const META_FILE: &str = ".tailopsmcp-stack.json";

/// The env file compose reads for `${VAR}` interpolation.
pub const ENV_FILE: &str = ".env";

/// The checkout of a git-deployed stack.
pub const REPO_DIR: &str = "repo";

/// Where a (re)deploy clones before the checkout replaces `repo/`.
pub const STAGING_DIR: &str = "repo.new";

/// Compose file names looked for, in order (compose's own order).
pub const COMPOSE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Compose's project label on containers.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";

/// At most this many env entries per deploy.
pub const MAX_ENV: usize = 100;

/// At most this many bytes per env value.
pub const MAX_ENV_VALUE: usize = 4096;

/// Bytes of a command's output kept (the end of it) in a report.
pub const OUTPUT_TAIL: usize = 2000;

/// `[stacks]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StacksSettings {
    /// The stacks directory (absolute).
    pub dir: PathBuf,
    /// Where `stacks_deploy` may clone from; empty = deploying from git is refused.
    pub allowed_git_hosts: Vec<GitHostRule>,
    /// The engine compose talks to (`unix://PATH`); given to compose as `DOCKER_HOST`.
    pub docker_host: String,
    /// The compose command (`["docker", "compose"]`, `["/usr/bin/docker-compose"]`); empty =
    /// `docker compose` if it answers, else `docker-compose`.
    pub compose_command: Vec<String>,
    /// Time one git or compose command may take.
    pub timeout: Duration,
}

impl Default for StacksSettings {
    fn default() -> Self {
        StacksSettings {
            dir: PathBuf::from(DEFAULT_DIR),
            allowed_git_hosts: Vec::new(),
            docker_host: DEFAULT_DOCKER_HOST.to_string(),
            compose_command: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}
