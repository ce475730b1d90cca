//! Turning stored runs into a report: one row of figures per run (the demo's comparison-table
//! columns plus ours), the baseline comparison, and the text outputs (Markdown, CSV, JSON).
//! The charts live in `plots`; `write_report` writes everything into one directory with one
//! timestamp.

use crate::plots;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tokbench_core::{BenchReport, Catalog};

/// One stored run: the report plus where it came from.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub sweep_id: String,
    pub worker_id: String,
    pub report: BenchReport,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no runs to report on: {0}")]
    NoRuns(String),
    #[error("cannot write {path}: {source}. Check that the directory is writable or pass another --out")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot draw {path}: {detail}")]
    Plot { path: PathBuf, detail: String },
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// How chart groups are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One group per model (and batch size when there are several); devices become series.
    #[default]
    Model,
    /// One group per device (GPU name, or CPU); models become series.
    Gpu,
}

/// The figures of one run, as shown in the tables and charts. Units are in the names.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub run_id: String,
    pub sweep_id: String,
    pub worker_id: String,
    /// Catalog short name when the model is in the catalog, else as requested.
    pub model: String,
    /// "opt-125m (125M)": the demo's Model column.
    pub model_label: String,
    pub total_parameters: u64,
    pub num_layers: usize,
    pub model_size_mb: f64,
    pub model_load_time_seconds: f64,
    /// The model came from the worker's cache (sweep with `--reuse-model`): the load time is not
    /// a cold load, and the table says so.
    pub model_reused: bool,
    pub total_inference_time_seconds: f64,
    pub tokens_per_second: f64,
    /// The demo's "GPU Mem (MB)": memory allocated by the model on the GPU; None on CPU.
    pub gpu_memory_allocated_mb: Option<f64>,
    /// The demo's "GPU Util (%)": GPU memory utilization; None on CPU.
    pub gpu_memory_utilization_percent: Option<f64>,
    pub peak_memory_allocated_mb: Option<f64>,
    pub ttft_p50_ms: f64,
    pub ttft_p90_ms: f64,
    pub inter_token_latency_p50_ms: f64,
    pub inter_token_latency_p90_ms: f64,
    /// Coefficient of variation of tokens/s over the timed repetitions, in percent.
    pub tokens_per_second_cv_percent: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub tokens_per_joule: Option<f64>,
    pub weights: String,
    pub dtype: String,
    /// "cpu", "cuda:0".
    pub device: String,
    /// GPU name, or "none (cpu)".
    pub gpu_name: String,
    /// What runs are grouped by when comparing devices: the GPU name, or "CPU".
    pub device_key: String,
    pub batch_size: usize,
    pub num_prompts: usize,
    pub max_tokens: usize,
    pub repetitions: usize,
    pub timestamp: String,
}

impl Row {
    pub fn from_record(rec: &RunRecord) -> Row {
        let r = &rec.report;
        let im = &r.inference_metrics;
        let gm = &r.gpu_metrics;
        let model = canonical_model(&r.model);
        let on_gpu = gm.gpu_memory_total_mb.is_some() || r.workload.device != tokbench_core::DeviceSpec::Cpu;
        Row {
            run_id: rec.run_id.clone(),
            sweep_id: rec.sweep_id.clone(),
            worker_id: rec.worker_id.clone(),
            model_label: format!("{model} ({})", human_params(r.model_properties.total_parameters)),
            model,
            total_parameters: r.model_properties.total_parameters,
            num_layers: r.model_properties.num_layers,
            model_size_mb: r.model_properties.model_size_mb,
            model_load_time_seconds: im.model_load_time_seconds,
            model_reused: im.model_reused,
            total_inference_time_seconds: im.total_inference_time_seconds,
            tokens_per_second: im.tokens_per_second,
            gpu_memory_allocated_mb: gm.gpu_memory_allocated_mb,
            gpu_memory_utilization_percent: gm.gpu_memory_utilization_percent,
            peak_memory_allocated_mb: gm.peak_memory_allocated_mb,
            ttft_p50_ms: im.ttft_ms.p50,
            ttft_p90_ms: im.ttft_ms.p90,
            inter_token_latency_p50_ms: im.inter_token_latency_ms.p50,
            inter_token_latency_p90_ms: im.inter_token_latency_ms.p90,
            tokens_per_second_cv_percent: im.tokens_per_second_cv * 100.0,
            prefill_tokens_per_second: im.prefill_tokens_per_second,
            decode_tokens_per_second: im.decode_tokens_per_second,
            tokens_per_joule: r.telemetry.as_ref().and_then(|t| t.tokens_per_joule),
            weights: r.model_properties.weights.clone(),
            dtype: r.model_properties.dtype.clone(),
            device: if gm.device.is_empty() { r.workload.device.to_string() } else { gm.device.clone() },
            gpu_name: gm.gpu_name.clone(),
            device_key: if on_gpu { gm.gpu_name.clone() } else { "CPU".to_string() },
            batch_size: r.workload.batch_size,
            num_prompts: im.num_prompts,
            max_tokens: r.workload.max_tokens,
            repetitions: im.repetitions,
            timestamp: r.timestamp.clone(),
        }
    }

    pub fn on_gpu(&self) -> bool {
        self.gpu_memory_allocated_mb.is_some() || self.gpu_memory_utilization_percent.is_some()
    }

    /// "NVIDIA H100 80GB HBM3 (cuda:0)" or "cpu".
    pub fn device_display(&self) -> String {
        if self.device_key == "CPU" {
            self.device.clone()
        } else {
            format!("{} ({})", self.gpu_name, self.device)
        }
    }
}

/// The catalog short name for a model given by short name or HF repo id; otherwise as given.
pub fn canonical_model(model: &str) -> String {
    Catalog::get(model).map(|e| e.name.to_string()).unwrap_or_else(|| model.to_string())
}

/// 125_239_296 -> "125M", 1_315_758_080 -> "1.3B", 3_334_400 -> "3.3M".
pub fn human_params(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.1}B", f / 1e9)
    } else if f >= 1e7 {
        format!("{:.0}M", f / 1e6)
    } else if f >= 1e6 {
        format!("{:.1}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.0}K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// The rows of a report, sorted (parameters, model, batch size, device), with the labels the
/// charts use.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub rows: Vec<Row>,
    pub sweep_ids: Vec<String>,
    pub group_by: GroupBy,
    /// Batch sizes present, ascending.
    pub batch_sizes: Vec<usize>,
    /// Device keys present, in order of first appearance after sorting.
    pub devices: Vec<String>,
    /// Local time the report was made, `YYYYmmdd_HHMMSS` (used in every file name).
    pub timestamp: String,
}

impl ReportData {
    pub fn new(records: &[RunRecord], group_by: GroupBy, timestamp: &str) -> Result<ReportData, ReportError> {
        if records.is_empty() {
            return Err(ReportError::NoRuns("the selection has no finished runs. Check `tokbench runs` and `tokbench status`".into()));
        }
        let mut rows: Vec<Row> = records.iter().map(Row::from_record).collect();
        rows.sort_by(|a, b| {
            (a.total_parameters, &a.model, a.batch_size, &a.device_key, &a.timestamp).cmp(&(
                b.total_parameters,
                &b.model,
                b.batch_size,
                &b.device_key,
                &b.timestamp,
            ))
        });
        let batch_sizes: BTreeSet<usize> = rows.iter().map(|r| r.batch_size).collect();
        let mut devices: Vec<String> = Vec::new();
        for r in &rows {
            if !devices.contains(&r.device_key) {
                devices.push(r.device_key.clone());
            }
        }
        let mut sweep_ids: Vec<String> = Vec::new();
        for r in &rows {
            if !sweep_ids.contains(&r.sweep_id) {
                sweep_ids.push(r.sweep_id.clone());
            }
        }
        Ok(ReportData { rows, sweep_ids, group_by, batch_sizes: batch_sizes.into_iter().collect(), devices, timestamp: timestamp.to_string() })
    }

    pub fn several_batch_sizes(&self) -> bool {
        self.batch_sizes.len() > 1
    }

    /// Short model label: "opt-125m", "opt-125m bs8" when several batch sizes.
    pub fn model_group(&self, r: &Row) -> String {
        if self.several_batch_sizes() {
            format!("{} bs{}", r.model, r.batch_size)
        } else {
            r.model.clone()
        }
    }

    /// Label of a run within its chart group: what tells it apart from the other runs of
    /// the same model: its batch size and/or device, when those vary ("" when nothing varies).
    fn within_model(&self, r: &Row) -> String {
        let mut parts = Vec::new();
        if self.several_batch_sizes() {
            parts.push(format!("batch {}", r.batch_size));
        }
        if self.devices.len() > 1 {
            parts.push(r.device_key.clone());
        }
        parts.join(" · ")
    }

    /// Categories (x groups) and series (coloured bars) of the bar charts, and the row index
    /// of each (category, series) cell. Default: one group per model, its bars the batch sizes
    /// and/or devices; `--group-by gpu`: one group per device, its bars the models.
    pub fn grouping(&self) -> Grouping {
        let (cat_of, ser_of): (Box<dyn Fn(&Row) -> String>, Box<dyn Fn(&Row) -> String>) = match self.group_by {
            GroupBy::Model => (Box::new(|r| r.model.clone()), Box::new(|r| self.within_model(r))),
            GroupBy::Gpu => (Box::new(|r| r.device_key.clone()), Box::new(|r| self.model_group(r))),
        };
        let mut categories: Vec<String> = Vec::new();
        let mut series: Vec<String> = Vec::new();
        for r in &self.rows {
            let c = cat_of(r);
            if !categories.contains(&c) {
                categories.push(c);
            }
            let s = ser_of(r);
            if !series.contains(&s) {
                series.push(s);
            }
        }
        if self.group_by == GroupBy::Gpu {
            // Keep series in batch-size order within a model, as rows are sorted.
        } else {
            // Series in batch-size then device order regardless of which model came first.
            let mut keyed: Vec<(usize, String, String)> = Vec::new();
            for r in &self.rows {
                let s = ser_of(r);
                if !keyed.iter().any(|k| k.2 == s) {
                    keyed.push((r.batch_size, r.device_key.clone(), s));
                }
            }
            keyed.sort();
            series = keyed.into_iter().map(|k| k.2).collect();
        }
        let mut cells = vec![vec![None; series.len()]; categories.len()];
        for (i, r) in self.rows.iter().enumerate() {
            let c = categories.iter().position(|x| *x == cat_of(r)).unwrap();
            let s = series.iter().position(|x| *x == ser_of(r)).unwrap();
            // Several runs of one cell (the same model on the same device from several
            // sweeps): the latest wins; the tables still list all of them.
            cells[c][s] = Some(i);
        }
        Grouping { categories, series, cells }
    }

    /// "sweep 3f2a… · NVIDIA H100 80GB HBM3 · 2026-11-28 04:10".
    pub fn subtitle(&self) -> String {
        let sweeps = match self.sweep_ids.len() {
            0 => String::new(),
            1 => format!("sweep {}", self.sweep_ids[0]),
            n => format!("{n} sweeps ({})", self.sweep_ids.iter().map(|s| short_id(s)).collect::<Vec<_>>().join(", ")),
        };
        let devices = self
            .devices
            .iter()
            .map(|d| if d == "CPU" { "CPU (no GPU)".to_string() } else { d.clone() })
            .collect::<Vec<_>>()
            .join(" + ");
        let date = chrono::NaiveDateTime::parse_from_str(&self.timestamp, "%Y%m%d_%H%M%S")
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|_| self.timestamp.clone());
        format!("{sweeps}  |  {devices}  |  {date}")
    }
}

pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

#[derive(Debug, Clone)]
pub struct Grouping {
    pub categories: Vec<String>,
    pub series: Vec<String>,
    /// cells[category][series] = index into rows.
    pub cells: Vec<Vec<Option<usize>>>,
}

// ------------------------------------------------------------------ baseline comparison

/// One metric of the baseline comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Metric {
    TokensPerSecond,
    TtftP50,
    ItlP50,
    LoadTime,
    PeakMemory,
}

impl Metric {
    pub const ALL: [Metric; 5] = [Metric::TokensPerSecond, Metric::TtftP50, Metric::ItlP50, Metric::LoadTime, Metric::PeakMemory];
    pub fn name(self) -> &'static str {
        match self {
            Metric::TokensPerSecond => "tokens/s",
            Metric::TtftP50 => "TTFT p50 (ms)",
            Metric::ItlP50 => "ITL p50 (ms)",
            Metric::LoadTime => "load time (s)",
            Metric::PeakMemory => "peak memory (MB)",
        }
    }
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::TokensPerSecond)
    }
    pub fn value(self, r: &Row) -> Option<f64> {
        match self {
            Metric::TokensPerSecond => Some(r.tokens_per_second),
            Metric::TtftP50 => Some(r.ttft_p50_ms),
            Metric::ItlP50 => Some(r.inter_token_latency_p50_ms),
            Metric::LoadTime => Some(r.model_load_time_seconds),
            Metric::PeakMemory => r.peak_memory_allocated_mb,
        }
    }
}

/// Worse than the baseline by more than this (percent) counts as a regression.
pub const REGRESSION_THRESHOLD_PERCENT: f64 = 5.0;

#[derive(Debug, Clone, Serialize)]
pub struct BaselineChange {
    pub model: String,
    pub batch_size: usize,
    pub device: String,
    pub metric: &'static str,
    pub higher_is_better: bool,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// (current - baseline) / baseline * 100; None when either side has no value.
    pub change_percent: Option<f64>,
    /// Worse than the baseline by more than 5 %.
    pub regression: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineComparison {
    pub baseline_sweep: String,
    pub threshold_percent: f64,
    pub changes: Vec<BaselineChange>,
    /// Current runs with no baseline run of the same model and batch size (and device with
    /// --group-by gpu).
    pub unmatched: Vec<String>,
}

impl BaselineComparison {
    pub fn regressions(&self) -> usize {
        self.changes.iter().filter(|c| c.regression).count()
    }
}

pub fn compare_baseline(current: &ReportData, baseline: &[RunRecord], baseline_sweep: &str) -> BaselineComparison {
    let key = |r: &Row| -> (String, usize, String) {
        let dev = if current.group_by == GroupBy::Gpu { r.device_key.clone() } else { String::new() };
        (r.model.clone(), r.batch_size, dev)
    };
    let mut base: BTreeMap<(String, usize, String), Row> = BTreeMap::new();
    let mut base_rows: Vec<Row> = baseline.iter().map(Row::from_record).collect();
    base_rows.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    for r in base_rows {
        base.insert(key(&r), r); // latest wins
    }
    let mut changes = Vec::new();
    let mut unmatched = Vec::new();
    for r in &current.rows {
        let Some(b) = base.get(&key(r)) else {
            unmatched.push(format!("{} bs{} on {}", r.model, r.batch_size, r.device_key));
            continue;
        };
        for m in Metric::ALL {
            let (bv, cv) = (m.value(b), m.value(r));
            let change = match (bv, cv) {
                (Some(bv), Some(cv)) if bv.abs() > f64::EPSILON => Some((cv - bv) / bv * 100.0),
                _ => None,
            };
            let regression = change.is_some_and(|c| {
                if m.higher_is_better() {
                    c < -REGRESSION_THRESHOLD_PERCENT
                } else {
                    c > REGRESSION_THRESHOLD_PERCENT
                }
            });
            changes.push(BaselineChange {
                model: r.model.clone(),
                batch_size: r.batch_size,
                device: r.device_key.clone(),
                metric: m.name(),
                higher_is_better: m.higher_is_better(),
                baseline: bv,
                current: cv,
                change_percent: change,
                regression,
            });
        }
    }
    BaselineComparison { baseline_sweep: baseline_sweep.to_string(), threshold_percent: REGRESSION_THRESHOLD_PERCENT, changes, unmatched }
}

// ------------------------------------------------------------------ text outputs

pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".into(),
    }
}

/// The comparison table: header and cells, shared by the PNG table, Markdown and the terminal.
pub fn comparison_table(data: &ReportData) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "Model",
        "Params",
        "Layers",
        "Model Size (MB)",
        "Load Time (s)",
        "Inference Time (s)",
        "Tokens/s",
        "GPU Mem (MB)",
        "GPU Util (%)",
        "TTFT p50 (ms)",
        "ITL p50 (ms)",
        "Tok/s CV (%)",
        "Tokens/J",
        "Weights",
        "Device",
        "Batch",
    ];
    let rows = data
        .rows
        .iter()
        .map(|r| {
            vec![
                r.model_label.clone(),
                r.total_parameters.to_string(),
                r.num_layers.to_string(),
                format!("{:.1}", r.model_size_mb),
                if r.model_reused { format!("{:.2} (reused)", r.model_load_time_seconds) } else { format!("{:.2}", r.model_load_time_seconds) },
                format!("{:.2}", r.total_inference_time_seconds),
                format!("{:.1}", r.tokens_per_second),
                fmt_opt(r.gpu_memory_allocated_mb, 1),
                fmt_opt(r.gpu_memory_utilization_percent, 1),
                format!("{:.1}", r.ttft_p50_ms),
                format!("{:.2}", r.inter_token_latency_p50_ms),
                format!("{:.1}", r.tokens_per_second_cv_percent),
                fmt_opt(r.tokens_per_joule, 2),
                r.weights.clone(),
                r.device_display(),
                r.batch_size.to_string(),
            ]
        })
        .collect();
    (header, rows)
}

fn md_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", header.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let _ = writeln!(out, "| {} |", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
    }
}

pub fn markdown(data: &ReportData, baseline: Option<&BaselineComparison>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# tokbench report {}\n", data.timestamp);
    let _ = writeln!(out, "{}\n", data.subtitle());
    let _ = writeln!(out, "## Comparison\n");
    let (h, rows) = comparison_table(data);
    md_table(&mut out, &h, &rows);
    let _ = writeln!(out, "\n## Latency and throughput detail\n");
    let header = [
        "Model",
        "Batch",
        "Device",
        "TTFT p50 (ms)",
        "TTFT p90 (ms)",
        "ITL p50 (ms)",
        "ITL p90 (ms)",
        "Prefill (tok/s)",
        "Decode (tok/s)",
        "Peak Mem (MB)",
        "Dtype",
        "Prompts",
        "Max tokens",
        "Reps",
        "Run",
    ];
    let rows: Vec<Vec<String>> = data
        .rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.batch_size.to_string(),
                r.device_display(),
                format!("{:.1}", r.ttft_p50_ms),
                format!("{:.1}", r.ttft_p90_ms),
                format!("{:.2}", r.inter_token_latency_p50_ms),
                format!("{:.2}", r.inter_token_latency_p90_ms),
                format!("{:.1}", r.prefill_tokens_per_second),
                format!("{:.1}", r.decode_tokens_per_second),
                fmt_opt(r.peak_memory_allocated_mb, 1),
                r.dtype.clone(),
                r.num_prompts.to_string(),
                r.max_tokens.to_string(),
                r.repetitions.to_string(),
                r.run_id.clone(),
            ]
        })
        .collect();
    md_table(&mut out, &header, &rows);
    if data.rows.iter().all(|r| !r.on_gpu()) {
        let _ = writeln!(out, "\nGPU columns are n/a: these runs ran on the CPU.");
    }
    if let Some(b) = baseline {
        out.push('\n');
        out.push_str(&baseline_markdown(b));
    }
    out
}

pub fn baseline_markdown(b: &BaselineComparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Change vs baseline sweep {}\n", b.baseline_sweep);
    let _ = writeln!(
        out,
        "Change = (current - baseline) / baseline, in %. **REGRESSION** = worse by more than {:.0}% (tokens/s lower; latencies, load time, memory higher).\n",
        b.threshold_percent
    );
    let header = ["Model", "Batch", "Device", "Metric", "Baseline", "Current", "Change (%)", "Verdict"];
    let rows: Vec<Vec<String>> = b
        .changes
        .iter()
        .map(|c| {
            let verdict = match c.change_percent {
                None => "n/a".to_string(),
                Some(_) if c.regression => "**REGRESSION**".to_string(),
                Some(p) if (c.higher_is_better && p > REGRESSION_THRESHOLD_PERCENT) || (!c.higher_is_better && p < -REGRESSION_THRESHOLD_PERCENT) => {
                    "improved".to_string()
                }
                Some(_) => "same (within 5%)".to_string(),
            };
            vec![
                c.model.clone(),
                c.batch_size.to_string(),
                c.device.clone(),
                c.metric.to_string(),
                fmt_opt(c.baseline, 2),
                fmt_opt(c.current, 2),
                c.change_percent.map(|p| format!("{p:+.1}")).unwrap_or_else(|| "n/a".into()),
                verdict,
            ]
        })
        .collect();
    md_table(&mut out, &header, &rows);
    let _ = writeln!(out, "\n{} regression(s).", b.regressions());
    if !b.unmatched.is_empty() {
        let _ = writeln!(out, "\nNo baseline run for: {}.", b.unmatched.join(", "));
    }
    out
}

pub fn csv_bytes(data: &ReportData) -> Result<Vec<u8>, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "run_id",
        "sweep_id",
        "worker_id",
        "model",
        "total_parameters",
        "num_layers",
        "model_size_mb",
        "model_load_time_seconds",
        "model_reused",
        "total_inference_time_seconds",
        "tokens_per_second",
        "gpu_memory_allocated_mb",
        "gpu_memory_utilization_percent",
        "peak_memory_allocated_mb",
        "ttft_p50_ms",
        "ttft_p90_ms",
        "inter_token_latency_p50_ms",
        "inter_token_latency_p90_ms",
        "tokens_per_second_cv_percent",
        "prefill_tokens_per_second",
        "decode_tokens_per_second",
        "tokens_per_joule",
        "weights",
        "dtype",
        "device",
        "gpu_name",
        "batch_size",
        "num_prompts",
        "max_tokens",
        "repetitions",
        "timestamp",
    ])?;
    let o = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in &data.rows {
        w.write_record([
            r.run_id.clone(),
            r.sweep_id.clone(),
            r.worker_id.clone(),
            r.model.clone(),
            r.total_parameters.to_string(),
            r.num_layers.to_string(),
            r.model_size_mb.to_string(),
            r.model_load_time_seconds.to_string(),
            r.model_reused.to_string(),
            r.total_inference_time_seconds.to_string(),
            r.tokens_per_second.to_string(),
            o(r.gpu_memory_allocated_mb),
            o(r.gpu_memory_utilization_percent),
            o(r.peak_memory_allocated_mb),
            r.ttft_p50_ms.to_string(),
            r.ttft_p90_ms.to_string(),
            r.inter_token_latency_p50_ms.to_string(),
            r.inter_token_latency_p90_ms.to_string(),
            r.tokens_per_second_cv_percent.to_string(),
            r.prefill_tokens_per_second.to_string(),
            r.decode_tokens_per_second.to_string(),
            o(r.tokens_per_joule),
            r.weights.clone(),
            r.dtype.clone(),
            r.device.clone(),
            r.gpu_name.clone(),
            r.batch_size.to_string(),
            r.num_prompts.to_string(),
            r.max_tokens.to_string(),
            r.repetitions.to_string(),
            r.timestamp.clone(),
        ])?;
    }
    w.flush().map_err(|e| ReportError::Io { path: PathBuf::from("report.csv"), source: e })?;
    Ok(w.into_inner().map_err(|e| ReportError::Io { path: PathBuf::from("report.csv"), source: e.into_error() })?)
}

// ------------------------------------------------------------------ writing a report

#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub out_dir: PathBuf,
    pub svg: bool,
    pub group_by: GroupBy,
    /// `YYYYmmdd_HHMMSS`; None = now (local time).
    pub timestamp: Option<String>,
}

/// What `write_report` produced.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenReport {
    pub timestamp: String,
    pub files: Vec<PathBuf>,
    pub rows: usize,
    pub regressions: Option<usize>,
}

pub fn now_timestamp() -> String {
    chrono::Local::now().format("%Y%m%d_%H%M%S").to_string()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// Writes the whole report into `opts.out_dir`: comparison table and performance graphs
/// (PNG, + SVG with `svg`), batch scaling when several batch sizes, baseline comparison when a
/// baseline is given, and the same data as Markdown, CSV and JSON. Returns the files written.
pub fn write_report(records: &[RunRecord], baseline: Option<(&str, &[RunRecord])>, opts: &ReportOptions) -> Result<WrittenReport, ReportError> {
    let ts = opts.timestamp.clone().unwrap_or_else(now_timestamp);
    let data = ReportData::new(records, opts.group_by, &ts)?;
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| ReportError::Io { path: opts.out_dir.clone(), source: e })?;
    let cmp = match baseline {
        Some((id, runs)) => {
            if runs.is_empty() {
                return Err(ReportError::NoRuns(format!("baseline sweep {id} has no finished runs; pick another --baseline (see `tokbench status`)")));
            }
            Some(compare_baseline(&data, runs, id))
        }
        None => None,
    };
    let mut files = Vec::new();
    let p = |name: &str| opts.out_dir.join(format!("{name}_{ts}"));

    let gpu_time = gpu_time_entries(records, &data);
    let mut charts: Vec<(PathBuf, Box<dyn plots::Chart>)> = vec![
        (p("comparison_table"), Box::new(plots::ComparisonTable::new(&data))),
        (p("performance_graphs"), Box::new(plots::PerformanceGraphs::new(&data))),
    ];
    if data.several_batch_sizes() {
        charts.push((p("batch_scaling"), Box::new(plots::BatchScaling::new(&data))));
    }
    if let Some(c) = &cmp {
        charts.push((p("baseline_comparison"), Box::new(plots::BaselineChart::new(&data, c))));
    }
    if !gpu_time.is_empty() {
        charts.push((p("gpu_time"), Box::new(plots::GpuTimeChart::new(&data, &gpu_time))));
    }
    for (stem, chart) in &charts {
        let png = stem.with_extension("png");
        plots::save_png(chart.as_ref(), &png)?;
        files.push(png);
        if opts.svg {
            let svg = stem.with_extension("svg");
            plots::save_svg(chart.as_ref(), &svg)?;
            files.push(svg);
        }
    }
    if let Some(c) = &cmp {
        let path = p("baseline_comparison").with_extension("md");
        write_file(&path, baseline_markdown(c).as_bytes())?;
        files.push(path);
    }
    let md = p("report").with_extension("md");
    let mut md_text = markdown(&data, cmp.as_ref());
    if !gpu_time.is_empty() {
        md_text.push('\n');
        md_text.push_str(&gpu_time_markdown(&gpu_time));
    }
    write_file(&md, md_text.as_bytes())?;
    files.push(md);
    let csv = p("report").with_extension("csv");
    write_file(&csv, &csv_bytes(&data)?)?;
    files.push(csv);
    let json_path = p("report").with_extension("json");
    files.push(json_path.clone());
    let json = serde_json::json!({
        "timestamp": ts,
        "sweep_ids": data.sweep_ids,
        "group_by": data.group_by,
        "devices": data.devices,
        "batch_sizes": data.batch_sizes,
        "rows": data.rows,
        "baseline_comparison": cmp,
        "gpu_time": gpu_time,
        "files": files,
    });
    write_file(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(WrittenReport { timestamp: ts, files, rows: data.rows.len(), regressions: cmp.as_ref().map(|c| c.regressions()) })
}

// ------------------------------------------------------------------ where the GPU time goes

/// Kernels listed per run in the GPU time chart and the Markdown report.
pub const TOP_KERNELS: usize = 5;

/// One profiled run's GPU time by category and its top kernels (from `nsight_metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct GpuTimeEntry {
    pub run_id: String,
    /// "opt-125m · bs 4" (+ the device when runs come from several).
    pub label: String,
    /// Nanoseconds per category; from `gpu_time_split`, else summed over the listed kernels.
    pub split: tokbench_core::report::GpuTimeSplit,
    /// The top kernels by total time, longest first.
    pub kernels: Vec<tokbench_core::report::KernelStat>,
}

impl GpuTimeEntry {
    /// (category label, percent of GPU time) in the fixed category order.
    pub fn percents(&self) -> Vec<(&'static str, f64)> {
        tokbench_core::report::GpuTimeCategory::ALL.iter().map(|c| (c.label(), self.split.percent(*c))).collect()
    }
}

/// The runs (in report order) whose report has a GPU time split or kernel statistics.
pub fn gpu_time_entries(records: &[RunRecord], data: &ReportData) -> Vec<GpuTimeEntry> {
    let several_devices = data.devices.len() > 1;
    let mut used = vec![false; records.len()];
    let mut out = Vec::new();
    for row in &data.rows {
        // Rows are sorted records; find this row's record (run ids may repeat across inputs).
        let Some(i) = records.iter().enumerate().position(|(i, r)| !used[i] && r.run_id == row.run_id) else { continue };
        used[i] = true;
        let ns = &records[i].report.nsight_metrics;
        if ns.gpu_time_split.is_none() && ns.kernels.is_empty() {
            continue;
        }
        let split = ns.gpu_time_split.clone().unwrap_or_else(|| {
            let mut s = tokbench_core::report::GpuTimeSplit::default();
            for k in &ns.kernels {
                s.add(k.category, k.total_time_ns);
            }
            s
        });
        let mut kernels = ns.kernels.clone();
        kernels.sort_by(|a, b| b.total_time_ns.cmp(&a.total_time_ns));
        kernels.truncate(TOP_KERNELS);
        let mut label = format!("{} · bs {}", row.model, row.batch_size);
        if several_devices {
            label = format!("{label} · {}", row.device_key);
        }
        out.push(GpuTimeEntry { run_id: row.run_id.clone(), label, split, kernels });
    }
    out
}

/// A kernel name cut to `max` characters (with an ellipsis) for tables and charts.
pub fn truncate_name(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// The Markdown section "Where the GPU time goes" (empty when no run was profiled).
pub fn gpu_time_markdown(entries: &[GpuTimeEntry]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        return out;
    }
    let _ = writeln!(out, "## Where the GPU time goes\n");
    let mut header = vec!["Run"];
    header.extend(tokbench_core::report::GpuTimeCategory::ALL.iter().map(|c| c.label()));
    header.push("GPU time (ms)");
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut r = vec![e.label.clone()];
            r.extend(e.percents().iter().map(|(_, p)| format!("{p:.1}%")));
            r.push(format!("{:.2}", e.split.total_ns() as f64 / 1e6));
            r
        })
        .collect();
    md_table(&mut out, &header, &rows);
    let _ = writeln!(out, "\n### Top {TOP_KERNELS} kernels by total time\n");
    let header = ["Run", "#", "Kernel", "Category", "Total (ms)", "Calls", "% of kernel time"];
    let mut rows = Vec::new();
    for e in entries {
        for (i, k) in e.kernels.iter().enumerate() {
            rows.push(vec![
                if i == 0 { e.label.clone() } else { String::new() },
                (i + 1).to_string(),
                format!("`{}`", truncate_name(&k.name, 90).replace('`', "'")),
                k.category.label().to_string(),
                format!("{:.3}", k.total_time_ns as f64 / 1e6),
                k.instances.to_string(),
                format!("{:.1}", k.time_percent),
            ]);
        }
    }
    md_table(&mut out, &header, &rows);
    out
}
