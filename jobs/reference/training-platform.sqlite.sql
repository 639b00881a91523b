-- The reference training platform (training-platform.sql) for SQLite, the embedded default
-- `lethe demo` uses. Same tables, columns and foreign keys; timestamps are UTC text
-- ('2026-11-23T12:00:00.000Z'), which SQLite's date functions read.

CREATE TABLE accounts (
    id         INTEGER PRIMARY KEY,
    email      TEXT        NOT NULL,
    plan       TEXT        NOT NULL DEFAULT 'free',    -- free | team | enterprise
    status     TEXT        NOT NULL DEFAULT 'active',  -- active | closed | banned
    closed_at  TIMESTAMPTZ
);

-- Stored hashed, never in clear.
CREATE TABLE api_keys (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER     NOT NULL REFERENCES accounts (id),
    key_hash   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- MLflow-style: a soft-deleted run has lifecycle_stage 'deleted' and deleted_time in epoch ms.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES accounts (id),
    name            TEXT    NOT NULL,
    lifecycle_stage TEXT    NOT NULL DEFAULT 'active',
    deleted_time    BIGINT,
    artifact_uri    TEXT
);
CREATE INDEX runs_account ON runs (account_id);

CREATE TABLE metrics (
    id     INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    key    TEXT    NOT NULL,
    value  REAL    NOT NULL,
    step   INTEGER NOT NULL
);
CREATE INDEX metrics_run ON metrics (run_id);

CREATE TABLE params (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    key    TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Checkpoints. account_id is a denormalised owner (no foreign key) so holds on an account
-- cover its snapshots directly.
CREATE TABLE snapshots (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    account_id  INTEGER NOT NULL,
    deleted_at  TIMESTAMPTZ,
    storage_uri TEXT
);
CREATE INDEX snapshots_run ON snapshots (run_id);

CREATE TABLE snapshot_files (
    id          INTEGER PRIMARY KEY,
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id),
    path        TEXT    NOT NULL,
    size_bytes  INTEGER NOT NULL
);
CREATE INDEX snapshot_files_snapshot ON snapshot_files (snapshot_id);

-- An association table that points at several kinds of thing, without a foreign key.
CREATE TABLE links (
    id               INTEGER PRIMARY KEY,
    destination_type TEXT NOT NULL,  -- RUN | SNAPSHOT | DATASET
    destination_id   TEXT NOT NULL,
    label            TEXT NOT NULL
);
CREATE INDEX links_destination ON links (destination_type, destination_id);
