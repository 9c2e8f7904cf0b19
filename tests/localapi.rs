//! The LocalAPI client (`tailnet::localapi::LocalApi`) against the LocalAPI stand-in: parsing,
//! typed errors, timeouts, keep-alive reuse and concurrency. Raw requests pin the stand-in's
//! tailscaled behaviours that the client cannot produce (bad addr, Origin, Host). Last, what the
//! server keys a node on: a `node-id:` grant through the real binary on the tailnet harness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tailopsmcp::audit::Decision;
use tailopsmcp::tailnet::localapi::{Error, LocalApi};

use crate::support::localapi::{StandIn, fixture, raw_request, whois_for};
use crate::support::server::run_cli;
use crate::support::world::World;

const CAP: &str = "example.com/cap/tailopsmcp";

fn client(s: &StandIn) -> LocalApi {
    LocalApi::new(s.socket_path(), Duration::from_secs(2))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn status_parses_and_follows_knobs() {
    let s = StandIn::start().await;
    let api = client(&s);
    let st = api.status().await.unwrap();
    assert!(st.is_running());
    assert_eq!(st.tailscale_ips, [ip("100.77.1.10"), ip("fd7a:115c:a1e0::5a01:10a")]);
    assert_eq!(st.self_node.as_ref().unwrap().dns_name, "mcp-host.tail3f9c2.ts.net.");
    assert_eq!(st.current_tailnet.unwrap().magic_dns_suffix, "tail3f9c2.ts.net");

    s.set_backend_state("NeedsLogin");
    s.set_self_ips(&[ip("100.100.1.1")]);
    let st = api.status().await.unwrap();
    assert!(!st.is_running());
    assert_eq!(st.backend_state, "NeedsLogin");
    assert_eq!(st.tailscale_ips, [ip("100.100.1.1")]);
    assert_eq!(st.self_node.unwrap().tailscale_ips, [ip("100.100.1.1")]);

    let r = s.requests();
    assert_eq!(r[0].method, "GET");
    assert_eq!(r[0].path, "/localapi/v0/status?peers=false");
    assert_eq!(r[0].query("peers").as_deref(), Some("false"));
}

#[tokio::test]
async fn status_serves_null_slices_before_login() {
    let s = StandIn::start().await;
    s.set_status(json!({"BackendState": "NeedsLogin", "TailscaleIPs": null, "Self": null}));
    let st = client(&s).status().await.unwrap();
    assert_eq!(st.backend_state, "NeedsLogin");
    assert!(st.tailscale_ips.is_empty() && st.self_node.is_none());
}

#[tokio::test]
async fn whois_user_keeps_capmap() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.101.102.103"), fixture("whois-user.json"));
    let w = client(&s).whois(sa("100.101.102.103:43817"), None).await.unwrap();
    assert_eq!(w.user_profile.login_name, "alice@example.com");
    assert_eq!(w.user_profile.id, 5234819087654321);
    assert_eq!(w.node.stable_id, "nQmK8XyZp711CNTRL");
    assert!(w.node.tags.is_empty());
    assert_eq!(w.cap_map[CAP].len(), 2);
    assert_eq!(s.whois_count(), 1);
}

#[tokio::test]
async fn whois_tagged_has_tags_and_capmap() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.88.12.34"), fixture("whois-tagged.json"));
    let w = client(&s).whois(sa("100.88.12.34:5000"), None).await.unwrap();
    assert_eq!(w.node.tags, ["tag:ci", "tag:mcp-client"]);
    assert_eq!(w.user_profile.login_name, "tagged-devices");
    assert_eq!(w.cap_map[CAP][0]["scopes"][0], "system:read");
}

#[tokio::test]
async fn whois_nocaps_has_empty_capmap() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.90.1.7"), fixture("whois-nocaps.json"));
    let w = client(&s).whois(sa("100.90.1.7:1"), None).await.unwrap();
    assert!(w.cap_map.is_empty());
    assert_eq!(w.user_profile.login_name, "bob@example.com");
}

#[tokio::test]
async fn whois_for_builds_identities() {
    let s = StandIn::start().await;
    let grants = json!([{"scopes": ["system:read"], "targets": ["local"]}]);
    s.add_identity(
        ip("100.64.0.5"),
        whois_for("whois-user.json", "carol@example.com", ip("100.64.0.5"), CAP, grants),
    );
    s.add_identity(
        ip("100.64.0.6"),
        whois_for(
            "whois-user.json",
            "dave@example.com",
            ip("100.64.0.6"),
            CAP,
            Value::Null,
        ),
    );
    let api = client(&s);
    let carol = api.whois(sa("100.64.0.5:1"), None).await.unwrap();
    let dave = api.whois(sa("100.64.0.6:1"), None).await.unwrap();
    assert_eq!(carol.user_profile.login_name, "carol@example.com");
    assert_eq!(carol.node.addresses, ["100.64.0.5/32"]);
    assert_eq!(carol.cap_map[CAP][0]["targets"][0], "local");
    assert!(dave.cap_map.is_empty());
    assert_ne!(carol.user_profile.id, dave.user_profile.id);

    s.remove_identity(ip("100.64.0.5"));
    assert!(matches!(
        api.whois(sa("100.64.0.5:1"), None).await,
        Err(Error::NotAPeer { .. })
    ));
}

#[tokio::test]
async fn whois_sends_localapi_headers_and_encoded_query() {
    let s = StandIn::start().await;
    s.add_identity(ip("fd7a:115c:a1e0::f401:6667"), fixture("whois-user.json"));
    let api = client(&s);
    api.whois(sa("[fd7a:115c:a1e0::f401:6667]:443"), Some("svc:mcp"))
        .await
        .unwrap();
    let r = &s.requests()[0];
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.path,
        "/localapi/v0/whois?addr=%5Bfd7a%3A115c%3Aa1e0%3A%3Af401%3A6667%5D%3A443&svc_name=svc%3Amcp"
    );
    assert_eq!(r.query("addr").as_deref(), Some("[fd7a:115c:a1e0::f401:6667]:443"));
    assert_eq!(r.query("svc_name").as_deref(), Some("svc:mcp"));
    assert_eq!(r.header("host"), Some("local-tailscaled.sock"));
    assert_eq!(r.header("sec-tailscale"), Some("localapi"));
    assert_eq!(r.header("origin"), None);
    assert_eq!(r.header("referer"), None);
}

#[tokio::test]
async fn whois_unmaps_v4_mapped_addresses() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.101.102.103"), fixture("whois-user.json"));
    // Like tailscaled before v1.102, the stand-in does not unmap: the client must.
    let raw = raw_request(
        s.socket_path(),
        "GET /localapi/v0/whois?addr=%5B%3A%3Affff%3A100.101.102.103%5D%3A80 HTTP/1.1\r\n\
         Host: local-tailscaled.sock\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 404);
    let w = client(&s).whois(sa("[::ffff:100.101.102.103]:80"), None).await.unwrap();
    assert_eq!(w.user_profile.login_name, "alice@example.com");
    assert_eq!(
        s.requests().last().unwrap().query("addr").as_deref(),
        Some("100.101.102.103:80")
    );
}

#[tokio::test]
async fn unknown_peer_is_not_a_peer() {
    let s = StandIn::start().await;
    let err = client(&s).whois(sa("100.64.9.9:1234"), None).await.unwrap_err();
    match &err {
        Error::NotAPeer { addr, message } => {
            assert_eq!(*addr, sa("100.64.9.9:1234"));
            assert_eq!(message, "no match for IP:port");
        }
        other => panic!("expected NotAPeer, got {other:?}"),
    }
    assert_eq!(err.reason(), "not_a_peer");
    assert!(err.to_string().contains("100.64.9.9:1234"), "{err}");
}

#[tokio::test]
async fn bad_or_missing_addr_is_400_text() {
    let s = StandIn::start().await;
    for (query, body) in [
        ("addr=bogus", "invalid 'addr' parameter\n"),
        ("addr=100.64.0.1%3Anope", "invalid 'addr' parameter\n"),
        ("", "missing 'addr' parameter\n"),
        ("addr=", "missing 'addr' parameter\n"),
    ] {
        let raw = raw_request(
            s.socket_path(),
            &format!(
                "GET /localapi/v0/whois?{query} HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(raw.status, 400, "{query}");
        assert_eq!(raw.body, body, "{query}");
        assert_eq!(raw.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    // A bare IP is valid (port 0) and finds the identity.
    s.add_identity(ip("100.64.0.1"), fixture("whois-nocaps.json"));
    let raw = raw_request(
        s.socket_path(),
        "GET /localapi/v0/whois?addr=100.64.0.1 HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("application/json"));
    assert!(raw.body.starts_with("{\n\t\"Node\""), "{}", raw.body);
}

#[tokio::test]
async fn origin_referer_and_foreign_host_are_403() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-nocaps.json"));
    let path = "/localapi/v0/whois?addr=100.64.0.1%3A1";
    for extra in [
        "Host: local-tailscaled.sock\r\nOrigin: http://evil.example\r\n",
        "Host: local-tailscaled.sock\r\nReferer: http://evil.example/\r\n",
        "Host: evil.example\r\n",
        "Host: localhost:80\r\n",
    ] {
        let raw = raw_request(
            s.socket_path(),
            &format!("GET {path} HTTP/1.1\r\n{extra}Connection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(raw.status, 403, "{extra}");
        assert_eq!(raw.body, "invalid localapi request\n");
    }
    // net/http refuses HTTP/1.1 without Host before the handler.
    let raw = raw_request(
        s.socket_path(),
        &format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.body, "400 Bad Request: missing required Host header");
    // Unknown paths are net/http's 404.
    let raw = raw_request(
        s.socket_path(),
        "GET /localapi/v0/nope HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status, 404);
    assert_eq!(raw.body, "404 page not found\n");
}

#[tokio::test]
async fn slow_localapi_times_out_within_the_timeout() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-user.json"));
    s.set_delay(Duration::from_secs(3));
    let api = LocalApi::new(s.socket_path(), Duration::from_millis(300));
    let started = Instant::now();
    let err = api.whois(sa("100.64.0.1:1"), None).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(err.reason(), "localapi_timeout");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let err = api.status().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");

    s.set_delay(Duration::from_millis(50));
    assert!(api.whois(sa("100.64.0.1:1"), None).await.is_ok());
}

#[tokio::test]
async fn hung_localapi_times_out_and_recovers() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-user.json"));
    let api = LocalApi::new(s.socket_path(), Duration::from_millis(300));
    api.whois(sa("100.64.0.1:1"), None).await.unwrap();
    s.set_hang(true);
    let started = Instant::now();
    let err = api.whois(sa("100.64.0.1:1"), None).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    s.set_hang(false);
    api.whois(sa("100.64.0.1:1"), None).await.unwrap();
}

#[tokio::test]
async fn failing_localapi_is_typed_by_status() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-user.json"));
    let api = client(&s);
    s.set_fail(Some(500));
    let err = api.whois(sa("100.64.0.1:1"), None).await.unwrap_err();
    match &err {
        Error::Http { status, body } => {
            assert_eq!(*status, 500);
            assert_eq!(body, "internal server error (stand-in fail knob)");
        }
        other => panic!("expected Http, got {other:?}"),
    }
    assert_eq!(err.reason(), "localapi_http_error");
    assert!(matches!(api.status().await, Err(Error::Http { status: 500, .. })));
    s.set_fail(Some(403));
    let err = api.whois(sa("100.64.0.1:1"), None).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    assert_eq!(err.reason(), "localapi_forbidden");
    s.set_fail(Some(400));
    assert_eq!(api.status().await.unwrap_err().reason(), "localapi_bad_request");
    s.set_fail(Some(503));
    assert!(matches!(api.status().await, Err(Error::Http { status: 503, .. })));
    s.set_fail(None);
    api.whois(sa("100.64.0.1:1"), None).await.unwrap();
}

#[tokio::test]
async fn absent_localapi_is_unavailable_and_recovers() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-user.json"));
    let api = client(&s);
    api.whois(sa("100.64.0.1:1"), None).await.unwrap();
    s.set_absent(true);
    assert!(!s.socket_path().exists());
    let err = api.whois(sa("100.64.0.1:1"), None).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(err.reason(), "localapi_unavailable");
    assert!(
        err.to_string().contains(&s.socket_path().display().to_string()),
        "{err}"
    );
    assert!(matches!(api.status().await, Err(Error::Unavailable { .. })));
    s.set_absent(false);
    api.whois(sa("100.64.0.1:1"), None).await.unwrap();
}

/// tailscaled restarting closes the pooled keep-alive connection while it is idle; the next call
/// notices the close, reconnects and answers, with no error for the caller.
#[tokio::test]
async fn an_idle_connection_closed_by_tailscaled_is_replaced() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-user.json"));
    let api = client(&s);
    api.whois(sa("100.64.0.1:1"), None).await.unwrap();
    // A restart with no call in between: the pooled connection is closed by the other side.
    s.set_absent(true);
    s.set_absent(false);
    let w = api.whois(sa("100.64.0.1:2"), None).await.unwrap();
    assert_eq!(w.user_profile.login_name, "alice@example.com");
    assert_eq!(s.connections_accepted(), 2, "one reconnect");
    assert_eq!(s.whois_count(), 2, "the closed connection carried no request");
    api.status().await.unwrap();
    assert_eq!(s.connections_accepted(), 2, "the new connection is pooled");
}

#[tokio::test]
async fn oversized_or_malformed_answers_are_protocol_errors() {
    let s = StandIn::start().await;
    let mut huge = fixture("whois-user.json");
    huge["Node"]["Padding"] = Value::from("x".repeat(5 << 20));
    s.add_identity(ip("100.64.0.1"), huge);
    s.add_identity(ip("100.64.0.2"), json!({"Node": {"ID": 1}}));
    let api = client(&s);
    let err = api.whois(sa("100.64.0.1:1"), None).await.unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("exceeds")), "{err:?}");
    assert_eq!(err.reason(), "localapi_protocol");
    let err = api.whois(sa("100.64.0.2:1"), None).await.unwrap_err();
    assert!(matches!(&err, Error::Protocol(m) if m.contains("json")), "{err:?}");
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let s = StandIn::start().await;
    s.add_identity(ip("100.64.0.1"), fixture("whois-user.json"));
    let api = client(&s);
    for i in 0..200 {
        if i % 10 == 0 {
            assert!(matches!(
                api.whois(sa("100.64.0.99:1"), None).await,
                Err(Error::NotAPeer { .. })
            ));
        } else {
            api.whois(sa("100.64.0.1:1"), None).await.unwrap();
        }
    }
    api.status().await.unwrap();
    assert_eq!(s.whois_count(), 200);
    assert_eq!(s.connections_accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_whois_from_32_tasks() {
    let s = StandIn::start().await;
    for n in 0..32u8 {
        let addr = IpAddr::from([100, 64, 1, n]);
        let login = format!("user{n}@example.com");
        s.add_identity(addr, whois_for("whois-user.json", &login, addr, CAP, json!([{"n": n}])));
    }
    let api = client(&s);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..32u8 {
        let api = api.clone();
        tasks.spawn(async move {
            for port in 1..=25u16 {
                let addr = SocketAddr::new(IpAddr::from([100, 64, 1, n]), port);
                let w = api.whois(addr, None).await.unwrap();
                assert_eq!(w.user_profile.login_name, format!("user{n}@example.com"));
                assert_eq!(w.cap_map[CAP][0]["n"], n);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(s.whois_count(), 32 * 25);
    assert!(
        s.connections_accepted() <= 32 * 25 / 2,
        "{} connections",
        s.connections_accepted()
    );
}

// ---------------------------------------------------------------------------------------------
// A node is its StableID, never its name.

/// `alice-laptop` as granted: the `whois-user.json` node (StableID `nQmK8XyZp711CNTRL`).
const ORIGINAL: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 61));
/// The machine that registered as `alice-laptop` after the original was removed.
const SUCCESSOR: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 62));
const ALICE_LAPTOP_ID: &str = "nQmK8XyZp711CNTRL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_grant_follows_the_stable_id_not_whoever_takes_the_name() {
    // Same user, same MagicDNS name and host name; only the StableID (and node ID) differ.
    let original = whois_for("whois-user.json", "alice@example.com", ORIGINAL, CAP, Value::Null);
    let mut successor = whois_for("whois-user.json", "alice@example.com", SUCCESSOR, CAP, Value::Null);
    successor["Node"]["StableID"] = json!("nR3b0rnXyZ12CNTRL");
    successor["Node"]["ID"] = json!(4879326156783999_i64);
    assert_eq!(original["Node"]["StableID"], ALICE_LAPTOP_ID);
    assert_eq!(successor["Node"]["Name"], original["Node"]["Name"]);
    assert_eq!(successor["Node"]["Name"], "alice-laptop.tail3f9c2.ts.net.");
    let grant = format!("[[grant]]\nmatch = \"node-id:{ALICE_LAPTOP_ID}\"\nscopes = [\"system:read\"]\n");
    let Some(w) = World::builder()
        .identity(ORIGINAL, original)
        .identity(SUCCESSOR, successor)
        .config(&grant)
        .start()
        .await
    else {
        return;
    };
    let server = &w.server;
    let mut calls = Vec::new();
    for from in [ORIGINAL, SUCCESSOR] {
        let mut mcp = w.session(from).await;
        calls.push(mcp.call_tool("system_status", json!({})).await.unwrap());
    }
    assert_eq!(calls[0]["isError"], false, "the granted node: {}", calls[0]);
    assert_eq!(calls[1]["isError"], true, "the successor: {}", calls[1]);
    let denial = calls[1]["content"][0]["text"].as_str().unwrap_or("");
    assert!(denial.contains("system:read"), "{denial}");

    let rows = server
        .audit_where(2, |r| r.tool.as_deref() == Some("system_status"))
        .await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let by = |id: &str| rows.iter().find(|r| r.node_id.as_deref() == Some(id)).unwrap();
    let allowed = by(ALICE_LAPTOP_ID);
    assert_eq!(allowed.decision, Decision::Allow);
    assert_eq!(allowed.grants, [format!("config:grant[0](node-id:{ALICE_LAPTOP_ID})")]);
    let denied = by("nR3b0rnXyZ12CNTRL");
    assert_eq!(denied.decision, Decision::Deny);
    assert_eq!(denied.node_name.as_deref(), Some("alice-laptop.tail3f9c2.ts.net"));
    assert!(denied.grants.is_empty());

    // `tailopsmcp whois` prints the StableID to put in a grant, and what each node holds.
    let config = server.config.to_str().unwrap();
    let (code, out, err) = run_cli(&["whois", &ORIGINAL.to_string(), "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("node id: {ALICE_LAPTOP_ID} (StableID; a [[grant]] names this node as match = \"node-id:{ALICE_LAPTOP_ID}\")")),
        "{out}"
    );
    assert!(out.contains("system:read") && out.contains("node-id:"), "{out}");
    let (code, out, err) = run_cli(&["whois", &SUCCESSOR.to_string(), "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node id: nR3b0rnXyZ12CNTRL"), "{out}");
    assert!(out.contains("no scopes"), "{out}");

    // The old name-based form is refused at start-up, saying what to write instead.
    let old = server.dir.path().join("by-name.toml");
    std::fs::write(
        &old,
        "[[grant]]\nmatch = \"node:alice-laptop\"\nscopes = [\"system:read\"]\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", old.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("grant[0].match: `node:alice-laptop` names a node by name") && err.contains("node-id:STABLEID"),
        "{err}"
    );
    assert!(err.contains("tailopsmcp whois IP"), "{err}");
}
