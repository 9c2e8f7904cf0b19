//! `[files]` and `[logs]`: the directories the `files` tools and `logs_tail` / `logs_analyze`
//! may read beneath, the deny patterns added to the built-in ones, and the read size cap.
//!
//! **Invariant:** a root is absolute, has no `..`, and is not itself covered by a deny pattern.

use std::path::{Component, PathBuf};

use serde::Deserialize;

use super::{Invalid, invalid};

/// `[files]`: the directories the `files` tools may read beneath, and what they never return.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Absolute directories; empty (the default) = every `files_*` call is refused.
    pub roots: Vec<PathBuf>,
    /// Deny patterns added to `exec::fs::DEFAULT_DENY` (which always apply).
    pub deny: Vec<String>,
    /// The most bytes one `files_read` returns and one tail scans.
    pub max_read_bytes: usize,
    /// Read regular files that have more than one hard link (off: a hard link inside a root can
    /// name a file from elsewhere on the same file system).
    pub allow_hardlinks: bool,
}

/// `[logs]`: the directories `logs_tail` and `logs_analyze` may read log files beneath.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub roots: Vec<PathBuf>,
    /// Deny patterns added to `exec::fs::DEFAULT_DENY`.
    pub deny: Vec<String>,
}

/// `[files]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FilesSection {
    roots: Vec<PathBuf>,
    deny: Vec<String>,
    max_read_bytes: usize,
    allow_hardlinks: bool,
}

impl Default for FilesSection {
    fn default() -> Self {
        FilesSection {
            roots: Vec::new(),
            deny: Vec::new(),
            max_read_bytes: 256 * 1024,
            allow_hardlinks: false,
        }
    }
}

/// `[logs]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LogsSection {
    roots: Vec<PathBuf>,
    deny: Vec<String>,
}

impl Default for LogsSection {
    fn default() -> Self {
        LogsSection {
            roots: vec![PathBuf::from("/var/log")],
            deny: Vec::new(),
        }
    }
}

/// Validate `[files]` and `[logs]` (the roots and patterns of both first, then the size cap).
pub(super) fn build(files: FilesSection, logs: LogsSection) -> Result<(FilesConfig, LogsConfig), Invalid> {
    check_roots("files", &files.roots, &files.deny)?;
    check_roots("logs", &logs.roots, &logs.deny)?;
    if !(1024..=16 << 20).contains(&files.max_read_bytes) {
        return Err(invalid("files.max_read_bytes", "must be between 1024 and 16777216"));
    }
    Ok((
        FilesConfig {
            roots: files.roots,
            deny: files.deny,
            max_read_bytes: files.max_read_bytes,
            allow_hardlinks: files.allow_hardlinks,
        },
        LogsConfig {
            roots: logs.roots,
            deny: logs.deny,
        },
    ))
}

/// `roots` and `deny` of `[files]` / `[logs]`: absolute, `..`-free roots that no deny pattern
/// covers; one-component patterns.
fn check_roots(section: &str, roots: &[PathBuf], deny: &[String]) -> Result<(), Invalid> {
    for (i, p) in deny.iter().enumerate() {
        crate::exec::fs::valid_pattern(p).map_err(|e| invalid(format!("{section}.deny[{i}]"), e))?;
    }
    let d = crate::exec::fs::Deny::new(deny);
    for (i, r) in roots.iter().enumerate() {
        let key = format!("{section}.roots[{i}]");
        if !r.is_absolute() {
            return Err(invalid(key, format!("`{}` is not an absolute path", r.display())));
        }
        if r.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(invalid(key, format!("`{}` contains `..`", r.display())));
        }
        if let Some(pattern) = r.components().find_map(|c| match c {
            Component::Normal(n) => d.matches(n).map(str::to_string),
            _ => None,
        }) {
            return Err(invalid(
                key,
                format!("`{}` is itself covered by deny pattern `{pattern}`", r.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::testing::{check_err, load};

    #[test]
    fn files_and_logs_sections() {
        let c = load("").unwrap();
        assert!(c.files.roots.is_empty());
        assert_eq!(c.logs.roots, vec![PathBuf::from("/var/log")]);
        assert_eq!(c.files.max_read_bytes, 256 * 1024);
        assert!(!c.files.allow_hardlinks, "hard-linked files are refused by default");
        assert!(load("[files]\nallow_hardlinks = true").unwrap().files.allow_hardlinks);
        check_err("[files]\nallow_hardlinks = \"yes\"", "invalid type");
        let c = load("[files]\nroots = [\"/srv\"]\ndeny = [\"*.bak\"]\nmax_read_bytes = 4096").unwrap();
        assert_eq!(c.files.roots, vec![PathBuf::from("/srv")]);
        assert_eq!(c.files.deny, vec!["*.bak".to_string()]);
        check_err(
            "[files]\nroots = [\"srv\"]",
            "files.roots[0]: `srv` is not an absolute path",
        );
        check_err(
            "[files]\nroots = [\"/srv/../etc\"]",
            "files.roots[0]: `/srv/../etc` contains `..`",
        );
        check_err("[files]\nroots = [\"/root/.ssh\"]", "covered by deny pattern `.ssh`");
        check_err("[files]\ndeny = [\"a/b\"]", "files.deny[0]");
        check_err("[files]\nmax_read_bytes = 10", "files.max_read_bytes");
        check_err("[logs]\nroots = [\"log\"]", "logs.roots[0]");
        check_err("[logs]\nbogus = 1", "unknown field `bogus`");
    }
}
