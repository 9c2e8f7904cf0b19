//! Everything that reaches a system: typed operations that read or change a host, returning
//! plain serde + schemars values.
//!
//! Executors: [`local`] (this host: sysinfo, `/proc`, `/sys`), [`process`] (local programs by
//! argument vector, timeouts that kill the process group, capped output), [`docker`] (the only
//! bollard user), [`compose`] (compose stacks through the `docker compose`/`docker-compose` and
//! `git` CLIs), [`http`] (the only reqwest user; [`proxmox`] speaks the Proxmox VE API through it), `ssh` (the only russh user), [`net`] (network diagnostics), [`fs`] (files
//! beneath configured roots through `openat2`, the only opener of caller-given paths) and
//! [`journal`] (`journalctl -o json`). Tools call into `exec`; `exec` knows nothing
//! about callers, MCP, policy or audit, and never decides whether a caller may do something
//! (it does enforce a target's own constraints: timeouts, output caps, allowed paths).
//! Blocking functions say so; async callers run them inside `tokio::task::spawn_blocking`.

pub mod compose;
pub mod docker;
pub mod fs;
pub mod helper;
pub mod http;
pub mod inventory;
pub mod journal;
pub mod local;
pub mod net;
pub mod packages;
pub mod process;
pub mod procfs;
pub mod proxmox;
pub mod remote;
mod show;
pub mod ssh;
pub mod systemd;

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

/// A command as an argument vector: never a shell string. `program` is looked up on `PATH`
/// (locally) or passed to the remote side quoted (SSH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandSpec {
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// Where a long operation reports its steps (`step`, `total`, message), e.g. as MCP progress
/// notifications; `exec` only calls it and never learns where it goes.
pub type ProgressFn = std::sync::Arc<dyn Fn(u32, u32, String) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Limits a target puts on every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole operation, including connecting.
    pub timeout: Duration,
    /// Bytes of output kept per stream; the rest is counted and dropped.
    pub max_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            max_output: 256 * 1024,
        }
    }
}

/// What a finished command produced. Output beyond the cap is cut, and the result says how much.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Exit status; `None` when killed by a signal or the timeout.
    pub status: Option<i32>,
    /// Bytes of stdout + stderr dropped by the output cap.
    pub truncated_bytes: u64,
    pub timed_out: bool,
    pub duration_ms: f64,
}

/// Names of environment variables that hold secrets (a target's `token_env`): removed from
/// the environment of every program this server starts, so that, say, `docker compose` cannot
/// substitute `${VAR}` from a compose file into a container.
static SECRET_ENV: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Keep the variable `name` (a secret) out of child processes' environments.
pub fn hide_env_from_children(name: &str) {
    let mut names = lock(&SECRET_ENV);
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// The variables [`hide_env_from_children`] was given.
pub(crate) fn env_hidden_from_children() -> Vec<String> {
    lock(&SECRET_ENV).clone()
}

/// A poisoned lock only means another call panicked while holding it; the data is still usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a secret (key, token) comes from. Secrets are read when needed and never logged,
/// audited or returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file; a relative path is resolved in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    File(PathBuf),
    /// An environment variable's name.
    Env(String),
}

impl Secret {
    /// Read the secret's bytes (trailing newline removed).
    pub fn read(&self) -> Result<Vec<u8>, ExecError> {
        let mut bytes = match self {
            Secret::File(path) => {
                let path = if path.is_relative() {
                    match std::env::var_os("CREDENTIALS_DIRECTORY") {
                        Some(dir) => PathBuf::from(dir).join(path),
                        None => path.clone(),
                    }
                } else {
                    path.clone()
                };
                std::fs::read(&path)
                    .map_err(|e| ExecError::Config(format!("cannot read secret file {}: {e}", path.display())))?
            }
            Secret::Env(name) => std::env::var(name)
                .map_err(|_| ExecError::Config(format!("secret environment variable {name} is not set")))?
                .into_bytes(),
        };
        while bytes.last() == Some(&b'\n') || bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Ok(bytes)
    }
}

/// Why an operation on a target failed. Messages are safe to show the caller: they never carry
/// secrets.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The target could not be reached (connect refused, DNS, no route).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Credentials were refused or missing.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The remote host's key is unknown or changed (SSH), or its certificate did not verify (TLS).
    #[error("host verification failed: {0}")]
    HostVerification(String),
    /// The operation took longer than the target's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The target's own constraints forbid it (method, path prefix, sudo policy, concurrency).
    #[error("refused by the target's constraints: {0}")]
    Refused(String),
    /// The target's configuration is unusable (missing key file, bad URL).
    #[error("target configuration: {0}")]
    Config(String),
    /// The operation ran and failed.
    #[error("{0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_files_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        assert_eq!(Secret::File(path).read().unwrap(), b"s3cr3t");
        let missing = Secret::File(dir.path().join("nope")).read().unwrap_err().to_string();
        assert!(missing.contains("cannot read secret file"), "{missing}");
        let err = Secret::Env("TAILOPSMCP_TEST_UNSET_VAR".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains("TAILOPSMCP_TEST_UNSET_VAR is not set"), "{err}");
    }
}
