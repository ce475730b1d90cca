-- tokbench coordinator schema, version 5.
-- Live progress of a job's "downloading" phase (weights fetched from the Hugging Face Hub before
-- loading): bytes so far and in all, from the worker's heartbeats (0 in other phases).
ALTER TABLE jobs ADD COLUMN bytes_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN bytes_total INTEGER NOT NULL DEFAULT 0;
