//! Compose stacks on this host: one directory per stack under the stacks directory, driven by the
//! `docker compose` CLI (v2, as a Docker CLI plugin) or, when that is missing, `docker-compose`
//! (v1 or a standalone v2), and `git` for checkouts. Every command is an argument vector run by
//! [`super::process`]; the containers of a stack are read from the engine by their
//! `com.docker.compose.project` label through [`super::docker`].
//!
//! Layout of a stack `NAME` (a directory `DIR/NAME`):
//! - deployed from git by this server: `repo/` (the checkout), `.env` (mode 0600, the values
//!   given at deploy), `.tailopsmcp-stack.json` (where it came from: URL, branch, commit,
//!   compose file, env keys — never values);
//! - made by hand (Dockge's `/opt/stacks` layout): a compose file (`compose.yaml`, `compose.yml`,
//!   `docker-compose.yaml` or `docker-compose.yml`) and optionally `.env` in `DIR/NAME` itself.
//!
//! Every changing operation is written as a sequence of steps through one [`Plan`] recorder: with
//! `dry_run` the recorder only records, otherwise it records and runs, so the plan returned is
//! exactly what ran (or would run). Everything that reaches a command line or a path is
//! validated first by the pure functions at the top (stack names, git URLs and their hosts,
//! branches, commits, compose paths, env keys and values).
//!
//! Knows nothing about callers or policy; it enforces the `[stacks]` settings (directory,
//! allowed git hosts, engine) and the target's limits.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::docker::{ContainerSummary, Docker, DockerSettings};
use super::show::cut_after;
use super::{CommandSpec, ExecError, Limits, Output};

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

/// One entry of `allowed_git_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHostRule {
    /// A host name (lowercase) for `https`, `http`, `ssh` and `git` URLs, any port.
    Host(String),
    /// `file:///PATH`: local repositories at or under PATH.
    FileUnder(PathBuf),
}

impl std::fmt::Display for GitHostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitHostRule::Host(h) => f.write_str(h),
            GitHostRule::FileUnder(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// Parse one `allowed_git_hosts` entry: a host name, or `file:///PATH` for local repositories
/// under an absolute PATH (`file:///` allows every local repository).
pub fn parse_host_rule(entry: &str) -> Result<GitHostRule, String> {
    if let Some(path) = entry.strip_prefix("file://") {
        let p = Path::new(path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!(
                "`{entry}` must be `file:///ABSOLUTE/PATH` (local repositories under that path) without `..`"
            ));
        }
        return Ok(GitHostRule::FileUnder(p.to_path_buf()));
    }
    let host = entry.to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return Err(format!(
            "`{entry}` is not a host name (like `github.com`) or `file:///PATH` (no scheme, port or path for hosts)"
        ));
    }
    Ok(GitHostRule::Host(host))
}

// ---------------------------------------------------------------------------------------------
// Validation: everything that reaches a command line or a path.

/// Stack names are compose project names and directory names: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_stack_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stack name `{}` is not valid: 1 to 63 characters of lowercase letters, digits, `_` and `-`, starting \
             with a letter or digit",
            cut_after(name, 64)
        ))
    }
}

/// A git repository URL that passed the allow-list, as git will receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The URL as re-serialized after parsing: what git gets (never the raw input).
    pub url: String,
    /// `https`, `http`, `ssh`, `git` or `file`: the only protocol git may use for it.
    pub scheme: String,
    /// The host (none for `file`).
    pub host: Option<String>,
}

/// Parse `raw` as a git URL and check it against `rules`. Refused: scp-like `host:path`, other
/// schemes, passwords in the URL, hosts not listed, `file://` outside a listed path.
pub fn parse_git_url(raw: &str, rules: &[GitHostRule]) -> Result<GitSource, String> {
    if rules.is_empty() {
        return Err("deploying from git is disabled: [stacks] allowed_git_hosts is empty".into());
    }
    if raw.is_empty() || raw.len() > 2048 {
        return Err("`repository` must be a URL of 1 to 2048 characters".into());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return Err("`repository` must not contain spaces, control characters or backslashes".into());
    }
    if raw.starts_with('-') {
        return Err("`repository` must not start with `-` (it would be read as an option)".into());
    }
    let dot_dot = |seg: &str| matches!(seg.to_ascii_lowercase().as_str(), ".." | "%2e%2e" | ".%2e" | "%2e.");
    if raw.split('/').any(dot_dot) {
        return Err("`repository` must not contain `..` path segments".into());
    }
    if !raw.contains("://") {
        return Err(format!(
            "`{}` is not a URL: use https://HOST/PATH, ssh://USER@HOST/PATH or file:///PATH (scp-like HOST:PATH is \
             not accepted)",
            cut_after(raw, 200)
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("`{}` is not a valid URL: {e}", cut_after(raw, 200)))?;
    let scheme = url.scheme().to_string();
    if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "git" | "file") {
        return Err(format!(
            "URL scheme `{scheme}` is not allowed: use https, http, ssh, git or file"
        ));
    }
    if url.password().is_some() {
        return Err(
            "credentials in the repository URL are refused (they would be stored in the audit log and the stack's \
             metadata); use an SSH key or a git credential helper of the service user"
                .into(),
        );
    }
    if url.username().starts_with('-') {
        return Err("the URL's user name must not start with `-`".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the repository URL must not have a query or fragment".into());
    }
    if scheme == "file" {
        if url.host_str().is_some_and(|h| !h.is_empty()) {
            return Err("file URLs must not name a host: use file:///PATH".into());
        }
        let path = url
            .to_file_path()
            .map_err(|_| "the file URL's path is not a local path".to_string())?;
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err("the file URL's path must not contain `..`".into());
        }
        let allowed = rules.iter().any(|r| match r {
            GitHostRule::FileUnder(prefix) => path.starts_with(prefix),
            GitHostRule::Host(_) => false,
        });
        if !allowed {
            return Err(format!(
                "local repository {} is not under a `file:///PATH` entry of [stacks] allowed_git_hosts (allowed: {})",
                path.display(),
                list_rules(rules)
            ));
        }
        return Ok(GitSource {
            url: url.as_str().to_string(),
            scheme,
            host: None,
        });
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "the repository URL has no host".to_string())?
        .to_ascii_lowercase();
    if host.starts_with('-') {
        return Err("the URL's host must not start with `-`".into());
    }
    if !rules.iter().any(|r| matches!(r, GitHostRule::Host(h) if *h == host)) {
        return Err(format!(
            "git host `{}` is not in [stacks] allowed_git_hosts (allowed: {})",
            cut_after(&host, 100),
            list_rules(rules)
        ));
    }
    Ok(GitSource {
        url: url.as_str().to_string(),
        scheme,
        host: Some(host),
    })
}

fn list_rules(rules: &[GitHostRule]) -> String {
    rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

/// A branch or tag name for `git clone --branch`.
pub fn validate_branch(branch: &str) -> Result<(), String> {
    if branch.starts_with('-') {
        return Err("`branch` must not start with `-` (it would be read as an option)".into());
    }
    if branch.contains("..") {
        return Err("`branch` must not contain `..`".into());
    }
    let ok = !branch.is_empty()
        && branch.len() <= 200
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | '+'))
        && !branch.starts_with(['/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("//")
        && !branch.contains("/.");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`branch` `{}` is not a valid branch or tag name (letters, digits, `.`, `_`, `/`, `-`, `+`; at most 200)",
            cut_after(branch, 64)
        ))
    }
}

/// A commit id: 7 to 64 hexadecimal digits.
pub fn validate_commit(commit: &str) -> Result<(), String> {
    if commit.starts_with('-') {
        return Err("`commit` must not start with `-` (it would be read as an option)".into());
    }
    if (7..=64).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "`commit` `{}` is not a commit id (7 to 64 hexadecimal digits)",
            cut_after(commit, 64)
        ))
    }
}

/// A compose file path relative to the repository root, that cannot leave it by its spelling
/// (symlinks are checked again after checkout by [`resolve_within`]).
pub fn validate_compose_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 255 {
        return Err("`compose_file` must be a path of 1 to 255 characters within the repository".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "`compose_file` `{}` is absolute: give a path relative to the repository root",
            cut_after(path, 64)
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!(
            "`compose_file` `{}` escapes the repository (`..`)",
            cut_after(path, 64)
        ));
    }
    let ok = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && !c.starts_with('-'))
        && (path.ends_with(".yml") || path.ends_with(".yaml"));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`compose_file` `{}` is not valid: a relative path of letters, digits, `.`, `_`, `-` and `/` ending in \
             .yml or .yaml",
            cut_after(path, 64)
        ))
    }
}

/// Env entries for `.env`: keys `[A-Za-z_][A-Za-z0-9_]*` (at most 128), at most [`MAX_ENV`]
/// entries; values at most [`MAX_ENV_VALUE`] bytes without `'`, `\`, `${` or line breaks
/// (they are written single-quoted, which compose v2 reads literally and v1 too, except `${`).
/// Errors name the key, never the value.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    if env.len() > MAX_ENV {
        return Err(format!("`env` has {} entries; at most {MAX_ENV}", env.len()));
    }
    for (key, value) in env {
        let key_ok = !key.is_empty()
            && key.len() <= 128
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(format!(
                "env key `{}` is not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128)",
                cut_after(key, 64)
            ));
        }
        if value.len() > MAX_ENV_VALUE {
            return Err(format!("the value of env `{key}` is longer than {MAX_ENV_VALUE} bytes"));
        }
        if value.contains(['\'', '\\', '\n', '\r', '\0']) || value.contains("${") {
            return Err(format!(
                "the value of env `{key}` contains a quote, backslash, `${{` or line break, which a .env file cannot \
                 carry literally for both compose v1 and v2"
            ));
        }
    }
    Ok(())
}

/// The canonical path of `rel` inside `root`, which must exist, be a regular file and stay
/// inside `root` after symlinks are resolved.
pub fn resolve_within(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
    let full = root.join(rel);
    let real = full
        .canonicalize()
        .map_err(|_| format!("compose file `{rel}` does not exist in the repository"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "compose file `{rel}` resolves outside the repository (a symlink to {})",
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("compose file `{rel}` is not a regular file"));
    }
    Ok(real)
}

// ---------------------------------------------------------------------------------------------
// What is on disk.

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

/// A stack directory found on disk, or why it cannot be used.
fn stack_files(settings: &StacksSettings, name: &str) -> Result<Option<StackFiles>, String> {
    let dir = settings.dir.join(name);
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symlink; stacks must be directories inside {}",
            dir.display(),
            settings.dir.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let env = dir.join(ENV_FILE);
    let env_file = std::fs::symlink_metadata(&env)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| env.clone());
    let meta_path = dir.join(META_FILE);
    if meta_path.exists() {
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| format!("cannot read {}: {e}", meta_path.display()))?;
        let origin: GitOrigin =
            serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", meta_path.display()))?;
        validate_compose_path(&origin.compose_file)?;
        let compose_file = resolve_within(&dir.join(REPO_DIR), &origin.compose_file)?;
        return Ok(Some(StackFiles {
            name: name.to_string(),
            dir,
            compose_file,
            env_file,
            origin: Some(origin),
        }));
    }
    for candidate in COMPOSE_NAMES {
        let p = dir.join(candidate);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            return Ok(Some(StackFiles {
                name: name.to_string(),
                dir,
                compose_file: p,
                env_file,
                origin: None,
            }));
        }
    }
    Err(format!(
        "{} has no compose file ({}) and was not deployed by this server",
        dir.display(),
        COMPOSE_NAMES.join(", ")
    ))
}

// ---------------------------------------------------------------------------------------------
// Reports.

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

// ---------------------------------------------------------------------------------------------
// The compose CLI.

/// The compose command found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeCli {
    /// `["docker", "compose"]` or `["docker-compose"]` (or the configured command).
    pub argv: Vec<String>,
    /// As reported by `version --short`, e.g. `2.40.3`.
    pub version: String,
}

impl ComposeCli {
    /// e.g. `docker-compose 1.29.2`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.argv.join(" "), self.version)
    }

    /// `COMPOSE -p NAME -f FILE [--env-file ENV] SUB...`.
    fn command(&self, name: &str, compose_file: &Path, env_file: Option<&Path>, sub: &[&str]) -> CommandSpec {
        let mut args: Vec<String> = self.argv[1..].to_vec();
        args.extend(["--project-name".to_string(), name.to_string()]);
        args.extend(["--file".to_string(), compose_file.display().to_string()]);
        if let Some(env) = env_file {
            args.extend(["--env-file".to_string(), env.display().to_string()]);
        }
        args.extend(sub.iter().map(|s| s.to_string()));
        CommandSpec {
            program: self.argv[0].clone(),
            args,
        }
    }
}

static DETECTED: Mutex<Option<(Vec<String>, ComposeCli)>> = Mutex::new(None);

/// One lock per stack name: two changes of one stack never overlap.
static STACK_LOCKS: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);

fn stack_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut guard = super::lock(&STACK_LOCKS);
    guard
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Compose stacks on this host under `settings`.
pub struct Stacks {
    settings: StacksSettings,
    limits: Limits,
    progress: Option<super::ProgressFn>,
}

/// Reports the steps of one deploy or update (nothing on a dry run or without a reporter).
struct Steps<'a> {
    report: Option<&'a super::ProgressFn>,
    done: u32,
    total: u32,
}

impl Steps<'_> {
    async fn next(&mut self, message: String) {
        self.done += 1;
        if let Some(f) = self.report {
            f(self.done, self.total.max(self.done), message).await;
        }
    }
}

impl Stacks {
    /// `limits.max_output` caps what each command's output keeps; `settings.timeout` replaces
    /// `limits.timeout` for git and compose commands (clones and image pulls take longer than
    /// a status read).
    pub fn new(settings: StacksSettings, limits: Limits) -> Stacks {
        Stacks {
            settings,
            limits,
            progress: None,
        }
    }

    /// Report each step of `deploy` and `update` (clone, write .env, pull, up, ...) to
    /// `progress` as it starts; dry runs report nothing.
    pub fn with_progress(mut self, progress: Option<super::ProgressFn>) -> Stacks {
        self.progress = progress;
        self
    }

    fn steps(&self, dry_run: bool, total: u32) -> Steps<'_> {
        Steps {
            report: self.progress.as_ref().filter(|_| !dry_run),
            done: 0,
            total,
        }
    }

    pub fn settings(&self) -> &StacksSettings {
        &self.settings
    }

    fn command_limits(&self) -> Limits {
        Limits {
            timeout: self.settings.timeout,
            max_output: self.limits.max_output,
        }
    }

    fn compose_env(&self) -> Vec<(String, String)> {
        vec![("DOCKER_HOST".to_string(), self.settings.docker_host.clone())]
    }

    fn engine(&self) -> Result<Docker, ExecError> {
        let settings = DockerSettings {
            endpoint: self.settings.docker_host.clone(),
            ..DockerSettings::default()
        };
        Docker::new("local", settings, self.limits)
    }

    /// Containers of every compose project on the engine (all states).
    async fn project_containers(&self) -> Result<Vec<ContainerSummary>, ExecError> {
        let all = self.engine()?.list(true).await?;
        Ok(all.into_iter().filter(|c| c.compose_project.is_some()).collect())
    }

    async fn containers_of(&self, name: &str) -> Result<Vec<ContainerSummary>, ExecError> {
        Ok(self
            .project_containers()
            .await?
            .into_iter()
            .filter(|c| c.compose_project.as_deref() == Some(name))
            .collect())
    }

    /// The compose CLI: the configured command, else `docker compose`, else `docker-compose`.
    /// Found once per process (per configured command).
    pub async fn compose(&self) -> Result<ComposeCli, ExecError> {
        let key = self.settings.compose_command.clone();
        if let Some((k, cli)) = super::lock(&DETECTED).as_ref()
            && *k == key
        {
            return Ok(cli.clone());
        }
        let candidates: Vec<Vec<String>> = if key.is_empty() {
            vec![
                vec!["docker".to_string(), "compose".to_string()],
                vec!["docker-compose".to_string()],
            ]
        } else {
            vec![key.clone()]
        };
        let limits = Limits {
            timeout: Duration::from_secs(20),
            max_output: 4096,
        };
        let mut tried = Vec::new();
        for argv in candidates {
            let mut args: Vec<String> = argv[1..].to_vec();
            args.extend(["version".to_string(), "--short".to_string()]);
            let cmd = CommandSpec {
                program: argv[0].clone(),
                args,
            };
            let out = super::process::run_with_env(&cmd, &self.compose_env(), limits).await;
            let version = match &out {
                Ok(o) if o.status == Some(0) => {
                    let v = o.stdout.trim().trim_start_matches('v').to_string();
                    v.starts_with(|c: char| c.is_ascii_digit()).then_some(v)
                }
                _ => None,
            };
            match version {
                Some(version) => {
                    let cli = ComposeCli { argv, version };
                    *super::lock(&DETECTED) = Some((key, cli.clone()));
                    return Ok(cli);
                }
                None => tried.push(format!(
                    "`{}`: {}",
                    argv.join(" "),
                    match out {
                        Ok(o) => last_line(&o.stderr, &o.stdout),
                        Err(e) => e.to_string(),
                    }
                )),
            }
        }
        Err(ExecError::Failed(format!(
            "no compose CLI found ({}); install the Docker compose plugin or Debian's docker-compose, or set \
             [stacks] compose_command",
            tried.join("; ")
        )))
    }

    /// Stack directories and compose projects on the engine, by name.
    pub async fn list(&self) -> Result<StackListing, ExecError> {
        let dir = self.settings.dir.clone();
        let settings = self.settings.clone();
        let (dir_exists, on_disk) = tokio::task::spawn_blocking(move || scan(&settings))
            .await
            .map_err(|e| ExecError::Failed(format!("scanning {}: {e}", dir.display())))??;
        let (containers, engine_error) = match self.project_containers().await {
            Ok(c) => (c, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let mut stacks: BTreeMap<String, StackSummary> = BTreeMap::new();
        for (name, found) in on_disk {
            let (compose_file, managed, problem) = match &found {
                Ok(f) => (Some(f.compose_file.display().to_string()), f.origin.is_some(), None),
                Err(e) => (None, false, Some(e.clone())),
            };
            stacks.insert(
                name.clone(),
                StackSummary {
                    directory: Some(self.settings.dir.join(&name).display().to_string()),
                    name,
                    compose_file,
                    managed,
                    problem,
                    containers: 0,
                    running: 0,
                    working_dir: None,
                },
            );
        }
        for c in &containers {
            let Some(project) = c.compose_project.clone() else {
                continue;
            };
            let entry = stacks.entry(project.clone()).or_insert_with(|| StackSummary {
                name: project,
                directory: None,
                compose_file: None,
                managed: false,
                problem: None,
                containers: 0,
                running: 0,
                working_dir: None,
            });
            entry.containers += 1;
            if c.state == "running" {
                entry.running += 1;
            }
            if entry.working_dir.is_none() {
                entry.working_dir = c.labels.get("com.docker.compose.project.working_dir").cloned();
            }
        }
        Ok(StackListing {
            dir: self.settings.dir.display().to_string(),
            dir_exists,
            docker_host: self.settings.docker_host.clone(),
            engine_error,
            stacks: stacks.into_values().collect(),
        })
    }

    fn existing(&self, name: &str) -> Result<StackFiles, StackError> {
        validate_stack_name(name).map_err(StackError::Invalid)?;
        match stack_files(&self.settings, name) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(StackError::Invalid(format!(
                "no stack `{name}` in {} (stacks_list shows the stacks)",
                self.settings.dir.display()
            ))),
            Err(e) => Err(StackError::Invalid(e)),
        }
    }

    /// A stack's services (from `compose config --services`) and containers (from the engine).
    ///
    /// A compose project that has containers on the engine but no directory here (started
    /// elsewhere) gets its services and containers from the containers' labels only.
    pub async fn status(&self, name: &str) -> Result<StackStatus, StackError> {
        let files = match self.existing(name) {
            Ok(f) => f,
            Err(e) => {
                validate_stack_name(name).map_err(StackError::Invalid)?;
                let containers = self.containers_of(name).await?;
                if containers.is_empty() || self.settings.dir.join(name).exists() {
                    return Err(e);
                }
                return Ok(engine_only_status(name, &containers));
            }
        };
        let cli = self.compose().await?;
        let cmd = cli.command(
            name,
            &files.compose_file,
            files.env_file.as_deref(),
            &["config", "--services"],
        );
        let out = super::process::run_with_env(&cmd, &self.compose_env(), self.command_limits()).await;
        let (defined, compose_error): (Vec<String>, Option<String>) = match out {
            Ok(o) if o.status == Some(0) => (
                o.stdout
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                None,
            ),
            Ok(o) => (Vec::new(), Some(last_line(&o.stderr, &o.stdout))),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let containers = self.containers_of(name).await?;
        let mut services: Vec<ServiceStatus> = defined
            .iter()
            .map(|s| ServiceStatus {
                service: s.clone(),
                defined: true,
                containers: Vec::new(),
            })
            .collect();
        for c in &containers {
            let service = c.compose_service.clone().unwrap_or_default();
            match services.iter_mut().find(|s| s.service == service) {
                Some(s) => s.containers.push(c.into()),
                None => services.push(ServiceStatus {
                    service,
                    defined: false,
                    containers: vec![c.into()],
                }),
            }
        }
        let env_keys = files.env_file.as_deref().map(env_keys).unwrap_or_default();
        Ok(StackStatus {
            name: name.to_string(),
            directory: Some(files.dir.display().to_string()),
            compose_file: Some(files.compose_file.display().to_string()),
            env_keys,
            origin: files.origin,
            compose: Some(cli.describe()),
            compose_error,
            containers: containers.len(),
            running: containers.iter().filter(|c| c.state == "running").count(),
            services,
        })
    }

    /// Clone (or re-clone) a stack from git, write its `.env` and metadata, and `up -d` it.
    pub async fn deploy(&self, req: DeployRequest, dry_run: bool) -> Result<ChangeReport, StackError> {
        let invalid = StackError::Invalid;
        validate_stack_name(&req.name).map_err(invalid)?;
        let source = parse_git_url(&req.repository, &self.settings.allowed_git_hosts).map_err(invalid)?;
        if req.branch.is_some() && req.commit.is_some() {
            return Err(invalid("give `branch` or `commit`, not both".into()));
        }
        if let Some(b) = &req.branch {
            validate_branch(b).map_err(invalid)?;
        }
        if let Some(c) = &req.commit {
            validate_commit(c).map_err(invalid)?;
        }
        if let Some(p) = &req.compose_file {
            validate_compose_path(p).map_err(invalid)?;
        }
        if let Some(env) = &req.env {
            validate_env(env).map_err(invalid)?;
        }
        let name = req.name.clone();
        let lock = stack_lock(&name);
        let _held = lock.lock().await;

        let dir = self.settings.dir.join(&name);
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(invalid(format!(
                "{} is a symlink; stacks must be directories inside {}",
                dir.display(),
                self.settings.dir.display()
            )));
        }
        let existing = match stack_files(&self.settings, &name) {
            Ok(f) => f,
            Err(e) if dir.join(META_FILE).exists() => {
                // A managed stack whose checkout is broken may be redeployed.
                tracing::debug!("redeploying damaged stack {name}: {e}");
                None
            }
            Err(e) => return Err(invalid(e)),
        };
        let redeploy = dir.join(META_FILE).exists();
        if !redeploy && dir.exists() {
            let why = match &existing {
                Some(_) => "was not deployed from git by this server",
                None => "is not a stack directory",
            };
            return Err(invalid(format!(
                "{} already exists and {why}: remove it first or choose another name",
                dir.display()
            )));
        }
        let before = self.containers_of(&name).await?;
        if !redeploy && let Some(c) = before.first() {
            let from = c
                .labels
                .get("com.docker.compose.project.working_dir")
                .map(|w| format!(" (from {w})"))
                .unwrap_or_default();
            return Err(invalid(format!(
                "a compose project named `{name}` already has containers on the engine{from}: choose another name"
            )));
        }
        let cli = self.compose().await?;

        let mut secrets: Vec<String> = env_values(&dir.join(ENV_FILE));
        if let Some(env) = &req.env {
            secrets.extend(env.values().filter(|v| v.len() >= MIN_SCRUBBED).cloned());
        }
        let mut plan = Plan::new(dry_run, self.command_limits(), secrets);
        let staging = dir.join(STAGING_DIR);
        let repo = dir.join(REPO_DIR);
        let created_dir = !dir.exists();
        let git_env = vec![("GIT_TERMINAL_PROMPT".to_string(), "0".to_string())];
        // clone, [checkout], check, [write .env], write metadata, up, read containers.
        let total = 5 + u32::from(req.commit.is_some()) + u32::from(req.env.is_some());
        let mut steps = self.steps(dry_run, total);

        let result: Result<(), ExecError> = async {
            if !self.settings.dir.exists() {
                plan.mkdir(&self.settings.dir)?;
            }
            if created_dir {
                plan.mkdir(&dir)?;
            }
            if staging.exists() {
                plan.remove_dir(&staging)?;
            }
            let mut clone = vec![
                "-c".to_string(),
                "protocol.allow=never".to_string(),
                "-c".to_string(),
                format!("protocol.{}.allow=always", source.scheme),
                "clone".to_string(),
                "--quiet".to_string(),
            ];
            if let Some(b) = &req.branch {
                clone.extend(["--branch".to_string(), b.clone(), "--single-branch".to_string()]);
            }
            if req.commit.is_some() {
                clone.push("--no-checkout".to_string());
            }
            clone.extend(["--".to_string(), source.url.clone(), staging.display().to_string()]);
            steps.next(format!("git clone {}", source.url)).await;
            plan.run(CommandSpec::new("git", clone), &git_env).await?;
            if let Some(c) = &req.commit {
                steps.next(format!("git checkout {c}")).await;
                let checkout = CommandSpec::new(
                    "git",
                    [
                        "-C".to_string(),
                        staging.display().to_string(),
                        "-c".to_string(),
                        "advice.detachedHead=false".to_string(),
                        "checkout".to_string(),
                        "--quiet".to_string(),
                        "--detach".to_string(),
                        c.clone(),
                    ],
                );
                plan.run(checkout, &git_env).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            cleanup_failed_clone(&staging, &dir, created_dir);
            return Err(e.into());
        }

        // The commit and compose file, checked in the fresh checkout before it replaces anything.
        let rev = CommandSpec::new(
            "git",
            [
                "-C".to_string(),
                staging.display().to_string(),
                "rev-parse".to_string(),
                "HEAD".to_string(),
            ],
        );
        steps.next("check the commit and the compose file".to_string()).await;
        let checked: Result<(String, String), StackError> = async {
            let commit = match plan.run(rev, &git_env).await? {
                Some(o) => o.stdout.trim().to_string(),
                None => "(resolved at deploy)".to_string(),
            };
            let compose_rel = match (&req.compose_file, dry_run) {
                (Some(p), _) => p.clone(),
                (None, true) => format!("{{{}}}", COMPOSE_NAMES.join(",")),
                (None, false) => COMPOSE_NAMES
                    .iter()
                    .find(|n| std::fs::symlink_metadata(staging.join(n)).is_ok_and(|m| m.is_file()))
                    .map(|n| n.to_string())
                    .ok_or_else(|| {
                        StackError::Invalid(format!(
                            "the repository has none of {} at its root: give `compose_file`",
                            COMPOSE_NAMES.join(", ")
                        ))
                    })?,
            };
            if !dry_run {
                resolve_within(&staging, &compose_rel).map_err(StackError::Invalid)?;
            }
            Ok((commit, compose_rel))
        }
        .await;
        let (commit, compose_rel) = match checked {
            Ok(v) => v,
            Err(e) => {
                cleanup_failed_clone(&staging, &dir, created_dir);
                return Err(e);
            }
        };

        if repo.exists() {
            plan.remove_dir(&repo)?;
        }
        plan.rename(&staging, &repo)?;
        let env_path = dir.join(ENV_FILE);
        let env_keys: Vec<String> = match &req.env {
            Some(env) => {
                let mut text = String::new();
                for (k, v) in env {
                    text.push_str(&format!("{k}='{v}'\n"));
                }
                let keys: Vec<String> = env.keys().cloned().collect();
                let detail = format!(
                    "write {} (mode 0600, {} keys: {})",
                    env_path.display(),
                    keys.len(),
                    keys.join(", ")
                );
                steps
                    .next(format!("write {} (mode 0600, {} keys)", env_path.display(), keys.len()))
                    .await;
                plan.write(&env_path, &text, detail)?;
                keys
            }
            None => existing
                .as_ref()
                .and_then(|f| f.origin.as_ref().map(|o| o.env_keys.clone()))
                .unwrap_or_default(),
        };
        let origin = GitOrigin {
            url: source.url.clone(),
            branch: req.branch.clone(),
            commit,
            compose_file: compose_rel.clone(),
            env_keys,
            deployed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let meta_path = dir.join(META_FILE);
        steps.next(format!("write {}", meta_path.display())).await;
        let meta_text = serde_json::to_string_pretty(&origin)
            .map_err(|e| ExecError::Failed(format!("metadata does not serialize: {e}")))?;
        plan.write(
            &meta_path,
            &meta_text,
            format!(
                "write {} (mode 0600: repository, branch, commit, compose file, env keys)",
                meta_path.display()
            ),
        )?;
        let env_file = (req.env.is_some() || env_path.exists()).then_some(env_path.as_path());
        let up = cli.command(
            &name,
            &repo.join(&compose_rel),
            env_file,
            &["up", "--detach", "--remove-orphans"],
        );
        steps.next(format!("compose up --detach ({})", cli.describe())).await;
        plan.run(up, &self.compose_env()).await?;
        steps.next("read the stack's containers".to_string()).await;
        self.finish(plan, name, dir, cli, &before).await
    }

    /// `pull` (failures are warnings: images built or imported locally have no registry) and
    /// `up -d`.
    pub async fn update(&self, name: &str, dry_run: bool) -> Result<ChangeReport, StackError> {
        let files = self.existing(name)?;
        let lock = stack_lock(name);
        let _held = lock.lock().await;
        let cli = self.compose().await?;
        let before = self.containers_of(name).await?;
        let secrets = files.env_file.as_deref().map(env_values).unwrap_or_default();
        let mut plan = Plan::new(dry_run, self.command_limits(), secrets);
        let env = files.env_file.as_deref();
        let pull = cli.command(name, &files.compose_file, env, &["pull", "--ignore-pull-failures"]);
        let mut steps = self.steps(dry_run, 3);
        steps.next(format!("compose pull ({})", cli.describe())).await;
        if let Some(out) = plan.run_tolerant(pull, &self.compose_env()).await? {
            let printed = scrub(&format!("{}\n{}", out.stdout, out.stderr), &plan.secrets);
            let failed = pull_failures(&printed);
            if !failed.is_empty() {
                plan.warnings.extend(
                    failed
                        .into_iter()
                        .map(|(svc, why)| format!("pull failed for {svc} (kept the local image): {why}")),
                );
            } else if out.status != Some(0) {
                plan.warnings.push(format!(
                    "pull failed (kept the local images): {}",
                    last_line("", &printed)
                ));
            }
        }
        let up = cli.command(name, &files.compose_file, env, &["up", "--detach"]);
        steps.next(format!("compose up --detach ({})", cli.describe())).await;
        plan.run(up, &self.compose_env()).await?;
        steps.next("read the stack's containers".to_string()).await;
        self.finish(plan, name.to_string(), files.dir, cli, &before).await
    }

    /// `down` (with `--volumes` only when asked) and, with `delete_files`, the stack directory.
    pub async fn remove(
        &self,
        name: &str,
        volumes: bool,
        delete_files: bool,
        dry_run: bool,
    ) -> Result<ChangeReport, StackError> {
        let files = self.existing(name)?;
        let lock = stack_lock(name);
        let _held = lock.lock().await;
        let cli = self.compose().await?;
        let before = self.containers_of(name).await?;
        let secrets = files.env_file.as_deref().map(env_values).unwrap_or_default();
        let mut plan = Plan::new(dry_run, self.command_limits(), secrets);
        let mut sub = vec!["down"];
        if volumes {
            sub.push("--volumes");
        }
        let down = cli.command(name, &files.compose_file, files.env_file.as_deref(), &sub);
        plan.run(down, &self.compose_env()).await?;
        if delete_files {
            plan.remove_dir(&files.dir)?;
        }
        self.finish(plan, name.to_string(), files.dir, cli, &before).await
    }

    async fn finish(
        &self,
        plan: Plan,
        name: String,
        dir: PathBuf,
        cli: ComposeCli,
        before: &[ContainerSummary],
    ) -> Result<ChangeReport, StackError> {
        let after = if plan.dry_run {
            before.to_vec()
        } else {
            self.containers_of(&name).await?
        };
        let mut recreated: Vec<String> = after
            .iter()
            .filter(|c| !before.iter().any(|b| b.id == c.id))
            .filter_map(|c| c.compose_service.clone())
            .collect();
        recreated.sort();
        recreated.dedup();
        Ok(ChangeReport {
            stack: name,
            directory: dir.display().to_string(),
            dry_run: plan.dry_run,
            compose: cli.describe(),
            log: plan.log,
            warnings: plan.warnings,
            containers: after.iter().map(StackContainer::from).collect(),
            recreated,
            plan: plan.steps,
        })
    }
}

/// Status of a project known only from its containers' labels.
fn engine_only_status(name: &str, containers: &[ContainerSummary]) -> StackStatus {
    let label = |key: &str| containers.iter().find_map(|c| c.labels.get(key).cloned());
    let mut services: Vec<ServiceStatus> = Vec::new();
    for c in containers {
        let service = c.compose_service.clone().unwrap_or_default();
        match services.iter_mut().find(|s| s.service == service) {
            Some(s) => s.containers.push(c.into()),
            None => services.push(ServiceStatus {
                service,
                defined: true,
                containers: vec![c.into()],
            }),
        }
    }
    StackStatus {
        name: name.to_string(),
        directory: label("com.docker.compose.project.working_dir"),
        compose_file: label("com.docker.compose.project.config_files"),
        env_keys: Vec::new(),
        origin: None,
        compose: None,
        compose_error: Some(
            "not in the stacks directory: services and containers from the engine's labels only".into(),
        ),
        containers: containers.len(),
        running: containers.iter().filter(|c| c.state == "running").count(),
        services,
    }
}

/// After a failed clone or checkout: nothing of it is left (and the stack directory only if
/// this deploy created it).
fn cleanup_failed_clone(staging: &Path, dir: &Path, created_dir: bool) {
    let _ = std::fs::remove_dir_all(staging);
    if created_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Directory entries with a valid stack name, each found or why not.
type Scanned = Vec<(String, Result<StackFiles, String>)>;

fn scan(settings: &StacksSettings) -> Result<(bool, Scanned), ExecError> {
    let entries = match std::fs::read_dir(&settings.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((false, Vec::new())),
        Err(e) => {
            return Err(ExecError::Failed(format!(
                "cannot read the stacks directory {}: {e}",
                settings.dir.display()
            )));
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_stack_name(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match stack_files(settings, &name) {
            Ok(Some(f)) => out.push((name, Ok(f))),
            Ok(None) => {}
            Err(e) => out.push((name, Err(e))),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((true, out))
}

/// Values shorter than this are not scrubbed from command output (they would blank out
/// ordinary words and digits).
const MIN_SCRUBBED: usize = 3;

/// The values of a `.env` file, to scrub them from command output (never shown).
fn env_values(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            unquoted.to_string()
        })
        .filter(|v| v.len() >= MIN_SCRUBBED)
        .collect()
}

/// The keys of a `.env` file (never its values).
fn env_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, _)| k.trim().trim_start_matches("export ").trim())
        })
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// Services whose image pull failed, with why: v2 prints `SERVICE Error MESSAGE` (and exits 0
/// with `--ignore-pull-failures`), v1 prints `ERROR: for SERVICE  MESSAGE` (and exits 1).
fn pull_failures(output: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in output.lines().map(str::trim) {
        let found = if let Some(rest) = line.strip_prefix("ERROR: for ") {
            rest.split_once(char::is_whitespace)
                .map(|(svc, why)| (svc.to_string(), why.trim().to_string()))
        } else {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some(svc), Some("Error"), Some(why)) => Some((svc.to_string(), why.trim().to_string())),
                _ => None,
            }
        };
        if let Some((svc, why)) = found
            && !out.iter().any(|(s, _)| *s == svc)
        {
            out.push((svc, cut_after(&why, 300)));
        }
    }
    out
}

fn last_line(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() { stdout } else { stderr };
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // Compose prints progress first and the error last.
    cut_after(lines.last().copied().unwrap_or("no output"), 300)
}

// ---------------------------------------------------------------------------------------------
// The plan recorder: records every step and, unless it is a dry run, does it.

struct Plan {
    dry_run: bool,
    limits: Limits,
    /// Values scrubbed from any output kept.
    secrets: Vec<String>,
    steps: Vec<PlanStep>,
    log: Vec<CommandLog>,
    warnings: Vec<String>,
}

impl Plan {
    fn new(dry_run: bool, limits: Limits, secrets: Vec<String>) -> Plan {
        Plan {
            dry_run,
            limits,
            secrets,
            steps: Vec::new(),
            log: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn file_step(&mut self, detail: String) {
        self.steps.push(PlanStep { command: false, detail });
    }

    fn mkdir(&mut self, path: &Path) -> Result<(), ExecError> {
        self.file_step(format!("mkdir {} (mode 0750)", path.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(path)
            .map_err(|e| ExecError::Failed(format!("mkdir {}: {e}", path.display())))
    }

    fn remove_dir(&mut self, path: &Path) -> Result<(), ExecError> {
        self.file_step(format!("remove {} (recursively)", path.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::remove_dir_all(path).map_err(|e| ExecError::Failed(format!("remove {}: {e}", path.display())))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), ExecError> {
        self.file_step(format!("rename {} to {}", from.display(), to.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::rename(from, to)
            .map_err(|e| ExecError::Failed(format!("rename {} to {}: {e}", from.display(), to.display())))
    }

    /// Write `contents` to `path` with mode 0600 (through a temporary file and a rename, so a
    /// reader never sees half a file and the mode is 0600 from the first byte).
    fn write(&mut self, path: &Path, contents: &str, detail: String) -> Result<(), ExecError> {
        self.file_step(detail);
        if self.dry_run {
            return Ok(());
        }
        let tmp = path.with_extension("tmp-tailopsmcp");
        let _ = std::fs::remove_file(&tmp);
        let fail = |e: std::io::Error| ExecError::Failed(format!("write {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        f.write_all(contents.as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// Record and run `cmd`; a failure (non-zero exit, timeout) is an error naming the command
    /// and the end of its output. `None` on a dry run.
    async fn run(&mut self, cmd: CommandSpec, env: &[(String, String)]) -> Result<Option<Output>, ExecError> {
        let shown = render_command(&cmd, env);
        match self.run_tolerant(cmd, env).await? {
            None => Ok(None),
            Some(out) if out.status == Some(0) => Ok(Some(out)),
            Some(out) => {
                let last = self.log.last().map(|l| l.output_tail.clone()).unwrap_or_default();
                let how = if out.timed_out {
                    format!("timed out after {:?}", self.limits.timeout)
                } else {
                    match out.status {
                        Some(code) => format!("exited with status {code}"),
                        None => "was killed".to_string(),
                    }
                };
                Err(ExecError::Failed(format!("`{shown}` {how}: {}", last.trim())))
            }
        }
    }

    /// Record and run `cmd`, returning its output whatever its status.
    async fn run_tolerant(&mut self, cmd: CommandSpec, env: &[(String, String)]) -> Result<Option<Output>, ExecError> {
        let shown = render_command(&cmd, env);
        self.steps.push(PlanStep {
            command: true,
            detail: shown.clone(),
        });
        if self.dry_run {
            return Ok(None);
        }
        let out = super::process::run_with_env(&cmd, env, self.limits).await?;
        let mut both = out.stdout.clone();
        if !out.stderr.is_empty() {
            if !both.is_empty() && !both.ends_with('\n') {
                both.push('\n');
            }
            both.push_str(&out.stderr);
        }
        let both = scrub(&both, &self.secrets);
        let (tail, omitted) = tail_of(&both, OUTPUT_TAIL);
        self.log.push(CommandLog {
            command: shown,
            status: out.status,
            output_tail: tail,
            omitted_bytes: omitted + out.truncated_bytes,
        });
        Ok(Some(out))
    }
}

/// `text` with every secret value replaced by `[REDACTED]`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "[REDACTED]");
        }
    }
    out
}

/// The last `max` bytes of `text` (on a character boundary) and how many bytes came before.
fn tail_of(text: &str, max: usize) -> (String, u64) {
    if text.len() <= max {
        return (text.to_string(), 0);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (text[start..].to_string(), start as u64)
}

/// A command as a shell would need it typed: `NAME=VALUE ... program args`, words quoted only
/// when they need it.
pub fn render_command(cmd: &CommandSpec, env: &[(String, String)]) -> String {
    let mut words: Vec<String> = env.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
    words.push(quote(&cmd.program));
    words.extend(cmd.args.iter().map(|a| quote(a)));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | ',' | '+' | '%')
        });
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Vec<GitHostRule> {
        entries.iter().map(|e| parse_host_rule(e).unwrap()).collect()
    }

    /// `Ok(normalized url)` or `Err(needle)` that the error must contain.
    fn check_url(raw: &str, allowed: &[&str], expected: Result<&str, &str>) {
        let got = parse_git_url(raw, &rules(allowed));
        match (got, expected) {
            (Ok(s), Ok(url)) => assert_eq!(s.url, url, "{raw}"),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{raw}: `{e}` lacks `{needle}`"),
            (got, expected) => panic!("{raw}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn git_urls_are_checked_against_the_allow_list() {
        let hosts = ["github.com", "git.lan", "file:///srv/git"];
        check_url(
            "https://github.com/me/app.git",
            &hosts,
            Ok("https://github.com/me/app.git"),
        );
        check_url(
            "https://GitHub.com/me/app.git",
            &hosts,
            Ok("https://github.com/me/app.git"),
        );
        check_url(
            "ssh://git@git.lan:2222/me/app",
            &hosts,
            Ok("ssh://git@git.lan:2222/me/app"),
        );
        check_url("file:///srv/git/app", &hosts, Ok("file:///srv/git/app"));
        check_url(
            "https://evil.example/x.git",
            &hosts,
            Err("git host `evil.example` is not in"),
        );
        check_url("https://github.com.evil.example/x", &hosts, Err("is not in"));
        check_url("file:///etc/app", &hosts, Err("not under a `file:///PATH` entry"));
        check_url("file:///srv/git/../../etc", &hosts, Err("must not contain `..`"));
        check_url("https://github.com/a/%2E%2E/b", &hosts, Err("must not contain `..`"));
        check_url("file:///srv/gitx/app", &hosts, Err("not under"));
        check_url("file://host/srv/git/app", &hosts, Err("must not name a host"));
        check_url("git@github.com:me/app.git", &hosts, Err("scp-like"));
        check_url("ext::sh -c touch% /tmp/pwned", &hosts, Err("spaces"));
        check_url("ext::sh", &hosts, Err("is not a URL"));
        check_url("ftp://github.com/x", &hosts, Err("scheme `ftp` is not allowed"));
        check_url("https://u:pw@github.com/x", &hosts, Err("credentials"));
        check_url(
            "ssh://-oProxyCommand=x@github.com/x",
            &hosts,
            Err("must not start with `-`"),
        );
        check_url("ssh://-oProxyCommand=x/x", &hosts, Err("host must not start with `-`"));
        check_url("--upload-pack=x", &hosts, Err("must not start with `-`"));
        check_url("https://github.com\\@evil.example/", &hosts, Err("backslashes"));
        check_url("https://github.com/x?a=b", &hosts, Err("query"));
        check_url("https://github.com/x", &[], Err("allowed_git_hosts is empty"));
        check_url("file:///srv/git/app", &["github.com"], Err("not under"));
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            parse_host_rule("GitHub.com").unwrap(),
            GitHostRule::Host("github.com".into())
        );
        assert_eq!(
            parse_host_rule("file:///srv/git").unwrap(),
            GitHostRule::FileUnder("/srv/git".into())
        );
        for bad in [
            "file://relative",
            "file:///a/../b",
            "https://github.com",
            "host:22",
            "",
            "-x",
            "a b",
        ] {
            assert!(parse_host_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stack_names() {
        for ok in ["app", "a", "0x", "my-app_2", &"a".repeat(63)] {
            assert!(validate_stack_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "App",
            "-app",
            "_app",
            "a/b",
            "a.b",
            "a b",
            &"a".repeat(64),
            "é",
        ] {
            let e = validate_stack_name(bad).unwrap_err();
            assert!(e.contains("is not valid"), "{bad}: {e}");
        }
    }

    #[test]
    fn refs() {
        for ok in ["main", "release/1.2", "v1.0.0", "feature-x", "a+b"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        let e = validate_branch("--upload-pack=x").unwrap_err();
        assert!(e.contains("must not start with `-`"), "{e}");
        assert!(validate_branch("a..b").unwrap_err().contains("`..`"));
        for bad in [
            "", "/x", "x/", ".x", "x.lock", "a//b", "a b", "a;b", "$(x)", "a/.b", "x@{1}",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
        assert!(validate_commit("0123abc").is_ok());
        assert!(validate_commit(&"a".repeat(40)).is_ok());
        assert!(validate_commit("-abcdef0").unwrap_err().contains("`-`"));
        for bad in ["abc", "main", "0123abz", &"a".repeat(65)] {
            assert!(validate_commit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compose_paths() {
        for ok in ["compose.yml", "deploy/compose.yaml", "a_b/c-d/docker-compose.yml"] {
            assert!(validate_compose_path(ok).is_ok(), "{ok}");
        }
        assert!(
            validate_compose_path("../x.yml")
                .unwrap_err()
                .contains("escapes the repository")
        );
        assert!(validate_compose_path("a/../../x.yml").unwrap_err().contains("escapes"));
        assert!(validate_compose_path("/etc/x.yml").unwrap_err().contains("absolute"));
        for bad in ["", "compose.txt", "a//b.yml", "./a.yml", "-f.yml", "a b.yml", "a;b.yml"] {
            assert!(validate_compose_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_entries() {
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(validate_env(&env("DB_PASSWORD", "p@ss w$rd#1\"x")).is_ok());
        assert!(validate_env(&env("_X1", "")).is_ok());
        for k in ["1X", "A-B", "", "A B", "A=B"] {
            assert!(
                validate_env(&env(k, "v"))
                    .unwrap_err()
                    .contains("is not a variable name"),
                "{k}"
            );
        }
        for v in ["it's", "a\\b", "a\nb", "a\rb", "${HOME}", "a\0b"] {
            let e = validate_env(&env("SECRET", v)).unwrap_err();
            assert!(e.contains("env `SECRET`") && !e.contains(v), "{e}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_ENV).map(|i| (format!("K{i}"), "v".into())).collect();
        assert!(validate_env(&many).unwrap_err().contains("at most 100"));
    }

    #[test]
    fn compose_files_resolve_inside_the_checkout_only() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        std::fs::create_dir_all(repo.join("sub")).unwrap();
        std::fs::write(repo.join("compose.yml"), "services: {}\n").unwrap();
        std::fs::write(root.path().join("outside.yml"), "services: {}\n").unwrap();
        std::os::unix::fs::symlink("../outside.yml", repo.join("escape.yml")).unwrap();
        std::os::unix::fs::symlink("../compose.yml", repo.join("sub/inside.yml")).unwrap();
        assert!(resolve_within(&repo, "compose.yml").is_ok());
        assert!(resolve_within(&repo, "sub/inside.yml").is_ok());
        assert!(
            resolve_within(&repo, "escape.yml")
                .unwrap_err()
                .contains("outside the repository")
        );
        assert!(
            resolve_within(&repo, "missing.yml")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(resolve_within(&repo, "sub").unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn commands_render_as_typed() {
        let cmd = CommandSpec::new("docker-compose", ["--file", "/a b/c.yml", "up", "it's"]);
        let env = vec![("DOCKER_HOST".to_string(), "unix:///run/d.sock".to_string())];
        assert_eq!(
            render_command(&cmd, &env),
            r"DOCKER_HOST=unix:///run/d.sock docker-compose --file '/a b/c.yml' up 'it'\''s'"
        );
    }

    #[test]
    fn output_keeps_the_end_without_secrets() {
        assert_eq!(tail_of("abcdef", 3), ("def".to_string(), 3));
        assert_eq!(tail_of("ab", 3), ("ab".to_string(), 0));
        assert_eq!(tail_of("aéb", 2), ("b".to_string(), 3));
        assert_eq!(scrub("pw=hunter2!", &["hunter2".into()]), "pw=[REDACTED]!");
    }

    #[test]
    fn pull_failures_of_v1_and_v2() {
        let v2 = " web Pulling \n web Error Get \"https://registry-1.docker.io/v2/\": no such host\n db Pulled \n";
        assert_eq!(
            pull_failures(v2),
            vec![(
                "web".to_string(),
                "Get \"https://registry-1.docker.io/v2/\": no such host".to_string()
            )]
        );
        let v1 = "Pulling web ... error\n\nERROR: for web  Get \"https://x/v2/\": no such host\nGet \"https://x/v2/\": no such host\n";
        assert_eq!(
            pull_failures(v1),
            vec![("web".to_string(), "Get \"https://x/v2/\": no such host".to_string())]
        );
        assert!(pull_failures("Pulling web ... done\n").is_empty());
    }

    #[test]
    fn env_file_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "# c\nA='1'\n\nexport B=2\nC\n").unwrap();
        assert_eq!(env_keys(&p), vec!["A", "B"]);
        std::fs::write(&p, "A='one two'\nB=\"three\"\nC=xy\nD=plain\n").unwrap();
        assert_eq!(env_values(&p), vec!["one two", "three", "plain"]);
    }
}
