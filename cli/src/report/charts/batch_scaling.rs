//! Batch size scaling (`batch_scaling_<ts>.png`): throughput and inter-token latency against
//! batch size, one line per model, each with its own colour × marker, 95% CI whiskers, and its
//! name and value at the line ends (moved apart so they never overprint; dropped when the
//! panel has no room for all).

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::{ReportData, Row};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tokbench_core::report::confidence_interval_95;

const WIDTH: u32 = 2000;
const PANEL_H: u32 = 700;
const HEADER_PX: u32 = 86;
const LABEL_FONT: f64 = 14.0;
const LABEL_H: f64 = 18.0;
/// A value axis turns logarithmic when its largest value is this many times its smallest.
const LOG_RATIO: f64 = 8.0;

pub struct BatchScaling<'a> {
    data: &'a ReportData,
}

/// A panel's metric: value and 95% interval of a run.
struct Metric {
    title: &'static str,
    y_desc: &'static str,
    value: fn(&Row) -> f64,
    ci: fn(&Row) -> Option<[f64; 2]>,
}

/// 95% CI of the inter-token latency: over the repetitions' ITL medians.
pub(crate) fn itl_ci95(r: &Row) -> Option<[f64; 2]> {
    confidence_interval_95(&r.itl_p50_runs_ms)
}

const METRICS: [Metric; 2] = [
    Metric {
        title: "Throughput vs batch size — higher is better",
        y_desc: "throughput (tokens/s; whiskers: 95% CI)",
        value: |r| r.tokens_per_second,
        ci: |r| r.tokens_per_second_ci95,
    },
    Metric {
        title: "Inter-token latency vs batch size — lower is better",
        y_desc: "inter-token latency p50 (ms; whiskers: 95% CI)",
        value: |r| r.inter_token_latency_p50_ms,
        ci: itl_ci95,
    },
];

type Line<'r> = (String, Vec<(usize, &'r Row)>);
/// A label at a line end: the line's index, its point in pixels, the text.
type EndLabel = (usize, (i32, i32), String);

impl<'a> BatchScaling<'a> {
    pub fn new(data: &'a ReportData) -> Self {
        BatchScaling { data }
    }
    fn legend_items(&self) -> Vec<(String, SeriesStyle)> {
        self.lines().into_iter().enumerate().map(|(i, (n, _))| (n, style(i))).collect()
    }
    fn dims(&self) -> (u32, u32) {
        (WIDTH, HEADER_PX + PANEL_H + 40 + legend_height(&self.legend_items(), WIDTH - 80) + 20)
    }
    /// One line per model (and device when several): points (batch index, row).
    fn lines(&self) -> Vec<Line<'a>> {
        let data = self.data;
        let mut out: Vec<Line<'a>> = Vec::new();
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
        let (plots, legend_area) = body.split_vertically(PANEL_H);
        let panels = plots.split_evenly((1, 2));
        let lines = self.lines();
        for (area, m) in panels.iter().zip(METRICS.iter()) {
            self.panel(root, area, &lines, m)?;
        }
        let (w, _) = legend_area.dim_in_pixel();
        let (bx, by) = legend_area.get_base_pixel();
        root.draw_text(
            "Lines: one per model, each its own colour and marker; labels at the line ends give the model and its value (a label left out where the panel has no room for all).",
            &font(14.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Top)),
            (bx + w as i32 / 2, by + 4),
        )
        .map_err(e)?;
        legend(root, bx + w as i32 / 2, by + 30, w - 80, &self.legend_items(), Swatch::Line)?;
        Ok(())
    }
    fn panel<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, area: &DrawingArea<DB, Shift>, lines: &[Line<'_>], m: &Metric) -> PResult {
        let nb = self.data.batch_sizes.len();
        let values: Vec<f64> = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, r)| (m.value)(r))).filter(|v| v.is_finite()).collect();
        let his: Vec<f64> = lines.iter().flat_map(|(_, p)| p.iter().filter_map(|(_, r)| (m.ci)(r).map(|c| c[1]))).filter(|v| v.is_finite()).collect();
        let max = values.iter().chain(&his).copied().fold(0.0f64, f64::max);
        let min_pos = values.iter().copied().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        // Room right of the last batch size for "name value" labels.
        let label_w = lines
            .iter()
            .map(|(n, p)| text_width(&format!("{n}  {}", p.last().map_or(String::new(), |(_, r)| num((m.value)(r)))), &font(LABEL_FONT)))
            .max()
            .unwrap_or(100)
            + 30;
        let x_range = -0.35f64..(nb as f64 - 0.75);
        if min_pos.is_finite() && max / min_pos > LOG_RATIO {
            let y_desc = format!("{} — log scale", m.y_desc);
            let mut chart = ChartBuilder::on(area).caption(m.title, bold(20.0)).margin(14).margin_right(label_w).x_label_area_size(70).y_label_area_size(84).build_cartesian_2d(x_range, (min_pos * 0.7..max * 1.3).log_scale()).map_err(e)?;
            mesh(&mut chart, &y_desc)?;
            self.plot(root, &mut chart, lines, m)
        } else {
            let top = if max > 0.0 { max * 1.12 } else { 1.0 };
            let mut chart = ChartBuilder::on(area).caption(m.title, bold(20.0)).margin(14).margin_right(label_w).x_label_area_size(70).y_label_area_size(84).build_cartesian_2d(x_range, 0f64..top).map_err(e)?;
            mesh(&mut chart, m.y_desc)?;
            self.plot(root, &mut chart, lines, m)
        }
    }
    fn plot<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
        &self,
        root: &DrawingArea<DB, Shift>,
        chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
        lines: &[Line<'_>],
        m: &Metric,
    ) -> PResult {
        let nb = self.data.batch_sizes.len();
        let ends: [Vec<EndLabel>; 2] = {
            let mut first = Vec::new();
            let mut last = Vec::new();
            for (li, (name, pts)) in lines.iter().enumerate() {
                let st = style(li);
                let xy: Vec<(f64, f64)> = pts.iter().map(|(b, r)| (*b as f64, (m.value)(r))).filter(|(_, y)| y.is_finite() && *y > 0.0).collect();
                chart.draw_series(LineSeries::new(xy.clone(), st.color.stroke_width(3))).map_err(e)?;
                // Whiskers: the 95% CI of each point.
                for (b, r) in pts {
                    if let Some([lo, hi]) = (m.ci)(r).filter(|[lo, hi]| lo.is_finite() && hi.is_finite() && *hi > 0.0) {
                        let (x, lo) = (*b as f64, lo.max(hi * 1e-3));
                        let (px, plo) = chart.backend_coord(&(x, lo));
                        let (_, phi) = chart.backend_coord(&(x, hi));
                        for seg in [vec![(px, plo), (px, phi)], vec![(px - 5, plo), (px + 5, plo)], vec![(px - 5, phi), (px + 5, phi)]] {
                            root.draw(&PathElement::new(seg, st.color.stroke_width(2))).map_err(e)?;
                        }
                    }
                }
                for p in &xy {
                    draw_marker(root, chart.backend_coord(p), st.marker, st.color, 7, false)?;
                }
                if let (Some(a), Some(z)) = (xy.first(), xy.last()) {
                    first.push((li, chart.backend_coord(a), num(a.1)));
                    if xy.len() > 1 {
                        last.push((li, chart.backend_coord(z), format!("{name}  {}", num(z.1))));
                    }
                }
            }
            [first, last]
        };
        // End labels, spread apart vertically: values left of the first points, names and values
        // right of the last ones.
        let (_, y_px) = chart.plotting_area().get_pixel_range();
        let (plot_top, plot_bottom) = (y_px.start, y_px.end);
        for (side, labels) in ends.iter().enumerate() {
            let desired: Vec<f64> = labels.iter().map(|(_, (_, y), _)| *y as f64).collect();
            let placed = spread_labels(&desired, LABEL_H, plot_top as f64 + LABEL_H / 2.0, plot_bottom as f64 - LABEL_H / 2.0);
            for ((li, (px, py), text), y) in labels.iter().zip(placed) {
                let Some(y) = y else { continue };
                let y = y.round() as i32;
                let st = style(*li);
                if side == 0 {
                    let x = px - 26;
                    root.draw(&PathElement::new(vec![(px - 9, *py), (x + 14, y)], GRID.stroke_width(1))).map_err(e)?;
                    draw_marker(root, (x + 8, y), st.marker, st.color, 5, false)?;
                    root.draw_text(text, &font(LABEL_FONT).pos(Pos::new(HPos::Right, VPos::Center)), (x - 2, y)).map_err(e)?;
                } else {
                    let x = px + 26;
                    root.draw(&PathElement::new(vec![(px + 9, *py), (x - 14, y)], GRID.stroke_width(1))).map_err(e)?;
                    draw_marker(root, (x - 8, y), st.marker, st.color, 5, false)?;
                    root.draw_text(text, &font(LABEL_FONT).pos(Pos::new(HPos::Left, VPos::Center)), (x + 2, y)).map_err(e)?;
                }
            }
        }
        // Batch size labels under the axis.
        let py = plot_bottom;
        for (bi, b) in self.data.batch_sizes.iter().enumerate() {
            let (px, _) = chart.backend_coord(&(bi as f64, 1.0));
            root.draw_text(&b.to_string(), &font(15.0).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 8)).map_err(e)?;
        }
        let (px, _) = chart.backend_coord(&((nb as f64 - 1.0) / 2.0, 1.0));
        root.draw_text("batch size (sequences per batch)", &font(15.0).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 34)).map_err(e)?;
        Ok(())
    }
}

fn mesh<DB: DrawingBackend, Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>, y_desc: &str) -> PResult {
    chart
        .configure_mesh()
        .x_labels(0)
        .disable_x_mesh()
        .y_labels(10)
        .y_max_light_lines(1)
        .y_desc(y_desc)
        .y_label_formatter(&|v| axis_num(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_desc_style(font(15.0))
        .label_style(font(14.0))
        .draw()
        .map_err(e)?;
    Ok(())
}
impl_chart!(BatchScaling<'_>);
