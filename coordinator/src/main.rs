//! `tokbench-coordinator`: serve the job queue until SIGTERM / Ctrl-C (`serve`, the default:
//! `tokbench-coordinator [serve] --listen .. --database ..`), or back its database up / restore it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokbench_coordinator::CoordinatorConfig;

#[derive(Parser, Debug)]
#[command(
    name = "tokbench-coordinator",
    version,
    about = "tokbench's coordinator: a durable benchmark-job queue (SQLite) served over gRPC",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Serving flags (the same as `serve`'s; serving is the default).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the job queue (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Copy the database to a new file, consistently, while the coordinator runs (VACUUM INTO).
    Backup(BackupArgs),
    /// Replace (or create) a database with a backup, after checking it; the coordinator must be stopped.
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port; the chosen one is logged).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// SQLite database file (created if missing, owner-only).
    #[arg(long, default_value = "tokbench.db")]
    database: PathBuf,
    /// Shared token every client and worker may send (`authorization: Bearer <token>`). Alone,
    /// any client can act as a worker: prefer --client-token-file and --worker-token-file.
    #[arg(long, env = "TOKBENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tokens of clients (`tokbench`: sweeps, runs, reports), one per line or `sha256:<hex>`;
    /// several lines = several valid tokens (rotation).
    #[arg(long)]
    client_token_file: Option<PathBuf>,
    /// Tokens of workers (`tokbench-worker serve`: leases and results), same format.
    #[arg(long)]
    worker_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve TLS (needs --tls-key too).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Lease period in milliseconds: a job whose worker stops heartbeating for this long goes back to the queue.
    #[arg(long, default_value_t = 15_000)]
    lease_ms: u64,
    /// Attempts per job before it is marked failed.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Directory for uploaded artifacts (default: <database>.artifacts/, created owner-only).
    #[arg(long)]
    artifacts_dir: Option<PathBuf>,
    /// Largest artifact file accepted, bytes (larger uploads are refused and their partial file removed).
    #[arg(long, default_value_t = tokbench_coordinator::service::MAX_ARTIFACT_BYTES)]
    max_artifact_bytes: u64,
    /// Total bytes of stored artifacts at most (default: no quota); an upload that would exceed it is refused.
    #[arg(long)]
    artifact_quota_bytes: Option<u64>,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// The database the coordinator serves (it may be running).
    #[arg(long, default_value = "tokbench.db")]
    database: PathBuf,
    /// The backup file to write (owner-only); must not exist unless --force.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// A file written by `tokbench-coordinator backup`.
    #[arg(long)]
    from: PathBuf,
    /// The database to create; then start the coordinator with this --database.
    #[arg(long, default_value = "tokbench.db")]
    database: PathBuf,
    /// Replace --database if it exists (refused while a coordinator has it open).
    #[arg(long)]
    force: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(a)) => serve(a).await,
        Some(Command::Backup(a)) => {
            let s = tokbench_coordinator::backup::backup(&a.database, &a.out, a.force).await?;
            println!("backed up {} to {}: {s}", a.database.display(), a.out.display());
            Ok(())
        }
        Some(Command::Restore(a)) => {
            let s = tokbench_coordinator::backup::restore(&a.from, &a.database, a.force).await?;
            println!("restored {} into {}: {s}", a.from.display(), a.database.display());
            println!("start the coordinator with --database {}", a.database.display());
            Ok(())
        }
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let handle = tokbench_coordinator::spawn(CoordinatorConfig {
        listen: a.listen,
        database: a.database,
        token: a.token,
        client_token_file: a.client_token_file,
        worker_token_file: a.worker_token_file,
        lease_ms: a.lease_ms,
        max_attempts: a.max_attempts,
        artifacts_dir: a.artifacts_dir,
        max_message_bytes: tokbench_coordinator::MAX_MESSAGE_BYTES,
        max_artifact_bytes: a.max_artifact_bytes,
        artifact_quota_bytes: a.artifact_quota_bytes,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
    })
    .await?;
    // Machine-readable line for scripts and tests that start us on port 0.
    println!("listening on {}", handle.local_addr());
    shutdown_signal().await.context("installing signal handlers")?;
    tracing::info!("shutting down");
    handle.shutdown().await
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
