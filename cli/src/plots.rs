//! The report's charts, drawn with plotters on a bitmap (PNG) or SVG backend: the comparison
//! table as an image, the demo's four performance graphs, batch scaling and the baseline
//! comparison. Text is rendered with an embedded DejaVu Sans (plotters' `ab_glyph` feature),
//! so charts render the same on a machine with no fonts and no fontconfig.

use crate::report::{truncate_name, BaselineComparison, GpuTimeEntry, Grouping, ReportData, ReportError, Row, REGRESSION_THRESHOLD_PERCENT, TOP_KERNELS};
use tokbench_core::report::GpuTimeCategory;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

/// DejaVu Sans (Bitstream Vera licence, see assets/DejaVu-LICENSE.txt).
static FONT_REGULAR: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static FONT_BOLD: &[u8] = include_bytes!("../assets/DejaVuSans-Bold.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded fonts under "sans-serif" (the family plotters' defaults use) once.
pub fn ensure_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Cannot fail for these bundled, known-good files; a failure would show as missing text.
        let ok_regular = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT_REGULAR).is_ok();
        let ok_bold = plotters::style::register_font(FAMILY, FontStyle::Bold, FONT_BOLD).is_ok();
        if !(ok_regular && ok_bold) {
            tracing::error!("the embedded DejaVu fonts could not be registered; charts will have no text");
        }
    });
}

type PResult<T = ()> = Result<T, String>;
fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

/// Series colours: hues that also differ in lightness, so bars stay apart in greyscale
/// (luma approx. 40, 176, 121, 215, 91, 138).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(20, 40, 90),
    RGBColor(240, 168, 48),
    RGBColor(42, 157, 143),
    RGBColor(198, 219, 239),
    RGBColor(170, 60, 40),
    RGBColor(150, 120, 200),
];
const TEXT: RGBColor = RGBColor(25, 25, 25);
const MUTED: RGBColor = RGBColor(90, 90, 90);
const GRID: RGBColor = RGBColor(175, 175, 175);
const HEADER_BG: RGBColor = RGBColor(222, 228, 238);
const STRIPE_BG: RGBColor = RGBColor(246, 247, 249);
const REGRESSION: RGBColor = RGBColor(200, 0, 0);

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&TEXT)
}
fn bold(size: f64) -> TextStyle<'static> {
    (FAMILY, size, FontStyle::Bold).into_font().color(&TEXT)
}

/// A chart that can be drawn on any plotters backend.
pub trait Chart {
    /// Image size in pixels.
    fn size(&self) -> (u32, u32);
    fn draw_bitmap(&self, root: &DrawingArea<BitMapBackend<'_>, Shift>) -> PResult;
    fn draw_svg(&self, root: &DrawingArea<SVGBackend<'_>, Shift>) -> PResult;
}

macro_rules! impl_chart {
    ($t:ty) => {
        impl Chart for $t {
            fn size(&self) -> (u32, u32) {
                self.dims()
            }
            fn draw_bitmap(&self, root: &DrawingArea<BitMapBackend<'_>, Shift>) -> PResult {
                self.draw(root)
            }
            fn draw_svg(&self, root: &DrawingArea<SVGBackend<'_>, Shift>) -> PResult {
                self.draw(root)
            }
        }
    };
}

pub fn save_png(chart: &dyn Chart, path: &Path) -> Result<(), ReportError> {
    ensure_fonts();
    let err = |detail: String| ReportError::Plot { path: path.to_path_buf(), detail };
    let root = BitMapBackend::new(path, chart.size()).into_drawing_area();
    chart.draw_bitmap(&root).map_err(err)?;
    root.present().map_err(|x| err(x.to_string()))
}

pub fn save_svg(chart: &dyn Chart, path: &Path) -> Result<(), ReportError> {
    ensure_fonts();
    let err = |detail: String| ReportError::Plot { path: path.to_path_buf(), detail };
    let root = SVGBackend::new(path, chart.size()).into_drawing_area();
    chart.draw_svg(&root).map_err(err)?;
    root.present().map_err(|x| err(x.to_string()))
}

/// Title and subtitle at the top of the image; returns the area below them.
fn header<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, subtitle: &str) -> PResult<DrawingArea<DB, Shift>> {
    root.fill(&WHITE).map_err(e)?;
    let (w, _) = root.dim_in_pixel();
    root.draw_text(title, &bold(30.0).pos(Pos::new(HPos::Center, VPos::Top)), (w as i32 / 2, 14)).map_err(e)?;
    root.draw_text(subtitle, &font(17.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Top)), (w as i32 / 2, 54)).map_err(e)?;
    Ok(root.margin(86, 0, 0, 0))
}

/// Greedy word wrap to `max_px` using the font's real advance widths.
fn wrap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, style: &TextStyle, max_px: u32) -> Vec<String> {
    let width = |s: &str| area.estimate_text_size(s, style).map(|(w, _)| w).unwrap_or(0);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let cand = if cur.is_empty() { word.to_string() } else { format!("{cur} {word}") };
        if width(&cand) > max_px && !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
            cur = word.to_string();
        } else {
            cur = cand;
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// A horizontal legend (swatch + name per item), centred on `cx`, top at `y`, in absolute pixels.
fn legend_row<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, cx: i32, y: i32, items: &[(String, RGBColor)], line: bool) -> PResult {
    let style = font(14.0);
    let widths: Vec<i32> = items.iter().map(|(n, _)| root.estimate_text_size(n, &style).map(|s| s.0 as i32).unwrap_or(60)).collect();
    let total: i32 = widths.iter().map(|w| w + 22 + 26).sum::<i32>() - 26;
    let mut x = cx - total / 2;
    for ((name, c), w) in items.iter().zip(widths) {
        if line {
            root.draw(&PathElement::new(vec![(x, y + 8), (x + 16, y + 8)], c.stroke_width(4))).map_err(e)?;
        } else {
            root.draw(&Rectangle::new([(x, y + 1), (x + 16, y + 15)], c.filled())).map_err(e)?;
            root.draw(&Rectangle::new([(x, y + 1), (x + 16, y + 15)], TEXT.mix(0.55).stroke_width(1))).map_err(e)?;
        }
        root.draw_text(name, &style.pos(Pos::new(HPos::Left, VPos::Center)), (x + 22, y + 8)).map_err(e)?;
        x += w + 22 + 26;
    }
    Ok(())
}

/// Compact number for labels on bars.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn axis_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A vertical grouped bar chart: categories along x, one coloured bar per series.
struct Bars<'a> {
    title: String,
    y_desc: String,
    categories: Vec<String>,
    series: Vec<String>,
    /// values[category][series]
    values: Vec<Vec<Option<f64>>>,
    /// Text drawn at the foot of an empty cell (e.g. "no GPU"); None: leave the slot empty.
    missing_text: Option<&'a str>,
    /// Dashed horizontal reference line (value, label).
    threshold: Option<(f64, String)>,
    y_max: Option<f64>,
    value_suffix: &'a str,
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, area: &DrawingArea<DB, Shift>, b: &Bars) -> PResult {
    let ncat = b.categories.len().max(1);
    let nser = b.series.len().max(1);
    let max_val = b.values.iter().flatten().flatten().filter(|v| !v.is_nan()).fold(0.0f64, |m, v| m.max(*v));
    let mut y_top = b.y_max.unwrap_or(0.0).max(max_val * 1.18);
    if let Some((t, _)) = &b.threshold {
        y_top = y_top.max(t * 1.12);
    }
    if y_top <= 0.0 {
        y_top = 1.0;
    }
    let legend = b.series.len() > 1;
    let mut chart = ChartBuilder::on(area)
        .caption(&b.title, bold(20.0))
        .margin(12)
        .margin_top(6)
        .x_label_area_size(if legend { 76 } else { 50 })
        .y_label_area_size(78)
        .build_cartesian_2d(0f64..ncat as f64, 0f64..y_top)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .y_desc(&b.y_desc)
        .y_label_formatter(&|v| axis_num(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_desc_style(font(15.0))
        .label_style(font(14.0))
        .draw()
        .map_err(e)?;

    let group_w = 0.8;
    let bar_w = group_w / nser as f64;
    let slot_px = {
        let a = chart.backend_coord(&(0.0, 0.0));
        let z = chart.backend_coord(&(1.0, 0.0));
        (z.0 - a.0).max(10) as u32
    };
    let value_style = font(13.0).pos(Pos::new(HPos::Center, VPos::Bottom));
    for s in 0..nser {
        let c = color(s);
        let mut rects = Vec::new();
        let mut labels = Vec::new();
        for (ci, row) in b.values.iter().enumerate() {
            let x0 = ci as f64 + (1.0 - group_w) / 2.0 + s as f64 * bar_w;
            let x1 = x0 + bar_w * 0.92;
            match row.get(s).copied().flatten() {
                // A run with no value for this metric (NaN marks it): say why at the foot.
                Some(v) if v.is_nan() => {
                    if let Some(t) = b.missing_text {
                        labels.push(((x0 + x1) / 2.0, 0.0, t.to_string()));
                    }
                }
                Some(v) => {
                    rects.push(Rectangle::new([(x0, 0.0), (x1, v)], c.filled()));
                    rects.push(Rectangle::new([(x0, 0.0), (x1, v)], TEXT.mix(0.55).stroke_width(1)));
                    labels.push(((x0 + x1) / 2.0, v, format!("{}{}", num(v), b.value_suffix)));
                }
                None => {}
            }
        }
        chart.draw_series(rects).map_err(e)?;
        chart
            .draw_series(labels.into_iter().map(|(x, y, t)| EmptyElement::at((x, y)) + Text::new(t, (0, -4), value_style.clone())))
            .map_err(e)?;
    }
    if let Some((t, label)) = &b.threshold {
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, *t), (ncat as f64, *t)], 10, 6, REGRESSION.stroke_width(2)))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((ncat as f64, *t)) + Text::new(label.clone(), (-6, -4), font(14.0).color(&REGRESSION).pos(Pos::new(HPos::Right, VPos::Bottom))),
            ))
            .map_err(e)?;
    }
    // Category labels under the axis, wrapped to the group width.
    let cat_style = font(15.0).pos(Pos::new(HPos::Center, VPos::Top));
    let mut lines_used = 1;
    for (ci, cat) in b.categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(ci as f64 + 0.5, 0.0));
        let lines = wrap(root, cat, &cat_style, slot_px.saturating_sub(8));
        lines_used = lines_used.max(lines.len());
        for (li, line) in lines.iter().enumerate() {
            root.draw_text(line, &cat_style, (px, py + 8 + 18 * li as i32)).map_err(e)?;
        }
    }
    if legend {
        let (x_left, py) = chart.backend_coord(&(0.0, 0.0));
        let (x_right, _) = chart.backend_coord(&(ncat as f64, 0.0));
        let items: Vec<(String, RGBColor)> = b.series.iter().enumerate().map(|(i, n)| (n.clone(), color(i))).collect();
        legend_row(root, (x_left + x_right) / 2, py + 14 + 18 * lines_used as i32, &items, false)?;
    }
    Ok(())
}

/// A framed panel with a centred message instead of a chart (e.g. GPU memory on CPU runs).
fn message_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, lines: &[&str]) -> PResult {
    let (w, h) = area.dim_in_pixel();
    area.draw_text(title, &bold(20.0).pos(Pos::new(HPos::Center, VPos::Top)), (w as i32 / 2, 8)).map_err(e)?;
    area.draw(&Rectangle::new([(30, 44), (w as i32 - 20, h as i32 - 20)], GRID.stroke_width(1))).map_err(e)?;
    for (i, l) in lines.iter().enumerate() {
        let style = if i == 0 { bold(24.0) } else { font(16.0).color(&MUTED) };
        area.draw_text(l, &style.pos(Pos::new(HPos::Center, VPos::Center)), (w as i32 / 2, h as i32 / 2 - 20 + 34 * i as i32)).map_err(e)?;
    }
    Ok(())
}

/// values[category][series]: None = no run in that cell; Some(NaN) = a run without this value.
fn grouped_values(g: &Grouping, rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Vec<Vec<Option<f64>>> {
    g.cells.iter().map(|cells| cells.iter().map(|c| c.map(|i| f(&rows[i]).unwrap_or(f64::NAN))).collect()).collect()
}

// ------------------------------------------------------------------ comparison table

pub struct ComparisonTable<'a> {
    data: &'a ReportData,
}

impl<'a> ComparisonTable<'a> {
    pub fn new(data: &'a ReportData) -> Self {
        ComparisonTable { data }
    }
    const ROW_H: i32 = 34;
    const PAD: i32 = 12;
    const TOP: i32 = 96;

    fn column_widths(&self) -> Vec<i32> {
        // Estimated with the real font metrics on a throwaway 1x1 bitmap.
        ensure_fonts();
        let mut buf = vec![0u8; 3];
        let area = BitMapBackend::with_buffer(&mut buf, (1, 1)).into_drawing_area();
        let (header, rows) = crate::report::comparison_table(self.data);
        let (hs, cs) = (bold(15.0), font(15.0));
        header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let hw = area.estimate_text_size(h, &hs).map(|s| s.0).unwrap_or(80);
                let cw = rows.iter().map(|r| area.estimate_text_size(&r[i], &cs).map(|s| s.0).unwrap_or(80)).max().unwrap_or(0);
                hw.max(cw) as i32 + 2 * Self::PAD
            })
            .collect()
    }

    fn dims(&self) -> (u32, u32) {
        let w: i32 = self.column_widths().iter().sum::<i32>() + 40;
        let h = Self::TOP + Self::ROW_H * (self.data.rows.len() as i32 + 1) + 60;
        (w.max(900) as u32, h as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        let body = header(root, "tokbench — model comparison", &self.data.subtitle())?;
        let _ = body;
        let widths = self.column_widths();
        let (header_cells, rows) = crate::report::comparison_table(self.data);
        let total_w: i32 = widths.iter().sum();
        let (img_w, _) = root.dim_in_pixel();
        let x0 = (img_w as i32 - total_w) / 2;
        let y0 = Self::TOP;
        let nrows = rows.len() as i32 + 1;
        // Backgrounds: header, then zebra stripes.
        root.draw(&Rectangle::new([(x0, y0), (x0 + total_w, y0 + Self::ROW_H)], HEADER_BG.filled())).map_err(e)?;
        for r in 0..rows.len() as i32 {
            if r % 2 == 1 {
                let y = y0 + Self::ROW_H * (r + 1);
                root.draw(&Rectangle::new([(x0, y), (x0 + total_w, y + Self::ROW_H)], STRIPE_BG.filled())).map_err(e)?;
            }
        }
        // Grid.
        for r in 0..=nrows {
            let y = y0 + Self::ROW_H * r;
            let style = if r <= 1 || r == nrows { TEXT.stroke_width(2) } else { GRID.stroke_width(1) };
            root.draw(&PathElement::new(vec![(x0, y), (x0 + total_w, y)], style)).map_err(e)?;
        }
        let mut x = x0;
        for (i, w) in widths.iter().enumerate() {
            let style = if i == 0 { TEXT.stroke_width(1) } else { GRID.stroke_width(1) };
            root.draw(&PathElement::new(vec![(x, y0), (x, y0 + Self::ROW_H * nrows)], style)).map_err(e)?;
            x += w;
        }
        root.draw(&PathElement::new(vec![(x, y0), (x, y0 + Self::ROW_H * nrows)], TEXT.stroke_width(1))).map_err(e)?;
        // Text: header centred; numbers right-aligned, words left-aligned.
        let is_text_col = |i: usize| matches!(i, 0 | 13 | 14);
        let mut x = x0;
        for (i, w) in widths.iter().enumerate() {
            let cy = y0 + Self::ROW_H / 2;
            root.draw_text(header_cells[i], &bold(15.0).pos(Pos::new(HPos::Center, VPos::Center)), (x + w / 2, cy)).map_err(e)?;
            for (r, row) in rows.iter().enumerate() {
                let cy = y0 + Self::ROW_H * (r as i32 + 1) + Self::ROW_H / 2;
                let cell = &row[i];
                let mut style = font(15.0);
                if cell == "n/a" {
                    style = style.color(&MUTED);
                }
                if is_text_col(i) {
                    root.draw_text(cell, &style.pos(Pos::new(HPos::Left, VPos::Center)), (x + Self::PAD, cy)).map_err(e)?;
                } else {
                    root.draw_text(cell, &style.pos(Pos::new(HPos::Right, VPos::Center)), (x + w - Self::PAD, cy)).map_err(e)?;
                }
            }
            x += w;
        }
        let note_y = y0 + Self::ROW_H * nrows + 14;
        let mut notes = vec!["Times are medians over the timed repetitions. GPU Mem = memory allocated by the model; GPU Util = GPU memory utilization."];
        if self.data.rows.iter().any(|r| !r.on_gpu()) {
            notes.push("n/a: not measured — CPU runs have no GPU; tokens/J needs GPU power telemetry (NVML).");
        }
        for (i, n) in notes.iter().enumerate() {
            root.draw_text(n, &font(14.0).color(&MUTED), (x0, note_y + 20 * i as i32)).map_err(e)?;
        }
        Ok(())
    }
}
impl_chart!(ComparisonTable<'_>);

// ------------------------------------------------------------------ performance graphs

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
                y_desc: "throughput (tokens/s)".into(),
                categories: g.categories.clone(),
                series: series_note(&g.series),
                values: grouped_values(&g, rows, |r| Some(r.tokens_per_second)),
                missing_text: None,
                threshold: None,
                y_max: None,
                value_suffix: "",
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
            },
        )?;
        Ok(())
    }
}
impl_chart!(PerformanceGraphs<'_>);

// ------------------------------------------------------------------ batch scaling

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

// ------------------------------------------------------------------ baseline comparison

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
    fn group_name(&self, c: &crate::report::BaselineChange) -> String {
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
        let metrics: Vec<&str> = crate::report::Metric::ALL.iter().map(|m| m.name()).collect();
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

// ------------------------------------------------------------------ where the GPU time goes

/// One horizontal 100% stacked bar per profiled run (GPU time by category), and below it the
/// top kernels of each run by total time.
pub struct GpuTimeChart<'a> {
    data: &'a ReportData,
    entries: &'a [GpuTimeEntry],
}

impl<'a> GpuTimeChart<'a> {
    pub fn new(data: &'a ReportData, entries: &'a [GpuTimeEntry]) -> Self {
        GpuTimeChart { data, entries }
    }
    const W: i32 = 1400;
    const TOP: i32 = 100;
    const LEGEND_H: i32 = 40;
    const BAR_H: i32 = 36;
    const BAR_GAP: i32 = 14;
    const LABEL_W: i32 = 300;
    const ROW_H: i32 = 26;
    /// Kernel-name characters shown in the table.
    const NAME_CHARS: usize = 74;
    /// Columns of the kernel table: (header, width, right-aligned).
    const COLS: [(&'static str, i32, bool); 6] =
        [("Run", 250, false), ("#", 30, true), ("Kernel", 640, false), ("Category", 200, false), ("Total (ms)", 100, true), ("Calls", 80, true)];

    fn kernel_rows(&self) -> usize {
        self.entries.iter().map(|e| e.kernels.len().max(1)).sum()
    }
    fn bars_bottom(&self) -> i32 {
        Self::TOP + Self::LEGEND_H + (Self::BAR_H + Self::BAR_GAP) * self.entries.len() as i32 + 24
    }
    fn dims(&self) -> (u32, u32) {
        let h = self.bars_bottom() + 44 + Self::ROW_H * (self.kernel_rows() as i32 + 1) + 50;
        (Self::W as u32, h as u32)
    }

    fn category_color(i: usize) -> RGBColor {
        // gemm, attention, norm+elementwise, memcpy, other.
        [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[3], RGBColor(160, 160, 160)][i]
    }
    fn text_on(c: RGBColor) -> RGBColor {
        let luma = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
        if luma < 140.0 {
            WHITE
        } else {
            TEXT
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult {
        header(root, "Where the GPU time goes", &format!("{} — share of GPU time per category (Nsight Systems)", self.data.subtitle()))?;
        let x0 = 40;
        let bar_x0 = x0 + Self::LABEL_W;
        let bar_w = Self::W - bar_x0 - 40;
        // Legend.
        let mut lx = bar_x0;
        let ly = Self::TOP + 8;
        for (i, c) in GpuTimeCategory::ALL.iter().enumerate() {
            let col = Self::category_color(i);
            root.draw(&Rectangle::new([(lx, ly), (lx + 18, ly + 18)], col.filled())).map_err(e)?;
            root.draw(&Rectangle::new([(lx, ly), (lx + 18, ly + 18)], TEXT.stroke_width(1))).map_err(e)?;
            root.draw_text(c.label(), &font(15.0).pos(Pos::new(HPos::Left, VPos::Center)), (lx + 24, ly + 9)).map_err(e)?;
            let tw = root.estimate_text_size(c.label(), &font(15.0)).map(|s| s.0 as i32).unwrap_or(9 * c.label().len() as i32);
            lx += 24 + tw + 30;
        }
        // Bars.
        for (r, entry) in self.entries.iter().enumerate() {
            let y = Self::TOP + Self::LEGEND_H + (Self::BAR_H + Self::BAR_GAP) * r as i32;
            root.draw_text(&entry.label, &bold(15.0).pos(Pos::new(HPos::Left, VPos::Center)), (x0, y + Self::BAR_H / 2 - 8)).map_err(e)?;
            let total_ms = entry.split.total_ns() as f64 / 1e6;
            root.draw_text(&format!("{total_ms:.1} ms GPU time"), &font(13.0).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center)), (x0, y + Self::BAR_H / 2 + 10))
                .map_err(e)?;
            let mut x = bar_x0 as f64;
            for (i, (_, pct)) in entry.percents().iter().enumerate() {
                if *pct <= 0.0 {
                    continue;
                }
                let w = bar_w as f64 * pct / 100.0;
                let (xa, xb) = (x.round() as i32, (x + w).round() as i32);
                let col = Self::category_color(i);
                root.draw(&Rectangle::new([(xa, y), (xb, y + Self::BAR_H)], col.filled())).map_err(e)?;
                root.draw(&Rectangle::new([(xa, y), (xb, y + Self::BAR_H)], WHITE.stroke_width(1))).map_err(e)?;
                let label = format!("{pct:.0}%");
                if xb - xa >= 28 {
                    root.draw_text(&label, &bold(if xb - xa >= 40 { 14.0 } else { 12.0 }).color(&Self::text_on(col)).pos(Pos::new(HPos::Center, VPos::Center)), ((xa + xb) / 2, y + Self::BAR_H / 2))
                        .map_err(e)?;
                }
                x += w;
            }
            if entry.split.total_ns() == 0 {
                root.draw_text("no GPU time recorded", &font(14.0).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center)), (bar_x0, y + Self::BAR_H / 2)).map_err(e)?;
            }
            root.draw(&Rectangle::new([(bar_x0, y), (bar_x0 + bar_w, y + Self::BAR_H)], GRID.stroke_width(1))).map_err(e)?;
        }
        // Top kernels table.
        let ty = self.bars_bottom();
        root.draw_text(&format!("Top {TOP_KERNELS} kernels by total GPU time"), &bold(18.0), (x0, ty)).map_err(e)?;
        let y0 = ty + 34;
        let total_w: i32 = Self::COLS.iter().map(|c| c.1).sum();
        root.draw(&Rectangle::new([(x0, y0), (x0 + total_w, y0 + Self::ROW_H)], HEADER_BG.filled())).map_err(e)?;
        let mut x = x0;
        for (h, w, right) in Self::COLS {
            let (pos, tx) = if right { (HPos::Right, x + w - 8) } else { (HPos::Left, x + 8) };
            root.draw_text(h, &bold(14.0).pos(Pos::new(pos, VPos::Center)), (tx, y0 + Self::ROW_H / 2)).map_err(e)?;
            x += w;
        }
        let mut row = 1;
        for (ei, entry) in self.entries.iter().enumerate() {
            let first_y = y0 + Self::ROW_H * row;
            if ei > 0 {
                root.draw(&PathElement::new(vec![(x0, first_y), (x0 + total_w, first_y)], GRID.stroke_width(1))).map_err(e)?;
            }
            let cells: Vec<Vec<String>> = if entry.kernels.is_empty() {
                vec![vec![entry.label.clone(), String::new(), "no kernel statistics in this profile".into(), String::new(), String::new(), String::new()]]
            } else {
                entry
                    .kernels
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        vec![
                            if i == 0 { entry.label.clone() } else { String::new() },
                            (i + 1).to_string(),
                            truncate_name(&k.name, Self::NAME_CHARS),
                            k.category.label().to_string(),
                            format!("{:.2}", k.total_time_ns as f64 / 1e6),
                            k.instances.to_string(),
                        ]
                    })
                    .collect()
            };
            for cellrow in cells {
                let y = y0 + Self::ROW_H * row;
                if row % 2 == 0 {
                    root.draw(&Rectangle::new([(x0 + Self::COLS[0].1, y), (x0 + total_w, y + Self::ROW_H)], STRIPE_BG.filled())).map_err(e)?;
                }
                let mut x = x0;
                for (ci, (_, w, right)) in Self::COLS.iter().enumerate() {
                    let (pos, tx) = if *right { (HPos::Right, x + w - 8) } else { (HPos::Left, x + 8) };
                    let style = if ci == 0 { bold(14.0) } else { font(14.0) };
                    root.draw_text(&cellrow[ci], &style.pos(Pos::new(pos, VPos::Center)), (tx, y + Self::ROW_H / 2)).map_err(e)?;
                    x += w;
                }
                row += 1;
            }
        }
        let bottom = y0 + Self::ROW_H * row;
        root.draw(&PathElement::new(vec![(x0, y0), (x0 + total_w, y0)], TEXT.stroke_width(2))).map_err(e)?;
        root.draw(&PathElement::new(vec![(x0, y0 + Self::ROW_H), (x0 + total_w, y0 + Self::ROW_H)], TEXT.stroke_width(1))).map_err(e)?;
        root.draw(&PathElement::new(vec![(x0, bottom), (x0 + total_w, bottom)], TEXT.stroke_width(2))).map_err(e)?;
        root.draw_text(
            "Shares are of all GPU busy time (kernels + memory operations); long kernel names are cut to fit; the JSON report has them in full.",
            &font(13.0).color(&MUTED),
            (x0, bottom + 14),
        )
        .map_err(e)?;
        Ok(())
    }
}
impl_chart!(GpuTimeChart<'_>);
