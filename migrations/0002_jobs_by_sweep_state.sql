-- tokbench coordinator schema, version 2.
-- "Is any job of this sweep still active?" runs after every completion and failure: with this
-- index it looks at the active jobs of the sweep only, instead of scanning all of its jobs
-- (a sweep has up to 64 x 16 = 1024).
CREATE INDEX jobs_by_sweep_state ON jobs (sweep_id, state);
