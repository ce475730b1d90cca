//! `tokbench-worker`: `bench` runs one benchmark standalone (no coordinator, profile it with
//! nsys); `serve` pulls jobs from a coordinator; `serve-openai` serves the model over an
//! OpenAI-compatible HTTP API.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tokbench-worker", version, about = "tokbench's inference worker: benchmark LLM generation standalone or serve jobs from a coordinator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one benchmark here and now: load, generate, measure, write benchmark JSON.
    Bench(BenchCmd),
    /// Register with a coordinator and run the jobs it hands out.
    Serve(tokbench_worker::serve::ServeArgs),
    /// Write a catalog model's synthetic weights as a Hugging Face checkpoint folder
    /// (config.json + model.safetensors, f32) that transformers' from_pretrained loads, so
    /// tokbench and transformers can be compared on identical weights.
    #[command(after_help = "Example:\n  tokbench-worker export-weights --model gpt2 --out /tmp/gpt2-synthetic\n  python3 -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('/tmp/gpt2-synthetic')\"")]
    ExportWeights(ExportWeightsArgs),
    /// What this machine offers tokbench: driver, CUDA, GPUs (capability, memory, the kernel
    /// paths each gets), NVML, nsys, the Hugging Face cache, whether the Hub answers.
    Doctor(DoctorArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions,
    /// /v1/models, /health, /metrics) with continuous batching over a paged KV cache.
    ServeOpenai(tokbench_worker::openai::ServeOpenAiArgs),
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// Print JSON instead of the human-readable screen.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the Hub's TCP connection.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let report = tokbench_worker::doctor::examine(std::time::Duration::from_secs_f64(args.timeout.max(0.1)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

#[derive(clap::Args)]
struct BenchCmd {
    #[command(flatten)]
    args: tokbench_worker::bench_cli::BenchArgs,
    /// Load local model directories only from under DIR (repeatable; checked after symlinks and
    /// `..` are resolved). Default: any directory you name (TOKBENCH_MODELS_DIRS, a ':'-separated
    /// list, restricts it too; `serve` sets it for the profiled jobs it runs).
    #[arg(long = "models-dir", value_name = "DIR")]
    models_dirs: Vec<std::path::PathBuf>,
}

fn bench(cmd: BenchCmd) -> anyhow::Result<()> {
    use tokbench_worker::resolve::{with_model_policy, ModelPathPolicy};
    let policy = match ModelPathPolicy::for_bench(cmd.models_dirs).canonical() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    with_model_policy(policy, || tokbench_worker::bench_cli::main(cmd.args))
}

#[derive(clap::Args)]
struct ExportWeightsArgs {
    /// Catalog model name (see `tokbench-worker bench --help`).
    #[arg(long)]
    model: String,
    /// Output folder (created).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Seed of the synthetic weights (the same seed gives the same values as `bench --weights synthetic` on the CPU).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write a word-level tokenizer of the model's vocabulary size (tokenizer.json,
    /// tokenizer_config.json), so that servers which take only text prompts (`transformers
    /// serve`, ...) can serve these weights, and count the same tokens as tokbench.
    #[arg(long)]
    word_tokenizer: bool,
}

fn export_weights(args: ExportWeightsArgs) -> anyhow::Result<()> {
    let entry = tokbench_core::Catalog::get(&args.model)
        .ok_or_else(|| anyhow::anyhow!(tokbench_core::Catalog::unknown_model_message(&args.model)))?;
    tokbench_worker::checkpoint::save_synthetic_checkpoint(&entry.config(), args.seed, &args.out)?;
    eprintln!("wrote {}/config.json and model.safetensors (synthetic {}, seed {})", args.out.display(), entry.name, args.seed);
    if args.word_tokenizer {
        tokbench_worker::checkpoint::save_word_tokenizer(&entry.config(), &args.out)?;
        eprintln!("wrote {}/tokenizer.json and tokenizer_config.json (word-level, {} entries)", args.out.display(), entry.config().spec().vocab_size);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(cmd) => bench(cmd),
        Command::Serve(args) => tokbench_worker::serve::main(args),
        Command::ExportWeights(args) => export_weights(args),
        Command::Doctor(args) => doctor(args),
        Command::ServeOpenai(args) => tokbench_worker::openai::main(args),
    }
}
