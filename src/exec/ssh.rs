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

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Sig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::timeout_at;

use crate::exec::{CommandSpec, ExecError, Limits, Output, Secret, lock};
use crate::text::glob_match;

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
        let channel = match open_on(&conn, deadline, self.inner.limits.timeout).await {
            Ok(channel) => channel,
            Err(OpenError::Final(e)) => return Err(e),
            Err(OpenError::Dropped(why)) => {
                return Err(ExecError::Unreachable(format!(
                    "{}: connection dropped: {why}",
                    self.inner.dest
                )));
            }
        };
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

struct Connection {
    handle: client::Handle<Client>,
    host_key_fingerprint: String,
    server_version: String,
    /// A duplicate of the TCP socket russh owns, only ever polled: it tells at once that the
    /// server closed or reset the connection, even before russh's task has read that.
    socket: std::os::fd::OwnedFd,
}

impl Connection {
    /// False once the connection is known to be gone: russh ended it, or the peer's FIN or RST
    /// already arrived. (A connection whose peer vanished without either looks alive.)
    fn alive(&self) -> bool {
        use std::os::fd::AsRawFd;
        if self.handle.is_closed() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for an fd we own; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        ready == 0 || pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // The duplicate keeps the socket open after russh dropped its end: close it for real.
        // SAFETY: shutdown(2) on an fd we own.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
    }
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
                        return Err(ExecError::Unreachable(format!(
                            "{}: connection dropped: {why}",
                            self.dest
                        )));
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
        let channel = match open_on(&conn, deadline, KILL_TIMEOUT).await {
            Ok(channel) => channel,
            Err(OpenError::Final(e)) => return Err(e),
            Err(OpenError::Dropped(why)) => {
                return Err(ExecError::Unreachable(format!(
                    "{}: connection dropped: {why}",
                    self.dest
                )));
            }
        };
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

    async fn authenticate(&self, handle: &mut client::Handle<Client>) -> Result<(), ExecError> {
        let s = &self.settings;
        let mut tried = Vec::new();
        if let Some(path) = &s.key_file {
            let key = load_key(path)?;
            let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| ssh_failed(&self.dest, e))?
                    .flatten()
            } else {
                None
            };
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
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(|e| ssh_failed(&self.dest, e))?
                        .flatten()
                } else {
                    None
                };
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

/// Open a session channel on `conn`, telling a dropped connection apart from a final error.
async fn open_on(
    conn: &Connection,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<russh::Channel<client::Msg>, OpenError> {
    match timeout_at(deadline, conn.handle.channel_open_session()).await {
        Err(_) => Err(OpenError::Final(ExecError::Timeout(timeout))),
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(russh::Error::ChannelOpenFailure(reason))) => Err(OpenError::Final(ExecError::Refused(format!(
            "the server refused a session channel ({reason:?}); is max_concurrent above sshd's MaxSessions (default 10)?"
        )))),
        Ok(Err(e)) => Err(OpenError::Dropped(e.to_string())),
    }
}

enum OpenError {
    /// The connection is gone; a new one may be tried.
    Dropped(String),
    Final(ExecError),
}

/// Send `command`, close stdin, and collect output until the channel closes or the deadline.
async fn collect(
    mut channel: russh::Channel<client::Msg>,
    command: Vec<u8>,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Result<Raw, ExecError> {
    let lost = |e: russh::Error| ExecError::Failed(format!("ssh channel failed: {e}"));
    let wrapped = command.starts_with(MARKER_PREFIX);
    channel.exec(true, command).await.map_err(lost)?;
    channel.eof().await.map_err(lost)?;
    let mut raw = Raw {
        stdout: Capped::new(cap),
        stderr: Capped::new(cap),
        ..Raw::default()
    };
    // stderr is held back until the process-group marker has been seen (or cannot come any more).
    let mut marker: Option<Vec<u8>> = wrapped.then(Vec::new);
    let mut exited = false;
    loop {
        match timeout_at(deadline, channel.wait()).await {
            Err(_) => {
                // sshd `killpg`s the session's process group on a signal request.
                let _ = channel.signal(Sig::KILL).await;
                let _ = channel.close().await;
                raw.timed_out = true;
                raw.status = None;
                break;
            }
            Ok(None) | Ok(Some(ChannelMsg::Close)) => break,
            Ok(Some(msg)) => match msg {
                ChannelMsg::Data { data } => raw.stdout.push(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => match marker.as_mut() {
                    None => raw.stderr.push(&data),
                    Some(pending) => {
                        pending.extend_from_slice(&data);
                        if let Some((pgid, rest)) = take_marker(pending) {
                            raw.pgid = Some(pgid);
                            raw.stderr.push(&rest);
                            marker = None;
                        } else if pending.len() > MARKER_SEARCH_LIMIT {
                            raw.stderr.push(pending);
                            marker = None;
                        }
                    }
                },
                ChannelMsg::ExitStatus { exit_status } => {
                    raw.status = i32::try_from(exit_status).ok();
                    exited = true;
                }
                ChannelMsg::ExitSignal { .. } => exited = true,
                ChannelMsg::Failure => {
                    return Err(ExecError::Failed("the server refused to run the command".into()));
                }
                _ => {}
            },
        }
    }
    if let Some(pending) = marker {
        raw.stderr.push(&pending);
    }
    if !raw.timed_out && !exited {
        return Err(ExecError::Failed(
            "the connection closed before the command finished".into(),
        ));
    }
    Ok(raw)
}

#[derive(Default)]
struct Raw {
    stdout: Capped,
    stderr: Capped,
    status: Option<i32>,
    timed_out: bool,
    /// The remote session's process group, from the marker line.
    pgid: Option<u32>,
}

/// A command on a channel of its own runs as `echo MARKER$$ >&2; COMMAND`: sshd makes the
/// session's shell a session and process-group leader, so `$$` names the group to kill on
/// timeout (what the shell starts stays in it). The marker line is removed from stderr.
const MARKER: &str = "tailopsmcp-pgid:";
const MARKER_PREFIX: &[u8] = b"echo tailopsmcp-pgid:";
/// Startup noise (e.g. from a shell rc file) tolerated before the marker on stderr.
const MARKER_SEARCH_LIMIT: usize = 64 * 1024;
/// How long killing a timed-out command's process group may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

fn wrap(line: &str) -> Vec<u8> {
    format!("echo {MARKER}$$ >&2; {line}").into_bytes()
}

/// Finds `MARKER<digits>\n` in `pending`; returns the pid and the bytes around the line.
fn take_marker(pending: &[u8]) -> Option<(u32, Vec<u8>)> {
    let start = pending.windows(MARKER.len()).position(|w| w == MARKER.as_bytes())?;
    let digits_at = start + MARKER.len();
    let end = digits_at + pending[digits_at..].iter().position(|&b| b == b'\n')?;
    let pgid = std::str::from_utf8(&pending[digits_at..end]).ok()?.parse().ok()?;
    let mut rest = pending[..start].to_vec();
    rest.extend_from_slice(&pending[end + 1..]);
    Some((pgid, rest))
}

/// A persistent `/bin/sh` on one session channel of a connection: commands are written to its
/// stdin one at a time, each followed by end lines carrying a per-command random nonce, so a
/// command costs no new channel, no fork of sshd's session child and no login-shell start-up.
struct Shell {
    conn: Arc<Connection>,
    channel: russh::Channel<client::Msg>,
    /// The shell's pid, which is also its process group (what a timeout kills).
    pgid: u32,
}

impl Shell {
    /// Still on a live connection and silent while idle (an idle shell that sent anything, an
    /// EOF or a close, has ended or misbehaved).
    fn usable(&mut self) -> bool {
        use futures::FutureExt;
        self.conn.alive() && self.channel.wait().now_or_never().is_none()
    }

    async fn discard(self) {
        let _ = self.channel.close().await;
    }
}

/// Programs that would change or end the persistent shell itself (its directory, environment,
/// options, traps, limits) if run in it: they get a channel of their own.
const SHELL_STATEFUL: &[&str] = &[
    ".", ":", "alias", "bg", "break", "builtin", "cd", "command", "continue", "declare", "eval", "exec", "exit",
    "export", "fg", "getopts", "hash", "jobs", "local", "logout", "read", "readonly", "return", "set", "shift",
    "source", "times", "trap", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
];

/// What a persistent shell's channel runs: the login shell replaces itself with a plain POSIX sh
/// reading commands from the channel (same pid, so the same process group).
const SHELL_START: &str = "exec /bin/sh";
/// Start of the end lines: `END<nonce>:<status>\n` on stdout, `END<nonce>\n` on stderr.
const SHELL_END: &str = "tailopsmcp-end-";

/// One command for a persistent shell: stdin from `/dev/null` (a command must not read the
/// following script), then the exit status and end lines. `line` is quoted words only.
fn shell_script(line: &str, nonce: &str) -> bytes::Bytes {
    format!("{{ {line}\n}} </dev/null; printf '{SHELL_END}{nonce}:%d\\n' \"$?\"; printf '{SHELL_END}{nonce}\\n' >&2\n")
        .into()
}

/// Reads one command's output from a persistent shell until both end lines arrived.
async fn shell_collect(
    channel: &mut russh::Channel<client::Msg>,
    nonce: &str,
    cap: usize,
    deadline: tokio::time::Instant,
) -> Result<Raw, ExecError> {
    let end = format!("{SHELL_END}{nonce}");
    let mut out = UntilEnd::new(&end, cap);
    let mut err = UntilEnd::new(&end, cap);
    let mut raw = Raw::default();
    while !(out.line().is_some() && err.line().is_some()) {
        match timeout_at(deadline, channel.wait()).await {
            Err(_) => {
                raw.timed_out = true;
                break;
            }
            Ok(Some(ChannelMsg::Data { data })) => out.push(&data),
            Ok(Some(ChannelMsg::ExtendedData { data, ext: 1 })) => err.push(&data),
            Ok(Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success)) => {}
            Ok(Some(ChannelMsg::Failure)) => {
                return Err(ExecError::Failed("the server refused to start a shell".into()));
            }
            Ok(Some(_)) | Ok(None) => {
                return Err(ExecError::Failed(
                    "the remote shell ended before the command finished".into(),
                ));
            }
        }
    }
    if !raw.timed_out {
        let status = out.line().and_then(|l| l.strip_prefix(b":"));
        raw.status = status
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok());
        if raw.status.is_none() {
            return Err(ExecError::Failed("the remote shell sent a malformed end line".into()));
        }
    }
    raw.stdout = out.into_kept();
    raw.stderr = err.into_kept();
    Ok(raw)
}

/// One stream of a persistent shell: bytes before the end marker go to a [`Capped`]; the rest of
/// the end line is kept apart.
struct UntilEnd {
    end: Vec<u8>,
    kept: Capped,
    /// Bytes that may be the start of the end marker.
    pending: Vec<u8>,
    /// Bytes after the marker, once it was seen.
    after: Option<Vec<u8>>,
}

impl UntilEnd {
    fn new(end: &str, cap: usize) -> UntilEnd {
        UntilEnd {
            end: end.as_bytes().to_vec(),
            kept: Capped::new(cap),
            pending: Vec::new(),
            after: None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if let Some(after) = self.after.as_mut() {
            after.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let n = self.end.len();
        if let Some(at) = self.pending.windows(n).position(|w| w == self.end.as_slice()) {
            self.kept.push(&self.pending[..at]);
            self.after = Some(self.pending[at + n..].to_vec());
            self.pending.clear();
        } else if self.pending.len() >= n {
            let safe = self.pending.len() - (n - 1);
            self.kept.push(&self.pending[..safe]);
            self.pending.drain(..safe);
        }
    }

    /// What the command wrote: before the marker, or everything when it never came (timeout).
    fn into_kept(mut self) -> Capped {
        self.kept.push(&self.pending);
        self.kept
    }

    /// The rest of the end line (without its newline), once it is complete.
    fn line(&self) -> Option<&[u8]> {
        let after = self.after.as_deref()?;
        let newline = after.iter().position(|&b| b == b'\n')?;
        Some(&after[..newline])
    }
}

/// One output stream: the first `cap` bytes, and a count of the rest.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    dropped: u64,
    cap: usize,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            dropped: 0,
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = room.min(data.len());
        self.kept.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    /// The kept bytes as text and how many bytes were cut in all: when the cap split a UTF-8
    /// sequence, the partial sequence is cut too. Other invalid bytes become U+FFFD. A cut stream
    /// ends with the same marker line as the local process executor's (`\n[… N bytes cut]`).
    fn into_text(self) -> (String, u64) {
        let (mut text, trimmed) = into_text(self.kept, self.dropped > 0);
        let cut = self.dropped + trimmed;
        if cut > 0 {
            text.push_str(&cut_marker(cut));
        }
        (text, cut)
    }
}

use super::process::cut_marker;

/// How tools run commands on an SSH target: a program on the target's sudo allow-list runs
/// under `sudo -n` (what `sudo = { allow = [...] }` promises), anything else as the login user.
impl super::remote::Runner for Ssh {
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> futures::future::BoxFuture<'a, Result<Output, ExecError>> {
        let sudo = matches!(&self.inner.settings.sudo, SudoPolicy::Allow(programs) if programs.contains(&cmd.program));
        Box::pin(Ssh::run(self, cmd, sudo))
    }
}

/// Returns the text and how many trailing bytes were trimmed.
fn into_text(mut bytes: Vec<u8>, was_cut: bool) -> (String, u64) {
    let mut trimmed = 0;
    if was_cut
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        trimmed = (bytes.len() - e.valid_up_to()) as u64;
        bytes.truncate(e.valid_up_to());
    }
    match String::from_utf8(bytes) {
        Ok(s) => (s, trimmed),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), trimmed),
    }
}

/// What the handshake learned, read after it.
#[derive(Default, Clone)]
struct Handshake {
    fingerprint: String,
    server_version: String,
}

struct Client {
    verifier: Verifier,
    state: Arc<StdMutex<Handshake>>,
}

#[derive(Debug)]
enum ClientError {
    Ssh(russh::Error),
    HostKey(String),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Err(ClientError::HostKey(format!(
                "{} presented a host certificate; host certificates are not supported",
                self.verifier.dest
            )));
        };
        lock(&self.state).fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        self.verifier.verify(key).map_err(ClientError::HostKey)?;
        Ok(true)
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        _names: &russh::Names,
        session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let mut state = lock(&self.state);
        if state.server_version.is_empty() {
            state.server_version = String::from_utf8_lossy(session.remote_sshid()).trim().to_string();
        }
        Ok(())
    }
}

/// The host-key decision for one connection attempt.
struct Verifier {
    dest: String,
    host: String,
    port: u16,
    known_hosts: Option<PathBuf>,
    /// What `known_hosts` says about this host, read before connecting.
    recorded: Recorded,
    pin: Option<String>,
    tofu: bool,
    target_id: String,
}

impl Verifier {
    fn verify(&self, presented: &PublicKey) -> Result<(), String> {
        let fp = presented.fingerprint(HashAlg::Sha256).to_string();
        let algo = presented.algorithm().to_string();
        if let Some(pin) = &self.pin
            && *pin != fp
        {
            return Err(format!(
                "HOST KEY MISMATCH for {}: the server presents {algo} {fp} but host_key_fingerprint pins {pin}. \
                 Someone may be intercepting the connection (man-in-the-middle), or the host was reinstalled. \
                 Refusing to connect; update the pin only after verifying the new fingerprint out of band",
                self.dest
            ));
        }
        let Some(path) = &self.known_hosts else {
            return Ok(()); // pinned and matched
        };
        if self
            .recorded
            .revoked
            .iter()
            .any(|k| k.key_data() == presented.key_data())
        {
            return Err(format!(
                "host key {algo} {fp} of {} is marked @revoked in {}; refusing to connect",
                self.dest,
                path.display()
            ));
        }
        match host_key_status(presented, &self.recorded.entries) {
            KeyStatus::Known => Ok(()),
            KeyStatus::Changed(recorded) => {
                let was = recorded
                    .iter()
                    .map(|(line, key)| {
                        format!("{} {} (line {line})", key.algorithm(), key.fingerprint(HashAlg::Sha256))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(format!(
                    "HOST KEY CHANGED for {}: the server presents {algo} {fp} but {} records {was}. \
                     Someone may be intercepting the connection (man-in-the-middle), or the host was reinstalled. \
                     Refusing to connect; replace the entry only after verifying the new fingerprint out of band",
                    self.dest,
                    path.display()
                ))
            }
            KeyStatus::Unknown if self.pin.is_some() => Ok(()), // the pin matched
            KeyStatus::Unknown if self.tofu => {
                append_known_host(path, &self.host, self.port, presented).map_err(|e| {
                    format!(
                        "trust_on_first_use: cannot record the host key in {}: {e}",
                        path.display()
                    )
                })?;
                tracing::warn!(
                    target_id = %self.target_id, dest = %self.dest, key = %format!("{algo} {fp}"),
                    known_hosts = %path.display(),
                    "trust on first use: accepted an unknown SSH host key and recorded it"
                );
                Ok(())
            }
            KeyStatus::Unknown => Err(format!(
                "host key for {} is not in known_hosts {} (the server presents {algo} {fp}); add it after \
                 verifying the fingerprint out of band, or pin it with host_key_fingerprint",
                self.dest,
                path.display()
            )),
        }
    }
}

#[derive(Debug, PartialEq)]
enum KeyStatus {
    Known,
    /// The host has entries, none with the presented key (of any type: a server that has a
    /// recorded type is asked for it first, see [`host_key_order`]).
    Changed(Vec<(usize, PublicKey)>),
    /// No entry at all for the host: the only case trust on first use may accept.
    Unknown,
}

/// A recorded key equal to the presented one → known; otherwise any entry for the host, whatever
/// its key type → changed (stricter than OpenSSH, which calls a key of a new type unknown: a
/// man-in-the-middle offering only another type must not pass as a first contact); no entry →
/// unknown.
fn host_key_status(presented: &PublicKey, recorded: &[(usize, PublicKey)]) -> KeyStatus {
    if recorded.iter().any(|(_, k)| k.key_data() == presented.key_data()) {
        KeyStatus::Known
    } else if recorded.is_empty() {
        KeyStatus::Unknown
    } else {
        KeyStatus::Changed(recorded.to_vec())
    }
}

fn is_rsa(a: &russh::keys::Algorithm) -> bool {
    matches!(a, russh::keys::Algorithm::Rsa { .. })
}

/// Host key algorithms to offer: those recorded for the host first (so a server with several
/// host keys presents one we know), then the rest of russh's default order.
fn host_key_order(recorded: &[(usize, PublicKey)]) -> Vec<russh::keys::Algorithm> {
    let defaults = russh::Preferred::default().key.into_owned();
    let known = |a: &russh::keys::Algorithm| {
        recorded.iter().any(|(_, k)| {
            let r = k.algorithm();
            r == *a || (is_rsa(&r) && is_rsa(a))
        })
    };
    let mut order: Vec<_> = defaults.iter().filter(|a| known(a)).cloned().collect();
    order.extend(defaults.iter().filter(|a| !known(a)).cloned());
    order
}

/// What a known_hosts file says about one host.
#[derive(Default, Debug)]
struct Recorded {
    /// `(line, key)` entries for this host.
    entries: Vec<(usize, PublicKey)>,
    /// Keys on `@revoked` lines.
    revoked: Vec<PublicKey>,
    /// Lines whose host field is hashed (matched by russh's reader).
    hashed_lines: Vec<usize>,
}

/// The known_hosts entries for `host:port`. A missing file is an error unless trusting on first
/// use (which creates it).
///
/// Plain host lines are read here, as OpenSSH reads them: fields separated by any run of spaces
/// or tabs, host names compared case-insensitively, comma-separated patterns with `*` and `?`
/// wildcards and `!` negation. Hashed names (`|1|salt|hmac`) are matched by russh's reader
/// against the lowercased name (as ssh hashes it); it splits fields on single spaces, which is
/// how ssh and `ssh-keygen -H` write them. A line naming this host whose key cannot be parsed is
/// an error (it must not be skipped into "no entry", which would allow trust on first use).
fn recorded_keys(host: &str, port: u16, path: &Path, tofu: bool) -> Result<Recorded, ExecError> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && tofu => return Ok(Recorded::default()),
        Err(e) => {
            return Err(ExecError::HostVerification(format!(
                "cannot read known_hosts {}: {e}",
                path.display()
            )));
        }
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        ExecError::HostVerification(format!("cannot read known_hosts {}: {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(&e))?;
    let lower = host.to_ascii_lowercase();
    let mut recorded = parse_known_hosts(&text, &known_hosts_name(&lower, port)).map_err(|e| unreadable(&e))?;
    if recorded.hashed_lines.is_empty() {
        return Ok(recorded);
    }
    let hashed = russh::keys::known_hosts::known_host_keys_path(&lower, port, path).map_err(|e| unreadable(&e))?;
    // russh numbers entries without counting `#` comment lines; report the file's own line numbers.
    let physical: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .map(|(i, _)| i + 1)
        .collect();
    for (n, key) in hashed {
        // Plain lines russh also matched are already in (read above, by OpenSSH's rules).
        if let Some(&line) = physical.get(n.wrapping_sub(1))
            && recorded.hashed_lines.contains(&line)
            && !recorded.entries.iter().any(|(l, _)| *l == line)
        {
            recorded.entries.push((line, key));
        }
    }
    recorded.entries.sort_by_key(|(line, _)| *line);
    Ok(recorded)
}

/// The plain (unhashed) entries of known_hosts `text` for `name` (`host` or `[host]:port`,
/// lowercased), the `@revoked` keys, and the lines with hashed host names (left to russh).
/// `@cert-authority` lines are skipped: host certificates are not supported.
fn parse_known_hosts(text: &str, name: &str) -> Result<Recorded, String> {
    let mut recorded = Recorded::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut fields = line.split_whitespace();
        let Some(hosts) = fields.next() else { continue };
        if hosts.starts_with('#') {
            continue;
        }
        if hosts == "@revoked" {
            // `@revoked PATTERNS TYPE KEY`: refused for every host (the pattern is not consulted).
            if let Some(key) = fields
                .nth(2)
                .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok())
            {
                recorded.revoked.push(key);
            }
            continue;
        }
        if hosts.starts_with('@') {
            continue;
        }
        if hosts.split(',').any(|p| p.starts_with("|1|")) {
            recorded.hashed_lines.push(n);
        }
        if !host_patterns_match(hosts, name) {
            continue;
        }
        let key = fields
            .nth(1)
            .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok())
            .ok_or_else(|| format!("line {n} names {name} but its key cannot be parsed"))?;
        recorded.entries.push((n, key));
    }
    Ok(recorded)
}

/// OpenSSH's rule for a known_hosts host field: some pattern of the comma-separated list matches
/// `name` and no negated (`!`) one does; case-insensitive, with `*` and `?` wildcards. Hashed
/// patterns never match here.
fn host_patterns_match(patterns: &str, name: &str) -> bool {
    let mut positive = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        // `*` any run of bytes, `?` any one byte (OpenSSH's `match_pattern`): the crate's glob.
        if pattern.starts_with("|1|") || !glob_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            continue;
        }
        if negated {
            return false;
        }
        positive = true;
    }
    positive
}

/// Trust on first use: append `[host]:port KEY` (the line russh would write) to known_hosts,
/// created with mode 0600, and make sure it reached the disk before the key counts as recorded.
fn append_known_host(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let key = key.to_openssh().map_err(std::io::Error::other)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut line = String::new();
    let mut last = [0u8; 1];
    if file.seek(SeekFrom::End(-1)).is_ok() {
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&format!(
        "{} {key}\n",
        known_hosts_name(&host.to_ascii_lowercase(), port)
    ));
    file.write_all(line.as_bytes())?;
    file.sync_all()
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

fn handshake_error(dest: &str, e: ClientError) -> ExecError {
    match e {
        ClientError::HostKey(msg) => ExecError::HostVerification(msg),
        ClientError::Ssh(russh::Error::NoCommonAlgo { kind, .. }) => {
            ExecError::Failed(format!("{dest}: no common {kind:?} algorithm with the server"))
        }
        ClientError::Ssh(e @ (russh::Error::IO(_) | russh::Error::Disconnect | russh::Error::HUP)) => {
            ExecError::Unreachable(format!("{dest}: connection closed during the SSH handshake ({e})"))
        }
        ClientError::Ssh(e) => ssh_failed(dest, e),
    }
}

fn ssh_failed(dest: &str, e: russh::Error) -> ExecError {
    ExecError::Failed(format!("{dest}: ssh: {e}"))
}

/// `host` for port 22, `[host]:port` otherwise (the known_hosts spelling).
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn valid_sha256_pin(pin: &str) -> bool {
    pin.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'))
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

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCCMZaMYIfJnE0f9S58a4ImwRJo0qEt+UseMVmVC0jVgROeExFXJGLs3ZYjSD9fnEWHKm2giltXy5cTWTkw8+1w=";

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
    fn process_group_marker_is_taken_out_of_stderr() {
        assert_eq!(wrap("'true'"), b"echo tailopsmcp-pgid:$$ >&2; 'true'".to_vec());
        assert!(wrap("x").starts_with(MARKER_PREFIX));
        assert_eq!(take_marker(b"tailopsmcp-pgid:123\nerr"), Some((123, b"err".to_vec())));
        assert_eq!(
            take_marker(b"rc noise\ntailopsmcp-pgid:7\n"),
            Some((7, b"rc noise\n".to_vec()))
        );
        assert_eq!(take_marker(b"tailopsmcp-pgid:12"), None); // incomplete: wait for more
    }

    #[test]
    fn host_key_status_refuses_any_other_key_for_a_recorded_host() {
        let (a, b) = (key(ED_A), key(ED_B));
        assert_eq!(host_key_status(&a, &[(1, a.clone())]), KeyStatus::Known);
        assert_eq!(
            host_key_status(&a, &[(3, b.clone())]),
            KeyStatus::Changed(vec![(3, b.clone())])
        );
        assert_eq!(host_key_status(&a, &[(1, b.clone()), (2, a.clone())]), KeyStatus::Known);
        assert_eq!(host_key_status(&a, &[]), KeyStatus::Unknown);
        // Only a key of another type is recorded: changed, not unknown (no trust on first use).
        let ecdsa = key(ECDSA);
        assert_eq!(
            host_key_status(&a, &[(2, ecdsa.clone())]),
            KeyStatus::Changed(vec![(2, ecdsa.clone())])
        );
        assert_eq!(
            host_key_status(&ecdsa, &[(1, a.clone())]),
            KeyStatus::Changed(vec![(1, a)])
        );
    }

    #[test]
    fn known_hosts_lines_are_read_as_openssh_reads_them() {
        let name = "[server.example]:2222";
        let parse = |text: &str| parse_known_hosts(text, name).unwrap();
        let lines = |text: &str| parse(text).entries.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        // Exact, other case, tabs and several spaces, in a list, wildcards.
        assert_eq!(lines(&format!("[server.example]:2222 ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(
            lines(&format!("[Server.EXAMPLE]:2222 ssh-ed25519 {ED_A} comment\n")),
            [1]
        );
        assert_eq!(
            lines(&format!("# c\n\n  [server.example]:2222\tssh-ed25519  {ED_A}\n")),
            [3]
        );
        assert_eq!(lines(&format!("other,[server.example]:2222 ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(lines(&format!("[*.example]:2222 ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(lines(&format!("[server.exampl?]:* ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(lines(&format!("* ssh-ed25519 {ED_A}\n")), [1]);
        // Not this host: another port, the name without its port, a negated match, a comment.
        assert!(lines(&format!("[server.example]:22 ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("server.example ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("*,![server.example]:2222 ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("#[server.example]:2222 ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("@cert-authority * ssh-ed25519 {ED_A}\n")).is_empty());
        // @revoked keys are collected whatever the pattern; hashed lines are noted for russh.
        let r = parse(&format!(
            "@revoked\tnowhere ssh-ed25519 {ED_B}\n|1|x|y ssh-ed25519 {ED_A}\n"
        ));
        assert_eq!(
            (r.entries.len(), r.revoked, r.hashed_lines),
            (0, vec![key(ED_B)], vec![2])
        );
        // A line for this host with a key that cannot be read is an error, not "no entry".
        let err = parse_known_hosts("[server.example]:2222 ssh-ed25519 AAAAnotakey\n", name).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse_known_hosts("[server.example]:2222\n", name).is_err());
        assert!(parse_known_hosts("elsewhere ssh-ed25519 AAAAnotakey\n", name).is_ok());
    }

    #[test]
    fn wildcards_match_like_openssh() {
        for (pattern, text, want) in [
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a*", "a", true),
            ("*c", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.*.example", "x.y.example", true),
            ("*a*b", "xaxxab", true),
            ("**", "", true),
            ("", "x", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
        assert!(host_patterns_match("A,B,*.Example", "x.example"));
        assert!(!host_patterns_match("!x.example,*.example", "x.example"));
        assert!(host_patterns_match("!y.example,*.example", "x.example"));
        assert!(!host_patterns_match("!x.example", "x.example"));
    }

    #[test]
    fn recorded_keys_reads_plain_and_hashed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        // The hashed line is russh's own test entry for example.com (port 22).
        let hashed = "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 \
                      AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
        std::fs::write(
            &path,
            format!("# comment\nEXAMPLE.com\tssh-ed25519 {ED_A}\n{hashed}\nother ssh-ed25519 {ED_B}\n"),
        )
        .unwrap();
        let r = recorded_keys("Example.Com", 22, &path, false).unwrap();
        let lines: Vec<usize> = r.entries.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3], "{r:?}");
        assert_eq!(r.entries[0].1, key(ED_A));
        let r = recorded_keys("other", 22, &path, false).unwrap();
        assert_eq!(r.entries, [(4, key(ED_B))]);
        assert!(
            recorded_keys("example.com", 2222, &path, false)
                .unwrap()
                .entries
                .is_empty()
        );
        // A missing file: an error, unless trusting on first use (which creates it).
        let missing = dir.path().join("missing");
        assert!(recorded_keys("h", 22, &missing, false).is_err());
        assert!(recorded_keys("h", 22, &missing, true).unwrap().entries.is_empty());
    }

    #[test]
    fn trust_on_first_use_appends_a_synced_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("known_hosts");
        append_known_host(&path, "Host.Example", 2222, &key(ED_A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[host.example]:2222 ssh-ed25519 {ED_A}\n"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A file without a final newline gets one before the new line; port 22 is the bare name.
        std::fs::write(&path, "x ssh-ed25519 AAAA").unwrap();
        append_known_host(&path, "h", 22, &key(ED_B)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("x ssh-ed25519 AAAA\nh ssh-ed25519 {ED_B}\n"));
        assert_eq!(parse_known_hosts(&text, "h").unwrap().entries, [(2, key(ED_B))]);
        // A write that cannot happen is an error, not a silent success.
        assert!(append_known_host(dir.path(), "h", 22, &key(ED_A)).is_err());
        assert!(append_known_host(Path::new("/dev/full"), "h", 22, &key(ED_A)).is_err());
    }

    #[test]
    fn known_host_algorithms_come_first() {
        let order = host_key_order(&[]);
        assert_eq!(order, russh::Preferred::default().key.into_owned());
        let ed = key(ED_A);
        assert_eq!(host_key_order(&[(1, ed)])[0], russh::keys::Algorithm::Ed25519);
        // Only ECDSA recorded: asked for first, so a server that also has it presents it.
        let order = host_key_order(&[(1, key(ECDSA))]);
        assert_eq!(
            order[0],
            russh::keys::Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            }
        );
        assert_eq!(order.len(), russh::Preferred::default().key.len());
    }

    #[test]
    fn end_marker_is_found_across_chunks() {
        let end = "tailopsmcp-end-abc";
        let stream = b"out\ntailopsmcp-end-a line\npartial tailopsmcp-end-abc:42\n";
        for split in 1..stream.len() {
            let mut u = UntilEnd::new(end, 1024);
            for chunk in stream.chunks(split) {
                u.push(chunk);
            }
            assert_eq!(u.line(), Some(&b":42"[..]), "chunks of {split}");
            let kept = u.into_kept().kept;
            assert_eq!(kept, b"out\ntailopsmcp-end-a line\npartial ", "chunks of {split}");
        }
        // No marker yet: nothing is lost, and the end line is not complete.
        let mut u = UntilEnd::new(end, 1024);
        u.push(b"no end tailopsmcp-end-ab");
        assert_eq!(u.line(), None);
        assert_eq!(u.into_kept().kept, b"no end tailopsmcp-end-ab");
        // The cap counts what the command wrote, not the end line.
        let mut u = UntilEnd::new(end, 4);
        u.push(b"0123456789tailopsmcp-end-abc:0\n");
        let kept = u.into_kept();
        assert_eq!((kept.kept.as_slice(), kept.dropped), (&b"0123"[..], 6));
    }

    #[test]
    fn output_cap_counts_and_keeps_utf8_whole() {
        let mut c = Capped::new(4);
        c.push(b"ab");
        c.push(b"cdef");
        assert_eq!((c.kept.as_slice(), c.dropped), (&b"abcd"[..], 2));
        // "aé" is 3 bytes; a cap of 2 splits the é: the partial byte is trimmed.
        assert_eq!(into_text("aé".as_bytes()[..2].to_vec(), true), ("a".to_string(), 1));
        assert_eq!(into_text(b"ok".to_vec(), false), ("ok".to_string(), 0));
        let mut c = Capped::new(2);
        c.push("aé".as_bytes());
        assert_eq!(c.into_text(), ("a\n[… 2 bytes cut]".to_string(), 2));
        let mut c = Capped::new(3);
        c.push("aé".as_bytes());
        assert_eq!(
            c.into_text(),
            ("aé".to_string(), 0),
            "exactly at the cap: nothing cut, no marker"
        );
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
