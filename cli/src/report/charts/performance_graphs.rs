//! The demo's four performance graphs (`performance_graphs_<ts>.png`): throughput, inference
//! time, GPU memory utilization, load vs inference time.

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::ReportData;
use plotters::coord::Shift;
use plotters::prelude::*;

pub struct PerformanceGraphs<'a> {
    data: &'a ReportData,
}

impl<'a> PerformanceGraphs<'a> {
    pub fn new(data: &'a ReportData) -> Self {
        PerformanceGraphs { data }
    }
    fn dims(&self) -> (u32, u32) {
        let g = self.data.grouping();
        let (ncat, nbars) = (g.categories.len() as u32, g.cells.iter().flatten().filter(|c| c.is_some()).count() as u32);
        // Wider when many bars so the value labels keep room (panel 4 has two bars per run).
        ((1800).max(2 * (160 + 70 * ncat + 2 * 60 * nbars)), 1300)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let data = self.data;
        let body = header(root, "tokbench — model performance comparison", &data.subtitle())?;
        let panels = body.split_evenly((2, 2));
        let g = data.grouping();
        let rows = &data.rows;
        let series_note = |s: &[String]| s.to_vec();

        // 1. Inference speed.
        draw_bars(
            root,
            &panels[0],
            &Bars {
                title: "Inference speed — higher is better".into(),
                y_desc: "throughput (tokens/s; whiskers: 95% CI)".into(),
                categories: g.categories.clone(),
                series: series_note(&g.series),
                values: grouped_values(&g, rows, |r| Some(r.tokens_per_second)),
                missing_text: None,
                threshold: None,
                y_max: None,
                value_suffix: "",
                errors: grouped_intervals(&g, rows, |r| r.tokens_per_second_ci95),
            },
        )?;
        // 2. Inference time.
        draw_bars(
            root,
            &panels[1],
            &Bars {
                title: "Inference time — lower is better".into(),
                y_desc: "total inference time (s)".into(),
                categories: g.categories.clone(),
                series: series_note(&g.series),
                values: grouped_values(&g, rows, |r| Some(r.total_inference_time_seconds)),
                missing_text: None,
                threshold: None,
                y_max: None,
                value_suffix: " s",
                errors: Vec::new(),
            },
        )?;
        // 3. GPU memory utilization, or a clear "no GPU" on CPU runs (never zero bars).
        if rows.iter().any(|r| r.on_gpu()) {
            draw_bars(
                root,
                &panels[2],
                &Bars {
                    title: "GPU memory utilization".into(),
                    y_desc: "GPU memory used (% of total)".into(),
                    categories: g.categories.clone(),
                    series: series_note(&g.series),
                    values: grouped_values(&g, rows, |r| r.gpu_memory_utilization_percent),
                    missing_text: Some("no GPU"),
                    threshold: Some((80.0, "80% threshold".into())),
                    y_max: Some(100.0),
                    value_suffix: "%",
                    errors: Vec::new(),
                },
            )?;
        } else {
            message_panel(
                &panels[2],
                "GPU memory utilization",
                &["no GPU", "These runs ran on the CPU: there is no GPU memory to measure.", "Run the sweep on a CUDA worker (--backend cuda) to fill this panel."],
            )?;
        }
        // 4. Load time vs inference time, side by side.
        let mut cats = Vec::new();
        let mut vals = Vec::new();
        for (ci, cells) in g.cells.iter().enumerate() {
            for (si, cell) in cells.iter().enumerate() {
                if let Some(i) = cell {
                    let label = if g.series[si].is_empty() { g.categories[ci].clone() } else { format!("{} {}", g.categories[ci], g.series[si]) };
                    cats.push(label);
                    vals.push(vec![Some(rows[*i].model_load_time_seconds), Some(rows[*i].total_inference_time_seconds)]);
                }
            }
        }
        draw_bars(
            root,
            &panels[3],
            &Bars {
                title: "Load time vs inference time".into(),
                y_desc: "time (s)".into(),
                categories: cats,
                series: vec!["model load time".into(), "inference time".into()],
                values: vals,
                missing_text: None,
                threshold: None,
                y_max: None,
                value_suffix: " s",
                errors: Vec::new(),
            },
        )?;
        Ok(())
    }
}
impl_chart!(PerformanceGraphs<'_>);
