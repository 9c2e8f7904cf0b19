//! Running a tool: on one target within its limits (a panic becomes an internal error), on
//! several at once (fan-out), or as a dry run whose steps are the plan a person approves.

use std::sync::Arc;

use super::ToolResult;
use crate::audit::Outcome;
use crate::model::{JsonObject, Kind};
use crate::policy;
use crate::targets::Target;
use crate::tools::{Tool, ToolContext, ToolError, ToolOutput};

/// How many targets one fan-out call works on at once.
pub(super) const FANOUT_CONCURRENCY: usize = 8;

/// Run the tool on one target within the target's concurrency limit. A tool that panics is a
/// bug, but the call still gets an answer (an internal error) and its audit row.
pub(super) async fn run_on(tool: &dyn Tool, ctx: ToolContext, args: JsonObject) -> Result<ToolOutput, String> {
    use futures::FutureExt;
    let target = ctx.target.clone();
    let name = tool.spec().name;
    if !tool.supports(target.kind) {
        return Err(unsupported(name, tool.kinds(), &target));
    }
    let _permit = target.permit().await.map_err(|e| e.to_string())?;
    let ran = std::panic::AssertUnwindSafe(tool.call(ctx, args)).catch_unwind().await;
    let ran = ran.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ToolError::Internal(format!(
            "the tool failed unexpectedly ({})",
            crate::text::cap(&what, 256)
        )))
    });
    ran.map_err(|e| {
        if let ToolError::Internal(_) = e {
            tracing::error!(tool = name, target = %target.id, error = %e, "tool failed");
        }
        e.to_string()
    })
}

/// Why `tool` cannot run on `target`: the one refusal for a target of a kind the tool does not
/// declare.
fn unsupported(tool: &str, kinds: &[Kind], target: &Target) -> String {
    let kind = target.kind.as_str();
    let on: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    format!(
        "{tool} is not supported on {kind} targets: target `{}` is a {kind} target ({tool} works on {} targets only)",
        target.id,
        on.join(" and ")
    )
}

/// One target's part of a fan-out result.
#[derive(serde::Serialize)]
struct TargetResult {
    target: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Per-target results in the order the targets were named; one failure hides no other result.
pub(super) fn fanout_result(
    decisions: &[(Arc<Target>, policy::Decision)],
    mut runs: Vec<(usize, Result<ToolOutput, String>)>,
) -> (Outcome, Option<String>, ToolResult) {
    runs.sort_by_key(|(i, _)| *i);
    let mut results = Vec::new();
    let mut text = String::new();
    let mut failures = Vec::new();
    for ((target, _), (_, run)) in decisions.iter().zip(runs) {
        match run {
            Ok(out) => {
                text.push_str(&format!("== {} ==\n{}\n", target.id, out.text.trim_end()));
                results.push(TargetResult {
                    target: target.id.clone(),
                    ok: true,
                    result: Some(out.structured),
                    error: None,
                });
            }
            Err(e) => {
                text.push_str(&format!("== {} ==\nerror: {e}\n", target.id));
                failures.push(format!("{}: {e}", target.id));
                results.push(TargetResult {
                    target: target.id.clone(),
                    ok: false,
                    result: None,
                    error: Some(e),
                });
            }
        }
    }
    let r = ToolResult {
        text,
        structured: Some(serde_json::json!({ "results": results })),
        is_error: false,
        retry_after: None,
    };
    if failures.is_empty() {
        (Outcome::Ok, None, r)
    } else {
        let summary = format!(
            "{} of {} targets failed: {}",
            failures.len(),
            decisions.len(),
            failures.join("; ")
        );
        (Outcome::Error, Some(summary), r)
    }
}

/// The plan of a changing tool: its dry run on every allowed target, steps in order.
pub(super) async fn dry_run_plan(
    tool: &dyn Tool,
    allowed: &[Arc<Target>],
    args: &JsonObject,
    context: &(dyn Fn(&Arc<Target>) -> ToolContext + Sync),
) -> Result<serde_json::Value, String> {
    let mut steps = Vec::new();
    for target in allowed {
        let mut dry = args.clone();
        dry.insert("dry_run".into(), serde_json::Value::Bool(true));
        let out = run_on(tool, context(target), dry).await?;
        match out.structured.get("plan").and_then(serde_json::Value::as_array) {
            Some(plan) => steps.extend(plan.iter().cloned()),
            None => return Err("its dry run returned no plan".into()),
        }
    }
    Ok(serde_json::Value::Array(steps))
}

/// Plan steps as one line: `target: detail; ...`.
pub(super) fn plan_text(steps: &serde_json::Value) -> String {
    steps
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.get("target").and_then(serde_json::Value::as_str).unwrap_or("?"),
                        s.get("detail").and_then(serde_json::Value::as_str).unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}
