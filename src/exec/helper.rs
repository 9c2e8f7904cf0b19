//! The root side of the privileged path: `tailopsmcp helper INSTANCE`, run only by the template
//! unit `tailopsmcp-helper@.service` (root, oneshot), which the unprivileged server starts with
//! `systemctl start` under the polkit rule.
//!
//! The instance (`%I`) is the whole request: `ID:OP[:OPERAND…]`, parsed and validated again
//! here ([`HelperRequest::parse`]) — operands are unit or Debian package names, so no option or
//! path can be smuggled in; commands get `--` before operands anyway. enable/disable also check
//! the unit against this host's own `[services] units`. The result goes to
//! `/run/tailopsmcp-helper/ID.json` (the directory is root's; the file root:tailopsmcp 0640)
//! and a summary to stdout (the instance's journal).
//!
//! Blocking: runs as a short-lived CLI process, never inside the server.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::Command;

use super::systemd::{self, Glob, HELPER_RESULT_DIR, HelperOp, HelperRequest, HelperResult, PackageChange};

/// How much of the commands' combined output the result keeps (the end of it).
pub const OUTPUT_TAIL: usize = 4096;
/// The group that may read results (the server's user's group).
pub const RESULT_GROUP: &str = "tailopsmcp";

/// Run the request named by `instance`. `Ok(true)` = it succeeded, `Ok(false)` = it ran and
/// failed (the result says why), `Err` = it was refused before anything ran (no result file
/// when the request id itself is unusable).
pub fn run(instance: &str, allowed_units: &[Glob], config_name: &str) -> Result<bool, String> {
    let req = HelperRequest::parse(instance).map_err(|e| format!("refused request: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the helper must run as root (from tailopsmcp-helper@.service)".into());
    }
    let mut log = Log::default();
    let (ok, summary, changed) = match &req.op {
        HelperOp::Enable(unit) | HelperOp::Disable(unit) => {
            let verb = if matches!(req.op, HelperOp::Enable(_)) {
                "enable"
            } else {
                "disable"
            };
            if !systemd::unit_allowed(unit, allowed_units) {
                (
                    false,
                    format!("refused: {unit} is not on `[services] units` in {config_name}"),
                    Vec::new(),
                )
            } else {
                let ok = log.run("systemctl", &[verb, "--", unit], &[]);
                let summary = if ok {
                    format!("{verb}d {unit}")
                } else {
                    format!("systemctl {verb} {unit} failed")
                };
                (ok, summary, Vec::new())
            }
        }
        HelperOp::AptUpgrade | HelperOp::AptInstall(_) => {
            let before = installed(&mut log);
            let env = [
                ("DEBIAN_FRONTEND", "noninteractive"),
                ("APT_LISTCHANGES_FRONTEND", "none"),
                ("NEEDRESTART_MODE", "a"),
            ];
            let mut ok = log.run("apt-get", &["update", "-q"], &env);
            let (what, args): (&str, Vec<&str>) = match &req.op {
                HelperOp::AptInstall(pkgs) => {
                    let mut a = vec!["install"];
                    a.extend(APT_OPTIONS);
                    a.push("--");
                    a.extend(pkgs.iter().map(String::as_str));
                    ("install", a)
                }
                _ => (
                    "upgrade",
                    std::iter::once("upgrade").chain(APT_OPTIONS.iter().copied()).collect(),
                ),
            };
            if ok {
                ok = log.run("apt-get", &args, &env);
            }
            let after = installed(&mut log);
            let changed = diff(&before, &after);
            let summary = if ok {
                format!("apt-get {what}: {} package(s) changed", changed.len())
            } else {
                format!("apt-get {what} failed")
            };
            (ok, summary, changed)
        }
    };
    let result = HelperResult {
        request: req.instance(),
        ok,
        summary: summary.clone(),
        commands: log.commands,
        changed,
        output_tail: tail(&log.output, OUTPUT_TAIL),
    };
    println!("{summary}");
    write_result(&req, &result)?;
    cleanup_old(Path::new(HELPER_RESULT_DIR));
    Ok(ok)
}

/// Options of every apt-get change: no prompts, keep changed config files, no recommends, and
/// names are names: without `APT::Cmd::Pattern-Only`, a name that is no package (`cscop.`) is
/// tried as a regular expression and installs whatever matches.
const APT_OPTIONS: &[&str] = &[
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "APT::Cmd::Pattern-Only=true",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
];

#[derive(Default)]
struct Log {
    commands: Vec<String>,
    output: String,
}

impl Log {
    fn run(&mut self, program: &str, args: &[&str], env: &[(&str, &str)]) -> bool {
        self.commands.push(
            std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let out = Command::new(program).args(args).envs(env.iter().copied()).output();
        match out {
            Ok(o) => {
                self.output.push_str(&String::from_utf8_lossy(&o.stdout));
                self.output.push_str(&String::from_utf8_lossy(&o.stderr));
                o.status.success()
            }
            Err(e) => {
                self.output.push_str(&format!("cannot run {program}: {e}\n"));
                false
            }
        }
    }
}

/// Installed packages and their versions (`dpkg-query -W`).
fn installed(log: &mut Log) -> BTreeMap<String, String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${binary:Package}\t${Version}\t${Status}\n"])
        .output();
    let Ok(out) = out else {
        log.output.push_str("cannot run dpkg-query\n");
        return BTreeMap::new();
    };
    parse_installed(&String::from_utf8_lossy(&out.stdout))
}

fn parse_installed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, version, status) = (f.next()?, f.next()?, f.next()?);
            status
                .ends_with(" installed")
                .then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<PackageChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| PackageChange {
            package: n.clone(),
            from: before.get(n).cloned(),
            to: after.get(n).cloned(),
        })
        .collect()
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut]\n{}", &s[start..])
}

/// Writes the result as root:tailopsmcp 0640, refusing to follow or overwrite anything.
fn write_result(req: &HelperRequest, result: &HelperResult) -> Result<(), String> {
    let dir = Path::new(HELPER_RESULT_DIR);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = req.result_path();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    if let Some(gid) = group_id(RESULT_GROUP) {
        std::os::unix::fs::fchown(&f, Some(0), Some(gid)).map_err(|e| format!("{path}: {e}"))?;
    }
    let json = serde_json::to_vec(result).map_err(|e| e.to_string())?;
    f.write_all(&json).map_err(|e| format!("{path}: {e}"))
}

fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam with a valid C string; the returned record is read at once, before any
    // other call that could reuse its static storage (the helper is single-threaded).
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        None
    } else {
        // SAFETY: non-null pointer returned by getgrnam.
        Some(unsafe { (*g).gr_gid })
    }
}

/// Results older than a day are removed (the server reads each one right after the start).
fn cleanup_old(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let day = std::time::Duration::from_secs(86_400);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old && e.file_name().to_string_lossy().ends_with(".json") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_versions_and_their_diff() {
        let before = parse_installed(
            "tops-a\t1.0\tinstall ok installed\nold\t1\tdeinstall ok config-files\nlibc6:amd64\t2.36\tinstall ok installed\n",
        );
        assert_eq!(before.len(), 2);
        let after = parse_installed(
            "tops-a\t2.0\tinstall ok installed\ntops-b\t1.0\tinstall ok installed\nlibc6:amd64\t2.36\tinstall ok installed\n",
        );
        let d = diff(&before, &after);
        assert_eq!(
            d,
            vec![
                PackageChange {
                    package: "tops-a".into(),
                    from: Some("1.0".into()),
                    to: Some("2.0".into())
                },
                PackageChange {
                    package: "tops-b".into(),
                    from: None,
                    to: Some("1.0".into())
                },
            ]
        );
    }

    #[test]
    fn output_tail_is_cut_at_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        let t = tail(&"é".repeat(10), 5);
        assert!(t.starts_with("[… ") && t.ends_with("éé"), "{t}");
    }

    #[test]
    fn refused_requests_run_nothing() {
        let e = run("nonsense", &[], "test").unwrap_err();
        assert!(e.contains("refused request"), "{e}");
        let e = run("0123456789abcdef0123456789abcdef:apt-install:-y", &[], "test").unwrap_err();
        assert!(e.contains("must start with"), "{e}");
    }
}
