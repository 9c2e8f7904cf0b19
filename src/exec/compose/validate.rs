//! Everything that reaches a command line or a path, checked first: stack names, git URLs and
//! the hosts they may come from, branches, commits, compose paths and env entries. Pure.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::{MAX_ENV, MAX_ENV_VALUE};
use crate::exec::show::cut_after;

/// One entry of `allowed_git_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHostRule {
    /// A host name (lowercase) for `https`, `http`, `ssh` and `git` URLs, any port.
    Host(String),
    /// `file:///PATH`: local repositories at or under PATH.
    FileUnder(PathBuf),
}

impl std::fmt::Display for GitHostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitHostRule::Host(h) => f.write_str(h),
            GitHostRule::FileUnder(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// Parse one `allowed_git_hosts` entry: a host name, or `file:///PATH` for local repositories
/// under an absolute PATH (`file:///` allows every local repository).
pub fn parse_host_rule(entry: &str) -> Result<GitHostRule, String> {
    if let Some(path) = entry.strip_prefix("file://") {
        let p = Path::new(path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!(
                "`{entry}` must be `file:///ABSOLUTE/PATH` (local repositories under that path) without `..`"
            ));
        }
        return Ok(GitHostRule::FileUnder(p.to_path_buf()));
    }
    let host = entry.to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return Err(format!(
            "`{entry}` is not a host name (like `github.com`) or `file:///PATH` (no scheme, port or path for hosts)"
        ));
    }
    Ok(GitHostRule::Host(host))
}

/// Stack names are compose project names and directory names: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_stack_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stack name `{}` is not valid: 1 to 63 characters of lowercase letters, digits, `_` and `-`, starting \
             with a letter or digit",
            cut_after(name, 64)
        ))
    }
}

/// A git repository URL that passed the allow-list, as git will receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The URL as re-serialized after parsing: what git gets (never the raw input).
    pub url: String,
    /// `https`, `http`, `ssh`, `git` or `file`: the only protocol git may use for it.
    pub scheme: String,
    /// The host (none for `file`).
    pub host: Option<String>,
}

/// Parse `raw` as a git URL and check it against `rules`. Refused: scp-like `host:path`, other
/// schemes, passwords in the URL, hosts not listed, `file://` outside a listed path.
pub fn parse_git_url(raw: &str, rules: &[GitHostRule]) -> Result<GitSource, String> {
    if rules.is_empty() {
        return Err("deploying from git is disabled: [stacks] allowed_git_hosts is empty".into());
    }
    if raw.is_empty() || raw.len() > 2048 {
        return Err("`repository` must be a URL of 1 to 2048 characters".into());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return Err("`repository` must not contain spaces, control characters or backslashes".into());
    }
    if raw.starts_with('-') {
        return Err("`repository` must not start with `-` (it would be read as an option)".into());
    }
    let dot_dot = |seg: &str| matches!(seg.to_ascii_lowercase().as_str(), ".." | "%2e%2e" | ".%2e" | "%2e.");
    if raw.split('/').any(dot_dot) {
        return Err("`repository` must not contain `..` path segments".into());
    }
    if !raw.contains("://") {
        return Err(format!(
            "`{}` is not a URL: use https://HOST/PATH, ssh://USER@HOST/PATH or file:///PATH (scp-like HOST:PATH is \
             not accepted)",
            cut_after(raw, 200)
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("`{}` is not a valid URL: {e}", cut_after(raw, 200)))?;
    let scheme = url.scheme().to_string();
    if !matches!(scheme.as_str(), "https" | "http" | "ssh" | "git" | "file") {
        return Err(format!(
            "URL scheme `{scheme}` is not allowed: use https, http, ssh, git or file"
        ));
    }
    if url.password().is_some() {
        return Err(
            "credentials in the repository URL are refused (they would be stored in the audit log and the stack's \
             metadata); use an SSH key or a git credential helper of the service user"
                .into(),
        );
    }
    if url.username().starts_with('-') {
        return Err("the URL's user name must not start with `-`".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the repository URL must not have a query or fragment".into());
    }
    if scheme == "file" {
        if url.host_str().is_some_and(|h| !h.is_empty()) {
            return Err("file URLs must not name a host: use file:///PATH".into());
        }
        let path = url
            .to_file_path()
            .map_err(|_| "the file URL's path is not a local path".to_string())?;
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err("the file URL's path must not contain `..`".into());
        }
        let allowed = rules.iter().any(|r| match r {
            GitHostRule::FileUnder(prefix) => path.starts_with(prefix),
            GitHostRule::Host(_) => false,
        });
        if !allowed {
            return Err(format!(
                "local repository {} is not under a `file:///PATH` entry of [stacks] allowed_git_hosts (allowed: {})",
                path.display(),
                list_rules(rules)
            ));
        }
        return Ok(GitSource {
            url: url.as_str().to_string(),
            scheme,
            host: None,
        });
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "the repository URL has no host".to_string())?
        .to_ascii_lowercase();
    if host.starts_with('-') {
        return Err("the URL's host must not start with `-`".into());
    }
    if !rules.iter().any(|r| matches!(r, GitHostRule::Host(h) if *h == host)) {
        return Err(format!(
            "git host `{}` is not in [stacks] allowed_git_hosts (allowed: {})",
            cut_after(&host, 100),
            list_rules(rules)
        ));
    }
    Ok(GitSource {
        url: url.as_str().to_string(),
        scheme,
        host: Some(host),
    })
}

fn list_rules(rules: &[GitHostRule]) -> String {
    rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

/// A branch or tag name for `git clone --branch`.
pub fn validate_branch(branch: &str) -> Result<(), String> {
    if branch.starts_with('-') {
        return Err("`branch` must not start with `-` (it would be read as an option)".into());
    }
    if branch.contains("..") {
        return Err("`branch` must not contain `..`".into());
    }
    let ok = !branch.is_empty()
        && branch.len() <= 200
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | '+'))
        && !branch.starts_with(['/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("//")
        && !branch.contains("/.");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`branch` `{}` is not a valid branch or tag name (letters, digits, `.`, `_`, `/`, `-`, `+`; at most 200)",
            cut_after(branch, 64)
        ))
    }
}

/// A commit id: 7 to 64 hexadecimal digits.
pub fn validate_commit(commit: &str) -> Result<(), String> {
    if commit.starts_with('-') {
        return Err("`commit` must not start with `-` (it would be read as an option)".into());
    }
    if (7..=64).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "`commit` `{}` is not a commit id (7 to 64 hexadecimal digits)",
            cut_after(commit, 64)
        ))
    }
}

/// A compose file path relative to the repository root, that cannot leave it by its spelling
/// (symlinks are checked again after checkout by [`resolve_within`]).
pub fn validate_compose_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 255 {
        return Err("`compose_file` must be a path of 1 to 255 characters within the repository".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "`compose_file` `{}` is absolute: give a path relative to the repository root",
            cut_after(path, 64)
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!(
            "`compose_file` `{}` escapes the repository (`..`)",
            cut_after(path, 64)
        ));
    }
    let ok = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && !c.starts_with('-'))
        && (path.ends_with(".yml") || path.ends_with(".yaml"));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`compose_file` `{}` is not valid: a relative path of letters, digits, `.`, `_`, `-` and `/` ending in \
             .yml or .yaml",
            cut_after(path, 64)
        ))
    }
}

/// Env entries for `.env`: keys `[A-Za-z_][A-Za-z0-9_]*` (at most 128), at most [`MAX_ENV`]
/// entries; values at most [`MAX_ENV_VALUE`] bytes without `'`, `\`, `${` or line breaks
/// (they are written single-quoted, which compose v2 reads literally and v1 too, except `${`).
/// Errors name the key, never the value.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    if env.len() > MAX_ENV {
        return Err(format!("`env` has {} entries; at most {MAX_ENV}", env.len()));
    }
    for (key, value) in env {
        let key_ok = !key.is_empty()
            && key.len() <= 128
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(format!(
                "env key `{}` is not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128)",
                cut_after(key, 64)
            ));
        }
        if value.len() > MAX_ENV_VALUE {
            return Err(format!("the value of env `{key}` is longer than {MAX_ENV_VALUE} bytes"));
        }
        if value.contains(['\'', '\\', '\n', '\r', '\0']) || value.contains("${") {
            return Err(format!(
                "the value of env `{key}` contains a quote, backslash, `${{` or line break, which a .env file cannot \
                 carry literally for both compose v1 and v2"
            ));
        }
    }
    Ok(())
}

/// The canonical path of `rel` inside `root`, which must exist, be a regular file and stay
/// inside `root` after symlinks are resolved.
pub fn resolve_within(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
    let full = root.join(rel);
    let real = full
        .canonicalize()
        .map_err(|_| format!("compose file `{rel}` does not exist in the repository"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "compose file `{rel}` resolves outside the repository (a symlink to {})",
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("compose file `{rel}` is not a regular file"));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Vec<GitHostRule> {
        entries.iter().map(|e| parse_host_rule(e).unwrap()).collect()
    }

    /// `Ok(normalized url)` or `Err(needle)` that the error must contain.
    fn check_url(raw: &str, allowed: &[&str], expected: Result<&str, &str>) {
        let got = parse_git_url(raw, &rules(allowed));
        match (got, expected) {
            (Ok(s), Ok(url)) => assert_eq!(s.url, url, "{raw}"),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{raw}: `{e}` lacks `{needle}`"),
            (got, expected) => panic!("{raw}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn git_urls_are_checked_against_the_allow_list() {
        let hosts = ["github.com", "git.lan", "file:///srv/git"];
        check_url(
            "https://github.com/me/app.git",
            &hosts,
            Ok("https://github.com/me/app.git"),
        );
        check_url(
            "https://GitHub.com/me/app.git",
            &hosts,
            Ok("https://github.com/me/app.git"),
        );
        check_url(
            "ssh://git@git.lan:2222/me/app",
            &hosts,
            Ok("ssh://git@git.lan:2222/me/app"),
        );
        check_url("file:///srv/git/app", &hosts, Ok("file:///srv/git/app"));
        check_url(
            "https://evil.example/x.git",
            &hosts,
            Err("git host `evil.example` is not in"),
        );
        check_url("https://github.com.evil.example/x", &hosts, Err("is not in"));
        check_url("file:///etc/app", &hosts, Err("not under a `file:///PATH` entry"));
        check_url("file:///srv/git/../../etc", &hosts, Err("must not contain `..`"));
        check_url("https://github.com/a/%2E%2E/b", &hosts, Err("must not contain `..`"));
        check_url("file:///srv/gitx/app", &hosts, Err("not under"));
        check_url("file://host/srv/git/app", &hosts, Err("must not name a host"));
        check_url("git@github.com:me/app.git", &hosts, Err("scp-like"));
        check_url("ext::sh -c touch% /tmp/pwned", &hosts, Err("spaces"));
        check_url("ext::sh", &hosts, Err("is not a URL"));
        check_url("ftp://github.com/x", &hosts, Err("scheme `ftp` is not allowed"));
        check_url("https://u:pw@github.com/x", &hosts, Err("credentials"));
        check_url(
            "ssh://-oProxyCommand=x@github.com/x",
            &hosts,
            Err("must not start with `-`"),
        );
        check_url("ssh://-oProxyCommand=x/x", &hosts, Err("host must not start with `-`"));
        check_url("--upload-pack=x", &hosts, Err("must not start with `-`"));
        check_url("https://github.com\\@evil.example/", &hosts, Err("backslashes"));
        check_url("https://github.com/x?a=b", &hosts, Err("query"));
        check_url("https://github.com/x", &[], Err("allowed_git_hosts is empty"));
        check_url("file:///srv/git/app", &["github.com"], Err("not under"));
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            parse_host_rule("GitHub.com").unwrap(),
            GitHostRule::Host("github.com".into())
        );
        assert_eq!(
            parse_host_rule("file:///srv/git").unwrap(),
            GitHostRule::FileUnder("/srv/git".into())
        );
        for bad in [
            "file://relative",
            "file:///a/../b",
            "https://github.com",
            "host:22",
            "",
            "-x",
            "a b",
        ] {
            assert!(parse_host_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stack_names() {
        for ok in ["app", "a", "0x", "my-app_2", &"a".repeat(63)] {
            assert!(validate_stack_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "App",
            "-app",
            "_app",
            "a/b",
            "a.b",
            "a b",
            &"a".repeat(64),
            "é",
        ] {
            let e = validate_stack_name(bad).unwrap_err();
            assert!(e.contains("is not valid"), "{bad}: {e}");
        }
    }

    #[test]
    fn refs() {
        for ok in ["main", "release/1.2", "v1.0.0", "feature-x", "a+b"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        let e = validate_branch("--upload-pack=x").unwrap_err();
        assert!(e.contains("must not start with `-`"), "{e}");
        assert!(validate_branch("a..b").unwrap_err().contains("`..`"));
        for bad in [
            "", "/x", "x/", ".x", "x.lock", "a//b", "a b", "a;b", "$(x)", "a/.b", "x@{1}",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
        assert!(validate_commit("0123abc").is_ok());
        assert!(validate_commit(&"a".repeat(40)).is_ok());
        assert!(validate_commit("-abcdef0").unwrap_err().contains("`-`"));
        for bad in ["abc", "main", "0123abz", &"a".repeat(65)] {
            assert!(validate_commit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compose_paths() {
        for ok in ["compose.yml", "deploy/compose.yaml", "a_b/c-d/docker-compose.yml"] {
            assert!(validate_compose_path(ok).is_ok(), "{ok}");
        }
        assert!(
            validate_compose_path("../x.yml")
                .unwrap_err()
                .contains("escapes the repository")
        );
        assert!(validate_compose_path("a/../../x.yml").unwrap_err().contains("escapes"));
        assert!(validate_compose_path("/etc/x.yml").unwrap_err().contains("absolute"));
        for bad in ["", "compose.txt", "a//b.yml", "./a.yml", "-f.yml", "a b.yml", "a;b.yml"] {
            assert!(validate_compose_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_entries() {
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(validate_env(&env("DB_PASSWORD", "p@ss w$rd#1\"x")).is_ok());
        assert!(validate_env(&env("_X1", "")).is_ok());
        for k in ["1X", "A-B", "", "A B", "A=B"] {
            assert!(
                validate_env(&env(k, "v"))
                    .unwrap_err()
                    .contains("is not a variable name"),
                "{k}"
            );
        }
        for v in ["it's", "a\\b", "a\nb", "a\rb", "${HOME}", "a\0b"] {
            let e = validate_env(&env("SECRET", v)).unwrap_err();
            assert!(e.contains("env `SECRET`") && !e.contains(v), "{e}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_ENV).map(|i| (format!("K{i}"), "v".into())).collect();
        assert!(validate_env(&many).unwrap_err().contains("at most 100"));
    }

    #[test]
    fn compose_files_resolve_inside_the_checkout_only() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        std::fs::create_dir_all(repo.join("sub")).unwrap();
        std::fs::write(repo.join("compose.yml"), "services: {}\n").unwrap();
        std::fs::write(root.path().join("outside.yml"), "services: {}\n").unwrap();
        std::os::unix::fs::symlink("../outside.yml", repo.join("escape.yml")).unwrap();
        std::os::unix::fs::symlink("../compose.yml", repo.join("sub/inside.yml")).unwrap();
        assert!(resolve_within(&repo, "compose.yml").is_ok());
        assert!(resolve_within(&repo, "sub/inside.yml").is_ok());
        assert!(
            resolve_within(&repo, "escape.yml")
                .unwrap_err()
                .contains("outside the repository")
        );
        assert!(
            resolve_within(&repo, "missing.yml")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(resolve_within(&repo, "sub").unwrap_err().contains("not a regular file"));
    }
}
