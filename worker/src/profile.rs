//! Per-job Nsight Systems profiling: run one benchmark job under `nsys profile` in a child
//! process (`tokbench-worker bench ...`), then summarise the `.nsys-rep` with `nsys stats`
//! (top GPU kernels, NVTX range durations, memory operations, GPU time by kind of work) into
//! `BenchReport::nsight_metrics`.
//!
//! Why a child process: nsys profiles a process it launches; profiling the long-running worker
//! itself would mix every job (and the gRPC machinery) into one report.
//!
//! nsys behaviours this module copes with (see shared/GPU.md, "Profiling there"):
//! - nsys can exit 0 yet write only `PREFIX.qdstrm` when its QdstrmImporter cannot load
//!   `libdw.so.1`; that is detected and reported with the fix (`extra_ld_library_path`).
//! - `nsys stats --format csv --output PREFIX` writes one file per report,
//!   `PREFIX_<report>.csv`; with `--output -` (or for reports some versions print) the CSV goes
//!   to stdout between progress lines ("Generating SQLite file ...", "Processing [...] with
//!   [...]...", "SKIPPED: ... does not contain ..."). Both forms are parsed: the parsers look
//!   for the table by its header row and ignore everything else.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokbench_core::report::{GpuTimeCategory, GpuTimeSplit, KernelStat, MemOpStat, NvtxRangeStat};
use tokbench_core::{BenchReport, Catalog, Workload};

/// Where nsys lives on the GPU machine (not on PATH there).
pub const GPU_MACHINE_NSYS: &str = "/opt/nvidia/nsight-compute/2025.3.1/host/target-linux-x64/nsys";

/// The `nsys stats` reports run_profiled asks for, in this order.
pub const STATS_REPORTS: [&str; 3] = ["cuda_gpu_kern_sum", "nvtx_sum", "cuda_gpu_mem_time_sum"];

/// How many kernels (by total GPU time) go into `nsight_metrics.kernels`. The time split is
/// computed over all of them.
pub const TOP_KERNELS: usize = 20;

/// `tokbench-worker bench`'s exit code for bad input (see bench_cli::exit_code).
const BENCH_BAD_INPUT_EXIT_CODE: i32 = 2;

/// How many bytes of a child's output are kept for error messages.
const TAIL_BYTES: usize = 4000;

#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// The nsys executable: a path, or a bare name looked up on PATH.
    pub nsys_path: PathBuf,
    /// The tokbench-worker binary to profile (normally `std::env::current_exe()`).
    pub worker_exe: PathBuf,
    /// Where the `.nsys-rep`, the stats CSVs and the child's logs go.
    pub work_dir: PathBuf,
    /// Prepended to LD_LIBRARY_PATH of nsys (and so of its QdstrmImporter): a directory with
    /// `libdw.so.1` and `libelf.so.1` (shared/tools/nsys-libs.sh DIR).
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
    #[error("this worker has no nsys at {path}: {detail}; start the worker with --nsys PATH (on the GPU machine: {GPU_MACHINE_NSYS})")]
    NsysNotFound { path: PathBuf, detail: String },
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
    #[error("nsys exited 0 but wrote no {expected}; it left only {qdstrm}: nsys's QdstrmImporter could not convert it, usually because libdw.so.1 / libelf.so.1 are missing on this machine. Fix: put them in a directory (shared/tools/nsys-libs.sh DIR) and start the worker with that directory as the nsys library path (ProfileConfig::extra_ld_library_path, which goes into LD_LIBRARY_PATH); `QdstrmImporter -i {qdstrm}` with the same LD_LIBRARY_PATH converts this one.\n--- last output of nsys ---\n{tail}")]
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
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

/// Resolves the configured nsys to an existing executable file.
fn resolve_nsys(path: &Path) -> Result<PathBuf, ProfileError> {
    let not_found = |detail: String| ProfileError::NsysNotFound { path: path.to_path_buf(), detail };
    let candidate = if path.components().count() == 1 && !path.as_os_str().is_empty() && !path.is_file() {
        // A bare name ("nsys"): look it up on PATH like a shell would.
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .map(|d| d.join(path))
            .find(|p| p.is_file())
            .ok_or_else(|| not_found("not found on PATH".into()))?
    } else {
        path.to_path_buf()
    };
    let meta = fs::metadata(&candidate).map_err(|e| not_found(e.to_string()))?;
    if !meta.is_file() {
        return Err(not_found("not a file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(not_found("the file is not executable".into()));
        }
    }
    Ok(candidate)
}

/// LD_LIBRARY_PATH with `extra` in front of the inherited value.
fn ld_library_path(extra: &Path) -> OsString {
    let mut v = OsString::from(extra.as_os_str());
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

/// The last `TAIL_BYTES` of a file (lossy UTF-8, terminal colour codes removed), for error
/// messages.
fn tail_of(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    let text = strip_ansi(&String::from_utf8_lossy(&bytes[start..]));
    if start > 0 {
        format!("[...]{text}")
    } else {
        text
    }
}

/// Drops ANSI CSI sequences (`ESC [ ... letter`): the bench child's log lines are coloured.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exit code {c}"),
        None => status.to_string(),
    }
}

/// Runs `cmd` (in its own process group, output to `log`) until it exits or `cancel` is set.
/// On cancel the whole group (nsys and the profiled child) gets SIGTERM, then SIGKILL.
fn run_cancellable(mut cmd: Command, what: &str, log: &Path, cancel: &AtomicBool) -> Result<ExitStatus, ProfileError> {
    let out = fs::File::create(log).map_err(io_err(log))?;
    let err = out.try_clone().map_err(io_err(log))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Own group: a cancel must reach the application nsys launched, not only nsys.
        cmd.process_group(0);
    }
    tracing::debug!(command = ?cmd, "starting {what}");
    let mut child = cmd.spawn().map_err(|source| ProfileError::Spawn { what: what.to_string(), source })?;
    loop {
        if let Some(status) = child.try_wait().map_err(io_err(log))? {
            return Ok(status);
        }
        if cancel.load(Ordering::Relaxed) {
            tracing::info!("cancel requested: stopping {what}");
            terminate_group(&mut child);
            return Err(ProfileError::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let pgid = Pid::from_raw(child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // nsys is gone; make sure nothing it launched lingers.
                let _ = killpg(pgid, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `workload` under `nsys profile` in a child `tokbench-worker bench`, summarises the
/// profile with `nsys stats` and returns the child's report with `nsight_metrics` filled.
/// Blocking. The `.nsys-rep` stays in `cfg.work_dir` for the caller to upload.
pub fn run_profiled(workload: &Workload, job_id: &str, cfg: &ProfileConfig, cancel: &AtomicBool) -> Result<ProfiledRun, ProfileError> {
    let nsys = resolve_nsys(&cfg.nsys_path)?;
    fs::create_dir_all(&cfg.work_dir).map_err(io_err(&cfg.work_dir))?;
    let name = profile_name(workload, job_id);
    let prefix = cfg.work_dir.join(&name);
    let file_name = format!("{name}.nsys-rep");
    let rep = cfg.work_dir.join(&file_name);
    let qdstrm = cfg.work_dir.join(format!("{name}.qdstrm"));
    // Stale outputs of an earlier attempt must not pass for this run's.
    for stale in [&rep, &qdstrm] {
        let _ = fs::remove_file(stale);
    }
    let tmp = cfg.work_dir.join(format!("{name}.tmp"));
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    // Scratch (prompt file, bench JSON, logs, stats CSVs) goes whatever happens: errors carry
    // the log tails, and a long-running worker must not pile up files.
    let _scratch = RemoveOnDrop(tmp.clone());
    let json = tmp.join("bench.json");
    let _ = fs::remove_file(&json);

    let mut args: Vec<OsString> = ["profile", "-o"].map(OsString::from).to_vec();
    args.push(prefix.clone().into_os_string());
    // -t/-s/--cpuctxsw keep the capture small: without them a short torch run gave a 2 GB .qdstrm.
    for a in ["--force-overwrite", "true", "-t", "cuda,nvtx", "-s", "none", "--cpuctxsw=none"] {
        args.push(a.into());
    }
    args.push(cfg.worker_exe.clone().into_os_string());
    args.push("bench".into());
    // The child reads the job whole, as the coordinator stored it: no flags to re-serialise.
    let workload_file = tmp.join("workload.json");
    crate::bench_cli::write_workload_file(workload, &workload_file).map_err(io_err(&workload_file))?;
    args.push("--workload-file".into());
    args.push(workload_file.into_os_string());
    args.push("--json".into());
    args.push(json.clone().into_os_string());
    args.push("--quiet".into());
    let command_line = std::iter::once(nsys.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");

    let mut cmd = Command::new(&nsys);
    // The bench records this as nsight_metrics.profile_file in its own JSON too.
    cmd.args(&args).current_dir(&cfg.work_dir).env("TOKBENCH_PROFILE_FILE", &file_name).env("NO_COLOR", "1");
    if let Some(dir) = &cfg.extra_ld_library_path {
        cmd.env("LD_LIBRARY_PATH", ld_library_path(dir));
    }
    let profile_log = tmp.join("profile.log");
    tracing::info!(job = job_id, command = %command_line, "profiling job under nsys");
    let started = Instant::now();
    let status = run_cancellable(cmd, "nsys profile", &profile_log, cancel)?;
    tracing::info!(job = job_id, seconds = started.elapsed().as_secs_f64(), status = %describe(&status), "nsys profile finished");
    if !status.success() {
        return Err(ProfileError::BenchFailed { status: describe(&status), code: status.code(), command: command_line, tail: tail_of(&profile_log) });
    }
    // The missing .nsys-rep is the actionable problem (the bench JSON is likely fine then).
    if !rep.is_file() {
        return Err(if qdstrm.is_file() {
            ProfileError::QdstrmOnly { expected: rep, qdstrm, tail: tail_of(&profile_log) }
        } else {
            ProfileError::NoNsysRep { expected: rep, tail: tail_of(&profile_log) }
        });
    }
    let report_text = match fs::read_to_string(&json) {
        Ok(t) => t,
        Err(e) => return Err(ProfileError::NoBenchReport { path: json, detail: e.to_string(), tail: tail_of(&profile_log) }),
    };
    let mut report: BenchReport = serde_json::from_str(&report_text).map_err(|e| ProfileError::NoBenchReport {
        path: json.clone(),
        detail: format!("not a tokbench benchmark report: {e}"),
        tail: tail_of(&profile_log),
    })?;

    // --- nsys stats ---
    if cancel.load(Ordering::Relaxed) {
        return Err(ProfileError::Cancelled);
    }
    let stats_prefix = tmp.join("stats");
    for r in STATS_REPORTS {
        let _ = fs::remove_file(stats_file(&stats_prefix, r));
    }
    let mut cmd = Command::new(&nsys);
    cmd.arg("stats")
        .arg("--force-export=true")
        .args(["--format", "csv", "--report", &STATS_REPORTS.join(",")])
        .arg("--output")
        .arg(&stats_prefix)
        .arg(&rep)
        .current_dir(&cfg.work_dir);
    if let Some(dir) = &cfg.extra_ld_library_path {
        cmd.env("LD_LIBRARY_PATH", ld_library_path(dir));
    }
    let stats_log = tmp.join("stats.log");
    let status = run_cancellable(cmd, "nsys stats", &stats_log, cancel);
    // `nsys stats` exports REP.sqlite next to the report: as large as the report or larger,
    // and only an intermediate here.
    let _ = fs::remove_file(cfg.work_dir.join(format!("{name}.sqlite")));
    let status = status?;
    if !status.success() {
        return Err(ProfileError::StatsFailed { rep, status: describe(&status), tail: tail_of(&stats_log) });
    }
    let console = fs::read_to_string(&stats_log).map_err(io_err(&stats_log))?;
    let read = |r: &str| fs::read_to_string(stats_file(&stats_prefix, r)).ok();
    let summary = StatsSummary::from_outputs(
        read("cuda_gpu_kern_sum").as_deref(),
        read("nvtx_sum").as_deref(),
        read("cuda_gpu_mem_time_sum").as_deref(),
        &console,
    )?;

    let m = &mut report.nsight_metrics;
    m.profile_file = Some(file_name.clone());
    m.profile_name = name.clone();
    summary.fill(m);
    Ok(ProfiledRun { report, nsys_rep: rep, file_name })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `nsys stats --output PREFIX` writes report R to `PREFIX_R.csv`.
fn stats_file(prefix: &Path, report: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(format!("_{report}.csv"));
    PathBuf::from(s)
}

/// The three summaries of one profile, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSummary {
    /// All kernels, by total time descending.
    pub kernels: Vec<KernelStat>,
    pub nvtx: Vec<NvtxRangeStat>,
    pub memory_ops: Vec<MemOpStat>,
}

impl StatsSummary {
    /// Parses the per-report files where present, else looks for each table in `console`
    /// (the stdout/stderr of `nsys stats`). A report absent from both means nsys had no data
    /// of that kind (it prints "SKIPPED: ... does not contain ..."): an empty list.
    pub fn from_outputs(kern: Option<&str>, nvtx: Option<&str>, mem: Option<&str>, console: &str) -> Result<StatsSummary, ProfileError> {
        Ok(StatsSummary {
            kernels: parse_kernel_summary(kern.unwrap_or(console))?,
            nvtx: parse_nvtx_summary(nvtx.unwrap_or(console))?,
            memory_ops: parse_mem_summary(mem.unwrap_or(console))?,
        })
    }

    /// GPU busy time by category over all kernels and memory operations.
    pub fn time_split(&self) -> GpuTimeSplit {
        let mut split = GpuTimeSplit::default();
        for k in &self.kernels {
            split.add(k.category, k.total_time_ns);
        }
        for m in &self.memory_ops {
            split.add(GpuTimeCategory::MemcpyMemset, m.total_time_ns);
        }
        split
    }

    /// Median duration (s) of the `inference [...]` NVTX range.
    pub fn inference_range_seconds(&self) -> Option<f64> {
        self.nvtx.iter().find(|r| nvtx_base_name(&r.range) == "inference").map(|r| r.med_ns / 1e9)
    }

    /// Human-readable summary for `nsight_metrics.notes` (the demo's notes were about memory
    /// transfers; these add where GPU time went).
    pub fn notes(&self) -> String {
        let mut parts = Vec::new();
        let split = self.time_split();
        if split.total_ns() == 0 {
            parts.push("no CUDA kernels or memory operations in the profile (did the job run on the CPU?)".to_string());
        } else {
            let shares: Vec<String> = GpuTimeCategory::ALL
                .iter()
                .filter(|c| split.get(**c) > 0)
                .map(|c| format!("{} {:.1}%", c.label(), split.percent(*c)))
                .collect();
            parts.push(format!("GPU time {:.3} ms: {}", split.total_ns() as f64 / 1e6, shares.join(", ")));
        }
        if let Some(top) = self.kernels.first() {
            parts.push(format!(
                "{} distinct kernels, {} launches; top kernel {} ({:.1}% of kernel time, {} launches)",
                self.kernels.len(),
                self.kernels.iter().map(|k| k.instances).sum::<u64>(),
                top.name,
                top.time_percent,
                top.instances
            ));
        }
        if !self.memory_ops.is_empty() {
            let ops: Vec<String> = self
                .memory_ops
                .iter()
                .map(|m| format!("{} x{} {:.3} ms", m.operation.trim_matches(|c| c == '[' || c == ']'), m.count, m.total_time_ns as f64 / 1e6))
                .collect();
            parts.push(format!("memory operations: {}", ops.join("; ")));
        }
        if let Some(s) = self.inference_range_seconds() {
            parts.push(format!("inference NVTX range median {s:.4} s"));
        } else if !self.nvtx.is_empty() {
            parts.push("no inference NVTX range".into());
        } else {
            parts.push("no NVTX ranges (worker built without the nvtx feature?)".into());
        }
        parts.join(". ")
    }

    /// Writes the summary into `m` (kernels truncated to TOP_KERNELS).
    pub fn fill(&self, m: &mut tokbench_core::report::NsightMetrics) {
        m.gpu_time_split = Some(self.time_split()).filter(|s| s.total_ns() > 0);
        m.inference_range_seconds = self.inference_range_seconds();
        // Keep what the bench wrote (how transfers happen in this engine) after the measured summary.
        let summary = self.notes();
        m.notes = if m.notes.is_empty() { summary } else { format!("{summary}. {}", m.notes) };
        m.kernels = self.kernels.iter().take(TOP_KERNELS).cloned().collect();
        m.nvtx = self.nvtx.clone();
        m.memory_ops = self.memory_ops.clone();
        if m.nvtx_ranges.is_empty() {
            m.nvtx_ranges = self.nvtx.iter().map(|r| r.range.clone()).collect();
        }
    }
}

/// `inference [facebook/opt-125m]` -> `inference`; a leading `:` (empty NVTX domain, as
/// nsys prints push/pop ranges) or `domain:` is dropped.
pub fn nvtx_base_name(range: &str) -> &str {
    let r = range.trim();
    let r = match r.split_once(':') {
        // Only treat it as a domain prefix when it comes before the bracketed model name.
        Some((dom, rest)) if !dom.contains('[') => rest,
        _ => r,
    };
    r.split(" [").next().unwrap_or(r).trim()
}

// ------------------------------------------------------------------------------------------
// CSV parsing

/// A table found in nsys output: its header and rows.
struct Table {
    header: Vec<String>,
    rows: Vec<csv::StringRecord>,
}

/// Normalised column name: lower case, no spaces (`Time (%)` and `Time(%)` both -> `time(%)`).
fn norm(col: &str) -> String {
    col.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

/// Finds the first table in `text` whose header contains every column in `required`
/// (normalised, units left off: "totaltime" matches "Total Time (ns)"). Lines before the
/// header (progress messages) are skipped; the table ends at the first blank line or at a
/// line that does not parse as a record of the header's width.
fn find_table(text: &str, report: &'static str, required: &[&str]) -> Result<Option<Table>, ProfileError> {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(header) = parse_line(line) else { continue };
        let names: Vec<String> = header.iter().map(norm).collect();
        let has = |req: &str| names.iter().any(|n| n == req || n.starts_with(&format!("{req}(")));
        if !required.iter().all(|r| has(r)) {
            continue;
        }
        let mut rows = Vec::new();
        for (j, row_line) in lines[i + 1..].iter().enumerate() {
            if row_line.trim().is_empty() {
                break;
            }
            match parse_line(row_line) {
                Some(rec) if rec.len() == header.len() => rows.push(rec),
                // The last column of these reports is the free-text name; should a writer
                // leave a name with commas unquoted (C++ template arguments), rejoin it.
                Some(rec) if rec.len() > header.len() && rec.get(0).is_some_and(is_number) => {
                    let keep = header.len() - 1;
                    let mut fixed: csv::StringRecord = rec.iter().take(keep).collect();
                    fixed.push_field(&rec.iter().skip(keep).collect::<Vec<_>>().join(","));
                    rows.push(fixed);
                }
                // A numeric first field means a data row of the wrong width: say so rather
                // than silently dropping the rest of the table.
                Some(rec) if rec.len() > 1 && rec.get(0).is_some_and(is_number) => {
                    return Err(ProfileError::StatsParse {
                        report,
                        detail: format!("line {} has {} fields but the header has {}: {row_line:?}", i + j + 2, rec.len(), header.len()),
                    })
                }
                _ => break,
            }
        }
        return Ok(Some(Table { header: header.iter().map(str::to_string).collect(), rows }));
    }
    Ok(None)
}

fn is_number(field: &str) -> bool {
    field.trim().replace(',', "").parse::<f64>().is_ok()
}

/// One CSV line as a record (nsys quotes fields with commas: C++ kernel signatures).
fn parse_line(line: &str) -> Option<csv::StringRecord> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
    let mut rec = csv::StringRecord::new();
    match rdr.read_record(&mut rec) {
        Ok(true) => Some(rec),
        _ => None,
    }
}

impl Table {
    fn col(&self, report: &'static str, name: &str) -> Result<(usize, f64), ProfileError> {
        let idx = self
            .header
            .iter()
            .position(|h| {
                let n = norm(h);
                n == name || n.starts_with(&format!("{name}("))
            })
            .ok_or_else(|| ProfileError::StatsParse { report, detail: format!("no \"{name}\" column in header {:?}", self.header) })?;
        Ok((idx, unit_to_ns(&self.header[idx])))
    }

    fn opt_col(&self, report: &'static str, names: &[&str]) -> Result<(usize, f64), ProfileError> {
        for n in names {
            if let Ok(c) = self.col(report, n) {
                return Ok(c);
            }
        }
        Err(ProfileError::StatsParse { report, detail: format!("none of the columns {names:?} in header {:?}", self.header) })
    }
}

/// Multiplier to nanoseconds from a column header's unit: `(ns)`, `(us)`, `(ms)`, `(s)`
/// (`nsys stats --timeunit` changes it); 1 for unitless columns.
fn unit_to_ns(header: &str) -> f64 {
    let h = header.to_ascii_lowercase();
    if h.ends_with("(us)") || h.ends_with("(μs)") {
        1e3
    } else if h.ends_with("(ms)") {
        1e6
    } else if h.ends_with("(s)") && !h.ends_with("(ns)") {
        1e9
    } else {
        1.0
    }
}

fn num(report: &'static str, rec: &csv::StringRecord, (idx, scale): (usize, f64), what: &str) -> Result<f64, ProfileError> {
    let raw = rec.get(idx).unwrap_or("");
    // Column format prints thousands separators ("1,234,567"); tolerate them here too.
    let cleaned: String = raw.trim().chars().filter(|c| *c != ',').collect();
    if cleaned.is_empty() {
        return Ok(0.0); // nsys leaves StdDev empty for single-instance rows in some versions
    }
    cleaned
        .parse::<f64>()
        .map(|v| v * scale)
        .map_err(|_| ProfileError::StatsParse { report, detail: format!("{what} is not a number: {raw:?} in {:?}", rec.iter().collect::<Vec<_>>()) })
}

fn as_u64(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// Columns common to the three summaries.
struct Common {
    pct: (usize, f64),
    total: (usize, f64),
    count: (usize, f64),
    avg: (usize, f64),
    med: Option<(usize, f64)>,
    min: (usize, f64),
    max: (usize, f64),
    std: Option<(usize, f64)>,
}

impl Common {
    fn new(t: &Table, report: &'static str, count_names: &[&str]) -> Result<Common, ProfileError> {
        let mut pct = t.col(report, "time(%)")?;
        pct.1 = 1.0; // a percentage, not a time
        let mut count = t.opt_col(report, count_names)?;
        count.1 = 1.0;
        Ok(Common {
            pct,
            total: t.col(report, "totaltime")?,
            count,
            avg: t.opt_col(report, &["avg", "average"])?,
            med: t.opt_col(report, &["med", "median"]).ok(),
            min: t.opt_col(report, &["min", "minimum"])?,
            max: t.opt_col(report, &["max", "maximum"])?,
            std: t.opt_col(report, &["stddev"]).ok(),
        })
    }

    #[allow(clippy::type_complexity)]
    fn read(&self, report: &'static str, r: &csv::StringRecord) -> Result<(f64, u64, u64, f64, f64, u64, u64, f64), ProfileError> {
        let avg = num(report, r, self.avg, "Avg")?;
        Ok((
            num(report, r, self.pct, "Time (%)")?,
            as_u64(num(report, r, self.total, "Total Time")?),
            as_u64(num(report, r, self.count, "count")?),
            avg,
            match self.med {
                Some(c) => num(report, r, c, "Med")?,
                None => avg,
            },
            as_u64(num(report, r, self.min, "Min")?),
            as_u64(num(report, r, self.max, "Max")?),
            match self.std {
                Some(c) => num(report, r, c, "StdDev")?,
                None => 0.0,
            },
        ))
    }
}

fn text_col(report: &'static str, r: &csv::StringRecord, idx: usize) -> Result<String, ProfileError> {
    r.get(idx)
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ProfileError::StatsParse { report, detail: format!("row too short: {:?}", r.iter().collect::<Vec<_>>()) })
}

/// Parses `nsys stats --report cuda_gpu_kern_sum --format csv` output (with or without
/// progress lines around it). Columns: "Time (%)","Total Time (ns)","Instances","Avg (ns)",
/// "Med (ns)","Min (ns)","Max (ns)","StdDev (ns)","Name". Sorted by total time, descending.
/// No table at all (nsys: "SKIPPED: ... does not contain CUDA kernel data") gives an empty list.
pub fn parse_kernel_summary(csv: &str) -> Result<Vec<KernelStat>, ProfileError> {
    const R: &str = "cuda_gpu_kern_sum";
    let Some(t) = find_table(csv, R, &["time(%)", "totaltime", "instances", "name"])? else { return Ok(Vec::new()) };
    let c = Common::new(&t, R, &["instances"])?;
    let name = t.col(R, "name")?.0;
    let mut out = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (time_percent, total_time_ns, instances, avg_ns, med_ns, min_ns, max_ns, stddev_ns) = c.read(R, r)?;
        let name = text_col(R, r, name)?;
        out.push(KernelStat { category: classify_kernel(&name), name, time_percent, total_time_ns, instances, avg_ns, med_ns, min_ns, max_ns, stddev_ns });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.total_time_ns));
    Ok(out)
}

/// Parses `nsys stats --report nvtx_sum --format csv` output. Columns: "Time (%)",
/// "Total Time (ns)","Instances","Avg (ns)","Med (ns)","Min (ns)","Max (ns)","StdDev (ns)",
/// "Style","Range". Sorted by total time, descending.
pub fn parse_nvtx_summary(csv: &str) -> Result<Vec<NvtxRangeStat>, ProfileError> {
    const R: &str = "nvtx_sum";
    let Some(t) = find_table(csv, R, &["time(%)", "totaltime", "instances", "range"])? else { return Ok(Vec::new()) };
    let c = Common::new(&t, R, &["instances"])?;
    let range = t.col(R, "range")?.0;
    let style = t.col(R, "style").ok().map(|c| c.0);
    let mut out = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (time_percent, total_time_ns, instances, avg_ns, med_ns, min_ns, max_ns, stddev_ns) = c.read(R, r)?;
        out.push(NvtxRangeStat {
            range: text_col(R, r, range)?,
            style: match style {
                Some(i) => text_col(R, r, i)?,
                None => String::new(),
            },
            time_percent,
            total_time_ns,
            instances,
            avg_ns,
            med_ns,
            min_ns,
            max_ns,
            stddev_ns,
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.total_time_ns));
    Ok(out)
}

/// Parses `nsys stats --report cuda_gpu_mem_time_sum --format csv` output. Columns:
/// "Time (%)","Total Time (ns)","Count","Avg (ns)","Med (ns)","Min (ns)","Max (ns)",
/// "StdDev (ns)","Operation". Sorted by total time, descending.
pub fn parse_mem_summary(csv: &str) -> Result<Vec<MemOpStat>, ProfileError> {
    const R: &str = "cuda_gpu_mem_time_sum";
    let Some(t) = find_table(csv, R, &["time(%)", "totaltime", "operation"])? else { return Ok(Vec::new()) };
    let c = Common::new(&t, R, &["count", "operations", "instances"])?;
    let op = t.col(R, "operation")?.0;
    let mut out = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (time_percent, total_time_ns, count, avg_ns, med_ns, min_ns, max_ns, stddev_ns) = c.read(R, r)?;
        out.push(MemOpStat { operation: text_col(R, r, op)?, time_percent, total_time_ns, count, avg_ns, med_ns, min_ns, max_ns, stddev_ns });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.total_time_ns));
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Kernel classification

/// candle-kernels 0.11.1 op names (`extern "C"` kernels named `<op>_<dtype>[_<dtype>]`):
/// unary.cu (u*), binary.cu (b*, comparisons), affine.cu, cast.cu, ternary.cu (where),
/// fill.cu (fill, const_set, copy2d), indexing.cu (index_select `is`, gather, index_add `ia`,
/// scatter `s`/`sa`), reduce.cu (layernorm, rmsnorm, rope, sum, fast_*; softmax is attention).
const CANDLE_ELEMENTWISE_OPS: &[&str] = &[
    // unary
    "uabs", "uceil", "ucopy", "ucos", "uelu", "uerf", "uexp", "ufloor", "ugelu", "ugelu_erf", "ulog", "uneg", "unormcdf", "upowf",
    "urecip", "urelu", "uround", "usigmoid", "usign", "usilu", "usin", "usqr", "usqrt", "utanh",
    // binary and comparisons
    "badd", "bdiv", "bmaximum", "bminimum", "bmul", "bsub", "eq", "ne", "lt", "le", "gt", "ge",
    // affine, cast, where, fill
    "affine", "cast", "where", "fill", "const_set", "copy2d",
    // indexing
    "is", "gather", "ia", "s", "sa",
    // reductions and normalisation
    "layernorm", "rmsnorm", "rope", "rope_i", "rope_thd", "sum", "fast_sum", "fast_sum_small", "fast_max", "fast_min",
    "fast_argmax", "fast_argmin",
];

/// Generic (non-candle, e.g. PyTorch) normalisation / elementwise kernel name parts.
const ELEMENTWISE_WORDS: &[&str] = &[
    "layernorm", "layer_norm", "rmsnorm", "rms_norm", "batchnorm", "batch_norm", "groupnorm", "group_norm", "elementwise", "reduce",
    "copy", "gelu", "relu", "fill",
];

const DTYPE_TOKENS: &[&str] = &["f16", "f32", "f64", "bf16", "u8", "u32", "i16", "i32", "i64", "f8", "e4m3", "e5m2", "fp8", "f8e4m3"];

/// `<op>_<dtype>[_<dtype>...]` with `op` in CANDLE_ELEMENTWISE_OPS.
fn is_candle_elementwise(name: &str) -> bool {
    CANDLE_ELEMENTWISE_OPS.iter().any(|op| {
        name.strip_prefix(op)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|types| !types.is_empty() && types.split('_').all(|t| DTYPE_TOKENS.contains(&t)))
    })
}

/// What a GPU kernel spends its time on, from its (demangled) name. Rules, first match wins:
/// 1. attention: the name contains `softmax`, `attn`, `attention`, `flash`, `fmha` or `sdpa`
///    (candle's `softmax_<dtype>` is the attention softmax in these models; checked before GEMM
///    because fused attention kernels often carry `gemm`/`cutlass` in their names too);
/// 2. gemm: cuBLAS/cuBLASLt/CUTLASS matrix multiplies: `nvjet*` (cuBLAS on Hopper, e.g.
///    `nvjet_sm90_hsh_*`), `*xmma*` (`sm80_xmma_gemm_*`), `*gemm*` (`ampere_*gemm*`,
///    `*sgemm*`, `*hgemm*`), `*gemv*` (cuBLAS batch-1 paths), `cutlass*`, `*splitKreduce*`
///    (cuBLAS split-K epilogue);
/// 3. normalization+elementwise: candle's kernels (`ucopy_f16`, `affine_f32`, `bmul_f16`,
///    `badd_f16`, `layernorm_f16`, `cast_f16_f32`, `where_u8_f16`, `fill_f16`, `is_u32_f16`,
///    `fast_max_f32`, `fast_argmax_f32`, ... see CANDLE_ELEMENTWISE_OPS) and generic names
///    containing `layernorm`/`layer_norm`/`rmsnorm`/`rms_norm`/`batch_norm`/`group_norm`,
///    `elementwise`, `reduce`, `copy`, `gelu`, `relu`, `fill` (not bare `norm`: cuRAND's
///    `curand_normal` would match);
/// 4. memcpy/memset kernels by name (`*memcpy*`, `*memset*`) — transfers themselves come
///    from cuda_gpu_mem_time_sum and always count as memcpy+memset;
/// 5. anything else: other. On the GPU machine that is cuRAND (`gen_sequenced<curandState...>`,
///    `generate_seed_pseudo`: synthetic weights drawn on the device during
///    model_initialization, not inference work) and candle's `asort_*` (top-k sampling).
pub fn classify_kernel(name: &str) -> GpuTimeCategory {
    let lower = name.to_ascii_lowercase();
    // Demangled C++ names start with the return type ("void "); the base name follows.
    let base = lower.strip_prefix("void ").unwrap_or(&lower);
    let has = |s: &str| lower.contains(s);
    if ["softmax", "attn", "attention", "flash", "fmha", "sdpa"].iter().any(|s| has(s)) {
        GpuTimeCategory::Attention
    } else if base.starts_with("nvjet") || base.starts_with("cutlass") || ["gemm", "gemv", "xmma", "splitkreduce"].iter().any(|s| has(s)) {
        GpuTimeCategory::Gemm
    } else if has("curand") {
        GpuTimeCategory::Other
    } else if is_candle_elementwise(base) || ELEMENTWISE_WORDS.iter().any(|s| has(s)) {
        GpuTimeCategory::NormalizationElementwise
    } else if has("memcpy") || has("memset") {
        GpuTimeCategory::MemcpyMemset
    } else {
        GpuTimeCategory::Other
    }
}
