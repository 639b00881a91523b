DROP TRIGGER IF EXISTS lethe_holds_deleted;
DROP TRIGGER IF EXISTS lethe_holds_updated;
DROP TRIGGER IF EXISTS lethe_holds_inserted;
DROP TABLE IF EXISTS lethe_hold_changes;
