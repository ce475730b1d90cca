-- tokbench coordinator schema, version 1.
-- All times are milliseconds since the Unix epoch (UTC). All ids are UUID v4 strings.

CREATE TABLE sweeps (
    id          TEXT PRIMARY KEY NOT NULL,
    -- The SweepSpec as submitted (proto3 JSON-ish, serde of our own struct).
    spec_json   TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX sweeps_by_created ON sweeps (created_at);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    sweep_id          TEXT NOT NULL REFERENCES sweeps (id),
    -- Position of the job in its sweep (models x batch sizes order).
    seq               INTEGER NOT NULL,
    model             TEXT NOT NULL,
    batch_size        INTEGER NOT NULL,
    -- tokbench_core::Workload as JSON; the worker replaces `device` with its own.
    workload_json     TEXT NOT NULL,
    -- '' = any worker, else 'cpu' / 'cuda'.
    backend           TEXT NOT NULL DEFAULT '',
    -- Placement estimate: parameters (catalog estimate, 0 = unknown) x bytes per parameter
    -- (0 = dtype left to the worker: 2 on CUDA).
    est_parameters    INTEGER NOT NULL DEFAULT 0,
    dtype_bytes       INTEGER NOT NULL DEFAULT 0,
    profile           INTEGER NOT NULL DEFAULT 0,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    lease_expires_at  INTEGER,
    worker_id         TEXT,
    last_error        TEXT NOT NULL DEFAULT '',
    -- Live progress from the last heartbeat.
    phase             TEXT NOT NULL DEFAULT '',
    tokens_done       INTEGER NOT NULL DEFAULT 0,
    tokens_total      INTEGER NOT NULL DEFAULT 0,
    tokens_per_second REAL NOT NULL DEFAULT 0,
    -- When the job last became queued / was last leased (queue latency = leased_at - queued_at).
    queued_at         INTEGER NOT NULL,
    leased_at         INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
-- The lease query: oldest queued job (rowid order = insertion order) of a state.
CREATE INDEX jobs_by_state ON jobs (state);
-- The reaper: expired leases.
CREATE INDEX jobs_by_lease ON jobs (state, lease_expires_at);
CREATE INDEX jobs_by_sweep ON jobs (sweep_id, seq);

CREATE TABLE runs (
    id                              TEXT PRIMARY KEY NOT NULL,
    -- One run per job, ever: this is what makes completion idempotent.
    job_id                          TEXT NOT NULL UNIQUE REFERENCES jobs (id),
    attempt                         INTEGER NOT NULL,
    sweep_id                        TEXT NOT NULL REFERENCES sweeps (id),
    model                           TEXT NOT NULL,
    model_id                        TEXT NOT NULL,
    batch_size                      INTEGER NOT NULL,
    worker_id                       TEXT NOT NULL,
    device                          TEXT NOT NULL,
    gpu_name                        TEXT NOT NULL,
    weights                         TEXT NOT NULL,
    dtype                           TEXT NOT NULL,
    -- The demo's fields (same names and units).
    total_parameters                INTEGER NOT NULL,
    num_layers                      INTEGER NOT NULL,
    model_size_mb                   REAL NOT NULL,
    model_load_time_seconds         REAL NOT NULL,
    total_inference_time_seconds    REAL NOT NULL,
    tokens_per_second               REAL NOT NULL,
    num_prompts                     INTEGER NOT NULL,
    total_input_tokens              INTEGER NOT NULL,
    total_output_tokens             INTEGER NOT NULL,
    gpu_memory_allocated_mb         REAL,
    gpu_memory_utilization_percent  REAL,
    -- Extensions.
    ttft_p50_ms                     REAL NOT NULL,
    ttft_p99_ms                     REAL NOT NULL,
    itl_p50_ms                      REAL NOT NULL,
    itl_p99_ms                      REAL NOT NULL,
    prefill_tokens_per_second       REAL NOT NULL,
    decode_tokens_per_second        REAL NOT NULL,
    peak_memory_mb                  REAL,
    energy_joules                   REAL,
    tokens_per_joule                REAL,
    -- Environment.
    tokbench_version                TEXT NOT NULL,
    git_commit                      TEXT,
    hostname                        TEXT NOT NULL,
    driver_version                  TEXT,
    cuda_version                    TEXT,
    -- Timestamp the job started (RFC 3339, from the report) and when the run was stored.
    started_at                      TEXT NOT NULL,
    created_at                      INTEGER NOT NULL,
    -- Worker-side timings (ns) from CompleteJob.
    worker_total_ns                 INTEGER NOT NULL DEFAULT 0,
    -- The full tokbench_core::BenchReport.
    report_json                     TEXT NOT NULL
);
CREATE INDEX runs_by_sweep ON runs (sweep_id, created_at);
CREATE INDEX runs_by_model ON runs (model, created_at);

-- Latency samples of a run: every TTFT (per request) and decode-step latency (per batch step)
-- of every timed repetition, in milliseconds.
CREATE TABLE samples (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    kind        TEXT NOT NULL CHECK (kind IN ('ttft', 'step')),
    repetition  INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    value_ms    REAL NOT NULL,
    PRIMARY KEY (run_id, kind, repetition, idx)
) WITHOUT ROWID;

-- NVML telemetry summary of a run (absent on CPU workers).
CREATE TABLE telemetry (
    run_id                    TEXT PRIMARY KEY NOT NULL REFERENCES runs (id),
    samples                   INTEGER NOT NULL,
    interval_ms               INTEGER NOT NULL,
    gpu_name                  TEXT NOT NULL,
    memory_total_mb           REAL NOT NULL,
    memory_used_mb_max        REAL NOT NULL,
    process_memory_mb_max     REAL,
    utilization_percent_mean  REAL NOT NULL,
    utilization_percent_max   REAL NOT NULL,
    power_watts_mean          REAL NOT NULL,
    power_watts_max           REAL NOT NULL,
    energy_joules             REAL,
    tokens_per_joule          REAL,
    sm_clock_mhz_max          INTEGER,
    temperature_c_max         INTEGER
);

CREATE TABLE workers (
    id                 TEXT PRIMARY KEY NOT NULL,
    -- WorkerCapabilities as JSON.
    capabilities_json  TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    backend            TEXT NOT NULL,
    registered_at      INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    current_job_id     TEXT
);

CREATE TABLE artifacts (
    id          TEXT PRIMARY KEY NOT NULL,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    -- Set when the job's run exists (at upload, or linked when the run is stored later).
    run_id      TEXT REFERENCES runs (id),
    attempt     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    -- Absolute path on the coordinator's disk.
    path        TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX artifacts_by_job ON artifacts (job_id);
CREATE INDEX artifacts_by_run ON artifacts (run_id);
