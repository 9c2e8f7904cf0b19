//! Integration tests of `tailopsmcp::exec::docker` against real engines: the shared dockerd on a
//! unix socket running busybox containers (list, inspect, start/stop/restart/pause/unpause, logs,
//! stats), a second dockerd behind `tcp://` + mutual TLS, a plain-TCP forwarder for the opt-in
//! path, and endpoints that are closed or never answer.
//!
//! Each test makes its own uniquely named containers and removes them (the harness's `Container`
//! guard), so tests run in parallel on the one engine. Only the executor's public API is used.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tailopsmcp::exec::docker::{Docker, DockerSettings, LogQuery, LogStream};
use tailopsmcp::exec::{ExecError, Limits};

use crate::support::docker::{
    Container, TlsEngine, docker, ensure_dockerd, ensure_tls_dockerd, run_container, run_container_with, write_other_ca,
};
use crate::support::netns::skip_or_fail;

/// A command that stops at once on SIGTERM (a shell as PID 1 ignores signals it does not trap).
const SLEEPER: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"];

fn name(tag: &str) -> String {
    format!("tops-{tag}-{}", std::process::id())
}

/// The shared engine's `DOCKER_HOST`, or `None` after `skip_or_fail`.
fn host() -> Option<String> {
    match ensure_dockerd() {
        Ok(host) => Some(host),
        Err(e) => {
            skip_or_fail(&format!("docker engine: {e}"));
            None
        }
    }
}

fn executor(host: &str) -> Docker {
    let settings = DockerSettings {
        endpoint: host.to_string(),
        ..DockerSettings::default()
    };
    Docker::new("test-docker", settings, Limits::default()).expect("executor for the shared engine")
}

fn run(host: &str, name: &str, options: &[&str], cmd: &[&str]) -> Container {
    run_container_with(host, name, options, cmd).unwrap_or_else(|e| panic!("run container {name}: {e}"))
}

fn tls_engine() -> Option<TlsEngine> {
    match ensure_tls_dockerd() {
        Ok(engine) => Some(engine),
        Err(e) => {
            skip_or_fail(&format!("TLS docker engine: {e}"));
            None
        }
    }
}

fn tls_settings(engine: &TlsEngine, ca: Option<PathBuf>, cert: PathBuf, key: PathBuf) -> DockerSettings {
    DockerSettings {
        endpoint: engine.endpoint.clone(),
        tls_ca: ca,
        tls_cert: Some(cert),
        tls_key: Some(key),
        insecure_plain_tcp: false,
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn query(tail: usize) -> LogQuery {
    LogQuery {
        tail,
        since: None,
        grep: None,
        regex: false,
        max_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn docker_list_and_inspect_busybox_containers() {
    let Some(host) = host() else { return };
    let d = executor(&host);
    let web_name = name("list-web");
    let done_name = name("list-done");
    let bind = tempfile::tempdir().unwrap();
    let bind_spec = format!("{}:/data:ro", bind.path().display());
    let web = run(
        &host,
        &web_name,
        &[
            "-e",
            "POSTGRES_PASSWORD=hunter2",
            "-e",
            "PLAIN=visible",
            "-e",
            "DATABASE_URL=postgres://app:s3cr3t@db:5432/app",
            "--label",
            "com.docker.compose.project=tops",
            "--label",
            "com.docker.compose.service=web",
            "--restart",
            "on-failure:3",
            "-v",
            &bind_spec,
        ],
        SLEEPER,
    );
    let done = run(&host, &done_name, &[], &["true"]);
    wait_for("the short container to exit", || async {
        d.inspect(&done_name).await.is_ok_and(|c| c.state.status == "exited")
    })
    .await;

    let running = d.list(false).await.expect("list running");
    let w = running
        .iter()
        .find(|c| c.name == web_name)
        .expect("web container listed");
    assert_eq!(w.id, web.id[..12]);
    assert_eq!(w.image, "local/busybox:tops");
    assert_eq!(w.state, "running");
    assert!(w.status.starts_with("Up"), "{}", w.status);
    assert!(w.created.is_some());
    assert_eq!(w.compose_project.as_deref(), Some("tops"));
    assert_eq!(w.compose_service.as_deref(), Some("web"));
    assert!(w.labels.contains_key("tailopsmcp.test"), "{:?}", w.labels);
    assert!(
        !running.iter().any(|c| c.name == done_name),
        "stopped container listed without all"
    );
    let all = d.list(true).await.expect("list all");
    let x = all
        .iter()
        .find(|c| c.name == done_name)
        .expect("exited container listed with all");
    assert_eq!(x.state, "exited");
    assert_eq!(x.id, done.id[..12]);

    // By name and by short id: the same container.
    let by_name = d.inspect(&web_name).await.expect("inspect by name");
    let by_id = d.inspect(&web.id[..12]).await.expect("inspect by id");
    assert_eq!(by_name, by_id);
    assert_eq!(by_name.id, web.id);
    assert_eq!(by_name.name, web_name);
    assert_eq!(by_name.image.as_deref(), Some("local/busybox:tops"));
    assert_eq!(by_name.cmd, SLEEPER);
    assert!(by_name.state.running && !by_name.state.paused);
    assert_eq!(by_name.state.status, "running");
    assert!(by_name.state.pid.is_some_and(|p| p > 0));
    assert_eq!(by_name.restart_policy.name, "on-failure");
    assert_eq!(by_name.restart_policy.maximum_retry_count, Some(3));
    let env = |k: &str| {
        by_name
            .env
            .iter()
            .find(|e| e.name == k)
            .unwrap_or_else(|| panic!("env {k}"))
    };
    assert_eq!(env("POSTGRES_PASSWORD").value, "[REDACTED]");
    assert!(env("POSTGRES_PASSWORD").redacted);
    assert_eq!(env("PLAIN").value, "visible");
    assert_eq!(env("DATABASE_URL").value, "postgres://app:[REDACTED]@db:5432/app");
    let json = serde_json::to_string(&by_name).unwrap();
    assert!(!json.contains("hunter2") && !json.contains("s3cr3t"), "{json}");
    assert_eq!(
        by_name.labels.get("com.docker.compose.service").map(String::as_str),
        Some("web")
    );
    let mount = by_name
        .mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/data"))
        .expect("bind mount");
    assert_eq!(mount.kind.as_deref(), Some("bind"));
    assert!(!mount.read_write);
    assert_eq!(by_name.network_mode.as_deref(), Some("none"));
    assert!(
        by_name.networks.iter().any(|n| n.name == "none"),
        "{:?}",
        by_name.networks
    );

    let exited = d.inspect(&done_name).await.expect("inspect exited");
    assert_eq!(exited.state.exit_code, Some(0));
    assert!(!exited.state.running);
}

#[tokio::test]
async fn docker_start_stop_restart_pause_unpause() {
    let Some(host) = host() else { return };
    let d = executor(&host);
    let n = name("actions");
    let c = run(&host, &n, &[], SLEEPER);
    let short = &c.id[..12];

    let stopped = d.stop(&n, Some(5)).await.expect("stop");
    assert_eq!(
        (stopped.state_before.as_str(), stopped.state_after.as_str()),
        ("running", "exited")
    );
    assert_eq!((stopped.id.as_str(), stopped.name.as_str()), (short, n.as_str()));
    // Stopping a stopped container changes nothing and is not an error.
    let again = d.stop(&n, Some(5)).await.expect("stop again");
    assert_eq!(
        (again.state_before.as_str(), again.state_after.as_str()),
        ("exited", "exited")
    );

    let started = d.start(short).await.expect("start by short id");
    assert_eq!(
        (started.state_before.as_str(), started.state_after.as_str()),
        ("exited", "running")
    );

    let before = d.inspect(&n).await.unwrap().state.started_at;
    let restarted = d.restart(&n, Some(5)).await.expect("restart");
    assert_eq!(
        (restarted.state_before.as_str(), restarted.state_after.as_str()),
        ("running", "running")
    );
    let after = d.inspect(&n).await.unwrap().state.started_at;
    assert_ne!(before, after, "restart must start the container anew");

    let paused = d.pause(&n).await.expect("pause");
    assert_eq!(
        (paused.state_before.as_str(), paused.state_after.as_str()),
        ("running", "paused")
    );
    assert!(d.inspect(&n).await.unwrap().state.paused);
    match d.pause(&n).await {
        Err(ExecError::Failed(msg)) => assert!(msg.contains("paused"), "{msg}"),
        other => panic!("pausing a paused container: {other:?}"),
    }
    let unpaused = d.unpause(&n).await.expect("unpause");
    assert_eq!(
        (unpaused.state_before.as_str(), unpaused.state_after.as_str()),
        ("paused", "running")
    );

    // A stop timeout that would outlast the target's own timeout is refused up front.
    match d.stop(&n, Some(3600)).await {
        Err(ExecError::Refused(msg)) => assert!(msg.contains("stop timeout"), "{msg}"),
        other => panic!("long stop timeout: {other:?}"),
    }
    assert_eq!(d.inspect(&n).await.unwrap().state.status, "running");
}

#[tokio::test]
async fn docker_unknown_container_is_a_clear_failure() {
    let Some(host) = host() else { return };
    let d = executor(&host);
    let missing = name("does-not-exist");
    let expected = format!("no such container `{missing}`");
    let results = [
        d.inspect(&missing).await.map(|_| ()),
        d.start(&missing).await.map(|_| ()),
        d.stop(&missing, None).await.map(|_| ()),
        d.restart(&missing, None).await.map(|_| ()),
        d.pause(&missing).await.map(|_| ()),
        d.unpause(&missing).await.map(|_| ()),
        d.logs(&missing, query(10)).await.map(|_| ()),
        d.stats(&missing).await.map(|_| ()),
    ];
    for r in results {
        match r {
            Err(ExecError::Failed(msg)) => assert_eq!(msg, expected),
            other => panic!("unknown container: {other:?}"),
        }
    }
}

#[tokio::test]
async fn docker_logs_tail_grep_cap_and_since() {
    let Some(host) = host() else { return };
    let d = executor(&host);
    let n = name("logs");
    let script = "i=0; while [ $i -lt 50 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; \
                  sleep 2; echo late; exec sleep 3600";
    let _c = run(&host, &n, &[], &["sh", "-c", script]);
    wait_for("all log lines", || async {
        d.logs(&n, query(200))
            .await
            .is_ok_and(|l| l.lines.iter().any(|x| x.text == "late"))
    })
    .await;

    let all = d.logs(&n, query(1000)).await.expect("all logs");
    assert_eq!(all.lines.len(), 101, "{:?}", all.lines);
    assert_eq!(
        (
            all.lines_read,
            all.lines_matched,
            all.truncated_lines,
            all.truncated_bytes
        ),
        (101, 101, 0, 0)
    );
    assert!(all.lines.iter().all(|l| l.timestamp.is_some()));
    let out0 = all.lines.iter().find(|l| l.text == "out 0").expect("out 0");
    let err0 = all.lines.iter().find(|l| l.text == "err 0").expect("err 0");
    assert_eq!((out0.stream, err0.stream), (LogStream::Stdout, LogStream::Stderr));
    let sorted = all.lines.windows(2).all(|w| w[0].timestamp <= w[1].timestamp);
    assert!(sorted, "lines are in time order");

    // tail: the engine's last N lines.
    let tail = d.logs(&n, query(3)).await.expect("tail 3");
    assert_eq!(tail.lines.len(), 3);
    assert_eq!(tail.lines.last().map(|l| l.text.as_str()), Some("late"));

    // grep filters the lines read.
    let grep = d
        .logs(
            &n,
            LogQuery {
                grep: Some("out 4".into()),
                ..query(1000)
            },
        )
        .await
        .expect("grep");
    let texts: Vec<&str> = grep.lines.iter().map(|l| l.text.as_str()).collect();
    let expected: Vec<String> = std::iter::once("out 4".to_string())
        .chain((40..50).map(|i| format!("out {i}")))
        .collect();
    assert_eq!(texts, expected);
    assert!(grep.lines.iter().all(|l| l.stream == LogStream::Stdout));
    assert_eq!((grep.lines_read, grep.lines_matched), (101, 11));

    // The byte cap keeps the newest lines and says what it dropped.
    let capped = d
        .logs(
            &n,
            LogQuery {
                max_bytes: 20,
                ..query(1000)
            },
        )
        .await
        .expect("capped");
    let kept: usize = capped.lines.iter().map(|l| l.text.len()).sum();
    assert!(kept <= 20, "{kept}");
    assert_eq!(capped.lines.last().map(|l| l.text.as_str()), Some("late"));
    assert_eq!(capped.truncated_lines + capped.lines.len(), 101);
    assert!(capped.truncated_bytes > 0);
    assert_eq!(capped.max_bytes, 20);
    // ... and the target's output cap lowers it further.
    let small = Docker::new(
        "small",
        DockerSettings {
            endpoint: host.clone(),
            ..DockerSettings::default()
        },
        Limits {
            max_output: 12,
            ..Limits::default()
        },
    )
    .unwrap();
    let capped = small.logs(&n, query(1000)).await.expect("target-capped");
    assert_eq!(capped.max_bytes, 12);
    assert!(capped.lines.iter().map(|l| l.text.len()).sum::<usize>() <= 12);

    // since: "late" was logged 2 s after the others.
    let late_ts = all
        .lines
        .last()
        .and_then(|l| l.timestamp.clone())
        .expect("late timestamp");
    let late_secs = chrono::DateTime::parse_from_rfc3339(&late_ts).unwrap().timestamp();
    let since = d
        .logs(
            &n,
            LogQuery {
                since: Some(late_secs),
                ..query(1000)
            },
        )
        .await
        .expect("since");
    let texts: Vec<&str> = since.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["late"]);

    for bad in [
        LogQuery { tail: 0, ..query(1) },
        LogQuery {
            since: Some(-5),
            ..query(1)
        },
        LogQuery {
            grep: Some(String::new()),
            ..query(1)
        },
        LogQuery {
            max_bytes: 0,
            ..query(1)
        },
    ] {
        assert!(
            matches!(d.logs(&n, bad.clone()).await, Err(ExecError::Refused(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn docker_stats_one_shot() {
    let Some(host) = host() else { return };
    let d = executor(&host);
    let n = name("stats");
    let c = run(&host, &n, &[], SLEEPER);
    let s = d.stats(&n).await.expect("stats");
    assert_eq!((s.id.as_str(), s.name.as_str()), (&c.id[..12], n.as_str()));
    assert!(s.pids.is_some_and(|p| p >= 1), "{s:?}");
    assert!(s.memory_usage_bytes.is_some_and(|m| m > 0), "{s:?}");
    assert!(s.memory_limit_bytes.is_some_and(|m| m > 0), "{s:?}");
    let cpu = s.cpu_percent.expect("cpu percent from two samples");
    assert!(
        (0.0..=100.0 * f64::from(s.online_cpus.unwrap_or(64))).contains(&cpu),
        "{cpu}"
    );
    assert!(s.read_at.is_some());

    docker(&host, &["stop", "-t", "5", &n]).expect("docker stop");
    match d.stats(&n).await {
        Err(ExecError::Failed(msg)) => assert!(msg.contains("not running"), "{msg}"),
        other => panic!("stats of a stopped container: {other:?}"),
    }
}

#[tokio::test]
async fn docker_invalid_names_refused_before_any_api_call() {
    // An endpoint that does not exist: had any request been attempted, the error would be
    // `Unreachable`, not `Refused`.
    let d = Docker::new(
        "nowhere",
        DockerSettings {
            endpoint: "unix:///nonexistent/tops-docker.sock".into(),
            ..DockerSettings::default()
        },
        Limits::default(),
    )
    .unwrap();
    for bad in [
        "x; rm -rf /",
        "../x",
        "x/../../version",
        "",
        "x?force=1",
        "/web",
        "-f",
        "a b",
        "x\n",
        "é",
    ] {
        let results = [
            d.inspect(bad).await.map(|_| ()),
            d.start(bad).await.map(|_| ()),
            d.stop(bad, None).await.map(|_| ()),
            d.restart(bad, None).await.map(|_| ()),
            d.pause(bad).await.map(|_| ()),
            d.unpause(bad).await.map(|_| ()),
            d.logs(bad, query(10)).await.map(|_| ()),
            d.stats(bad).await.map(|_| ()),
        ];
        for r in results {
            match r {
                Err(ExecError::Refused(msg)) => assert!(msg.contains("invalid container name or id"), "{msg}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn docker_unreachable_endpoints_are_named() {
    let sock = "unix:///nonexistent/tops-docker.sock";
    let d = Docker::new(
        "gone",
        DockerSettings {
            endpoint: sock.into(),
            ..DockerSettings::default()
        },
        Limits::default(),
    )
    .unwrap();
    match d.version().await {
        Err(ExecError::Unreachable(msg)) => assert!(msg.contains(sock) && msg.contains("`gone`"), "{msg}"),
        other => panic!("missing socket: {other:?}"),
    }
    match d.list(true).await {
        Err(ExecError::Unreachable(_)) => {}
        other => panic!("missing socket, list: {other:?}"),
    }

    // A closed TCP port, plain (opted in) and with TLS.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let plain = Docker::new(
        "closed",
        DockerSettings {
            endpoint: endpoint.clone(),
            insecure_plain_tcp: true,
            ..DockerSettings::default()
        },
        Limits::default(),
    )
    .unwrap();
    match plain.version().await {
        Err(ExecError::Unreachable(msg)) => assert!(msg.contains(&endpoint), "{msg}"),
        other => panic!("closed port: {other:?}"),
    }
    if let Some(engine) = tls_engine() {
        let mut s = tls_settings(
            &engine,
            Some(engine.ca.clone()),
            engine.cert.clone(),
            engine.key.clone(),
        );
        s.endpoint = endpoint.clone();
        let tls = Docker::new("closed-tls", s, Limits::default()).unwrap();
        match tls.version().await {
            Err(ExecError::Unreachable(msg)) => assert!(msg.contains(&endpoint), "{msg}"),
            other => panic!("closed TLS port: {other:?}"),
        }
    }
}

#[tokio::test]
async fn docker_calls_are_bounded_by_the_target_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(800);
    let d = Docker::new(
        "silent",
        DockerSettings {
            endpoint: format!("tcp://127.0.0.1:{port}"),
            insecure_plain_tcp: true,
            ..DockerSettings::default()
        },
        Limits {
            timeout,
            ..Limits::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    match d.list(true).await {
        Err(ExecError::Timeout(t)) => assert_eq!(t, timeout),
        other => panic!("silent engine: {other:?}"),
    }
    assert!(
        started.elapsed() < timeout + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    hold.abort();
}

#[tokio::test]
async fn docker_plain_tcp_refused_unless_opted_in() {
    let Some(host) = host() else { return };
    // Plain TCP without the opt-in is a configuration error, before any connection.
    match Docker::new(
        "plain",
        DockerSettings {
            endpoint: "tcp://127.0.0.1:2375".into(),
            ..DockerSettings::default()
        },
        Limits::default(),
    ) {
        Err(ExecError::Config(msg)) => assert!(msg.contains("plain tcp:// is refused"), "{msg}"),
        Err(other) => panic!("plain tcp: {other:?}"),
        Ok(_) => panic!("plain tcp accepted without insecure_plain_tcp"),
    }

    // With the opt-in it works: a loopback forwarder to the shared engine's socket, for this test only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = host.trim_start_matches("unix://").to_string();
    let forward = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    let d = Docker::new(
        "plain-opted-in",
        DockerSettings {
            endpoint: format!("tcp://127.0.0.1:{port}"),
            insecure_plain_tcp: true,
            ..DockerSettings::default()
        },
        Limits::default(),
    )
    .expect("opted-in plain tcp");
    let info = d.version().await.expect("version over plain tcp");
    assert!(info.api_version.is_some());
    d.list(true).await.expect("list over plain tcp");
    forward.abort();
}

#[tokio::test]
async fn docker_tls_engine_with_the_right_ca_and_client_certificate() {
    let Some(engine) = tls_engine() else { return };
    let s = tls_settings(
        &engine,
        Some(engine.ca.clone()),
        engine.cert.clone(),
        engine.key.clone(),
    );
    let d = Docker::new("tls", s, Limits::default()).expect("tls executor");
    let info = d.version().await.expect("version over TLS");
    assert_eq!(info.endpoint, engine.endpoint);
    let api = info.api_version.clone().expect("engine api version");
    // Negotiated down to the engine's version (20.10 speaks 1.41; bollard starts newer).
    assert_eq!(info.negotiated_api_version, api, "{info:?}");
    assert!(
        info.version.is_some() && info.os.as_deref() == Some("linux"),
        "{info:?}"
    );
    d.list(true).await.expect("list over TLS");
    // Reused connection settings: a second call works the same.
    d.version().await.expect("second call over TLS");
}

#[tokio::test]
async fn docker_tls_engine_without_its_ca_fails_host_verification() {
    let Some(engine) = tls_engine() else { return };
    // No CA: the system roots, which did not sign the engine's certificate.
    let d = Docker::new(
        "tls-no-ca",
        tls_settings(&engine, None, engine.cert.clone(), engine.key.clone()),
        Limits::default(),
    )
    .expect("tls executor without CA");
    match d.version().await {
        Err(ExecError::HostVerification(msg)) => {
            assert!(
                msg.contains(&engine.endpoint) && msg.contains("did not verify"),
                "{msg}"
            )
        }
        other => panic!("without the CA: {other:?}"),
    }
    // Another CA.
    let other = tempfile::tempdir().unwrap();
    write_other_ca(other.path()).unwrap();
    let d = Docker::new(
        "tls-other-ca",
        tls_settings(
            &engine,
            Some(other.path().join("ca.pem")),
            engine.cert.clone(),
            engine.key.clone(),
        ),
        Limits::default(),
    )
    .unwrap();
    match d.list(false).await {
        Err(ExecError::HostVerification(msg)) => assert!(msg.contains("did not verify"), "{msg}"),
        other => panic!("with another CA: {other:?}"),
    }
}

#[tokio::test]
async fn docker_tls_engine_refuses_an_untrusted_client_certificate() {
    let Some(engine) = tls_engine() else { return };
    let other = tempfile::tempdir().unwrap();
    write_other_ca(other.path()).unwrap();
    let d = Docker::new(
        "tls-other-client",
        tls_settings(
            &engine,
            Some(engine.ca.clone()),
            other.path().join("cert.pem"),
            other.path().join("key.pem"),
        ),
        Limits::default(),
    )
    .unwrap();
    match d.version().await {
        Err(ExecError::Auth(msg)) => assert!(msg.contains("client certificate"), "{msg}"),
        other => panic!("untrusted client certificate: {other:?}"),
    }
    let mut no_client = tls_settings(
        &engine,
        Some(engine.ca.clone()),
        engine.cert.clone(),
        engine.key.clone(),
    );
    no_client.tls_cert = None;
    no_client.tls_key = None;
    let d = Docker::new("tls-no-client", no_client, Limits::default()).unwrap();
    match d.version().await {
        Err(ExecError::Auth(msg)) => assert!(msg.contains("client certificate"), "{msg}"),
        other => panic!("no client certificate: {other:?}"),
    }
}

#[tokio::test]
async fn docker_run_container_helper_removes_its_container() {
    let Some(host) = host() else { return };
    let n = name("guard");
    {
        let c = run_container(&host, &n, SLEEPER).expect("run");
        assert!(docker(&host, &["inspect", &c.id]).is_ok());
    }
    assert!(docker(&host, &["inspect", &n]).is_err(), "container left behind");
}

/// Set in the child process of `docker_tls_key_from_credentials_directory`.
const CREDENTIALS_CHILD: &str = "TAILOPSMCP_TEST_DOCKER_CREDENTIALS_CHILD";
/// The credential name the key is stored under (`LoadCredential=docker-key.pem:...`).
const KEY_CREDENTIAL: &str = "docker-key.pem";

/// `tls_key` is a secret: a relative path names a systemd credential in `$CREDENTIALS_DIRECTORY`.
/// Re-runs itself in a child process whose environment holds that variable (this process's
/// environment is shared by every test and is not changed).
#[tokio::test]
async fn docker_tls_key_from_credentials_directory() {
    let Some(engine) = tls_engine() else { return };
    let relative = || {
        tls_settings(
            &engine,
            Some(engine.ca.clone()),
            engine.cert.clone(),
            PathBuf::from(KEY_CREDENTIAL),
        )
    };
    if std::env::var_os(CREDENTIALS_CHILD).is_some() {
        assert!(std::env::var_os("CREDENTIALS_DIRECTORY").is_some());
        let d = Docker::new("tls-credential", relative(), Limits::default()).expect("executor from the credential");
        d.version()
            .await
            .expect("version over TLS with the key from $CREDENTIALS_DIRECTORY");
        return;
    }
    // Without $CREDENTIALS_DIRECTORY the name is looked up where the server runs, and is missing.
    let err = Docker::new("tls-no-credential", relative(), Limits::default())
        .err()
        .expect("no key file");
    assert!(
        matches!(&err, ExecError::Config(m) if m.contains(KEY_CREDENTIAL)),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&engine.key, dir.path().join(KEY_CREDENTIAL)).unwrap();
    crate::support::rerun_in_child(
        "docker::docker_tls_key_from_credentials_directory",
        &[
            (CREDENTIALS_CHILD, "1".as_ref()),
            ("CREDENTIALS_DIRECTORY", dir.path().as_os_str()),
        ],
    );
}
