//! `[stacks]`: where the Compose stacks of this host live, which git hosts a stack may be
//! fetched from, the engine socket and the compose command. The validated form is
//! `exec::compose::StacksSettings`, which the compose executor owns.

use std::path::{Component, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};
use crate::exec::compose::{self, StacksSettings};

/// `[stacks]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StacksSection {
    dir: PathBuf,
    allowed_git_hosts: Vec<String>,
    docker_host: String,
    compose_command: Vec<String>,
    timeout_secs: u64,
}

impl Default for StacksSection {
    fn default() -> Self {
        StacksSection {
            dir: PathBuf::from(compose::DEFAULT_DIR),
            allowed_git_hosts: Vec::new(),
            docker_host: compose::DEFAULT_DOCKER_HOST.to_string(),
            compose_command: Vec::new(),
            timeout_secs: compose::DEFAULT_TIMEOUT.as_secs(),
        }
    }
}

/// `[stacks]`, validated: an absolute directory, parsed git host rules, a `unix://` engine.
pub(super) fn build(s: StacksSection) -> Result<StacksSettings, Invalid> {
    if !s.dir.is_absolute() || s.dir.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(
            "stacks.dir",
            format!("`{}` must be an absolute path without `..`", s.dir.display()),
        ));
    }
    let mut rules = Vec::new();
    for (i, entry) in s.allowed_git_hosts.iter().enumerate() {
        rules.push(compose::parse_host_rule(entry).map_err(|e| invalid(format!("stacks.allowed_git_hosts[{i}]"), e))?);
    }
    let socket_ok = s
        .docker_host
        .strip_prefix("unix://")
        .is_some_and(|p| p.starts_with('/') && !p.contains(['\0', '\n']));
    if !socket_ok {
        return Err(invalid(
            "stacks.docker_host",
            format!(
                "`{}` must be `unix:///PATH` (the engine on this host; remote engines are `docker` targets)",
                s.docker_host
            ),
        ));
    }
    if s.compose_command.iter().any(|w| w.is_empty() || w.contains('\0')) {
        return Err(invalid(
            "stacks.compose_command",
            "must be a command and its arguments, e.g. [\"docker\", \"compose\"] (empty words are not allowed)",
        ));
    }
    if !(1..=3600).contains(&s.timeout_secs) {
        return Err(invalid("stacks.timeout_secs", "must be between 1 and 3600"));
    }
    Ok(StacksSettings {
        dir: s.dir,
        allowed_git_hosts: rules,
        docker_host: s.docker_host,
        compose_command: s.compose_command,
        timeout: Duration::from_secs(s.timeout_secs),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::{check_err, load};

    #[test]
    fn stacks_settings_are_validated_naming_the_key() {
        let c = load("").unwrap();
        assert_eq!(c.stacks.dir, Path::new(crate::exec::compose::DEFAULT_DIR));
        assert!(c.stacks.allowed_git_hosts.is_empty());
        check_err("[stacks]\ndir = \"stacks\"", "stacks.dir");
        check_err(
            "[stacks]\nallowed_git_hosts = [\"https://x\"]",
            "stacks.allowed_git_hosts[0]",
        );
        check_err("[stacks]\ndocker_host = \"tcp://nas:2376\"", "stacks.docker_host");
        check_err("[stacks]\ncompose_command = [\"\"]", "stacks.compose_command");
        check_err("[stacks]\ntimeout_secs = 0", "stacks.timeout_secs");
        let c =
            load("[stacks]\ndir = \"/opt/stacks\"\nallowed_git_hosts = [\"GitHub.com\", \"file:///srv/git\"]").unwrap();
        assert_eq!(c.stacks.allowed_git_hosts.len(), 2);
    }
}
