-- See the PostgreSQL migration of the same name.
CREATE TABLE lethe_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL CHECK (kind IN ('erase', 'export')),
    account      TEXT,
    job          TEXT,
    subject_key  TEXT,
    reason       TEXT NOT NULL CHECK (reason <> ''),
    requested_by TEXT NOT NULL CHECK (requested_by <> ''),
    requested_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    due_at       TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'partly', 'fulfilled')),
    closed_at    TEXT,
    detail       TEXT NOT NULL DEFAULT '{}',
    CHECK ((account IS NOT NULL AND job IS NULL AND subject_key IS NULL)
        OR (account IS NULL AND job IS NOT NULL AND subject_key IS NOT NULL))
);
CREATE INDEX lethe_requests_live_account ON lethe_requests (account)
    WHERE kind = 'erase' AND state <> 'fulfilled';
CREATE INDEX lethe_requests_live_subject ON lethe_requests (job, subject_key)
    WHERE kind = 'erase' AND state <> 'fulfilled';
