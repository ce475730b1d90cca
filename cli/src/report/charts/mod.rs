//! The report's charts, drawn with plotters on a bitmap (PNG) or SVG backend: the comparison
//! table as an image, the demo's four performance graphs, batch scaling and the baseline
//! comparison. Text is rendered with an embedded DejaVu Sans (plotters' `ab_glyph` feature),
//! so charts render the same on a machine with no fonts and no fontconfig.
//!
//! One file per chart; `draw` holds the drawing helpers they share and `chart` the `Chart`
//! trait with PNG/SVG saving.

mod draw;
mod chart;
pub mod comparison_table;
pub mod performance_graphs;
pub mod batch_scaling;
pub mod baseline;
pub mod gpu_time;
pub mod telemetry;
pub mod serve;

pub use self::baseline::BaselineChart;
pub use self::batch_scaling::BatchScaling;
pub use self::chart::{save_png, save_svg, Chart};
pub use self::comparison_table::ComparisonTable;
pub use self::draw::{ensure_fonts, PALETTE};
pub use self::gpu_time::GpuTimeChart;
pub use self::performance_graphs::PerformanceGraphs;
pub use self::telemetry::{telemetry_lines, TelemetryChart};
pub use self::serve::{ServeGoodput, ServeLatency, ServePareto, ServeTimeline};

#[cfg(test)]
mod tests;
