//! The bad-input corpus (issue #20, "Tests"): every string argument of every tool the catalog
//! offers gets every payload of [`payloads`] — option injection, shell metacharacters, NUL,
//! newlines and CR, a 1 MiB string, odd Unicode, and lone UTF-16 surrogate escapes (valid JSON
//! text that `serde_json` refuses) — through the real server binary on the tailnet harness, as a
//! caller holding every scope on every target.
//!
//! The tool name of `tools/call` gets the same payloads. The corpus is derived from the live
//! `tools/list` (each tool's input schema: string properties, string items of arrays, nested
//! objects, `$ref`s and `anyOf`s), checked against `tests/snapshots/catalog.json` so a tool
//! missing from this config fails the test instead of going untested. Other required properties get valid values from [`default_for`]; a new required
//! property without a default fails the test and names itself. Tools that take `dry_run` are
//! called with `dry_run: true` and once more with `dry_run: false`: a payload must not run either
//! way. What runs for real is harmless here: `[services] units` names only units that do not
//! exist, packages and services go through `systemctl` (no systemd is PID 1 on these machines, and
//! every payload is refused before that anyway), the Proxmox target points at a closed port, the
//! Docker target is the tests' own engine and its one container is this test's.
//!
//! For each call it asserts: a clear answer (an `isError` result or JSON-RPC error with a message
//! that names no panic, or a success whose output shows no sign of an option being obeyed),
//! nothing executed (each injection payload would create its own marker file
//! `/tmp/tops-corpus-PWNED-PID-N`; none may exist, checked after the call and again at the end),
//! exactly one audit row for the call (row count before/after; that row names the tool and
//! holds at most [`MAX_AUDIT_ROW_BYTES`] of caller-made text), and the server still serving (the
//! process lives and `whoami` answers after each tool). Every failure is collected, so one run
//! lists them all.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::support::docker::{Container, IMAGE, run_container};
use crate::support::http::{Mcp, Response};
use crate::support::world::{Daemon, World};

/// The caller: every scope (`admin` bundle) on every target.
const ROOT: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 9));
/// Stands for a lone surrogate in a payload; replaced by the escape in the JSON text.
const SURROGATE_MARK: char = '\u{E000}';
/// The largest error message counted as clear (an error that echoes a 1 MiB argument is not).
const MAX_ERROR_CHARS: usize = 16 * 1024;
/// The most bytes one call may put in its audit row (tool, target, arguments, reason, error,
/// method, session): the arguments' JSON is kept to 64 KiB by the audit log itself.
const MAX_AUDIT_ROW_BYTES: i64 = 128 * 1024;
/// Units `[services] units` allows: none of them exists.
const UNITS_GLOB: &str = "tops-corpus-absent-*";

/// One bad value. `text` may hold `{M}` (this call's marker file) and [`SURROGATE_MARK`]
/// (replaced by `surrogate` in the JSON text sent).
struct Payload {
    label: &'static str,
    text: String,
    surrogate: Option<&'static str>,
}

fn payloads() -> Vec<Payload> {
    let p = |label, text: &str| Payload {
        label,
        text: text.to_owned(),
        surrogate: None,
    };
    vec![
        p("option --help", "--help"),
        p("option -rf /", "-rf /"),
        // Would write the marker if any program took it as its output option (curl, git diff,
        // journalctl take --output; writing /etc/passwd instead would damage the machine).
        p("option --output=", "--output={M}"),
        p("option -o", "-o{M}"),
        p("git --upload-pack", "--upload-pack=touch {M}"),
        p("git ext:: transport", "ext::sh -c touch% {M}"),
        p("shell ;", "x; touch {M}"),
        p("shell $()", "$(touch {M})"),
        p("shell backticks", "`touch {M}`"),
        p("shell |", "x | touch {M}"),
        p("shell &&", "x && touch {M}"),
        p("newline", "x\ntouch {M}\n"),
        p("CR LF", "x\r\ntouch {M}\r\n"),
        p("NUL", "x\u{0}touch {M}"),
        p("path traversal", "../../../../../../etc/passwd"),
        p("format string", "%s%s%n%x{}{0}"),
        p(
            "odd unicode",
            "\u{202e}\u{feff}\u{200b}\u{85}e\u{301}\u{1F600}\u{FFFF}\u{10FFFF}",
        ),
        p("1 MiB", &"A".repeat(1 << 20)),
        Payload {
            label: "lone high surrogate",
            text: format!("x{SURROGATE_MARK}y"),
            surrogate: Some("\\ud800"),
        },
        Payload {
            label: "lone low surrogate",
            text: format!("{SURROGATE_MARK}"),
            surrogate: Some("\\udfff"),
        },
    ]
}

/// One step from an argument object to a string slot.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    /// The (only) element of an array.
    Item,
}

fn slot_name(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Item => s.push_str("[]"),
        }
    }
    s
}

/// Every path to a string-typed value in `schema` (`defs` resolves `$ref`s).
fn string_slots(schema: &Value, defs: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>, depth: usize) {
    assert!(depth < 16, "input schema nests deeper than 16 levels at {path:?}");
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        let target = defs.get(name).unwrap_or_else(|| panic!("unresolved $ref {r}"));
        string_slots(target, defs, path, out, depth + 1);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            string_slots(alt, defs, path, out, depth + 1);
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        // An enum of strings without a type.
        None if schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.iter().any(Value::is_string)) =>
        {
            vec!["string"]
        }
        _ => vec![],
    };
    if types.contains(&"string") && !out.contains(path) {
        out.push(path.clone());
    }
    if types.contains(&"object") {
        for (k, v) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            path.push(Seg::Key(k.clone()));
            string_slots(v, defs, path, out, depth + 1);
            path.pop();
        }
    }
    if types.contains(&"array")
        && let Some(items) = schema.get("items")
    {
        path.push(Seg::Item);
        string_slots(items, defs, path, out, depth + 1);
        path.pop();
    }
}

/// `args` with `value` at `path` (objects and one-element arrays made on the way).
fn set_at(args: &mut Value, path: &[Seg], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *args = value;
        return;
    };
    match first {
        Seg::Key(k) => {
            if !args.is_object() {
                *args = Value::Object(Map::new());
            }
            let obj = args.as_object_mut().unwrap();
            let child = obj.entry(k.clone()).or_insert(Value::Null);
            set_at(child, rest, value);
        }
        Seg::Item => {
            let mut item = args.as_array().and_then(|a| a.first().cloned()).unwrap_or(Value::Null);
            set_at(&mut item, rest, value);
            *args = Value::Array(vec![item]);
        }
    }
}

/// The fixtures the valid values point at.
struct Fixture {
    files_root: PathBuf,
    logs_root: PathBuf,
    git_repo: PathBuf,
    container: String,
    /// Removed on drop.
    _running: Container,
}

/// A valid value for required property `prop` of `tool`.
fn default_for(tool: &str, prop: &str, f: &Fixture) -> Option<Value> {
    let toolset = tool.split('_').next().unwrap_or_default();
    Some(match (toolset, tool, prop) {
        ("containers", _, "target") => json!("dock"),
        ("proxmox", _, "target") => json!("pve"),
        (_, _, "target") => json!("local"),
        (_, _, "container") => json!(f.container),
        (_, _, "image") => json!(IMAGE),
        (_, "files_list" | "files_search", "path") => json!(f.files_root),
        ("files", _, "path") => json!(f.files_root.join("notes.txt")),
        ("logs", _, "path") => json!(f.logs_root.join("app.log")),
        ("files", _, "pattern") => json!("hello"),
        (_, _, "unit") => json!("tops-corpus-absent-1.service"),
        (_, _, "host") => json!("127.0.0.1"),
        (_, _, "ports") => json!([9]),
        (_, _, "url") => json!("http://127.0.0.1:9/"),
        ("network", _, "name") => json!("localhost"),
        ("stacks", _, "name") => json!("corpus"),
        ("stacks", _, "repository") => json!(format!("file://{}", f.git_repo.display())),
        ("proxmox", _, "name") => json!("snap1"),
        ("proxmox", _, "vmid") => json!(100),
        ("proxmox", _, "action") => json!("start"),
        ("inventory", _, "note") => json!("a note"),
        ("approvals", _, "id") => json!("a1b2c3d4"),
        ("approvals", _, "decision") => json!("approve"),
        ("packages", _, "packages") => json!(["tops-corpus-absent"]),
        _ => return None,
    })
}

/// Optional properties set on every call of `tool` to keep it cheap: a `grep` that matches
/// nothing would otherwise read the whole journal (about 2 s a call here).
fn bounding_defaults(tool: &str) -> Vec<(&'static str, Value)> {
    match tool {
        "logs_journal" => vec![("since", json!("-1min"))],
        _ => vec![],
    }
}

/// What came back for one call.
enum Answer {
    Ok(String),
    ToolError(String),
    RpcError(i64, String),
    Http(u16, String),
    Failed(String),
}

impl Answer {
    fn of(resp: Result<Response, String>) -> Answer {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Answer::Failed(e),
        };
        if resp.status != 200 {
            return Answer::Http(resp.status, resp.text());
        }
        let v = match resp.try_json() {
            Ok(v) => v,
            Err(e) => return Answer::Failed(e),
        };
        if let Some(err) = v.get("error") {
            return Answer::RpcError(
                err["code"].as_i64().unwrap_or(0),
                err["message"].as_str().unwrap_or_default().to_owned(),
            );
        }
        let result = &v["result"];
        let text: String = result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if result["isError"].as_bool() == Some(true) {
            Answer::ToolError(text)
        } else {
            Answer::Ok(text)
        }
    }

    fn brief(&self) -> String {
        let cut = |s: &str| s.chars().take(200).collect::<String>();
        match self {
            Answer::Ok(t) => format!("ok: {}", cut(t)),
            Answer::ToolError(t) => format!("tool error: {}", cut(t)),
            Answer::RpcError(c, m) => format!("JSON-RPC error {c}: {}", cut(m)),
            Answer::Http(s, b) => format!("HTTP {s}: {}", cut(b)),
            Answer::Failed(e) => format!("no answer: {}", cut(e)),
        }
    }
}

/// Signs that a program took `--help` as its option rather than as data.
fn looks_like_help(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("usage:") || lower.contains("--version") || lower.contains("show this help")
}

/// The server with every toolset configured (files, logs, services, stacks, network, a docker
/// and an http target), rate limits out of the way, and root's session; the fixture its tools
/// get valid values from.
async fn world() -> Option<(World, Fixture)> {
    let mut s = World::builder()
        .with(Daemon::Busybox)
        .user(
            ROOT,
            "root@example.com",
            json!([{"scopes": ["admin"], "targets": ["*"]}]),
        )
        // Room for a 1 MiB argument inside its JSON-RPC envelope (the default body limit is 1 MiB).
        .server_section("max_body_bytes = 4194304")
        .session(ROOT)
        .prepare()
        .await?;
    let host = s.docker_host().to_owned();
    let dir = s.dir.path().to_owned();
    let files_root = dir.join("files");
    let logs_root = dir.join("logs");
    let git_root = dir.join("git");
    let git_repo = git_root.join("repo");
    for d in [&files_root, &logs_root] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(files_root.join("notes.txt"), "hello world\n").unwrap();
    std::fs::write(logs_root.join("app.log"), "hello log\nerror: something\n").unwrap();
    let compose =
        format!("services:\n  web:\n    image: {IMAGE}\n    command: [\"sleep\", \"60\"]\n    network_mode: none\n");
    // A repository with one compose file, for `stacks_deploy`'s valid `repository`.
    crate::stacks::make_repo(&git_repo, &[("compose.yaml", &compose)]);
    let container_name = format!("tops-corpus-{}", std::process::id());
    let container = run_container(
        &host,
        &container_name,
        &["sh", "-c", "trap 'exit 0' TERM; echo hello; while :; do sleep 1; done"],
    )
    .unwrap_or_else(|e| panic!("test container: {e}"));

    let limits: String = ["low", "moderate", "high", "critical"]
        .iter()
        .map(|r| format!("[limits.rate.{r}]\nburst = 100000\nper_minute = 1000000\n"))
        .collect();
    // `refusal_window_secs = 0` lands in the harness's `[audit]` table: one row per call, so the
    // corpus can count them (repeats are counted into a summary row otherwise).
    s.config(&format!(
        "refusal_window_secs = 0\n\n[files]\nroots = [{files:?}]\n\n[logs]\nroots = [{logs:?}]\n\n\
         [services]\nunits = [\"{UNITS_GLOB}\"]\nhelper_timeout_secs = 10\n\n\
         [stacks]\ndir = {stacks:?}\nallowed_git_hosts = [\"file://{git}\"]\ndocker_host = \"{host}\"\ntimeout_secs = 30\n\n\
         [network]\nhttp_allow = [\"127.0.0.1\"]\ndns_servers = [\"127.0.0.1:53\"]\n\n\
         [approvals.risk]\nlow = \"none\"\nmoderate = \"none\"\nhigh = \"none\"\ncritical = \"none\"\n\n\
         [limits]\nmax_in_flight = 64\nmax_in_flight_per_principal = 64\nmax_sessions_per_principal = 1000\n{limits}\n\
         [[target]]\nid = \"dock\"\nkind = \"docker\"\ntimeout_secs = 20\n[target.docker]\nendpoint = \"{host}\"\n\n\
         [[target]]\nid = \"pve\"\nkind = \"http\"\ntimeout_secs = 5\n[target.http]\nbase_url = \"http://127.0.0.1:9/api2/json\"\n\
         allowed_methods = [\"GET\", \"POST\"]\n",
        files = files_root.display().to_string(),
        logs = logs_root.display().to_string(),
        stacks = dir.join("stacks").display().to_string(),
        git = git_root.display(),
    ));
    let fixture = Fixture {
        files_root,
        logs_root,
        git_repo,
        container: container_name,
        _running: container,
    };
    Some((s.start().await, fixture))
}

/// Every tool from `tools/list` with its input schema, following `nextCursor`.
async fn list_tools(mcp: &mut Mcp) -> Vec<(String, Value)> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({ "cursor": c }));
        let resp = mcp.request("tools/list", params).await.unwrap();
        let result = crate::support::http::rpc_result(&resp, "tools/list").unwrap();
        for t in result["tools"].as_array().unwrap() {
            tools.push((t["name"].as_str().unwrap().to_owned(), t["inputSchema"].clone()));
        }
        cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
        if cursor.is_none() {
            return tools;
        }
    }
}

fn marker(n: usize) -> PathBuf {
    PathBuf::from(format!("/tmp/tops-corpus-PWNED-{}-{n}", std::process::id()))
}

/// Markers of this process left anywhere under /tmp.
fn markers_left() -> Vec<String> {
    let prefix = format!("tops-corpus-PWNED-{}-", std::process::id());
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Rows in the audit table, read through `conn` (kept open: the server writes in WAL mode).
fn audit_count(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM audit", [], |r| r.get(0)).unwrap()
}

/// The newest row's tool, reason, and the bytes of every text a caller can fill in it.
fn last_audit_row(conn: &rusqlite::Connection) -> (Option<String>, Option<String>, i64) {
    conn.query_row(
        "SELECT tool, reason, coalesce(length(CAST(tool AS BLOB)), 0) + coalesce(length(CAST(target AS BLOB)), 0) \
         + coalesce(length(CAST(arguments AS BLOB)), 0) + coalesce(length(CAST(reason AS BLOB)), 0) \
         + coalesce(length(CAST(error AS BLOB)), 0) + coalesce(length(CAST(method AS BLOB)), 0) \
         + coalesce(length(CAST(session_id AS BLOB)), 0) FROM audit ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap_or((None, None, 0))
}

/// The audit table's row count once it holds more than `before` rows, or after `patience`.
/// The server commits a call's row before it answers, so this normally returns at once; a row
/// that comes later still shows, in the next call's count.
async fn audit_count_after(conn: &rusqlite::Connection, before: i64, patience: Duration) -> i64 {
    let deadline = Instant::now() + patience;
    loop {
        let n = audit_count(conn);
        if n > before || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Send `body` (one `tools/call` carrying `payload`, its marker `mark`), and add to `failures`
/// what the module doc asks of every call: a clear answer, nothing executed, exactly one audit
/// row (naming `tool`, when given) of bounded size. Returns how long the answer took.
#[allow(clippy::too_many_arguments)]
async fn check_call(
    w: &mut World,
    db: &rusqlite::Connection,
    body: String,
    payload: &Payload,
    mark: &Path,
    tool: Option<&str>,
    what: &str,
    failures: &mut Vec<String>,
) -> Duration {
    let before = audit_count(db);
    let t0 = Instant::now();
    let answer = Answer::of(w.mcp().request_text(body).await);
    let took = t0.elapsed();
    // Every call's answer, for a look at what the server says.
    if std::env::var("TOPS_CORPUS_TRACE").is_ok() {
        eprintln!(
            "{took:.2?} {what}: {}",
            answer.brief().chars().take(150).collect::<String>()
        );
    }

    // A clear answer.
    match &answer {
        Answer::Ok(t) => {
            if payload.label == "option --help" && looks_like_help(t) {
                failures.push(format!("{what}: `--help` looks obeyed: {}", answer.brief()));
            }
        }
        Answer::ToolError(m) | Answer::RpcError(_, m) => {
            if m.trim().is_empty() {
                failures.push(format!("{what}: error without a message: {}", answer.brief()));
            } else if m.contains("panicked") {
                failures.push(format!("{what}: error names a panic: {}", answer.brief()));
            } else if m.chars().count() > MAX_ERROR_CHARS {
                failures.push(format!(
                    "{what}: error message of {} chars (echoes the argument?): {}",
                    m.chars().count(),
                    answer.brief()
                ));
            } else if payload.label == "option --help" && looks_like_help(m) {
                failures.push(format!("{what}: `--help` looks obeyed: {}", answer.brief()));
            }
        }
        Answer::Http(status, _) => {
            // Only JSON that serde_json cannot read may be refused at the HTTP layer, and then
            // as a malformed request (400 with a JSON-RPC parse error), not a media type.
            if payload.surrogate.is_none() || *status != 400 {
                failures.push(format!("{what}: {}", answer.brief()));
            }
        }
        Answer::Failed(_) => {
            failures.push(format!("{what}: {}", answer.brief()));
            // The connection is gone: carry on with a new one.
            *w.mcp() = w.session(ROOT).await;
        }
    }

    // Nothing executed.
    if mark.exists() {
        failures.push(format!("{what}: EXECUTED: marker {} exists", mark.display()));
        let _ = std::fs::remove_file(mark);
    }

    // Exactly one audit row, for this tool (when `tool` names one). A body serde_json
    // refuses is refused at the HTTP layer: its row says why and names no tool (the server
    // does not guess at what a malformed request meant).
    let patience = Duration::from_secs(1);
    let after = audit_count_after(db, before, patience).await;
    if after - before != 1 {
        failures.push(format!(
            "{what}: {} audit rows for one call ({})",
            after - before,
            answer.brief()
        ));
    } else {
        let (row_tool, row_reason, row_bytes) = last_audit_row(db);
        if payload.surrogate.is_some() {
            if !row_reason.as_deref().unwrap_or("").contains("not a JSON-RPC message") {
                failures.push(format!("{what}: the refusal's audit row says {row_reason:?}"));
            }
        } else if tool.is_some() && row_tool.as_deref() != tool {
            failures.push(format!("{what}: the call's audit row names tool {row_tool:?}"));
        }
        if row_bytes > MAX_AUDIT_ROW_BYTES {
            failures.push(format!(
                "{what}: the call's audit row holds {row_bytes} bytes of caller-made text ({})",
                answer.brief()
            ));
        }
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_argument_of_every_tool_survives_the_bad_input_corpus() {
    let Some((mut w, fixture)) = world().await else { return };
    let started = Instant::now();

    // The catalog this server offers must be the whole snapshot: a tool missing here would go
    // untested.
    let tools = list_tools(w.mcp()).await;
    let snapshot: Value =
        serde_json::from_str(include_str!("snapshots/catalog.json")).expect("tests/snapshots/catalog.json");
    let offered: Vec<&str> = tools.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = snapshot
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| !offered.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "tools in the catalog snapshot this config does not offer: {missing:?}"
    );

    let db = rusqlite::Connection::open_with_flags(&w.server.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open audit db");
    let payloads = payloads();
    let mut failures: Vec<String> = Vec::new();
    let mut calls = 0usize;
    let mut slots_total = 0usize;
    let mut next_id: i64 = 1_000_000;
    let mut slowest: Vec<(Duration, String)> = Vec::new();

    for (tool, schema) in &tools {
        let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
        let mut slots = Vec::new();
        string_slots(schema, &defs, &mut Vec::new(), &mut slots, 0);
        slots_total += slots.len();
        // Valid values for the required properties.
        let mut base = json!({});
        for req in schema["required"].as_array().into_iter().flatten() {
            let prop = req.as_str().unwrap();
            let value = default_for(tool, prop, &fixture)
                .unwrap_or_else(|| panic!("no valid default for required `{tool}.{prop}`: add one to default_for"));
            base[prop] = value;
        }
        // The target the tool works on, even where optional: without it, `local` would refuse
        // every containers_* and proxmox_* call before any other argument is looked at.
        if schema["properties"].get("target").is_some() {
            base["target"] = default_for(tool, "target", &fixture).unwrap();
        }
        for (prop, value) in bounding_defaults(tool) {
            base[prop] = value;
        }
        let dry_runs: &[Option<bool>] = if schema["properties"].get("dry_run").is_some() {
            &[Some(true), Some(false)]
        } else {
            &[None]
        };
        let tool_started = Instant::now();
        for slot in &slots {
            for dry_run in dry_runs {
                for payload in &payloads {
                    calls += 1;
                    let n = calls;
                    let mark = marker(n);
                    let text = payload.text.replace("{M}", &mark.display().to_string());
                    let mut args = base.clone();
                    if let Some(d) = dry_run {
                        args["dry_run"] = json!(d);
                    }
                    if slot.first() == Some(&Seg::Key("targets".into())) {
                        // `targets` replaces `target`.
                        args.as_object_mut().unwrap().remove("target");
                    }
                    set_at(&mut args, slot, json!(text));
                    next_id += 1;
                    let mut body = json!({
                        "jsonrpc": "2.0",
                        "id": next_id,
                        "method": "tools/call",
                        "params": { "name": tool, "arguments": args },
                    })
                    .to_string();
                    if let Some(escape) = payload.surrogate {
                        body = body.replace(SURROGATE_MARK, escape);
                    }
                    let what = format!(
                        "{tool} {}={}{}",
                        slot_name(slot),
                        payload.label,
                        dry_run.map(|d| format!(" dry_run={d}")).unwrap_or_default()
                    );

                    let took = check_call(&mut w, &db, body, payload, &mark, Some(tool), &what, &mut failures).await;
                    slowest.push((took, what));
                }
            }
        }

        // Still serving after this tool's share of the corpus.
        if !w.server.alive() {
            panic!(
                "the server died during {tool}'s corpus; failures so far:\n{}\nlog:\n{}",
                failures.join("\n"),
                w.server.log()
            );
        }
        match w.mcp().call_tool("whoami", json!({})).await {
            Ok(r) if r["isError"].as_bool() != Some(true) => {}
            other => failures.push(format!("whoami after {tool}'s corpus: {other:?}")),
        }
        eprintln!(
            "{tool}: {} string slots x {} runs in {:.1?}",
            slots.len(),
            dry_runs.len(),
            tool_started.elapsed()
        );
    }

    // The tool name is a string the caller sends too: each payload as the name of the tool.
    for payload in &payloads {
        calls += 1;
        let mark = marker(calls);
        let text = payload.text.replace("{M}", &mark.display().to_string());
        next_id += 1;
        let mut body = json!({
            "jsonrpc": "2.0",
            "id": next_id,
            "method": "tools/call",
            "params": { "name": text, "arguments": {} },
        })
        .to_string();
        if let Some(escape) = payload.surrogate {
            body = body.replace(SURROGATE_MARK, escape);
        }
        let what = format!("tool name={}", payload.label);
        let took = check_call(&mut w, &db, body, payload, &mark, None, &what, &mut failures).await;
        slowest.push((took, what));
    }

    // A payload that ran late (a background process) would show now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = markers_left();
    if !left.is_empty() {
        failures.push(format!("EXECUTED: markers left under /tmp: {left:?}"));
    }
    assert!(w.server.alive(), "the server died at the end of the corpus");
    let whoami = w.mcp().call_tool("whoami", json!({})).await;
    assert!(
        whoami.as_ref().is_ok_and(|r| r["isError"].as_bool() != Some(true)),
        "whoami after the corpus: {whoami:?}"
    );

    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    eprintln!(
        "bad-input corpus: {} tools, {slots_total} string slots, {calls} calls, {} failures, in {:.1?}; slowest calls:",
        tools.len(),
        failures.len(),
        started.elapsed()
    );
    for (d, what) in slowest.iter().take(8) {
        eprintln!("  {d:.2?} {what}");
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} corpus calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
