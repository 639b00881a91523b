-- Who ran each run: `lethe run --by`, LETHE_ACTOR, the OS user, or the daemon itself.
ALTER TABLE lethe_job_runs ADD COLUMN actor TEXT;
