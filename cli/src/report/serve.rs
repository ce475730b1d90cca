//! Serving runs (`tokbench sweep --mode serve`) in a report: one [`ServeRow`] per run with vLLM's
//! serving metrics, and their Markdown, CSV and JSON. Offline runs never come here, and serve runs
//! never reach the offline tables (their offline sections are absent).

use crate::report::error::ReportError;
use crate::report::model::{short_id, RunRecord};
use serde::Serialize;
use tokbench_core::serve::{rate_label, RequestTimeline, Stats};

/// The figures of one serve run.
#[derive(Debug, Clone, Serialize)]
pub struct ServeRow {
    pub run_id: String,
    pub sweep_id: String,
    /// The job's model name and the name sent in requests.
    pub model: String,
    pub served_model: String,
    pub endpoint: String,
    /// Requests per second asked for ("inf" = all at once).
    pub request_rate: String,
    /// For sorting and plotting: the asked rate (infinity for "inf").
    #[serde(skip)]
    pub rate_value: f64,
    pub achieved_request_rate: Option<f64>,
    pub max_concurrency: Option<usize>,
    pub peak_concurrency: usize,
    pub completed: usize,
    pub failed: usize,
    pub failure_counts: std::collections::BTreeMap<String, usize>,
    pub duration_s: f64,
    pub total_input_tokens: u64,
    pub total_output_tokens: u64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    pub itl_ms: Option<Stats>,
    pub e2el_ms: Option<Stats>,
    pub good_requests: Option<usize>,
    pub request_goodput: Option<f64>,
    pub goodput_slos: Option<tokbench_core::serve::GoodputSlos>,
    pub arrival_error_ms: Option<Stats>,
    pub queue_wait_ms: Option<Stats>,
    /// Output tokens/s one user sees: 1000 / median TPOT.
    pub tokens_per_second_per_user: Option<f64>,
    /// What the load generator noticed that makes the figures less than they seem (e.g. a run
    /// too short to be a sustained load), each with its fix.
    pub warnings: Vec<String>,
}

impl ServeRow {
    pub fn of(rec: &RunRecord) -> Option<ServeRow> {
        let s = rec.report.serve.as_ref()?;
        let m = &s.metrics;
        Some(ServeRow {
            run_id: rec.run_id.clone(),
            sweep_id: rec.sweep_id.clone(),
            model: rec.report.model.clone(),
            served_model: s.served_model.clone(),
            endpoint: s.endpoint.clone(),
            request_rate: rate_label(s.request_rate),
            rate_value: s.request_rate,
            achieved_request_rate: s.achieved_request_rate,
            max_concurrency: m.max_concurrency,
            peak_concurrency: m.peak_concurrency,
            completed: m.completed,
            failed: m.failed,
            failure_counts: m.failure_counts.clone(),
            duration_s: m.duration_s,
            total_input_tokens: m.total_input_tokens,
            total_output_tokens: m.total_output_tokens,
            request_throughput: m.request_throughput,
            output_throughput: m.output_throughput,
            total_token_throughput: m.total_token_throughput,
            ttft_ms: m.ttft_ms,
            tpot_ms: m.tpot_ms,
            itl_ms: m.itl_ms,
            e2el_ms: m.e2el_ms,
            good_requests: m.good_requests,
            request_goodput: m.request_goodput,
            goodput_slos: m.goodput_slos,
            arrival_error_ms: m.arrival_error_ms,
            queue_wait_ms: m.queue_wait_ms,
            tokens_per_second_per_user: m.tpot_ms.filter(|t| t.median > 0.0).map(|t| 1000.0 / t.median),
            warnings: m.warnings.clone(),
        })
    }

    /// The series a row belongs to in the charts: model and endpoint.
    pub fn series(&self) -> String {
        format!("{} @ {}", self.model, self.endpoint)
    }

    /// The x value of the latency curves: the achieved request rate (completed req/s when the
    /// sends had no span, i.e. all at once).
    pub fn load(&self) -> f64 {
        self.achieved_request_rate.unwrap_or(self.request_throughput)
    }
}

/// The serve runs of a selection, sorted by series then asked rate, with the timelines of each.
#[derive(Debug, Clone)]
pub struct ServeData<'a> {
    pub rows: Vec<ServeRow>,
    pub timelines: Vec<&'a [RequestTimeline]>,
}

impl<'a> ServeData<'a> {
    pub fn new(records: &'a [RunRecord]) -> ServeData<'a> {
        let mut pairs: Vec<(ServeRow, &'a [RequestTimeline])> = records
            .iter()
            .filter_map(|r| Some((ServeRow::of(r)?, r.report.serve.as_ref()?.requests.as_slice())))
            .collect();
        pairs.sort_by(|a, b| (a.0.series(), a.0.rate_value).partial_cmp(&(b.0.series(), b.0.rate_value)).unwrap_or(std::cmp::Ordering::Equal));
        let (rows, timelines) = pairs.into_iter().unzip();
        ServeData { rows, timelines }
    }

    /// Distinct series (model @ endpoint), in row order.
    pub fn series(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rows {
            if !out.contains(&r.series()) {
                out.push(r.series());
            }
        }
        out
    }

    /// The run whose timeline is drawn: the one with the most requests (the first of those).
    pub fn timeline_run(&self) -> Option<usize> {
        (0..self.rows.len()).max_by_key(|&i| (self.timelines[i].len(), std::cmp::Reverse(i)))
    }
}

fn stat(s: &Option<Stats>, f: fn(&Stats) -> f64) -> String {
    s.as_ref().map(|s| format!("{:.2}", f(s))).unwrap_or_else(|| "n/a".into())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "n/a".into())
}

fn failures(r: &ServeRow) -> String {
    if r.failure_counts.is_empty() {
        String::new()
    } else {
        r.failure_counts.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// Column names and cells shared by the Markdown table and the CSV.
const COLUMNS: [&str; 25] = [
    "model", "endpoint", "request_rate", "achieved_request_rate", "max_concurrency", "peak_concurrency", "completed", "failed",
    "request_throughput", "output_throughput", "total_token_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
    "p99_tpot_ms", "median_itl_ms", "p99_itl_ms", "median_e2el_ms", "p99_e2el_ms", "request_goodput", "tokens_per_second_per_user",
    "total_output_tokens", "failures", "sustained", "run_id",
];

fn cells(r: &ServeRow) -> Vec<String> {
    vec![
        r.model.clone(),
        r.endpoint.clone(),
        r.request_rate.clone(),
        opt(r.achieved_request_rate, 2),
        r.max_concurrency.map(|m| m.to_string()).unwrap_or_else(|| "none".into()),
        r.peak_concurrency.to_string(),
        r.completed.to_string(),
        r.failed.to_string(),
        format!("{:.3}", r.request_throughput),
        format!("{:.2}", r.output_throughput),
        format!("{:.2}", r.total_token_throughput),
        stat(&r.ttft_ms, |s| s.median),
        stat(&r.ttft_ms, |s| s.p99),
        stat(&r.tpot_ms, |s| s.median),
        stat(&r.tpot_ms, |s| s.p99),
        stat(&r.itl_ms, |s| s.median),
        stat(&r.itl_ms, |s| s.p99),
        stat(&r.e2el_ms, |s| s.median),
        stat(&r.e2el_ms, |s| s.p99),
        opt(r.request_goodput, 3),
        opt(r.tokens_per_second_per_user, 2),
        r.total_output_tokens.to_string(),
        failures(r),
        if r.warnings.is_empty() { "yes".into() } else { "no".into() },
        r.run_id.clone(),
    ]
}

/// The serve section of the Markdown report.
pub fn serve_markdown(d: &ServeData<'_>) -> String {
    let mut md = String::from("## Serving benchmarks\n\n");
    md.push_str("Latencies in ms (vLLM's definitions: TTFT from send to first token, TPOT = (E2EL − TTFT)/(output tokens − 1), ITL between stream events, E2EL to the last token); throughputs in req/s and tok/s over the measured requests (warm-up excluded); token counts from the server's usage fields. Request rates are asked for; achieved = measured sends over their span.\n\n");
    md.push_str(&format!("| {} |\n|{}\n", COLUMNS.join(" | "), "---|".repeat(COLUMNS.len())));
    for r in &d.rows {
        md.push_str(&format!("| {} |\n", cells(r).iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | ")));
    }
    let warned: Vec<&ServeRow> = d.rows.iter().filter(|r| !r.warnings.is_empty()).collect();
    if !warned.is_empty() {
        md.push_str("\n**Warnings** (rows whose `sustained` column says no):\n\n");
        for r in warned {
            for w in &r.warnings {
                md.push_str(&format!("- {}: {w}\n", run_label(r)));
            }
        }
    }
    md
}

/// The serve runs as CSV (one row per run).
pub fn serve_csv_bytes(d: &ServeData<'_>) -> Result<Vec<u8>, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for r in &d.rows {
        w.write_record(cells(r))?;
    }
    w.into_inner().map_err(|e| ReportError::Csv(e.into_error().into()))
}

/// A short label of a run for chart legends and titles.
pub fn run_label(r: &ServeRow) -> String {
    format!("{} {} req/s ({})", r.model, r.request_rate, short_id(&r.run_id))
}
