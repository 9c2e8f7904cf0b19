//! `audit verify`: walk the hash chain in id order over one read snapshot and report the FIRST
//! link that does not verify (see `chain` for what is hashed).
//!
//! The chain is a sequence of links: every row's insert, and every completion of a pending row
//! (linked after whatever was the head when it completed, so usually after later rows). The walk
//! keeps the current head; before each row it follows any completion links that continue from
//! the head, then checks the row's `prev_hash` against it, re-hashes the row's stored content,
//! and re-hashes its completion if it has one. The start of the chain is the genesis hash, or,
//! after pruning, where the newest checkpoint row says it resumes.
//!
//! Read-only: never writes, never repairs. What it cannot see: a chain rewritten from the
//! first changed row to the end by someone who also rewrote `audit_chain_head` (there is no key;
//! compare [`VerifyReport::head`] or any row hash with journald's `TAILOPS_ROW_HASH`).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use super::chain::{self, CompletionFields, GENESIS, Hash, RowFields};
use super::query::{STORED_COLUMNS, Stored};
use super::writer::{CHECKPOINT_METHOD, CHECKPOINT_SOURCE};
use super::{BrokenKind, BrokenLink, CheckpointInfo, VerifyReport};

/// See [`super::verify_path`].
pub(crate) fn run(conn: &Connection) -> rusqlite::Result<VerifyReport> {
    // One snapshot: the writer may go on committing meanwhile.
    let tx = conn.unchecked_transaction()?;
    let report = walk(&tx)?;
    tx.finish()?;
    Ok(report)
}

/// Where the newest checkpoint says the chain resumes after pruning.
struct Resume {
    checkpoint_id: i64,
    id: Option<i64>,
    prev_hash: Option<String>,
}

fn walk(conn: &Connection) -> rusqlite::Result<VerifyReport> {
    let resume = newest_checkpoint(conn)?;
    let recorded: Option<(String, i64)> = conn
        .query_row(
            "SELECT head_hash, last_id FROM audit_chain_head WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;

    let mut w = Walk::default();
    let mut stmt = conn.prepare(&format!("SELECT {STORED_COLUMNS} FROM audit ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let row = Stored::from_row(row)?;
        w.report.rows += 1;
        w.report.first_id.get_or_insert(row.id);
        w.report.last_id = Some(row.id);
        if let Err(mut broken) = w.row(&row, resume.as_ref()) {
            if broken.kind == BrokenKind::Start {
                broken.detail.push_str(&later_gaps(conn, row.id, recorded.as_ref())?);
            }
            w.report.broken = Some(broken);
            return Ok(w.report);
        }
    }
    if let Err(broken) = w.finish(recorded) {
        w.report.broken = Some(broken);
    }
    Ok(w.report)
}

/// After a start that no checkpoint explains: where else ids are missing, so a deleted
/// checkpoint row (which sits after the rows it kept) is named too.
fn later_gaps(conn: &Connection, first: i64, recorded: Option<&(String, i64)>) -> rusqlite::Result<String> {
    let gap: Option<i64> = conn
        .query_row(
            "SELECT a.id + 1 FROM audit a WHERE a.id >= ?1
               AND a.id < (SELECT max(id) FROM audit)
               AND NOT EXISTS (SELECT 1 FROM audit b WHERE b.id = a.id + 1)
             ORDER BY a.id LIMIT 1",
            [first],
            |r| r.get(0),
        )
        .optional()?;
    let last: Option<i64> = conn.query_row("SELECT max(id) FROM audit", [], |r| r.get(0))?;
    let mut out = String::new();
    if let Some(g) = gap {
        out.push_str(&format!(
            "; row {g} is missing too (a deleted checkpoint row, if it was the one that pruned them)"
        ));
    }
    if let (Some((_, recorded_last)), Some(last)) = (recorded, last)
        && *recorded_last > last
    {
        out.push_str(&format!(
            "; rows {}..={recorded_last} at the end are missing too (the writer recorded row {recorded_last}; \
             a deleted checkpoint row, if it was the last one)",
            last + 1
        ));
    }
    Ok(out)
}

/// `row` is a checkpoint `verify` honours: written by the host (not an MCP request row that
/// happens to carry the method name).
fn is_checkpoint(row: &Stored) -> bool {
    row.method == CHECKPOINT_METHOD && row.identity_source.as_deref().is_none_or(|s| s == CHECKPOINT_SOURCE)
}

fn newest_checkpoint(conn: &Connection) -> rusqlite::Result<Option<Resume>> {
    let found: Option<(i64, Option<String>)> = conn
        .query_row(
            "SELECT id, arguments FROM audit WHERE method = ?1
               AND (identity_source IS NULL OR identity_source = ?2) ORDER BY id DESC LIMIT 1",
            [CHECKPOINT_METHOD, CHECKPOINT_SOURCE],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(found.map(|(checkpoint_id, arguments)| {
        let args: serde_json::Value = arguments
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        Resume {
            checkpoint_id,
            id: args["resume_id"].as_i64(),
            prev_hash: args["resume_prev_hash"].as_str().map(String::from),
        }
    }))
}

#[derive(Default)]
struct Walk {
    report: VerifyReport,
    /// The last link's hash; `None` until the first chained row.
    head: Option<Hash>,
    /// The previous row's id.
    prev_id: Option<i64>,
    /// Completion links seen on their rows but not yet reached in chain order, keyed by the
    /// hash they continue from: `(row id, completion hash)`.
    waiting: HashMap<Hash, (i64, Hash)>,
}

impl Walk {
    fn row(&mut self, row: &Stored, resume: Option<&Resume>) -> Result<(), BrokenLink> {
        let broken = |kind, detail: String| BrokenLink {
            id: row.id,
            kind,
            detail,
        };
        let Some(row_hash_hex) = row.row_hash.as_deref() else {
            if self.head.is_some() {
                return Err(broken(
                    BrokenKind::MissingHash,
                    "row has no row_hash although earlier rows are chained (hash cleared?)".into(),
                ));
            }
            // A row from before the chain; completing it later still made a link.
            self.report.unchained += 1;
            self.prev_id = Some(row.id);
            return self.completion(row, None);
        };
        let hash = |column: &str, v: Option<&str>| {
            v.and_then(chain::from_hex)
                .ok_or_else(|| broken(BrokenKind::MissingHash, format!("{column} {v:?} is not a hash")))
        };
        let stored = hash("row_hash", Some(row_hash_hex))?;
        let prev = hash("prev_hash", row.prev_hash.as_deref())?;

        if self.head.is_none() && self.report.unchained > 0 {
            // After rows from before the chain, the chain starts at genesis (no checkpoint can
            // have pruned into it: pruning removes a prefix).
            self.head = Some(GENESIS);
        }
        match self.head {
            None => self.start(row, prev, resume)?,
            Some(_) => {
                self.follow_completions();
                let head = self.head.unwrap_or(GENESIS);
                let gap = self.prev_id.filter(|p| *p + 1 != row.id);
                if prev != head {
                    let missing = match gap {
                        Some(p) => format!("; rows {}..={} are missing", p + 1, row.id - 1),
                        None => String::new(),
                    };
                    return Err(broken(
                        BrokenKind::PrevHash,
                        format!(
                            "prev_hash {} is not the previous link {}: a row or completion before \
                             it was deleted, or rows were reordered{missing}",
                            chain::to_hex(&prev),
                            chain::to_hex(&head)
                        ),
                    ));
                }
                if let Some(p) = gap {
                    return Err(broken(
                        BrokenKind::IdGap,
                        format!(
                            "ids jump from {p} to {}: rows {}..={} were deleted and the chain re-hashed",
                            row.id,
                            p + 1,
                            row.id - 1
                        ),
                    ));
                }
            }
        }

        let completed = row.completion_hash.is_some();
        let fields = RowFields {
            id: row.id,
            time: &row.time,
            request_id: &row.request_id,
            session_id: row.session_id.as_deref(),
            principal: row.principal.as_deref(),
            user_id: row.user_id,
            login: row.login.as_deref(),
            node_id: row.node_id.as_deref(),
            node_name: row.node_name.as_deref(),
            tags_json: &row.tags,
            remote_addr: row.remote_addr.as_deref(),
            identity_source: row.identity_source.as_deref(),
            method: &row.method,
            tool: row.tool.as_deref(),
            target: row.target.as_deref(),
            arguments_json: row.arguments.as_deref(),
            decision: &row.decision,
            reason: row.reason.as_deref(),
            grants_json: &row.grants,
            // A completed row was hashed as begun: pending, without a result.
            outcome: if completed { "pending" } else { &row.outcome },
            error: if completed { None } else { row.error.as_deref() },
            duration_ms: if completed { None } else { row.duration_ms },
            result_bytes: if completed { None } else { row.result_bytes },
        };
        let computed = chain::link(&fields.canonical(), &prev);
        if computed != stored {
            return Err(broken(
                BrokenKind::RowHash,
                format!(
                    "content does not match row_hash {} (hashes to {}): the row was edited, or \
                     rows were swapped",
                    row_hash_hex,
                    chain::to_hex(&computed)
                ),
            ));
        }
        self.head = Some(stored);
        self.prev_id = Some(row.id);
        self.report.chained += 1;
        if is_checkpoint(row) {
            self.report.checkpoints += 1;
            let args: serde_json::Value = row
                .arguments
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default();
            self.report.checkpoint_rows.push(CheckpointInfo {
                id: row.id,
                time: row.time.clone(),
                pruned_by: args["pruned_by"]
                    .as_str()
                    .map(String::from)
                    .or_else(|| row.principal.clone()),
                pruned_rows: args["pruned_rows"].as_i64(),
                first_pruned_id: args["first_pruned_id"].as_i64(),
                last_pruned_id: args["last_pruned_id"].as_i64(),
                last_pruned_hash: args["last_pruned_hash"].as_str().map(String::from),
                resume_id: args["resume_id"].as_i64(),
            });
        }

        self.completion(row, Some(row_hash_hex))
    }

    /// Check `row`'s completion link, if it has one, and keep it until the walk reaches the
    /// hash it continues from.
    fn completion(&mut self, row: &Stored, row_hash: Option<&str>) -> Result<(), BrokenLink> {
        let broken = |kind, detail: String| BrokenLink {
            id: row.id,
            kind,
            detail,
        };
        let Some(completion_hex) = row.completion_hash.as_deref() else {
            return Ok(());
        };
        let hash = |column: &str, v: Option<&str>| {
            v.and_then(chain::from_hex)
                .ok_or_else(|| broken(BrokenKind::MissingHash, format!("{column} {v:?} is not a hash")))
        };
        let completion = hash("completion_hash", Some(completion_hex))?;
        let completion_prev = hash("completion_prev", row.completion_prev.as_deref())?;
        let Some(completed_after) = row.completed_after else {
            return Err(broken(
                BrokenKind::MissingHash,
                "completed row has a completion_hash but no completed_after".into(),
            ));
        };
        let fields = CompletionFields {
            id: row.id,
            row_hash,
            completed_after,
            outcome: &row.outcome,
            error: row.error.as_deref(),
            duration_ms: row.duration_ms,
            result_bytes: row.result_bytes,
        };
        let computed = chain::link(&fields.canonical(), &completion_prev);
        if computed != completion || row.outcome == "pending" {
            return Err(broken(
                BrokenKind::CompletionHash,
                format!(
                    "outcome fields (outcome {:?}, error, duration_ms, result_bytes) do not match \
                     completion_hash {completion_hex}: edited after completion",
                    row.outcome
                ),
            ));
        }
        if self.waiting.insert(completion_prev, (row.id, completion)).is_some() {
            return Err(broken(
                BrokenKind::CompletionLink,
                "two links continue from the same hash (forked chain)".into(),
            ));
        }
        Ok(())
    }

    /// The first chained row: it must continue from genesis, or from where the newest
    /// checkpoint says the chain resumes.
    fn start(&mut self, row: &Stored, prev: Hash, resume: Option<&Resume>) -> Result<(), BrokenLink> {
        let ok = match resume {
            None => prev == GENESIS,
            Some(r) => r.id == Some(row.id) && r.prev_hash.as_deref().and_then(chain::from_hex) == Some(prev),
        };
        if !ok {
            let detail = match resume {
                Some(r) => {
                    let resume_id = r.id.unwrap_or(0);
                    let missing = if row.id > resume_id && r.id.is_some() {
                        format!(
                            "rows {resume_id}..={} were deleted after that prune without a checkpoint of their \
                             own (or the checkpoint that pruned them was deleted)",
                            row.id - 1
                        )
                    } else {
                        "rows before it were deleted, or the checkpoint does not match the rows kept".into()
                    };
                    format!(
                        "the first row's prev_hash is {}, but the newest checkpoint (row {}) says the chain \
                         resumes at row {} from {}: {missing}",
                        chain::to_hex(&prev),
                        r.checkpoint_id,
                        r.id.map_or("?".into(), |i| i.to_string()),
                        r.prev_hash.as_deref().unwrap_or("?")
                    )
                }
                None => format!(
                    "the first row's prev_hash is {}, not the genesis hash, and no checkpoint row says where \
                     a pruned chain resumes: rows before it (ids below {}) were deleted without a checkpoint, \
                     or the checkpoint row was deleted",
                    chain::to_hex(&prev),
                    row.id
                ),
            };
            return Err(BrokenLink {
                id: row.id,
                kind: BrokenKind::Start,
                detail,
            });
        }
        self.head = Some(prev);
        Ok(())
    }

    /// Advance the head through completion links that continue from it.
    fn follow_completions(&mut self) {
        while let Some(head) = self.head {
            let Some((_, next)) = self.waiting.remove(&head) else {
                break;
            };
            self.report.completions += 1;
            self.head = Some(next);
        }
    }

    /// After the last row: every completion must have been reached, and the chain must end
    /// where the writer recorded its head.
    fn finish(&mut self, recorded: Option<(String, i64)>) -> Result<(), BrokenLink> {
        self.follow_completions();
        if let Some((&from, &(id, _))) = self.waiting.iter().min_by_key(|(_, (id, _))| *id) {
            return Err(BrokenLink {
                id,
                kind: BrokenKind::CompletionLink,
                detail: format!(
                    "its completion continues from {}, which no link in the chain reaches: links \
                     were deleted or reordered",
                    chain::to_hex(&from)
                ),
            });
        }
        self.report.head = self.head.as_ref().map(chain::to_hex);
        let (Some((recorded_hash, recorded_last)), Some(head)) = (recorded, self.head) else {
            return Ok(());
        };
        let last = self.report.last_id.unwrap_or(0);
        if chain::from_hex(&recorded_hash) != Some(head) || recorded_last != last {
            return Err(BrokenLink {
                id: last,
                kind: BrokenKind::Tail,
                detail: format!(
                    "the chain ends at row {last} with {}, but the writer last recorded row \
                     {recorded_last} with {recorded_hash}: rows or completions at the end were \
                     deleted",
                    chain::to_hex(&head)
                ),
            });
        }
        Ok(())
    }
}
