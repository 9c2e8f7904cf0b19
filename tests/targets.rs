//! Targets end to end through MCP: per-target grants and ceilings, unknown targets, groups and
//! fan-out with per-target results, each call audited with the targets it named.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{Value, json};

use crate::support::http::Mcp;
use crate::support::world::{Daemon, World};

const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 7));

/// Two extra local-kind targets in a group, one of them capped at read-only system scopes.
const TARGETS: &str = r#"
[[target]]
id = "lab1"
kind = "local"
groups = ["lab"]

[[target]]
id = "lab2"
kind = "local"
groups = ["lab"]
scopes = ["system:read"]
"#;

/// A server with TARGETS and carol, whose capability grants are `grants`, with her session.
async fn world(grants: Value) -> Option<World> {
    World::builder()
        .user(CAROL, "carol@example.com", grants)
        .config(TARGETS)
        .session(CAROL)
        .start()
        .await
}

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_granted_on_one_target_is_denied_on_another_with_an_audit_row() {
    let Some(mut w) = world(json!([{"scopes": ["system:read"], "targets": ["lab1"]}])).await else {
        return;
    };
    let ok = w.call_tool("system_status", json!({"target": "lab1"})).await;
    assert_eq!(ok["isError"], false, "{ok}");
    let denied = w.call_tool("system_status", json!({"target": "lab2"})).await;
    assert_eq!(denied["isError"], true);
    assert!(
        text(&denied).contains("scope system:read is not granted on target `lab2`"),
        "{denied}"
    );
    let local = w.call_tool("system_status", json!({})).await;
    assert_eq!(local["isError"], true, "no grant on `local`");
    let unknown = w.call_tool("system_status", json!({"target": "nas"})).await;
    assert!(
        text(&unknown).contains("unknown target `nas` (known targets: local, lab1, lab2)"),
        "{unknown}"
    );

    let rows = w
        .server
        .audit_where(4, |r| r.tool.as_deref() == Some("system_status"))
        .await;
    let by_target = |t: &str| {
        rows.iter()
            .find(|r| r.target.as_deref() == Some(t))
            .unwrap_or_else(|| panic!("no row for {t}"))
    };
    assert_eq!(by_target("lab1").decision, tailopsmcp::audit::Decision::Allow);
    assert_eq!(by_target("lab2").decision, tailopsmcp::audit::Decision::Deny);
    assert_eq!(by_target("local").decision, tailopsmcp::audit::Decision::Deny);
    assert_eq!(by_target("nas").decision, tailopsmcp::audit::Decision::Deny);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_own_ceiling_limits_what_grants_allow() {
    let Some(mut w) = world(json!([{"scopes": ["admin"], "targets": ["*"]}])).await else {
        return;
    };
    let r = w.call_tool("targets_check", json!({"target": "lab2"})).await;
    assert!(text(&r).contains("target `lab2` does not allow targets:read"), "{r}");
    let r = w.call_tool("targets_check", json!({"target": "lab1"})).await;
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"]["ok"], true);

    // The resource runs no check: it shows only what `targets_check` recorded on lab1.
    let before = read_targets_resource(w.mcp()).await;
    let health_of = |list: &Value, id: &str| {
        list["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {list}"))["health"]
            .clone()
    };
    assert_eq!(health_of(&before, "lab1")["ok"], true, "{before}");
    assert_eq!(health_of(&before, "local"), Value::Null, "{before}");
    assert_eq!(health_of(&before, "lab2"), Value::Null, "{before}");

    let list = w.call_tool("targets_list", json!({})).await;
    let listed = &list["structuredContent"];
    let targets = listed["targets"].as_array().unwrap();
    let lab2 = targets.iter().find(|t| t["id"] == "lab2").unwrap();
    assert_eq!(
        lab2["scopes"],
        json!(["system:read"]),
        "grants are cut to the target's ceiling"
    );
    assert_eq!(targets.len(), 3);
    for t in targets {
        let h = &t["health"];
        assert_eq!(h["ok"], true, "{list}");
        assert_eq!(h["detail"], "this host", "{list}");
        let at = h["checked_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }
    assert_eq!(
        health_of(listed, "lab1")["checked_at"],
        health_of(&before, "lab1")["checked_at"],
        "a check younger than 30 s is reused"
    );
    assert!(
        text(&list).lines().skip(1).all(|l| l.trim_end().ends_with(" ok")),
        "{list}"
    );
    let after = read_targets_resource(w.mcp()).await;
    assert_eq!(after, *listed, "the resource shows what the tool recorded");
}

/// `tailopsmcp://targets` as JSON.
async fn read_targets_resource(mcp: &mut Mcp) -> Value {
    let resp = mcp
        .request("resources/read", json!({"uri": "tailopsmcp://targets"}))
        .await
        .unwrap();
    let read = crate::support::http::rpc_result(&resp, "resources/read").unwrap();
    serde_json::from_str(read["contents"][0]["text"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_a_group_returns_each_targets_result_or_error() {
    let grants = json!([{"scopes": ["system:read", "targets:read"], "targets": ["local", "lab1"]}]);
    let Some(mut w) = world(grants).await else { return };
    let r = w
        .call_tool(
            "system_processes",
            json!({"targets": ["local", "group:lab"], "limit": 3}),
        )
        .await;
    let results = r["structuredContent"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    let ids: Vec<&str> = results.iter().map(|x| x["target"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec!["local", "lab1", "lab2"],
        "in the order named, groups expanded"
    );
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["result"]["shown"], 3);
    assert_eq!(results[1]["ok"], true);
    assert_eq!(results[2]["ok"], false);
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("not granted on target `lab2`"),
        "{r}"
    );
    // One failure does not hide the others; the call as a whole reports the failure.
    assert_eq!(r["isError"], false);
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("system_processes"))
        .await;
    assert_eq!(rows.len(), 1, "one audit row per tools/call");
    assert_eq!(rows[0].target.as_deref(), Some("local,lab1,lab2"));
    assert_eq!(rows[0].decision, tailopsmcp::audit::Decision::Allow);
    assert!(
        rows[0].reason.as_deref().unwrap().starts_with("partly denied: lab2:"),
        "{:?}",
        rows[0].reason
    );
    assert_eq!(rows[0].outcome, tailopsmcp::audit::Outcome::Error);

    // Bad selections are refused clearly.
    for (args, needle) in [
        (json!({"targets": []}), "must name 1 to 64"),
        (json!({"targets": "local"}), "must be an array of strings"),
        (json!({"targets": [7]}), "entries must be strings"),
        (json!({"target": "local", "targets": ["lab1"]}), "not both"),
        (json!({"targets": ["group:nope"]}), "unknown target group `nope`"),
    ] {
        let r = w.call_tool("system_status", args.clone()).await;
        assert_eq!(r["isError"], true, "{args}");
        assert!(text(&r).contains(needle), "{args}: {r}");
    }
    let r = w.call_tool("whoami", json!({"targets": ["local"]})).await;
    assert!(text(&r).contains("takes no `targets`"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_accepts_fan_out_results_against_the_output_schema() {
    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    let Some(w) = world(json!([{"scopes": ["monitor"], "targets": ["*"]}])).await else {
        return;
    };
    let actions = json!([
        {"call": "system_status", "args": {"targets": ["group:lab"]}},
        {"call": "system_status", "args": {"target": "lab1"}}
    ]);
    let (lines, stdout) = w.python(&python, &actions, &[]).await;
    assert_eq!(lines[1]["isError"], false, "{stdout}");
    assert_eq!(
        lines[1]["structuredContent"]["results"].as_array().unwrap().len(),
        2,
        "{stdout}"
    );
    assert!(lines[2]["structuredContent"]["memory"].is_object(), "{stdout}");
}

/// A real Docker engine, an unreachable one, and an HTTP API inside the server's namespace, in
/// one group: a fan-out check reports each, and the unreachable one does not hide the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_a_group_with_an_unreachable_target() {
    let grants = json!([{"scopes": ["targets:read", "system:read"], "targets": ["*"]}]);
    let Some(mut s) = World::builder()
        .with(Daemon::Docker)
        .user(CAROL, "carol@example.com", grants)
        .prepare()
        .await
    else {
        return;
    };
    let docker_host = s.docker_host().to_owned();
    // An HTTP API the server (in its namespace) can reach on its own loopback.
    let listener = s.net.bind_in_server_ns(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let api_port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/api/version",
        axum::routing::get(|| async { axum::Json(json!({"data": {"version": "8.2"}})) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let fleet = format!(
        r#"
[[target]]
id = "engine"
kind = "docker"
groups = ["fleet"]
[target.docker]
endpoint = "{docker_host}"

[[target]]
id = "gone"
kind = "docker"
groups = ["fleet"]
timeout_secs = 3
[target.docker]
endpoint = "unix:///run/tailopsmcp-test-no-engine.sock"

[[target]]
id = "api"
kind = "http"
groups = ["fleet"]
[target.http]
base_url = "http://127.0.0.1:{api_port}/api"
health_path = "/version"
"#
    );
    s.config(&fleet);
    let w = s.start().await;
    let (server, mut mcp) = (&w.server, w.session(CAROL).await);

    // `targets_list` checks what it lists (nothing was checked yet) and says what failed.
    let list = mcp.call_tool("targets_list", json!({})).await.unwrap();
    assert_eq!(list["isError"], false, "{list}");
    let listed = list["structuredContent"]["targets"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["local", "engine", "gone", "api"], "{list}");
    let health = |id: &str| &listed.iter().find(|t| t["id"] == id).unwrap()["health"];
    for id in ["local", "engine", "api"] {
        assert_eq!(health(id)["ok"], true, "{id}: {list}");
    }
    assert!(
        health("engine")["detail"].as_str().unwrap().starts_with("Docker "),
        "{list}"
    );
    assert_eq!(health("gone")["ok"], false, "{list}");
    assert!(
        health("gone")["detail"].as_str().unwrap().starts_with("unreachable: "),
        "{list}"
    );
    let gone_line = text(&list)
        .lines()
        .find(|l| l.trim_start().starts_with("gone "))
        .unwrap();
    assert!(gone_line.contains("FAILED: unreachable"), "{list}");

    let r = mcp
        .call_tool("targets_check", json!({"targets": ["group:fleet"]}))
        .await
        .unwrap();
    let results = r["structuredContent"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    let by = |id: &str| {
        results
            .iter()
            .find(|x| x["target"] == id)
            .unwrap_or_else(|| panic!("{id}: {r}"))
    };
    assert_eq!(by("engine")["ok"], true, "{r}");
    assert!(
        by("engine")["result"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Docker "),
        "{r}"
    );
    assert_eq!(by("api")["ok"], true, "{r}");
    assert!(
        by("api")["result"]["detail"].as_str().unwrap().contains("HTTP 200"),
        "{r}"
    );
    assert_eq!(by("gone")["ok"], false);
    assert!(by("gone")["error"].as_str().unwrap().contains("unreachable"), "{r}");

    // Tools that read a host's /proc refuse other kinds instead of answering about this host.
    let r = mcp
        .call_tool("system_status", json!({"target": "engine"}))
        .await
        .unwrap();
    assert_eq!(r["isError"], true);
    assert!(text(&r).contains("target `engine` is a docker target"), "{r}");

    let rows = server
        .audit_where(1, |r| r.tool.as_deref() == Some("targets_check"))
        .await;
    assert_eq!(rows[0].target.as_deref(), Some("engine,gone,api"));
    assert!(
        rows[0].error.as_deref().unwrap().contains("gone:"),
        "{:?}",
        rows[0].error
    );

    // The same from the host's command line (engines only: the API lives in the test namespace).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let engines: String = fleet.split("[[target]]\nid = \"api\"").next().unwrap().to_string();
    std::fs::write(&cfg, engines).unwrap();
    let (code, out, err) =
        crate::support::server::run_cli(&["targets", "check", "engine", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("engine") && out.contains(" ok "), "{out}");
    let (code, out, _) = crate::support::server::run_cli(&["targets", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "one target is down: {out}");
    assert!(
        out.contains("gone") && out.contains("FAILED") && out.contains("unreachable"),
        "{out}"
    );
}

/// The foundation's system tools on an SSH target: a real sshd (in the server's namespace), the
/// host key pinned in a known_hosts file, the client key from `$CREDENTIALS_DIRECTORY`-style
/// relative path resolution not needed here (absolute path), results read over SSH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_tools_work_on_an_ssh_target() {
    let grants = json!([{"scopes": ["system:read", "network:read", "targets:read"], "targets": ["*"]}]);
    let Some(mut s) = World::builder()
        .with(Daemon::Sshd)
        .user(CAROL, "carol@example.com", grants)
        .prepare()
        .await
    else {
        return;
    };
    let sshd = s.sshd();
    let known_hosts = sshd.write_known_hosts("known_hosts", &[sshd.known_hosts_line()]);
    let targets = format!(
        r#"
[[target]]
id = "box"
kind = "ssh"
groups = ["boxes"]
[target.ssh]
host = "127.0.0.1"
port = {port}
user = "{user}"
key_file = "{key}"
known_hosts = "{kh}"

[[target]]
id = "stranger"
kind = "ssh"
groups = ["boxes"]
[target.ssh]
host = "127.0.0.1"
port = {port}
user = "{user}"
key_file = "{key}"
known_hosts = "{empty}"

[[target]]
id = "wrongkey"
kind = "ssh"
[target.ssh]
host = "127.0.0.1"
port = {port}
user = "{user}"
key_file = "{unauthorized}"
known_hosts = "{kh}"
"#,
        port = sshd.port(),
        user = sshd.user(),
        key = sshd.client_key_path().display(),
        kh = known_hosts.display(),
        empty = sshd.write_known_hosts("empty_known_hosts", &[]).display(),
        unauthorized = sshd.new_key("unauthorized").display(),
    );
    s.config(&targets);
    let w = s.start().await;
    let (sshd, server, mut mcp) = (w.sshd(), &w.server, w.session(CAROL).await);

    let status = mcp.call_tool("system_status", json!({"target": "box"})).await.unwrap();
    assert_eq!(status["isError"], false, "{status}");
    let s = &status["structuredContent"];
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        s["memory"]["total_bytes"],
        total_kib * 1024,
        "read over SSH from the same machine"
    );
    assert!(
        s["disks"].as_array().unwrap().iter().any(|d| d["mount_point"] == "/"),
        "{s}"
    );
    let procs = mcp
        .call_tool(
            "system_processes",
            json!({"target": "box", "sort": "memory", "limit": 5}),
        )
        .await
        .unwrap();
    assert_eq!(procs["structuredContent"]["shown"], 5, "{procs}");
    let ifs = mcp
        .call_tool("network_interfaces", json!({"target": "box", "name": "tailscale0"}))
        .await
        .unwrap();
    let addrs = &ifs["structuredContent"]["interfaces"][0]["addresses"];
    assert_eq!(
        addrs[0]["address"], "100.100.1.1",
        "the SSH host's own namespace: {ifs}"
    );
    assert_eq!(addrs[0]["tailnet"], true);

    // A host whose key is unknown is refused, and the fan-out shows it next to the good one.
    let r = mcp
        .call_tool("targets_check", json!({"targets": ["group:boxes"]}))
        .await
        .unwrap();
    let results = r["structuredContent"]["results"].as_array().unwrap();
    assert_eq!(results[0]["ok"], true, "{r}");
    assert!(
        results[0]["result"]["detail"].as_str().unwrap().contains("SHA256:"),
        "{r}"
    );
    assert_eq!(results[1]["ok"], false);
    assert!(
        results[1]["error"].as_str().unwrap().contains("not in known_hosts"),
        "{r}"
    );
    let rows = server.audit_where(4, |r| r.method == "tools/call").await;
    assert!(
        rows.iter()
            .any(|r| r.target.as_deref() == Some("box") && r.tool.as_deref() == Some("system_status"))
    );

    // A key sshd does not authorize: an authentication error naming the user, an audit row for
    // the call, and the server keeps serving.
    let r = mcp
        .call_tool("system_status", json!({"target": "wrongkey"}))
        .await
        .unwrap();
    assert_eq!(r["isError"], true, "{r}");
    let refused = format!(
        "authentication failed: [127.0.0.1]:{} refused user {}: tried key file ",
        sshd.port(),
        sshd.user()
    );
    assert!(text(&r).contains(&refused), "{r}");
    let rows = server.audit_where(1, |r| r.target.as_deref() == Some("wrongkey")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].tool.as_deref(), Some("system_status"));
    assert_eq!(rows[0].decision, tailopsmcp::audit::Decision::Allow);
    assert_eq!(rows[0].outcome, tailopsmcp::audit::Outcome::Error);
    assert!(
        rows[0].error.as_deref().unwrap().contains(&refused),
        "{:?}",
        rows[0].error
    );
    let local = mcp.call_tool("system_status", json!({})).await.unwrap();
    assert_eq!(local["isError"], false, "{local}");

    // `targets_list` reports each SSH target's health: reachable, unknown host key, wrong key.
    let list = mcp.call_tool("targets_list", json!({})).await.unwrap();
    let listed = list["structuredContent"]["targets"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["local", "box", "stranger", "wrongkey"], "{list}");
    let health = |id: &str| &listed.iter().find(|t| t["id"] == id).unwrap()["health"];
    assert_eq!(health("local")["ok"], true, "{list}");
    assert_eq!(health("box")["ok"], true, "{list}");
    assert!(health("box")["detail"].as_str().unwrap().contains("SHA256:"), "{list}");
    assert_eq!(health("stranger")["ok"], false, "{list}");
    assert!(
        health("stranger")["detail"]
            .as_str()
            .unwrap()
            .contains("not in known_hosts"),
        "{list}"
    );
    assert_eq!(health("wrongkey")["ok"], false, "{list}");
    assert!(
        health("wrongkey")["detail"].as_str().unwrap().starts_with(&refused),
        "{list}"
    );
}

/// A malformed `[target.KIND]` table, or executor settings that cannot work, are reported by
/// `check-config` (and refused by `serve`) like every other config error: the file, the key, what
/// is wrong.
#[test]
fn check_config_names_the_file_and_key_of_a_bad_target() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[target]]\nid = \"nas\"\nkind = \"local\"\n[[target]]\nid = \"engine\"\nkind = \"docker\"\n\
             [target.docker]\nendpont = \"unix:///run/docker.sock\"\n",
            "target[1].docker: unknown field `endpont`",
        ),
        (
            "[[target]]\nid = \"box\"\nkind = \"ssh\"\n[target.ssh]\nhost = \"10.0.0.2\"\nuser = \"ops\"\n\
             key_file = \"/etc/tailopsmcp/id_ed25519\"\n",
            "target[0].ssh: target configuration: ssh target box: no host key to verify against",
        ),
    ];
    for (i, (toml, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let db = dir.path().join("audit.db");
        for command in ["check-config", "serve"] {
            let (code, _, err) = crate::support::server::run_cli(&[
                command,
                "--config",
                path.to_str().unwrap(),
                "--database",
                db.to_str().unwrap(),
            ]);
            assert_eq!(code, 1, "{command}: {err}");
            assert!(
                err.contains(&format!("{}: {says}", path.display())),
                "{command} should say `{says}` after the file name: {err}"
            );
        }
        // `serve` refused the config before creating anything.
        assert!(!db.exists(), "serve created the database before checking its targets");
    }
}
