ALTER TABLE lethe_job_runs DROP COLUMN actor;
