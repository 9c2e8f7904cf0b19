//! Scopes: an area of the product and a level (`read` ⊂ `control` ⊂ `admin`), the words a grant
//! uses, and the named bundles (`monitor` … `admin`) that expand to sets of them.

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

    /// `area:level`, without formatting: every `whoami`, audit row and scope list names scopes.
    pub fn name(self) -> &'static str {
        SCOPE_NAMES[self.area as usize][self.level as usize]
    }
}

/// [`Scope::name`] by `[area][level]`, in declaration order (a unit test checks the table).
const SCOPE_NAMES: [[&str; 3]; 12] = [
    ["system:read", "system:control", "system:admin"],
    ["logs:read", "logs:control", "logs:admin"],
    ["files:read", "files:control", "files:admin"],
    ["network:read", "network:control", "network:admin"],
    ["containers:read", "containers:control", "containers:admin"],
    ["stacks:read", "stacks:control", "stacks:admin"],
    ["services:read", "services:control", "services:admin"],
    ["packages:read", "packages:control", "packages:admin"],
    ["inventory:read", "inventory:control", "inventory:admin"],
    ["targets:read", "targets:control", "targets:admin"],
    ["audit:read", "audit:control", "audit:admin"],
    ["approvals:read", "approvals:control", "approvals:admin"],
];

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
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

/// Named scope bundles, matching the predecessor's capability levels
/// (`monitor` ⊂ `operate` ⊂ `configure` ⊂ `manage` ⊂ `admin`).
pub const BUNDLES: &[(&str, &str)] = &[
    (
        "monitor",
        "read everything operational: system, logs, files, network, containers, stacks, services, packages, inventory, targets",
    ),
    (
        "operate",
        "monitor + control containers, stacks and services (start, stop, restart)",
    ),
    (
        "configure",
        "operate + control files, packages, inventory and targets, admin on stacks",
    ),
    (
        "manage",
        "admin on every operational area + audit:read (approvals stay separate)",
    ),
    ("admin", "every scope, including audit:admin and approvals:admin"),
];

/// What a scope string in a grant means: one scope, or a bundle of them.
pub fn expand(word: &str) -> Result<Vec<Scope>, String> {
    use Area::*;
    use Level::*;
    const OPERATIONAL: [Area; 10] = [
        System, Logs, Files, Network, Containers, Stacks, Services, Packages, Inventory, Targets,
    ];
    let all_at = |areas: &[Area], level: Level| areas.iter().map(|&a| Scope::new(a, level)).collect::<Vec<_>>();
    let mut scopes = match word {
        "monitor" => all_at(&OPERATIONAL, Read),
        "operate" => {
            let mut s = expand("monitor")?;
            s.extend(all_at(&[Containers, Stacks, Services], Control));
            s
        }
        "configure" => {
            let mut s = expand("operate")?;
            s.extend(all_at(&[Files, Packages, Inventory, Targets], Control));
            s.push(Scope::new(Stacks, Admin));
            s
        }
        "manage" => {
            let mut s = all_at(&OPERATIONAL, Admin);
            s.push(Scope::new(Audit, Read));
            s
        }
        "admin" => all_at(&Area::ALL, Admin),
        other => {
            if let Some(area) = other.strip_suffix(":*") {
                vec![format!("{area}:admin").parse::<Scope>()?]
            } else {
                vec![other.parse::<Scope>()?]
            }
        }
    };
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}
