//! The audit trail: one record per `tools/call` and per request refused at the identity layer,
//! committed to SQLite (the record) and mirrored to journald (a copy for log pipelines).
//!
//! Owns: the [`Record`] shape, the [`Auditor`] (the only writer of audit rows: one dedicated
//! thread that group-commits whatever is queued), redaction of arguments before they reach disk,
//! the hash chain that makes edits, deletions and reordering detectable ([`verify_path`]),
//! retention pruning with checkpoints ([`Auditor::prune`]), the journald mirror, and the queries,
//! renderings and SIEM export ([`export_jsonl`]) the CLI uses.
//!
//! Does not: decide anything (policy does), run tools, or get called by tools (the `call` pipeline
//! records around them). It never drops a record silently: every write either resolves after
//! its transaction committed or returns an error the caller must act on (refuse the action).
//!
//! **Invariant:** `record`, `begin` and `complete` resolve only after COMMIT; journald failures
//! never fail or delay a SQLite write.
//!
//! **Invariant:** only the writer thread extends the hash chain (`chain` defines the encoding,
//! `verify` re-checks it); every row it inserts is hashed over its canonical content and the
//! previous link, and a completion is a link of its own.

mod chain;
mod export;
mod journald;
mod query;
mod redact;
mod refusals;
mod render;
mod verify;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;
use crate::tailnet::Caller;

/// `SYSLOG_IDENTIFIER` of every audit event mirrored to journald (`journalctl -t
/// tailopsmcp-audit`). The `logs` tools withhold events with it from callers without `audit:read`.
pub const JOURNAL_IDENTIFIER: &str = "tailopsmcp-audit";

/// The journald fields of every mirrored audit event (name, meaning), for the README. Fields
/// without a value are omitted. `arguments` are never sent to journald.
pub const JOURNAL_FIELDS: &[(&str, &str)] = &[
    (
        "SYSLOG_IDENTIFIER",
        "always `tailopsmcp-audit` (not trusted on its own: pair with `_SYSTEMD_UNIT`)",
    ),
    (
        "MESSAGE",
        "one-line summary: `principal tool-or-method target decision outcome`",
    ),
    ("PRIORITY", "6 (info), 4 (warning) for a deny"),
    (
        "TAILOPS_AUDIT_ID",
        "row id in the SQLite audit table (the authoritative record)",
    ),
    (
        "TAILOPS_REQUEST_ID",
        "uuid of the request; a begin and its completion share it",
    ),
    ("TAILOPS_SESSION_ID", "MCP session id, when there is one"),
    (
        "TAILOPS_PRINCIPAL",
        "the caller: login, or comma-joined tags for a tagged node",
    ),
    ("TAILOPS_USER_ID", "tailnet UserProfile.ID"),
    (
        "TAILOPS_LOGIN",
        "tailnet login name (`tagged-devices` for tagged nodes)",
    ),
    ("TAILOPS_NODE_ID", "caller's Node.StableID"),
    ("TAILOPS_NODE", "caller's MagicDNS node name"),
    ("TAILOPS_TAGS", "caller's node tags, comma-joined"),
    ("TAILOPS_REMOTE_ADDR", "TCP peer ip:port"),
    ("TAILOPS_IDENTITY_SOURCE", "how identity was resolved: `whois` or `dev`"),
    (
        "TAILOPS_METHOD",
        "MCP method (`tools/call`), or `http` for identity-layer refusals",
    ),
    ("TAILOPS_TOOL", "tool name"),
    ("TAILOPS_TARGET", "target the tool acted on"),
    ("TAILOPS_DECISION", "`allow` or `deny`"),
    ("TAILOPS_REASON", "why policy decided so"),
    ("TAILOPS_GRANTS", "grants that allowed the call, comma-joined"),
    ("TAILOPS_OUTCOME", "`pending`, `ok`, `error` or `denied`"),
    ("TAILOPS_ERROR", "error message when outcome is `error`"),
    (
        "TAILOPS_DURATION_MS",
        "how long the tool ran, in milliseconds to the microsecond (e.g. `0.412`)",
    ),
    ("TAILOPS_RESULT_BYTES", "size of the result as JSON, in bytes"),
    (
        "TAILOPS_ROW_HASH",
        "the row's `row_hash` in the SQLite hash chain (64 hex digits); a begin and its completion carry the same one",
    ),
    (
        "TAILOPS_COMPLETION_HASH",
        "on a completion event: the `completion_hash` that links the outcome into the chain",
    ),
];

/// The policy decision for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    /// The default, so a record built without a decision can never read as allowed.
    #[default]
    Deny,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Committed by [`Auditor::begin`] before the action ran; not completed (yet).
    #[default]
    Pending,
    Ok,
    Error,
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Denied => "denied",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            other => Err(format!("unknown decision {other:?} (allow, deny)")),
        }
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Outcome::Pending),
            "ok" => Ok(Outcome::Ok),
            "error" => Ok(Outcome::Error),
            "denied" => Ok(Outcome::Denied),
            other => Err(format!("unknown outcome {other:?} (pending, ok, error, denied)")),
        }
    }
}

/// One audit record: who called, what, what policy decided, and what happened.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Record {
    /// Row id, set by the store.
    pub id: Option<i64>,
    /// RFC 3339 UTC with milliseconds (`2025-01-02T03:04:05.678Z`), set by [`Record::new`].
    /// Left empty, the time of insertion is used; another offset is converted to UTC; a value
    /// that is not RFC 3339 is refused ([`AuditError::Invalid`]).
    pub time: String,
    /// uuid v4, set by [`Record::new`]. Left empty, the writer makes one.
    pub request_id: String,
    pub session_id: Option<String>,
    pub principal: Option<String>,
    pub user_id: Option<i64>,
    pub login: Option<String>,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    pub tags: Vec<String>,
    pub remote_addr: Option<String>,
    /// `"whois"` | `"dev"`.
    pub identity_source: Option<String>,
    /// MCP method (`"tools/call"`), or `"http"` for identity-layer refusals.
    pub method: String,
    pub tool: Option<String>,
    pub target: Option<String>,
    /// Stored redacted (see [`AuditOptions::redact_fields`]).
    pub arguments: Option<serde_json::Value>,
    pub decision: Decision,
    pub reason: Option<String>,
    pub grants: Vec<String>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub duration_ms: Option<f64>,
    pub result_bytes: Option<i64>,
}

impl Record {
    /// An empty record stamped with the current time and a fresh request id.
    pub fn new() -> Record {
        Record {
            time: now_rfc3339(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Record::default()
        }
    }

    /// [`Record::new`] with the identity fields filled from `caller`.
    pub fn for_caller(caller: &Caller) -> Record {
        Record {
            principal: Some(caller.principal.clone()),
            user_id: caller.user_id,
            login: Some(caller.login.clone()),
            node_id: Some(caller.node_id.clone()),
            node_name: Some(caller.node_name.clone()),
            tags: caller.tags.clone(),
            remote_addr: Some(crate::tailnet::unmap_socket(caller.addr).to_string()),
            identity_source: Some(caller.source.as_str().to_string()),
            ..Record::new()
        }
    }
}

impl Record {
    /// The record of one MCP request (`method`) by `caller` in `session`.
    pub fn request(caller: &Caller, session: Option<String>, method: &str) -> Record {
        Record {
            session_id: session,
            method: method.to_string(),
            ..Record::for_caller(caller)
        }
    }

    /// This record as a denial: the request did not run, for `reason`.
    pub fn denied(mut self, reason: String) -> Record {
        self.decision = Decision::Deny;
        self.outcome = Outcome::Denied;
        self.reason = Some(reason);
        self
    }

    /// For a summary row of repeated refusals ([`Auditor::refuse`]): how many more identical
    /// refusals it stands for (the row itself counts the first). `None` for any other row.
    pub fn repeated(&self) -> Option<u64> {
        refusals::repeated(self)
    }
}

pub use crate::config::DEFAULT_REFUSAL_WINDOW;

/// Where the call pipeline writes its rows: the [`Auditor`], or a recorder in tests. The
/// methods mean what the [`Auditor`]'s of the same names do.
pub trait Sink: Send + Sync + 'static {
    /// A complete row; resolves once committed.
    fn record(&self, rec: Record) -> impl Future<Output = Result<i64, AuditError>> + Send;
    /// A refused request (identical refusals may share one row).
    fn refuse(&self, rec: Record) -> impl Future<Output = Result<(), AuditError>> + Send;
    /// The pending row of a changing call, committed before it runs.
    fn begin(&self, rec: Record) -> impl Future<Output = Result<i64, AuditError>> + Send;
    /// Complete the pending row `id`.
    fn complete(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<String>,
        duration_ms: f64,
        result_bytes: Option<i64>,
    ) -> impl Future<Output = Result<(), AuditError>> + Send;
    /// `value` as a row would store it (secret-looking keys redacted).
    fn redacted(&self, value: &serde_json::Value) -> serde_json::Value;
}

impl Sink for Auditor {
    fn record(&self, rec: Record) -> impl Future<Output = Result<i64, AuditError>> + Send {
        Auditor::record(self, rec)
    }
    fn refuse(&self, rec: Record) -> impl Future<Output = Result<(), AuditError>> + Send {
        Auditor::refuse(self, rec)
    }
    fn begin(&self, rec: Record) -> impl Future<Output = Result<i64, AuditError>> + Send {
        Auditor::begin(self, rec)
    }
    fn complete(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<String>,
        duration_ms: f64,
        result_bytes: Option<i64>,
    ) -> impl Future<Output = Result<(), AuditError>> + Send {
        Auditor::complete(self, id, outcome, error, duration_ms, result_bytes)
    }
    fn redacted(&self, value: &serde_json::Value) -> serde_json::Value {
        Auditor::redacted(self, value)
    }
}

/// How the [`Auditor`] treats records.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Extra argument keys to redact (case-insensitive, `-`/`_` ignored, exact match), on top of
    /// the built-in secret-looking keys.
    pub redact_fields: Vec<String>,
    /// Mirror each committed record to journald when `/run/systemd/journal/socket` exists.
    pub journald: bool,
    /// Identical refusals ([`Auditor::refuse`]) within this window become one summary row with
    /// a count; zero writes each refusal as its own row.
    pub refusal_window: Duration,
}

impl Default for AuditOptions {
    /// No extra redaction, no journald, [`DEFAULT_REFUSAL_WINDOW`].
    fn default() -> AuditOptions {
        AuditOptions {
            redact_fields: Vec::new(),
            journald: false,
            refusal_window: DEFAULT_REFUSAL_WINDOW,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("open audit store: {0}")]
    Store(#[from] StoreError),
    #[error("start audit writer thread for {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("audit writer for {path} has stopped; record not stored")]
    WriterGone { path: PathBuf },
    #[error("{op} audit record in {path}: {source}")]
    Write {
        path: PathBuf,
        op: &'static str,
        source: Arc<rusqlite::Error>,
    },
    #[error("complete audit record {id} in {path}: no such pending record")]
    NotPending { path: PathBuf, id: i64 },
    #[error("invalid audit record: {0}")]
    Invalid(String),
    #[error("query audit records in {path}: {source}")]
    Query { path: PathBuf, source: rusqlite::Error },
    #[error("export audit records: {0}")]
    Export(#[source] std::io::Error),
}

/// What [`Auditor::prune`] did. With nothing to prune, `pruned` is 0 and no checkpoint was
/// written.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PruneReport {
    /// The cut-off asked for: rows older than this were candidates.
    pub before: DateTime<Utc>,
    pub pruned: u64,
    pub first_pruned_id: Option<i64>,
    pub last_pruned_id: Option<i64>,
    /// Time of the first and last deleted row (the span pruned).
    pub first_pruned_time: Option<String>,
    pub last_pruned_time: Option<String>,
    /// `row_hash` of the last deleted row (also named in the checkpoint row).
    pub last_pruned_hash: Option<String>,
    /// The first row kept: the chain is verifiable from here.
    pub resume_id: Option<i64>,
    /// The `prev_hash` the first kept row continues from (the anchor `verify` starts at).
    pub resume_prev_hash: Option<String>,
    /// The checkpoint row (`method = "audit/checkpoint"`); with `dry_run`, the id it would get.
    pub checkpoint_id: Option<i64>,
    /// Who pruned: `host:<unix user>`.
    pub pruned_by: Option<String>,
    /// Checkpoint rows written (one per transaction of at most 50,000 rows).
    pub checkpoints: u64,
    /// Only planned: nothing was deleted or written.
    pub dry_run: bool,
}

impl fmt::Display for PruneReport {
    /// One paragraph for `tailopsmcp audit prune`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let before = format_time(self.before);
        let (Some(first), Some(last)) = (self.first_pruned_id, self.last_pruned_id) else {
            return write!(f, "nothing to prune: no row older than {before} can go");
        };
        let verb = if self.dry_run { "would prune" } else { "pruned" };
        let q = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        write!(
            f,
            "{verb} {} rows (ids {first}..={last}, {} to {}) older than {before}; last pruned row hash {}; \
             chain resumes at id {} from {}; {}checkpoint row {}{}",
            self.pruned,
            q(&self.first_pruned_time),
            q(&self.last_pruned_time),
            q(&self.last_pruned_hash),
            self.resume_id.map_or("?".into(), |i| i.to_string()),
            q(&self.resume_prev_hash),
            if self.checkpoints > 1 {
                format!("{} checkpoints, the newest ", self.checkpoints)
            } else {
                String::new()
            },
            self.checkpoint_id.map_or("?".into(), |i| i.to_string()),
            match (&self.pruned_by, self.dry_run) {
                (_, true) => " (dry run: nothing deleted or written)".to_string(),
                (Some(by), false) => format!(" by {by}"),
                (None, false) => String::new(),
            }
        )
    }
}

/// A verified checkpoint row, as `audit verify` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckpointInfo {
    /// The checkpoint row's id and time.
    pub id: i64,
    pub time: String,
    /// Who pruned (`host:<unix user>`).
    pub pruned_by: Option<String>,
    pub pruned_rows: Option<i64>,
    pub first_pruned_id: Option<i64>,
    pub last_pruned_id: Option<i64>,
    pub last_pruned_hash: Option<String>,
    pub resume_id: Option<i64>,
}

impl fmt::Display for CheckpointInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<i64>| v.map_or("?".into(), |i| i.to_string());
        write!(
            f,
            "checkpoint row {} at {} by {}: pruned {} rows (ids {}..={}), last pruned hash {}, chain resumed at id {}",
            self.id,
            self.time,
            self.pruned_by.as_deref().unwrap_or("?"),
            n(self.pruned_rows),
            n(self.first_pruned_id),
            n(self.last_pruned_id),
            self.last_pruned_hash.as_deref().unwrap_or("none"),
            n(self.resume_id),
        )
    }
}

/// The result of [`verify_path`]: counts, and the first broken link if there is one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Rows read.
    pub rows: u64,
    /// Rows with a verified `row_hash`.
    pub chained: u64,
    /// Rows written before the chain existed (schema 1), all before the first chained row.
    pub unchained: u64,
    /// Completion links verified.
    pub completions: u64,
    /// Checkpoint rows (`audit/checkpoint`) among the rows.
    pub checkpoints: u64,
    /// The verified checkpoint rows (what was pruned, by whom), oldest first, up to the first
    /// broken link.
    pub checkpoint_rows: Vec<CheckpointInfo>,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// The chain's last link (64 hex digits): compare with the newest `TAILOPS_ROW_HASH` /
    /// `TAILOPS_COMPLETION_HASH` in journald, or keep it somewhere else, to detect rows removed
    /// from the end by someone who also rewrote the head.
    pub head: Option<String>,
    /// `None`: the chain verifies.
    pub broken: Option<BrokenLink>,
}

impl VerifyReport {
    /// Whether the whole chain verified.
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// The first link that does not verify: the row where the walk stopped and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokenLink {
    /// The row id the problem was found at.
    pub id: i64,
    pub kind: BrokenKind,
    /// A one-line explanation for people (ids, expected and found hashes).
    pub detail: String,
}

/// Kinds of broken links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokenKind {
    /// The row's content no longer hashes to its `row_hash`: a field was edited, or rows were
    /// swapped (the id is part of the hash).
    RowHash,
    /// A completed row's outcome fields no longer hash to its `completion_hash`.
    CompletionHash,
    /// The row's `prev_hash` is not the previous link: a row (or a completion) before it was
    /// deleted, or rows were reordered.
    PrevHash,
    /// The ids jump: rows were deleted even though the hashes were recomputed.
    IdGap,
    /// The first row does not start the chain: not from the genesis hash, and not where the
    /// newest checkpoint says the chain resumes (rows deleted from the start).
    Start,
    /// A hash column is empty or not a hash after the chain began.
    MissingHash,
    /// A completion link that no later link continues from, or two links claiming the same
    /// predecessor.
    CompletionLink,
    /// The chain does not end where the writer last recorded its head (rows deleted from the
    /// end).
    Tail,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "broken at row {}: {}", self.id, self.detail)
    }
}

impl fmt::Display for VerifyReport {
    /// One paragraph for `tailopsmcp audit verify`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match (self.first_id, self.last_id) {
            (Some(a), Some(b)) => format!(" (ids {a}..={b})"),
            _ => String::new(),
        };
        match &self.broken {
            None => write!(
                f,
                "audit chain OK: {} rows{range}, {} chained, {} completions, {} checkpoints",
                self.rows, self.chained, self.completions, self.checkpoints
            )?,
            Some(b) => write!(f, "audit chain BROKEN {b} (checked {} rows before it)", self.rows)?,
        }
        if self.unchained > 0 {
            write!(
                f,
                "; {} rows written before the chain existed are not covered",
                self.unchained
            )?;
        }
        if let (None, Some(head)) = (&self.broken, &self.head) {
            write!(f, "; head {head}")?;
        }
        for c in &self.checkpoint_rows {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

/// The audit writer and reader. Cheap to clone (an `Arc` inside); `Send + Sync`.
///
/// Writes go to ONE dedicated thread owning the write connection: it takes everything queued
/// (up to [`writer::MAX_BATCH`] operations), runs them in one transaction with cached
/// statements, commits, and only then wakes each waiter. Reads use their own connection.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<writer::Op>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    read: Mutex<rusqlite::Connection>,
    redact: redact::Redactor,
    /// `None` when the refusal window is zero.
    refusals: Option<refusals::Refusals>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Summaries of open refusal windows are queued before the channel closes, so none is
        // lost at shutdown.
        if let (Some(refusals), Some(tx)) = (&self.refusals, &self.tx) {
            for rec in refusals.drain() {
                queue_blocking(tx, rec, &self.redact, &self.path);
            }
        }
        // Closing the channel lets the writer finish what is queued and exit; joining makes the
        // last commit (and the WAL checkpoint on close) happen before the process moves on.
        self.tx.take();
        let handle = self.thread.get_mut().ok().and_then(Option::take);
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Auditor {
    /// Open (creating and migrating) the audit database at `path` and start the writer thread
    /// (and, with `opts.journald` and an existing journald socket, the mirror's sender thread; a
    /// missing socket is a warning, not an error).
    pub fn open(path: &Path, opts: AuditOptions) -> Result<Auditor, AuditError> {
        let write = crate::store::open(path)?;
        let read = crate::store::open_readonly(path)?;
        let mirror = if opts.journald {
            journald::Mirror::start(Path::new(journald::SOCKET))
        } else {
            None
        };
        let (tx, handle) = writer::spawn(write, path.to_path_buf(), mirror).map_err(|source| AuditError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Auditor {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                tx: Some(tx),
                thread: Mutex::new(Some(handle)),
                read: Mutex::new(read),
                redact: redact::Redactor::new(&opts.redact_fields),
                refusals: (!opts.refusal_window.is_zero()).then(|| refusals::Refusals::new(opts.refusal_window)),
            }),
        })
    }

    /// Record a refusal (an identity-layer refusal or a denied call), aggregating repeats: the
    /// first refusal with a given key (principal, or the peer's IP without port when there is
    /// none; method, tool, target, reason) is written at once and resolves after COMMIT, like
    /// [`Auditor::record`]. Identical refusals within [`AuditOptions::refusal_window`] resolve
    /// at once and are only counted; when the window ends, a summary row is written whose
    /// `reason` starts `repeated N more times FIRST–LAST:` and whose arguments are
    /// `{"repeated": N, "first": …, "last": …}` ([`Record::repeated`] reads it). Summaries of
    /// open windows are written by [`Auditor::flush_refusals`] and when the auditor is dropped.
    /// At most 1,024 windows are open; beyond that, refusals are written one row each.
    ///
    /// `decision` and `outcome` are set to deny/denied.
    pub async fn refuse(&self, mut rec: Record) -> Result<(), AuditError> {
        rec.decision = Decision::Deny;
        rec.outcome = Outcome::Denied;
        let Some(refusals) = &self.inner.refusals else {
            return self.record(rec).await.map(drop);
        };
        // Capped first, so the key (and the window's copy) is small whatever was sent.
        redact::cap_record(&mut rec);
        let key = refusals::Key::of(&rec);
        let (ended, admit) = refusals.admit(key, &rec, Instant::now());
        if let Some(summary) = ended {
            self.record(summary).await?;
        }
        let refusals::Admit::Write(opened) = admit else {
            return Ok(());
        };
        self.record(rec).await?;
        if let (Some((key, generation)), Ok(runtime)) = (opened, tokio::runtime::Handle::try_current()) {
            let inner = Arc::downgrade(&self.inner);
            let window = refusals.window();
            runtime.spawn(close_window_later(inner, key, generation, window));
        }
        Ok(())
    }

    /// Write the summary rows of every open refusal window now (at shutdown, or before reading
    /// the log in a test). Resolves once they are COMMITTED.
    pub async fn flush_refusals(&self) -> Result<(), AuditError> {
        let Some(refusals) = &self.inner.refusals else {
            return Ok(());
        };
        for rec in refusals.drain() {
            self.record(rec).await?;
        }
        Ok(())
    }

    /// The database file this auditor writes.
    /// `value` with secret-looking keys redacted, exactly as an audit row would store it (for
    /// other stores that show arguments, such as approvals).
    pub fn redacted(&self, value: &serde_json::Value) -> serde_json::Value {
        self.inner.redact.redact(value)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Insert a complete record. Resolves with its row id once COMMITTED.
    pub async fn record(&self, rec: Record) -> Result<i64, AuditError> {
        self.insert(rec, None).await
    }

    /// Insert `rec` with `outcome = pending` before a mutating action runs. Resolves with its
    /// row id once COMMITTED; if this fails, the action must not run. The pending row has no
    /// result yet: `error`, `duration_ms` and `result_bytes` are stored empty (and hashed so),
    /// and [`Auditor::complete`] sets them.
    pub async fn begin(&self, mut rec: Record) -> Result<i64, AuditError> {
        rec.error = None;
        rec.duration_ms = None;
        rec.result_bytes = None;
        self.insert(rec, Some(Outcome::Pending)).await
    }

    /// Complete the pending record `id` (exactly once). Resolves once COMMITTED.
    pub async fn complete(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<String>,
        duration_ms: f64,
        result_bytes: Option<i64>,
    ) -> Result<(), AuditError> {
        if outcome == Outcome::Pending {
            return Err(AuditError::Invalid(format!(
                "complete record {id} with outcome pending"
            )));
        }
        let (reply, wait) = oneshot::channel();
        let op = writer::Op::Complete {
            id,
            outcome,
            error: error.map(|e| redact::truncate(&e)),
            duration_ms,
            result_bytes,
            reply,
        };
        self.send(op).await?;
        wait.await.map_err(|_| self.gone())?
    }

    /// Delete the oldest rows older than `before` (retention), oldest first, and append a
    /// checkpoint row (`method = "audit/checkpoint"`, its reason naming how many rows went and
    /// the last pruned hash) so [`verify_path`] keeps verifying from the first row kept. Runs on
    /// the writer thread, in order with every other write; resolves once COMMITTED.
    ///
    /// Rows go as a prefix by id: it stops at the first row at or after `before`, and earlier
    /// if a deleted row's completion was linked after a kept row. Pending rows older than
    /// `before` are deleted (their completion then fails with [`AuditError::NotPending`]).
    ///
    /// The checkpoint names who pruned: `host:<unix user>` of this process (pruning is a host
    /// action: the CLI, or the server's own retention).
    ///
    /// At most 50,000 rows go per transaction (the server's writer waits for the write lock
    /// meanwhile), each batch with its own checkpoint; the report sums the batches.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<PruneReport, AuditError> {
        self.prune_batches(before, writer::PRUNE_BATCH as u64).await
    }

    /// [`Auditor::prune`] with at most `batch` rows (at least 1) deleted per transaction.
    pub async fn prune_batches(&self, before: DateTime<Utc>, batch: u64) -> Result<PruneReport, AuditError> {
        let max_rows = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let (by, node) = crate::model::host_identity();
        let mut total: Option<PruneReport> = None;
        loop {
            let (reply, wait) = oneshot::channel();
            let op = writer::Op::Prune {
                before,
                by: by.clone(),
                node: node.clone(),
                max_rows,
                reply,
            };
            self.send(op).await?;
            let report = wait.await.map_err(|_| self.gone())??;
            let more = report.pruned > 0 && i64::try_from(report.pruned) == Ok(max_rows);
            total = Some(match total {
                None => report,
                Some(t) if report.pruned == 0 => t,
                Some(t) => PruneReport {
                    pruned: t.pruned + report.pruned,
                    first_pruned_id: t.first_pruned_id,
                    first_pruned_time: t.first_pruned_time,
                    checkpoints: t.checkpoints + report.checkpoints,
                    ..report
                },
            });
            if !more {
                return Ok(total.unwrap_or_default());
            }
        }
    }

    /// Records matching `q`, newest last, read on the auditor's own read connection (never
    /// waits for the writer). Blocking: from async code with large scans, use `spawn_blocking`.
    pub fn query(&self, q: &Query) -> Result<Vec<Record>, AuditError> {
        let conn = self.inner.read.lock().unwrap_or_else(|p| p.into_inner());
        query::run(&conn, q).map_err(|source| AuditError::Query {
            path: self.inner.path.clone(),
            source,
        })
    }

    async fn insert(&self, mut rec: Record, force: Option<Outcome>) -> Result<i64, AuditError> {
        if let Some(outcome) = force {
            rec.outcome = outcome;
        }
        let row = writer::PreparedRecord::new(rec, &self.inner.redact)?;
        let (reply, wait) = oneshot::channel();
        self.send(writer::Op::Insert {
            row: Box::new(row),
            reply,
        })
        .await?;
        wait.await.map_err(|_| self.gone())?
    }

    async fn send(&self, op: writer::Op) -> Result<(), AuditError> {
        let tx = self.inner.tx.as_ref().ok_or_else(|| self.gone())?;
        tx.send(op).await.map_err(|_| self.gone())
    }

    fn gone(&self) -> AuditError {
        AuditError::WriterGone {
            path: self.inner.path.clone(),
        }
    }
}

/// The timer of one refusal window: after `window`, write its summary (if it counted anything and
/// is still open). Holds the auditor weakly: a dropped auditor writes its summaries itself.
async fn close_window_later(inner: Weak<Inner>, key: refusals::Key, generation: u64, window: Duration) {
    tokio::time::sleep(window).await;
    let Some(inner) = inner.upgrade() else { return };
    let auditor = Auditor { inner };
    let summary = auditor.inner.refusals.as_ref().and_then(|r| r.close(&key, generation));
    if let Some(summary) = summary
        && let Err(e) = auditor.record(summary).await
    {
        tracing::error!(error = %e, "audit write failed for a summary of repeated refusals");
    }
}

/// Queue `rec` for the writer from a synchronous context (the auditor's drop), waiting for room
/// if the queue is full; nobody waits for the commit.
fn queue_blocking(tx: &mpsc::Sender<writer::Op>, rec: Record, redactor: &redact::Redactor, path: &Path) {
    let row = match writer::PreparedRecord::new(rec, redactor) {
        Ok(row) => row,
        Err(e) => {
            tracing::error!(error = %e, "summary of repeated refusals not stored");
            return;
        }
    };
    let (reply, _) = oneshot::channel();
    let mut op = writer::Op::Insert {
        row: Box::new(row),
        reply,
    };
    loop {
        match tx.try_send(op) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(back)) => {
                op = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!(path = %path.display(), "audit writer stopped; summary of repeated refusals not stored");
                return;
            }
        }
    }
}

/// A filter over audit records. Results are ordered by id, newest last.
///
/// Without `after_id`: the newest `limit` matching records. With `after_id`: the oldest `limit`
/// matching records with a larger id (paging forward / following). `since` is inclusive,
/// `until` exclusive. `limit == 0` means no limit. Only time is indexed (writes stay cheap):
/// principal/tool/decision filters scan from the newest row and stop at `limit`, so bound
/// large searches with `since`.
#[derive(Debug, Clone)]
pub struct Query {
    pub principal: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<Decision>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: usize,
    pub after_id: Option<i64>,
}

impl Default for Query {
    /// Everything, newest 100.
    fn default() -> Query {
        Query {
            principal: None,
            tool: None,
            decision: None,
            since: None,
            until: None,
            limit: 100,
            after_id: None,
        }
    }
}

/// Run `q` against the database at `db`, opened read-only (for the CLI; never migrates).
pub fn query_path(db: &Path, q: &Query) -> Result<Vec<Record>, AuditError> {
    let conn = crate::store::open_readonly(db)?;
    query::run(&conn, q).map_err(|source| AuditError::Query {
        path: db.to_path_buf(),
        source,
    })
}

/// The hash chain's own cost for one row like `rec` (its canonical encoding, SHA-256 link and
/// hex), averaged over `iterations`; for `cargo bench --bench audit`.
#[doc(hidden)]
pub fn chain_cost_per_row(rec: Record, iterations: u32) -> Result<std::time::Duration, AuditError> {
    let row = writer::PreparedRecord::new(rec, &redact::Redactor::new(&[]))?;
    Ok(row.chain_cost(iterations))
}

/// Walk the hash chain of the database at `db` (opened read-only, one consistent snapshot) in
/// id order. `Ok` with [`VerifyReport::broken`] `None` when every link verifies, else the FIRST
/// broken link: the row id and what is wrong. `Err` only when the file cannot be read.
/// Blocking (reads every row).
pub fn verify_path(db: &Path) -> Result<VerifyReport, AuditError> {
    let conn = crate::store::open_readonly(db)?;
    verify::run(&conn).map_err(|source| AuditError::Query {
        path: db.to_path_buf(),
        source,
    })
}

/// What [`Auditor::prune`] before `before` would delete right now, without deleting or writing
/// anything (`audit prune --dry-run`): read-only, from one snapshot. A writer committing after
/// it may change the numbers; the real prune recomputes them inside its write transaction.
pub fn prune_plan_path(db: &Path, before: DateTime<Utc>) -> Result<PruneReport, AuditError> {
    let conn = crate::store::open_readonly(db)?;
    let err = |source| AuditError::Query {
        path: db.to_path_buf(),
        source,
    };
    let by = crate::model::host_identity().0;
    let tx = conn.unchecked_transaction().map_err(err)?;
    let head = writer::read_head(&tx).map_err(err)?;
    let plan = writer::plan_prune(&tx, &head.0, head.1, &format_time(before), i64::MAX).map_err(err)?;
    tx.finish().map_err(err)?;
    Ok(match plan {
        Some(plan) => PruneReport {
            dry_run: true,
            ..plan.report(before, &by, head.1 + 1)
        },
        None => PruneReport {
            before,
            pruned_by: Some(by),
            dry_run: true,
            ..PruneReport::default()
        },
    })
}

/// Write every row at or after `since` (all rows without it) to `out` as JSON lines, in id
/// order, for SIEMs: the [`Record`] fields (arguments as JSON, already redacted) plus the chain
/// fields `prev_hash`, `row_hash`, `completed_after`, `completion_prev`, `completion_hash`.
/// Returns the number of lines written. Streams (constant memory); blocking.
pub fn export_jsonl(
    db: &Path,
    since: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> Result<usize, AuditError> {
    let conn = crate::store::open_readonly(db)?;
    export::run(&conn, since, out).map_err(|e| match e {
        export::Error::Sql(source) => AuditError::Query {
            path: db.to_path_buf(),
            source,
        },
        export::Error::Io(e) => AuditError::Export(e),
    })
}

/// Aligned columns: time, principal, node, tool, target, decision, outcome, reason (short).
/// Control characters in values are escaped, so a record cannot drive the terminal.
pub fn render_table(records: &[Record]) -> String {
    render::table(records)
}

/// One JSON object per line.
pub fn render_jsonl(records: &[Record]) -> String {
    render::jsonl(records)
}

/// An absolute RFC 3339 time (`2025-01-02T03:04:05Z`), a UTC date (`2025-01-02`), or a
/// duration ago relative to `now`: `30s`, `15m`, `2h`, `7d`, `1w`.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    query::parse_time(s, now)
}

/// The canonical stored form of a time: RFC 3339, UTC, milliseconds, `Z`.
fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now_rfc3339() -> String {
    format_time(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn new_record_has_time_and_request_id() {
        let r = Record::new();
        assert_eq!(r.time.len(), "2025-01-02T03:04:05.678Z".len(), "{}", r.time);
        assert!(r.time.ends_with('Z'));
        assert!(DateTime::parse_from_rfc3339(&r.time).is_ok());
        let id = uuid::Uuid::parse_str(&r.request_id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_ne!(Record::new().request_id, r.request_id);
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(r.outcome, Outcome::Pending);
    }

    #[test]
    fn for_caller_fills_identity() {
        let addr: SocketAddr = "[::ffff:100.100.2.2]:43817".parse().unwrap();
        let mut caller = Caller::dev("alice@example.com", addr);
        caller.tags = vec!["tag:ci".into()];
        let r = Record::for_caller(&caller);
        assert_eq!(r.principal.as_deref(), Some("alice@example.com"));
        assert_eq!(r.login.as_deref(), Some("alice@example.com"));
        assert_eq!(r.node_id.as_deref(), Some("dev"));
        assert_eq!(r.node_name.as_deref(), Some("dev"));
        assert_eq!(r.tags, vec!["tag:ci".to_string()]);
        assert_eq!(r.remote_addr.as_deref(), Some("100.100.2.2:43817"));
        assert_eq!(r.identity_source.as_deref(), Some("dev"));
        assert_eq!(r.user_id, None);
        assert!(!r.request_id.is_empty());
    }

    #[test]
    fn enums_serialize_lowercase_and_parse_back() {
        for d in [Decision::Allow, Decision::Deny] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
            assert_eq!(d.as_str().parse::<Decision>().unwrap(), d);
        }
        for o in [Outcome::Pending, Outcome::Ok, Outcome::Error, Outcome::Denied] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        }
        assert!("Allow".parse::<Decision>().is_err());
    }

    #[test]
    fn record_json_round_trips_and_tolerates_missing_fields() {
        let mut r = Record::new();
        r.method = "tools/call".into();
        r.decision = Decision::Allow;
        r.outcome = Outcome::Ok;
        r.arguments = Some(serde_json::json!({"a": 1}));
        let back: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let sparse: Record = serde_json::from_str(r#"{"method":"http"}"#).unwrap();
        assert_eq!(sparse.method, "http");
        assert_eq!(sparse.decision, Decision::Deny);
    }

    #[test]
    fn auditor_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Auditor>();
        fn error<T: std::error::Error + Send + Sync + 'static>() {}
        error::<AuditError>();
    }
}
