//! One test world: the real server on its own test tailnet, the LocalAPI stand-in knowing the
//! callers, the daemons a test asked for, and MCP sessions from chosen callers. Every integration
//! test that runs the server on a tailnet builds it here, so the preamble (skip-or-fail, namespaces,
//! identities, config, start, connect) is written once.
//!
//! ```ignore
//! let Some(mut w) = World::builder()
//!     .with(Daemon::Docker)
//!     .user(CAROL, "carol@example.com", json!([{"scopes": ["containers:admin"]}]))
//!     .config(GRANTS_AND_TARGETS)
//!     .tool_tests_policy()
//!     .session(CAROL)
//!     .start()
//!     .await
//! else {
//!     return;
//! };
//! w.mcp().call_tool("containers_list", json!({})).await.unwrap();
//! ```
//!
//! A config that depends on what was started (the engine's address, the sshd's port, something
//! listening inside the server's namespace) is written between [`Builder::prepare`] and
//! [`Setup::start`]. A missing component goes through [`skip_or_fail`]: `start`/`prepare` return
//! `None` (a failure in CI). This module knows no tool and asserts nothing about the server.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde_json::Value;

use super::http::{Conn, Mcp, Request, Response};
use super::localapi::{StandIn, fixture, whois_for};
use super::netns::{Tailnet, skip_or_fail};
use super::server::{CAP, Server, TOOL_TESTS_POLICY};
use super::sshd::Sshd;

/// The server's tailnet address in every world.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 1, 1);

/// The callers of [`fixture_world`] and [`Builder::fixture_callers`], named for the LocalAPI
/// fixtures they whois as (`shared/fixtures/localapi/`).
pub mod cast {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The server's IPv6 tailnet address in [`super::fixture_world`].
    pub const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0x1, 0x1);
    /// `whois-user.json`: alice@example.com (node `alice-laptop`), whose capability grants
    /// system:read and containers:read on `*` and containers:control on `docker-*`.
    pub const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 2));
    /// `whois-nocaps.json`: bob@example.com, with no grants at all.
    pub const BOB: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 3));
    /// `whois-tagged.json`: a node tagged `tag:ci` and `tag:mcp-client`.
    pub const CI: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 4));
    /// An address tailscaled does not know.
    pub const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 9));
}

/// A server on [`SERVER_IP`] and [`cast::SERVER_IP6`] with the [`cast`] as its callers,
/// `server_section` in its `[server]` table and `extra` config, without sessions.
pub async fn fixture_world(server_section: &str, extra: &str) -> Option<World> {
    World::builder()
        .server_ip6(cast::SERVER_IP6)
        .fixture_callers()
        .server_section(server_section)
        .config(extra)
        .start()
        .await
}

/// What a world is made of, declared before anything runs. Start from [`World::builder`].
#[must_use]
pub struct Builder {
    server_ip6: Option<Ipv6Addr>,
    /// Caller addresses in the order they are added (the first of a family is the default source
    /// of clients that do not bind), each with the whois answer it gets, if any.
    callers: Vec<(IpAddr, Option<Value>)>,
    server_section: String,
    config: String,
    tool_tests_policy: bool,
    daemons: Vec<Daemon>,
    sessions: Vec<IpAddr>,
}

/// What a world runs besides its tailnet, the LocalAPI stand-in and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// journald.
    Journald,
    /// The shared Docker engine ([`World::docker_host`]).
    Docker,
    /// The shared Docker engine with the busybox test image.
    Busybox,
    /// An sshd inside the server's namespace, on its loopback ([`World::sshd`]).
    Sshd,
}

/// A world whose tailnet, stand-in and daemons run, but not the server yet: what the config
/// needs can be read from it, and more config added, before [`Setup::start`].
pub struct Setup {
    pub net: Tailnet,
    pub standin: StandIn,
    /// A scratch directory for the test (config files, trees, repositories); removed on drop.
    pub dir: tempfile::TempDir,
    sshd: Option<Sshd>,
    docker_host: Option<String>,
    server_section: String,
    config: String,
    tool_tests_policy: bool,
    sessions: Vec<IpAddr>,
}

/// A running world. Fields drop in order: sessions, then the server, the sshd, the stand-in,
/// the namespaces and the scratch directory.
pub struct World {
    /// The sessions asked for with [`Builder::session`], initialized, in that order.
    pub sessions: Vec<Mcp>,
    pub server: Server,
    sshd: Option<Sshd>,
    pub standin: StandIn,
    pub net: Tailnet,
    /// See [`Setup::dir`].
    pub dir: tempfile::TempDir,
    docker_host: Option<String>,
}

impl World {
    /// An empty world: server on [`SERVER_IP`] only, no callers, the harness's config.
    pub fn builder() -> Builder {
        Builder {
            server_ip6: None,
            callers: Vec::new(),
            server_section: String::new(),
            config: String::new(),
            tool_tests_policy: false,
            daemons: Vec::new(),
            sessions: Vec::new(),
        }
    }

    /// The `Host` header for this server (`100.100.1.1:8471`).
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    /// The MCP endpoint's URL, for clients that are not [`Mcp`] (the Python SDK, curl).
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.server.addr)
    }

    /// A new HTTP connection from caller address `from` to the server.
    pub async fn conn(&self, from: IpAddr) -> Conn {
        let stream = self.net.connect(from, self.server.addr).await.expect("connect");
        Conn::new(stream).await
    }

    /// A new, initialized MCP session from `from`.
    pub async fn session(&self, from: IpAddr) -> Mcp {
        let mut m = Mcp::new(self.conn(from).await, &self.host());
        m.initialize().await.expect("initialize");
        m
    }

    /// A raw `POST /mcp` of `body` from `from` on a new connection, with the headers of an MCP
    /// client (`host`, `content-type`, `accept`), each replaced by one of `headers` of the same
    /// name, and the other `headers` added.
    pub async fn post(&self, from: IpAddr, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut conn = self.conn(from).await;
        let mut h: Vec<(String, String)> = vec![
            ("host".into(), self.host()),
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json, text/event-stream".into()),
        ];
        for (k, v) in headers {
            h.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
            h.push((k.to_string(), v.to_string()));
        }
        conn.send(Request {
            method: http::Method::POST,
            path: "/mcp".into(),
            headers: h,
            body: body.to_vec(),
        })
        .await
        .expect("send")
    }

    /// From now on the caller at `ip` whoises as user `login` holding `grants` (see
    /// [`Builder::user`]; a new address also needs `net.add_caller`).
    pub fn set_user(&self, ip: IpAddr, login: &str, grants: Value) {
        self.standin
            .add_identity(ip, whois_for("whois-user.json", login, ip, CAP, grants));
    }

    /// The first session asked for with [`Builder::session`].
    pub fn mcp(&mut self) -> &mut Mcp {
        self.sessions
            .first_mut()
            .expect("no MCP session: ask for one with Builder::session")
    }

    /// `tools/call` of `tool` with `args` in the first session: the result (which may have
    /// `isError: true`); panics if there is no result.
    pub async fn call_tool(&mut self, tool: &str, args: Value) -> Value {
        self.mcp()
            .call_tool(tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// The engine's `DOCKER_HOST` (the world was built with [`Daemon::Docker`] or
    /// [`Daemon::Busybox`]).
    pub fn docker_host(&self) -> &str {
        required(self.docker_host.as_deref(), Daemon::Docker)
    }

    /// The sshd in the server's namespace (the world was built with [`Daemon::Sshd`]).
    pub fn sshd(&self) -> &Sshd {
        required(self.sshd.as_ref(), Daemon::Sshd)
    }

    /// The official MCP Python SDK's client (`python` from [`super::pyclient::python_mcp`]) run
    /// from the peer namespace, so from the first caller's address, against this server with
    /// `options` (`--sample TEXT`, `--elicit accept`): its JSON output lines and raw output.
    pub async fn python(&self, python: &Path, actions: &Value, options: &[&str]) -> (Vec<Value>, String) {
        super::pyclient::run_actions_with(&self.net, python, &self.url(), actions, options).await
    }
}

impl Builder {
    /// Give the server an IPv6 tailnet address too (the stand-in reports both).
    pub fn server_ip6(mut self, ip6: Ipv6Addr) -> Builder {
        self.server_ip6 = Some(ip6);
        self
    }

    /// A caller at `ip` that whoises as user `login` (the `whois-user.json` node) holding
    /// `grants` in the server's capability (`Value::Null`: no capability at all).
    pub fn user(self, ip: IpAddr, login: &str, grants: Value) -> Builder {
        let whois = whois_for("whois-user.json", login, ip, CAP, grants);
        self.identity(ip, whois)
    }

    /// A caller at `ip` that whoises as `whois` (a fixture, or one edited by the test).
    pub fn identity(mut self, ip: IpAddr, whois: Value) -> Builder {
        self.callers.push((ip, Some(whois)));
        self
    }

    /// The [`cast`] in order: alice, bob and ci with their fixture identities, and the
    /// stranger's address.
    pub fn fixture_callers(self) -> Builder {
        self.identity(cast::ALICE, fixture("whois-user.json"))
            .identity(cast::BOB, fixture("whois-nocaps.json"))
            .identity(cast::CI, fixture("whois-tagged.json"))
            .caller(cast::STRANGER)
    }

    /// A caller address the stand-in does not know.
    pub fn caller(mut self, ip: IpAddr) -> Builder {
        self.callers.push((ip, None));
        self
    }

    /// Lines for the config's `[server]` table.
    pub fn server_section(mut self, text: &str) -> Builder {
        self.server_section.push_str(text);
        self
    }

    /// TOML appended to the config, right after the harness's `[audit]` table (so leading keys
    /// land there); may add `[[grant]]`s, `[[target]]`s and sections.
    pub fn config(mut self, text: &str) -> Builder {
        self.config.push_str(text);
        self
    }

    /// End the config with [`TOOL_TESTS_POLICY`] (no approval gate, large rate buckets).
    pub fn tool_tests_policy(mut self) -> Builder {
        self.tool_tests_policy = true;
        self
    }

    /// Run `daemon` too (see [`Daemon`]).
    pub fn with(mut self, daemon: Daemon) -> Builder {
        self.daemons.push(daemon);
        self
    }

    /// Open an initialized MCP session from `from` once the server listens ([`World::sessions`]).
    pub fn session(mut self, from: IpAddr) -> Builder {
        self.sessions.push(from);
        self
    }

    /// Everything but the server: daemons (journald, the engine, the image), the tailnet with
    /// every caller address, the sshd, and the stand-in answering for the server's addresses and
    /// the callers' identities. `None` after [`skip_or_fail`] when a component is missing.
    pub async fn prepare(self) -> Option<Setup> {
        let needs = |d: Daemon| self.daemons.contains(&d);
        if needs(Daemon::Journald)
            && let Err(e) = super::journald::ensure_journald()
        {
            skip_or_fail(&format!("journald: {e}"));
            return None;
        }
        let mut docker_host = None;
        if needs(Daemon::Docker) || needs(Daemon::Busybox) {
            let engine = super::docker::ensure_dockerd().and_then(|host| {
                if needs(Daemon::Busybox) {
                    super::docker::busybox_image(&host)?;
                }
                Ok(host)
            });
            match engine {
                Ok(host) => docker_host = Some(host),
                Err(e) => {
                    skip_or_fail(&format!("docker engine: {e}"));
                    return None;
                }
            }
        }
        let net = match Tailnet::new(SERVER_IP, self.server_ip6) {
            Ok(n) => n,
            Err(e) => {
                skip_or_fail(&format!("cannot build a test tailnet: {e}"));
                return None;
            }
        };
        let mut sshd = None;
        if needs(Daemon::Sshd) {
            match Sshd::start_in_netns(net.server_ns()) {
                Ok(s) => sshd = Some(s),
                Err(e) => {
                    skip_or_fail(&format!("sshd: {e}"));
                    return None;
                }
            }
        }
        for (ip, _) in &self.callers {
            net.add_caller(*ip).expect("add caller");
        }
        let standin = StandIn::start().await;
        let mut self_ips = vec![IpAddr::V4(SERVER_IP)];
        self_ips.extend(self.server_ip6.map(IpAddr::V6));
        standin.set_self_ips(&self_ips);
        for (ip, whois) in self.callers {
            if let Some(whois) = whois {
                standin.add_identity(ip, whois);
            }
        }
        Some(Setup {
            net,
            standin,
            dir: tempfile::tempdir().expect("tempdir"),
            sshd,
            docker_host,
            server_section: self.server_section,
            config: self.config,
            tool_tests_policy: self.tool_tests_policy,
            sessions: self.sessions,
        })
    }

    /// [`Builder::prepare`], then [`Setup::start`].
    pub async fn start(self) -> Option<World> {
        Some(self.prepare().await?.start().await)
    }
}

impl Setup {
    /// Append `text` to the config (see [`Builder::config`]).
    pub fn config(&mut self, text: &str) {
        self.config.push_str(text);
    }

    /// See [`World::docker_host`].
    pub fn docker_host(&self) -> &str {
        required(self.docker_host.as_deref(), Daemon::Docker)
    }

    /// See [`World::sshd`].
    pub fn sshd(&self) -> &Sshd {
        required(self.sshd.as_ref(), Daemon::Sshd)
    }

    /// Start the server, wait until it listens on its tailnet address, and open the sessions.
    pub async fn start(self) -> World {
        let sessions = self.sessions.clone();
        let mut w = self.spawn().await;
        w.server.wait_listening(&w.net, w.server.addr).await;
        for from in sessions {
            let m = w.session(from).await;
            w.sessions.push(m);
        }
        w
    }

    /// Start the server without waiting for it to listen (so without the sessions).
    pub async fn spawn(self) -> World {
        let mut config = self.config;
        if self.tool_tests_policy {
            config.push_str(TOOL_TESTS_POLICY);
        }
        let server = Server::spawn(&self.net, &self.standin, &self.server_section, &config).await;
        World {
            sessions: Vec::new(),
            server,
            sshd: self.sshd,
            standin: self.standin,
            net: self.net,
            dir: self.dir,
            docker_host: self.docker_host,
        }
    }
}

/// `value`, which the world has only when it was built with `daemon`.
fn required<T: ?Sized>(value: Option<&T>, daemon: Daemon) -> &T {
    value.unwrap_or_else(|| panic!("the world was built without Daemon::{daemon:?}"))
}
