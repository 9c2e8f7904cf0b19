//! The tool catalog: what `tools/list` returns to an admin caller, snapshotted (names, schemas as
//! clients see them, annotations, scopes, risk), with unique
//! names in `<toolset>_<verb>[_<noun>]` form and object schemas. Regenerate the snapshot after an
//! intended change with `UPDATE_SNAPSHOTS=1 cargo test --test integration catalog`.

use std::collections::HashSet;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{Conn, Mcp, rpc_result};

/// A config with one target of every kind (none reachable: listing contacts no target) and an
/// admin grant for the dev identity, so `tools/list` shows every tool.
const EVERY_KIND: &str = r#"
[audit]
database = "{db}"
journald = false
[[grant]]
match = "user:admin@example.com"
scopes = ["admin"]
targets = ["*"]
[[target]]
id = "engine"
kind = "docker"
[target.docker]
endpoint = "unix:///run/tailopsmcp-test-no-engine.sock"
[[target]]
id = "box"
kind = "ssh"
[target.ssh]
host = "127.0.0.1"
port = 1
user = "nobody"
key_file = "{key}"
host_key_fingerprint = "{fingerprint}"
[[target]]
id = "pve"
kind = "http"
[target.http]
base_url = "http://127.0.0.1:1/api"
"#;

/// What `tools/list` returns to an admin caller of a dev server with one target of each kind:
/// every tool as MCP clients see it (schemas with the server's `target`/`targets`/`format`,
/// annotations, `_meta` risk and requirement), following `nextCursor`.
async fn listed_to_admin() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    // Any well-formed fingerprint: listing never connects (the key's own stands in for a host's).
    let shown = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&shown.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let config = dir.path().join("config.toml");
    let text = EVERY_KIND
        .replace("{db}", dir.path().join("audit.db").to_str().unwrap())
        .replace("{key}", key.to_str().unwrap())
        .replace("{fingerprint}", &fingerprint);
    std::fs::write(&config, text).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tailopsmcp"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args([
            "--dev-listen",
            &format!("127.0.0.1:{port}"),
            "--dev-identity",
            "admin@example.com",
        ])
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!(
                "dev server never listened: {e}\n{}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            ),
        }
    };
    let mut mcp = Mcp::new(Conn::new(stream).await, &format!("127.0.0.1:{port}"));
    mcp.initialize().await.unwrap();
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let resp = mcp.request("tools/list", params).await.unwrap();
        let result = rpc_result(&resp, "tools/list").unwrap();
        tools.extend(result["tools"].as_array().expect("tools").iter().cloned());
        cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let _ = child.kill().await;
    Value::Array(tools)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_matches_its_snapshot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/catalog.json");
    let listed = listed_to_admin().await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let all: Vec<&str> = tailopsmcp::tools::catalog().iter().map(|t| t.spec().name).collect();
    assert_eq!(
        names, all,
        "an admin with a target of every kind is offered every tool, in catalog order"
    );
    let now = serde_json::to_string_pretty(&listed).unwrap() + "\n";
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::write(path, &now).unwrap();
        return;
    }
    let before = std::fs::read_to_string(path).expect("tests/snapshots/catalog.json (UPDATE_SNAPSHOTS=1 writes it)");
    assert!(
        before == now,
        "what tools/list returns changed; review and run UPDATE_SNAPSHOTS=1 cargo test --test integration catalog"
    );
}

#[test]
fn tool_names_are_unique_and_well_formed() {
    let mut seen = HashSet::new();
    for t in tailopsmcp::tools::catalog() {
        let name = t.spec().name;
        assert!(seen.insert(name), "duplicate tool name {name}");
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !name.starts_with('_')
                && !name.ends_with('_'),
            "{name} is not snake case"
        );
    }
}

#[test]
fn schemas_are_objects_and_annotations_are_consistent() {
    for t in tailopsmcp::tools::catalog() {
        let s = t.spec();
        assert_eq!(
            s.input_schema.get("type"),
            Some(&json!("object")),
            "{} input schema",
            s.name
        );
        assert_eq!(
            s.output_schema.get("type"),
            Some(&json!("object")),
            "{} output schema: structuredContent is an object",
            s.name
        );
        if s.annotations.read_only {
            assert!(
                !s.annotations.destructive,
                "{}: read-only cannot be destructive",
                s.name
            );
        }
        assert!(!s.description.is_empty() && !s.title.is_empty(), "{}", s.name);
    }
}

#[test]
fn every_changing_tool_offers_a_dry_run_and_reports_its_plan() {
    for t in tailopsmcp::tools::catalog() {
        let s = t.spec();
        if s.annotations.read_only {
            continue;
        }
        let props = s.input_schema.get("properties").and_then(Value::as_object);
        assert!(
            props.and_then(|p| p.get("dry_run")).is_some(),
            "{} changes things but takes no `dry_run`",
            s.name
        );
        let out = s.output_schema.get("properties").and_then(Value::as_object);
        assert!(
            out.and_then(|p| p.get("plan")).is_some(),
            "{} changes things but its result has no `plan`",
            s.name
        );
    }
}

#[test]
fn read_only_and_enable_lists_filter_the_catalog() {
    use tailopsmcp::config::ToolsConfig;
    let all = tailopsmcp::tools::catalog();
    let ro = tailopsmcp::tools::select(&ToolsConfig {
        read_only: true,
        ..Default::default()
    })
    .unwrap();
    assert!(!ro.is_empty());
    assert!(ro.iter().all(|t| t.spec().annotations.read_only));
    assert_eq!(ro.len(), all.iter().filter(|t| t.spec().annotations.read_only).count());
    let only = tailopsmcp::tools::select(&ToolsConfig {
        enable: vec!["whoami".into(), "system_status".into()],
        disable: vec!["system_status".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(only.iter().map(|t| t.spec().name).collect::<Vec<_>>(), ["whoami"]);
    let typo = tailopsmcp::tools::select(&ToolsConfig {
        disable: vec!["sytem_status".into()],
        ..Default::default()
    });
    assert_eq!(
        typo.err().as_deref(),
        Some("tools.disable: no tool is named `sytem_status`")
    );
}
