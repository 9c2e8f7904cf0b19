//! Approvals, confirmations and rate limits end to end: the real binary on a test tailnet with
//! two people (alice asks, bob approves), the host CLI as a third approver, the MCP Python SDK
//! as a client with and without elicitation, and raw 2026-07-28 requests for the sealed
//! request-state round trip. Every step is checked in the audit rows too.
//!
//! Most servers here map cheap tools to modes, so the gate itself is what is tested:
//! `system_processes` → two_person (its `limit` makes "changed arguments" testable) and
//! `targets_check` → confirm; one maps a real changing tool (`containers_restart` on a real
//! engine) to two_person and watches the container's start time.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::http::Mcp;
use crate::support::netns::skip_or_fail;
use crate::support::server::run_cli;
use crate::support::world::World;
use tailopsmcp::audit::{Decision, Outcome, Record};

const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 2));
const BOB: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 3));
const ALICE_LOGIN: &str = "alice@example.com";
const BOB_LOGIN: &str = "bob@example.com";

const MODES: &str = r#"
[approvals.tools]
system_processes = "two_person"
targets_check = "confirm"
system_status = "confirm"
"#;

/// Alice and bob may both read everything and decide approvals (so alice's own approval is
/// refused for being hers, not for a missing scope). Alice first: the Python client (which does
/// not bind) connects from her address.
async fn world(extra: &str) -> Option<World> {
    let grants = json!([{"scopes": ["monitor", "approvals:control"], "targets": ["*"]}]);
    World::builder()
        .user(ALICE, ALICE_LOGIN, grants.clone())
        .user(BOB, BOB_LOGIN, grants)
        .config(extra)
        .start()
        .await
}

/// What these tests ask of a world besides the harness's.
trait Gate {
    /// The newest audit row of `principal` calling `tool`, once there are `n` of them.
    async fn row(&self, n: usize, principal: &str, tool: &str) -> Record;
    /// The MCP Python SDK from alice's address calling `system_processes` with a progress
    /// token, so it waits for a decision; `None` (after `skip_or_fail`) without the SDK.
    fn waiting_client(&self) -> Option<tokio::process::Child>;
    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> u64;
    /// The audit database with its `-wal`, in bytes.
    fn audit_bytes(&self) -> u64;
}

impl Gate for World {
    async fn row(&self, n: usize, principal: &str, tool: &str) -> Record {
        let rows = self
            .server
            .audit_where(n, |r| {
                r.principal.as_deref() == Some(principal) && r.tool.as_deref() == Some(tool)
            })
            .await;
        assert!(
            rows.len() >= n,
            "expected {n} audit rows of {principal} calling {tool}, got {rows:#?}"
        );
        rows.last().cloned().unwrap()
    }

    fn waiting_client(&self) -> Option<tokio::process::Child> {
        let python = crate::support::pyclient::python_mcp_or_skip()?;
        let actions = json!([{"call": "system_processes", "args": {"limit": 2}, "progress": true}]);
        let client = self
            .net
            .command_in_peer_ns(&python.to_string_lossy())
            .arg(crate::support::pyclient::client_script())
            .arg(self.url())
            .arg(actions.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run the MCP Python client");
        Some(client)
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.server.child.as_ref().and_then(|c| c.id()).expect("server pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    fn audit_bytes(&self) -> u64 {
        let size = |suffix: &str| {
            let mut p = self.server.db.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        };
        size("") + size("-wal")
    }
}

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

/// The approval id a pending answer names (`Approval id: ID`).
fn approval_id(r: &Value) -> String {
    let t = text(r);
    let id = t
        .lines()
        .find_map(|l| l.strip_prefix("Approval id: "))
        .unwrap_or_else(|| panic!("no approval id in {r}"));
    assert_eq!(id.len(), 12, "{id}");
    id.to_string()
}

fn decide(id: &str, decision: &str) -> Value {
    json!({"id": id, "decision": decision})
}

fn reason(r: &Record) -> &str {
    r.reason.as_deref().unwrap_or("")
}

/// What the waiting client printed (one JSON line per action, and the raw text), once its
/// call returned after a decision (within 30 s).
async fn waited(client: tokio::process::Child) -> (Vec<Value>, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), client.wait_with_output())
        .await
        .expect("the waiting call returns after the decision")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (lines, stdout)
}

/// The id of the first request `approver` sees pending, once one shows up (each listing must
/// succeed).
async fn pending_request(approver: &mut Mcp) -> String {
    for _ in 0..100 {
        let list = approver.call_tool("approvals_list", json!({})).await.unwrap();
        assert_eq!(list["isError"], false, "{list}");
        if let Some(found) = list["structuredContent"]["approvals"][0]["id"].as_str() {
            return found.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no request showed up while the call waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_person_approves_and_the_call_runs_exactly_once() {
    let Some(w) = world(MODES).await else { return };
    let mut alice = w.session(ALICE).await;
    let mut bob = w.session(BOB).await;
    let args = json!({"limit": 5, "sort": "memory"});

    // Alice's call is recorded as pending and does not run.
    let r = alice.call_tool("system_processes", args.clone()).await.unwrap();
    assert_eq!(r["isError"], true, "{r}");
    assert!(text(&r).starts_with("Approval required:"), "{r}");
    assert!(text(&r).contains("Nothing ran"), "{r}");
    assert!(text(&r).contains("tailopsmcp approvals approve"), "{r}");
    assert!(
        r.get("structuredContent").is_none_or(Value::is_null),
        "nothing ran: {r}"
    );
    let id = approval_id(&r);
    let row = w.row(1, ALICE_LOGIN, "system_processes").await;
    assert_eq!((row.decision, row.outcome), (Decision::Deny, Outcome::Denied));
    assert!(
        reason(&row).contains(&format!("two-person approval required: requested approval `{id}`")),
        "{row:?}"
    );

    // Asking again before anyone decided names the same request.
    let again = alice.call_tool("system_processes", args.clone()).await.unwrap();
    assert!(text(&again).contains("still waiting for a second person"), "{again}");
    assert_eq!(approval_id(&again), id);

    // Alice cannot approve her own request, even though she holds approvals:control.
    let own = alice
        .call_tool("approvals_decide", decide(&id, "approve"))
        .await
        .unwrap();
    assert_eq!(own["isError"], true, "{own}");
    assert!(text(&own).contains("cannot decide their own request"), "{own}");
    let own_row = w.row(1, ALICE_LOGIN, "approvals_decide").await;
    assert_eq!(own_row.outcome, Outcome::Error, "{own_row:?}");

    // Bob sees what would run, with alice's identity, and approves it.
    let list = bob.call_tool("approvals_list", json!({})).await.unwrap();
    let pending = &list["structuredContent"]["approvals"];
    assert_eq!(pending.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(pending[0]["id"], id.as_str());
    assert_eq!(pending[0]["requester"], ALICE_LOGIN);
    assert_eq!(pending[0]["tool"], "system_processes");
    assert_eq!(pending[0]["arguments"], args);
    let dry = bob
        .call_tool(
            "approvals_decide",
            json!({"id": id, "decision": "approve", "dry_run": true}),
        )
        .await
        .unwrap();
    assert_eq!(dry["structuredContent"]["recorded"], false, "{dry}");
    let ok = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(ok["structuredContent"]["approval"]["status"], "approved");
    assert_eq!(ok["structuredContent"]["approval"]["decided_by"], BOB_LOGIN);
    let bob_row = w.row(2, BOB_LOGIN, "approvals_decide").await;
    assert_eq!(bob_row.outcome, Outcome::Ok);
    assert!(
        reason(&bob_row).contains(&format!("deciding approval `{id}` (requested by {ALICE_LOGIN}")),
        "both identities in the decider's row: {bob_row:?}"
    );
    // A decision is final.
    let twice = bob.call_tool("approvals_decide", decide(&id, "deny")).await.unwrap();
    assert!(
        text(&twice).contains("already decided: approve by bob@example.com"),
        "{twice}"
    );

    // Changed arguments are refused (and asked for separately); the approval stays unused.
    let changed = alice
        .call_tool("system_processes", json!({"limit": 6, "sort": "memory"}))
        .await
        .unwrap();
    assert_eq!(changed["isError"], true, "{changed}");
    assert!(text(&changed).contains("approved for different arguments"), "{changed}");
    let other_id = approval_id(&changed);
    assert_ne!(other_id, id);

    // The approved call runs once, in any key order.
    let run = alice
        .call_tool("system_processes", json!({"sort": "memory", "limit": 5}))
        .await
        .unwrap();
    assert_eq!(run["isError"], false, "{run}");
    assert!(run["structuredContent"]["processes"].is_array(), "{run}");
    let ran = w
        .server
        .audit_where(1, |r| {
            r.principal.as_deref() == Some(ALICE_LOGIN) && r.outcome == Outcome::Ok
        })
        .await;
    assert_eq!(ran.len(), 1, "{ran:#?}");
    assert!(
        reason(&ran[0]).contains(&format!("approval `{id}`"))
            && reason(&ran[0]).contains(&format!("approved by {BOB_LOGIN}")),
        "both identities in the requester's row: {:?}",
        ran[0]
    );

    // A second re-call does not run again.
    let second = alice.call_tool("system_processes", args.clone()).await.unwrap();
    assert_eq!(second["isError"], true, "{second}");
    assert!(text(&second).contains("already used"), "{second}");
    let third_id = approval_id(&second);
    let used = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert!(text(&used).contains("already used"), "{used}");

    // The host CLI approves as `host:<unix user>`, audited; the call then runs.
    let cfg = w.server.config.to_string_lossy().into_owned();
    let (code, listed, err) = run_cli(&["--config", &cfg, "approvals", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(listed.contains(&third_id) && listed.contains(&other_id), "{listed}");
    let (code, out, err) = run_cli(&["--config", &cfg, "approvals", "approve", &third_id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("approved approval `{third_id}`")), "{out}");
    let host_rows = w.server.audit_where(1, |r| r.method == "approvals/decide").await;
    let host = host_rows.first().expect("the CLI decision is audited");
    assert!(host.principal.as_deref().unwrap_or("").starts_with("host:"), "{host:?}");
    assert!(
        reason(host).contains(&format!("requested by {ALICE_LOGIN}")),
        "{host:?}"
    );
    let run = alice.call_tool("system_processes", args.clone()).await.unwrap();
    assert_eq!(run["isError"], false, "{run}");

    // A denial refuses the call; bad ids are refused before any lookup.
    let (code, _, err) = run_cli(&["--config", &cfg, "approvals", "deny", &other_id]);
    assert_eq!(code, 0, "{err}");
    let denied = alice
        .call_tool("system_processes", json!({"limit": 6, "sort": "memory"}))
        .await
        .unwrap();
    assert_eq!(denied["isError"], true);
    assert!(text(&denied).contains("was denied by host:"), "{denied}");
    let (code, _, err) = run_cli(&["--config", &cfg, "approvals", "approve", "../../etc/x"]);
    assert_ne!(code, 0);
    assert!(err.contains("not an approval id"), "{err}");
    for bad in ["x", "'; DROP TABLE approvals; --", "ABCDEFGHJKMN"] {
        let r = bob.call_tool("approvals_decide", decide(bad, "approve")).await.unwrap();
        assert_eq!(r["isError"], true, "{bad}: {r}");
        assert!(text(&r).contains("12-character approval id"), "{bad}: {r}");
    }
    let r = bob.call_tool("approvals_decide", decide(&id, "maybe")).await.unwrap();
    assert_eq!(r["isError"], true, "{r}");
    let r = bob.call_tool("approvals_list", json!({"limit": 100000})).await.unwrap();
    assert!(text(&r).contains("between 1 and 500"), "{r}");

    // Ran exactly twice in all: once on bob's approval, once on the host's.
    let runs = w
        .server
        .audit_where(2, |r| {
            r.tool.as_deref() == Some("system_processes") && r.outcome == Outcome::Ok
        })
        .await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_call_reports_progress_and_runs_once_approved() {
    let Some(w) = world(&format!("[approvals]\nwait_secs = 60\n{MODES}")).await else {
        return;
    };
    // Alice's client asks with a progress token and waits.
    let Some(client) = w.waiting_client() else { return };
    // Bob sees the request appear and approves it.
    let mut bob = w.session(BOB).await;
    let id = pending_request(&mut bob).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ok = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    let (lines, stdout) = waited(client).await;
    let progress: Vec<&Value> = lines.iter().filter(|l| l["action"] == "progress").collect();
    assert!(!progress.is_empty(), "{stdout}");
    assert!(
        progress[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("waiting for a second person to approve approval `{id}`")),
        "{stdout}"
    );
    let result = lines.iter().find(|l| l["action"] == "call").expect(&stdout);
    assert_eq!(result["isError"], false, "{stdout}");
    assert!(result["structuredContent"]["processes"].is_array(), "{stdout}");
    let row = w.row(1, ALICE_LOGIN, "system_processes").await;
    assert_eq!(row.outcome, Outcome::Ok, "{row:?}");
    assert!(reason(&row).contains(&format!("approved by {BOB_LOGIN}")), "{row:?}");
    // Spent: the same call again asks anew.
    let mut alice = w.session(ALICE).await;
    let again = alice.call_tool("system_processes", json!({"limit": 2})).await.unwrap();
    assert!(text(&again).contains("already used"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_approval_refuses() {
    let Some(w) = world(&format!("[approvals]\nexpiry_secs = 2\n{MODES}")).await else {
        return;
    };
    let mut alice = w.session(ALICE).await;
    let mut bob = w.session(BOB).await;
    let r = alice.call_tool("system_processes", json!({"limit": 3})).await.unwrap();
    let id = approval_id(&r);
    let ok = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    let late = alice.call_tool("system_processes", json!({"limit": 4})).await.unwrap();
    let late_id = approval_id(&late);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let expired = alice.call_tool("system_processes", json!({"limit": 3})).await.unwrap();
    assert_eq!(expired["isError"], true, "{expired}");
    assert!(text(&expired).contains(&format!("approval `{id}`")), "{expired}");
    assert!(text(&expired).contains("expired at"), "{expired}");
    assert!(
        text(&expired).contains("approved by bob@example.com but not used in time"),
        "{expired}"
    );
    let row = w.row(3, ALICE_LOGIN, "system_processes").await;
    assert_eq!(row.outcome, Outcome::Denied);
    assert!(reason(&row).contains("expired at"), "{row:?}");
    // Deciding an expired request is refused too.
    let r = bob
        .call_tool("approvals_decide", decide(&late_id, "approve"))
        .await
        .unwrap();
    assert!(text(&r).contains("has expired"), "{r}");
    let none = w
        .server
        .audit_where(1, |r| {
            r.tool.as_deref() == Some("system_processes") && r.outcome == Outcome::Ok
        })
        .await;
    assert!(none.is_empty(), "nothing ran: {none:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_asks_the_clients_user_and_refuses_clients_that_cannot_ask() {
    let Some(w) = world(MODES).await else { return };
    let call = json!([{"call": "targets_check", "args": {}}]);

    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    let (lines, out) = w.python(&python, &call, &["--elicit", "accept"]).await;
    let asked = lines.iter().find(|l| l["action"] == "elicitation").expect(&out);
    assert!(
        asked["message"].as_str().unwrap().contains("`targets_check` on local"),
        "the summary names the call: {out}"
    );
    let result = lines.iter().find(|l| l["action"] == "call").expect(&out);
    assert_eq!(result["isError"], false, "{out}");
    assert_eq!(result["structuredContent"]["ok"], true, "{out}");
    let row = w.row(1, ALICE_LOGIN, "targets_check").await;
    assert_eq!(row.outcome, Outcome::Ok);
    assert!(
        reason(&row).contains("confirmed by the client (elicitation; a client confirmation, not a second person)"),
        "{row:?}"
    );

    let (lines, out) = w.python(&python, &call, &["--elicit", "decline"]).await;
    assert!(lines.iter().any(|l| l["action"] == "elicitation"), "{out}");
    let result = lines.iter().find(|l| l["action"] == "call").expect(&out);
    assert_eq!(result["isError"], true, "{out}");
    assert!(
        result["text"][0]
            .as_str()
            .unwrap()
            .contains("not confirmed: the client answered no"),
        "{out}"
    );
    let row = w.row(2, ALICE_LOGIN, "targets_check").await;
    assert_eq!((row.decision, row.outcome), (Decision::Deny, Outcome::Denied));

    let (lines, out) = w.python(&python, &call, &[]).await;
    assert!(!lines.iter().any(|l| l["action"] == "elicitation"), "{out}");
    let result = lines.iter().find(|l| l["action"] == "call").expect(&out);
    assert_eq!(result["isError"], true, "{out}");
    assert!(
        result["text"][0].as_str().unwrap().contains("cannot ask its user"),
        "never waved through: {out}"
    );
    let row = w.row(3, ALICE_LOGIN, "targets_check").await;
    assert_eq!(row.outcome, Outcome::Denied);
    assert_eq!(
        w.server
            .audit_where(1, |r| r.tool.as_deref() == Some("targets_check")
                && r.outcome == Outcome::Ok)
            .await
            .len(),
        1,
        "only the confirmed call ran"
    );
}

/// A stateless 2026-07-28 `tools/call` from `from`, with the per-request `_meta` that version
/// requires, plus `extra` params (`inputResponses`, `requestState`).
async fn call_2026(w: &World, from: IpAddr, tool: &str, args: Value, extra: Value) -> Value {
    let mut m = Mcp::new(w.conn(from).await, &w.host());
    m.protocol = "2026-07-28".into();
    // SEP-2243: the method and tool name ride in headers too on this version.
    m.extra_headers = vec![
        ("mcp-method".into(), "tools/call".into()),
        ("mcp-name".into(), tool.into()),
    ];
    let mut params = json!({
        "name": tool,
        "arguments": args,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "tailopsmcp-tests", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
        },
    });
    if let Value::Object(more) = extra {
        params.as_object_mut().unwrap().extend(more);
    }
    let resp = m.request("tools/call", params).await.expect("tools/call");
    let v = resp.try_json().unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    v.get("result").cloned().unwrap_or_else(|| panic!("no result: {v}"))
}

fn yes() -> Value {
    json!({"confirm": {"action": "accept", "content": {"confirm": true}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_2026_07_28_a_sealed_request_state_confirms_once() {
    let Some(w) = world(MODES).await else { return };
    let first = call_2026(&w, ALICE, "targets_check", json!({}), json!({})).await;
    assert_eq!(first["resultType"], "input_required", "{first}");
    let form = &first["inputRequests"]["confirm"];
    assert_eq!(form["method"], "elicitation/create", "{first}");
    assert!(
        form["params"]["message"]
            .as_str()
            .unwrap()
            .contains("`targets_check` on local")
    );
    let state = first["requestState"].as_str().expect("a request state").to_string();

    // Edited, or presented by someone else, or for other arguments: refused.
    let mut edited = state.clone().into_bytes();
    let i = edited.len() - 10;
    edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    for (from, tool, st) in [
        (ALICE, "targets_check", edited.as_str()),
        (ALICE, "targets_check", "x.y.z"),
        (BOB, "targets_check", state.as_str()),
        (ALICE, "system_status", state.as_str()),
    ] {
        let r = call_2026(
            &w,
            from,
            tool,
            json!({}),
            json!({"requestState": st, "inputResponses": yes()}),
        )
        .await;
        assert_eq!(r["isError"], true, "{r}");
        assert!(text(&r).contains("does not verify"), "{tool} from {from}: {r}");
    }
    // Saying no refuses (and spends the state).
    let no = call_2026(&w, ALICE, "targets_check", json!({}), json!({})).await;
    let no_state = no["requestState"].as_str().unwrap();
    let r = call_2026(
        &w,
        ALICE,
        "targets_check",
        json!({}),
        json!({"requestState": no_state, "inputResponses": {"confirm": {"action": "decline"}}}),
    )
    .await;
    assert!(text(&r).contains("not confirmed"), "{r}");

    // The genuine answer runs the call, once; a replay is refused.
    let ok = call_2026(
        &w,
        ALICE,
        "targets_check",
        json!({}),
        json!({"requestState": state, "inputResponses": yes()}),
    )
    .await;
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(ok["structuredContent"]["ok"], true, "{ok}");
    let replay = call_2026(
        &w,
        ALICE,
        "targets_check",
        json!({}),
        json!({"requestState": state, "inputResponses": yes()}),
    )
    .await;
    assert_eq!(replay["isError"], true, "{replay}");
    assert!(text(&replay).contains("already used"), "{replay}");

    let ran = w
        .server
        .audit_where(1, |r| {
            r.tool.as_deref() == Some("targets_check") && r.outcome == Outcome::Ok
        })
        .await;
    assert_eq!(ran.len(), 1, "{ran:#?}");
    assert!(
        reason(&ran[0]).contains("sealed state verified; a client confirmation, not a second person"),
        "{:?}",
        ran[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_trip_say_when_to_retry_and_recover() {
    let limits = "[limits.rate.low]\nburst = 2\nper_minute = 60\n";
    let Some(w) = world(limits).await else { return };
    let mut alice = w.session(ALICE).await;
    let mut bob = w.session(BOB).await;
    for _ in 0..2 {
        let r = alice.call_tool("whoami", json!({})).await.unwrap();
        assert_eq!(r["isError"], false, "{r}");
    }
    let refused = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(refused["isError"], true, "{refused}");
    assert!(text(&refused).contains("rate limit"), "{refused}");
    assert!(text(&refused).contains("retry after 1 s"), "{refused}");
    assert_eq!(refused["_meta"]["tailopsmcp/retryAfterSecs"], 1, "{refused}");
    let row = w.row(3, ALICE_LOGIN, "whoami").await;
    assert_eq!((row.decision, row.outcome), (Decision::Deny, Outcome::Denied));
    assert!(
        reason(&row).contains("rate limit") && reason(&row).contains("nothing ran"),
        "{row:?}"
    );
    // The wait is the caller's to know, not the audit's: identical refusals stay identical.
    assert!(!reason(&row).contains("retry after"), "{row:?}");
    // Bob has his own bucket.
    let r = bob.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "{r}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "recovered: {r}");
}

/// The gate in front of a tool that really changes something: a container restart mapped to
/// two_person waits for bob, shows the exact API call it will make, runs once after approval,
/// and never again on the same approval — observed in the real engine's start time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_container_restart_waits_for_the_second_person_and_runs_once() {
    use crate::support::docker;
    let host = match docker::ensure_dockerd().and_then(|h| docker::busybox_image(&h).map(|_| h)) {
        Ok(h) => h,
        Err(e) => return skip_or_fail(&format!("docker engine: {e}")),
    };
    let name = format!("tops-appr-{}", std::process::id());
    let container = docker::run_container(&host, &name, &["sleep", "3600"]).expect("run a container");
    let started = || {
        docker::docker(&host, &["inspect", "-f", "{{.State.StartedAt}}", &container.id])
            .expect("inspect")
            .trim()
            .to_string()
    };
    let extra = format!(
        "[approvals.tools]\ncontainers_restart = \"two_person\"\n\n\
         [[grant]]\nmatch = \"user:{ALICE_LOGIN}\"\nscopes = [\"containers:control\"]\ntargets = [\"engine\"]\n\n\
         [[target]]\nid = \"engine\"\nkind = \"docker\"\ntimeout_secs = 60\n[target.docker]\nendpoint = \"{host}\"\n"
    );
    let Some(w) = world(&extra).await else { return };
    let mut alice = w.session(ALICE).await;
    let mut bob = w.session(BOB).await;
    let args = json!({"target": "engine", "container": name, "timeout_secs": 1});
    let before = started();

    let r = alice.call_tool("containers_restart", args.clone()).await.unwrap();
    assert!(text(&r).starts_with("Approval required:"), "{r}");
    let id = approval_id(&r);
    assert_eq!(started(), before, "nothing ran while pending");

    // Bob sees the exact API call the restart will make before approving it.
    let list = bob.call_tool("approvals_list", json!({})).await.unwrap();
    let pending = &list["structuredContent"]["approvals"][0];
    assert_eq!(pending["id"], id.as_str(), "{list}");
    assert_eq!(pending["target"], "engine", "{list}");
    let plan = pending["plan"].to_string();
    assert!(
        plan.contains("POST /containers/") && plan.contains("/restart"),
        "the plan names the API call: {list}"
    );
    let ok = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(started(), before, "approving runs nothing by itself");

    let run = alice.call_tool("containers_restart", args.clone()).await.unwrap();
    assert_eq!(run["isError"], false, "{run}");
    let after = started();
    assert_ne!(after, before, "the approved restart ran");
    let row = w.row(2, ALICE_LOGIN, "containers_restart").await;
    assert_eq!((row.decision, row.outcome), (Decision::Allow, Outcome::Ok), "{row:?}");
    assert!(reason(&row).contains(&id), "the run names its approval: {row:?}");

    // The same approval does not run it again.
    let again = alice.call_tool("containers_restart", args).await.unwrap();
    assert_eq!(again["isError"], true, "{again}");
    assert!(text(&again).contains("already used"), "{again}");
    assert_eq!(started(), after, "no second restart");
}

const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 4));
const CAROL_LOGIN: &str = "carol@example.com";

/// Issue 20 item 2: a call that waited for a second person checks its caller again right
/// before it runs. Alice's grants are taken away while she waits; bob's approval must not
/// run her call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_grants_are_revoked_while_it_waits_does_not_run() {
    let Some(w) = world(&format!("[approvals]\nwait_secs = 60\n{MODES}")).await else {
        return;
    };
    // Alice's client asks with a progress token and waits.
    let Some(client) = w.waiting_client() else { return };
    let mut bob = w.session(BOB).await;
    let id = pending_request(&mut bob).await;
    // The admin takes alice's grants away while her call waits; then bob approves.
    w.set_user(ALICE, ALICE_LOGIN, json!([]));
    let ok = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    let (lines, stdout) = waited(client).await;
    let result = lines.iter().find(|l| l["action"] == "call").expect(&stdout);
    assert_eq!(result["isError"], true, "the call must not run: {stdout}");
    let said = result["text"][0].as_str().unwrap_or("");
    assert!(said.contains("authorization revoked during the wait"), "{stdout}");
    assert!(said.contains("system:read"), "names what was lost: {stdout}");
    assert!(
        result["structuredContent"].is_null(),
        "no processes were read: {stdout}"
    );
    let row = w.row(1, ALICE_LOGIN, "system_processes").await;
    assert_eq!(
        (row.decision, row.outcome),
        (Decision::Deny, Outcome::Denied),
        "{row:?}"
    );
    assert!(reason(&row).contains(&format!("approved by {BOB_LOGIN}")), "{row:?}");
    assert!(
        reason(&row).contains("authorization revoked during the wait"),
        "{row:?}"
    );
}

/// Issue 20 item 12: the approvals tools name no target. Carol may decide requests on `lab`
/// only: she sees only those, cannot decide one on `local` (not even by naming `lab`), and
/// bob, who holds approvals:control on `*`, sees and decides everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_listed_and_decided_only_on_targets_the_approver_holds() {
    let lab = "\n[[target]]\nid = \"lab\"\nkind = \"local\"\n";
    let Some(w) = world(&format!("{MODES}{lab}")).await else {
        return;
    };
    w.net.add_caller(CAROL).unwrap();
    w.set_user(
        CAROL,
        CAROL_LOGIN,
        json!([
            {"scopes": ["monitor"], "targets": ["*"]},
            {"scopes": ["approvals:control"], "targets": ["lab"]},
        ]),
    );
    let mut alice = w.session(ALICE).await;
    let on_local = approval_id(&alice.call_tool("system_processes", json!({"limit": 2})).await.unwrap());
    let on_lab = approval_id(
        &alice
            .call_tool("system_processes", json!({"target": "lab", "limit": 2}))
            .await
            .unwrap(),
    );
    let on_both = approval_id(
        &alice
            .call_tool("system_processes", json!({"targets": ["lab", "local"], "limit": 2}))
            .await
            .unwrap(),
    );

    let mut carol = w.session(CAROL).await;
    let list = carol.call_tool("approvals_list", json!({})).await.unwrap();
    let seen: Vec<&str> = list["structuredContent"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [on_lab.as_str()], "carol sees only the request on lab: {list}");
    for id in [&on_local, &on_both] {
        let r = carol
            .call_tool("approvals_decide", decide(id, "approve"))
            .await
            .unwrap();
        assert_eq!(r["isError"], true, "{r}");
        assert!(text(&r).contains("no approval has the id"), "{r}");
    }
    // Naming a target she holds does not widen what she may decide.
    let r = carol
        .call_tool(
            "approvals_decide",
            json!({"id": on_local, "decision": "approve", "target": "lab"}),
        )
        .await
        .unwrap();
    assert_eq!(r["isError"], true, "{r}");
    assert!(text(&r).contains("takes no `target`"), "{r}");
    let r = carol
        .call_tool("approvals_decide", decide(&on_lab, "approve"))
        .await
        .unwrap();
    assert_eq!(r["isError"], false, "{r}");

    // Bob holds approvals:control on every target: he sees the two still pending and decides.
    let mut bob = w.session(BOB).await;
    let list = bob.call_tool("approvals_list", json!({})).await.unwrap();
    let mut seen: Vec<String> = list["structuredContent"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut want = vec![on_local.clone(), on_both.clone()];
    want.sort();
    assert_eq!(seen, want, "{list}");
    let r = bob
        .call_tool("approvals_decide", decide(&on_local, "deny"))
        .await
        .unwrap();
    assert_eq!(r["isError"], false, "{r}");
    // Each of carol's attempts is audited: two failed, one refused for its `target`, one ran.
    let rows = w
        .server
        .audit_where(4, |r| {
            r.principal.as_deref() == Some(CAROL_LOGIN) && r.tool.as_deref() == Some("approvals_decide")
        })
        .await;
    let outcomes: Vec<Outcome> = rows.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Error, Outcome::Error, Outcome::Denied, Outcome::Ok],
        "{rows:#?}"
    );
}

/// Issue 20 item 7: one caller's slow calls cannot take every slot of a target. Alice starts
/// 20 TLS checks against a server that never answers; at most 8 run (her share), the rest are
/// refused at once with a retry hint, and bob's `system_status` answers while hers hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_slow_calls_leave_slots_for_others() {
    let Some(w) = world("").await else { return };
    // A TCP server in the server's namespace that accepts and never says a word.
    let silent = w.net.bind_in_server_ns("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let slow = json!({"host": "127.0.0.1", "port": port, "timeout_ms": 8000});
    let alice_calls =
        futures::future::join_all((0..20).map(|_| call_2026(&w, ALICE, "network_tls_check", slow.clone(), json!({}))));
    let bob_call = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = std::time::Instant::now();
        let r = call_2026(&w, BOB, "system_status", json!({}), json!({})).await;
        (r, started.elapsed())
    };
    let (alice, (bob, bob_took)) = tokio::join!(alice_calls, bob_call);
    held.abort();
    assert_eq!(bob["isError"], false, "{bob}");
    assert!(
        bob_took < Duration::from_secs(3),
        "bob waited {bob_took:?} behind alice's slow calls"
    );
    let refused: Vec<&Value> = alice.iter().filter(|r| text(r).contains("calls in flight")).collect();
    assert_eq!(refused.len(), 12, "8 of 20 run, 12 are refused: {alice:#?}");
    for r in &refused {
        assert_eq!(r["isError"], true, "{r}");
        assert_eq!(r["_meta"]["tailopsmcp/retryAfterSecs"], 1, "{r}");
    }
}

/// Issue 20 item 7: a call waiting for a second person holds no in-flight slot. With one slot
/// in the whole server, bob can still list and approve while alice's call waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_a_person_holds_no_in_flight_slot() {
    let config = format!("[limits]\nmax_in_flight = 1\n[approvals]\nwait_secs = 60\n{MODES}");
    let Some(w) = world(&config).await else { return };
    // Alice's client asks with a progress token and waits.
    let Some(client) = w.waiting_client() else { return };
    let mut bob = w.session(BOB).await;
    // Bob's calls are not refused while alice waits (`pending_request` asserts it).
    let id = pending_request(&mut bob).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = bob.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "the only slot is free while alice waits: {r}");
    let ok = bob.call_tool("approvals_decide", decide(&id, "approve")).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    let (lines, stdout) = waited(client).await;
    let result = lines.iter().find(|l| l["action"] == "call").expect(&stdout);
    assert_eq!(result["isError"], false, "{stdout}");
}

/// Issue 20 item 7: sessions per principal are capped. A fourth session closes the oldest
/// idle one, and a thousand `initialize` calls leave the server's memory where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_sessions_are_capped_and_the_oldest_idle_one_is_closed() {
    let Some(w) = world("[limits]\nmax_sessions_per_principal = 3\n").await else {
        return;
    };
    let mut first = w.session(ALICE).await;
    let mut second = w.session(ALICE).await;
    let mut third = w.session(ALICE).await;
    // Bob's sessions are his own.
    let mut bob = w.session(BOB).await;
    let mut fourth = w.session(ALICE).await;
    let gone = first.request("tools/list", json!({})).await.unwrap();
    assert_eq!(gone.status, 404, "the oldest idle session was closed: {}", gone.text());
    for m in [&mut second, &mut third, &mut fourth, &mut bob] {
        let r = m.call_tool("whoami", json!({})).await.unwrap();
        assert_eq!(r["isError"], false, "{r}");
    }

    // Many initializes from one caller: memory stays flat (each session is ~40 KiB).
    let mut m = w.session(ALICE).await;
    for _ in 0..100 {
        m.session = None;
        m.protocol = crate::support::http::DEFAULT_PROTOCOL.into();
        m.initialize().await.unwrap();
    }
    let before = w.rss_kib();
    for _ in 0..1000 {
        m.session = None;
        m.protocol = crate::support::http::DEFAULT_PROTOCOL.into();
        m.initialize().await.unwrap();
    }
    let grew = w.rss_kib().saturating_sub(before);
    assert!(grew < 8 * 1024, "1000 initializes grew the server by {grew} KiB");
    let r = m.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "the newest session works: {r}");
}

/// Issue 20 item 6: a flood of denied calls (3,000, each with 200 KB of arguments) from one
/// caller is slowed by her rate limit, told when to retry, and grows the audit database (with
/// its WAL) by under 2 MB; every call is still accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_denied_calls_barely_grows_the_audit_database() {
    let Some(w) = world("").await else { return };
    w.net.add_caller(CAROL).unwrap();
    w.set_user(
        CAROL,
        CAROL_LOGIN,
        json!([{"scopes": ["logs:read"], "targets": ["local"]}]),
    );
    let mut carol = w.session(CAROL).await;
    // Settle the database (first rows, WAL in use) before measuring.
    let _ = carol.call_tool("whoami", json!({})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = w.audit_bytes();
    let big = "x".repeat(200 * 1024);
    let mut retry_hints = 0;
    for _ in 0..3000 {
        let r = carol
            .call_tool("system_processes", json!({"limit": 5, "filter": big}))
            .await
            .unwrap();
        assert_eq!(r["isError"], true, "{}", &r.to_string()[..300.min(r.to_string().len())]);
        if r["_meta"]["tailopsmcp/retryAfterSecs"].is_u64() {
            retry_hints += 1;
        }
    }
    let r = w.session(BOB).await.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "the server still serves others: {r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grew = w.audit_bytes().saturating_sub(before);
    eprintln!("3,000 denied 200 KB calls: audit db + wal grew by {grew} bytes; {retry_hints} retry hints");
    assert!(
        retry_hints > 2000,
        "a denied flood is told when to retry ({retry_hints} hints)"
    );
    assert!(
        grew < 2 * 1024 * 1024,
        "3,000 denied 200 KB calls grew the audit db by {grew} bytes"
    );
    w.server.audit(); // the rows still read back
}

/// Issue 20 item 6: 3,000 requests from an address tailscaled does not know are refused, the
/// address is answered 429 without asking tailscaled once it used up its refusals, and the
/// audit database grows by under 2 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_an_unknown_peer_is_limited_per_address() {
    let Some(w) = world("").await else { return };
    let stranger = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 9));
    w.net.add_caller(stranger).unwrap();
    let mut bob = w.session(BOB).await;
    let _ = bob.call_tool("whoami", json!({})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = w.audit_bytes();
    let whois_before = w.standin.whois_count();
    let mut conn = w.conn(stranger).await;
    let (mut forbidden, mut limited) = (0, 0);
    for i in 0..3000 {
        let req = crate::support::http::Request::new(http::Method::POST, &format!("/mcp/{i}"))
            .header("host", &w.host())
            .header("content-type", "application/json")
            .body(b"{}".to_vec());
        let resp = match conn.send(req).await {
            Ok(r) => r,
            Err(_) => {
                conn = w.conn(stranger).await;
                continue;
            }
        };
        match resp.status {
            403 => forbidden += 1,
            429 => {
                limited += 1;
                assert!(resp.header("retry-after").is_some(), "429 says when to retry");
            }
            other => panic!("unexpected HTTP {other}: {}", resp.text()),
        }
    }
    assert!(forbidden >= 20 && limited > 2500, "403: {forbidden}, 429: {limited}");
    let asked = w.standin.whois_count() - whois_before;
    assert!(
        asked < 200,
        "tailscaled was asked {asked} times for 3,000 refused requests"
    );
    let r = bob.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "the server still serves others: {r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grew = w.audit_bytes().saturating_sub(before);
    eprintln!(
        "3,000 refused requests: 403 {forbidden}, 429 {limited}, whois {asked}; audit db + wal grew by {grew} bytes"
    );
    assert!(
        grew < 2 * 1024 * 1024,
        "3,000 refused requests grew the audit db by {grew} bytes"
    );
}
