-- A counter that every change to the holds bumps, in the transaction that makes the change: the
-- fence in front of object deletes reads it to learn that a hold was placed, released, changed
-- or re-activated since its last check, whoever wrote it and in whatever id order.
CREATE TABLE lethe_hold_changes (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    counter   INTEGER NOT NULL
);
INSERT INTO lethe_hold_changes VALUES (1, 0);
CREATE TRIGGER lethe_holds_inserted AFTER INSERT ON lethe_holds
BEGIN
    UPDATE lethe_hold_changes SET counter = counter + 1;
END;
CREATE TRIGGER lethe_holds_updated AFTER UPDATE ON lethe_holds
BEGIN
    UPDATE lethe_hold_changes SET counter = counter + 1;
END;
CREATE TRIGGER lethe_holds_deleted AFTER DELETE ON lethe_holds
BEGIN
    UPDATE lethe_hold_changes SET counter = counter + 1;
END;
