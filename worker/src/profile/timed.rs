//! The profile's GPU work during the timed passes only, read from the SQLite export of the
//! `.nsys-rep` (`nsys stats --force-export=true` writes it next to the report).
//!
//! Why not the whole process: a profiled job also loads the model (cuRAND drawing synthetic
//! weights), tunes cuBLASLt (its `spin_ns` kernel) and warms up; on an H100 those were 90% of the
//! GPU time of a gpt2 batch-1 job. The timed passes are the `inference [<model>]` NVTX ranges
//! (one per timed repetition); a kernel or memory operation belongs to them when it starts on
//! the GPU inside one. That attribution is exact for tokbench: a pass synchronises the device
//! before its range opens and after its last token, so no other work runs on the GPU then.
//! With `--cuda-graph-trace=node` a replayed CUDA graph's kernels are rows of their own.
//!
//! The tables (nsys 2025.x export schema): `NVTX_EVENTS(start, end, text, textId, eventType)`,
//! `CUPTI_ACTIVITY_KIND_KERNEL(start, end, demangledName, shortName)`,
//! `CUPTI_ACTIVITY_KIND_MEMCPY(start, end, copyKind)`, `CUPTI_ACTIVITY_KIND_MEMSET(start, end)`,
//! `StringIds(id, value)`. A table nsys had nothing for is absent from the export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokbench_core::report::{median, sample_std, KernelStat, MemOpStat};

use super::classify::classify_kernel;
use super::summary::{nvtx_base_name, StatsSummary};
use super::ProfileError;

/// The NVTX range (base name) that brackets one timed pass.
pub const TIMED_RANGE: &str = "inference";

/// The GPU work of the timed passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimedPasses {
    /// Duration of each `inference` range, ns, in order.
    pub pass_ns: Vec<u64>,
    /// Kernels that started inside a timed pass, by total time descending.
    pub kernels: Vec<KernelStat>,
    /// Memory operations that started inside one.
    pub memory_ops: Vec<MemOpStat>,
    /// Distinct NVTX range names (base names, first-seen order) anywhere in the profile.
    pub range_names: Vec<String>,
    /// Kernel time outside the timed passes (loading, tuning, warm-up, ...), ns.
    pub outside_kernel_ns: u64,
}

/// Reads the timed passes from the SQLite export at `sqlite`.
pub fn read_timed_passes(sqlite: &Path) -> Result<TimedPasses, ProfileError> {
    let path = sqlite.to_path_buf();
    // run_profiled is blocking and may run on a runtime's blocking thread, where a nested
    // runtime cannot block: a thread of its own.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| ProfileError::Io { path: path.clone(), source })?;
        rt.block_on(query(&path))
    })
    .join()
    .unwrap_or_else(|_| Err(parse_err("the SQLite reader panicked".into())))
}

fn parse_err(detail: String) -> ProfileError {
    ProfileError::StatsParse { report: "SQLite export", detail }
}

async fn query(path: &PathBuf) -> Result<TimedPasses, ProfileError> {
    let db = |e: sqlx::Error| parse_err(format!("{}: {e}", path.display()));
    let mut conn = SqliteConnectOptions::new().filename(path).read_only(true).connect().await.map_err(db)?;
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(&mut conn).await.map_err(db)?;
    let has = |t: &str| tables.iter().any(|n| n == t);
    if !has("NVTX_EVENTS") {
        return Err(parse_err(format!("{} has no NVTX_EVENTS table: the profile saw no NVTX ranges (a worker built without the nvtx feature?)", path.display())));
    }
    // A range's name is inline (`text`) or a registered string (`textId`).
    let sql = if has("StringIds") {
        "SELECT COALESCE(n.text, s.value), n.start, n.end FROM NVTX_EVENTS n LEFT JOIN StringIds s ON s.id = n.textId ORDER BY n.start"
    } else {
        "SELECT n.text, n.start, n.end FROM NVTX_EVENTS n ORDER BY n.start"
    };
    let ranges: Vec<(Option<String>, i64, Option<i64>)> = sqlx::query_as(sql).fetch_all(&mut conn).await.map_err(db)?;
    let mut range_names: Vec<String> = Vec::new();
    let mut windows: Vec<(i64, i64)> = Vec::new();
    for (name, start, end) in &ranges {
        let (Some(name), Some(end)) = (name, end) else { continue };
        let base = nvtx_base_name(name).to_string();
        if base == TIMED_RANGE && end > start {
            windows.push((*start, *end));
        }
        if !range_names.contains(&base) {
            range_names.push(base);
        }
    }
    if windows.is_empty() {
        return Err(parse_err(format!("{} has no `{TIMED_RANGE}` NVTX range: nothing marks the timed passes", path.display())));
    }
    let inside = |t: i64| windows.iter().any(|&(s, e)| t >= s && t <= e);

    let mut by_kernel: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut outside_kernel_ns = 0u64;
    if has("CUPTI_ACTIVITY_KIND_KERNEL") {
        let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT k.start, k.end, COALESCE(d.value, sh.value) FROM CUPTI_ACTIVITY_KIND_KERNEL k \
             LEFT JOIN StringIds d ON d.id = k.demangledName LEFT JOIN StringIds sh ON sh.id = k.shortName",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(db)?;
        for (start, end, name) in rows {
            let ns = end.saturating_sub(start).max(0) as u64;
            if inside(start) {
                by_kernel.entry(name.unwrap_or_else(|| "(unnamed kernel)".into())).or_default().push(ns);
            } else {
                outside_kernel_ns += ns;
            }
        }
    }
    let mut by_op: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    if has("CUPTI_ACTIVITY_KIND_MEMCPY") {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as("SELECT start, end, copyKind FROM CUPTI_ACTIVITY_KIND_MEMCPY").fetch_all(&mut conn).await.map_err(db)?;
        for (start, end, kind) in rows.into_iter().filter(|r| inside(r.0)) {
            by_op.entry(memcpy_name(kind)).or_default().push(end.saturating_sub(start).max(0) as u64);
        }
    }
    if has("CUPTI_ACTIVITY_KIND_MEMSET") {
        let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT start, end FROM CUPTI_ACTIVITY_KIND_MEMSET").fetch_all(&mut conn).await.map_err(db)?;
        for (start, end) in rows.into_iter().filter(|r| inside(r.0)) {
            by_op.entry("[CUDA memset]".into()).or_default().push(end.saturating_sub(start).max(0) as u64);
        }
    }
    let _ = conn.close().await;

    let kernel_total: u64 = by_kernel.values().flatten().sum();
    let mut kernels: Vec<KernelStat> = by_kernel
        .into_iter()
        .map(|(name, times)| {
            let s = Stats::of(&times, kernel_total);
            KernelStat { category: classify_kernel(&name), name, time_percent: s.percent, total_time_ns: s.total, instances: s.count, avg_ns: s.avg, med_ns: s.med, min_ns: s.min, max_ns: s.max, stddev_ns: s.std }
        })
        .collect();
    kernels.sort_by(|a, b| b.total_time_ns.cmp(&a.total_time_ns).then_with(|| a.name.cmp(&b.name)));
    let op_total: u64 = by_op.values().flatten().sum();
    let mut memory_ops: Vec<MemOpStat> = by_op
        .into_iter()
        .map(|(operation, times)| {
            let s = Stats::of(&times, op_total);
            MemOpStat { operation, time_percent: s.percent, total_time_ns: s.total, count: s.count, avg_ns: s.avg, med_ns: s.med, min_ns: s.min, max_ns: s.max, stddev_ns: s.std }
        })
        .collect();
    memory_ops.sort_by(|a, b| b.total_time_ns.cmp(&a.total_time_ns));
    let pass_ns = windows.iter().map(|&(s, e)| (e - s) as u64).collect();
    Ok(TimedPasses { pass_ns, kernels, memory_ops, range_names, outside_kernel_ns })
}

/// The summary of the timed passes: `timed`'s kernels and memory operations in place of the
/// whole process's (the NVTX table stays whole: it is what marks the phases).
pub fn restricted_to(mut summary: StatsSummary, timed: &TimedPasses) -> StatsSummary {
    summary.kernels = timed.kernels.clone();
    summary.memory_ops = timed.memory_ops.clone();
    summary
}

/// Writes what the summary covers into `m`: the timed passes as nsys saw them (their NVTX
/// durations, and how they compare with the worker's own median pass time), or the whole
/// process with the reason the timed passes could not be read.
pub fn fill_scope(m: &mut tokbench_core::report::NsightMetrics, timed: Result<&TimedPasses, String>, worker_pass_seconds: f64) {
    match timed {
        Ok(t) => {
            let passes: Vec<f64> = t.pass_ns.iter().map(|&ns| ns as f64 / 1e9).collect();
            let med = median(&passes);
            m.inference_range_seconds = Some(med);
            m.inference_range_vs_pass_time = (worker_pass_seconds > 0.0).then(|| med / worker_pass_seconds);
            m.inference_range_pass_seconds = passes;
            for name in &t.range_names {
                if !m.nvtx_ranges.contains(name) {
                    m.nvtx_ranges.push(name.clone());
                }
            }
            m.summary_scope = format!(
                "timed passes: GPU work that started inside the {} `inference` NVTX ranges ({:.3} ms of kernel time outside them: loading, tuning, warm-up; see the .nsys-rep)",
                t.pass_ns.len(),
                t.outside_kernel_ns as f64 / 1e6
            );
            let agreement = m.inference_range_vs_pass_time.map(|r| format!(", {:.2}% of the worker's median pass time", r * 100.0)).unwrap_or_default();
            m.notes = format!("Summary of the timed passes only ({} passes, NVTX median {:.4} s{agreement}). {}", t.pass_ns.len(), med, m.notes);
        }
        Err(reason) => {
            m.summary_scope = format!("whole process (loading, tuning and warm-up included): {reason}");
            m.notes = format!("Summary of the whole process, not only the timed passes: {reason}. {}", m.notes);
        }
    }
}

/// nsys's names for memcpy kinds (CUpti_ActivityMemcpyKind), as `nsys stats` prints them.
fn memcpy_name(kind: i64) -> String {
    match kind {
        1 => "[CUDA memcpy Host-to-Device]".into(),
        2 => "[CUDA memcpy Device-to-Host]".into(),
        8 => "[CUDA memcpy Device-to-Device]".into(),
        10 => "[CUDA memcpy Peer-to-Peer]".into(),
        k => format!("[CUDA memcpy kind {k}]"),
    }
}

/// nsys's summary columns for one name's durations.
struct Stats {
    total: u64,
    count: u64,
    avg: f64,
    med: f64,
    min: u64,
    max: u64,
    std: f64,
    percent: f64,
}

impl Stats {
    fn of(times: &[u64], all_total: u64) -> Stats {
        let total: u64 = times.iter().sum();
        let f: Vec<f64> = times.iter().map(|&t| t as f64).collect();
        Stats {
            total,
            count: times.len() as u64,
            avg: total as f64 / times.len().max(1) as f64,
            med: median(&f),
            min: times.iter().copied().min().unwrap_or(0),
            max: times.iter().copied().max().unwrap_or(0),
            std: sample_std(&f),
            percent: if all_total == 0 { 0.0 } else { total as f64 * 100.0 / all_total as f64 },
        }
    }
}
