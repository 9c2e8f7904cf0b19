-- 0003_approvals: two-person approvals. Owned by `src/approvals.rs` (the only reader and writer);
-- applied by `src/store.rs`. Migrations are append-only: never edit or remove this file once
-- released; add 0004_*.sql.
--
-- A call whose tool needs a second person records a row here (the requester's principal and
-- node, the tool, its target(s), the canonical arguments and their SHA-256, the dry-run plan of
-- a changing tool). A *different* principal decides it once; the requester's re-call with the
-- same tool, target and arguments spends it exactly once (`used_at`, claimed atomically). Times
-- are unix milliseconds.

CREATE TABLE approvals (
    id              TEXT    PRIMARY KEY,                -- 12 random base32 characters
    requester       TEXT    NOT NULL,                   -- principal that asked
    requester_node  TEXT    NOT NULL,                   -- its Node.StableID and name
    tool            TEXT    NOT NULL,
    target          TEXT    NOT NULL,                   -- comma-joined target ids
    arguments       TEXT    NOT NULL,                   -- canonical JSON (secret-looking values redacted)
    args_hash       TEXT    NOT NULL CHECK (length(args_hash) = 64), -- SHA-256 of tool, target, full arguments
    plan            TEXT,                               -- JSON steps of a changing tool's dry run; NULL for read-only tools
    summary         TEXT    NOT NULL,                   -- what runs, for people
    created         INTEGER NOT NULL,
    expires         INTEGER NOT NULL,
    decision        TEXT    CHECK (decision IS NULL OR decision IN ('approve', 'deny')),
    decided_by      TEXT,                               -- the approver's principal (or host:USER from the CLI)
    decided_by_node TEXT,
    decided_at      INTEGER,
    used_at         INTEGER,                            -- when a re-call spent it
    spent           TEXT    CHECK (spent IS NULL OR spent IN ('ran', 'denied', 'expired')),
    CHECK ((decision IS NULL) = (decided_by IS NULL)),
    CHECK ((used_at IS NULL) = (spent IS NULL))
) STRICT;

CREATE INDEX approvals_call ON approvals (requester, tool, target, args_hash);
CREATE INDEX approvals_created ON approvals (created);

-- Once decided, the decision never changes; once spent, an approval stays spent.
CREATE TRIGGER approvals_decision_is_final
BEFORE UPDATE OF decision, decided_by, decided_by_node, decided_at ON approvals
WHEN OLD.decision IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'approvals: a decision is final');
END;

CREATE TRIGGER approvals_spent_is_final
BEFORE UPDATE OF used_at, spent ON approvals
WHEN OLD.used_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'approvals: an approval is spent once');
END;

CREATE TRIGGER approvals_request_is_final
BEFORE UPDATE OF id, requester, requester_node, tool, target, arguments, args_hash, plan, summary, created, expires
ON approvals
BEGIN
    SELECT RAISE(ABORT, 'approvals: the request never changes');
END;
