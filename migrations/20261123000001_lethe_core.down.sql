-- Reverses the core schema. The audit log goes with it: run `lethe report` first.
DROP TRIGGER IF EXISTS audit_log_no_truncate ON lethe.audit_log;
DROP TRIGGER IF EXISTS audit_log_no_update_delete ON lethe.audit_log;
DROP TABLE IF EXISTS lethe.audit_log;
DROP FUNCTION IF EXISTS lethe.audit_log_append_only();
DROP TABLE IF EXISTS lethe.work_items;
DROP TABLE IF EXISTS lethe.holds;
DROP TABLE IF EXISTS lethe.job_runs;
