//! Errors of the load generator. Input errors name the file, the line and the fix, because the
//! person reading them is usually pointing a benchmark at a dataset they just downloaded.

use std::path::PathBuf;

/// Everything that can stop a benchmark before or while it runs. Per-request failures (a 500, a
/// dropped connection) are *not* errors of this type: they are recorded in
/// [`crate::RequestRecord::error`] and counted as failed requests, as vLLM does.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A dataset or trace file could not be read at all.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset or trace file was read but a line (1-based; 0 = the whole file) is not what the
    /// format expects.
    #[error("{path}:{line}: {message} (fix: {fix})")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
        fix: String,
    },
    /// A parameter is out of range (negative rate, empty length range, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A `--goodput` specification could not be parsed.
    #[error("invalid goodput specification {spec:?}: {message} (expected e.g. \"ttft:200 tpot:50 e2el:2000\", milliseconds; keys ttft, tpot, e2el)")]
    Goodput { spec: String, message: String },
    /// The HTTP client could not be built (TLS backend, bad endpoint URL).
    #[error("HTTP client: {0}")]
    Client(String),
}

impl LoadgenError {
    pub(crate) fn parse(
        path: impl Into<PathBuf>,
        line: usize,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        LoadgenError::Parse {
            path: path.into(),
            line,
            message: message.into(),
            fix: fix.into(),
        }
    }
}
