-- Data-subject requests: an erasure (everything an account owns, or one subject, purged now,
-- whatever its window) or an export (everything it owns, written out). An erasure is open until
-- every subject it covers is purged or held: `partly` when holds kept some (those stay covered,
-- and go when their hold is released), `fulfilled` when nothing it covers is left. Each
-- placement and each change of state is an entry of the audit chain; a run refuses a request
-- the chain does not record.
CREATE TABLE lethe.requests (
    id           bigserial PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('erase', 'export')),
    account      text,
    job          text,
    subject_key  text,
    reason       text        NOT NULL CHECK (reason <> ''),
    requested_by text        NOT NULL CHECK (requested_by <> ''),
    requested_at timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL,
    state        text        NOT NULL DEFAULT 'open'
                 CHECK (state IN ('open', 'partly', 'fulfilled')),
    closed_at    timestamptz,
    detail       jsonb       NOT NULL DEFAULT '{}',
    CHECK ((account IS NOT NULL AND job IS NULL AND subject_key IS NULL)
        OR (account IS NULL AND job IS NOT NULL AND subject_key IS NOT NULL))
);
CREATE INDEX requests_live_account ON lethe.requests (account)
    WHERE kind = 'erase' AND state <> 'fulfilled';
CREATE INDEX requests_live_subject ON lethe.requests (job, subject_key)
    WHERE kind = 'erase' AND state <> 'fulfilled';
