//! Writing a whole report into one directory with one timestamp: the charts (PNG, + SVG), and
//! the same data as Markdown, CSV and JSON.

use crate::report::baseline::compare_baseline;
use crate::report::charts::{save_png, save_svg, telemetry_lines, BaselineChart, BatchScaling, Chart, ComparisonTable, GpuTimeChart, PerformanceGraphs, ServeGoodput, ServeLatency, ServePareto, ServeTimeline, TelemetryChart};
use crate::report::serve::{serve_csv_bytes, serve_markdown, ServeData};
use crate::report::csv::csv_bytes;
use crate::report::error::ReportError;
use crate::report::gpu_time::gpu_time_entries;
use crate::report::markdown::{baseline_markdown, gpu_time_markdown, markdown};
use crate::report::model::{GroupBy, ReportData, RunRecord};
use serde::Serialize;
use std::path::{Path, PathBuf};

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
/// baseline is given, GPU time split when profiled, telemetry over time when runs carry NVML
/// readings, and the same data as Markdown, CSV and JSON. Returns the files written.
pub fn write_report(all_records: &[RunRecord], baseline: Option<(&str, &[RunRecord])>, opts: &ReportOptions) -> Result<WrittenReport, ReportError> {
    let ts = opts.timestamp.clone().unwrap_or_else(now_timestamp);
    // Serving runs get their own charts and exports; the offline report is made of the rest.
    let (serve_records, records): (Vec<RunRecord>, Vec<RunRecord>) = all_records.iter().cloned().partition(|r| r.report.is_serve());
    if records.is_empty() && !serve_records.is_empty() {
        std::fs::create_dir_all(&opts.out_dir).map_err(|e| ReportError::Io { path: opts.out_dir.clone(), source: e })?;
        let files = write_serve(&serve_records, opts, &ts)?;
        return Ok(WrittenReport { timestamp: ts, files, rows: serve_records.len(), regressions: None });
    }
    let records = records.as_slice();
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
    let mut charts: Vec<(PathBuf, Box<dyn Chart>)> = vec![
        (p("comparison_table"), Box::new(ComparisonTable::new(&data))),
        (p("performance_graphs"), Box::new(PerformanceGraphs::new(&data))),
    ];
    if data.several_batch_sizes() {
        charts.push((p("batch_scaling"), Box::new(BatchScaling::new(&data))));
    }
    if let Some(c) = &cmp {
        charts.push((p("baseline_comparison"), Box::new(BaselineChart::new(&data, c))));
    }
    if !gpu_time.is_empty() {
        charts.push((p("gpu_time"), Box::new(GpuTimeChart::new(&data, &gpu_time))));
    }
    let telemetry = telemetry_lines(records);
    if !telemetry.is_empty() {
        charts.push((p("telemetry"), Box::new(TelemetryChart::new(telemetry, data.subtitle()))));
    }
    for (stem, chart) in &charts {
        let png = stem.with_extension("png");
        save_png(chart.as_ref(), &png)?;
        files.push(png);
        if opts.svg {
            let svg = stem.with_extension("svg");
            save_svg(chart.as_ref(), &svg)?;
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
    let mut rows = data.rows.len();
    if !serve_records.is_empty() {
        files.extend(write_serve(&serve_records, opts, &ts)?);
        rows += serve_records.len();
    }
    Ok(WrittenReport { timestamp: ts, files, rows, regressions: cmp.as_ref().map(|c| c.regressions()) })
}

/// The serving runs' part of a report: latency–load curves, goodput (when SLOs were given), the
/// request timeline of the largest run, the Pareto front, and `serve_report_<ts>.{md,csv,json}`
/// (the JSON holds every row's metrics; the timelines stay in the runs' reports).
fn write_serve(records: &[RunRecord], opts: &ReportOptions, ts: &str) -> Result<Vec<PathBuf>, ReportError> {
    let data = ServeData::new(records);
    let p = |name: &str| opts.out_dir.join(format!("{name}_{ts}"));
    let mut files = Vec::new();
    let mut charts: Vec<(PathBuf, Box<dyn Chart + '_>)> = vec![(p("serve_latency"), Box::new(ServeLatency::new(&data)))];
    if data.rows.iter().any(|r| r.request_goodput.is_some()) {
        charts.push((p("serve_goodput"), Box::new(ServeGoodput::new(&data))));
    }
    if let Some(run) = data.timeline_run() {
        charts.push((p("serve_timeline"), Box::new(ServeTimeline::new(&data, run))));
    }
    charts.push((p("serve_pareto"), Box::new(ServePareto::new(&data))));
    for (stem, chart) in &charts {
        let png = stem.with_extension("png");
        save_png(chart.as_ref(), &png)?;
        files.push(png);
        if opts.svg {
            let svg = stem.with_extension("svg");
            save_svg(chart.as_ref(), &svg)?;
            files.push(svg);
        }
    }
    let md = p("serve_report").with_extension("md");
    write_file(&md, serve_markdown(&data).as_bytes())?;
    files.push(md);
    let csv = p("serve_report").with_extension("csv");
    write_file(&csv, &serve_csv_bytes(&data)?)?;
    files.push(csv);
    let json_path = p("serve_report").with_extension("json");
    files.push(json_path.clone());
    let json = serde_json::json!({ "timestamp": ts, "mode": "serve", "rows": data.rows, "files": files });
    write_file(&json_path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(files)
}
