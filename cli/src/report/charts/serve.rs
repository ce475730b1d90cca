//! Serving-benchmark charts (runs of `tokbench sweep --mode serve`):
//!
//! * `serve_latency_<ts>.png`: p50 and p99 TTFT and TPOT against the achieved request rate, one
//!   line per model @ endpoint (the latency–load curves);
//! * `serve_goodput_<ts>.png`: request throughput and goodput per run (bars), when SLOs were given;
//! * `serve_timeline_<ts>.png`: every request of one run as a horizontal bar: waiting (scheduled →
//!   sent), time to first token (sent → first token), generation (first token → end); failed
//!   requests in red;
//! * `serve_pareto_<ts>.png`: output tok/s per user (1000 / median TPOT) against output tok/s of
//!   the endpoint, the Pareto front of each series drawn as a line.

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::serve::{run_label, ServeData, ServeRow};
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 1800;
const PANEL_H: u32 = 620;
const HEADER_PX: u32 = 86;

fn subtitle(d: &ServeData<'_>) -> String {
    let endpoints: Vec<String> = d.rows.iter().map(|r| r.endpoint.clone()).fold(Vec::new(), |mut v, e| {
        if !v.contains(&e) {
            v.push(e);
        }
        v
    });
    format!("{} serve runs · endpoints: {}", d.rows.len(), endpoints.join(", "))
}

fn legend_items(d: &ServeData<'_>) -> Vec<(String, SeriesStyle)> {
    d.series().into_iter().enumerate().map(|(i, n)| (n, style(i))).collect()
}

fn upper(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    if m > 0.0 {
        m * 1.15
    } else {
        1.0
    }
}

/// Lines of `y(row)` against `x(row)`, one per series, with markers.
fn xy_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    d: &ServeData<'_>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: &dyn Fn(&ServeRow) -> Option<f64>,
    y: &dyn Fn(&ServeRow) -> Option<f64>,
    front_only: bool,
) -> PResult {
    let pts = |r: &ServeRow| x(r).zip(y(r)).filter(|(a, b)| a.is_finite() && b.is_finite());
    let x_hi = upper(d.rows.iter().filter_map(pts).map(|p| p.0));
    let y_hi = upper(d.rows.iter().filter_map(pts).map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, bold(20.0))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(84)
        .build_cartesian_2d(0f64..x_hi, 0f64..y_hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(font(16.0))
        .label_style(font(14.0))
        .light_line_style(WHITE)
        .bold_line_style(GRID.mix(0.4))
        .x_label_formatter(&|v| fine_num(*v, x_hi))
        .y_label_formatter(&|v| fine_num(*v, y_hi))
        .draw()
        .map_err(e)?;
    for (si, name) in d.series().iter().enumerate() {
        let st = style(si);
        let mut xy: Vec<(f64, f64)> = d.rows.iter().filter(|r| &r.series() == name).filter_map(pts).collect();
        xy.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line = if front_only { pareto_front(&xy) } else { xy.clone() };
        chart.draw_series(LineSeries::new(line, st.color.stroke_width(3))).map_err(e)?;
        for p in &xy {
            draw_marker(root, chart.backend_coord(p), st.marker, st.color, 7, false)?;
        }
    }
    Ok(())
}

/// Axis numbers with enough digits for the axis' range (sub-millisecond latencies included).
fn fine_num(v: f64, hi: f64) -> String {
    if hi >= 10.0 {
        axis_num(v)
    } else if hi >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The points no other point beats on both axes (higher is better on both), by x.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut front: Vec<(f64, f64)> = points.iter().copied().filter(|p| !points.iter().any(|q| q.0 >= p.0 && q.1 >= p.1 && (q.0 > p.0 || q.1 > p.1))).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    front
}

fn footer<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, area: &DrawingArea<DB, Shift>, d: &ServeData<'_>, note: &str) -> PResult {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let (w, _) = area.dim_in_pixel();
    let (bx, by) = area.get_base_pixel();
    root.draw_text(note, &font(14.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Top)), (bx + w as i32 / 2, by + 4)).map_err(e)?;
    legend(root, bx + w as i32 / 2, by + 30, w - 80, &legend_items(d), Swatch::Line)?;
    Ok(())
}

/// TTFT and TPOT (p50, p99) against the achieved request rate.
pub struct ServeLatency<'a> {
    data: &'a ServeData<'a>,
}

impl<'a> ServeLatency<'a> {
    pub fn new(data: &'a ServeData<'a>) -> Self {
        ServeLatency { data }
    }
    fn dims(&self) -> (u32, u32) {
        (WIDTH, HEADER_PX + 2 * PANEL_H + 40 + legend_height(&legend_items(self.data), WIDTH - 80) + 20)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let d = self.data;
        let body = header(root, "tokbench — serving latency against load", &subtitle(d))?;
        let (plots, legend_area) = body.split_vertically(2 * PANEL_H);
        let panels = plots.split_evenly((2, 2));
        let x = |r: &ServeRow| Some(r.load());
        let xd = "achieved request rate (req/s)";
        xy_panel(root, &panels[0], d, "TTFT p50", xd, "ms", &x, &|r| r.ttft_ms.map(|s| s.median), false)?;
        xy_panel(root, &panels[1], d, "TTFT p99", xd, "ms", &x, &|r| r.ttft_ms.map(|s| s.p99), false)?;
        xy_panel(root, &panels[2], d, "TPOT p50", xd, "ms", &x, &|r| r.tpot_ms.map(|s| s.median), false)?;
        xy_panel(root, &panels[3], d, "TPOT p99", xd, "ms", &x, &|r| r.tpot_ms.map(|s| s.p99), false)?;
        footer(root, &legend_area, d, "One line per model @ endpoint, one point per request rate; x = measured sends over their span (completed req/s for rate inf).")
    }
}
impl_chart!(ServeLatency<'_>);

/// Output tok/s per user against output tok/s of the endpoint, with each series' Pareto front.
pub struct ServePareto<'a> {
    data: &'a ServeData<'a>,
}

impl<'a> ServePareto<'a> {
    pub fn new(data: &'a ServeData<'a>) -> Self {
        ServePareto { data }
    }
    fn dims(&self) -> (u32, u32) {
        (WIDTH, HEADER_PX + PANEL_H + 40 + legend_height(&legend_items(self.data), WIDTH - 80) + 20)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let d = self.data;
        let body = header(root, "tokbench — throughput per user against throughput per endpoint", &subtitle(d))?;
        let (plot, legend_area) = body.split_vertically(PANEL_H);
        xy_panel(
            root,
            &plot,
            d,
            "Pareto front",
            "output tok/s of the endpoint (per GPU for a one-GPU server)",
            "output tok/s per user (1000 / median TPOT)",
            &|r| Some(r.output_throughput),
            &|r| r.tokens_per_second_per_user,
            true,
        )?;
        footer(root, &legend_area, d, "Points: one per run; lines: the runs of each series that no other run of it beats on both axes.")
    }
}
impl_chart!(ServePareto<'_>);

/// Request throughput and goodput per run (bars).
pub struct ServeGoodput<'a> {
    data: &'a ServeData<'a>,
}

impl<'a> ServeGoodput<'a> {
    pub fn new(data: &'a ServeData<'a>) -> Self {
        ServeGoodput { data }
    }
    fn dims(&self) -> (u32, u32) {
        (WIDTH, HEADER_PX + PANEL_H + 60)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        let d = self.data;
        let slos = d.rows.iter().find_map(|r| r.goodput_slos).map(|s| {
            let mut parts = Vec::new();
            if let Some(v) = s.ttft_ms {
                parts.push(format!("TTFT ≤ {v} ms"));
            }
            if let Some(v) = s.tpot_ms {
                parts.push(format!("TPOT ≤ {v} ms"));
            }
            if let Some(v) = s.e2el_ms {
                parts.push(format!("E2EL ≤ {v} ms"));
            }
            parts.join(", ")
        });
        let body = header(root, "tokbench — goodput", &format!("{} · SLOs: {}", subtitle(d), slos.unwrap_or_else(|| "none".into())))?;
        let (plot, note) = body.split_vertically(PANEL_H);
        let n = d.rows.len().max(1);
        let y_hi = upper(d.rows.iter().map(|r| r.request_throughput));
        let mut chart = ChartBuilder::on(&plot)
            .margin(16)
            .x_label_area_size(120)
            .y_label_area_size(84)
            .build_cartesian_2d(0f64..n as f64, 0f64..y_hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("req/s")
            .axis_desc_style(font(16.0))
            .label_style(font(14.0))
            .bold_line_style(GRID.mix(0.4))
            .light_line_style(WHITE)
            .y_label_formatter(&|v| axis_num(*v))
            .draw()
            .map_err(e)?;
        let series = d.series();
        for (i, r) in d.rows.iter().enumerate() {
            let st = style(series.iter().position(|s| *s == r.series()).unwrap_or(0));
            let x0 = i as f64 + 0.1;
            chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + 0.38, r.request_throughput)], st.color.mix(0.35).filled()))).map_err(e)?;
            if let Some(g) = r.request_goodput {
                chart.draw_series(std::iter::once(Rectangle::new([(x0 + 0.42, 0.0), (x0 + 0.8, g)], st.color.filled()))).map_err(e)?;
            }
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw_text(&format!("{} req/s", r.request_rate), &font(14.0).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 8)).map_err(e)?;
            root.draw_text(&r.model, &font(12.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Top)), (px, py + 28)).map_err(e)?;
        }
        let (w, _) = note.dim_in_pixel();
        let (bx, by) = note.get_base_pixel();
        root.draw_text(
            "Per run: light bar = completed requests per second (throughput), dark bar = requests per second meeting every SLO (goodput).",
            &font(14.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Top)),
            (bx + w as i32 / 2, by + 10),
        )
        .map_err(e)?;
        Ok(())
    }
}
impl_chart!(ServeGoodput<'_>);

/// Every request of one run as a horizontal bar.
pub struct ServeTimeline<'a> {
    data: &'a ServeData<'a>,
    run: usize,
}

const WAIT: RGBColor = RGBColor(190, 190, 190);
const PREFILL: RGBColor = RGBColor(230, 159, 0);
const DECODE: RGBColor = RGBColor(0, 114, 178);
const FAILED: RGBColor = RGBColor(200, 0, 0);

impl<'a> ServeTimeline<'a> {
    pub fn new(data: &'a ServeData<'a>, run: usize) -> Self {
        ServeTimeline { data, run }
    }
    fn dims(&self) -> (u32, u32) {
        let n = self.data.timelines[self.run].len() as u32;
        (WIDTH, HEADER_PX + (n * 8).clamp(400, 2400) + 150)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        let row = &self.data.rows[self.run];
        let reqs = self.data.timelines[self.run];
        let body = header(root, &format!("tokbench — request timeline: {}", run_label(row)), &format!("{} · {} requests ({} failed) · endpoint {}", row.served_model, reqs.len(), reqs.iter().filter(|r| r.error.is_some()).count(), row.endpoint))?;
        let (_, h) = body.dim_in_pixel();
        let (plot, note) = body.split_vertically(h.saturating_sub(70));
        let t_hi = upper(reqs.iter().map(|r| r.end_s));
        let n = reqs.len().max(1);
        let mut chart = ChartBuilder::on(&plot)
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(84)
            .build_cartesian_2d(0f64..t_hi, 0f64..n as f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc("request (schedule order)")
            .axis_desc_style(font(16.0))
            .label_style(font(14.0))
            .bold_line_style(GRID.mix(0.4))
            .light_line_style(WHITE)
            .x_label_formatter(&|v| axis_num(*v))
            .y_label_formatter(&|v| format!("{}", *v as usize))
            .draw()
            .map_err(e)?;
        // At least ~1 pixel wide, so that sub-millisecond phases still show.
        let min_w = t_hi / 1500.0;
        let bar = |y: f64, a: f64, b: f64, c: RGBColor| Rectangle::new([(a, y + 0.1), (b.max(a + min_w), y + 0.9)], c.filled());
        let mut rects = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            rects.push(bar(y, r.scheduled_s, r.sent_s, WAIT));
            match (r.error.is_some(), r.first_token_s) {
                (true, _) => rects.push(bar(y, r.sent_s, r.end_s, FAILED)),
                (false, Some(first)) => {
                    rects.push(bar(y, r.sent_s, first, PREFILL));
                    rects.push(bar(y, first, r.end_s, DECODE));
                }
                (false, None) => rects.push(bar(y, r.sent_s, r.end_s, FAILED)),
            }
        }
        chart.draw_series(rects).map_err(e)?;
        let (w, _) = note.dim_in_pixel();
        let (bx, by) = note.get_base_pixel();
        let items = [("waiting: scheduled → sent", WAIT), ("sent → first token (TTFT)", PREFILL), ("first token → end", DECODE), ("failed", FAILED)];
        let mut x = bx + w as i32 / 2 - 560;
        for (label, c) in items {
            root.draw(&Rectangle::new([(x, by + 16), (x + 24, by + 32)], c.filled())).map_err(e)?;
            root.draw_text(label, &font(15.0).pos(Pos::new(HPos::Left, VPos::Center)), (x + 32, by + 24)).map_err(e)?;
            x += 290;
        }
        Ok(())
    }
}
impl_chart!(ServeTimeline<'_>);
