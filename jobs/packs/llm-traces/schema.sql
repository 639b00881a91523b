-- Reference schema of an LLM-trace and evaluation platform (the shape of Langfuse-, LangSmith-
-- or Braintrust-like products), for the `llm-traces` policy pack. Every foreign key is declared,
-- so `lethe check` can prove each job reaches every child table.

CREATE TABLE accounts (
    id        bigint PRIMARY KEY,
    status    text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed', 'banned')),
    plan      text NOT NULL DEFAULT 'hobby',
    closed_at timestamptz
);

-- API keys are stored hashed; the secret is shown once at creation and never stored.
CREATE TABLE api_keys (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id),
    key_hash   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The project's owner sets how long its traces are kept; NULL means the platform default.
CREATE TABLE projects (
    id             bigint PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id),
    name           text NOT NULL,
    retention_days integer,
    deleted_at     timestamptz
);

-- account_id is copied from the project (no foreign key, as high-volume trace stores do) so
-- account holds reach every trace without a join.
CREATE TABLE traces (
    id         text PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id),
    account_id bigint NOT NULL,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX traces_project ON traces (project_id);
CREATE INDEX traces_created ON traces (created_at);

CREATE TABLE spans (
    id         text PRIMARY KEY,
    trace_id   text NOT NULL REFERENCES traces (id),
    name       text NOT NULL,
    input      jsonb,
    output     jsonb,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spans_trace ON spans (trace_id);

CREATE TABLE datasets (
    id          bigint PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects (id),
    name        text NOT NULL,
    storage_uri text
);

CREATE TABLE dataset_items (
    id         bigserial PRIMARY KEY,
    dataset_id bigint NOT NULL REFERENCES datasets (id),
    input      jsonb,
    expected   jsonb
);
CREATE INDEX dataset_items_dataset ON dataset_items (dataset_id);

-- A grader's score of one trace, optionally against a dataset item.
CREATE TABLE grader_results (
    id              bigserial PRIMARY KEY,
    trace_id        text NOT NULL REFERENCES traces (id),
    dataset_item_id bigint REFERENCES dataset_items (id),
    grader          text NOT NULL,
    score           double precision
);
CREATE INDEX grader_results_trace ON grader_results (trace_id);
CREATE INDEX grader_results_item ON grader_results (dataset_item_id);
