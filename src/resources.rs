//! MCP resources: read-only JSON documents about the caller's own situation.
//!
//! - `tailopsmcp://targets` — the targets the caller may use and the scopes they hold on each
//!   (the same view as `targets_list`);
//! - `tailopsmcp://audit/mine` — the caller's own most recent audit records (by principal),
//!   newest first, at most [`AUDIT_MINE_LIMIT`]; nobody else's records are reachable here;
//! - `tailopsmcp://inventory` — the stored inventory (latest scan, operator tags, fields and
//!   notes, as `inventory_get` shows it) of every target the caller holds `inventory:read` on.
//!
//! The first two need the caller to hold at least one grant; the inventory needs
//! `inventory:read` on at least one target. The `mcp` layer identifies the caller,
//! checks that, and writes one audit row per `resources/read` (method `resources/read`, the URI
//! in `arguments`). This module decides what a document holds; it never writes audit rows.

use rmcp::model::Resource;
use serde_json::{Value, json};

use crate::audit::{Auditor, Query, Record};

pub const TARGETS_URI: &str = "tailopsmcp://targets";
pub const AUDIT_MINE_URI: &str = "tailopsmcp://audit/mine";
pub const INVENTORY_URI: &str = "tailopsmcp://inventory";
/// Records in `tailopsmcp://audit/mine`.
pub const AUDIT_MINE_LIMIT: usize = 50;
pub const MIME: &str = "application/json";

/// The resources this server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Targets,
    AuditMine,
    Inventory,
}

impl Which {
    pub fn parse(uri: &str) -> Option<Which> {
        match uri {
            TARGETS_URI => Some(Which::Targets),
            AUDIT_MINE_URI => Some(Which::AuditMine),
            INVENTORY_URI => Some(Which::Inventory),
            _ => None,
        }
    }
}

/// `resources/list`.
pub fn list() -> Vec<Resource> {
    let mk = |uri: &str, name: &str, title: &str, description: &str| {
        Resource::new(uri, name)
            .with_title(title)
            .with_description(description)
            .with_mime_type(MIME)
    };
    vec![
        mk(
            TARGETS_URI,
            "targets",
            "Your targets",
            "The systems you may operate through this server, with their kind, groups and the scopes you hold \
             on each (JSON, like the `targets_list` tool).",
        ),
        mk(
            AUDIT_MINE_URI,
            "audit-mine",
            "Your recent audit records",
            "Your own most recent audit records (at most 50, newest first): time, method, tool, target, decision, \
             outcome, reason, error, duration and redacted arguments.",
        ),
        mk(
            INVENTORY_URI,
            "inventory",
            "Inventory",
            "The stored inventory of every target you may read it on (`inventory:read`): detected applications \
             with evidence, ports and versions, host identity, and operators' tags, fields and notes (JSON, like \
             `inventory_get`). `inventory_scan` refreshes it.",
        ),
    ]
}

/// `tailopsmcp://targets` for a caller with `grants`.
pub fn targets(registry: &crate::targets::Registry, grants: &crate::policy::Effective) -> Value {
    serde_json::to_value(crate::tools::targets::visible(registry, grants)).unwrap_or(Value::Null)
}

/// `tailopsmcp://audit/mine` for `principal`. Blocking (reads SQLite).
pub fn audit_mine(auditor: &Auditor, principal: &str) -> Result<Value, crate::audit::AuditError> {
    let records = auditor.query(&Query {
        principal: Some(principal.to_string()),
        limit: AUDIT_MINE_LIMIT,
        ..Query::default()
    })?;
    let rows: Vec<Value> = records.iter().rev().map(row).collect();
    Ok(json!({
        "principal": principal,
        "limit": AUDIT_MINE_LIMIT,
        "count": rows.len(),
        "records": rows,
    }))
}

/// `tailopsmcp://inventory`: the stored entries of the targets `may_read` allows, in id order.
/// Blocking (reads SQLite); an absent database is an empty inventory.
pub fn inventory(db: &std::path::Path, may_read: &dyn Fn(&str) -> bool) -> Result<Value, String> {
    use crate::store::inventory as store;
    let mut ids = store::targets(db).map_err(|e| e.to_string())?;
    ids.sort();
    ids.dedup();
    let mut entries = Vec::new();
    for id in ids.into_iter().filter(|id| may_read(id)) {
        if let Some(v) = store::latest_json(db, &id).map_err(|e| e.to_string())? {
            entries.push(v);
        }
    }
    Ok(json!({ "count": entries.len(), "targets": entries }))
}

/// The parts of a record its owner needs (identity fields are the caller's own and omitted).
fn row(r: &Record) -> Value {
    json!({
        "id": r.id,
        "time": r.time,
        "method": r.method,
        "tool": r.tool,
        "target": r.target,
        "decision": r.decision.as_str(),
        "outcome": r.outcome.as_str(),
        "reason": r.reason,
        "error": r.error,
        "duration_ms": r.duration_ms,
        "arguments": r.arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(Which::parse("tailopsmcp://targets"), Some(Which::Targets));
        assert_eq!(Which::parse("tailopsmcp://audit/mine"), Some(Which::AuditMine));
        assert_eq!(Which::parse("tailopsmcp://inventory"), Some(Which::Inventory));
        assert_eq!(Which::parse("tailopsmcp://audit/all"), None);
        assert_eq!(Which::parse("file:///etc/passwd"), None);
        let l = list();
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|r| r.mime_type.as_deref() == Some(MIME)));
    }

    #[tokio::test]
    async fn audit_mine_holds_only_the_callers_records() {
        let dir = tempfile::tempdir().unwrap();
        let auditor = Auditor::open(&dir.path().join("a.db"), crate::audit::AuditOptions::default()).unwrap();
        for (who, tool) in [
            ("alice@x", "whoami"),
            ("bob@x", "system_status"),
            ("alice@x", "targets_list"),
        ] {
            let mut r = Record::new();
            r.principal = Some(who.into());
            r.method = "tools/call".into();
            r.tool = Some(tool.into());
            auditor.record(r).await.unwrap();
        }
        let v = audit_mine(&auditor, "alice@x").unwrap();
        assert_eq!(v["count"], 2);
        let tools: Vec<&str> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tool"].as_str().unwrap())
            .collect();
        assert_eq!(tools, ["targets_list", "whoami"], "newest first");
        assert_eq!(audit_mine(&auditor, "carol@x").unwrap()["count"], 0);
    }
}
