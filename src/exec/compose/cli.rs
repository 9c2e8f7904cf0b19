//! The compose command found on this host, and how to read what it prints.

use std::path::Path;

use crate::exec::CommandSpec;
use crate::exec::show::cut_after;

/// The compose command found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeCli {
    /// `["docker", "compose"]` or `["docker-compose"]` (or the configured command).
    pub argv: Vec<String>,
    /// As reported by `version --short`, e.g. `2.40.3`.
    pub version: String,
}

impl ComposeCli {
    /// e.g. `docker-compose 1.29.2`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.argv.join(" "), self.version)
    }

    /// `COMPOSE -p NAME -f FILE [--env-file ENV] SUB...`.
    pub(super) fn command(
        &self,
        name: &str,
        compose_file: &Path,
        env_file: Option<&Path>,
        sub: &[&str],
    ) -> CommandSpec {
        let mut args: Vec<String> = self.argv[1..].to_vec();
        args.extend(["--project-name".to_string(), name.to_string()]);
        args.extend(["--file".to_string(), compose_file.display().to_string()]);
        if let Some(env) = env_file {
            args.extend(["--env-file".to_string(), env.display().to_string()]);
        }
        args.extend(sub.iter().map(|s| s.to_string()));
        CommandSpec {
            program: self.argv[0].clone(),
            args,
        }
    }
}

/// Services whose image pull failed, with why: v2 prints `SERVICE Error MESSAGE` (and exits 0
/// with `--ignore-pull-failures`), v1 prints `ERROR: for SERVICE  MESSAGE` (and exits 1).
pub(super) fn pull_failures(output: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in output.lines().map(str::trim) {
        let found = if let Some(rest) = line.strip_prefix("ERROR: for ") {
            rest.split_once(char::is_whitespace)
                .map(|(svc, why)| (svc.to_string(), why.trim().to_string()))
        } else {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some(svc), Some("Error"), Some(why)) => Some((svc.to_string(), why.trim().to_string())),
                _ => None,
            }
        };
        if let Some((svc, why)) = found
            && !out.iter().any(|(s, _)| *s == svc)
        {
            out.push((svc, cut_after(&why, 300)));
        }
    }
    out
}

pub(super) fn last_line(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() { stdout } else { stderr };
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // Compose prints progress first and the error last.
    cut_after(lines.last().copied().unwrap_or("no output"), 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_failures_of_v1_and_v2() {
        let v2 = " web Pulling \n web Error Get \"https://registry-1.docker.io/v2/\": no such host\n db Pulled \n";
        assert_eq!(
            pull_failures(v2),
            vec![(
                "web".to_string(),
                "Get \"https://registry-1.docker.io/v2/\": no such host".to_string()
            )]
        );
        let v1 = "Pulling web ... error\n\nERROR: for web  Get \"https://x/v2/\": no such host\nGet \"https://x/v2/\": no such host\n";
        assert_eq!(
            pull_failures(v1),
            vec![("web".to_string(), "Get \"https://x/v2/\": no such host".to_string())]
        );
        assert!(pull_failures("Pulling web ... done\n").is_empty());
    }
}
