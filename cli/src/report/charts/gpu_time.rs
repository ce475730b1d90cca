//! Where the GPU time goes (`gpu_time_<ts>.png`): GPU time by category per profiled run and
//! the top kernels.

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::gpu_time::{GpuTimeEntry, TOP_KERNELS};
use crate::report::model::ReportData;
use crate::report::table::truncate_name;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tokbench_core::report::GpuTimeCategory;

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
        // gemm, attention, norm+elementwise, memcpy, sampling, other (GpuTimeCategory::ALL).
        [PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[3], PALETTE[4], RGBColor(160, 160, 160)][i]
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
            root.draw_text(&format!("{total_ms:.1} ms GPU time, {}", entry.scope), &font(13.0).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center)), (x0, y + Self::BAR_H / 2 + 10))
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
