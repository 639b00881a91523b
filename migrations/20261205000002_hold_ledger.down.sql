DROP INDEX IF EXISTS lethe.audit_log_hold_events;
