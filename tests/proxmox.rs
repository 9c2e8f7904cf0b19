//! The proxmox toolset end to end, and the MCP prompts, resources and TOON output through the
//! official Python SDK.
//!
//! A Proxmox VE API stand-in runs in the test, inside the server's network namespace, over
//! HTTPS with a certificate from a test CA (the target trusts it through `ca_file`). It answers
//! the documented `{"data": ...}` shapes of the endpoints the tools use, refuses any request
//! without the exact `Authorization: PVEAPIToken=user@realm!tokenid=secret` header, and records
//! every request, so "nothing was sent" is proven by what never arrived.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::netns::Tailnet;
use crate::support::tlsca::TestCa;
use crate::support::world::World;

const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 7));
/// A tailnet user without any grant.
const DAVE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 8));
/// The token id (not secret; it shows in task ids) and the secret (never shown anywhere).
const TOKEN_ID: &str = "tailops@pve!mcp";
const SECRET: &str = "8f2c4e1a-5b6d-4c3e-9a7f-0123456789ab";
/// Generated VMs on node `pve2`, besides the three named ones, so tables have some length.
const EXTRA_VMS: u64 = 17;

// ---------------------------------------------------------------------------------------------
// The Proxmox API stand-in

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    authorization: Option<String>,
    body: String,
}

struct Guest {
    vmid: u64,
    kind: &'static str,
    name: String,
    node: &'static str,
    status: String,
    template: bool,
    snapshots: Vec<Value>,
}

struct Pve {
    seen: Vec<Seen>,
    guests: Vec<Guest>,
    /// Task id → status polls answered so far (the first poll says `running`).
    tasks: BTreeMap<String, u32>,
    next_pid: u32,
}

type Shared = Arc<Mutex<Pve>>;

struct PveServer {
    port: u16,
    state: Shared,
    _task: tokio::task::JoinHandle<()>,
}

impl PveServer {
    /// Listen on 127.0.0.1 inside the server namespace with a certificate for 127.0.0.1.
    fn start(net: &Tailnet, ca: &TestCa) -> PveServer {
        let listener = net.bind_in_server_ns(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut guests = vec![
            Guest {
                vmid: 100,
                kind: "qemu",
                name: "web".into(),
                node: "pve",
                status: "running".into(),
                template: false,
                snapshots: vec![json!({
                    "name": "pre-upgrade", "snaptime": 1_700_000_000, "description": "before 8.1\n", "vmstate": 0
                })],
            },
            Guest {
                vmid: 200,
                kind: "lxc",
                name: "dns".into(),
                node: "pve",
                status: "stopped".into(),
                template: false,
                snapshots: vec![],
            },
            Guest {
                vmid: 9000,
                kind: "qemu",
                name: "debian-12-template".into(),
                node: "pve2",
                status: "stopped".into(),
                template: true,
                snapshots: vec![],
            },
        ];
        for i in 0..EXTRA_VMS {
            guests.push(Guest {
                vmid: 300 + i,
                kind: if i % 3 == 0 { "lxc" } else { "qemu" },
                name: format!("svc-{i:02}"),
                node: "pve2",
                status: if i % 4 == 0 { "stopped" } else { "running" }.into(),
                template: false,
                snapshots: vec![],
            });
        }
        let state = Arc::new(Mutex::new(Pve {
            seen: Vec::new(),
            guests,
            tasks: BTreeMap::new(),
            next_pid: 0x1000,
        }));
        let app = Router::new().fallback(answer).with_state(state.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server(&["127.0.0.1"]).server_config());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        PveServer {
            port,
            state,
            _task: task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn posts(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST")
            .map(|s| s.uri)
            .collect()
    }

    fn status_of(&self, vmid: u64) -> String {
        let s = self.state.lock().unwrap();
        s.guests.iter().find(|g| g.vmid == vmid).unwrap().status.clone()
    }
}

fn data(v: Value) -> Response {
    axum::Json(json!({ "data": v })).into_response()
}

/// Proxmox answers a bad parameter with 400 and `errors`, an unknown object with 500.
fn error(status: StatusCode, errors: Value) -> Response {
    (status, axum::Json(json!({"data": null, "errors": errors}))).into_response()
}

async fn answer(State(state): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap_or_default();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut pve = state.lock().unwrap();
    pve.seen.push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        authorization: authorization.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if authorization.as_deref() != Some(&format!("PVEAPIToken={TOKEN_ID}={SECRET}")) {
        return (StatusCode::UNAUTHORIZED, "authentication failure").into_response();
    }
    let Some(path) = parts.uri.path().strip_prefix("/api2/json/") else {
        return (StatusCode::NOT_IMPLEMENTED, "no such path").into_response();
    };
    let segments: Vec<&str> = path.split('/').collect();
    let post = parts.method == http::Method::POST;
    match (parts.method.as_str(), segments.as_slice()) {
        ("GET", ["nodes"]) => data(json!([
            {"node": "pve", "status": "online", "cpu": 0.0731, "maxcpu": 8, "mem": 6_442_450_944u64,
             "maxmem": 34_359_738_368u64, "disk": 12_884_901_888u64, "maxdisk": 100_000_000_000u64,
             "uptime": 1_234_567, "level": "", "id": "node/pve", "type": "node"},
            {"node": "pve2", "status": "online", "cpu": 0.25, "maxcpu": 4, "mem": 2_147_483_648u64,
             "maxmem": 17_179_869_184u64, "disk": 5_000_000_000u64, "maxdisk": 50_000_000_000u64,
             "uptime": 99, "level": "", "id": "node/pve2", "type": "node"}
        ])),
        ("GET", ["cluster", "resources"]) => {
            if parts.uri.query() != Some("type=vm") {
                return error(StatusCode::BAD_REQUEST, json!({"type": "unexpected query"}));
            }
            let list: Vec<Value> = pve
                .guests
                .iter()
                .map(|g| {
                    let running = g.status == "running";
                    json!({
                        "id": format!("{}/{}", g.kind, g.vmid), "type": g.kind, "vmid": g.vmid,
                        "name": g.name, "node": g.node, "status": g.status,
                        "template": u8::from(g.template), "maxcpu": 2, "cpu": if running { 0.0421 } else { 0.0 },
                        "mem": if running { 1_073_741_824u64 } else { 0 }, "maxmem": 4_294_967_296u64,
                        "disk": 0, "maxdisk": 34_359_738_368u64, "uptime": if running { 3600 } else { 0 },
                        "netin": 1000, "netout": 2000, "diskread": 0, "diskwrite": 0,
                        "tags": if g.vmid == 100 { "web;prod" } else { "" }
                    })
                })
                .collect();
            data(json!(list))
        }
        (_, ["nodes", node, kind, vmid, rest @ ..]) if matches!(*kind, "qemu" | "lxc") => {
            let Some(i) = pve
                .guests
                .iter()
                .position(|g| g.node == *node && g.kind == *kind && vmid.parse() == Ok(g.vmid))
            else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"vmid": format!("Configuration file 'nodes/{node}/{kind}/{vmid}.conf' does not exist")}),
                );
            };
            match (post, rest) {
                (false, ["status", "current"]) => {
                    let g = &pve.guests[i];
                    let running = g.status == "running";
                    let mut s = json!({
                        "vmid": g.vmid, "name": g.name, "status": g.status, "cpus": 2, "cpu": 0.0421,
                        "mem": if running { 1_073_741_824u64 } else { 0 }, "maxmem": 4_294_967_296u64,
                        "maxdisk": 34_359_738_368u64, "uptime": if running { 3600 } else { 0 },
                        "ha": {"managed": 0}, "tags": if g.vmid == 100 { "web;prod" } else { "" }
                    });
                    if g.kind == "qemu" {
                        s["qmpstatus"] = json!(g.status);
                        if running {
                            s["pid"] = json!(4242);
                        }
                    }
                    data(s)
                }
                (true, ["status", action]) if matches!(*action, "start" | "stop" | "shutdown" | "reboot") => {
                    let short = if *kind == "qemu" { "qm" } else { "vz" };
                    let upid = pve.upid(node, &format!("{short}{action}"), vmid);
                    pve.guests[i].status = match *action {
                        "start" | "reboot" => "running",
                        _ => "stopped",
                    }
                    .into();
                    data(json!(upid))
                }
                (false, ["snapshot"]) => {
                    let g = &pve.guests[i];
                    let mut list = g.snapshots.clone();
                    let parent = list.last().and_then(|s| s["name"].as_str()).map(str::to_owned);
                    let mut current = json!({"name": "current", "description": "You are here!", "running": 1});
                    if let Some(p) = parent {
                        current["parent"] = json!(p);
                    }
                    list.push(current);
                    data(json!(list))
                }
                (true, ["snapshot"]) => {
                    let Ok(params) = serde_json::from_slice::<Value>(&body) else {
                        return error(StatusCode::BAD_REQUEST, json!({"snapname": "property is missing"}));
                    };
                    let Some(name) = params["snapname"].as_str().map(str::to_owned) else {
                        return error(StatusCode::BAD_REQUEST, json!({"snapname": "property is missing"}));
                    };
                    let vmstate = params["vmstate"].as_u64().unwrap_or(0);
                    let description = params["description"].as_str().unwrap_or("").to_owned();
                    let snap = json!({"name": name, "snaptime": 1_763_700_000, "description": description, "vmstate": vmstate});
                    pve.guests[i].snapshots.push(snap);
                    let upid = pve.upid(node, if *kind == "qemu" { "qmsnapshot" } else { "vzsnapshot" }, vmid);
                    data(json!(upid))
                }
                _ => (StatusCode::NOT_IMPLEMENTED, "Method not implemented").into_response(),
            }
        }
        ("GET", ["nodes", _node, "tasks", upid, "status"]) => {
            if upid.contains(":qmreboot:") {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"upid": "task log unavailable"}),
                );
            }
            let Some(polls) = pve.tasks.get_mut(*upid) else {
                return error(StatusCode::BAD_REQUEST, json!({"upid": "unable to parse worker upid"}));
            };
            *polls += 1;
            if *polls == 1 {
                data(json!({"status": "running", "upid": upid}))
            } else {
                data(json!({"status": "stopped", "exitstatus": "OK", "upid": upid}))
            }
        }
        _ => (StatusCode::NOT_IMPLEMENTED, "Method not implemented").into_response(),
    }
}

impl Pve {
    fn upid(&mut self, node: &str, kind: &str, vmid: &str) -> String {
        self.next_pid += 1;
        let upid = format!(
            "UPID:{node}:{:08X}:0001F2A3:691FE2C0:{kind}:{vmid}:{TOKEN_ID}:",
            self.next_pid
        );
        self.tasks.insert(upid.clone(), 0);
        upid
    }
}

// ---------------------------------------------------------------------------------------------
// The world: tailnet, LocalAPI stand-in, server with Proxmox targets, carol's MCP session

/// The world, and the Proxmox API stand-in inside its server namespace.
async fn world() -> Option<(World, PveServer)> {
    // Carol reads everything and may control guests on the Proxmox targets only.
    let grants = json!([
        {"scopes": ["monitor"], "targets": ["*"]},
        {"scopes": ["system:control"], "targets": ["pve", "pve-ro"]}
    ]);
    let mut s = World::builder()
        .user(CAROL, "carol@example.com", grants)
        .user(DAVE, "dave@example.com", Value::Null)
        .tool_tests_policy()
        .session(CAROL)
        .prepare()
        .await?;
    let ca = TestCa::new("tailopsmcp test Proxmox CA");
    let pve = PveServer::start(&s.net, &ca);
    let ca_file = s.dir.path().join("pve-ca.pem");
    ca.write_pem(&ca_file);
    let token_file = s.dir.path().join("pve-token");
    std::fs::write(&token_file, format!("{TOKEN_ID}={SECRET}\n")).unwrap();
    let http = |methods: &str| {
        format!(
            "[target.http]\nbase_url = \"https://127.0.0.1:{}/api2/json\"\nauth_prefix = \"PVEAPIToken=\"\n\
             token_file = {token_file:?}\nca_file = {ca_file:?}\nallowed_methods = {methods}\n\
             allowed_path_prefixes = [\"/nodes\", \"/cluster/resources\"]\nhealth_path = \"/nodes\"\n",
            pve.port
        )
    };
    s.config(&format!(
        "[[target]]\nid = \"pve\"\nkind = \"http\"\n{}\n[[target]]\nid = \"pve-ro\"\nkind = \"http\"\n{}",
        http("[\"GET\", \"POST\"]"),
        http("[\"GET\"]")
    ));
    Some((s.start().await, pve))
}

fn text(r: &Value) -> &str {
    r["content"][0]["text"].as_str().unwrap_or("")
}

/// Carol's calls, every answer kept for the token check at the end.
trait Carol {
    /// Call a tool on `pve` (unless `args` names a target).
    async fn call(&mut self, seen: &mut Vec<String>, tool: &str, args: Value) -> Value;
}

impl Carol for World {
    async fn call(&mut self, seen: &mut Vec<String>, tool: &str, mut args: Value) -> Value {
        if args.get("target").is_none() {
            args["target"] = json!("pve");
        }
        let r = self
            .mcp()
            .call_tool(tool, args.clone())
            .await
            .unwrap_or_else(|e| panic!("{tool} {args}: {e}"));
        seen.push(r.to_string());
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_tools_through_mcp_against_a_proxmox_api() {
    let Some((mut w, pve)) = world().await else { return };
    let mut answers = Vec::new();
    // With `http` targets configured, the Proxmox tools are offered (without one they are not).
    let listed = w.mcp().list_tools().await.unwrap();
    for t in [
        "proxmox_nodes",
        "proxmox_guests",
        "proxmox_guest_status",
        "proxmox_guest_action",
        "proxmox_snapshots",
        "proxmox_snapshot_create",
    ] {
        assert!(listed.iter().any(|l| l == t), "{t} not in {listed:?}");
    }

    // Nodes.
    let r = w.call(&mut answers, "proxmox_nodes", json!({})).await;
    assert_eq!(r["isError"], false, "{r}");
    let nodes = &r["structuredContent"]["nodes"];
    assert_eq!(r["structuredContent"]["count"], 2);
    assert_eq!(nodes[0]["node"], "pve");
    assert_eq!(nodes[0]["cpu_percent"], 7.31);
    assert_eq!(nodes[0]["memory_total_bytes"], 34_359_738_368u64);
    assert_eq!(nodes[1]["uptime_seconds"], 99);

    // Guests: the whole cluster by vmid, filters, and a cap that says what it cut.
    let r = w.call(&mut answers, "proxmox_guests", json!({})).await;
    let s = &r["structuredContent"];
    assert_eq!(s["total"], 3 + EXTRA_VMS, "{r}");
    assert_eq!(s["guests"][0]["vmid"], 100);
    assert_eq!(s["guests"][0]["type"], "qemu");
    assert_eq!(s["guests"][0]["tags"], "web;prod");
    assert!(s["guests"][1]["tags"].is_null());
    assert_eq!(s["guests"][1]["vmid"], 200);
    assert_eq!(s["guests"][1]["type"], "lxc");
    assert_eq!(s["guests"].as_array().unwrap().last().unwrap()["template"], true);
    assert!(s["truncated"].is_null());
    let r = w.call(&mut answers, "proxmox_guests", json!({"node": "pve"})).await;
    assert_eq!(r["structuredContent"]["total"], 2, "{r}");
    let r = w
        .call(
            &mut answers,
            "proxmox_guests",
            json!({"type": "lxc", "status": "stopped"}),
        )
        .await;
    let vmids: Vec<u64> = r["structuredContent"]["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(vmids, [200, 300, 312], "{r}");
    let r = w.call(&mut answers, "proxmox_guests", json!({"limit": 2})).await;
    assert_eq!(r["structuredContent"]["shown"], 2);
    assert_eq!(
        r["structuredContent"]["truncated"],
        json!({"cap": "limit=2", "omitted": 1 + EXTRA_VMS})
    );

    // Status, with node and type looked up.
    let r = w.call(&mut answers, "proxmox_guest_status", json!({"vmid": 100})).await;
    let s = &r["structuredContent"];
    assert_eq!(
        (s["node"].as_str(), s["type"].as_str()),
        (Some("pve"), Some("qemu")),
        "{r}"
    );
    assert_eq!(s["status"], "running");
    assert_eq!(s["pid"], 4242);
    assert_eq!(s["cpu_percent"], 4.21);
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_status",
            json!({"vmid": 200, "node": "pve", "type": "lxc"}),
        )
        .await;
    assert_eq!(r["structuredContent"]["status"], "stopped", "{r}");
    let r = w
        .call(&mut answers, "proxmox_guest_status", json!({"vmid": 4242}))
        .await;
    assert!(text(&r).contains("no VM or container with vmid 4242"), "{r}");
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_status",
            json!({"vmid": 100, "node": "pve2"}),
        )
        .await;
    assert!(text(&r).contains("qemu 100 is on node pve, not pve2"), "{r}");

    // Start: a dry run sends no POST; the real call sends exactly one and follows the task.
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_action",
            json!({"vmid": 200, "action": "start", "dry_run": true}),
        )
        .await;
    assert_eq!(r["isError"], false, "{r}");
    let s = &r["structuredContent"];
    assert_eq!(s["dry_run"], true);
    assert_eq!(
        s["plan"],
        json!([{"kind": "api", "target": "pve", "detail": "POST /nodes/pve/lxc/200/status/start"}])
    );
    assert!(s["task"].is_null());
    assert!(pve.posts().is_empty(), "{:?}", pve.posts());
    assert_eq!(pve.status_of(200), "stopped");

    let r = w
        .call(
            &mut answers,
            "proxmox_guest_action",
            json!({"vmid": 200, "action": "start", "wait_seconds": 10}),
        )
        .await;
    assert_eq!(r["isError"], false, "{r}");
    let task = &r["structuredContent"]["task"];
    let upid = task["upid"].as_str().unwrap();
    assert!(upid.starts_with("UPID:pve:") && upid.contains(":vzstart:200:"), "{r}");
    assert_eq!(
        (task["status"].as_str(), task["exit_status"].as_str()),
        (Some("stopped"), Some("OK"))
    );
    assert_eq!(pve.posts(), ["/api2/json/nodes/pve/lxc/200/status/start"]);
    assert_eq!(pve.status_of(200), "running");
    let polls = pve
        .seen()
        .iter()
        .filter(|s| s.uri.contains("/tasks/") && s.uri.ends_with("/status"))
        .count();
    assert_eq!(polls, 2, "polled until the task stopped");

    // Without waiting: the task id comes back at once.
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_action",
            json!({"vmid": 100, "node": "pve", "type": "qemu", "action": "shutdown"}),
        )
        .await;
    assert_eq!(r["structuredContent"]["task"]["status"], "started", "{r}");
    assert_eq!(pve.posts().len(), 2);

    // Snapshots: list, dry run, create with a JSON body, list again.
    let r = w.call(&mut answers, "proxmox_snapshots", json!({"vmid": 100})).await;
    let snaps = r["structuredContent"]["snapshots"].as_array().unwrap().clone();
    assert_eq!(snaps.len(), 2, "{r}");
    assert_eq!(snaps[0]["name"], "pre-upgrade");
    assert_eq!(snaps[0]["created_at"], "2023-11-14T22:13:20Z");
    assert_eq!(snaps[0]["description"], "before 8.1");
    assert_eq!(snaps[1]["is_current"], true);
    let create = json!({"vmid": 100, "name": "pre-mcp", "description": "before the MCP test", "dry_run": true});
    let r = w.call(&mut answers, "proxmox_snapshot_create", create.clone()).await;
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(
        r["structuredContent"]["plan"][0]["detail"],
        r#"POST /nodes/pve/qemu/100/snapshot {"snapname":"pre-mcp","description":"before the MCP test","vmstate":0}"#
    );
    assert_eq!(pve.posts().len(), 2, "a dry run sends nothing");
    let mut real = create.clone();
    real["dry_run"] = json!(false);
    real["wait_seconds"] = json!(5);
    let r = w.call(&mut answers, "proxmox_snapshot_create", real).await;
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"]["task"]["exit_status"], "OK");
    let post = pve.seen().into_iter().filter(|s| s.method == "POST").nth(2).unwrap();
    assert_eq!(post.uri, "/api2/json/nodes/pve/qemu/100/snapshot");
    assert_eq!(
        serde_json::from_str::<Value>(&post.body).unwrap(),
        json!({"snapname": "pre-mcp", "description": "before the MCP test", "vmstate": 0})
    );
    let r = w.call(&mut answers, "proxmox_snapshots", json!({"vmid": 100})).await;
    let names: Vec<&str> = r["structuredContent"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pre-upgrade", "pre-mcp", "current"]);
    let r = w
        .call(
            &mut answers,
            "proxmox_snapshot_create",
            json!({"vmid": 200, "name": "ram", "include_ram": true}),
        )
        .await;
    assert!(text(&r).contains("`include_ram` applies to VMs only"), "{r}");

    // Bad input: refused with a specific error before anything is sent; each call audited.
    let before = pve.seen().len();
    for (tool, args, says) in [
        ("proxmox_guest_status", json!({"vmid": 5}), "between 100 and 999999999"),
        (
            "proxmox_guest_status",
            json!({"vmid": 1_000_000_000}),
            "between 100 and 999999999",
        ),
        (
            "proxmox_guest_action",
            json!({"vmid": 100, "node": "../access", "action": "stop"}),
            "invalid node name",
        ),
        (
            "proxmox_guest_action",
            json!({"vmid": 100, "node": "pve%2f..", "action": "stop"}),
            "invalid node name",
        ),
        (
            "proxmox_guest_action",
            json!({"vmid": 100, "action": "destroy"}),
            "unknown variant",
        ),
        (
            "proxmox_guest_action",
            json!({"vmid": 100, "action": "stop", "wait_seconds": 100000}),
            "between 0 and 600",
        ),
        (
            "proxmox_snapshot_create",
            json!({"vmid": 100, "name": "x/../../access"}),
            "invalid snapshot name",
        ),
        (
            "proxmox_snapshot_create",
            json!({"vmid": 100, "name": "a;reboot"}),
            "invalid snapshot name",
        ),
        (
            "proxmox_snapshot_create",
            json!({"vmid": 100, "name": "current"}),
            "reserved",
        ),
        ("proxmox_guests", json!({"limit": 1_000_000}), "between 1 and 1000"),
        (
            "proxmox_guests",
            json!({"node": "pve\nX-Injected: 1"}),
            "invalid node name",
        ),
    ] {
        let r = w.call(&mut answers, tool, args.clone()).await;
        assert_eq!(r["isError"], true, "{tool} {args}: {r}");
        assert!(text(&r).contains(says), "{tool} {args}: {r}");
    }
    assert_eq!(pve.seen().len(), before, "bad input reached the API");
    let rows = w
        .server
        .audit_where(11, |r| r.error.as_deref().is_some_and(|e| e.contains("invalid")))
        .await;
    assert!(rows.len() >= 11, "{rows:?}");

    // A task that cannot be followed: the action was sent, so its task id still comes back.
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_action",
            json!({"vmid": 100, "action": "reboot", "wait_seconds": 5}),
        )
        .await;
    assert_eq!(r["isError"], false, "{r}");
    let task = &r["structuredContent"]["task"];
    assert!(task["upid"].as_str().unwrap().contains(":qmreboot:100:"), "{r}");
    assert_eq!(task["status"], "unknown");
    assert!(task["exit_status"].as_str().unwrap().contains("answered 500"), "{r}");
    assert_eq!(pve.posts().len(), 4);

    // A target that allows only GET: the action is refused by the target's own constraints.
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_action",
            json!({"target": "pve-ro", "vmid": 100, "action": "stop"}),
        )
        .await;
    assert_eq!(r["isError"], true);
    assert!(text(&r).contains("method POST is not allowed on target pve-ro"), "{r}");
    // Not a Proxmox target at all.
    let r = w.call(&mut answers, "proxmox_nodes", json!({"target": "local"})).await;
    assert!(text(&r).contains("not supported on local targets"), "{r}");
    // Carol may not power guests elsewhere: denied by policy before the tool runs.
    let r = w
        .call(
            &mut answers,
            "proxmox_guest_action",
            json!({"target": "local", "vmid": 100, "action": "stop"}),
        )
        .await;
    assert!(
        text(&r).contains("denied: scope system:control is not granted on target `local`"),
        "{r}"
    );
    assert_eq!(pve.posts().len(), 4);

    // Every request carried the exact token header; the secret is in no answer, audit row or log.
    let seen = pve.seen();
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("PVEAPIToken={TOKEN_ID}={SECRET}"))),
        "{seen:?}"
    );
    let answers = answers.join("\n");
    assert!(!answers.contains(SECRET));
    let audit = serde_json::to_string(&w.server.audit()).unwrap();
    assert!(audit.contains("proxmox_guest_action") && !audit.contains(SECRET));
    assert!(!w.server.log().contains(SECRET));
    let actions = w
        .server
        .audit_where(1, |r| {
            r.tool.as_deref() == Some("proxmox_guest_action") && r.target.as_deref() == Some("pve")
        })
        .await;
    assert!(actions.iter().any(|r| r.outcome == tailopsmcp::audit::Outcome::Ok));

    // Still serving.
    let r = w.call(&mut Vec::new(), "proxmox_nodes", json!({})).await;
    assert_eq!(r["isError"], false);
}

/// Prompts, resources and `format: "toon"` through the official MCP Python SDK, on the same
/// world (so `proxmox_guests` answers from the Proxmox stand-in). Prints the TOON/JSON sizes of
/// real outputs (`--nocapture` shows them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_resources_and_toon_through_the_python_sdk() {
    let Some(python) = crate::support::pyclient::python_mcp_or_skip() else {
        return;
    };
    let Some((w, _pve)) = world().await else { return };
    let actions = json!([
        {"list_prompts": {}},
        {"get_prompt": "health_check", "args": {"target": "pve"}},
        {"get_prompt": "troubleshoot_container", "args": {}, "expect_error": true},
        {"get_prompt": "troubleshoot_container", "args": {"container": "web; reboot"}, "expect_error": true},
        {"get_prompt": "no_such_prompt", "expect_error": true},
        {"list_resources": {}},
        {"call": "system_processes", "args": {"limit": 50, "format": "toon"}},
        {"call": "targets_list", "args": {"format": "toon"}},
        {"call": "proxmox_guests", "args": {"target": "pve", "format": "toon"}},
        {"read_resource": "tailopsmcp://targets"},
        {"read_resource": "tailopsmcp://audit/mine"},
        {"read_resource": "tailopsmcp://audit/everyone", "expect_error": true}
    ]);
    let (lines, stdout) = w.python(&python, &actions, &[]).await;
    let line = |n: usize| &lines[n];
    assert_eq!(lines.len(), 13, "{stdout}");

    // Prompts: listed with their arguments; rendered for this caller's tools.
    let prompts = line(1)["prompts"].as_array().unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "security_audit",
            "health_check",
            "troubleshoot_container",
            "performance_analysis",
            "network_audit",
            "plan_stack_deployment",
            "investigate_high_usage",
            "backup_planning",
            "set_up_inventory"
        ]
    );
    let tc = prompts.iter().find(|p| p["name"] == "troubleshoot_container").unwrap();
    assert_eq!(
        tc["arguments"][0],
        json!({"name": "container", "description": "The container's name or id.", "required": true})
    );
    let health = line(2)["messages"][0]["text"].as_str().unwrap();
    assert_eq!(line(2)["messages"][0]["role"], "user");
    assert!(health.starts_with("Check the health of target `pve`"), "{health}");
    assert!(health.contains("`proxmox_nodes` and `proxmox_guests`"), "{health}");
    assert!(health.contains("1. Read `system_status`"), "{health}");
    for (n, says) in [
        (3, "missing required argument `container`"),
        (4, "is not a container name or id"),
        (5, "unknown prompt `no_such_prompt`"),
    ] {
        assert!(line(n)["error"].as_str().unwrap().contains(says), "{}", line(n));
        assert_eq!(line(n)["code"], -32602, "{}", line(n));
    }

    // Resources.
    let uris: Vec<&str> = line(6)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            "tailopsmcp://targets",
            "tailopsmcp://audit/mine",
            "tailopsmcp://inventory"
        ]
    );
    let targets: Value = serde_json::from_str(line(10)["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(line(10)["contents"][0]["mimeType"], "application/json");
    let pve = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "pve")
        .unwrap();
    assert!(
        pve["scopes"].as_array().unwrap().contains(&json!("system:control")),
        "{targets}"
    );
    let mine: Value = serde_json::from_str(line(11)["contents"][0]["text"].as_str().unwrap()).unwrap();
    let records = mine["records"].as_array().unwrap();
    let tools: Vec<&str> = records.iter().filter_map(|r| r["tool"].as_str()).collect();
    assert_eq!(
        &tools[..3],
        ["proxmox_guests", "targets_list", "system_processes"],
        "newest first: {mine}"
    );
    assert!(
        records.iter().any(|r| r["method"] == "resources/read"),
        "the targets read: {mine}"
    );
    let carol_rows = w
        .server
        .audit()
        .into_iter()
        .filter(|r| r.principal.as_deref() == mine["principal"].as_str())
        .count();
    assert!(carol_rows >= records.len() && !records.is_empty());
    assert!(
        line(12)["error"].as_str().unwrap().contains("unknown resource"),
        "{}",
        line(12)
    );
    let reads = w.server.audit_where(3, |r| r.method == "resources/read").await;
    assert_eq!(reads.len(), 3, "one audit row per resources/read");
    assert_eq!(
        reads
            .iter()
            .filter(|r| r.decision == tailopsmcp::audit::Decision::Deny)
            .count(),
        1
    );

    // A caller without grants may not read resources; the refusal is audited.
    let mut dave = w.session(DAVE).await;
    let r = dave
        .request("resources/read", json!({"uri": "tailopsmcp://audit/mine"}))
        .await
        .unwrap()
        .json();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("denied: no grants for this caller"),
        "{r}"
    );
    let denied = w
        .server
        .audit_where(1, |r| {
            r.method == "resources/read" && r.principal.as_deref() == Some("dave@example.com")
        })
        .await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].decision, tailopsmcp::audit::Decision::Deny);
    assert_eq!(denied[0].arguments, Some(json!({"uri": "tailopsmcp://audit/mine"})));

    // TOON: the same structured content, as TOON text, is smaller than its JSON.
    eprintln!("output                       JSON bytes  pretty JSON  TOON bytes   ~tokens JSON/TOON (chars/4)");
    for (n, what) in [
        (7, "system_processes limit=50"),
        (8, "targets_list"),
        (9, "proxmox_guests (20)"),
    ] {
        let r = line(n);
        assert_eq!(r["isError"], false, "{r}");
        let toon = r["text"][0].as_str().unwrap();
        let structured = &r["structuredContent"];
        let compact = serde_json::to_string(structured).unwrap();
        let pretty = serde_json::to_string_pretty(structured).unwrap();
        assert!(!toon.trim_start().starts_with('{'), "{what} is not TOON: {toon}");
        // Smaller than the pretty JSON `format: "json"` gives; smaller than compact JSON where
        // the rows are flat (nested arrays, such as a target's scopes, defeat TOON's tables).
        assert!(
            toon.len() < pretty.len(),
            "{what}: TOON {} >= pretty JSON {}",
            toon.len(),
            pretty.len()
        );
        if n != 8 {
            assert!(
                toon.len() < compact.len(),
                "{what}: TOON {} >= JSON {}",
                toon.len(),
                compact.len()
            );
        }
        eprintln!(
            "{what:<28} {:>10}  {:>11}  {:>10}   {:>6} / {:<6} (TOON/compact JSON = {:.0}%)",
            compact.len(),
            pretty.len(),
            toon.len(),
            compact.chars().count() / 4,
            toon.chars().count() / 4,
            100.0 * toon.len() as f64 / compact.len() as f64
        );
    }
    let guests = line(9)["text"][0].as_str().unwrap();
    assert!(
        guests.contains("guests[20]{vmid,type,name,node,status,"),
        "one table: {guests}"
    );
}
