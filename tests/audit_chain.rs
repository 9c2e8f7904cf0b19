//! Integration tests of the tamper-evident audit chain (`tailopsmcp::audit::{verify_path,
//! export_jsonl}`, `Auditor::prune`) on real SQLite files: a clean store verifies; an attacker
//! with file access (raw SQL on the file, dropping the immutability triggers first where they
//! would refuse) who edits, deletes or reorders rows, or edits a completed row's outcome, is
//! named at the right row; pruning keeps the chain verifiable; the export and journald carry the
//! hashes SQLite has.
//!
//! Public API plus independent SQLite connections only; no writer internals.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::json;
use tailopsmcp::audit::{AuditOptions, Auditor, BrokenKind, Outcome, Record, VerifyReport, export_jsonl, verify_path};

use crate::support::journald::ensure_journald;
use crate::support::netns::skip_or_fail;

use crate::audit::open;

/// The audit tests' sample record, with tags and one more argument so more fields are hashed.
fn sample(principal: &str, tool: &str) -> Record {
    Record {
        arguments: Some(json!({"verbose": true, "n": 3})),
        tags: vec!["tag:a".to_string()],
        ..crate::audit::sample(principal, tool)
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Ten rows: 1..=10; row 3 begun and completed with an error right away, row 6 begun and
/// completed only after rows 7 and 8 (so its completion link sits after row 8).
async fn ten_rows(auditor: &Auditor) {
    for i in 1..=10 {
        match i {
            3 => {
                let id = auditor
                    .begin(sample("bob@example.com", "services_restart"))
                    .await
                    .unwrap();
                assert_eq!(id, 3);
                auditor
                    .complete(id, Outcome::Error, Some("exit 1".into()), 8.5, Some(3))
                    .await
                    .unwrap();
            }
            6 => {
                let id = auditor
                    .begin(sample("carol@example.com", "containers_stop"))
                    .await
                    .unwrap();
                assert_eq!(id, 6);
            }
            _ => {
                let id = auditor
                    .record(sample(&format!("user{i}@example.com"), "whoami"))
                    .await
                    .unwrap();
                assert_eq!(id, i);
            }
        }
        if i == 8 {
            auditor.complete(6, Outcome::Ok, None, 40.0, Some(77)).await.unwrap();
        }
    }
}

/// As an attacker with the file: drop every trigger on `audit`, then run `sql`.
fn tamper(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'audit'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in triggers {
        conn.execute_batch(&format!("DROP TRIGGER \"{t}\"")).unwrap();
    }
    conn.execute_batch(sql).unwrap();
}

fn broken(report: &VerifyReport) -> (i64, BrokenKind) {
    let b = report
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("chain verified: {report}"));
    (b.id, b.kind)
}

fn check_ok(path: &Path) -> VerifyReport {
    let report = verify_path(path).unwrap();
    assert!(report.is_ok(), "{report}");
    report
}

/// A fresh copy of the store to tamper with, so each attack starts from the same clean chain.
fn copy(path: &Path, dir: &tempfile::TempDir, name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let to = dir.path().join(format!("{n}-{name}"));
    rusqlite::Connection::open(path)
        .unwrap()
        .execute("VACUUM INTO ?1", [to.to_str().unwrap()])
        .unwrap();
    to
}

/// Ten rows written and the auditor closed (WAL checkpointed into the file).
async fn clean_store(dir: &tempfile::TempDir) -> PathBuf {
    let (auditor, path) = open(dir);
    ten_rows(&auditor).await;
    drop(auditor);
    path
}

#[tokio::test]
async fn clean_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let empty = check_ok(&path);
    assert_eq!((empty.rows, empty.chained), (0, 0));
    ten_rows(&auditor).await;
    // Verifies while the writer is still open (its own snapshot) ...
    let live = check_ok(&path);
    drop(auditor);
    // ... and after, and after reopening and writing more: the chain continues.
    let report = check_ok(&path);
    assert_eq!(live, report);
    assert_eq!(report.rows, 10);
    assert_eq!(report.chained, 10);
    assert_eq!(report.completions, 2);
    assert_eq!((report.first_id, report.last_id), (Some(1), Some(10)));
    assert_eq!(report.unchained, 0);
    let (auditor, _) = open(&dir);
    auditor.record(sample("dave@example.com", "whoami")).await.unwrap();
    drop(auditor);
    let report = check_ok(&path);
    assert_eq!(report.rows, 11);
    assert!(
        report.to_string().starts_with("audit chain OK: 11 rows (ids 1..=11)"),
        "{report}"
    );

    // The hashes are stored as 64 hex digits and linked row to row.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let links: Vec<(String, String)> = conn
        .prepare("SELECT prev_hash, row_hash FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(links[0].0, "0".repeat(64));
    assert_eq!(links[1].0, links[0].1);
    assert!(links.iter().all(|(p, h)| p.len() == 64 && h.len() == 64 && p != h));
    // The database still refuses changing a row's link.
    assert!(
        conn.execute("UPDATE audit SET row_hash = prev_hash WHERE id = 2", [])
            .is_err()
    );
}

#[tokio::test]
async fn editing_any_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = clean_store(&dir).await;
    let edits = [
        (
            "principal",
            "UPDATE audit SET principal = 'mallory@example.com' WHERE id = 4",
            4,
        ),
        ("decision", "UPDATE audit SET decision = 'deny' WHERE id = 2", 2),
        (
            "arguments",
            r#"UPDATE audit SET arguments = '{"n":4,"verbose":true}' WHERE id = 5"#,
            5,
        ),
        (
            "time",
            "UPDATE audit SET time = '2020-01-01T00:00:00.000Z' WHERE id = 9",
            9,
        ),
        ("grants", r#"UPDATE audit SET grants = '["admin"]' WHERE id = 1"#, 1),
        ("duration", "UPDATE audit SET duration_ms = 0.5 WHERE id = 10", 10),
        (
            "reason of a completed row",
            "UPDATE audit SET reason = 'fine' WHERE id = 3",
            3,
        ),
        ("row_hash", "UPDATE audit SET row_hash = prev_hash WHERE id = 7", 7),
    ];
    for (what, sql, id) in edits {
        let p = copy(&path, &dir, "edit.db");
        tamper(&p, sql);
        let report = verify_path(&p).unwrap();
        assert_eq!(broken(&report), (id, BrokenKind::RowHash), "{what}: {report}");
        assert!(report.to_string().contains(&format!("row {id}")), "{report}");
    }
}

#[tokio::test]
async fn deleting_a_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = clean_store(&dir).await;

    let p = copy(&path, &dir, "middle.db");
    tamper(&p, "DELETE FROM audit WHERE id = 5");
    let report = verify_path(&p).unwrap();
    assert_eq!(broken(&report), (6, BrokenKind::PrevHash), "{report}");
    assert!(report.to_string().contains("rows 5..=5 are missing"), "{report}");

    let p = copy(&path, &dir, "first.db");
    tamper(&p, "DELETE FROM audit WHERE id = 1");
    assert_eq!(broken(&verify_path(&p).unwrap()), (2, BrokenKind::Start));

    let p = copy(&path, &dir, "last.db");
    tamper(&p, "DELETE FROM audit WHERE id = 10");
    assert_eq!(broken(&verify_path(&p).unwrap()), (9, BrokenKind::Tail));

    // A deleted row whose completion was linked later: the link after it is named.
    let p = copy(&path, &dir, "completed.db");
    tamper(&p, "DELETE FROM audit WHERE id = 6");
    assert_eq!(broken(&verify_path(&p).unwrap()), (7, BrokenKind::PrevHash));
}

#[tokio::test]
async fn reordering_rows_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = clean_store(&dir).await;

    // Swap ids (every column moves with its id): row 4 now continues from the wrong link.
    let p = copy(&path, &dir, "ids.db");
    tamper(
        &p,
        "UPDATE audit SET id = -4 WHERE id = 4;
         UPDATE audit SET id = 4 WHERE id = 5;
         UPDATE audit SET id = 5 WHERE id = -4;",
    );
    assert_eq!(broken(&verify_path(&p).unwrap()), (4, BrokenKind::PrevHash));
    // ... also when the links are patched up to follow: the id is part of the hash.
    let p = copy(&path, &dir, "ids-relinked.db");
    tamper(
        &p,
        "CREATE TEMP TABLE t AS SELECT id, prev_hash, row_hash FROM audit WHERE id IN (4, 5);
         UPDATE audit SET prev_hash = (SELECT prev_hash FROM t WHERE id = 4) WHERE id = 5;
         UPDATE audit SET prev_hash = (SELECT row_hash FROM t WHERE id = 5) WHERE id = 4;
         UPDATE audit SET id = -4 WHERE id = 4;
         UPDATE audit SET id = 4 WHERE id = 5;
         UPDATE audit SET id = 5 WHERE id = -4;",
    );
    assert_eq!(broken(&verify_path(&p).unwrap()), (4, BrokenKind::RowHash));

    // Swap the contents but keep each row's own hashes in place.
    let p = copy(&path, &dir, "contents.db");
    tamper(
        &p,
        "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE id IN (7, 8);
         UPDATE audit SET principal = (SELECT principal FROM t WHERE id = 8),
                          request_id = (SELECT request_id FROM t WHERE id = 8) WHERE id = 7;
         UPDATE audit SET principal = (SELECT principal FROM t WHERE id = 7),
                          request_id = (SELECT request_id FROM t WHERE id = 7) WHERE id = 8;",
    );
    assert_eq!(broken(&verify_path(&p).unwrap()), (7, BrokenKind::RowHash));

    // Swap whole rows hashes and all, keeping ids in order: the links no longer follow.
    let p = copy(&path, &dir, "links.db");
    tamper(
        &p,
        "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE id IN (1, 2);
         DELETE FROM audit WHERE id IN (1, 2);
         INSERT INTO audit SELECT * FROM t WHERE id = 2;
         UPDATE audit SET id = 0 WHERE id = 2;
         INSERT INTO audit SELECT * FROM t WHERE id = 1;
         UPDATE audit SET id = 2 WHERE id = 1;
         UPDATE audit SET id = 1 WHERE id = 0;",
    );
    assert_eq!(broken(&verify_path(&p).unwrap()), (1, BrokenKind::Start));
}

#[tokio::test]
async fn editing_a_completed_outcome_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = clean_store(&dir).await;
    for (sql, id) in [
        ("UPDATE audit SET outcome = 'ok', error = NULL WHERE id = 3", 3),
        ("UPDATE audit SET error = 'exit 0' WHERE id = 3", 3),
        ("UPDATE audit SET result_bytes = 1 WHERE id = 6", 6),
        ("UPDATE audit SET duration_ms = 1.0 WHERE id = 6", 6),
    ] {
        let p = copy(&path, &dir, "outcome.db");
        tamper(&p, sql);
        let report = verify_path(&p).unwrap();
        assert_eq!(broken(&report), (id, BrokenKind::CompletionHash), "{sql}: {report}");
    }
    // Un-completing a row (back to pending, completion link removed): the row itself hashes
    // as begun, but the next link continued from the removed completion.
    let p = copy(&path, &dir, "uncomplete.db");
    tamper(
        &p,
        "UPDATE audit SET outcome = 'pending', error = NULL, duration_ms = NULL, result_bytes = NULL,
                          completed_after = NULL, completion_prev = NULL, completion_hash = NULL
         WHERE id = 3",
    );
    assert_eq!(broken(&verify_path(&p).unwrap()), (4, BrokenKind::PrevHash));
    // Turning a recorded row into a completed one does not verify either.
    let p = copy(&path, &dir, "recompleted.db");
    tamper(
        &p,
        "UPDATE audit SET completed_after = 5, completion_prev = row_hash,
                          completion_hash = row_hash WHERE id = 5",
    );
    assert_eq!(broken(&verify_path(&p).unwrap()).0, 5);
}

#[tokio::test]
async fn prune_writes_a_checkpoint_and_keeps_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let rec = |day: u32| {
        let mut r = sample("alice@example.com", "whoami");
        r.time = format!("2025-01-{day:02}T00:00:00.000Z");
        r
    };
    for day in 1..=5 {
        auditor.record(rec(day)).await.unwrap();
    }
    // Row 6 (day 6) begun; completed only after row 8 (day 10) exists.
    let pending = auditor.begin(rec(6)).await.unwrap();
    auditor.record(rec(7)).await.unwrap();
    auditor.record(rec(10)).await.unwrap();
    auditor.complete(pending, Outcome::Ok, None, 2.0, None).await.unwrap();
    auditor.record(rec(11)).await.unwrap();
    check_ok(&path);

    // Rows before day 3: ids 1 and 2.
    let report = auditor.prune(at("2025-01-03T00:00:00Z")).await.unwrap();
    assert_eq!(report.pruned, 2);
    assert_eq!((report.first_pruned_id, report.last_pruned_id), (Some(1), Some(2)));
    assert_eq!(report.resume_id, Some(3));
    assert_eq!(report.checkpoint_id, Some(10));
    let v = check_ok(&path);
    assert_eq!((v.first_id, v.last_id, v.checkpoints), (Some(3), Some(10), 1));

    let conn = rusqlite::Connection::open(&path).unwrap();
    let (method, reason, row2_hash): (String, String, String) = conn
        .query_row("SELECT method, reason, arguments FROM audit WHERE id = 10", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(method, "audit/checkpoint");
    let args: serde_json::Value = serde_json::from_str(&row2_hash).unwrap();
    let last_hash = args["last_pruned_hash"].as_str().unwrap().to_string();
    assert_eq!(Some(&last_hash), report.last_pruned_hash.as_ref());
    assert!(
        reason.contains("pruned 2 rows") && reason.contains(&last_hash),
        "{reason}"
    );

    // Before day 8: rows 3..=5 go, but not row 6, whose completion is linked after row 8
    // (deleting it would leave that link dangling) -- nor anything after it.
    let report = auditor.prune(at("2025-01-08T00:00:00Z")).await.unwrap();
    assert_eq!((report.pruned, report.resume_id), (3, Some(6)));
    check_ok(&path);
    // Nothing more to prune before day 6: no checkpoint row.
    let report = auditor.prune(at("2025-01-06T00:00:00Z")).await.unwrap();
    assert_eq!((report.pruned, report.checkpoint_id), (0, None));

    // Everything: the newest checkpoint is all that is left, and ids keep growing.
    let report = auditor.prune(at("2030-01-01T00:00:00Z")).await.unwrap();
    let last = report.checkpoint_id.unwrap();
    assert_eq!(report.resume_id, Some(last));
    let id = auditor.record(rec(12)).await.unwrap();
    assert_eq!(id, last + 1);
    let v = check_ok(&path);
    assert_eq!((v.rows, v.first_id), (2, Some(last)));

    // Deleting from the start after a checkpoint is still caught.
    drop(auditor);
    tamper(&path, &format!("DELETE FROM audit WHERE id = {last}"));
    assert_eq!(broken(&verify_path(&path).unwrap()), (last + 1, BrokenKind::Start));
}

#[tokio::test]
async fn prune_before_a_checkpointed_deletion_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = clean_store(&dir).await;
    let (auditor, _) = open(&dir);
    // Row times are "now": pruning to now + 1 day deletes rows 1..=10 in one go.
    let report = auditor.prune(Utc::now() + chrono::Duration::days(1)).await.unwrap();
    assert_eq!(report.pruned, 10);
    auditor.record(sample("erin@example.com", "whoami")).await.unwrap();
    drop(auditor);
    check_ok(&path);
    // Editing the checkpoint's own content is an edit like any other.
    tamper(&path, "UPDATE audit SET reason = 'pruned 0 rows' WHERE id = 11");
    assert_eq!(broken(&verify_path(&path).unwrap()), (11, BrokenKind::RowHash));
}

#[tokio::test]
async fn export_lines_carry_the_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    ten_rows(&auditor).await;
    let mut late = sample("frank@example.com", "whoami");
    late.time = "2099-01-01T00:00:00.000Z".into();
    auditor.record(late).await.unwrap();

    let mut out = Vec::new();
    let n = export_jsonl(&path, None, &mut out).unwrap();
    assert_eq!(n, 11);
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11);
    let conn = rusqlite::Connection::open(&path).unwrap();
    for line in &lines {
        let id = line["id"].as_i64().unwrap();
        let (prev, hash, completion): (String, String, Option<String>) = conn
            .query_row(
                "SELECT prev_hash, row_hash, completion_hash FROM audit WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(line["prev_hash"], prev.as_str());
        assert_eq!(line["row_hash"], hash.as_str());
        assert_eq!(line["completion_hash"].as_str(), completion.as_deref());
    }
    assert_eq!(lines[2]["outcome"], "error");
    assert_eq!(lines[2]["completed_after"], 3);
    assert_eq!(lines[0]["arguments"], json!({"n": 3, "verbose": true}));
    assert_eq!(lines[0]["tags"], json!(["tag:a"]));
    assert_eq!(lines[0]["principal"], "user1@example.com");

    let mut out = Vec::new();
    let n = export_jsonl(&path, Some(at("2098-01-01T00:00:00Z")), &mut out).unwrap();
    assert_eq!(n, 1);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], 11);
    assert!(export_jsonl(&dir.path().join("missing.db"), None, &mut Vec::new()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_build_one_chain() {
    const TASKS: usize = 16;
    const EACH: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let auditor = auditor.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                let rec = sample(&format!("user{t}@example.com"), "whoami");
                if i % 3 == 0 {
                    let id = auditor.begin(rec).await.unwrap();
                    tokio::task::yield_now().await;
                    auditor.complete(id, Outcome::Ok, None, i as f64, None).await.unwrap();
                } else {
                    auditor.record(rec).await.unwrap();
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let report = check_ok(&path);
    assert_eq!(report.rows, (TASKS * EACH) as u64);
    assert_eq!(report.completions, (TASKS * EACH.div_ceil(3)) as u64);
}

#[tokio::test]
async fn journald_row_hash_matches_sqlite() {
    if let Err(why) = ensure_journald() {
        skip_or_fail(&format!("journald_row_hash_matches_sqlite: {why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let auditor = Auditor::open(
        &path,
        AuditOptions {
            redact_fields: Vec::new(),
            journald: true,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    let rec = sample("alice@example.com", "whoami");
    let recorded = rec.request_id.clone();
    let id1 = auditor.record(rec).await.unwrap();
    let action = sample("bob@example.com", "containers_restart");
    let begun = action.request_id.clone();
    let id2 = auditor.begin(action).await.unwrap();
    auditor.complete(id2, Outcome::Ok, None, 3.0, None).await.unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let hashes = |id: i64| -> (String, Option<String>) {
        conn.query_row("SELECT row_hash, completion_hash FROM audit WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    let by_request = crate::support::journald::audit_entries_of_request;
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().map(String::from);

    let e = &by_request(&recorded, 1)[0];
    assert_eq!(field(e, "TAILOPS_ROW_HASH"), Some(hashes(id1).0), "{e:#}");
    assert_eq!(field(e, "TAILOPS_COMPLETION_HASH"), None);

    let (row_hash, completion_hash) = hashes(id2);
    let events = by_request(&begun, 2);
    for e in &events {
        assert_eq!(
            field(e, "TAILOPS_ROW_HASH").as_deref(),
            Some(row_hash.as_str()),
            "{e:#}"
        );
    }
    assert_eq!(field(&events[0], "TAILOPS_COMPLETION_HASH"), None);
    assert_eq!(field(&events[1], "TAILOPS_COMPLETION_HASH"), completion_hash);
    drop(auditor);
    check_ok(&path);
}

#[tokio::test]
async fn rows_from_before_the_chain_are_counted_and_rows_slipped_in_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (first, path) = open(&dir);
    drop(first);
    // Rows as a schema-1 database had them: no hashes.
    let legacy = "INSERT INTO audit (time, request_id, method, decision, outcome)
                  VALUES ('2025-01-01T00:00:00.000Z', 'r', 'tools/call', 'allow', 'ok')";
    let legacy_pending = "INSERT INTO audit (time, request_id, method, decision, outcome)
                  VALUES ('2025-01-01T00:00:00.000Z', 'p', 'tools/call', 'allow', 'pending')";
    tamper(&path, &[legacy, legacy, legacy_pending].join(";"));
    let (auditor, _) = open(&dir);
    let id = auditor.record(sample("alice@example.com", "whoami")).await.unwrap();
    assert_eq!(id, 4);
    // An old pending row completed after the upgrade: its completion is a link too.
    auditor.complete(3, Outcome::Ok, None, 1.0, None).await.unwrap();
    auditor.record(sample("alice@example.com", "whoami")).await.unwrap();
    drop(auditor);
    let report = check_ok(&path);
    assert_eq!((report.rows, report.chained, report.unchained), (5, 2, 3));
    assert_eq!(report.completions, 1);
    assert!(
        report.to_string().contains("3 rows written before the chain existed"),
        "{report}"
    );

    // A row inserted behind the writer's back, after the chain began.
    tamper(&path, legacy);
    assert_eq!(broken(&verify_path(&path).unwrap()), (6, BrokenKind::MissingHash));
}

/// `tailopsmcp --database <path> audit <args...>`: (exit code, stdout, stderr).
fn cli(path: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--database", path.to_str().unwrap(), "audit"];
    all.extend_from_slice(args);
    crate::support::server::run_cli(&all)
}

fn count_rows(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap()
}

/// `audit verify` through the binary: must fail (exit 1) naming `row` first.
fn cli_broken_at(path: &Path, row: i64) -> String {
    let (code, out, err) = cli(path, &["verify"]);
    assert_eq!(code, 1, "verify passed on a tampered store: {out}{err}");
    assert!(out.contains(&format!("BROKEN broken at row {row}:")), "{out}");
    out
}

/// Through the real CLI: `audit prune --dry-run` changes nothing; `audit prune` deletes the
/// oldest rows and writes a checkpoint naming the range, the span, the last pruned hash and
/// `host:<user>`; `audit verify` passes and lists the checkpoint; afterwards an edited
/// surviving row, a deleted checkpoint, an edited checkpoint and rows deleted without a
/// checkpoint are each named; a client row that merely calls itself a checkpoint is ignored.
#[tokio::test]
async fn cli_prune_leaves_a_checkpoint_that_verify_starts_from() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    for day in 1..=8 {
        let mut r = sample("alice@example.com", "whoami");
        r.time = format!("2025-01-{day:02}T00:00:00.000Z");
        assert_eq!(auditor.record(r).await.unwrap(), i64::from(day));
    }
    drop(auditor);
    let row3_hash: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT row_hash FROM audit WHERE id = 3", [], |r| r.get(0))
        .unwrap();

    // Bad cut-offs are refused and delete nothing.
    for bad in ["yesterday", "90x", "2999-01-01T00:00:00Z"] {
        let (code, _, err) = cli(&path, &["prune", "--before", bad]);
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("--before"), "{bad}: {err}");
    }
    // Dry run: the plan, nothing deleted or written.
    let (code, out, err) = cli(&path, &["prune", "--before", "2025-01-04", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("would prune 3 rows (ids 1..=3"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(count_rows(&path), 8);

    let (code, out, err) = cli(&path, &["prune", "--before", "2025-01-04", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["pruned"], 3);
    assert_eq!(
        (report["first_pruned_id"].as_i64(), report["last_pruned_id"].as_i64()),
        (Some(1), Some(3))
    );
    assert_eq!(report["first_pruned_time"], "2025-01-01T00:00:00.000Z");
    assert_eq!(report["last_pruned_time"], "2025-01-03T00:00:00.000Z");
    assert_eq!(report["last_pruned_hash"], row3_hash.as_str());
    // Row 4 continues from row 3: the anchor the chain resumes from is the last pruned hash.
    assert_eq!(report["resume_prev_hash"], row3_hash.as_str());
    assert_eq!(
        (report["resume_id"].as_i64(), report["checkpoint_id"].as_i64()),
        (Some(4), Some(9))
    );
    let by = report["pruned_by"].as_str().unwrap().to_string();
    assert!(by.starts_with("host:") && by.len() > 5, "{by}");
    assert_eq!(report["dry_run"], false);
    assert_eq!(count_rows(&path), 6, "rows 4..=8 and the checkpoint");

    // The checkpoint row itself: by the host, chained like any row.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (method, principal, source, prev): (String, String, String, String) = conn
        .query_row(
            "SELECT method, principal, identity_source, prev_hash FROM audit WHERE id = 9",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let row8_hash: String = conn
        .query_row("SELECT row_hash FROM audit WHERE id = 8", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    assert_eq!(
        (method.as_str(), principal.as_str(), source.as_str()),
        ("audit/checkpoint", by.as_str(), "host")
    );
    assert_eq!(prev, row8_hash, "the checkpoint is linked after the newest row");

    // A row after the checkpoint, so it sits in the middle of the chain.
    let (auditor, _) = open(&dir);
    auditor.record(sample("bob@example.com", "whoami")).await.unwrap();
    drop(auditor);
    let (code, out, err) = cli(&path, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain OK: 7 rows (ids 4..=10)"), "{out}");
    assert!(out.contains("1 checkpoints"), "{out}");
    assert!(out.contains("checkpoint row 9 at "), "{out}");
    assert!(
        out.contains(&format!(
            "by {by}: pruned 3 rows (ids 1..=3), last pruned hash {row3_hash}, chain resumed at id 4"
        )),
        "{out}"
    );

    // An edited surviving row.
    let p = copy(&path, &dir, "edited.db");
    tamper(&p, "UPDATE audit SET reason = 'nothing to see' WHERE id = 6");
    let out = cli_broken_at(&p, 6);
    assert!(out.contains("content does not match row_hash"), "{out}");
    // The checkpoint deleted: the start is no longer anchored, and its gap is named.
    let p = copy(&path, &dir, "no-checkpoint.db");
    tamper(&p, "DELETE FROM audit WHERE id = 9");
    let out = cli_broken_at(&p, 4);
    assert!(out.contains("no checkpoint row"), "{out}");
    assert!(out.contains("row 9 is missing too"), "{out}");
    assert_eq!(broken(&verify_path(&p).unwrap()), (4, BrokenKind::Start));
    // The checkpoint edited (fewer rows claimed).
    let p = copy(&path, &dir, "checkpoint-edited.db");
    tamper(&p, "UPDATE audit SET reason = 'pruned 0 rows' WHERE id = 9");
    cli_broken_at(&p, 9);
    // Rows deleted directly, without prune: the gap after the checkpoint's resume point.
    let p = copy(&path, &dir, "gap.db");
    tamper(&p, "DELETE FROM audit WHERE id IN (4, 5)");
    let out = cli_broken_at(&p, 6);
    assert!(
        out.contains("rows 4..=5 were deleted after that prune without a checkpoint"),
        "{out}"
    );
    // Rows deleted in the middle, without prune.
    let p = copy(&path, &dir, "middle.db");
    tamper(&p, "DELETE FROM audit WHERE id = 7");
    let out = cli_broken_at(&p, 8);
    assert!(out.contains("rows 7..=7 are missing"), "{out}");
    // A checkpoint deleted together with the row after it (the end): the tail is named.
    let p = copy(&path, &dir, "tail.db");
    tamper(&p, "DELETE FROM audit WHERE id >= 9");
    let out = cli_broken_at(&p, 4);
    assert!(out.contains("rows 9..=10 at the end are missing"), "{out}");
}

/// A store never pruned, with its oldest rows deleted in SQLite: the gap is reported, and a
/// row an MCP client wrote with the checkpoint's method name does not anchor anything.
#[tokio::test]
async fn rows_deleted_without_a_checkpoint_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = clean_store(&dir).await;
    let p = copy(&path, &dir, "deleted.db");
    tamper(&p, "DELETE FROM audit WHERE id < 4");
    let out = cli_broken_at(&p, 4);
    assert!(out.contains("ids below 4) were deleted without a checkpoint"), "{out}");

    // A client's row calling itself a checkpoint that "resumes" at row 4.
    let (auditor, _) = open(&dir);
    let resume_prev: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT prev_hash FROM audit WHERE id = 4", [], |r| r.get(0))
        .unwrap();
    let mut fake = sample("mallory@example.com", "whoami");
    fake.method = "audit/checkpoint".into();
    fake.arguments = Some(json!({"resume_id": 4, "resume_prev_hash": resume_prev}));
    auditor.record(fake).await.unwrap();
    drop(auditor);
    let report = check_ok(&path);
    assert_eq!(report.checkpoints, 0, "{report}");
    tamper(&path, "DELETE FROM audit WHERE id < 4");
    assert_eq!(broken(&verify_path(&path).unwrap()), (4, BrokenKind::Start));
}

/// `audit prune` from the CLI while the server is answering calls and writing rows: both
/// extend the one chain under SQLite's write lock, every call succeeds, and the chain verifies
/// from the checkpoint, during and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_while_the_server_writes_keeps_one_chain() {
    use crate::support::localapi::fixture;
    use crate::support::world::World;

    let alice: std::net::IpAddr = "100.100.2.2".parse().unwrap();
    let Some(mut w) = World::builder()
        .identity(alice, fixture("whois-user.json"))
        // More calls than the default low-risk burst allows.
        .config("[limits.rate.low]\nburst = 1000\nper_minute = 6000\n")
        .start()
        .await
    else {
        return;
    };

    let mut m = w.session(alice).await;
    for _ in 0..20 {
        m.call_tool("whoami", json!({})).await.unwrap();
    }
    // Everything so far is older than the cut-off; everything from here on is newer.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before = count_rows(&w.server.db);
    assert!(before >= 20, "{before}");

    let mut m2 = w.session(alice).await;
    let calls = async {
        for _ in 0..60 {
            let r = m2.call_tool("whoami", json!({})).await.unwrap();
            assert_ne!(r["isError"], true, "{r}");
        }
    };
    let db = w.server.db.clone();
    let prune = tokio::task::spawn_blocking(move || {
        // Let the calls get going first.
        std::thread::sleep(std::time::Duration::from_millis(50));
        cli(&db, &["prune", "--before", &cutoff, "--json"])
    });
    let ((), pruned) = tokio::join!(calls, prune);
    let (code, out, err) = pruned.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(report["pruned"].as_i64().unwrap() >= before - 1, "{report}");
    let checkpoint = report["checkpoint_id"].as_i64().unwrap();
    // The server goes on writing after the checkpoint, continuing the same chain.
    for _ in 0..5 {
        m.call_tool("whoami", json!({})).await.unwrap();
    }
    assert!(w.server.alive(), "{}", w.server.log());
    let (code, out, err) = cli(&w.server.db, &["verify"]);
    assert_eq!(code, 0, "{out}{err}\n{}", w.server.log());
    assert!(
        out.contains("1 checkpoints") && out.contains(&format!("checkpoint row {checkpoint} ")),
        "{out}"
    );
    let newest: i64 = rusqlite::Connection::open(&w.server.db)
        .unwrap()
        .query_row("SELECT max(id) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(
        newest > checkpoint,
        "rows written after the checkpoint: {newest} > {checkpoint}"
    );
    w.server.stop().await;
    let (code, out, _) = cli(&w.server.db, &["verify"]);
    assert_eq!(code, 0, "{out}");
}

/// A large prune goes in batches (here 3 rows per transaction, so the server's writer never
/// waits long for the write lock): one checkpoint per batch, all chained, and the chain verifies
/// from the newest.
#[tokio::test]
async fn prune_in_batches_writes_a_checkpoint_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, path) = open(&dir);
    for day in 1..=8 {
        let mut r = sample("alice@example.com", "whoami");
        r.time = format!("2025-01-{day:02}T00:00:00.000Z");
        auditor.record(r).await.unwrap();
    }
    let report = auditor.prune_batches(at("2025-01-08T00:00:00Z"), 3).await.unwrap();
    assert_eq!(report.pruned, 7);
    assert_eq!((report.first_pruned_id, report.last_pruned_id), (Some(1), Some(7)));
    assert_eq!(
        (report.checkpoints, report.checkpoint_id, report.resume_id),
        (3, Some(11), Some(8))
    );
    drop(auditor);
    let v = check_ok(&path);
    assert_eq!((v.first_id, v.checkpoints), (Some(8), 3), "{v}");
    let pruned: Vec<(Option<i64>, Option<i64>)> = v
        .checkpoint_rows
        .iter()
        .map(|c| (c.first_pruned_id, c.last_pruned_id))
        .collect();
    assert_eq!(pruned, vec![(Some(1), Some(3)), (Some(4), Some(6)), (Some(7), Some(7))]);
}
