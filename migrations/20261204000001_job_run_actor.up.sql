-- Who ran each run: `lethe run --by`, LETHE_ACTOR, the OS user, or the daemon itself.
ALTER TABLE lethe.job_runs ADD COLUMN actor text;
