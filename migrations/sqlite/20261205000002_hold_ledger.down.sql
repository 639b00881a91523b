DROP INDEX IF EXISTS lethe_audit_log_hold_events;
