//! The `approvals` table (migration `0003_approvals`): two-person requests, their one decision
//! and their one use, as rows ([`Approval`]), and every query on it, each run on the [`Store`]
//! it is given.
//!
//! Owns the SQL and the row's typed columns ([`Decision`], [`Spent`]). The rules these queries
//! follow (decided once, never by the requester; spent by one re-call of the same call, claimed
//! with one conditional `UPDATE` inside a write transaction) are also kept by the table's
//! triggers and checks.
//!
//! Does not: make ids or argument hashes, seal confirmations, say what a row's status is or how
//! callers see it (all `crate::approvals`, which is the only caller), or write audit rows.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::Store;

/// What the second person decided (`decision`: `approve` or `deny`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a re-call spent an approval (`spent`: `ran`, `denied` or `expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// The approved call ran.
    Ran,
    /// The requester was told it was denied.
    Denied,
    /// The requester was told it expired.
    Expired,
}

impl Spent {
    pub fn as_str(self) -> &'static str {
        match self {
            Spent::Ran => "ran",
            Spent::Denied => "denied",
            Spent::Expired => "expired",
        }
    }
}

/// A stored approval (times in unix ms). Its status, view and description are
/// `crate::approvals`' (`Approval::status`, `Approval::view`, `Approval::describe`).
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub requester: String,
    pub requester_node: String,
    pub tool: String,
    pub target: String,
    pub arguments: String,
    pub args_hash: String,
    pub plan: Option<String>,
    pub summary: String,
    pub created: i64,
    pub expires: i64,
    pub decision: Option<Decision>,
    pub decided_by: Option<String>,
    pub decided_by_node: Option<String>,
    pub decided_at: Option<i64>,
    pub used_at: Option<i64>,
    pub spent: Option<Spent>,
}

/// What the store found for a requester's call of a two-person tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Recall {
    /// An approval for exactly this call was approved and is now spent by this call: run it.
    Run(Approval),
    /// A request for this call is waiting for a decision.
    Waiting(Approval),
    /// The approval for this call was denied; it is now spent.
    Denied(Approval),
    /// The approval for this call expired (decided or not); it is now spent.
    Expired(Approval),
    /// No open approval for this call. `used`: the newest approval for exactly this call that
    /// already ran; `other`: an approved, unused approval of this tool and target for
    /// *different* arguments.
    Nothing {
        used: Option<Box<Approval>>,
        other: Option<Box<Approval>>,
    },
}

/// What became of a decision.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecideError {
    #[error("no approval has the id `{0}`")]
    NotFound(String),
    #[error("{0} cannot decide their own request: a different person with approvals:control must approve or deny it")]
    SelfApproval(String),
    #[error("approval `{id}` was already decided: {decision} by {by}")]
    AlreadyDecided { id: String, decision: Decision, by: String },
    #[error("approval `{0}` has expired; the requester must call again to ask anew")]
    Expired(String),
    #[error("approval `{0}` was already used")]
    AlreadyUsed(String),
    #[error("approvals store: {0}")]
    Store(String),
}

impl ToSql for Decision {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for Decision {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "approve" => Ok(Decision::Approve),
            "deny" => Ok(Decision::Deny),
            other => Err(FromSqlError::Other(format!("unknown decision `{other}`").into())),
        }
    }
}

impl ToSql for Spent {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for Spent {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "ran" => Ok(Spent::Ran),
            "denied" => Ok(Spent::Denied),
            "expired" => Ok(Spent::Expired),
            other => Err(FromSqlError::Other(format!("unknown spent `{other}`").into())),
        }
    }
}

const COLUMNS: &str = "id, requester, requester_node, tool, target, arguments, args_hash, plan, summary, created, \
                       expires, decision, decided_by, decided_by_node, decided_at, used_at, spent";

fn row_to_approval(r: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: r.get(0)?,
        requester: r.get(1)?,
        requester_node: r.get(2)?,
        tool: r.get(3)?,
        target: r.get(4)?,
        arguments: r.get(5)?,
        args_hash: r.get(6)?,
        plan: r.get(7)?,
        summary: r.get(8)?,
        created: r.get(9)?,
        expires: r.get(10)?,
        decision: r.get(11)?,
        decided_by: r.get(12)?,
        decided_by_node: r.get(13)?,
        decided_at: r.get(14)?,
        used_at: r.get(15)?,
        spent: r.get(16)?,
    })
}

/// Record the request `a` (its decision and use are not written), after deleting every request
/// created before `delete_before`.
pub fn insert(store: &Store, a: &Approval, delete_before: i64) -> rusqlite::Result<()> {
    store.with(|c| {
        // Keep the table small: requests long past their expiry are history, and the audit
        // rows keep their story.
        c.execute("DELETE FROM approvals WHERE created < ?1", [delete_before])?;
        c.execute(
            "INSERT INTO approvals (id, requester, requester_node, tool, target, arguments, args_hash, plan, \
             summary, created, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                a.id,
                a.requester,
                a.requester_node,
                a.tool,
                a.target,
                a.arguments,
                a.args_hash,
                a.plan,
                a.summary,
                a.created,
                a.expires
            ],
        )?;
        Ok(())
    })
}

/// The approval with this id.
pub fn get(store: &Store, id: &str) -> rusqlite::Result<Option<Approval>> {
    store.with(|c| select_id(c, id))
}

fn select_id(c: &Connection, id: &str) -> rusqlite::Result<Option<Approval>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
        [id],
        row_to_approval,
    )
    .optional()
}

/// The requester's call of a two-person tool at `now`: find its approval and, if approved and
/// live, spend it — all in one write transaction, so two concurrent re-calls cannot both run.
/// A denied or expired one is spent too (the requester is told once).
pub fn recall(
    store: &Store,
    requester: &str,
    tool: &str,
    target: &str,
    args_hash: &str,
    now: i64,
) -> rusqlite::Result<Recall> {
    store.with(|c| {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let open: Option<Approval> = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM approvals WHERE requester = ?1 AND tool = ?2 AND target = ?3 \
                     AND args_hash = ?4 AND used_at IS NULL ORDER BY created DESC, rowid DESC LIMIT 1"
                ),
                params![requester, tool, target, args_hash],
                row_to_approval,
            )
            .optional()?;
        let spend = |tx: &rusqlite::Transaction<'_>, id: &str, how: Spent| -> rusqlite::Result<usize> {
            tx.execute(
                "UPDATE approvals SET used_at = ?2, spent = ?3 WHERE id = ?1 AND used_at IS NULL",
                params![id, now, how],
            )
        };
        let found = match open {
            Some(a) if a.decision == Some(Decision::Approve) && a.expires > now => {
                let claimed = tx.execute(
                    "UPDATE approvals SET used_at = ?2, spent = 'ran' WHERE id = ?1 AND used_at IS NULL \
                     AND decision = 'approve' AND expires > ?2",
                    params![a.id, now],
                )?;
                if claimed == 1 {
                    Recall::Run(a)
                } else {
                    Recall::Nothing {
                        used: None,
                        other: None,
                    }
                }
            }
            Some(a) if a.decision == Some(Decision::Deny) => {
                spend(&tx, &a.id, Spent::Denied)?;
                Recall::Denied(a)
            }
            Some(a) if a.expires <= now => {
                spend(&tx, &a.id, Spent::Expired)?;
                Recall::Expired(a)
            }
            Some(a) => Recall::Waiting(a),
            None => {
                let used = tx
                    .query_row(
                        &format!(
                            "SELECT {COLUMNS} FROM approvals WHERE requester = ?1 AND tool = ?2 AND target = ?3 \
                             AND args_hash = ?4 AND spent = 'ran' ORDER BY used_at DESC LIMIT 1"
                        ),
                        params![requester, tool, target, args_hash],
                        row_to_approval,
                    )
                    .optional()?;
                let other = tx
                    .query_row(
                        &format!(
                            "SELECT {COLUMNS} FROM approvals WHERE requester = ?1 AND tool = ?2 AND target = ?3 \
                             AND args_hash <> ?4 AND used_at IS NULL AND decision = 'approve' AND expires > ?5 \
                             ORDER BY created DESC LIMIT 1"
                        ),
                        params![requester, tool, target, args_hash, now],
                        row_to_approval,
                    )
                    .optional()?;
                Recall::Nothing {
                    used: used.map(Box::new),
                    other: other.map(Box::new),
                }
            }
        };
        tx.commit()?;
        Ok(found)
    })
}

/// Record `decision` on the pending approval `id` at `now`, in one write transaction: refused
/// (the inner `Err`) when there is no such approval, `approver` is its requester, or it was
/// already decided, used or expired. `Ok(Ok(()))`: recorded.
pub fn decide(
    store: &Store,
    id: &str,
    decision: Decision,
    approver: &str,
    approver_node: &str,
    now: i64,
) -> rusqlite::Result<Result<(), DecideError>> {
    store.with(|c| {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcome = match select_id(&tx, id)? {
            None => Err(DecideError::NotFound(id.to_string())),
            Some(a) if a.requester == approver => Err(DecideError::SelfApproval(approver.to_string())),
            Some(a) if a.used_at.is_some() && a.spent == Some(Spent::Ran) => Err(DecideError::AlreadyUsed(a.id)),
            Some(Approval {
                id: found,
                decision: Some(decision),
                decided_by,
                ..
            }) => Err(DecideError::AlreadyDecided {
                id: found,
                decision,
                by: decided_by.unwrap_or_default(),
            }),
            Some(a) if a.expires <= now || a.used_at.is_some() => Err(DecideError::Expired(a.id)),
            Some(_) => {
                let changed = tx.execute(
                    "UPDATE approvals SET decision = ?2, decided_by = ?3, decided_by_node = ?4, decided_at = ?5 \
                     WHERE id = ?1 AND decision IS NULL AND used_at IS NULL AND expires > ?5 AND requester <> ?3",
                    params![id, decision, approver, approver_node, now],
                )?;
                if changed == 1 {
                    Ok(())
                } else {
                    Err(DecideError::Expired(id.to_string()))
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    })
}

/// Approvals, newest first: only those still waiting for a decision at `now` unless `all`. At
/// most `limit` of those `visible` admits, and how many more it admits.
pub fn list(
    store: &Store,
    all: bool,
    limit: usize,
    now: i64,
    visible: impl Fn(&Approval) -> bool,
) -> rusqlite::Result<(Vec<Approval>, u64)> {
    store.with(|c| {
        let filter = if all {
            "1"
        } else {
            "decision IS NULL AND used_at IS NULL AND expires > ?1"
        };
        // Newest first; only rows `visible` admits count, as shown or as omitted.
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE {filter} AND ?1 = ?1 ORDER BY created DESC, rowid DESC"
        ))?;
        let mut rows = Vec::new();
        let mut omitted = 0u64;
        for row in st.query_map(params![now], row_to_approval)? {
            let row = row?;
            if !visible(&row) {
                continue;
            }
            if rows.len() < limit {
                rows.push(row);
            } else {
                omitted += 1;
            }
        }
        Ok((rows, omitted))
    })
}
