//! What the stack operations report, and what a deploy asks for.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::exec::ExecError;
use crate::exec::docker::ContainerSummary;

/// Where a git-deployed stack came from (the metadata file; never env values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GitOrigin {
    /// Repository URL (as given to git).
    pub url: String,
    /// Branch or tag cloned, if one was named.
    pub branch: Option<String>,
    /// The commit that was checked out.
    pub commit: String,
    /// Compose file path within the repository.
    pub compose_file: String,
    /// Keys written to `.env` at the last deploy.
    pub env_keys: Vec<String>,
    /// When it was deployed (RFC 3339 UTC).
    pub deployed_at: String,
}

/// A stack directory and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFiles {
    pub name: String,
    pub dir: PathBuf,
    /// The compose file compose is given (absolute).
    pub compose_file: PathBuf,
    /// `DIR/NAME/.env` when it exists.
    pub env_file: Option<PathBuf>,
    /// Set when this server deployed it from git.
    pub origin: Option<GitOrigin>,
}

/// One container of a stack, from the engine.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StackContainer {
    pub name: String,
    /// Short id.
    pub id: String,
    /// The compose service it runs.
    pub service: Option<String>,
    /// `running`, `exited`, `restarting`, ...
    pub state: String,
    /// e.g. `Up 5 minutes`.
    pub status: String,
    pub image: String,
}

impl From<&ContainerSummary> for StackContainer {
    fn from(c: &ContainerSummary) -> StackContainer {
        StackContainer {
            name: c.name.clone(),
            id: c.id.clone(),
            service: c.compose_service.clone(),
            state: c.state.clone(),
            status: c.status.clone(),
            image: c.image.clone(),
        }
    }
}

/// One stack in `stacks_list`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StackSummary {
    pub name: String,
    /// Its directory in the stacks directory; absent for a project seen only on the engine.
    pub directory: Option<String>,
    /// The compose file (absolute), when the directory has one.
    pub compose_file: Option<String>,
    /// Deployed from git by this server (see `stacks_status` for the origin).
    pub managed: bool,
    /// Why the directory cannot be used, if it cannot.
    pub problem: Option<String>,
    /// Containers with this project label on the engine.
    pub containers: usize,
    pub running: usize,
    /// The project's working directory from its containers' labels (for projects made elsewhere).
    pub working_dir: Option<String>,
}

/// `stacks_list`'s findings.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StackListing {
    /// The stacks directory.
    pub dir: String,
    /// Whether it exists.
    pub dir_exists: bool,
    /// The engine compose talks to.
    pub docker_host: String,
    /// Why the engine could not be asked, if it could not (the directory part is still listed).
    pub engine_error: Option<String>,
    pub stacks: Vec<StackSummary>,
}

/// One service of a stack and its containers.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ServiceStatus {
    pub service: String,
    /// Defined in the compose file (false: a container of a service no longer defined).
    pub defined: bool,
    pub containers: Vec<StackContainer>,
}

/// `stacks_status`'s findings.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StackStatus {
    pub name: String,
    /// The stack's directory (for a project started elsewhere: its working directory label).
    pub directory: Option<String>,
    /// The compose file (for a project started elsewhere: its config files label).
    pub compose_file: Option<String>,
    /// Keys in `.env` (values are never shown); empty when there is no `.env`.
    pub env_keys: Vec<String>,
    /// Where it was deployed from, when this server deployed it.
    pub origin: Option<GitOrigin>,
    /// The compose CLI used, e.g. `docker-compose 1.29.2` (none for a project started elsewhere).
    pub compose: Option<String>,
    /// Why compose could not list the services, if it could not.
    pub compose_error: Option<String>,
    pub services: Vec<ServiceStatus>,
    pub containers: usize,
    pub running: usize,
}

/// One step of a plan (the tools layer adds the target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// A command (true) or a file operation (false).
    pub command: bool,
    pub detail: String,
}

/// What one command that ran printed (the end of it) and how it exited.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CommandLog {
    /// The command as in the plan.
    pub command: String,
    /// Exit status (`None`: killed or timed out).
    pub status: Option<i32>,
    /// The last bytes of stdout and stderr (env values scrubbed).
    pub output_tail: String,
    /// Bytes of output before the tail that were left out.
    pub omitted_bytes: u64,
}

/// What a deploy, update or remove did (or would do).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChangeReport {
    pub stack: String,
    pub directory: String,
    pub dry_run: bool,
    /// The compose CLI used, e.g. `docker compose 2.40.3`.
    pub compose: String,
    /// The commands that ran, with their output's end (empty on a dry run).
    pub log: Vec<CommandLog>,
    /// Problems that did not stop the operation (e.g. an image that could not be pulled).
    pub warnings: Vec<String>,
    /// The stack's containers afterwards (before, on a dry run).
    pub containers: Vec<StackContainer>,
    /// Services whose containers were created or replaced.
    pub recreated: Vec<String>,
    #[serde(skip)]
    pub plan: Vec<PlanStep>,
}

/// What `stacks_deploy` asks for, validated by [`Stacks::deploy`].
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub name: String,
    pub repository: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub compose_file: Option<String>,
    /// `None` keeps an existing `.env` on redeploy (and writes none on a first deploy).
    pub env: Option<BTreeMap<String, String>>,
}

/// Why a stack operation failed: bad input (nothing ran) or a failure while running.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The request is invalid or not allowed by `[stacks]`; nothing ran.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
}
