//! The approvals gate between authorization and the run: the client's yes for `confirm`, a
//! different person's approval for `two_person`. It knows calls only as a tool name, a target,
//! an argument hash and a plan, and reaches the client only through [`Client`].
//!
//! **Invariant:** the gate never runs anything; a call it does not answer with
//! [`Gate::Proceed`] does not run, and every answer says "nothing ran". An approval covers
//! exactly the call it was asked for (tool, target, argument hash) and runs it once.

use std::sync::Arc;
use std::time::Duration;

use super::{Approval, Approvals, Mode, NewRequest, Recall};
use crate::model::{Caller, Client, Reply};

/// What the gate decided about a call.
#[derive(Debug)]
pub enum Gate {
    /// Run it; the note (who approved or confirmed) goes into the audit reason. `recheck`: a
    /// person said yes (maybe after a wait), so the caller's authorization is checked again
    /// right before the run.
    Proceed { note: Option<String>, recheck: bool },
    /// Do not run it: answer with `said` and audit `reason`.
    Respond { reason: String, said: Said },
}

/// What a call the gate stopped answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// An error result with this text.
    Error(String),
    /// 2026-07-28: ask the client to confirm `message` and call again with `state` echoed.
    InputRequired { message: String, state: String },
}

impl Gate {
    pub fn refuse(reason: String) -> Gate {
        Gate::Respond {
            said: Said::Error(reason.clone()),
            reason,
        }
    }
}

/// What a client echoed back on a confirmation round trip (protocol 2026-07-28): the sealed
/// state and the user's reply.
#[derive(Debug, Default, Clone)]
pub struct Answer {
    pub state: Option<String>,
    pub reply: Option<Reply>,
}

/// One call at the gate.
pub struct Ask<'a> {
    pub mode: Mode,
    pub caller: &'a Caller,
    pub tool: &'a str,
    /// The call's targets as audited (`a,b` under fan-out).
    pub target: &'a str,
    /// [`super::call_hash`] of the call.
    pub hash: &'a str,
    /// The arguments as they may be shown (redacted).
    pub arguments: serde_json::Value,
}

/// What would run, as a person is shown it: the plan (a changing tool's dry run) and a one-line
/// summary. Lazy: a re-call that spends an approval does not compute it again.
pub type What<'a> = futures::future::BoxFuture<'a, Result<(Option<serde_json::Value>, String), String>>;

/// What the audit says about every client confirmation.
const CLIENT_NOT_PERSON: &str = "a client confirmation, not a second person";

/// How often a waiting call looks for a decision.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Put `ask` through its mode. `Mode::None` proceeds at once.
pub async fn gate(store: &Arc<Approvals>, ask: Ask<'_>, what: What<'_>, answer: Answer, client: &dyn Client) -> Gate {
    match ask.mode {
        Mode::None => Gate::Proceed {
            note: None,
            recheck: false,
        },
        Mode::Confirm => match what.await {
            Ok((_, summary)) => confirm(store, &ask, &summary, answer, client).await,
            Err(e) => Gate::refuse(e),
        },
        Mode::TwoPerson => two_person(store, &ask, what, client).await,
    }
}

/// `confirm`: elicitation on protocol versions with server-to-client requests; a sealed
/// input-required round trip on 2026-07-28; refused where the client cannot ask.
async fn confirm(store: &Approvals, ask: &Ask<'_>, summary: &str, answer: Answer, client: &dyn Client) -> Gate {
    let (principal, tool, target, hash) = (&ask.caller.principal, ask.tool, ask.target, ask.hash);
    let message = format!("Run this? {summary}");
    let timeout = store.config.confirm_timeout;
    if client.stateless() {
        let Some(state) = answer.state else {
            return match store.sealer.seal(principal, tool, target, hash, timeout) {
                Ok(state) => Gate::Respond {
                    reason: format!(
                        "confirmation asked of the client (input required, sealed state bound to this call; {CLIENT_NOT_PERSON}); nothing ran yet"
                    ),
                    said: Said::InputRequired { message, state },
                },
                Err(e) => Gate::refuse(format!("cannot seal a confirmation ({e}); nothing ran")),
            };
        };
        if let Err(e) = store.sealer.open(&state, principal, tool, target, hash) {
            return Gate::refuse(format!("confirmation refused: {e}; nothing ran"));
        }
        return confirmed(answer.reply, "input-required round trip, sealed state verified");
    }
    if !client.can_elicit() {
        return Gate::refuse(format!(
            "`{tool}` needs a confirmation and this client cannot ask its user (it did not declare the \
             elicitation capability); nothing ran. Use a client that supports elicitation, or ask the operator \
             to change [approvals] for this tool."
        ));
    }
    match client.confirm(message, timeout).await {
        Ok(reply) => confirmed(Some(reply), "elicitation"),
        Err(e) => Gate::refuse(format!("confirmation failed ({e}); nothing ran")),
    }
}

/// The client's answer to a confirmation: only an accepted form with the box checked runs.
pub fn confirmed(reply: Option<Reply>, how: &str) -> Gate {
    let said = match reply {
        None => {
            return Gate::refuse(
                "confirmation refused: the client sent no answer to the confirmation; nothing ran".into(),
            );
        }
        Some(Reply::Accept { checked: true }) => {
            return Gate::Proceed {
                note: Some(format!("confirmed by the client ({how}; {CLIENT_NOT_PERSON})")),
                recheck: true,
            };
        }
        Some(Reply::Accept { checked: false }) => "accept without checking the box",
        Some(Reply::Decline) => "no",
        Some(Reply::Cancel) => "cancel",
    };
    Gate::refuse(format!(
        "not confirmed: the client answered {said} ({how}); nothing ran"
    ))
}

/// Look up this exact call's approval (spending it if approved and live).
async fn recall(store: &Arc<Approvals>, ask: &Ask<'_>) -> Result<Recall, Gate> {
    let s = store.clone();
    let (principal, tool, target, hash) = (
        ask.caller.principal.clone(),
        ask.tool.to_string(),
        ask.target.to_string(),
        ask.hash.to_string(),
    );
    match tokio::task::spawn_blocking(move || s.recall(&principal, &tool, &target, &hash)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "approvals store failed");
            Err(Gate::refuse("the approvals store failed; nothing ran".into()))
        }
        Err(e) => Err(Gate::refuse(format!("the approvals check failed ({e}); nothing ran"))),
    }
}

/// An approval already used for this call, and one approved for other arguments.
type NoneOpen = (Option<Box<Approval>>, Option<Box<Approval>>);

/// The answer to a found approval; `Err` when there is no open one for this call.
fn recall_gate(found: Recall, tool: &str) -> Result<Gate, NoneOpen> {
    let view_time = |a: &Approval| a.view(super::now());
    Ok(match found {
        Recall::Run(a) => {
            let v = view_time(&a);
            Gate::Proceed {
                note: Some(format!(
                    "two-person {} approved by {} from {} at {}; spent by this call",
                    a.describe(),
                    v.decided_by.unwrap_or_default(),
                    v.decided_by_node.unwrap_or_default(),
                    v.decided_at.unwrap_or_default()
                )),
                recheck: true,
            }
        }
        Recall::Waiting(a) => pending(&a, tool, "still waiting for a second person"),
        Recall::Denied(a) => {
            let v = view_time(&a);
            Gate::refuse(format!(
                "two-person {} was denied by {} from {}; nothing ran. The request is closed; calling again asks anew.",
                a.describe(),
                v.decided_by.unwrap_or_default(),
                v.decided_by_node.unwrap_or_default()
            ))
        }
        Recall::Expired(a) => {
            let v = view_time(&a);
            Gate::refuse(format!(
                "two-person {} expired at {} ({}); nothing ran. Calling again asks anew.",
                a.describe(),
                v.expires,
                match v.decided_by {
                    Some(by) => format!("approved by {by} but not used in time"),
                    None => "nobody decided it in time".into(),
                }
            ))
        }
        Recall::Nothing { used, other } => return Err((used, other)),
    })
}

/// The answer while `a` waits for a decision.
fn pending(a: &Approval, tool: &str, state: &str) -> Gate {
    let text = format!(
        "Approval pending: {} is {state}. Nothing ran.\n{}",
        a.describe(),
        how_to_approve(a, tool)
    );
    Gate::Respond {
        reason: format!("two-person approval required: {} {state}", a.describe()),
        said: Said::Error(text),
    }
}

/// Wait for a decision on `a`, reporting progress, until it is decided, `wait` ends or the
/// client cancels; then answer like a re-call would (so an approval still runs once).
async fn wait_for_decision(
    store: &Arc<Approvals>,
    ask: &Ask<'_>,
    a: &Approval,
    client: &dyn Client,
    wait: Duration,
    on_timeout: Gate,
) -> Gate {
    let deadline = tokio::time::Instant::now() + wait;
    let mut round = 0u32;
    loop {
        round += 1;
        let message = format!("waiting for a second person to approve {}", a.describe());
        client.progress(f64::from(round), None, message).await;
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return on_timeout;
        }
        tokio::select! {
            _ = client.cancelled() => return on_timeout,
            _ = tokio::time::sleep(WAIT_POLL.min(deadline - now)) => {}
        }
        match recall(store, ask).await {
            Err(g) => return g,
            Ok(Recall::Waiting(_)) => continue,
            Ok(found) => {
                return recall_gate(found, ask.tool)
                    .unwrap_or_else(|_| Gate::refuse(format!("{} is no longer open; nothing ran", a.describe())));
            }
        }
    }
}

/// `two_person`: spend an approval of exactly this call, or record a request for one (and, for
/// a caller that sent a progress token while `wait_secs` is set, wait for the decision).
async fn two_person(store: &Arc<Approvals>, ask: &Ask<'_>, what: What<'_>, client: &dyn Client) -> Gate {
    let (tool, target) = (ask.tool, ask.target);
    // A caller that sent a progress token may wait for the decision, if allowed.
    let wait = Some(store.config.wait).filter(|w| !w.is_zero() && client.has_progress_token());
    let found = match recall(store, ask).await {
        Ok(found) => found,
        Err(g) => return g,
    };
    if let (Recall::Waiting(a), Some(wait)) = (&found, wait) {
        let on_timeout = pending(a, tool, "still waiting for a second person");
        return wait_for_decision(store, ask, a, client, wait, on_timeout).await;
    }
    let view_time = |a: &Approval| a.view(super::now());
    let (prefix, reason_prefix) = match recall_gate(found, tool) {
        Ok(gate) => return gate,
        Err((used, other)) => match (used, other) {
            (_, Some(o)) => (
                format!(
                    "Refused: {} was approved for different arguments of `{tool}` on {target} (hash {}…); an approval \
                     covers exactly the arguments it was asked for. Nothing ran.\n",
                    o.describe(),
                    &o.args_hash[..12]
                ),
                format!("changed arguments: {} covers other arguments; ", o.describe()),
            ),
            (Some(u), None) => (
                format!(
                    "{} for this exact call was already used at {}: an approval runs once. Nothing ran.\n",
                    u.describe(),
                    view_time(&u).used_at.unwrap_or_default()
                ),
                format!("already used: {}; ", u.describe()),
            ),
            (None, None) => (String::new(), String::new()),
        },
    };

    let (plan, summary) = match what.await {
        Ok(w) => w,
        Err(e) => return Gate::refuse(e),
    };
    let request = NewRequest {
        requester: ask.caller.principal.clone(),
        requester_node: format!("{} ({})", ask.caller.node_name, ask.caller.node_id),
        tool: tool.to_string(),
        target: target.to_string(),
        arguments: ask.arguments.clone(),
        args_hash: ask.hash.to_string(),
        plan,
        summary,
    };
    let s = store.clone();
    let created = match tokio::task::spawn_blocking(move || s.request(&request)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "approvals store failed");
            return Gate::refuse("the approvals store could not record the request; nothing ran".into());
        }
        Err(e) => return Gate::refuse(format!("the approvals check failed ({e}); nothing ran")),
    };
    let text = format!(
        "{prefix}Approval required: {} needs a second person (two-person rule). Nothing ran.\n{}",
        created.summary,
        how_to_approve(&created, tool)
    );
    let answer = Gate::Respond {
        reason: format!(
            "{reason_prefix}two-person approval required: requested {}",
            created.describe()
        ),
        said: Said::Error(text),
    };
    match wait {
        Some(wait) => wait_for_decision(store, ask, &created, client, wait, answer).await,
        None => answer,
    }
}

/// The lines every pending answer ends with: the id and how to approve it.
fn how_to_approve(a: &Approval, tool: &str) -> String {
    let v = a.view(super::now());
    format!(
        "Approval id: {id}\nExpires: {exp}\nSomeone else with approvals:control approves it with the `approvals_decide` \
         tool ({{\"id\": \"{id}\", \"decision\": \"approve\"}}) or on the server host with `tailopsmcp approvals \
         approve {id}`. Then call `{tool}` again with the same arguments: it runs once.",
        id = a.id,
        exp = v.expires
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_accepted_form_with_the_box_checked_confirms() {
        let yes = confirmed(Some(Reply::Accept { checked: true }), "elicitation");
        assert!(matches!(yes, Gate::Proceed { note: Some(n), recheck: true } if n.contains("not a second person")));
        for (r, needle) in [
            (Some(Reply::Accept { checked: false }), "without checking"),
            (Some(Reply::Decline), "answered no"),
            (Some(Reply::Cancel), "answered cancel"),
            (None, "no answer"),
        ] {
            match confirmed(r, "elicitation") {
                Gate::Respond { reason, .. } => assert!(reason.contains(needle), "{reason}"),
                Gate::Proceed { .. } => panic!("waved through: {needle}"),
            }
        }
    }
}
