//! The change against a baseline sweep (`baseline_comparison_<ts>.png`), per metric.

use crate::report::baseline::{BaselineChange, BaselineComparison, Metric, REGRESSION_THRESHOLD_PERCENT};
use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::ReportData;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub struct BaselineChart<'a> {
    data: &'a ReportData,
    cmp: &'a BaselineComparison,
}

impl<'a> BaselineChart<'a> {
    pub fn new(data: &'a ReportData, cmp: &'a BaselineComparison) -> Self {
        BaselineChart { data, cmp }
    }
    fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.cmp.changes {
            let g = self.group_name(c);
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out
    }
    fn group_name(&self, c: &BaselineChange) -> String {
        let mut s = c.model.clone();
        if self.data.several_batch_sizes() {
            s.push_str(&format!(" bs{}", c.batch_size));
        }
        if self.data.devices.len() > 1 {
            s.push_str(&format!(" {}", c.device));
        }
        s
    }
    fn dims(&self) -> (u32, u32) {
        ((1400).max(200 + 260 * self.groups().len() as u32), 820)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let sub = format!("{}  |  baseline sweep {}", self.data.subtitle(), self.cmp.baseline_sweep);
        let body = header(root, "tokbench — change vs baseline", &sub)?;
        let groups = self.groups();
        let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        let ng = groups.len().max(1);
        let max = self.cmp.changes.iter().filter_map(|c| c.change_percent).fold(10.0f64, |m, v| m.max(v.abs()));
        let lim = max * 1.25;
        let mut chart = ChartBuilder::on(&body)
            .caption(
                format!("change in % per metric (red outline: regression, worse by more than {REGRESSION_THRESHOLD_PERCENT:.0}%)"),
                font(17.0),
            )
            .margin(16)
            .x_label_area_size(72)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..ng as f64, -lim..lim)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(0)
            .disable_x_mesh()
            .y_desc("change vs baseline (%)")
            .y_label_formatter(&|v| format!("{v:+.0}%"))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .axis_desc_style(font(15.0))
            .label_style(font(14.0))
            .draw()
            .map_err(e)?;
        chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (ng as f64, 0.0)], TEXT.stroke_width(2)))).map_err(e)?;
        for t in [REGRESSION_THRESHOLD_PERCENT, -REGRESSION_THRESHOLD_PERCENT] {
            chart.draw_series(DashedLineSeries::new(vec![(0.0, t), (ng as f64, t)], 8, 6, MUTED.stroke_width(1))).map_err(e)?;
        }
        let nm = metrics.len();
        let bar_w = 0.8 / nm as f64;
        for (mi, m) in metrics.iter().enumerate() {
            let c = color(mi);
            let mut elems = Vec::new();
            let mut labels = Vec::new();
            for ch in self.cmp.changes.iter().filter(|ch| ch.metric == *m) {
                let gi = groups.iter().position(|g| *g == self.group_name(ch)).unwrap();
                let x0 = gi as f64 + 0.1 + mi as f64 * bar_w;
                let x1 = x0 + bar_w * 0.9;
                match ch.change_percent {
                    Some(p) => {
                        elems.push(Rectangle::new([(x0, 0.0), (x1, p)], c.filled()));
                        let outline = if ch.regression { REGRESSION.stroke_width(3) } else { TEXT.mix(0.5).stroke_width(1) };
                        elems.push(Rectangle::new([(x0, 0.0), (x1, p)], outline));
                        let vpos = if p >= 0.0 { VPos::Bottom } else { VPos::Top };
                        let dy = if p >= 0.0 { -4 } else { 4 };
                        let style = if ch.regression { bold(12.0).color(&REGRESSION) } else { font(12.0) };
                        let text = if p.abs() < 0.05 { "±0%".to_string() } else if p.abs() >= 10.0 { format!("{p:+.0}%") } else { format!("{p:+.1}%") };
                        labels.push(EmptyElement::at(((x0 + x1) / 2.0, p)) + Text::new(text, (0, dy), style.pos(Pos::new(HPos::Center, vpos))));
                    }
                    None => {
                        labels.push(
                            EmptyElement::at(((x0 + x1) / 2.0, 0.0))
                                + Text::new("n/a".to_string(), (0, -4), font(12.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Bottom))),
                        );
                    }
                }
            }
            chart.draw_series(elems).map_err(e)?;
            chart.draw_series(labels).map_err(e)?;
        }
        let (_, py) = chart.backend_coord(&(0.0, -lim));
        for (gi, g) in groups.iter().enumerate() {
            let (px, _) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
            root.draw_text(g, &font(16.0).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 10)).map_err(e)?;
        }
        let (x_left, _) = chart.backend_coord(&(0.0, 0.0));
        let (x_right, _) = chart.backend_coord(&(ng as f64, 0.0));
        let items: Vec<(String, RGBColor)> = metrics.iter().enumerate().map(|(i, m)| (m.to_string(), color(i))).collect();
        legend_row(root, (x_left + x_right) / 2, py + 38, &items, false)?;
        Ok(())
    }
}
impl_chart!(BaselineChart<'_>);
