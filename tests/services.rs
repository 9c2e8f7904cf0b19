//! The services and packages toolsets against real systemd and real apt: a Debian 12 container
//! booted with systemd and polkitd, tailopsmcp installed inside it by install.sh (the shipped
//! unit: unprivileged user `tailopsmcp`, the hardened sandbox, `NoNewPrivileges=yes`; the root
//! helper template; the polkit rule generated from the config) plus a drop-in that serves dev
//! mode on the container's loopback. Calls come from the host through the container's network
//! namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::http::{Conn, Mcp};
use crate::support::netns::skip_or_fail;
use crate::support::sysbox::{self, DockerHandle, SystemdBox};

const PORT: u16 = 8471;
const LOGIN: &str = "alice@example.com";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn must(b: &SystemdBox, script: &str) -> String {
    b.sh(script).unwrap_or_else(|e| panic!("{e}"))
}

/// `systemctl is-active UNIT` (whatever its exit status).
fn is_active(b: &SystemdBox, unit: &str) -> String {
    let out = b.exec(&["systemctl", "is-active", unit]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_enabled(b: &SystemdBox, unit: &str) -> String {
    let out = b.exec(&["systemctl", "is-enabled", unit]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(b: &SystemdBox, path: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    std::fs::write(&local, text).unwrap();
    b.copy_in(&local, path).unwrap();
    must(b, &format!("chown root:root '{path}' && chmod 0644 '{path}'"));
}

/// A box with systemd + polkitd, the server installed as the shipped unit in dev mode, and
/// `sleepy-one.service` (allowed) and `other.service` (not allowed) running.
struct Rig {
    _docker: DockerHandle,
    b: SystemdBox,
}

const CONFIG: &str = r#"
[[grant]]
match = "user:alice@example.com"
scopes = ["services:admin", "packages:admin"]
targets = ["local"]

[services]
units = ["sleepy-one"]
helper_timeout_secs = 300

# These tests are about what the tools do; tests/approvals.rs covers the approval gate.
[approvals.risk]
high = "none"
critical = "none"
# Bad-input sweeps make many calls in a row.
[limits.rate.high]
burst = 1000
per_minute = 6000
[limits.rate.critical]
burst = 1000
per_minute = 6000
"#;

const SLEEPY: &str = "[Unit]\nDescription=Sleepy test service\n[Service]\n\
    ExecStart=/bin/sh -c 'echo sleepy-one-started; exec sleep infinity'\n\
    ExecReload=/bin/echo sleepy-one-reloaded\n[Install]\nWantedBy=multi-user.target\n";
const OTHER: &str = "[Unit]\nDescription=Not on the list\n[Service]\nExecStart=/bin/sleep infinity\n\
    [Install]\nWantedBy=multi-user.target\n";

fn rig() -> Result<Rig, String> {
    let docker = sysbox::ensure_dockerd()?;
    let image = sysbox::debian_systemd_image_with(&docker, &["libpam-systemd", "polkitd"])?;
    let b = SystemdBox::boot(&docker, &image)?;
    b.ip(&["link", "set", "lo", "up"])?;
    // Installed the way an operator does it: install.sh (no tailscaled here; it says so and
    // leaves the service waiting), which installs the helper template and the polkit rule.
    b.copy_in(Path::new(env!("CARGO_BIN_EXE_tailopsmcp")), "/root/tailopsmcp")?;
    b.copy_in(&repo().join("install.sh"), "/root/install.sh")?;
    let install = "bash /root/install.sh --binary /root/tailopsmcp --skip-tailscale 2>&1";
    let out = b.sh(install)?;
    for wrote in [
        "wrote /etc/systemd/system/tailopsmcp-helper@.service",
        "wrote /etc/polkit-1/rules.d/50-tailopsmcp.rules",
    ] {
        if !out.contains(wrote) {
            return Err(format!("install.sh did not say `{wrote}`:\n{out}"));
        }
    }
    // The operator's config: grants and `[services] units`; re-running install.sh regenerates
    // the polkit rule from it (and leaves the rest as it is).
    write(&b, "/etc/tailopsmcp/config.toml", CONFIG);
    b.sh("chown root:tailopsmcp /etc/tailopsmcp/config.toml && chmod 0640 /etc/tailopsmcp/config.toml")?;
    let out = b.sh(install)?;
    if !out.contains("wrote /etc/polkit-1/rules.d/50-tailopsmcp.rules") || out.contains("wrote /etc/systemd") {
        return Err(format!(
            "re-running install.sh did not just regenerate the rule:\n{out}"
        ));
    }
    let rule = b.sh("cat /etc/polkit-1/rules.d/50-tailopsmcp.rules")?;
    if !rule.contains("/^sleepy-one\\.service$/") {
        return Err(format!("the rule does not list sleepy-one.service:\n{rule}"));
    }
    b.sh("mkdir -p /etc/systemd/system/tailopsmcp.service.d")?;
    write(
        &b,
        "/etc/systemd/system/tailopsmcp.service.d/dev.conf",
        &format!(
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/tailopsmcp serve --dev-listen 127.0.0.1:{PORT} \
             --dev-identity {LOGIN}\n"
        ),
    );
    write(&b, "/etc/systemd/system/sleepy-one.service", SLEEPY);
    write(&b, "/etc/systemd/system/other.service", OTHER);
    b.sh("systemctl daemon-reload && systemctl start sleepy-one.service other.service && systemctl restart tailopsmcp.service")?;
    Ok(Rig { _docker: docker, b })
}

impl Rig {
    async fn mcp(&self) -> Mcp {
        let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PORT);
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let mut last = String::new();
        for _ in 0..100 {
            match self.b.connect(from, to).await {
                Ok(stream) => {
                    let mut m = Mcp::new(Conn::new(stream).await, &format!("127.0.0.1:{PORT}"));
                    m.initialize().await.expect("initialize");
                    return m;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the server never listened ({last}):\n{}",
            self.b
                .sh("systemctl status tailopsmcp --no-pager; journalctl -u tailopsmcp --no-pager -n 40")
                .unwrap_or_else(|e| e)
        );
    }

    /// Audit events of `tool` in the journal (as the server's unit wrote them).
    async fn audit(&self, tool: &str, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..50 {
            let out = must(
                &self.b,
                &format!("journalctl -u tailopsmcp -t tailopsmcp-audit TAILOPS_TOOL={tool} -o json --no-pager"),
            );
            events = out
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect();
            if events.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        events
    }
}

async fn ok(m: &mut Mcp, tool: &str, args: Value) -> Value {
    let r = m.call_tool(tool, args.clone()).await.unwrap();
    assert_eq!(r["isError"], false, "{tool} {args}: {r}");
    r["structuredContent"].clone()
}

async fn refused(m: &mut Mcp, tool: &str, args: Value, needle: &str) {
    let r = m.call_tool(tool, args.clone()).await.unwrap();
    assert_eq!(r["isError"], true, "{tool} {args} was not refused: {r}");
    let text = r["content"].to_string();
    assert!(text.contains(needle), "{tool} {args}: `{needle}` not in {text}");
}

fn main_pid(b: &SystemdBox, unit: &str) -> String {
    must(b, &format!("systemctl show -p MainPID --value {unit}"))
        .trim()
        .to_string()
}

/// list, status with journal lines, stop/start/restart/reload and enable/disable observed with
/// systemctl, dry runs that change nothing, bad unit names and a unit outside `[services] units`
/// refused (with audit events), all by the server running unprivileged under its shipped sandbox
/// through the generated polkit rule and the root helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_tools_drive_real_systemd_as_an_unprivileged_user() {
    let rig = match rig() {
        Ok(r) => r,
        Err(why) => return skip_or_fail(&why),
    };
    let b = &rig.b;
    let mut m = rig.mcp().await;
    // The server really is unprivileged and sandboxed.
    let pid = main_pid(b, "tailopsmcp.service");
    assert_eq!(must(b, &format!("stat -c %U /proc/{pid}")).trim(), "tailopsmcp");
    assert!(must(b, &format!("grep NoNewPrivs /proc/{pid}/status")).contains('1'));

    let tools = m.list_tools().await.unwrap();
    for t in [
        "services_list",
        "services_status",
        "services_start",
        "services_stop",
        "services_restart",
        "services_reload",
        "services_enable",
        "services_disable",
    ] {
        assert!(tools.iter().any(|n| n == t), "{t} not listed: {tools:?}");
    }

    // list: filters and the cap.
    let list = ok(&mut m, "services_list", json!({"pattern": "sleepy-one*"})).await;
    let units = list["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{list}");
    assert_eq!(units[0]["unit"], "sleepy-one.service");
    assert_eq!(
        (&units[0]["active"], &units[0]["sub"], &units[0]["enabled"]),
        (&json!("active"), &json!("running"), &json!("disabled")),
        "{list}"
    );
    let running = ok(&mut m, "services_list", json!({"state": "running"})).await;
    let names: Vec<&str> = running["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["unit"].as_str())
        .collect();
    for want in ["sleepy-one.service", "other.service", "tailopsmcp.service"] {
        assert!(names.contains(&want), "{want} not running: {names:?}");
    }
    assert!(names.iter().all(|n| n.ends_with(".service")), "{names:?}");
    let capped = ok(&mut m, "services_list", json!({"state": "running", "limit": 1})).await;
    assert_eq!(capped["shown"], 1);
    assert_eq!(capped["truncated"]["cap"], "limit=1");
    assert_eq!(
        capped["truncated"]["omitted"].as_u64().unwrap(),
        capped["matched"].as_u64().unwrap() - 1
    );

    // status, with journal lines read through the systemd-journal group.
    let st = ok(&mut m, "services_status", json!({"unit": "sleepy-one", "lines": 5})).await;
    assert_eq!(st["unit"], "sleepy-one.service");
    assert_eq!(st["properties"]["ActiveState"], "active");
    assert_eq!(st["properties"]["SubState"], "running");
    assert_eq!(st["properties"]["MainPID"], main_pid(b, "sleepy-one.service"));
    let journal = st["journal"].to_string();
    assert!(journal.contains("sleepy-one-started"), "{st}");
    assert!(st["journal"].as_array().unwrap().len() <= 5);

    // stop / start / restart / reload, observed with systemctl.
    let out = ok(&mut m, "services_stop", json!({"unit": "sleepy-one"})).await;
    assert_eq!(
        out["plan"][0]["detail"],
        "systemctl --no-ask-password stop -- sleepy-one.service"
    );
    assert_eq!(out["active"], "inactive");
    assert_eq!(is_active(b, "sleepy-one.service"), "inactive");
    let out = ok(&mut m, "services_start", json!({"unit": "sleepy-one.service"})).await;
    assert_eq!(out["active"], "active");
    assert_eq!(is_active(b, "sleepy-one.service"), "active");
    let before = main_pid(b, "sleepy-one.service");
    ok(&mut m, "services_restart", json!({"unit": "sleepy-one"})).await;
    assert_eq!(is_active(b, "sleepy-one.service"), "active");
    assert_ne!(main_pid(b, "sleepy-one.service"), before, "restart did not restart");
    ok(&mut m, "services_reload", json!({"unit": "sleepy-one"})).await;
    let log = must(b, "journalctl -u sleepy-one.service -o cat --no-pager");
    assert!(log.contains("sleepy-one-reloaded"), "{log}");

    // Dry runs change nothing and still give the plan.
    let pid = main_pid(b, "sleepy-one.service");
    let dry = ok(&mut m, "services_stop", json!({"unit": "sleepy-one", "dry_run": true})).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["plan"][0]["detail"],
        "systemctl --no-ask-password stop -- sleepy-one.service"
    );
    let dry = ok(
        &mut m,
        "services_enable",
        json!({"unit": "sleepy-one", "dry_run": true}),
    )
    .await;
    assert_eq!(dry["plan"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(is_active(b, "sleepy-one.service"), "active");
    assert_eq!(main_pid(b, "sleepy-one.service"), pid);
    assert_eq!(is_enabled(b, "sleepy-one.service"), "disabled");

    // enable / disable through the root helper.
    let out = ok(&mut m, "services_enable", json!({"unit": "sleepy-one"})).await;
    assert_eq!(out["helper"]["ok"], true, "{out}");
    assert_eq!(out["enabled"], "enabled");
    assert_eq!(is_enabled(b, "sleepy-one.service"), "enabled");
    let out = ok(&mut m, "services_disable", json!({"unit": "sleepy-one"})).await;
    assert_eq!(out["enabled"], "disabled");
    assert_eq!(is_enabled(b, "sleepy-one.service"), "disabled");
    assert_eq!(
        must(b, "ls /run/tailopsmcp-helper | wc -l").trim(),
        "2",
        "one result file per helper request"
    );
    assert_eq!(
        must(b, "stat -c '%U:%G %a' /run/tailopsmcp-helper/*.json | sort -u").trim(),
        "root:tailopsmcp 640"
    );

    // Bad unit names: refused before anything runs, and audited.
    for bad in ["../x", "-H host", "a;b", "$(reboot)", "x\ny"] {
        refused(&mut m, "services_status", json!({"unit": bad}), "unit name").await;
        refused(&mut m, "services_restart", json!({"unit": bad}), "unit name").await;
    }
    refused(
        &mut m,
        "services_status",
        json!({"unit": "sleepy-one", "lines": 100000}),
        "between 0 and 200",
    )
    .await;
    refused(&mut m, "services_list", json!({"limit": 100000}), "between 1 and 1000").await;
    // A unit outside `[services] units`: refused by the server...
    let other_pid = main_pid(b, "other.service");
    for tool in ["services_stop", "services_restart", "services_disable"] {
        refused(
            &mut m,
            tool,
            json!({"unit": "other"}),
            "not on this server's `[services] units`",
        )
        .await;
    }
    assert_eq!(is_active(b, "other.service"), "active");
    assert_eq!(main_pid(b, "other.service"), other_pid);
    let restarts = rig.audit("services_restart", 7).await;
    let errors = restarts.iter().filter(|e| e["TAILOPS_OUTCOME"] == "error").count();
    assert!(errors >= 6, "bad calls were not audited as errors: {restarts:?}");
    // ... and by polkit, for the same user outside the server...
    let direct = b
        .exec(&[
            "runuser",
            "-u",
            "tailopsmcp",
            "--",
            "systemctl",
            "--no-ask-password",
            "stop",
            "other.service",
        ])
        .unwrap();
    assert!(!direct.status.success(), "polkit let tailopsmcp stop other.service");
    assert!(
        String::from_utf8_lossy(&direct.stderr).contains("Interactive authentication required")
            || String::from_utf8_lossy(&direct.stderr).contains("Access denied"),
        "{direct:?}"
    );
    assert_eq!(is_active(b, "other.service"), "active");
    // ... and by the root helper, even when asked directly (a hand-made request smuggling an
    // option, and one for a unit off the list).
    let id = "0123456789abcdef0123456789abcdef";
    for (instance, why) in [
        (
            format!("{id}:apt\\x2dinstall:\\x2d\\x2dallow\\x2dunauthenticated"),
            "refused request",
        ),
        (format!("{id}:disable:other.service"), "is not on `[services] units`"),
        // `NAME-` is "remove NAME" to apt-get install: refused on the root side too.
        (format!("{id}:apt\\x2dinstall:tops\\x2dextra\\x2d"), "refused request"),
        // An option for the binary itself: it stays the request word (`helper -- %I`).
        (
            "\\x2d\\x2dconfig\\x3d\\x2ftmp\\x2fx.toml".to_string(),
            "refused request",
        ),
    ] {
        let unit = format!("tailopsmcp-helper@{instance}.service");
        let out = b
            .exec(&[
                "runuser",
                "-u",
                "tailopsmcp",
                "--",
                "systemctl",
                "--no-ask-password",
                "start",
                &unit,
            ])
            .unwrap();
        assert!(!out.status.success(), "{unit} succeeded: {out:?}");
        let log = must(b, &format!("journalctl -u '{unit}' -o cat --no-pager"));
        assert!(log.contains(why), "{unit}: {log}\n{out:?}");
    }
    // A raw `-` in the instance (unescaped; `%I` would turn it into `/`) never passes polkit.
    let raw = format!("tailopsmcp-helper@{id}:apt-install:-y.service");
    let out = b
        .exec(&[
            "runuser",
            "-u",
            "tailopsmcp",
            "--",
            "systemctl",
            "--no-ask-password",
            "start",
            &raw,
        ])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Interactive authentication required"),
        "{out:?}"
    );
    assert_eq!(is_enabled(b, "other.service"), "disabled");
    // The server keeps serving.
    let who = m.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(who["structuredContent"]["principal"], LOGIN, "{who}");
}

/// A `.deb` built with dpkg-deb into `dir`.
fn build_deb(dir: &Path, name: &str, version: &str) {
    let root = dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join(format!("usr/share/{name}"))).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Tests <t@example.com>\n\
             Description: tailopsmcp test package\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join(format!("usr/share/{name}/version")), version).unwrap();
    let out = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(dir.join("repo").join(format!("{name}_{version}_all.deb")))
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb: {out:?}");
}

fn installed_version(b: &SystemdBox, name: &str) -> String {
    let out = b.exec(&["dpkg-query", "-W", "-f=${Version}", name]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A local apt repository (dpkg-deb + dpkg-scanpackages): `tops-demo` 1.0 installed and 2.0
/// offered → packages_updates lists it, a dry run changes nothing, packages_upgrade upgrades it
/// and packages_install installs `tops-extra`, through the root helper; bad names refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_tools_upgrade_and_install_from_a_local_apt_repository() {
    for tool in ["dpkg-deb", "dpkg-scanpackages"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return skip_or_fail(&format!("{tool} is not installed (apt-get install dpkg-dev)"));
        }
    }
    let rig = match rig() {
        Ok(r) => r,
        Err(why) => return skip_or_fail(&why),
    };
    let b = &rig.b;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("repo")).unwrap();
    build_deb(dir.path(), "tops-demo", "1.0");
    build_deb(dir.path(), "tops-demo", "2.0");
    build_deb(dir.path(), "tops-extra", "1.0");
    let out = Command::new("dpkg-scanpackages")
        .args(["--multiversion", ".", "/dev/null"])
        .current_dir(dir.path().join("repo"))
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-scanpackages: {out:?}");
    std::fs::write(dir.path().join("repo/Packages"), &out.stdout).unwrap();
    b.copy_in(&dir.path().join("repo"), "/srv/repo").unwrap();
    must(
        b,
        "chown -R root:root /srv/repo && chmod -R a+rX /srv/repo && \
         echo 'deb [trusted=yes] file:/srv/repo ./' > /etc/apt/sources.list && \
         dpkg -i /srv/repo/tops-demo_1.0_all.deb >/dev/null && apt-get update -q >/dev/null",
    );
    assert_eq!(installed_version(b, "tops-demo"), "1.0");
    let mut m = rig.mcp().await;

    let up = ok(&mut m, "packages_updates", json!({})).await;
    assert_eq!(up["manager"], "apt");
    let demo = up["upgrades"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["package"] == "tops-demo")
        .unwrap_or_else(|| panic!("tops-demo not offered: {up}"))
        .clone();
    assert_eq!((&demo["from"], &demo["to"]), (&json!("1.0"), &json!("2.0")));

    // A dry run: the plan and what is pending, nothing changed.
    let dry = ok(&mut m, "packages_upgrade", json!({"dry_run": true})).await;
    assert_eq!(dry["dry_run"], true);
    assert!(dry["pending"].to_string().contains("tops-demo"), "{dry}");
    let start = dry["plan"][0]["detail"].as_str().unwrap();
    assert!(
        start.starts_with("systemctl --no-ask-password start -- 'tailopsmcp-helper@")
            && start.contains(":apt\\x2dupgrade.service"),
        "{start}"
    );
    assert_eq!(installed_version(b, "tops-demo"), "1.0");

    let out = ok(&mut m, "packages_upgrade", json!({})).await;
    let changed = out["result"]["changed"].as_array().unwrap();
    assert!(
        changed.contains(&json!({"package": "tops-demo", "from": "1.0", "to": "2.0"})),
        "{out}"
    );
    assert_eq!(installed_version(b, "tops-demo"), "2.0");
    let up = ok(&mut m, "packages_updates", json!({})).await;
    assert_eq!(up["count"], 0, "{up}");

    let dry = ok(
        &mut m,
        "packages_install",
        json!({"packages": ["tops-extra"], "dry_run": true}),
    )
    .await;
    assert!(
        dry["plan"][1]["detail"]
            .as_str()
            .unwrap()
            .ends_with("apt-get install -y -- tops-extra"),
        "{dry}"
    );
    assert_eq!(installed_version(b, "tops-extra"), "");
    let out = ok(&mut m, "packages_install", json!({"packages": ["tops-extra"]})).await;
    assert!(
        out["result"]["changed"]
            .as_array()
            .unwrap()
            .contains(&json!({"package": "tops-extra", "from": null, "to": "1.0"})),
        "{out}"
    );
    assert_eq!(installed_version(b, "tops-extra"), "1.0");

    // Bad names: refused before anything runs, audited; the server keeps serving.
    for bad in [
        "-y",
        "--allow-unauthenticated",
        "foo;reboot",
        "../x",
        "Tops-Extra",
        "tops-extra=1.0",
        "a b",
        "tops-extra-",
    ] {
        refused(&mut m, "packages_install", json!({"packages": [bad]}), "package name").await;
    }
    // Valid names that together make a helper unit name over systemd's 255 bytes.
    let long: Vec<String> = (0..8).map(|i| format!("tops-long-name-{i}-with-many-dashes")).collect();
    refused(&mut m, "packages_install", json!({"packages": long}), "unit name limit").await;
    let events = rig.audit("packages_install", 11).await;
    assert!(
        events.iter().filter(|e| e["TAILOPS_OUTCOME"] == "error").count() >= 8,
        "{events:?}"
    );
    let helpers = must(b, "ls /run/tailopsmcp-helper | wc -l");
    assert_eq!(helpers.trim(), "2", "a refused call reached the helper");
    ok(&mut m, "packages_updates", json!({"limit": 1})).await;
}

/// Over an SSH target (a real sshd on loopback, this host as the remote), the services and
/// packages operations run the same commands as locally and give the same results: package
/// manager detection, available upgrades, and systemctl's own answer (this host has no systemd
/// as PID 1, so a clear error on both sides); the helper path names the missing helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_packages_over_ssh_match_the_local_runner() {
    use tailopsmcp::exec::remote::LocalRunner;
    use tailopsmcp::exec::ssh::Ssh;
    use tailopsmcp::exec::{Limits, packages, systemd};

    let s = match crate::support::sshd::Sshd::start() {
        Ok(s) => s,
        Err(e) => return skip_or_fail(&format!("cannot start sshd: {e}")),
    };
    let limits = Limits {
        timeout: Duration::from_secs(20),
        max_output: 4 << 20,
    };
    let settings = s.settings();
    let ssh = Ssh::new("svc", settings, limits, 4).unwrap();
    let local = LocalRunner(limits);

    let (a, b) = (
        packages::detect(&ssh).await.unwrap(),
        packages::detect(&local).await.unwrap(),
    );
    assert_eq!(a, b);
    if a == Some("apt") {
        let (a, b) = (
            packages::apt_upgrades(&ssh).await.unwrap(),
            packages::apt_upgrades(&local).await.unwrap(),
        );
        assert_eq!(a, b);
    }
    let (a, b) = (systemd::list_units(&ssh).await, systemd::list_units(&local).await);
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(
            a.iter().map(|u| &u.unit).collect::<Vec<_>>(),
            b.iter().map(|u| &u.unit).collect::<Vec<_>>()
        ),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(a.to_string().contains("systemctl list-units"), "{a}");
        }
        (a, b) => panic!(
            "ssh and local disagree: {:?} vs {:?}",
            a.map(|v| v.len()),
            b.map(|v| v.len())
        ),
    }
    let (a, b) = (
        systemd::unit_status(&ssh, "ssh.service", 5).await.map(|s| s.properties),
        systemd::unit_status(&local, "ssh.service", 5)
            .await
            .map(|s| s.properties),
    );
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    // A helper request on a host without the helper (or without systemd) fails with a reason,
    // over SSH as locally, and nothing is left half-done.
    let req = systemd::HelperRequest::new(systemd::HelperOp::AptUpgrade);
    let e = systemd::run_helper(&ssh, &req).await.unwrap_err().to_string();
    assert!(
        e.contains("systemctl start tailopsmcp-helper@") || e.contains("helper"),
        "{e}"
    );
}
