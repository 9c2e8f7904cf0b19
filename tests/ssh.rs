//! The SSH executor (`exec::ssh::Ssh`) against a real OpenSSH sshd on loopback: exact argv
//! (no injection), exit status, output caps, timeouts that kill the remote process group,
//! connection reuse and recovery, host-key refusal (unknown, changed, pin), trust on first use
//! (only for a host with no entry), authentication and reachability errors, the concurrency limit,
//! timeouts killed with every session slot taken (`MaxSessions`), and the sudo policy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tailopsmcp::exec::ssh::{Ssh, SshSettings, SudoPolicy};
use tailopsmcp::exec::{CommandSpec, ExecError, Limits, Output};

use crate::support::netns::skip_or_fail;
use crate::support::sshd::{Sshd, processes_running};

/// A started sshd, or `None` after `skip_or_fail` (panics under `CI=true`).
fn sshd() -> Option<Sshd> {
    match Sshd::start() {
        Ok(s) => Some(s),
        Err(e) => {
            skip_or_fail(&format!("cannot start sshd: {e}"));
            None
        }
    }
}

fn limits(timeout_ms: u64, max_output: usize) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        max_output,
    }
}

fn target(s: &Sshd) -> Ssh {
    Ssh::new("t1", s.settings(), limits(10_000, 64 * 1024), 4).unwrap()
}

fn cmd(program: &str, args: &[&str]) -> CommandSpec {
    CommandSpec::new(program, args.iter().copied())
}

/// `true`, run once by a new target with settings `st`.
async fn run_true(st: SshSettings) -> Result<Output, ExecError> {
    Ssh::new("t1", st, limits(10_000, 1000), 4)
        .unwrap()
        .run(&cmd("true", &[]), false)
        .await
}

/// A unique `sleep` duration so a process can be found by its command line.
fn unique_sleep() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "3{}.{:04}{}",
        std::process::id() % 10,
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test]
async fn arguments_arrive_literally() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    let canary = s.dir().join("pwned");
    let c = canary.display().to_string();
    let args = [
        "a b",
        "it's",
        "\"double\"",
        &format!("$(touch {c})"),
        &format!("`touch {c}`"),
        &format!("; touch {c}"),
        &format!("&& touch {c} #"),
        "| cat",
        "*",
        "~",
        "$HOME",
        "back\\slash",
        "line\nbreak",
        "",
        "-n",
    ];
    let mut argv = vec!["%s\\0"];
    argv.extend(args.iter().copied());
    let out = ssh.run(&cmd("printf", &argv), false).await.unwrap();
    assert_eq!(out.status, Some(0), "{out:?}");
    let got: Vec<&str> = out.stdout.split('\0').collect();
    let mut want: Vec<&str> = args.to_vec();
    want.push(""); // after the last NUL
    assert_eq!(got, want);
    assert!(!canary.exists(), "an argument was interpreted by the remote shell");

    // The program word is quoted too: a "program" with a `;` is one (missing) command name.
    let out = ssh.run(&cmd(&format!("true; touch {c}"), &[]), false).await.unwrap();
    assert_eq!(out.status, Some(127), "{out:?}");
    assert!(!canary.exists());
}

#[tokio::test]
async fn exit_status_and_stderr() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    let out = ssh
        .run(&cmd("sh", &["-c", "echo out; echo err >&2; printf end; exit 3"]), false)
        .await
        .unwrap();
    // Output without a final newline ends where the command stopped writing.
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.status),
        ("out\nend", "err\n", Some(3))
    );
    assert!(!out.timed_out);
    assert_eq!(out.truncated_bytes, 0);
    let out = ssh.run(&cmd("true", &[]), false).await.unwrap();
    assert_eq!(out.status, Some(0));
    let out = ssh.run(&cmd("no-such-program-xyz", &[]), false).await.unwrap();
    assert_eq!(out.status, Some(127));
}

#[tokio::test]
async fn output_is_capped_per_stream() {
    let Some(s) = sshd() else { return };
    let ssh = Ssh::new("t1", s.settings(), limits(10_000, 1000), 4).unwrap();
    let out = ssh
        .run(
            &cmd(
                "sh",
                &[
                    "-c",
                    "yes x | head -c 500000; yes y | head -c 300 >&2; yes z | head -c 1500 >&2",
                ],
            ),
            false,
        )
        .await
        .unwrap();
    assert_eq!(out.status, Some(0));
    assert_eq!(out.stdout, format!("{}\n[… 499000 bytes cut]", "x\n".repeat(500)));
    assert_eq!(
        out.stderr,
        format!("{}{}\n[… 800 bytes cut]", "y\n".repeat(150), "z\n".repeat(350))
    );
    assert_eq!(out.truncated_bytes, 499_000 + 800);
}

#[tokio::test]
async fn timeout_kills_the_remote_process_group() {
    let Some(s) = sshd() else { return };
    let ssh = Ssh::new("t1", s.settings(), limits(1500, 1000), 4).unwrap();
    let (a, b) = (unique_sleep(), unique_sleep());
    // A background child and a foreground one: both belong to the session's process group.
    let script = format!("echo started; sleep {a} & sleep {b}; wait");
    let watcher = {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            (
                processes_running(&format!("sleep {a}")).len(),
                processes_running(&format!("sleep {b}")).len(),
            )
        })
    };
    let started = Instant::now();
    let out = ssh.run(&cmd("sh", &["-c", &script]), false).await.unwrap();
    let took = started.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.status, None);
    assert_eq!(out.stdout, "started\n", "output before the timeout is kept");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    assert_eq!(
        watcher.await.unwrap(),
        (1, 1),
        "both sleeps were running before the timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = [
            processes_running(&format!("sleep {a}")),
            processes_running(&format!("sleep {b}")),
        ];
        if left.iter().all(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "remote processes survived the timeout: {left:?}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection is still usable afterwards.
    let out = ssh.run(&cmd("echo", &["after"]), false).await.unwrap();
    assert_eq!(out.stdout, "after\n");
    assert_eq!(ssh.connections_opened(), 1);
}

#[tokio::test]
async fn one_connection_for_many_calls() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    for i in 0..50 {
        let out = ssh.run(&cmd("echo", &[&i.to_string()]), false).await.unwrap();
        assert_eq!(out.stdout, format!("{i}\n"));
    }
    // One after another, the calls also share one persistent shell on that connection.
    assert_eq!((ssh.connections_opened(), ssh.shells_started()), (1, 1));
    assert_eq!(remote_shells(&s).len(), 1, "{:?}", s.session_processes());
    // Concurrent callers share it too (the first call's connect is not duplicated).
    let fresh = target(&s);
    let calls = (0..8).map(|_| {
        let t = fresh.clone();
        async move { t.run(&cmd("true", &[]), false).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().status, Some(0));
    }
    assert_eq!((ssh.connections_opened(), fresh.connections_opened()), (1, 1));
}

#[tokio::test]
async fn dropped_connection_is_re_established() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    assert_eq!(ssh.run(&cmd("true", &[]), false).await.unwrap().status, Some(0));
    assert!(!s.session_processes().is_empty());
    s.kill_sessions();
    let out = ssh.run(&cmd("echo", &["again"]), false).await.unwrap();
    assert_eq!(out.stdout, "again\n");
    assert_eq!(ssh.connections_opened(), 2);
    // Immediately after the kill, before the client could notice: still one retry, one new connection.
    s.kill_sessions();
    tokio::task::yield_now().await;
    let out = ssh.run(&cmd("echo", &["third"]), false).await.unwrap();
    assert_eq!(out.stdout, "third\n");
    assert_eq!(ssh.connections_opened(), 3);
}

#[tokio::test]
async fn unknown_host_key_is_refused() {
    let Some(s) = sshd() else { return };
    // A known_hosts with an entry for another port only.
    let other = s.known_hosts_line().replace(&format!(":{} ", s.port()), ":1 ");
    let st = SshSettings {
        known_hosts: Some(s.write_known_hosts("kh_other", &[other])),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExecError::HostVerification(_)), "{msg}");
    let expected = format!("host key for [127.0.0.1]:{} is not in known_hosts", s.port());
    assert!(msg.contains(&expected), "{msg}");
    assert!(msg.contains(&s.host_key_fingerprint()), "{msg}");
    assert!(!msg.contains("CHANGED"), "{msg}");
    // A known_hosts file that does not exist refuses too (it is not created without TOFU).
    let missing = s.dir().join("nope");
    let st = SshSettings {
        known_hosts: Some(missing.clone()),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    assert!(matches!(err, ExecError::HostVerification(_)), "{err}");
    assert!(!missing.exists());
}

#[tokio::test]
async fn changed_host_key_is_refused_loudly() {
    let Some(s) = sshd() else { return };
    let old = s.new_key("oldhostkey");
    let old_pub = std::fs::read_to_string(old.with_extension("pub")).unwrap();
    let mut parts = old_pub.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}",
        s.port(),
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    let old_fp = crate::support::sshd::fingerprint(&old.with_extension("pub"));
    let st = SshSettings {
        known_hosts: Some(s.write_known_hosts("kh_changed", &["# comment".into(), line])),
        trust_on_first_use: true, // never overrides a changed key
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExecError::HostVerification(_)), "{msg}");
    assert!(msg.contains("HOST KEY CHANGED"), "{msg}");
    assert!(
        msg.contains(&s.host_key_fingerprint()) && msg.contains(&old_fp),
        "{msg}"
    );
    assert!(msg.contains("line 2"), "{msg}");

    // A key on an `@revoked` line is refused even next to a matching entry.
    let host_key = s.known_hosts_line().split_once(' ').unwrap().1.to_string();
    let lines = [s.known_hosts_line(), format!("@revoked * {host_key}")];
    let st = SshSettings {
        known_hosts: Some(s.write_known_hosts("kh_revoked", &lines)),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    assert!(
        matches!(err, ExecError::HostVerification(_)) && err.to_string().contains("@revoked"),
        "{err}"
    );

    // A pin that does not match is refused the same loud way; one that matches is enough alone.
    let st = SshSettings {
        known_hosts: None,
        host_key_fingerprint: Some(old_fp.clone()),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    assert!(err.to_string().contains("HOST KEY MISMATCH"), "{err}");
    let st = SshSettings {
        known_hosts: None,
        host_key_fingerprint: Some(s.host_key_fingerprint()),
        ..s.settings()
    };
    let out = run_true(st).await.unwrap();
    assert_eq!(out.status, Some(0));
}

#[tokio::test]
async fn trust_on_first_use_records_the_key() {
    let Some(s) = sshd() else { return };
    let path = s.dir().join("tofu_known_hosts");
    let st = SshSettings {
        known_hosts: Some(path.clone()),
        trust_on_first_use: true,
        ..s.settings()
    };
    assert_eq!(run_true(st).await.unwrap().status, Some(0));
    let recorded = std::fs::read_to_string(&path).unwrap();
    assert_eq!(recorded.trim(), s.known_hosts_line().trim());
    // Without TOFU the recorded file now verifies the host.
    let st = SshSettings {
        known_hosts: Some(path.clone()),
        ..s.settings()
    };
    let ssh = Ssh::new("t2", st, limits(10_000, 1000), 4).unwrap();
    assert_eq!(
        ssh.check().await.unwrap().host_key_fingerprint,
        s.host_key_fingerprint()
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), recorded, "recorded once");
}

#[tokio::test]
async fn wrong_client_key_is_an_auth_error() {
    let Some(s) = sshd() else { return };
    let stranger = s.new_key("stranger");
    let secret = std::fs::read_to_string(&stranger).unwrap();
    let st = SshSettings {
        key_file: Some(stranger),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExecError::Auth(_)), "{msg}");
    assert!(msg.contains(s.user()), "{msg}");
    let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!msg.contains(&body[..20]), "key material in the error: {msg}");

    // A key file that is not a key, and one that does not exist: configuration errors.
    let junk = s.dir().join("junk");
    std::fs::write(&junk, "not a key").unwrap();
    let st = SshSettings {
        key_file: Some(junk),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    assert!(matches!(err, ExecError::Config(_)), "{err}");
    assert!(!err.to_string().contains("not a key"), "{err}");
    let st = SshSettings {
        key_file: Some(PathBuf::from("/nonexistent/key")),
        ..s.settings()
    };
    let err = run_true(st).await.unwrap_err();
    assert!(matches!(err, ExecError::Config(_)), "{err}");
}

#[tokio::test]
async fn unreachable_port() {
    let Some(s) = sshd() else { return };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let st = SshSettings { port, ..s.settings() };
    let ssh = Ssh::new("t1", st, limits(5_000, 1000), 4).unwrap();
    let started = Instant::now();
    let err = ssh.run(&cmd("true", &[]), false).await.unwrap_err();
    assert!(matches!(err, ExecError::Unreachable(_)), "{err}");
    assert!(err.to_string().contains(&format!("[127.0.0.1]:{port}")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = ssh.check().await.unwrap_err();
    assert!(matches!(err, ExecError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn concurrency_limit_is_honoured() {
    let Some(s) = sshd() else { return };
    let ssh = Ssh::new("t1", s.settings(), limits(20_000, 1000), 2).unwrap();
    let dir = s.dir().join("running");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.display().to_string();
    // Each call marks itself running, reports how many are, lingers, and unmarks itself.
    let script = r#"touch "$1/$$"; ls "$1" | wc -l; sleep 0.3; rm "$1/$$""#;
    let calls = (0..6).map(|_| {
        let (t, d) = (ssh.clone(), d.clone());
        async move { t.run(&cmd("sh", &["-c", script, "sh", &d]), false).await }
    });
    let started = Instant::now();
    let seen: Vec<usize> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().stdout.trim().parse().unwrap())
        .collect();
    assert!(seen.iter().all(|&n| n <= 2), "{seen:?}");
    assert!(seen.contains(&2), "the two permits were used in parallel: {seen:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "6 calls × 0.3 s / 2 at once"
    );
    assert_eq!(ssh.connections_opened(), 1);
}

#[tokio::test]
async fn sudo_only_for_allowed_programs() {
    let Some(s) = sshd() else { return };
    let none = target(&s);
    let err = none.run(&cmd("id", &["-u"]), true).await.unwrap_err();
    assert!(matches!(err, ExecError::Refused(_)), "{err}");
    assert_eq!(none.connections_opened(), 0, "refused before connecting");
    let st = SshSettings {
        sudo: SudoPolicy::Allow(vec!["id".into()]),
        ..s.settings()
    };
    let allow = Ssh::new("t1", st, limits(10_000, 1000), 4).unwrap();
    let err = allow.run(&cmd("whoami", &[]), true).await.unwrap_err();
    assert!(err.to_string().contains("not on the sudo allow-list"), "{err}");
    let out = allow.run(&cmd("id", &["-u"]), true).await.unwrap();
    assert_eq!((out.stdout.as_str(), out.status), ("0\n", Some(0)), "{out:?}");

    // Tools run commands through `Runner`: an allow-listed program goes under `sudo -n` (sudo
    // sets SUDO_COMMAND), any other one does not.
    use tailopsmcp::exec::remote::Runner;
    let st = SshSettings {
        sudo: SudoPolicy::Allow(vec!["env".into()]),
        ..s.settings()
    };
    let allow_env = Ssh::new("t2", st, limits(10_000, 64 * 1024), 4).unwrap();
    let out = Runner::run(&allow_env, &cmd("env", &[])).await.unwrap();
    assert!(out.stdout.contains("SUDO_COMMAND="), "not run under sudo: {out:?}");
    let out = Runner::run(&none, &cmd("env", &[])).await.unwrap();
    assert!(!out.stdout.contains("SUDO_COMMAND="), "run under sudo: {out:?}");
    let out = Runner::run(&allow_env, &cmd("printenv", &["SUDO_COMMAND"]))
        .await
        .unwrap();
    assert_eq!(out.status, Some(1), "printenv is not allow-listed: {out:?}");
}

#[tokio::test]
async fn read_file_caps_and_sizes() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    let path = s.dir().join("a file with 'quotes' and $(spaces)");
    let content: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    std::fs::write(&path, &content).unwrap();
    let p = path.display().to_string();
    let (bytes, size) = ssh.read_file(&p, 10).await.unwrap();
    assert_eq!((bytes.as_slice(), size), (&content[..10], 1000));
    let (bytes, size) = ssh.read_file(&p, 5000).await.unwrap();
    assert_eq!((bytes, size), (content.clone(), 1000));
    let err = ssh
        .read_file(&s.dir().join("missing").display().to_string(), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Failed(_)), "{err}");
}

#[tokio::test]
async fn check_reports_the_server() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    let check = ssh.check().await.unwrap();
    assert_eq!(check.host_key_fingerprint, s.host_key_fingerprint());
    assert!(check.server_version.starts_with("SSH-2.0-OpenSSH"), "{check:?}");
    assert!(check.latency_ms > 0.0 && check.connect_ms > 0.0);
    // The checked connection is the one later calls use.
    ssh.run(&cmd("true", &[]), false).await.unwrap();
    assert_eq!(ssh.connections_opened(), 1);
}

/// Authentication through a real `ssh-agent`. `agent = true` reads `$SSH_AUTH_SOCK`, and a test
/// must not change its own process environment (other tests run on other threads), so this test
/// runs [`agent_auth_in_child`] in a child copy of this test binary with the variable set.
#[tokio::test]
async fn agent_authenticates() {
    if std::env::var_os(AGENT_CHILD).is_some() {
        return agent_auth_in_child().await;
    }
    let Some(s) = sshd() else { return };
    let socket = s.dir().join("agent.sock");
    let mut agent = match std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return skip_or_fail(&format!("cannot start ssh-agent (package openssh-client): {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let added = std::process::Command::new("ssh-add")
        .arg(s.client_key_path())
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "ssh-add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let known_hosts = s.write_known_hosts("known_hosts", &[s.known_hosts_line()]);
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ssh::agent_authenticates", "--nocapture", "--test-threads=1"])
        .env(AGENT_CHILD, "1")
        .env("SSH_AUTH_SOCK", &socket)
        .env("TOPS_SSH_TEST_PORT", s.port().to_string())
        .env("TOPS_SSH_TEST_USER", s.user())
        .env("TOPS_SSH_TEST_KNOWN_HOSTS", &known_hosts)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child ran the agent test: {stdout}");
}

/// Set in the child copy of the test binary that [`agent_authenticates`] starts.
const AGENT_CHILD: &str = "TAILOPSMCP_TEST_SSH_AGENT_CHILD";

/// Run by [`agent_authenticates`] in its child process, whose environment names the agent.
async fn agent_auth_in_child() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by agent_authenticates"));
    let st = SshSettings {
        host: "127.0.0.1".into(),
        port: var("TOPS_SSH_TEST_PORT").parse().unwrap(),
        user: var("TOPS_SSH_TEST_USER"),
        key_file: None,
        agent: true,
        known_hosts: Some(var("TOPS_SSH_TEST_KNOWN_HOSTS").into()),
        host_key_fingerprint: None,
        trust_on_first_use: false,
        sudo: SudoPolicy::None,
    };
    let ssh = Ssh::new("t1", st, limits(10_000, 1000), 4).unwrap();
    let out = ssh.run(&cmd("echo", &["via agent"]), false).await.unwrap();
    assert_eq!(out.stdout, "via agent\n");
}

/// The shells under sshd that serve this test's commands (`/bin/sh` reading from the channel).
fn remote_shells(s: &Sshd) -> Vec<u32> {
    s.session_processes()
        .into_iter()
        .filter(|(_, cmdline)| cmdline == "/bin/sh")
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test]
async fn the_persistent_shell_answers_as_a_channel_would() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    // A command reading stdin gets end of file, not the script that follows it.
    let out = ssh.run(&cmd("cat", &[]), false).await.unwrap();
    assert_eq!((out.stdout.as_str(), out.status), ("", Some(0)));
    let out = ssh.run(&cmd("echo", &["still", "here"]), false).await.unwrap();
    assert_eq!(out.stdout, "still here\n");
    // A word that looks like the end line is just output (the real one carries a random nonce).
    let out = ssh
        .run(&cmd("printf", &["%s\\n", "tailopsmcp-end-0:0"]), false)
        .await
        .unwrap();
    assert_eq!((out.stdout.as_str(), out.status), ("tailopsmcp-end-0:0\n", Some(0)));
    assert_eq!((ssh.connections_opened(), ssh.shells_started()), (1, 1));
}

#[tokio::test]
async fn shell_builtins_that_change_state_get_their_own_channel() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    let before = ssh.run(&cmd("pwd", &[]), false).await.unwrap().stdout;
    assert_ne!(before, "/tmp\n");
    ssh.run(&cmd("cd", &["/tmp"]), false).await.unwrap();
    ssh.run(&cmd("export", &["TAILOPS_LEAK=1"]), false).await.unwrap();
    let out = ssh.run(&cmd("exit", &["3"]), false).await.unwrap();
    assert_eq!(out.status, Some(3), "exit ran in a shell of its own");
    assert_eq!(ssh.run(&cmd("pwd", &[]), false).await.unwrap().stdout, before);
    let env = ssh.run(&cmd("env", &[]), false).await.unwrap().stdout;
    assert!(!env.contains("TAILOPS_LEAK"), "{env}");
    assert_eq!(ssh.shells_started(), 1, "the persistent shell survived");
}

#[tokio::test]
async fn a_shell_that_dies_is_replaced() {
    let Some(s) = sshd() else { return };
    let ssh = target(&s);
    assert_eq!(ssh.run(&cmd("true", &[]), false).await.unwrap().status, Some(0));
    // Killed while idle: noticed before the next command is sent, which runs in a new shell.
    let shells = remote_shells(&s);
    assert_eq!(shells.len(), 1);
    // SAFETY: kill(2) on the shell this test's sshd started.
    unsafe { libc::kill(shells[0] as libc::pid_t, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = ssh.run(&cmd("echo", &["next"]), false).await.unwrap();
    assert_eq!(out.stdout, "next\n");
    assert_eq!(ssh.shells_started(), 2);
    // Killed while running a command: that call fails clearly (it may have run, so it is not
    // retried), and the next one gets a new shell on the same connection.
    let err = ssh
        .run(&cmd("sh", &["-c", "kill -s KILL $PPID; sleep 5"]), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ended before the command finished"), "{err}");
    let out = ssh.run(&cmd("echo", &["after"]), false).await.unwrap();
    assert_eq!(out.stdout, "after\n");
    assert_eq!((ssh.connections_opened(), ssh.shells_started()), (1, 3));
}

#[tokio::test]
async fn idle_shells_stay_within_the_channel_limit() {
    let Some(s) = sshd() else { return };
    let ssh = Ssh::new("t1", s.settings(), limits(10_000, 1000), 3).unwrap();
    // Six overlapping calls: never more than three shells (max_concurrent), all kept for reuse.
    let calls = (0..6).map(|_| {
        let t = ssh.clone();
        async move { t.run(&cmd("sleep", &["0.2"]), false).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().status, Some(0));
    }
    assert_eq!(ssh.shells_started(), 3);
    assert_eq!(remote_shells(&s).len(), 3);
    // A program that needs a channel of its own first closes an idle shell to stay within the
    // limit (sshd's MaxSessions counts idle shells too).
    assert_eq!(ssh.run(&cmd("cd", &["/"]), false).await.unwrap().status, Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while remote_shells(&s).len() > 2 {
        assert!(Instant::now() < deadline, "{:?}", s.session_processes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no process on this machine runs `sleep ARG` and none under the daemon (zombies
/// included, so sshd has reaped the session and freed its slot) mentions `ARG`.
async fn wait_until_gone(s: &Sshd, arg: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let running = processes_running(&format!("sleep {arg}"));
        let sessions: Vec<_> = s
            .session_processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains(arg))
            .collect();
        if running.is_empty() && sessions.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`sleep {arg}` survived its timeout: {running:?} {sessions:?}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// sshd keeps a closed session's slot while its process runs, so with `max_concurrent` equal to
/// `MaxSessions` and the idle pool full there is no free slot for a new channel after a timeout:
/// the kill must run in an idle shell.
#[tokio::test]
async fn timeout_kill_needs_no_free_session_slot() {
    let s = match Sshd::start_with_max_sessions(2) {
        Ok(s) => s,
        Err(e) => return skip_or_fail(&format!("cannot start sshd: {e}")),
    };
    let ssh = Ssh::new("t1", s.settings(), limits(1000, 1000), 2).unwrap();
    // Two overlapping calls park two shells: every session slot of the connection is taken.
    let calls = (0..2).map(|_| {
        let t = ssh.clone();
        async move { t.run(&cmd("sleep", &["0.3"]), false).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().status, Some(0));
    }
    assert_eq!((ssh.shells_started(), remote_shells(&s).len()), (2, 2));

    let marker = unique_sleep();
    let out = ssh.run(&cmd("sleep", &[&marker]), false).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    wait_until_gone(&s, &marker, Duration::from_secs(2)).await;

    // A command on a channel of its own (a state-changing builtin), next to the idle shell.
    let marker = unique_sleep();
    let out = ssh
        .run(&cmd("eval", &[&format!("sleep {marker}")]), false)
        .await
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    wait_until_gone(&s, &marker, Duration::from_secs(2)).await;

    // Every slot is free again: the shell that ran the kills serves the next call, and two
    // calls at once still get a shell each.
    let out = ssh.run(&cmd("echo", &["after"]), false).await.unwrap();
    assert_eq!(out.stdout, "after\n");
    let calls = (0..2).map(|_| {
        let t = ssh.clone();
        async move { t.run(&cmd("sleep", &["0.3"]), false).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().status, Some(0));
    }
    assert_eq!(
        ssh.connections_opened(),
        1,
        "the kills needed no connection of their own"
    );
}

/// Every session slot held by a timed-out command and no idle shell: the kills go over a
/// connection of their own.
#[tokio::test]
async fn timeouts_holding_every_session_slot_are_killed() {
    let s = match Sshd::start_with_max_sessions(2) {
        Ok(s) => s,
        Err(e) => return skip_or_fail(&format!("cannot start sshd: {e}")),
    };
    let ssh = Ssh::new("t1", s.settings(), limits(1000, 1000), 2).unwrap();
    let markers = [unique_sleep(), unique_sleep()];
    let calls = markers.iter().map(|m| {
        let t = ssh.clone();
        async move { t.run(&cmd("sleep", &[m]), false).await }
    });
    for r in futures::future::join_all(calls).await {
        assert!(r.unwrap().timed_out);
    }
    for m in &markers {
        wait_until_gone(&s, m, Duration::from_secs(2)).await;
    }
    let out = ssh.run(&cmd("echo", &["after"]), false).await.unwrap();
    assert_eq!(out.stdout, "after\n");
}

/// A public key line `TYPE BASE64` of a fresh key of `kind` (`ssh-keygen -t`) in the test dir.
fn other_key(s: &Sshd, kind: &str) -> String {
    let path = s.dir().join(format!("other-{kind}"));
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "other", "-f"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

/// Trust on first use only for a host with no entry at all: a recorded key of another type (the
/// server offers only ed25519) is a changed key, and so is one recorded under a wildcard pattern
/// or another spelling of the name. The file is left as it was.
#[tokio::test]
async fn trust_on_first_use_refuses_a_host_with_other_entries() {
    let Some(s) = sshd() else { return };
    let port = s.port();
    let ecdsa = other_key(&s, "ecdsa");
    let other_ed = other_key(&s, "ed25519");
    for (host, line) in [
        ("127.0.0.1", format!("[127.0.0.1]:{port} {ecdsa}")),
        ("127.0.0.1", format!("[127.0.0.1]:* {other_ed}")),
        ("127.0.0.1", format!("[127.0.0.?]:{port}\t{other_ed}")),
        ("localhost", format!("[LocalHost]:{port} {other_ed}")),
    ] {
        let path = s.write_known_hosts("kh_other_type", std::slice::from_ref(&line));
        let before = std::fs::read_to_string(&path).unwrap();
        let st = SshSettings {
            host: host.into(),
            known_hosts: Some(path.clone()),
            trust_on_first_use: true,
            ..s.settings()
        };
        let err = run_true(st).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ExecError::HostVerification(_)), "{line}: {msg}");
        assert!(msg.contains("HOST KEY CHANGED"), "{line}: {msg}");
        assert!(
            msg.contains(&s.host_key_fingerprint()) && msg.contains("line 1"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            before,
            "{line}: the file is unchanged"
        );
    }
    // The right key under a wildcard pattern, tab-separated, verifies the host without TOFU.
    let key = s.known_hosts_line().split_once(' ').unwrap().1.replace(' ', "\t");
    let st = SshSettings {
        known_hosts: Some(s.write_known_hosts("kh_wildcard", &[format!("[127.0.0.*]:{port}\t{key}")])),
        ..s.settings()
    };
    let out = run_true(st).await.unwrap();
    assert_eq!(out.status, Some(0));
}
