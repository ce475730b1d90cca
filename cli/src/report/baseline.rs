//! The baseline comparison (model): per run and metric, the change against the same model and
//! batch size in a baseline sweep, and which changes are regressions.

use crate::report::model::{GroupBy, ReportData, Row, RunRecord};
use serde::Serialize;
use std::collections::BTreeMap;

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
    /// The metric per timed repetition, for the significance test (None: one value per run).
    pub fn runs(self, r: &Row) -> Option<&[f64]> {
        match self {
            Metric::TokensPerSecond => Some(&r.tokens_per_second_runs),
            Metric::TtftP50 => Some(&r.ttft_p50_runs_ms),
            Metric::ItlP50 => Some(&r.itl_p50_runs_ms),
            Metric::LoadTime | Metric::PeakMemory => None,
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
    /// Worse than the baseline by more than 5 %, and (where both sides have repetitions)
    /// significantly so by Welch's t-test at p < 0.05.
    pub regression: bool,
    /// Better by more than 5 % and, where testable, significantly so.
    pub improvement: bool,
    /// Welch's t-test of the repetitions (None: fewer than two on a side, or a one-value metric).
    pub welch: Option<tokbench_core::report::WelchTest>,
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
            let welch = match (m.runs(b), m.runs(r)) {
                (Some(a), Some(c)) => tokbench_core::report::welch_test(a, c),
                _ => None,
            };
            // A change counts only beyond the threshold and, where the repetitions allow a test,
            // when it is significant.
            let significant = welch.is_none_or(|w| w.significant);
            let worse = change.is_some_and(|c| if m.higher_is_better() { c < -REGRESSION_THRESHOLD_PERCENT } else { c > REGRESSION_THRESHOLD_PERCENT });
            let better = change.is_some_and(|c| if m.higher_is_better() { c > REGRESSION_THRESHOLD_PERCENT } else { c < -REGRESSION_THRESHOLD_PERCENT });
            let regression = worse && significant;
            let improvement = better && significant;
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
                improvement,
                welch,
            });
        }
    }
    BaselineComparison { baseline_sweep: baseline_sweep.to_string(), threshold_percent: REGRESSION_THRESHOLD_PERCENT, changes, unmatched }
}
