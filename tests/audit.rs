//! Integration tests of `tailopsmcp::audit` against real SQLite files in temp dirs and a real
//! journald: what the MCP layer relies on (commit before resolve, one row per call, redaction on
//! disk, filters) and what the CLI shows.
//!
//! These tests only use the public API plus independent SQLite connections to look at the file;
//! they must not reach into the writer's internals.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::json;
use tailopsmcp::audit::{
    AuditError, AuditOptions, Auditor, Decision, Outcome, Query, Record, parse_time, query_path, render_jsonl,
    render_table,
};

use crate::support::journald::{ensure_journald, journal_entries};
use crate::support::world::{Daemon, World};

pub(crate) fn open(dir: &tempfile::TempDir) -> (Auditor, PathBuf) {
    let path = dir.path().join("state/audit.db");
    let auditor = Auditor::open(&path, AuditOptions::default()).expect("open auditor");
    (auditor, path)
}

pub(crate) fn sample(principal: &str, tool: &str) -> Record {
    Record {
        principal: Some(principal.to_string()),
        login: Some(principal.to_string()),
        user_id: Some(42),
        node_id: Some("nStable1".to_string()),
        node_name: Some("laptop.tail1234.ts.net".to_string()),
        remote_addr: Some("100.100.2.2:43817".to_string()),
        identity_source: Some("whois".to_string()),
        session_id: Some("session-1".to_string()),
        method: "tools/call".to_string(),
        tool: Some(tool.to_string()),
        target: Some("local".to_string()),
        arguments: Some(json!({"verbose": true})),
        decision: Decision::Allow,
        reason: Some("scope system:read".to_string()),
        grants: vec!["system:read".to_string()],
        outcome: Outcome::Ok,
        duration_ms: Some(1.25),
        result_bytes: Some(512),
        ..Record::new()
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn all() -> Query {
    Query {
        limit: 0,
        ..Query::default()
    }
}

/// An independent connection to the file, as another process would have.
fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn record_begin_complete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, _) = open(&dir);

    let mut done = sample("alice@example.com", "whoami");
    done.tags = vec!["tag:a".into(), "tag:b".into()];
    let id1 = auditor.record(done.clone()).await.unwrap();

    let mut action = sample("alice@example.com", "services_restart");
    action.outcome = Outcome::Ok; // begin must store pending whatever it is given
    action.duration_ms = None;
    action.result_bytes = None;
    let id2 = auditor.begin(action.clone()).await.unwrap();
    assert!(id2 > id1);
    auditor
        .complete(id2, Outcome::Error, Some("exit 1".into()), 8.5, Some(3))
        .await
        .unwrap();

    let got = auditor.query(&all()).unwrap();
    assert_eq!(got.len(), 2);
    let expected1 = Record { id: Some(id1), ..done };
    assert_eq!(got[0], expected1);
    let expected2 = Record {
        id: Some(id2),
        outcome: Outcome::Error,
        error: Some("exit 1".into()),
        duration_ms: Some(8.5),
        result_bytes: Some(3),
        ..action
    };
    assert_eq!(got[1], expected2);
}

#[tokio::test]
async fn begin_is_committed_before_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let rec = sample("bob@example.com", "containers_stop");
    let request_id = rec.request_id.clone();
    let id = auditor.begin(rec).await.unwrap();

    // Another connection sees the row the moment `begin` resolved: it is committed.
    let other = raw(&path);
    let row: (String, String) = other
        .query_row("SELECT outcome, request_id FROM audit WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(row, ("pending".to_string(), request_id));

    auditor.complete(id, Outcome::Ok, None, 3.0, Some(10)).await.unwrap();
    let outcome: String = other
        .query_row("SELECT outcome FROM audit WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    assert_eq!(outcome, "ok");

    // Exactly once: a completed record is final, and unknown ids are refused.
    let again = auditor.complete(id, Outcome::Error, None, 1.0, None).await;
    assert!(matches!(again, Err(AuditError::NotPending { .. })), "{again:?}");
    let unknown = auditor.complete(id + 1000, Outcome::Ok, None, 1.0, None).await;
    assert!(matches!(unknown, Err(AuditError::NotPending { .. })));
    let pending = auditor.complete(id, Outcome::Pending, None, 1.0, None).await;
    assert!(matches!(pending, Err(AuditError::Invalid(_))));
    // The database itself refuses rewriting a completed row.
    assert!(
        other
            .execute("UPDATE audit SET outcome = 'error' WHERE id = ?1", [id])
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_records_land_with_distinct_ids() {
    const TOTAL: usize = 10_000;
    const TASKS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let auditor = auditor.clone();
        let n = TOTAL / TASKS + usize::from(t < TOTAL % TASKS);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let mut rec = sample(&format!("user{t}@example.com"), "whoami");
                rec.target = Some(format!("{i}"));
                ids.push(auditor.record(rec).await.unwrap());
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for h in handles {
        for id in h.await.unwrap() {
            assert!(ids.insert(id), "duplicate id {id}");
        }
    }
    assert_eq!(ids.len(), TOTAL);
    let n: i64 = raw(&path)
        .query_row("SELECT COUNT(DISTINCT id) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, TOTAL as i64);
}

#[tokio::test]
async fn filters_select_and_order_records() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let times = [
        "2025-01-01T10:00:00.000Z",
        "2025-01-01T11:00:00.000Z",
        "2025-01-01T12:00:00.000Z",
        "2025-01-01T13:00:00.000Z",
        "2025-01-01T14:00:00.000Z",
    ];
    let who = ["alice", "bob", "alice", "alice", "bob"];
    let tool = ["whoami", "whoami", "services_restart", "whoami", "logs_read"];
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = sample(who[i], tool[i]);
        r.time = times[i].to_string();
        if i == 3 {
            r.decision = Decision::Deny;
            r.outcome = Outcome::Denied;
            r.reason = Some("no scope services:write".into());
        }
        ids.push(auditor.record(r).await.unwrap());
    }
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = all();
        f(&mut q);
        let got = auditor.query(&q).unwrap();
        let cli = query_path(&path, &q).unwrap();
        assert_eq!(got, cli, "auditor and CLI disagree for {q:?}");
        got.iter().map(|r| r.id.unwrap()).collect::<Vec<_>>()
    };
    let pick = |idx: &[usize]| idx.iter().map(|&i| ids[i]).collect::<Vec<_>>();

    assert_eq!(q(&|_| {}), pick(&[0, 1, 2, 3, 4]));
    assert_eq!(q(&|q| q.principal = Some("alice".into())), pick(&[0, 2, 3]));
    assert_eq!(q(&|q| q.tool = Some("whoami".into())), pick(&[0, 1, 3]));
    assert_eq!(q(&|q| q.decision = Some(Decision::Deny)), pick(&[3]));
    assert_eq!(q(&|q| q.decision = Some(Decision::Allow)), pick(&[0, 1, 2, 4]));
    assert_eq!(q(&|q| q.since = Some(at("2025-01-01T11:00:00Z"))), pick(&[1, 2, 3, 4]));
    assert_eq!(q(&|q| q.until = Some(at("2025-01-01T12:00:00Z"))), pick(&[0, 1]));
    assert_eq!(
        q(&|q| {
            q.since = Some(at("2025-01-01T10:30:00Z"));
            q.until = Some(at("2025-01-01T13:30:00Z"));
            q.principal = Some("alice".into());
        }),
        pick(&[2, 3])
    );
    // Newest `limit`, newest last.
    assert_eq!(q(&|q| q.limit = 2), pick(&[3, 4]));
    assert_eq!(
        q(&|q| {
            q.limit = 2;
            q.principal = Some("alice".into());
        }),
        pick(&[2, 3])
    );
    // Paging forward from an id: the oldest `limit` after it.
    assert_eq!(
        q(&|q| {
            q.after_id = Some(ids[0]);
            q.limit = 2;
        }),
        pick(&[1, 2])
    );
    assert_eq!(q(&|q| q.after_id = Some(ids[4])), pick(&[]));
    assert_eq!(auditor.query(&Query::default()).unwrap().len(), 5);
    // Relative times go through parse_time.
    let since = parse_time("7d", at("2025-01-08T12:30:00Z")).unwrap();
    assert_eq!(q(&|q| q.since = Some(since)), pick(&[3, 4]));
}

#[tokio::test]
async fn redaction_reaches_the_database() {
    const SECRET: &str = "hunter2-Sup3rSecret-7c1f";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let auditor = Auditor::open(
        &path,
        AuditOptions {
            redact_fields: vec!["vault_path".to_string()],
            journald: false,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    let mut rec = sample("alice@example.com", "files_write");
    rec.arguments = Some(json!({
        "path": "/etc/app.conf",
        "password": SECRET,
        "env": [{"name": "X", "API_KEY": SECRET}],
        "headers": {"Authorization": format!("Bearer {SECRET}")},
        "Vault-Path": SECRET,
        "content": "x".repeat(10_000),
    }));
    let id = auditor.record(rec).await.unwrap();
    let id2 = auditor.begin(sample("bob", "x")).await.unwrap();
    auditor.complete(id2, Outcome::Ok, None, 1.0, None).await.unwrap();

    let conn = raw(&path);
    let leaked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE instr(
                 coalesce(arguments, '') || coalesce(reason, '') || coalesce(error, '') ||
                 coalesce(target, ''), ?1) > 0",
            [SECRET],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leaked, 0);
    let stored: String = conn
        .query_row("SELECT arguments FROM audit WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(v["password"], "[REDACTED]");
    assert_eq!(v["env"][0]["API_KEY"], "[REDACTED]");
    assert_eq!(v["env"][0]["name"], "X");
    assert_eq!(v["headers"]["Authorization"], "[REDACTED]");
    assert_eq!(v["Vault-Path"], "[REDACTED]");
    assert_eq!(v["path"], "/etc/app.conf");
    let content = v["content"].as_str().unwrap();
    assert!(content.len() < 4200 && content.ends_with("[truncated, 10000 bytes]"));

    // Not on disk at all: neither in the database file nor in its WAL.
    drop(auditor);
    for file in [path.clone(), PathBuf::from(format!("{}-wal", path.display()))] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "secret found in {}",
                file.display()
            );
        }
    }
}

/// A refusal records the `Mcp-Session-Id` the client presented, whatever its length: the stored
/// value is capped like every other client-sent string, and the chain still verifies.
#[tokio::test]
async fn a_presented_session_id_is_stored_capped() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let mut rec = sample("alice@example.com", "whoami");
    rec.session_id = Some("s".repeat(10_000));
    let id = auditor.record(rec).await.unwrap();
    let stored: String = raw(&path)
        .query_row("SELECT session_id FROM audit WHERE id = ?1", [id], |r| r.get(0))
        .unwrap();
    assert!(
        stored.len() < 4200 && stored.starts_with("sss") && stored.ends_with("[truncated, 10000 bytes]"),
        "{} bytes",
        stored.len()
    );
    let report = tailopsmcp::audit::verify_path(&path).unwrap();
    assert!(report.is_ok(), "the capped id is what the chain covers: {report}");
}

#[tokio::test]
async fn write_failures_reach_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    auditor.record(sample("alice", "whoami")).await.unwrap();
    // Make every write fail from outside, as a full disk or a broken file would.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ROLLBACK, 'disk on fire'); END;",
        )
        .unwrap();
    let err = auditor.record(sample("alice", "whoami")).await.unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    let err = auditor.begin(sample("alice", "x")).await.unwrap_err();
    assert!(matches!(err, AuditError::Write { .. }), "{err:?}");
    raw(&path).execute_batch("DROP TRIGGER fail").unwrap();
    auditor.record(sample("alice", "whoami")).await.unwrap();
    assert_eq!(auditor.query(&all()).unwrap().len(), 2);
}

#[tokio::test]
async fn render_functions_show_stored_records() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let mut a = sample("alice@example.com", "whoami");
    a.time = "2025-01-02T03:04:05.678Z".into();
    auditor.record(a).await.unwrap();
    let mut d = Record {
        method: "http".into(),
        decision: Decision::Deny,
        outcome: Outcome::Denied,
        reason: Some("whois: no match for 10.0.0.9:5555".into()),
        remote_addr: Some("10.0.0.9:5555".into()),
        ..Record::new()
    };
    d.time = "2025-01-02T03:04:06.000Z".into();
    auditor.record(d).await.unwrap();

    let records = query_path(&path, &all()).unwrap();
    let table = render_table(&records);
    assert_eq!(
        table,
        "TIME                      PRINCIPAL          NODE    TOOL    TARGET  DECISION  OUTCOME  REASON\n\
         2025-01-02T03:04:05.678Z  alice@example.com  laptop  whoami  local   allow     ok       scope system:read\n\
         2025-01-02T03:04:06.000Z  -                  -       http    -       deny      denied   whois: no match for 10.0.0.9:5555\n"
    );
    let jsonl = render_jsonl(&records);
    let back: Vec<Record> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back, records);
    assert!(jsonl.contains(r#""decision":"deny""#));
}

#[tokio::test]
async fn cli_queries_need_an_existing_current_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    assert!(query_path(&missing, &all()).is_err());
    assert!(!missing.exists(), "a read-only query must not create the file");

    let (auditor, path) = open(&dir);
    auditor.record(sample("alice", "whoami")).await.unwrap();
    drop(auditor);
    raw(&path).pragma_update(None, "user_version", 999).unwrap();
    let err = query_path(&path, &all()).unwrap_err();
    assert!(err.to_string().contains("newer than this binary"), "{err}");
    let err = Auditor::open(&path, AuditOptions::default())
        .err()
        .expect("newer database refused");
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}

#[tokio::test]
async fn journald_mirror_carries_documented_fields() {
    if let Err(why) = ensure_journald() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("journald is required when CI=true: {why}");
        }
        eprintln!("skipping journald_mirror_carries_documented_fields: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let auditor = Auditor::open(
        &dir.path().join("audit.db"),
        AuditOptions {
            redact_fields: Vec::new(),
            journald: true,
            ..AuditOptions::default()
        },
    )
    .unwrap();

    let mut ok = sample("alice@example.com", "whoami");
    ok.tags = vec!["tag:a".into(), "tag:b".into()];
    ok.arguments = Some(json!({"marker": "never-in-journald"}));
    let ok_request = ok.request_id.clone();
    let ok_id = auditor.record(ok).await.unwrap();

    let mut deny = sample("eve@example.com", "services_restart");
    deny.decision = Decision::Deny;
    deny.outcome = Outcome::Denied;
    deny.reason = Some("no scope services:write\non target web".into());
    let deny_request = deny.request_id.clone();
    auditor.record(deny).await.unwrap();

    let action = sample("bob@example.com", "containers_restart");
    let action_request = action.request_id.clone();
    let action_id = auditor.begin(action).await.unwrap();
    auditor
        .complete(action_id, Outcome::Error, Some("exit 1".into()), 12.5, None)
        .await
        .unwrap();

    let by_request = crate::support::journald::audit_entries_of_request;
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().map(String::from);

    let e = &by_request(&ok_request, 1)[0];
    let expect = [
        ("SYSLOG_IDENTIFIER", "tailopsmcp-audit"),
        ("MESSAGE", "alice@example.com whoami local allow ok"),
        ("PRIORITY", "6"),
        ("TAILOPS_AUDIT_ID", &ok_id.to_string()),
        ("TAILOPS_REQUEST_ID", &ok_request),
        ("TAILOPS_SESSION_ID", "session-1"),
        ("TAILOPS_PRINCIPAL", "alice@example.com"),
        ("TAILOPS_USER_ID", "42"),
        ("TAILOPS_LOGIN", "alice@example.com"),
        ("TAILOPS_NODE_ID", "nStable1"),
        ("TAILOPS_NODE", "laptop.tail1234.ts.net"),
        ("TAILOPS_TAGS", "tag:a,tag:b"),
        ("TAILOPS_REMOTE_ADDR", "100.100.2.2:43817"),
        ("TAILOPS_IDENTITY_SOURCE", "whois"),
        ("TAILOPS_METHOD", "tools/call"),
        ("TAILOPS_TOOL", "whoami"),
        ("TAILOPS_TARGET", "local"),
        ("TAILOPS_DECISION", "allow"),
        ("TAILOPS_REASON", "scope system:read"),
        ("TAILOPS_GRANTS", "system:read"),
        ("TAILOPS_OUTCOME", "ok"),
        ("TAILOPS_DURATION_MS", "1.25"),
        ("TAILOPS_RESULT_BYTES", "512"),
    ];
    for (k, v) in expect {
        assert_eq!(field(e, k).as_deref(), Some(v), "{k} in {e:#}");
    }
    assert!(!e.to_string().contains("never-in-journald"), "{e:#}");

    let e = &by_request(&deny_request, 1)[0];
    assert_eq!(field(e, "PRIORITY").as_deref(), Some("4"));
    assert_eq!(field(e, "TAILOPS_DECISION").as_deref(), Some("deny"));
    assert_eq!(field(e, "TAILOPS_OUTCOME").as_deref(), Some("denied"));
    assert_eq!(
        field(e, "TAILOPS_REASON").as_deref(),
        Some("no scope services:write\non target web")
    );

    // begin (pending) and complete: two events for one row.
    let events = by_request(&action_request, 2);
    let outcomes: Vec<Option<String>> = events.iter().map(|e| field(e, "TAILOPS_OUTCOME")).collect();
    assert_eq!(outcomes, [Some("pending".to_string()), Some("error".to_string())]);
    for e in &events {
        assert_eq!(field(e, "TAILOPS_AUDIT_ID"), Some(action_id.to_string()), "{e:#}");
        assert_eq!(field(e, "TAILOPS_PRINCIPAL").as_deref(), Some("bob@example.com"));
    }
    assert_eq!(field(&events[1], "TAILOPS_ERROR").as_deref(), Some("exit 1"));
    assert_eq!(field(&events[1], "TAILOPS_DURATION_MS").as_deref(), Some("12.5"));
    assert_eq!(
        field(&events[1], "MESSAGE").as_deref(),
        Some("bob@example.com containers_restart local allow error")
    );
}

/// Bytes the database and its WAL take on disk.
fn db_and_wal_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path.to_path_buf(), wal]
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// How many refusals the rows stand for: one each, and a summary row the repeats it counts.
fn refusals_counted(rows: &[Record]) -> u64 {
    rows.iter().map(|r| r.repeated().unwrap_or(1)).sum()
}

/// Issue #20 items 5 and 6: 3,000 identical refusals with 200 KB arguments, from one principal
/// and from an unknown peer (a new source port each time), grow the database and its WAL by
/// under 2 MB; the rows' counts add up to 3,000 each and the chain verifies. The windows here are
/// short (300 ms), so windows end by their timers while the flood goes on, and the last ones are
/// written when the auditor is dropped. (With one row per refusal, as before, the same flood
/// grew the files by 15.7 MB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_identical_refusals_stays_small_and_counted() {
    const N: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let auditor = Auditor::open(
        &path,
        AuditOptions {
            refusal_window: std::time::Duration::from_millis(300),
            ..AuditOptions::default()
        },
    )
    .unwrap();
    auditor.record(sample("setup", "whoami")).await.unwrap();
    let before = db_and_wal_bytes(&path);
    let big = "A".repeat(200 * 1024);
    let started = std::time::Instant::now();
    for i in 0..N {
        let mut denied = sample("mallory@example.com", "services_restart");
        denied.decision = Decision::Deny;
        denied.outcome = Outcome::Denied;
        denied.reason = Some("no grant of services:control on local".into());
        denied.arguments = Some(json!({"unit": "ssh", "padding": big}));
        auditor.refuse(denied).await.unwrap();
        let mut stranger = Record::new();
        stranger.method = "http".into();
        stranger.remote_addr = Some(format!("100.64.9.9:{}", 1024 + i));
        stranger.reason = Some("whois: no such peer".into());
        stranger.arguments = Some(json!({"body": big}));
        auditor.refuse(stranger).await.unwrap();
        if i % 3 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let spent = started.elapsed();
    drop(auditor);
    let grown = db_and_wal_bytes(&path).saturating_sub(before);
    let rows = query_path(&path, &all()).unwrap();
    let mallory: Vec<Record> = rows
        .iter()
        .filter(|r| r.principal.as_deref() == Some("mallory@example.com"))
        .cloned()
        .collect();
    let stranger: Vec<Record> = rows.iter().filter(|r| r.method == "http").cloned().collect();
    assert_eq!(refusals_counted(&mallory), N, "{} rows", mallory.len());
    assert_eq!(refusals_counted(&stranger), N, "{} rows", stranger.len());
    let windows = spent.as_millis() / 300 + 2;
    assert!(
        mallory.len() as u128 <= 2 * windows && stranger.len() as u128 <= 2 * windows,
        "{} and {} rows for {windows} windows",
        mallory.len(),
        stranger.len()
    );
    assert!(mallory.iter().chain(&stranger).all(|r| r.decision == Decision::Deny));
    let summary = mallory.iter().find(|r| r.repeated().is_some()).expect("a summary row");
    assert!(
        summary.reason.as_deref().unwrap().starts_with("repeated "),
        "{summary:?}"
    );
    assert!(
        render_table(std::slice::from_ref(summary)).contains("repeated "),
        "the table shows the count"
    );
    assert!(grown < 2 * 1024 * 1024, "grew {grown} bytes");
    let report = tailopsmcp::audit::verify_path(&path).unwrap();
    assert!(report.is_ok(), "{report}");
}

/// A window's summary is written when the window ends, without waiting for another refusal or
/// for the auditor to close; `flush_refusals` writes the open ones at once. A zero window writes
/// every refusal.
#[tokio::test]
async fn refusal_windows_end_on_time_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let auditor = Auditor::open(
        &path,
        AuditOptions {
            refusal_window: std::time::Duration::from_millis(200),
            ..AuditOptions::default()
        },
    )
    .unwrap();
    let denied = || {
        let mut r = sample("eve@example.com", "files_write");
        r.reason = Some("no grant".into());
        r
    };
    for _ in 0..5 {
        auditor.refuse(denied()).await.unwrap();
    }
    // The first is committed when `refuse` resolves; the rest wait for the window.
    assert_eq!(auditor.query(&all()).unwrap().len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let rows = auditor.query(&all()).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].repeated(), Some(4));
    assert_eq!(rows[0].decision, Decision::Deny);
    assert_eq!(rows[0].outcome, Outcome::Denied);
    for _ in 0..3 {
        auditor.refuse(denied()).await.unwrap();
    }
    auditor.flush_refusals().await.unwrap();
    let rows = auditor.query(&all()).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3].repeated(), Some(2));
    assert_eq!(refusals_counted(&rows), 8);

    let off = Auditor::open(
        &dir.path().join("off.db"),
        AuditOptions {
            refusal_window: std::time::Duration::ZERO,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    for _ in 0..3 {
        off.refuse(denied()).await.unwrap();
    }
    assert_eq!(off.query(&all()).unwrap().len(), 3);
}

/// Issue #20 item 5 at the store: a 1 MB tool name, target, reason, method, session id and error
/// become a small row (each capped with a visible marker), and the chain covers the capped values.
#[tokio::test]
async fn every_client_string_is_capped_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let mb = "x".repeat(1 << 20);
    let mut rec = sample("alice@example.com", &mb);
    rec.method = mb.clone();
    rec.target = Some(mb.clone());
    rec.reason = Some(format!("unknown tool `{mb}`"));
    rec.session_id = Some(mb.clone());
    rec.arguments = Some(json!({"a": mb, "b": mb}));
    let id = auditor.begin(rec).await.unwrap();
    auditor
        .complete(id, Outcome::Error, Some(mb.clone()), 1.0, None)
        .await
        .unwrap();
    let row_bytes: i64 = raw(&path)
        .query_row(
            "SELECT length(method) + length(tool) + length(target) + length(reason) + length(session_id)
                    + length(error) + length(arguments) FROM audit WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(row_bytes < 20_000, "{row_bytes} bytes");
    let got = &auditor.query(&all()).unwrap()[0];
    for v in [
        &got.method,
        got.tool.as_ref().unwrap(),
        got.session_id.as_ref().unwrap(),
    ] {
        assert!(v.len() <= 128 && v.ends_with("…[truncated, 1048576 bytes]"), "{v}");
    }
    assert!(got.target.as_ref().unwrap().len() <= 1024);
    assert!(got.reason.as_ref().unwrap().len() <= 4096);
    assert!(got.error.as_ref().unwrap().len() <= 4096);
    let args = got.arguments.as_ref().unwrap();
    assert_eq!(args["truncated"], true);
    assert_eq!(args["keys"], json!(["a", "b"]));
    assert_eq!(args["sha256"].as_str().unwrap().len(), 64);
    let report = tailopsmcp::audit::verify_path(&path).unwrap();
    assert!(report.is_ok(), "{report}");
}

// ---- End to end: the real binary in a test tailnet, real SQLite, real journald. ----

/// A server on a test tailnet and one MCP session per `(address, login, grants)`, in order.
async fn e2e(callers: &[(std::net::Ipv4Addr, &str, serde_json::Value)]) -> Option<World> {
    let mut b = World::builder().with(Daemon::Journald);
    for (ip, login, grants) in callers {
        let ip = std::net::IpAddr::V4(*ip);
        b = b.user(ip, login, grants.clone()).session(ip);
    }
    b.start().await
}

/// Journal entries of the audit mirror for `principal`, waiting until there are at least `n`.
async fn audit_events(principal: &str, n: usize) -> Vec<serde_json::Value> {
    let filter = format!("TAILOPS_PRINCIPAL={principal}");
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = journal_entries(&["-t", "tailopsmcp-audit", &filter]);
        if entries.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    entries
}

/// Issue #20 items 5 and 9 through the real binary: a tool name with a newline produces exactly
/// one journal entry whose MESSAGE is one line (before: MESSAGE carried the newline, and
/// `journalctl -t tailopsmcp-audit` showed a forged second line); a 1 MB tool name and a 1 MB
/// `target` become small rows and small journal events (before: 1 MB rows, twice over with the
/// reason); the chain verifies and the server still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tool_names_stay_one_line_and_small() {
    let login = format!("hostile-{}@example.com", uuid::Uuid::new_v4().simple());
    let Some(mut w) = e2e(&[(
        std::net::Ipv4Addr::new(100, 100, 2, 61),
        &login,
        json!([{"scopes": ["system:read"]}]),
    )])
    .await
    else {
        return;
    };
    let m = &mut w.sessions[0];
    let forged = "x\nFORGED tailopsmcp-audit: allowed admin";
    let _ = m.call_tool(forged, json!({})).await;
    let events = audit_events(&login, 1).await;
    assert_eq!(events.len(), 1, "one journal entry: {events:?}");
    let message = events[0]["MESSAGE"].as_str().expect("MESSAGE is text");
    assert!(!message.contains('\n') && !message.contains('\r'), "{message:?}");
    assert!(message.contains("x\\nFORGED"), "{message:?}");
    assert_eq!(events[0]["TAILOPS_TOOL"], forged);

    // 1 MB: under the default 1 MiB body limit with the JSON-RPC envelope around it.
    let mb = "y".repeat(1_000_000);
    let _ = m.call_tool(&mb, json!({})).await;
    let r = m.call_tool("system_status", json!({"target": mb})).await;
    assert!(r.as_ref().map(|v| v["isError"] == true).unwrap_or(true), "{r:?}");
    let rows = w
        .server
        .audit_where(3, |r| r.principal.as_deref() == Some(login.as_str()))
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        let size = serde_json::to_string(r).unwrap().len();
        assert!(size < 16 * 1024, "row {:?} is {size} bytes", r.id);
    }
    let events = audit_events(&login, 3).await;
    assert_eq!(events.len(), 3);
    for e in &events {
        let size = e.to_string().len();
        assert!(size < 16 * 1024, "journal event is {size} bytes");
        assert!(!e["MESSAGE"].as_str().unwrap().contains('\n'));
    }
    let report = tailopsmcp::audit::verify_path(&w.server.db).unwrap();
    assert!(report.is_ok(), "{report}");
    let ok = m.call_tool("whoami", json!({})).await.unwrap();
    assert_ne!(ok["isError"], true, "{ok}");
}

/// Issue #20 item 10 through the real binary and journald: a caller with only `monitor` scopes
/// gets no audit events from `logs_journal` (they are withheld and counted) and is refused an
/// explicit `identifier = tailopsmcp-audit` query; a caller with `audit:read` sees them. (Before:
/// the monitor caller read every principal's audit events.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_in_the_journal_need_audit_read() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let monitor = format!("monitor-{tag}@example.com");
    let auditor = format!("auditor-{tag}@example.com");
    let since = chrono::Local::now() - chrono::Duration::seconds(2);
    let since = since.format("%Y-%m-%d %H:%M:%S").to_string();
    let Some(mut w) = e2e(&[
        (
            std::net::Ipv4Addr::new(100, 100, 2, 62),
            &monitor,
            json!([{"scopes": ["monitor"]}]),
        ),
        (
            std::net::Ipv4Addr::new(100, 100, 2, 63),
            &auditor,
            json!([{"scopes": ["logs:read", "audit:read"]}]),
        ),
    ])
    .await
    else {
        return;
    };
    w.sessions[0].call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(audit_events(&monitor, 1).await.len(), 1);

    let by_monitor = w.sessions[0]
        .call_tool("logs_journal", json!({"since": since, "lines": 1000}))
        .await
        .unwrap();
    assert_ne!(by_monitor["isError"], true, "{by_monitor}");
    let out = &by_monitor["structuredContent"];
    let entries = out["entries"].as_array().unwrap();
    assert!(
        entries.iter().all(|e| e["identifier"] != "tailopsmcp-audit"),
        "no audit event reaches a monitor caller: {out}"
    );
    assert!(out["audit_withheld"].as_u64().unwrap() >= 1, "{out}");
    assert!(
        by_monitor["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("audit events withheld"),
        "{by_monitor}"
    );
    let refused = w.sessions[0]
        .call_tool("logs_journal", json!({"identifier": "tailopsmcp-audit"}))
        .await;
    let refused = format!("{refused:?}");
    assert!(refused.contains("audit:read"), "{refused}");
    let analyzed = w.sessions[0]
        .call_tool("logs_analyze", json!({"identifier": "tailopsmcp-audit"}))
        .await;
    assert!(format!("{analyzed:?}").contains("audit:read"), "{analyzed:?}");

    let by_auditor = w.sessions[1]
        .call_tool(
            "logs_journal",
            json!({"identifier": "tailopsmcp-audit", "since": since, "lines": 1000}),
        )
        .await
        .unwrap();
    assert_ne!(by_auditor["isError"], true, "{by_auditor}");
    let out = &by_auditor["structuredContent"];
    assert_eq!(out["audit_withheld"], 0);
    let mine = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().unwrap_or("").starts_with(&monitor))
        .count();
    assert!(mine >= 1, "the auditor sees the monitor caller's audit event: {out}");
}

/// Issue #20 item 11 for processes: a real local process started with `--password=hunter2`,
/// `PGPASSWORD=…` and `--token …` on its command line shows none of them in `system_processes`.
/// (Before: the command line was shown as is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_command_lines_lose_their_secrets() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let login = format!("procs-{tag}@example.com");
    let Some(mut w) = e2e(&[(
        std::net::Ipv4Addr::new(100, 100, 2, 64),
        &login,
        json!([{"scopes": ["system:read"]}]),
    )])
    .await
    else {
        return;
    };
    let marker = format!("tops-proc-{tag}");
    // Busy for a few seconds so it is among the top processes by CPU.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "end=$(( $(date +%s) + 8 )); while [ $(date +%s) -lt $end ]; do :; done",
            &marker,
            "--password=hunter2",
            "PGPASSWORD=pg-secret-7",
            "--token",
            "tok-secret-8",
        ])
        .spawn()
        .unwrap();
    let mut found = None;
    for _ in 0..20 {
        let r = w.sessions[0]
            .call_tool("system_processes", json!({"limit": 100}))
            .await
            .unwrap();
        assert_ne!(r["isError"], true, "{r}");
        let text = r.to_string();
        for s in ["hunter2", "pg-secret-7", "tok-secret-8"] {
            assert!(!text.contains(s), "`{s}` shown by system_processes");
        }
        found = r["structuredContent"]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["command"].as_str().unwrap_or("").contains(&marker))
            .cloned();
        if found.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let p = found.expect("the process is listed");
    let command = p["command"].as_str().unwrap();
    assert!(
        command.ends_with(&format!(
            "{marker} --password=[REDACTED] PGPASSWORD=[REDACTED] --token [REDACTED]"
        )),
        "{command}"
    );
}

/// Issue #20 item 10 for log files: without `audit:read`, `logs_tail` and `logs_analyze` refuse
/// a journal file and drop syslog lines of the audit identifier; with it, both are readable.
#[tokio::test]
async fn log_files_keep_audit_events_from_callers_without_audit_read() {
    use std::sync::Arc;
    use tailopsmcp::tools::{ToolContext, ToolError};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir(root.join("journal")).unwrap();
    std::fs::write(root.join("journal/system.journal"), "TAILOPS_PRINCIPAL=alice\n").unwrap();
    std::fs::write(root.join("old.journal~"), "TAILOPS_PRINCIPAL=alice\n").unwrap();
    std::fs::write(
        root.join("syslog"),
        "Dec  7 10:00:00 host sshd[1]: Accepted publickey\n\
         Dec  7 10:00:01 host tailopsmcp-audit[42]: alice@example.com files_read local allow ok\n\
         Dec  7 10:00:02 host tailopsmcp-audit: bob@example.com whoami local allow ok\n\
         Dec  7 10:00:03 host cron[2]: error: job failed\n",
    )
    .unwrap();
    let text = |grants: &str| format!("[logs]\nroots = [{root:?}]\n{grants}");
    let ctx = |grants: &str| {
        let config = Arc::new(
            tailopsmcp::config::Config::from_toml(
                &text(grants),
                Path::new("test.toml"),
                &tailopsmcp::config::Overrides::default(),
            )
            .unwrap(),
        );
        let caller = ToolContext::test_caller();
        let mut ctx = ToolContext::local(caller.clone(), config.clone());
        ctx.grants = Arc::new(tailopsmcp::policy::effective(
            &caller,
            &config.capability,
            &config.grants,
        ));
        ctx
    };
    let call = |ctx: ToolContext, name: &'static str, args: serde_json::Value| async move {
        let tool = tailopsmcp::tools::catalog()
            .into_iter()
            .find(|t| t.spec().name == name)
            .unwrap();
        let serde_json::Value::Object(args) = args else {
            panic!()
        };
        tool.call(ctx, args).await
    };
    let monitor = "[[grant]]\nmatch = \"*\"\nscopes = [\"monitor\"]\n";
    let auditor = "[[grant]]\nmatch = \"*\"\nscopes = [\"logs:read\", \"audit:read\"]\n";

    for path in ["journal/system.journal", "old.journal~"] {
        match call(ctx(monitor), "logs_tail", json!({"path": path})).await {
            Err(ToolError::InvalidArgs(m)) => assert!(m.contains("audit:read"), "{m}"),
            other => panic!("{path}: {:?}", other.map(|o| o.text)),
        }
        let ok = call(ctx(auditor), "logs_tail", json!({"path": path})).await.unwrap();
        assert!(ok.text.contains("TAILOPS_PRINCIPAL"), "{}", ok.text);
    }
    match call(ctx(monitor), "logs_analyze", json!({"path": "journal/system.journal"})).await {
        Err(ToolError::InvalidArgs(m)) => assert!(m.contains("audit:read"), "{m}"),
        other => panic!("{:?}", other.map(|o| o.text)),
    }

    let tail = call(ctx(monitor), "logs_tail", json!({"path": "syslog"}))
        .await
        .unwrap();
    assert!(!tail.text.contains("tailopsmcp-audit"), "{}", tail.text);
    assert!(
        tail.text.contains("sshd") && tail.text.contains("cron"),
        "{}",
        tail.text
    );
    let analysis = call(ctx(monitor), "logs_analyze", json!({"path": "syslog"}))
        .await
        .unwrap();
    assert!(!analysis.text.contains("alice@example.com"), "{}", analysis.text);
    assert!(analysis.text.contains("2 audit events"), "{}", analysis.text);
    let full = call(ctx(auditor), "logs_tail", json!({"path": "syslog"}))
        .await
        .unwrap();
    assert_eq!(full.text.matches("tailopsmcp-audit").count(), 2, "{}", full.text);
}
