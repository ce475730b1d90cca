//! Drawing helpers shared by the charts: the embedded fonts, colours, the title header, word
//! wrap, legends, number formats, grouped bar panels and message panels.

use crate::report::model::{Grouping, Row};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::Once;

/// DejaVu Sans (Bitstream Vera licence, see assets/DejaVu-LICENSE.txt).
static FONT_REGULAR: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
static FONT_BOLD: &[u8] = include_bytes!("../../../assets/DejaVuSans-Bold.ttf");
pub(super) const FAMILY: &str = "sans-serif";

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

pub(super) type PResult<T = ()> = Result<T, String>;
pub(super) fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

/// Series colours: the Okabe–Ito colour-blind-safe set (without its yellow, too faint on white):
/// blue, orange, bluish green, vermillion, reddish purple, sky blue, black. Colours repeat after
/// seven series; [`style`] pairs each with a marker so that colour × marker stays unique.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(40, 40, 40),
];

/// Marker shapes, told apart without colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
    Cross,
}
pub const MARKERS: [Marker; 5] = [Marker::Circle, Marker::Triangle, Marker::Square, Marker::Diamond, Marker::Cross];

/// How one series is drawn: a colour and a marker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesStyle {
    pub color: RGBColor,
    pub marker: Marker,
}

/// The style of series `i`: colour `i mod 7`, marker `i mod 5`. As 7 and 5 are coprime, the
/// first 35 series all get different colour × marker pairs, and neighbours differ in both.
pub fn style(i: usize) -> SeriesStyle {
    SeriesStyle { color: PALETTE[i % PALETTE.len()], marker: MARKERS[i % MARKERS.len()] }
}

/// Whether series styles need their markers to be told apart (more series than colours).
pub(super) fn colours_repeat(n: usize) -> bool {
    n > PALETTE.len()
}

pub(super) const TEXT: RGBColor = RGBColor(25, 25, 25);
pub(super) const MUTED: RGBColor = RGBColor(90, 90, 90);
pub(super) const GRID: RGBColor = RGBColor(175, 175, 175);
pub(super) const HEADER_BG: RGBColor = RGBColor(222, 228, 238);
pub(super) const STRIPE_BG: RGBColor = RGBColor(246, 247, 249);
pub(super) const REGRESSION: RGBColor = RGBColor(200, 0, 0);

pub(super) fn color(i: usize) -> RGBColor {
    style(i).color
}

/// Draws `m` centred on `(x, y)` (backend pixels), `r` its half size. `hollow`: white inside
/// (on a bar of the same colour), else filled with `c`; always with a dark outline.
pub(super) fn draw_marker<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, (x, y): (i32, i32), m: Marker, c: RGBColor, r: i32, hollow: bool) -> PResult {
    let fill = if hollow { WHITE.filled() } else { c.filled() };
    let edge = TEXT.stroke_width(1);
    let poly = |pts: Vec<(i32, i32)>| -> PResult {
        area.draw(&Polygon::new(pts.clone(), fill)).map_err(e)?;
        let mut closed = pts;
        closed.push(closed[0]);
        area.draw(&PathElement::new(closed, edge)).map_err(e)
    };
    match m {
        Marker::Circle => {
            area.draw(&Circle::new((x, y), r, fill)).map_err(e)?;
            area.draw(&Circle::new((x, y), r, edge)).map_err(e)?;
        }
        Marker::Triangle => poly(vec![(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)])?,
        Marker::Square => poly(vec![(x - r + 1, y - r + 1), (x + r - 1, y - r + 1), (x + r - 1, y + r - 1), (x - r + 1, y + r - 1)])?,
        Marker::Diamond => poly(vec![(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)])?,
        Marker::Cross => {
            let k = r;
            let stroke = if hollow { TEXT.stroke_width(3) } else { c.stroke_width(4) };
            area.draw(&PathElement::new(vec![(x - k, y - k), (x + k, y + k)], stroke)).map_err(e)?;
            area.draw(&PathElement::new(vec![(x - k, y + k), (x + k, y - k)], stroke)).map_err(e)?;
        }
    }
    Ok(())
}

/// Width in pixels of `text` in `style`, measured with the real font (on a throwaway bitmap),
/// for laying out an image before it is drawn.
pub(super) fn text_width(text: &str, style: &TextStyle) -> u32 {
    ensure_fonts();
    let mut buf = vec![0u8; 3];
    let area = BitMapBackend::with_buffer(&mut buf, (1, 1)).into_drawing_area();
    area.estimate_text_size(text, style).map(|s| s.0).unwrap_or(8 * text.chars().count() as u32)
}

/// Legend entries as a grid: `widths` are the items' widths (swatch and text) in pixels; items
/// go left to right in equal columns of the widest item, as many per row as fit `max_w`.
/// Returns each item's (column x offset, row) and the number of rows.
pub(super) fn legend_layout(widths: &[u32], max_w: u32) -> (Vec<(u32, u32)>, u32) {
    if widths.is_empty() {
        return (Vec::new(), 0);
    }
    let col_w = widths.iter().copied().max().unwrap_or(0) + LEGEND_GAP;
    let ncols = (max_w / col_w.max(1)).clamp(1, widths.len() as u32);
    let pos = (0..widths.len() as u32).map(|i| ((i % ncols) * col_w, i / ncols)).collect();
    (pos, (widths.len() as u32).div_ceil(ncols))
}
const LEGEND_GAP: u32 = 26;
pub(super) const LEGEND_ROW_H: u32 = 22;
const LEGEND_FONT: f64 = 15.0;

/// How a legend item shows its series: a line with the marker, a bar swatch (with the marker
/// when `markers`), or a marker alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Swatch {
    Line,
    Bar { markers: bool },
}

fn legend_item_widths(items: &[(String, SeriesStyle)]) -> Vec<u32> {
    let style = font(LEGEND_FONT);
    items.iter().map(|(n, _)| text_width(n, &style) + 36).collect()
}

/// Height in pixels of the legend of `items` laid out in `max_w`.
pub(super) fn legend_height(items: &[(String, SeriesStyle)], max_w: u32) -> u32 {
    legend_layout(&legend_item_widths(items), max_w).1 * LEGEND_ROW_H
}

/// Draws a legend grid (see [`legend_layout`]) centred on `cx`, top at `y`, at most `max_w` wide;
/// returns its height.
pub(super) fn legend<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, cx: i32, y: i32, max_w: u32, items: &[(String, SeriesStyle)], swatch: Swatch) -> PResult<u32> {
    let widths = legend_item_widths(items);
    let (pos, rows) = legend_layout(&widths, max_w);
    let used_w = if rows > 1 { pos.iter().map(|(x, _)| *x).max().unwrap_or(0) + widths.iter().copied().max().unwrap_or(0) } else { pos.last().map_or(0, |p| p.0) + widths.last().copied().unwrap_or(0) };
    let x0 = cx - used_w as i32 / 2;
    let style = font(LEGEND_FONT);
    for (((name, s), (dx, row)), _) in items.iter().zip(&pos).zip(&widths) {
        let (x, yc) = (x0 + *dx as i32, y + (*row * LEGEND_ROW_H) as i32 + LEGEND_ROW_H as i32 / 2);
        match swatch {
            Swatch::Line => {
                root.draw(&PathElement::new(vec![(x, yc), (x + 28, yc)], s.color.stroke_width(3))).map_err(e)?;
                draw_marker(root, (x + 14, yc), s.marker, s.color, 6, false)?;
            }
            Swatch::Bar { markers } => {
                root.draw(&Rectangle::new([(x + 2, yc - 8), (x + 26, yc + 8)], s.color.filled())).map_err(e)?;
                root.draw(&Rectangle::new([(x + 2, yc - 8), (x + 26, yc + 8)], TEXT.mix(0.55).stroke_width(1))).map_err(e)?;
                if markers {
                    draw_marker(root, (x + 14, yc), s.marker, s.color, 5, true)?;
                }
            }
        }
        root.draw_text(name, &style.pos(Pos::new(HPos::Left, VPos::Center)), (x + 34, yc)).map_err(e)?;
    }
    Ok(rows * LEGEND_ROW_H)
}

/// Positions for labels that want to sit at `desired` (pixels along one axis) without overlap:
/// each label is `size` pixels long and must stay within `[lo, hi]` (its centre). Labels keep
/// their order and move as little as a simple sweep allows; when not all fit, labels are
/// dropped (None), evenly across the order of `desired`, until the rest fit.
pub(super) fn spread_labels(desired: &[f64], size: f64, lo: f64, hi: f64) -> Vec<Option<f64>> {
    let n = desired.len();
    let mut out = vec![None; n];
    if n == 0 || hi < lo {
        return out;
    }
    let fit = (((hi - lo) / size).floor() as usize + 1).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| desired[*a].total_cmp(&desired[*b]));
    // Keep `fit` labels spread evenly over the sorted order (always the first and last).
    let kept: Vec<usize> = if fit == n {
        order
    } else if fit <= 1 {
        vec![order[0]]
    } else {
        (0..fit).map(|k| order[k * (n - 1) / (fit - 1)]).collect()
    };
    let mut pos: Vec<f64> = kept.iter().map(|i| desired[*i].clamp(lo, hi)).collect();
    for k in 1..pos.len() {
        pos[k] = pos[k].max(pos[k - 1] + size);
    }
    if let Some(last) = pos.last_mut() {
        *last = last.min(hi);
    }
    for k in (0..pos.len().saturating_sub(1)).rev() {
        pos[k] = pos[k].min(pos[k + 1] - size);
    }
    for (i, p) in kept.into_iter().zip(pos) {
        out[i] = Some(p);
    }
    out
}

pub(super) fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&TEXT)
}
pub(super) fn bold(size: f64) -> TextStyle<'static> {
    (FAMILY, size, FontStyle::Bold).into_font().color(&TEXT)
}

/// Title and subtitle at the top of the image; returns the area below them.
pub(super) fn header<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, subtitle: &str) -> PResult<DrawingArea<DB, Shift>> {
    root.fill(&WHITE).map_err(e)?;
    let (w, _) = root.dim_in_pixel();
    root.draw_text(title, &bold(30.0).pos(Pos::new(HPos::Center, VPos::Top)), (w as i32 / 2, 14)).map_err(e)?;
    root.draw_text(subtitle, &font(17.0).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Top)), (w as i32 / 2, 54)).map_err(e)?;
    Ok(root.margin(86, 0, 0, 0))
}

/// Greedy word wrap to `max_px` using the font's real advance widths.
pub(super) fn wrap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, style: &TextStyle, max_px: u32) -> Vec<String> {
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

/// Compact number for labels on bars.
pub(super) fn num(v: f64) -> String {
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

pub(super) fn axis_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A horizontal grouped bar chart: categories down the y axis (one band each, first on top),
/// one bar per series in each band, values along x. Horizontal so that any number of
/// categories stays readable: names need no rotation and every bar's value label has its own
/// line, so labels never collide; the image grows in height, not width.
pub(super) struct Bars<'a> {
    pub(super) title: String,
    /// What the values are, under the x axis.
    pub(super) value_desc: String,
    pub(super) categories: Vec<String>,
    pub(super) series: Vec<String>,
    /// How each series is drawn; empty: [`style`]`(i)`.
    pub(super) styles: Vec<SeriesStyle>,
    /// values[category][series]
    pub(super) values: Vec<Vec<Option<f64>>>,
    /// Text drawn at the foot of an empty cell (e.g. "no GPU"); None: leave the slot empty.
    pub(super) missing_text: Option<&'a str>,
    /// Dashed vertical reference line (value, label).
    pub(super) threshold: Option<(f64, String)>,
    /// Smallest upper end of the value axis (e.g. 100 for percentages).
    pub(super) max: Option<f64>,
    pub(super) value_suffix: &'a str,
    /// Error bars (95% confidence intervals), errors[category][series] = [low, high]; empty: none.
    pub(super) errors: Vec<Vec<Option<[f64; 2]>>>,
}

/// Pixels per bar and between category bands of [`Bars`].
pub(super) const BAR_PX: u32 = 20;
const BAND_GAP_PX: u32 = 14;
const CAPTION_PX: u32 = 40;
const X_AXIS_PX: u32 = 62;
const CATEGORY_LABEL_MAX_PX: u32 = 230;
const VALUE_FONT: f64 = 14.0;
const CATEGORY_FONT: f64 = 15.0;

impl Bars<'_> {
    fn series_style(&self, s: usize) -> SeriesStyle {
        self.styles.get(s).copied().unwrap_or_else(|| style(s))
    }
    fn legend_items(&self) -> Vec<(String, SeriesStyle)> {
        if self.series.len() > 1 || self.series.first().is_some_and(|s| !s.is_empty()) {
            self.series.iter().enumerate().map(|(i, n)| (n.clone(), self.series_style(i))).collect()
        } else {
            Vec::new()
        }
    }
    /// Height of the bands (all categories), in pixels.
    fn plot_height(&self) -> u32 {
        self.categories.len().max(1) as u32 * (self.series.len().max(1) as u32 * BAR_PX + BAND_GAP_PX)
    }
    /// The panel height these bars need at `width` pixels.
    pub(super) fn height(&self, width: u32) -> u32 {
        let threshold = if self.threshold.is_some() { 22 } else { 0 };
        CAPTION_PX + legend_height(&self.legend_items(), width.saturating_sub(40)) + 8 + threshold + self.plot_height() + X_AXIS_PX + 16
    }
    fn label(&self, v: f64) -> String {
        format!("{}{}", num(v), self.value_suffix)
    }
}

pub(super) fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, area: &DrawingArea<DB, Shift>, b: &Bars) -> PResult {
    let ncat = b.categories.len().max(1);
    let nser = b.series.len().max(1);
    let (aw, _) = area.dim_in_pixel();
    let (ax, ay) = (area.get_base_pixel().0, area.get_base_pixel().1);
    // Caption and legend.
    root.draw_text(&b.title, &bold(20.0).pos(Pos::new(HPos::Center, VPos::Top)), (ax + aw as i32 / 2, ay + 8)).map_err(e)?;
    let items = b.legend_items();
    let markers = colours_repeat(nser);
    let legend_h = legend(root, ax + aw as i32 / 2, ay + CAPTION_PX as i32, aw.saturating_sub(40), &items, Swatch::Bar { markers })?;
    let threshold_h = if b.threshold.is_some() { 22 } else { 0 };
    let top = CAPTION_PX + legend_h + 8 + threshold_h;

    // Left label column: the widest wrapped category name.
    let cat_style = font(CATEGORY_FONT);
    let cat_lines: Vec<Vec<String>> = b.categories.iter().map(|c| wrap(root, c, &cat_style, CATEGORY_LABEL_MAX_PX)).collect();
    let label_w = cat_lines.iter().flatten().map(|l| text_width(l, &cat_style)).max().unwrap_or(60).min(CATEGORY_LABEL_MAX_PX) + 18;

    let max_bar = b.values.iter().flatten().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(*v));
    let max_err = b.errors.iter().flatten().flatten().map(|[_, hi]| *hi).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let widest_value = b.values.iter().flatten().flatten().filter(|v| v.is_finite()).map(|v| text_width(&b.label(*v), &font(VALUE_FONT))).max().unwrap_or(40);
    // Room right of the longest bar for its label (and a marker): scale the axis so it fits.
    let plot_w = aw.saturating_sub(label_w + 14 + 30).max(200) as f64;
    let room = (widest_value + 16) as f64;
    let mut x_top = max_bar.max(max_err) * plot_w / (plot_w - room).max(plot_w * 0.5) * 1.02;
    if let Some(m) = b.max {
        x_top = x_top.max(m);
    }
    if let Some((t, _)) = &b.threshold {
        x_top = x_top.max(t * 1.05);
    }
    if x_top <= 0.0 || !x_top.is_finite() {
        x_top = 1.0;
    }
    let inner = area.margin(top, 16, 14, 30);
    let mut chart = ChartBuilder::on(&inner)
        .x_label_area_size(X_AXIS_PX)
        .y_label_area_size(label_w)
        .build_cartesian_2d(0f64..x_top, 0f64..ncat as f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(8)
        .x_desc(&b.value_desc)
        .x_label_formatter(&|v| axis_num(*v))
        .max_light_lines(1)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_desc_style(font(15.0))
        .label_style(font(14.0))
        .draw()
        .map_err(e)?;
    let px_per_band = b.plot_height() as f64 / ncat as f64;
    let gap = BAND_GAP_PX as f64 / px_per_band;
    let bar = BAR_PX as f64 / px_per_band;
    // Band of category ci: from y = ncat - ci (top) down to ncat - ci - 1.
    let bar_y = |ci: usize, s: usize| -> (f64, f64) {
        let top = (ncat - ci) as f64 - gap / 2.0 - s as f64 * bar;
        (top - bar * 0.86, top)
    };
    // Separators between bands, and the category names.
    for (ci, lines) in cat_lines.iter().enumerate() {
        if ci > 0 {
            let y = (ncat - ci) as f64;
            chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, y), (x_top, y)], RGBColor(225, 225, 225).stroke_width(1)))).map_err(e)?;
        }
        let (px, py) = chart.backend_coord(&(0.0, (ncat - ci) as f64 - 0.5));
        let y0 = py - (lines.len() as i32 - 1) * 9;
        for (li, line) in lines.iter().enumerate() {
            root.draw_text(line, &cat_style.pos(Pos::new(HPos::Right, VPos::Center)), (px - 10, y0 + 18 * li as i32)).map_err(e)?;
        }
    }
    let value_style = font(VALUE_FONT).pos(Pos::new(HPos::Left, VPos::Center));
    let (_, plot_right) = {
        let (l, _) = chart.backend_coord(&(0.0, 0.0));
        let (r, _) = chart.backend_coord(&(x_top, 0.0));
        (l, r)
    };
    for (ci, row) in b.values.iter().enumerate() {
        for s in 0..nser {
            let st = b.series_style(s);
            let (y0, y1) = bar_y(ci, s);
            let ym = (y0 + y1) / 2.0;
            match row.get(s).copied().flatten() {
                // A run with no value for this metric (NaN marks it): say why at the foot.
                Some(v) if v.is_nan() => {
                    if let Some(t) = b.missing_text {
                        let (px, py) = chart.backend_coord(&(0.0, ym));
                        root.draw_text(t, &font(VALUE_FONT).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center)), (px + 6, py)).map_err(e)?;
                    }
                }
                Some(v) => {
                    chart.draw_series([Rectangle::new([(0.0, y0), (v, y1)], st.color.filled()), Rectangle::new([(0.0, y0), (v, y1)], TEXT.mix(0.55).stroke_width(1))]).map_err(e)?;
                    let err = b.errors.get(ci).and_then(|r| r.get(s).copied().flatten()).filter(|[lo, hi]| lo.is_finite() && hi.is_finite());
                    if let Some([lo, hi]) = err {
                        let (lo, cap) = (lo.max(0.0), (y1 - y0) * 0.32);
                        chart
                            .draw_series([
                                PathElement::new(vec![(lo, ym), (hi, ym)], TEXT.stroke_width(2)),
                                PathElement::new(vec![(lo, ym - cap), (lo, ym + cap)], TEXT.stroke_width(2)),
                                PathElement::new(vec![(hi, ym - cap), (hi, ym + cap)], TEXT.stroke_width(2)),
                            ])
                            .map_err(e)?;
                    }
                    let (bx0, by) = chart.backend_coord(&(0.0, ym));
                    if markers {
                        draw_marker(root, (bx0 + 10, by), st.marker, st.color, 5, true)?;
                    }
                    // The value right of the bar and its whisker; inside the bar's end if that
                    // would run off the plot.
                    let end = err.map_or(v, |[_, hi]| hi.max(v));
                    let (ex, _) = chart.backend_coord(&(end, ym));
                    let text = b.label(v);
                    let tw = text_width(&text, &font(VALUE_FONT)) as i32;
                    if ex + 6 + tw <= plot_right + 24 {
                        root.draw_text(&text, &value_style, (ex + 6, by)).map_err(e)?;
                    } else {
                        let (vx, _) = chart.backend_coord(&(v, ym));
                        let on = if luma(st.color) < 140.0 { WHITE } else { TEXT };
                        root.draw_text(&text, &font(VALUE_FONT).color(&on).pos(Pos::new(HPos::Right, VPos::Center)), (vx - 6, by)).map_err(e)?;
                    }
                }
                None => {}
            }
        }
    }
    if let Some((t, label)) = &b.threshold {
        chart.draw_series(DashedLineSeries::new(vec![(*t, 0.0), (*t, ncat as f64)], 10, 6, REGRESSION.stroke_width(2))).map_err(e)?;
        let (px, py) = chart.backend_coord(&(*t, ncat as f64));
        root.draw_text(label, &font(14.0).color(&REGRESSION).pos(Pos::new(HPos::Center, VPos::Bottom)), (px, py - 4)).map_err(e)?;
    }
    Ok(())
}

/// Perceived lightness (0–255) of a colour, to pick text on it.
pub(super) fn luma(c: RGBColor) -> f64 {
    0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64
}

/// A framed panel with a centred message instead of a chart (e.g. GPU memory on CPU runs).
pub(super) fn message_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, lines: &[&str]) -> PResult {
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
pub(super) fn grouped_values(g: &Grouping, rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Vec<Vec<Option<f64>>> {
    g.cells.iter().map(|cells| cells.iter().map(|c| c.map(|i| f(&rows[i]).unwrap_or(f64::NAN))).collect()).collect()
}

/// Per cell of the grouping, an interval of its run (error bars).
pub(super) fn grouped_intervals(g: &Grouping, rows: &[Row], f: impl Fn(&Row) -> Option<[f64; 2]>) -> Vec<Vec<Option<[f64; 2]>>> {
    g.cells.iter().map(|cells| cells.iter().map(|c| c.and_then(|i| f(&rows[i]))).collect()).collect()
}
