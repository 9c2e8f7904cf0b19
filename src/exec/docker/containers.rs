//! Containers: list, inspect, start/stop/restart/pause/unpause and remove, and the conversions
//! from bollard's container models into ours. `inspect` redacts by the server-wide rules of
//! [`crate::secrets`].

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};

use super::engine::Docker;
use super::model::{
    ActionResult, ContainerDetails, ContainerState, ContainerSummary, EnvVar, Mount, Network, PortMapping, REDACTED,
    RemoveResult, RestartPolicy,
};
use super::refs::validate_ref;
use crate::exec::ExecError;

impl Docker {
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
            let raw = self.inspect_raw(client, id_or_name, id_or_name).await?;
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

    /// Removes a container; `force` kills a running one first, `volumes` also removes its
    /// anonymous volumes (named volumes are kept).
    pub async fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<RemoveResult, ExecError> {
        validate_ref(id)?;
        self.bounded(async {
            let client = self.client().await?;
            let (info, full_id, name) = self.find(client, id).await?;
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

    /// The container a caller's `id` names: the engine's view of it, its full id and its name.
    pub(super) async fn find(
        &self,
        client: &bollard::Docker,
        id: &str,
    ) -> Result<(bollard::models::ContainerInspectResponse, String, String), ExecError> {
        let info = self.inspect_raw(client, id, id).await?;
        let (full_id, name) = id_and_name(&info);
        Ok((info, full_id, name))
    }

    pub(super) fn stop_timeout(&self, timeout_secs: Option<i64>) -> Result<Option<i32>, ExecError> {
        let Some(t) = timeout_secs else { return Ok(None) };
        let limit = self.limits().timeout.as_secs();
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
            let (before, full_id, name) = self.find(client, id).await?;
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
            let after = self.inspect_raw(client, &full_id, id).await?;
            Ok(ActionResult {
                id: short_id(&full_id),
                name,
                state_before: state_status(&before),
                state_after: state_status(&after),
            })
        })
        .await
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

pub(super) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

pub(super) fn id_and_name(c: &bollard::models::ContainerInspectResponse) -> (String, String) {
    let id = c.id.clone().unwrap_or_default();
    let name = c
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    (id, name)
}

pub(super) fn state_status(c: &bollard::models::ContainerInspectResponse) -> String {
    c.state
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

pub(super) fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

pub(super) fn summary_from(c: bollard::models::ContainerSummary) -> ContainerSummary {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::exec::Limits;
    use crate::exec::docker::DockerSettings;

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
