//! The target registry: every system a tool can run against (`local` always exists), with the
//! scopes each target allows, its limits, its groups for fan-out, and its executor.
//!
//! A call needs the scope from the caller's grants *and* from the target's own `scopes`
//! ceiling. This module builds executors from validated config and resolves ids and
//! `group:NAME` references; it knows nothing about callers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::TargetConfig;
use crate::exec::{ExecError, Limits};
use crate::model::Scope;

pub use crate::model::{Kind, LOCAL};

/// How a target is reached. Only `exec` talks to the systems behind these.
pub enum Executor {
    Local,
    Docker(crate::exec::docker::Docker),
    Http(crate::exec::http::Http),
    Ssh(crate::exec::ssh::Ssh),
}

/// One configured target.
pub struct Target {
    pub id: String,
    pub kind: Kind,
    /// The most a caller may do here, whatever their grants (`None` = no ceiling).
    pub scopes: Option<Vec<Scope>>,
    pub groups: Vec<String>,
    pub limits: Limits,
    pub max_concurrent: usize,
    pub executor: Executor,
    permits: Semaphore,
    /// The result of the last [`Target::check`], if any ran.
    last_check: Mutex<Option<Checked>>,
}

/// A recorded [`Health`] and when it was taken.
#[derive(Debug, Clone)]
pub struct Checked {
    pub health: Health,
    /// Wall-clock time the check finished (for display).
    pub at: chrono::DateTime<chrono::Utc>,
    /// The same moment on the monotonic clock (for ages).
    taken: Instant,
}

impl Checked {
    /// How long ago the check finished.
    pub fn age(&self) -> Duration {
        self.taken.elapsed()
    }
}

impl Target {
    /// Whether this target permits `needed` at all.
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|s| s.iter().any(|have| have.covers(needed)))
    }

    /// The one place a caller's grants and this target's ceiling meet: `requires` must be
    /// granted on this target *and* be within what the target allows.
    pub fn authorize(
        &self,
        effective: &crate::policy::Effective,
        requires: crate::model::Requirement,
    ) -> crate::policy::Decision {
        use crate::model::Requirement;
        let decision = crate::policy::authorize(effective, requires, &self.id);
        match requires {
            Requirement::Scope(needed) | Requirement::Across(needed) if decision.allowed && !self.allows(needed) => {
                crate::policy::Decision {
                    allowed: false,
                    reason: format!("target `{}` does not allow {needed}", self.id),
                    grants: Vec::new(),
                }
            }
            _ => decision,
        }
    }

    /// Operation slots free now (tests and diagnostics).
    pub fn permits_available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Wait (up to the target's timeout) for one of its `max_concurrent` operation slots.
    pub async fn permit(&self) -> Result<SemaphorePermit<'_>, ExecError> {
        match tokio::time::timeout(self.limits.timeout, self.permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ExecError::Refused(format!(
                "target `{}` is busy ({} operations in flight)",
                self.id, self.max_concurrent
            ))),
        }
    }

    /// The built-in target for this host.
    pub fn local() -> Target {
        Target {
            id: LOCAL.to_string(),
            kind: Kind::Local,
            scopes: None,
            groups: Vec::new(),
            limits: Limits::default(),
            max_concurrent: 16,
            executor: Executor::Local,
            permits: Semaphore::new(16),
            last_check: Mutex::new(None),
        }
    }

    /// The last check's result and time, if a check ran (runs nothing).
    pub fn last_check(&self) -> Option<Checked> {
        self.last_check.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The result of checking a target's connectivity and credentials.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Health {
    pub target: String,
    #[schemars(with = "String")]
    pub kind: Kind,
    pub ok: bool,
    /// What was checked and what it found (never a secret).
    pub detail: String,
    pub latency_ms: f64,
}

impl Target {
    /// Connect, authenticate and do the cheapest real operation, within the target's timeout;
    /// the result is recorded (see [`Target::last_check`]).
    pub async fn check(&self) -> Health {
        let started = Instant::now();
        // Each executor bounds its own steps; this bounds the whole, waits for an executor's
        // shared connection included (an SSH check waits for the connection slot).
        let result = match tokio::time::timeout(self.limits.timeout, self.probe()).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(self.limits.timeout)),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        let health = Health {
            target: self.id.clone(),
            kind: self.kind,
            ok,
            detail,
            latency_ms,
        };
        let checked = Checked {
            health: health.clone(),
            at: chrono::Utc::now(),
            taken: Instant::now(),
        };
        *self.last_check.lock().unwrap_or_else(PoisonError::into_inner) = Some(checked);
        health
    }

    /// What [`Target::check`] reports, unbounded and unrecorded.
    async fn probe(&self) -> Result<String, ExecError> {
        match &self.executor {
            Executor::Local => Ok("this host".to_string()),
            Executor::Docker(d) => d.version().await.map(|v| {
                format!(
                    "Docker {} (API {}) at {}",
                    v.version.unwrap_or_else(|| "?".into()),
                    v.negotiated_api_version,
                    v.endpoint
                )
            }),
            Executor::Ssh(ssh) => ssh.check().await.map(|c| {
                format!(
                    "{} as the configured user, host key {}",
                    c.server_version, c.host_key_fingerprint
                )
            }),
            Executor::Http(h) => h.check().await.and_then(|c| {
                let tls = match c.tls {
                    crate::exec::http::TlsState::None => "plain http",
                    crate::exec::http::TlsState::Verified => "TLS verified",
                    crate::exec::http::TlsState::Unverified => "TLS NOT verified",
                };
                if (200..400).contains(&c.status) {
                    Ok(format!("HTTP {} from {} ({tls})", c.status, c.url))
                } else {
                    Err(ExecError::Failed(format!("HTTP {} from {} ({tls})", c.status, c.url)))
                }
            }),
        }
    }
}

/// Every target the server knows, `local` first.
pub struct Registry {
    targets: Vec<Arc<Target>>,
}

/// Why a target could not be built or found.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{id}`: {source}")]
    Build { id: String, source: ExecError },
    #[error("target `{id}`: [target.{kind}]: {message}")]
    Settings {
        id: String,
        kind: &'static str,
        message: String,
    },
    #[error("unknown target `{0}`")]
    Unknown(String),
    #[error("unknown target group `{0}`")]
    UnknownGroup(String),
}

impl Registry {
    /// Build executors for the configured targets (adding `local` unless configured).
    pub fn build(configs: &[TargetConfig]) -> Result<Registry, TargetError> {
        let mut targets = Vec::new();
        if !configs.iter().any(|c| c.id == LOCAL) {
            targets.push(Arc::new(Target::local()));
        }
        for c in configs {
            let limits = Limits {
                timeout: c.timeout,
                max_output: c.max_output,
            };
            let build = |source: ExecError| TargetError::Build {
                id: c.id.clone(),
                source,
            };
            let executor = match c.kind {
                Kind::Local => Executor::Local,
                Kind::Docker => Executor::Docker(
                    crate::exec::docker::Docker::new(&c.id, settings(c, "docker")?, limits).map_err(build)?,
                ),
                Kind::Http => {
                    Executor::Http(crate::exec::http::Http::new(&c.id, settings(c, "http")?, limits).map_err(build)?)
                }
                Kind::Ssh => Executor::Ssh(
                    crate::exec::ssh::Ssh::new(&c.id, settings(c, "ssh")?, limits, c.max_concurrent).map_err(build)?,
                ),
            };
            targets.push(Arc::new(Target {
                id: c.id.clone(),
                kind: c.kind,
                scopes: c.scopes.clone(),
                groups: c.groups.clone(),
                limits,
                max_concurrent: c.max_concurrent,
                executor,
                permits: Semaphore::new(c.max_concurrent),
                last_check: Mutex::new(None),
            }));
        }
        Ok(Registry { targets })
    }

    /// Only the built-in `local` target.
    pub fn local_only() -> Registry {
        Registry {
            targets: vec![Arc::new(Target::local())],
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.id == id)
    }

    pub fn all(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// Resolve ids and `group:NAME` references, in order, without duplicates.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Arc<Target>>, TargetError> {
        let mut out: Vec<Arc<Target>> = Vec::new();
        let mut push = |t: &Arc<Target>| {
            if !out.iter().any(|o| o.id == t.id) {
                out.push(t.clone());
            }
        };
        for name in names {
            if let Some(group) = name.strip_prefix("group:") {
                let members: Vec<&Arc<Target>> = self
                    .targets
                    .iter()
                    .filter(|t| t.groups.iter().any(|g| g == group))
                    .collect();
                if members.is_empty() {
                    return Err(TargetError::UnknownGroup(quoted_name(group)));
                }
                members.into_iter().for_each(&mut push);
            } else {
                push(self.get(name).ok_or_else(|| TargetError::Unknown(quoted_name(name)))?);
            }
        }
        Ok(out)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.id.as_str()).collect()
    }
}

/// The most bytes of a caller's unknown target or group name an error quotes: a 1 MiB
/// `target` must not come back (and go to the audit log) as a 1 MiB error.
const QUOTED_NAME_MAX_BYTES: usize = 128;

fn quoted_name(name: &str) -> String {
    crate::text::cap(name, QUOTED_NAME_MAX_BYTES)
}

/// The kind-specific table of a target, as that executor's typed settings.
fn settings<T: serde::de::DeserializeOwned>(c: &TargetConfig, kind: &'static str) -> Result<T, TargetError> {
    let table = c.settings.clone().unwrap_or_default();
    toml::Value::Table(table)
        .try_into::<T>()
        .map_err(|e| TargetError::Settings {
            id: c.id.clone(),
            kind,
            message: e.to_string().trim().replace('\n', " "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use std::path::Path;

    fn registry(toml: &str) -> Registry {
        let c = Config::from_toml(toml, Path::new("t.toml"), &Overrides::default()).unwrap();
        Registry::build(&c.targets).unwrap()
    }

    #[test]
    fn local_always_exists_and_groups_resolve() {
        let r = registry(
            "[[target]]\nid = \"a\"\nkind = \"local\"\ngroups = [\"lab\"]\n[[target]]\nid = \"b\"\nkind = \"local\"\ngroups = [\"lab\", \"x\"]\n",
        );
        assert_eq!(r.ids(), vec!["local", "a", "b"]);
        let ids = |names: &[&str]| {
            r.resolve(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map(|v| v.iter().map(|t| t.id.clone()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        assert_eq!(ids(&["group:lab"]).unwrap(), vec!["a", "b"]);
        assert_eq!(ids(&["b", "group:lab", "local"]).unwrap(), vec!["b", "a", "local"]);
        assert_eq!(ids(&["nope"]).unwrap_err(), "unknown target `nope`");
        assert_eq!(ids(&["group:none"]).unwrap_err(), "unknown target group `none`");
        let huge = "x".repeat(1 << 20);
        for name in [huge.clone(), format!("group:{huge}")] {
            let err = ids(&[name.as_str()]).unwrap_err();
            assert!(err.chars().count() < 200, "{} chars", err.chars().count());
            assert!(
                err.ends_with("…[truncated, 1048576 bytes]`"),
                "{}",
                &err[err.len() - 40..]
            );
        }
    }

    #[test]
    fn kind_settings_are_parsed_with_errors_naming_the_table() {
        let c = Config::from_toml(
            "[[target]]\nid = \"d\"\nkind = \"docker\"\n[target.docker]\nendpont = \"unix:///x\"\n",
            Path::new("t.toml"),
            &Overrides::default(),
        )
        .unwrap();
        let err = Registry::build(&c.targets).err().unwrap().to_string();
        assert!(
            err.starts_with("target `d`: [target.docker]: unknown field `endpont`"),
            "{err}"
        );
        let ok = registry(
            "[[target]]\nid = \"d\"\nkind = \"docker\"\n[target.docker]\nendpoint = \"unix:///run/none.sock\"\n[[target]]\nid = \"h\"\nkind = \"http\"\n[target.http]\nbase_url = \"http://127.0.0.1:9/api\"\n",
        );
        assert_eq!(ok.get("d").unwrap().kind, Kind::Docker);
        assert_eq!(ok.get("h").unwrap().kind, Kind::Http);
    }

    #[tokio::test]
    async fn checks_report_unreachable_targets_clearly() {
        let r = registry(
            "[[target]]\nid = \"d\"\nkind = \"docker\"\ntimeout_secs = 2\n[target.docker]\nendpoint = \"unix:///run/tailopsmcp-test-no-such.sock\"\n",
        );
        assert!(r.get("d").unwrap().last_check().is_none());
        let h = r.get("d").unwrap().check().await;
        assert!(!h.ok);
        assert!(h.detail.contains("unreachable"), "{}", h.detail);
        let recorded = r.get("d").unwrap().last_check().expect("recorded");
        assert_eq!(recorded.health.detail, h.detail);
        assert!(recorded.age() < Duration::from_secs(2));
        assert!(r.get("local").unwrap().check().await.ok);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["kind"], "docker", "the kind is its name");
        assert_eq!(format!("{:<7}|", h.kind), "docker |");
    }

    #[test]
    fn a_target_ceiling_limits_scopes() {
        let r = registry("[[target]]\nid = \"ro\"\nkind = \"local\"\nscopes = [\"monitor\"]\n");
        let ro = r.get("ro").unwrap();
        assert!(ro.allows("system:read".parse().unwrap()));
        assert!(!ro.allows("system:control".parse().unwrap()));
        assert!(r.get("local").unwrap().allows("system:admin".parse().unwrap()));
    }
}
