//! The `Chart` trait (a chart drawn on any plotters backend) and saving a chart as PNG or SVG.

use crate::report::charts::draw::{ensure_fonts, PResult};
use crate::report::error::ReportError;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// A chart that can be drawn on any plotters backend.
pub trait Chart {
    /// Image size in pixels.
    fn size(&self) -> (u32, u32);
    fn draw_bitmap(&self, root: &DrawingArea<BitMapBackend<'_>, Shift>) -> PResult;
    fn draw_svg(&self, root: &DrawingArea<SVGBackend<'_>, Shift>) -> PResult;
}

/// `impl Chart` for a type with `dims(&self) -> (u32, u32)` and a generic
/// `draw<DB: DrawingBackend>(&self, root) -> PResult`.
macro_rules! impl_chart {
    ($t:ty) => {
        impl $crate::report::charts::chart::Chart for $t {
            fn size(&self) -> (u32, u32) {
                self.dims()
            }
            fn draw_bitmap(
                &self,
                root: &::plotters::prelude::DrawingArea<::plotters::prelude::BitMapBackend<'_>, ::plotters::coord::Shift>,
            ) -> $crate::report::charts::draw::PResult {
                self.draw(root)
            }
            fn draw_svg(
                &self,
                root: &::plotters::prelude::DrawingArea<::plotters::prelude::SVGBackend<'_>, ::plotters::coord::Shift>,
            ) -> $crate::report::charts::draw::PResult {
                self.draw(root)
            }
        }
    };
}
pub(super) use impl_chart;

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
