//! The network toolset against real components: TCP listeners (open vs closed), TLS servers
//! with certificates from the test CA (chain, SANs, expiry, name mismatch, an expired one), an
//! HTTP server (allowed, not allowed, metadata and link-local destinations, a name that resolves
//! to a link-local address, names that resolve to loopback, private, tailnet or this node's own
//! addresses, which a name rule alone never admits), DNS against a real `dnsmasq` serving a hosts file and records,
//! `ping` and `traceroute`/`tracepath` of 127.0.0.1; then the same tools through MCP on the
//! tailnet harness, with their audit rows.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tailopsmcp::audit::{Decision, Outcome};
use tailopsmcp::exec::net::{self, AllowRule, Host, HttpPolicy, ProbeRequest, RecordType};
use tailopsmcp::exec::remote::{LocalRunner, Runner};
use tailopsmcp::exec::{CommandSpec, ExecError, Limits, Output};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::netns::skip_or_fail;
use crate::support::tlsca::TestCa;
use crate::support::world::World;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const T: Duration = Duration::from_secs(3);

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || Path::new(program).is_file()
}

fn host(s: &str) -> Host {
    net::parse_host(s).unwrap()
}

fn runner() -> LocalRunner {
    LocalRunner(Limits {
        timeout: Duration::from_secs(30),
        max_output: 64 * 1024,
    })
}

// ---------------------------------------------------------------------------------------------
// dnsmasq: a real resolver with a hosts file and a few records of every kind.

/// The hosts file every dnsmasq here serves.
const HOSTS: &str = "127.0.0.1 web.test web.example.test\n127.0.0.2 web.example.test\nfd00::5 web.example.test\n192.0.2.7 printer.example.test\n169.254.10.10 ll.test\n169.254.169.254 meta.test\n10.77.0.1 lan10.test\n100.64.77.1 cgnat.test\n1.2.3.4 self.test\n";

fn dnsmasq_args(dir: &Path, listen: SocketAddr) -> Vec<String> {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, HOSTS).unwrap();
    [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--pid-file=",
        "--local=/test/",
        "--mx-host=example.test,mail.example.test,10",
        "--txt-record=example.test,v=spf1 -all",
        "--srv-host=_http._tcp.example.test,web.example.test,8080,1,5",
        "--cname=www.example.test,web.example.test",
        // CAA 0 issue "letsencrypt.org"
        "--dns-rr=example.test,257,000569737375656c657473656e63727970742e6f7267",
        // Authoritative for test (SOA and NS records; local names answered as before).
        "--auth-zone=test,127.0.0.0/8,169.254.0.0/16,192.0.2.0/24,fd00::/64,10.0.0.0/8,100.64.0.0/10,1.2.3.0/24",
        "--auth-soa=2026112101,hostmaster.example.test",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--addn-hosts={}", hosts.display()),
        format!("--listen-address={}", listen.ip()),
        format!("--port={}", listen.port()),
        format!("--auth-server=ns1.example.test,{}", listen.ip()),
    ])
    .collect()
}

struct Dnsmasq {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

/// dnsmasq on 127.0.0.1 (a free port) in this namespace, or `None` (skipped) when not installed.
async fn dnsmasq() -> Option<Dnsmasq> {
    if !have(DNSMASQ) {
        skip_or_fail("dnsmasq is not installed (apt install dnsmasq-base)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = tokio::process::Command::new(DNSMASQ)
        .args(dnsmasq_args(dir.path(), addr))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dnsmasq");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "dnsmasq did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(Dnsmasq {
        _child: child,
        _dir: dir,
        addr,
    })
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP server that records each request head and answers by path.

type Seen = Arc<Mutex<Vec<String>>>;

const BIG_BODY: usize = 10_000;

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, seen: Seen) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(head);
    let response = match path.as_str() {
        "/big" => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {BIG_BODY}\r\nConnection: close\r\n\r\n{}",
            "x".repeat(BIG_BODY)
        ),
        "/moved" => "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
        _ => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: test-web\r\nX-Internal: hidden\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhealthy\n".to_string(),
    };
    let _ = s.write_all(response.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn serve_http(listener: TcpListener) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, s.clone()));
        }
    });
    seen
}

fn serve_https(listener: TcpListener, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    answer(tls, s).await;
                }
            });
        }
    });
    seen
}

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn policy(rules: &[&str]) -> HttpPolicy {
    HttpPolicy {
        allow: rules.iter().map(|r| AllowRule::parse(r).unwrap()).collect(),
        allow_link_local: false,
    }
}

fn probe_request(url: &str, max_body: usize) -> ProbeRequest {
    let (url, https, host, port) = net::parse_url(url).unwrap();
    ProbeRequest {
        url,
        https,
        host,
        port,
        method: http::Method::GET,
        max_body,
        timeout: T,
        ca: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Direct: exec::net against real servers.

#[tokio::test]
async fn port_check_tells_open_from_closed() {
    let (_open_listener, open) = listener().await;
    let closed = listener().await.1; // dropped: nothing listens there any more
    let states = net::port_check(IpAddr::V4(Ipv4Addr::LOCALHOST), &[open, closed], T).await;
    assert_eq!((states[0].port, states[0].state.as_str()), (open, "open"));
    assert_eq!((states[1].port, states[1].state.as_str()), (closed, "closed"));
    assert!(states[1].elapsed_ms < 1000.0);
}

/// Today + `days` as (year, month, day).
fn ymd(days: i64) -> (i32, u8, u8) {
    use chrono::Datelike;
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
    (d.year(), d.month() as u8, d.day() as u8)
}

#[tokio::test]
async fn tls_check_reports_chain_expiry_sans_and_name_match() {
    let root = TestCa::new("Test Root CA");
    let inter = root.intermediate("Test Intermediate CA");
    let leaf = inter.server_valid(&["web.test", "*.lan.test", "127.0.0.1"], ymd(-1), ymd(31));
    let (l, port) = listener().await;
    serve_https(l, leaf.server_config_with_chain(&[inter.cert_der()]));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ca = [root.cert_der()];

    let ok = net::tls_check(addr, "web.test", Some(&ca), T).await.unwrap();
    assert!(ok.verified, "{ok:?}");
    assert_eq!(ok.verify_error, None);
    assert!(ok.name_matches && !ok.expired);
    assert_eq!(ok.trust, "given CA");
    assert_eq!(ok.chain.len(), 2, "leaf and intermediate");
    assert_eq!(ok.chain[0].subject, "CN=web.test");
    assert_eq!(ok.chain[0].issuer, "CN=Test Intermediate CA");
    assert_eq!(ok.chain[1].subject, "CN=Test Intermediate CA");
    assert_eq!(ok.chain[1].issuer, "CN=Test Root CA");
    assert!(ok.chain[1].is_ca && !ok.chain[0].is_ca);
    assert_eq!(ok.chain[0].sans, vec!["web.test", "*.lan.test", "127.0.0.1"]);
    let days = ok.days_left.unwrap();
    assert!((30..=31).contains(&days), "{days}");
    assert!(ok.expires_at.as_deref().unwrap().ends_with("T00:00:00Z"));
    assert!(ok.protocol.as_deref().unwrap().starts_with("TLSv1_"));

    // A wildcard SAN and an IP SAN.
    let wild = net::tls_check(addr, "nas.lan.test", Some(&ca), T).await.unwrap();
    assert!(wild.verified && wild.name_matches, "{wild:?}");
    let by_ip = net::tls_check(addr, "127.0.0.1", Some(&ca), T).await.unwrap();
    assert!(by_ip.verified && by_ip.name_matches, "{by_ip:?}");

    // A name the certificate does not carry: described, not verified.
    let other = net::tls_check(addr, "other.test", Some(&ca), T).await.unwrap();
    assert!(!other.name_matches && !other.verified);
    assert!(
        other.verify_error.as_deref().unwrap().contains("not valid for name"),
        "{other:?}"
    );
    assert_eq!(other.chain.len(), 2);

    // Against the system store the test CA is unknown.
    let system = net::tls_check(addr, "web.test", None, T).await.unwrap();
    assert!(!system.verified && system.name_matches);
    assert_eq!(system.trust, "system");
    assert!(
        system.verify_error.as_deref().unwrap().contains("UnknownIssuer"),
        "{system:?}"
    );

    // An expired certificate.
    let old = root.server_valid(&["old.test"], (2020, 1, 1), (2021, 1, 1));
    let (l, port) = listener().await;
    serve_https(l, old.server_config());
    let expired = net::tls_check(SocketAddr::from(([127, 0, 0, 1], port)), "old.test", Some(&ca), T)
        .await
        .unwrap();
    assert!(expired.expired && !expired.verified && expired.name_matches);
    assert!(expired.days_left.unwrap() < -1000);
    assert_eq!(expired.expires_at.as_deref(), Some("2021-01-01T00:00:00Z"));
    assert!(
        expired.verify_error.as_deref().unwrap().contains("expired"),
        "{expired:?}"
    );

    // Nothing listening: an error, not a report.
    let closed = listener().await.1;
    let err = net::tls_check(SocketAddr::from(([127, 0, 0, 1], closed)), "web.test", Some(&ca), T)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn dns_lookup_of_every_record_type_against_dnsmasq() {
    let Some(d) = dnsmasq().await else { return };
    let servers = [d.addr];
    let look =
        |name: &'static str, t: RecordType| async move { net::dns_lookup(name, t, &servers, T, 50).await.unwrap().0 };
    let a = look("web.test", RecordType::A).await;
    assert_eq!(a.status, "NOERROR");
    assert_eq!(a.resolver, d.addr.to_string());
    assert_eq!(a.answers.len(), 1, "{a:?}");
    assert_eq!(
        (a.answers[0].name.as_str(), a.answers[0].value.as_str()),
        ("web.test.", "127.0.0.1")
    );
    assert_eq!(a.answers[0].record_type, "A");

    let aaaa = look("web.example.test", RecordType::AAAA).await;
    assert_eq!(aaaa.answers[0].value, "fd00::5");
    let mx = look("example.test", RecordType::MX).await;
    assert_eq!(mx.answers[0].value, "10 mail.example.test.");
    let txt = look("example.test", RecordType::TXT).await;
    assert_eq!(txt.answers[0].value, "\"v=spf1 -all\"");
    let srv = look("_http._tcp.example.test", RecordType::SRV).await;
    assert_eq!(srv.answers[0].value, "1 5 8080 web.example.test.");
    let cname = look("www.example.test", RecordType::CNAME).await;
    assert_eq!(cname.answers[0].value, "web.example.test.");
    let caa = look("example.test", RecordType::CAA).await;
    assert!(
        caa.answers[0].value.contains("issue") && caa.answers[0].value.contains("letsencrypt.org"),
        "{caa:?}"
    );
    let ptr = look("192.0.2.7", RecordType::PTR).await;
    assert_eq!(ptr.query, "7.2.0.192.in-addr.arpa");
    assert_eq!(ptr.answers[0].value, "printer.example.test.");

    let soa = look("test", RecordType::SOA).await;
    assert!(
        soa.answers[0]
            .value
            .starts_with("ns1.example.test. hostmaster.example.test. 2026112101 "),
        "{soa:?}"
    );
    let ns = look("test", RecordType::NS).await;
    assert_eq!(ns.answers[0].value, "ns1.example.test.");

    let missing = look("missing.test", RecordType::A).await;
    assert_eq!((missing.status.as_str(), missing.answers.len()), ("NXDOMAIN", 0));

    // The answer cap: two A records, one returned, the total counted.
    let (capped, total) = net::dns_lookup("web.example.test", RecordType::A, &servers, T, 1)
        .await
        .unwrap();
    assert_eq!((capped.answers.len(), total), (1, 2));

    // Names resolve through the configured servers for the other tools too.
    let ips = net::resolve(&host("ll.test"), &servers, T).await.unwrap();
    assert_eq!(ips, vec!["169.254.10.10".parse::<IpAddr>().unwrap()]);

    // A server that does not answer: a timeout error, not an empty answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = net::dns_lookup(
        "web.test",
        RecordType::A,
        &[silent.local_addr().unwrap()],
        Duration::from_millis(300),
        50,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("timed out") || err.to_string().contains("failed"),
        "{err}"
    );
}

#[tokio::test]
async fn http_probe_reaches_allowed_hosts_and_refuses_the_rest() {
    let Some(d) = dnsmasq().await else { return };
    let dns = [d.addr];
    let (l, port) = listener().await;
    let seen = serve_http(l);

    // Allowed: web.test matches the name rule and resolves (through dnsmasq) to 127.0.0.1, which
    // the address rule admits (a name rule alone admits public addresses only).
    let p = policy(&["*.test", "127.0.0.1/32"]);
    let own = net::own_addresses(&[]);
    let r = net::http_probe(
        &probe_request(&format!("http://web.test:{port}/health"), 65536),
        &p,
        &dns,
        &own,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.address, format!("127.0.0.1:{port}"));
    assert_eq!(r.body_preview, "healthy\n");
    assert_eq!((r.body_bytes, r.body_truncated), (8, false));
    let header = |r: &net::ProbeResult, name: &str| r.headers.iter().find(|h| h.name == name).map(|h| h.value.clone());
    assert_eq!(header(&r, "server").as_deref(), Some("test-web"), "{:?}", r.headers);
    assert_eq!(header(&r, "x-internal"), None, "only the reported subset");
    assert_eq!(r.header_count, 5);
    assert!(r.timing.total_ms >= r.timing.first_byte_ms);
    {
        let heads = seen.lock().unwrap();
        assert_eq!(heads.len(), 1);
        // The name stays in Host while the connection went to the checked address.
        assert!(heads[0].starts_with("GET /health HTTP/1.1\r\n"), "{}", heads[0]);
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains(&format!("host: web.test:{port}\r\n")),
            "{}",
            heads[0]
        );
    }

    // The body cap.
    let big = net::http_probe(
        &probe_request(&format!("http://web.test:{port}/big"), 1000),
        &p,
        &dns,
        &own,
    )
    .await
    .unwrap();
    assert_eq!((big.body_bytes, big.body_truncated), (1000, true));
    assert_eq!(big.body_preview.len(), net::BODY_PREVIEW_BYTES);

    // A redirect is reported, not followed (its target is a metadata address).
    let moved = net::http_probe(
        &probe_request(&format!("http://web.test:{port}/moved"), 100),
        &p,
        &dns,
        &own,
    )
    .await
    .unwrap();
    assert_eq!(moved.status, 302);
    assert_eq!(header(&moved, "location").as_deref(), Some("http://169.254.169.254/"));
    assert_eq!(seen.lock().unwrap().len(), 3);

    // Refusals: nothing connects.
    let refused = |url: String, p: HttpPolicy| {
        let own = own.clone();
        async move {
            match net::http_probe(&probe_request(&url, 100), &p, &dns, &own).await {
                Err(ExecError::Refused(why)) => why,
                other => panic!("{url}: expected a refusal, got {other:?}"),
            }
        }
    };
    let why = refused(format!("http://127.0.0.1:{port}/"), policy(&["*.test"])).await;
    assert!(
        why.contains("127.0.0.1 is not in [network] http_allow (*.test)"),
        "{why}"
    );
    let why = refused(format!("http://web.test:{port}/"), policy(&["nas.lan"])).await;
    assert!(
        why.contains("`web.test` (127.0.0.1) is not in [network] http_allow"),
        "{why}"
    );
    let why = refused(format!("http://ll.test:{port}/"), p.clone()).await;
    assert!(
        why.contains("`ll.test` resolves to 169.254.10.10 is a link-local address"),
        "{why}"
    );
    let why = refused(format!("http://meta.test:{port}/"), p.clone()).await;
    assert!(why.contains("169.254.169.254 is a cloud metadata address"), "{why}");
    let why = refused(
        "http://169.254.169.254/latest/meta-data/".into(),
        policy(&["0.0.0.0/0"]),
    )
    .await;
    assert!(why.contains("cloud metadata address"), "{why}");
    let why = refused("http://metadata.google.internal/".into(), policy(&["*.internal"])).await;
    assert!(why.contains("metadata service"), "{why}");
    let why = refused("http://[fd00:ec2::254]/".into(), policy(&["::/0"])).await;
    assert!(why.contains("metadata"), "{why}");
    let why = refused(format!("http://web.test:{port}/"), HttpPolicy::default()).await;
    assert!(why.contains("the HTTP probe is off"), "{why}");
    assert_eq!(seen.lock().unwrap().len(), 3, "no refused probe reached the server");

    // Link-local permitted by configuration (the address itself answers nothing here), for an
    // address rule: a name rule alone never vouches for a link-local address.
    let mut ll = HttpPolicy {
        allow: vec![AllowRule::parse("*.test").unwrap()],
        allow_link_local: true,
    };
    let why = refused(format!("http://ll.test:{port}/"), ll.clone()).await;
    assert!(
        why.contains(
            "169.254.10.10, a link-local address (169.254.0.0/16); the name rule `*.test` admits public addresses only"
        ),
        "{why}"
    );
    ll.allow.push(AllowRule::parse("169.254.0.0/16").unwrap());
    let mut req = probe_request(&format!("http://ll.test:{port}/"), 100);
    req.timeout = Duration::from_millis(300);
    let err = net::http_probe(&req, &ll, &dns, &own).await.unwrap_err();
    assert!(!matches!(err, ExecError::Refused(_)), "{err}");
}

/// A name rule vouches for public addresses only: whoever answers for a name in DNS cannot point
/// the probe at loopback, private or tailnet addresses. An address rule containing the address
/// admits it. A refused probe connects nowhere.
#[tokio::test]
async fn a_name_rule_never_reaches_loopback_private_or_tailnet_addresses() {
    let Some(d) = dnsmasq().await else { return };
    let dns = [d.addr];
    let own = net::own_addresses(&[]);
    // A web server on 127.0.0.1 that counts the connections it accepts.
    let (l, port) = listener().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Arc::default();
    {
        let (accepted, seen) = (accepted.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, seen.clone()));
            }
        });
    }
    let probe = |url: String, rules: &[&str], timeout: Duration| {
        let (p, own) = (policy(rules), own.clone());
        async move {
            let mut req = probe_request(&url, 100);
            req.timeout = timeout;
            net::http_probe(&req, &p, &dns, &own).await
        }
    };

    for (name, address, why, add) in [
        (
            "web.test",
            "127.0.0.1",
            "a loopback address (127.0.0.0/8)",
            "127.0.0.1/32",
        ),
        (
            "lan10.test",
            "10.77.0.1",
            "a private address (10.0.0.0/8)",
            "10.77.0.1/32",
        ),
        (
            "cgnat.test",
            "100.64.77.1",
            "a tailnet / shared CGNAT address (100.64.0.0/10)",
            "100.64.77.1/32",
        ),
    ] {
        // By a suffix rule and by an exact-name rule alike.
        for rule in ["*.test", name] {
            match probe(format!("http://{name}:{port}/"), &[rule], T).await {
                Err(ExecError::Refused(m)) => {
                    assert!(
                        m.contains(&format!(
                            "`{name}` resolves to {address}, {why}; the name rule `{rule}` admits public addresses only"
                        )),
                        "{m}"
                    );
                    assert!(m.contains(&format!("add `{add}`")), "{m}");
                }
                other => panic!("{name} by `{rule}`: expected a refusal, got {other:?}"),
            }
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a refused probe connected");

    // An address rule admits them: the loopback server answers...
    let r = probe(format!("http://web.test:{port}/health"), &["*.test", "127.0.0.0/8"], T)
        .await
        .unwrap();
    assert_eq!((r.status, r.address.clone()), (200, format!("127.0.0.1:{port}")));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // ...and the private and CGNAT ones pass the rules (nothing listens there: the connection
    // fails or times out, it is not refused).
    for (name, cidr) in [("lan10.test", "10.0.0.0/8"), ("cgnat.test", "100.64.0.0/10")] {
        let err = probe(
            format!("http://{name}:{port}/"),
            &["*.test", cidr],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(!matches!(err, ExecError::Refused(_)), "{name} with {cidr}: {err}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_probe_verifies_against_the_given_ca() {
    let Some(d) = dnsmasq().await else { return };
    let root = TestCa::new("Probe CA");
    let leaf = root.server(&["web.test"]);
    let (l, port) = listener().await;
    let seen = serve_https(l, leaf.server_config());
    let p = policy(&["web.test", "127.0.0.1/32"]);
    let url = format!("https://web.test:{port}/health");
    let mut req = probe_request(&url, 100);
    req.ca = Some(vec![root.cert_der()]);
    let r = net::http_probe(&req, &p, &[d.addr], &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_preview, "healthy\n");
    assert!(r.timing.tls_ms.is_some());
    // Without the CA the system store does not know it.
    let err = net::http_probe(&probe_request(&url, 100), &p, &[d.addr], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::HostVerification(_)), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn ping_localhost_and_an_unknown_name() {
    if !have("ping") {
        skip_or_fail("ping is not installed (apt install iputils-ping)");
        return;
    }
    let r = net::ping(&runner(), &host("127.0.0.1"), 2, 5).await.unwrap();
    assert_eq!((r.transmitted, r.received, r.loss_percent), (2, 2, 0.0), "{r:?}");
    assert_eq!(r.replies_ms.len(), 2);
    assert!(r.rtt_avg_ms.unwrap() >= 0.0);
    assert_eq!(r.address.as_deref(), Some("127.0.0.1"));
    let err = net::ping(&runner(), &host("no-such-host.invalid"), 1, 2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`ping` failed"), "{err}");
}

/// Runs every command locally as `nobody` with no capabilities allowed at all (as under the
/// service unit's empty `CapabilityBoundingSet=`).
struct NoCapabilities(LocalRunner);

impl Runner for NoCapabilities {
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            let mut args: Vec<String> = [
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.push(cmd.program.clone());
            args.extend(cmd.args.iter().cloned());
            self.0.run(&CommandSpec::new("setpriv", args)).await
        })
    }
}

#[tokio::test]
async fn ping_without_the_capability_says_what_to_change() {
    if !have("ping") || !have("setpriv") {
        skip_or_fail("ping and setpriv are needed (apt install iputils-ping util-linux)");
        return;
    }
    let err = net::ping(&NoCapabilities(runner()), &host("127.0.0.1"), 1, 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("CapabilityBoundingSet=CAP_NET_RAW"), "{err}");
}

/// Runs everything locally but pretends `traceroute` is not installed.
struct NoTraceroute(LocalRunner);

impl Runner for NoTraceroute {
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            if cmd.program == "traceroute" {
                let mut renamed = cmd.clone();
                renamed.program = "tailopsmcp-no-such-traceroute".into();
                return self.0.run(&renamed).await;
            }
            self.0.run(cmd).await
        })
    }
}

#[tokio::test]
async fn traceroute_to_localhost_with_either_program() {
    if !have("traceroute") || !have("tracepath") {
        skip_or_fail("traceroute/tracepath are not installed (apt install traceroute iputils-tracepath)");
        return;
    }
    let r = net::traceroute(&runner(), &host("127.0.0.1"), 3).await.unwrap();
    assert_eq!(r.program, "traceroute");
    assert!(r.reached, "{r:?}");
    assert_eq!(r.hops.len(), 1, "{r:?}");
    assert_eq!(r.hops[0].address.as_deref(), Some("127.0.0.1"));
    assert!(r.hops[0].rtt_ms.is_some());

    let r = net::traceroute(&NoTraceroute(runner()), &host("127.0.0.1"), 3)
        .await
        .unwrap();
    assert_eq!(r.program, "tracepath");
    assert!(r.reached, "{r:?}");
    assert_eq!(r.hops.last().unwrap().address.as_deref(), Some("127.0.0.1"));
}

// ---------------------------------------------------------------------------------------------
// Through MCP on the tailnet harness.

const DAVE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 9));
const ERIN: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 10));
/// Inside the server namespace: dnsmasq and the HTTP server on its loopback.
const NS_DNS: &str = "127.0.0.1:5353";
const NS_HTTP_PORT: u16 = 8080;

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_tools_through_mcp_with_refusals_and_audit_rows() {
    if !have(DNSMASQ) || !have("ping") {
        skip_or_fail("dnsmasq and ping are needed (apt install dnsmasq-base iputils-ping)");
        return;
    }
    let Some(mut s) = World::builder()
        .user(
            DAVE,
            "dave@example.com",
            json!([{"scopes": ["network:read"], "targets": ["local"]}]),
        )
        .prepare()
        .await
    else {
        return;
    };
    let net = &s.net;

    // dnsmasq and an HTTP server on the server namespace's loopback, where the server runs.
    let dir = tempfile::tempdir().unwrap();
    let _dnsmasq = net
        .command_in_server_ns(Path::new(DNSMASQ))
        .args(dnsmasq_args(dir.path(), NS_DNS.parse().unwrap()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn dnsmasq in the server namespace");
    let http = net
        .bind_in_server_ns(SocketAddr::from(([127, 0, 0, 1], NS_HTTP_PORT)))
        .unwrap();
    let seen = serve_http(http);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !net.listening_sockets().contains(&NS_DNS.parse().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "dnsmasq did not start in the server namespace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // This node's own public address, with a listener on it that counts connections.
    let status = std::process::Command::new("ip")
        .args(["-n", net.server_ns(), "addr", "add", "1.2.3.4/32", "dev", "lo"])
        .status()
        .unwrap();
    assert!(status.success(), "ip addr add 1.2.3.4 in the server namespace");
    let self_listener = net
        .bind_in_server_ns(SocketAddr::from(([1, 2, 3, 4], NS_HTTP_PORT)))
        .unwrap();
    let self_accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = self_accepted.clone();
        tokio::spawn(async move {
            while let Ok((_stream, _)) = self_listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let extra = format!("[network]\nhttp_allow = [\"*.test\", \"127.0.0.1/32\"]\ndns_servers = [\"{NS_DNS}\"]\n");
    s.config(&extra);
    let mut w = s.start().await;
    let mut mcp = w.session(DAVE).await;

    let tools = mcp.list_tools().await.unwrap();
    for name in [
        "network_ping",
        "network_port_check",
        "network_dns_lookup",
        "network_tls_check",
        "network_http_probe",
        "network_traceroute",
    ] {
        assert!(tools.iter().any(|t| t == name), "{name} not listed: {tools:?}");
    }

    // Refusals, each a specific error; nothing reaches the HTTP server.
    let r = mcp
        .call_tool(
            "network_http_probe",
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
        )
        .await
        .unwrap();
    assert_eq!(r["isError"], true);
    assert!(text(&r).contains("169.254.169.254 is a cloud metadata address"), "{r}");
    let r = mcp
        .call_tool(
            "network_http_probe",
            json!({"url": format!("http://ll.test:{NS_HTTP_PORT}/")}),
        )
        .await
        .unwrap();
    assert!(
        text(&r).contains("`ll.test` resolves to 169.254.10.10 is a link-local address"),
        "{r}"
    );
    let r = mcp
        .call_tool(
            "network_http_probe",
            json!({"url": format!("http://127.0.0.2:{NS_HTTP_PORT}/")}),
        )
        .await
        .unwrap();
    assert!(text(&r).contains("127.0.0.2 is not in [network] http_allow"), "{r}");
    // A name rule admits public addresses only: 127.0.0.1 is in an address rule, 127.0.0.2 and
    // fd00::5 are not...
    let r = mcp
        .call_tool(
            "network_http_probe",
            json!({"url": format!("http://web.example.test:{NS_HTTP_PORT}/")}),
        )
        .await
        .unwrap();
    assert!(
        text(&r).contains("`web.example.test` resolves to")
            && text(&r).contains("the name rule `*.test` admits public addresses only"),
        "{r}"
    );
    // ...and never this node's own addresses (here a public one on its loopback interface).
    let r = mcp
        .call_tool(
            "network_http_probe",
            json!({"url": format!("http://self.test:{NS_HTTP_PORT}/")}),
        )
        .await
        .unwrap();
    assert!(
        text(&r).contains("`self.test` resolves to 1.2.3.4, this node's own address; the name rule `*.test`"),
        "{r}"
    );
    assert_eq!(self_accepted.load(Ordering::SeqCst), 0, "the refused probe connected");
    let r = mcp
        .call_tool("network_dns_lookup", json!({"name": "web.test", "record_type": "AXFR"}))
        .await
        .unwrap();
    assert!(text(&r).contains("unknown record type `AXFR`"), "{r}");
    let r = mcp
        .call_tool("network_ping", json!({"host": "-f 127.0.0.1"}))
        .await
        .unwrap();
    assert_eq!(r["isError"], true);
    assert!(text(&r).contains("not a valid host name"), "{r}");
    let r = mcp
        .call_tool(
            "network_port_check",
            json!({"host": "127.0.0.1", "ports": (1..=40).collect::<Vec<i64>>()}),
        )
        .await
        .unwrap();
    assert!(text(&r).contains("1 to 32 ports"), "{r}");
    assert!(seen.lock().unwrap().is_empty());

    // Successes.
    let r = mcp
        .call_tool(
            "network_http_probe",
            json!({"url": format!("http://web.test:{NS_HTTP_PORT}/health")}),
        )
        .await
        .unwrap();
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"]["status"], 200);
    assert_eq!(r["structuredContent"]["address"], format!("127.0.0.1:{NS_HTTP_PORT}"));
    assert_eq!(r["structuredContent"]["truncated"], Value::Null);
    assert_eq!(seen.lock().unwrap().len(), 1);

    let r = mcp
        .call_tool(
            "network_dns_lookup",
            json!({"name": "web.example.test", "record_type": "aaaa"}),
        )
        .await
        .unwrap();
    assert_eq!(r["structuredContent"]["answers"][0]["value"], "fd00::5", "{r}");
    assert_eq!(r["structuredContent"]["resolver"], NS_DNS);

    let r = mcp
        .call_tool(
            "network_port_check",
            json!({"host": "web.test", "ports": [NS_HTTP_PORT, 9]}),
        )
        .await
        .unwrap();
    let ports = &r["structuredContent"]["ports"];
    assert_eq!(
        (ports[0]["state"].as_str(), ports[1]["state"].as_str()),
        (Some("open"), Some("closed")),
        "{r}"
    );
    assert_eq!(r["structuredContent"]["open"], 1);

    let r = mcp
        .call_tool("network_ping", json!({"host": "127.0.0.1", "count": 1}))
        .await
        .unwrap();
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"]["received"], 1);

    let ca = TestCa::new("Lab CA");
    let tls = w
        .net
        .bind_in_server_ns(SocketAddr::from(([127, 0, 0, 1], 8443)))
        .unwrap();
    serve_https(tls, ca.server(&["web.test"]).server_config());
    let r = mcp
        .call_tool(
            "network_tls_check",
            json!({"host": "web.test", "port": 8443, "ca_pem": ca.cert_pem()}),
        )
        .await
        .unwrap();
    let report = &r["structuredContent"];
    assert_eq!(
        (report["verified"].as_bool(), report["name_matches"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    assert_eq!(report["chain"][0]["sans"], json!(["web.test"]));
    assert_eq!(report["trust"], "given CA");

    if have("traceroute") {
        let r = mcp
            .call_tool("network_traceroute", json!({"host": "127.0.0.1", "max_hops": 2}))
            .await
            .unwrap();
        assert_eq!(r["structuredContent"]["reached"], true, "{r}");
        assert_eq!(r["structuredContent"]["hops"][0]["address"], "127.0.0.1");
    } else {
        skip_or_fail("traceroute is not installed (apt install traceroute)");
        return;
    }

    // One audit row per call, allowed by network:read; failures carry their reason.
    let rows = w
        .server
        .audit_where(14, |r| r.tool.as_deref().is_some_and(|t| t.starts_with("network_")))
        .await;
    assert_eq!(rows.len(), 14, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r.decision == Decision::Allow && r.target.as_deref() == Some("local"))
    );
    let metadata = &rows[0];
    assert_eq!(metadata.tool.as_deref(), Some("network_http_probe"));
    assert_eq!(metadata.outcome, Outcome::Error);
    assert!(
        metadata.error.as_deref().unwrap_or("").contains("metadata"),
        "{metadata:?}"
    );
    assert_eq!(
        metadata.arguments.as_ref().unwrap()["url"],
        "http://169.254.169.254/latest/meta-data/"
    );
    assert_eq!(rows.iter().filter(|r| r.outcome == Outcome::Error).count(), 8);
    assert_eq!(rows.iter().filter(|r| r.outcome == Outcome::Ok).count(), 6);

    // A caller without network:read is refused before anything runs, and that is audited too.
    w.net.add_caller(ERIN).unwrap();
    w.set_user(
        ERIN,
        "erin@example.com",
        json!([{"scopes": ["system:read"], "targets": ["local"]}]),
    );
    let mut erin = w.session(ERIN).await;
    let r = erin
        .call_tool(
            "network_http_probe",
            json!({"url": format!("http://web.test:{NS_HTTP_PORT}/")}),
        )
        .await
        .unwrap();
    assert_eq!(r["isError"], true);
    assert!(text(&r).contains("network:read"), "{r}");
    let denied = w
        .server
        .audit_where(1, |r| {
            r.decision == Decision::Deny && r.login.as_deref() == Some("erin@example.com")
        })
        .await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].tool.as_deref(), Some("network_http_probe"));
    assert_eq!(seen.lock().unwrap().len(), 1, "the denied probe sent nothing");
    assert!(w.server.alive(), "the server keeps serving");
}

/// `ping` and `traceroute` run on an SSH target's host: here a real sshd on loopback, so the
/// commands go through the SSH executor and the parsers read their remote output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_traceroute_over_ssh() {
    use crate::support::sshd::Sshd;
    use tailopsmcp::exec::ssh::Ssh;
    let s = match Sshd::start() {
        Ok(s) => s,
        Err(e) => {
            skip_or_fail(&format!("cannot start sshd: {e}"));
            return;
        }
    };
    let settings = s.settings();
    let ssh = Ssh::new(
        "t1",
        settings,
        Limits {
            timeout: Duration::from_secs(20),
            max_output: 64 * 1024,
        },
        4,
    )
    .unwrap();
    let r = net::ping(&ssh, &host("127.0.0.1"), 1, 5).await.unwrap();
    assert_eq!((r.transmitted, r.received), (1, 1), "{r:?}");
    let t = net::traceroute(&ssh, &host("127.0.0.1"), 2).await.unwrap();
    assert_eq!((t.program.as_str(), t.reached), ("traceroute", true), "{t:?}");

    /// The SSH target without traceroute: the remote shell answers 127, tracepath is used.
    struct NoTracerouteThere(Ssh);
    impl Runner for NoTracerouteThere {
        fn run<'a>(&'a self, cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, ExecError>> {
            Box::pin(async move {
                let mut cmd = cmd.clone();
                if cmd.program == "traceroute" {
                    cmd.program = "tailopsmcp-no-such-traceroute".into();
                }
                Runner::run(&self.0, &cmd).await
            })
        }
    }
    let t = net::traceroute(&NoTracerouteThere(ssh), &host("127.0.0.1"), 2)
        .await
        .unwrap();
    assert_eq!((t.program.as_str(), t.reached), ("tracepath", true), "{t:?}");
}
