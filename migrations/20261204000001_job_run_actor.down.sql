ALTER TABLE lethe.job_runs DROP COLUMN actor;
