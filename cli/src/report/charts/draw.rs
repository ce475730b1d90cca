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
pub(super) const TEXT: RGBColor = RGBColor(25, 25, 25);
pub(super) const MUTED: RGBColor = RGBColor(90, 90, 90);
pub(super) const GRID: RGBColor = RGBColor(175, 175, 175);
pub(super) const HEADER_BG: RGBColor = RGBColor(222, 228, 238);
pub(super) const STRIPE_BG: RGBColor = RGBColor(246, 247, 249);
pub(super) const REGRESSION: RGBColor = RGBColor(200, 0, 0);

pub(super) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
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

/// A horizontal legend (swatch + name per item), centred on `cx`, top at `y`, in absolute pixels.
pub(super) fn legend_row<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, cx: i32, y: i32, items: &[(String, RGBColor)], line: bool) -> PResult {
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
pub(super) struct Bars<'a> {
    pub(super) title: String,
    pub(super) y_desc: String,
    pub(super) categories: Vec<String>,
    pub(super) series: Vec<String>,
    /// values[category][series]
    pub(super) values: Vec<Vec<Option<f64>>>,
    /// Text drawn at the foot of an empty cell (e.g. "no GPU"); None: leave the slot empty.
    pub(super) missing_text: Option<&'a str>,
    /// Dashed horizontal reference line (value, label).
    pub(super) threshold: Option<(f64, String)>,
    pub(super) y_max: Option<f64>,
    pub(super) value_suffix: &'a str,
    /// Error bars (95% confidence intervals), errors[category][series] = [low, high]; empty: none.
    pub(super) errors: Vec<Vec<Option<[f64; 2]>>>,
}

pub(super) fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, area: &DrawingArea<DB, Shift>, b: &Bars) -> PResult {
    let ncat = b.categories.len().max(1);
    let nser = b.series.len().max(1);
    let max_bar = b.values.iter().flatten().flatten().filter(|v| !v.is_nan()).fold(0.0f64, |m, v| m.max(*v));
    let max_err = b.errors.iter().flatten().flatten().map(|[_, hi]| *hi).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let max_val = max_bar.max(max_err);
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
                    // Above the error bar when there is one, so the two do not collide.
                    let top = b.errors.get(ci).and_then(|r| r.get(s).copied().flatten()).map_or(v, |[_, hi]| hi.max(v));
                    labels.push(((x0 + x1) / 2.0, top, format!("{}{}", num(v), b.value_suffix)));
                }
                None => {}
            }
        }
        chart.draw_series(rects).map_err(e)?;
        // The interval as a vertical line with caps across the middle half of the bar.
        let mut whiskers = Vec::new();
        for (ci, row) in b.errors.iter().enumerate() {
            if let Some([lo, hi]) = row.get(s).copied().flatten().filter(|[lo, hi]| lo.is_finite() && hi.is_finite()) {
                let x0 = ci as f64 + (1.0 - group_w) / 2.0 + s as f64 * bar_w;
                let (xm, cap) = (x0 + bar_w * 0.46, bar_w * 0.2);
                let lo = lo.max(0.0);
                whiskers.push(PathElement::new(vec![(xm, lo), (xm, hi)], TEXT.stroke_width(2)));
                whiskers.push(PathElement::new(vec![(xm - cap, lo), (xm + cap, lo)], TEXT.stroke_width(2)));
                whiskers.push(PathElement::new(vec![(xm - cap, hi), (xm + cap, hi)], TEXT.stroke_width(2)));
            }
        }
        chart.draw_series(whiskers).map_err(e)?;
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
