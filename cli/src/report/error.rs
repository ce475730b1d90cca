//! What can go wrong while building or writing a report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no runs to report on: {0}")]
    NoRuns(String),
    #[error("cannot write {path}: {source}. Check that the directory is writable or pass another --out")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot draw {path}: {detail}")]
    Plot { path: PathBuf, detail: String },
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
