//! `tokbench show RUN`: every metric of one run, in readable sections with units.

use crate::output::{time_ms, Ui};
use crate::report::fmt_opt;
use tokbench_core::report::{LatencyStats, TelemetryPoint};
use tokbench_core::{BenchReport, PromptSource};
use tokbench_proto::v1::RunSummary;

fn section(ui: &Ui, title: &str, rows: Vec<(&str, String)>) {
    println!("\n{title}");
    let mut t = ui.table(&["Field", "Value"]);
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    println!("{t}");
}

fn lat(s: &LatencyStats) -> String {
    format!("p50 {:.2}  p90 {:.2}  p99 {:.2}  mean {:.2}  min {:.2}  max {:.2}  (n={})", s.p50, s.p90, s.p99, s.mean, s.min, s.max, s.count)
}

/// Rows of the telemetry table: enough to see a job's phases, short enough for one screen
/// (`tokbench export` and `show --json` carry every point).
const SERIES_ROWS: usize = 20;

/// Each timed repetition's own figures: its wall time, tokens/s and latency percentiles over its
/// requests (TTFT) and decode steps (the per-sample values are in the JSON).
fn print_repetitions(ui: &Ui, r: &BenchReport) {
    if r.repetitions.is_empty() {
        return;
    }
    println!("\nRepetitions");
    let mut t = ui.table(&["#", "Inference (s)", "Tokens/s", "TTFT p50 (ms)", "TTFT max (ms)", "Step p50 (ms)", "Step p99 (ms)", "Steps"]);
    for rep in &r.repetitions {
        let ttft = LatencyStats::from_samples(&rep.ttft_ms);
        let step = LatencyStats::from_samples(&rep.step_latencies_ms);
        t.add_row(vec![
            rep.index.to_string(),
            format!("{:.3}", rep.total_inference_time_seconds),
            format!("{:.1}", rep.tokens_per_second),
            format!("{:.2}", ttft.p50),
            format!("{:.2}", ttft.max),
            format!("{:.3}", step.p50),
            format!("{:.3}", step.p99),
            rep.step_latencies_ms.len().to_string(),
        ]);
    }
    println!("{t}");
}

/// Up to `rows` readings, evenly spaced over the job, first and last included.
pub fn telemetry_rows(series: &[TelemetryPoint], rows: usize) -> Vec<&TelemetryPoint> {
    let n = series.len();
    let keep = n.min(rows.max(1));
    let mut picked: Vec<usize> = (0..keep).map(|i| if keep <= 1 { 0 } else { i * (n - 1) / (keep - 1) }).collect();
    picked.dedup();
    picked.into_iter().map(|i| &series[i]).collect()
}

fn print_telemetry_series(ui: &Ui, series: &[TelemetryPoint], rows: usize) {
    let shown = telemetry_rows(series, rows);
    println!("\nTelemetry over time ({} of {} NVML readings)", shown.len(), series.len());
    let mut t = ui.table(&["t (s)", "Power (W)", "SM clock (MHz)", "Memory used (MiB)", "Process memory (MiB)", "SM util (%)", "Temp (C)"]);
    let o = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "n/a".into());
    for p in shown {
        t.add_row(vec![
            format!("{:.1}", p.t_ms / 1000.0),
            fmt_opt(p.power_watts, 1),
            o(p.sm_clock_mhz),
            format!("{:.0}", p.memory_used_mb),
            fmt_opt(p.process_memory_mb, 0),
            o(p.utilization_percent),
            o(p.temperature_c),
        ]);
    }
    println!("{t}");
}

pub fn print(ui: &Ui, s: &RunSummary, r: &BenchReport, artifacts: &[String]) {
    if let Some(serve) = &r.serve {
        return print_serve(ui, s, r, serve);
    }
    let mp = &r.model_properties;
    let im = &r.inference_metrics;
    let gm = &r.gpu_metrics;
    let w = &r.workload;
    println!("run {}  (sweep {}, job {}, worker {}, attempt {}, stored {})", s.run_id, s.sweep_id, s.job_id, s.worker_id, s.attempt, time_ms(s.created_at_ms));
    section(
        ui,
        "Model",
        vec![
            ("model", format!("{} ({})", r.model, r.model_id)),
            ("type", mp.model_type.clone()),
            ("total_parameters", mp.total_parameters.to_string()),
            ("num_layers", mp.num_layers.to_string()),
            ("hidden_size", mp.hidden_size.to_string()),
            ("vocab_size", mp.vocab_size.to_string()),
            ("model_size_mb (MiB)", format!("{:.1}", mp.model_size_mb)),
            ("dtype", mp.dtype.clone()),
            ("weights", format!("{} ({})", mp.weights, mp.weights_source)),
            ("tokenizer", mp.tokenizer.clone()),
        ],
    );
    let prompts = match &w.prompts {
        PromptSource::Builtin { num_prompts } => format!("{num_prompts} built-in prompts"),
        PromptSource::Inline { prompts } => format!("{} prompts from a file", prompts.len()),
        PromptSource::Synthetic { num_prompts, input_len } => format!("{num_prompts} synthetic prompts of {input_len} tokens"),
    };
    section(
        ui,
        "Workload",
        vec![
            ("device", w.device.to_string()),
            ("batch_size", w.batch_size.to_string()),
            ("prompts", prompts),
            ("max_tokens", w.max_tokens.to_string()),
            ("ignore_eos", w.ignore_eos.to_string()),
            (
                "sampling",
                if w.sampling.is_greedy() {
                    "greedy".into()
                } else {
                    format!("temperature {} top_p {:?} top_k {:?} seed {}", w.sampling.temperature, w.sampling.top_p, w.sampling.top_k, w.sampling.seed)
                },
            ),
            ("warmup / repetitions", format!("{} / {}", im.warmup_runs, im.repetitions)),
        ],
    );
    section(
        ui,
        "Inference (times are medians over repetitions)",
        vec![
            (
                "model_load_time_seconds (s)",
                if im.model_reused {
                    format!("{:.3}  (model reused from the worker's previous job, not a cold load)", im.model_load_time_seconds)
                } else {
                    format!("{:.3}", im.model_load_time_seconds)
                },
            ),
            (
                "total_inference_time_seconds (s)",
                format!("{:.3}  (min {:.3}, max {:.3})", im.total_inference_time_seconds, im.total_inference_time_seconds_min, im.total_inference_time_seconds_max),
            ),
            (
                "tokens_per_second (tok/s)",
                format!("{:.2}  (min {:.2}, max {:.2}, CV {:.1}%)", im.tokens_per_second, im.tokens_per_second_min, im.tokens_per_second_max, im.tokens_per_second_cv * 100.0),
            ),
            ("prefill tokens/s", format!("{:.1}", im.prefill_tokens_per_second)),
            ("decode tokens/s", format!("{:.1}", im.decode_tokens_per_second)),
            ("TTFT (ms)", lat(&im.ttft_ms)),
            ("inter-token latency (ms)", lat(&im.inter_token_latency_ms)),
            ("num_prompts", im.num_prompts.to_string()),
            ("total_input_tokens", im.total_input_tokens.to_string()),
            ("total_output_tokens", im.total_output_tokens.to_string()),
            ("average_tokens_per_prompt", format!("{:.1}", im.average_tokens_per_prompt)),
        ],
    );
    let mut gpu = vec![
        ("gpu_name", gm.gpu_name.clone()),
        ("device", gm.device.clone()),
        ("gpu_memory_total_mb (MiB)", fmt_opt(gm.gpu_memory_total_mb, 1)),
        ("gpu_memory_allocated_mb (MiB, engine pools now)", fmt_opt(gm.gpu_memory_allocated_mb, 1)),
        ("peak_memory_allocated_mb (MiB, engine pools' high-water)", fmt_opt(gm.peak_memory_allocated_mb, 1)),
        ("gpu_memory_reserved_mb (MiB, NVML process incl. context)", fmt_opt(gm.gpu_memory_reserved_mb, 1)),
        ("process_memory_peak_mb (MiB, NVML sampled)", fmt_opt(gm.process_memory_peak_mb, 1)),
        ("workload_memory_needed_mb (MiB, computed)", fmt_opt(gm.workload_memory_needed_mb, 1)),
        ("gpu_memory_utilization_percent (%)", fmt_opt(gm.gpu_memory_utilization_percent, 1)),
        ("memory_source", gm.memory_source.clone()),
        ("driver / CUDA", format!("{} / {}", gm.driver_version.clone().unwrap_or_else(|| "n/a".into()), gm.cuda_version.clone().unwrap_or_else(|| "n/a".into()))),
    ];
    if let Some(t) = &r.telemetry {
        gpu.push(("utilization mean / max (%)", format!("{:.1} / {:.1}", t.utilization_percent_mean, t.utilization_percent_max)));
        gpu.push(("power mean / max (W)", format!("{:.1} / {:.1}", t.power_watts_mean, t.power_watts_max)));
        gpu.push(("energy (J)", fmt_opt(t.energy_joules, 1)));
        gpu.push(("tokens per joule", fmt_opt(t.tokens_per_joule, 3)));
        gpu.push(("telemetry samples", format!("{} every {} ms", t.samples, t.interval_ms)));
    }
    section(ui, "GPU", gpu);
    print_repetitions(ui, r);
    if let Some(t) = r.telemetry.as_ref().filter(|t| !t.series.is_empty()) {
        print_telemetry_series(ui, &t.series, SERIES_ROWS);
    }
    let ns = &r.nsight_metrics;
    section(
        ui,
        "Nsight",
        vec![
            ("profile_file", ns.profile_file.clone().unwrap_or_else(|| "none (not profiled)".into())),
            ("profile_name", ns.profile_name.clone()),
            ("summary covers", if ns.summary_scope.is_empty() { "-".into() } else { ns.summary_scope.clone() }),
            (
                "inference range / pass time",
                ns.inference_range_vs_pass_time.map_or("-".into(), |r| format!("{r:.4} (NVTX median {:.4} s)", ns.inference_range_seconds.unwrap_or(f64::NAN))),
            ),
            ("notes", ns.notes.clone()),
            ("NVTX ranges seen", if ns.nvtx_ranges.is_empty() { "- (not profiled)".into() } else { ns.nvtx_ranges.join(", ") }),
            ("artifacts", if artifacts.is_empty() { "-".into() } else { artifacts.join(", ") }),
        ],
    );
    let env = &r.environment;
    section(
        ui,
        "Environment",
        vec![
            ("tokbench", format!("{} ({})", env.tokbench_version, env.git_commit.clone().unwrap_or_else(|| "unknown commit".into()))),
            ("host", env.hostname.clone()),
            ("os", env.os.clone()),
            ("cpu", env.cpu.clone()),
            ("backend", env.backend.clone()),
            ("started", r.timestamp.clone()),
        ],
    );
    if let Some(o) = r.outputs.first() {
        let text: String = o.generated_text.chars().take(160).collect();
        println!("\nfirst output ({} prompt tokens, {} generated, finish: {}): {:?}", o.prompt_tokens, o.generated_token_ids.len(), o.finish_reason, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64) -> TelemetryPoint {
        TelemetryPoint { t_ms: t, memory_used_mb: 1.0, process_memory_mb: None, utilization_percent: Some(1), power_watts: Some(1.0), sm_clock_mhz: None, temperature_c: None }
    }

    #[test]
    fn telemetry_rows_span_the_job() {
        let series: Vec<TelemetryPoint> = (0..101).map(|i| point(i as f64 * 100.0)).collect();
        let rows = telemetry_rows(&series, 20);
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[0].t_ms, 0.0);
        assert_eq!(rows[19].t_ms, 10_000.0);
        assert!(rows.windows(2).all(|w| w[1].t_ms > w[0].t_ms));
        assert_eq!(telemetry_rows(&series[..3], 20).len(), 3);
        assert_eq!(telemetry_rows(&series[..1], 20).len(), 1);
        assert!(telemetry_rows(&[], 20).is_empty());
    }
}

/// A serve run: the endpoint, the load asked for and achieved, vLLM's metrics and the failures.
fn print_serve(ui: &Ui, s: &RunSummary, r: &BenchReport, serve: &tokbench_core::ServeReport) {
    use tokbench_core::serve::{rate_label, Stats};
    let m = &serve.metrics;
    println!("run {}  (sweep {}, job {}, worker {}, attempt {}, stored {})  [serve]", s.run_id, s.sweep_id, s.job_id, s.worker_id, s.attempt, time_ms(s.created_at_ms));
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
    section(
        ui,
        "Endpoint and load",
        vec![
            ("endpoint", serve.endpoint.clone()),
            ("served_model", serve.served_model.clone()),
            ("dataset", match &serve.spec.trace {
                Some(t) => format!("trace {t} (arrivals and lengths replayed)"),
                None => serve.spec.dataset.label(),
            }),
            ("tokenizer", if serve.tokenizer.is_empty() { "not recorded".into() } else { serve.tokenizer.clone() }),
            ("server_engine", serve.server_engine.clone().unwrap_or_else(|| "not tokbench's (an endpoint), or not recorded".into())),
            ("request_rate (req/s)", rate_label(serve.request_rate)),
            ("achieved_request_rate (req/s)", opt(serve.achieved_request_rate)),
            ("burstiness", serve.spec.burstiness.to_string()),
            ("max_concurrency", m.max_concurrency.map(|c| c.to_string()).unwrap_or_else(|| "none".into())),
            ("peak_concurrency", m.peak_concurrency.to_string()),
            ("started", r.timestamp.clone()),
        ],
    );
    let stat = |st: &Option<Stats>| st.map(|t| format!("mean {:.2}  median {:.2}  p90 {:.2}  p99 {:.2}  (n {})", t.mean, t.median, t.p90, t.p99, t.count)).unwrap_or_else(|| "n/a".into());
    section(
        ui,
        "Serving metrics (warm-up excluded)",
        vec![
            ("completed / failed / warm-up / not sent", format!("{} / {} / {} / {}", m.completed, m.failed, m.warmup_requests, m.not_sent)),
            ("duration_s", format!("{:.3}", m.duration_s)),
            ("request_throughput (req/s)", format!("{:.3}", m.request_throughput)),
            ("output_throughput (tok/s)", format!("{:.2}", m.output_throughput)),
            ("total_token_throughput (tok/s)", format!("{:.2}", m.total_token_throughput)),
            ("total_input / output tokens", format!("{} / {}", m.total_input_tokens, m.total_output_tokens)),
            ("output counts differing from the tokenizer's", m.token_count_mismatches.to_string()),
            ("ttft_ms", stat(&m.ttft_ms)),
            ("tpot_ms", stat(&m.tpot_ms)),
            ("itl_ms", stat(&m.itl_ms)),
            ("e2el_ms", stat(&m.e2el_ms)),
            ("request_goodput (req/s)", opt(m.request_goodput)),
            ("arrival_error_ms", stat(&m.arrival_error_ms)),
            ("queue_wait_ms", stat(&m.queue_wait_ms)),
        ],
    );
    for w in &m.warnings {
        println!("\nWarning: {w}");
    }
    if !m.failures.is_empty() {
        println!("\nFailures ({}):", m.failures.len());
        for f in m.failures.iter().take(10) {
            println!("  #{} {}: {}", f.index, f.id, f.message);
        }
        if m.failures.len() > 10 {
            println!("  ... (`tokbench show {} --json` has all of them and every request's timeline)", s.run_id);
        }
    }
}
