//! `tokbench-worker`: `bench` runs one benchmark standalone (no coordinator, profile it with
//! nsys); `serve` pulls jobs from a coordinator.

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
    Bench(tokbench_worker::bench_cli::BenchArgs),
    /// Register with a coordinator and run the jobs it hands out.
    Serve(tokbench_worker::serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => tokbench_worker::bench_cli::main(args),
        Command::Serve(args) => tokbench_worker::serve::main(args),
    }
}
