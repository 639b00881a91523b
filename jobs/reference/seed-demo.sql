-- A small world for the demo (scripts/demo.sh), loaded after training-platform.sql.
-- Every time is relative to now(), so the demo shows the same picture whenever it runs:
--
--   accounts  12: 8 active; #9 closed 100 days ago (past the 90-day deadline; the demo puts it
--                 under a litigation hold); #10 closed 3 days ago (in its 14-day grace);
--                 #11 enterprise, closed 20 days ago (in its 30-day enterprise grace);
--                 #12 banned 45 days ago (eligible).
--   runs      60 (ids 101-160, 5 per account): 6 deleted 40 days ago (overdue), 12 deleted
--                 10 days ago (eligible), 6 deleted 2 days ago (in grace), 36 active.
--                 deleted_time is epoch MILLISECONDS, MLflow style.
--   snapshots 20 (ids 1001-1020): 5 deleted 40 days ago, 5 10 days ago, 5 2 days ago, 5 live.
--
-- Objects (uploaded by the demo script): runs/<id>/, snaps/<id>/, accounts/<id>/, and for the
-- runs with an artifact_uri both the object custom/<id> and the directory custom/<id>/.

BEGIN;

INSERT INTO accounts (id, email, plan, status, closed_at) VALUES
    (1,  'ada@example.com',     'team',       'active', NULL),
    (2,  'bao@example.com',     'free',       'active', NULL),
    (3,  'chidi@example.com',   'enterprise', 'active', NULL),
    (4,  'dana@example.com',    'free',       'active', NULL),
    (5,  'eitan@example.com',   'team',       'active', NULL),
    (6,  'fatima@example.com',  'free',       'active', NULL),
    (7,  'goran@example.com',   'enterprise', 'active', NULL),
    (8,  'hana@example.com',    'free',       'active', NULL),
    (9,  'ivo@example.com',     'free',       'closed', now() - interval '100 days'),
    (10, 'juno@example.com',    'team',       'closed', now() - interval '3 days'),
    (11, 'kemal@example.com',   'enterprise', 'closed', now() - interval '20 days'),
    (12, 'lena@example.com',    'free',       'banned', now() - interval '45 days');

INSERT INTO api_keys (account_id, key_hash)
SELECT id, md5('demo-key-' || id) FROM accounts;

-- n = id - 101. Account: n % 12 + 1. Deletion state: n % 10 (0: 40 days ago, 1-2: 10 days
-- ago, 3: 2 days ago, else active). Each deleted run is a minute older than the previous one,
-- so the order lethe processes them in is stable.
INSERT INTO runs (id, account_id, name, lifecycle_stage, deleted_time, artifact_uri)
SELECT 101 + n,
       n % 12 + 1,
       'run-' || (101 + n),
       CASE WHEN n % 10 <= 3 THEN 'deleted' ELSE 'active' END,
       CASE
           WHEN n % 10 = 0 THEN
               (extract(epoch FROM now() - interval '40 days' - n * interval '1 minute') * 1000)::bigint
           WHEN n % 10 IN (1, 2) THEN
               (extract(epoch FROM now() - interval '10 days' - n * interval '1 minute') * 1000)::bigint
           WHEN n % 10 = 3 THEN
               (extract(epoch FROM now() - interval '2 days' - n * interval '1 minute') * 1000)::bigint
       END,
       CASE WHEN n % 5 = 4 THEN 's3://lethe-artifacts/custom/' || (101 + n) END
FROM generate_series(0, 59) AS n;

INSERT INTO metrics (run_id, key, value, step)
SELECT r.id, m.key, random(), s
FROM runs r
CROSS JOIN (VALUES ('loss'), ('accuracy')) AS m(key)
CROSS JOIN generate_series(1, 3) AS s;

INSERT INTO params (run_id, key, value)
SELECT r.id, p.key, p.value
FROM runs r
CROSS JOIN (VALUES ('lr', '0.001'), ('batch_size', '64')) AS p(key, value);

-- Snapshot k (0-19) belongs to run 101 + 3k. Deletion state: k % 4 (0: 40 days ago,
-- 1: 10 days ago, 2: 2 days ago, 3: live).
INSERT INTO snapshots (id, run_id, account_id, deleted_at, storage_uri)
SELECT 1001 + k,
       r.id,
       r.account_id,
       CASE k % 4
           WHEN 0 THEN now() - interval '40 days' - k * interval '1 minute'
           WHEN 1 THEN now() - interval '10 days' - k * interval '1 minute'
           WHEN 2 THEN now() - interval '2 days' - k * interval '1 minute'
       END,
       's3://lethe-artifacts/snaps/' || (1001 + k) || '/'
FROM generate_series(0, 19) AS k
JOIN runs r ON r.id = 101 + 3 * k;

INSERT INTO snapshot_files (snapshot_id, path, size_bytes)
SELECT s.id, f.path, 1024
FROM snapshots s
CROSS JOIN (VALUES ('model.safetensors'), ('optimizer.pt')) AS f(path);

-- links points at several kinds of thing by text id, without a foreign key.
INSERT INTO links (destination_type, destination_id, label)
SELECT 'RUN', id::text, 'dashboard' FROM runs WHERE id % 2 = 0;
INSERT INTO links (destination_type, destination_id, label)
SELECT 'SNAPSHOT', id::text, 'model-registry' FROM snapshots;
INSERT INTO links (destination_type, destination_id, label)
SELECT 'DATASET', 'ds-' || n, 'catalog' FROM generate_series(1, 5) AS n;

COMMIT;
