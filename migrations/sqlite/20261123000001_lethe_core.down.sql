DROP TABLE IF EXISTS lethe_locks;
DROP TRIGGER IF EXISTS lethe_audit_log_no_delete;
DROP TRIGGER IF EXISTS lethe_audit_log_no_update;
DROP TABLE IF EXISTS lethe_audit_log;
DROP TABLE IF EXISTS lethe_work_items;
DROP TABLE IF EXISTS lethe_holds;
DROP TABLE IF EXISTS lethe_job_runs;
