-- 0004_inventory: the application inventory (see src/store/inventory.rs, its only reader and
-- writer). Applied by src/store.rs. Migrations are append-only: never edit or remove this file
-- once released; add 0005_*.sql.
--
-- `inventory_scans` keeps the last scans per target (the newest is "the" inventory): `document`
-- is the JSON of the host identity and detected applications exactly as inventory_scan returned
-- them. `inventory_attributes` holds what operators set per subject (`host` or `app:<id>`): tags
-- (a JSON array of strings) and fields (a JSON object of string values). `inventory_notes` is an
-- append-only list of operator notes per subject.

CREATE TABLE inventory_scans (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT    NOT NULL,
    scanned_at TEXT    NOT NULL,
    scanned_by TEXT    NOT NULL,
    document   TEXT    NOT NULL CHECK (json_valid(document))
) STRICT;

CREATE INDEX inventory_scans_by_target ON inventory_scans (target, id);

CREATE TABLE inventory_attributes (
    target     TEXT NOT NULL,
    subject    TEXT NOT NULL CHECK (subject = 'host' OR subject LIKE 'app:%'),
    tags       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    fields     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(fields) AND json_type(fields) = 'object'),
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (target, subject)
) STRICT;

CREATE TABLE inventory_notes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    subject    TEXT NOT NULL CHECK (subject = 'host' OR subject LIKE 'app:%'),
    note       TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX inventory_notes_by_subject ON inventory_notes (target, subject, id);

-- Notes are a record: they are added, never changed.
CREATE TRIGGER inventory_notes_no_update BEFORE UPDATE ON inventory_notes
BEGIN
    SELECT RAISE(ABORT, 'inventory notes are append-only');
END;
