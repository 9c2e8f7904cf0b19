//! Deployment pieces (issue 6): the scripts pass shellcheck and their bats tests, the unit's
//! offline `systemd-analyze security` exposure is ≤ 2.0, and install.sh works end to end in a
//! Debian 12 container booted with real systemd (install, live security score, no-op re-run,
//! upgrade keeping config and data, uninstall, purge).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::support::http::{Conn, Mcp};
use crate::support::localapi::{StandIn, whois_for};

use crate::support::netns::skip_or_fail;
use crate::support::sysbox::{self, SystemdBox};

/// The service's tailnet address (TUN `tailscale0` in the container) and a caller's (its `lo`).
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 1, 1);
const CALLER_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 2, 2);

/// The exposure budget of `systemd-analyze security` for tailopsmcp.service.
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The number in "→ Overall exposure level for tailopsmcp.service: 1.5 OK".
fn exposure(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

/// Every shell script of the deployment, shellcheck-clean (bats files checked as bash).
#[test]
fn deploy_scripts_are_shellcheck_clean() {
    if !have("shellcheck") {
        return skip_or_fail("shellcheck is not installed (apt-get install shellcheck)");
    }
    let root = repo();
    let scripts = [
        "install.sh",
        "ct/tailopsmcp.sh",
        "tests/scripts/embed.sh",
        "tests/scripts/fakes/fake",
    ];
    let out = Command::new("shellcheck")
        .current_dir(&root)
        .args(scripts)
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck: {}", text(&out));
    let mut bash_files: Vec<String> = std::fs::read_dir(root.join("tests/scripts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bats" || x == "bash"))
        .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned())
        .collect();
    bash_files.sort();
    assert!(bash_files.len() >= 3, "bats files not found: {bash_files:?}");
    let out = Command::new("shellcheck")
        .current_dir(&root)
        .args(["-s", "bash"])
        .args(&bash_files)
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck -s bash: {}", text(&out));
}

/// The bats tests of install.sh and ct/tailopsmcp.sh (recorded-call stand-ins, scratch root).
#[test]
fn deploy_bats_scripts() {
    if !have("bats") {
        return skip_or_fail("bats is not installed (apt-get install bats)");
    }
    let out = Command::new("bats")
        .current_dir(repo())
        .args(["--tap", "tests/scripts"])
        .env_remove("TAILOPSMCP_ROOT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bats tests/scripts: {}", text(&out));
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        passed >= 30,
        "expected at least 30 bats tests, {passed} passed:\n{stdout}"
    );
    assert!(!stdout.contains("# skip"), "a bats test was skipped:\n{stdout}");
}

/// The unit's sandbox, scored offline on the file itself.
#[test]
fn deploy_unit_offline_security_exposure_at_most_2() {
    if !have("systemd-analyze") {
        return skip_or_fail("systemd-analyze is not installed (apt-get install systemd)");
    }
    let unit = repo().join("systemd/tailopsmcp.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let all = text(&out);
    let score = exposure(&all).unwrap_or_else(|| panic!("no exposure score in: {all}"));
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}: {all}");
    // What the tools need stays allowed: the process list and /proc status files are visible.
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    let directives: Vec<&str> = unit_text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    for forbidden in ["ProtectProc=", "ProcSubset=", "DynamicUser=", "PrivateNetwork="] {
        assert!(
            !directives.iter().any(|l| l.starts_with(forbidden)),
            "{forbidden} breaks a tool"
        );
    }
    for required in [
        "User=tailopsmcp",
        "StateDirectory=tailopsmcp",
        "ConfigurationDirectory=tailopsmcp",
        "SupplementaryGroups=systemd-journal",
        "CapabilityBoundingSet=",
        "LogRateLimitIntervalSec=0",
        "ExecStart=/usr/local/bin/tailopsmcp serve",
    ] {
        assert!(directives.contains(&required), "missing {required}");
    }
}

fn must(b: &SystemdBox, script: &str) -> String {
    b.sh(script).unwrap_or_else(|e| panic!("{e}"))
}

fn install(b: &SystemdBox, args: &str) -> String {
    let out = b
        .exec(&["sh", "-c", &format!("bash /root/install.sh {args} 2>&1")])
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "install.sh {args} failed ({}):\n{all}\n--- journal\n{}",
        out.status,
        b.sh("journalctl -u tailopsmcp --no-pager -n 50").unwrap_or_default()
    );
    all
}

fn prop(b: &SystemdBox, name: &str) -> String {
    must(b, &format!("systemctl show -p {name} --value tailopsmcp.service"))
        .trim()
        .to_string()
}

/// install.sh in a Debian 12 container with systemd as PID 1: install with `--binary` and
/// `--skip-tailscale`, unit active under the hardened sandbox, live security score ≤ 2.0; the
/// service, under that sandbox, answers an MCP call on its tailnet address (TUN `tailscale0` with a
/// 100.x address in the container, a LocalAPI stand-in on `/run/tailscale/tailscaled.sock`) and
/// the audit event is read back with `journalctl -u tailopsmcp -t tailopsmcp-audit`; re-run is a
/// no-op, `--upgrade` keeps config and data, `--uninstall` removes the service, `--purge` the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_install_sh_end_to_end_under_systemd() {
    let docker = match sysbox::ensure_dockerd() {
        Ok(d) => d,
        Err(why) => return skip_or_fail(&why),
    };
    let image = match sysbox::debian_systemd_image(&docker) {
        Ok(i) => i,
        Err(why) => return skip_or_fail(&why),
    };
    if !have("nsenter") {
        return skip_or_fail("nsenter (util-linux) is not installed");
    }
    // tailscaled: the LocalAPI stand-in, its socket directory mounted into the container and
    // linked at tailscaled's default path. The container's tailnet: TUN tailscale0 = SERVER_IP,
    // the caller's address on lo.
    let standin = StandIn::start().await;
    standin.set_self_ips(&[IpAddr::V4(SERVER_IP)]);
    let cap = "tailopsmcp.dev/cap/tailopsmcp"; // the default config's capability name
    let login = format!("deploy-{}@example.com", std::process::id());
    standin.add_identity(
        IpAddr::V4(CALLER_IP),
        whois_for(
            "whois-user.json",
            &login,
            IpAddr::V4(CALLER_IP),
            cap,
            json!([{"scopes": ["system:read", "network:read"], "targets": ["local"]}]),
        ),
    );
    let sock_dir = standin.socket_path().parent().unwrap().to_string_lossy().into_owned();
    let mount = format!("{sock_dir}:/srv/tailscale");
    let b = SystemdBox::boot_with(&docker, &image, &["-v", &mount]).unwrap_or_else(|e| panic!("{e}"));
    must(
        &b,
        "mkdir -p /run/tailscale && ln -sf /srv/tailscale/tailscaled.sock /run/tailscale/tailscaled.sock",
    );
    let server = SERVER_IP.to_string();
    let caller = CALLER_IP.to_string();
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["tuntap", "add", "dev", "tailscale0", "mode", "tun"],
        vec!["addr", "add", &format!("{server}/32"), "dev", "tailscale0"],
        vec!["link", "set", "tailscale0", "up"],
        vec!["addr", "add", &format!("{caller}/32"), "dev", "lo"],
    ] {
        b.ip(&args).unwrap_or_else(|e| panic!("{e}"));
    }

    let binary = Path::new(env!("CARGO_BIN_EXE_tailopsmcp"));
    b.copy_in(&repo().join("install.sh"), "/root/install.sh").unwrap();
    b.copy_in(binary, "/root/tailopsmcp").unwrap();

    // Install.
    let out = install(&b, "--binary /root/tailopsmcp --skip-tailscale");
    assert!(out.contains("tailopsmcp-install: user tailopsmcp: creating"), "{out}");
    // No tailscale CLI in the container: install.sh cannot ask tailscaled, and says so.
    assert!(out.contains("active, waiting for tailscaled"), "{out}");
    assert!(out.contains("MCP URL: http://"), "{out}");
    assert_eq!(must(&b, "systemctl is-enabled tailopsmcp.service").trim(), "enabled");
    assert_eq!(must(&b, "systemctl is-active tailopsmcp.service").trim(), "active");
    assert_eq!(prop(&b, "User"), "tailopsmcp");
    // Still up a moment later (no crash loop under the sandbox), and waiting for tailscaled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(must(&b, "systemctl is-active tailopsmcp.service").trim(), "active");
    assert_eq!(prop(&b, "NRestarts"), "0");
    let journal = must(&b, "journalctl -u tailopsmcp.service --no-pager -o cat");
    assert!(journal.contains("waiting for tailscaled"), "journal:\n{journal}");
    assert!(!journal.contains("Permission denied"), "journal:\n{journal}");
    let pid = prop(&b, "MainPID");
    let owner = must(&b, &format!("stat -c %U /proc/{pid}"));
    assert_eq!(owner.trim(), "tailopsmcp", "the server runs as tailopsmcp");
    let caps = must(&b, &format!("grep -E '^Cap(Eff|Prm|Bnd):' /proc/{pid}/status"));
    for line in caps.lines() {
        assert!(line.ends_with("0000000000000000"), "capabilities left: {caps}");
    }
    // The sandbox is really applied, not just declared.
    let status = must(&b, &format!("grep -E '^(NoNewPrivs|Seccomp):' /proc/{pid}/status"));
    assert!(
        status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"),
        "sandbox not applied: {status}"
    );
    let mounts = must(&b, &format!("cat /proc/{pid}/mountinfo"));
    let mount_opts = |point: &str| {
        mounts
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some(point))
            .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
            .next_back()
            .unwrap_or_default()
    };
    assert!(
        mount_opts("/").starts_with("ro"),
        "ProtectSystem=strict: / is not read-only for the service:\n{mounts}"
    );
    assert!(
        mount_opts("/var/lib/tailopsmcp").starts_with("rw"),
        "StateDirectory is not writable for the service:\n{mounts}"
    );
    let groups = must(
        &b,
        &format!("ps -o supgrp= -p {pid} 2>/dev/null || grep ^Groups: /proc/{pid}/status"),
    );
    let journal_gid = must(&b, "getent group systemd-journal | cut -d: -f3");
    assert!(
        groups.contains("systemd-journal") || groups.split_whitespace().any(|g| g == journal_gid.trim()),
        "not in systemd-journal: {groups}"
    );
    assert_eq!(
        must(&b, "stat -c '%U:%G %a' /var/lib/tailopsmcp /etc/tailopsmcp/config.toml"),
        "tailopsmcp:tailopsmcp 750\nroot:tailopsmcp 640\n"
    );
    must(&b, "test -s /var/lib/tailopsmcp/tailopsmcp.db");
    must(&b, "/usr/local/bin/tailopsmcp check-config");

    // The live sandbox score.
    let sec = b
        .exec(&["systemd-analyze", "security", "--no-pager", "tailopsmcp.service"])
        .unwrap();
    let sec = text(&sec);
    let score = exposure(&sec).unwrap_or_else(|| panic!("no exposure score: {sec}"));
    assert!(score <= MAX_EXPOSURE, "live exposure {score} > {MAX_EXPOSURE}: {sec}");
    eprintln!("live systemd-analyze security tailopsmcp.service: {score}");

    // The service under its sandbox, on the tailnet: an MCP call, its audit event in the journal.
    let to = SocketAddr::new(IpAddr::V4(SERVER_IP), 8471);
    let mut listening = false;
    for _ in 0..100 {
        if must(&b, "ss -ltnH").contains(&format!("{server}:8471")) {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listening,
        "not listening on {to}: {}",
        must(&b, "journalctl -u tailopsmcp --no-pager -n 30")
    );
    let from = SocketAddr::new(IpAddr::V4(CALLER_IP), 0);
    let stream = b
        .connect(from, to)
        .await
        .expect("connect to the service's tailnet address");
    let mut mcp = Mcp::new(Conn::new(stream).await, &format!("{server}:8471"));
    mcp.initialize().await.expect("initialize");
    let who = mcp.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(who["structuredContent"]["principal"], login.as_str(), "{who}");
    // The tools work under the sandbox: /proc, the process list, the interfaces.
    let status = mcp.call_tool("system_status", json!({})).await.unwrap();
    assert_eq!(status["isError"], false, "{status}");
    assert!(status["structuredContent"]["memory"].is_object(), "{status}");
    let procs = mcp.call_tool("system_processes", json!({"limit": 100})).await.unwrap();
    assert_eq!(procs["isError"], false, "{procs}");
    let procs_text = procs["structuredContent"].to_string();
    assert!(
        procs_text.contains("systemd"),
        "other users' processes are visible: {procs}"
    );
    let ifaces = mcp.call_tool("network_interfaces", json!({})).await.unwrap();
    assert_eq!(ifaces["isError"], false, "{ifaces}");
    assert!(
        ifaces["structuredContent"].to_string().contains("tailscale0"),
        "{ifaces}"
    );
    let mut events = Vec::new();
    for _ in 0..50 {
        let out = must(
            &b,
            &format!("journalctl -u tailopsmcp -t tailopsmcp-audit TAILOPS_PRINCIPAL={login} -o json --no-pager"),
        );
        events = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        if events.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tools: Vec<&str> = events.iter().filter_map(|e| e["TAILOPS_TOOL"].as_str()).collect();
    assert_eq!(
        tools,
        vec!["whoami", "system_status", "system_processes", "network_interfaces"],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["TAILOPS_DECISION"] == "allow" && e["_SYSTEMD_UNIT"] == "tailopsmcp.service")
    );
    drop(mcp);

    // Re-run: a no-op.
    must(&b, "echo '# operator edit' >> /etc/tailopsmcp/config.toml");
    let conf_sum = must(&b, "sha256sum /etc/tailopsmcp/config.toml");
    let out = install(&b, "--binary /root/tailopsmcp --skip-tailscale");
    assert!(out.contains("unchanged"), "{out}");
    assert!(out.contains("exists, left as it is"), "{out}");
    assert!(!out.contains("restarting"), "{out}");
    assert!(!out.contains("wrote "), "{out}");
    assert_eq!(prop(&b, "MainPID"), pid, "the re-run restarted the service");
    assert_eq!(must(&b, "sha256sum /etc/tailopsmcp/config.toml"), conf_sum);

    // Upgrade: a different binary (trailing bytes after an ELF do not change what runs).
    must(
        &b,
        "cp /root/tailopsmcp /root/tailopsmcp-v2 && printf 'v2' >> /root/tailopsmcp-v2",
    );
    must(&b, "echo kept > /var/lib/tailopsmcp/marker");
    let db_inode = must(&b, "stat -c %i /var/lib/tailopsmcp/tailopsmcp.db");
    let out = install(&b, "--upgrade --binary /root/tailopsmcp-v2");
    assert!(out.contains("restarting tailopsmcp.service"), "{out}");
    must(&b, "cmp /root/tailopsmcp-v2 /usr/local/bin/tailopsmcp");
    assert_eq!(must(&b, "systemctl is-active tailopsmcp.service").trim(), "active");
    assert_ne!(prop(&b, "MainPID"), pid, "--upgrade did not restart");
    assert_eq!(
        must(&b, "sha256sum /etc/tailopsmcp/config.toml"),
        conf_sum,
        "config changed"
    );
    assert_eq!(must(&b, "cat /var/lib/tailopsmcp/marker").trim(), "kept");
    assert_eq!(
        must(&b, "stat -c %i /var/lib/tailopsmcp/tailopsmcp.db"),
        db_inode,
        "database replaced"
    );

    // Uninstall: service and binary gone; config, data and user kept.
    let out = install(&b, "--uninstall");
    assert!(out.contains("uninstalled"), "{out}");
    assert_eq!(prop(&b, "LoadState"), "not-found");
    assert_ne!(
        b.exec(&["systemctl", "is-active", "tailopsmcp.service"])
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    must(
        &b,
        "test ! -e /usr/local/bin/tailopsmcp && test ! -e /etc/systemd/system/tailopsmcp.service",
    );
    must(
        &b,
        "test -f /etc/tailopsmcp/config.toml && test -f /var/lib/tailopsmcp/tailopsmcp.db",
    );
    must(&b, "getent passwd tailopsmcp");

    // Purge: nothing left.
    install(&b, "--uninstall --purge");
    must(
        &b,
        "test ! -e /etc/tailopsmcp && test ! -e /var/lib/tailopsmcp && ! getent passwd tailopsmcp",
    );
}

#[test]
fn exposure_line_parses() {
    assert_eq!(
        exposure("x\n→ Overall exposure level for tailopsmcp.service: 1.5 OK 🙂\n"),
        Some(1.5)
    );
    assert_eq!(exposure("nothing"), None);
}
