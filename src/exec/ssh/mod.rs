//! The SSH executor: runs argument vectors on a remote host over one reused SSH connection per
//! target. This is the only module that uses `russh`; nothing else in the crate touches it.
//!
//! - **Host keys** are verified against an OpenSSH `known_hosts` file (`[host]:port` entries,
//!   hashed entries) and/or a pinned `SHA256:` fingerprint before anything else happens. An
//!   unknown key and a changed key are refused with different messages (the changed one names
//!   both fingerprints); a key listed on an `@revoked` line is refused whatever its host pattern.
//!   Plain lines are read as OpenSSH reads them (fields split on spaces or tabs, host names
//!   matched case-insensitively, `*`/`?` wildcards and `!` negation); hashed names are matched by
//!   russh's reader, which needs single spaces between fields (as ssh writes them).
//!   `@cert-authority` lines never match (host certificates are not supported). "Changed" means
//!   the host has entries and none holds the presented key, whatever their key types (the
//!   recorded types are asked for first). Trust on first use happens only when a target sets
//!   `trust_on_first_use = true` and the file has no entry at all for the host; the key is then
//!   appended to its `known_hosts` (flushed to disk before it counts) and logged.
//! - **Credentials**: an OpenSSH private key file (re-read on every connect; a relative path is
//!   resolved in `$CREDENTIALS_DIRECTORY`) and/or the ssh-agent at `$SSH_AUTH_SOCK`. Key bytes
//!   and passphrases never appear in errors, logs or outputs.
//! - **Commands** are built from a [`CommandSpec`] with every word single-quoted for a POSIX
//!   shell (the remote login shell must be sh-compatible: sh, dash, bash, zsh, ksh), so spaces,
//!   quotes, `$(...)` and `;` arrive literally. `sudo -n` is added only for programs on the
//!   target's allow-list.
//! - **Persistent shells**: a command runs in an idle `/bin/sh` kept on a session channel of the
//!   connection (the login shell `exec`s it), written to its stdin as
//!   `{ COMMAND\n} </dev/null; printf 'END:%d\n' "$?"; printf 'END\n' >&2` with `END` carrying a
//!   fresh random nonce, and read until both end lines arrived. That saves what a new channel
//!   costs the server on every call (a fork of sshd's session process and a login shell start:
//!   about 4 ms of CPU, against 0.05 ms in a shell). Stdin is `/dev/null`, so a command cannot
//!   read the script that follows. Shell builtins that would change or end the shell itself (`cd`,
//!   `export`, `exit`, `set`, `trap`, ...: [`SHELL_STATEFUL`]) get a channel of their own instead.
//!   A shell is used by one call at a time, parked again after a clean finish and discarded after
//!   a timeout or error; an idle shell that printed, ended, or whose connection is gone is never
//!   reused. Exit statuses are the shell's `$?` (a signal is 128+N).
//! - **Limits**: at most `max_concurrent` calls at once, and idle shells plus calls in flight
//!   never hold more than `max_concurrent` channels (they multiplex on the one connection; keep it
//!   at or below the server's `MaxSessions`, 10 by default); the whole operation (queueing,
//!   connecting, running) is bounded by [`Limits::timeout`]; output is capped per stream like the
//!   local process executor's: a cut stream ends with `\n[… N bytes cut]` and `truncated_bytes`
//!   counts the cut bytes of both.
//! - **Timeouts kill**: a shell reports its pid when it starts; sshd makes each session's shell a
//!   process-group leader, so that pid names the group of the shell and everything it started.
//!   On a channel of its own (a state-changing builtin, `check`) a command runs as
//!   `echo MARKER$$ >&2; COMMAND` (the marker line is taken out of stderr). On timeout the
//!   channel gets a `signal KILL` request (sshd `killpg`s, but only for non-root logins), is
//!   closed, and `kill -s KILL -- -PGID` (which works for root too) runs before the call returns:
//!   in an idle persistent shell when there is one, else on a new channel after closing an idle
//!   shell, else on a connection of its own. (sshd keeps a closed session's `MaxSessions` slot
//!   while its process runs, so the timed-out command still holds one.) Known gap: with `sudo`
//!   under a non-root login the sudo'ed process is root's and survives a KILL of its group.
//! - A dropped connection is noticed on the next call (also before russh has read the server's
//!   FIN or RST: a duplicate of the socket is polled) and re-established once, transparently,
//!   when the failure happened before the command was sent. A command already sent is never
//!   retried: it may have run.
//!
//! It knows nothing about callers, policy or audit.
//!
//! Here: the settings, [`Ssh`] and its connection pool, shells and kills. `known_hosts` decides
//! on host keys (and is the russh client handler); `channel` runs one command on a channel or in
//! a persistent shell and collects its capped output (it uses `known_hosts`' handler type).

mod channel;
mod known_hosts;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::timeout_at;

use self::channel::{
    Connection, OpenError, Raw, SHELL_START, SHELL_STATEFUL, Shell, collect, open_on, shell_collect, shell_script, wrap,
};
use self::known_hosts::{
    Client, Handshake, Recorded, Verifier, handshake_error, host_key_order, known_hosts_name, recorded_keys,
    ssh_failed, valid_sha256_pin,
};
use crate::exec::{CommandSpec, ExecError, Limits, Output, Secret, lock};

/// How an `ssh` target is reached and trusted (embedded in the config's `[[target]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// Private key (OpenSSH format, unencrypted); a relative path is resolved in
    /// `$CREDENTIALS_DIRECTORY`.
    pub key_file: Option<PathBuf>,
    /// Authenticate with the keys of the ssh-agent at `$SSH_AUTH_SOCK`.
    #[serde(default)]
    pub agent: bool,
    /// OpenSSH known_hosts file (`[host]:port` entries and hashed entries supported).
    pub known_hosts: Option<PathBuf>,
    /// `SHA256:...` pin of the host key, an alternative to `known_hosts`.
    pub host_key_fingerprint: Option<String>,
    /// Only when explicitly set: accept the host key once and append it to `known_hosts` (which
    /// must be set) when that file has no entry at all for the host. A key that differs from the
    /// recorded ones (of any key type) is refused regardless.
    #[serde(default)]
    pub trust_on_first_use: bool,
    /// Which programs may run under `sudo -n`.
    #[serde(default)]
    pub sudo: SudoPolicy,
}

/// Which programs may run under `sudo -n`: `sudo = "none"` (the default) or
/// `sudo = { allow = ["systemctl", "journalctl"] }` (exact program names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SudoPolicy {
    #[default]
    None,
    Allow(Vec<String>),
}

/// The result of [`Ssh::check`].
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SshCheck {
    /// `SHA256:...` of the key the server presented (and that was accepted).
    pub host_key_fingerprint: String,
    /// The server's identification string, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`.
    pub server_version: String,
    /// TCP connect + key exchange + authentication.
    pub connect_ms: f64,
    /// One `true` round trip on the fresh connection.
    pub latency_ms: f64,
}

/// An SSH target: one reused connection, re-established when dropped. Cheap to clone (shared).
#[derive(Clone)]
pub struct Ssh {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssh")
            .field("target", &self.inner.target_id)
            .field("destination", &self.inner.dest)
            .finish()
    }
}

impl Ssh {
    /// Validates the settings (a key file or the agent; `known_hosts` or a fingerprint pin, and
    /// `known_hosts` when trusting on first use). Does no IO: nothing is read or connected until
    /// the first operation.
    pub fn new(
        target_id: &str,
        settings: SshSettings,
        limits: Limits,
        max_concurrent: usize,
    ) -> Result<Ssh, ExecError> {
        let bad = |what: String| Err(ExecError::Config(format!("ssh target {target_id}: {what}")));
        if settings.host.trim().is_empty() {
            return bad("host is empty".into());
        }
        if settings.user.trim().is_empty() {
            return bad("user is empty".into());
        }
        if settings.port == 0 {
            return bad("port 0 is not a port".into());
        }
        if settings.key_file.is_none() && !settings.agent {
            return bad("no credentials: set key_file or agent = true".into());
        }
        if settings.known_hosts.is_none() && settings.host_key_fingerprint.is_none() {
            return bad("no host key to verify against: set known_hosts or host_key_fingerprint".into());
        }
        if settings.trust_on_first_use && settings.known_hosts.is_none() {
            return bad("trust_on_first_use needs a known_hosts file to record the key in".into());
        }
        if let Some(pin) = &settings.host_key_fingerprint
            && !valid_sha256_pin(pin)
        {
            return bad(format!(
                "host_key_fingerprint {pin:?} is not of the form SHA256:<43 base64 characters>"
            ));
        }
        if let SudoPolicy::Allow(programs) = &settings.sudo
            && let Some(p) = programs
                .iter()
                .find(|p| p.is_empty() || p.chars().any(char::is_whitespace))
        {
            return bad(format!("sudo allow-list entry {p:?} is not a program name"));
        }
        if max_concurrent == 0 {
            return bad("max_concurrent must be at least 1".into());
        }
        if limits.timeout.is_zero() {
            return bad("timeout must be positive".into());
        }
        let dest = known_hosts_name(&settings.host, settings.port);
        Ok(Ssh {
            inner: Arc::new(Inner {
                target_id: target_id.to_string(),
                dest,
                settings,
                limits,
                permits: Semaphore::new(max_concurrent),
                max_concurrent,
                conn: Mutex::new(None),
                opened: AtomicU64::new(0),
                shells: StdMutex::new(Vec::new()),
                shells_started: AtomicU64::new(0),
            }),
        })
    }

    /// Runs `cmd` (every word quoted), under `sudo -n` when `sudo` is set and the program is on
    /// the target's allow-list (otherwise [`ExecError::Refused`], before anything is sent). A
    /// command still running at the timeout has its process group killed and returns
    /// `Output { timed_out: true, status: None, .. }` with the output so far.
    pub async fn run(&self, cmd: &CommandSpec, sudo: bool) -> Result<Output, ExecError> {
        let started = Instant::now();
        let line = self.command_line(cmd, sudo)?;
        let raw = self
            .exec(&cmd.program, &line, self.inner.limits.max_output, started)
            .await?;
        let (stdout, cut_out) = raw.stdout.into_text();
        let (stderr, cut_err) = raw.stderr.into_text();
        Ok(Output {
            stdout,
            stderr,
            status: raw.status,
            truncated_bytes: cut_out + cut_err,
            timed_out: raw.timed_out,
            duration_ms: millis(started.elapsed()),
        })
    }

    /// Reads up to `max` bytes of the remote file `path`; returns them and the file's total size.
    /// Binary-safe. A missing or unreadable file is [`ExecError::Failed`] with the remote error.
    pub async fn read_file(&self, path: &str, max: usize) -> Result<(Vec<u8>, u64), ExecError> {
        let started = Instant::now();
        // A fixed template; the path and the cap are positional parameters, quoted like any word.
        // Redirections keep a path starting with `-` from being read as an option.
        let template = CommandSpec::new(
            "sh",
            [
                "-c",
                r#"wc -c <"$1" && head -c "$2" <"$1""#,
                "sh",
                path,
                &max.to_string(),
            ],
        );
        let line = self.command_line(&template, false)?;
        // The size line is at most 21 bytes; anything beyond the file's cap is dropped.
        let raw = self
            .exec(&template.program, &line, max.saturating_add(32), started)
            .await?;
        if raw.timed_out {
            return Err(ExecError::Timeout(self.inner.limits.timeout));
        }
        if raw.status != Some(0) {
            let err = String::from_utf8_lossy(&raw.stderr.kept).trim().to_string();
            return Err(ExecError::Failed(format!("cannot read {path}: {err}")));
        }
        let out = raw.stdout.kept;
        let newline = out
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| ExecError::Failed(format!("cannot read {path}: no size from wc")))?;
        let size = std::str::from_utf8(&out[..newline])
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ExecError::Failed(format!("cannot read {path}: unexpected wc output")))?;
        let mut content = out[newline + 1..].to_vec();
        content.truncate(max);
        Ok((content, size))
    }

    /// Opens a fresh connection (host key verified and authentication done now, not from a
    /// cached connection), runs `true` on it, and keeps it as the target's connection.
    pub async fn check(&self) -> Result<SshCheck, ExecError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.inner.limits.timeout);
        let conn = {
            let mut slot = self.inner.conn.lock().await;
            let conn = Arc::new(self.inner.connect(deadline).await?);
            *slot = Some(conn.clone());
            conn
        };
        let connect_ms = millis(started.elapsed());
        let t = Instant::now();
        let _permit = self.inner.permit(deadline).await?;
        let channel = open_on(&conn, deadline, self.inner.limits.timeout)
            .await
            .map_err(|e| e.into_error(&self.inner.dest))?;
        let raw = collect(channel, wrap("true"), 64, deadline).await?;
        if raw.timed_out {
            return Err(ExecError::Timeout(self.inner.limits.timeout));
        }
        if raw.status != Some(0) {
            return Err(ExecError::Failed(format!(
                "`true` exited with {:?} on {}",
                raw.status, self.inner.dest
            )));
        }
        Ok(SshCheck {
            host_key_fingerprint: conn.host_key_fingerprint.clone(),
            server_version: conn.server_version.clone(),
            connect_ms,
            latency_ms: millis(t.elapsed()),
        })
    }

    /// How many SSH connections this target has opened (for tests and diagnostics).
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// The remote command line for `cmd`: every word quoted, `sudo -n --` in front if allowed.
    fn command_line(&self, cmd: &CommandSpec, sudo: bool) -> Result<String, ExecError> {
        let mut words: Vec<&str> = Vec::with_capacity(cmd.args.len() + 4);
        if sudo {
            match &self.inner.settings.sudo {
                SudoPolicy::None => {
                    return Err(ExecError::Refused(format!(
                        "sudo is not allowed on target {} (sudo = \"none\")",
                        self.inner.target_id
                    )));
                }
                SudoPolicy::Allow(programs) if !programs.contains(&cmd.program) => {
                    return Err(ExecError::Refused(format!(
                        "`{}` is not on the sudo allow-list of target {}",
                        cmd.program, self.inner.target_id
                    )));
                }
                SudoPolicy::Allow(_) => words.extend(["sudo", "-n", "--"]),
            }
        }
        words.push(&cmd.program);
        words.extend(cmd.args.iter().map(String::as_str));
        quote_command(&words)
    }

    /// How many remote shells this target has started (for tests and diagnostics).
    pub fn shells_started(&self) -> u64 {
        self.inner.shells_started.load(Ordering::Relaxed)
    }

    /// Queue for a permit, run `line` (whose program is `program`) in one of the target's
    /// persistent shells, or on a channel of its own when `program` could change a shell's state;
    /// on timeout, make sure the remote process group is gone before returning.
    async fn exec(&self, program: &str, line: &str, cap: usize, started: Instant) -> Result<Raw, ExecError> {
        let deadline = tokio::time::Instant::from_std(started + self.inner.limits.timeout);
        let _permit = self.inner.permit(deadline).await?;
        if SHELL_STATEFUL.contains(&program) {
            self.inner.make_room(0).await;
            let (_, channel) = self.inner.open_channel(deadline).await?;
            let raw = collect(channel, wrap(line), cap, deadline).await?;
            if raw.timed_out
                && let Some(pgid) = raw.pgid
            {
                self.inner.kill_group(pgid).await;
            }
            return Ok(raw);
        }
        self.inner.run_in_shell(line, cap, deadline).await
    }
}

fn default_port() -> u16 {
    22
}

struct Inner {
    target_id: String,
    /// `host` or `[host]:port`, as in known_hosts.
    dest: String,
    settings: SshSettings,
    limits: Limits,
    permits: Semaphore,
    max_concurrent: usize,
    conn: Mutex<Option<Arc<Connection>>>,
    opened: AtomicU64,
    /// Idle persistent shells, ready for the next command.
    shells: StdMutex<Vec<Shell>>,
    shells_started: AtomicU64,
}

impl Inner {
    async fn permit(&self, deadline: tokio::time::Instant) -> Result<tokio::sync::SemaphorePermit<'_>, ExecError> {
        match timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ExecError::Failed("the target is shutting down".into())),
            Err(_) => Err(ExecError::Timeout(self.limits.timeout)),
        }
    }

    /// The live connection, connecting if there is none or it was dropped.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<Arc<Connection>, ExecError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.alive()
        {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(self.connect(deadline).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forget `conn` if it is still the current connection.
    async fn invalidate(&self, conn: &Arc<Connection>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// A session channel; a connection that fails to open one is replaced once (nothing was
    /// sent on it, so retrying cannot run a command twice).
    async fn open_channel(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Arc<Connection>, russh::Channel<client::Msg>), ExecError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.connection(deadline).await?;
            match open_on(&conn, deadline, self.limits.timeout).await {
                Ok(channel) => return Ok((conn, channel)),
                Err(OpenError::Final(e)) => return Err(e),
                Err(OpenError::Dropped(why)) => {
                    self.invalidate(&conn).await;
                    tracing::debug!(target_id = %self.target_id, %why, "ssh connection dropped; reconnecting");
                    if attempt >= 2 {
                        return Err(OpenError::Dropped(why).into_error(&self.dest));
                    }
                }
            }
        }
    }

    /// `SIGKILL` the process group `pgid` (`kill -s KILL -- -PGID`). sshd honours a channel's
    /// `signal` request only for non-root logins (root sessions run without a privilege-separated
    /// child, and sshd refuses), so this is what actually stops a timed-out command. Best effort,
    /// bounded by [`KILL_TIMEOUT`]; a failure is logged.
    async fn kill_group(&self, pgid: u32) {
        let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
        let line = format!("kill -s KILL -- -{pgid}");
        match self.run_kill(&line, deadline).await {
            Ok(raw) if raw.status == Some(0) => {}
            Ok(raw) => tracing::warn!(
                target_id = %self.target_id, pgid, status = ?raw.status,
                stderr = %String::from_utf8_lossy(&raw.stderr.kept).trim(),
                "could not kill a timed-out remote command"
            ),
            Err(e) => {
                tracing::warn!(target_id = %self.target_id, pgid, error = %e, "could not kill a timed-out remote command")
            }
        }
    }

    /// Runs the kill `line` where it needs no free session slot if it can. sshd keeps a closed
    /// session's slot (`MaxSessions`) while its process still runs, so the timed-out command
    /// still holds one: in order, (1) an idle persistent shell (no new channel; parked again
    /// after), (2) a channel of its own once an idle shell was closed to free a slot, (3) when
    /// the server still refuses a channel (every slot is held by timed-out commands), a
    /// connection of its own, closed after.
    async fn run_kill(&self, line: &str, deadline: tokio::time::Instant) -> Result<Raw, ExecError> {
        while let Some(mut shell) = self.idle_shell().await {
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            if shell.channel.data_bytes(shell_script(line, &nonce)).await.is_err() {
                shell.discard().await;
                continue;
            }
            match shell_collect(&mut shell.channel, &nonce, 1024, deadline).await {
                Ok(raw) if !raw.timed_out => {
                    self.park(shell).await;
                    return Ok(raw);
                }
                Ok(_) => {
                    shell.discard().await;
                    return Err(ExecError::Timeout(KILL_TIMEOUT));
                }
                Err(_) => shell.discard().await, // the shell died: try another way
            }
        }
        self.make_room(1).await;
        match self.open_channel(deadline).await {
            Ok((_, channel)) => return collect(channel, line.as_bytes().to_vec(), 1024, deadline).await,
            Err(ExecError::Refused(why)) => {
                tracing::debug!(target_id = %self.target_id, %why, "no session slot for the kill; using a connection of its own");
            }
            Err(e) => return Err(e),
        }
        let conn = self.connect(deadline).await?;
        let channel = open_on(&conn, deadline, KILL_TIMEOUT)
            .await
            .map_err(|e| e.into_error(&self.dest))?;
        collect(channel, line.as_bytes().to_vec(), 1024, deadline).await
    }

    /// Runs `line` in an idle persistent shell (starting one when none is idle) and parks the
    /// shell again when the command finished cleanly. A shell found dead before anything was sent
    /// is replaced once; after the script went out nothing is retried (it may have run).
    async fn run_in_shell(&self, line: &str, cap: usize, deadline: tokio::time::Instant) -> Result<Raw, ExecError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut shell = self.shell(deadline).await?;
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            if let Err(e) = shell.channel.data_bytes(shell_script(line, &nonce)).await {
                shell.discard().await;
                if attempt >= 2 {
                    return Err(ExecError::Failed(format!("ssh channel failed: {e}")));
                }
                continue;
            }
            return match shell_collect(&mut shell.channel, &nonce, cap, deadline).await {
                Ok(mut raw) if raw.timed_out => {
                    let pgid = shell.pgid;
                    raw.pgid = Some(pgid);
                    shell.discard().await;
                    self.kill_group(pgid).await;
                    Ok(raw)
                }
                Ok(raw) => {
                    self.park(shell).await;
                    Ok(raw)
                }
                Err(e) => {
                    shell.discard().await;
                    Err(e)
                }
            };
        }
    }

    /// An idle shell on the live connection, or a new one.
    async fn shell(&self, deadline: tokio::time::Instant) -> Result<Shell, ExecError> {
        if let Some(shell) = self.idle_shell().await {
            return Ok(shell);
        }
        self.make_room(0).await;
        let (conn, mut channel) = self.open_channel(deadline).await?;
        let lost = |e: russh::Error| ExecError::Failed(format!("ssh channel failed: {e}"));
        channel.exec(true, SHELL_START).await.map_err(lost)?;
        // The first command reports the shell's pid (its process group: sshd makes the session's
        // shell a group leader, and `exec` keeps the pid) and swallows any login-script noise.
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        channel
            .data_bytes(shell_script("echo $$", &nonce))
            .await
            .map_err(lost)?;
        let pgid = match shell_collect(&mut channel, &nonce, 64 * 1024, deadline).await {
            Ok(raw) if raw.timed_out => Err(ExecError::Timeout(self.limits.timeout)),
            Ok(raw) => String::from_utf8_lossy(&raw.stdout.kept)
                .lines()
                .last()
                .and_then(|l| l.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    ExecError::Failed(format!("{}: the remote shell did not report its process id", self.dest))
                }),
            Err(e) => Err(e),
        };
        let pgid = match pgid {
            Ok(pgid) => pgid,
            Err(e) => {
                let _ = channel.close().await;
                return Err(e);
            }
        };
        self.shells_started.fetch_add(1, Ordering::Relaxed);
        Ok(Shell { conn, channel, pgid })
    }

    /// A usable idle shell, taken out of the pool (unusable ones found on the way are closed).
    async fn idle_shell(&self) -> Option<Shell> {
        loop {
            let mut shell = lock(&self.shells).pop()?;
            if shell.usable() {
                return Some(shell);
            }
            shell.discard().await;
        }
    }

    /// Keep `shell` for the next command, unless the pool is full or its connection was replaced.
    async fn park(&self, shell: Shell) {
        let current = self
            .conn
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &shell.conn));
        let surplus = {
            let mut idle = lock(&self.shells);
            if current && idle.len() < self.max_concurrent {
                idle.push(shell);
                None
            } else {
                Some(shell)
            }
        };
        if let Some(shell) = surplus {
            shell.discard().await;
        }
    }

    /// Before a caller holding a permit opens a channel: close idle shells so that idle shells
    /// plus callers in flight (plus `extra` channels no permit accounts for, such as a kill's
    /// while its caller's timed-out session still holds a slot) stay within `max_concurrent`
    /// channels (sshd's `MaxSessions`).
    async fn make_room(&self, extra: usize) {
        let in_flight = self.max_concurrent.saturating_sub(self.permits.available_permits());
        let excess: Vec<Shell> = {
            let mut idle = lock(&self.shells);
            let over = (idle.len() + in_flight + extra).saturating_sub(self.max_concurrent);
            let over = over.min(idle.len());
            idle.drain(..over).collect()
        };
        for shell in excess {
            shell.discard().await;
        }
    }

    /// TCP connect, key exchange with host-key verification, authentication.
    async fn connect(&self, deadline: tokio::time::Instant) -> Result<Connection, ExecError> {
        let s = &self.settings;
        let recorded = match &s.known_hosts {
            Some(path) => recorded_keys(&s.host, s.port, path, s.trust_on_first_use)?,
            None => Recorded::default(),
        };
        let preferred = russh::Preferred {
            key: Cow::Owned(host_key_order(&recorded.entries)),
            ..Default::default()
        };
        let config = Arc::new(client::Config {
            preferred,
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            ..Default::default()
        });
        let state = Arc::new(StdMutex::new(Handshake::default()));
        let handler = Client {
            verifier: Verifier {
                dest: self.dest.clone(),
                host: s.host.clone(),
                port: s.port,
                known_hosts: s.known_hosts.clone(),
                recorded,
                pin: s.host_key_fingerprint.clone(),
                tofu: s.trust_on_first_use,
                target_id: self.target_id.clone(),
            },
            state: state.clone(),
        };
        let timeout = self.limits.timeout;
        let unreachable_in_time =
            || ExecError::Unreachable(format!("{}: no SSH session within {timeout:?}", self.dest));

        let tcp = match timeout_at(deadline, tokio::net::TcpStream::connect((s.host.as_str(), s.port))).await {
            Err(_) => return Err(unreachable_in_time()),
            Ok(Err(e)) => return Err(ExecError::Unreachable(format!("{}: {e}", self.dest))),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let socket = {
            use std::os::fd::AsFd;
            tcp.as_fd()
                .try_clone_to_owned()
                .map_err(|e| ExecError::Failed(format!("{}: cannot duplicate the socket: {e}", self.dest)))?
        };
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut handle = match timeout_at(deadline, client::connect_stream(config, tcp, handler)).await {
            Err(_) => return Err(unreachable_in_time()),
            Ok(Err(e)) => return Err(handshake_error(&self.dest, e)),
            Ok(Ok(handle)) => handle,
        };
        match timeout_at(deadline, self.authenticate(&mut handle)).await {
            Err(_) => return Err(unreachable_in_time()),
            Ok(result) => result?,
        }
        let hs = lock(&state).clone();
        tracing::debug!(target_id = %self.target_id, dest = %self.dest, host_key = %hs.fingerprint, "ssh connected");
        Ok(Connection {
            handle,
            host_key_fingerprint: hs.fingerprint,
            server_version: hs.server_version,
            socket,
        })
    }

    /// The hash to sign with: for an RSA key, the best the server supports (`None` lets russh
    /// choose); other key types have none.
    async fn rsa_hash(&self, handle: &client::Handle<Client>, rsa: bool) -> Result<Option<HashAlg>, ExecError> {
        if !rsa {
            return Ok(None);
        }
        Ok(handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| ssh_failed(&self.dest, e))?
            .flatten())
    }

    async fn authenticate(&self, handle: &mut client::Handle<Client>) -> Result<(), ExecError> {
        let s = &self.settings;
        let mut tried = Vec::new();
        if let Some(path) = &s.key_file {
            let key = load_key(path)?;
            let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
            let hash = self.rsa_hash(handle, key.algorithm().is_rsa()).await?;
            let result = handle
                .authenticate_publickey(&s.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .map_err(|e| ssh_failed(&self.dest, e))?;
            if result.success() {
                return Ok(());
            }
            tried.push(format!("key file {} ({fingerprint})", path.display()));
        }
        if s.agent {
            let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                .await
                .map_err(|_| ExecError::Auth("agent = true but no ssh-agent is reachable at $SSH_AUTH_SOCK".into()))?;
            let identities = agent
                .request_identities()
                .await
                .map_err(|_| ExecError::Auth("the ssh-agent did not list its keys".into()))?;
            for identity in identities {
                let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity else {
                    continue;
                };
                let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
                let hash = self.rsa_hash(handle, key.algorithm().is_rsa()).await?;
                match handle.authenticate_publickey_with(&s.user, key, hash, &mut agent).await {
                    Ok(result) if result.success() => return Ok(()),
                    Ok(_) => tried.push(format!("agent key {fingerprint}")),
                    Err(_) => tried.push(format!("agent key {fingerprint} (the agent would not sign)")),
                }
            }
            if tried.is_empty() || !tried.iter().any(|t| t.starts_with("agent")) {
                tried.push("the ssh-agent (it holds no usable keys)".into());
            }
        }
        Err(ExecError::Auth(format!(
            "{} refused user {}: tried {}",
            self.dest,
            s.user,
            tried.join(", ")
        )))
    }
}

/// How long killing a timed-out command's process group may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How tools run commands on an SSH target: a program on the target's sudo allow-list runs
/// under `sudo -n` (what `sudo = { allow = [...] }` promises), anything else as the login user.
impl super::remote::Runner for Ssh {
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> futures::future::BoxFuture<'a, Result<Output, ExecError>> {
        let sudo = matches!(&self.inner.settings.sudo, SudoPolicy::Allow(programs) if programs.contains(&cmd.program));
        Box::pin(Ssh::run(self, cmd, sudo))
    }
}

/// Load a private key file. Errors name the file, never its contents.
fn load_key(path: &Path) -> Result<russh::keys::PrivateKey, ExecError> {
    let bytes = Secret::File(path.to_path_buf()).read()?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ExecError::Config(format!("key file {} is not an OpenSSH private key", path.display())))?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => ExecError::Config(format!(
            "key file {} is passphrase-protected; use an unencrypted key (systemd credential) or the ssh-agent",
            path.display()
        )),
        _ => ExecError::Config(format!(
            "key file {} is not a usable OpenSSH private key",
            path.display()
        )),
    })
}

/// Quote every word for a POSIX shell: `'...'` with each `'` written as `'\''`. NUL cannot be
/// passed to a remote process and is refused.
fn quote_command(words: &[&str]) -> Result<String, ExecError> {
    let mut line = String::new();
    for (i, word) in words.iter().enumerate() {
        if word.contains('\0') {
            return Err(ExecError::Refused("a command argument contains a NUL byte".into()));
        }
        if i > 0 {
            line.push(' ');
        }
        line.push('\'');
        line.push_str(&word.replace('\'', r"'\''"));
        line.push('\'');
    }
    Ok(line)
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_word_literal() {
        fn check(words: &[&str], expected: &str) {
            assert_eq!(quote_command(words).unwrap(), expected);
        }
        check(&["ls"], "'ls'");
        check(&["echo", "a b", ""], "'echo' 'a b' ''");
        check(&["echo", "it's"], r"'echo' 'it'\''s'");
        check(
            &["echo", "$(id); `id` && x | y > z"],
            "'echo' '$(id); `id` && x | y > z'",
        );
        check(&["echo", "back\\slash\nnewline"], "'echo' 'back\\slash\nnewline'");
        assert!(matches!(quote_command(&["echo", "a\0b"]), Err(ExecError::Refused(_))));
    }

    #[test]
    fn settings_validation() {
        fn settings(extra: &str) -> Result<Ssh, String> {
            let text = format!("host = \"h\"\nuser = \"u\"\n{extra}");
            let s: SshSettings = toml::from_str(&text).map_err(|e| e.to_string())?;
            Ssh::new("t", s, Limits::default(), 4).map_err(|e| e.to_string())
        }
        let ok = "key_file = \"k\"\nknown_hosts = \"kh\"\n";
        assert!(settings(ok).is_ok());
        assert_eq!(settings(ok).unwrap().inner.dest, "h");
        assert!(settings("agent = true\nknown_hosts = \"kh\"\nport = 2222\n").is_ok());
        let err = |extra: &str| settings(extra).unwrap_err();
        assert!(err("known_hosts = \"kh\"\n").contains("no credentials"));
        assert!(err("key_file = \"k\"\n").contains("no host key"));
        assert!(err("key_file = \"k\"\nhost_key_fingerprint = \"SHA256:x\"\n").contains("not of the form"));
        assert!(
            err("key_file = \"k\"\nhost_key_fingerprint = \"x\"\ntrust_on_first_use = true\n").contains("known_hosts")
        );
        assert!(err(&format!("{ok}passphrase = \"x\"\n")).contains("unknown field"));
        assert!(err(&format!("{ok}sudo = \"always\"\n")).contains("unknown variant"));
        let s = settings(&format!("{ok}sudo = {{ allow = [\"systemctl\"] }}\n")).unwrap();
        assert_eq!(s.inner.settings.sudo, SudoPolicy::Allow(vec!["systemctl".into()]));
        assert!(err(&format!("{ok}sudo = {{ allow = [\"rm -rf\"] }}\n")).contains("not a program name"));
    }

    #[test]
    fn sudo_policy_is_checked_before_anything_is_sent() {
        let base = SshSettings {
            host: "h".into(),
            port: 22,
            user: "u".into(),
            key_file: Some("k".into()),
            agent: false,
            known_hosts: Some("kh".into()),
            host_key_fingerprint: None,
            trust_on_first_use: false,
            sudo: SudoPolicy::None,
        };
        let none = Ssh::new("t", base.clone(), Limits::default(), 1).unwrap();
        let cmd = CommandSpec::new("systemctl", ["restart", "x y"]);
        assert!(matches!(none.command_line(&cmd, true), Err(ExecError::Refused(_))));
        assert_eq!(none.command_line(&cmd, false).unwrap(), "'systemctl' 'restart' 'x y'");
        let allow = Ssh::new(
            "t",
            SshSettings {
                sudo: SudoPolicy::Allow(vec!["systemctl".into()]),
                ..base
            },
            Limits::default(),
            1,
        )
        .unwrap();
        assert_eq!(
            allow.command_line(&cmd, true).unwrap(),
            "'sudo' '-n' '--' 'systemctl' 'restart' 'x y'"
        );
        let other = CommandSpec::new("/usr/bin/systemctl", ["stop"]);
        let err = allow.command_line(&other, true).unwrap_err().to_string();
        assert!(err.contains("not on the sudo allow-list"), "{err}");
    }
}
