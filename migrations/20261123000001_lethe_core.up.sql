-- lethe's own state, kept apart from the platform's tables in schema `lethe`.

CREATE SCHEMA IF NOT EXISTS lethe;

-- One row per `lethe run` of one job (and, later, per daemon firing).
CREATE TABLE lethe.job_runs (
    id          bigserial PRIMARY KEY,
    job         text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text        NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'partial', 'failed')),
    dry_run     boolean     NOT NULL DEFAULT false,
    host        text        NOT NULL,
    summary     jsonb       NOT NULL DEFAULT '{}'
);

-- Legal and compliance holds. Scope: an account (everything it owns, in every job), a whole
-- job, or one subject of one job. A hold is active until released; rows are never deleted.
CREATE TABLE lethe.holds (
    id             bigserial PRIMARY KEY,
    account        text,
    job            text,
    subject_key    text,
    reason         text        NOT NULL CHECK (reason <> ''),
    placed_by      text        NOT NULL CHECK (placed_by <> ''),
    placed_at      timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz,
    released_by    text,
    release_reason text,
    CHECK ((account IS NOT NULL AND job IS NULL AND subject_key IS NULL)
        OR (account IS NULL AND job IS NOT NULL)),
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);
CREATE INDEX holds_active_account ON lethe.holds (account) WHERE released_at IS NULL;
CREATE INDEX holds_active_subject ON lethe.holds (job, subject_key) WHERE released_at IS NULL;

-- The durable record of one subject's purge: the manifest and the promised deadline are
-- written before anything is deleted. At most one open (not done) item per subject.
CREATE TABLE lethe.work_items (
    id          bigserial PRIMARY KEY,
    job         text        NOT NULL,
    subject_key text        NOT NULL,
    owner       text,
    state       text        NOT NULL
                CHECK (state IN ('claimed', 'objects_purged', 'verified', 'done', 'held', 'failed')),
    clock_at    timestamptz NOT NULL,
    eligible_at timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    manifest    jsonb       NOT NULL,
    run_id      bigint REFERENCES lethe.job_runs (id),
    lease_until timestamptz,
    epoch       bigint      NOT NULL DEFAULT 1,
    attempts    integer     NOT NULL DEFAULT 1,
    hold_id     bigint REFERENCES lethe.holds (id),
    error_class text,
    last_error  text,
    retry_at    timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    purged_at   timestamptz
);
CREATE UNIQUE INDEX work_items_open ON lethe.work_items (job, subject_key) WHERE state <> 'done';
CREATE INDEX work_items_state ON lethe.work_items (job, state);

-- The append-only, hash-chained audit log. Ids, counts, times and outcomes; never content.
-- hash = sha256(prev_hash || canonical JSON of the entry), computed by lethe (src/audit.rs).
CREATE TABLE lethe.audit_log (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    at          timestamptz NOT NULL,
    run_id      bigint,
    job         text,
    subject_key text,
    owner       text,
    event       text        NOT NULL,
    hold_id     bigint,
    detail      jsonb       NOT NULL,
    prev_hash   text        NOT NULL,
    hash        text        NOT NULL
);
CREATE INDEX audit_log_subject ON lethe.audit_log (job, subject_key);

CREATE FUNCTION lethe.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lethe.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON lethe.audit_log
    FOR EACH ROW EXECUTE FUNCTION lethe.audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON lethe.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION lethe.audit_log_append_only();
