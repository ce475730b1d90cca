//! `tokbench-worker bench`: run one benchmark here and now (no coordinator), print a summary
//! and write the BenchReport as pretty JSON, like the demo's `benchmark_<model>_<time>.json`.
//! Run it under `nsys profile` to get the NVTX ranges (CUDA build).

use crate::bench::{self, Progress};
use crate::error::EngineError;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use tokbench_core::report::LatencyStats;
use tokbench_core::{BenchReport, DeviceSpec, Workload};

const EXAMPLES: &str = "\
Examples:
  # the demo's run: opt-125m, 4 built-in prompts, 128 new tokens, real weights if cached
  tokbench-worker bench --model opt-125m
  # a Qwen3 / Llama 3 architecture with synthetic weights (prompts are token ids without tokenizer files)
  tokbench-worker bench --model qwen3-0.6b --input-len 32 --max-tokens 32
  # GPU, half precision, throughput-style synthetic prompts of 32 tokens
  tokbench-worker bench --model facebook/opt-1.3b --device cuda:0 --dtype f16 --batch-size 16 --num-prompts 64 --input-len 32
  # your own prompts (UTF-8, one per line), sampling, stop at EOS
  tokbench-worker bench --model gpt2 --prompts prompts.txt --temperature 0.8 --top-p 0.95 --seed 7 --stop-at-eos
  # a local checkpoint directory (config.json + model.safetensors)
  tokbench-worker bench --model ./my-opt --weights real --json out.json
  # profile with Nsight Systems (build with --features cuda for NVTX ranges)
  nsys profile -o profile_facebook_opt-125m --force-overwrite true tokbench-worker bench --model opt-125m --device cuda:0

Models: a catalog name (`tokbench models` lists them: opt-125m .. opt-1.3b, gpt2 .., smollm2-135m,
tinyllama-1.1b, llama-3.2-1b, qwen2.5-0.5b, qwen3-0.6b, mistral-7b-v0.3, ...), a Hugging Face repo id,
or a local directory with config.json.
Weights: a local directory's files, else the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub). When the cache lacks them, --weights real and auto download config.json, the
tokenizer files and the weights (safetensors preferred) from the Hub (HF_ENDPOINT) into the cache, with
a progress bar, before the timed load; an interrupted download resumes, every file is checked against
the Hub's size and hash. Gated models (Llama) need their licence accepted on the model page and a token
in HF_TOKEN. --offline (or HF_HUB_OFFLINE=1) never touches the network; --weights auto then, or when the
download fails (no network, 401, 404), runs synthetic weights and says why; --weights synthetic never
downloads.
Exit codes: 0 ok, 2 bad input (unknown model, bad prompt file, prompt too long, repo not found or gated
without a token, ...), 1 other errors.";

/// Run one benchmark standalone.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXAMPLES)]
pub struct BenchArgs {
    /// Catalog name, Hugging Face repo id, or local model directory.
    #[arg(long, default_value = "opt-125m")]
    pub model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceSpec,
    /// Prompts per batch (one prefill + decode loop per batch).
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// The rest of the job (defaults: 4 built-in prompts, 128 new tokens, 1 warm-up, 3 repetitions).
    #[command(flatten)]
    pub workload: tokbench_core::args::WorkloadArgs,
    /// Run the workload in this JSON file (tokbench-core's `Workload`, as a report's "workload"
    /// holds it) instead of the flags above; the profiler hands its child the job this way.
    #[arg(long, value_name = "PATH", conflicts_with_all = WORKLOAD_FLAG_IDS)]
    pub workload_file: Option<PathBuf>,
    /// Where to write the JSON report [default: ./benchmark_<model>_<YYYYmmdd_HHMMSS>.json].
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Print nothing but errors (the JSON is still written).
    #[arg(long)]
    pub quiet: bool,
}

/// Every flag `--workload-file` replaces (clap ids: the field names).
const WORKLOAD_FLAG_IDS: [&str; 24] = [
    "model", "device", "batch_size", "weights", "weights_seed", "dtype", "prompts", "num_prompts", "input_len",
    "max_tokens", "repetitions", "warmup", "stop_at_eos", "temperature", "top_p", "top_k", "seed", "decode", "pdl",
    "gemv_max_rows", "fused_prefill_attention", "lt_epilogue", "kernel_compute_cap", "fused_rotary_prefill",
];

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: tokbench_core::workload::ParseSpecError| e.to_string())
}

impl BenchArgs {
    /// The workload these flags describe (reads the prompt file; `run_workload` validates it).
    pub fn to_workload(&self) -> crate::Result<Workload> {
        if let Some(path) = &self.workload_file {
            let mut w = read_workload_file(path)?;
            w.offline |= self.workload.offline;
            return Ok(w);
        }
        let base = Workload { model: self.model.clone(), device: self.device, batch_size: self.batch_size, ..Workload::default() };
        self.workload.apply(base).map_err(|e| EngineError::InvalidWorkload(e.to_string()))
    }
}

/// Reads a `Workload` written as JSON (see [`write_workload_file`]).
pub fn read_workload_file(path: &std::path::Path) -> crate::Result<Workload> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EngineError::InvalidWorkload(format!("cannot read the workload file {}: {e}", path.display()))
    })?;
    Workload::from_json(&text).map_err(|e| {
        EngineError::InvalidWorkload(format!(
            "the workload file {} is not a tokbench workload: {e}. Write tokbench-core's Workload as JSON, e.g. {{\"model\":\"gpt2\",\"max_tokens\":64}}",
            path.display()
        ))
    })
}

/// Writes `workload` as the JSON `--workload-file` reads, synced to disk.
pub fn write_workload_file(workload: &Workload, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(serde_json::to_string_pretty(workload).expect("a Workload serialises").as_bytes())?;
    f.sync_all()
}

/// Exit code for an engine error: 2 when the input is at fault (running again unchanged
/// cannot help), 1 otherwise.
pub fn exit_code(e: &EngineError) -> i32 {
    match e {
        EngineError::UnknownModel(_)
        | EngineError::Config(_)
        | EngineError::ConfigFile { .. }
        | EngineError::WeightsNotFound { .. }
        | EngineError::ShapeMismatch { .. }
        | EngineError::TensorMissing { .. }
        | EngineError::PromptTooLong { .. }
        | EngineError::PromptFile { .. }
        | EngineError::InvalidWorkload(_) => 2,
        // Gated without a token, no such repo or revision, no loadable weights, offline.
        EngineError::Download { source, .. } if source.is_user_error() => 2,
        // A CUDA device asked of a CPU-only build is a usage error too.
        EngineError::DeviceUnavailable { .. } if !cfg!(feature = "cuda") => 2,
        _ => 1,
    }
}

pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    match run(&args) {
        Ok(()) => Ok(()),
        Err(Failure::Engine(e)) => {
            eprintln!("error: {e}");
            std::process::exit(exit_code(&e));
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

enum Failure {
    Engine(EngineError),
    Other(anyhow::Error),
}

fn run(args: &BenchArgs) -> Result<(), Failure> {
    let workload = args.to_workload().map_err(Failure::Engine)?;
    let cancel = AtomicBool::new(false);
    let quiet = args.quiet;
    let mut last_phase = "";
    // The download's bar (bytes, rate, ETA), on stderr; indicatif hides it when stderr is no terminal.
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on_progress = |p: &Progress| {
        if quiet {
            return;
        }
        if p.phase != last_phase {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("[{}]", p.phase);
            last_phase = p.phase;
        }
        if p.phase == "downloading" && p.bytes_total > 0 {
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::with_draw_target(Some(p.bytes_total), indicatif::ProgressDrawTarget::stderr());
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec}, ETA {eta}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                b
            });
            b.set_length(p.bytes_total);
            b.set_position(p.bytes_done);
        }
    };
    let result = bench::run_workload(&workload, &cancel, &mut on_progress);
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let report = result.map_err(Failure::Engine)?;
    let path = args.json.clone().unwrap_or_else(|| default_json_name(&report));
    let text = serde_json::to_string_pretty(&report).map_err(|e| Failure::Other(e.into()))?;
    std::fs::write(&path, text + "\n")
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot write the report to {}: {e}", path.display())))?;
    if !quiet {
        print!("{}", summary(&report));
        println!("report: {}", path.display());
    }
    Ok(())
}

/// `benchmark_<model file stem>_<YYYYmmdd_HHMMSS>.json`, as the demo named its results.
pub fn default_json_name(report: &BenchReport) -> PathBuf {
    let stem = report.nsight_metrics.profile_name.strip_prefix("profile_").unwrap_or(&report.nsight_metrics.profile_name);
    let time = chrono::DateTime::parse_from_rfc3339(&report.timestamp)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    PathBuf::from(format!("benchmark_{stem}_{}.json", time.format("%Y%m%d_%H%M%S")))
}

/// The human-readable summary printed after a run.
pub fn summary(r: &BenchReport) -> String {
    let m = &r.inference_metrics;
    let p = &r.model_properties;
    let g = &r.gpu_metrics;
    let lat = |s: &LatencyStats| format!("p50 {:.2}  p90 {:.2}  p99 {:.2}  (n={})", s.p50, s.p90, s.p99, s.count);
    let mb = |v: Option<f64>| v.map(|x| format!("{x:.1} MB")).unwrap_or_else(|| "n/a".into());
    let mut out = String::new();
    out.push_str(&format!("model            {} ({}, {} parameters, {:.1} MB)\n", r.model_id, p.model_type, p.total_parameters, p.model_size_mb));
    if p.weights == "real" {
        out.push_str(&format!("weights          real ({})\n", p.weights_source));
    } else {
        out.push_str(&format!("weights          {}\n", p.weights_source));
    }
    if let Some(d) = &p.weights_download {
        match &d.error {
            None => out.push_str(&format!(
                "download         {}@{} from the Hugging Face Hub: {} of {} transferred in {:.1} s (not in the load time)\n",
                d.repo,
                d.revision,
                crate::hub::human_bytes(d.bytes_downloaded),
                crate::hub::human_bytes(d.bytes_total),
                d.seconds
            )),
            Some(e) => out.push_str(&format!("download         failed, so synthetic weights: {e}\n")),
        }
    }
    out.push_str(&format!("tokenizer        {}\n", p.tokenizer));
    out.push_str(&format!("device           {} ({}), dtype {}\n", g.device, g.gpu_name, p.dtype));
    out.push_str(&format!(
        "workload         {} prompts, batch {}, {} input tokens, {} new tokens each, warmup {}, repetitions {}\n",
        m.num_prompts, r.workload.batch_size, m.total_input_tokens, r.workload.max_tokens, m.warmup_runs, m.repetitions
    ));
    out.push_str(&format!("load time        {:.3} s\n", m.model_load_time_seconds));
    out.push_str(&format!(
        "inference time   {:.3} s median [{:.3} - {:.3}]\n",
        m.total_inference_time_seconds, m.total_inference_time_seconds_min, m.total_inference_time_seconds_max
    ));
    out.push_str(&format!(
        "tokens/s         {:.1} median [{:.1} - {:.1}], CV {:.1}%  ({} output tokens)\n",
        m.tokens_per_second,
        m.tokens_per_second_min,
        m.tokens_per_second_max,
        m.tokens_per_second_cv * 100.0,
        m.total_output_tokens
    ));
    out.push_str(&format!("prefill          {:.1} tokens/s\n", m.prefill_tokens_per_second));
    out.push_str(&format!("decode           {:.1} tokens/s ({} path)\n", m.decode_tokens_per_second, m.decode_path));
    if !m.decode_kernels.is_empty() {
        out.push_str(&format!("decode kernels   {}\n", m.decode_kernels));
    }
    out.push_str(&format!("TTFT ms          {}\n", lat(&m.ttft_ms)));
    out.push_str(&format!("ITL ms           {}\n", lat(&m.inter_token_latency_ms)));
    out.push_str(&format!(
        "memory           total {}; engine pools: now {}, peak {}; NVML process (context included): now {}, sampled peak {}\n",
        mb(g.gpu_memory_total_mb),
        mb(g.gpu_memory_allocated_mb),
        mb(g.peak_memory_allocated_mb),
        mb(g.gpu_memory_reserved_mb),
        mb(g.process_memory_peak_mb)
    ));
    if let (Some(e), Some(n)) = (g.engine_peak_allocated_mb, g.workload_memory_needed_mb) {
        out.push_str(&format!("engine memory    peak {e:.0} MiB allocated by the engine; the workload needs {n:.0} MiB (weights + KV cache + logits), ratio {:.2}\n", e / n));
    }
    if let Some(t) = &r.telemetry {
        out.push_str(&format!(
            "telemetry        util mean {:.0}%, power mean {:.0} W, energy {}\n",
            t.utilization_percent_mean,
            t.power_watts_mean,
            t.energy_joules.map(|j| format!("{j:.1} J")).unwrap_or_else(|| "n/a".into())
        ));
    }
    if let Some(o) = r.outputs.first() {
        out.push_str(&format!("first output     {:?} -> {:?}\n", o.prompt, o.generated_text));
    }
    out
}
