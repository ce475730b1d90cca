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
    const W: u32 = 2000;
    const ROW_PX: u32 = 24;
    /// Pixels above the first row: header, caption and the metric titles.
    const TOP: u32 = 86 + 44 + 34;
    const BOTTOM: u32 = 60 + 50;
    fn dims(&self) -> (u32, u32) {
        (Self::W, Self::TOP + Self::ROW_PX * self.groups().len().max(1) as u32 + Self::BOTTOM)
    }
    /// Small multiples: one panel per metric side by side, the runs down the y axis, one
    /// diverging bar per run; any number of runs adds rows, not width.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let sub = format!("{}  |  baseline sweep {}", self.data.subtitle(), self.cmp.baseline_sweep);
        let body = header(root, "tokbench — change vs baseline", &sub)?;
        let groups = self.groups();
        let ng = groups.len().max(1);
        let max = self.cmp.changes.iter().filter_map(|c| c.change_percent).fold(10.0f64, |m, v| m.max(v.abs()));
        let lim = max * 1.5;
        let (w, _) = root.dim_in_pixel();
        root.draw_text(
            &format!("change in % per metric and run (red outline and label: regression, worse by more than {REGRESSION_THRESHOLD_PERCENT:.0}% and significant; dashed: ±{REGRESSION_THRESHOLD_PERCENT:.0}%)"),
            &font(16.0).pos(Pos::new(HPos::Center, VPos::Top)),
            (w as i32 / 2, 90),
        )
        .map_err(e)?;
        let label_style = font(15.0);
        let label_w = groups.iter().map(|g| text_width(g, &label_style)).max().unwrap_or(100) + 24;
        let (_, rest) = body.margin(44, 0, 10, 10).split_horizontally(label_w);
        let panels = rest.split_evenly((1, Metric::ALL.len()));
        let mut label_ys: Vec<i32> = Vec::new();
        for (mi, (area, m)) in panels.iter().zip(Metric::ALL.iter()).enumerate() {
            let c = color(mi);
            let mut chart = ChartBuilder::on(area)
                .caption(m.name(), bold(17.0))
                .margin(8)
                .margin_bottom(Self::BOTTOM - 60)
                .x_label_area_size(50)
                .build_cartesian_2d(-lim..lim, 0f64..ng as f64)
                .map_err(e)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_labels(5)
                .x_label_formatter(&|v| format!("{v:+.0}%"))
                .max_light_lines(1)
                .light_line_style(RGBColor(238, 238, 238))
                .bold_line_style(RGBColor(215, 215, 215))
                .label_style(font(13.0))
                .draw()
                .map_err(e)?;
            // Stripes on every other run, to read a run across the panels.
            chart
                .draw_series((0..ng).filter(|g| g % 2 == 1).map(|g| Rectangle::new([(-lim, (ng - g - 1) as f64), (lim, (ng - g) as f64)], STRIPE_BG.filled())))
                .map_err(e)?;
            chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (0.0, ng as f64)], TEXT.stroke_width(1)))).map_err(e)?;
            for t in [REGRESSION_THRESHOLD_PERCENT, -REGRESSION_THRESHOLD_PERCENT] {
                chart.draw_series(DashedLineSeries::new(vec![(t, 0.0), (t, ng as f64)], 6, 5, MUTED.stroke_width(1))).map_err(e)?;
            }
            for ch in self.cmp.changes.iter().filter(|ch| ch.metric == m.name()) {
                let gi = groups.iter().position(|g| *g == self.group_name(ch)).unwrap();
                let (y0, y1) = ((ng - gi - 1) as f64 + 0.18, (ng - gi) as f64 - 0.18);
                let ym = (y0 + y1) / 2.0;
                match ch.change_percent {
                    Some(p) => {
                        let outline = if ch.regression { REGRESSION.stroke_width(3) } else { TEXT.mix(0.5).stroke_width(1) };
                        chart.draw_series([Rectangle::new([(0.0, y0), (p, y1)], c.filled()), Rectangle::new([(0.0, y0), (p, y1)], outline)]).map_err(e)?;
                        let hpos = if p >= 0.0 { HPos::Left } else { HPos::Right };
                        let dx = if p >= 0.0 { 5 } else { -5 };
                        let style = if ch.regression { bold(13.0).color(&REGRESSION) } else { font(13.0) };
                        let text = if p.abs() < 0.05 { "±0%".to_string() } else if p.abs() >= 10.0 { format!("{p:+.0}%") } else { format!("{p:+.1}%") };
                        chart.draw_series(std::iter::once(EmptyElement::at((p, ym)) + Text::new(text, (dx, 0), style.pos(Pos::new(hpos, VPos::Center))))).map_err(e)?;
                    }
                    None => {
                        chart
                            .draw_series(std::iter::once(EmptyElement::at((0.0, ym)) + Text::new("n/a".to_string(), (5, 0), font(13.0).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center)))))
                            .map_err(e)?;
                    }
                }
            }
            if mi == 0 {
                label_ys = (0..ng).map(|g| chart.backend_coord(&(0.0, (ng - g) as f64 - 0.5)).1).collect();
            }
        }
        let (x_right, _) = rest.get_base_pixel();
        for (g, y) in groups.iter().zip(label_ys) {
            root.draw_text(g, &label_style.pos(Pos::new(HPos::Right, VPos::Center)), (x_right - 6, y)).map_err(e)?;
        }
        Ok(())
    }
}
impl_chart!(BaselineChart<'_>);
