//! The call pipeline: `run(call, client) → response`. Authorize → rate limit → approvals gate →
//! (after a person's yes, authorize again) → in-flight slots → audit → run → audit → result.
//! It knows no protocol: the MCP adapter turns a `tools/call` into a [`Call`], implements
//! [`Client`] over its session, and turns the [`Response`] back into MCP.
//!
//! **Invariant:** every call produces exactly one audit row, denials and bad input included
//! (identical refusals may be counted in one row by the audit log); a tool that can change
//! something runs only after its row is committed, and the row is completed after it. The caller
//! comes from the transport's identity layer, never from anything the client sends. This module
//! runs no commands itself: tools do, through `exec`.

mod args;
mod authorize;
mod run;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::StreamExt;

pub use crate::approvals::gate::Answer;
pub use args::{MAX_FANOUT, fanout_output_schema, listed_input_schema};
use args::{Selection, quoted, take_format, take_targets};
use authorize::{authorize_all, still_authorized};
use run::{FANOUT_CONCURRENCY, dry_run_plan, fanout_result, plan_text, run_on};

use crate::approvals::gate::{self, Ask, Gate, Said};
use crate::approvals::{self, Approvals, Mode};
use crate::audit::{self, AuditError, Auditor, Outcome, Record, Sink};
use crate::config::Config;
use crate::limits::Limits;
use crate::model::{Caller, Client, JsonObject, Reresolve, Risk};
use crate::policy::{self, LocalGrant};
use crate::targets::{Registry, Target};
use crate::tools::{ClientLink, TailnetInfo, Tool, ToolContext, ToolOutput};

/// The target a call runs on when it names none.
pub const LOCAL_TARGET: &str = crate::model::LOCAL;

/// Where a refusal tells how long to wait, in `_meta` (results) or `data` (errors).
pub const RETRY_AFTER_KEY: &str = "tailopsmcp/retryAfterSecs";

/// One tool call as the transport hands it over.
pub struct Call {
    pub caller: Arc<Caller>,
    /// The transport session, for the audit row.
    pub session: Option<String>,
    pub tool: String,
    pub arguments: JsonObject,
    /// What the client echoed back on a confirmation round trip (2026-07-28).
    pub answer: Answer,
    /// Asks again who is behind the connection, for the check after a wait for a person.
    pub again: Option<Arc<dyn Reresolve>>,
}

/// How a call is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A tool result (`is_error` for a failure or a refusal the model should read).
    Result(ToolResult),
    /// 2026-07-28: ask the client to confirm `message`, then call again echoing `state`.
    InputRequired { message: String, state: String },
}

/// The parts of a tool result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub text: String,
    pub structured: Option<serde_json::Value>,
    pub is_error: bool,
    /// A refusal by a limit: seconds until a retry can succeed.
    pub retry_after: Option<u64>,
}

impl ToolResult {
    fn error(text: String) -> ToolResult {
        ToolResult {
            text,
            structured: None,
            is_error: true,
            retry_after: None,
        }
    }
}

/// A call answered with a protocol error rather than a result.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The request names no tool this server offers (and, when the caller is over its rate,
    /// when to retry).
    InvalidParams { message: String, retry_after: Option<u64> },
    /// The server could not do its part (the audit log could not record the call): refused.
    Internal(String),
}

/// Everything calls share: the tools on offer, the targets, who holds what, the audit log, the
/// approvals store and the limits. Generic over the audit sink so tests can record rows.
pub struct Pipeline<A: Sink = Auditor> {
    pub config: Arc<Config>,
    pub tools: Vec<Arc<dyn Tool>>,
    pub targets: Arc<Registry>,
    pub capability: String,
    pub grants: Vec<LocalGrant>,
    pub audit: A,
    /// This node's tailnet facts; refreshed by the listener when tailscaled's status changes.
    tailnet: RwLock<Arc<TailnetInfo>>,
    /// Two-person approvals and confirmation sealing; without it, calls that need either are
    /// refused.
    pub approvals: Option<Arc<Approvals>>,
    /// Rate limits and the in-flight caps (`[limits]`).
    pub limits: Limits,
}

impl<A: Sink> Pipeline<A> {
    pub fn new(
        config: Arc<Config>,
        tools: Vec<Arc<dyn Tool>>,
        targets: Arc<Registry>,
        capability: String,
        grants: Vec<LocalGrant>,
        audit: A,
    ) -> Pipeline<A> {
        Pipeline {
            tools,
            targets,
            capability,
            grants,
            audit,
            tailnet: RwLock::new(Arc::new(TailnetInfo::default())),
            approvals: None,
            limits: Limits::new(config.limits.clone()),
            config,
        }
    }

    /// The approvals store calls with `confirm` or `two_person` mode need.
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Pipeline<A> {
        self.approvals = Some(approvals);
        self
    }

    pub fn set_tailnet(&self, info: TailnetInfo) {
        if let Ok(mut t) = self.tailnet.write() {
            *t = Arc::new(info);
        }
    }

    fn tailnet(&self) -> Arc<TailnetInfo> {
        self.tailnet.read().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.tools.iter().position(|t| t.spec().name == name)
    }

    pub fn find(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.position(name).map(|i| &self.tools[i])
    }

    /// What `caller` holds, from both grant sources.
    pub fn effective(&self, caller: &Caller) -> policy::Effective {
        policy::effective(caller, &self.capability, &self.grants)
    }

    /// Whether `tool` belongs in the lists of a caller holding `effective`: some target of a
    /// kind it works on allows it.
    pub fn listable(&self, effective: &policy::Effective, tool: &dyn Tool) -> bool {
        let requires = tool.spec().requires;
        self.targets
            .all()
            .iter()
            .any(|t| tool.supports(t.kind) && t.authorize(effective, requires).allowed)
    }

    /// Run one call. `Err` only for a protocol-level answer (an unknown tool) or when the audit
    /// log cannot record the call (then nothing ran).
    pub async fn run(&self, call: Call, client: Arc<dyn Client>) -> Result<Response, CallError> {
        let started = Instant::now();
        let Call {
            caller,
            session,
            tool: name,
            arguments: mut args,
            answer,
            again,
        } = call;
        let mut rec = Record::request(&caller, session, "tools/call");
        rec.tool = Some(name.clone());
        rec.arguments = Some(serde_json::Value::Object(args.clone()));

        // The row of a call that does not run. Refusals (`repeatable`) go through the audit
        // log's counting of identical repeats; a gate's answer or a revoked authorization is a
        // row of its own.
        let deny = |rec: Record, reason: String, repeatable: bool| async move {
            let mut rec = rec.denied(reason);
            rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            if repeatable {
                self.audit.refuse(rec).await.map_err(audit_failed)
            } else {
                self.audit.record(rec).await.map(drop).map_err(audit_failed)
            }
        };
        // Every refused call is charged to the caller's bucket like any other call, so a flood
        // of refused calls is slowed too and told when to retry. Past the bucket, the refusal
        // says so; its audit reason leaves the wait out, so identical refusals stay identical
        // (the audit log counts repeats instead of writing each one).
        let principal = caller.principal.as_str();
        let refuse = |rec: Record, reason: String, risk: Risk| async move {
            let refusal = match self.limits.charge(principal, risk) {
                Ok(()) => Refusal::new(reason, None),
                Err(limited) => Refusal::new(format!("{reason}; {}", limited.reason), Some(limited.retry_after_secs)),
            };
            deny(rec, refusal.reason.clone(), true).await?;
            Ok::<_, CallError>(refusal)
        };

        let Some(tool) = self.find(&name).cloned() else {
            let refusal = refuse(rec, format!("unknown tool `{}`", quoted(&name)), Risk::Low).await?;
            return Err(CallError::InvalidParams {
                message: refusal.text(),
                retry_after: refusal.retry,
            });
        };
        let spec = tool.spec();

        // `target`, `targets` and `format` are the pipeline's arguments, not the tool's.
        let taken = take_format(&mut args).and_then(|f| Ok((f, take_targets(&mut args, spec.requires)?)));
        let (format, selection) = match taken {
            Ok(t) => t,
            Err(message) => return Ok(refuse(rec, message, spec.risk).await?.response()),
        };
        let named = match &selection {
            Selection::One(id) => Some(std::slice::from_ref(id)),
            Selection::Fanout(ids) => Some(&ids[..]),
            Selection::Across => None,
        };
        if let Some(ids) = named {
            rec.target = Some(ids.join(","));
        }
        let targets = match named {
            Some(ids) => self.targets.resolve(ids),
            None => Ok(self.targets.all().to_vec()),
        };
        let targets = match targets {
            Ok(t) => t,
            Err(e) => {
                let message = format!("{e} (known targets: {})", self.targets.ids().join(", "));
                return Ok(refuse(rec, message, spec.risk).await?.response());
            }
        };
        let fanout = matches!(selection, Selection::Fanout(_));
        let across = matches!(selection, Selection::Across);
        let effective = Arc::new(self.effective(&caller));
        let authorized = authorize_all(&effective, spec.requires, targets, across);
        if !across {
            rec.target = Some(authorized.target_list());
        }
        rec.grants = authorized.grants.clone();
        if authorized.allowed.is_empty() {
            let refusal = refuse(rec, authorized.denial(fanout), spec.risk).await?;
            return Ok(Refusal {
                said: "denied: ",
                ..refusal
            }
            .response());
        }
        rec.decision = audit::Decision::Allow;
        rec.reason = Some(authorized.reason());

        // One link per call: fan-out runs share its progress counter.
        let link = ClientLink::new(client.clone(), fanout);
        let context = |target: &Arc<Target>| ToolContext {
            caller: caller.clone(),
            target: target.clone(),
            targets: self.targets.clone(),
            grants: effective.clone(),
            tailnet: self.tailnet(),
            config: self.config.clone(),
            approvals: self.approvals.clone(),
            client: Some(link.clone()),
        };

        // The rate limit, then approvals: after authorization, before anything runs. A refusal
        // is audited like a denial and says what to do next.
        if let Err(limited) = self.limits.charge(&caller.principal, spec.risk) {
            let refusal = Refusal::new(
                format!("{}; nothing ran", limited.reason),
                Some(limited.retry_after_secs),
            );
            deny(rec, refusal.reason.clone(), true).await?;
            return Ok(refusal.response());
        }
        // The gate may wait for the client's user or a second person: it holds no in-flight
        // slot while it does.
        let scope_target = rec.target.clone().unwrap_or_default();
        let gate = self
            .gate(
                &caller,
                &tool,
                &authorized.allowed,
                &scope_target,
                &args,
                &context,
                answer,
                client.as_ref(),
            )
            .await;
        match gate {
            Gate::Proceed { note, recheck } => {
                if let Some(note) = note {
                    rec.reason = Some(format!("{}; {note}", rec.reason.take().unwrap_or_default()));
                }
                // Someone said yes, maybe minutes ago: the caller must still be who it was and
                // still hold what it held, right before the call runs.
                if recheck
                    && let Err(reason) =
                        still_authorized(again.as_deref(), self, &caller, spec.requires, &authorized).await
                {
                    let why = format!("{}; {reason}", rec.reason.take().unwrap_or_default());
                    deny(rec, why, false).await?;
                    return Ok(Response::Result(ToolResult::error(format!("denied: {reason}"))));
                }
            }
            Gate::Respond { reason, said } => {
                deny(rec, reason, false).await?;
                return Ok(match said {
                    Said::Error(text) => Response::Result(ToolResult::error(text)),
                    Said::InputRequired { message, state } => Response::InputRequired { message, state },
                });
            }
        }
        let slots: Vec<(&str, usize)> = if across {
            Vec::new()
        } else {
            authorized
                .allowed
                .iter()
                .map(|t| (t.id.as_str(), t.max_concurrent))
                .collect()
        };
        let _in_flight = match self.limits.occupy(&caller.principal, &slots) {
            Ok(held) => held,
            Err(busy) => {
                let refusal = Refusal::new(format!("{}; nothing ran", busy.reason), Some(busy.retry_after_secs));
                deny(rec, refusal.reason.clone(), true).await?;
                return Ok(refusal.response());
            }
        };
        if let Some(note) = self.decide_note(spec.name, &args).await {
            rec.reason = Some(format!("{}; {note}", rec.reason.take().unwrap_or_default()));
        }

        // A tool that can change something runs only once its audit row is committed.
        let pending = if spec.mutates() {
            let mut begin = rec.clone();
            begin.outcome = Outcome::Pending;
            Some(self.audit.begin(begin).await.map_err(audit_failed)?)
        } else {
            None
        };
        let (outcome, error, result) = if fanout {
            let jobs: Vec<(usize, ToolContext, bool, String)> = authorized
                .decisions
                .iter()
                .enumerate()
                .map(|(i, (t, d))| (i, context(t), d.allowed, d.reason.clone()))
                .collect();
            let runs = futures::stream::iter(jobs.into_iter().map(|(i, ctx, allowed, reason)| {
                let tool = tool.clone();
                let args = args.clone();
                async move {
                    let r = if allowed {
                        run_on(tool.as_ref(), ctx, args).await
                    } else {
                        Err(format!("denied: {reason}"))
                    };
                    (i, r)
                }
            }))
            .buffer_unordered(FANOUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            fanout_result(&authorized.decisions, runs)
        } else {
            // A tool across targets runs once, in this host's context.
            let on = match across {
                true => self
                    .targets
                    .get(LOCAL_TARGET)
                    .cloned()
                    .unwrap_or_else(|| authorized.allowed[0].clone()),
                false => authorized.allowed[0].clone(),
            };
            match run_on(tool.as_ref(), context(&on), args).await {
                Ok(ToolOutput { structured, text }) => (
                    Outcome::Ok,
                    None,
                    ToolResult {
                        text,
                        structured: Some(structured),
                        is_error: false,
                        retry_after: None,
                    },
                ),
                Err(message) => (Outcome::Error, Some(message.clone()), ToolResult::error(message)),
            }
        };
        let result = format.apply(result);
        let bytes = result_len(&result);
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match pending {
            Some(id) => self
                .audit
                .complete(id, outcome, error, duration_ms, bytes)
                .await
                .map_err(audit_failed)?,
            None => {
                rec.outcome = outcome;
                rec.error = error;
                rec.duration_ms = Some(duration_ms);
                rec.result_bytes = bytes;
                self.audit.record(rec).await.map_err(audit_failed)?;
            }
        }
        Ok(Response::Result(result))
    }

    /// The approvals gate between authorization and the run: nothing for `none`, the client's
    /// yes for `confirm`, a different person's approval for `two_person`. A dry run of a
    /// changing tool changes nothing and needs neither.
    #[allow(clippy::too_many_arguments)]
    async fn gate(
        &self,
        caller: &Caller,
        tool: &Arc<dyn Tool>,
        allowed: &[Arc<Target>],
        target: &str,
        args: &JsonObject,
        context: &(dyn Fn(&Arc<Target>) -> ToolContext + Sync),
        answer: Answer,
        client: &dyn Client,
    ) -> Gate {
        let spec = tool.spec();
        let mode = self.config.approvals.mode_for(spec);
        if mode == Mode::None {
            return Gate::Proceed {
                note: None,
                recheck: false,
            };
        }
        if spec.mutates() && args.get("dry_run") == Some(&serde_json::Value::Bool(true)) {
            return Gate::Proceed {
                note: Some(format!("{} mode skipped for a dry run", mode.as_str())),
                recheck: false,
            };
        }
        let Some(store) = self.approvals.clone() else {
            return Gate::refuse(format!(
                "`{}` needs {} and the approvals store is not available; nothing ran",
                spec.name,
                mode.as_str()
            ));
        };
        let hash = approvals::call_hash(spec.name, target, args);
        let arguments = self.audit.redacted(&serde_json::Value::Object(args.clone()));
        let call = format!(
            "`{}` on {target} with {}",
            spec.name,
            approvals::canonical_json(&arguments)
        );
        // What would run: the dry-run plan of a changing tool; the call itself for a read.
        let name = spec.name;
        let what = Box::pin(async move {
            let plan = if tool.spec().mutates() {
                match dry_run_plan(tool.as_ref(), allowed, args, context).await {
                    Ok(p) => Some(p),
                    Err(e) => return Err(format!("the dry run of `{name}` failed, nothing ran: {e}")),
                }
            } else {
                None
            };
            let summary = match &plan {
                Some(steps) => format!("{call}; plan: {}", plan_text(steps)),
                None => format!("{call} (read-only: the call is the plan)"),
            };
            Ok((plan, summary))
        });
        let ask = Ask {
            mode,
            caller,
            tool: name,
            target,
            hash: &hash,
            arguments,
        };
        gate::gate(&store, ask, what, answer, client).await
    }

    /// For `approvals_decide`: whose request is being decided, so the decider's audit row names
    /// both identities.
    async fn decide_note(&self, tool: &str, args: &JsonObject) -> Option<String> {
        if tool != "approvals_decide" {
            return None;
        }
        let id = args.get("id")?.as_str()?.to_string();
        if !approvals::valid_id(&id) {
            return None;
        }
        let store = self.approvals.clone()?;
        let found = tokio::task::spawn_blocking(move || store.get(&id)).await.ok()?.ok()??;
        Some(format!("deciding {}: {}", found.describe(), found.summary))
    }
}

/// A refused call: why (as audited) and, when the caller's bucket ran dry, when to retry.
struct Refusal {
    reason: String,
    retry: Option<u64>,
    /// Put before the reason in the answer (`denied: ` for a policy denial).
    said: &'static str,
}

impl Refusal {
    fn new(reason: String, retry: Option<u64>) -> Refusal {
        Refusal {
            reason,
            retry,
            said: "",
        }
    }

    fn text(&self) -> String {
        match self.retry {
            Some(secs) => format!("{}{}; retry after {secs} s", self.said, self.reason),
            None => format!("{}{}", self.said, self.reason),
        }
    }

    /// The refusal as an error result, with the wait when there is one.
    fn response(self) -> Response {
        Response::Result(ToolResult {
            retry_after: self.retry,
            ..ToolResult::error(self.text())
        })
    }
}

/// The audit store could not record the call: fail closed, without the store's details.
fn audit_failed(e: AuditError) -> CallError {
    tracing::error!(error = %e, "audit write failed; refusing the call");
    CallError::Internal("the audit log could not record this call; refused".into())
}

/// Bytes the result takes as MCP JSON (`content`, `structuredContent`, `isError`), counted
/// without building the text.
fn result_len(result: &ToolResult) -> Option<i64> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape<'a> {
        content: [Text<'a>; 1],
        #[serde(skip_serializing_if = "Option::is_none")]
        structured_content: Option<&'a serde_json::Value>,
        is_error: bool,
    }
    #[derive(serde::Serialize)]
    struct Text<'a> {
        r#type: &'static str,
        text: &'a str,
    }
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let shape = Shape {
        content: [Text {
            r#type: "text",
            text: &result.text,
        }],
        structured_content: result.structured.as_ref(),
        is_error: result.is_error,
    };
    let mut count = Count(0);
    serde_json::to_writer(&mut count, &shape).ok().map(|()| count.0 as i64)
}
