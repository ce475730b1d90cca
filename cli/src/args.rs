//! The command tree (clap derive). Every flag is `--long`, with an environment variable where
//! one makes sense; every command's `--help` ends with examples.

use crate::report::GroupBy;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "tokbench",
    version,
    about = "Benchmark and profile LLM inference (OPT, GPT-2) on GPUs and CPUs: submit sweeps, watch them, report",
    after_help = "Examples:\n  tokbench sweep --local                         # no GPU, no setup: opt-125m, opt-350m, gpt2 on this machine\n  tokbench sweep opt-125m gpt2 --batch-sizes 1,8,32 --backend cuda\n  tokbench status\n  tokbench report --latest --out plots/\n  tokbench export --sweep <ID> --out results/\n  tokbench artifact get <RUN_ID> --out profiles/\n\nExit codes: 0 ok, 1 failure (e.g. a job failed), 2 bad input, 3 coordinator unreachable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Coordinator URL.
    #[arg(long, global = true, env = "TOKBENCH_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Shared token of the coordinator, sent as `authorization: Bearer <token>`.
    #[arg(long, global = true, env = "TOKBENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for an https:// coordinator with a private CA.
    #[arg(long, global = true, env = "TOKBENCH_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Submit a sweep (models x batch sizes) and watch it; `--local` runs it here with no setup.
    Sweep(SweepArgs),
    /// State of a sweep (default: the latest) and the list of recent sweeps.
    #[command(after_help = "Examples:\n  tokbench status\n  tokbench status 3f2a9c1e-...\n  tokbench status --json")]
    Status(StatusArgs),
    /// Follow a sweep's progress live until it finishes (Ctrl-C detaches).
    #[command(after_help = "Examples:\n  tokbench watch 3f2a9c1e-...\n  tokbench watch latest")]
    Watch(SweepIdArg),
    /// Cancel a sweep: queued jobs are cancelled, running ones are told to stop.
    #[command(after_help = "Examples:\n  tokbench cancel 3f2a9c1e-...")]
    Cancel(SweepIdArg),
    /// Workers known to the coordinator: device, memory, current job, alive or not.
    #[command(after_help = "Examples:\n  tokbench workers\n  tokbench workers --json")]
    Workers,
    /// Stored runs with their headline figures.
    #[command(after_help = "Examples:\n  tokbench runs\n  tokbench runs --sweep latest\n  tokbench runs --model opt-125m --limit 5")]
    Runs(RunsArgs),
    /// Every metric of one run; `--json` prints the full benchmark report.
    #[command(after_help = "Examples:\n  tokbench show <RUN_ID>\n  tokbench show <RUN_ID> --json > run.json")]
    Show(ShowArgs),
    /// Tables and charts (PNG, + SVG), Markdown, CSV and JSON from stored runs.
    #[command(after_help = "Examples:\n  tokbench report --latest\n  tokbench report --sweep <ID> --baseline <OLD_ID> --out plots/\n  tokbench report --runs <RUN1>,<RUN2> --svg\n  tokbench report --sweep <ID> --group-by gpu")]
    Report(ReportArgs),
    /// Write one benchmark_<model>_<timestamp>.json per run (the demo's schema, extended).
    #[command(after_help = "Examples:\n  tokbench export --out results/\n  tokbench export --sweep <ID> --out results/")]
    Export(ExportArgs),
    /// The model catalog: every short name with its family, parameters, f16 weight size, max
    /// positions and Hugging Face repo (needs no coordinator).
    #[command(after_help = "Examples:\n  tokbench models\n  tokbench models --json")]
    Models,
    /// Files a run left on the coordinator (Nsight Systems profiles of `sweep --profile`): list or download them.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
}

#[derive(Subcommand, Debug, Clone)]
pub enum ArtifactCmd {
    /// Artifacts of a run: id, kind, file name, size, SHA-256.
    #[command(after_help = "Examples:\n  tokbench artifact list <RUN_ID>\n  tokbench artifact list <RUN_ID> --json")]
    List(ArtifactListArgs),
    /// Download every artifact of a run (or one) into --out, checking size and SHA-256.
    #[command(after_help = "Examples:\n  tokbench artifact get <RUN_ID>                      # into the current directory\n  tokbench artifact get <RUN_ID> --out profiles/\n  tokbench artifact get <RUN_ID> <ARTIFACT_ID>\n  tokbench artifact get <ARTIFACT_ID> --out profiles/\n  nsys-ui profiles/<file>.nsys-rep                    # open a profile")]
    Get(ArtifactGetArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ArtifactListArgs {
    /// Run id.
    pub run: String,
}

#[derive(Args, Debug, Clone)]
pub struct ArtifactGetArgs {
    /// Run id (or, alone, an artifact id).
    pub run: String,
    /// Only this artifact of the run (default: all of them).
    pub artifact: Option<String>,
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:\n  tokbench sweep --local                                  # opt-125m opt-350m gpt2 on this CPU, report in plots/\n  tokbench sweep --local tiny-opt tiny-gpt2 --max-tokens 8\n  tokbench sweep --local gpt2 --device cuda:0              # needs a build with --features cuda\n  tokbench sweep opt-125m opt-350m --batch-sizes 1,8,32 --backend cuda --label nightly\n  tokbench sweep gpt2 --prompts prompts.txt --max-tokens 64 --stop-at-eos --detach\n  tokbench sweep opt-1.3b --dtype bf16 --temperature 0.8 --top-p 0.95 --seed 7 --profile\n  tokbench sweep --mode serve --endpoint http://gpu1:8000 --request-rate 1,4,16,inf --num-prompts 200 --input-len 512 --max-tokens 128 --goodput \"ttft:500 tpot:50\" Qwen/Qwen3-8B\n  tokbench sweep --local --mode serve --endpoint http://127.0.0.1:8000 --request-rate 2,inf --dataset sharegpt:/data/ShareGPT_V3_unfiltered_cleaned_split.json my-model")]
pub struct SweepArgs {
    /// Models: catalog names (`tokbench models` lists them: OPT, GPT-2, Llama 3.x, SmolLM2,
    /// TinyLlama, Qwen2.5, Qwen3, Mistral), HF repo ids, or directories on the worker.
    /// Default with --local: opt-125m opt-350m gpt2.
    pub models: Vec<String>,
    /// Run here: embedded coordinator (SQLite file --database) and an in-process worker, then
    /// write the report to --out. Needs no GPU and no downloaded weights.
    #[arg(long)]
    pub local: bool,
    /// Batch sizes, comma separated: one job per model and batch size [default: 4].
    #[arg(long, value_delimiter = ',')]
    pub batch_sizes: Vec<usize>,
    /// Let each worker keep a model loaded for its next job of the same model (load time is then
    /// not a cold load, and the report says so). Default: every job loads cold.
    #[arg(long)]
    pub reuse_model: bool,
    /// The workload of every job. Defaults: 128 new tokens, 3 repetitions, 1 warm-up, the built-in
    /// prompts, one per batch slot; with --local: 32 new tokens, 3 repetitions, 4 synthetic
    /// prompts of 32 tokens.
    #[command(flatten)]
    pub workload: tokbench_core::args::WorkloadArgs,
    /// Only workers of this backend take the jobs: cpu or cuda (default: any).
    #[arg(long)]
    pub backend: Option<String>,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Free text shown in listings.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Run each job under Nsight Systems (workers with nsys).
    #[arg(long)]
    pub profile: bool,
    /// Submit and print the sweep id without watching.
    #[arg(long)]
    pub detach: bool,
    /// --local: SQLite file of the embedded coordinator.
    #[arg(long, env = "TOKBENCH_LOCAL_DB", default_value = "tokbench-local.db")]
    pub database: PathBuf,
    /// --local: device of the in-process worker: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// --local: where the report goes.
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// --local: also write SVGs of the charts.
    #[arg(long)]
    pub svg: bool,
}

/// Online-serving sweeps (`--mode serve`): a worker drives an OpenAI-compatible endpoint with
/// streaming requests at each request rate and measures what users would see (vLLM's
/// `bench serve` metrics). MODELS are then the served model names, one job per model and rate.
/// `--num-prompts`, `--warmup`, `--seed`, `--input-len`, `--max-tokens` and `--stop-at-eos`
/// apply to serve jobs too (requests, warm-up requests, dataset/arrival seed, input length,
/// output length, EOS).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Serving benchmarks (--mode serve)")]
pub struct ServeArgs {
    /// offline (the worker runs the model itself, default) or serve (the worker sends streaming
    /// requests to --endpoint, or without it to tokbench's own engine serving the model in the
    /// worker).
    #[arg(long, value_name = "MODE", default_value = "offline")]
    pub mode: String,
    /// Root URL of an OpenAI-compatible server (vLLM, SGLang, TGI, `tokbench-worker serve-openai`),
    /// as the worker reaches it, e.g. http://10.0.0.5:8000 [default: the worker serves the model
    /// with tokbench's engine itself, on its device, with --weights/--dtype].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Request rates, comma separated: one job per model and rate; requests per second of a
    /// Poisson process (see --burstiness), or inf (every request at once) [default: inf].
    #[arg(long, value_name = "RATES", value_delimiter = ',')]
    pub request_rate: Vec<String>,
    /// Gamma shape of the arrival gaps: 1 = Poisson, < 1 burstier, > 1 more regular [default: 1].
    #[arg(long, value_name = "B")]
    pub burstiness: Option<f64>,
    /// At most this many requests in flight [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// synthetic (random words of --input-len/--output-len tokens), sharegpt:PATH (a ShareGPT
    /// JSON file) or jsonl:PATH (one {"prompt": ..., "output_len": n} per line). PATH is read on
    /// the worker [default: synthetic].
    #[arg(long, value_name = "DATASET")]
    pub dataset: Option<String>,
    /// Serve: input length distribution of synthetic prompts: N, LO-HI (uniform) or
    /// normal:MEAN:STD (overrides --input-len) [default: 128].
    #[arg(long, value_name = "DIST")]
    pub input_dist: Option<String>,
    /// Serve: output tokens per request: N, LO-HI (uniform) or normal:MEAN:STD; with a ShareGPT
    /// or JSONL dataset a fixed N overrides/defaults its lengths [default: --max-tokens, else 128].
    #[arg(long, value_name = "DIST")]
    pub output_len: Option<String>,
    /// Goodput SLOs in milliseconds, vLLM's syntax: "ttft:200 tpot:20 e2el:2000" (any of them).
    #[arg(long, value_name = "SLOS")]
    pub goodput: Option<String>,
    /// completions (/v1/completions) or chat (/v1/chat/completions) [default: completions].
    #[arg(long, value_name = "API")]
    pub api: Option<String>,
    /// The model name sent in requests [default: the model name given].
    #[arg(long, value_name = "NAME")]
    pub served_model: Option<String>,
    /// Limit on one request, seconds [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout: Option<f64>,
    /// Name of an environment variable ON THE WORKER holding the endpoint's API key (sent as a
    /// bearer token). The key itself is never sent to the coordinator or stored.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Replay a trace file ON THE WORKER as the load: one line per request with its arrival time
    /// (s), input length and output length (tokens), as JSONL {"arrival_time", "input_len",
    /// "output_len"} (or Mooncake's {"timestamp" (ms), "input_length", "output_length"}) or CSV
    /// "seconds,input,output". Replaces --request-rate, --burstiness, --dataset and
    /// --num-prompts; the first --warmup lines are the warm-up.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<String>,
    /// tokbench's own server (no --endpoint): sequences running at once [default: 256].
    #[arg(long, value_name = "N")]
    pub max_num_seqs: Option<usize>,
    /// tokbench's own server: tokens per KV cache block [default: 16].
    #[arg(long, value_name = "N")]
    pub block_size: Option<usize>,
    /// tokbench's own server: prompt tokens prefilled per engine iteration at most (longer
    /// prompts are chunked; a batched pass counts its padding) [default: 2048].
    #[arg(long, value_name = "N")]
    pub max_num_batched_tokens: Option<usize>,
    /// tokbench's own server: fraction of the GPU's free memory after the weights for the KV
    /// cache [default: 0.9].
    #[arg(long, value_name = "FRACTION")]
    pub gpu_memory_utilization: Option<f64>,
    /// tokbench's own server: decode attention reads the paged KV blocks in place (CUDA, rotary
    /// families); false: gather them every step [default: true].
    #[arg(long, value_name = "BOOL")]
    pub paged_attention: Option<bool>,
    /// tokbench's own server: replay the paged decode step as CUDA graphs [default: true].
    #[arg(long, value_name = "BOOL")]
    pub cuda_graphs: Option<bool>,
    /// tokbench's own server: whole prompts admitted together share one prefill pass; false: one
    /// pass per sequence [default: true].
    #[arg(long, value_name = "BOOL")]
    pub batched_prefill: Option<bool>,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Sweep id (default: the latest).
    pub sweep: Option<String>,
    /// How many recent sweeps to list.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
}

#[derive(Args, Debug, Clone)]
pub struct SweepIdArg {
    /// Sweep id ("latest" = the most recent).
    pub sweep: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunsArgs {
    /// Only runs of this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Only runs of this sweep ("latest" = the most recent).
    #[arg(long)]
    pub sweep: Option<String>,
    /// At most this many runs: the newest, listed oldest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// Run id.
    pub run: String,
}

#[derive(Args, Debug, Clone)]
#[group(id = "selection", multiple = false)]
pub struct Selection {
    /// Runs of this sweep.
    #[arg(long, group = "selection")]
    pub sweep: Option<String>,
    /// Runs of the most recent sweep (the default).
    #[arg(long, group = "selection")]
    pub latest: bool,
    /// These runs, comma separated.
    #[arg(long, value_delimiter = ',', group = "selection")]
    pub runs: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Output directory (created if missing).
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// Compare against this sweep: change in % per model and metric, regressions marked.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Also write SVG versions of the charts.
    #[arg(long)]
    pub svg: bool,
    /// Chart groups: per model (default) or per device (GPU) when runs come from several.
    #[arg(long, value_enum, default_value_t = GroupBy::Model)]
    pub group_by: GroupBy,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Runs of this sweep (default: the latest sweep).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}
