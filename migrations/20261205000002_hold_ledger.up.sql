-- The holds as the audit chain records them are read on every run (their placements, releases
-- and confirmations, set against lethe.holds to find changes made outside lethe): an index on
-- those entries alone keeps that read small however long the log grows.
CREATE INDEX audit_log_hold_events ON lethe.audit_log (hold_id, seq)
    WHERE event IN ('hold_placed', 'hold_released', 'hold_confirmed');
