//! The attempt history (`attempts` table): which worker held which attempt of a job, when, and
//! how it ended; and the one rule built on it: a completion, failure, heartbeat or artifact
//! upload is accepted only from the worker that held that attempt (a stale attempt whose lease
//! expired included, but only from its own worker).

use serde_json::Value;
use sqlx::sqlite::SqliteConnection;

use super::{Result, Store, StoreError};

/// How an attempt ended (the `attempts.outcome` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// Failed retryably: the job went back to the queue.
    Retried,
    /// Its lease expired: the worker stopped heartbeating.
    Expired,
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::Expired => "expired",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// One row of the attempt history.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AttemptRow {
    pub job_id: String,
    pub attempt: i64,
    pub worker_id: String,
    pub leased_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: Option<String>,
}

impl Store {
    /// A job's attempts, oldest first.
    pub async fn attempts_of(&self, job_id: &str) -> Result<Vec<AttemptRow>> {
        Ok(sqlx::query_as("SELECT job_id, attempt, worker_id, leased_at, ended_at, outcome FROM attempts WHERE job_id = ? ORDER BY attempt")
            .bind(job_id)
            .fetch_all(&self.reader)
            .await?)
    }

    /// Ok when `worker_id` held attempt `attempt` of `job_id` (read-only; for uploads).
    pub async fn check_attempt_holder(&self, job_id: &str, attempt: u32, worker_id: &str) -> Result<()> {
        let mut c = self.reader.acquire().await?;
        check_holder(&mut c, job_id, attempt, worker_id).await
    }
}

/// Records that `worker_id` leased attempt `attempt` of `job_id`.
pub(super) async fn record_lease(c: &mut SqliteConnection, job_id: &str, attempt: i64, worker_id: &str, now: i64) -> Result<()> {
    sqlx::query("INSERT INTO attempts (job_id, attempt, worker_id, leased_at) VALUES (?, ?, ?, ?)")
        .bind(job_id)
        .bind(attempt)
        .bind(worker_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Ends attempt `attempt` of `job_id` with `outcome` (an attempt that already ended keeps its
/// first outcome).
pub(super) async fn end_attempt(c: &mut SqliteConnection, job_id: &str, attempt: i64, outcome: AttemptOutcome, now: i64) -> Result<()> {
    sqlx::query("UPDATE attempts SET ended_at = ?, outcome = ? WHERE job_id = ? AND attempt = ? AND ended_at IS NULL")
        .bind(now)
        .bind(outcome.as_str())
        .bind(job_id)
        .bind(attempt)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Marks attempt `attempt` of `job_id` succeeded: it produced the job's run. This overrides an
/// earlier `expired` (a stale attempt may finish after its lease expired).
pub(super) async fn attempt_succeeded(c: &mut SqliteConnection, job_id: &str, attempt: i64, now: i64) -> Result<()> {
    sqlx::query("UPDATE attempts SET ended_at = ?, outcome = 'succeeded' WHERE job_id = ? AND attempt = ?").bind(now).bind(job_id).bind(attempt).execute(&mut *c).await?;
    Ok(())
}

/// Ends every attempt of `job_id` still open with `outcome` (a job that succeeded through a
/// stale attempt, or was cancelled, leaves no attempt open).
pub(super) async fn end_open_attempts(c: &mut SqliteConnection, job_id: &str, outcome: AttemptOutcome, now: i64) -> Result<()> {
    sqlx::query("UPDATE attempts SET ended_at = ?, outcome = ? WHERE job_id = ? AND ended_at IS NULL")
        .bind(now)
        .bind(outcome.as_str())
        .bind(job_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Ok when `worker_id` held attempt `attempt` of `job_id`; PermissionDenied when another worker
/// did; FailedPrecondition when there is no record of that attempt; NotFound for an unknown job.
pub(super) async fn check_holder(c: &mut SqliteConnection, job_id: &str, attempt: u32, worker_id: &str) -> Result<()> {
    let holder: Option<String> =
        sqlx::query_scalar("SELECT worker_id FROM attempts WHERE job_id = ? AND attempt = ?").bind(job_id).bind(attempt as i64).fetch_optional(&mut *c).await?;
    match holder {
        Some(h) if h == worker_id => Ok(()),
        Some(h) => Err(StoreError::PermissionDenied(format!(
            "attempt {attempt} of job {job_id} was leased to worker \"{h}\", not to \"{worker_id}\": only the worker that ran an attempt may report on it, heartbeat it or upload its artifacts"
        ))),
        None => {
            let attempts: Option<i64> = sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&mut *c).await?;
            match attempts {
                None => Err(StoreError::NotFound(format!("no job with id \"{job_id}\""))),
                Some(n) => Err(StoreError::FailedPrecondition(format!(
                    "job {job_id} has no record of attempt {attempt} (it has had {n} attempt(s)): only an attempt leased through LeaseJob can be reported on"
                ))),
            }
        }
    }
}

/// Where the report's workload differs from the job's (the worker runs the job's workload on its
/// own device, so `device` may differ): "field: job X, report Y" per field; empty when it matches.
pub(super) fn workload_mismatches(job_workload_json: &str, report_workload: &tokbench_core::Workload) -> Vec<String> {
    let Ok(Value::Object(mut job)) = serde_json::from_str::<Value>(job_workload_json) else {
        return vec!["the job's stored workload is unreadable".into()];
    };
    let Ok(Value::Object(mut report)) = serde_json::to_value(report_workload) else {
        return vec!["the report's workload is unreadable".into()];
    };
    // A job's workload as stored and as the worker re-serialises it must compare equal: both
    // through the one struct (fields the stored JSON lacks take their defaults).
    if let Ok(parsed) = serde_json::from_value::<tokbench_core::Workload>(Value::Object(job.clone())) {
        if let Ok(Value::Object(normalised)) = serde_json::to_value(parsed) {
            job = normalised;
        }
    }
    job.remove("device");
    report.remove("device");
    let mut keys: Vec<&String> = job.keys().chain(report.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| job.get(*k) != report.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| {
                let s = v.map_or("(absent)".to_string(), |v| v.to_string());
                if s.len() > 80 {
                    format!("{}…", &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)])
                } else {
                    s
                }
            };
            format!("{k}: job {}, report {}", show(job.get(k)), show(report.get(k)))
        })
        .collect()
}
