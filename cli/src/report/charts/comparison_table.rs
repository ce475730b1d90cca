//! The comparison table as an image (`comparison_table_<ts>.png`).

use crate::report::charts::chart::impl_chart;
use crate::report::charts::draw::*;
use crate::report::model::ReportData;
use crate::report::table::comparison_table;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
        let (header, rows) = comparison_table(self.data);
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
        let (header_cells, rows) = comparison_table(self.data);
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
        let mut notes = vec!["Times are medians over the timed repetitions. GPU Mem = memory allocated by the model; GPU Mem Used = device memory used / total; SM Util = NVML SM utilisation, mean over the job."];
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
