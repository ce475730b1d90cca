//! Running a job under `nsys profile` (in a child `tokbench-worker bench`, its own process
//! group so a cancel reaches it), then `nsys stats` on the report it wrote.
//!
//! nsys behaviours handled here (docs/profiling.md):
//! - nsys can exit 0 yet write only `PREFIX.qdstrm` when its QdstrmImporter cannot load
//!   `libdw.so.1`; that is detected and reported with the fix (`extra_ld_library_path`).
//! - `nsys stats --format csv --output PREFIX` writes one file per report,
//!   `PREFIX_<report>.csv`; with `--output -` (or for reports some versions print) the CSV goes
//!   to stdout between progress lines; [`super::csv`] parses both forms.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokbench_core::{BenchReport, Workload};

use super::nsys::resolve_nsys;
use super::summary::StatsSummary;
use super::timed::{fill_scope, read_timed_passes, restricted_to};
use super::{io_err, profile_name, ProfileConfig, ProfileError, ProfiledRun, STATS_REPORTS};

/// How many bytes of a child's output are kept for error messages.
const TAIL_BYTES: usize = 4000;

/// LD_LIBRARY_PATH with `extra` in front of the inherited value.
pub(super) fn ld_library_path(extra: &Path) -> OsString {
    let mut v = OsString::from(extra.as_os_str());
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    v
}

/// The last `TAIL_BYTES` of a file (lossy UTF-8, terminal colour codes removed), for error
/// messages.
pub(super) fn tail_of(path: &Path) -> String {
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

pub(super) fn describe(status: &ExitStatus) -> String {
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
pub(super) fn run_cancellable(mut cmd: Command, what: &str, log: &Path, cancel: &AtomicBool) -> Result<ExitStatus, ProfileError> {
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

pub(super) fn terminate_group(child: &mut std::process::Child) {
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
    let CapturePaths { name, prefix, file_name, rep, qdstrm, tmp } = CapturePaths::prepare(workload, job_id, cfg)?;
    // Scratch (prompt file, bench JSON, logs, stats CSVs) goes whatever happens: errors carry
    // the log tails, and a long-running worker must not pile up files.
    let _scratch = RemoveOnDrop(tmp.clone());
    let json = tmp.join("bench.json");
    let _ = fs::remove_file(&json);

    let mut args = nsys_profile_args(&prefix);
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
    check_nsys_rep(&rep, &qdstrm, &profile_log)?;
    let report_text = match fs::read_to_string(&json) {
        Ok(t) => t,
        Err(e) => return Err(ProfileError::NoBenchReport { path: json, detail: e.to_string(), tail: tail_of(&profile_log) }),
    };
    let mut report: BenchReport = serde_json::from_str(&report_text).map_err(|e| ProfileError::NoBenchReport {
        path: json.clone(),
        detail: format!("not a tokbench benchmark report: {e}"),
        tail: tail_of(&profile_log),
    })?;

    let worker_pass_seconds = report.inference_metrics.total_inference_time_seconds;
    summarise_into(&nsys, cfg, &name, &file_name, &rep, &tmp, job_id, cancel, &mut report, worker_pass_seconds)?;
    Ok(ProfiledRun { report, nsys_rep: rep, file_name })
}

/// Where one capture's files go in `cfg.work_dir`: `<name>.nsys-rep` (or the `.qdstrm` a failed
/// import leaves), scratch in `<name>.tmp/`. `prepare` makes the folders and removes an earlier
/// attempt's outputs, which must not pass for this run's.
pub(super) struct CapturePaths {
    pub name: String,
    /// What `nsys profile -o` takes.
    pub prefix: PathBuf,
    pub file_name: String,
    pub rep: PathBuf,
    pub qdstrm: PathBuf,
    pub tmp: PathBuf,
}

impl CapturePaths {
    pub(super) fn prepare(workload: &Workload, job_id: &str, cfg: &ProfileConfig) -> Result<CapturePaths, ProfileError> {
        fs::create_dir_all(&cfg.work_dir).map_err(io_err(&cfg.work_dir))?;
        let name = profile_name(workload, job_id);
        let file_name = format!("{name}.nsys-rep");
        let paths = CapturePaths {
            prefix: cfg.work_dir.join(&name),
            rep: cfg.work_dir.join(&file_name),
            qdstrm: cfg.work_dir.join(format!("{name}.qdstrm")),
            tmp: cfg.work_dir.join(format!("{name}.tmp")),
            name,
            file_name,
        };
        for stale in [&paths.rep, &paths.qdstrm] {
            let _ = fs::remove_file(stale);
        }
        fs::create_dir_all(&paths.tmp).map_err(io_err(&paths.tmp))?;
        Ok(paths)
    }
}

/// `nsys profile -o PREFIX` with the options of every tokbench capture; the application and its
/// arguments follow.
pub(super) fn nsys_profile_args(prefix: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["profile", "-o"].map(OsString::from).to_vec();
    args.push(prefix.as_os_str().to_os_string());
    // -t/-s/--cpuctxsw keep the capture small: without them a short torch run gave a 2 GB .qdstrm.
    // --cuda-graph-trace=node: a replayed CUDA graph's kernels show one by one (by default nsys
    // traces a graph launch as one unit, and the decode kernels vanish from the summary).
    for a in ["--force-overwrite", "true", "-t", "cuda,nvtx", "-s", "none", "--cpuctxsw=none", "--cuda-graph-trace=node"] {
        args.push(a.into());
    }
    args
}

/// After `nsys profile`: the `.nsys-rep` exists, or the error says why not (a `.qdstrm` left
/// by an importer that could not load its libraries, or nothing).
pub(super) fn check_nsys_rep(rep: &Path, qdstrm: &Path, profile_log: &Path) -> Result<(), ProfileError> {
    if rep.is_file() {
        return Ok(());
    }
    Err(if qdstrm.is_file() {
        ProfileError::QdstrmOnly { expected: rep.to_path_buf(), qdstrm: qdstrm.to_path_buf(), tail: tail_of(profile_log) }
    } else {
        ProfileError::NoNsysRep { expected: rep.to_path_buf(), tail: tail_of(profile_log) }
    })
}

/// `nsys stats` on `rep` (scratch in `tmp`), summarised into `report.nsight_metrics`: the top
/// kernels, NVTX ranges, memory operations and the time split, restricted to the timed passes
/// when the SQLite export has them (else the whole process, and the scope says why).
#[allow(clippy::too_many_arguments)]
pub(super) fn summarise_into(
    nsys: &Path,
    cfg: &ProfileConfig,
    name: &str,
    file_name: &str,
    rep: &Path,
    tmp: &Path,
    job_id: &str,
    cancel: &AtomicBool,
    report: &mut BenchReport,
    worker_pass_seconds: f64,
) -> Result<(), ProfileError> {
    if cancel.load(Ordering::Relaxed) {
        return Err(ProfileError::Cancelled);
    }
    let stats_prefix = tmp.join("stats");
    for r in STATS_REPORTS {
        let _ = fs::remove_file(stats_file(&stats_prefix, r));
    }
    let mut cmd = Command::new(nsys);
    cmd.arg("stats")
        .arg("--force-export=true")
        .args(["--format", "csv", "--report", &STATS_REPORTS.join(",")])
        .arg("--output")
        .arg(&stats_prefix)
        .arg(rep)
        .current_dir(&cfg.work_dir);
    if let Some(dir) = &cfg.extra_ld_library_path {
        cmd.env("LD_LIBRARY_PATH", ld_library_path(dir));
    }
    let stats_log = tmp.join("stats.log");
    let status = run_cancellable(cmd, "nsys stats", &stats_log, cancel);
    // `nsys stats` exports REP.sqlite next to the report: read for the timed passes below, then
    // removed (as large as the report or larger, and only an intermediate here).
    let sqlite = cfg.work_dir.join(format!("{name}.sqlite"));
    let _sqlite_scratch = RemoveOnDrop(sqlite.clone());
    let status = status?;
    if !status.success() {
        return Err(ProfileError::StatsFailed { rep: rep.to_path_buf(), status: describe(&status), tail: tail_of(&stats_log) });
    }
    let console = fs::read_to_string(&stats_log).map_err(io_err(&stats_log))?;
    let read = |r: &str| fs::read_to_string(stats_file(&stats_prefix, r)).ok();
    let summary = StatsSummary::from_outputs(
        read("cuda_gpu_kern_sum").as_deref(),
        read("nvtx_sum").as_deref(),
        read("cuda_gpu_mem_time_sum").as_deref(),
        &console,
    )?;

    let timed = if sqlite.is_file() {
        read_timed_passes(&sqlite).map_err(|e| e.to_string())
    } else {
        Err(format!("nsys stats wrote no SQLite export ({})", sqlite.display()))
    };
    if let Err(reason) = &timed {
        tracing::warn!(job = job_id, %reason, "the profile summary covers the whole process");
    }
    let summary = match &timed {
        Ok(t) => restricted_to(summary, t),
        Err(_) => summary,
    };
    let m = &mut report.nsight_metrics;
    m.profile_file = Some(file_name.to_string());
    m.profile_name = name.to_string();
    summary.fill(m);
    fill_scope(m, timed.as_ref().map_err(Clone::clone), worker_pass_seconds);
    Ok(())
}

pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// `nsys stats --output PREFIX` writes report R to `PREFIX_R.csv`.
fn stats_file(prefix: &Path, report: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(format!("_{report}.csv"));
    PathBuf::from(s)
}
