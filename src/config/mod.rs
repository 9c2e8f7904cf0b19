//! Configuration: the TOML file, `TAILOPSMCP_*` environment variables and command-line flags,
//! resolved once at start-up into a validated [`Config`].
//!
//! Precedence: flag > environment > file > default. Unknown keys are errors (a typo must not
//! silently widen or narrow access). This module does no IO after start-up.
//!
//! This file holds [`Config`], reading and parsing, and [`ConfigError`]; each section of the
//! file has its own submodule with its raw form (`…Section`, as serde reads it), its defaults
//! and its validation, which names the offending key (`server.listen[0]`). The validated types
//! callers use are re-exported here, so `config::FilesConfig` is their one path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::exec::compose::StacksSettings;
use crate::policy::LocalGrant;

pub mod approvals;
mod audit;
mod files;
mod grants;
pub mod limits;
mod network;
mod server;
mod service;
mod services;
mod stacks;
mod tailscale;
mod targets;
mod tools;

pub use audit::{DEFAULT_DATABASE, DEFAULT_REFUSAL_WINDOW};
pub use files::{FilesConfig, LogsConfig};
pub use network::NetworkConfig;
pub use server::{DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT};
pub use service::ServiceConfig;
pub use services::ServicesConfig;
pub use tailscale::{DEFAULT_CAPABILITY, DEFAULT_SOCKET};
pub use targets::TargetConfig;
pub use tools::ToolsConfig;

pub const DEFAULT_PATH: &str = "/etc/tailopsmcp/config.toml";

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
    pub stacks: StacksSettings,
    /// Where the network tools may go and how they resolve names (`[network]`).
    pub network: NetworkConfig,
    /// What the services and packages tools may change (`[services]`).
    pub services: ServicesConfig,
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

/// What a section's validation refuses: the key (`server.listen[0]`) and what is wrong with it.
/// [`build`] adds the file's name.
type Invalid = (String, String);

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

/// The whole file as written: one field per section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: server::ServerSection,
    #[serde(default)]
    tailscale: tailscale::TailscaleSection,
    #[serde(default)]
    audit: audit::AuditSection,
    #[serde(default)]
    grant: Vec<grants::GrantSection>,
    #[serde(default)]
    service: service::ServiceSection,
    #[serde(default)]
    target: Vec<targets::TargetSection>,
    #[serde(default)]
    tools: tools::ToolsSection,
    #[serde(default)]
    approvals: approvals::ApprovalsSection,
    #[serde(default)]
    limits: limits::LimitsSection,
    #[serde(default)]
    services: services::ServicesSection,
    #[serde(default)]
    files: files::FilesSection,
    #[serde(default)]
    logs: files::LogsSection,
    #[serde(default)]
    stacks: stacks::StacksSection,
    #[serde(default)]
    network: network::NetworkSection,
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

/// Validate every section (in this order: the first error is the one reported) and apply the
/// overrides.
fn build(file: File, source: Option<PathBuf>, o: &Overrides) -> Result<Config, ConfigError> {
    let name = source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(defaults)".to_string());
    let at = |(key, message): Invalid| ConfigError::Invalid {
        path: name.clone(),
        key,
        message,
    };
    let server = server::build(file.server, o.port).map_err(at)?;
    let tailscale = tailscale::build(file.tailscale, o.socket.clone(), o.capability.clone()).map_err(at)?;
    let grants = grants::build(file.grant).map_err(at)?;
    let service = service::build(file.service, o.service.clone(), o.service_listen.clone()).map_err(at)?;
    let targets = targets::build(file.target).map_err(at)?;
    let (files, logs) = files::build(file.files, file.logs).map_err(at)?;
    let stacks = stacks::build(file.stacks).map_err(at)?;
    let network = network::build(file.network).map_err(at)?;
    let approvals = approvals::ApprovalsConfig::build(file.approvals).map_err(at)?;
    let limits = limits::LimitsConfig::build(file.limits).map_err(at)?;
    let services = services::build(file.services).map_err(at)?;
    let audit = audit::build(file.audit, o.database.clone()).map_err(at)?;
    Ok(Config {
        source,
        port: server.port,
        listen: server.listen,
        extra_hosts: server.extra_hosts,
        allowed_origins: server.allowed_origins,
        allow_self: server.allow_self,
        sessions: server.sessions,
        max_body_bytes: server.max_body_bytes,
        header_timeout: server.header_timeout,
        body_timeout: server.body_timeout,
        max_connections: server.max_connections,
        max_connections_per_address: server.max_connections_per_address,
        identity_cache: server.identity_cache,
        socket: tailscale.socket,
        capability: tailscale.capability,
        whois_timeout: tailscale.whois_timeout,
        database: audit.database,
        redact_fields: audit.redact_fields,
        journald: audit.journald,
        refusal_window: audit.refusal_window,
        grants,
        service,
        targets,
        tools: file.tools.into(),
        approvals,
        limits,
        services,
        files,
        logs,
        stacks,
        network,
    })
}

/// What the section tests share: parse a text, and expect a refusal naming a key.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use super::{Config, Overrides};

    pub(super) fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("test.toml"), &Overrides::default()).map_err(|e| e.to_string())
    }

    /// A config that must be refused, with a message containing `needle`.
    pub(super) fn check_err(text: &str, needle: &str) {
        match load(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => assert!(e.contains(needle), "`{e}` does not mention `{needle}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::load;
    use super::*;

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
    fn the_example_config_is_valid() {
        let text = include_str!("../../config.example.toml");
        let c = load(text).unwrap();
        assert!(!c.grants.is_empty());
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
}
