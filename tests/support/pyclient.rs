//! The official MCP Python SDK as a real, independent MCP client for integration tests: a venv at
//! `target/pyvenv` with a pinned `mcp`, created once per machine, and the path of the client script
//! `tests/clients/mcp_client.py` that drives it.
//!
//! Creation is guarded in-process (`OnceLock`) and across processes (an `flock` on
//! `target/pyvenv.lock`, for test runners that use one process per test), and is complete only when
//! the marker file names the pinned version. It installs nothing outside `target/`.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The pinned SDK: its streamable HTTP client is `mcp.client.streamable_http.streamable_http_client`.
pub const MCP_SDK_VERSION: &str = "2.3.0";
/// Written into the venv after a successful install and import check.
const MARKER: &str = ".tailopsmcp-mcp-sdk";

/// The venv's python with the MCP SDK installed, creating the venv on first use
/// (`python3 -m venv target/pyvenv && target/pyvenv/bin/pip install mcp==VERSION`). The base
/// interpreter is `$TAILOPSMCP_PYTHON` or `python3`.
pub fn python_mcp() -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        let _lock = FileLock::acquire(&target.join("pyvenv.lock"))?;
        ensure_venv(&target.join("pyvenv"))
    })
    .clone()
}

/// [`python_mcp`], or `None` after [`super::netns::skip_or_fail`] says why there is none.
pub fn python_mcp_or_skip() -> Option<PathBuf> {
    match python_mcp() {
        Ok(p) => Some(p),
        Err(e) => {
            super::netns::skip_or_fail(&format!("MCP Python SDK: {e}"));
            None
        }
    }
}

/// `tests/clients/mcp_client.py`: `python mcp_client.py URL ACTIONS_JSON [--header NAME:VALUE]...`
/// (see the script's docstring for actions and output lines).
pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_client.py")
}

/// Run the client script with `python` from `net`'s peer namespace against `url`; assert it
/// succeeded and return its JSON output lines (and the raw output, for messages).
pub async fn run_actions(
    net: &super::netns::Tailnet,
    python: &Path,
    url: &str,
    actions: &serde_json::Value,
) -> (Vec<serde_json::Value>, String) {
    run_actions_with(net, python, url, actions, &[]).await
}

/// [`run_actions`] with extra client options (`--sample TEXT`, `--elicit accept`, ...).
pub async fn run_actions_with(
    net: &super::netns::Tailnet,
    python: &Path,
    url: &str,
    actions: &serde_json::Value,
    options: &[&str],
) -> (Vec<serde_json::Value>, String) {
    let out = net
        .command_in_peer_ns(&python.to_string_lossy())
        .arg(client_script())
        .arg(url)
        .arg(actions.to_string())
        .args(options)
        .output()
        .await
        .expect("run the MCP Python client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (lines, stdout)
}

fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    let marker = venv.join(MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|v| v.trim() == MCP_SDK_VERSION) && python.exists() {
        return Ok(python);
    }
    if venv.exists() {
        std::fs::remove_dir_all(venv).map_err(|e| format!("remove stale {}: {e}", venv.display()))?;
    }
    let base = std::env::var("TAILOPSMCP_PYTHON").unwrap_or_else(|_| "python3".into());
    let result = run(Command::new(&base).args(["-m", "venv"]).arg(venv))
        .map_err(|e| format!("{e} (Debian: apt-get install python3-venv)"))
        .and_then(|()| {
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("mcp=={MCP_SDK_VERSION}")))
        })
        .and_then(|()| {
            run(Command::new(&python).args(["-c", "from mcp.client.streamable_http import streamable_http_client"]))
        })
        .and_then(|()| {
            std::fs::write(&marker, MCP_SDK_VERSION).map_err(|e| format!("write {}: {e}", marker.display()))
        });
    match result {
        Ok(()) => Ok(python),
        Err(e) => {
            let _ = std::fs::remove_dir_all(venv);
            Err(format!("setting up the MCP Python SDK in {}: {e}", venv.display()))
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!("{shown}: {}: {}", out.status, tail.join("\n")))
    }
}

/// An exclusive `flock` held until dropped (closing the file releases it).
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, String> {
        let file = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        // SAFETY: `file` is an open descriptor for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(FileLock(file))
    }
}
