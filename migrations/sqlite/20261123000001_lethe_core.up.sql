-- lethe's own state in a SQLite platform database: the same tables as the PostgreSQL schema
-- `lethe`, named `lethe_*` in the platform's own file, so the purge of rows and its audit entry
-- commit in one transaction. Times are UTC text, 'YYYY-MM-DDTHH:MM:SS.SSSZ', so they compare
-- as strings; JSON is text.

CREATE TABLE lethe_job_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT    NOT NULL,
    started_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at TEXT,
    status      TEXT    NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'partial', 'failed')),
    dry_run     INTEGER NOT NULL DEFAULT 0,
    host        TEXT    NOT NULL,
    summary     TEXT    NOT NULL DEFAULT '{}'
);

CREATE TABLE lethe_holds (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account        TEXT,
    job            TEXT,
    subject_key    TEXT,
    reason         TEXT NOT NULL CHECK (reason <> ''),
    placed_by      TEXT NOT NULL CHECK (placed_by <> ''),
    placed_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    released_at    TEXT,
    released_by    TEXT,
    release_reason TEXT,
    CHECK ((account IS NOT NULL AND job IS NULL AND subject_key IS NULL)
        OR (account IS NULL AND job IS NOT NULL)),
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);
CREATE INDEX lethe_holds_active_account ON lethe_holds (account) WHERE released_at IS NULL;
CREATE INDEX lethe_holds_active_subject ON lethe_holds (job, subject_key) WHERE released_at IS NULL;

CREATE TABLE lethe_work_items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT    NOT NULL,
    subject_key TEXT    NOT NULL,
    owner       TEXT,
    state       TEXT    NOT NULL
                CHECK (state IN ('claimed', 'objects_purged', 'verified', 'done', 'held', 'failed')),
    clock_at    TEXT    NOT NULL,
    eligible_at TEXT    NOT NULL,
    deadline_at TEXT    NOT NULL,
    manifest    TEXT    NOT NULL,
    run_id      INTEGER REFERENCES lethe_job_runs (id),
    lease_until TEXT,
    epoch       INTEGER NOT NULL DEFAULT 1,
    attempts    INTEGER NOT NULL DEFAULT 1,
    hold_id     INTEGER REFERENCES lethe_holds (id),
    error_class TEXT,
    last_error  TEXT,
    retry_at    TEXT,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    purged_at   TEXT
);
CREATE UNIQUE INDEX lethe_work_items_open ON lethe_work_items (job, subject_key) WHERE state <> 'done';
CREATE INDEX lethe_work_items_state ON lethe_work_items (job, state);

CREATE TABLE lethe_audit_log (
    seq         INTEGER PRIMARY KEY CHECK (seq > 0),
    at          TEXT    NOT NULL,
    run_id      INTEGER,
    job         TEXT,
    subject_key TEXT,
    owner       TEXT,
    event       TEXT    NOT NULL,
    hold_id     INTEGER,
    detail      TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);
CREATE INDEX lethe_audit_log_subject ON lethe_audit_log (job, subject_key);

CREATE TRIGGER lethe_audit_log_no_update BEFORE UPDATE ON lethe_audit_log
BEGIN
    SELECT RAISE(ABORT, 'lethe_audit_log is append-only: UPDATE is not allowed');
END;
CREATE TRIGGER lethe_audit_log_no_delete BEFORE DELETE ON lethe_audit_log
BEGIN
    SELECT RAISE(ABORT, 'lethe_audit_log is append-only: DELETE is not allowed');
END;

-- Run locks: SQLite has no advisory locks, so a job's lock is a row with an expiry, renewed
-- while the run lasts and deleted at its end; a crashed holder's lock expires.
CREATE TABLE lethe_locks (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  TEXT NOT NULL
);
