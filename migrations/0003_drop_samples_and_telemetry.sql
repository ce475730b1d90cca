-- tokbench coordinator schema, version 3.
-- The `samples` and `telemetry` tables copied parts of each run's report (latency samples, the
-- NVML telemetry summary) that nothing read: the stored report (runs.report_json) is the one
-- record of both, and `tokbench show`, `tokbench export` and the report's telemetry chart read it
-- from there (with the telemetry's readings over time, which these tables never held).
DROP TABLE samples;
DROP TABLE telemetry;
