//! MCP sessions on the tailnet harness: a session belongs to the principal that opened it
//! (another principal replaying it, ending it or resuming its stream is refused and audited), a
//! call whose connection dropped is resumed on a new one by its principal, and a request id
//! already in flight in the session is refused while the first call still answers. Raw HTTP/1.1
//! where the event stream itself is what is tested.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::http::{Mcp, init_body};
use crate::support::world::cast::{ALICE, CI, STRANGER};
use crate::support::world::fixture_world as world;

fn structured(result: &Value) -> &Value {
    &result["structuredContent"]
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
