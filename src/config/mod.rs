//! Configuration: the TOML file, `TAILOPSMCP_*` environment variables and command-line flags,
//! resolved once at start-up into a validated [`Config`].
//!
//! Precedence: flag > environment > file > default. Unknown keys are errors (a typo must not
//! silently widen or narrow access). This module does no IO after start-up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::{self, LocalGrant};
use crate::tailnet;

pub mod approvals;
pub mod limits;

/// The default of `[audit] refusal_window_secs`: identical refusals within it share one audit row.
pub const DEFAULT_REFUSAL_WINDOW: Duration = Duration::from_secs(10);

pub const DEFAULT_PATH: &str = "/etc/tailopsmcp/config.toml";
pub const DEFAULT_PORT: u16 = 8471;
pub const DEFAULT_SOCKET: &str = "/run/tailscale/tailscaled.sock";
pub const DEFAULT_DATABASE: &str = "/var/lib/tailopsmcp/tailopsmcp.db";
pub const DEFAULT_CAPABILITY: &str = "tailopsmcp.dev/cap/tailopsmcp";
/// `[server] max_connections`: far more than a team's MCP clients hold (a few each), few enough
/// that the file descriptors fit the unit's `LimitNOFILE=4096` with room for the audit
/// database, journald, targets and child processes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    pub port: u16,
    /// Tailnet addresses to listen on; empty = every address tailscaled reports for this node.
    pub listen: Vec<IpAddr>,
    /// Extra names accepted in the `Host` header (a Tailscale Services name, a CNAME).
    pub extra_hosts: Vec<String>,
    /// Browser origins allowed to call (none by default: any `Origin` header is refused).
    pub allowed_origins: Vec<String>,
    /// Accept calls that whois as this server's own node.
    pub allow_self: bool,
    /// Keep MCP sessions for clients on protocol versions before 2026-07-28.
    pub sessions: bool,
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers; it also closes keep-alive connections
    /// that wait that long for their next request.
    pub header_timeout: Duration,
    /// Time a client has, once a request's headers are in, to send its whole body.
    pub body_timeout: Duration,
    /// Open client connections the server holds at once, over every listener; one more is
    /// accepted and closed at once (no whois, no audit row).
    pub max_connections: usize,
    /// Of those, open at once from one caller address (the TCP peer, or the source a PROXY
    /// header names on the Service listener).
    pub max_connections_per_address: usize,
    /// How long one connection may reuse a whois answer.
    pub identity_cache: Duration,
    pub socket: PathBuf,
    pub capability: String,
    pub whois_timeout: Duration,
    pub database: PathBuf,
    pub redact_fields: Vec<String>,
    pub journald: bool,
    /// `[audit] refusal_window_secs`: identical refusals within this window become one row with
    /// a count (zero: every refusal is its own row).
    pub refusal_window: Duration,
    pub grants: Vec<LocalGrant>,
    /// The Tailscale Service this server sits behind, if any.
    pub service: Option<ServiceConfig>,
    /// Configured targets (`local` is added by the registry unless configured here).
    pub targets: Vec<TargetConfig>,
    /// Which tools this server offers (`[tools]`).
    pub tools: ToolsConfig,
    /// `[approvals]`: which calls need a confirmation or a second person.
    pub approvals: approvals::ApprovalsConfig,
    /// `[limits]`: per-principal rate limits and the in-flight cap.
    pub limits: limits::LimitsConfig,
    /// Where the `files` tools may read (`[files]`).
    pub files: FilesConfig,
    /// Where `logs_tail` / `logs_analyze` may read log files (`[logs]`).
    pub logs: LogsConfig,
    /// Compose stacks on this host (`[stacks]`).
    pub stacks: crate::exec::compose::StacksSettings,
    /// Where the network tools may go and how they resolve names (`[network]`).
    pub network: NetworkConfig,
    /// What the services and packages tools may change (`[services]`).
    pub services: ServicesConfig,
}

/// `[services]`: the units the changing services tools may act on, and how long the server
/// waits for the root helper (`tailopsmcp-helper@.service`: enable/disable, apt).
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// Globs (`*`, `?`) over unit names; empty = no unit may be started, stopped, enabled...
    pub units: Vec<crate::exec::systemd::Glob>,
    pub helper_timeout: Duration,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            units: Vec::new(),
            helper_timeout: Duration::from_secs(900),
        }
    }
}

/// `[network]`: the HTTP probe's destination rules and the resolvers of the network tools.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// `http_allow` and `allow_link_local`; an empty allow-list turns `network_http_probe` off.
    pub http: crate::exec::net::HttpPolicy,
    /// DNS servers for name resolution and `network_dns_lookup`; empty = the system's.
    pub dns_servers: Vec<std::net::SocketAddr>,
}

/// `[files]`: the directories the `files` tools may read beneath, and what they never return.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Absolute directories; empty (the default) = every `files_*` call is refused.
    pub roots: Vec<PathBuf>,
    /// Deny patterns added to `exec::fs::DEFAULT_DENY` (which always apply).
    pub deny: Vec<String>,
    /// The most bytes one `files_read` returns and one tail scans.
    pub max_read_bytes: usize,
    /// Read regular files that have more than one hard link (off: a hard link inside a root can
    /// name a file from elsewhere on the same file system).
    pub allow_hardlinks: bool,
}

/// `[logs]`: the directories `logs_tail` and `logs_analyze` may read log files beneath.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub roots: Vec<PathBuf>,
    /// Deny patterns added to `exec::fs::DEFAULT_DENY`.
    pub deny: Vec<String>,
}

/// `[tools]`: which tools are registered at all. A tool filtered out here is never listed and
/// never callable, whatever a caller's grants say. Tool names are checked against the catalog
/// at start-up (`tools::select`).
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// Offer only tools annotated read-only.
    pub read_only: bool,
    /// When non-empty, offer only these tools.
    pub enable: Vec<String>,
    /// Never offer these tools.
    pub disable: Vec<String>,
}

/// One `[[target]]`, validated except for its kind-specific settings, which the registry
/// parses when it builds the executor (errors name the target).
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub id: String,
    pub kind: crate::model::Kind,
    /// Ceiling on what callers may do here; `None` = whatever their grants allow.
    pub scopes: Option<Vec<crate::policy::Scope>>,
    pub groups: Vec<String>,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub max_output: usize,
    /// The `[target.ssh]` / `[target.docker]` / `[target.http]` table for this kind.
    pub settings: Option<toml::Table>,
}

/// A Tailscale Service (`tailscale serve --service=svc:NAME --tls-terminated-tcp=443
/// --proxy-protocol=2 tcp://LISTEN`): a loopback listener (or a unix socket) where every
/// connection must come from tailscaled's uid and begin with a PROXY v2 header naming the real
/// caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `svc:NAME`.
    pub name: String,
    /// Loopback address `tailscale serve` forwards to (unused when `socket` is set).
    pub listen: std::net::SocketAddr,
    /// A unix socket to listen on instead of `listen`.
    pub socket: Option<PathBuf>,
    /// The only uid whose connections the Service listener serves (tailscaled's).
    pub tailscaled_uid: u32,
}

impl ServiceConfig {
    /// `NAME` without the `svc:` prefix.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches("svc:")
    }
}

/// Values given on the command line or in the environment; `None` = not given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub database: Option<PathBuf>,
    pub capability: Option<String>,
    /// `svc:NAME` of a Tailscale Service (enables the Service listener).
    pub service: Option<String>,
    /// The Service listener's loopback address.
    pub service_listen: Option<String>,
}

/// Why the configuration cannot be used. Messages name the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: String, key: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    tailscale: TailscaleSection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default)]
    grant: Vec<GrantSection>,
    #[serde(default)]
    service: ServiceSection,
    #[serde(default)]
    target: Vec<TargetSection>,
    #[serde(default)]
    tools: ToolsSection,
    #[serde(default)]
    approvals: approvals::ApprovalsSection,
    #[serde(default)]
    limits: limits::LimitsSection,
    #[serde(default)]
    services: ServicesSection,
    #[serde(default)]
    files: FilesSection,
    #[serde(default)]
    logs: LogsSection,
    #[serde(default)]
    stacks: StacksSection,
    #[serde(default)]
    network: NetworkSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NetworkSection {
    http_allow: Vec<String>,
    allow_link_local: bool,
    dns_servers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StacksSection {
    dir: PathBuf,
    allowed_git_hosts: Vec<String>,
    docker_host: String,
    compose_command: Vec<String>,
    timeout_secs: u64,
}

impl Default for StacksSection {
    fn default() -> Self {
        use crate::exec::compose;
        StacksSection {
            dir: PathBuf::from(compose::DEFAULT_DIR),
            allowed_git_hosts: Vec::new(),
            docker_host: compose::DEFAULT_DOCKER_HOST.to_string(),
            compose_command: Vec::new(),
            timeout_secs: compose::DEFAULT_TIMEOUT.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FilesSection {
    roots: Vec<PathBuf>,
    deny: Vec<String>,
    max_read_bytes: usize,
    allow_hardlinks: bool,
}

impl Default for FilesSection {
    fn default() -> Self {
        FilesSection {
            roots: Vec::new(),
            deny: Vec::new(),
            max_read_bytes: 256 * 1024,
            allow_hardlinks: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogsSection {
    roots: Vec<PathBuf>,
    deny: Vec<String>,
}

impl Default for LogsSection {
    fn default() -> Self {
        LogsSection {
            roots: vec![PathBuf::from("/var/log")],
            deny: Vec::new(),
        }
    }
}

/// `roots` and `deny` of `[files]` / `[logs]`: absolute, `..`-free roots that no deny pattern
/// covers; one-component patterns.
fn check_roots(section: &str, roots: &[PathBuf], deny: &[String]) -> Result<(), (String, String)> {
    for (i, p) in deny.iter().enumerate() {
        crate::exec::fs::valid_pattern(p).map_err(|e| (format!("{section}.deny[{i}]"), e))?;
    }
    let d = crate::exec::fs::Deny::new(deny);
    for (i, r) in roots.iter().enumerate() {
        let key = format!("{section}.roots[{i}]");
        if !r.is_absolute() {
            return Err((key, format!("`{}` is not an absolute path", r.display())));
        }
        if r.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err((key, format!("`{}` contains `..`", r.display())));
        }
        if let Some(pattern) = r.components().find_map(|c| match c {
            std::path::Component::Normal(n) => d.matches(n).map(str::to_string),
            _ => None,
        }) {
            return Err((
                key,
                format!("`{}` is itself covered by deny pattern `{pattern}`", r.display()),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ToolsSection {
    read_only: bool,
    enable: Vec<String>,
    disable: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServicesSection {
    units: Vec<String>,
    helper_timeout_secs: u64,
}

impl Default for ServicesSection {
    fn default() -> Self {
        ServicesSection {
            units: Vec::new(),
            helper_timeout_secs: 900,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    id: String,
    kind: String,
    scopes: Option<Vec<String>>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default = "default_target_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_concurrent")]
    max_concurrent: usize,
    #[serde(default = "default_max_output")]
    max_output_bytes: usize,
    ssh: Option<toml::Table>,
    docker: Option<toml::Table>,
    http: Option<toml::Table>,
}

fn default_target_timeout() -> u64 {
    30
}
fn default_max_concurrent() -> usize {
    4
}
fn default_max_output() -> usize {
    256 * 1024
}

/// Ids and group names: lowercase letters, digits, `-`, `_`, `.`; starting with a letter or digit.
fn valid_id(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServiceSection {
    name: String,
    listen: String,
    socket: Option<PathBuf>,
    tailscaled_uid: u32,
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection {
            name: String::new(),
            listen: "127.0.0.1:8472".to_string(),
            socket: None,
            tailscaled_uid: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    port: u16,
    listen: Vec<String>,
    extra_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    allow_self: bool,
    sessions: bool,
    max_body_bytes: usize,
    header_timeout_secs: u64,
    body_timeout_secs: u64,
    identity_cache_secs: u64,
    max_connections: usize,
    /// Default: 64, or `max_connections` when that is lower.
    max_connections_per_address: Option<usize>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            port: DEFAULT_PORT,
            listen: Vec::new(),
            extra_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allow_self: false,
            sessions: true,
            max_body_bytes: 1024 * 1024,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            identity_cache_secs: 2,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TailscaleSection {
    socket: PathBuf,
    capability: String,
    whois_timeout_ms: u64,
}

impl Default for TailscaleSection {
    fn default() -> Self {
        TailscaleSection {
            socket: PathBuf::from(DEFAULT_SOCKET),
            capability: DEFAULT_CAPABILITY.to_string(),
            whois_timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AuditSection {
    database: PathBuf,
    redact_fields: Vec<String>,
    journald: bool,
    refusal_window_secs: u64,
}

/// Longest `[audit] refusal_window_secs`: a summary row is written at most this late.
const MAX_REFUSAL_WINDOW_SECS: u64 = 3600;

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            database: PathBuf::from(DEFAULT_DATABASE),
            redact_fields: Vec::new(),
            journald: true,
            refusal_window_secs: DEFAULT_REFUSAL_WINDOW.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSection {
    #[serde(rename = "match")]
    matcher: String,
    scopes: Vec<String>,
    #[serde(default)]
    targets: Option<Vec<String>>,
}

impl Config {
    /// Load `path` (or the default path, which may be absent), then apply overrides and validate.
    /// An explicitly named file must exist.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (file, source) = match path {
            Some(p) => (read(p)?, Some(p.to_path_buf())),
            None if Path::new(DEFAULT_PATH).exists() => {
                (read(Path::new(DEFAULT_PATH))?, Some(PathBuf::from(DEFAULT_PATH)))
            }
            None => (File::default(), None),
        };
        build(file, source, overrides)
    }

    /// The built-in defaults, as if no file, flag or environment variable were given.
    pub fn defaults() -> Config {
        build(File::default(), None, &Overrides::default()).expect("the defaults are valid")
    }

    /// Parse a configuration from text (used by tests and `check-config`).
    pub fn from_toml(text: &str, name: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = parse(text, name)?;
        build(file, Some(name.to_path_buf()), overrides)
    }
}

fn read(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<File, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn build(file: File, source: Option<PathBuf>, o: &Overrides) -> Result<Config, ConfigError> {
    let name = source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(defaults)".to_string());
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: name.clone(),
        key: key.to_string(),
        message,
    };

    let port = o.port.unwrap_or(file.server.port);
    if port == 0 {
        return Err(invalid("server.port", "must be between 1 and 65535".into()));
    }
    let mut listen = Vec::new();
    for (i, raw) in file.server.listen.iter().enumerate() {
        let key = format!("server.listen[{i}]");
        let ip: IpAddr = raw
            .parse()
            .map_err(|_| invalid(&key, format!("`{raw}` is not an IP address")))?;
        if !tailnet::is_tailnet_ip(ip) {
            return Err(invalid(
                &key,
                format!(
                    "`{ip}` is not a tailnet address (100.64.0.0/10 or fd7a:115c:a1e0::/48); tailopsmcp never listens outside the tailnet (use --dev-listen for a loopback dev server)"
                ),
            ));
        }
        listen.push(tailnet::unmap(ip));
    }
    for (i, h) in file.server.extra_hosts.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            return Err(invalid(
                &format!("server.extra_hosts[{i}]"),
                format!("`{h}` is not a host name"),
            ));
        }
    }
    for (i, origin) in file.server.allowed_origins.iter().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(invalid(
                &format!("server.allowed_origins[{i}]"),
                format!("`{origin}` must start with http:// or https://"),
            ));
        }
    }
    if file.server.max_body_bytes < 1024 {
        return Err(invalid("server.max_body_bytes", "must be at least 1024".into()));
    }
    if !(1..=3600).contains(&file.server.header_timeout_secs) {
        return Err(invalid(
            "server.header_timeout_secs",
            "must be between 1 and 3600".into(),
        ));
    }
    if !(1..=3600).contains(&file.server.body_timeout_secs) {
        return Err(invalid("server.body_timeout_secs", "must be between 1 and 3600".into()));
    }
    if !(1..=65_536).contains(&file.server.max_connections) {
        return Err(invalid("server.max_connections", "must be between 1 and 65536".into()));
    }
    let per_address = file
        .server
        .max_connections_per_address
        .unwrap_or(file.server.max_connections.min(64));
    if !(1..=file.server.max_connections).contains(&per_address) {
        return Err(invalid(
            "server.max_connections_per_address",
            format!(
                "must be between 1 and max_connections ({})",
                file.server.max_connections
            ),
        ));
    }
    if file.server.identity_cache_secs > 30 {
        return Err(invalid(
            "server.identity_cache_secs",
            "must be at most 30 (grants and tags change)".into(),
        ));
    }

    let capability = o.capability.clone().unwrap_or(file.tailscale.capability);
    if !valid_capability(&capability) {
        return Err(invalid(
            "tailscale.capability",
            format!("`{capability}` is not an app capability name like `example.com/cap/tailopsmcp`"),
        ));
    }
    if !(100..=30_000).contains(&file.tailscale.whois_timeout_ms) {
        return Err(invalid(
            "tailscale.whois_timeout_ms",
            "must be between 100 and 30000".into(),
        ));
    }

    let mut grants = Vec::new();
    for (i, g) in file.grant.into_iter().enumerate() {
        let key = |field: &str| format!("grant[{i}].{field}");
        let matcher = g.matcher.parse().map_err(|e| invalid(&key("match"), e))?;
        if g.scopes.is_empty() {
            return Err(invalid(&key("scopes"), "names no scopes".into()));
        }
        let mut scopes = Vec::new();
        for w in &g.scopes {
            scopes.extend(policy::expand(w).map_err(|e| invalid(&key("scopes"), e))?);
        }
        scopes.sort();
        scopes.dedup();
        let targets = g.targets.unwrap_or_else(|| vec!["local".to_string()]);
        if targets.is_empty() || targets.iter().any(|t| t.is_empty()) {
            return Err(invalid(
                &key("targets"),
                "must name at least one target (or `*`)".into(),
            ));
        }
        grants.push(LocalGrant {
            matcher,
            words: g.scopes,
            scopes,
            targets,
        });
    }

    let service_name = o.service.clone().unwrap_or(file.service.name);
    let service_listen = o.service_listen.clone().unwrap_or(file.service.listen);
    let service = if service_name.is_empty() {
        None
    } else {
        let name = service_name;
        let valid = name.strip_prefix("svc:").is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
        if !valid {
            return Err(invalid(
                "service.name",
                format!("`{name}` is not a Service name like `svc:mcp`"),
            ));
        }
        let listen: std::net::SocketAddr = service_listen
            .parse()
            .map_err(|_| invalid("service.listen", format!("`{service_listen}` is not IP:PORT")))?;
        if !tailnet::is_loopback(listen.ip()) {
            return Err(invalid(
                "service.listen",
                format!("`{listen}` is not a loopback address; only `tailscale serve` on this host may connect to it"),
            ));
        }
        let socket = match file.service.socket {
            Some(p) if !p.is_absolute() || p.file_name().is_none() => {
                return Err(invalid(
                    "service.socket",
                    format!("`{}` is not an absolute path to a socket file", p.display()),
                ));
            }
            other => other,
        };
        Some(ServiceConfig {
            name,
            listen,
            socket,
            tailscaled_uid: file.service.tailscaled_uid,
        })
    };

    let mut targets: Vec<TargetConfig> = Vec::new();
    for (i, t) in file.target.into_iter().enumerate() {
        let key = |field: &str| format!("target[{i}].{field}");
        if !valid_id(&t.id) {
            return Err(invalid(
                &key("id"),
                format!("`{}` is not a target id (lowercase letters, digits, - _ .)", t.id),
            ));
        }
        if targets.iter().any(|o| o.id == t.id) {
            return Err(invalid(&key("id"), format!("target `{}` is defined twice", t.id)));
        }
        use crate::model::Kind;
        let kind = match t.kind.as_str() {
            "local" => Kind::Local,
            "ssh" => Kind::Ssh,
            "docker" => Kind::Docker,
            "http" => Kind::Http,
            other => {
                return Err(invalid(
                    &key("kind"),
                    format!("`{other}` is not one of local, ssh, docker, http"),
                ));
            }
        };
        if t.id == crate::model::LOCAL && kind != Kind::Local {
            return Err(invalid(
                &key("id"),
                "`local` is this host; give a remote target another id".into(),
            ));
        }
        let tables = [
            ("ssh", Kind::Ssh, t.ssh),
            ("docker", Kind::Docker, t.docker),
            ("http", Kind::Http, t.http),
        ];
        let mut settings = None;
        for (name, k, table) in tables {
            match (k == kind, table) {
                (true, Some(table)) => settings = Some(table),
                (true, None) => {
                    return Err(invalid(
                        &key(name),
                        format!("a {name} target needs a [target.{name}] table"),
                    ));
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        &key(name),
                        format!("a {} target takes no [target.{name}] table", kind.as_str()),
                    ));
                }
                (false, None) => {}
            }
        }
        let scopes = match t.scopes {
            None => None,
            Some(words) => {
                let mut v = Vec::new();
                for w in &words {
                    v.extend(policy::expand(w).map_err(|e| invalid(&key("scopes"), e))?);
                }
                v.sort();
                v.dedup();
                Some(v)
            }
        };
        for g in &t.groups {
            if !valid_id(g) {
                return Err(invalid(&key("groups"), format!("`{g}` is not a group name")));
            }
        }
        if !(1..=3600).contains(&t.timeout_secs) {
            return Err(invalid(&key("timeout_secs"), "must be between 1 and 3600".into()));
        }
        if !(1..=256).contains(&t.max_concurrent) {
            return Err(invalid(&key("max_concurrent"), "must be between 1 and 256".into()));
        }
        if !(1024..=64 << 20).contains(&t.max_output_bytes) {
            return Err(invalid(
                &key("max_output_bytes"),
                "must be between 1024 and 67108864".into(),
            ));
        }
        targets.push(TargetConfig {
            id: t.id,
            kind,
            scopes,
            groups: t.groups,
            timeout: Duration::from_secs(t.timeout_secs),
            max_concurrent: t.max_concurrent,
            max_output: t.max_output_bytes,
            settings,
        });
    }

    for (section, roots, deny) in [
        ("files", &file.files.roots, &file.files.deny),
        ("logs", &file.logs.roots, &file.logs.deny),
    ] {
        check_roots(section, roots, deny).map_err(|(key, message)| invalid(&key, message))?;
    }
    if !(1024..=16 << 20).contains(&file.files.max_read_bytes) {
        return Err(invalid(
            "files.max_read_bytes",
            "must be between 1024 and 16777216".into(),
        ));
    }

    let stacks = stacks_settings(file.stacks, &invalid)?;

    let mut network = NetworkConfig::default();
    for (i, rule) in file.network.http_allow.iter().enumerate() {
        let rule =
            crate::exec::net::AllowRule::parse(rule).map_err(|e| invalid(&format!("network.http_allow[{i}]"), e))?;
        network.http.allow.push(rule);
    }
    network.http.allow_link_local = file.network.allow_link_local;
    for (i, server) in file.network.dns_servers.iter().enumerate() {
        let sa =
            crate::exec::net::parse_dns_server(server).map_err(|e| invalid(&format!("network.dns_servers[{i}]"), e))?;
        network.dns_servers.push(sa);
    }

    let approvals = approvals::ApprovalsConfig::build(file.approvals).map_err(|(k, m)| invalid(&k, m))?;
    let limits = limits::LimitsConfig::build(file.limits).map_err(|(k, m)| invalid(&k, m))?;

    let mut units = Vec::new();
    for (i, u) in file.services.units.iter().enumerate() {
        let key = format!("services.units[{i}]");
        // An exact name is normalized like a tool argument (`nginx` = `nginx.service`).
        let pattern = if u.contains(['*', '?']) {
            u.clone()
        } else {
            crate::exec::systemd::validate_unit(u).map_err(|e| invalid(&key, e))?
        };
        units.push(crate::exec::systemd::Glob::new(&pattern).map_err(|e| invalid(&key, e))?);
    }
    if !(10..=86_400).contains(&file.services.helper_timeout_secs) {
        return Err(invalid(
            "services.helper_timeout_secs",
            "must be between 10 and 86400".into(),
        ));
    }
    let services = ServicesConfig {
        units,
        helper_timeout: Duration::from_secs(file.services.helper_timeout_secs),
    };

    Ok(Config {
        source,
        port,
        listen,
        extra_hosts: file.server.extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        allowed_origins: file.server.allowed_origins,
        allow_self: file.server.allow_self,
        sessions: file.server.sessions,
        max_body_bytes: file.server.max_body_bytes,
        header_timeout: Duration::from_secs(file.server.header_timeout_secs),
        body_timeout: Duration::from_secs(file.server.body_timeout_secs),
        max_connections: file.server.max_connections,
        max_connections_per_address: per_address,
        identity_cache: Duration::from_secs(file.server.identity_cache_secs),
        socket: o.socket.clone().unwrap_or(file.tailscale.socket),
        capability,
        whois_timeout: Duration::from_millis(file.tailscale.whois_timeout_ms),
        database: o.database.clone().unwrap_or(file.audit.database),
        redact_fields: file.audit.redact_fields,
        journald: file.audit.journald,
        refusal_window: if file.audit.refusal_window_secs <= MAX_REFUSAL_WINDOW_SECS {
            Duration::from_secs(file.audit.refusal_window_secs)
        } else {
            return Err(invalid(
                "audit.refusal_window_secs",
                format!("must be between 0 (off) and {MAX_REFUSAL_WINDOW_SECS}"),
            ));
        },
        grants,
        service,
        targets,
        tools: ToolsConfig {
            read_only: file.tools.read_only,
            enable: file.tools.enable,
            disable: file.tools.disable,
        },
        approvals,
        limits,
        services,
        files: FilesConfig {
            roots: file.files.roots,
            deny: file.files.deny,
            max_read_bytes: file.files.max_read_bytes,
            allow_hardlinks: file.files.allow_hardlinks,
        },
        logs: LogsConfig {
            roots: file.logs.roots,
            deny: file.logs.deny,
        },
        stacks,
        network,
    })
}

/// `[stacks]`, validated: an absolute directory, parsed git host rules, a `unix://` engine.
fn stacks_settings(
    s: StacksSection,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::exec::compose::StacksSettings, ConfigError> {
    use crate::exec::compose;
    if !s.dir.is_absolute() || s.dir.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(invalid(
            "stacks.dir",
            format!("`{}` must be an absolute path without `..`", s.dir.display()),
        ));
    }
    let mut rules = Vec::new();
    for (i, entry) in s.allowed_git_hosts.iter().enumerate() {
        rules.push(compose::parse_host_rule(entry).map_err(|e| invalid(&format!("stacks.allowed_git_hosts[{i}]"), e))?);
    }
    let socket_ok = s
        .docker_host
        .strip_prefix("unix://")
        .is_some_and(|p| p.starts_with('/') && !p.contains(['\0', '\n']));
    if !socket_ok {
        return Err(invalid(
            "stacks.docker_host",
            format!(
                "`{}` must be `unix:///PATH` (the engine on this host; remote engines are `docker` targets)",
                s.docker_host
            ),
        ));
    }
    if s.compose_command.iter().any(|w| w.is_empty() || w.contains('\0')) {
        return Err(invalid(
            "stacks.compose_command",
            "must be a command and its arguments, e.g. [\"docker\", \"compose\"] (empty words are not allowed)".into(),
        ));
    }
    if !(1..=3600).contains(&s.timeout_secs) {
        return Err(invalid("stacks.timeout_secs", "must be between 1 and 3600".into()));
    }
    Ok(compose::StacksSettings {
        dir: s.dir,
        allowed_git_hosts: rules,
        docker_host: s.docker_host,
        compose_command: s.compose_command,
        timeout: Duration::from_secs(s.timeout_secs),
    })
}

/// `^([\pL\pN-]+\.)+[\pL\pN-]+/[\pL\pN-/]+$`, the form tailscaled requires of app capability names.
fn valid_capability(name: &str) -> bool {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '-');
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| word(l))
        && !path.is_empty()
        && path.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("test.toml"), &Overrides::default()).map_err(|e| e.to_string())
    }

    /// A config that must be refused, with a message containing `needle`.
    fn check_err(text: &str, needle: &str) {
        match load(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert!(e.contains(needle), "`{e}` does not mention `{needle}`"),
        }
    }

    #[test]
    fn defaults() {
        let c = load("").unwrap();
        assert_eq!(c.port, DEFAULT_PORT);
        assert!(c.listen.is_empty());
        assert!(!c.allow_self);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.header_timeout, Duration::from_secs(30));
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        assert_eq!(c.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(c.database, Path::new(DEFAULT_DATABASE));
        assert!(c.grants.is_empty());
    }

    #[test]
    fn services_units_are_validated_and_normalized() {
        let c = load("[services]\nunits = [\"nginx\", \"app-*.service\"]\nhelper_timeout_secs = 60").unwrap();
        let units: Vec<&str> = c.services.units.iter().map(|g| g.as_str()).collect();
        assert_eq!(units, ["nginx.service", "app-*.service"]);
        assert_eq!(c.services.helper_timeout, Duration::from_secs(60));
        assert!(load("").unwrap().services.units.is_empty());
        check_err(
            "[services]\nunits = [\"../x\"]",
            "services.units[0]: unit name `../x` contains '/'",
        );
        check_err("[services]\nunits = [\"a;*\"]", "services.units[0]");
        check_err("[services]\nunits = [\"-H\"]", "starts with `-`");
        check_err("[services]\nhelper_timeout_secs = 1", "services.helper_timeout_secs");
        check_err("[services]\nunit = []", "unknown field `unit`");
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../config.example.toml");
        let c = load(text).unwrap();
        assert!(!c.grants.is_empty());
    }

    #[test]
    fn refuses_listening_outside_the_tailnet() {
        check_err(
            "[server]\nlisten = [\"0.0.0.0\"]",
            "server.listen[0]: `0.0.0.0` is not a tailnet address",
        );
        check_err("[server]\nlisten = [\"127.0.0.1\"]", "not a tailnet address");
        check_err("[server]\nlisten = [\"192.168.1.5\"]", "not a tailnet address");
        check_err("[server]\nlisten = [\"::\"]", "not a tailnet address");
        check_err("[server]\nlisten = [\"nas\"]", "not an IP address");
        let c = load("[server]\nlisten = [\"100.100.1.1\", \"fd7a:115c:a1e0::1\"]").unwrap();
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        check_err("[server]\nport = 0", "server.port");
        check_err("[server]\nprot = 1", "unknown field `prot`");
        check_err("[tailscale]\ncapability = \"tailopsmcp\"", "tailscale.capability");
        check_err("[tailscale]\nwhois_timeout_ms = 5", "tailscale.whois_timeout_ms");
        check_err("[[grant]]\nmatch = \"alice\"\nscopes = [\"monitor\"]", "grant[0].match");
        check_err(
            "[[grant]]\nmatch = \"node:alice-laptop\"\nscopes = [\"monitor\"]",
            "grant[0].match: `node:alice-laptop` names a node by name",
        );
        check_err(
            "[[grant]]\nmatch = \"*\"\nscopes = [\"monitor\"]\n[[grant]]\nmatch = \"node-id:alice-laptop.tail3f9c2.ts.net\"\nscopes = [\"monitor\"]",
            "grant[1].match: `node-id:alice-laptop.tail3f9c2.ts.net` is not a StableID: it looks like a node name",
        );
        let c = load("[[grant]]\nmatch = \"node-id:7\"\nscopes = [\"monitor\"]").unwrap();
        assert_eq!(c.grants[0].matcher, policy::Matcher::NodeId("7".into()));
        check_err(
            "[[grant]]\nmatch = \"*\"\nscopes = [\"system:write\"]",
            "grant[0].scopes: unknown level `write`",
        );
        check_err("[[grant]]\nmatch = \"*\"\nscopes = []", "grant[0].scopes");
        check_err(
            "[[grant]]\nmatch = \"*\"\nscopes = [\"monitor\"]\ntargets = []",
            "grant[0].targets",
        );
        check_err(
            "[server]\nallowed_origins = [\"evil.example\"]",
            "server.allowed_origins[0]",
        );
        check_err("[server]\nmax_body_bytes = 10", "server.max_body_bytes");
        check_err("[server]\nheader_timeout_secs = 0", "server.header_timeout_secs");
        check_err("[server]\nbody_timeout_secs = 0", "server.body_timeout_secs");
        check_err("[server]\nbody_timeout_secs = 3601", "server.body_timeout_secs");
        check_err("[service]\nname = \"mcp\"", "service.name");
        check_err("[service]\nname = \"svc:Bad_Name\"", "service.name");
        check_err(
            "[service]\nname = \"svc:mcp\"\nlisten = \"100.100.1.1:8472\"",
            "service.listen",
        );
        check_err("[service]\nname = \"svc:mcp\"\nlisten = \"8472\"", "service.listen");
        check_err(
            "[service]\nname = \"svc:mcp\"\nsocket = \"run/s.sock\"",
            "service.socket",
        );
        check_err("[service]\nname = \"svc:mcp\"\nsocket = \"/\"", "service.socket");
        check_err("[server]\nmax_connections = 0", "server.max_connections");
        check_err(
            "[server]\nmax_connections = 8\nmax_connections_per_address = 9",
            "server.max_connections_per_address",
        );
    }

    #[test]
    fn files_and_logs_sections() {
        let c = load("").unwrap();
        assert!(c.files.roots.is_empty());
        assert_eq!(c.logs.roots, vec![PathBuf::from("/var/log")]);
        assert_eq!(c.files.max_read_bytes, 256 * 1024);
        assert!(!c.files.allow_hardlinks, "hard-linked files are refused by default");
        assert!(load("[files]\nallow_hardlinks = true").unwrap().files.allow_hardlinks);
        check_err("[files]\nallow_hardlinks = \"yes\"", "invalid type");
        let c = load("[files]\nroots = [\"/srv\"]\ndeny = [\"*.bak\"]\nmax_read_bytes = 4096").unwrap();
        assert_eq!(c.files.roots, vec![PathBuf::from("/srv")]);
        assert_eq!(c.files.deny, vec!["*.bak".to_string()]);
        check_err(
            "[files]\nroots = [\"srv\"]",
            "files.roots[0]: `srv` is not an absolute path",
        );
        check_err(
            "[files]\nroots = [\"/srv/../etc\"]",
            "files.roots[0]: `/srv/../etc` contains `..`",
        );
        check_err("[files]\nroots = [\"/root/.ssh\"]", "covered by deny pattern `.ssh`");
        check_err("[files]\ndeny = [\"a/b\"]", "files.deny[0]");
        check_err("[files]\nmax_read_bytes = 10", "files.max_read_bytes");
        check_err("[logs]\nroots = [\"log\"]", "logs.roots[0]");
        check_err("[logs]\nbogus = 1", "unknown field `bogus`");
    }

    #[test]
    fn targets_are_validated_naming_the_key() {
        check_err("[[target]]\nid = \"Nas\"\nkind = \"local\"", "target[0].id");
        check_err(
            "[[target]]\nid = \"nas\"\nkind = \"ftp\"",
            "target[0].kind: `ftp` is not one of",
        );
        check_err(
            "[[target]]\nid = \"nas\"\nkind = \"ssh\"",
            "target[0].ssh: a ssh target needs a [target.ssh] table",
        );
        check_err(
            "[[target]]\nid = \"nas\"\nkind = \"local\"\n[target.http]\nbase_url = \"x\"",
            "target[0].http",
        );
        check_err(
            "[[target]]\nid = \"a\"\nkind = \"local\"\n[[target]]\nid = \"a\"\nkind = \"local\"",
            "target[1].id: target `a` is defined twice",
        );
        check_err(
            "[[target]]\nid = \"a\"\nkind = \"local\"\nscopes = [\"nope\"]",
            "target[0].scopes",
        );
        check_err(
            "[[target]]\nid = \"a\"\nkind = \"local\"\nmax_concurrent = 0",
            "target[0].max_concurrent",
        );
        check_err(
            "[[target]]\nid = \"local\"\nkind = \"ssh\"\n[target.ssh]\nhost = \"x\"",
            "`local` is this host",
        );
        let c = load("[[target]]\nid = \"nas\"\nkind = \"ssh\"\ngroups = [\"lab\"]\n[target.ssh]\nhost = \"nas\"\nuser = \"ops\"").unwrap();
        assert_eq!(c.targets[0].settings.as_ref().unwrap()["user"].as_str(), Some("ops"));
    }

    #[test]
    fn network_section() {
        let c = load("").unwrap();
        assert!(c.network.http.allow.is_empty() && !c.network.http.allow_link_local);
        assert!(c.network.dns_servers.is_empty());
        let c = load(
            "[network]\nhttp_allow = [\"nas.lan\", \"*.ts.net\", \"192.168.1.0/24\"]\nallow_link_local = true\ndns_servers = [\"100.100.100.100\", \"127.0.0.1:5353\"]",
        )
        .unwrap();
        assert_eq!(c.network.http.allow.len(), 3);
        assert!(c.network.http.allow_link_local);
        assert_eq!(c.network.dns_servers[0], "100.100.100.100:53".parse().unwrap());
        check_err("[network]\nhttp_allow = [\"http://nas\"]", "network.http_allow[0]");
        check_err(
            "[network]\nhttp_allow = [\"ok.lan\", \"10.0.0.0/40\"]",
            "network.http_allow[1]",
        );
        check_err("[network]\ndns_servers = [\"dns.google\"]", "network.dns_servers[0]");
        check_err("[network]\nhttp_alow = []", "unknown field `http_alow`");
    }

    #[test]
    fn stacks_settings_are_validated_naming_the_key() {
        let c = load("").unwrap();
        assert_eq!(c.stacks.dir, Path::new(crate::exec::compose::DEFAULT_DIR));
        assert!(c.stacks.allowed_git_hosts.is_empty());
        check_err("[stacks]\ndir = \"stacks\"", "stacks.dir");
        check_err(
            "[stacks]\nallowed_git_hosts = [\"https://x\"]",
            "stacks.allowed_git_hosts[0]",
        );
        check_err("[stacks]\ndocker_host = \"tcp://nas:2376\"", "stacks.docker_host");
        check_err("[stacks]\ncompose_command = [\"\"]", "stacks.compose_command");
        check_err("[stacks]\ntimeout_secs = 0", "stacks.timeout_secs");
        let c =
            load("[stacks]\ndir = \"/opt/stacks\"\nallowed_git_hosts = [\"GitHub.com\", \"file:///srv/git\"]").unwrap();
        assert_eq!(c.stacks.allowed_git_hosts.len(), 2);
    }

    #[test]
    fn a_service_listens_on_loopback() {
        let c = load("[service]\nname = \"svc:mcp\"").unwrap();
        let s = c.service.unwrap();
        assert_eq!(s.listen, "127.0.0.1:8472".parse().unwrap());
        assert_eq!((s.socket.as_deref(), s.tailscaled_uid), (None, 0));
        assert_eq!(s.short_name(), "mcp");
        assert!(load("").unwrap().service.is_none());
        let c = load("[service]\nname = \"svc:mcp\"\nsocket = \"/run/tailopsmcp/service.sock\"\ntailscaled_uid = 998")
            .unwrap();
        let s = c.service.unwrap();
        assert_eq!(s.socket.as_deref(), Some(Path::new("/run/tailopsmcp/service.sock")));
        assert_eq!(s.tailscaled_uid, 998);
        assert_eq!(load("").unwrap().max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            port: Some(9000),
            socket: Some("/tmp/ts.sock".into()),
            database: Some("/tmp/a.db".into()),
            capability: Some("example.com/cap/x".into()),
            service: Some("svc:mcp".into()),
            service_listen: Some("127.0.0.1:9443".into()),
        };
        let c = Config::from_toml("[server]\nport = 1234", Path::new("t.toml"), &o).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.socket, Path::new("/tmp/ts.sock"));
        assert_eq!(c.database, Path::new("/tmp/a.db"));
        assert_eq!(c.capability, "example.com/cap/x");
        let svc = c.service.unwrap();
        assert_eq!(
            (svc.name.as_str(), svc.listen),
            ("svc:mcp", "127.0.0.1:9443".parse().unwrap())
        );
    }

    #[test]
    fn capability_names() {
        for (name, ok) in [
            ("example.com/cap/tailopsmcp", true),
            ("tailscale.com/cap/golink", true),
            ("a.b.c/x", true),
            ("nodot/cap/x", false),
            ("example.com/", false),
            ("example.com/cap x", false),
            (".com/x", false),
        ] {
            assert_eq!(valid_capability(name), ok, "{name}");
        }
    }

    #[test]
    fn audit_refusal_window() {
        assert_eq!(load("").unwrap().refusal_window, Duration::from_secs(10));
        assert_eq!(
            load("[audit]\nrefusal_window_secs = 0").unwrap().refusal_window,
            Duration::ZERO
        );
        check_err("[audit]\nrefusal_window_secs = 3601", "audit.refusal_window_secs");
    }
}
