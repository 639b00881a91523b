-- The demo world of seed-demo.sql for SQLite (`lethe demo`): the same accounts, runs, snapshots
-- and their states, every time relative to now. `'{URI}` is replaced by the demo with a
-- reading of the file:// URI of its bucket directory, bound into a temporary table (never
-- pasted as SQL text).

INSERT INTO accounts (id, email, plan, status, closed_at) VALUES
    (1,  'ada@example.com',     'team',       'active', NULL),
    (2,  'bao@example.com',     'free',       'active', NULL),
    (3,  'chidi@example.com',   'enterprise', 'active', NULL),
    (4,  'dana@example.com',    'free',       'active', NULL),
    (5,  'eitan@example.com',   'team',       'active', NULL),
    (6,  'fatima@example.com',  'free',       'active', NULL),
    (7,  'goran@example.com',   'enterprise', 'active', NULL),
    (8,  'hana@example.com',    'free',       'active', NULL),
    (9,  'ivo@example.com',     'free',       'closed', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-100 days')),
    (10, 'juno@example.com',    'team',       'closed', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-3 days')),
    (11, 'kemal@example.com',   'enterprise', 'closed', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-20 days')),
    (12, 'lena@example.com',    'free',       'banned', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-45 days'));

INSERT INTO api_keys (account_id, key_hash)
SELECT id, 'sha256:demo-key-' || id FROM accounts;

-- n = id - 101, as in seed-demo.sql.
WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < 59)
INSERT INTO runs (id, account_id, name, lifecycle_stage, deleted_time, artifact_uri)
SELECT 101 + n,
       n % 12 + 1,
       'run-' || (101 + n),
       CASE WHEN n % 10 <= 3 THEN 'deleted' ELSE 'active' END,
       CASE
           WHEN n % 10 = 0 THEN CAST((unixepoch('now', '-40 days') - n * 60) * 1000 AS INTEGER)
           WHEN n % 10 IN (1, 2) THEN CAST((unixepoch('now', '-10 days') - n * 60) * 1000 AS INTEGER)
           WHEN n % 10 = 3 THEN CAST((unixepoch('now', '-2 days') - n * 60) * 1000 AS INTEGER)
       END,
       CASE WHEN n % 5 = 4 THEN '{URI}/custom/' || (101 + n) END
FROM seq;

INSERT INTO metrics (run_id, key, value, step)
SELECT r.id, m.key, 0.5, s.step
FROM runs r
CROSS JOIN (SELECT 'loss' AS key UNION ALL SELECT 'accuracy') AS m
CROSS JOIN (SELECT 1 AS step UNION ALL SELECT 2 UNION ALL SELECT 3) AS s;

INSERT INTO params (run_id, key, value)
SELECT r.id, p.key, p.value
FROM runs r
CROSS JOIN (SELECT 'lr' AS key, '0.001' AS value UNION ALL SELECT 'batch_size', '64') AS p;

WITH RECURSIVE seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq WHERE k < 19)
INSERT INTO snapshots (id, run_id, account_id, deleted_at, storage_uri)
SELECT 1001 + k,
       r.id,
       r.account_id,
       CASE k % 4
           WHEN 0 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days', '-' || k || ' minutes')
           WHEN 1 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-10 days', '-' || k || ' minutes')
           WHEN 2 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days', '-' || k || ' minutes')
       END,
       '{URI}/snaps/' || (1001 + k) || '/'
FROM seq
JOIN runs r ON r.id = 101 + 3 * k;

INSERT INTO snapshot_files (snapshot_id, path, size_bytes)
SELECT s.id, f.path, 1024
FROM snapshots s
CROSS JOIN (SELECT 'model.safetensors' AS path UNION ALL SELECT 'optimizer.pt') AS f;

INSERT INTO links (destination_type, destination_id, label)
SELECT 'RUN', CAST(id AS TEXT), 'dashboard' FROM runs WHERE id % 2 = 0;
INSERT INTO links (destination_type, destination_id, label)
SELECT 'SNAPSHOT', CAST(id AS TEXT), 'model-registry' FROM snapshots;
INSERT INTO links (destination_type, destination_id, label)
VALUES ('DATASET', 'ds-1', 'catalog'), ('DATASET', 'ds-2', 'catalog'), ('DATASET', 'ds-3', 'catalog'),
       ('DATASET', 'ds-4', 'catalog'), ('DATASET', 'ds-5', 'catalog');
