DROP TRIGGER IF EXISTS holds_truncated ON lethe.holds;
DROP TRIGGER IF EXISTS holds_changed ON lethe.holds;
DROP FUNCTION IF EXISTS lethe.bump_hold_changes();
DROP TABLE IF EXISTS lethe.hold_changes;
