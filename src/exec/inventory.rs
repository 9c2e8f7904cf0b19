//! Application inventory of the local host: which well-known homelab applications are installed
//! or running, with the evidence for each, their listening ports and their version, plus the
//! host's identity.
//!
//! Detection is data: [`RULES`] is one table row per application (process names, command-line
//! markers, systemd unit files, Debian packages, paths, default ports, interface prefixes and
//! how to learn the version). [`gather`] reads the host once (`/proc`, unit directories, the dpkg
//! database, `/sys/class/net`, listening sockets) into [`Observed`]; [`detect`] is the pure
//! function from the table and those observations to findings. Version commands (`--version`)
//! are the only programs run, by absolute path, with a short timeout, and only when the package
//! database and files did not already tell. Nothing here writes anything or knows about storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::local::{self, OsInfo, Virtualization};
use super::procfs::{Protocol, SocketQuery, StateFilter};
use super::{CommandSpec, Limits};

/// Most ports listed per application.
pub const MAX_PORTS: usize = 32;

/// How long one version command may run.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(3);

/// How an application's version is learned when no package tells.
#[derive(Debug, Clone, Copy)]
pub enum VersionProbe {
    None,
    /// Run the first of `binaries` that exists (absolute, or found on `PATH` and the sbin
    /// directories) with `args`; the first dotted number in its output is the version.
    Command {
        binaries: &'static [&'static str],
        args: &'static [&'static str],
    },
    /// The first dotted number on the first line of `path` containing `marker`.
    File {
        path: &'static str,
        marker: &'static str,
    },
}

/// One application's detection rule.
#[derive(Debug, Clone, Copy)]
pub struct AppRule {
    /// Stable id (lowercase), used as the inventory subject `app:<id>`.
    pub id: &'static str,
    pub name: &'static str,
    /// Exact process names (`comm`, at most 15 characters), executable or `argv[0]` basenames.
    pub processes: &'static [&'static str],
    /// Substrings of a command line (for interpreted apps such as Home Assistant).
    pub cmdline: &'static [&'static str],
    /// systemd unit file names (in /etc, /run, /lib or /usr/lib `systemd/system`).
    pub units: &'static [&'static str],
    /// Debian package names; a trailing `*` matches a prefix (`postgresql-*`).
    pub packages: &'static [&'static str],
    /// Files or directories that only this application creates.
    pub paths: &'static [&'static str],
    /// Default listening ports (TCP or UDP).
    pub ports: &'static [u16],
    /// Network interface name prefixes (`wg`, `tailscale`).
    pub interfaces: &'static [&'static str],
    pub version: VersionProbe,
}

const fn rule(id: &'static str, name: &'static str) -> AppRule {
    AppRule {
        id,
        name,
        processes: &[],
        cmdline: &[],
        units: &[],
        packages: &[],
        paths: &[],
        ports: &[],
        interfaces: &[],
        version: VersionProbe::None,
    }
}

const fn cmd(binaries: &'static [&'static str], args: &'static [&'static str]) -> VersionProbe {
    VersionProbe::Command { binaries, args }
}

/// The detection table.
pub const RULES: &[AppRule] = &[
    AppRule {
        processes: &["jellyfin"],
        units: &["jellyfin.service"],
        packages: &["jellyfin", "jellyfin-server"],
        paths: &["/etc/jellyfin", "/var/lib/jellyfin", "/usr/lib/jellyfin"],
        ports: &[8096, 8920],
        ..rule("jellyfin", "Jellyfin")
    },
    AppRule {
        processes: &["Plex Media Serv", "Plex Media Server"],
        units: &["plexmediaserver.service"],
        packages: &["plexmediaserver"],
        paths: &["/usr/lib/plexmediaserver", "/var/lib/plexmediaserver"],
        ports: &[32400],
        ..rule("plex", "Plex Media Server")
    },
    AppRule {
        processes: &["pihole-FTL"],
        units: &["pihole-FTL.service"],
        paths: &["/etc/pihole", "/opt/pihole"],
        ports: &[4711],
        version: cmd(&["pihole-FTL"], &["-v"]),
        ..rule("pihole", "Pi-hole")
    },
    AppRule {
        processes: &["AdGuardHome"],
        units: &["AdGuardHome.service"],
        paths: &["/opt/AdGuardHome", "/opt/adguardhome"],
        ports: &[3000],
        version: cmd(&["/opt/AdGuardHome/AdGuardHome", "AdGuardHome"], &["--version"]),
        ..rule("adguardhome", "AdGuard Home")
    },
    AppRule {
        processes: &["ollama"],
        units: &["ollama.service"],
        paths: &["/usr/share/ollama", "/usr/local/lib/ollama"],
        ports: &[11434],
        version: cmd(&["ollama"], &["--version"]),
        ..rule("ollama", "Ollama")
    },
    AppRule {
        processes: &["postgres", "postmaster"],
        units: &["postgresql.service"],
        packages: &["postgresql", "postgresql-1*", "postgresql-9*"],
        paths: &["/etc/postgresql", "/var/lib/postgresql"],
        ports: &[5432],
        version: cmd(&["postgres", "psql"], &["--version"]),
        ..rule("postgresql", "PostgreSQL")
    },
    AppRule {
        processes: &["mysqld"],
        units: &["mysql.service", "mysqld.service"],
        packages: &["mysql-server", "mysql-server-8*", "mysql-community-server"],
        paths: &["/etc/mysql/mysql.conf.d"],
        ports: &[3306, 33060],
        version: cmd(&["mysqld"], &["--version"]),
        ..rule("mysql", "MySQL")
    },
    AppRule {
        processes: &["mariadbd"],
        units: &["mariadb.service"],
        packages: &["mariadb-server", "mariadb-server-1*"],
        paths: &["/etc/mysql/mariadb.conf.d"],
        ports: &[3306],
        version: cmd(&["mariadbd"], &["--version"]),
        ..rule("mariadb", "MariaDB")
    },
    AppRule {
        processes: &["redis-server"],
        units: &["redis-server.service", "redis.service"],
        packages: &["redis-server"],
        paths: &["/etc/redis"],
        ports: &[6379],
        version: cmd(&["redis-server"], &["--version"]),
        ..rule("redis", "Redis")
    },
    AppRule {
        processes: &["mongod"],
        units: &["mongod.service", "mongodb.service"],
        packages: &["mongodb-org-server", "mongodb-server"],
        paths: &["/etc/mongod.conf", "/var/lib/mongodb"],
        ports: &[27017],
        version: cmd(&["mongod"], &["--version"]),
        ..rule("mongodb", "MongoDB")
    },
    AppRule {
        processes: &["nginx"],
        units: &["nginx.service"],
        packages: &["nginx", "nginx-core", "nginx-light", "nginx-full", "nginx-extras"],
        paths: &["/etc/nginx/nginx.conf"],
        ports: &[80, 443],
        version: cmd(&["nginx"], &["-v"]),
        ..rule("nginx", "nginx")
    },
    AppRule {
        processes: &["apache2", "httpd"],
        units: &["apache2.service", "httpd.service"],
        packages: &["apache2"],
        paths: &["/etc/apache2/apache2.conf", "/etc/httpd/conf/httpd.conf"],
        ports: &[80, 443],
        version: cmd(&["apache2", "httpd"], &["-v"]),
        ..rule("apache", "Apache HTTP Server")
    },
    AppRule {
        processes: &["caddy"],
        units: &["caddy.service"],
        packages: &["caddy"],
        paths: &["/etc/caddy/Caddyfile"],
        ports: &[80, 443, 2019],
        version: cmd(&["caddy"], &["version"]),
        ..rule("caddy", "Caddy")
    },
    AppRule {
        processes: &["traefik"],
        units: &["traefik.service"],
        paths: &["/etc/traefik"],
        ports: &[80, 443, 8080],
        version: cmd(&["traefik"], &["version"]),
        ..rule("traefik", "Traefik")
    },
    AppRule {
        processes: &["hass"],
        cmdline: &["homeassistant"],
        units: &[
            "home-assistant@homeassistant.service",
            "home-assistant.service",
            "homeassistant.service",
        ],
        paths: &["/srv/homeassistant", "/usr/share/hassio"],
        ports: &[8123],
        ..rule("homeassistant", "Home Assistant")
    },
    AppRule {
        processes: &["portainer"],
        paths: &["/var/lib/docker/volumes/portainer_data"],
        ports: &[9443, 9000],
        ..rule("portainer", "Portainer")
    },
    AppRule {
        cmdline: &["nextcloud/cron.php", "nextcloud/occ"],
        packages: &["nextcloud"],
        paths: &["/var/www/nextcloud/version.php", "/var/www/html/nextcloud/version.php"],
        version: VersionProbe::File {
            path: "/var/www/nextcloud/version.php",
            marker: "OC_VersionString",
        },
        ..rule("nextcloud", "Nextcloud")
    },
    AppRule {
        units: &["wg-quick@.service"],
        packages: &["wireguard-tools", "wireguard"],
        paths: &["/etc/wireguard"],
        ports: &[51820],
        interfaces: &["wg"],
        version: cmd(&["wg"], &["--version"]),
        ..rule("wireguard", "WireGuard")
    },
    AppRule {
        processes: &["prometheus"],
        units: &["prometheus.service"],
        packages: &["prometheus"],
        paths: &["/etc/prometheus/prometheus.yml"],
        ports: &[9090],
        version: cmd(&["prometheus"], &["--version"]),
        ..rule("prometheus", "Prometheus")
    },
    AppRule {
        processes: &["grafana-server", "grafana"],
        units: &["grafana-server.service"],
        packages: &["grafana", "grafana-enterprise"],
        paths: &["/etc/grafana/grafana.ini"],
        ports: &[3000],
        version: cmd(&["grafana-server", "grafana"], &["-v"]),
        ..rule("grafana", "Grafana")
    },
    AppRule {
        processes: &["tailscaled"],
        units: &["tailscaled.service"],
        packages: &["tailscale"],
        paths: &["/var/lib/tailscale"],
        ports: &[41641],
        interfaces: &["tailscale"],
        version: cmd(&["tailscale"], &["version"]),
        ..rule("tailscale", "Tailscale")
    },
    AppRule {
        processes: &["dockerd"],
        units: &["docker.service"],
        packages: &["docker.io", "docker-ce"],
        paths: &["/var/lib/docker", "/etc/docker"],
        version: cmd(&["dockerd", "docker"], &["--version"]),
        ..rule("docker", "Docker")
    },
];

/// Who this host is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostIdentity {
    pub hostname: Option<String>,
    /// `/etc/machine-id` (stable per installation).
    pub machine_id: Option<String>,
    pub os: OsInfoDoc,
    pub kernel: Option<String>,
    pub arch: String,
    /// `none`, a container kind (`lxc`, `docker`, ...) or a hypervisor.
    pub virtualization: String,
    pub container: bool,
    /// Proxmox CT id (LXC) or Docker/Podman container id.
    pub container_id: Option<String>,
    pub hypervisor: Option<String>,
}

/// [`OsInfo`], storable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OsInfoDoc {
    pub pretty_name: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
}

/// What kind of thing showed an application is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// A process with the application's name (or command-line marker).
    Process,
    /// A socket listening on the application's port, held by its process or by nobody visible.
    Port,
    /// A systemd unit file.
    SystemdUnit,
    /// An installed Debian package.
    Package,
    /// A file or directory only it creates.
    File,
    /// A network interface it creates.
    Interface,
}

impl EvidenceKind {
    /// The name used in results (`systemd_unit`).
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Process => "process",
            EvidenceKind::Port => "port",
            EvidenceKind::SystemdUnit => "systemd_unit",
            EvidenceKind::Package => "package",
            EvidenceKind::File => "file",
            EvidenceKind::Interface => "interface",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    pub kind: EvidenceKind,
    /// What was seen: `redis-server (pid 123)`, `tcp 127.0.0.1:6379 (pid 123)`,
    /// `/lib/systemd/system/redis-server.service`, `redis-server 5:7.0.15-1~deb12u10`, a path.
    pub detail: String,
}

/// A listening socket attributed to an application.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct AppPort {
    pub protocol: Protocol,
    pub address: String,
    pub port: u16,
    pub pid: Option<u32>,
}

/// One application found on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DetectedApp {
    pub id: String,
    pub name: String,
    /// `running` (a process was seen) or `installed`.
    pub status: String,
    pub version: Option<String>,
    /// Where the version came from: `package NAME`, `file PATH` or `command ARGV`.
    pub version_source: Option<String>,
    pub evidence: Vec<Evidence>,
    /// At most 32 (`ports_total` counts them all).
    pub ports: Vec<AppPort>,
    pub ports_total: usize,
    /// Pids of its processes (at most 16).
    pub pids: Vec<u32>,
}

/// One process as the scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenProcess {
    pub pid: u32,
    pub comm: String,
    /// Basename of `/proc/PID/exe` (unreadable for other users' processes when not root).
    pub exe: Option<String>,
    /// Arguments, NUL-separated in `/proc`, joined here with spaces.
    pub cmdline: String,
}

/// Everything a scan reads from the host, before matching.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub processes: Vec<SeenProcess>,
    /// Listening sockets: (protocol, address, port, pid).
    pub listening: Vec<(Protocol, String, u16, Option<u32>)>,
    /// Unit file name → path.
    pub units: BTreeMap<String, String>,
    /// Installed package → version.
    pub packages: BTreeMap<String, String>,
    /// Paths of the rules that exist.
    pub paths: BTreeSet<String>,
    pub interfaces: Vec<String>,
}

/// A version command the scan wants to run for an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCommand {
    pub app: String,
    pub command: CommandSpec,
}

/// Read the local host for [`detect`] (blocking).
pub fn gather() -> Observed {
    let mut processes = Vec::new();
    for pid in local::proc_pids() {
        let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        processes.push(SeenProcess {
            pid,
            comm: comm.trim_end_matches('\n').to_string(),
            exe,
            cmdline,
        });
    }
    let sockets = local::sockets(&SocketQuery {
        state: StateFilter::Listening,
        port: None,
        protocol: None,
        limit: 100_000,
    });
    let listening = sockets
        .sockets
        .into_iter()
        .map(|s| (s.protocol, s.local_address.to_string(), s.local_port, s.pid))
        .collect();
    let mut units = BTreeMap::new();
    for dir in [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ] {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                units.entry(name).or_insert_with(|| e.path().display().to_string());
            }
        }
    }
    let packages = fs::read_to_string("/var/lib/dpkg/status")
        .map(|s| parse_dpkg_status(&s))
        .unwrap_or_default();
    let paths = RULES
        .iter()
        .flat_map(|r| r.paths.iter())
        .filter(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .collect();
    let interfaces = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    Observed {
        processes,
        listening,
        units,
        packages,
        paths,
        interfaces,
    }
}

/// The host's identity (blocking; no CPU sample).
pub fn host_identity() -> HostIdentity {
    let status = local::identity();
    let v: Virtualization = status.virtualization;
    let os: OsInfo = status.os;
    HostIdentity {
        hostname: status.hostname,
        machine_id: fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        os: OsInfoDoc {
            pretty_name: os.pretty_name,
            id: os.id,
            version: os.version,
        },
        kernel: status.kernel,
        arch: status.arch,
        virtualization: v.kind,
        container: v.container,
        container_id: v.container_id,
        hypervisor: v.hypervisor,
    }
}

/// Match the table against what was observed. Ports alone never make a finding (port 80 is
/// not evidence of nginx rather than Caddy); they are attached to apps found otherwise.
pub fn detect(rules: &[AppRule], seen: &Observed) -> Vec<DetectedApp> {
    let mut out = Vec::new();
    for r in rules {
        let mut evidence = Vec::new();
        let mut pids = Vec::new();
        for p in &seen.processes {
            let argv0 = p.cmdline.split(' ').next().unwrap_or("");
            let argv0 = argv0.rsplit('/').next().unwrap_or(argv0);
            let by_name = r
                .processes
                .iter()
                .any(|n| *n == p.comm || Some(*n) == p.exe.as_deref() || (!argv0.is_empty() && *n == argv0));
            let by_cmdline = r.cmdline.iter().any(|m| p.cmdline.contains(m));
            if by_name || by_cmdline {
                pids.push(p.pid);
            }
        }
        pids.sort_unstable();
        for pid in pids.iter().take(3) {
            let p = seen.processes.iter().find(|p| p.pid == *pid);
            let comm = p.map(|p| p.comm.as_str()).unwrap_or("?");
            evidence.push(Evidence {
                kind: EvidenceKind::Process,
                detail: format!("{comm} (pid {pid})"),
            });
        }
        for u in r.units {
            if let Some(path) = seen.units.get(*u) {
                evidence.push(Evidence {
                    kind: EvidenceKind::SystemdUnit,
                    detail: path.clone(),
                });
            }
        }
        let mut package: Option<(&str, &str)> = None;
        for pattern in r.packages {
            for (name, version) in &seen.packages {
                let hit = match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == pattern,
                };
                if hit {
                    evidence.push(Evidence {
                        kind: EvidenceKind::Package,
                        detail: format!("{name} {version}"),
                    });
                    package.get_or_insert((name.as_str(), version.as_str()));
                }
            }
        }
        for path in r.paths {
            if seen.paths.contains(*path) {
                evidence.push(Evidence {
                    kind: EvidenceKind::File,
                    detail: path.to_string(),
                });
            }
        }
        for i in &seen.interfaces {
            if r.interfaces.iter().any(|prefix| i.starts_with(prefix)) {
                evidence.push(Evidence {
                    kind: EvidenceKind::Interface,
                    detail: i.clone(),
                });
            }
        }
        if evidence.is_empty() {
            continue;
        }
        // Ports: every listener of its processes, and its default ports when nobody else
        // visibly holds them.
        let mut ports: BTreeSet<AppPort> = BTreeSet::new();
        for (protocol, address, port, pid) in &seen.listening {
            let own = pid.is_some_and(|p| pids.contains(&p));
            let default_unowned = r.ports.contains(port) && pid.is_none();
            if own || default_unowned {
                ports.insert(AppPort {
                    protocol: *protocol,
                    address: address.clone(),
                    port: *port,
                    pid: *pid,
                });
            }
        }
        let ports_total = ports.len();
        let ports: Vec<AppPort> = ports.into_iter().take(MAX_PORTS).collect();
        for p in &ports {
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let owner = p.pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
            let addr = if p.address.contains(':') {
                format!("[{}]", p.address)
            } else {
                p.address.clone()
            };
            evidence.push(Evidence {
                kind: EvidenceKind::Port,
                detail: format!("{proto} {addr}:{}{owner}", p.port),
            });
        }
        let (version, version_source) = match package {
            Some((name, v)) => (Some(upstream_version(v)), Some(format!("package {name}"))),
            None => (None, None),
        };
        out.push(DetectedApp {
            id: r.id.to_string(),
            name: r.name.to_string(),
            status: if pids.is_empty() { "installed" } else { "running" }.to_string(),
            version,
            version_source,
            evidence,
            ports,
            ports_total,
            pids: pids.into_iter().take(16).collect(),
        });
    }
    out
}

/// Versions from files (cheap, no program run) for apps that have none yet.
pub fn file_versions(rules: &[AppRule], apps: &mut [DetectedApp]) {
    for app in apps.iter_mut().filter(|a| a.version.is_none()) {
        let Some(VersionProbe::File { path, marker }) = rules.iter().find(|r| r.id == app.id).map(|r| r.version) else {
            continue;
        };
        if let Some(v) = fs::read_to_string(path)
            .ok()
            .and_then(|t| t.lines().find(|l| l.contains(marker)).and_then(first_version))
        {
            app.version = Some(v);
            app.version_source = Some(format!("file {path}"));
        }
    }
}

/// The version commands to run for apps that still have no version: the first existing binary
/// of each rule, by absolute path.
pub fn version_commands(rules: &[AppRule], apps: &[DetectedApp]) -> Vec<VersionCommand> {
    apps.iter()
        .filter(|a| a.version.is_none())
        .filter_map(|a| {
            let r = rules.iter().find(|r| r.id == a.id)?;
            let VersionProbe::Command { binaries, args } = r.version else {
                return None;
            };
            let path = binaries.iter().find_map(|b| find_binary(b))?;
            Some(VersionCommand {
                app: a.id.clone(),
                command: CommandSpec::new(path.display().to_string(), args.iter().copied()),
            })
        })
        .collect()
}

/// Run the version commands (each with [`VERSION_TIMEOUT`] and a small output cap) and fill in
/// the versions they print.
pub async fn run_version_commands(commands: &[VersionCommand], apps: &mut [DetectedApp]) {
    let limits = Limits {
        timeout: VERSION_TIMEOUT,
        max_output: 4096,
    };
    let runs = commands.iter().map(|c| super::process::run(&c.command, limits));
    let results = futures::future::join_all(runs).await;
    for (c, result) in commands.iter().zip(results) {
        let Ok(out) = result else { continue };
        let text = format!("{}\n{}", out.stdout, out.stderr);
        if let (Some(v), Some(app)) = (
            text.lines().find_map(first_version),
            apps.iter_mut().find(|a| a.id == c.app),
        ) {
            app.version = Some(v);
            app.version_source = Some(format!("command {}", command_line(&c.command)));
        }
    }
}

/// `program arg…` for display.
pub fn command_line(c: &CommandSpec) -> String {
    std::iter::once(c.program.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/var/lib/dpkg/status` → installed package → version.
pub fn parse_dpkg_status(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            out.insert(n.to_string(), v.to_string());
        }
    }
    out
}

/// `5:7.0.15-1~deb12u10` → `7.0.15`: no epoch, no Debian revision, no repack or distribution
/// suffix (`20.10.24+dfsg1` → `20.10.24`, `15+248+deb12u1` → `15`).
pub fn upstream_version(v: &str) -> String {
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    let v = v.rsplit_once('-').map_or(v, |(up, _)| up);
    let v = match v.find(['+', '~']) {
        Some(at) if at > 0 => &v[..at],
        _ => v,
    };
    v.to_string()
}

/// The first `N.N[.N…]` in `s` (an optional leading `v` dropped), e.g. `v=7.0.15` → `7.0.15`.
pub fn first_version(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'v') {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let candidate = s[start..i].trim_end_matches('.');
            if candidate.contains('.') {
                return Some(candidate.to_string());
            }
        }
        i += 1;
    }
    None
}

/// An absolute path as given, or a name found on `PATH` or in the sbin directories.
fn find_binary(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.starts_with('/') {
        return is_exec(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(name))
        .find(|p| is_exec(p))
}

/// Rule ids, for validating names that refer to known apps.
pub fn rule_ids() -> HashMap<&'static str, &'static str> {
    RULES.iter().map(|r| (r.id, r.name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Observed {
        Observed {
            processes: vec![
                SeenProcess {
                    pid: 100,
                    comm: "redis-server".into(),
                    exe: Some("redis-server".into()),
                    cmdline: "/usr/bin/redis-server 127.0.0.1:6379".into(),
                },
                SeenProcess {
                    pid: 200,
                    comm: "python3".into(),
                    exe: Some("python3.11".into()),
                    cmdline: "/srv/homeassistant/bin/python3 -m homeassistant --config /x".into(),
                },
                SeenProcess {
                    pid: 300,
                    comm: "ollama".into(),
                    exe: None,
                    cmdline: "/tmp/x/ollama serve".into(),
                },
            ],
            listening: vec![
                (Protocol::Tcp, "127.0.0.1".into(), 6379, Some(100)),
                (Protocol::Tcp, "0.0.0.0".into(), 8123, Some(200)),
                (Protocol::Tcp, "0.0.0.0".into(), 80, Some(999)),
                (Protocol::Udp, "0.0.0.0".into(), 51820, None),
                (Protocol::Tcp, "::".into(), 11434, Some(300)),
            ],
            units: [(
                "redis-server.service".to_string(),
                "/lib/systemd/system/redis-server.service".to_string(),
            )]
            .into(),
            packages: [
                ("redis-server".to_string(), "5:7.0.15-1~deb12u10".to_string()),
                ("wireguard-tools".to_string(), "1.0.20210914-1+b1".to_string()),
            ]
            .into(),
            paths: ["/etc/redis".to_string()].into(),
            interfaces: vec!["lo".into(), "wg0".into()],
        }
    }

    #[test]
    fn the_table_finds_apps_by_their_evidence() {
        let apps = detect(RULES, &seen());
        let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["ollama", "redis", "homeassistant", "wireguard"]);
        let redis = &apps[1];
        assert_eq!(redis.status, "running");
        assert_eq!(redis.version.as_deref(), Some("7.0.15"));
        assert_eq!(redis.version_source.as_deref(), Some("package redis-server"));
        let kinds: BTreeSet<EvidenceKind> = redis.evidence.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EvidenceKind::Process,
                EvidenceKind::Port,
                EvidenceKind::SystemdUnit,
                EvidenceKind::Package,
                EvidenceKind::File
            ]
            .into()
        );
        assert_eq!(redis.ports[0].port, 6379);
        assert_eq!(redis.pids, [100]);
        let ha = &apps[2];
        assert_eq!((ha.pids.as_slice(), ha.ports[0].port), ([200].as_slice(), 8123));
        let wg = &apps[3];
        assert_eq!(wg.status, "installed");
        assert!(
            wg.evidence
                .iter()
                .any(|e| e.kind == EvidenceKind::Interface && e.detail == "wg0")
        );
        assert_eq!(wg.ports[0].port, 51820, "an unowned default port attaches");
        assert_eq!(apps[0].ports[0].address, "::");
        // Port 80 held by an unknown process makes no nginx, Apache, Caddy or Traefik.
        assert!(!ids.contains(&"nginx"));
    }

    #[test]
    fn versions_from_text() {
        for (text, want) in [
            (
                "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0",
                Some("7.0.15"),
            ),
            ("nginx version: nginx/1.22.1", Some("1.22.1")),
            ("ollama version is 0.1.32", Some("0.1.32")),
            ("Docker version 20.10.24+dfsg1, build 297e128", Some("20.10.24")),
            (
                "wireguard-tools v1.0.20210914 - https://git.zx2c4.com/wireguard-tools/",
                Some("1.0.20210914"),
            ),
            ("$OC_VersionString = '27.1.3';", Some("27.1.3")),
            ("sha256 x86_64 no version here 42", None),
        ] {
            assert_eq!(first_version(text).as_deref(), want, "{text}");
        }
        assert_eq!(upstream_version("5:7.0.15-1~deb12u10"), "7.0.15");
        assert_eq!(upstream_version("1.22.1-9"), "1.22.1");
        assert_eq!(upstream_version("2.4"), "2.4");
        assert_eq!(upstream_version("20.10.24+dfsg1-1+deb12u1"), "20.10.24");
        assert_eq!(upstream_version("15+248+deb12u1"), "15");
        assert_eq!(upstream_version("1.0~rc1-2"), "1.0");
    }

    #[tokio::test]
    async fn version_commands_run_by_absolute_path_with_a_timeout() {
        let rules = [AppRule {
            processes: &["x"],
            version: cmd(&["sh"], &["-c", "echo tool v9.8.7"]),
            ..rule("x", "X")
        }];
        let seen = Observed {
            processes: vec![SeenProcess {
                pid: 5,
                comm: "x".into(),
                exe: None,
                cmdline: "x".into(),
            }],
            ..Observed::default()
        };
        let mut apps = detect(&rules, &seen);
        file_versions(&rules, &mut apps);
        let commands = version_commands(&rules, &apps);
        assert_eq!(commands.len(), 1);
        assert!(commands[0].command.program.starts_with('/'), "{:?}", commands[0]);
        assert!(commands[0].command.program.ends_with("/sh"));
        run_version_commands(&commands, &mut apps).await;
        assert_eq!(apps[0].version.as_deref(), Some("9.8.7"));
        assert!(apps[0].version_source.as_deref().unwrap().starts_with("command /"));

        // A hanging binary is killed at the timeout and leaves the version unknown.
        apps[0].version = None;
        let hang = [VersionCommand {
            app: "x".into(),
            command: CommandSpec::new("/bin/sleep", ["30"]),
        }];
        let started = std::time::Instant::now();
        run_version_commands(&hang, &mut apps).await;
        assert!(started.elapsed() < VERSION_TIMEOUT + Duration::from_secs(2));
        assert_eq!(apps[0].version, None);
        // Apps with a version from the package database run nothing.
        apps[0].version = Some("1.0".into());
        assert!(version_commands(&rules, &apps).is_empty());
    }

    #[test]
    fn dpkg_status_keeps_installed_packages_only() {
        let p = parse_dpkg_status(
            "Package: a\nStatus: install ok installed\nVersion: 1.0-1\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nStatus: install ok installed\nVersion: 3:4.5\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p["c"], "3:4.5");
    }

    #[test]
    fn rule_ids_are_unique_and_lowercase() {
        let ids = rule_ids();
        assert_eq!(ids.len(), RULES.len());
        assert!(RULES.len() >= 22);
        for r in RULES {
            assert!(r.id.bytes().all(|b| b.is_ascii_lowercase()), "{}", r.id);
            assert!(
                !r.processes.is_empty() || !r.cmdline.is_empty() || !r.paths.is_empty(),
                "{} has something to find",
                r.id
            );
        }
    }
}
