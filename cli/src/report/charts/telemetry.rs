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
    fn legend_items(&self) -> Vec<(String, SeriesStyle)> {
        self.lines.iter().enumerate().map(|(i, l)| (l.label.clone(), style(i))).collect()
    }
    fn legend_h(&self) -> u32 {
        legend_height(&self.legend_items(), Self::W - 80) + 30
    }
    const W: u32 = 2000;
    fn dims(&self) -> (u32, u32) {
        (Self::W, 86 + 1140 + self.legend_h())
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let body = header(root, "tokbench — GPU telemetry over time (NVML)", &self.subtitle)?;
        let (plots, legend_area) = body.split_vertically(body.dim_in_pixel().1.saturating_sub(self.legend_h()));
        let panels = plots.split_evenly((2, 2));
        for (area, metric) in panels.iter().zip(METRICS.iter()) {
            self.panel(area, metric)?;
        }
        let (w, _) = legend_area.dim_in_pixel();
        let (bx, by) = legend_area.get_base_pixel();
        legend(root, bx + w as i32 / 2, by + 14, w - 80, &self.legend_items(), Swatch::Line)?;
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
            .max_light_lines(1)
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .axis_desc_style(font(15.0))
            .label_style(font(14.0))
            .draw()
            .map_err(e)?;
        // Each line with its marker at a few evenly spaced readings (staggered per line so the
        // markers of lines on top of each other do not hide one another).
        let n = series.len().max(1);
        for (i, s) in series.iter().enumerate() {
            let st = style(i);
            chart.draw_series(LineSeries::new(s.clone(), st.color.stroke_width(2))).map_err(e)?;
            let (bx, by) = area.get_base_pixel();
            let marks: std::collections::BTreeSet<usize> = (0..6).map(|k| ((k as f64 + i as f64 / n as f64) * s.len() as f64 / 6.0) as usize).filter(|j| *j < s.len()).collect();
            for p in marks.into_iter().map(|j| &s[j]) {
                let (px, py) = chart.backend_coord(p);
                draw_marker(area, (px - bx, py - by), st.marker, st.color, 5, false)?;
            }
        }
        Ok(())
    }
}
impl_chart!(TelemetryChart<'_>);
