//! Per-job Nsight Systems profiling: run one benchmark job under `nsys profile` in a child
//! process (`tokbench-worker bench ...`), then summarise the `.nsys-rep` with `nsys stats`
//! (top GPU kernels, NVTX range durations, memory operations, GPU time by kind of work) into
//! `BenchReport::nsight_metrics`.
//!
//! Why a child process: nsys profiles a process it launches; profiling the long-running worker
//! itself would mix every job (and the gRPC machinery) into one report.
//!
//! One concern per file: [`nsys`] finds the nsys executable, [`run`] runs the job under it and
//! then `nsys stats`, [`server`] runs tokbench's server under it for a serve job's load level, [`csv`] parses the stats CSV, [`summary`] turns the parsed tables into
//! the report's fields, [`timed`] restricts it to the timed passes (from the profile's SQLite
//! export), [`classify`] sorts kernels into kinds of work. This file holds what
//! they share: the configuration, the result, the errors and the profile's file names.
//! Setting up nsys on a machine: docs/profiling.md.

use std::path::{Path, PathBuf};

use tokbench_core::{BenchReport, Catalog, Workload};

mod classify;
mod csv;
mod nsys;
mod run;
mod server;
mod summary;
mod timed;

pub use classify::classify_kernel;
pub use csv::{parse_kernel_summary, parse_mem_summary, parse_nvtx_summary};
pub use nsys::{find_nsys, find_nsys_in, NSYS_INSTALL_GLOBS};
pub use run::{run_profiled, strip_ansi};
pub use server::ProfiledServer;
pub use summary::{nvtx_base_name, StatsSummary};
pub use timed::{fill_scope, read_timed_passes, restricted_to, TimedPasses, TIMED_RANGE};

/// The `nsys stats` reports run_profiled asks for, in this order.
pub const STATS_REPORTS: [&str; 3] = ["cuda_gpu_kern_sum", "nvtx_sum", "cuda_gpu_mem_time_sum"];

/// How many kernels (by total GPU time) go into `nsight_metrics.kernels`. The time split is
/// computed over all of them.
pub const TOP_KERNELS: usize = 20;

/// `tokbench-worker bench`'s exit code for bad input (see bench_cli::exit_code).
const BENCH_BAD_INPUT_EXIT_CODE: i32 = 2;

#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// The nsys executable: a path, or a bare name looked up on PATH.
    pub nsys_path: PathBuf,
    /// The tokbench-worker binary to profile (normally `std::env::current_exe()`).
    pub worker_exe: PathBuf,
    /// Where the `.nsys-rep`, the stats CSVs and the child's logs go.
    pub work_dir: PathBuf,
    /// Prepended to LD_LIBRARY_PATH of nsys (and so of its QdstrmImporter): a directory with
    /// `libdw.so.1` and `libelf.so.1` (see docs/profiling.md).
    pub extra_ld_library_path: Option<PathBuf>,
}

impl ProfileConfig {
    /// nsys at `nsys_path`, profiling this executable, writing into `work_dir`.
    pub fn new(nsys_path: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> std::io::Result<ProfileConfig> {
        Ok(ProfileConfig {
            nsys_path: nsys_path.into(),
            worker_exe: std::env::current_exe()?,
            work_dir: work_dir.into(),
            extra_ld_library_path: None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ProfiledRun {
    /// The child's benchmark report with `nsight_metrics` filled from the profile.
    pub report: BenchReport,
    /// Path of the `.nsys-rep` (in `work_dir`).
    pub nsys_rep: PathBuf,
    /// `profile_<model file stem>_<job>.nsys-rep`.
    pub file_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("this worker has no nsys at {path}: {detail}; start the worker with --nsys PATH (see docs/profiling.md)")]
    NsysNotFound { path: PathBuf, detail: String },
    #[error("no nsys found: none on PATH nor in {}; install Nsight Systems or start the worker with --nsys PATH (see docs/profiling.md)", NSYS_INSTALL_GLOBS.join(", "))]
    NsysNotInstalled,
    #[error("could not start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("the profiled benchmark failed ({status}) under nsys: {command}\n--- last output of nsys and the bench child ---\n{tail}")]
    BenchFailed {
        status: String,
        /// Exit code of nsys (which passes on the application's); None when killed by a signal.
        code: Option<i32>,
        command: String,
        tail: String,
    },
    #[error("the profiled benchmark exited successfully but wrote no benchmark JSON at {path}: {detail}\n--- last output ---\n{tail}")]
    NoBenchReport { path: PathBuf, detail: String, tail: String },
    #[error("nsys exited 0 but wrote no {expected}; it left only {qdstrm}: nsys's QdstrmImporter could not convert it, usually because libdw.so.1 / libelf.so.1 are missing on this machine. Fix: put them in a directory (see docs/profiling.md) and start the worker with that directory as the nsys library path (ProfileConfig::extra_ld_library_path, which goes into LD_LIBRARY_PATH); `QdstrmImporter -i {qdstrm}` with the same LD_LIBRARY_PATH converts this one.\n--- last output of nsys ---\n{tail}")]
    QdstrmOnly { expected: PathBuf, qdstrm: PathBuf, tail: String },
    #[error("nsys exited 0 but wrote no {expected} (nor a .qdstrm); check the nsys output below and that {dir} is writable\n--- last output of nsys ---\n{tail}", dir = .expected.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    NoNsysRep { expected: PathBuf, tail: String },
    #[error("`nsys stats` on {rep} failed ({status})\n--- last output ---\n{tail}")]
    StatsFailed { rep: PathBuf, status: String, tail: String },
    #[error("could not parse the nsys {report} summary: {detail}")]
    StatsParse { report: &'static str, detail: String },
    #[error("cancelled")]
    Cancelled,
    #[error("profiling i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl ProfileError {
    /// false where running the job again cannot help: no nsys, nsys unable to write a report,
    /// output we cannot parse, the bench rejecting its input (`tokbench-worker bench` exits 2
    /// for bad input: unknown model, prompt too long, ...). Other bench failures (exit 1: device
    /// errors, out of memory; killed by a signal) may pass elsewhere.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProfileError::Spawn { .. } | ProfileError::Io { .. } => true,
            ProfileError::BenchFailed { code, .. } => *code != Some(BENCH_BAD_INPUT_EXIT_CODE),
            _ => false,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
    move |source| ProfileError::Io { path: path.to_path_buf(), source }
}

/// The name used in profile file names for a model: the catalog's file stem
/// (`facebook_opt-125m`), else the last path component / repo id with '/' replaced.
pub fn model_file_stem(model: &str) -> String {
    if let Some(entry) = Catalog::get(model) {
        return entry.file_stem();
    }
    let trimmed = model.trim_end_matches('/');
    let p = Path::new(trimmed);
    let stem = if p.is_absolute() || trimmed.starts_with('.') {
        p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| trimmed.to_string())
    } else {
        trimmed.to_string()
    };
    sanitize(&stem.replace('/', "_"))
}

/// Keeps file names portable: anything but `[A-Za-z0-9._-]` becomes '_'.
fn sanitize(s: &str) -> String {
    let out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

/// `profile_<model file stem>_<job>` (no extension), as the demo named its profiles plus the job.
pub fn profile_name(workload: &Workload, job_id: &str) -> String {
    format!("profile_{}_{}", model_file_stem(&workload.model), sanitize(job_id))
}

