//! The inventory's rows in the SQLite database (migration `0004_inventory`): scans, operator
//! attributes (tags and fields) and notes, per target and subject (`host` or `app:<id>`).
//!
//! Owns every query on the `inventory_*` tables and the merged [`InventoryView`] that tools and
//! resources read ([`view`], [`latest_json`]). Callers name the database file; every call runs
//! on the process's [`Store`] for it (in the server, the one opened at start-up), so callers
//! never touch rusqlite. Where the process holds no `Store` on the file (the CLI, a test
//! reading a server's file), a write opens one for the call, and a read opens the file
//! read-only for the call and never creates or migrates it. Does not: detect anything (that is
//! `exec::inventory`), check who may write (the `call` pipeline did), or write audit rows.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::exec::inventory::{DetectedApp, HostIdentity};

/// Scans kept per target (older ones are deleted when a new one is stored).
pub const KEEP_SCANS: i64 = 20;
/// Newest notes returned per subject (`notes_total` counts them all).
pub const NOTES_PER_SUBJECT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("inventory query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("inventory row is not valid: {0}")]
    Corrupt(String),
}

/// What a scan stores: the host and the applications found, exactly as the scan returned them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScanDocument {
    pub host: HostIdentity,
    pub apps: Vec<DetectedApp>,
}

/// Which stored scan a view shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScanMeta {
    pub id: i64,
    /// RFC 3339 UTC.
    pub scanned_at: String,
    /// The principal whose call stored it.
    pub scanned_by: String,
}

/// What operators set on a subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attributes {
    pub tags: Vec<String>,
    pub fields: BTreeMap<String, String>,
    /// When and by whom they last changed (absent when never set).
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

/// One operator note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    pub id: i64,
    /// `host` or `app:<id>`.
    pub subject: String,
    pub note: String,
    pub author: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// The host part of a view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostView {
    /// From the latest scan (absent before the first).
    pub identity: Option<HostIdentity>,
    pub attributes: Attributes,
    /// Newest first, at most 20.
    pub notes: Vec<Note>,
    pub notes_total: usize,
}

/// One application in a view: detected by the latest scan, or only known from what operators
/// set on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppView {
    pub id: String,
    /// Whether the latest scan found it.
    pub detected: bool,
    /// The latest scan's finding (absent when not detected).
    pub detection: Option<DetectedApp>,
    pub attributes: Attributes,
    /// Newest first, at most 20.
    pub notes: Vec<Note>,
    pub notes_total: usize,
}

/// A target's inventory: the latest scan merged with operator attributes and notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryView {
    pub target: String,
    /// The scan shown (absent when the target was never scanned).
    pub scan: Option<ScanMeta>,
    pub host: HostView,
    /// Detected apps in scan order, then apps known only from attributes or notes, by id.
    pub apps: Vec<AppView>,
}

impl InventoryView {
    /// Whether anything at all is stored for the target.
    pub fn is_empty(&self) -> bool {
        self.scan.is_none()
            && self.apps.is_empty()
            && self.host.notes_total == 0
            && self.host.attributes.updated_at.is_none()
    }
}

/// Store a scan for `target`, keeping the newest [`KEEP_SCANS`]. Returns what was stored.
pub fn save_scan(db: &Path, target: &str, by: &str, doc: &ScanDocument) -> Result<ScanMeta, InventoryError> {
    let json = serde_json::to_string(doc).map_err(|e| InventoryError::Corrupt(e.to_string()))?;
    write(db, |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now();
        tx.execute(
            "INSERT INTO inventory_scans (target, scanned_at, scanned_by, document) VALUES (?1, ?2, ?3, ?4)",
            params![target, now, by, json],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "DELETE FROM inventory_scans WHERE target = ?1 AND id NOT IN
                (SELECT id FROM inventory_scans WHERE target = ?1 ORDER BY id DESC LIMIT ?2)",
            params![target, KEEP_SCANS],
        )?;
        tx.commit()?;
        Ok(ScanMeta {
            id,
            scanned_at: now,
            scanned_by: by.to_string(),
        })
    })
}

/// The attributes `subject` has now (empty when none, or when the database does not exist).
pub fn attributes(db: &Path, target: &str, subject: &str) -> Result<Attributes, InventoryError> {
    Ok(read(db, |conn| load_attributes(conn, target, subject))?.unwrap_or_default())
}

/// Replace the tags (when `tags` is given) and set or, for `None` values, remove fields of
/// `subject`. Returns the attributes after the change.
pub fn set_attributes(
    db: &Path,
    target: &str,
    subject: &str,
    tags: Option<&[String]>,
    fields: &BTreeMap<String, Option<String>>,
    by: &str,
) -> Result<Attributes, InventoryError> {
    write(db, |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut a = load_attributes(&tx, target, subject)?;
        apply_changes(&mut a, tags, fields);
        let now = now();
        a.updated_at = Some(now.clone());
        a.updated_by = Some(by.to_string());
        let tags_json = serde_json::to_string(&a.tags).map_err(|e| InventoryError::Corrupt(e.to_string()))?;
        let fields_json = serde_json::to_string(&a.fields).map_err(|e| InventoryError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO inventory_attributes (target, subject, tags, fields, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (target, subject) DO UPDATE SET
                tags = excluded.tags, fields = excluded.fields,
                updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            params![target, subject, tags_json, fields_json, now, by],
        )?;
        tx.commit()?;
        Ok(a)
    })
}

/// What [`set_attributes`] would leave, without writing (for dry runs).
pub fn apply_changes(a: &mut Attributes, tags: Option<&[String]>, fields: &BTreeMap<String, Option<String>>) {
    if let Some(tags) = tags {
        let mut t: Vec<String> = tags.to_vec();
        t.sort();
        t.dedup();
        a.tags = t;
    }
    for (k, v) in fields {
        match v {
            Some(v) => {
                a.fields.insert(k.clone(), v.clone());
            }
            None => {
                a.fields.remove(k);
            }
        }
    }
}

/// Append a note to `subject`.
pub fn add_note(db: &Path, target: &str, subject: &str, note: &str, by: &str) -> Result<Note, InventoryError> {
    write(db, |conn| {
        let now = now();
        conn.execute(
            "INSERT INTO inventory_notes (target, subject, note, author, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![target, subject, note, by, now],
        )?;
        Ok(Note {
            id: conn.last_insert_rowid(),
            subject: subject.to_string(),
            note: note.to_string(),
            author: by.to_string(),
            created_at: now,
        })
    })
}

/// The merged inventory of `target` (empty when nothing is stored or the database does not
/// exist yet). Read-only: never creates or migrates the file.
pub fn view(db: &Path, target: &str) -> Result<InventoryView, InventoryError> {
    Ok(read(db, |conn| load_view(conn, target))?.unwrap_or_else(|| empty_view(target)))
}

fn empty_view(target: &str) -> InventoryView {
    InventoryView {
        target: target.to_string(),
        scan: None,
        host: HostView::default(),
        apps: Vec::new(),
    }
}

fn load_view(conn: &Connection, target: &str) -> Result<InventoryView, InventoryError> {
    let mut v = empty_view(target);
    let latest: Option<(i64, String, String, String)> = conn
        .query_row(
            "SELECT id, scanned_at, scanned_by, document FROM inventory_scans
             WHERE target = ?1 ORDER BY id DESC LIMIT 1",
            params![target],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    if let Some((id, scanned_at, scanned_by, document)) = latest {
        let doc: ScanDocument =
            serde_json::from_str(&document).map_err(|e| InventoryError::Corrupt(format!("scan {id}: {e}")))?;
        v.scan = Some(ScanMeta {
            id,
            scanned_at,
            scanned_by,
        });
        v.host.identity = Some(doc.host);
        for app in doc.apps {
            v.apps.push(AppView {
                id: app.id.clone(),
                detected: true,
                detection: Some(app),
                attributes: Attributes::default(),
                notes: Vec::new(),
                notes_total: 0,
            });
        }
    }
    // Every subject with attributes or notes.
    let mut subjects: Vec<String> = conn
        .prepare(
            "SELECT subject FROM inventory_attributes WHERE target = ?1
             UNION SELECT subject FROM inventory_notes WHERE target = ?1 ORDER BY 1",
        )?
        .query_map(params![target], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    subjects.retain(|s| s != "host");
    for subject in &subjects {
        let id = subject.strip_prefix("app:").unwrap_or(subject);
        if !v.apps.iter().any(|a| a.id == id) {
            v.apps.push(AppView {
                id: id.to_string(),
                detected: false,
                detection: None,
                attributes: Attributes::default(),
                notes: Vec::new(),
                notes_total: 0,
            });
        }
    }
    v.host.attributes = load_attributes(conn, target, "host")?;
    (v.host.notes, v.host.notes_total) = load_notes(conn, target, "host")?;
    for app in &mut v.apps {
        let subject = format!("app:{}", app.id);
        app.attributes = load_attributes(conn, target, &subject)?;
        (app.notes, app.notes_total) = load_notes(conn, target, &subject)?;
    }
    Ok(v)
}

/// The latest inventory of `target` as JSON (the [`InventoryView`] shape), or `None` when
/// nothing is stored for it. For MCP resources and other readers.
pub fn latest_json(db: &Path, target: &str) -> Result<Option<serde_json::Value>, InventoryError> {
    let v = view(db, target)?;
    if v.is_empty() {
        return Ok(None);
    }
    serde_json::to_value(&v)
        .map(Some)
        .map_err(|e| InventoryError::Corrupt(e.to_string()))
}

/// Targets with anything stored, sorted.
pub fn targets(db: &Path) -> Result<Vec<String>, InventoryError> {
    let rows = read(db, |conn| {
        Ok(conn
            .prepare(
                "SELECT target FROM inventory_scans UNION SELECT target FROM inventory_attributes
                 UNION SELECT target FROM inventory_notes ORDER BY 1",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    })?;
    Ok(rows.unwrap_or_default())
}

/// Number of scans stored for `target` (for tests and diagnostics).
pub fn scan_count(db: &Path, target: &str) -> Result<i64, InventoryError> {
    let count = read(db, |conn| {
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM inventory_scans WHERE target = ?1",
            params![target],
            |r| r.get(0),
        )?)
    })?;
    Ok(count.unwrap_or(0))
}

/// Run `f` on the process's [`Store`] for `db`: the one already open (the server's), else one
/// opened for this call (creating and migrating the file).
fn write<T>(db: &Path, f: impl FnOnce(&mut Connection) -> Result<T, InventoryError>) -> Result<T, InventoryError> {
    Store::open(db)?.with(f)
}

/// Run `f` on the process's [`Store`] for `db` if it has one; else on a read-only connection
/// opened for this call. `None` when there is no store and the file does not exist: reading
/// never creates it.
fn read<T>(db: &Path, f: impl FnOnce(&Connection) -> Result<T, InventoryError>) -> Result<Option<T>, InventoryError> {
    if let Some(store) = Store::opened(db) {
        return store.with(|conn| f(conn)).map(Some);
    }
    if !db.exists() {
        return Ok(None);
    }
    f(&super::open_readonly(db)?).map(Some)
}

fn load_attributes(conn: &Connection, target: &str, subject: &str) -> Result<Attributes, InventoryError> {
    let row: Option<(String, String, String, String)> = conn
        .query_row(
            "SELECT tags, fields, updated_at, updated_by FROM inventory_attributes
             WHERE target = ?1 AND subject = ?2",
            params![target, subject],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((tags, fields, at, by)) = row else {
        return Ok(Attributes::default());
    };
    let corrupt = |e: serde_json::Error| InventoryError::Corrupt(format!("attributes of {subject}: {e}"));
    Ok(Attributes {
        tags: serde_json::from_str(&tags).map_err(corrupt)?,
        fields: serde_json::from_str(&fields).map_err(corrupt)?,
        updated_at: Some(at),
        updated_by: Some(by),
    })
}

fn load_notes(conn: &Connection, target: &str, subject: &str) -> Result<(Vec<Note>, usize), InventoryError> {
    let total: i64 = conn.query_row(
        "SELECT COUNT(*) FROM inventory_notes WHERE target = ?1 AND subject = ?2",
        params![target, subject],
        |r| r.get(0),
    )?;
    let notes = conn
        .prepare(
            "SELECT id, note, author, created_at FROM inventory_notes
             WHERE target = ?1 AND subject = ?2 ORDER BY id DESC LIMIT ?3",
        )?
        .query_map(params![target, subject, NOTES_PER_SUBJECT as i64], |r| {
            Ok(Note {
                id: r.get(0)?,
                subject: subject.to_string(),
                note: r.get(1)?,
                author: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok((notes, usize::try_from(total).unwrap_or(0)))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(apps: &[&str]) -> ScanDocument {
        ScanDocument {
            host: HostIdentity {
                hostname: Some("box".into()),
                machine_id: None,
                os: Default::default(),
                kernel: None,
                arch: "x86_64".into(),
                virtualization: "lxc".into(),
                container: true,
                container_id: Some("101".into()),
                hypervisor: None,
            },
            apps: apps
                .iter()
                .map(|id| DetectedApp {
                    id: id.to_string(),
                    name: id.to_string(),
                    status: "running".into(),
                    version: None,
                    version_source: None,
                    evidence: vec![],
                    ports: vec![],
                    ports_total: 0,
                    pids: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn scans_attributes_and_notes_merge_into_one_view() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        assert!(view(&db, "local").unwrap().is_empty());
        assert!(!db.exists(), "reading never creates the database");
        assert_eq!(latest_json(&db, "local").unwrap(), None);

        save_scan(&db, "local", "alice", &doc(&["redis"])).unwrap();
        let second = save_scan(&db, "local", "alice", &doc(&["redis", "nginx"])).unwrap();
        let fields: BTreeMap<String, Option<String>> = [("owner".to_string(), Some("ops".to_string()))].into();
        set_attributes(
            &db,
            "local",
            "app:redis",
            Some(&["db".into(), "db".into(), "a".into()]),
            &fields,
            "bob",
        )
        .unwrap();
        let removed: BTreeMap<String, Option<String>> = [("owner".to_string(), None)].into();
        let after = set_attributes(&db, "local", "app:redis", None, &removed, "bob").unwrap();
        assert_eq!(after.tags, ["a", "db"], "tags kept, sorted, deduplicated");
        assert!(after.fields.is_empty());
        add_note(&db, "local", "app:jellyfin", "moved to the NAS", "bob").unwrap();
        add_note(&db, "local", "host", "rack 2", "carol").unwrap();

        let v = view(&db, "local").unwrap();
        assert_eq!(v.scan.as_ref().unwrap().id, second.id);
        assert_eq!(v.host.identity.as_ref().unwrap().container_id.as_deref(), Some("101"));
        let ids: Vec<(&str, bool)> = v.apps.iter().map(|a| (a.id.as_str(), a.detected)).collect();
        assert_eq!(ids, [("redis", true), ("nginx", true), ("jellyfin", false)]);
        assert_eq!(v.apps[0].attributes.tags, ["a", "db"]);
        assert_eq!(v.apps[2].notes[0].note, "moved to the NAS");
        assert_eq!((v.host.notes_total, v.host.notes[0].author.as_str()), (1, "carol"));
        let json = latest_json(&db, "local").unwrap().unwrap();
        assert_eq!(json["apps"][1]["id"], "nginx");
        assert_eq!(targets(&db).unwrap(), ["local"]);
        assert!(view(&db, "other").unwrap().is_empty());
    }

    #[test]
    fn with_a_store_open_every_call_runs_on_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Store::open(&db).unwrap();
        // Temp triggers and tables belong to one connection: only calls on it see them.
        store
            .with(|c| {
                c.execute_batch(
                    "CREATE TEMP TABLE seen (n INTEGER);
                     CREATE TEMP TRIGGER note_seen AFTER INSERT ON main.inventory_notes
                     BEGIN INSERT INTO seen VALUES (1); END;",
                )
            })
            .unwrap();
        add_note(&db, "a", "host", "written", "x").unwrap();
        let seen: i64 = store
            .with(|c| c.query_row("SELECT COUNT(*) FROM temp.seen", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(seen, 1, "the write ran on the store's connection");
        store
            .with(|c| {
                c.execute_batch(
                    "CREATE TEMP TABLE inventory_notes AS SELECT * FROM main.inventory_notes WHERE 0;
                     INSERT INTO temp.inventory_notes VALUES (7, 'a', 'host', 'only here', 'y', 't');",
                )
            })
            .unwrap();
        let v = view(&db, "a").unwrap();
        assert_eq!(
            v.host.notes[0].note, "only here",
            "the read ran on the store's connection"
        );
    }

    #[test]
    fn old_scans_are_pruned_and_notes_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        for _ in 0..KEEP_SCANS + 3 {
            save_scan(&db, "a", "x", &doc(&[])).unwrap();
        }
        save_scan(&db, "b", "x", &doc(&[])).unwrap();
        assert_eq!(scan_count(&db, "a").unwrap(), KEEP_SCANS);
        assert_eq!(scan_count(&db, "b").unwrap(), 1);
        add_note(&db, "a", "host", "n", "x").unwrap();
        let conn = super::super::open(&db).unwrap();
        assert!(conn.execute("UPDATE inventory_notes SET note = 'changed'", []).is_err());
        assert!(
            conn.execute(
                "INSERT INTO inventory_notes (target, subject, note, author, created_at) VALUES ('a', 'bogus', 'n', 'x', 't')",
                []
            )
            .is_err(),
            "subjects are host or app:<id>"
        );
    }
}
