//! The audit writer: ONE dedicated thread that owns the write connection, takes every queued
//! operation (up to [`MAX_BATCH`]), applies them in ONE transaction with cached statements,
//! commits, and only then answers each waiter. After the commit it hands the committed records
//! to the journald mirror (which never blocks this thread: see [`super::journald`]).
//!
//! It is also the only place the hash chain grows: each transaction starts from the current
//! chain head (`audit_chain_head`, read under the write lock, or kept from this writer's last
//! commit while `PRAGMA data_version` shows no other connection committed since), gives every
//! inserted row the next id and `row_hash = H(canonical || head)`, links every completion after
//! the head, and writes the new head before COMMIT, so a rolled-back transaction leaves no trace
//! in the chain. Retention pruning runs here too, for
//! the same reason (see [`prune`]).
//!
//! Does not: redact or validate (callers' tasks do that in [`PreparedRecord::new`], off this
//! thread, so the single writer only binds and steps), read for queries, or retry silently: a
//! failed statement fails its own operation; a failed transaction fails every operation in it.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, CompletionFields, GENESIS, Hash, RowFields};
use super::journald::{Event, Mirror};
use super::{AuditError, Decision, Outcome, PruneReport, Record, format_time, now_rfc3339, query, redact};

/// Most operations committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// Operations that may wait for the writer before `record`/`begin`/`complete` callers wait for
/// queue space (backpressure, not unbounded memory).
pub(crate) const QUEUE: usize = 16 * 1024;

/// `method` of the row [`prune`] writes where it deleted rows.
pub(crate) const CHECKPOINT_METHOD: &str = "audit/checkpoint";
/// Most rows one prune transaction deletes: the server's writer waits for the write lock
/// (`busy_timeout`, 5 s) while a prune runs, so a large prune goes in several transactions, each
/// with its own checkpoint.
pub(crate) const PRUNE_BATCH: i64 = 50_000;

/// `identity_source` of a checkpoint row: only the host (the CLI, or the server's own retention)
/// writes one; `verify` ignores `audit/checkpoint` rows from any other source (an MCP client
/// cannot make its request row count as a checkpoint).
pub(crate) const CHECKPOINT_SOURCE: &str = crate::model::IdentitySource::Host.as_str();

const INSERT: &str = "INSERT INTO audit (id, time, request_id, session_id, principal, user_id,
    login, node_id, node_name, tags, remote_addr, identity_source, method, tool, target, arguments,
    decision, reason, grants, outcome, error, duration_ms, result_bytes, prev_hash, row_hash)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22, ?23, ?24, ?25)";
const PENDING_ROW_HASH: &str = "SELECT row_hash FROM audit WHERE id = ?1 AND outcome = 'pending'";
const COMPLETE_WHERE: &str = "UPDATE audit SET outcome = ?2, error = ?3, duration_ms = ?4,
    result_bytes = ?5, completed_after = ?6, completion_prev = ?7, completion_hash = ?8
    WHERE id = ?1 AND outcome = 'pending'";
const READ_HEAD: &str = "SELECT (SELECT head_hash FROM audit_chain_head WHERE id = 1),
    max(coalesce((SELECT last_id FROM audit_chain_head WHERE id = 1), 0),
        coalesce((SELECT max(id) FROM audit), 0))";
const WRITE_HEAD: &str = "INSERT INTO audit_chain_head (id, head_hash, last_id) VALUES (1, ?1, ?2)
    ON CONFLICT (id) DO UPDATE SET head_hash = excluded.head_hash, last_id = excluded.last_id";

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
    Prune {
        before: DateTime<Utc>,
        /// Who prunes (`host:<unix user>`) and from where, recorded in the checkpoint.
        by: String,
        node: String,
        /// Most rows deleted in this one transaction (see [`PRUNE_BATCH`]).
        max_rows: i64,
        reply: oneshot::Sender<Result<PruneReport, AuditError>>,
    },
}

/// A record made ready for the writer on the caller's task: time normalized, request id
/// present, every string capped ([`redact::cap_record`]), arguments redacted, serialized and
/// capped, lists serialized.
pub(crate) struct PreparedRecord {
    /// The record, without `arguments` (they are in `arguments_json`).
    rec: Record,
    arguments_json: Option<String>,
    tags_json: String,
    grants_json: String,
    /// The row's canonical encoding with id 0; the writer fills the id in
    /// ([`chain::ROW_ID_OFFSET`]) and hashes it. Built here, off the writer thread.
    canonical: Vec<u8>,
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
        // Every string a caller can influence (tool name, target, reason, method, the session id
        // a refusal presented, error, ...) is capped here, before it is hashed, stored or mirrored.
        redact::cap_record(&mut rec);
        rec.duration_ms = chain::stored_real(rec.duration_ms);
        let arguments_json = rec
            .arguments
            .take()
            .map(|args| redact::arguments_json(&redactor.redact(&args)));
        let to_json = |v: &[String]| serde_json::Value::from(v).to_string();
        let mut row = PreparedRecord {
            tags_json: to_json(&rec.tags),
            grants_json: to_json(&rec.grants),
            arguments_json,
            rec,
            canonical: Vec::new(),
        };
        row.canonical = row.fields(0).canonical();
        Ok(row)
    }

    /// What the hash chain adds to writing this row, per row, averaged over `iterations`: the
    /// canonical encoding, the SHA-256 link and its hex form, exactly as `new` and the writer
    /// do them. Preparing the row otherwise (time, redaction, JSON) and the INSERT happen with
    /// or without a chain, so they are not counted. For `cargo bench --bench audit`.
    pub(crate) fn chain_cost(&self, iterations: u32) -> std::time::Duration {
        let started = std::time::Instant::now();
        let mut prev = [0u8; 32];
        for id in 1..=i64::from(iterations.max(1)) {
            let canonical = self.fields(id).canonical();
            prev = chain::link(&canonical, &prev);
            std::hint::black_box(chain::to_hex(&prev));
        }
        started.elapsed() / iterations.max(1)
    }

    /// The values as they will be stored, with row id `id`.
    fn fields(&self, id: i64) -> RowFields<'_> {
        let r = &self.rec;
        RowFields {
            id,
            time: &r.time,
            request_id: &r.request_id,
            session_id: r.session_id.as_deref(),
            principal: r.principal.as_deref(),
            user_id: r.user_id,
            login: r.login.as_deref(),
            node_id: r.node_id.as_deref(),
            node_name: r.node_name.as_deref(),
            tags_json: &self.tags_json,
            remote_addr: r.remote_addr.as_deref(),
            identity_source: r.identity_source.as_deref(),
            method: &r.method,
            tool: r.tool.as_deref(),
            target: r.target.as_deref(),
            arguments_json: self.arguments_json.as_deref(),
            decision: r.decision.as_str(),
            reason: r.reason.as_deref(),
            grants_json: &self.grants_json,
            outcome: r.outcome.as_str(),
            error: r.error.as_deref(),
            duration_ms: r.duration_ms,
            result_bytes: r.result_bytes,
        }
    }
}

/// The chain head inside one write transaction.
struct Head {
    hash: Hash,
    last_id: i64,
    changed: bool,
}

/// The chain head `(hash, last id)` as `conn`'s transaction sees it.
pub(crate) fn read_head(conn: &Connection) -> rusqlite::Result<(Hash, i64)> {
    let (hash, last_id): (Option<String>, i64) = conn
        .prepare_cached(READ_HEAD)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // A head that is missing or not a hash (edited from outside) restarts from GENESIS: the
    // break is then visible to `verify` at the next row, and writes go on.
    Ok((hash.as_deref().and_then(chain::from_hex).unwrap_or(GENESIS), last_id))
}

impl Head {
    fn read(conn: &Connection) -> rusqlite::Result<Head> {
        let (hash, last_id) = read_head(conn)?;
        Ok(Head {
            hash,
            last_id,
            changed: false,
        })
    }

    fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.prepare_cached(WRITE_HEAD)?
            .execute(params![chain::to_hex(&self.hash), self.last_id])?;
        Ok(())
    }
}

/// Start the writer thread on `conn` (already opened and migrated by `store::open`).
pub(crate) fn spawn(
    conn: Connection,
    path: PathBuf,
    mirror: Option<Mirror>,
) -> std::io::Result<(mpsc::Sender<Op>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = Writer {
        conn,
        path,
        mirror,
        head: None,
    };
    let handle = std::thread::Builder::new()
        .name("audit-writer".to_string())
        .spawn(move || writer.run(rx))?;
    Ok((tx, handle))
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    mirror: Option<Mirror>,
    /// The chain head this thread's last commit left, with the database's `data_version` then.
    /// Another connection's commit (a CLI `audit prune`) changes `data_version`, and the head is
    /// read again; otherwise the next transaction starts from this one without a query.
    head: Option<(i64, Head)>,
}

/// `BEGIN IMMEDIATE` on a cached statement (a transaction per batch: not worth parsing each
/// time). Dropped without [`Txn::commit`], it rolls back.
struct Txn<'c> {
    conn: &'c Connection,
}

impl<'c> Txn<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Txn<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Txn { conn })
    }

    fn commit(self) -> rusqlite::Result<()> {
        let done = self.conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([]));
        // A failed COMMIT (an I/O error, say) may leave the transaction open: `drop` rolls it
        // back.
        if done.is_ok() {
            std::mem::forget(self);
        }
        done.map(|_| ())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.prepare_cached("ROLLBACK").and_then(|mut s| s.execute([]))
        {
            tracing::error!(error = %e, "audit transaction could not be rolled back");
        }
    }
}

impl std::ops::Deref for Txn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// The database's `data_version`: unchanged while no other connection committed.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))
}

/// An operation after it ran, holding its own typed result until the transaction's fate is
/// known, and what the journald mirror gets once it committed.
enum Answer {
    Insert {
        reply: oneshot::Sender<Result<i64, AuditError>>,
        result: Result<i64, AuditError>,
        event: Option<Event>,
    },
    Complete {
        reply: oneshot::Sender<Result<(), AuditError>>,
        result: Result<(), AuditError>,
        event: Option<Event>,
    },
    Prune {
        reply: oneshot::Sender<Result<PruneReport, AuditError>>,
        result: Result<PruneReport, AuditError>,
        event: Option<Event>,
    },
}

impl Answer {
    fn fail(&mut self, err: AuditError) {
        match self {
            Answer::Insert { result, .. } => *result = Err(err),
            Answer::Complete { result, .. } => *result = Err(err),
            Answer::Prune { result, .. } => *result = Err(err),
        }
    }
}

/// How often the writer gives up its CPU and looks again before it sleeps on an empty queue.
const YIELDS_BEFORE_SLEEP: usize = 2;

/// The next operation, waiting for one if none is queued. Before it sleeps, the writer yields its
/// CPU [`YIELDS_BEFORE_SLEEP`] times, looking again after each: under load the next record is
/// usually on its way (the answers just sent wake the tasks that make them), and catching it here
/// saves a sleep and a wake-up (a futex call on each side and a thread switch). Dev server, 32
/// connections: futex calls per call 0.38-0.45 -> 0.15-0.20, thread switches 1.09-1.33 -> 0.90-1.02.
fn next(rx: &mut mpsc::Receiver<Op>) -> Option<Op> {
    use tokio::sync::mpsc::error::TryRecvError;
    for _ in 0..YIELDS_BEFORE_SLEEP {
        match rx.try_recv() {
            Ok(op) => return Some(op),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    rx.blocking_recv()
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Ends when every `Auditor` is gone: the queue is drained first.
        while let Some(op) = next(&mut rx) {
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
            for answer in &mut answers {
                answer.fail(AuditError::Write {
                    path: self.path.clone(),
                    op,
                    source: Arc::clone(&e),
                });
            }
        }
        // Every waiter first, then journald: its sends must not delay an answer.
        let mut events = Vec::with_capacity(if self.mirror.is_some() { answers.len() } else { 0 });
        for answer in answers {
            // A waiter that gave up (dropped its future) is fine: the row is committed anyway.
            let (committed, event) = match answer {
                Answer::Insert { reply, result, event } => {
                    let ok = result.is_ok();
                    let _ = reply.send(result);
                    (ok, event)
                }
                Answer::Complete { reply, result, event } => {
                    let ok = result.is_ok();
                    let _ = reply.send(result);
                    (ok, event)
                }
                Answer::Prune { reply, result, event } => {
                    let ok = result.is_ok();
                    let _ = reply.send(result);
                    (ok, event)
                }
            };
            if let (true, Some(event)) = (committed, event) {
                events.push(event);
            }
        }
        if let Some(mirror) = &mut self.mirror {
            for event in events {
                mirror.send(event);
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
        let mirroring = self.mirror.is_some();
        let path = &self.path;
        let write_err = |op, e| AuditError::Write {
            path: path.clone(),
            op,
            source: Arc::new(e),
        };
        // Whatever happens below, the cached head is only trusted again after a commit.
        let cached = self.head.take();
        let tx = match Txn::begin(&self.conn) {
            Ok(tx) => tx,
            Err(e) => {
                answers.extend(batch.drain(..).map(|op| unanswered(op, path)));
                return Err(("begin", e));
            }
        };
        let started = data_version(&tx).and_then(|version| match cached {
            Some((v, head)) if v == version => Ok((version, head)),
            _ => Head::read(&tx).map(|head| (version, head)),
        });
        let (version, mut head) = match started {
            Ok(started) => started,
            Err(e) => {
                answers.extend(batch.drain(..).map(|op| unanswered(op, path)));
                return Err(("read chain head", e));
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
                    let (result, event) = match insert(&tx, &row, &mut head) {
                        Ok((id, row_hash)) => {
                            let event = mirroring.then_some(Event {
                                rec: Record {
                                    id: Some(id),
                                    ..row.rec
                                },
                                row_hash: Some(row_hash),
                                completion_hash: None,
                            });
                            (Ok(id), event)
                        }
                        Err(e) if tx.is_autocommit() => {
                            failed = Some(("insert", e));
                            (Err(AuditError::WriterGone { path: path.clone() }), None)
                        }
                        Err(e) => (Err(write_err("insert", e)), None),
                    };
                    answers.push(Answer::Insert { reply, result, event });
                }
                Op::Complete {
                    id,
                    outcome,
                    error,
                    duration_ms,
                    result_bytes,
                    reply,
                } => {
                    let done = complete(
                        &tx,
                        &mut head,
                        mirroring,
                        Completion {
                            id,
                            outcome,
                            error: error.as_deref(),
                            duration_ms,
                            result_bytes,
                        },
                    );
                    let (result, event) = match done {
                        Ok(Some(event)) => (Ok(()), event),
                        Ok(None) => (Err(AuditError::NotPending { path: path.clone(), id }), None),
                        Err(e) if tx.is_autocommit() => {
                            failed = Some(("complete", e));
                            (Err(AuditError::WriterGone { path: path.clone() }), None)
                        }
                        Err(e) => (Err(write_err("complete", e)), None),
                    };
                    answers.push(Answer::Complete { reply, result, event });
                }
                Op::Prune {
                    before,
                    by,
                    node,
                    max_rows,
                    reply,
                } => {
                    let (result, event) = match prune(&tx, &mut head, before, &by, &node, max_rows) {
                        Ok((report, event)) => (Ok(report), event.filter(|_| mirroring)),
                        Err(e) if tx.is_autocommit() => {
                            failed = Some(("prune", e));
                            (Err(AuditError::WriterGone { path: path.clone() }), None)
                        }
                        Err(e) => (Err(write_err("prune", e)), None),
                    };
                    answers.push(Answer::Prune { reply, result, event });
                }
            }
        }
        // SQLite rolled the whole transaction back (I/O error, disk full, ...): what ran before
        // is gone too, so the batch fails as one. A statement-level failure (a constraint)
        // fails only its own operation.
        if let Some(failed) = failed {
            return Err(failed);
        }
        if head.changed {
            head.write(&tx).map_err(|e| ("write chain head", e))?;
        }
        tx.commit().map_err(|e| ("commit", e))?;
        head.changed = false;
        self.head = Some((version, head));
        Ok(())
    }
}

/// An operation that never ran (its transaction could not start or already failed); its result
/// is replaced with the transaction's error.
fn unanswered(op: Op, path: &std::path::Path) -> Answer {
    let gone = || AuditError::WriterGone {
        path: path.to_path_buf(),
    };
    match op {
        Op::Insert { reply, .. } => Answer::Insert {
            reply,
            result: Err(gone()),
            event: None,
        },
        Op::Complete { reply, .. } => Answer::Complete {
            reply,
            result: Err(gone()),
            event: None,
        },
        Op::Prune { reply, .. } => Answer::Prune {
            reply,
            result: Err(gone()),
            event: None,
        },
    }
}

/// Insert `row` as the next link after `head`: `(id, row_hash)`. `head` advances only when the
/// row was stored.
fn insert(conn: &Connection, row: &PreparedRecord, head: &mut Head) -> rusqlite::Result<(i64, String)> {
    let r = &row.rec;
    let id = head.last_id + 1;
    let mut canonical = row.canonical.clone();
    canonical[chain::ROW_ID_OFFSET..chain::ROW_ID_OFFSET + 8].copy_from_slice(&id.to_be_bytes());
    let hash = chain::link(&canonical, &head.hash);
    let row_hash = chain::to_hex(&hash);
    let mut stmt = conn.prepare_cached(INSERT)?;
    stmt.execute(params![
        id,
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
        chain::to_hex(&head.hash),
        row_hash,
    ])?;
    head.hash = hash;
    head.last_id = id;
    head.changed = true;
    Ok((id, row_hash))
}

/// What completing a pending row sets.
struct Completion<'a> {
    id: i64,
    outcome: Outcome,
    error: Option<&'a str>,
    duration_ms: f64,
    result_bytes: Option<i64>,
}

/// Complete pending row `c.id` and link the completion after `head`. `Ok(None)`: no pending row
/// `c.id`. `Ok(Some(event))`: completed, with the mirror's event when `mirroring` (the row read
/// back with `RETURNING`).
fn complete(
    conn: &Connection,
    head: &mut Head,
    mirroring: bool,
    c: Completion<'_>,
) -> rusqlite::Result<Option<Option<Event>>> {
    let row_hash: Option<Option<String>> = conn
        .prepare_cached(PENDING_ROW_HASH)?
        .query_row([c.id], |r| r.get(0))
        .optional()?;
    let Some(row_hash) = row_hash else {
        return Ok(None);
    };
    let duration_ms = chain::stored_real(Some(c.duration_ms));
    let fields = CompletionFields {
        id: c.id,
        row_hash: row_hash.as_deref(),
        completed_after: head.last_id,
        outcome: c.outcome.as_str(),
        error: c.error,
        duration_ms,
        result_bytes: c.result_bytes,
    };
    let hash = chain::link(&fields.canonical(), &head.hash);
    let completion_hash = chain::to_hex(&hash);
    let args = params![
        c.id,
        c.outcome.as_str(),
        c.error,
        duration_ms,
        c.result_bytes,
        head.last_id,
        chain::to_hex(&head.hash),
        completion_hash,
    ];
    let event = if mirroring {
        static SQL: LazyLock<String> =
            LazyLock::new(|| format!("{COMPLETE_WHERE} RETURNING {}", query::COLUMNS_WITHOUT_ARGUMENTS));
        let mut stmt = conn.prepare_cached(&SQL)?;
        let Some(rec) = stmt.query_row(args, query::from_row).optional()? else {
            return Ok(None);
        };
        Some(Event {
            rec,
            row_hash,
            completion_hash: Some(completion_hash),
        })
    } else {
        if conn.prepare_cached(COMPLETE_WHERE)?.execute(args)? != 1 {
            return Ok(None);
        }
        None
    };
    head.hash = hash;
    head.changed = true;
    Ok(Some(event))
}

/// What pruning before `before` would delete, computed inside the caller's transaction from
/// `head` (the chain head as of that transaction). `None`: nothing to delete.
///
/// The prefix ends at the first row (by id) at or after `before`, and earlier if needed so that
/// no deleted row's completion is linked after a kept row (that link would dangle). Pending rows
/// in the prefix are deleted (a call that never completed within the retention period is not
/// going to).
pub(crate) struct PrunePlan {
    count: i64,
    first: i64,
    last: i64,
    first_time: String,
    last_time: String,
    last_hash: Option<String>,
    /// The first row kept (the checkpoint's own id when everything goes).
    cut: i64,
    /// The `prev_hash` the first kept row continues from.
    resume_prev: Option<String>,
}

///
/// At most `max_rows` rows go (a cap that would leave nothing to delete because of a dangling
/// completion is ignored, so every call makes progress).
pub(crate) fn plan_prune(
    conn: &Connection,
    head_hash: &Hash,
    last_id: i64,
    before: &str,
    max_rows: i64,
) -> rusqlite::Result<Option<PrunePlan>> {
    let first: Option<i64> = conn.query_row("SELECT min(id) FROM audit", [], |r| r.get(0))?;
    let checkpoint_id = last_id + 1;
    let by_time: i64 = conn
        .query_row(
            "SELECT id FROM audit WHERE time >= ?1 ORDER BY id LIMIT 1",
            [before],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(checkpoint_id);
    let Some(first) = first else {
        return Ok(None);
    };
    let mut cut = keep_completions_linked(conn, by_time)?;
    let capped: Option<i64> = conn
        .query_row(
            "SELECT id FROM audit WHERE id >= ?1 ORDER BY id LIMIT 1 OFFSET ?2",
            [first, max_rows.max(1)],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(c) = capped.filter(|c| *c < cut) {
        let c = keep_completions_linked(conn, c)?;
        if c > first {
            cut = c;
        }
    }
    if first >= cut {
        return Ok(None);
    }
    let (count, last): (i64, i64) =
        conn.query_row("SELECT count(*), max(id) FROM audit WHERE id < ?1", [cut], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let time_of = |id: i64| -> rusqlite::Result<String> {
        conn.query_row("SELECT time FROM audit WHERE id = ?1", [id], |r| r.get(0))
    };
    let last_hash: Option<String> = conn.query_row("SELECT row_hash FROM audit WHERE id = ?1", [last], |r| r.get(0))?;
    let resume_prev: Option<String> = if cut == checkpoint_id {
        Some(chain::to_hex(head_hash))
    } else {
        conn.query_row("SELECT prev_hash FROM audit WHERE id = ?1", [cut], |r| r.get(0))?
    };
    Ok(Some(PrunePlan {
        count,
        first,
        last,
        first_time: time_of(first)?,
        last_time: time_of(last)?,
        last_hash,
        cut,
        resume_prev,
    }))
}

/// Move `cut` earlier until no row before it has its completion linked at or after it (that
/// link would dangle once the row is gone).
fn keep_completions_linked(conn: &Connection, mut cut: i64) -> rusqlite::Result<i64> {
    loop {
        let earlier: Option<i64> = conn.query_row(
            "SELECT min(id) FROM audit WHERE id < ?1 AND completed_after >= ?1",
            [cut],
            |r| r.get(0),
        )?;
        match earlier {
            Some(id) => cut = id,
            None => return Ok(cut),
        }
    }
}

impl PrunePlan {
    /// The report of this plan; `checkpoint_id` is the row the checkpoint gets (or would get).
    pub(crate) fn report(&self, before: DateTime<Utc>, by: &str, checkpoint_id: i64) -> PruneReport {
        PruneReport {
            before,
            pruned: u64::try_from(self.count).unwrap_or(0),
            first_pruned_id: Some(self.first),
            last_pruned_id: Some(self.last),
            first_pruned_time: Some(self.first_time.clone()),
            last_pruned_time: Some(self.last_time.clone()),
            last_pruned_hash: self.last_hash.clone(),
            resume_id: Some(self.cut),
            resume_prev_hash: self.resume_prev.clone(),
            checkpoint_id: Some(checkpoint_id),
            pruned_by: Some(by.to_string()),
            checkpoints: 1,
            dry_run: false,
        }
    }
}

/// Delete the oldest rows (see [`plan_prune`]) and, in the same transaction, first append a
/// checkpoint row saying what was deleted, by whom, and where the chain resumes, so `verify`
/// can start from the first remaining row. The checkpoint is an ordinary link (hashed after
/// `head`, written through [`insert`]), so editing or deleting it later breaks the chain. It is
/// inserted before the delete, so ids keep growing even when every earlier row goes. Nothing
/// to delete: no checkpoint, an empty report.
fn prune(
    conn: &Connection,
    head: &mut Head,
    before: DateTime<Utc>,
    by: &str,
    node: &str,
    max_rows: i64,
) -> rusqlite::Result<(PruneReport, Option<Event>)> {
    let before_text = format_time(before);
    let Some(plan) = plan_prune(conn, &head.hash, head.last_id, &before_text, max_rows)? else {
        return Ok((
            PruneReport {
                before,
                pruned_by: Some(by.to_string()),
                ..PruneReport::default()
            },
            None,
        ));
    };
    let none = || "none".to_string();
    let reason = format!(
        "pruned {} rows (ids {}..={}, {} to {}) older than {before_text} by {by}; last pruned row hash {}; \
         chain resumes at id {} from {}",
        plan.count,
        plan.first,
        plan.last,
        plan.first_time,
        plan.last_time,
        plan.last_hash.clone().unwrap_or_else(none),
        plan.cut,
        plan.resume_prev.clone().unwrap_or_else(none),
    );
    let checkpoint = Record {
        principal: Some(by.to_string()),
        node_name: Some(node.to_string()),
        identity_source: Some(CHECKPOINT_SOURCE.to_string()),
        method: CHECKPOINT_METHOD.to_string(),
        decision: Decision::Allow,
        outcome: Outcome::Ok,
        reason: Some(reason),
        arguments: Some(serde_json::json!({
            "before": before_text,
            "pruned_rows": plan.count,
            "first_pruned_id": plan.first,
            "last_pruned_id": plan.last,
            "first_pruned_time": plan.first_time,
            "last_pruned_time": plan.last_time,
            "last_pruned_hash": plan.last_hash,
            "resume_id": plan.cut,
            "resume_prev_hash": plan.resume_prev,
            "pruned_by": by,
        })),
        ..Record::new()
    };
    let row = PreparedRecord::new(checkpoint, &redact::Redactor::default())
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.to_string().into()))?;
    let (id, row_hash) = insert(conn, &row, head)?;
    let deleted = conn.execute("DELETE FROM audit WHERE id < ?1", [plan.cut])?;
    if i64::try_from(deleted).ok() != Some(plan.count) {
        // Cannot happen inside one write transaction; refuse rather than record a wrong count.
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!("prune planned {} rows but deleted {deleted}", plan.count).into(),
        ));
    }
    let report = plan.report(before, by, id);
    let event = Event {
        rec: Record {
            id: Some(id),
            ..row.rec
        },
        row_hash: Some(row_hash),
        completion_hash: None,
    };
    Ok((report, Some(event)))
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
            head: None,
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

    /// The writer keeps the chain head between transactions; a commit by another connection
    /// (another writer on the same file, as `audit prune` from the CLI is) must make it read the
    /// head again, or its next row would reuse an id or link after a stale hash.
    #[test]
    fn a_commit_by_another_connection_is_chained_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir, "");
        let mut other = writer(&dir, "");
        let mut ids = Vec::new();
        for round in 0..9 {
            // Two batches from `w`, then one from `other`, three times.
            let by = if round % 3 == 2 { &mut other } else { &mut w };
            let (op, rx) = insert_op(&format!("user{round}"));
            by.apply(&mut vec![op]);
            ids.push(rx.blocking_recv().unwrap().unwrap());
        }
        assert_eq!(ids, (1..=9).collect::<Vec<_>>());
        let report = crate::audit::verify_path(&dir.path().join("audit.db")).unwrap();
        assert!(report.broken.is_none(), "{:?}", report.broken);
        assert_eq!(report.chained, 9);
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
