//! `[audit]`: the SQLite database file (audit log, approvals, inventory), which argument keys
//! are redacted, the journald mirror, and the window in which identical refusals share a row.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};

pub const DEFAULT_DATABASE: &str = "/var/lib/tailopsmcp/tailopsmcp.db";
/// The default of `[audit] refusal_window_secs`: identical refusals within it share one audit row.
pub const DEFAULT_REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// Longest `[audit] refusal_window_secs`: a summary row is written at most this late.
const MAX_REFUSAL_WINDOW_SECS: u64 = 3600;

/// `[audit]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct AuditSection {
    database: PathBuf,
    redact_fields: Vec<String>,
    journald: bool,
    refusal_window_secs: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            database: PathBuf::from(DEFAULT_DATABASE),
            redact_fields: Vec::new(),
            journald: true,
            refusal_window_secs: DEFAULT_REFUSAL_WINDOW.as_secs(),
        }
    }
}

/// The validated `[audit]` (see the fields of the same names on `Config`).
pub(super) struct Audit {
    pub database: PathBuf,
    pub redact_fields: Vec<String>,
    pub journald: bool,
    pub refusal_window: Duration,
}

/// Validate `[audit]`; `database` is the flag or environment value that overrides the file's.
pub(super) fn build(s: AuditSection, database: Option<PathBuf>) -> Result<Audit, Invalid> {
    if s.refusal_window_secs > MAX_REFUSAL_WINDOW_SECS {
        return Err(invalid(
            "audit.refusal_window_secs",
            format!("must be between 0 (off) and {MAX_REFUSAL_WINDOW_SECS}"),
        ));
    }
    Ok(Audit {
        database: database.unwrap_or(s.database),
        redact_fields: s.redact_fields,
        journald: s.journald,
        refusal_window: Duration::from_secs(s.refusal_window_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_err, load};
    use super::*;

    #[test]
    fn audit_refusal_window() {
        assert_eq!(load("").unwrap().refusal_window, Duration::from_secs(10));
        assert_eq!(
            load("[audit]\nrefusal_window_secs = 0").unwrap().refusal_window,
            Duration::ZERO
        );
        check_err("[audit]\nrefusal_window_secs = 3601", "audit.refusal_window_secs");
    }
}
