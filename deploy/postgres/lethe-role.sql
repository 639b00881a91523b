-- Least privilege for `lethe run` and `lethe daemon` on the reference platform (jobs/).
-- Apply with psql, as the owner of the platform tables, after `lethe migrate` (which an admin
-- role runs, since it creates lethe's schema):
--
--   psql "$ADMIN_URL" -v role=lethe_runner -f deploy/postgres/lethe-role.sql
--   psql "$ADMIN_URL" -c "ALTER ROLE lethe_runner PASSWORD '...'"
--
-- The runner may read and delete the tables the job specs name and nothing else. It may not
-- update them, except the key column of each subject table, which `SELECT ... FOR UPDATE` (the
-- lock that makes a concurrent restore wait for the purge) requires; lethe never updates it.
-- On the audit log it may only read and append; the log's triggers refuse UPDATE, DELETE and
-- TRUNCATE even to owners. Holds are read, not written: `lethe hold` runs under another role.
-- When the specs change, change the table lists below (`lethe check` prints what each job
-- deletes).

\if :{?role}
\else
\set role lethe_runner
\endif

CREATE ROLE :"role" LOGIN;
GRANT CONNECT ON DATABASE :"DBNAME" TO :"role";

GRANT USAGE ON SCHEMA public TO :"role";
GRANT SELECT, DELETE ON accounts, api_keys, runs, metrics, params, snapshots, snapshot_files, links
    TO :"role";
GRANT UPDATE (id) ON accounts, runs, snapshots TO :"role";

GRANT USAGE ON SCHEMA lethe TO :"role";
GRANT SELECT ON lethe._sqlx_migrations, lethe.holds, lethe.hold_changes TO :"role";
-- Erasure requests are read, and closed once nothing they cover is left (`lethe request` runs
-- under another role, like `lethe hold`).
GRANT SELECT, UPDATE (state, closed_at) ON lethe.requests TO :"role";
GRANT SELECT, INSERT, UPDATE ON lethe.work_items, lethe.job_runs TO :"role";
GRANT USAGE ON SEQUENCE lethe.work_items_id_seq, lethe.job_runs_id_seq TO :"role";
GRANT SELECT, INSERT ON lethe.audit_log TO :"role";
