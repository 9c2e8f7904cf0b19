//! Packages on a host reached through a [`Runner`]: which package manager it has, the upgrades
//! apt offers, and Debian package-name validation. Changing packages needs root: that goes
//! through the root helper (`exec::systemd::run_helper`, `exec::helper`), never from here.
//!
//! Nothing here builds a shell string; parsers are pure and table-tested.

use schemars::JsonSchema;
use serde::Serialize;

use super::remote::Runner;
use super::{CommandSpec, ExecError};

/// Package managers we recognize, by the program that marks them, in detection order.
pub const MANAGERS: &[(&str, &str)] = &[
    ("apt", "/usr/bin/apt-get"),
    ("dnf", "/usr/bin/dnf"),
    ("yum", "/usr/bin/yum"),
    ("zypper", "/usr/bin/zypper"),
    ("pacman", "/usr/bin/pacman"),
    ("apk", "/sbin/apk"),
];

/// A Debian package name (Debian Policy 5.6.7): lowercase letters, digits, `+`, `-` and `.`,
/// at least two characters, starting with a letter or digit. Architecture qualifiers,
/// versions (`pkg=1.0`), paths and options are refused, and so is a trailing `-`: to
/// `apt-get install`, `NAME-` means *remove* NAME (no real package name ends in `-`).
pub fn validate_package(name: &str) -> Result<(), String> {
    let shown = super::show::shown(name);
    if name.len() < 2 || name.len() > 128 {
        return Err(format!("package name `{shown}` must be 2 to 128 characters"));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "package name `{shown}` must start with a lowercase letter or digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')))
    {
        return Err(format!(
            "package name `{shown}` contains {bad:?}; Debian package names use only a-z 0-9 + - ."
        ));
    }
    if name.ends_with('-') {
        return Err(format!(
            "package name `{shown}` ends in `-`, which apt-get install reads as \"remove this package\""
        ));
    }
    Ok(())
}

/// The package manager found on a host (`None` when none of [`MANAGERS`] is there).
pub async fn detect(r: &dyn Runner) -> Result<Option<&'static str>, ExecError> {
    let cmd = CommandSpec::new("ls", std::iter::once("-d").chain(MANAGERS.iter().map(|(_, p)| *p)));
    let out = r.run(&cmd).await?;
    Ok(parse_detect(&out.stdout))
}

/// `ls -d` output → the first manager whose marker exists.
pub fn parse_detect(ls: &str) -> Option<&'static str> {
    let present: Vec<&str> = ls.lines().map(str::trim).collect();
    MANAGERS
        .iter()
        .find(|(_, path)| present.contains(path))
        .map(|(name, _)| *name)
}

/// One available upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Upgrade {
    pub package: String,
    /// The installed version.
    pub from: Option<String>,
    /// The candidate version.
    pub to: String,
    /// Where it comes from (`bookworm-security`, `stable`, a local suite, ...).
    pub suites: Vec<String>,
    pub arch: Option<String>,
}

/// `apt list --upgradable` (as of the host's last `apt-get update`).
pub async fn apt_upgrades(r: &dyn Runner) -> Result<Vec<Upgrade>, ExecError> {
    let out = r.run(&upgrades_command()).await?;
    if out.timed_out {
        return Err(ExecError::Failed("`apt list --upgradable` timed out".into()));
    }
    if out.status != Some(0) {
        return Err(ExecError::Failed(format!(
            "`apt list --upgradable` failed: {}",
            out.stderr
                .lines()
                .find(|l| !l.starts_with("WARNING"))
                .unwrap_or("")
                .trim()
        )));
    }
    Ok(parse_apt_list(&out.stdout))
}

pub fn upgrades_command() -> CommandSpec {
    CommandSpec::new("apt", ["list", "--upgradable", "-qq"])
}

/// `NAME/SUITE[,SUITE] VERSION ARCH [upgradable from: OLD]` lines; others ignored.
pub fn parse_apt_list(text: &str) -> Vec<Upgrade> {
    text.lines()
        .filter_map(|l| {
            let (head, rest) = l.split_once(' ')?;
            let (name, suites) = head.split_once('/')?;
            validate_package(name).ok()?;
            let mut words = rest.split_whitespace();
            let to = words.next()?.to_string();
            let arch = words.next().map(str::to_string);
            let from = l
                .split_once("[upgradable from: ")
                .and_then(|(_, v)| v.strip_suffix(']'))
                .map(str::to_string);
            Some(Upgrade {
                package: name.to_string(),
                from,
                to,
                suites: suites.split(',').map(str::to_string).collect(),
                arch,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(
            validate_package(name).is_ok(),
            ok,
            "{name}: {:?}",
            validate_package(name)
        );
    }

    #[test]
    fn debian_package_names() {
        for good in ["hello", "libstdc++6", "g++", "python3.11", "0ad", "xz-utils", "lib32z1"] {
            check(good, true);
        }
        for bad in [
            "",
            "a",
            "-y",
            "--allow-unauthenticated",
            "Hello",
            "foo bar",
            "foo;id",
            "../x",
            "pkg=1.0",
            "pkg:amd64",
            "foo/bar",
            "$(id)",
            ".hidden",
            "+x",
            "openssh-server-",
            "bc-",
        ] {
            check(bad, false);
        }
        check(&"a".repeat(129), false);
    }

    #[test]
    fn apt_list_lines() {
        let u = parse_apt_list(
            "Listing...\n\
             tops-demo/local 2.0 all [upgradable from: 1.0]\n\
             libc6/stable-security,stable 2.36-9+deb12u4 amd64 [upgradable from: 2.36-9+deb12u3]\n\
             WARNING: apt does not have a stable CLI interface.\n",
        );
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].package, "tops-demo");
        assert_eq!((u[0].from.as_deref(), u[0].to.as_str()), (Some("1.0"), "2.0"));
        assert_eq!(u[1].suites, ["stable-security", "stable"]);
        assert_eq!(u[1].arch.as_deref(), Some("amd64"));
    }

    #[test]
    fn detection() {
        assert_eq!(parse_detect("/usr/bin/apt-get\n"), Some("apt"));
        assert_eq!(parse_detect("/usr/bin/dnf\n/usr/bin/yum\n"), Some("dnf"));
        assert_eq!(parse_detect("/sbin/apk\n"), Some("apk"));
        assert_eq!(parse_detect(""), None);
    }
}
