//! The binary's commands besides `serve` on a tailnet: `check-config` (the file and key of an
//! error; environment variables and flags over the file), dev mode (loopback only, a marked
//! identity), `whois` against the LocalAPI stand-in, `audit query/tail/verify/export` on a real
//! audit file, and a quiet end when the reader of their output goes away.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{Conn, Mcp};
use crate::support::localapi::{StandIn, fixture};
use crate::support::server::CAP;
use crate::support::world::cast::{ALICE, BOB, STRANGER};
use crate::support::world::fixture_world as world;

fn structured(result: &Value) -> &Value {
    &result["structuredContent"]
}

#[test]
fn dev_mode_refuses_anything_but_loopback() {
    let (code, _, err) = crate::support::server::run_cli(&[
        "serve",
        "--database",
        "/tmp/never.db",
        "--dev-listen",
        "0.0.0.0:8471",
        "--dev-identity",
        "a@b",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not a loopback address"), "{err}");
    let (code, _, err) = crate::support::server::run_cli(&["serve", "--dev-listen", "127.0.0.1:8471"]);
    assert_eq!(code, 2, "--dev-listen without --dev-identity is a usage error: {err}");
}

#[test]
fn check_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = [\"0.0.0.0\"]\n").unwrap();
    let (code, _, err) = crate::support::server::run_cli(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml") && err.contains("server.listen[0]") && err.contains("not a tailnet address"),
        "{err}"
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let (code, out, err) = crate::support::server::run_cli(&["check-config", "--config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("whoami"), "{out}");
}

/// `TAILOPSMCP_*` environment variables override the config file, and flags override them.
#[test]
fn environment_variables_override_the_file_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[server]\nport = 8471\n[tailscale]\ncapability = \"example.com/cap/file\"\n",
    )
    .unwrap();
    let check = |env: &[(&str, &str)], flags: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tailopsmcp"))
            .arg("check-config")
            .args(flags)
            .env_remove("TAILOPSMCP_CONFIG")
            .env_remove("TAILOPSMCP_PORT")
            .env_remove("TAILOPSMCP_DATABASE")
            .env_remove("TAILOPSMCP_CAPABILITY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let file = file.to_str().unwrap();
    let out = check(&[("TAILOPSMCP_CONFIG", file)], &[]);
    assert!(
        out.contains("port 8471") && out.contains("capability: example.com/cap/file"),
        "{out}"
    );
    let env = [
        ("TAILOPSMCP_CONFIG", file),
        ("TAILOPSMCP_PORT", "9123"),
        ("TAILOPSMCP_DATABASE", "/srv/audit/env.db"),
        ("TAILOPSMCP_CAPABILITY", "example.com/cap/env"),
    ];
    let out = check(&env, &[]);
    assert!(
        out.contains("port 9123")
            && out.contains("database:   /srv/audit/env.db")
            && out.contains("capability: example.com/cap/env"),
        "{out}"
    );
    let out = check(&env, &["--port", "9124", "--database", "/srv/audit/flag.db"]);
    assert!(
        out.contains("port 9124") && out.contains("database:   /srv/audit/flag.db"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_serves_loopback_with_a_marked_identity() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tailopsmcp"))
        .args(["serve", "--config", example, "--database", db.to_str().unwrap()])
        .args([
            "--dev-listen",
            &format!("127.0.0.1:{port}"),
            "--dev-identity",
            "alice@example.com",
        ])
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("dev server never listened: {e}"),
        }
    };
    let mut m = Mcp::new(Conn::new(stream).await, &format!("127.0.0.1:{port}"));
    m.initialize().await.unwrap();
    let who = m.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");
    assert_eq!(structured(&who)["kind"], "dev");
    assert_eq!(structured(&who)["identity_source"], "dev");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut evil = Mcp::new(Conn::new(stream).await, "attacker.example:80");
    assert!(
        evil.initialize().await.unwrap_err().contains("403"),
        "Host allow-list applies in dev mode too"
    );
    let _ = child.kill().await;
    let stderr = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(stderr.contains("WARNING: dev mode"), "loud warning: {stderr}");
    let rows = tailopsmcp::audit::query_path(
        &db,
        &tailopsmcp::audit::Query {
            limit: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let call = rows
        .iter()
        .find(|r| r.tool.as_deref() == Some("whoami"))
        .expect("whoami row");
    assert_eq!(
        call.identity_source.as_deref(),
        Some("dev"),
        "every dev audit row is marked dev"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whois_command_shows_identity_scopes_and_grants() {
    let standin = StandIn::start().await;
    standin.add_identity(ALICE, fixture("whois-user.json"));
    // The stand-in answers from its own thread, so blocking on the CLI here is fine.
    let socket = standin.socket_path().to_str().unwrap().to_string();
    let alice = format!("{ALICE}:41000");
    let (code, out, err) =
        crate::support::server::run_cli(&["whois", &alice, "--socket", &socket, "--capability", CAP, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["principal"], "alice@example.com");
    assert_eq!(
        v["scopes"][0],
        json!({"scope": "system:read", "granted_by": [format!("cap:{CAP}[0]")]})
    );
    assert_eq!(v["grants"][1]["targets"], json!(["docker-*"]));
    let (code, out, _) =
        crate::support::server::run_cli(&["whois", &ALICE.to_string(), "--socket", &socket, "--capability", CAP]);
    assert_eq!(code, 0);
    assert!(
        out.contains("system:read") && out.contains("from cap:example.com/cap/tailopsmcp[0]"),
        "{out}"
    );
    let (code, out, err) =
        crate::support::server::run_cli(&["whois", &STRANGER.to_string(), "--socket", &socket, "--capability", CAP]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("no match for IP:port"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_command_filters_and_prints_json_lines() {
    let Some(w) = world("", "").await else { return };
    let mut alice = w.session(ALICE).await;
    alice.call_tool("whoami", json!({})).await.unwrap();
    alice.call_tool("system_status", json!({})).await.unwrap();
    let mut bob = w.session(BOB).await;
    bob.call_tool("system_status", json!({})).await.unwrap();
    w.server.audit_where(3, |r| r.method == "tools/call").await;
    let db = w.server.db.to_str().unwrap().to_string();
    let cli = |extra: &[&str]| {
        let mut a = vec!["audit", "--database", db.as_str()];
        a.extend_from_slice(extra);
        crate::support::server::run_cli(&a)
    };
    let (code, out, err) = cli(&["query", "--principal", "alice@example.com", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows.iter().all(|r| r["principal"] == "alice@example.com"));
    let (_, out, _) = cli(&["query", "--decision", "deny", "--tool", "system_status", "--json"]);
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["principal"], "bob@example.com");
    let (_, out, _) = cli(&["query", "--since", "1h", "--until", "2000-01-01T00:00:00Z", "--json"]);
    assert!(out.trim().is_empty(), "an empty window returns nothing: {out}");
    let (code, out, _) = cli(&["tail", "-n", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("bob@example.com") && !out.contains("alice@example.com"),
        "table of the newest record: {out}"
    );
    let (code, _, err) = cli(&["query", "--decision", "maybe"]);
    assert_eq!(code, 1);
    assert!(err.contains("--decision must be `allow` or `deny`"), "{err}");
    let (code, out, err) = cli(&["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit chain OK"), "{out}");
    let (code, out, _) = cli(&["export", "--format", "jsonl"]);
    assert_eq!(code, 0);
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        rows.len() >= 3
            && rows
                .iter()
                .all(|r| r["row_hash"].as_str().is_some_and(|h| h.len() == 64)),
        "{out}"
    );
    // Someone with the file rewrites bob's denial into an allow: verify names the row.
    let bob_id = rows.iter().find(|r| r["principal"] == "bob@example.com").unwrap()["id"]
        .as_i64()
        .unwrap();
    let conn = rusqlite::Connection::open(&w.server.db).unwrap();
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for t in triggers {
        conn.execute(&format!("DROP TRIGGER \"{t}\""), []).unwrap();
    }
    conn.execute("UPDATE audit SET decision = 'allow' WHERE id = ?1", [bob_id])
        .unwrap();
    drop(conn);
    let (code, out, _) = cli(&["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("row {bob_id}")), "names the edited row: {out}");
}

#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let script = format!(
        "for i in $(seq 20); do '{}' check-config --config '{example}' | true; done",
        env!("CARGO_BIN_EXE_tailopsmcp")
    );
    let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}
