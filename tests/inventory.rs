//! The inventory and the system tools' sockets and disks, end to end through MCP on the tailnet
//! harness, against real processes with real sockets in the server's network namespace:
//! `redis-server` and `nginx` from Debian's packages, and copies of the Python interpreter
//! renamed `ollama` and `prometheus` listening on those applications' default ports (11434,
//! 9090). The scan's stored rows, attributes and notes are read back from the server's SQLite
//! file; `system_sockets` and `system_disks` also run over SSH (a real sshd in that namespace).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use tailopsmcp::audit::Outcome;
use tailopsmcp::store::inventory as store;

use crate::support::netns::{Tailnet, skip_or_fail};
use crate::support::world::{Builder, Daemon, World};

const DANA: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 9));

/// A process started in the server namespace; SIGTERM (then SIGKILL) on drop, so nginx's
/// master takes its workers down with it.
struct Proc {
    child: tokio::process::Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("{} did not stop on SIGTERM; killing it", self.name);
            let _ = self.child.start_kill();
        }
    }
}

/// The real applications this test needs, or why they are missing.
fn programs() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let found = |p: &str| Path::new(p).exists().then(|| PathBuf::from(p));
    let redis = found("/usr/bin/redis-server").ok_or("redis-server is not installed (apt: redis-server)")?;
    let nginx = found("/usr/sbin/nginx").ok_or("nginx is not installed (apt: nginx-light)")?;
    let python = std::fs::canonicalize("/usr/bin/python3").map_err(|e| format!("/usr/bin/python3: {e}"))?;
    Ok((redis, nginx, python))
}

fn spawn(net: &Tailnet, name: &'static str, program: &Path, args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    let child = net
        .command_in_server_ns(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    Proc { child, name }
}

/// A copy of the Python interpreter named `name` (so the kernel's `comm` is `name`) listening
/// on 127.0.0.1:`port` until killed.
fn python_listener(net: &Tailnet, dir: &Path, python: &Path, name: &'static str, port: u16) -> Proc {
    let exe = dir.join(name);
    std::fs::copy(python, &exe).expect("copy python");
    let code = format!(
        "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(3600)\n"
    );
    spawn(net, name, &exe, &["-c", &code], &dir.join(format!("{name}.log")))
}

async fn wait_listening(net: &Tailnet, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = net.listening_sockets();
        let missing: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| !listening.iter().any(|a| a.port() == *p))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "ports {missing:?} not listening within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A world with dana, holding `grants`.
fn dana(grants: Value) -> Builder {
    World::builder().user(DANA, "dana@example.com", grants)
}

fn ok(r: &Value) -> &Value {
    assert_eq!(r["isError"], false, "{r}");
    &r["structuredContent"]
}

fn error_text(r: &Value) -> String {
    assert_eq!(r["isError"], true, "{r}");
    r["content"][0]["text"].as_str().unwrap_or("").to_string()
}

fn app<'a>(apps: &'a Value, id: &str) -> &'a Value {
    apps.as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("app `{id}` not found in {apps:#}"))
}

fn evidence_kinds(app: &Value) -> Vec<String> {
    let mut k: Vec<String> = app["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

fn has_port(app: &Value, port: u16, pid: u32) -> bool {
    app["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == port && p["pid"] == pid && p["protocol"] == "tcp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_finds_the_running_apps_with_evidence_ports_and_versions() {
    let (redis_bin, nginx_bin, python) = match programs() {
        Ok(p) => p,
        Err(e) => return skip_or_fail(&e),
    };
    let grants = json!([{"scopes": ["inventory:control", "system:read"], "targets": ["*"]}]);
    let Some(s) = dana(grants).prepare().await else { return };
    let net = &s.net;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let redis = spawn(
        net,
        "redis-server",
        &redis_bin,
        &[
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &d,
        ],
        &dir.path().join("redis.log"),
    );
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_processes 1;\nevents {{}}\nhttp {{\n  \
             access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path \
             {d}/fastcgi;\n  server {{ listen 127.0.0.1:80; return 204; }}\n}}\n"
        ),
    )
    .unwrap();
    let nginx = spawn(
        net,
        "nginx",
        &nginx_bin,
        &["-c", &conf.display().to_string(), "-g", "daemon off;"],
        &dir.path().join("nginx.log"),
    );
    let ollama = python_listener(net, dir.path(), &python, "ollama", 11434);
    let prometheus = python_listener(net, dir.path(), &python, "prometheus", 9090);
    wait_listening(net, &[6379, 80, 11434, 9090]).await;

    let mut w = s.start().await;
    let mut mcp = w.session(DANA).await;
    let World { net, server, .. } = &mut w;

    // A dry run detects and plans, runs no version command and stores nothing.
    let r = mcp.call_tool("inventory_scan", json!({"dry_run": true})).await.unwrap();
    let dry = ok(&r).clone();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["stored"], Value::Null);
    let plan = dry["plan"].as_array().unwrap();
    let last = plan.last().unwrap();
    assert_eq!(last["kind"], "file", "{plan:?}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains(&server.db.display().to_string()),
        "{last}"
    );
    assert!(app(&dry["apps"], "redis").is_object());
    assert_eq!(
        store::scan_count(&server.db, "local").unwrap(),
        0,
        "a dry run wrote a scan"
    );

    // The real scan.
    let r = mcp.call_tool("inventory_scan", json!({})).await.unwrap();
    let scan = ok(&r).clone();
    assert_eq!(scan["dry_run"], false);
    assert!(scan["stored"]["id"].as_i64().unwrap() > 0, "{scan}");
    assert_eq!(scan["stored"]["scanned_by"], "dana@example.com");
    let apps = &scan["apps"];

    let redis_app = app(apps, "redis");
    assert_eq!(redis_app["status"], "running");
    assert!(redis_app["pids"].as_array().unwrap().contains(&json!(redis.pid())));
    assert!(has_port(redis_app, 6379, redis.pid()), "{redis_app:#}");
    let kinds = evidence_kinds(redis_app);
    for k in ["file", "package", "port", "process"] {
        assert!(kinds.contains(&k.to_string()), "redis evidence {kinds:?} lacks {k}");
    }
    // The version from the package database is the one the binary reports.
    let out = std::process::Command::new(&redis_bin)
        .arg("--version")
        .output()
        .unwrap();
    let printed = tailopsmcp::exec::inventory::first_version(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(redis_app["version"], printed.as_str(), "{redis_app:#}");
    assert_eq!(redis_app["version_source"], "package redis-server");

    let nginx_app = app(apps, "nginx");
    assert_eq!(nginx_app["status"], "running");
    assert!(has_port(nginx_app, 80, nginx.pid()), "{nginx_app:#}");
    assert!(evidence_kinds(nginx_app).contains(&"process".to_string()));
    assert!(
        nginx_app["version"].as_str().unwrap().starts_with("1."),
        "{nginx_app:#}"
    );

    for (id, proc, port) in [("ollama", &ollama, 11434u16), ("prometheus", &prometheus, 9090)] {
        let a = app(apps, id);
        assert_eq!(a["status"], "running", "{a:#}");
        assert!(has_port(a, port, proc.pid()), "{a:#}");
        assert_eq!(evidence_kinds(a), ["port", "process"], "{a:#}");
        let process = a["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "process")
            .unwrap();
        assert_eq!(process["detail"], format!("{id} (pid {})", proc.pid()).as_str());
    }
    // Applications that are not here are not reported, and are listed as checked.
    let not_found: Vec<&str> = scan["not_found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for id in ["jellyfin", "plex", "mongodb", "pihole", "adguardhome", "homeassistant"] {
        assert!(not_found.contains(&id), "{id} not in {not_found:?}");
        assert!(!apps.as_array().unwrap().iter().any(|a| a["id"] == id), "{id} reported");
    }
    assert_eq!(
        scan["host"]["hostname"].as_str(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .as_deref()
            .map(str::trim)
    );
    assert!(scan["host"]["virtualization"].is_string());

    // Stored in the server's SQLite file, readable through the store API.
    assert_eq!(store::scan_count(&server.db, "local").unwrap(), 1);
    let latest = store::latest_json(&server.db, "local").unwrap().expect("stored");
    assert_eq!(latest["scan"]["id"], scan["stored"]["id"]);
    assert!(app(&latest["apps"], "redis")["detected"] == true);

    // The same stored inventory as the MCP resource `tailopsmcp://inventory` (the caller holds
    // inventory:read on every target; one audit row per read).
    let resp = mcp
        .request("resources/read", json!({"uri": "tailopsmcp://inventory"}))
        .await
        .unwrap();
    let read = crate::support::http::rpc_result(&resp, "resources/read").unwrap();
    let doc: Value = serde_json::from_str(read["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(doc["count"], 1, "{doc:#}");
    assert_eq!(doc["targets"][0]["target"], "local");
    assert_eq!(doc["targets"][0]["scan"]["id"], scan["stored"]["id"]);
    assert!(app(&doc["targets"][0]["apps"], "redis")["detected"] == true);
    let row = server
        .audit_where(1, |r| r.method == "resources/read")
        .await
        .pop()
        .expect("an audit row for the resource read");
    assert_eq!(row.outcome, tailopsmcp::audit::Outcome::Ok, "{row:?}");

    // get / set / annotate round trip.
    let r = mcp.call_tool("inventory_get", json!({"app": "redis"})).await.unwrap();
    let got = ok(&r);
    assert_eq!(got["apps"].as_array().unwrap().len(), 1);
    assert_eq!(got["apps"][0]["detection"]["ports"], redis_app["ports"]);
    let r = mcp
        .call_tool(
            "inventory_set",
            json!({"app": "redis", "tags": ["prod", "db", "prod"], "fields": {"owner": "ops", "backup": "nightly"}}),
        )
        .await
        .unwrap();
    let set = ok(&r);
    assert_eq!(set["attributes"]["tags"], json!(["db", "prod"]));
    assert_eq!(set["attributes"]["updated_by"], "dana@example.com");
    assert_eq!(set["plan"][0]["kind"], "file");
    let r = mcp
        .call_tool(
            "inventory_set",
            json!({"app": "redis", "fields": {"owner": null}, "dry_run": true}),
        )
        .await
        .unwrap();
    let preview = ok(&r);
    assert_eq!(preview["attributes"]["fields"], json!({"backup": "nightly"}));
    let r = mcp
        .call_tool("inventory_annotate", json!({"note": "rack 2, UPS-backed"}))
        .await
        .unwrap();
    assert_eq!(ok(&r)["note"]["author"], "dana@example.com");
    let r = mcp
        .call_tool(
            "inventory_annotate",
            json!({"app": "jellyfin", "note": "moved to the NAS", "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(ok(&r)["note"], Value::Null);
    let r = mcp
        .call_tool(
            "inventory_annotate",
            json!({"app": "jellyfin", "note": "moved to the NAS"}),
        )
        .await
        .unwrap();
    ok(&r);

    let view = store::view(&server.db, "local").unwrap();
    let redis_view = view.apps.iter().find(|a| a.id == "redis").unwrap();
    assert_eq!(redis_view.attributes.tags, ["db", "prod"]);
    assert_eq!(
        redis_view.attributes.fields.get("owner").map(String::as_str),
        Some("ops"),
        "the dry run changed nothing"
    );
    let jellyfin = view.apps.iter().find(|a| a.id == "jellyfin").unwrap();
    assert!(!jellyfin.detected);
    assert_eq!(jellyfin.notes_total, 1, "the dry-run note was not stored");
    assert_eq!(view.host.notes[0].note, "rack 2, UPS-backed");
    let r = mcp.call_tool("inventory_get", json!({})).await.unwrap();
    let all = ok(&r);
    assert_eq!(app(&all["apps"], "jellyfin")["detected"], false);
    assert_eq!(all["host"]["notes_total"], 1);

    // Bad input: a specific error, an audit row, nothing stored, the server keeps serving.
    let bad = [
        (
            "inventory_set",
            json!({"app": "../../etc/passwd", "tags": ["x"]}),
            "application id",
        ),
        (
            "inventory_set",
            json!({"app": "redis; rm -rf /", "tags": ["x"]}),
            "application id",
        ),
        (
            "inventory_set",
            json!({"app": "redis", "tags": ["$(reboot)"]}),
            "is not valid",
        ),
        ("inventory_set", json!({"app": "redis"}), "nothing to set"),
        ("inventory_set", json!({"fields": {"Owner": "x"}}), "field name"),
        ("inventory_annotate", json!({"note": "x".repeat(5000)}), "1 to 4000"),
        ("inventory_annotate", json!({"note": "bell\u{7}"}), "control characters"),
        ("inventory_get", json!({"app": "nope"}), "no app `nope`"),
        ("inventory_scan", json!({"dry_run": "yes"}), "invalid type"),
    ];
    for (tool, args, needle) in &bad {
        let r = mcp.call_tool(tool, args.clone()).await.unwrap();
        let text = error_text(&r);
        assert!(text.contains(needle), "{tool} {args}: `{text}` lacks `{needle}`");
    }
    let after = store::view(&server.db, "local").unwrap();
    assert_eq!(after.host.notes_total, 1);
    assert_eq!(
        after.apps.iter().find(|a| a.id == "redis").unwrap().attributes.tags,
        ["db", "prod"]
    );
    assert_eq!(store::scan_count(&server.db, "local").unwrap(), 1);

    let rows = server
        .audit_where(18, |r| r.tool.as_deref().is_some_and(|t| t.starts_with("inventory_")))
        .await;
    let scans: Vec<_> = rows
        .iter()
        .filter(|r| r.tool.as_deref() == Some("inventory_scan"))
        .collect();
    assert_eq!(scans.len(), 3, "two scans and one bad call");
    assert!(scans[..2].iter().all(|r| r.outcome == Outcome::Ok));
    let errors = rows.iter().filter(|r| r.outcome == Outcome::Error).count();
    assert_eq!(errors, bad.len(), "each bad call has an error row");
    assert!(server.alive());
    let r = mcp.call_tool("inventory_get", json!({"app": "redis"})).await.unwrap();
    ok(&r);

    // system_sockets: redis's listener with its pid, and an established connection to it with
    // both ends attributed.
    let mut conn = net
        .connect_in_server_ns("127.0.0.1:6379".parse().unwrap())
        .await
        .unwrap();
    let client_port = conn.local_addr().unwrap().port();
    // Until redis has accepted the connection, its end waits in the listen queue with no file
    // descriptor (inode 0) and so no process to name. A reply proves it was accepted.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"PING\r\n").await.unwrap();
        let mut reply = [0u8; 7];
        conn.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
    }
    let r = mcp
        .call_tool("system_sockets", json!({"port": 6379, "protocol": "tcp"}))
        .await
        .unwrap();
    let s = ok(&r);
    let rows = s["sockets"].as_array().unwrap();
    let listener = rows.iter().find(|r| r["state"] == "listen").expect("listener");
    assert_eq!(listener["pid"], redis.pid(), "{listener}");
    assert_eq!(listener["process"], "redis-server");
    assert_eq!(listener["local_address"], "127.0.0.1");
    assert!(
        rows.iter().any(|r| r["state"] == "established"
            && r["local_port"] == client_port
            && r["remote_port"] == 6379
            && r["pid"] == std::process::id()),
        "the test's own end: {rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r["state"] == "established"
            && r["local_port"] == 6379
            && r["remote_port"] == client_port
            && r["pid"] == redis.pid()),
        "redis's end: {rows:#?}"
    );
    let r = mcp
        .call_tool("system_sockets", json!({"state": "listening", "limit": 1}))
        .await
        .unwrap();
    let s = ok(&r);
    assert_eq!(s["shown"], 1);
    assert!(s["matched"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["truncated"]["cap"], "limit=1");
    let r = mcp.call_tool("system_sockets", json!({"limit": 100000})).await.unwrap();
    assert!(error_text(&r).contains("between 1 and 1000"));
    drop(conn);

    // system_disks: `/` with sane numbers.
    let r = mcp.call_tool("system_disks", json!({})).await.unwrap();
    assert_root_mount(ok(&r));

    // The official Python SDK validates every new tool's structured content against its
    // output schema.
    match crate::support::pyclient::python_mcp() {
        Err(e) => skip_or_fail(&format!("MCP Python SDK: {e}")),
        Ok(python) => {
            net.set_default_source(DANA).unwrap();
            let actions = json!([
                {"call": "system_sockets", "args": {"port": 6379}},
                {"call": "system_disks", "args": {"all": true}},
                {"call": "inventory_scan", "args": {"dry_run": true}},
                {"call": "inventory_get", "args": {}},
                {"call": "inventory_set", "args": {"tags": ["lab"], "dry_run": true}},
                {"call": "inventory_annotate", "args": {"note": "checked", "dry_run": true}}
            ]);
            let url = format!("http://{}/mcp", server.addr);
            let (lines, stdout) = crate::support::pyclient::run_actions(net, &python, &url, &actions).await;
            assert_eq!(lines.len(), 7, "{stdout}");
            for line in &lines[1..] {
                assert_eq!(line["isError"], false, "{line}");
                assert!(line["structuredContent"].is_object(), "{line}");
            }
        }
    }

    server.stop().await;
    drop((redis, nginx, ollama, prometheus));
}

fn assert_root_mount(d: &Value) {
    let root = d["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount_point"] == "/")
        .unwrap_or_else(|| panic!("no / in {d:#}"));
    let u = &root["usage"];
    let total = u["total_bytes"].as_u64().unwrap();
    let (used, avail) = (
        u["used_bytes"].as_u64().unwrap(),
        u["available_bytes"].as_u64().unwrap(),
    );
    assert!(total > 0 && used <= total && avail <= total, "{u}");
    let pct = u["used_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct), "{u}");
    assert!(u["inodes_used"].as_u64().unwrap() <= u["inodes_total"].as_u64().unwrap());
    assert!(root["dev"].as_str().unwrap().contains(':'));
    assert_eq!(
        d["mounts_total"].as_u64().unwrap() as usize,
        d["mounts"].as_array().unwrap().len()
    );
}

/// `system_sockets` and `system_disks` on an SSH target: the same files read over SSH, parsed
/// by the same code. The sshd, and a listener, run in the server's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_disks_work_on_an_ssh_target() {
    let python = match std::fs::canonicalize("/usr/bin/python3") {
        Ok(p) => p,
        Err(e) => return skip_or_fail(&format!("/usr/bin/python3: {e}")),
    };
    let grants = json!([{"scopes": ["system:read", "inventory:control"], "targets": ["*"]}]);
    let Some(mut s) = dana(grants).with(Daemon::Sshd).prepare().await else {
        return;
    };
    let sshd = s.sshd();
    let dir = tempfile::tempdir().unwrap();
    let listener = python_listener(&s.net, dir.path(), &python, "ollama", 11434);
    wait_listening(&s.net, &[11434]).await;
    let known_hosts = sshd.write_known_hosts("known_hosts", &[sshd.known_hosts_line()]);
    let targets = format!(
        "[[target]]\nid = \"box\"\nkind = \"ssh\"\n[target.ssh]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
         key_file = \"{}\"\nknown_hosts = \"{}\"\n",
        sshd.port(),
        sshd.user(),
        sshd.client_key_path().display(),
        known_hosts.display()
    );
    s.config(&targets);
    let w = s.start().await;
    let (sshd, server, mut mcp) = (w.sshd(), &w.server, w.session(DANA).await);

    let r = mcp
        .call_tool("system_sockets", json!({"target": "box", "port": 11434}))
        .await
        .unwrap();
    let s = ok(&r);
    let row = &s["sockets"][0];
    assert_eq!(
        (row["state"].as_str(), row["local_port"].as_u64()),
        (Some("listen"), Some(11434)),
        "{s}"
    );
    assert_eq!(row["pid"], listener.pid(), "{s}");
    assert_eq!(row["process"], "ollama");
    // The SSH session's own connection is there too (sshd's end, port 22 → the server).
    let r = mcp
        .call_tool(
            "system_sockets",
            json!({"target": "box", "state": "established", "port": sshd.port()}),
        )
        .await
        .unwrap();
    let s = ok(&r);
    assert!(
        s["matched"].as_u64().unwrap() >= 2,
        "both ends of the SSH connection: {s}"
    );

    let r = mcp.call_tool("system_disks", json!({"target": "box"})).await.unwrap();
    let remote = ok(&r).clone();
    assert_root_mount(&remote);
    let r = mcp.call_tool("system_disks", json!({})).await.unwrap();
    let here = ok(&r);
    let root_of = |d: &Value| {
        d["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mount_point"] == "/")
            .cloned()
            .unwrap()
    };
    assert_eq!(root_of(&remote)["dev"], root_of(here)["dev"], "same machine over SSH");
    assert_eq!(
        root_of(&remote)["usage"]["total_bytes"],
        root_of(here)["usage"]["total_bytes"]
    );

    // The scan reads this server's own host only.
    let r = mcp.call_tool("inventory_scan", json!({"target": "box"})).await.unwrap();
    assert!(error_text(&r).contains("not supported on ssh targets"), "{r}");
    let rows = server.audit_where(5, |r| r.target.as_deref() == Some("box")).await;
    assert!(rows.iter().any(|r| r.tool.as_deref() == Some("system_disks")));
    drop(listener);
}
