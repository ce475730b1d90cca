-- tokbench coordinator schema, version 4.
-- Every lease of a job: which worker held which attempt, when, and how it ended. A completion,
-- failure, heartbeat or artifact upload is accepted only from the worker that held that attempt
-- (a stale attempt whose lease expired included, but only from its own worker).
CREATE TABLE attempts (
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    attempt    INTEGER NOT NULL,
    worker_id  TEXT NOT NULL,
    leased_at  INTEGER NOT NULL,
    -- NULL while the attempt is held.
    ended_at   INTEGER,
    -- 'succeeded', 'failed', 'retried' (failed retryably), 'expired' (lease expired),
    -- 'cancelled'; NULL while held.
    outcome    TEXT CHECK (outcome IN ('succeeded', 'failed', 'retried', 'expired', 'cancelled')),
    PRIMARY KEY (job_id, attempt)
);

-- Jobs leased before this table existed: their latest attempt and its worker (earlier attempts'
-- workers were not recorded).
INSERT INTO attempts (job_id, attempt, worker_id, leased_at, ended_at, outcome)
SELECT id, attempts, worker_id, COALESCE(leased_at, updated_at),
       CASE WHEN state IN ('leased', 'running') THEN NULL ELSE updated_at END,
       CASE state WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed' WHEN 'cancelled' THEN 'cancelled'
                  WHEN 'queued' THEN 'expired' ELSE NULL END
FROM jobs WHERE worker_id IS NOT NULL AND attempts > 0;
