//! `[[target]]`: the systems besides this host that tools may run against — id, kind, groups,
//! a `scopes` ceiling, limits, and the kind's own table (`[target.ssh]`, `[target.docker]`,
//! `[target.http]`), which the target registry parses when it builds the executor.

use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};
use crate::model::Kind;
use crate::policy;

/// One `[[target]]`, validated except for its kind-specific settings, which the registry
/// parses when it builds the executor (errors name the target).
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub id: String,
    pub kind: Kind,
    /// Ceiling on what callers may do here; `None` = whatever their grants allow.
    pub scopes: Option<Vec<policy::Scope>>,
    pub groups: Vec<String>,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub max_output: usize,
    /// The `[target.ssh]` / `[target.docker]` / `[target.http]` table for this kind.
    pub settings: Option<toml::Table>,
}

/// One `[[target]]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetSection {
    id: String,
    kind: String,
    scopes: Option<Vec<String>>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default = "default_target_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_max_concurrent")]
    max_concurrent: usize,
    #[serde(default = "default_max_output")]
    max_output_bytes: usize,
    ssh: Option<toml::Table>,
    docker: Option<toml::Table>,
    http: Option<toml::Table>,
}

fn default_target_timeout() -> u64 {
    30
}
fn default_max_concurrent() -> usize {
    4
}
fn default_max_output() -> usize {
    256 * 1024
}

/// Ids and group names: lowercase letters, digits, `-`, `_`, `.`; starting with a letter or digit.
fn valid_id(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Validate every `[[target]]`: unique ids, a known kind with exactly its own table, scopes
/// that parse, groups and limits in range.
pub(super) fn build(sections: Vec<TargetSection>) -> Result<Vec<TargetConfig>, Invalid> {
    let mut targets: Vec<TargetConfig> = Vec::new();
    for (i, t) in sections.into_iter().enumerate() {
        let key = |field: &str| format!("target[{i}].{field}");
        if !valid_id(&t.id) {
            return Err(invalid(
                key("id"),
                format!("`{}` is not a target id (lowercase letters, digits, - _ .)", t.id),
            ));
        }
        if targets.iter().any(|o| o.id == t.id) {
            return Err(invalid(key("id"), format!("target `{}` is defined twice", t.id)));
        }
        let kind = match t.kind.as_str() {
            "local" => Kind::Local,
            "ssh" => Kind::Ssh,
            "docker" => Kind::Docker,
            "http" => Kind::Http,
            other => {
                return Err(invalid(
                    key("kind"),
                    format!("`{other}` is not one of local, ssh, docker, http"),
                ));
            }
        };
        if t.id == crate::model::LOCAL && kind != Kind::Local {
            return Err(invalid(
                key("id"),
                "`local` is this host; give a remote target another id",
            ));
        }
        let tables = [
            ("ssh", Kind::Ssh, t.ssh),
            ("docker", Kind::Docker, t.docker),
            ("http", Kind::Http, t.http),
        ];
        let mut settings = None;
        for (name, k, table) in tables {
            match (k == kind, table) {
                (true, Some(table)) => settings = Some(table),
                (true, None) => {
                    return Err(invalid(
                        key(name),
                        format!("a {name} target needs a [target.{name}] table"),
                    ));
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        key(name),
                        format!("a {} target takes no [target.{name}] table", kind.as_str()),
                    ));
                }
                (false, None) => {}
            }
        }
        let scopes = match t.scopes {
            None => None,
            Some(words) => {
                let mut v = Vec::new();
                for w in &words {
                    v.extend(policy::expand(w).map_err(|e| invalid(key("scopes"), e))?);
                }
                v.sort();
                v.dedup();
                Some(v)
            }
        };
        for g in &t.groups {
            if !valid_id(g) {
                return Err(invalid(key("groups"), format!("`{g}` is not a group name")));
            }
        }
        if !(1..=3600).contains(&t.timeout_secs) {
            return Err(invalid(key("timeout_secs"), "must be between 1 and 3600"));
        }
        if !(1..=256).contains(&t.max_concurrent) {
            return Err(invalid(key("max_concurrent"), "must be between 1 and 256"));
        }
        if !(1024..=64 << 20).contains(&t.max_output_bytes) {
            return Err(invalid(key("max_output_bytes"), "must be between 1024 and 67108864"));
        }
        targets.push(TargetConfig {
            id: t.id,
            kind,
            scopes,
            groups: t.groups,
            timeout: Duration::from_secs(t.timeout_secs),
            max_concurrent: t.max_concurrent,
            max_output: t.max_output_bytes,
            settings,
        });
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_err, load};

    #[test]
    fn targets_are_validated_naming_the_key() {
        check_err("[[target]]\nid = \"Nas\"\nkind = \"local\"", "target[0].id");
        check_err(
            "[[target]]\nid = \"nas\"\nkind = \"ftp\"",
            "target[0].kind: `ftp` is not one of",
        );
        check_err(
            "[[target]]\nid = \"nas\"\nkind = \"ssh\"",
            "target[0].ssh: a ssh target needs a [target.ssh] table",
        );
        check_err(
            "[[target]]\nid = \"nas\"\nkind = \"local\"\n[target.http]\nbase_url = \"x\"",
            "target[0].http",
        );
        check_err(
            "[[target]]\nid = \"a\"\nkind = \"local\"\n[[target]]\nid = \"a\"\nkind = \"local\"",
            "target[1].id: target `a` is defined twice",
        );
        check_err(
            "[[target]]\nid = \"a\"\nkind = \"local\"\nscopes = [\"nope\"]",
            "target[0].scopes",
        );
        check_err(
            "[[target]]\nid = \"a\"\nkind = \"local\"\nmax_concurrent = 0",
            "target[0].max_concurrent",
        );
        check_err(
            "[[target]]\nid = \"local\"\nkind = \"ssh\"\n[target.ssh]\nhost = \"x\"",
            "`local` is this host",
        );
        let c = load("[[target]]\nid = \"nas\"\nkind = \"ssh\"\ngroups = [\"lab\"]\n[target.ssh]\nhost = \"nas\"\nuser = \"ops\"").unwrap();
        assert_eq!(c.targets[0].settings.as_ref().unwrap()["user"].as_str(), Some("ops"));
    }
}
