//! `tokbench`: submit benchmark sweeps, watch them, report. See `tokbench --help`.

use clap::Parser;
use std::process::ExitCode;
use tokbench_cli::args::Cli;

fn main() -> ExitCode {
    // Warnings only by default: info logs of the embedded coordinator/worker (--local) would
    // tear through the progress bars. RUST_LOG=info shows them.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // Usage errors from clap exit with code 2.
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(tokbench_cli::commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
