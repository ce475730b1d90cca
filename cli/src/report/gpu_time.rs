//! Where the GPU time goes (model): per profiled run, GPU time by category and its top kernels.

use crate::report::model::{ReportData, RunRecord};
use serde::Serialize;

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
    /// What the split covers: "timed passes", or "whole process" (loading, tuning and warm-up
    /// included: the profile's timed passes could not be read, or the report predates that).
    pub scope: &'static str,
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
        let scope = if ns.summary_scope.starts_with("timed passes") { "timed passes" } else { "whole process" };
        out.push(GpuTimeEntry { run_id: row.run_id.clone(), label, split, kernels, scope });
    }
    out
}
