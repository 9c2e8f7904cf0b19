//! Authorization, as pure functions: `(Caller, grants, Requirement, target) → Decision` with the
//! reason and the grants used. Deny by default.
//!
//! Scopes come from two places that add up: the tailnet policy file's app capability (each
//! grant object `{"scopes": [...], "targets": [...]}` in whois `CapMap`) and local `[[grant]]`
//! rules in the config. This module does no IO and never awaits.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The areas of the product a scope can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    System,
    Logs,
    Files,
    Network,
    Containers,
    Stacks,
    Services,
    Packages,
    Inventory,
    Targets,
    Audit,
    Approvals,
}

impl Area {
    pub const ALL: [Area; 12] = [
        Area::System,
        Area::Logs,
        Area::Files,
        Area::Network,
        Area::Containers,
        Area::Stacks,
        Area::Services,
        Area::Packages,
        Area::Inventory,
        Area::Targets,
        Area::Audit,
        Area::Approvals,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::System => "system",
            Area::Logs => "logs",
            Area::Files => "files",
            Area::Network => "network",
            Area::Containers => "containers",
            Area::Stacks => "stacks",
            Area::Services => "services",
            Area::Packages => "packages",
            Area::Inventory => "inventory",
            Area::Targets => "targets",
            Area::Audit => "audit",
            Area::Approvals => "approvals",
        }
    }
}

/// Levels within an area; a higher level includes the lower ones (`admin` ⊇ `control` ⊇ `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Look without changing anything.
    Read,
    /// Operate: start, stop, restart, run diagnostics that act.
    Control,
    /// Change configuration, install, remove, destroy.
    Admin,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Control => "control",
            Level::Admin => "admin",
        }
    }
}

/// One concrete permission: an area at a level, written `area:level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub area: Area,
    pub level: Level,
}

impl Scope {
    pub const fn new(area: Area, level: Level) -> Scope {
        Scope { area, level }
    }

    /// Whether holding `self` permits what `needed` asks for.
    pub fn covers(self, needed: Scope) -> bool {
        self.area == needed.area && self.level >= needed.level
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.area.as_str(), self.level.as_str())
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        let (area, level) = s
            .split_once(':')
            .ok_or_else(|| format!("scope `{s}` is not `area:level`"))?;
        let area = Area::ALL
            .into_iter()
            .find(|a| a.as_str() == area)
            .ok_or_else(|| format!("unknown area `{area}` in scope `{s}`"))?;
        let level = match level {
            "read" => Level::Read,
            "control" => Level::Control,
            "admin" => Level::Admin,
            _ => return Err(format!("unknown level `{level}` in scope `{s}` (read, control, admin)")),
        };
        Ok(Scope { area, level })
    }
}

/// Placeholder until the grant logic lands (replaced in this same change).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Effective {}
