//! Turning stored runs into a report.
//!
//! The model (what is computed from the runs): `serve` (serving runs: their rows and exports), `model` (one row of figures per run, the chart
//! grouping), `baseline` (the comparison with a baseline sweep) and `gpu_time` (where the GPU
//! time goes in profiled runs). Rendering: `table` (cell text), `markdown`, `csv`, `charts`
//! (PNG/SVG, one file per chart), and `write`, which writes them all (and the JSON) into one
//! directory with one timestamp. Each module uses only those listed before it.

pub mod error;
pub mod model;
pub mod baseline;
pub mod gpu_time;
pub mod table;
pub mod markdown;
pub mod csv;
pub mod serve;
pub mod charts;
pub mod write;

pub use self::baseline::{compare_baseline, BaselineChange, BaselineComparison, Metric, REGRESSION_THRESHOLD_PERCENT};
pub use self::csv::csv_bytes;
pub use self::error::ReportError;
pub use self::gpu_time::{gpu_time_entries, GpuTimeEntry, TOP_KERNELS};
pub use self::markdown::{baseline_markdown, gpu_time_markdown, markdown};
pub use self::model::{canonical_model, human_params, short_id, GroupBy, Grouping, ReportData, Row, RunRecord};
pub use self::table::{comparison_table, fmt_opt, truncate_name};
pub use self::serve::{serve_csv_bytes, serve_markdown, ServeData, ServeRow};
pub use self::write::{now_timestamp, write_report, ReportOptions, WrittenReport};
