//! The `approvals` toolset: `approvals_list` (requests waiting for a second person) and
//! `approvals_decide` (approve or deny one). The same operations are on the host as
//! `tailopsmcp approvals list|approve|deny`.
//!
//! Tools here reach the approvals store through `ctx.approvals` (owned by `crate::approvals`)
//! and never write audit rows. They name no target: a request names its own, and a caller
//! sees a request only with `approvals:read` on every one of them and decides it only with
//! `approvals:control` on every one ([`Requirement::Across`]; `*` covers all), checked here
//! per request through `ToolContext::may`. Self-approval is refused by the store.

use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ANY_KIND, Annotations, Declaration, Output, Requirement, Risk, Step, StepKind, Tool, ToolContext, ToolError,
    Truncated, bounded, tool,
};
use crate::approvals::{self, ApprovalView};
use crate::policy::{Area, Level, Scope};

pub const LIST_LIMIT_DEFAULT: i64 = 50;
pub const LIST_LIMIT_MAX: i64 = 500;

const READ: Scope = Scope {
    area: Area::Approvals,
    level: Level::Read,
};
const CONTROL: Scope = Scope {
    area: Area::Approvals,
    level: Level::Control,
};

/// Whether the caller holds `scope` on every target of request `a`.
fn may(ctx: &ToolContext, scope: Scope, a: &approvals::Approval) -> bool {
    let mut targets = a.targets().peekable();
    targets.peek().is_some() && targets.all(|t| ctx.may(scope, t))
}

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "approvals_list",
                title: "List approval requests",
                description: "Calls waiting for a second person's approval (or, with status=all, recent ones): who \
                    asked, from which node, the tool, target, exact arguments and the plan of what would \
                    run, and when the request expires. Approve or deny one with `approvals_decide`; you \
                    cannot decide your own.",
                requires: Requirement::Across(READ),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: ANY_KIND,
            },
            list,
        ),
        tool(
            Declaration {
                name: "approvals_decide",
                title: "Approve or deny a request",
                description: "Approve or deny another person's pending call by its short id, after reading what it \
                    would run (`approvals_list`). The decision is final and recorded with your identity; \
                    an approved call then runs once, when its requester calls it again with the same \
                    arguments before it expires. You cannot decide your own request.",
                requires: Requirement::Across(CONTROL),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                kinds: ANY_KIND,
            },
            decide,
        ),
    ]
}

fn store(ctx: &ToolContext) -> Result<Arc<approvals::Approvals>, ToolError> {
    ctx.approvals
        .clone()
        .ok_or_else(|| ToolError::Internal("the approvals store is not open".into()))
}

/// Arguments of `approvals_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// `pending` (default: waiting for a decision) or `all` (decided, used and expired too).
    #[serde(default)]
    pub status: ListStatus,
    /// At most this many, newest first: 1 to 500 (default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListStatus {
    #[default]
    Pending,
    All,
}

/// Output of `approvals_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
    pub truncated: Option<Truncated>,
}

/// `approvals_list`.
async fn list(ctx: ToolContext, args: ListArgs) -> Result<Output<ApprovalList>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)?;
    let store = store(&ctx)?;
    let all = args.status == ListStatus::All;
    let seen = ctx.clone();
    let (rows, omitted) = tokio::task::spawn_blocking(move || store.list(all, limit, |a| may(&seen, READ, a)))
        .await
        .map_err(|e| ToolError::Internal(e.to_string()))?
        .map_err(|e| ToolError::Internal(e.to_string()))?;
    let now = approvals::now();
    let views: Vec<ApprovalView> = rows.iter().map(|a| a.view(now)).collect();
    let mut text = format!(
        "{} approval request(s){}:\n",
        views.len(),
        if all { "" } else { " waiting for a decision" }
    );
    for v in &views {
        let _ = writeln!(
            text,
            "  {}  {:<8} {} from {}: {} (expires {})",
            v.id, v.status, v.requester, v.requester_node, v.summary, v.expires
        );
    }
    let truncated = (omitted > 0).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some(omitted),
    });
    Ok(Output::new(
        ApprovalList {
            approvals: views,
            truncated,
        },
        text,
    ))
}

/// Arguments of `approvals_decide`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideArgs {
    /// The approval's short id (from `approvals_list` or the requester).
    pub id: String,
    /// `approve` or `deny`.
    pub decision: Verdict,
    /// Only show what would be recorded.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

/// Output of `approvals_decide`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Decided {
    pub approval: ApprovalView,
    /// Whether the decision was recorded (false for a dry run).
    pub recorded: bool,
    pub plan: Vec<Step>,
}

/// `approvals_decide`.
async fn decide(ctx: ToolContext, args: DecideArgs) -> Result<Output<Decided>, ToolError> {
    if !approvals::valid_id(&args.id) {
        return Err(ToolError::InvalidArgs(
            "`id` must be a 12-character approval id (letters a-z without l and o, digits 2-9)".into(),
        ));
    }
    let store = store(&ctx)?;
    // A request is decided only by someone holding approvals:control on each of its
    // targets; one who may not even read it learns nothing of it.
    let id = args.id.clone();
    let s = store.clone();
    let found = tokio::task::spawn_blocking(move || s.get(&id))
        .await
        .map_err(|e| ToolError::Internal(e.to_string()))?
        .map_err(|e| ToolError::Internal(e.to_string()))?
        .filter(|a| may(&ctx, READ, a))
        .ok_or_else(|| ToolError::Failed(format!("no approval has the id `{}`", args.id)))?;
    if !may(&ctx, CONTROL, &found) {
        let missing: Vec<&str> = found.targets().filter(|t| !ctx.may(CONTROL, t)).collect();
        return Err(ToolError::Failed(format!(
            "denied: deciding {} needs approvals:control on every target it names; you do not hold it on {}",
            found.describe(),
            missing.join(", ")
        )));
    }
    let approve = args.decision == Verdict::Approve;
    let verb = if approve { "approve" } else { "deny" };
    let plan = vec![Step {
        kind: StepKind::File,
        target: "local".into(),
        detail: format!(
            "record `{verb}` by {} on approval {} in the approvals table",
            ctx.caller.principal, args.id
        ),
    }];
    let now = approvals::now();
    if args.dry_run {
        let text = format!("dry run: would {verb} {}: {}", found.describe(), found.summary);
        return Ok(Output::new(
            Decided {
                approval: found.view(now),
                recorded: false,
                plan,
            },
            text,
        ));
    }
    let principal = ctx.caller.principal.clone();
    let node = format!("{} ({})", ctx.caller.node_name, ctx.caller.node_id);
    let id = args.id.clone();
    let decided = tokio::task::spawn_blocking(move || store.decide(&id, approve, &principal, &node))
        .await
        .map_err(|e| ToolError::Internal(e.to_string()))?
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    let text = format!(
        "{} {}: {}{}",
        if approve { "approved" } else { "denied" },
        decided.describe(),
        decided.summary,
        if approve {
            format!(
                "\nIt runs once when {} calls it again with the same arguments before {}.",
                decided.requester,
                decided.view(now).expires
            )
        } else {
            String::new()
        }
    );
    Ok(Output::new(
        Decided {
            approval: decided.view(now),
            recorded: true,
            plan,
        },
        text,
    ))
}
