//! `tokbench show RUN`: every metric of one run, in readable sections with units.

use crate::output::{time_ms, Ui};
use crate::report::fmt_opt;
use tokbench_core::report::LatencyStats;
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

pub fn print(ui: &Ui, s: &RunSummary, r: &BenchReport, artifacts: &[String]) {
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
        ("gpu_memory_allocated_mb (MiB)", fmt_opt(gm.gpu_memory_allocated_mb, 1)),
        ("gpu_memory_reserved_mb (MiB)", fmt_opt(gm.gpu_memory_reserved_mb, 1)),
        ("gpu_memory_utilization_percent (%)", fmt_opt(gm.gpu_memory_utilization_percent, 1)),
        ("peak_memory_allocated_mb (MiB)", fmt_opt(gm.peak_memory_allocated_mb, 1)),
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
    let ns = &r.nsight_metrics;
    section(
        ui,
        "Nsight",
        vec![
            ("profile_file", ns.profile_file.clone().unwrap_or_else(|| "none (not profiled)".into())),
            ("profile_name", ns.profile_name.clone()),
            ("notes", ns.notes.clone()),
            ("NVTX ranges", if ns.nvtx_ranges.is_empty() { "-".into() } else { ns.nvtx_ranges.join(", ") }),
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
