//! Reading audit rows back: the filter → SQL translation, row → [`Record`] decoding, and the
//! `--since`/`--until` time syntax of the CLI.
//!
//! Read-only: it never writes, migrates or opens connections (callers pass one). SQL here is
//! built only from fixed fragments; every value is a bound parameter.

use chrono::{DateTime, Utc};
use rusqlite::types::{Type, Value};
use rusqlite::{Connection, Row};

use super::{Query, Record, format_time};

/// Every column, in [`from_row`]'s order.
pub(crate) const COLUMNS: &str = "id, time, request_id, session_id, principal, user_id, login, \
    node_id, node_name, tags, remote_addr, identity_source, method, tool, target, arguments, \
    decision, reason, grants, outcome, error, duration_ms, result_bytes";
/// [`COLUMNS`] with `arguments` read as NULL (for the journald mirror, which never sends them).
pub(crate) const COLUMNS_WITHOUT_ARGUMENTS: &str = "id, time, request_id, session_id, principal, \
    user_id, login, node_id, node_name, tags, remote_addr, identity_source, method, tool, target, \
    NULL, decision, reason, grants, outcome, error, duration_ms, result_bytes";

/// Every column as stored, chain columns included, in [`Stored::from_row`]'s order.
pub(crate) const STORED_COLUMNS: &str = "id, time, request_id, session_id, principal, user_id, \
    login, node_id, node_name, tags, remote_addr, identity_source, method, tool, target, arguments, \
    decision, reason, grants, outcome, error, duration_ms, result_bytes, prev_hash, row_hash, \
    completed_after, completion_prev, completion_hash";

/// One row exactly as stored (JSON columns as their text), for the chain walk and the export.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub id: i64,
    pub time: String,
    pub request_id: String,
    pub session_id: Option<String>,
    pub principal: Option<String>,
    pub user_id: Option<i64>,
    pub login: Option<String>,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    pub tags: String,
    pub remote_addr: Option<String>,
    pub identity_source: Option<String>,
    pub method: String,
    pub tool: Option<String>,
    pub target: Option<String>,
    pub arguments: Option<String>,
    pub decision: String,
    pub reason: Option<String>,
    pub grants: String,
    pub outcome: String,
    pub error: Option<String>,
    pub duration_ms: Option<f64>,
    pub result_bytes: Option<i64>,
    pub prev_hash: Option<String>,
    pub row_hash: Option<String>,
    pub completed_after: Option<i64>,
    pub completion_prev: Option<String>,
    pub completion_hash: Option<String>,
}

impl Stored {
    /// Decode a row selected with [`STORED_COLUMNS`].
    pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Stored> {
        Ok(Stored {
            id: row.get(0)?,
            time: row.get(1)?,
            request_id: row.get(2)?,
            session_id: row.get(3)?,
            principal: row.get(4)?,
            user_id: row.get(5)?,
            login: row.get(6)?,
            node_id: row.get(7)?,
            node_name: row.get(8)?,
            tags: row.get(9)?,
            remote_addr: row.get(10)?,
            identity_source: row.get(11)?,
            method: row.get(12)?,
            tool: row.get(13)?,
            target: row.get(14)?,
            arguments: row.get(15)?,
            decision: row.get(16)?,
            reason: row.get(17)?,
            grants: row.get(18)?,
            outcome: row.get(19)?,
            error: row.get(20)?,
            duration_ms: row.get(21)?,
            result_bytes: row.get(22)?,
            prev_hash: row.get(23)?,
            row_hash: row.get(24)?,
            completed_after: row.get(25)?,
            completion_prev: row.get(26)?,
            completion_hash: row.get(27)?,
        })
    }
}

/// Decode a row selected with [`COLUMNS`] (or [`COLUMNS_WITHOUT_ARGUMENTS`]).
pub(crate) fn from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: row.get(0)?,
        time: row.get(1)?,
        request_id: row.get(2)?,
        session_id: row.get(3)?,
        principal: row.get(4)?,
        user_id: row.get(5)?,
        login: row.get(6)?,
        node_id: row.get(7)?,
        node_name: row.get(8)?,
        tags: json(row, 9)?.unwrap_or_default(),
        remote_addr: row.get(10)?,
        identity_source: row.get(11)?,
        method: row.get(12)?,
        tool: row.get(13)?,
        target: row.get(14)?,
        arguments: json(row, 15)?,
        decision: parsed(row, 16)?,
        reason: row.get(17)?,
        grants: json(row, 18)?.unwrap_or_default(),
        outcome: parsed(row, 19)?,
        error: row.get(20)?,
        duration_ms: row.get(21)?,
        result_bytes: row.get(22)?,
    })
}

/// Records matching `q` on `conn`, newest last (see [`Query`] for `limit`/`after_id`).
pub(crate) fn run(conn: &Connection, q: &Query) -> rusqlite::Result<Vec<Record>> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit WHERE 1 = 1");
    let mut params: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        sql.push_str(clause);
        params.push(value);
    };
    if let Some(p) = &q.principal {
        filter(" AND principal = ?", Value::Text(p.clone()));
    }
    if let Some(t) = &q.tool {
        filter(" AND tool = ?", Value::Text(t.clone()));
    }
    if let Some(d) = q.decision {
        filter(" AND decision = ?", Value::Text(d.as_str().to_string()));
    }
    // Stored times are all in the canonical fixed-width form, so text order is time order.
    if let Some(t) = q.since {
        filter(" AND time >= ?", Value::Text(format_time(t)));
    }
    if let Some(t) = q.until {
        filter(" AND time < ?", Value::Text(format_time(t)));
    }
    let forward = q.after_id.is_some();
    if let Some(id) = q.after_id {
        filter(" AND id > ?", Value::Integer(id));
    }
    sql.push_str(if forward {
        " ORDER BY id ASC"
    } else {
        " ORDER BY id DESC"
    });
    if q.limit > 0 {
        sql.push_str(" LIMIT ?");
        params.push(Value::Integer(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out = stmt
        .query_map(rusqlite::params_from_iter(params.iter()), from_row)?
        .collect::<rusqlite::Result<Vec<Record>>>()?;
    if !forward {
        out.reverse();
    }
    Ok(out)
}

/// See [`super::parse_time`]: the crate's one time grammar ([`crate::when::parse_time`]).
pub(crate) fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    crate::when::parse_time(s, now)
}

fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>> {
    let Some(text) = row.get::<_, Option<String>>(idx)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn parsed<T: std::str::FromStr<Err = String>>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-15T12:00:00Z").unwrap().to_utc()
    }

    fn check(input: &str, expected: Result<&str, ()>) {
        let got = parse_time(input, now()).map(format_time).map_err(|_| ());
        assert_eq!(got, expected.map(String::from), "{input:?}");
    }

    #[test]
    fn parses_absolute_and_relative_times() {
        check("2025-01-02T03:04:05Z", Ok("2025-01-02T03:04:05.000Z"));
        check("2025-01-02T03:04:05.5+02:00", Ok("2025-01-02T01:04:05.500Z"));
        check("2025-01-02", Ok("2025-01-02T00:00:00.000Z"));
        check(" 15m ", Ok("2025-06-15T11:45:00.000Z"));
        check("30s", Ok("2025-06-15T11:59:30.000Z"));
        check("2h", Ok("2025-06-15T10:00:00.000Z"));
        check("7d", Ok("2025-06-08T12:00:00.000Z"));
        check("1w", Ok("2025-06-08T12:00:00.000Z"));
        check("0m", Ok("2025-06-15T12:00:00.000Z"));
    }

    #[test]
    fn rejects_other_times() {
        for bad in [
            "",
            "m",
            "15",
            "15x",
            "-5m",
            "1.5h",
            "15 m",
            "yesterday",
            "2025-13-01",
            "99999999999999d",
        ] {
            check(bad, Err(()));
        }
        let msg = parse_time("soon", now()).unwrap_err();
        assert!(msg.contains("\"soon\"") && msg.contains("15m"), "{msg}");
    }
}
