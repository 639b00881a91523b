-- Reference schema of a training-run platform, the one the jobs in this directory are written
-- for. Tests, the demo and benchmarks load it; a real platform's schema will differ, and its
-- specs with it.

CREATE TABLE accounts (
    id         bigint PRIMARY KEY,
    email      text        NOT NULL,
    plan       text        NOT NULL DEFAULT 'free',    -- free | team | enterprise
    status     text        NOT NULL DEFAULT 'active',  -- active | closed | banned
    closed_at  timestamptz
);

-- Stored hashed, never in clear.
CREATE TABLE api_keys (
    id         bigserial PRIMARY KEY,
    account_id bigint      NOT NULL REFERENCES accounts (id),
    key_hash   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- MLflow-style: a soft-deleted run has lifecycle_stage 'deleted' and deleted_time in epoch ms.
CREATE TABLE runs (
    id              bigint PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts (id),
    name            text   NOT NULL,
    lifecycle_stage text   NOT NULL DEFAULT 'active',
    deleted_time    bigint,
    artifact_uri    text
);
CREATE INDEX runs_account ON runs (account_id);

CREATE TABLE metrics (
    id     bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES runs (id),
    key    text   NOT NULL,
    value  double precision NOT NULL,
    step   bigint NOT NULL
);
CREATE INDEX metrics_run ON metrics (run_id);

CREATE TABLE params (
    run_id bigint NOT NULL REFERENCES runs (id),
    key    text   NOT NULL,
    value  text   NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Checkpoints. account_id is a denormalised owner (no foreign key) so holds on an account
-- cover its snapshots directly.
CREATE TABLE snapshots (
    id          bigint PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES runs (id),
    account_id  bigint NOT NULL,
    deleted_at  timestamptz,
    storage_uri text
);
CREATE INDEX snapshots_run ON snapshots (run_id);

CREATE TABLE snapshot_files (
    id          bigserial PRIMARY KEY,
    snapshot_id bigint NOT NULL REFERENCES snapshots (id),
    path        text   NOT NULL,
    size_bytes  bigint NOT NULL
);
CREATE INDEX snapshot_files_snapshot ON snapshot_files (snapshot_id);

-- An association table that points at several kinds of thing, without a foreign key.
CREATE TABLE links (
    id               bigserial PRIMARY KEY,
    destination_type text NOT NULL,  -- RUN | SNAPSHOT | DATASET
    destination_id   text NOT NULL,
    label            text NOT NULL
);
CREATE INDEX links_destination ON links (destination_type, destination_id);
