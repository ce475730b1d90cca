//! The demo's four performance graphs (`performance_graphs_<ts>.png`): throughput, inference
//! time, GPU memory (engine peak), load vs inference time. Horizontal grouped bars in a 2 × 2
//! grid of fixed width: more models make the image taller, never wider.

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::{ReportData, Row};
use plotters::coord::Shift;
use plotters::prelude::*;
use tokbench_core::report::{confidence_interval_95, median};

/// Image width in pixels: two panels side by side, at 100% zoom on a common screen.
pub const WIDTH: u32 = 2000;
const HEADER_PX: u32 = 86;

pub struct PerformanceGraphs<'a> {
    data: &'a ReportData,
}

/// 95% confidence interval of the pass (inference) time of a run. The report's rows carry the
/// tokens/s of each timed repetition; with a fixed token count per pass, a repetition's time is
/// tokens / (its tokens/s), and the interval is that of those times. Without per-repetition
/// figures, the tokens/s interval is mapped through the same relation.
pub(crate) fn inference_time_ci95(r: &Row) -> Option<[f64; 2]> {
    // The report's own interval where it has one; older reports: derived from the repetitions.
    if let Some(ci) = r.total_inference_time_seconds_ci95 {
        return Some(ci);
    }
    let tokens = r.tokens_per_second * r.total_inference_time_seconds;
    if !(tokens.is_finite() && tokens > 0.0) {
        return None;
    }
    let runs: Vec<f64> = r.tokens_per_second_runs.iter().filter(|t| **t > 0.0).map(|t| tokens / t).collect();
    if runs.len() >= 2 {
        return confidence_interval_95(&runs);
    }
    r.tokens_per_second_ci95.filter(|[lo, hi]| *lo > 0.0 && *hi > 0.0).map(|[lo, hi]| [tokens / hi, tokens / lo])
}

impl<'a> PerformanceGraphs<'a> {
    pub fn new(data: &'a ReportData) -> Self {
        PerformanceGraphs { data }
    }
    fn panel_width() -> u32 {
        WIDTH / 2
    }
    /// The four panels' bars (the third is None on CPU-only reports: a message instead).
    fn panels(&self) -> [Option<Bars<'static>>; 4] {
        let data = self.data;
        let g = data.grouping();
        let rows = &data.rows;
        let series = g.series.clone();
        let speed = Bars {
            title: "Inference speed — higher is better".into(),
            value_desc: "throughput (tokens/s; whiskers: 95% CI)".into(),
            categories: g.categories.clone(),
            series: series.clone(),
            styles: Vec::new(),
            values: grouped_values(&g, rows, |r| Some(r.tokens_per_second)),
            missing_text: None,
            threshold: None,
            max: None,
            value_suffix: "",
            errors: grouped_intervals(&g, rows, |r| r.tokens_per_second_ci95),
        };
        let time = Bars {
            title: "Inference time — lower is better".into(),
            value_desc: "total inference time (s; whiskers: 95% CI)".into(),
            categories: g.categories.clone(),
            series: series.clone(),
            styles: Vec::new(),
            values: grouped_values(&g, rows, |r| Some(r.total_inference_time_seconds)),
            missing_text: None,
            threshold: None,
            max: None,
            value_suffix: " s",
            errors: grouped_intervals(&g, rows, inference_time_ci95),
        };
        let memory = rows.iter().any(|r| r.on_gpu()).then(|| Bars {
            // The measured engine peak (the CUDA pools' high-water mark, transient prefill peaks
            // included), not the NVML share of the card, which counts the CUDA context.
            title: "GPU memory: engine peak — lower is better".into(),
            value_desc: "peak allocated (MiB, CUDA pools' high-water mark)".into(),
            categories: g.categories.clone(),
            series: series.clone(),
            styles: Vec::new(),
            values: grouped_values(&g, rows, |r| r.peak_memory_allocated_mb),
            missing_text: Some("no GPU"),
            threshold: None,
            max: None,
            value_suffix: " MiB",
            errors: Vec::new(),
        });
        // Load time vs inference time. Grouped by model with several series (batch sizes,
        // devices): one load-time bar per model (median of its runs: loading does not depend
        // on the batch size) next to the inference time of each series, in the series' own
        // style. One series: load and inference per model. Grouped by GPU: per run.
        let load_style = SeriesStyle { color: RGBColor(150, 150, 150), marker: Marker::Square };
        let (cats, ser, styles, vals, errs) = if g.series.len() <= 1 {
            let cats = g.categories.clone();
            let vals = g.cells.iter().map(|c| c.iter().flatten().next().map_or(vec![None, None], |i| vec![Some(rows[*i].model_load_time_seconds), Some(rows[*i].total_inference_time_seconds)])).collect();
            let errs = g.cells.iter().map(|c| vec![None, c.iter().flatten().next().and_then(|i| inference_time_ci95(&rows[*i]))]).collect();
            (cats, vec!["model load time".to_string(), "inference time".to_string()], vec![load_style, style(0)], vals, errs)
        } else if data.group_by == crate::report::model::GroupBy::Model {
            let mut ser = vec!["model load time (median of the model's runs)".to_string()];
            ser.extend(g.series.iter().map(|s| format!("inference, {s}")));
            let mut styles = vec![load_style];
            styles.extend((0..g.series.len()).map(style));
            let vals = g
                .cells
                .iter()
                .map(|cells| {
                    let loads: Vec<f64> = cells.iter().flatten().map(|i| rows[*i].model_load_time_seconds).collect();
                    let mut v = vec![(!loads.is_empty()).then(|| median(&loads))];
                    v.extend(cells.iter().map(|c| c.map(|i| rows[i].total_inference_time_seconds)));
                    v
                })
                .collect();
            let errs = g
                .cells
                .iter()
                .map(|cells| {
                    let mut v = vec![None];
                    v.extend(cells.iter().map(|c| c.and_then(|i| inference_time_ci95(&rows[i]))));
                    v
                })
                .collect();
            (g.categories.clone(), ser, styles, vals, errs)
        } else {
            let mut cats = Vec::new();
            let mut vals = Vec::new();
            let mut errs = Vec::new();
            for (ci, cells) in g.cells.iter().enumerate() {
                for (si, cell) in cells.iter().enumerate() {
                    if let Some(i) = cell {
                        cats.push(if g.series[si].is_empty() { g.categories[ci].clone() } else { format!("{} · {}", g.categories[ci], g.series[si]) });
                        vals.push(vec![Some(rows[*i].model_load_time_seconds), Some(rows[*i].total_inference_time_seconds)]);
                        errs.push(vec![None, inference_time_ci95(&rows[*i])]);
                    }
                }
            }
            (cats, vec!["model load time".to_string(), "inference time".to_string()], vec![load_style, style(0)], vals, errs)
        };
        let load = Bars {
            title: "Load time vs inference time".into(),
            value_desc: "time (s; whiskers: 95% CI of the inference time)".into(),
            categories: cats,
            series: ser,
            styles,
            values: vals,
            missing_text: None,
            threshold: None,
            max: None,
            value_suffix: " s",
            errors: errs,
        };
        [Some(speed), Some(time), memory, Some(load)]
    }
    /// Heights of the two panel rows.
    fn row_heights(&self) -> (u32, u32) {
        let w = Self::panel_width();
        let h = |b: &Option<Bars>| b.as_ref().map_or(420, |b| b.height(w));
        let p = self.panels();
        (h(&p[0]).max(h(&p[1])), h(&p[2]).max(h(&p[3])))
    }
    fn dims(&self) -> (u32, u32) {
        let (a, b) = self.row_heights();
        (WIDTH, HEADER_PX + a + b)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let body = header(root, "tokbench — model performance comparison", &self.data.subtitle())?;
        let (h1, _) = self.row_heights();
        let (top, bottom) = body.split_vertically(h1);
        let (p0, p1) = top.split_horizontally(Self::panel_width());
        let (p2, p3) = bottom.split_horizontally(Self::panel_width());
        let [speed, time, memory, load] = self.panels();
        draw_bars(root, &p0, speed.as_ref().expect("always drawn"))?;
        draw_bars(root, &p1, time.as_ref().expect("always drawn"))?;
        match &memory {
            Some(b) => draw_bars(root, &p2, b)?,
            // CPU runs: a clear "no GPU", never zero bars.
            None => message_panel(
                &p2,
                "GPU memory: engine peak",
                &["no GPU", "These runs ran on the CPU: there is no GPU memory to measure.", "Run the sweep on a CUDA worker (--backend cuda) to fill this panel."],
            )?,
        }
        draw_bars(root, &p3, load.as_ref().expect("always drawn"))?;
        Ok(())
    }
}
impl_chart!(PerformanceGraphs<'_>);
