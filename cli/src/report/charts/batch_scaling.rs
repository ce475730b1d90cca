//! Batch size scaling (`batch_scaling_<ts>.png`): throughput and inter-token latency against
//! batch size, one line per model.

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::{ReportData, Row};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub struct BatchScaling<'a> {
    data: &'a ReportData,
}

impl<'a> BatchScaling<'a> {
    pub fn new(data: &'a ReportData) -> Self {
        BatchScaling { data }
    }
    fn dims(&self) -> (u32, u32) {
        (1800, 760)
    }
    /// One line per model (and device when several): points (batch index, row).
    fn lines(&self) -> Vec<(String, Vec<(usize, &'a Row)>)> {
        let data = self.data;
        let mut out: Vec<(String, Vec<(usize, &Row)>)> = Vec::new();
        for r in &data.rows {
            let name = if data.devices.len() > 1 { format!("{} on {}", r.model, r.device_key) } else { r.model.clone() };
            let bi = data.batch_sizes.iter().position(|b| *b == r.batch_size).unwrap();
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => {
                    pts.retain(|(b, _)| *b != bi);
                    pts.push((bi, r));
                }
                None => out.push((name, vec![(bi, r)])),
            }
        }
        for (_, pts) in &mut out {
            pts.sort_by_key(|(b, _)| *b);
        }
        out
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let body = header(root, "tokbench — batch size scaling", &self.data.subtitle())?;
        let panels = body.split_evenly((1, 2));
        let lines = self.lines();
        self.panel(root, &panels[0], &lines, "Throughput vs batch size — higher is better", "throughput (tokens/s)", |r| r.tokens_per_second)?;
        self.panel(root, &panels[1], &lines, "Inter-token latency vs batch size — lower is better", "inter-token latency p50 (ms)", |r| {
            r.inter_token_latency_p50_ms
        })?;
        Ok(())
    }
    fn panel<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        area: &DrawingArea<DB, Shift>,
        lines: &[(String, Vec<(usize, &Row)>)],
        title: &str,
        y_desc: &str,
        f: impl Fn(&Row) -> f64,
    ) -> PResult {
        let nb = self.data.batch_sizes.len();
        let max = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, r)| f(r))).fold(0.0f64, f64::max);
        let y_top = if max > 0.0 { max * 1.18 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(title, bold(20.0))
            .margin(14)
            .x_label_area_size(86)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.4f64..(nb as f64 - 0.6), 0f64..y_top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(0)
            .disable_x_mesh()
            .y_desc(y_desc)
            .y_label_formatter(&|v| axis_num(*v))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .axis_desc_style(font(15.0))
            .label_style(font(14.0))
            .draw()
            .map_err(e)?;
        let mut placed: Vec<(i32, i32)> = Vec::new();
        for (li, (name, pts)) in lines.iter().enumerate() {
            let c = color(li);
            let style = c.stroke_width(3);
            let xy: Vec<(f64, f64)> = pts.iter().map(|(b, r)| (*b as f64, f(r))).collect();
            let _ = name;
            chart.draw_series(LineSeries::new(xy.clone(), style)).map_err(e)?;
            // Marker shapes differ per line too, for greyscale prints.
            let outline = TEXT.stroke_width(1);
            match li % 3 {
                0 => chart.draw_series(xy.iter().map(|p| Circle::new(*p, 6, c.filled()))).map(|_| ()),
                1 => chart.draw_series(xy.iter().map(|p| TriangleMarker::new(*p, 8, c.filled()))).map(|_| ()),
                _ => chart.draw_series(xy.iter().map(|p| Cross::new(*p, 7, c.stroke_width(3)))).map(|_| ()),
            }
            .map_err(e)?;
            if li % 3 == 0 {
                chart.draw_series(xy.iter().map(|p| Circle::new(*p, 6, outline))).map_err(e)?;
            }
            // Value labels, skipped where they would overprint one already placed.
            for (x, y) in &xy {
                let (px, py) = chart.backend_coord(&(*x, *y));
                if placed.iter().any(|(qx, qy): &(i32, i32)| (qx - px).abs() < 50 && (qy - py).abs() < 18) {
                    continue;
                }
                placed.push((px, py));
                root.draw_text(&num(*y), &font(13.0).pos(Pos::new(HPos::Center, VPos::Bottom)), (px, py - 10)).map_err(e)?;
            }
        }
        // Batch size labels under the axis.
        for (bi, b) in self.data.batch_sizes.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(bi as f64, 0.0));
            root.draw_text(&b.to_string(), &font(15.0).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 8)).map_err(e)?;
        }
        let (px, py) = chart.backend_coord(&((nb as f64 - 1.0) / 2.0, 0.0));
        root.draw_text("batch size (sequences per batch)", &font(15.0).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 32)).map_err(e)?;
        let items: Vec<(String, RGBColor)> = lines.iter().enumerate().map(|(i, (n, _))| (n.clone(), color(i))).collect();
        legend_row(root, px, py + 60, &items, true)?;
        Ok(())
    }
}
impl_chart!(BatchScaling<'_>);
