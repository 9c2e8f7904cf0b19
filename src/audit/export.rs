//! `audit export --format jsonl`: every row (optionally from a time on) as one JSON object per
//! line, in id order, with its chain hashes, for SIEMs and for keeping hashes elsewhere.
//!
//! Streams rows from one read snapshot to a writer; never loads the table, never writes the
//! database. Arguments are exported as stored (already redacted).

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::format_time;
use super::query::{STORED_COLUMNS, Stored};

pub(crate) enum Error {
    Sql(rusqlite::Error),
    Io(std::io::Error),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Sql(e)
    }
}

/// See [`super::export_jsonl`].
pub(crate) fn run(
    conn: &Connection,
    since: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> Result<usize, Error> {
    let tx = conn.unchecked_transaction()?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT {STORED_COLUMNS} FROM audit WHERE time >= ?1 ORDER BY id"
        ))?;
        // Stored times are fixed-width RFC 3339, so text order is time order; "" is before all.
        let since = since.map(format_time).unwrap_or_default();
        let mut rows = stmt.query([since])?;
        while let Some(row) = rows.next()? {
            let line = to_json(&Stored::from_row(row)?);
            serde_json::to_writer(&mut *out, &line).map_err(|e| Error::Io(e.into()))?;
            out.write_all(b"\n").map_err(Error::Io)?;
            n += 1;
        }
    }
    tx.finish()?;
    out.flush().map_err(Error::Io)?;
    Ok(n)
}

/// The JSON object for one row: the `Record` field names, JSON columns parsed (kept as a
/// string if they are not JSON), and the chain columns.
fn to_json(r: &Stored) -> Value {
    let parsed = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()));
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("id", json!(r.id));
    put("time", json!(r.time));
    put("request_id", json!(r.request_id));
    put("session_id", json!(r.session_id));
    put("principal", json!(r.principal));
    put("user_id", json!(r.user_id));
    put("login", json!(r.login));
    put("node_id", json!(r.node_id));
    put("node_name", json!(r.node_name));
    put("tags", parsed(&r.tags));
    put("remote_addr", json!(r.remote_addr));
    put("identity_source", json!(r.identity_source));
    put("method", json!(r.method));
    put("tool", json!(r.tool));
    put("target", json!(r.target));
    put("arguments", r.arguments.as_deref().map_or(Value::Null, parsed));
    put("decision", json!(r.decision));
    put("reason", json!(r.reason));
    put("grants", parsed(&r.grants));
    put("outcome", json!(r.outcome));
    put("error", json!(r.error));
    put("duration_ms", json!(r.duration_ms));
    put("result_bytes", json!(r.result_bytes));
    put("prev_hash", json!(r.prev_hash));
    put("row_hash", json!(r.row_hash));
    put("completed_after", json!(r.completed_after));
    put("completion_prev", json!(r.completion_prev));
    put("completion_hash", json!(r.completion_hash));
    Value::Object(m)
}
