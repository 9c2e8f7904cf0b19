//! The audit writer: ONE dedicated thread that owns the write connection, takes every queued
//! operation (up to [`MAX_BATCH`]), applies them in ONE transaction with cached statements,
//! commits, and only then answers each waiter. After the commit it hands the committed records
//! to the journald mirror (which never blocks this thread).
//!
//! Does not: redact or validate (callers' tasks do that in [`PreparedRecord::new`], off this
//! thread, so the single writer only binds and steps), read for queries, or retry silently: a
//! failed statement fails its own operation; a failed transaction fails every operation in it.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;

use chrono::DateTime;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::journald::Mirror;
use super::{AuditError, Outcome, Record, format_time, now_rfc3339, query, redact};

/// Most operations committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// Operations that may wait for the writer before `record`/`begin`/`complete` callers wait for
/// queue space (backpressure, not unbounded memory).
pub(crate) const QUEUE: usize = 16 * 1024;

const INSERT: &str = "INSERT INTO audit (time, request_id, session_id, principal, user_id, login,
    node_id, node_name, tags, remote_addr, identity_source, method, tool, target, arguments,
    decision, reason, grants, outcome, error, duration_ms, result_bytes)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22)";
const COMPLETE_WHERE: &str = "UPDATE audit SET outcome = ?2, error = ?3, duration_ms = ?4,
    result_bytes = ?5 WHERE id = ?1 AND outcome = 'pending'";

/// One queued write and the channel its caller waits on.
pub(crate) enum Op {
    Insert {
        row: Box<PreparedRecord>,
        reply: oneshot::Sender<Result<i64, AuditError>>,
    },
    Complete {
        id: i64,
        outcome: Outcome,
        error: Option<String>,
        duration_ms: f64,
        result_bytes: Option<i64>,
        reply: oneshot::Sender<Result<(), AuditError>>,
    },
}

/// A record made ready for the writer on the caller's task: time normalized, request id
/// present, arguments redacted and serialized, lists serialized.
pub(crate) struct PreparedRecord {
    /// The record, without `arguments` (they are in `arguments_json`).
    rec: Record,
    arguments_json: Option<String>,
    tags_json: String,
    grants_json: String,
}

impl PreparedRecord {
    pub(crate) fn new(mut rec: Record, redactor: &redact::Redactor) -> Result<PreparedRecord, AuditError> {
        rec.time = if rec.time.is_empty() {
            now_rfc3339()
        } else {
            let t = DateTime::parse_from_rfc3339(&rec.time)
                .map_err(|e| AuditError::Invalid(format!("time {:?} is not RFC 3339: {e}", rec.time)))?;
            format_time(t.to_utc())
        };
        if rec.request_id.is_empty() {
            rec.request_id = uuid::Uuid::new_v4().to_string();
        }
        rec.id = None;
        rec.error = rec.error.map(|e| redact::truncate(&e));
        let arguments_json = rec
            .arguments
            .take()
            .map(|args| redact::arguments_json(&redactor.redact(&args)));
        let to_json = |v: &[String]| serde_json::Value::from(v).to_string();
        Ok(PreparedRecord {
            tags_json: to_json(&rec.tags),
            grants_json: to_json(&rec.grants),
            arguments_json,
            rec,
        })
    }
}

/// Start the writer thread on `conn` (already opened and migrated by `store::open`).
pub(crate) fn spawn(
    conn: Connection,
    path: PathBuf,
    mirror: Option<Mirror>,
) -> std::io::Result<(mpsc::Sender<Op>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = Writer { conn, path, mirror };
    let handle = std::thread::Builder::new()
        .name("audit-writer".to_string())
        .spawn(move || writer.run(rx))?;
    Ok((tx, handle))
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    mirror: Option<Mirror>,
}

/// An operation after it ran, holding its own typed result until the transaction's fate is
/// known.
enum Answer {
    Insert {
        rec: Record,
        reply: oneshot::Sender<Result<i64, AuditError>>,
        result: Result<i64, AuditError>,
    },
    Complete {
        reply: oneshot::Sender<Result<(), AuditError>>,
        /// `Ok(Some(row))`: the completed row (without arguments), when the mirror needs it.
        result: Result<Option<Record>, AuditError>,
    },
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Ends when every `Auditor` is gone: the queue is drained first.
        while let Some(op) = rx.blocking_recv() {
            batch.push(op);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.apply(&mut batch);
        }
    }

    /// Run `batch` in one transaction, commit, then answer every waiter and mirror what
    /// committed. Leaves `batch` empty.
    fn apply(&mut self, batch: &mut Vec<Op>) {
        let mut answers = Vec::with_capacity(batch.len());
        if let Err((op, e)) = self.execute(batch, &mut answers) {
            tracing::error!(
                path = %self.path.display(),
                operation = op,
                error = %e,
                records = answers.len(),
                "audit transaction failed; every record in it was refused"
            );
            let e = Arc::new(e);
            let err = || AuditError::Write {
                path: self.path.clone(),
                op,
                source: Arc::clone(&e),
            };
            for answer in &mut answers {
                match answer {
                    Answer::Insert { result, .. } => *result = Err(err()),
                    Answer::Complete { result, .. } => *result = Err(err()),
                }
            }
        }
        for answer in answers {
            // A waiter that gave up (dropped its future) is fine: the row is committed anyway.
            match answer {
                Answer::Insert { mut rec, reply, result } => {
                    let committed = result.as_ref().ok().copied();
                    let _ = reply.send(result);
                    if let (Some(mirror), Some(id)) = (&self.mirror, committed) {
                        rec.id = Some(id);
                        mirror.send(rec);
                    }
                }
                Answer::Complete { reply, result } => {
                    let (result, rec) = match result {
                        Ok(rec) => (Ok(()), rec),
                        Err(e) => (Err(e), None),
                    };
                    let _ = reply.send(result);
                    if let (Some(mirror), Some(rec)) = (&self.mirror, rec) {
                        mirror.send(rec);
                    }
                }
            }
        }
    }

    /// The transaction: moves every operation of `batch` into `answers`. `Err` means nothing in
    /// it committed (the answers' own results are then overwritten by the caller).
    fn execute(
        &mut self,
        batch: &mut Vec<Op>,
        answers: &mut Vec<Answer>,
    ) -> Result<(), (&'static str, rusqlite::Error)> {
        let returning = self.mirror.is_some();
        let path = &self.path;
        let write_err = |op, e| AuditError::Write {
            path: path.clone(),
            op,
            source: Arc::new(e),
        };
        let tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                answers.extend(batch.drain(..).map(|op| unanswered(op, path)));
                return Err(("begin", e));
            }
        };
        let mut failed = None;
        for op in batch.drain(..) {
            if failed.is_some() {
                answers.push(unanswered(op, path));
                continue;
            }
            match op {
                Op::Insert { row, reply } => {
                    let result = match insert(&tx, &row) {
                        Ok(id) => Ok(id),
                        Err(e) if tx.is_autocommit() => {
                            failed = Some(("insert", e));
                            Err(AuditError::WriterGone { path: path.clone() })
                        }
                        Err(e) => Err(write_err("insert", e)),
                    };
                    answers.push(Answer::Insert {
                        rec: row.rec,
                        reply,
                        result,
                    });
                }
                Op::Complete {
                    id,
                    outcome,
                    error,
                    duration_ms,
                    result_bytes,
                    reply,
                } => {
                    let done = complete(&tx, returning, id, outcome, error.as_deref(), duration_ms, result_bytes);
                    let result = match done {
                        Ok(Some(rec)) => Ok(rec),
                        Ok(None) => Err(AuditError::NotPending { path: path.clone(), id }),
                        Err(e) if tx.is_autocommit() => {
                            failed = Some(("complete", e));
                            Err(AuditError::WriterGone { path: path.clone() })
                        }
                        Err(e) => Err(write_err("complete", e)),
                    };
                    answers.push(Answer::Complete { reply, result });
                }
            }
        }
        // SQLite rolled the whole transaction back (I/O error, disk full, ...): what ran before
        // is gone too, so the batch fails as one. A statement-level failure (a constraint)
        // fails only its own operation.
        if let Some(failed) = failed {
            return Err(failed);
        }
        tx.commit().map_err(|e| ("commit", e))
    }
}

/// An operation that never ran (its transaction could not start or already failed); its result
/// is replaced with the transaction's error.
fn unanswered(op: Op, path: &std::path::Path) -> Answer {
    let gone = || AuditError::WriterGone {
        path: path.to_path_buf(),
    };
    match op {
        Op::Insert { row, reply } => Answer::Insert {
            rec: row.rec,
            reply,
            result: Err(gone()),
        },
        Op::Complete { reply, .. } => Answer::Complete {
            reply,
            result: Err(gone()),
        },
    }
}

fn insert(conn: &Connection, row: &PreparedRecord) -> rusqlite::Result<i64> {
    let r = &row.rec;
    let mut stmt = conn.prepare_cached(INSERT)?;
    stmt.execute(params![
        r.time,
        r.request_id,
        r.session_id,
        r.principal,
        r.user_id,
        r.login,
        r.node_id,
        r.node_name,
        row.tags_json,
        r.remote_addr,
        r.identity_source,
        r.method,
        r.tool,
        r.target,
        row.arguments_json,
        r.decision.as_str(),
        r.reason,
        row.grants_json,
        r.outcome.as_str(),
        r.error,
        r.duration_ms,
        r.result_bytes,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// `Ok(None)`: no pending row `id`. `Ok(Some(Some(rec)))`: completed, with the row for the
/// mirror (`RETURNING`, only when mirroring). `Ok(Some(None))`: completed.
fn complete(
    conn: &Connection,
    returning: bool,
    id: i64,
    outcome: Outcome,
    error: Option<&str>,
    duration_ms: f64,
    result_bytes: Option<i64>,
) -> rusqlite::Result<Option<Option<Record>>> {
    let args = params![id, outcome.as_str(), error, duration_ms, result_bytes];
    if returning {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("{COMPLETE_WHERE} RETURNING {}", query::COLUMNS_WITHOUT_ARGUMENTS));
        let mut stmt = conn.prepare_cached(&SQL)?;
        let rec = stmt.query_row(args, query::from_row).optional()?;
        Ok(rec.map(Some))
    } else {
        let mut stmt = conn.prepare_cached(COMPLETE_WHERE)?;
        let n = stmt.execute(args)?;
        Ok((n == 1).then_some(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Decision;

    fn writer(dir: &tempfile::TempDir, trigger: &str) -> Writer {
        let path = dir.path().join("audit.db");
        let conn = crate::store::open(&path).unwrap();
        conn.execute_batch(trigger).unwrap();
        Writer {
            conn,
            path,
            mirror: None,
        }
    }

    fn insert_op(principal: &str) -> (Op, oneshot::Receiver<Result<i64, AuditError>>) {
        let rec = Record {
            principal: Some(principal.into()),
            method: "tools/call".into(),
            decision: Decision::Allow,
            outcome: Outcome::Ok,
            ..Record::new()
        };
        let row = PreparedRecord::new(rec, &redact::Redactor::default()).unwrap();
        let (reply, rx) = oneshot::channel();
        (
            Op::Insert {
                row: Box::new(row),
                reply,
            },
            rx,
        )
    }

    fn count(w: &Writer) -> i64 {
        w.conn
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failed_statement_fails_only_its_own_operation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(
            &dir,
            "CREATE TRIGGER t BEFORE INSERT ON audit WHEN NEW.principal = 'evil'
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
        );
        let (a, ra) = insert_op("alice");
        let (b, rb) = insert_op("evil");
        let (c, rc) = insert_op("carol");
        w.apply(&mut vec![a, b, c]);
        let ida = ra.blocking_recv().unwrap().unwrap();
        let err = rb.blocking_recv().unwrap().unwrap_err();
        let idc = rc.blocking_recv().unwrap().unwrap();
        assert!(err.to_string().contains("refused by test"), "{err}");
        assert!(idc > ida);
        assert_eq!(count(&w), 2);
    }

    #[test]
    fn a_rolled_back_transaction_fails_every_operation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(
            &dir,
            "CREATE TRIGGER t BEFORE INSERT ON audit WHEN NEW.principal = 'evil'
             BEGIN SELECT RAISE(ROLLBACK, 'rolled back by test'); END;",
        );
        let (a, ra) = insert_op("alice");
        let (b, rb) = insert_op("evil");
        let (c, rc) = insert_op("carol");
        w.apply(&mut vec![a, b, c]);
        for rx in [ra, rb, rc] {
            let err = rx.blocking_recv().unwrap().unwrap_err();
            assert!(err.to_string().contains("rolled back by test"), "{err}");
        }
        assert_eq!(count(&w), 0);
        // The writer goes on: the next batch commits.
        let (d, rd) = insert_op("dave");
        w.apply(&mut vec![d]);
        rd.blocking_recv().unwrap().unwrap();
        assert_eq!(count(&w), 1);
    }

    #[test]
    fn prepared_records_are_normalized() {
        let r = Record {
            time: "2025-01-02T05:04:05.5+02:00".into(),
            arguments: Some(serde_json::json!({"token": "t0ps3cret"})),
            tags: vec!["tag:a".into()],
            ..Record::default()
        };
        let p = PreparedRecord::new(r, &redact::Redactor::default()).unwrap();
        assert_eq!(p.rec.time, "2025-01-02T03:04:05.500Z");
        assert!(uuid::Uuid::parse_str(&p.rec.request_id).is_ok());
        assert_eq!(p.arguments_json.as_deref(), Some(r#"{"token":"[REDACTED]"}"#));
        assert_eq!(p.tags_json, r#"["tag:a"]"#);
        assert_eq!(p.grants_json, "[]");
        assert!(p.rec.arguments.is_none());
        let bad = Record {
            time: "yesterday".into(),
            ..Record::default()
        };
        assert!(matches!(
            PreparedRecord::new(bad, &redact::Redactor::default()),
            Err(AuditError::Invalid(_))
        ));
    }
}
