//! Identity and authorization end to end: the real binary in a network namespace with a TUN
//! `tailscale0`, callers with their own tailnet addresses in a peer namespace, the LocalAPI
//! stand-in for tailscaled, a real SQLite audit file, and real journald. Who a caller is (a user,
//! a tagged node, nobody, the server's own node), what that lets them list and call, how
//! tailscaled failing or changing is handled, and what is audited. The listeners' limits are in
//! `listener.rs`, MCP sessions in `sessions.rs`, the commands in `cli.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{Conn, Mcp, init_body};
use crate::support::localapi::fixture;
use crate::support::netns::skip_or_fail;
use crate::support::server::{CAP, PORT};
use crate::support::world::cast::{ALICE, BOB, CI, SERVER_IP6, STRANGER};
use crate::support::world::{SERVER_IP, World, fixture_world as world};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn structured(result: &Value) -> &Value {
    &result["structuredContent"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_only_on_the_tailnet_addresses() {
    let Some(w) = world("", "").await else { return };
    w.server
        .wait_listening(&w.net, SocketAddr::new(IpAddr::V6(SERVER_IP6), PORT))
        .await;
    let mut listening = w.net.listening_sockets();
    listening.sort();
    assert_eq!(
        listening,
        vec![
            SocketAddr::new(IpAddr::V4(SERVER_IP), PORT),
            SocketAddr::new(IpAddr::V6(SERVER_IP6), PORT)
        ],
        "the server must listen on its tailnet addresses and nothing else"
    );
    let refused = w
        .net
        .connect_in_server_ns(SocketAddr::from(([127, 0, 0, 1], PORT)))
        .await;
    assert!(refused.is_err(), "nothing may listen on loopback");
    // IPv6 callers are served too.
    w.net.add_caller(ip("fd7a:115c:a1e0::2:2")).unwrap();
    w.standin
        .add_identity(ip("fd7a:115c:a1e0::2:2"), fixture("whois-user.json"));
    let stream = w
        .net
        .connect(ip("fd7a:115c:a1e0::2:2"), SocketAddr::new(IpAddr::V6(SERVER_IP6), PORT))
        .await
        .unwrap();
    let mut m = Mcp::new(Conn::new(stream).await, &format!("[{SERVER_IP6}]:{PORT}"));
    m.initialize().await.expect("initialize over IPv6");
    let who = m.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(
        structured(&who)["remote_addr"]
            .as_str()
            .unwrap()
            .split("]:")
            .next()
            .unwrap(),
        "[fd7a:115c:a1e0::2:2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_user_lists_and_calls_tools() {
    let Some(w) = world("", "").await else { return };
    let mut alice = w.session(ALICE).await;
    let mut tools = alice.list_tools().await.unwrap();
    tools.sort();
    // alice's grants: system:read + containers:read on *, containers:control on docker-*.
    assert_eq!(
        tools,
        vec![
            "system_disks",
            "system_processes",
            "system_sockets",
            "system_status",
            "targets_list",
            "whoami"
        ]
    );

    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    let s = structured(&who);
    assert_eq!(s["principal"], "alice@example.com");
    assert_eq!(s["kind"], "user");
    assert_eq!(s["identity_source"], "whois");
    assert_eq!(s["node_id"], "nQmK8XyZp711CNTRL");
    assert_eq!(s["node_name"], "alice-laptop.tail3f9c2.ts.net");
    assert!(s["remote_addr"].as_str().unwrap().starts_with("100.100.2.2:"));
    let scopes: Vec<&str> = s["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, vec!["system:read", "containers:read"]);
    assert_eq!(s["scopes"][0]["granted_by"], json!([format!("cap:{CAP}[0]")]));

    let status = alice.call_tool("system_status", json!({})).await.unwrap();
    assert_eq!(status["isError"], false, "{status}");
    assert!(structured(&status)["memory"].is_object(), "{status}");

    let rows = w
        .server
        .audit_where(2, |r| {
            r.principal.as_deref() == Some("alice@example.com") && r.method == "tools/call"
        })
        .await;
    let st = rows
        .iter()
        .find(|r| r.tool.as_deref() == Some("system_status"))
        .expect("system_status row");
    assert_eq!(st.decision, tailopsmcp::audit::Decision::Allow);
    assert_eq!(st.outcome, tailopsmcp::audit::Outcome::Ok);
    assert_eq!(st.target.as_deref(), Some("local"));
    assert_eq!(st.node_id.as_deref(), Some("nQmK8XyZp711CNTRL"));
    assert_eq!(st.identity_source.as_deref(), Some("whois"));
    assert_eq!(st.grants, vec![format!("cap:{CAP}[0]")]);
    assert!(st.session_id.is_some(), "session id recorded");
    assert!(st.duration_ms.is_some() && st.result_bytes.unwrap_or(0) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_node_gets_its_tag_grants() {
    let extra = "[[grant]]\nmatch = \"tag:ci\"\nscopes = [\"network:read\"]\ntargets = [\"local\"]\n";
    let Some(w) = world("", extra).await else { return };
    let mut ci = w.session(CI).await;
    let mut tools = ci.list_tools().await.unwrap();
    tools.sort();
    assert_eq!(
        tools,
        vec![
            "network_dns_lookup",
            "network_http_probe",
            "network_interfaces",
            "network_ping",
            "network_port_check",
            "network_tls_check",
            "network_traceroute",
            "system_disks",
            "system_processes",
            "system_sockets",
            "system_status",
            "targets_list",
            "whoami"
        ]
    );
    let who = ci.call_tool("whoami", json!({})).await.unwrap();
    let s = structured(&who);
    assert_eq!(
        s["principal"], "tag:ci,tag:mcp-client",
        "a tagged node's principal is its tags, never `tagged-devices`"
    );
    assert_eq!(s["kind"], "tagged");
    let net = ci.call_tool("network_interfaces", json!({})).await.unwrap();
    assert_eq!(net["isError"], false, "{net}");
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("network_interfaces"))
        .await;
    assert_eq!(rows[0].principal.as_deref(), Some("tag:ci,tag:mcp-client"));
    assert_eq!(rows[0].tags, vec!["tag:ci", "tag:mcp-client"]);
    assert_eq!(rows[0].grants, vec!["config:grant[0](tag:ci)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ungranted_user_sees_no_tools_and_is_denied() {
    let Some(w) = world("", "").await else { return };
    let mut bob = w.session(BOB).await;
    assert!(bob.list_tools().await.unwrap().is_empty());
    let r = bob.call_tool("system_status", json!({})).await.unwrap();
    assert_eq!(r["isError"], true);
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("denied: scope system:read is not granted"),
        "{r}"
    );
    let r = bob.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(r["isError"], true);
    let rows = w
        .server
        .audit_where(2, |r| r.principal.as_deref() == Some("bob@example.com"))
        .await;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.decision, tailopsmcp::audit::Decision::Deny);
        assert_eq!(r.outcome, tailopsmcp::audit::Outcome::Denied);
        assert!(r.grants.is_empty());
    }
    assert_eq!(rows[0].reason.as_deref(), Some("scope system:read is not granted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_address_is_refused_and_audited() {
    let Some(w) = world("", "").await else { return };
    let r = w.post(STRANGER, &[], &init_body()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], -32001);
    let rows = w.server.audit_where(1, |r| r.method == "http").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].decision, tailopsmcp::audit::Decision::Deny);
    assert!(rows[0].remote_addr.as_deref().unwrap().starts_with("100.100.2.9:"));
    assert!(
        rows[0].reason.as_deref().unwrap().contains("not_a_peer"),
        "{:?}",
        rows[0].reason
    );
    assert!(rows[0].principal.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localapi_slow_hung_failing_or_down_is_refused_within_the_timeout() {
    let Some(mut w) = world("identity_cache_secs = 0", "").await else {
        return;
    };
    for (knob, reason) in [
        ("slow", "localapi_timeout"),
        ("hung", "localapi_timeout"),
        ("fail", "localapi_http_error"),
        ("down", "localapi_unavailable"),
    ] {
        match knob {
            "slow" => w.standin.set_delay(Duration::from_secs(3)),
            "hung" => w.standin.set_hang(true),
            "fail" => w.standin.set_fail(Some(500)),
            _ => w.standin.set_absent(true),
        }
        let started = Instant::now();
        let r = w.post(ALICE, &[], &init_body()).await;
        let took = started.elapsed();
        assert_eq!(r.status, 403, "{knob}");
        assert!(
            took < Duration::from_millis(1500),
            "{knob}: refused after {took:?}; whois_timeout is 500 ms"
        );
        let rows = w
            .server
            .audit_where(1, |r| r.reason.as_deref().is_some_and(|x| x.contains(reason)))
            .await;
        assert!(!rows.is_empty(), "{knob}: no audit row with {reason}");
        w.standin.set_delay(Duration::ZERO);
        w.standin.set_hang(false);
        w.standin.set_fail(None);
        w.standin.set_absent(false);
        assert!(w.server.alive(), "server died after {knob}");
        let ok = w.post(ALICE, &[], &init_body()).await;
        assert_eq!(ok.status, 200, "{knob}: not served again once tailscaled is back");
    }
}

/// The scope names of a `whoami` result, in order.
fn scope_names(who: &Value) -> Vec<String> {
    structured(who)["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["scope"].as_str().unwrap().to_string())
        .collect()
}

/// "Cache at most per TCP connection and for a few seconds": requests on one keep-alive
/// connection share one whois for `identity_cache_secs` (2 s by default); another connection
/// from the same address whoises again; once the answer aged, the same connection sees grants
/// that changed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whois_answers_are_cached_per_connection_for_a_few_seconds() {
    let Some(w) = world("", "").await else { return };
    let ttl = Duration::from_secs(2);
    let whois = || w.standin.whois_count();
    let before = whois();
    let started = Instant::now();
    // initialize, notifications/initialized and tools/call on one connection.
    let mut alice = w.session(ALICE).await;
    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    assert!(started.elapsed() < ttl, "three requests took {:?}", started.elapsed());
    assert_eq!(whois() - before, 1, "one whois for three requests on one connection");
    assert_eq!(scope_names(&who), ["system:read", "containers:read"]);
    let first_addr = structured(&who)["remote_addr"].clone();

    // A second connection from the same address is not served from the first one's cache.
    let mut again = w.session(ALICE).await;
    assert_eq!(whois() - before, 2, "a new connection whoises again");
    let who = again.call_tool("whoami", json!({})).await.unwrap();
    assert_ne!(structured(&who)["remote_addr"], first_addr);
    assert_eq!(whois() - before, 2);

    // tailscaled now gives alice other grants.
    w.set_user(
        ALICE,
        "alice@example.com",
        json!([{"scopes": ["network:read"], "targets": ["local"]}]),
    );
    // Within the cache age the first connection still answers from its cache...
    if started.elapsed() + Duration::from_millis(500) < ttl {
        let who = alice.call_tool("whoami", json!({})).await.unwrap();
        assert_eq!(scope_names(&who), ["system:read", "containers:read"], "cached");
        assert_eq!(whois() - before, 2, "no whois within the cache age");
    }
    // ...and once its answer is older than that, the same connection sees the new grants.
    tokio::time::sleep(ttl.saturating_sub(started.elapsed()) + Duration::from_millis(200)).await;
    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(scope_names(&who), ["network:read"], "{who}");
    assert_eq!(structured(&who)["remote_addr"], first_addr, "the same TCP connection");
    assert_eq!(whois() - before, 3, "one new whois once the cached answer aged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_are_ignored() {
    let Some(w) = world("", "").await else { return };
    let mut bob = Mcp::new(w.conn(BOB).await, &w.host());
    bob.extra_headers = vec![
        ("Tailscale-User-Login".into(), "alice@example.com".into()),
        ("Tailscale-User-Name".into(), "Alice Example".into()),
        (
            "Tailscale-App-Capabilities".into(),
            json!({CAP: [{"scopes": ["admin"], "targets": ["*"]}]}).to_string(),
        ),
    ];
    bob.initialize().await.unwrap();
    assert!(
        bob.list_tools().await.unwrap().is_empty(),
        "bob stays bob whatever headers he sends"
    );
    let r = bob.call_tool("system_status", json!({})).await.unwrap();
    assert_eq!(r["isError"], true);
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("system_status"))
        .await;
    assert_eq!(rows[0].principal.as_deref(), Some("bob@example.com"));
}

/// Make `CI` whois as the server's own node (the StableID in the stand-in's status).
fn ci_is_the_servers_own_node(w: &World) {
    let self_id = fixture("status.json")["Self"]["ID"].as_str().unwrap().to_string();
    let mut me = fixture("whois-tagged.json");
    me["Node"]["StableID"] = json!(self_id);
    w.standin.add_identity(CI, me);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_the_servers_own_node_are_refused_unless_allowed() {
    let Some(w) = world("", "").await else { return };
    ci_is_the_servers_own_node(&w);
    let r = w.post(CI, &[], &init_body()).await;
    assert_eq!(r.status, 403);
    let rows = w
        .server
        .audit_where(1, |r| r.reason.as_deref().is_some_and(|x| x.contains("own node")))
        .await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_the_servers_own_node_are_served_with_allow_self() {
    let Some(w) = world("allow_self = true", "").await else {
        return;
    };
    ci_is_the_servers_own_node(&w);
    let mut me = w.session(CI).await;
    let who = me.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(who["isError"], false, "{who}");
    assert_eq!(structured(&who)["principal"], "tag:ci,tag:mcp-client");
    assert_eq!(
        structured(&who)["node_id"],
        fixture("status.json")["Self"]["ID"],
        "served as the server's own node"
    );
    let rows = w.server.audit_where(1, |r| r.tool.as_deref() == Some("whoami")).await;
    assert_eq!(rows[0].decision, tailopsmcp::audit::Decision::Allow);
    assert!(
        !w.server
            .audit()
            .iter()
            .any(|r| r.reason.as_deref().is_some_and(|x| x.contains("own node"))),
        "nothing refused as the own node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let Some(w) = world("", "").await else { return };
    // Malformed JSON.
    let r = w
        .post(ALICE, &[], b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\":")
        .await;
    assert!(r.status >= 400 && r.status < 500, "malformed JSON: {}", r.status);
    // Oversized body (default limit 1 MiB).
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(2 << 20)
    );
    let r = w.post(ALICE, &[], big.as_bytes()).await;
    assert_eq!(r.status, 413, "oversized body");

    let mut alice = w.session(ALICE).await;
    // Unknown tool: a protocol error, and an audit row naming it.
    let r = alice
        .request("tools/call", json!({"name": "rm_rf", "arguments": {}}))
        .await
        .unwrap();
    let body = r.json();
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool `rm_rf`")
    );
    // Params rmcp cannot parse (`arguments` not an object, `name` not a string): -32602 saying
    // what is wrong, and an audit row all the same (naming the tool when the name is a string).
    for (params, says) in [
        (
            json!({"name": "whoami", "arguments": 5}),
            "invalid type: integer `5`, expected a map",
        ),
        (json!({"name": 5}), "invalid type: integer `5`, expected a string"),
    ] {
        let body = alice.request("tools/call", params).await.unwrap().json();
        assert_eq!(body["error"]["code"], -32602, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("malformed params for `tools/call`: ") && message.contains(says),
            "{body}"
        );
    }
    let body = alice.request("resources/read", json!({"uri": 7})).await.unwrap().json();
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed params for `resources/read`: invalid type: integer `7`"),
        "{body}"
    );
    let read = w.server.audit_where(1, |r| r.method == "resources/read").await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].outcome, tailopsmcp::audit::Outcome::Denied);
    assert_eq!(read[0].arguments, Some(json!({"uri": 7})));
    // A method nobody serves is not a malformed call.
    let body = alice.request("tools/frobnicate", json!({})).await.unwrap().json();
    assert_eq!(body["error"]["code"], -32601, "{body}");
    assert_eq!(body["error"]["message"], "unknown method `tools/frobnicate`", "{body}");
    // Wrong argument types and out-of-range values: an isError result with the reason.
    let r = alice
        .call_tool("system_processes", json!({"limit": "ten"}))
        .await
        .unwrap();
    assert_eq!(r["isError"], true);
    assert!(
        r["content"][0]["text"].as_str().unwrap().contains("invalid arguments"),
        "{r}"
    );
    let r = alice
        .call_tool("system_processes", json!({"limit": 100000}))
        .await
        .unwrap();
    assert_eq!(r["isError"], true, "{r}");
    let r = alice.call_tool("system_status", json!({"target": 7})).await.unwrap();
    assert_eq!(r["isError"], true, "{r}");
    let r = alice
        .call_tool("system_status", json!({"target": "nas"}))
        .await
        .unwrap();
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("unknown target `nas`"),
        "{r}"
    );

    let rows = w.server.audit_where(7, |r| r.method == "tools/call").await;
    let by_tool = |t: &str| rows.iter().filter(|r| r.tool.as_deref() == Some(t)).count();
    assert_eq!(by_tool("rm_rf"), 1);
    let malformed: Vec<_> = rows
        .iter()
        .filter(|r| r.reason.as_deref().is_some_and(|x| x.starts_with("malformed params")))
        .collect();
    assert_eq!(malformed.len(), 2, "{malformed:?}");
    assert!(
        malformed
            .iter()
            .all(|r| r.outcome == tailopsmcp::audit::Outcome::Denied)
    );
    assert_eq!(malformed[0].tool.as_deref(), Some("whoami"));
    assert_eq!(malformed[0].arguments, Some(json!(5)));
    assert_eq!(malformed[1].tool, None);
    assert_eq!(by_tool("system_processes"), 2);
    assert_eq!(by_tool("system_status"), 2);
    let typed = rows
        .iter()
        .find(|r| r.error.as_deref().is_some_and(|e| e.contains("invalid arguments")))
        .unwrap();
    assert_eq!(typed.outcome, tailopsmcp::audit::Outcome::Error);
    assert_eq!(typed.arguments, Some(json!({"limit": "ten"})));

    // Still serving.
    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinds_when_the_tailnet_addresses_change() {
    let Some(w) = world("", "").await else { return };
    let new_ip = Ipv4Addr::new(100, 100, 1, 9);
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            w.net.server_ns(),
            "addr",
            "add",
            &format!("{new_ip}/32"),
            "dev",
            "tailscale0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w.standin.set_self_ips(&[IpAddr::V4(new_ip)]);
    let new_addr = SocketAddr::new(IpAddr::V4(new_ip), PORT);
    w.server.wait_listening(&w.net, new_addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.net.listening_sockets() != vec![new_addr] {
        assert!(
            Instant::now() < deadline,
            "old listeners not closed: {:?}",
            w.net.listening_sockets()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_running_then_listens() {
    let Some(s) = World::builder().prepare().await else {
        return;
    };
    s.standin.set_backend_state("NeedsLogin");
    let w = s.spawn().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        w.net.listening_sockets().is_empty(),
        "must not listen before tailscaled is Running"
    );
    assert!(
        w.server.log().contains("NeedsLogin"),
        "says why it waits: {}",
        w.server.log()
    );
    w.standin.set_backend_state("Running");
    w.server
        .wait_listening(&w.net, SocketAddr::new(IpAddr::V4(SERVER_IP), PORT))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_networking_is_refused_clearly() {
    let Some(s) = World::builder().prepare().await else {
        return;
    };
    let mut status = fixture("status.json");
    status["TUN"] = json!(false);
    s.standin.set_status(status);
    let mut w = s.spawn().await;
    let child = w.server.child.as_mut().unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(!code.success());
    assert!(w.server.log().contains("userspace-networking"), "{}", w.server.log());
    assert!(w.net.listening_sockets().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_carries_the_audit_events() {
    if let Err(e) = crate::support::journald::ensure_journald() {
        return skip_or_fail(&format!("journald: {e}"));
    }
    let login = format!("journal-{}@example.com", std::process::id());
    let Some(w) = world("", "").await else { return };
    w.set_user(
        ALICE,
        &login,
        json!([{"scopes": ["system:read"], "targets": ["local"]}]),
    );
    let mut m = w.session(ALICE).await;
    m.call_tool("whoami", json!({})).await.unwrap();
    let filter = format!("TAILOPS_PRINCIPAL={login}");
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = crate::support::journald::journal_entries(&["-t", "tailopsmcp-audit", &filter]);
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries.len(), 1, "one journal event per call: {entries:?}");
    let e = &entries[0];
    assert_eq!(e["SYSLOG_IDENTIFIER"], "tailopsmcp-audit");
    assert_eq!(e["TAILOPS_TOOL"], "whoami");
    assert_eq!(e["TAILOPS_DECISION"], "allow");
    assert_eq!(e["TAILOPS_NODE_ID"], "nQmK8XyZp711CNTRL");
    let row = w
        .server
        .audit_where(1, |r| r.principal.as_deref() == Some(login.as_str()))
        .await;
    assert_eq!(
        e["TAILOPS_REQUEST_ID"].as_str(),
        Some(row[0].request_id.as_str()),
        "journal and SQLite cross-check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_client_works_over_the_tailnet() {
    let python = match crate::support::pyclient::python_mcp() {
        Ok(p) => p,
        Err(e) => return skip_or_fail(&format!("MCP Python SDK: {e}")),
    };
    let Some(w) = world("", "").await else { return };
    w.net.set_default_source(ALICE).unwrap();
    let actions = json!([{"list_tools": {}}, {"call": "whoami", "args": {}}, {"call": "system_status", "args": {}}]);
    let url = format!("http://{SERVER_IP}:{PORT}/mcp");
    let (lines, stdout) = crate::support::pyclient::run_actions(&w.net, &python, &url, &actions).await;
    assert_eq!(lines.len(), 4, "initialize, list, two calls: {stdout}");
    assert_eq!(
        lines[0]["serverInfo"]["name"], "tailopsmcp",
        "the server names itself, not rmcp"
    );
    assert_eq!(
        lines[1]["tools"],
        json!([
            "whoami",
            "system_status",
            "system_processes",
            "system_sockets",
            "system_disks",
            "targets_list"
        ])
    );
    assert_eq!(lines[2]["structuredContent"]["principal"], "alice@example.com");
    assert_eq!(
        lines[2]["structuredContent"]["remote_addr"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some(ALICE.to_string().as_str())
    );
    assert_eq!(lines[3]["isError"], false);
    assert!(lines[3]["structuredContent"]["memory"]["total_bytes"].as_u64().unwrap() > 0);
    let rows = w.server.audit_where(2, |r| r.method == "tools/call").await;
    assert_eq!(rows.len(), 2, "one audit row per call");
}

/// `[tools] read_only = true`: tools that can change something are not registered at all —
/// not listed even to a caller holding their scope, and a call to one is an unknown tool
/// (audited) — while read-only tools of the same toolset keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_registers_no_changing_tool() {
    let extra = "[tools]\nread_only = true\n\n[[grant]]\nmatch = \"user:alice@example.com\"\n\
                 scopes = [\"inventory:control\"]\ntargets = [\"local\"]\n";
    let Some(w) = world("", extra).await else { return };
    let mut alice = w.session(ALICE).await;
    let tools = alice.list_tools().await.unwrap();
    assert!(tools.contains(&"inventory_get".to_string()), "{tools:?}");
    for changing in ["inventory_scan", "inventory_set", "inventory_annotate"] {
        assert!(
            !tools.contains(&changing.to_string()),
            "{changing} listed in read-only mode"
        );
    }
    let r = alice
        .request(
            "tools/call",
            json!({"name": "inventory_set", "arguments": {"tags": ["x"]}}),
        )
        .await
        .unwrap();
    let body = r.json();
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool `inventory_set`"),
        "{body}"
    );
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("inventory_set"))
        .await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].outcome, tailopsmcp::audit::Outcome::Denied);
    let r = alice.call_tool("inventory_get", json!({})).await.unwrap();
    assert_eq!(r["isError"], false, "{r}");
}
