//! A tool as data: what it requires of the caller, how much harm it can do, the annotations
//! clients see, its schemas, and the plan steps a changing tool reports.

use std::sync::Arc;

use serde::Serialize;

use super::{JsonObject, Scope};

/// How much harm a tool can do; drives approvals in later layers and is shown in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Moderate,
    High,
    Critical,
}

impl Risk {
    /// The level's position, lowest first (tables indexed by risk).
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Moderate => "moderate",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

/// The four MCP tool annotations, all required: MCP's defaults (`destructiveHint` = true,
/// the others false) are easy to get wrong by omission, so no tool may omit one.
/// They are hints to clients, not authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Annotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Annotations {
    /// A tool that only reads this side of the world: not destructive, idempotent, closed-world.
    pub const READ_ONLY: Annotations = Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
}

/// What the policy layer needs from a tool before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "scope")]
pub enum Requirement {
    /// The caller must hold this scope on the call's target.
    Scope(Scope),
    /// Any caller holding at least one grant (used by `whoami`).
    AnyGrant,
    /// This scope on every target of each record the tool shows or changes (the approvals
    /// tools: a request names its own targets). The call names no target; the `call` pipeline
    /// admits it when the caller holds the scope on some target, and the tool checks each
    /// record with [`ToolContext::may`].
    Across(Scope),
}

/// A tool declared as data.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// `<toolset>_<verb>[_<noun>]`, snake case.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub requires: Requirement,
    pub risk: Risk,
    pub annotations: Annotations,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Arc<JsonObject>,
    /// JSON Schema of `structuredContent`.
    pub output_schema: Arc<JsonObject>,
}

impl ToolSpec {
    /// Whether running this tool can change anything (the audit row is then committed before
    /// the action runs).
    pub fn mutates(&self) -> bool {
        !self.annotations.read_only
    }
}

/// One step of what a changing tool does or, with `dry_run: true`, would do.
///
/// Every tool that can change something accepts `dry_run` and returns its plan either way:
/// the exact commands (argv, quoted as a shell would need them), API calls (method and path)
/// and file writes, in order. The approvals layer shows this plan before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Step {
    pub kind: StepKind,
    /// Where it happens: a target id.
    pub target: String,
    /// The exact operation: `systemctl restart nginx.service`, `POST /containers/web/restart`,
    /// `write /srv/stacks/app/.env (mode 0600, 3 keys)`.
    pub detail: String,
}

/// What kind of operation a [`Step`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A process started with an argument vector (locally or over SSH).
    Command,
    /// A call to an engine or HTTP API (Docker, Proxmox).
    Api,
    /// A file written, moved or removed.
    File,
}
