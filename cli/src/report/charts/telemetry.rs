//! Telemetry over time (`telemetry_<ts>.png`): each run's NVML readings during its job (power,
//! SM clock, device memory used, SM utilisation) against seconds since the job's sampler
//! started, one line per run. Drawn only when some run carries readings (GPU runs).

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::RunRecord;
use plotters::coord::Shift;
use plotters::prelude::*;
use tokbench_core::report::TelemetryPoint;

/// One run's line: its label and readings.
pub struct TelemetryLine<'a> {
    pub label: String,
    pub points: &'a [TelemetryPoint],
}

pub struct TelemetryChart<'a> {
    lines: Vec<TelemetryLine<'a>>,
    subtitle: String,
}

/// The runs' telemetry series, labelled "model bN" (plus the run's short id when two runs would
/// share a label). Empty when no run has readings.
pub fn telemetry_lines(records: &[RunRecord]) -> Vec<TelemetryLine<'_>> {
    let base = |r: &RunRecord| format!("{} b{}", r.report.model, r.report.workload.batch_size);
    records
        .iter()
        .filter_map(|r| {
            let points = r.report.telemetry.as_ref().map(|t| t.series.as_slice()).filter(|s| !s.is_empty())?;
            let shared = records.iter().filter(|o| base(o) == base(r)).count() > 1;
            let label = if shared { format!("{} ({})", base(r), crate::report::model::short_id(&r.run_id)) } else { base(r) };
            Some(TelemetryLine { label, points })
        })
        .collect()
}

/// The four panels: title, axis description, value of a reading.
type Metric = (&'static str, &'static str, fn(&TelemetryPoint) -> Option<f64>);
const METRICS: [Metric; 4] = [
    ("Power draw", "board power (W)", |p| p.power_watts),
    ("SM clock", "SM clock (MHz)", |p| p.sm_clock_mhz.map(f64::from)),
    ("Device memory used", "memory used, all processes (MiB)", |p| Some(p.memory_used_mb)),
    ("SM utilisation", "SM busy (%)", |p| p.utilization_percent.map(f64::from)),
];

impl<'a> TelemetryChart<'a> {
    pub fn new(lines: Vec<TelemetryLine<'a>>, subtitle: String) -> Self {
        TelemetryChart { lines, subtitle }
    }
    fn dims(&self) -> (u32, u32) {
        (1800, 1200)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let body = header(root, "tokbench — GPU telemetry over time (NVML)", &self.subtitle)?;
        let (plots, legend) = body.split_vertically(body.dim_in_pixel().1.saturating_sub(60));
        let panels = plots.split_evenly((2, 2));
        for (area, metric) in panels.iter().zip(METRICS.iter()) {
            self.panel(area, metric)?;
        }
        let items: Vec<(String, RGBColor)> = self.lines.iter().enumerate().map(|(i, l)| (l.label.clone(), color(i))).collect();
        let (w, _) = legend.dim_in_pixel();
        legend_row(&legend, w as i32 / 2, 20, &items, true)?;
        Ok(())
    }
    fn panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, (title, y_desc, f): &Metric) -> PResult {
        let series: Vec<Vec<(f64, f64)>> =
            self.lines.iter().map(|l| l.points.iter().filter_map(|p| f(p).map(|v| (p.t_ms / 1000.0, v))).collect()).collect();
        let x_max = series.iter().flatten().map(|(x, _)| *x).fold(0.0f64, f64::max);
        let y_max = series.iter().flatten().map(|(_, y)| *y).fold(0.0f64, f64::max);
        if series.iter().all(|s| s.is_empty()) {
            return message_panel(area, title, &["not reported by this GPU or driver"]);
        }
        let mut chart = ChartBuilder::on(area)
            .caption(*title, bold(20.0))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..x_max.max(1e-3), 0f64..(y_max * 1.1).max(1.0))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the job's sampling started")
            .y_desc(*y_desc)
            .y_label_formatter(&|v| axis_num(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .axis_desc_style(font(15.0))
            .label_style(font(14.0))
            .draw()
            .map_err(e)?;
        for (i, s) in series.into_iter().enumerate() {
            chart.draw_series(LineSeries::new(s, color(i).stroke_width(2))).map_err(e)?;
        }
        Ok(())
    }
}
impl_chart!(TelemetryChart<'_>);
