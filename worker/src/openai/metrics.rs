//! The server's counters and gauges, written by the engine thread and the HTTP handlers
//! (atomics, no locks), read by `GET /metrics` in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests the engine accepted.
    pub requests_received: AtomicU64,
    /// Requests that ran to the end (`stop` or `length`).
    pub requests_finished: AtomicU64,
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    /// Requests whose client went away before the end.
    pub requests_cancelled: AtomicU64,
    /// Requests the engine failed (an error event was sent).
    pub requests_failed: AtomicU64,
    /// Requests refused before reaching the engine (4xx).
    pub requests_rejected: AtomicU64,
    /// Prompt and completion tokens of finished requests (= the sums of their `usage`).
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Every token generated, cancelled requests' included.
    pub generation_tokens: AtomicU64,
    /// Tokens run through prefill (recomputed ones after a preemption included).
    pub prefill_tokens: AtomicU64,
    /// Forward passes of prefill (a batched pass of several whole prompts counts once).
    pub prefill_passes: AtomicU64,
    pub preemptions: AtomicU64,
    pub waiting: AtomicU64,
    pub running: AtomicU64,
    pub blocks_used: AtomicU64,
    pub blocks_total: AtomicU64,
    /// Decode steps by how they ran: tokbench's fused kernels over the paged blocks in place, or
    /// candle's ops over blocks gathered into a contiguous cache.
    pub decode_steps_paged: AtomicU64,
    /// The paged steps replayed as a CUDA graph.
    pub decode_steps_graph: AtomicU64,
    pub decode_steps_gathered: AtomicU64,
    tokens_per_second_bits: AtomicU64,
}

impl Metrics {
    pub fn set_tokens_per_second(&self, v: f64) {
        self.tokens_per_second_bits.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn tokens_per_second(&self) -> f64 {
        f64::from_bits(self.tokens_per_second_bits.load(Ordering::Relaxed))
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, model: &str) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let label = format!("model_name=\"{}\"", model.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (extra, value) in samples {
                let labels = if extra.is_empty() { label.clone() } else { format!("{label},{extra}") };
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        metric("tokbench_num_requests_waiting", "gauge", "Requests queued for admission (KV blocks or max-num-seqs).", &[("", get(&self.waiting).to_string())]);
        metric("tokbench_num_requests_running", "gauge", "Sequences admitted (prefilling or decoding).", &[("", get(&self.running).to_string())]);
        metric("tokbench_kv_blocks_used", "gauge", "KV cache blocks held by sequences.", &[("", get(&self.blocks_used).to_string())]);
        metric("tokbench_kv_blocks_total", "gauge", "KV cache blocks in the pool.", &[("", get(&self.blocks_total).to_string())]);
        let usage = match get(&self.blocks_total) {
            0 => 0.0,
            t => get(&self.blocks_used) as f64 / t as f64,
        };
        metric("tokbench_kv_cache_usage_ratio", "gauge", "Fraction of KV blocks in use.", &[("", format!("{usage}"))]);
        metric("tokbench_generation_tokens_per_second", "gauge", "Generated tokens per second over the last 10 seconds.", &[("", format!("{:.3}", self.tokens_per_second()))]);
        metric("tokbench_generation_tokens_total", "counter", "Tokens generated (cancelled requests included).", &[("", get(&self.generation_tokens).to_string())]);
        metric("tokbench_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", &[("", get(&self.prompt_tokens).to_string())]);
        metric("tokbench_completion_tokens_total", "counter", "Completion tokens of finished requests (the sum of their usage).", &[("", get(&self.completion_tokens).to_string())]);
        metric("tokbench_prefill_tokens_total", "counter", "Tokens prefilled (recomputation after preemption included).", &[("", get(&self.prefill_tokens).to_string())]);
        metric("tokbench_prefill_passes_total", "counter", "Prefill forward passes (several whole prompts batched into one pass count once).", &[("", get(&self.prefill_passes).to_string())]);
        metric("tokbench_num_preemptions_total", "counter", "Sequences preempted (blocks freed, recomputed later).", &[("", get(&self.preemptions).to_string())]);
        metric("tokbench_requests_received_total", "counter", "Requests accepted by the engine.", &[("", get(&self.requests_received).to_string())]);
        metric(
            "tokbench_requests_total",
            "counter",
            "Requests by outcome.",
            &[
                ("status=\"finished\"", get(&self.requests_finished).to_string()),
                ("status=\"cancelled\"", get(&self.requests_cancelled).to_string()),
                ("status=\"failed\"", get(&self.requests_failed).to_string()),
                ("status=\"rejected\"", get(&self.requests_rejected).to_string()),
            ],
        );
        metric(
            "tokbench_decode_steps_total",
            "counter",
            "Decode steps by path: graph = tokbench's fused kernels reading the KV blocks in place, replayed as a CUDA graph; paged = the same launched one by one; gathered = candle's ops over blocks copied out per step.",
            &[
                ("path=\"graph\"", get(&self.decode_steps_graph).to_string()),
                ("path=\"paged\"", get(&self.decode_steps_paged).to_string()),
                ("path=\"gathered\"", get(&self.decode_steps_gathered).to_string()),
            ],
        );
        metric(
            "tokbench_request_finish_total",
            "counter",
            "Finished requests by finish_reason.",
            &[("finish_reason=\"stop\"", get(&self.finished_stop).to_string()), ("finish_reason=\"length\"", get(&self.finished_length).to_string())],
        );
        out
    }
}

/// The value of `name{...}` (first sample whose labels contain `label_part`) in a Prometheus
/// text body; for tests and clients.
pub fn scrape(body: &str, name: &str, label_part: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let metric = head.split('{').next()?;
        (metric == name && head.contains(label_part)).then(|| value.parse().ok()).flatten()
    })
}
