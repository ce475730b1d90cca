//! Errors of the CLI and their exit codes: 0 ok, 1 failure (e.g. failed jobs), 2 usage / bad
//! input, 3 coordinator unreachable. Each message is one line naming the problem and the fix.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: unknown sweep/run, bad flag value, empty selection. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The coordinator cannot be reached. Exit 3.
    #[error("{0}")]
    Unreachable(String),
    /// Something failed (jobs failed, a write failed, the server erred). Exit 1.
    #[error("{0}")]
    Failure(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
    pub fn code(&self) -> u8 {
        match self {
            CliError::Failure(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
        }
    }
}

impl From<crate::report::ReportError> for CliError {
    fn from(e: crate::report::ReportError) -> Self {
        match e {
            crate::report::ReportError::NoRuns(_) => CliError::Usage(e.to_string()),
            other => CliError::Failure(other.to_string()),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// The innermost cause of an error chain ("connection refused"), for one-line messages.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string();
    // std::io errors read "Connection refused (os error 111)": keep the words.
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
