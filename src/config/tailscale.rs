//! `[tailscale]`: where tailscaled's LocalAPI socket is, the app capability whose grants this
//! server reads, and how long a whois may take.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};

pub const DEFAULT_SOCKET: &str = "/run/tailscale/tailscaled.sock";
pub const DEFAULT_CAPABILITY: &str = "tailopsmcp.dev/cap/tailopsmcp";

/// `[tailscale]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct TailscaleSection {
    socket: PathBuf,
    capability: String,
    whois_timeout_ms: u64,
}

impl Default for TailscaleSection {
    fn default() -> Self {
        TailscaleSection {
            socket: PathBuf::from(DEFAULT_SOCKET),
            capability: DEFAULT_CAPABILITY.to_string(),
            whois_timeout_ms: 2000,
        }
    }
}

/// The validated `[tailscale]` (see the fields of the same names on `Config`).
pub(super) struct Tailscale {
    pub socket: PathBuf,
    pub capability: String,
    pub whois_timeout: Duration,
}

/// Validate `[tailscale]`; `socket` and `capability` are flag or environment values that
/// override the file's.
pub(super) fn build(
    s: TailscaleSection,
    socket: Option<PathBuf>,
    capability: Option<String>,
) -> Result<Tailscale, Invalid> {
    let capability = capability.unwrap_or(s.capability);
    if !valid_capability(&capability) {
        return Err(invalid(
            "tailscale.capability",
            format!("`{capability}` is not an app capability name like `example.com/cap/tailopsmcp`"),
        ));
    }
    if !(100..=30_000).contains(&s.whois_timeout_ms) {
        return Err(invalid("tailscale.whois_timeout_ms", "must be between 100 and 30000"));
    }
    Ok(Tailscale {
        socket: socket.unwrap_or(s.socket),
        capability,
        whois_timeout: Duration::from_millis(s.whois_timeout_ms),
    })
}

/// `^([\pL\pN-]+\.)+[\pL\pN-]+/[\pL\pN-/]+$`, the form tailscaled requires of app capability names.
fn valid_capability(name: &str) -> bool {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '-');
    let Some((domain, path)) = name.split_once('/') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| word(l))
        && !path.is_empty()
        && path.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '/')
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_err;
    use super::*;

    #[test]
    fn refuses_bad_values_naming_the_key() {
        check_err("[tailscale]\ncapability = \"tailopsmcp\"", "tailscale.capability");
        check_err("[tailscale]\nwhois_timeout_ms = 5", "tailscale.whois_timeout_ms");
    }

    #[test]
    fn capability_names() {
        for (name, ok) in [
            ("example.com/cap/tailopsmcp", true),
            ("tailscale.com/cap/golink", true),
            ("a.b.c/x", true),
            ("nodot/cap/x", false),
            ("example.com/", false),
            ("example.com/cap x", false),
            (".com/x", false),
        ] {
            assert_eq!(valid_capability(name), ok, "{name}");
        }
    }
}
