//! What is on disk: a stack directory and its files (a checkout this server deployed, or a
//! compose file made by hand), the stacks directory's entries, and `.env` keys and values.

use std::path::Path;

use super::model::{GitOrigin, StackFiles};
use super::validate::{resolve_within, validate_compose_path, validate_stack_name};
use super::{COMPOSE_NAMES, ENV_FILE, META_FILE, REPO_DIR, StacksSettings};
use crate::exec::ExecError;

/// A stack directory found on disk, or why it cannot be used.
pub(super) fn stack_files(settings: &StacksSettings, name: &str) -> Result<Option<StackFiles>, String> {
    let dir = settings.dir.join(name);
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symlink; stacks must be directories inside {}",
            dir.display(),
            settings.dir.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let env = dir.join(ENV_FILE);
    let env_file = std::fs::symlink_metadata(&env)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| env.clone());
    let meta_path = dir.join(META_FILE);
    if meta_path.exists() {
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| format!("cannot read {}: {e}", meta_path.display()))?;
        let origin: GitOrigin =
            serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", meta_path.display()))?;
        validate_compose_path(&origin.compose_file)?;
        let compose_file = resolve_within(&dir.join(REPO_DIR), &origin.compose_file)?;
        return Ok(Some(StackFiles {
            name: name.to_string(),
            dir,
            compose_file,
            env_file,
            origin: Some(origin),
        }));
    }
    for candidate in COMPOSE_NAMES {
        let p = dir.join(candidate);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            return Ok(Some(StackFiles {
                name: name.to_string(),
                dir,
                compose_file: p,
                env_file,
                origin: None,
            }));
        }
    }
    Err(format!(
        "{} has no compose file ({}) and was not deployed by this server",
        dir.display(),
        COMPOSE_NAMES.join(", ")
    ))
}

/// Directory entries with a valid stack name, each found or why not.
pub(super) type Scanned = Vec<(String, Result<StackFiles, String>)>;

pub(super) fn scan(settings: &StacksSettings) -> Result<(bool, Scanned), ExecError> {
    let entries = match std::fs::read_dir(&settings.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((false, Vec::new())),
        Err(e) => {
            return Err(ExecError::Failed(format!(
                "cannot read the stacks directory {}: {e}",
                settings.dir.display()
            )));
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_stack_name(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match stack_files(settings, &name) {
            Ok(Some(f)) => out.push((name, Ok(f))),
            Ok(None) => {}
            Err(e) => out.push((name, Err(e))),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((true, out))
}

/// Values shorter than this are not scrubbed from command output (they would blank out
/// ordinary words and digits).
pub(super) const MIN_SCRUBBED: usize = 3;

/// The values of a `.env` file, to scrub them from command output (never shown).
pub(super) fn env_values(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            unquoted.to_string()
        })
        .filter(|v| v.len() >= MIN_SCRUBBED)
        .collect()
}

/// The keys of a `.env` file (never its values).
pub(super) fn env_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, _)| k.trim().trim_start_matches("export ").trim())
        })
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// After a failed clone or checkout: nothing of it is left (and the stack directory only if
/// this deploy created it).
pub(super) fn cleanup_failed_clone(staging: &Path, dir: &Path, created_dir: bool) {
    let _ = std::fs::remove_dir_all(staging);
    if created_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "# c\nA='1'\n\nexport B=2\nC\n").unwrap();
        assert_eq!(env_keys(&p), vec!["A", "B"]);
        std::fs::write(&p, "A='one two'\nB=\"three\"\nC=xy\nD=plain\n").unwrap();
        assert_eq!(env_values(&p), vec!["one two", "three", "plain"]);
    }
}
