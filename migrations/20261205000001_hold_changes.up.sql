-- A counter that every change to the holds bumps, in the transaction that makes the change: the
-- fence in front of object deletes reads it to learn that a hold was placed, released, changed
-- or re-activated since its last check, whoever wrote it (lethe, or another tool with plain SQL)
-- and in whatever order ids were handed out. The counter row is locked by each writer until it
-- commits, so the counter grows in commit order.
CREATE TABLE lethe.hold_changes (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    counter   bigint  NOT NULL
);
INSERT INTO lethe.hold_changes VALUES (true, 0);

-- SECURITY DEFINER: any role that may write the holds bumps the counter without a grant of its
-- own on it.
CREATE FUNCTION lethe.bump_hold_changes() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, lethe AS $$
BEGIN
    UPDATE lethe.hold_changes SET counter = counter + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER holds_changed AFTER INSERT OR UPDATE OR DELETE ON lethe.holds
    FOR EACH STATEMENT EXECUTE FUNCTION lethe.bump_hold_changes();
CREATE TRIGGER holds_truncated AFTER TRUNCATE ON lethe.holds
    FOR EACH STATEMENT EXECUTE FUNCTION lethe.bump_hold_changes();
