//! The report model: one row of figures per stored run (the demo's comparison-table columns
//! plus ours), sorted, with the chart grouping and labels. No rendering here.

use crate::report::error::ReportError;
use serde::Serialize;
use std::collections::BTreeSet;
use tokbench_core::{BenchReport, Catalog};

/// One stored run: the report plus where it came from.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub sweep_id: String,
    pub worker_id: String,
    pub report: BenchReport,
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
    /// The architecture family (config.json `model_type`: opt, gpt2, llama, mistral, qwen2, qwen3).
    pub family: String,
    /// "opt-125m (125M, opt)": the demo's Model column, with the family.
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
    /// The engine's live device allocations after inference (CUDA pools, measured); None on CPU.
    pub gpu_memory_allocated_mb: Option<f64>,
    /// The demo's "GPU Util (%)", which is GPU memory used / total (labelled "GPU Mem Used (%)"
    /// in tokbench's tables); None on CPU.
    pub gpu_memory_utilization_percent: Option<f64>,
    /// SM utilisation (NVML, mean over the job's telemetry samples); None without NVML / on CPU.
    pub sm_utilization_percent: Option<f64>,
    /// The engine's peak device allocations over the job (the pools' high-water mark, measured):
    /// the table's "GPU Mem Peak" and the memory graph.
    pub peak_memory_allocated_mb: Option<f64>,
    pub ttft_p50_ms: f64,
    pub ttft_p90_ms: f64,
    pub inter_token_latency_p50_ms: f64,
    pub inter_token_latency_p90_ms: f64,
    /// Coefficient of variation of tokens/s over the timed repetitions, in percent.
    pub tokens_per_second_cv_percent: f64,
    /// 95% confidence interval of the mean tokens/s over the repetitions (Student's t).
    pub tokens_per_second_ci95: Option<[f64; 2]>,
    /// 95% CI of the mean pass time over the repetitions, seconds (the report's own figure).
    pub total_inference_time_seconds_ci95: Option<[f64; 2]>,
    /// Per timed repetition: tokens/s, TTFT median and ITL median (ms), for significance tests.
    pub tokens_per_second_runs: Vec<f64>,
    pub ttft_p50_runs_ms: Vec<f64>,
    pub itl_p50_runs_ms: Vec<f64>,
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
            model_label: format!("{model} ({}, {})", human_params(r.model_properties.total_parameters), r.model_properties.model_type),
            family: r.model_properties.model_type.clone(),
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
            sm_utilization_percent: r.telemetry.as_ref().map(|t| t.utilization_percent_mean),
            peak_memory_allocated_mb: gm.peak_memory_allocated_mb,
            ttft_p50_ms: im.ttft_ms.p50,
            ttft_p90_ms: im.ttft_ms.p90,
            inter_token_latency_p50_ms: im.inter_token_latency_ms.p50,
            inter_token_latency_p90_ms: im.inter_token_latency_ms.p90,
            tokens_per_second_cv_percent: im.tokens_per_second_cv * 100.0,
            tokens_per_second_ci95: im.tokens_per_second_ci95,
            total_inference_time_seconds_ci95: im.total_inference_time_seconds_ci95,
            tokens_per_second_runs: r.repetitions.iter().map(|x| x.tokens_per_second).collect(),
            ttft_p50_runs_ms: r.repetitions.iter().filter(|x| !x.ttft_ms.is_empty()).map(|x| tokbench_core::report::median(&x.ttft_ms)).collect(),
            itl_p50_runs_ms: r
                .repetitions
                .iter()
                .filter(|x| !x.step_latencies_ms.is_empty())
                .map(|x| tokbench_core::report::median(&x.step_latencies_ms))
                .collect(),
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
