//! `[services]`: the systemd units the changing services tools may act on (globs over unit
//! names), and how long the server waits for the root helper.

use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};
use crate::exec::systemd;

/// `[services]`: the units the changing services tools may act on, and how long the server
/// waits for the root helper (`tailopsmcp-helper@.service`: enable/disable, apt).
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// Globs (`*`, `?`) over unit names; empty = no unit may be started, stopped, enabled...
    pub units: Vec<systemd::Glob>,
    pub helper_timeout: Duration,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            units: Vec::new(),
            helper_timeout: Duration::from_secs(900),
        }
    }
}

/// `[services]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServicesSection {
    units: Vec<String>,
    helper_timeout_secs: u64,
}

impl Default for ServicesSection {
    fn default() -> Self {
        ServicesSection {
            units: Vec::new(),
            helper_timeout_secs: 900,
        }
    }
}

/// Validate `[services]`: each unit a valid name or glob, the helper timeout in range.
pub(super) fn build(s: ServicesSection) -> Result<ServicesConfig, Invalid> {
    let mut units = Vec::new();
    for (i, u) in s.units.iter().enumerate() {
        let key = format!("services.units[{i}]");
        // An exact name is normalized like a tool argument (`nginx` = `nginx.service`).
        let pattern = if u.contains(['*', '?']) {
            u.clone()
        } else {
            systemd::validate_unit(u).map_err(|e| invalid(&key, e))?
        };
        units.push(systemd::Glob::new(&pattern).map_err(|e| invalid(&key, e))?);
    }
    if !(10..=86_400).contains(&s.helper_timeout_secs) {
        return Err(invalid("services.helper_timeout_secs", "must be between 10 and 86400"));
    }
    Ok(ServicesConfig {
        units,
        helper_timeout: Duration::from_secs(s.helper_timeout_secs),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{check_err, load};

    #[test]
    fn services_units_are_validated_and_normalized() {
        let c = load("[services]\nunits = [\"nginx\", \"app-*.service\"]\nhelper_timeout_secs = 60").unwrap();
        let units: Vec<&str> = c.services.units.iter().map(|g| g.as_str()).collect();
        assert_eq!(units, ["nginx.service", "app-*.service"]);
        assert_eq!(c.services.helper_timeout, Duration::from_secs(60));
        assert!(load("").unwrap().services.units.is_empty());
        check_err(
            "[services]\nunits = [\"../x\"]",
            "services.units[0]: unit name `../x` contains '/'",
        );
        check_err("[services]\nunits = [\"a;*\"]", "services.units[0]");
        check_err("[services]\nunits = [\"-H\"]", "starts with `-`");
        check_err("[services]\nhelper_timeout_secs = 1", "services.helper_timeout_secs");
        check_err("[services]\nunit = []", "unknown field `unit`");
    }
}
