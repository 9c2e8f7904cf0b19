//! The foundation end to end: the real binary in a network namespace with a TUN `tailscale0`,
//! callers with their own tailnet addresses in a peer namespace, the LocalAPI stand-in for
//! tailscaled, a real SQLite audit file, and real journald.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{Conn, Mcp, Request, init_body};
use crate::support::localapi::{StandIn, fixture};
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

/// Header, idle and body timeouts on a tailnet listener: a client that sends no complete
/// headers, or idles after a request, is disconnected after `header_timeout_secs`; one whose
/// body stalls or trickles is answered 408 and disconnected after `body_timeout_secs`; others
/// are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(mut w) = world("header_timeout_secs = 1\nbody_timeout_secs = 2", "").await else {
        return;
    };
    /// Read until the server closes `stream` (at most 8 s); what it sent, and how long after
    /// `started` it closed.
    async fn until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf, started: Instant) -> (String, Duration) {
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut got)).await;
        assert!(
            r.is_ok(),
            "not closed within 8 s; got {}",
            String::from_utf8_lossy(&got)
        );
        (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
    }
    let head = |length: usize| {
        format!(
            "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\ncontent-length: {length}\r\n\r\n",
            w.host()
        )
    };

    // (a) Nothing at all; half a request head; a finished request, then silence.
    let whole = format!("{}{}", head(init_body().len()), String::from_utf8(init_body()).unwrap());
    for (what, preamble) in [
        ("no bytes", String::new()),
        (
            "an incomplete head",
            "POST /mcp HTTP/1.1\r\nhost: 100.100.1.1:8471\r\ncontent-".to_string(),
        ),
        ("an idle keep-alive connection", whole),
    ] {
        let (mut rd, mut wr) = w.net.connect(ALICE, w.server.addr).await.unwrap().into_split();
        wr.write_all(preamble.as_bytes()).await.unwrap();
        let (got, took) = until_closed(&mut rd, Instant::now()).await;
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(4),
            "{what}: closed after {took:?}, header_timeout_secs is 1"
        );
        if what == "an idle keep-alive connection" {
            assert!(got.starts_with("HTTP/1.1 200"), "{what}: {got}");
        } else {
            assert!(got.is_empty(), "{what}: closed unanswered, got {got}");
        }
    }

    // (b) A body that stops after 10 of 100 bytes, and one that trickles a byte every 200 ms
    // (it would take 20 s): both cut off at the body deadline, whatever the trickle.
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(51)
    );
    assert_eq!(body.len(), 100);
    let mut slow = Vec::new();
    for trickle in [false, true] {
        let (rd, mut wr) = w.net.connect(ALICE, w.server.addr).await.unwrap().into_split();
        wr.write_all(format!("{}{}", head(body.len()), &body[..10]).as_bytes())
            .await
            .unwrap();
        let sent = Instant::now();
        let rest = body.as_bytes()[10..].to_vec();
        let writer = tokio::spawn(async move {
            for b in rest {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if trickle && wr.write_all(&[b]).await.is_err() {
                    return;
                }
            }
        });
        slow.push((trickle, rd, writer, sent));
    }
    // Meanwhile another client is served, on connections of its own.
    let r = w.post(BOB, &[], &init_body()).await;
    assert_eq!(r.status, 200, "served while two bodies stall");
    for (trickle, mut rd, writer, sent) in slow {
        let (got, took) = until_closed(&mut rd, sent).await;
        writer.abort();
        assert!(
            took >= Duration::from_millis(1200) && took < Duration::from_secs(5),
            "trickle {trickle}: answered after {took:?}, body_timeout_secs is 2: {got}"
        );
        assert!(got.starts_with("HTTP/1.1 408"), "trickle {trickle}: {got}");
        assert!(got.to_ascii_lowercase().contains("connection: close"), "{got}");
        let json = got.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {got}"));
        assert_eq!(v["error"]["code"], -32001, "the one refusal shape: {got}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("request body not received within 2 s"),
            "{got}"
        );
    }
    assert!(w.server.alive());
    let mut alice = w.session(ALICE).await;
    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_replayed_by_another_principal_gets_404() {
    let Some(w) = world("", "").await else { return };
    let mut alice = w.session(ALICE).await;
    let sid = alice.session.clone().expect("a session id");
    let mut ci = Mcp::new(w.conn(CI).await, &w.host());
    ci.session = Some(sid.clone());
    let r = ci
        .request("tools/call", json!({"name": "whoami", "arguments": {}}))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "another principal must not use alice's session");
    let rows = w
        .server
        .audit_where(1, |r| {
            r.reason.as_deref().is_some_and(|x| x.contains("another principal"))
        })
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].principal.as_deref(), Some("tag:ci,tag:mcp-client"));
    assert_eq!(
        rows[0].session_id.as_deref(),
        Some(sid.as_str()),
        "the refusal row names the session that was replayed"
    );
    // A refusal before any identity (an unknown address) records the presented id too.
    let r = w.post(STRANGER, &[("mcp-session-id", &sid)], &init_body()).await;
    assert_eq!(r.status, 403);
    let rows = w
        .server
        .audit_where(1, |r| {
            r.remote_addr.as_deref().is_some_and(|a| a.starts_with("100.100.2.9:"))
        })
        .await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].principal.is_none());
    assert_eq!(rows[0].session_id.as_deref(), Some(sid.as_str()));
    // Alice's session still works.
    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sessions_principal_can_end_it() {
    let Some(w) = world("", "").await else { return };
    let mut alice = w.session(ALICE).await;
    let sid = alice.session.clone().expect("a session id");
    let mut ci = Mcp::new(w.conn(CI).await, &w.host());
    ci.session = Some(sid.clone());
    let r = ci.close().await.unwrap();
    assert_eq!(r.status, 404, "another principal must not end alice's session");
    let who = alice.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");

    let r = alice.close().await.unwrap();
    assert!((200..300).contains(&r.status), "DELETE by its owner: HTTP {}", r.status);
    alice.session = Some(sid);
    let r = alice
        .request("tools/call", json!({"name": "whoami", "arguments": {}}))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "an ended session is gone");
}

/// Raw HTTP/1.1 on `stream`: write `head` (request line and headers, no blank line) and `body`,
/// then read until `done(bytes so far)`; the bytes read. Panics after 10 s.
async fn raw_exchange(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    body: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    use tokio::io::AsyncWriteExt;
    let request = format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await.expect("write request");
    read_until(stream, done).await
}

/// Whether an SSE transcript has a `data:` line for JSON-RPC id `id`.
fn has_message(transcript: &str, id: u64) -> bool {
    let needle = format!("\"id\":{id}");
    transcript
        .lines()
        .any(|l| l.starts_with("data: ") && l.contains(&needle))
}

/// The JSON-RPC message of the first `data:` line in an SSE transcript for id `id`.
fn sse_message(transcript: &str, id: u64) -> Value {
    let needle = format!("\"id\":{id}");
    transcript
        .lines()
        .find_map(|l| l.strip_prefix("data: ").filter(|d| d.contains(&needle)))
        .map(|d| serde_json::from_str(d).expect("a JSON-RPC message"))
        .unwrap_or_else(|| panic!("no message with id {id} in: {transcript}"))
}

/// Read from `stream` until what arrived satisfies `done` (at most 10 s).
async fn read_until(stream: &mut tokio::net::TcpStream, done: impl Fn(&str) -> bool) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&String::from_utf8_lossy(&got)) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no complete answer in 10 s; got: {}", String::from_utf8_lossy(&got)))
            .expect("read");
        assert!(n > 0, "connection closed; got: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_call_whose_connection_drops_is_resumed_by_its_principal() {
    let extra = "[[grant]]\nmatch = \"user:alice@example.com\"\nscopes = [\"network:read\"]\n";
    let Some(w) = world("", extra).await else { return };
    let alice = w.session(ALICE).await;
    let sid = alice.session.clone().expect("a session id");
    let session_headers = format!(
        "host: {}\r\nmcp-session-id: {sid}\r\nmcp-protocol-version: 2025-06-18",
        w.host()
    );

    // A call that takes about two seconds (ten pings 200 ms apart) on a connection of its own,
    // dropped as soon as the stream's first event (which carries an event id) arrived.
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "network_ping", "arguments": {"host": "127.0.0.1", "count": 10}}})
    .to_string();
    let mut first = w.net.connect(ALICE, w.server.addr).await.expect("connect");
    let head = format!(
        "POST /mcp HTTP/1.1\r\n{session_headers}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream"
    );
    let opened = raw_exchange(&mut first, &head, &call, |t| {
        t.lines().any(|l| l.starts_with("id: ")) && t.contains("\n\n")
    })
    .await;
    assert!(opened.starts_with("HTTP/1.1 200"), "{opened}");
    assert!(
        !opened.contains("\"id\":7"),
        "the call answered before its connection dropped: {opened}"
    );
    let event_id = opened
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an event id")
        .trim()
        .to_string();
    drop(first);

    let resume_head = |from_session: &str| {
        format!("GET /mcp HTTP/1.1\r\n{from_session}\r\naccept: text/event-stream\r\nlast-event-id: {event_id}")
    };
    // Another principal cannot pick up alice's stream.
    let mut ci = w.net.connect(CI, w.server.addr).await.expect("connect");
    let refused = raw_exchange(&mut ci, &resume_head(&session_headers), "", |t| t.contains("\r\n\r\n")).await;
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    let rows = w
        .server
        .audit_where(1, |r| {
            r.reason
                .as_deref()
                .is_some_and(|x| x.starts_with("GET /mcp: session belongs to another principal"))
        })
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].principal.as_deref(), Some("tag:ci,tag:mcp-client"));

    // Alice resumes it on a new connection and gets the answer.
    let mut again = w.net.connect(ALICE, w.server.addr).await.expect("connect");
    let resumed = raw_exchange(&mut again, &resume_head(&session_headers), "", |t| has_message(t, 7)).await;
    assert!(resumed.starts_with("HTTP/1.1 200"), "{resumed}");
    let answer = sse_message(&resumed, 7);
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(structured(&answer["result"])["received"], 10, "{answer}");

    // Run once, audited once.
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("network_ping"))
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].principal.as_deref(), Some("alice@example.com"));
    assert_eq!(rows[0].outcome.as_str(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_in_flight_in_the_session_is_refused_and_the_first_call_still_answers() {
    let extra = "[[grant]]\nmatch = \"user:alice@example.com\"\nscopes = [\"network:read\"]\n";
    let Some(w) = world("", extra).await else { return };
    let alice = w.session(ALICE).await;
    let sid = alice.session.clone().expect("a session id");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\nmcp-session-id: {sid}\r\nmcp-protocol-version: 2025-06-18\r\n\
         content-type: application/json\r\naccept: application/json, text/event-stream",
        w.host()
    );

    // Call 7 runs for about two seconds (ten pings 200 ms apart)...
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "network_ping", "arguments": {"host": "127.0.0.1", "count": 10}}})
    .to_string();
    let mut first = w.net.connect(ALICE, w.server.addr).await.expect("connect");
    let opened = raw_exchange(&mut first, &head, &ping, |t| t.contains("\n\n")).await;
    assert!(opened.starts_with("HTTP/1.1 200"), "{opened}");
    assert!(!opened.contains("\"id\":7"), "the ping answered at once: {opened}");

    // ...while the client sends another request with the same id: refused, nothing run.
    let whoami = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}})
    .to_string();
    let mut second = w.net.connect(ALICE, w.server.addr).await.expect("connect");
    let refused = raw_exchange(&mut second, &head, &whoami, |t| has_message(t, 7)).await;
    assert!(refused.starts_with("HTTP/1.1 200"), "{refused}");
    let error = sse_message(&refused, 7);
    assert_eq!(error["error"]["code"], -32600, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("request id 7 is already used by a call in flight"),
        "{error}"
    );

    // The first call's stream still gets its own answer.
    let answered = read_until(&mut first, |t| has_message(t, 7)).await;
    let answer = sse_message(&answered, 7);
    assert_eq!(structured(&answer["result"])["received"], 10, "{answer}");

    // Audited: the refusal (naming the tool it would have run) and the ping.
    let rows = w.server.audit_where(1, |r| r.tool.as_deref() == Some("whoami")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].principal.as_deref(), Some("alice@example.com"));
    assert_eq!(rows[0].decision.as_str(), "deny");
    assert_eq!(rows[0].session_id.as_deref(), Some(sid.as_str()));
    assert!(
        rows[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("request id 7 is already used"),
        "{:?}",
        rows[0].reason
    );
    let rows = w
        .server
        .audit_where(1, |r| r.tool.as_deref() == Some("network_ping"))
        .await;
    assert_eq!(rows[0].outcome.as_str(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_headers_outside_the_allow_list_are_refused() {
    let Some(w) = world("extra_hosts = [\"mcp.tail3f9c2.ts.net\"]", "").await else {
        return;
    };
    for (host, status) in [
        ("evil.example.com", 403),
        ("localhost", 403),
        ("127.0.0.1:8471", 403),
        ("100.100.1.1:8471", 200),
        ("mcp-host.tail3f9c2.ts.net", 200),
        ("mcp-host", 200),
        ("mcp.tail3f9c2.ts.net:443", 200),
    ] {
        let r = w.post(ALICE, &[("host", host)], &init_body()).await;
        assert_eq!(r.status, status, "Host: {host}");
    }
    let rows = w
        .server
        .audit_where(3, |r| r.reason.as_deref().is_some_and(|x| x.contains("Host")))
        .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].principal.as_deref(), Some("alice@example.com"));
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

// --- Tailscale Services: the loopback listener behind `tailscale serve --proxy-protocol=2`.

const SERVICE: &str = "[service]\nname = \"svc:mcp\"\nlisten = \"127.0.0.1:8472\"\n";
const SERVICE_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 8472);

fn proxy_v2(source: SocketAddr, command: ppp::v2::Command) -> Vec<u8> {
    let destination = SocketAddr::from(([100, 100, 20, 5], 443));
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | command,
        ppp::v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

/// How many whois requests the stand-in received whose query parameter `key` satisfies `pred`.
fn whois_asked(w: &World, key: &str, pred: impl Fn(&str) -> bool) -> usize {
    w.standin
        .requests()
        .iter()
        .filter(|r| r.path_only() == "/localapi/v0/whois" && r.query(key).is_some_and(|v| pred(&v)))
        .count()
}

/// A connection to the Service listener from inside the server's namespace (as `tailscale
/// serve` makes it), with `preamble` written first.
async fn service_conn(w: &World, preamble: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match w.net.connect_in_server_ns(SocketAddr::from(SERVICE_ADDR)).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("service listener not up: {e}\n{}", w.server.log()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    stream.write_all(preamble).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_listener_takes_the_caller_from_a_proxy_v2_header() {
    let Some(w) = world("", SERVICE).await else { return };
    let caller = SocketAddr::new(ALICE, 40123);
    let stream = service_conn(&w, &proxy_v2(caller, ppp::v2::Command::Proxy)).await;
    let mut m = Mcp::new(Conn::new(stream).await, "mcp.tail3f9c2.ts.net");
    m.initialize().await.expect("initialize through the Service");
    let who = m.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");
    assert_eq!(
        structured(&who)["remote_addr"],
        "100.100.2.2:40123",
        "the caller named by the PROXY header"
    );
    assert!(
        whois_asked(&w, "svc_name", |v| v == "svc:mcp") >= 1,
        "whois must ask about grants to the Service (svc_name)"
    );
    let rows = w.server.audit_where(1, |r| r.tool.as_deref() == Some("whoami")).await;
    assert_eq!(rows[0].remote_addr.as_deref(), Some("100.100.2.2:40123"));
    // The same caller identity and policy apply: bob through the Service is still bob.
    let stream = service_conn(&w, &proxy_v2(SocketAddr::new(BOB, 40124), ppp::v2::Command::Proxy)).await;
    let mut bob = Mcp::new(Conn::new(stream).await, "mcp.tail3f9c2.ts.net");
    bob.initialize().await.unwrap();
    assert!(bob.list_tools().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_listener_refuses_connections_without_a_valid_v2_header() {
    let Some(w) = world("header_timeout_secs = 2", SERVICE).await else {
        return;
    };
    let http = format!(
        "POST /mcp HTTP/1.1\r\nhost: mcp.tail3f9c2.ts.net\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        init_body().len()
    );
    let mut v1 = b"PROXY TCP4 100.100.2.2 100.100.20.5 40000 443\r\n".to_vec();
    v1.extend_from_slice(http.as_bytes());
    let mut local = proxy_v2(SocketAddr::new(ALICE, 40000), ppp::v2::Command::Local);
    local.extend_from_slice(http.as_bytes());
    let mut malformed = proxy_v2(SocketAddr::new(ALICE, 40000), ppp::v2::Command::Proxy);
    malformed[12] = 0x31; // version 3
    malformed.extend_from_slice(http.as_bytes());
    for (what, preamble, reason) in [
        ("no header", http.as_bytes().to_vec(), "no PROXY v2 header"),
        ("v1 header", v1, "only v2"),
        ("LOCAL command", local, "LOCAL"),
        ("malformed header", malformed, "malformed PROXY v2 header"),
    ] {
        let mut stream = service_conn(&w, &preamble).await;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = stream.write_all(&init_body()).await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "{what}: the connection must be closed unanswered, got {:?}",
            String::from_utf8_lossy(&buf)
        );
        let rows = w
            .server
            .audit_where(1, |r| r.reason.as_deref().is_some_and(|x| x.contains(reason)))
            .await;
        assert!(!rows.is_empty(), "{what}: no audit row mentioning `{reason}`");
    }
    // A client that connects and says nothing is dropped after the header timeout.
    let mut silent = service_conn(&w, b"").await;
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "silent connection not closed");
    assert!(
        w.server
            .audit()
            .iter()
            .any(|r| r.reason.as_deref().is_some_and(|x| x.contains("in time")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_on_the_tailnet_listener_is_refused() {
    // One row per refusal: identical refusals are not counted into a summary here (the line
    // lands in the harness's `[audit]` table).
    let Some(w) = world("", &format!("refusal_window_secs = 0\n{SERVICE}")).await else {
        return;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let v2 = proxy_v2(SocketAddr::new(ALICE, 40000), ppp::v2::Command::Proxy);
    for preamble in [v2, b"PROXY TCP4 100.100.2.2 100.100.1.1 40000 8471\r\n".to_vec()] {
        // bob connects and claims to be forwarding for alice.
        let mut stream = w.net.connect(BOB, w.server.addr).await.unwrap();
        stream.write_all(&preamble).await.ok();
        stream
            .write_all(
                format!(
                    "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-length: 2\r\n\r\n{{}}",
                    w.host()
                )
                .as_bytes(),
            )
            .await
            // The server may already have closed the connection: that is the point.
            .ok();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        assert!(
            buf.is_empty(),
            "no answer to a PROXY header on the tailnet listener: {}",
            String::from_utf8_lossy(&buf)
        );
    }
    let rows = w
        .server
        .audit_where(2, |r| {
            r.reason
                .as_deref()
                .is_some_and(|x| x.contains("PROXY protocol header on a tailnet listener"))
        })
        .await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.remote_addr.as_deref().unwrap().starts_with("100.100.2.3:")),
        "audited as the real peer"
    );
    // Plain HTTP on the tailnet listener still works.
    let mut alice = w.session(ALICE).await;
    assert_eq!(
        structured(&alice.call_tool("whoami", json!({})).await.unwrap())["principal"],
        "alice@example.com"
    );
}

// --- Only tailscaled may vouch for a caller on the Service listener (issue #20 item 1).

/// A client run as `uid` (via `setpriv`; `None` = as the test, root) inside the server's
/// namespace: connects to `target` (`tcp:IP:PORT` or `unix:PATH`), sends `bytes`, and returns
/// what came back before the server closed the connection.
async fn client_as(w: &World, uid: Option<u32>, target: &str, bytes: &[u8]) -> String {
    const SCRIPT: &str = r#"
import binascii, socket, sys
kind, addr = sys.argv[1].split(":", 1)
if kind == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr)
else:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
s.settimeout(5)
out = b""
try:
    s.sendall(binascii.unhexlify(sys.argv[2]))
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
except OSError as e:
    print("client:", e, file=sys.stderr)
sys.stdout.write(out.decode("latin-1"))
"#;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = w.net.command_in_server_ns(std::path::Path::new("/usr/bin/setpriv"));
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "/usr/bin/python3".into(),
            ]);
            c
        }
        None => w.net.command_in_server_ns(std::path::Path::new("/usr/bin/python3")),
    };
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.args(["-c", SCRIPT, target, &hex]).output())
        .await
        .expect("client finished")
        .expect("run the python client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PROXY v2 header naming alice, then an `initialize` POST.
fn alice_through_the_service() -> Vec<u8> {
    let mut bytes = proxy_v2(SocketAddr::new(ALICE, 40123), ppp::v2::Command::Proxy);
    let body = init_body();
    bytes.extend_from_slice(
        format!(
            "POST /mcp HTTP/1.1\r\nhost: mcp.tail3f9c2.ts.net\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(&body);
    bytes
}

/// As `uid`, send alice's PROXY header and an `initialize` to `target`: no answer comes back, and
/// the refusal is audited once, with a reason containing `reason` and nobody's identity.
async fn refused_as(w: &World, uid: Option<u32>, target: &str, reason: &str) -> tailopsmcp::audit::Record {
    let answer = client_as(w, uid, target, &alice_through_the_service()).await;
    assert!(answer.is_empty(), "uid {uid:?} must get no answer: {answer}");
    let mut rows = w
        .server
        .audit_where(1, |r| r.reason.as_deref().is_some_and(|x| x.contains(reason)))
        .await;
    assert_eq!(rows.len(), 1, "{:#?}", w.server.audit());
    assert!(rows[0].principal.is_none(), "nobody was served as alice");
    rows.remove(0)
}

/// As `uid`, the same bytes are answered 200: served.
async fn served_as(w: &World, uid: Option<u32>, target: &str) {
    let answer = client_as(w, uid, target, &alice_through_the_service()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "uid {uid:?} is tailscaled here: {answer}"
    );
}

/// Loopback TCP mode: any local user can connect, so the server asks the kernel (sock_diag) whose
/// socket it is before reading a byte. uid 65534 claiming alice is refused and audited with its
/// uid; the same bytes from root (tailscaled's uid here) are served as alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_listener_refuses_a_local_user_claiming_a_caller_over_tcp() {
    let Some(w) = world("", SERVICE).await else { return };
    w.server.wait_listening(&w.net, SocketAddr::from(SERVICE_ADDR)).await;
    let target = format!("tcp:{}", SocketAddr::from(SERVICE_ADDR));
    let row = refused_as(
        &w,
        Some(65534),
        &target,
        "connection from uid 65534, not tailscaled's uid 0",
    )
    .await;
    assert!(row.remote_addr.as_deref().unwrap().starts_with("127.0.0.1:"));
    let whois_alice = |w: &World| whois_asked(w, "addr", |a| a.starts_with(&ALICE.to_string()));
    assert_eq!(whois_alice(&w), 0, "refused before any whois");
    served_as(&w, None, &target).await;
    assert!(whois_alice(&w) >= 1);
}

/// Unix socket mode: `SO_PEERCRED` decides, before a byte is read. The socket is created 0660
/// (a stale one from an earlier run is replaced); even made world-writable, uid 65534 is refused
/// and audited with its uid and pid, while root is served as the caller its PROXY header names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_socket_serves_only_tailscaleds_uid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("tops-svc").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("service.sock");
    // A stale socket left by a crashed run: nobody accepts on it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let extra = format!("[service]\nname = \"svc:mcp\"\nsocket = {socket:?}\n");
    let Some(w) = world("", &extra).await else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "service socket not up\n{}", w.server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");
    assert!(
        w.net
            .connect_in_server_ns(SocketAddr::from(SERVICE_ADDR))
            .await
            .is_err(),
        "no loopback TCP listener in unix mode"
    );
    // Only SO_PEERCRED stands in the way now.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let target = format!("unix:{}", socket.display());
    let row = refused_as(&w, Some(65534), &target, "connection from uid 65534 (pid ").await;
    assert!(row.reason.as_deref().unwrap().contains("not tailscaled's uid 0"));
    // Root, as tailscaled: served as alice.
    served_as(&w, None, &target).await;
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(&proxy_v2(SocketAddr::new(ALICE, 40123), ppp::v2::Command::Proxy))
            .await
            .unwrap();
    }
    let mut m = Mcp::new(Conn::new(stream).await, "mcp.tail3f9c2.ts.net");
    m.initialize().await.expect("initialize through the Service socket");
    let who = m.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(structured(&who)["principal"], "alice@example.com");
    assert_eq!(structured(&who)["remote_addr"], "100.100.2.2:40123");
    assert!(
        whois_asked(&w, "svc_name", |v| v == "svc:mcp") >= 1,
        "whois asks about grants to the Service"
    );
}

/// `tailscaled_uid` names the one uid served: with it set to 65534, root's connection is the
/// one refused (so the check is a comparison with the configured uid, not "is root").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_listener_serves_the_configured_tailscaled_uid() {
    let extra = format!("{SERVICE}tailscaled_uid = 65534\n");
    let Some(w) = world("", &extra).await else { return };
    w.server.wait_listening(&w.net, SocketAddr::from(SERVICE_ADDR)).await;
    let target = format!("tcp:{}", SocketAddr::from(SERVICE_ADDR));
    served_as(&w, Some(65534), &target).await;
    refused_as(&w, None, &target, "connection from uid 0, not tailscaled's uid 65534").await;
}

// --- Cheap stalls and a connection cap (issue #20 items 7 and 8).

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// 200 connections that stop inside a PROXY v2 signature (`\r\n\r\n`) cost the server no CPU
/// while they wait (the listener waits for readiness instead of re-peeking), and are still
/// closed once the header timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stalled_inside_a_proxy_signature_cost_no_cpu() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(w) = world("header_timeout_secs = 8", "").await else {
        return;
    };
    let pid = w.server.child.as_ref().unwrap().id().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = w.net.connect(ALICE, w.server.addr).await.unwrap();
        s.write_all(b"\r\n\r\n").await.unwrap();
        stalled.push(s);
    }
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_time(pid) - before;
    eprintln!("server CPU over 3 s with 200 stalled connections: {used:?}");
    assert!(
        used < Duration::from_millis(200),
        "stalled connections cost {used:?} of CPU in 3 s"
    );
    // Still dropped after the header timeout (8 s from the start), unanswered.
    let mut buf = [0u8; 64];
    for s in stalled.iter_mut().take(20) {
        let left = Duration::from_secs(15).saturating_sub(opened.elapsed());
        let r = tokio::time::timeout(left, s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "stalled connection not closed: {r:?}"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(7),
        "closed before the header timeout"
    );
    // The listener still serves.
    let mut alice = w.session(ALICE).await;
    assert_eq!(
        structured(&alice.call_tool("whoami", json!({})).await.unwrap())["principal"],
        "alice@example.com"
    );
}

/// `[server] max_connections`: with 8 idle connections held, a 9th is closed at once, unread
/// and without a whois; once some close, new connections are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    use tokio::io::AsyncReadExt;
    let Some(w) = world("max_connections = 8", "").await else {
        return;
    };
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(w.net.connect(ALICE, w.server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let whois_before = w.standin.requests().len();
    let mut ninth = w.net.connect(BOB, w.server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), ninth.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the 9th connection must be closed: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "closed promptly");
    assert_eq!(
        w.standin.requests().len(),
        whois_before,
        "no whois for a refused connection"
    );
    // A request on another connection over the cap gets no answer either.
    let mut over = w.conn(ALICE).await;
    let r = over
        .send(Request {
            method: http::Method::POST,
            path: "/mcp".into(),
            headers: vec![
                ("host".into(), w.host()),
                ("content-type".into(), "application/json".into()),
            ],
            body: init_body(),
        })
        .await;
    assert!(r.is_err(), "over the cap, yet answered: {r:?}");
    held.truncate(5);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut alice = loop {
        let stream = w.net.connect(ALICE, w.server.addr).await.unwrap();
        let mut m = Mcp::new(Conn::new(stream).await, &w.host());
        match m.initialize().await {
            Ok(_) => break m,
            Err(e) if Instant::now() > deadline => panic!("not served after connections closed: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(
        structured(&alice.call_tool("whoami", json!({})).await.unwrap())["principal"],
        "alice@example.com"
    );
}

/// One address cannot take every connection: past `max_connections_per_address` its new
/// connections are closed unread, while another caller is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    use tokio::io::AsyncReadExt;
    let Some(w) = world("max_connections = 16\nmax_connections_per_address = 4", "").await else {
        return;
    };
    // Four idle connections from the stranger (nothing sent: a slow client, or an attack).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(w.net.connect(STRANGER, w.server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fifth = w.net.connect(STRANGER, w.server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), fifth.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the stranger's 5th connection must be closed: {r:?}"
    );
    // Alice, from another address, is served as usual.
    let mut alice = Mcp::new(w.conn(ALICE).await, &w.host());
    alice.initialize().await.expect("alice is served");
    assert_eq!(
        structured(&alice.call_tool("whoami", json!({})).await.unwrap())["principal"],
        "alice@example.com"
    );
    // A closed connection gives its place back.
    held.pop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = w.net.connect(STRANGER, w.server.addr).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(500), again.read(&mut buf)).await;
    assert!(r.is_err(), "a place came free, so the connection stays open: {r:?}");
}

/// RFC 9112 §3.2: two `Host` lines (or one that is not `host[:port]`) → 400, audited; the first
/// one no longer wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_a_bad_request() {
    // One row per refusal (see `a_proxy_header_on_the_tailnet_listener_is_refused`).
    let Some(w) = world("", "refusal_window_secs = 0\n").await else {
        return;
    };
    let host = w.host();
    for (what, hosts) in [
        ("allowed first", vec![host.clone(), "evil.example".to_string()]),
        ("allowed twice", vec![host.clone(), host.clone()]),
        ("folded", vec![format!("{host}, evil.example")]),
    ] {
        let mut conn = w.conn(ALICE).await;
        let mut headers: Vec<(String, String)> = hosts.iter().map(|h| ("host".to_string(), h.clone())).collect();
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("accept".into(), "application/json, text/event-stream".into()));
        let r = conn
            .send(Request {
                method: http::Method::POST,
                path: "/mcp".into(),
                headers,
                body: init_body(),
            })
            .await
            .expect("send");
        assert_eq!(r.status, 400, "{what}: {}", String::from_utf8_lossy(&r.body));
    }
    let rows = w
        .server
        .audit_where(3, |r| {
            r.reason
                .as_deref()
                .is_some_and(|x| x.contains("more than one Host header") || x.contains("malformed Host header"))
        })
        .await;
    assert_eq!(rows.len(), 3, "{:#?}", w.server.audit());
    assert_eq!(rows[0].principal.as_deref(), Some("alice@example.com"));
    // One Host is still fine.
    assert_eq!(w.post(ALICE, &[], &init_body()).await.status, 200);
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
