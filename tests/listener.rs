//! What the server's listeners accept before anything runs: header, idle and body timeouts;
//! the Host allow-list and duplicate Host headers; connection caps overall and per address, and
//! stalls that cost no CPU; PROXY v2 headers, required on the Tailscale Services listener (loopback
//! TCP or a unix socket, served only to tailscaled's uid) and refused on the tailnet listener.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::{Conn, Mcp, Request, init_body};
use crate::support::world::cast::{ALICE, BOB, STRANGER};
use crate::support::world::{World, fixture_world as world};

fn structured(result: &Value) -> &Value {
    &result["structuredContent"]
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
