-- Reference schema of an inference, fine-tuning and RL platform (the shape of a model API
-- provider), for the `inference` policy pack. Request and response bodies, training files,
-- checkpoints and RL rollouts live in object storage; rows point at them.

CREATE TABLE accounts (
    id        bigint PRIMARY KEY,
    status    text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    -- zdr: zero data retention, an enterprise add-on.
    plan      text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'enterprise', 'zdr')),
    closed_at timestamptz
);

CREATE TABLE inference_logs (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id),
    model      text NOT NULL,
    tokens_in  integer NOT NULL DEFAULT 0,
    tokens_out integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inference_logs_account ON inference_logs (account_id);
CREATE INDEX inference_logs_created ON inference_logs (created_at);

CREATE TABLE fine_tuning_jobs (
    id         bigint PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id),
    base_model text NOT NULL,
    method     text NOT NULL DEFAULT 'sft' CHECK (method IN ('sft', 'dpo', 'rl')),
    status     text NOT NULL DEFAULT 'succeeded',
    deleted_at timestamptz
);

-- Training, validation and result files of a job.
CREATE TABLE fine_tuning_files (
    id          bigint PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES fine_tuning_jobs (id),
    purpose     text NOT NULL CHECK (purpose IN ('training', 'validation', 'results')),
    storage_uri text NOT NULL
);

CREATE TABLE checkpoints (
    id          bigint PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES fine_tuning_jobs (id),
    step        integer NOT NULL,
    storage_uri text NOT NULL
);

-- One RL rollout: its reward here, its transcript under the job's prefix.
CREATE TABLE rl_episodes (
    id     bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES fine_tuning_jobs (id),
    reward double precision
);
CREATE INDEX rl_episodes_job ON rl_episodes (job_id);
