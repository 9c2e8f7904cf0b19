//! Docker engines, through bollard: list, inspect, start/stop/restart/pause/unpause, logs and a
//! one-shot stats sample of containers, on a local socket (`unix://`) or a remote engine over
//! `tcp://` with TLS (CA, client certificate and key files).
//!
//! This is the only module that uses bollard (and its models never leave it: every output is a
//! curated serde + schemars type defined here). It owns the target's own constraints: every call is
//! bounded by [`Limits::timeout`], log output by [`Limits::max_output`], container names and ids are
//! validated before any request is built (bollard puts them into the URL path unescaped), and a
//! plain-text `tcp://` engine is refused unless the target opts in. `inspect` redacts secrets by
//! the server-wide rules of [`crate::secrets`]: environment values and labels with secret names,
//! passwords in URLs, and secret options in the command, entrypoint and health check. It knows nothing about callers, MCP, policy or audit.
//!
//! TLS is configured here rather than by bollard's `connect_with_ssl`: that constructor requires a
//! CA file, fails when any system root does not load, looks up a process-wide rustls provider with
//! `expect` (a panic when none is installed) and hides why a handshake failed. We build the rustls
//! configuration ourselves (aws-lc-rs provider, the one reqwest uses too; the CA file, or the system roots when no CA is given)
//! and hand bollard a hyper-rustls client as a custom transport, so a certificate problem maps to
//! [`ExecError::HostVerification`] and a refused client certificate to [`ExecError::Auth`].
//!
//! The connection (and the API version negotiated with the engine) is made on first use and
//! reused; a failed connection is retried on the next call.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::error::Error as StdError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RestartContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ExecError, Limits};

/// The endpoint used when a target gives none.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Longest container name or id accepted.
pub const MAX_REF_LEN: usize = 255;
/// Most log lines one `logs` call asks the engine for.
pub const MAX_TAIL: usize = 100_000;
/// Longest `grep` pattern accepted, in bytes.
pub const MAX_GREP_LEN: usize = 1024;
/// What a redacted value is replaced with (the marker of [`crate::secrets`], used everywhere).
pub const REDACTED: &str = crate::secrets::REDACTED;

/// How a `[[target]]` of kind `docker` reaches its engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// `unix:///var/run/docker.sock` (default) or `tcp://HOST:PORT`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// CA certificate(s) (PEM) that sign the engine's certificate; the system roots when absent.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the engine; goes with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Allow `tcp://` without TLS. Anyone on the path can then run containers as root on the
    /// engine's host: only for an engine on a trusted, isolated network.
    #[serde(default)]
    pub insecure_plain_tcp: bool,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            endpoint: default_endpoint(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            insecure_plain_tcp: false,
        }
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}

/// One Docker engine. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Docker {
    inner: Arc<Inner>,
}

/// The engine's identity and versions, for `targets_check`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EngineInfo {
    /// The endpoint as configured.
    pub endpoint: String,
    /// Engine version, e.g. `20.10.24`.
    pub version: Option<String>,
    /// Newest API version the engine speaks.
    pub api_version: Option<String>,
    /// Oldest API version the engine speaks.
    pub min_api_version: Option<String>,
    /// The API version this client uses with it (negotiated: the lower of ours and the engine's).
    pub negotiated_api_version: String,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub kernel_version: Option<String>,
    pub go_version: Option<String>,
    pub git_commit: Option<String>,
}

/// One container as `docker ps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ContainerSummary {
    /// Short id (12 hex digits).
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image as given when the container was created.
    pub image: String,
    /// `created`, `running`, `paused`, `restarting`, `exited`, `removing` or `dead`.
    pub state: String,
    /// Human status, e.g. `Up 5 minutes`, `Exited (0) 2 hours ago`.
    pub status: String,
    /// Creation time, RFC 3339 UTC.
    pub created: Option<String>,
    pub ports: Vec<PortMapping>,
    /// `com.docker.compose.project`, when the container belongs to a Compose project.
    pub compose_project: Option<String>,
    /// `com.docker.compose.service`.
    pub compose_service: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A container port and, when published, where on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct PortMapping {
    pub private_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address it is published on.
    pub host_ip: Option<String>,
    pub public_port: Option<u16>,
}

/// A curated `docker inspect`: what it runs, its state, restart policy, mounts and networks.
/// Environment values whose keys look secret are replaced by [`REDACTED`].
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ContainerDetails {
    /// Full id (64 hex digits).
    pub id: String,
    pub name: String,
    /// Image as given when the container was created.
    pub image: Option<String>,
    /// The image's id (`sha256:…`).
    pub image_id: Option<String>,
    /// Creation time as the engine reports it (RFC 3339).
    pub created: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub env: Vec<EnvVar>,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub restart_policy: RestartPolicy,
    pub restart_count: i64,
    pub mounts: Vec<Mount>,
    /// `bridge`, `host`, `none`, `container:ID` or a network name.
    pub network_mode: Option<String>,
    pub networks: Vec<Network>,
    pub ports: Vec<PortMapping>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Memory limit in bytes (`None`: unlimited).
    pub memory_limit_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU (`None`: unlimited).
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub log_driver: Option<String>,
    /// The health check command, when the container has one.
    pub healthcheck: Option<Vec<String>>,
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before killing, when set on the container.
    pub stop_timeout: Option<i64>,
}

/// One environment variable; `value` is [`REDACTED`] when `redacted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub redacted: bool,
}

/// A container's run state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    pub oom_killed: bool,
    pub dead: bool,
    /// Main process id on the engine's host (0 when not running).
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `starting`, `healthy` or `unhealthy` when the container has a health check.
    pub health: Option<String>,
    pub health_failing_streak: Option<i64>,
}

/// What the engine does when the container exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped` or `on-failure` (empty means `no`).
    pub name: String,
    pub maximum_retry_count: Option<i64>,
}

/// A volume, bind mount or tmpfs in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Mount {
    /// `bind`, `volume`, `tmpfs`, `npipe` or `cluster`.
    pub kind: Option<String>,
    /// Volume name (volumes only).
    pub name: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub mode: Option<String>,
    pub read_write: bool,
}

/// The container's endpoint on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Network {
    pub name: String,
    pub ip_address: Option<String>,
    pub gateway: Option<String>,
    pub mac_address: Option<String>,
    pub aliases: Vec<String>,
}

/// The outcome of a start/stop/restart/pause/unpause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ActionResult {
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    /// Status before the action (`running`, `exited`, `paused`, …).
    pub state_before: String,
    /// Status right after it.
    pub state_after: String,
}

/// Which log lines to return.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// How many of the most recent lines to read (1..=100000; default 100).
    #[serde(default = "default_tail")]
    pub tail: usize,
    /// Only lines logged at or after this time (Unix seconds).
    #[serde(default)]
    pub since: Option<i64>,
    /// Keep only the lines (of those read) that contain this text (case-sensitive).
    #[serde(default)]
    pub grep: Option<String>,
    /// Treat `grep` as a regular expression (Rust `regex` syntax: linear time, no
    /// backreferences) instead of plain text.
    #[serde(default)]
    pub regex: bool,
    /// Most bytes of line text to return (default 64 KiB; the target's output cap applies too);
    /// the oldest lines are dropped first.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

impl Default for LogQuery {
    fn default() -> Self {
        LogQuery {
            tail: default_tail(),
            since: None,
            grep: None,
            regex: false,
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_tail() -> usize {
    100
}

fn default_max_bytes() -> usize {
    64 * 1024
}

/// Log lines, oldest first, and what was cut.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Logs {
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    pub lines: Vec<LogLine>,
    /// Lines the engine returned (before `grep`).
    pub lines_read: usize,
    /// Lines that matched `grep` (all lines read when there is none).
    pub lines_matched: usize,
    /// Matching lines left out (oldest first) to stay within the byte cap.
    pub truncated_lines: usize,
    /// Bytes of line text left out by the byte cap (dropped lines and cut long lines).
    pub truncated_bytes: u64,
    /// The byte cap applied: `max_bytes`, lowered to the target's output cap.
    pub max_bytes: usize,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LogLine {
    pub stream: LogStream,
    /// When the engine logged it (RFC 3339, nanoseconds).
    pub timestamp: Option<String>,
    /// The line without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// A container with a TTY: stdout and stderr are one stream.
    Console,
}

/// One sample of a running container's resource use.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Stats {
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    /// When the engine took the sample.
    pub read_at: Option<String>,
    /// CPU use over the engine's sampling interval, in percent of one CPU (can exceed 100 with
    /// several CPUs); `None` when the engine gave no previous sample.
    pub cpu_percent: Option<f64>,
    pub online_cpus: Option<u32>,
    /// Memory in use without the page cache (as `docker stats` shows it).
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub memory_percent: Option<f64>,
    /// Bytes received, summed over the container's interfaces.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub pids: Option<u64>,
}

impl Docker {
    /// Checks `settings` and reads the TLS files; connects on first use, not here.
    /// `target_id` names the target in error messages.
    pub fn new(target_id: &str, settings: DockerSettings, limits: Limits) -> Result<Docker, ExecError> {
        let transport = Transport::from_settings(&settings)?;
        Ok(Docker {
            inner: Arc::new(Inner {
                target_id: target_id.to_string(),
                endpoint: settings.endpoint,
                limits,
                transport,
                client: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The engine's version and the API version negotiated with it (connects if needed).
    pub async fn version(&self) -> Result<EngineInfo, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let v = client.version().await.map_err(|e| self.map_err(e, None))?;
            let negotiated = client.client_version();
            Ok(EngineInfo {
                endpoint: self.inner.endpoint.clone(),
                version: v.version,
                api_version: v.api_version,
                min_api_version: v.min_api_version,
                negotiated_api_version: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
                os: v.os,
                arch: v.arch,
                kernel_version: v.kernel_version,
                go_version: v.go_version,
                git_commit: v.git_commit,
            })
        })
        .await
    }

    /// Containers, running ones only unless `all`; sorted by name.
    pub async fn list(&self, all: bool) -> Result<Vec<ContainerSummary>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let options = ListContainersOptionsBuilder::new().all(all).build();
            let containers = client
                .list_containers(Some(options))
                .await
                .map_err(|e| self.map_err(e, None))?;
            let mut out: Vec<ContainerSummary> = containers.into_iter().map(summary_from).collect();
            out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
            Ok(out)
        })
        .await
    }

    /// A curated view of one container (by name or id).
    pub async fn inspect(&self, id_or_name: &str) -> Result<ContainerDetails, ExecError> {
        validate_ref(id_or_name)?;
        self.bounded(async {
            let client = self.client().await?;
            let raw = client
                .inspect_container(id_or_name, None)
                .await
                .map_err(|e| self.map_err(e, Some(id_or_name)))?;
            Ok(details_from(raw))
        })
        .await
    }

    /// Starts a container (a running one is left as it is).
    pub async fn start(&self, id: &str) -> Result<ActionResult, ExecError> {
        self.action(id, Action::Start).await
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout_secs` (the container's
    /// own stop timeout, or the engine's 10 s, when `None`). `timeout_secs` must be below the
    /// target's operation timeout.
    pub async fn stop(&self, id: &str, timeout_secs: Option<i64>) -> Result<ActionResult, ExecError> {
        let t = self.stop_timeout(timeout_secs)?;
        self.action(id, Action::Stop(t)).await
    }

    /// Restarts a container (stop as in [`Docker::stop`], then start).
    pub async fn restart(&self, id: &str, timeout_secs: Option<i64>) -> Result<ActionResult, ExecError> {
        let t = self.stop_timeout(timeout_secs)?;
        self.action(id, Action::Restart(t)).await
    }

    /// Freezes a running container's processes.
    pub async fn pause(&self, id: &str) -> Result<ActionResult, ExecError> {
        self.action(id, Action::Pause).await
    }

    /// Thaws a paused container.
    pub async fn unpause(&self, id: &str) -> Result<ActionResult, ExecError> {
        self.action(id, Action::Unpause).await
    }

    /// The last `q.tail` lines of stdout and stderr (since `q.since`), filtered by `q.grep`, the
    /// newest kept within `min(q.max_bytes, limits.max_output)` bytes.
    pub async fn logs(&self, id: &str, q: LogQuery) -> Result<Logs, ExecError> {
        validate_ref(id)?;
        let (since, matcher) = validate_log_query(&q)?;
        let cap = q.max_bytes.min(self.inner.limits.max_output);
        self.bounded(async {
            let client = self.client().await?;
            let info = client
                .inspect_container(id, None)
                .await
                .map_err(|e| self.map_err(e, Some(id)))?;
            let (full_id, name) = id_and_name(&info);
            let mut builder = LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .tail(&q.tail.to_string());
            if let Some(since) = since {
                builder = builder.since(since);
            }
            let mut stream = client.logs(&full_id, Some(builder.build()));
            let mut collector = LogCollector::new(matcher, cap);
            while let Some(frame) = stream.next().await {
                let frame = frame.map_err(|e| self.map_err(e, Some(id)))?;
                let (kind, bytes) = match frame {
                    bollard::container::LogOutput::StdOut { message } => (LogStream::Stdout, message),
                    bollard::container::LogOutput::StdErr { message } => (LogStream::Stderr, message),
                    bollard::container::LogOutput::Console { message } => (LogStream::Console, message),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                collector.push_frame(kind, &bytes);
            }
            Ok(collector.finish(short_id(&full_id), name))
        })
        .await
    }

    /// One sample of a running container's CPU, memory, network, block IO and pids (the engine
    /// takes about a second to measure CPU use).
    pub async fn stats(&self, id: &str) -> Result<Stats, ExecError> {
        validate_ref(id)?;
        self.bounded(async {
            let client = self.client().await?;
            let info = client
                .inspect_container(id, None)
                .await
                .map_err(|e| self.map_err(e, Some(id)))?;
            let (full_id, name) = id_and_name(&info);
            let status = state_status(&info);
            if status != "running" {
                return Err(ExecError::Failed(format!(
                    "container `{name}` is not running (status: {status}): no stats to sample"
                )));
            }
            // stream=false without one_shot: the engine takes two samples, so CPU use is known.
            let options = StatsOptionsBuilder::new().stream(false).one_shot(false).build();
            let mut stream = client.stats(&full_id, Some(options));
            let sample = match stream.next().await {
                Some(sample) => sample.map_err(|e| self.map_err(e, Some(id)))?,
                None => return Err(ExecError::Failed(format!("the engine sent no stats for `{name}`"))),
            };
            Ok(stats_from(short_id(&full_id), name, &sample))
        })
        .await
    }

    /// The target's id, as given to [`Docker::new`].
    pub fn target_id(&self) -> &str {
        &self.inner.target_id
    }
}

// ---------------------------------------------------------------------------------------------
// Remove, images (list, pull), recreate from a newer image, networks and volumes.

/// One engine API call as a plan shows it, e.g. `POST /containers/web/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ApiCall {
    /// `GET`, `POST` or `DELETE`.
    pub method: String,
    /// Path and query, without the API version prefix.
    pub path: String,
}

impl ApiCall {
    fn new(method: &str, path: String) -> ApiCall {
        ApiCall {
            method: method.to_string(),
            path,
        }
    }
}

impl std::fmt::Display for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// A state change of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAction {
    Start,
    Stop,
    Restart,
    Pause,
    Unpause,
}

impl ContainerAction {
    pub fn verb(self) -> &'static str {
        match self {
            ContainerAction::Start => "start",
            ContainerAction::Stop => "stop",
            ContainerAction::Restart => "restart",
            ContainerAction::Pause => "pause",
            ContainerAction::Unpause => "unpause",
        }
    }
}

/// The API call `action` makes on `container` (a name or id as given); `timeout_secs` applies to
/// stop and restart.
pub fn action_call(action: ContainerAction, container: &str, timeout_secs: Option<i64>) -> ApiCall {
    let mut path = format!("/containers/{container}/{}", action.verb());
    if let (ContainerAction::Stop | ContainerAction::Restart, Some(t)) = (action, timeout_secs) {
        path.push_str(&format!("?t={t}"));
    }
    ApiCall::new("POST", path)
}

/// The API call that removes `container`.
pub fn remove_call(container: &str, force: bool, volumes: bool) -> ApiCall {
    let query: Vec<&str> = [(force, "force=true"), (volumes, "v=true")]
        .into_iter()
        .filter_map(|(on, q)| on.then_some(q))
        .collect();
    let mut path = format!("/containers/{container}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    ApiCall::new("DELETE", path)
}

/// The API call that pulls `image`.
pub fn pull_call(image: &ImageRef) -> ApiCall {
    ApiCall::new(
        "POST",
        format!("/images/create?fromImage={}&tag={}", image.name, image.tag),
    )
}

/// Longest image reference accepted.
pub const MAX_IMAGE_REF_LEN: usize = 255;

/// A validated image reference: `[registry[:port]/]path[:tag|@digest]`. A reference without a
/// tag or digest means `:latest` (the engine would otherwise pull every tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository name with its registry, e.g. `nginx`, `ghcr.io/org/app`, `127.0.0.1:5000/x`.
    pub name: String,
    /// The tag, or the digest (`sha256:…`) when `digest`.
    pub tag: String,
    pub digest: bool,
}

impl ImageRef {
    /// Parses and validates `s` (Docker's reference grammar; lowercase path components).
    pub fn parse(s: &str) -> Result<ImageRef, ExecError> {
        let bad = |why: &str| {
            let shown: String = s.chars().take(64).collect();
            let more = if s.chars().count() > 64 { "…" } else { "" };
            ExecError::Refused(format!(
                "invalid image reference {shown:?}{more}: {why} (expected [registry[:port]/]name[:tag|@sha256:digest])"
            ))
        };
        if s.is_empty() || s.len() > MAX_IMAGE_REF_LEN {
            return Err(bad(&format!("must be 1 to {MAX_IMAGE_REF_LEN} characters")));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        let (name, tag) = match digest {
            Some(d) => {
                let (algo, hex) = d.split_once(':').ok_or_else(|| bad("digest must be ALGORITHM:HEX"))?;
                let algo_ok = !algo.is_empty() && algo.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                let hex_ok = hex.len() >= 32 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
                if !algo_ok || !hex_ok {
                    return Err(bad("digest must be ALGORITHM:HEX (at least 32 lowercase hex digits)"));
                }
                // `name:tag@digest` pins the digest; the tag is informational.
                let name = match rest.rfind(':') {
                    Some(i) if !rest[i..].contains('/') => &rest[..i],
                    _ => rest,
                };
                (name, d.to_string())
            }
            None => match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => {
                    let tag = &rest[i + 1..];
                    let mut chars = tag.chars();
                    let ok = tag.len() <= 128
                        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                    if !ok {
                        return Err(bad(
                            "a tag is 1 to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`",
                        ));
                    }
                    (&rest[..i], tag.to_string())
                }
                _ => (rest, "latest".to_string()),
            },
        };
        let mut parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            if !valid_registry(parts[0]) {
                return Err(bad("invalid registry host"));
            }
            parts.remove(0);
        }
        if parts.iter().any(|p| !valid_path_component(p)) {
            return Err(bad(
                "each path component is lowercase letters and digits, separated by `.`, `_`, `__` or dashes",
            ));
        }
        Ok(ImageRef {
            name: name.to_string(),
            tag,
            digest: digest.is_some(),
        })
    }

    /// `name:tag` or `name@digest`.
    pub fn reference(&self) -> String {
        if self.digest {
            format!("{}@{}", self.name, self.tag)
        } else {
            format!("{}:{}", self.name, self.tag)
        }
    }
}

/// `host[:port]`: DNS labels of letters, digits and inner `-`, separated by dots.
fn valid_registry(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && host_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
}

/// A container that was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RemoveResult {
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    /// Status before removal.
    pub state_before: String,
    /// Volumes the container used that no longer exist afterwards (anonymous volumes, with `volumes`).
    pub volumes_removed: Vec<String>,
    /// Volumes the container used that are still there (named volumes are never removed).
    pub volumes_kept: Vec<String>,
}

/// One local image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ImageInfo {
    /// Image id, `sha256:` and the first 12 hex digits.
    pub id: String,
    /// `repository:tag` names (empty for a dangling image).
    pub tags: Vec<String>,
    /// `repository@sha256:…` digests from the registries it was pulled from.
    pub digests: Vec<String>,
    /// Creation time of the image (RFC 3339 UTC).
    pub created: Option<String>,
    pub size_bytes: u64,
    /// Containers using it, when the engine counted them.
    pub containers: Option<u64>,
}

/// The outcome of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PullResult {
    /// The reference pulled (`name:tag` or `name@digest`).
    pub image: String,
    /// The image id the reference named here before the pull (`None`: not present).
    pub image_id_before: Option<String>,
    pub image_id_after: String,
    /// Whether the reference now names a different image.
    pub changed: bool,
    /// The engine's last status line, e.g. `Status: Image is up to date for …`.
    pub status: Option<String>,
}

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct NetworkInfo {
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    /// `bridge`, `host`, `null`, `overlay`, `macvlan`, …
    pub driver: Option<String>,
    /// `local` or `swarm`.
    pub scope: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    /// IPAM subnets (CIDR).
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub created: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    /// Where its data lives on the engine's host.
    pub mountpoint: String,
    pub created: Option<String>,
    /// `local` or `global`.
    pub scope: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Names of the containers (running or not) that mount it; empty = unused.
    pub used_by: Vec<String>,
}

/// How [`Docker::update`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Pull the image reference first (otherwise use what the reference names locally now).
    pub pull: bool,
    /// Seconds the old container gets to stop (its own or the engine's default when `None`).
    pub stop_timeout_secs: Option<i64>,
    /// Inspect only; return the plan without changing anything.
    pub dry_run: bool,
}

/// What [`Docker::update`] did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct UpdateReport {
    pub name: String,
    /// The image reference the container was created from (and is recreated from).
    pub image: String,
    /// Short id of the container before.
    pub old_container_id: String,
    /// Short id of the new container (`None`: not recreated).
    pub new_container_id: Option<String>,
    /// Image id the container ran.
    pub old_image_id: String,
    /// Image id the reference names after the pull (`None` in a dry run).
    pub new_image_id: Option<String>,
    /// Whether the reference already named the container's image (`None` in a dry run).
    pub up_to_date: Option<bool>,
    pub recreated: bool,
    pub state_before: String,
    pub state_after: Option<String>,
    /// The API calls, in order: the ones made, or in a dry run the ones that would be made
    /// (those after the image inspection only when the image id changed).
    pub plan: Vec<ApiCall>,
}

impl Docker {
    /// Removes a container; `force` kills a running one first, `volumes` also removes its
    /// anonymous volumes (named volumes are kept).
    pub async fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<RemoveResult, ExecError> {
        validate_ref(id)?;
        self.bounded(async {
            let client = self.client().await?;
            let info = client
                .inspect_container(id, None)
                .await
                .map_err(|e| self.map_err(e, Some(id)))?;
            let (full_id, name) = id_and_name(&info);
            let state_before = state_status(&info);
            let volume_names: Vec<String> = info
                .mounts
                .iter()
                .flatten()
                .filter(|m| m.typ.as_deref() == Some("volume"))
                .filter_map(|m| nonempty(m.name.clone()))
                .collect();
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(force)
                .v(volumes)
                .build();
            client
                .remove_container(&full_id, Some(options))
                .await
                .map_err(|e| self.map_err(e, Some(id)))?;
            let (mut removed, mut kept) = (Vec::new(), Vec::new());
            for v in volume_names {
                match client.inspect_volume(&v).await {
                    Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => removed.push(v),
                    _ => kept.push(v),
                }
            }
            Ok(RemoveResult {
                id: short_id(&full_id),
                name,
                state_before,
                volumes_removed: removed,
                volumes_kept: kept,
            })
        })
        .await
    }

    /// Local images, newest first.
    pub async fn images(&self) -> Result<Vec<ImageInfo>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let options = bollard::query_parameters::ListImagesOptionsBuilder::new().build();
            let raw = client
                .list_images(Some(options))
                .await
                .map_err(|e| self.map_err(e, None))?;
            let mut out: Vec<(i64, ImageInfo)> = raw
                .into_iter()
                .map(|i| {
                    let mut tags: Vec<String> = i.repo_tags.into_iter().filter(|t| t != "<none>:<none>").collect();
                    tags.sort();
                    let mut digests: Vec<String> =
                        i.repo_digests.into_iter().filter(|d| d != "<none>@<none>").collect();
                    digests.sort();
                    let info = ImageInfo {
                        id: short_image_id(&i.id),
                        tags,
                        digests,
                        created: crate::when::rfc3339(i.created),
                        size_bytes: u64::try_from(i.size).unwrap_or(0),
                        containers: u64::try_from(i.containers).ok(),
                    };
                    (i.created, info)
                })
                .collect();
            out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.tags.cmp(&b.1.tags)));
            Ok(out.into_iter().map(|(_, i)| i).collect())
        })
        .await
    }

    /// Pulls `image` from its registry (anonymously: no registry credentials are sent).
    pub async fn pull(&self, image: &ImageRef) -> Result<PullResult, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let reference = image.reference();
            let before = self.image_id(client, &reference).await?;
            let status = self.pull_stream(client, image).await?;
            let after = self.image_id(client, &reference).await?.ok_or_else(|| {
                ExecError::Failed(format!(
                    "the engine reported the pull of `{reference}` done but has no such image"
                ))
            })?;
            Ok(PullResult {
                image: reference,
                changed: before.as_deref() != Some(after.as_str()),
                image_id_before: before,
                image_id_after: after,
                status,
            })
        })
        .await
    }

    /// The id (`sha256:…`) `image` names on the engine now; `None` when it has no such image.
    pub async fn image_id_of(&self, image: &ImageRef) -> Result<Option<String>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            self.image_id(client, &image.reference()).await
        })
        .await
    }

    /// Networks, sorted by name.
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let raw = client.list_networks(None).await.map_err(|e| self.map_err(e, None))?;
            let mut out: Vec<NetworkInfo> = raw
                .into_iter()
                .map(|n| {
                    let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
                    NetworkInfo {
                        id: short_id(n.id.as_deref().unwrap_or_default()),
                        name: n.name.unwrap_or_default(),
                        driver: nonempty(n.driver),
                        scope: nonempty(n.scope),
                        internal: n.internal.unwrap_or(false),
                        attachable: n.attachable.unwrap_or(false),
                        subnets: configs.iter().filter_map(|c| nonempty(c.subnet.clone())).collect(),
                        gateways: configs.iter().filter_map(|c| nonempty(c.gateway.clone())).collect(),
                        created: n.created.map(|t| t.to_string()),
                        labels: n.labels.unwrap_or_default().into_iter().collect(),
                    }
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// Volumes, sorted by name, each with the containers that mount it.
    pub async fn volumes(&self) -> Result<Vec<VolumeInfo>, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let raw = client
                .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
                .await
                .map_err(|e| self.map_err(e, None))?;
            let options = ListContainersOptionsBuilder::new().all(true).build();
            let containers = client
                .list_containers(Some(options))
                .await
                .map_err(|e| self.map_err(e, None))?;
            let mut users: HashMap<String, Vec<String>> = HashMap::new();
            for c in containers {
                let name = summary_from(c.clone()).name;
                for m in c.mounts.unwrap_or_default() {
                    if let Some(v) = nonempty(m.name) {
                        users.entry(v).or_default().push(name.clone());
                    }
                }
            }
            let mut out: Vec<VolumeInfo> = raw
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| {
                    let mut used_by = users.remove(&v.name).unwrap_or_default();
                    used_by.sort();
                    used_by.dedup();
                    VolumeInfo {
                        driver: v.driver,
                        mountpoint: v.mountpoint,
                        created: v.created_at.map(|t| t.to_string()),
                        scope: v.scope.map(|s| s.to_string()).filter(|s| !s.is_empty()),
                        labels: v.labels.into_iter().collect(),
                        used_by,
                        name: v.name,
                    }
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// Recreates a container from a newer image: pull its image reference (unless `!pull`),
    /// and when the reference now names another image, stop the container, rename it out of
    /// the way, create a new one under its name with the same configuration (values the old
    /// image supplied are left to the new image), connect its other networks, start it if the
    /// old one ran, and remove the old one (its volumes stay, anonymous ones are mounted into
    /// the new container). A failure after the rename puts the old container back.
    pub async fn update(&self, id: &str, options: UpdateOptions) -> Result<UpdateReport, ExecError> {
        validate_ref(id)?;
        let stop_t = self.stop_timeout(options.stop_timeout_secs)?;
        let client = self.bounded(self.client()).await?;
        let info = self
            .bounded(async {
                client
                    .inspect_container(id, None)
                    .await
                    .map_err(|e| self.map_err(e, Some(id)))
            })
            .await?;
        let (full_id, name) = id_and_name(&info);
        let state_before = state_status(&info);
        let running = matches!(state_before.as_str(), "running" | "paused" | "restarting");
        let old_image_id = info.image.clone().unwrap_or_default();
        let reference = info.config.as_ref().and_then(|c| c.image.clone()).unwrap_or_default();
        let image = ImageRef::parse(&reference).map_err(|_| {
            ExecError::Failed(format!(
                "container `{name}` was created from `{reference}`, not from an image reference with a tag: \
                 there is nothing to update it from"
            ))
        })?;
        if reference.starts_with("sha256:")
            || image.name.len() == 64 && image.name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ExecError::Failed(format!(
                "container `{name}` was created from an image id, not a tag: there is nothing to update it from"
            )));
        }
        if info.host_config.as_ref().and_then(|h| h.auto_remove) == Some(true) {
            return Err(ExecError::Failed(format!(
                "container `{name}` was started with --rm: stopping it would remove it before it could be \
                 recreated; recreate it with its new image yourself"
            )));
        }
        let (_, extra_networks) = networking_for_create(&info);
        let old_name = old_name_for(&name, &full_id);
        let plan = update_plan(&UpdatePlanInput {
            container: &name,
            old_name: &old_name,
            image: &image,
            pull: options.pull,
            running,
            stop_t,
            extra_networks: &extra_networks,
        });
        let mut report = UpdateReport {
            name: name.clone(),
            image: reference.clone(),
            old_container_id: short_id(&full_id),
            new_container_id: None,
            old_image_id: old_image_id.clone(),
            new_image_id: None,
            up_to_date: None,
            recreated: false,
            state_before: state_before.clone(),
            state_after: None,
            plan,
        };
        if options.dry_run {
            return Ok(report);
        }
        if options.pull {
            self.bounded(self.pull_stream(client, &image)).await?;
        }
        let new_image_id = self
            .bounded(self.image_id(client, &reference))
            .await?
            .ok_or_else(|| ExecError::Failed(format!("no image `{reference}` on the engine (pull: false?)")))?;
        report.new_image_id = Some(new_image_id.clone());
        if new_image_id == old_image_id {
            // Only the read-only calls ran.
            let keep = if options.pull { 3 } else { 2 };
            report.plan.truncate(keep);
            report.up_to_date = Some(true);
            report.state_after = Some(state_before);
            return Ok(report);
        }
        report.up_to_date = Some(false);
        let old_image_config = self
            .bounded(async { Ok(client.inspect_image(&old_image_id).await.ok().and_then(|i| i.config)) })
            .await?;
        let body = recreate_body(&info, old_image_config.as_ref());
        let new_id = self
            .recreate(client, &info, body, &extra_networks, &old_name, running, stop_t)
            .await?;
        let after = self
            .bounded(async {
                client
                    .inspect_container(&new_id, None)
                    .await
                    .map_err(|e| self.map_err(e, Some(&name)))
            })
            .await?;
        report.new_container_id = Some(short_id(&new_id));
        report.recreated = true;
        report.state_after = Some(state_status(&after));
        Ok(report)
    }

    /// The stop → rename → create → connect → start → remove sequence, with the old container
    /// put back when a step after the rename fails. Returns the new container's full id.
    #[allow(clippy::too_many_arguments)]
    async fn recreate(
        &self,
        client: &bollard::Docker,
        info: &bollard::models::ContainerInspectResponse,
        body: bollard::models::ContainerCreateBody,
        extra_networks: &[(String, bollard::models::EndpointSettings)],
        old_name: &str,
        running: bool,
        stop_t: Option<i32>,
    ) -> Result<String, ExecError> {
        let (full_id, name) = id_and_name(info);
        let map = |e| self.map_err(e, Some(&name));
        if running {
            let mut o = StopContainerOptionsBuilder::new();
            if let Some(t) = stop_t {
                o = o.t(t);
            }
            self.bounded(async { client.stop_container(&full_id, Some(o.build())).await.map_err(map) })
                .await?;
        }
        let rename = |to: String| {
            let full_id = full_id.clone();
            async move {
                let o = bollard::query_parameters::RenameContainerOptionsBuilder::new()
                    .name(&to)
                    .build();
                self.bounded(async { client.rename_container(&full_id, o).await.map_err(map) })
                    .await
            }
        };
        if let Err(e) = rename(old_name.to_string()).await {
            let how = if !running {
                "the old container is unchanged".to_string()
            } else {
                match self
                    .bounded(async { client.start_container(&full_id, None).await.map_err(map) })
                    .await
                {
                    Ok(()) => "the old container was started again".to_string(),
                    Err(e) => format!("starting the old container again failed: {e}"),
                }
            };
            return Err(ExecError::Failed(format!("recreating `{name}` failed: {e}; {how}")));
        }
        let created = async {
            let o = bollard::query_parameters::CreateContainerOptionsBuilder::new()
                .name(&name)
                .build();
            let new = self
                .bounded(async { client.create_container(Some(o), body).await.map_err(map) })
                .await?;
            Ok::<String, ExecError>(new.id)
        }
        .await;
        let new_id = match created {
            Ok(id) => id,
            Err(e) => return Err(self.roll_back(client, &full_id, &name, None, running, e).await),
        };
        let rest = async {
            for (network, endpoint) in extra_networks {
                let req = bollard::models::NetworkConnectRequest {
                    container: new_id.clone(),
                    endpoint_config: Some(endpoint.clone()),
                };
                self.bounded(async { client.connect_network(network, req).await.map_err(map) })
                    .await?;
            }
            if running {
                self.bounded(async { client.start_container(&new_id, None).await.map_err(map) })
                    .await?;
            }
            Ok::<(), ExecError>(())
        }
        .await;
        if let Err(e) = rest {
            return Err(self.roll_back(client, &full_id, &name, Some(&new_id), running, e).await);
        }
        let o = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        self.bounded(async { client.remove_container(&full_id, Some(o)).await.map_err(map) })
            .await
            .map_err(|e| {
                ExecError::Failed(format!(
                    "recreated `{name}` ({}), but removing the old container ({}) failed: {e}",
                    short_id(&new_id),
                    short_id(&full_id)
                ))
            })?;
        Ok(new_id)
    }

    /// Undo a failed recreate: remove the new container, give the old one its name back and
    /// start it if it ran. Returns the error to report (the cause and how the roll-back went).
    async fn roll_back(
        &self,
        client: &bollard::Docker,
        old_id: &str,
        name: &str,
        new_id: Option<&str>,
        running: bool,
        cause: ExecError,
    ) -> ExecError {
        let mut undo: Vec<String> = Vec::new();
        if let Some(new_id) = new_id {
            let o = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                .force(true)
                .build();
            if let Err(e) = self
                .bounded(async {
                    client
                        .remove_container(new_id, Some(o))
                        .await
                        .map_err(|e| self.map_err(e, None))
                })
                .await
            {
                undo.push(format!("removing the new container failed: {e}"));
            }
        }
        let o = bollard::query_parameters::RenameContainerOptionsBuilder::new()
            .name(name)
            .build();
        if let Err(e) = self
            .bounded(async {
                client
                    .rename_container(old_id, o)
                    .await
                    .map_err(|e| self.map_err(e, None))
            })
            .await
        {
            undo.push(format!("renaming the old container back failed: {e}"));
        } else if running
            && let Err(e) = self
                .bounded(async {
                    client
                        .start_container(old_id, None)
                        .await
                        .map_err(|e| self.map_err(e, None))
                })
                .await
        {
            undo.push(format!("starting the old container again failed: {e}"));
        }
        let how = if undo.is_empty() {
            "the old container was put back".to_string()
        } else {
            format!("roll-back incomplete: {}", undo.join("; "))
        };
        ExecError::Failed(format!("recreating `{name}` failed: {cause}; {how}"))
    }

    /// The id (`sha256:…`) `reference` names on the engine, `None` when it has no such image.
    async fn image_id(&self, client: &bollard::Docker, reference: &str) -> Result<Option<String>, ExecError> {
        match client.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(self.map_err(e, None)),
        }
    }

    /// Runs a pull to its end; returns the last status line. A registry failure is an error
    /// naming the reference.
    async fn pull_stream(&self, client: &bollard::Docker, image: &ImageRef) -> Result<Option<String>, ExecError> {
        let options = bollard::query_parameters::CreateImageOptionsBuilder::new()
            .from_image(&image.name)
            .tag(&image.tag)
            .build();
        let mut stream = client.create_image(Some(options), None, None);
        let mut last = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = nonempty(info.status) {
                        last = Some(s);
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(ExecError::Failed(format!(
                        "pull of `{}` failed: {}",
                        image.reference(),
                        error.trim()
                    )));
                }
                Err(BollardError::DockerResponseServerError { message, status_code }) => {
                    return Err(ExecError::Failed(format!(
                        "pull of `{}` failed: {} (HTTP {status_code})",
                        image.reference(),
                        message.trim()
                    )));
                }
                Err(e) => return Err(self.map_err(e, None)),
            }
        }
        Ok(last)
    }
}

/// What [`update_plan`] needs.
struct UpdatePlanInput<'a> {
    container: &'a str,
    old_name: &'a str,
    image: &'a ImageRef,
    pull: bool,
    running: bool,
    stop_t: Option<i32>,
    extra_networks: &'a [(String, bollard::models::EndpointSettings)],
}

fn update_plan(p: &UpdatePlanInput<'_>) -> Vec<ApiCall> {
    let c = p.container;
    let mut plan = vec![ApiCall::new("GET", format!("/containers/{c}/json"))];
    if p.pull {
        plan.push(pull_call(p.image));
    }
    plan.push(ApiCall::new("GET", format!("/images/{}/json", p.image.reference())));
    if p.running {
        plan.push(action_call(ContainerAction::Stop, c, p.stop_t.map(i64::from)));
    }
    plan.push(ApiCall::new(
        "POST",
        format!("/containers/{c}/rename?name={}", p.old_name),
    ));
    plan.push(ApiCall::new(
        "POST",
        format!(
            "/containers/create?name={c} (the old configuration, image {})",
            p.image.reference()
        ),
    ));
    for (network, _) in p.extra_networks {
        plan.push(ApiCall::new(
            "POST",
            format!("/networks/{network}/connect (container {c})"),
        ));
    }
    if p.running {
        plan.push(action_call(ContainerAction::Start, c, None));
    }
    plan.push(remove_call(p.old_name, true, false));
    plan
}

/// The name the old container gets while its replacement takes its name.
fn old_name_for(name: &str, full_id: &str) -> String {
    let base: String = name.chars().take(200).collect();
    format!("{base}-old-{}", short_id(full_id))
}

fn short_image_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", short_id(hex))
}

/// The create body that gives a new container `info`'s configuration on a new image: values
/// equal to what the old image supplied (environment entries, labels, command, entrypoint,
/// working directory, user, volumes, exposed ports, health check, stop signal) are left out so
/// the new image's own apply; the generated hostname (the short id) is left out; anonymous
/// volumes are mounted by name at the same place, so their data carries over.
fn recreate_body(
    info: &bollard::models::ContainerInspectResponse,
    image: Option<&bollard::models::ImageConfig>,
) -> bollard::models::ContainerCreateBody {
    let config = info.config.clone().unwrap_or_default();
    let mut host = info.host_config.clone().unwrap_or_default();
    let (full_id, _) = id_and_name(info);
    let img = image.cloned().unwrap_or_default();

    let differs = |v: Option<Vec<String>>, base: &Option<Vec<String>>| v.filter(|v| Some(v) != base.as_ref());
    let env = config.env.map(|env| {
        let base = img.env.clone().unwrap_or_default();
        env.into_iter().filter(|e| !base.contains(e)).collect::<Vec<_>>()
    });
    let labels = config.labels.map(|labels| {
        let base = img.labels.clone().unwrap_or_default();
        labels
            .into_iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .collect::<HashMap<_, _>>()
    });
    let minus = |v: Option<Vec<String>>, base: &Option<Vec<String>>| {
        v.map(|v| {
            let base = base.clone().unwrap_or_default();
            v.into_iter().filter(|x| !base.contains(x)).collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
    };
    let hostname = config.hostname.filter(|h| !h.is_empty() && *h != short_id(&full_id));
    let same_str = |v: Option<String>, base: &Option<String>| v.filter(|v| !v.is_empty() && Some(v) != base.as_ref());

    // Anonymous volumes (and volumes the image declared) keep their data: mount them by name.
    let mut covered: Vec<String> = host
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_string))
        .collect();
    covered.extend(host.mounts.iter().flatten().filter_map(|m| m.target.clone()));
    for m in info.mounts.iter().flatten() {
        if m.typ.as_deref() != Some("volume") {
            continue;
        }
        let (Some(vol), Some(dest)) = (nonempty(m.name.clone()), nonempty(m.destination.clone())) else {
            continue;
        };
        if covered.contains(&dest) {
            continue;
        }
        let ro = if m.rw == Some(false) { ":ro" } else { "" };
        host.binds
            .get_or_insert_with(Vec::new)
            .push(format!("{vol}:{dest}{ro}"));
        covered.push(dest);
    }
    let (networking_config, _) = networking_for_create(info);

    bollard::models::ContainerCreateBody {
        hostname,
        domainname: config.domainname.filter(|d| !d.is_empty()),
        user: same_str(config.user, &img.user),
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: minus(config.exposed_ports, &img.exposed_ports),
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env,
        cmd: differs(config.cmd, &img.cmd),
        healthcheck: config.healthcheck.filter(|h| Some(h) != img.healthcheck.as_ref()),
        args_escaped: None,
        image: config.image,
        volumes: minus(config.volumes, &img.volumes),
        working_dir: same_str(config.working_dir, &img.working_dir),
        entrypoint: differs(config.entrypoint, &img.entrypoint),
        network_disabled: config.network_disabled,
        on_build: None,
        labels,
        stop_signal: same_str(config.stop_signal, &img.stop_signal),
        stop_timeout: config.stop_timeout,
        shell: differs(config.shell, &img.shell),
        host_config: Some(host),
        networking_config,
    }
}

/// The networks a new container joins: the first at create time (older engines take one), the
/// rest by `connect` afterwards. None for `host`, `none` and `container:…` modes. Endpoint
/// settings keep what the user chose (aliases other than the generated short id, static
/// addresses, links, driver options), not what the engine assigned.
fn networking_for_create(
    info: &bollard::models::ContainerInspectResponse,
) -> (
    Option<bollard::models::NetworkingConfig>,
    Vec<(String, bollard::models::EndpointSettings)>,
) {
    let mode = info
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    if matches!(mode.as_str(), "host" | "none") || mode.starts_with("container:") {
        return (None, Vec::new());
    }
    let (full_id, _) = id_and_name(info);
    let short = short_id(&full_id);
    let mut nets: Vec<(String, bollard::models::EndpointSettings)> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(net, ep)| {
            let aliases: Vec<String> = ep
                .aliases
                .unwrap_or_default()
                .into_iter()
                .filter(|a| *a != short)
                .collect();
            let chosen = bollard::models::EndpointSettings {
                ipam_config: ep.ipam_config,
                links: ep.links.filter(|l| !l.is_empty()),
                aliases: (!aliases.is_empty()).then_some(aliases),
                driver_opts: ep.driver_opts,
                ..Default::default()
            };
            (net, chosen)
        })
        .collect();
    // The network the container was created on first, then by name.
    nets.sort_by(|a, b| (a.0 != mode).cmp(&(b.0 != mode)).then_with(|| a.0.cmp(&b.0)));
    if nets.is_empty() {
        return (None, Vec::new());
    }
    let first = nets.remove(0);
    let config = bollard::models::NetworkingConfig {
        endpoints_config: Some(HashMap::from([first])),
    };
    (Some(config), nets)
}

// ---------------------------------------------------------------------------------------------
// Connection

struct Inner {
    target_id: String,
    endpoint: String,
    limits: Limits,
    transport: Transport,
    client: tokio::sync::OnceCell<bollard::Docker>,
}

/// How to reach the engine, checked at construction.
enum Transport {
    Unix {
        path: String,
    },
    PlainTcp {
        authority: String,
    },
    Tls {
        authority: String,
        config: Arc<rustls::ClientConfig>,
    },
}

impl Transport {
    fn from_settings(s: &DockerSettings) -> Result<Transport, ExecError> {
        let any_tls = s.tls_ca.is_some() || s.tls_cert.is_some() || s.tls_key.is_some();
        if let Some(path) = s.endpoint.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(ExecError::Config(format!(
                    "docker endpoint `{}`: a unix socket path must be absolute (unix:///var/run/docker.sock)",
                    s.endpoint
                )));
            }
            if any_tls || s.insecure_plain_tcp {
                return Err(ExecError::Config(format!(
                    "docker endpoint `{}`: tls_ca/tls_cert/tls_key/insecure_plain_tcp apply to tcp:// endpoints only",
                    s.endpoint
                )));
            }
            return Ok(Transport::Unix { path: path.to_string() });
        }
        let Some(rest) = s.endpoint.strip_prefix("tcp://") else {
            return Err(ExecError::Config(format!(
                "docker endpoint `{}`: expected unix:///PATH or tcp://HOST:PORT",
                s.endpoint
            )));
        };
        let authority = parse_authority(&s.endpoint, rest, if any_tls { 2376 } else { 2375 })?;
        if s.insecure_plain_tcp {
            if any_tls {
                return Err(ExecError::Config(format!(
                    "docker endpoint `{}`: insecure_plain_tcp = true contradicts tls_ca/tls_cert/tls_key",
                    s.endpoint
                )));
            }
            return Ok(Transport::PlainTcp { authority });
        }
        if !any_tls {
            return Err(ExecError::Config(format!(
                "docker endpoint `{}`: plain tcp:// is refused (anyone on the path could control the engine); \
                 set tls_cert and tls_key (and tls_ca), or insecure_plain_tcp = true",
                s.endpoint
            )));
        }
        let config = tls_config(s)?;
        Ok(Transport::Tls {
            authority,
            config: Arc::new(config),
        })
    }
}

/// `HOST[:PORT]` from a `tcp://` endpoint, with the default port added.
fn parse_authority(endpoint: &str, rest: &str, default_port: u16) -> Result<String, ExecError> {
    let bad = |why: &str| ExecError::Config(format!("docker endpoint `{endpoint}`: {why}"));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
        return Err(bad("expected tcp://HOST:PORT"));
    }
    let uri: http::Uri = format!("https://{rest}")
        .parse()
        .map_err(|_| bad("expected tcp://HOST:PORT"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("missing host"))?;
    let port = uri.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(format!("{host}:{port}"))
}

fn tls_config(s: &DockerSettings) -> Result<rustls::ClientConfig, ExecError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read_certs = |what: &str, path: &Path| -> Result<Vec<CertificateDer<'static>>, ExecError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ExecError::Config(format!("{what} {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ExecError::Config(format!(
                "{what} {}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(certs)
    };

    let mut roots = rustls::RootCertStore::empty();
    match &s.tls_ca {
        Some(path) => {
            for cert in read_certs("tls_ca", path)? {
                roots
                    .add(cert)
                    .map_err(|e| ExecError::Config(format!("tls_ca {}: {e}", path.display())))?;
            }
        }
        None => {
            // Like the docker CLI without --tlscacert: the system's trust store.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(ExecError::Config(
                    "no tls_ca given and no system CA certificates found: set tls_ca".to_string(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExecError::Config(format!("tls: {e}")))?
        .with_root_certificates(roots);
    match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("tls_cert", cert)?;
            // A secret like any other: a relative path is a systemd credential's name.
            let pem = super::Secret::File(key.clone()).read()?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| ExecError::Config(format!("tls_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ExecError::Config(format!("tls_cert/tls_key {}: {e}", cert.display())))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ExecError::Config(
            "tls_cert and tls_key must be given together".to_string(),
        )),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start,
    Stop(Option<i32>),
    Restart(Option<i32>),
    Pause,
    Unpause,
}

impl Docker {
    /// Runs `fut` within the target's timeout.
    async fn bounded<T>(&self, fut: impl Future<Output = Result<T, ExecError>>) -> Result<T, ExecError> {
        let timeout = self.inner.limits.timeout;
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(timeout)),
        }
    }

    /// The connected client, connecting and negotiating the API version on first use.
    async fn client(&self) -> Result<&bollard::Docker, ExecError> {
        self.inner
            .client
            .get_or_try_init(|| async {
                let docker = self.connect()?;
                docker.negotiate_version().await.map_err(|e| self.map_err(e, None))
            })
            .await
    }

    fn connect(&self) -> Result<bollard::Docker, ExecError> {
        // bollard's own per-request timeout stays behind ours, which is the real bound.
        let secs = self.inner.limits.timeout.as_secs().saturating_add(1).max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let result = match &self.inner.transport {
            Transport::Unix { path } => bollard::Docker::connect_with_unix(path, secs, version),
            Transport::PlainTcp { authority } => {
                bollard::Docker::connect_with_http(&format!("tcp://{authority}"), secs, version)
            }
            Transport::Tls { authority, config } => {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((**config).clone())
                    .https_only()
                    .enable_http1()
                    .build();
                let client = Arc::new(
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
                );
                let transport = move |req: bollard::BollardRequest| {
                    let client = Arc::clone(&client);
                    async move { client.request(req).await.map_err(BollardError::from) }
                };
                bollard::Docker::connect_with_custom_transport(
                    transport,
                    Some(format!("https://{authority}")),
                    secs,
                    version,
                )
            }
        };
        result.map_err(|e| self.map_err(e, None))
    }

    fn stop_timeout(&self, timeout_secs: Option<i64>) -> Result<Option<i32>, ExecError> {
        let Some(t) = timeout_secs else { return Ok(None) };
        let limit = self.inner.limits.timeout.as_secs();
        if t < 0 || u64::try_from(t).map_or(true, |t| t >= limit) {
            return Err(ExecError::Refused(format!(
                "stop timeout {t} s: must be at least 0 and below the target's operation timeout ({limit} s)"
            )));
        }
        i32::try_from(t)
            .map(Some)
            .map_err(|_| ExecError::Refused(format!("stop timeout {t} s is too large")))
    }

    async fn action(&self, id: &str, action: Action) -> Result<ActionResult, ExecError> {
        validate_ref(id)?;
        self.bounded(async {
            let client = self.client().await?;
            let before = client
                .inspect_container(id, None)
                .await
                .map_err(|e| self.map_err(e, Some(id)))?;
            let (full_id, name) = id_and_name(&before);
            // The full id from here on: the name could be given to another container meanwhile.
            let done = match action {
                Action::Start => client.start_container(&full_id, None).await,
                Action::Stop(t) => {
                    let mut options = StopContainerOptionsBuilder::new();
                    if let Some(t) = t {
                        options = options.t(t);
                    }
                    client.stop_container(&full_id, Some(options.build())).await
                }
                Action::Restart(t) => {
                    let mut options = RestartContainerOptionsBuilder::new();
                    if let Some(t) = t {
                        options = options.t(t);
                    }
                    client.restart_container(&full_id, Some(options.build())).await
                }
                Action::Pause => client.pause_container(&full_id).await,
                Action::Unpause => client.unpause_container(&full_id).await,
            };
            done.map_err(|e| self.map_err(e, Some(id)))?;
            let after = client
                .inspect_container(&full_id, None)
                .await
                .map_err(|e| self.map_err(e, Some(id)))?;
            Ok(ActionResult {
                id: short_id(&full_id),
                name,
                state_before: state_status(&before),
                state_after: state_status(&after),
            })
        })
        .await
    }

    /// One mapping from bollard's errors to ours. `container` is the reference the caller gave,
    /// for "no such container".
    fn map_err(&self, err: BollardError, container: Option<&str>) -> ExecError {
        let engine = format!("docker engine `{}` at {}", self.inner.target_id, self.inner.endpoint);
        match err {
            BollardError::DockerResponseServerError { status_code, message } => match (status_code, container) {
                (404, Some(c)) if message.contains("No such container") || message.contains("no such container") => {
                    ExecError::Failed(format!("no such container `{c}`"))
                }
                (401 | 403, _) => ExecError::Auth(format!("{engine}: {message}")),
                _ => ExecError::Failed(format!("{engine}: {} (HTTP {status_code})", message.trim())),
            },
            BollardError::RequestTimeoutError => ExecError::Timeout(self.inner.limits.timeout),
            BollardError::SocketNotFoundError(path) => {
                ExecError::Unreachable(format!("{engine}: socket {path} does not exist"))
            }
            BollardError::IOError { err } => classify_chain(&engine, &err),
            BollardError::HyperResponseError { err } => classify_chain(&engine, &err),
            BollardError::HyperLegacyError { err } => {
                let mapped = classify_chain(&engine, &err);
                match mapped {
                    ExecError::Failed(msg) if err.is_connect() => ExecError::Unreachable(msg),
                    other => other,
                }
            }
            other => ExecError::Failed(format!("{engine}: {other}")),
        }
    }
}

/// Finds why a request failed in an error's source chain: a TLS problem, a refused or missing
/// connection, or something else.
fn classify_chain(engine: &str, top: &(dyn StdError + 'static)) -> ExecError {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(top);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return classify_tls(engine, tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused
                | K::NotFound
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NotConnected => return ExecError::Unreachable(format!("{engine}: {io}")),
                K::PermissionDenied => return ExecError::Auth(format!("{engine}: {io}")),
                K::TimedOut => return ExecError::Unreachable(format!("{engine}: {io}")),
                _ => {}
            }
            // An io::Error's `source()` skips the error it wraps (hyper-rustls wraps tokio-rustls'
            // io::Error, which wraps the rustls::Error): follow the wrapped one instead.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner as &(dyn StdError + 'static));
                continue;
            }
        }
        cur = err.source();
    }
    ExecError::Failed(format!("{engine}: {}", chain_text(top)))
}

fn classify_tls(engine: &str, err: &rustls::Error) -> ExecError {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied),
        ) => ExecError::Auth(format!(
            "{engine}: the engine refused our client certificate (TLS alert: {alert:?})"
        )),
        rustls::Error::InvalidCertificate(why) => {
            ExecError::HostVerification(format!("{engine}: the engine's certificate did not verify: {why:?}"))
        }
        other => ExecError::HostVerification(format!("{engine}: TLS handshake failed: {other}")),
    }
}

fn chain_text(top: &(dyn StdError + 'static)) -> String {
    let mut text = top.to_string();
    let mut cur = top.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = err.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Validation (pure)

/// Accepts a container name or id: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`MAX_REF_LEN`]
/// characters. Anything else is refused before a request is built.
pub fn validate_ref(s: &str) -> Result<(), ExecError> {
    let mut chars = s.chars();
    let ok = s.len() <= MAX_REF_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    let shown: String = s.chars().take(64).collect();
    let more = if s.chars().count() > 64 { "…" } else { "" };
    Err(ExecError::Refused(format!(
        "invalid container name or id {shown:?}{more}: expected letters, digits, `_`, `.` and `-`, \
         starting with a letter or digit, at most {MAX_REF_LEN} characters"
    )))
}

/// Most compiled size of a `grep` regex (the `regex` crate's limit on its program).
const MAX_REGEX_SIZE: usize = 1 << 20;

/// How log lines are filtered.
#[derive(Debug, Clone)]
enum LineMatcher {
    All,
    Text(String),
    Regex(regex::Regex),
}

impl LineMatcher {
    fn matches(&self, line: &str) -> bool {
        match self {
            LineMatcher::All => true,
            LineMatcher::Text(t) => line.contains(t.as_str()),
            LineMatcher::Regex(r) => r.is_match(line),
        }
    }
}

/// Checks a [`LogQuery`]; returns `since` as the engine takes it and the line filter.
fn validate_log_query(q: &LogQuery) -> Result<(Option<i32>, LineMatcher), ExecError> {
    let since = validate_log_window(q)?;
    let matcher = match (&q.grep, q.regex) {
        (None, true) => return Err(ExecError::Refused("regex: true needs a grep pattern".to_string())),
        (None, false) => LineMatcher::All,
        (Some(g), false) => LineMatcher::Text(g.clone()),
        (Some(g), true) => regex::RegexBuilder::new(g)
            .size_limit(MAX_REGEX_SIZE)
            .build()
            .map(LineMatcher::Regex)
            .map_err(|e| ExecError::Refused(format!("grep is not a valid regular expression: {e}")))?,
    };
    Ok((since, matcher))
}

fn validate_log_window(q: &LogQuery) -> Result<Option<i32>, ExecError> {
    if q.tail == 0 || q.tail > MAX_TAIL {
        return Err(ExecError::Refused(format!("tail {}: must be 1..={MAX_TAIL}", q.tail)));
    }
    if q.max_bytes == 0 {
        return Err(ExecError::Refused("max_bytes must be at least 1".to_string()));
    }
    if let Some(grep) = &q.grep
        && (grep.is_empty() || grep.len() > MAX_GREP_LEN)
    {
        return Err(ExecError::Refused(format!("grep: must be 1..={MAX_GREP_LEN} bytes")));
    }
    match q.since {
        None => Ok(None),
        Some(s) => {
            i32::try_from(s).ok().filter(|s| *s >= 0).map(Some).ok_or_else(|| {
                ExecError::Refused(format!("since {s}: must be a Unix time in seconds, 0..={}", i32::MAX))
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions from bollard's models (pure)

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn id_and_name(c: &bollard::models::ContainerInspectResponse) -> (String, String) {
    let id = c.id.clone().unwrap_or_default();
    let name = c
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    (id, name)
}

fn state_status(c: &bollard::models::ContainerInspectResponse) -> String {
    c.state
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn summary_from(c: bollard::models::ContainerSummary) -> ContainerSummary {
    let labels: BTreeMap<String, String> = c.labels.unwrap_or_default().into_iter().collect();
    // A container has one name; legacy links add `/other/alias` entries.
    let names = c.names.unwrap_or_default();
    let name = names
        .iter()
        .map(|n| n.trim_start_matches('/'))
        .find(|n| !n.contains('/'))
        .or_else(|| names.first().map(|n| n.trim_start_matches('/')))
        .unwrap_or_default()
        .to_string();
    let mut ports: Vec<PortMapping> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| PortMapping {
            private_port: p.private_port,
            protocol: p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".to_string()),
            host_ip: nonempty(p.ip),
            public_port: p.public_port,
        })
        .collect();
    ports.sort();
    ports.dedup();
    ContainerSummary {
        id: short_id(c.id.as_deref().unwrap_or_default()),
        name,
        image: c.image.unwrap_or_default(),
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        status: c.status.unwrap_or_default(),
        created: c.created.and_then(crate::when::rfc3339),
        compose_project: labels.get("com.docker.compose.project").cloned(),
        compose_service: labels.get("com.docker.compose.service").cloned(),
        ports,
        labels,
    }
}

fn port_map(map: Option<HashMap<String, Option<Vec<bollard::models::PortBinding>>>>) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for (key, bindings) in map.unwrap_or_default() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(private_port) = port.parse::<u16>() else {
            continue;
        };
        let bindings = bindings.unwrap_or_default();
        if bindings.is_empty() {
            out.push(PortMapping {
                private_port,
                protocol: proto.to_string(),
                host_ip: None,
                public_port: None,
            });
        }
        for b in bindings {
            out.push(PortMapping {
                private_port,
                protocol: proto.to_string(),
                host_ip: nonempty(b.host_ip),
                public_port: b.host_port.and_then(|p| p.parse().ok()),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn details_from(c: bollard::models::ContainerInspectResponse) -> ContainerDetails {
    let (id, name) = id_and_name(&c);
    let status = state_status(&c);
    let config = c.config.unwrap_or_default();
    let host = c.host_config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let health = state.health.as_ref();
    let net = c.network_settings.unwrap_or_default();
    let mut networks: Vec<Network> = net
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| Network {
            name,
            ip_address: nonempty(ep.ip_address),
            gateway: nonempty(ep.gateway),
            mac_address: nonempty(ep.mac_address),
            aliases: ep.aliases.unwrap_or_default(),
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let restart = host.restart_policy.unwrap_or_default();
    ContainerDetails {
        id,
        name,
        image: nonempty(config.image),
        image_id: nonempty(c.image),
        created: c.created.map(|t| t.to_string()),
        entrypoint: crate::secrets::redact_argv(&config.entrypoint.unwrap_or_default()),
        cmd: crate::secrets::redact_argv(&config.cmd.unwrap_or_default()),
        working_dir: nonempty(config.working_dir),
        user: nonempty(config.user),
        hostname: nonempty(config.hostname),
        tty: config.tty.unwrap_or(false),
        env: config.env.unwrap_or_default().iter().map(|e| redact_env(e)).collect(),
        labels: redact_labels(config.labels.unwrap_or_default()),
        state: ContainerState {
            status,
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            oom_killed: state.oom_killed.unwrap_or(false),
            dead: state.dead.unwrap_or(false),
            pid: state.pid,
            exit_code: state.exit_code,
            error: nonempty(state.error.clone()),
            started_at: nonempty(state.started_at.clone()),
            finished_at: nonempty(state.finished_at.clone()),
            health: health
                .and_then(|h| h.status.as_ref())
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty()),
            health_failing_streak: health.and_then(|h| h.failing_streak),
        },
        restart_policy: RestartPolicy {
            name: restart.name.map(|n| n.to_string()).unwrap_or_default(),
            maximum_retry_count: restart.maximum_retry_count,
        },
        restart_count: c.restart_count.unwrap_or(0),
        mounts: c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| Mount {
                kind: m.typ.map(|t| t.to_string()),
                name: nonempty(m.name),
                source: nonempty(m.source),
                destination: nonempty(m.destination),
                mode: nonempty(m.mode),
                read_write: m.rw.unwrap_or(false),
            })
            .collect(),
        network_mode: nonempty(host.network_mode),
        networks,
        ports: port_map(net.ports),
        privileged: host.privileged.unwrap_or(false),
        readonly_rootfs: host.readonly_rootfs.unwrap_or(false),
        cap_add: host.cap_add.unwrap_or_default(),
        cap_drop: host.cap_drop.unwrap_or_default(),
        memory_limit_bytes: host.memory.filter(|m| *m > 0),
        nano_cpus: host.nano_cpus.filter(|n| *n > 0),
        pids_limit: host.pids_limit.filter(|n| *n > 0),
        log_driver: host.log_config.and_then(|l| nonempty(l.typ)),
        healthcheck: config
            .healthcheck
            .and_then(|h| h.test)
            .filter(|t| !t.is_empty())
            .map(|t| crate::secrets::redact_argv(&t)),
        stop_signal: nonempty(config.stop_signal),
        stop_timeout: config.stop_timeout,
    }
}

/// Whether an environment variable's name looks like it holds a secret: the server-wide rule,
/// [`crate::secrets::is_secret_name`] (errs on the side of yes: `KEYBOARD_LAYOUT` is fine,
/// `MAX_TOKENS` is redacted).
pub fn env_key_is_secret(key: &str) -> bool {
    crate::secrets::is_secret_name(key)
}

/// `KEY=VALUE` → [`EnvVar`], the value redacted when the key looks secret, and a password in a
/// URL's user info (`postgres://u:PASS@h/db`) redacted whatever the key
/// ([`crate::secrets::redact_env_assignment`]).
pub fn redact_env(entry: &str) -> EnvVar {
    let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
    let (redacted_entry, redacted) = crate::secrets::redact_env_assignment(entry);
    let value = if redacted {
        redacted_entry
            .split_once('=')
            .map_or_else(|| REDACTED.to_string(), |(_, v)| v.to_string())
    } else {
        value.to_string()
    };
    EnvVar {
        name: name.to_string(),
        value,
        redacted,
    }
}

/// Labels with secret-looking names keep their name and lose their value.
fn redact_labels(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .map(|(k, v)| {
            let v = if crate::secrets::is_secret_name(&k) {
                REDACTED.to_string()
            } else {
                crate::secrets::redact_url_password(&v).unwrap_or(v)
            };
            (k, v)
        })
        .collect()
}

fn stats_from(id: String, name: String, s: &bollard::models::ContainerStatsResponse) -> Stats {
    let cpu = s.cpu_stats.as_ref();
    let pre = s.precpu_stats.as_ref();
    let online_cpus = cpu.and_then(|c| {
        c.online_cpus.filter(|n| *n > 0).or_else(|| {
            c.cpu_usage
                .as_ref()?
                .percpu_usage
                .as_ref()
                .and_then(|p| u32::try_from(p.len()).ok())
        })
    });
    let total = |c: Option<&bollard::models::ContainerCpuStats>| c.and_then(|c| c.cpu_usage.as_ref()?.total_usage);
    let cpu_percent = cpu_percent(
        total(cpu),
        total(pre),
        cpu.and_then(|c| c.system_cpu_usage),
        pre.and_then(|c| c.system_cpu_usage),
        online_cpus.unwrap_or(1),
    );
    let mem = s.memory_stats.as_ref();
    let memory_usage_bytes = mem.and_then(|m| m.usage.map(|u| memory_without_cache(u, m.stats.as_ref())));
    let memory_limit_bytes = mem.and_then(|m| m.limit).filter(|l| *l > 0);
    let memory_percent = match (memory_usage_bytes, memory_limit_bytes) {
        (Some(u), Some(l)) => Some(u as f64 / l as f64 * 100.0),
        _ => None,
    };
    let (mut rx, mut tx) = (0u64, 0u64);
    for n in s.networks.iter().flat_map(|m| m.values()) {
        rx = rx.saturating_add(n.rx_bytes.unwrap_or(0));
        tx = tx.saturating_add(n.tx_bytes.unwrap_or(0));
    }
    let (mut read, mut write) = (0u64, 0u64);
    let entries = s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref());
    for e in entries.into_iter().flatten() {
        let v = e.value.unwrap_or(0);
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read = read.saturating_add(v),
            Some("write") => write = write.saturating_add(v),
            _ => {}
        }
    }
    Stats {
        id,
        name,
        read_at: s.read.as_ref().map(|t| t.to_string()),
        cpu_percent,
        online_cpus,
        memory_usage_bytes,
        memory_limit_bytes,
        memory_percent,
        net_rx_bytes: rx,
        net_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
        pids: s.pids_stats.as_ref().and_then(|p| p.current),
    }
}

/// `docker stats`' CPU formula: the container's share of the host's CPU time between two
/// samples, times the number of CPUs. `None` without a previous sample.
fn cpu_percent(
    total: Option<u64>,
    pre_total: Option<u64>,
    system: Option<u64>,
    pre_system: Option<u64>,
    cpus: u32,
) -> Option<f64> {
    let (total, system, pre_system) = (total?, system?, pre_system?);
    if pre_system == 0 || system <= pre_system {
        return None;
    }
    let cpu_delta = total.saturating_sub(pre_total.unwrap_or(0));
    Some(cpu_delta as f64 / (system - pre_system) as f64 * f64::from(cpus) * 100.0)
}

/// `docker stats`' memory figure: usage minus inactive page cache (cgroup v1 or v2 key).
fn memory_without_cache(usage: u64, stats: Option<&HashMap<String, u64>>) -> u64 {
    let Some(stats) = stats else { return usage };
    if let Some(v) = stats.get("total_inactive_file")
        && *v < usage
    {
        return usage - v;
    }
    if let Some(v) = stats.get("inactive_file")
        && *v < usage
    {
        return usage - v;
    }
    usage
}

// ---------------------------------------------------------------------------------------------
// Log assembly (pure)

/// Turns the engine's log frames into lines: strips the timestamp the engine put in front of each
/// frame, joins frames that continue a line, filters by `grep` and keeps the newest lines within
/// `cap` bytes of text. Memory stays within about `cap` bytes plus one line per stream.
struct LogCollector {
    grep: LineMatcher,
    cap: usize,
    /// A line being assembled per stream: its first frame's timestamp and its bytes so far.
    pending: [Option<(Option<String>, Vec<u8>)>; 3],
    /// Bytes cut from each pending line because it grew past `cap`.
    pending_cut: [u64; 3],
    kept: VecDeque<LogLine>,
    kept_bytes: usize,
    lines_read: usize,
    lines_matched: usize,
    truncated_lines: usize,
    truncated_bytes: u64,
}

impl LogCollector {
    fn new(grep: LineMatcher, cap: usize) -> LogCollector {
        LogCollector {
            grep,
            cap,
            pending: [None, None, None],
            pending_cut: [0; 3],
            kept: VecDeque::new(),
            kept_bytes: 0,
            lines_read: 0,
            lines_matched: 0,
            truncated_lines: 0,
            truncated_bytes: 0,
        }
    }

    fn push_frame(&mut self, stream: LogStream, frame: &[u8]) {
        let slot = stream as usize;
        let (timestamp, mut rest) = split_timestamp(frame);
        while !rest.is_empty() {
            let (chunk, complete, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            let entry = self.pending[slot].get_or_insert_with(|| (timestamp.clone(), Vec::new()));
            let room = self.cap.saturating_sub(entry.1.len());
            let take = chunk.len().min(room);
            entry.1.extend_from_slice(&chunk[..take]);
            self.pending_cut[slot] += (chunk.len() - take) as u64;
            if complete {
                self.flush(stream);
            }
            rest = next;
        }
    }

    fn flush(&mut self, stream: LogStream) {
        let slot = stream as usize;
        let Some((timestamp, bytes)) = self.pending[slot].take() else {
            return;
        };
        let cut = std::mem::take(&mut self.pending_cut[slot]);
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        self.lines_read += 1;
        if !self.grep.matches(&text) {
            return;
        }
        self.lines_matched += 1;
        self.truncated_bytes += cut;
        self.kept_bytes += text.len();
        self.kept.push_back(LogLine {
            stream,
            timestamp,
            text,
        });
        while self.kept_bytes > self.cap {
            let Some(old) = self.kept.pop_front() else { break };
            self.kept_bytes -= old.text.len();
            self.truncated_lines += 1;
            self.truncated_bytes += old.text.len() as u64;
        }
    }

    fn finish(mut self, id: String, name: String) -> Logs {
        // A last line without a newline is still a line.
        for stream in [LogStream::Stdout, LogStream::Stderr, LogStream::Console] {
            self.flush(stream);
        }
        let mut lines: Vec<LogLine> = self.kept.into_iter().collect();
        // Frames arrive in time order; the sort only orders lines of different streams that were
        // completed out of order. Stable, so lines without timestamps keep their order.
        lines.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        Logs {
            id,
            name,
            lines,
            lines_read: self.lines_read,
            lines_matched: self.lines_matched,
            truncated_lines: self.truncated_lines,
            truncated_bytes: self.truncated_bytes,
            max_bytes: self.cap,
        }
    }
}

/// Splits the engine's `2006-01-02T15:04:05.999999999Z ` prefix off a frame.
fn split_timestamp(frame: &[u8]) -> (Option<String>, &[u8]) {
    let Some(space) = frame.iter().take(64).position(|b| *b == b' ') else {
        return (None, frame);
    };
    let Ok(token) = std::str::from_utf8(&frame[..space]) else {
        return (None, frame);
    };
    if chrono::DateTime::parse_from_rfc3339(token).is_ok() {
        (Some(token.to_string()), &frame[space + 1..])
    } else {
        (None, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check_ref(input: &str, ok: bool) {
        let got = validate_ref(input);
        assert_eq!(got.is_ok(), ok, "{input:?}: {got:?}");
        if let Err(e) = got {
            assert!(matches!(e, ExecError::Refused(_)), "{input:?}: {e:?}");
        }
    }

    #[test]
    fn container_references() {
        check_ref("web", true);
        check_ref("web-1.prod_x", true);
        check_ref("0123456789ab", true);
        check_ref(&"a".repeat(64), true);
        check_ref(&"a".repeat(MAX_REF_LEN), true);
        check_ref(&"a".repeat(MAX_REF_LEN + 1), false);
        check_ref("", false);
        check_ref("x; rm -rf /", false);
        check_ref("../x", false);
        check_ref("x/../../version", false);
        check_ref("/web", false);
        check_ref("-rf", false);
        check_ref(".hidden", false);
        check_ref("_x", false);
        check_ref("x?all=1", false);
        check_ref("x#", false);
        check_ref("x%2F..", false);
        check_ref("wéb", false);
        check_ref("x\n", false);
        check_ref("a b", false);
        let msg = validate_ref("x; rm -rf /").unwrap_err().to_string();
        assert!(msg.contains("invalid container name or id \"x; rm -rf /\""), "{msg}");
    }

    fn check_settings(s: DockerSettings, expected: Result<&str, &str>) {
        let got = Docker::new("t", s.clone(), Limits::default());
        match (got, expected) {
            (Ok(d), Ok(kind)) => {
                let k = match d.inner.transport {
                    Transport::Unix { ref path } => format!("unix {path}"),
                    Transport::PlainTcp { ref authority } => format!("plain {authority}"),
                    Transport::Tls { ref authority, .. } => format!("tls {authority}"),
                };
                assert_eq!(k, kind, "{s:?}");
            }
            (Err(e), Err(fragment)) => {
                assert!(matches!(e, ExecError::Config(_)), "{s:?}: {e:?}");
                assert!(e.to_string().contains(fragment), "{s:?}: {e}");
            }
            (got, expected) => panic!("{s:?}: got {:?}, expected {expected:?}", got.map(|_| ())),
        }
    }

    fn tcp(endpoint: &str) -> DockerSettings {
        DockerSettings {
            endpoint: endpoint.to_string(),
            ..DockerSettings::default()
        }
    }

    #[test]
    fn settings() {
        check_settings(DockerSettings::default(), Ok("unix /var/run/docker.sock"));
        check_settings(tcp("unix:///run/x.sock"), Ok("unix /run/x.sock"));
        check_settings(tcp("unix://run/x.sock"), Err("must be absolute"));
        check_settings(tcp("tcp://10.0.0.5:2376"), Err("plain tcp:// is refused"));
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://10.0.0.5:2375")
            },
            Ok("plain 10.0.0.5:2375"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://h")
            },
            Ok("plain h:2375"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://[fd7a:115c:a1e0::1]:2375/")
            },
            Ok("plain [fd7a:115c:a1e0::1]:2375"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://h:2375/v1.41")
            },
            Err("expected tcp://"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://u@h:2375")
            },
            Err("expected tcp://"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://")
            },
            Err("expected tcp://"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..tcp("tcp://h:0")
            },
            Err("port 0"),
        );
        check_settings(tcp("http://h:2375"), Err("expected unix:///PATH or tcp://HOST:PORT"));
        check_settings(tcp("/var/run/docker.sock"), Err("expected unix:///PATH"));
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                ..DockerSettings::default()
            },
            Err("apply to tcp:// endpoints only"),
        );
        check_settings(
            DockerSettings {
                tls_ca: Some("/nonexistent/ca.pem".into()),
                ..DockerSettings::default()
            },
            Err("apply to tcp:// endpoints only"),
        );
        check_settings(
            DockerSettings {
                insecure_plain_tcp: true,
                tls_ca: Some("/nonexistent/ca.pem".into()),
                ..tcp("tcp://h:2376")
            },
            Err("contradicts"),
        );
        check_settings(
            DockerSettings {
                tls_ca: Some("/nonexistent/ca.pem".into()),
                ..tcp("tcp://h:2376")
            },
            Err("tls_ca /nonexistent/ca.pem"),
        );
    }

    #[test]
    fn settings_from_toml() {
        let s: DockerSettings = toml::from_str("endpoint = \"tcp://h:2376\"\ntls_ca = \"/c\"").unwrap();
        assert_eq!(s.endpoint, "tcp://h:2376");
        assert_eq!(s.tls_ca.as_deref(), Some(Path::new("/c")));
        let d: DockerSettings = toml::from_str("").unwrap();
        assert_eq!(d, DockerSettings::default());
        let err = toml::from_str::<DockerSettings>("endpoit = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `endpoit`"), "{err}");
    }

    fn check_env(entry: &str, value: &str, redacted: bool) {
        let got = redact_env(entry);
        assert_eq!((got.value.as_str(), got.redacted), (value, redacted), "{entry:?}");
    }

    #[test]
    fn env_redaction() {
        check_env("PATH=/usr/bin:/bin", "/usr/bin:/bin", false);
        check_env("PWD=/app", "/app", false);
        check_env("KEYBOARD_LAYOUT=us", "us", false);
        check_env("LANG=C.UTF-8", "C.UTF-8", false);
        check_env("POSTGRES_PASSWORD=hunter2", REDACTED, true);
        check_env("MYSQL_ROOT_PASSWORD_FILE=/run/secrets/x", REDACTED, true);
        check_env("DB_PASS=x", REDACTED, true);
        check_env("DB_PWD=x", REDACTED, true);
        check_env("AWS_SECRET_ACCESS_KEY=x", REDACTED, true);
        check_env("AWS_ACCESS_KEY_ID=x", REDACTED, true);
        check_env("GITHUB_TOKEN=x", REDACTED, true);
        check_env("api-key=x", REDACTED, true);
        check_env("APIKEY=x", REDACTED, true);
        check_env("SSH_PRIVATE_KEY=x", REDACTED, true);
        check_env("TS_AUTHKEY=x", REDACTED, true);
        check_env("BASIC_AUTH=x", REDACTED, true);
        check_env("SENTRY_DSN=https://k@sentry/1", REDACTED, true);
        check_env("SESSION_SECRET=x", REDACTED, true);
        check_env("EMPTY=", "", false);
        check_env("NOVALUE", "", false);
        check_env(
            "DATABASE_URL=postgres://app:hunter2@db:5432/app",
            "postgres://app:[REDACTED]@db:5432/app",
            true,
        );
        check_env("UPSTREAM=http://user@host/x", "http://user@host/x", false);
        check_env("UPSTREAM=http://host/x?a=b:c@d", "http://host/x?a=b:c@d", false);
    }

    #[test]
    fn cpu_and_memory() {
        assert_eq!(cpu_percent(Some(200), Some(100), Some(2000), Some(1000), 2), Some(20.0));
        assert_eq!(cpu_percent(Some(100), Some(100), Some(2000), Some(1000), 4), Some(0.0));
        assert_eq!(cpu_percent(Some(200), None, Some(2000), Some(0), 2), None);
        assert_eq!(cpu_percent(Some(200), Some(100), Some(1000), Some(1000), 2), None);
        assert_eq!(cpu_percent(Some(200), Some(100), None, Some(1000), 2), None);
        let v1: HashMap<String, u64> = [("total_inactive_file".to_string(), 300)].into();
        let v2: HashMap<String, u64> = [("inactive_file".to_string(), 100)].into();
        assert_eq!(memory_without_cache(1000, Some(&v1)), 700);
        assert_eq!(memory_without_cache(1000, Some(&v2)), 900);
        assert_eq!(memory_without_cache(50, Some(&v2)), 50);
        assert_eq!(memory_without_cache(1000, None), 1000);
    }

    #[test]
    fn stats_sample() {
        let raw = serde_json::json!({
            "read": "2026-11-21T06:00:01Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 3000}, "system_cpu_usage": 20000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1000}, "system_cpu_usage": 10000, "online_cpus": 2},
            "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"inactive_file": 200}},
            "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 5},
                {"major": 8, "minor": 0, "op": "Write", "value": 7},
                {"major": 8, "minor": 0, "op": "total", "value": 12}
            ]},
            "pids_stats": {"current": 3}
        });
        let sample: bollard::models::ContainerStatsResponse = serde_json::from_value(raw).unwrap();
        let s = stats_from("abc".into(), "n".into(), &sample);
        assert_eq!(s.cpu_percent, Some(40.0));
        assert_eq!(s.memory_usage_bytes, Some(800));
        assert_eq!(s.memory_percent, Some(20.0));
        assert_eq!((s.net_rx_bytes, s.net_tx_bytes), (11, 22));
        assert_eq!((s.block_read_bytes, s.block_write_bytes), (5, 7));
        assert_eq!(s.pids, Some(3));
        assert_eq!(s.read_at.as_deref(), Some("2026-11-21T06:00:01Z"));
    }

    fn collect(grep: Option<&str>, cap: usize, frames: &[(LogStream, &str)]) -> Logs {
        let matcher = grep.map_or(LineMatcher::All, |g| LineMatcher::Text(g.to_string()));
        let mut c = LogCollector::new(matcher, cap);
        for (stream, frame) in frames {
            c.push_frame(*stream, frame.as_bytes());
        }
        c.finish("id".into(), "n".into())
    }

    fn texts(logs: &Logs) -> Vec<&str> {
        logs.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn log_lines() {
        use LogStream::{Stderr, Stdout};
        let t1 = "2026-11-21T06:00:01.000000001Z";
        let t2 = "2026-11-21T06:00:02.000000001Z";
        let a = format!("{t1} hello\n");
        let b = format!("{t2} oops\n");
        let logs = collect(None, 1000, &[(Stdout, &a), (Stderr, &b)]);
        assert_eq!(texts(&logs), ["hello", "oops"]);
        assert_eq!(logs.lines[0].timestamp.as_deref(), Some(t1));
        assert_eq!(logs.lines[1].stream, Stderr);
        assert_eq!((logs.lines_read, logs.lines_matched, logs.truncated_lines), (2, 2, 0));

        // A line split over frames, each with its own timestamp; a last line without newline.
        let p1 = format!("{t1} part one ");
        let p2 = format!("{t1} part two\n");
        let p3 = format!("{t2} tail");
        let logs = collect(None, 1000, &[(Stdout, &p1), (Stdout, &p2), (Stdout, &p3)]);
        assert_eq!(texts(&logs), ["part one part two", "tail"]);

        // No timestamps (e.g. an old engine), several lines in one frame, CRLF.
        let logs = collect(None, 1000, &[(Stdout, "x\r\ny\nz\n")]);
        assert_eq!(texts(&logs), ["x", "y", "z"]);

        // grep, then the byte cap keeps the newest.
        let frames: Vec<String> = (0..10)
            .map(|i| format!("{t1} line {i} {}\n", if i % 2 == 0 { "even" } else { "odd" }))
            .collect();
        let framed: Vec<(LogStream, &str)> = frames.iter().map(|f| (Stdout, f.as_str())).collect();
        let logs = collect(Some("even"), 1000, &framed);
        assert_eq!(
            texts(&logs),
            [
                "line 0 even",
                "line 2 even",
                "line 4 even",
                "line 6 even",
                "line 8 even"
            ]
        );
        assert_eq!((logs.lines_read, logs.lines_matched), (10, 5));
        let logs = collect(Some("even"), 25, &framed);
        assert_eq!(texts(&logs), ["line 6 even", "line 8 even"]);
        assert_eq!((logs.truncated_lines, logs.truncated_bytes), (3, 33));

        // One line longer than the cap is cut to the cap.
        let long = format!("{t1} {}\n", "x".repeat(100));
        let logs = collect(None, 10, &[(Stdout, &long)]);
        assert_eq!(texts(&logs), ["xxxxxxxxxx"]);
        assert_eq!(logs.truncated_bytes, 90);
    }

    #[test]
    fn log_queries() {
        let q = |tail, since, grep: Option<&str>, max_bytes| LogQuery {
            tail,
            since,
            grep: grep.map(str::to_string),
            regex: false,
            max_bytes,
        };
        assert_eq!(validate_log_query(&q(10, None, None, 100)).unwrap().0, None);
        assert_eq!(validate_log_query(&q(10, Some(5), Some("x"), 100)).unwrap().0, Some(5));
        let re = |g: &str| LogQuery {
            grep: Some(g.to_string()),
            regex: true,
            ..LogQuery::default()
        };
        let (_, m) = validate_log_query(&re("^err [0-9]+$")).unwrap();
        assert!(m.matches("err 42") && !m.matches("x err 42") && !m.matches("err x"));
        let (_, m) = validate_log_query(&q(10, None, Some("a.b"), 100)).unwrap();
        assert!(m.matches("xa.by") && !m.matches("axb"), "plain text is not a regex");
        for bad in [
            re("(unclosed"),
            re("a{1000}{1000}"),
            LogQuery {
                regex: true,
                ..LogQuery::default()
            },
        ] {
            let e = validate_log_query(&bad).unwrap_err();
            assert!(matches!(e, ExecError::Refused(_)), "{bad:?}: {e:?}");
        }
        for bad in [
            q(0, None, None, 100),
            q(MAX_TAIL + 1, None, None, 100),
            q(10, Some(-1), None, 100),
            q(10, Some(i64::from(i32::MAX) + 1), None, 100),
            q(10, None, Some(""), 100),
            q(10, None, None, 0),
        ] {
            assert!(
                matches!(validate_log_query(&bad), Err(ExecError::Refused(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stop_timeouts() {
        let d = Docker::new(
            "t",
            DockerSettings::default(),
            Limits {
                timeout: Duration::from_secs(30),
                max_output: 10,
            },
        )
        .unwrap();
        assert_eq!(d.stop_timeout(None).unwrap(), None);
        assert_eq!(d.stop_timeout(Some(0)).unwrap(), Some(0));
        assert_eq!(d.stop_timeout(Some(29)).unwrap(), Some(29));
        assert!(matches!(d.stop_timeout(Some(30)), Err(ExecError::Refused(_))));
        assert!(matches!(d.stop_timeout(Some(-1)), Err(ExecError::Refused(_))));
    }

    #[test]
    fn executor_and_its_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<Docker>();
        let d = Docker::new("t", DockerSettings::default(), Limits::default()).unwrap();
        send(&d.version());
        send(&d.list(true));
        send(&d.inspect("x"));
        send(&d.start("x"));
        send(&d.stop("x", None));
        send(&d.logs("x", LogQuery::default()));
        send(&d.stats("x"));
    }

    #[test]
    fn log_query_defaults() {
        let q: LogQuery = serde_json::from_value(serde_json::json!({"grep": "x"})).unwrap();
        assert_eq!(
            q,
            LogQuery {
                grep: Some("x".into()),
                ..LogQuery::default()
            }
        );
        assert!(serde_json::from_value::<LogQuery>(serde_json::json!({"follow": true})).is_err());
    }

    #[test]
    fn recreate_keeps_the_users_configuration_and_leaves_image_defaults() {
        let id = format!("abcdef012345{}", "0".repeat(52));
        let anon = "f".repeat(64);
        let raw = serde_json::json!({
            "Id": id,
            "Name": "/web",
            "Image": "sha256:old",
            "Config": {
                "Hostname": "abcdef012345",
                "Image": "app:1",
                "Env": ["PATH=/usr/bin", "MODE=prod"],
                "Cmd": ["serve"],
                "Entrypoint": ["/entry"],
                "Labels": {"from.image": "x", "com.docker.compose.project": "blog"},
                "WorkingDir": "/app",
                "ExposedPorts": {"80/tcp": {}, "9090/tcp": {}},
                "Volumes": {"/data": {}}
            },
            "HostConfig": {
                "Binds": ["named:/srv:ro"],
                "NetworkMode": "front",
                "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
                "Memory": 1048576
            },
            "Mounts": [
                {"Type": "volume", "Name": "named", "Destination": "/srv", "RW": false},
                {"Type": "volume", "Name": anon, "Destination": "/data", "RW": true},
                {"Type": "bind", "Source": "/etc/x", "Destination": "/x", "RW": true}
            ],
            "NetworkSettings": {"Networks": {
                "front": {"Aliases": ["abcdef012345", "web"], "IPAddress": "172.18.0.2", "NetworkID": "n1"},
                "back": {"Aliases": ["abcdef012345"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}}
            }}
        });
        let info: bollard::models::ContainerInspectResponse = serde_json::from_value(raw).unwrap();
        let image: bollard::models::ImageConfig = serde_json::from_value(serde_json::json!({
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["serve"],
            "Entrypoint": ["/entry"],
            "Labels": {"from.image": "x"},
            "WorkingDir": "/app",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}}
        }))
        .unwrap();
        let body = recreate_body(&info, Some(&image));
        assert_eq!(body.image.as_deref(), Some("app:1"));
        assert_eq!(body.hostname, None, "the generated hostname is not kept");
        assert_eq!(body.env, Some(vec!["MODE=prod".to_string()]));
        assert_eq!((body.cmd.clone(), body.entrypoint.clone()), (None, None));
        assert_eq!(body.working_dir, None);
        assert_eq!(body.exposed_ports, Some(vec!["9090/tcp".to_string()]));
        assert_eq!(body.volumes, None);
        let labels = body.labels.clone().unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["com.docker.compose.project"], "blog");
        let host = body.host_config.clone().unwrap();
        assert_eq!(
            host.binds,
            Some(vec!["named:/srv:ro".to_string(), format!("{anon}:/data")])
        );
        assert_eq!(host.memory, Some(1_048_576));
        assert_eq!(
            host.restart_policy
                .and_then(|r| r.name)
                .map(|n| n.to_string())
                .as_deref(),
            Some("always")
        );
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints.len(), 1);
        let front = &endpoints["front"];
        assert_eq!(front.aliases, Some(vec!["web".to_string()]));
        assert_eq!(front.ip_address, None, "engine-assigned addresses are not pinned");
        let (_, extra) = networking_for_create(&info);
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].0, "back");
        assert_eq!(extra[0].1.aliases, None);
        assert!(extra[0].1.ipam_config.is_some(), "a static address is kept");

        // Without the old image's configuration everything is kept as it was.
        let body = recreate_body(&info, None);
        assert_eq!(body.cmd, Some(vec!["serve".to_string()]));
        assert_eq!(body.env.map(|e| e.len()), Some(2));

        // `none`/`host` networking: nothing to create or connect.
        let mut none = info.clone();
        none.host_config.as_mut().unwrap().network_mode = Some("none".into());
        assert!(networking_for_create(&none).0.is_none());
        assert_eq!(old_name_for("web", &id), "web-old-abcdef012345");
    }

    #[test]
    fn update_plans_list_every_call() {
        let image = ImageRef::parse("app:1").unwrap();
        let extra = vec![("back".to_string(), bollard::models::EndpointSettings::default())];
        let plan: Vec<String> = update_plan(&UpdatePlanInput {
            container: "web",
            old_name: "web-old-abc",
            image: &image,
            pull: true,
            running: true,
            stop_t: Some(5),
            extra_networks: &extra,
        })
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            plan,
            [
                "GET /containers/web/json",
                "POST /images/create?fromImage=app&tag=1",
                "GET /images/app:1/json",
                "POST /containers/web/stop?t=5",
                "POST /containers/web/rename?name=web-old-abc",
                "POST /containers/create?name=web (the old configuration, image app:1)",
                "POST /networks/back/connect (container web)",
                "POST /containers/web/start",
                "DELETE /containers/web-old-abc?force=true",
            ]
        );
    }

    #[test]
    fn summaries() {
        let raw = serde_json::json!({
            "Id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Names": ["/other/alias", "/web"],
            "Image": "nginx:1",
            "Created": 1_700_000_000,
            "State": "running",
            "Status": "Up 2 minutes",
            "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                      {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                      {"PrivatePort": 443, "Type": "tcp"}],
            "Labels": {"com.docker.compose.project": "blog", "com.docker.compose.service": "web"}
        });
        let c: bollard::models::ContainerSummary = serde_json::from_value(raw).unwrap();
        let s = summary_from(c);
        assert_eq!(s.id, "0123456789ab");
        assert_eq!(s.name, "web");
        assert_eq!(s.state, "running");
        assert_eq!(s.created.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(s.compose_project.as_deref(), Some("blog"));
        assert_eq!(s.compose_service.as_deref(), Some("web"));
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[0].public_port, Some(8080));
    }
}
