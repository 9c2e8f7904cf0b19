-- 0002_audit_chain: the tamper-evident hash chain over audit rows (see src/audit/chain.rs for
-- the canonical encoding). Owned by `src/audit/` (the only writer); applied by `src/store.rs`.
-- Migrations are append-only: never edit or remove this file once released; add 0003_*.sql.
--
-- Every row inserted from now on carries `prev_hash` and `row_hash` (64 lowercase hex digits).
-- Completing a pending row is a link of its own: `completion_prev` (the chain head it follows),
-- `completed_after` (the newest row id at that moment) and `completion_hash`. Rows written before
-- this migration keep NULL hashes; `audit verify` counts them as unchained.

ALTER TABLE audit ADD COLUMN prev_hash TEXT
    CHECK (prev_hash IS NULL OR length(prev_hash) = 64);
ALTER TABLE audit ADD COLUMN row_hash TEXT
    CHECK (row_hash IS NULL OR length(row_hash) = 64);
ALTER TABLE audit ADD COLUMN completed_after INTEGER;
ALTER TABLE audit ADD COLUMN completion_prev TEXT
    CHECK (completion_prev IS NULL OR length(completion_prev) = 64);
ALTER TABLE audit ADD COLUMN completion_hash TEXT
    CHECK (completion_hash IS NULL OR length(completion_hash) = 64);

-- The chain's head as of the last commit: the hash the next link continues from and the last id
-- the writer assigned. Read and written inside every write transaction, so the chain stays one
-- chain even if two writers ever share the file; `audit verify` also checks the chain ends here
-- (rows deleted from the end).
CREATE TABLE audit_chain_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    head_hash TEXT    NOT NULL CHECK (length(head_hash) = 64),
    last_id   INTEGER NOT NULL
) STRICT;

INSERT INTO audit_chain_head (id, head_hash, last_id)
VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000',
        (SELECT coalesce(max(id), 0) FROM audit));

-- A row's own link never changes. (Its completion link is written once, together with the
-- outcome, and `audit_completed_rows_are_final` keeps it final.)
CREATE TRIGGER audit_row_hash_is_final
BEFORE UPDATE OF prev_hash, row_hash ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit: prev_hash and row_hash never change');
END;
