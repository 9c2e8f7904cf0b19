//! What the operations take and return: curated serde + schemars types (bollard's models never
//! leave `exec::docker`). Plain data; the conversions from bollard's models and the checks of
//! a [`LogQuery`] sit with the operations.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plan::ApiCall;

/// What a redacted value is replaced with (the marker of [`crate::secrets`], used everywhere).
pub const REDACTED: &str = crate::secrets::REDACTED;

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
