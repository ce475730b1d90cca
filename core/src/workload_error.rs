//! The error of a job description that cannot run (shared by the workload, the sweep and the
//! serve spec, which all stand above it).

/// A workload (or sweep) that cannot run; the message names the field, the limit and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WorkloadError(pub String);

pub(crate) fn refuse<T>(message: String) -> Result<T, WorkloadError> {
    Err(WorkloadError(message))
}
