DROP TABLE lethe.requests;
