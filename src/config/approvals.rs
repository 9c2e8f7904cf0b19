//! `[approvals]`: which calls need a person's yes before they run (`none`, `confirm`,
//! `two_person`), per risk level and per tool, and how long requests and waits last.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Area, Requirement, Risk, ToolSpec};

/// What a call needs before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Runs at once.
    None,
    /// The calling client asks its user (elicitation, or an input-required result on
    /// 2026-07-28); refused where the client cannot ask.
    Confirm,
    /// A different principal with `approvals:control` approves it out of band.
    TwoPerson,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Confirm => "confirm",
            Mode::TwoPerson => "two_person",
        }
    }
}

/// `[approvals]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    pub expiry_secs: u64,
    pub confirm_timeout_secs: u64,
    pub wait_secs: u64,
    pub risk: RiskModes,
    pub tools: BTreeMap<String, Mode>,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection {
            expiry_secs: 900,
            confirm_timeout_secs: 300,
            wait_secs: 0,
            risk: RiskModes::default(),
            tools: BTreeMap::new(),
        }
    }
}

/// `[approvals.risk]`: the mode of every tool of a risk level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskModes {
    pub low: Mode,
    pub moderate: Mode,
    pub high: Mode,
    pub critical: Mode,
}

impl Default for RiskModes {
    fn default() -> Self {
        RiskModes {
            low: Mode::None,
            moderate: Mode::None,
            high: Mode::Confirm,
            critical: Mode::TwoPerson,
        }
    }
}

/// The validated `[approvals]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalsConfig {
    /// How long a two-person request lives, from its creation to its use.
    pub expiry: Duration,
    /// How long a confirmation waits for the client's user.
    pub confirm_timeout: Duration,
    /// How long a two-person call that carries a progress token waits for the decision (with
    /// progress notifications) before answering "pending"; zero: never waits.
    pub wait: Duration,
    pub risk: RiskModes,
    /// Per-tool modes; names are checked against the catalog at start-up ([`check_tools`]).
    pub tools: BTreeMap<String, Mode>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig::build(ApprovalsSection::default()).unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
}

impl ApprovalsConfig {
    /// Validate a section; an error names the key and the allowed range.
    pub fn build(s: ApprovalsSection) -> Result<ApprovalsConfig, (String, String)> {
        if !(1..=7 * 86_400).contains(&s.expiry_secs) {
            return Err((
                "approvals.expiry_secs".into(),
                format!("must be between 1 and 604800, got {}", s.expiry_secs),
            ));
        }
        if !(1..=3600).contains(&s.confirm_timeout_secs) {
            return Err((
                "approvals.confirm_timeout_secs".into(),
                format!("must be between 1 and 3600, got {}", s.confirm_timeout_secs),
            ));
        }
        if s.wait_secs > 3600 || s.wait_secs > s.expiry_secs {
            return Err((
                "approvals.wait_secs".into(),
                format!(
                    "must be between 0 and 3600 and at most expiry_secs ({}), got {}",
                    s.expiry_secs, s.wait_secs
                ),
            ));
        }
        Ok(ApprovalsConfig {
            expiry: Duration::from_secs(s.expiry_secs),
            wait: Duration::from_secs(s.wait_secs),
            confirm_timeout: Duration::from_secs(s.confirm_timeout_secs),
            risk: s.risk,
            tools: s.tools,
        })
    }

    /// The mode of a tool: its own entry in `tools`, else its risk level's. The approvals
    /// tools themselves are always `none` (approving must not need an approval).
    pub fn mode_for(&self, spec: &ToolSpec) -> Mode {
        if let Requirement::Scope(s) | Requirement::Across(s) = spec.requires
            && s.area == Area::Approvals
        {
            return Mode::None;
        }
        if let Some(m) = self.tools.get(spec.name) {
            return *m;
        }
        match spec.risk {
            Risk::Low => self.risk.low,
            Risk::Moderate => self.risk.moderate,
            Risk::High => self.risk.high,
            Risk::Critical => self.risk.critical,
        }
    }
}

/// Every name in `approvals.tools` must be a tool this build knows, so a typo cannot leave a
/// tool without its approval.
pub fn check_tools(config: &ApprovalsConfig, known: &[&str]) -> Result<(), String> {
    for name in config.tools.keys() {
        if !known.contains(&name.as_str()) {
            return Err(format!("approvals.tools: no tool is named `{name}`"));
        }
    }
    Ok(())
}
