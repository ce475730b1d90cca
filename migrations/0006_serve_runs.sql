-- tokbench coordinator schema, version 6.
-- Online-serving runs (`tokbench sweep --mode serve`): the worker drove an OpenAI-compatible
-- endpoint instead of running a model. Their full result (vLLM's metrics and every request's
-- timeline) is in report_json, like an offline run's; these columns make the headline figures
-- queryable. For serve runs the offline columns hold their serving analogues where one exists
-- (tokens_per_second = output tokens/s, ttft/itl percentiles, tokens, requests as num_prompts,
-- device = the endpoint) and 0 where none does (load time, parameters, prefill/decode rates):
-- read them through `mode`. Offline runs leave every column below NULL.
ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'offline' CHECK (mode IN ('offline', 'serve'));
ALTER TABLE runs ADD COLUMN endpoint TEXT;
-- Requests per second asked for; 'inf' is stored as SQLite's infinity (9e999).
ALTER TABLE runs ADD COLUMN request_rate REAL;
ALTER TABLE runs ADD COLUMN achieved_request_rate REAL;
ALTER TABLE runs ADD COLUMN completed_requests INTEGER;
ALTER TABLE runs ADD COLUMN failed_requests INTEGER;
ALTER TABLE runs ADD COLUMN request_throughput REAL;
ALTER TABLE runs ADD COLUMN output_throughput REAL;
ALTER TABLE runs ADD COLUMN tpot_p50_ms REAL;
ALTER TABLE runs ADD COLUMN tpot_p99_ms REAL;
ALTER TABLE runs ADD COLUMN request_goodput REAL;
