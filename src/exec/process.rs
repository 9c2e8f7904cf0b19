//! The local process runner: starts a program from an argument vector (never through a shell),
//! in a process group of its own, with stdin closed, both output streams read concurrently and
//! capped, and a timeout that kills the whole group.
//!
//! Output cap: each stream keeps at most `Limits::max_output` bytes of what the program wrote;
//! the rest is read, counted and dropped (so the program never blocks on a full pipe). A capped
//! stream's text ends with the marker line [`cut_marker`] (`\n[… N bytes cut]`, after the kept
//! bytes, not counted in them). The cut never splits a UTF-8 character: an incomplete trailing
//! sequence is counted as cut. `Output::truncated_bytes` is the sum over both streams. Bytes
//! that are not UTF-8 are replaced (lossy).
//!
//! Timeout: SIGKILL to the whole process group (`-pgid`), so children and grandchildren die with
//! the program; output written until then is returned with `timed_out: true, status: None`.
//! Dropping the future of [`run`] before it finishes kills the group too. Processes that left
//! the group (`setsid`) are beyond reach. A program that exits normally is not followed by a
//! kill: background processes it started keep running (but [`run`] waits for every holder of
//! its stdout/stderr, within the timeout).
//!
//! Knows nothing about callers or policy: whoever calls `run` already decided the command may run.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{CommandSpec, ExecError, Limits, Output};

/// After a timeout kill, how long to keep reading what the group had already written.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);
/// After a timeout kill, how long to wait for the program to be reaped.
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Run `cmd` on this host under `limits` (see the module doc for caps and the timeout).
///
/// Errors: a program that does not exist → `ExecError::Failed("program `x` not found")`; one
/// that cannot be started (permissions, not executable) → `ExecError::Failed`. A program that
/// runs and exits non-zero is not an error: its status is in the `Output`.
pub async fn run(cmd: &CommandSpec, limits: Limits) -> Result<Output, ExecError> {
    run_with_env(cmd, &[], limits).await
}

/// [`run`] with extra environment variables set for the program (on top of this process's own
/// environment; a name given here replaces an inherited one).
pub async fn run_with_env(cmd: &CommandSpec, env: &[(String, String)], limits: Limits) -> Result<Output, ExecError> {
    let started = Instant::now();
    let mut command = Command::new(&cmd.program);
    for name in super::env_hidden_from_children() {
        command.env_remove(name);
    }
    command
        .args(&cmd.args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| spawn_error(&cmd.program, &e))?;
    // The child leads its own group: its pid is the group id. Until it is reaped its pid
    // cannot be reused, so signalling -pgid reaches only this command's processes.
    let mut group = child.id().map(|pid| GroupGuard {
        pgid: pid as libc::pid_t,
        armed: true,
    });
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let mut stdout = Capped::new(limits.max_output);
    let mut stderr = Capped::new(limits.max_output);
    let mut status: Option<ExitStatus> = None;

    let finished = {
        let work = async {
            let (a, b, s) = tokio::join!(
                stdout.read_all(stdout_pipe.as_mut()),
                stderr.read_all(stderr_pipe.as_mut()),
                wait_into(&mut child, &mut status),
            );
            a.and(b).and(s)
        };
        tokio::time::timeout(limits.timeout, work).await
    };

    let timed_out = match finished {
        Ok(result) => {
            result.map_err(|e| ExecError::Failed(format!("running `{}`: {e}", cmd.program)))?;
            false
        }
        Err(_elapsed) => {
            if let Some(g) = group.as_ref() {
                g.kill();
            }
            // What the group wrote before it died is still in the pipes.
            let _ = tokio::time::timeout(DRAIN_AFTER_KILL, async {
                tokio::join!(
                    stdout.read_all(stdout_pipe.as_mut()),
                    stderr.read_all(stderr_pipe.as_mut())
                )
            })
            .await;
            if status.is_none() {
                let _ = tokio::time::timeout(REAP_AFTER_KILL, child.wait()).await;
            }
            true
        }
    };
    if let Some(g) = group.as_mut() {
        // Reaped (or killed and reaped): nothing of ours is left to kill on drop.
        g.armed = false;
    }

    let (out_text, out_cut) = stdout.finish();
    let (err_text, err_cut) = stderr.finish();
    Ok(Output {
        stdout: out_text,
        stderr: err_text,
        status: if timed_out { None } else { status.and_then(|s| s.code()) },
        truncated_bytes: out_cut + err_cut,
        timed_out,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The marker line appended to a stream's kept text when `cut` bytes were dropped.
pub fn cut_marker(cut: u64) -> String {
    format!("\n[… {cut} bytes cut]")
}

fn spawn_error(program: &str, e: &std::io::Error) -> ExecError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ExecError::Failed(format!("program `{program}` not found")),
        std::io::ErrorKind::PermissionDenied => {
            ExecError::Failed(format!("program `{program}` cannot be run: permission denied"))
        }
        _ => ExecError::Failed(format!("program `{program}` cannot be started: {e}")),
    }
}

async fn wait_into(child: &mut tokio::process::Child, slot: &mut Option<ExitStatus>) -> std::io::Result<()> {
    *slot = Some(child.wait().await?);
    Ok(())
}

/// Kills the command's process group when dropped while armed (the caller's future was
/// dropped mid-run).
struct GroupGuard {
    pgid: libc::pid_t,
    armed: bool,
}

impl GroupGuard {
    fn kill(&self) {
        if self.pgid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// One output stream: the first `max` bytes kept, the rest counted.
struct Capped {
    max: usize,
    kept: Vec<u8>,
    cut: u64,
    done: bool,
}

impl Capped {
    fn new(max: usize) -> Capped {
        Capped {
            max,
            kept: Vec::new(),
            cut: 0,
            done: false,
        }
    }

    /// Read `pipe` to its end (resumable: a dropped call can be continued by another).
    async fn read_all<R: AsyncRead + Unpin>(&mut self, pipe: Option<&mut R>) -> std::io::Result<()> {
        let Some(pipe) = pipe else { return Ok(()) };
        let mut buf = [0u8; 16 * 1024];
        while !self.done {
            let n = pipe.read(&mut buf).await?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.push(&buf[..n]);
        }
        Ok(())
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.max.saturating_sub(self.kept.len());
        let keep = room.min(chunk.len());
        self.kept.extend_from_slice(&chunk[..keep]);
        self.cut += (chunk.len() - keep) as u64;
    }

    /// The kept text (with the cut marker when something was dropped) and the bytes dropped.
    fn finish(mut self) -> (String, u64) {
        if self.cut > 0 {
            // Do not end on half a character: count an incomplete trailing sequence as cut.
            if let Err(e) = std::str::from_utf8(&self.kept)
                && e.error_len().is_none()
            {
                let partial = self.kept.len() - e.valid_up_to();
                if partial < 4 {
                    self.kept.truncate(e.valid_up_to());
                    self.cut += partial as u64;
                }
            }
        }
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.cut > 0 {
            text.push_str(&cut_marker(self.cut));
        }
        (text, self.cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, max_output: usize) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            max_output,
        }
    }

    async fn sh(script: &str, limits: Limits) -> Output {
        run(&CommandSpec::new("sh", ["-c", script]), limits).await.unwrap()
    }

    #[tokio::test]
    async fn arguments_arrive_literally() {
        let tricky = [
            "two words",
            "'single'",
            "\"double\"",
            "a; echo injected",
            "$(echo injected)",
            "`echo injected`",
            "$HOME",
            "*",
            "",
            "line\nbreak",
        ];
        let out = run(
            &CommandSpec::new("printf", ["%s\\0"].into_iter().chain(tricky)),
            Limits::default(),
        )
        .await
        .unwrap();
        assert_eq!(out.status, Some(0));
        let got: Vec<&str> = out.stdout.split('\0').collect();
        assert_eq!(&got[..tricky.len()], &tricky[..]);
        assert_eq!(got[tricky.len()], "");
        assert!(!out.stdout.contains("injected\n"), "{:?}", out.stdout);
    }

    #[tokio::test]
    async fn exit_codes_and_separate_streams() {
        let out = sh("echo out; echo err >&2; exit 3", Limits::default()).await;
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.truncated_bytes, 0);
        assert!(!out.timed_out);

        let ok = run(&CommandSpec::new("true", Vec::<String>::new()), Limits::default())
            .await
            .unwrap();
        assert_eq!(ok.status, Some(0));
        // Killed by a signal: no exit code.
        let killed = sh("kill -9 $$", Limits::default()).await;
        assert_eq!(killed.status, None);
        assert!(!killed.timed_out);
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        let out = run(&CommandSpec::new("cat", Vec::<String>::new()), limits(5000, 1024))
            .await
            .unwrap();
        assert_eq!(out.status, Some(0));
        assert_eq!(out.stdout, "");
        assert!(!out.timed_out);
    }

    #[tokio::test]
    async fn output_is_capped_and_counted_per_stream() {
        // 1 MB on stdout, 300 000 bytes on stderr; 1000 bytes kept of each.
        let out = sh(
            "head -c 1000000 /dev/zero | tr '\\0' a; head -c 300000 /dev/zero | tr '\\0' b >&2",
            limits(20_000, 1000),
        )
        .await;
        assert_eq!(out.status, Some(0));
        assert_eq!(out.stdout, format!("{}{}", "a".repeat(1000), cut_marker(999_000)));
        assert_eq!(out.stderr, format!("{}{}", "b".repeat(1000), cut_marker(299_000)));
        assert_eq!(out.truncated_bytes, 999_000 + 299_000);
        assert!(out.stdout.ends_with("\n[… 999000 bytes cut]"));
    }

    #[tokio::test]
    async fn cut_never_splits_a_character() {
        // "é" is two bytes; a cap of 3 keeps "é" plus half of the next one.
        let out = run(&CommandSpec::new("printf", ["ééé"]), limits(5000, 3))
            .await
            .unwrap();
        assert_eq!(out.stdout, format!("é{}", cut_marker(4)));
        assert_eq!(out.truncated_bytes, 4);
        // Exactly at the cap: nothing cut, no marker.
        let exact = run(&CommandSpec::new("printf", ["abc"]), limits(5000, 3))
            .await
            .unwrap();
        assert_eq!(exact.stdout, "abc");
        assert_eq!(exact.truncated_bytes, 0);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let out = run(&CommandSpec::new("printf", ["a\\377b"]), Limits::default())
            .await
            .unwrap();
        assert_eq!(out.stdout, "a\u{fffd}b");
    }

    #[tokio::test]
    async fn missing_program() {
        let err = run(
            &CommandSpec::new("tailopsmcp-no-such-program", ["x"]),
            Limits::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ExecError::Failed(_)), "{err:?}");
        assert_eq!(err.to_string(), "program `tailopsmcp-no-such-program` not found");
        // A path that is not executable is a different error.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        let err = run(
            &CommandSpec::new(path.to_str().unwrap(), Vec::<String>::new()),
            Limits::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }

    /// Live (not zombie) processes whose process group is `pgid`.
    fn live_members(pgid: i32) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...
            let Some(close) = stat.rfind(')') else { continue };
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                found.push(stat.clone());
            }
        }
        found
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let started = Instant::now();
        // The shell prints its pid (= the group id), starts a background sleep and waits on
        // another one.
        let out = run(
            &CommandSpec::new("sh", ["-c", "echo $$; echo started >&2; sleep 31 & sleep 32"]),
            limits(500, 4096),
        )
        .await
        .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.status, None);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Output written before the kill is kept.
        assert_eq!(out.stderr, "started\n");
        let pgid: i32 = out.stdout.trim().parse().unwrap();
        // The orphaned background sleep is reaped by init shortly after SIGKILL.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = live_members(pgid);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "processes of group {pgid} survived: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_grandchild_holding_the_pipe_counts_against_the_timeout() {
        // The shell exits at once, but its background child keeps stdout open.
        let out = sh("echo $$; sleep 33 &", limits(500, 4096)).await;
        assert!(out.timed_out);
        let pgid: i32 = out.stdout.trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !live_members(pgid).is_empty() {
            assert!(Instant::now() < deadline, "group {pgid} survived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; sleep 34 & sleep 35", pidfile.display());
        let cmd = CommandSpec::new("sh", ["-c", script.as_str()]);
        let fut = run(&cmd, limits(60_000, 1024));
        // Give the shell time to start and write its pid, then drop the future.
        let _ = tokio::time::timeout(Duration::from_millis(500), fut).await;
        let pgid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !live_members(pgid).is_empty() {
            assert!(Instant::now() < deadline, "group {pgid} survived the dropped future");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
