//! The plan recorder: every changing operation is a sequence of steps through one [`Plan`]; on a
//! dry run it only records, otherwise it records and does each step, so the plan returned is
//! exactly what ran (or would run).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::OUTPUT_TAIL;
use super::model::{CommandLog, PlanStep};
use crate::exec::{CommandSpec, ExecError, Limits, Output};

pub(super) struct Plan {
    pub(super) dry_run: bool,
    limits: Limits,
    /// Values scrubbed from any output kept.
    pub(super) secrets: Vec<String>,
    pub(super) steps: Vec<PlanStep>,
    pub(super) log: Vec<CommandLog>,
    pub(super) warnings: Vec<String>,
}

impl Plan {
    pub(super) fn new(dry_run: bool, limits: Limits, secrets: Vec<String>) -> Plan {
        Plan {
            dry_run,
            limits,
            secrets,
            steps: Vec::new(),
            log: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn file_step(&mut self, detail: String) {
        self.steps.push(PlanStep { command: false, detail });
    }

    pub(super) fn mkdir(&mut self, path: &Path) -> Result<(), ExecError> {
        self.file_step(format!("mkdir {} (mode 0750)", path.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(path)
            .map_err(|e| ExecError::Failed(format!("mkdir {}: {e}", path.display())))
    }

    pub(super) fn remove_dir(&mut self, path: &Path) -> Result<(), ExecError> {
        self.file_step(format!("remove {} (recursively)", path.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::remove_dir_all(path).map_err(|e| ExecError::Failed(format!("remove {}: {e}", path.display())))
    }

    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> Result<(), ExecError> {
        self.file_step(format!("rename {} to {}", from.display(), to.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::rename(from, to)
            .map_err(|e| ExecError::Failed(format!("rename {} to {}: {e}", from.display(), to.display())))
    }

    /// Write `contents` to `path` with mode 0600 (through a temporary file and a rename, so a
    /// reader never sees half a file and the mode is 0600 from the first byte).
    pub(super) fn write(&mut self, path: &Path, contents: &str, detail: String) -> Result<(), ExecError> {
        self.file_step(detail);
        if self.dry_run {
            return Ok(());
        }
        let tmp = path.with_extension("tmp-tailopsmcp");
        let _ = std::fs::remove_file(&tmp);
        let fail = |e: std::io::Error| ExecError::Failed(format!("write {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(fail)?;
        f.write_all(contents.as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// Record and run `cmd`; a failure (non-zero exit, timeout) is an error naming the command
    /// and the end of its output. `None` on a dry run.
    pub(super) async fn run(
        &mut self,
        cmd: CommandSpec,
        env: &[(String, String)],
    ) -> Result<Option<Output>, ExecError> {
        match self.run_tolerant(cmd, env).await? {
            None => Ok(None),
            Some(out) if out.status == Some(0) => Ok(Some(out)),
            Some(out) => {
                // The step `run_tolerant` just recorded: the command as the plan shows it.
                let shown = self.steps.last().map(|s| s.detail.clone()).unwrap_or_default();
                let last = self.log.last().map(|l| l.output_tail.clone()).unwrap_or_default();
                let how = if out.timed_out {
                    format!("timed out after {:?}", self.limits.timeout)
                } else {
                    match out.status {
                        Some(code) => format!("exited with status {code}"),
                        None => "was killed".to_string(),
                    }
                };
                Err(ExecError::Failed(format!("`{shown}` {how}: {}", last.trim())))
            }
        }
    }

    /// Record and run `cmd`, returning its output whatever its status.
    pub(super) async fn run_tolerant(
        &mut self,
        cmd: CommandSpec,
        env: &[(String, String)],
    ) -> Result<Option<Output>, ExecError> {
        let shown = render_command(&cmd, env);
        self.steps.push(PlanStep {
            command: true,
            detail: shown.clone(),
        });
        if self.dry_run {
            return Ok(None);
        }
        let out = crate::exec::process::run_with_env(&cmd, env, self.limits).await?;
        let mut both = out.stdout.clone();
        if !out.stderr.is_empty() {
            if !both.is_empty() && !both.ends_with('\n') {
                both.push('\n');
            }
            both.push_str(&out.stderr);
        }
        let both = scrub(&both, &self.secrets);
        let (tail, omitted) = tail_of(&both, OUTPUT_TAIL);
        self.log.push(CommandLog {
            command: shown,
            status: out.status,
            output_tail: tail,
            omitted_bytes: omitted + out.truncated_bytes,
        });
        Ok(Some(out))
    }
}

/// `text` with every secret value replaced by `[REDACTED]`.
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "[REDACTED]");
        }
    }
    out
}

/// The last `max` bytes of `text` (on a character boundary) and how many bytes came before.
fn tail_of(text: &str, max: usize) -> (String, u64) {
    if text.len() <= max {
        return (text.to_string(), 0);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (text[start..].to_string(), start as u64)
}

/// A command as a shell would need it typed: `NAME=VALUE ... program args`, words quoted only
/// when they need it.
pub fn render_command(cmd: &CommandSpec, env: &[(String, String)]) -> String {
    let mut words: Vec<String> = env.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
    words.push(quote(&cmd.program));
    words.extend(cmd.args.iter().map(|a| quote(a)));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | ',' | '+' | '%')
        });
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_render_as_typed() {
        let cmd = CommandSpec::new("docker-compose", ["--file", "/a b/c.yml", "up", "it's"]);
        let env = vec![("DOCKER_HOST".to_string(), "unix:///run/d.sock".to_string())];
        assert_eq!(
            render_command(&cmd, &env),
            r"DOCKER_HOST=unix:///run/d.sock docker-compose --file '/a b/c.yml' up 'it'\''s'"
        );
    }

    #[test]
    fn output_keeps_the_end_without_secrets() {
        assert_eq!(tail_of("abcdef", 3), ("def".to_string(), 3));
        assert_eq!(tail_of("ab", 3), ("ab".to_string(), 0));
        assert_eq!(tail_of("aéb", 2), ("b".to_string(), 3));
        assert_eq!(scrub("pw=hunter2!", &["hunter2".into()]), "pw=[REDACTED]!");
    }
}
