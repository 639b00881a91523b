DROP TABLE IF EXISTS lethe_requests;
