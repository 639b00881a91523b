-- See the PostgreSQL migration of the same name.
CREATE INDEX lethe_audit_log_hold_events ON lethe_audit_log (hold_id, seq)
    WHERE event IN ('hold_placed', 'hold_released', 'hold_confirmed');
