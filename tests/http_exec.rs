//! The HTTP executor (`exec::http`) against real servers started here on 127.0.0.1 ephemeral
//! ports: a plain HTTP server and a TLS server with a certificate from a test CA. The servers
//! record every request they receive, so refusals are proven by what never arrived.
//!
//! No external daemon is needed: these tests always run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use tailopsmcp::exec::http::{Http, HttpSettings, TlsState};
use tailopsmcp::exec::{ExecError, Limits};
use tower::ServiceExt;

use crate::support::tlsca::TestCa;

const TOKEN: &str = "tok-5f2b9c1e-very-secret";
const BIG: usize = 5 * 1024 * 1024;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
}

/// A recording test server.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn plain() -> Server {
        Server::start(None).await
    }

    async fn tls(config: Arc<tokio_rustls::rustls::ServerConfig>) -> Server {
        Server::start(Some(config)).await
    }

    async fn start(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(handle).with_state(seen.clone());
        let task = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                tokio::spawn(async move {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else { return };
                        let (acceptor, app) = (acceptor.clone(), app.clone());
                        tokio::spawn(async move {
                            // A client that rejects our certificate ends the handshake here.
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let service =
                                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                    app.clone().oneshot(req)
                                });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                })
            }
        };
        Server { addr, seen, task }
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn uris(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect()
    }
}

async fn handle(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
    });
    let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap_or_default();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match parts.uri.path() {
        "/api/json" => axum::Json(json!({"ok": true, "path": "/api/json"})).into_response(),
        "/api/text" => ([(header::CONTENT_TYPE, "text/plain")], "hello, text").into_response(),
        "/api/badjson" => ([(header::CONTENT_TYPE, "application/json")], "{not json").into_response(),
        "/api/echo" => (
            [
                (header::SET_COOKIE, "session=abc123".to_owned()),
                (
                    header::HeaderName::from_static("x-auth-token"),
                    auth.clone().unwrap_or_default(),
                ),
                (header::HeaderName::from_static("x-request-id"), "req-1".to_owned()),
            ],
            axum::Json(json!({
                "method": parts.method.as_str(),
                "query": query,
                "body": String::from_utf8_lossy(&body),
                "content_type": parts.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_owned()),
                "authorization": auth,
            })),
        )
            .into_response(),
        "/api/big" => {
            // 5 MiB in 64 KiB chunks, without a Content-Length (chunked).
            let chunks = futures::stream::iter(
                (0..BIG / 65536).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 65536]))),
            );
            ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(chunks)).into_response()
        }
        "/api/big-length" => ([(header::CONTENT_TYPE, "application/json")], vec![b'y'; BIG]).into_response(),
        "/api/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late".into_response()
        }
        "/api/unauthorized" => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "no").into_response(),
        "/api/forbidden" => (StatusCode::FORBIDDEN, "no").into_response(),
        "/api/loop" => (StatusCode::FOUND, [(header::LOCATION, "/api/loop")]).into_response(),
        "/api/redirect" => {
            // `to`: the Location; `status`: 302 unless given.
            let status = param(&query, "status")
                .and_then(|s| StatusCode::from_bytes(s.as_bytes()).ok())
                .unwrap_or(StatusCode::FOUND);
            (status, [(header::LOCATION, param(&query, "to").unwrap_or_default())]).into_response()
        }
        "/api/echo-token" => {
            // `pad` bytes of `a`, the Authorization header as received, then 200 bytes of `z`.
            let pad = param(&query, "pad").and_then(|p| p.parse().ok()).unwrap_or(0);
            let text = format!("{}{}{}", "a".repeat(pad), auth.unwrap_or_default(), "z".repeat(200));
            ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The value of query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

fn settings(base: String) -> HttpSettings {
    HttpSettings {
        base_url: base,
        auth_header: None,
        auth_prefix: None,
        token_file: None,
        token_env: None,
        allowed_methods: vec!["GET".into()],
        allowed_path_prefixes: Vec::new(),
        health_path: None,
        ca_file: None,
        insecure_skip_verify: false,
        max_response_bytes: 1024 * 1024,
    }
}

fn limits(timeout: Duration) -> Limits {
    Limits {
        timeout,
        ..Limits::default()
    }
}

fn token_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("api-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn assert_refused(result: Result<tailopsmcp::exec::http::HttpResponse, ExecError>, says: &str) {
    match result {
        Err(ExecError::Refused(msg)) => assert!(msg.contains(says), "{msg:?} does not say {says:?}"),
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn methods_and_paths_are_enforced_before_anything_is_sent() {
    let server = Server::plain().await;
    let http = Http::new(
        "plain",
        HttpSettings {
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_path_prefixes: vec!["/api".into()],
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();

    let r = http.request("GET", "/api/json", &[], None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"ok": true, "path": "/api/json"}));
    let r = http
        .request(
            "post",
            "api/echo",
            &q(&[("a", "b c"), ("x", "&=")]),
            Some(json!({"n": 1})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["method"], "POST");
    assert_eq!(r.body["query"], "a=b+c&x=%26%3D");
    assert_eq!(r.body["body"], r#"{"n":1}"#);
    assert_eq!(r.body["content_type"], "application/json");

    for method in ["DELETE", "PUT", "PATCH", "HEAD", "BREW"] {
        assert_refused(
            http.request(method, "/api/json", &[], None).await,
            &format!("method {method} is not allowed on target plain"),
        );
    }
    for (path, says) in [
        ("/api/../admin", "dot segments"),
        ("/api/%2e%2e/admin", "dot segments"),
        ("/api/%2E%2E/admin", "dot segments"),
        ("/api/%252e%252e/admin", "dot segments"),
        ("/api/./json", "dot segments"),
        ("/api/..%2fadmin", "encoded slashes"),
        ("/api/..;/admin", "segment `..;` contains `;`"),
        ("/api/%2e%2e;/admin", "segment `%2e%2e;` contains `;`"),
        ("/api/..%20/admin", "segment `..%20` is only dots and spaces"),
        ("/api/%EF%BC%8E%EF%BC%8E/admin", "contains U+FF0E"),
        ("/api/%C0%AE%C0%AE/admin", "does not decode to valid UTF-8"),
        ("/api%2f..%2fadmin", "encoded slashes"),
        ("//evil.example/", "may not start with //"),
        ("//127.0.0.1/api/json", "may not start with //"),
        ("http://evil/", "absolute URLs"),
        ("https://evil.example/api/json", "absolute URLs"),
        ("/api//json", "empty segments"),
        ("/api\\..\\admin", "backslashes"),
        ("/api/json?admin=1", "query"),
        ("/admin", "outside the allowed path prefixes of target plain"),
        ("/apix/json", "outside the allowed path prefixes"),
        ("/", "outside the allowed path prefixes"),
    ] {
        assert_refused(http.request("GET", path, &[], None).await, says);
    }
    // Only the two allowed requests ever arrived.
    assert_eq!(server.uris(), ["GET /api/json", "POST /api/echo?a=b+c&x=%26%3D"]);
}

#[tokio::test]
async fn a_base_path_confines_every_request_under_it() {
    let server = Server::plain().await;
    let http = Http::new(
        "based",
        settings(format!("{}/api/", server.url("http", "127.0.0.1"))),
        Limits::default(),
    )
    .unwrap();
    assert_eq!(http.base_url(), format!("{}/api", server.url("http", "127.0.0.1")));
    assert_eq!(http.request("GET", "json", &[], None).await.unwrap().status, 200);
    assert_eq!(
        http.request("GET", "/text", &[], None).await.unwrap().body,
        json!("hello, text")
    );
    assert_refused(http.request("GET", "/../admin", &[], None).await, "dot segments");
    assert_refused(http.request("GET", "%2e%2e/admin", &[], None).await, "dot segments");
    assert_eq!(server.uris(), ["GET /api/json", "GET /api/text"]);
}

#[tokio::test]
async fn the_token_is_sent_and_never_returned() {
    let server = Server::plain().await;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new(
        "pve",
        HttpSettings {
            auth_header: Some("Authorization".into()),
            auth_prefix: Some("PVEAPIToken=".into()),
            token_file: Some(token_file(&dir)),
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    let r = http.request("GET", "/api/echo", &[], None).await.unwrap();
    let seen = server.seen();
    assert_eq!(
        seen[0].headers.get("authorization").unwrap(),
        &format!("PVEAPIToken={TOKEN}")
    );

    // The server echoed the token in its body and in a header: neither comes back.
    assert_eq!(r.body["authorization"], "PVEAPIToken=[redacted]");
    assert_eq!(r.headers.get("x-request-id").map(String::as_str), Some("req-1"));
    assert!(!r.headers.contains_key("set-cookie"), "{:?}", r.headers);
    assert!(!r.headers.contains_key("x-auth-token"), "{:?}", r.headers);
    for shown in [
        serde_json::to_string(&r).unwrap(),
        format!("{r:?}"),
        format!("{http:?}"),
    ] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }

    // A custom header without a prefix.
    let http = Http::new(
        "nas",
        HttpSettings {
            auth_header: Some("X-API-Key".into()),
            token_file: Some(token_file(&dir)),
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    http.request("GET", "/api/json", &[], None).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen[1].headers.get("x-api-key").unwrap(), TOKEN);
    assert!(seen[1].headers.get("authorization").is_none());

    // A missing token file is a configuration error that names the file, not a request.
    let gone = dir.path().join("gone");
    let http = Http::new(
        "nas",
        HttpSettings {
            token_file: Some(gone.clone()),
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    let err = http.request("GET", "/api/json", &[], None).await.unwrap_err();
    assert!(matches!(err, ExecError::Config(_)), "{err:?}");
    assert!(err.to_string().contains(&gone.display().to_string()), "{err}");
    assert_eq!(server.seen().len(), 2);
}

/// Re-runs itself in a child process whose environment holds `$CREDENTIALS_DIRECTORY` and a
/// token variable (the environment of this process is shared by every test and is not changed);
/// the child, seeing the marker variable, does the checks.
#[test]
fn token_from_credentials_directory_and_env() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(token_from_credentials_directory_child());
    }
    let dir = tempfile::tempdir().unwrap();
    token_file(&dir);
    crate::support::rerun_in_child(
        "http_exec::token_from_credentials_directory_and_env",
        &[
            (CHILD_MARKER, "1".as_ref()),
            ("CREDENTIALS_DIRECTORY", dir.path().as_os_str()),
            ("TAILOPSMCP_TEST_HTTP_TOKEN", TOKEN.as_ref()),
        ],
    );
}

/// Set in the child process of `token_from_credentials_directory_and_env`.
const CHILD_MARKER: &str = "TAILOPSMCP_TEST_HTTP_CHILD";

async fn token_from_credentials_directory_child() {
    assert!(std::env::var_os("CREDENTIALS_DIRECTORY").is_some());
    let server = Server::plain().await;
    let from_credentials = Http::new(
        "creds",
        HttpSettings {
            auth_prefix: Some("Bearer ".into()),
            token_file: Some("api-token".into()),
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    from_credentials.request("GET", "/api/json", &[], None).await.unwrap();
    let from_env = Http::new(
        "env",
        HttpSettings {
            auth_prefix: Some("Bearer ".into()),
            token_env: Some("TAILOPSMCP_TEST_HTTP_TOKEN".into()),
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    from_env.request("GET", "/api/json", &[], None).await.unwrap();
    // The variable holding the token is kept out of every program the server starts (compose
    // would substitute `${VAR}` into a container); the rest of the environment is passed on.
    let env = tailopsmcp::exec::process::run(
        &tailopsmcp::exec::CommandSpec::new("env", Vec::<String>::new()),
        Limits::default(),
    )
    .await
    .unwrap();
    assert!(env.stdout.contains(CHILD_MARKER), "{}", env.stdout);
    assert!(
        !env.stdout.contains("TAILOPSMCP_TEST_HTTP_TOKEN"),
        "token variable passed on"
    );
    assert!(!env.stdout.contains(TOKEN), "token passed on");
    let seen = server.seen();
    for s in &seen {
        assert_eq!(s.headers.get("authorization").unwrap(), &format!("Bearer {TOKEN}"));
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn tls_is_verified_against_the_extra_ca() {
    let ca = TestCa::new("tailopsmcp test CA");
    let server = Server::tls(ca.server(&["localhost", "127.0.0.1"]).server_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(&ca_file);

    // Without the CA: refused before any request is sent, for both host names.
    for host in ["localhost", "127.0.0.1"] {
        let http = Http::new(
            "tls",
            HttpSettings {
                token_file: Some(token_file(&dir)),
                ..settings(server.url("https", host))
            },
            Limits::default(),
        )
        .unwrap();
        let err = http.request("GET", "/api/json", &[], None).await.unwrap_err();
        assert!(matches!(err, ExecError::HostVerification(_)), "{err:?}");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert!(!err.to_string().contains(TOKEN));
        let err = http.check().await.unwrap_err();
        assert!(matches!(err, ExecError::HostVerification(_)), "{err:?}");
    }
    assert!(server.seen().is_empty());

    // With the CA: verified.
    for host in ["localhost", "127.0.0.1"] {
        let http = Http::new(
            "tls",
            HttpSettings {
                ca_file: Some(ca_file.clone()),
                ..settings(server.url("https", host))
            },
            Limits::default(),
        )
        .unwrap();
        let r = http.request("GET", "/api/json", &[], None).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["ok"], true);
        let check = http.check().await.unwrap();
        assert_eq!(check.tls, TlsState::Verified);
        assert_eq!(check.status, 404);
    }

    // The right CA but a certificate for another name: refused.
    let other = Server::tls(ca.server(&["other.example"]).server_config()).await;
    let http = Http::new(
        "tls",
        HttpSettings {
            ca_file: Some(ca_file.clone()),
            ..settings(other.url("https", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    let err = http.request("GET", "/api/json", &[], None).await.unwrap_err();
    assert!(matches!(err, ExecError::HostVerification(_)), "{err:?}");
    // Another CA's certificate: refused even with our CA file.
    let stranger = TestCa::new("someone else");
    let impostor = Server::tls(stranger.server(&["localhost"]).server_config()).await;
    let http = Http::new(
        "tls",
        HttpSettings {
            ca_file: Some(ca_file.clone()),
            ..settings(impostor.url("https", "localhost"))
        },
        Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        http.request("GET", "/api/json", &[], None).await,
        Err(ExecError::HostVerification(_))
    ));
    assert!(other.seen().is_empty() && impostor.seen().is_empty());

    // insecure_skip_verify accepts anything, and check says so.
    let http = Http::new(
        "tls",
        HttpSettings {
            insecure_skip_verify: true,
            ..settings(impostor.url("https", "localhost"))
        },
        Limits::default(),
    )
    .unwrap();
    assert_eq!(http.request("GET", "/api/json", &[], None).await.unwrap().status, 200);
    assert_eq!(http.check().await.unwrap().tls, TlsState::Unverified);

    // A ca_file without a certificate is a configuration error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a pem\n").unwrap();
    let err = Http::new(
        "tls",
        HttpSettings {
            ca_file: Some(empty),
            ..settings(server.url("https", "localhost"))
        },
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn response_bodies_are_capped_and_counted() {
    let server = Server::plain().await;
    let max = 64 * 1024;
    let http = Http::new(
        "big",
        HttpSettings {
            max_response_bytes: max,
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    // Chunked: drained and counted exactly (5 MiB is under the drain limit).
    let r = http.request("GET", "/api/big", &[], None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.truncated_bytes, (BIG - max) as u64);
    let text = r.body.as_str().unwrap();
    assert_eq!(text, format!("{}\n[… {} bytes cut]", "x".repeat(max), BIG - max));
    // With a Content-Length: reading stops at the cap and the count comes from the length.
    let r = http.request("GET", "/api/big-length", &[], None).await.unwrap();
    assert_eq!(r.truncated_bytes, (BIG - max) as u64);
    // Cut JSON is returned as text.
    assert!(r.body.as_str().unwrap().starts_with("yyyy"));
    assert_eq!(
        r.body.as_str().unwrap().len(),
        max + format!("\n[… {} bytes cut]", BIG - max).len()
    );
}

#[tokio::test]
async fn the_timeout_covers_a_slow_server() {
    let server = Server::plain().await;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new(
        "slow",
        HttpSettings {
            token_file: Some(token_file(&dir)),
            ..settings(server.url("http", "127.0.0.1"))
        },
        limits(Duration::from_millis(400)),
    )
    .unwrap();
    let started = Instant::now();
    let err = http.request("GET", "/api/slow", &[], None).await.unwrap_err();
    assert!(
        matches!(err, ExecError::Timeout(d) if d == Duration::from_millis(400)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn json_and_text_bodies() {
    let server = Server::plain().await;
    let http = Http::new("t", settings(server.url("http", "127.0.0.1")), Limits::default()).unwrap();
    let r = http.request("GET", "/api/json", &[], None).await.unwrap();
    assert!(r.body.is_object());
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let r = http.request("GET", "/api/text", &[], None).await.unwrap();
    assert_eq!(r.body, Value::String("hello, text".into()));
    assert_eq!(r.truncated_bytes, 0);
    let r = http.request("GET", "/api/badjson", &[], None).await.unwrap();
    assert_eq!(r.body, Value::String("{not json".into()));
    let r = http.request("GET", "/api/missing", &[], None).await.unwrap();
    assert_eq!((r.status, r.body), (404, json!("not found")));
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_origin_and_the_rules() {
    let server = Server::plain().await;
    let elsewhere = Server::plain().await;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new(
        "redir",
        HttpSettings {
            allowed_path_prefixes: vec!["/api".into()],
            token_file: Some(token_file(&dir)),
            ..settings(server.url("http", "127.0.0.1"))
        },
        Limits::default(),
    )
    .unwrap();
    let via = |to: String| q(&[("to", to.as_str())]).into_iter().collect::<Vec<_>>();

    // Same origin, allowed path: followed.
    let r = http
        .request("GET", "/api/redirect", &via("/api/json".into()), None)
        .await
        .unwrap();
    assert_eq!((r.status, r.body["ok"].clone()), (200, json!(true)));
    // Another origin (another port; the same port under another host name): not followed.
    for to in [
        format!("{}/api/json", elsewhere.url("http", "127.0.0.1")),
        format!("{}/api/json", server.url("http", "localhost")),
        format!("{}/api/json", server.url("https", "127.0.0.1")),
    ] {
        let r = http
            .request("GET", "/api/redirect", &via(to.clone()), None)
            .await
            .unwrap();
        assert_eq!(r.status, 302);
        assert_eq!(r.headers.get("location"), Some(&to));
    }
    // Same origin but outside the allowed prefixes, or smuggling a traversal: not followed.
    for to in [
        "/admin",
        "/api/%2e%2e/admin",
        "/api/..;/admin",
        "/api/..%20/admin",
        "/api/%C0%AE%C0%AE/admin",
    ] {
        let r = http
            .request("GET", "/api/redirect", &via(to.into()), None)
            .await
            .unwrap();
        assert_eq!(r.status, 302, "{to}");
    }
    // A loop ends after a bounded number of hops with the last 3xx.
    let r = http.request("GET", "/api/loop", &[], None).await.unwrap();
    assert_eq!(r.status, 302);
    let hops = server.uris().iter().filter(|u| u.as_str() == "GET /api/loop").count();
    assert_eq!(hops, tailopsmcp::exec::http::MAX_REDIRECTS + 1);

    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.uris());
    let uris = server.uris();
    assert!(uris.iter().all(|u| u.starts_with("GET /api/")), "{uris:?}");
    assert!(
        !uris.iter().any(|u| u.contains("admin") && !u.contains("redirect")),
        "{uris:?}"
    );
    // The followed redirect kept the token (same origin).
    let followed = server.seen().into_iter().find(|s| s.uri == "/api/json").unwrap();
    assert!(followed.headers.get("authorization").is_some());
}

#[tokio::test]
async fn redirects_never_turn_a_request_into_a_get_the_target_does_not_allow() {
    let server = Server::plain().await;
    let target = |methods: &[&str]| {
        Http::new(
            "no-get",
            HttpSettings {
                allowed_methods: methods.iter().map(|m| m.to_string()).collect(),
                allowed_path_prefixes: vec!["/api".into()],
                ..settings(server.url("http", "127.0.0.1"))
            },
            Limits::default(),
        )
        .unwrap()
    };
    let via = |status: u16| q(&[("status", &status.to_string()), ("to", "/api/echo")]);

    // POST only: a 303, 302 or 301 would be followed with a GET, so it comes back as it is.
    let post_only = target(&["POST"]);
    for status in [303, 302, 301] {
        let r = post_only
            .request("POST", "/api/redirect", &via(status), Some(json!({"n": 1})))
            .await
            .unwrap();
        assert_eq!(r.status, status);
        assert_eq!(r.headers.get("location").map(String::as_str), Some("/api/echo"));
    }
    // A 307 keeps the method and the body: followed.
    let r = post_only
        .request("POST", "/api/redirect", &via(307), Some(json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(
        (r.status, &r.body["method"], &r.body["body"]),
        (200, &json!("POST"), &json!(r#"{"n":2}"#))
    );

    // PUT and HEAD, no GET: a 302 keeps PUT (followed), a 303 would make it a GET (not);
    // HEAD stays HEAD through a 303 (followed).
    let put_head = target(&["PUT", "HEAD"]);
    let r = put_head
        .request("PUT", "/api/redirect", &via(302), Some(json!({"n": 3})))
        .await
        .unwrap();
    assert_eq!((r.status, &r.body["method"]), (200, &json!("PUT")));
    let r = put_head
        .request("PUT", "/api/redirect", &via(303), Some(json!({"n": 4})))
        .await
        .unwrap();
    assert_eq!(r.status, 303);
    let r = put_head
        .request("HEAD", "/api/redirect", &via(303), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    let uris = server.uris();
    assert!(!uris.iter().any(|u| u.starts_with("GET ")), "{uris:?}");
    let followed: Vec<&str> = uris
        .iter()
        .map(String::as_str)
        .filter(|u| u.ends_with(" /api/echo"))
        .collect();
    assert_eq!(followed, ["POST /api/echo", "PUT /api/echo", "HEAD /api/echo"]);

    // With GET allowed, a 303 after a POST is followed with a GET, as before.
    let r = target(&["GET", "POST"])
        .request("POST", "/api/redirect", &via(303), Some(json!({"n": 5})))
        .await
        .unwrap();
    assert_eq!((r.status, &r.body["method"]), (200, &json!("GET")));
    assert_eq!(server.uris().last().map(String::as_str), Some("GET /api/echo"));
}

#[tokio::test]
async fn a_token_cut_by_the_size_cap_is_not_returned_in_part() {
    let server = Server::plain().await;
    let dir = tempfile::tempdir().unwrap();
    let pad = 1000;
    let total = pad + TOKEN.len() + 200;
    let target = |max: usize| {
        Http::new(
            "cut",
            HttpSettings {
                token_file: Some(token_file(&dir)),
                max_response_bytes: max,
                ..settings(server.url("http", "127.0.0.1"))
            },
            Limits::default(),
        )
        .unwrap()
    };
    let query = q(&[("pad", &pad.to_string())]);
    // The cap keeps the first `k` bytes of the echoed token.
    for k in [1, 2, 3, 4, 7, 8, 12, TOKEN.len() - 1] {
        let r = target(pad + k)
            .request("GET", "/api/echo-token", &query, None)
            .await
            .unwrap();
        let text = r.body.as_str().unwrap();
        let (shown, marker) = text.split_once('\n').unwrap();
        for n in 1..TOKEN.len() {
            assert!(!shown.ends_with(&TOKEN[..n]), "k {k}: {text:?}");
        }
        // The last (token length - 1) kept bytes are dropped and counted.
        assert_eq!(shown, "a".repeat(pad + k - (TOKEN.len() - 1)), "k {k}");
        assert_eq!(r.truncated_bytes, (total - shown.len()) as u64, "k {k}");
        assert_eq!(marker, format!("[… {} bytes cut]", r.truncated_bytes));
    }
    // The whole token kept, and far enough from the cut: redacted like any other occurrence.
    let r = target(pad + TOKEN.len() + 100)
        .request("GET", "/api/echo-token", &query, None)
        .await
        .unwrap();
    let text = r.body.as_str().unwrap();
    let want = format!("{}[redacted]{}", "a".repeat(pad), "z".repeat(100 - (TOKEN.len() - 1)));
    assert_eq!(text.split_once('\n').unwrap().0, want);
    assert!(!text.contains(&TOKEN[..4]), "{text}");
}

#[tokio::test]
async fn check_reports_status_auth_and_unreachable() {
    let server = Server::plain().await;
    let dir = tempfile::tempdir().unwrap();
    let base = server.url("http", "127.0.0.1");
    let ok = Http::new(
        "t",
        HttpSettings {
            health_path: Some("/api/json".into()),
            ..settings(base.clone())
        },
        Limits::default(),
    )
    .unwrap();
    let check = ok.check().await.unwrap();
    assert_eq!(
        (check.status, check.tls, check.url.as_str()),
        (200, TlsState::None, format!("{base}/api/json").as_str())
    );
    assert!(check.latency_ms > 0.0);

    for path in ["/api/unauthorized", "/api/forbidden"] {
        let denied = Http::new(
            "t",
            HttpSettings {
                health_path: Some(path.into()),
                token_file: Some(token_file(&dir)),
                ..settings(base.clone())
            },
            Limits::default(),
        )
        .unwrap();
        let err = denied.check().await.unwrap_err();
        assert!(matches!(err, ExecError::Auth(_)), "{err:?}");
        assert!(!err.to_string().contains(TOKEN));
        // The same answer to a request is a response, not an error.
        let r = denied.request("GET", path, &[], None).await.unwrap();
        assert!(r.status == 401 || r.status == 403);
        if r.status == 401 {
            assert_eq!(r.headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
        }
    }

    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gone = Http::new(
        "gone",
        HttpSettings {
            token_file: Some(token_file(&dir)),
            ..settings(format!("http://127.0.0.1:{closed}"))
        },
        Limits::default(),
    )
    .unwrap();
    for err in [
        gone.check().await.unwrap_err(),
        gone.request("GET", "/x", &[], None).await.unwrap_err(),
    ] {
        assert!(matches!(err, ExecError::Unreachable(_)), "{err:?}");
        assert!(
            err.to_string().contains("gone") && !err.to_string().contains(TOKEN),
            "{err}"
        );
    }
}
