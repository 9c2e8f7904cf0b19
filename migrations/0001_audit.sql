-- 0001_audit: the audit table, one row per `tools/call` and per request refused at the
-- identity layer. Owned by `src/audit/` (the only writer); applied by `src/store.rs`.
-- Migrations are append-only: never edit or remove this file once released; add 0002_*.sql.

CREATE TABLE audit (
    id              INTEGER PRIMARY KEY,               -- rowid: grows; pruning deletes the oldest
    time            TEXT    NOT NULL,                  -- RFC 3339 UTC with ms and 'Z' (sorts as text)
    request_id      TEXT    NOT NULL,                  -- uuid v4
    session_id      TEXT,
    principal       TEXT,                              -- login, or the sorted comma-joined tag set
    user_id         INTEGER,
    login           TEXT,
    node_id         TEXT,                              -- Node.StableID
    node_name       TEXT,
    tags            TEXT    NOT NULL DEFAULT '[]',     -- JSON array of strings
    remote_addr     TEXT,
    identity_source TEXT,                              -- 'whois' | 'dev'
    method          TEXT    NOT NULL,                  -- MCP method, or 'http' for identity refusals
    tool            TEXT,
    target          TEXT,
    arguments       TEXT,                              -- JSON, redacted before it reaches SQLite
    decision        TEXT    NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason          TEXT,
    grants          TEXT    NOT NULL DEFAULT '[]',     -- JSON array of strings
    outcome         TEXT    NOT NULL CHECK (outcome IN ('pending', 'ok', 'error', 'denied')),
    error           TEXT,
    duration_ms     REAL,
    result_bytes    INTEGER
) STRICT;

-- Only `time` is indexed: it is appended in order, so it costs one page per commit. Indexes on
-- principal or tool cost a page per distinct value per commit and measured at about half the
-- writer's throughput; filters on them scan newest-first and stop at the limit.
CREATE INDEX audit_time ON audit (time);

-- A row is written once; the only later change is completing a pending row, exactly once.
CREATE TRIGGER audit_completed_rows_are_final
BEFORE UPDATE ON audit
WHEN OLD.outcome <> 'pending'
BEGIN
    SELECT RAISE(ABORT, 'audit: completed rows are final');
END;

CREATE TRIGGER audit_identity_is_final
BEFORE UPDATE OF id, time, request_id, session_id, principal, user_id, login, node_id, node_name,
                 tags, remote_addr, identity_source, method, tool, target, arguments, decision,
                 reason, grants
ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit: only outcome, error, duration_ms and result_bytes may change');
END;
