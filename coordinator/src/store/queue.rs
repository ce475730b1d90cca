//! The job queue: lease, heartbeat, complete, fail, and the reaper of expired leases.

use std::sync::LazyLock;

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::attempts::{attempt_succeeded, check_holder, end_attempt, end_open_attempts, record_lease, workload_mismatches, AttemptOutcome};
use super::rows::{Changes, JobRow, JOB_COLUMNS, JOB_RETURNING};
use super::runs::{insert_run, Completion};
use super::states::JobState;
use super::sweeps::finish_sweep_if_done;
use super::{job_by_id, now_ms, Result, Store, StoreError};

pub struct Leased {
    pub job: JobRow,
    pub lease_expires_at: i64,
    /// false: the worker already held this job (see `Store::complete`); it is handed out again,
    /// not leased anew.
    pub fresh: bool,
}

pub enum HeartbeatOutcome {
    Extended { lease_expires_at: i64, job: JobRow, started: bool },
    /// The job is not this worker's any more (cancelled, reassigned, finished).
    Cancel { reason: String },
}

pub enum CompleteOutcome {
    Stored { run_id: String, changes: Changes },
    Duplicate { run_id: String, attempt: i64 },
    /// The job was cancelled: the report is dropped (acknowledged so the worker stops retrying).
    Dropped { reason: String },
}

pub enum FailOutcome {
    Applied { will_retry: bool, changes: Changes },
    Stale { reason: String },
}

/// "And lease me my next job" with a completion.
#[derive(Debug, Clone, Copy)]
pub struct NextLease {
    pub free_bytes: u64,
    pub lease_ms: u64,
}

impl Store {
    /// Read-only pre-check so idle long polls do not write (and fsync) on every wake-up.
    pub async fn has_candidate(&self, backend: &str, free_bytes: u64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(CANDIDATE_EXISTS).bind(backend).bind(free_bytes as i64).fetch_optional(&self.reader).await?;
        Ok(found.is_some())
    }

    /// Atomically leases the oldest queued job this worker can run.
    pub async fn lease(&self, worker_id: &str, backend: &str, free_bytes: u64, lease_ms: u64) -> Result<Option<Leased>> {
        let (w, b) = (worker_id.to_string(), backend.to_string());
        self.write(move |c| Box::pin(async move { lease_in(c, &w, &b, free_bytes, lease_ms).await })).await
    }

    /// `progress`: phase, tokens done, tokens total, tokens/s, bytes done, bytes total.
    pub async fn heartbeat(&self, worker_id: &str, job_id: &str, attempt: u32, progress: (&str, u64, u64, f64, u64, u64), lease_ms: u64) -> Result<HeartbeatOutcome> {
        let (w, j, phase) = (worker_id.to_string(), job_id.to_string(), progress.0.to_string());
        let (done, total, tps, bytes_done, bytes_total) = (progress.1, progress.2, progress.3, progress.4, progress.5);
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let expires = now + lease_ms as i64;
                // Only the worker that held this attempt may heartbeat it (nothing is written otherwise).
                check_holder(c, &j, attempt, &w).await?;
                let before = sqlx::query("SELECT state, attempts, worker_id FROM jobs WHERE id = ?").bind(&j).fetch_optional(&mut *c).await?;
                let Some(before) = before else {
                    return Err(StoreError::NotFound(format!("no job with id \"{j}\"")));
                };
                let state: JobState = before.try_get("state")?;
                let attempts: i64 = before.get("attempts");
                let owner: Option<String> = before.get("worker_id");
                sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = ? WHERE id = ?").bind(now).bind(&j).bind(&w).execute(&mut *c).await?;
                let mine = attempts == attempt as i64 && owner.as_deref() == Some(w.as_str()) && state.is_held();
                if !mine {
                    let reason = if state == JobState::Cancelled {
                        "the sweep was cancelled".to_string()
                    } else if attempts != attempt as i64 || owner.as_deref() != Some(w.as_str()) {
                        format!("the lease was lost: the job is now attempt {attempts} on worker {}", owner.unwrap_or_default())
                    } else {
                        format!("the job is already {state}")
                    };
                    return Ok(HeartbeatOutcome::Cancel { reason });
                }
                let job: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(HEARTBEAT_SQL.as_str()))
                    .bind(expires)
                    .bind(&phase)
                    .bind(done as i64)
                    .bind(total as i64)
                    .bind(if tps.is_finite() { tps } else { 0.0 })
                    .bind(bytes_done.min(i64::MAX as u64) as i64)
                    .bind(bytes_total.min(i64::MAX as u64) as i64)
                    .bind(now)
                    .bind(&j)
                    .fetch_one(&mut *c)
                    .await?;
                // A leased/running job has no run (completion makes it succeeded).
                Ok(HeartbeatOutcome::Extended { lease_expires_at: expires, job, started: state == JobState::Leased })
            })
        })
        .await
    }

    /// Stores a run. Idempotent: one run per job, first report wins.
    ///
    /// With `next`, the same transaction also leases the worker its next job (one fsync for
    /// "result stored" and "next job leased"). One job per worker: if the worker still holds an
    /// active job other than the one it reports -- a retried CompleteJob whose first try leased
    /// that job and whose answer was lost -- that job is handed out again (lease extended)
    /// instead of leasing a second one. `None` when nothing is queued for it (the worker then
    /// long-polls LeaseJob) or the worker is not registered (LeaseJob will tell it).
    pub async fn complete(&self, done: Completion, next: Option<NextLease>) -> Result<(CompleteOutcome, Option<Leased>)> {
        let backend = if next.is_some() { self.cached_backend(&done.worker_id) } else { None };
        self.write(move |c| {
            Box::pin(async move {
                let outcome = complete_in(c, &done).await?;
                let leased = match next {
                    Some(n) => next_lease_in(c, &done.worker_id, &done.job_id, backend, n).await?,
                    None => None,
                };
                Ok((outcome, leased))
            })
        })
        .await
    }

    pub async fn fail(&self, worker_id: &str, job_id: &str, attempt: u32, error: &str, retryable: bool) -> Result<FailOutcome> {
        let (worker_id, job_id, error) = (worker_id.to_string(), job_id.to_string(), error.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let Some(job) = sqlx::query("SELECT state, attempts, max_attempts, worker_id, sweep_id FROM jobs WHERE id = ?").bind(&job_id).fetch_optional(&mut *c).await? else {
                    return Err(StoreError::NotFound(format!("no job with id \"{job_id}\"")));
                };
                let state: JobState = job.try_get("state")?;
                let attempts: i64 = job.get("attempts");
                let max_attempts: i64 = job.get("max_attempts");
                let owner: Option<String> = job.get("worker_id");
                let sweep_id: String = job.get("sweep_id");
                check_holder(c, &job_id, attempt, &worker_id).await?;
                if attempts != attempt as i64 || owner.as_deref() != Some(worker_id.as_str()) || !state.is_held() {
                    return Ok(FailOutcome::Stale { reason: format!("job is {state} at attempt {attempts}; this failure of attempt {attempt} changes nothing") });
                }
                let will_retry = retryable && attempts < max_attempts;
                let new_state = if will_retry { JobState::Queued } else { JobState::Failed };
                sqlx::query("UPDATE jobs SET state = ?, lease_expires_at = NULL, last_error = ?, queued_at = CASE WHEN ? = 'queued' THEN ? ELSE queued_at END, updated_at = ? WHERE id = ?")
                    .bind(new_state)
                    .bind(&error)
                    .bind(new_state)
                    .bind(now)
                    .bind(now)
                    .bind(&job_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ? AND current_job_id = ?").bind(now).bind(&worker_id).bind(&job_id).execute(&mut *c).await?;
                end_attempt(c, &job_id, attempts, if will_retry { AttemptOutcome::Retried } else { AttemptOutcome::Failed }, now).await?;
                let mut changes = Changes::default();
                changes.jobs.push(job_by_id(&mut *c, &job_id).await?);
                if !will_retry {
                    finish_sweep_if_done(c, &sweep_id, now, &mut changes).await?;
                }
                Ok(FailOutcome::Applied { will_retry, changes })
            })
        })
        .await
    }

    /// Puts jobs whose lease expired back in the queue (or fails them when out of attempts).
    pub async fn reap_expired(&self) -> Result<Changes> {
        // Cheap read first: the reaper runs every lease/3 and should not write when idle.
        let any: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE state IN ('leased', 'running') AND lease_expires_at < ? LIMIT 1").bind(now_ms()).fetch_optional(&self.reader).await?;
        if any.is_none() {
            return Ok(Changes::default());
        }
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let rows = sqlx::query(
                    "UPDATE jobs SET
                        state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        last_error = 'lease expired: worker ' || COALESCE(worker_id, '?') || ' stopped heartbeating during attempt ' || attempts
                                     || CASE WHEN attempts >= max_attempts THEN ' (no attempts left)' ELSE '' END
                                     || CASE WHEN last_error <> '' THEN '; earlier error: ' || last_error ELSE '' END,
                        queued_at = CASE WHEN attempts >= max_attempts THEN queued_at ELSE ?1 END,
                        lease_expires_at = NULL, updated_at = ?1
                     WHERE state IN ('leased', 'running') AND lease_expires_at < ?1
                     RETURNING id, sweep_id, state, attempts",
                )
                .bind(now)
                .fetch_all(&mut *c)
                .await?;
                let mut changes = Changes::default();
                let mut sweeps = Vec::new();
                for r in &rows {
                    let id: String = r.get("id");
                    end_attempt(c, &id, r.get("attempts"), AttemptOutcome::Expired, now).await?;
                    changes.jobs.push(job_by_id(&mut *c, &id).await?);
                    let sweep: String = r.get("sweep_id");
                    let state: JobState = r.try_get("state")?;
                    if state == JobState::Failed && !sweeps.contains(&sweep) {
                        sweeps.push(sweep);
                    }
                }
                for s in sweeps {
                    finish_sweep_if_done(c, &s, now, &mut changes).await?;
                }
                Ok(changes)
            })
        })
        .await
    }

    /// At start: workers could not heartbeat while the coordinator was down, so every active
    /// lease gets a fresh period instead of expiring the moment we come back.
    pub async fn refresh_leases(&self, lease_ms: u64) -> Result<u64> {
        self.write(move |c| {
            Box::pin(async move {
                let r = sqlx::query("UPDATE jobs SET lease_expires_at = ? WHERE state IN ('leased', 'running')").bind(now_ms() + lease_ms as i64).execute(&mut *c).await?;
                Ok(r.rows_affected())
            })
        })
        .await
    }
}

const CANDIDATE_EXISTS: &str = "SELECT 1 FROM jobs WHERE state = 'queued' AND (backend = '' OR backend = ?1)
       AND (?1 <> 'cuda' OR ?2 = 0 OR est_parameters * (CASE dtype_bytes WHEN 0 THEN 2 ELSE dtype_bytes END) <= ?2) LIMIT 1";

static LEASE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = 'leased', attempts = attempts + 1, worker_id = ?1, lease_expires_at = ?2, leased_at = ?3, updated_at = ?3,
                phase = '', tokens_done = 0, tokens_total = 0, tokens_per_second = 0, bytes_done = 0, bytes_total = 0
         WHERE id = (SELECT id FROM jobs
                     WHERE state = 'queued' AND (backend = '' OR backend = ?4)
                       AND (?4 <> 'cuda' OR ?5 = 0 OR est_parameters * (CASE dtype_bytes WHEN 0 THEN 2 ELSE dtype_bytes END) <= ?5)
                     ORDER BY rowid LIMIT 1)
         RETURNING {JOB_RETURNING}"
    )
});

static HEARTBEAT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = 'running', lease_expires_at = ?, phase = ?, tokens_done = ?, tokens_total = ?, tokens_per_second = ?, bytes_done = ?, bytes_total = ?, updated_at = ? WHERE id = ?
         RETURNING {JOB_RETURNING}"
    )
});

static SUCCEEDED_SQL: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, last_error = '', updated_at = ? WHERE id = ? RETURNING {JOB_RETURNING}"));

/// The active job a worker holds besides `?2` (newest lease first).
static HELD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {JOB_COLUMNS} FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE j.state IN ('leased', 'running') AND j.worker_id = ?1 AND j.id <> ?2 ORDER BY j.leased_at DESC LIMIT 1")
});

async fn lease_in(c: &mut SqliteConnection, worker_id: &str, backend: &str, free_bytes: u64, lease_ms: u64) -> Result<Option<Leased>> {
    let now = now_ms();
    let expires = now + lease_ms as i64;
    let job: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(LEASE_SQL.as_str()))
        .bind(worker_id)
        .bind(expires)
        .bind(now)
        .bind(backend)
        .bind(free_bytes as i64)
        .fetch_optional(&mut *c)
        .await?;
    // A queued job has no run: run_id stays NULL.
    let Some(job) = job else { return Ok(None) };
    record_lease(c, &job.id, job.attempts as i64, worker_id, now).await?;
    sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = ? WHERE id = ?").bind(now).bind(&job.id).bind(worker_id).execute(&mut *c).await?;
    Ok(Some(Leased { job, lease_expires_at: expires, fresh: true }))
}

/// The lease half of `Store::complete`.
async fn next_lease_in(c: &mut SqliteConnection, worker_id: &str, completed_job_id: &str, backend: Option<String>, next: NextLease) -> Result<Option<Leased>> {
    let held: Option<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(HELD_SQL.as_str())).bind(worker_id).bind(completed_job_id).fetch_optional(&mut *c).await?;
    if let Some(mut job) = held {
        let expires = now_ms() + next.lease_ms as i64;
        sqlx::query("UPDATE jobs SET lease_expires_at = ? WHERE id = ?").bind(expires).bind(&job.id).execute(&mut *c).await?;
        job.lease_expires_at = Some(expires);
        return Ok(Some(Leased { job, lease_expires_at: expires, fresh: false }));
    }
    let backend = match backend {
        Some(b) => b,
        None => match sqlx::query_scalar::<_, String>("SELECT backend FROM workers WHERE id = ?").bind(worker_id).fetch_optional(&mut *c).await? {
            Some(b) => b,
            None => return Ok(None),
        },
    };
    lease_in(c, worker_id, &backend, next.free_bytes, next.lease_ms).await
}

/// The completion half of `Store::complete`.
async fn complete_in(c: &mut SqliteConnection, done: &Completion) -> Result<CompleteOutcome> {
    let now = now_ms();
    let job_id = done.job_id.as_str();
    let Some(job) = sqlx::query("SELECT j.state, j.attempts, j.sweep_id, j.model, j.batch_size, j.workload_json, r.id AS run_id, r.attempt AS run_attempt FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE j.id = ?")
        .bind(job_id)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Err(StoreError::NotFound(format!("no job with id \"{job_id}\": the report belongs to a job this coordinator does not know (was the database replaced?)")));
    };
    let state: JobState = job.try_get("state")?;
    let attempts: i64 = job.get("attempts");
    let attempt = done.attempt;
    if attempt == 0 || attempt as i64 > attempts {
        return Err(StoreError::InvalidArgument(format!("job {job_id} has had {attempts} attempt(s); attempt {attempt} was never leased")));
    }
    // Only the worker that held this attempt may report it (a retried report included).
    check_holder(c, job_id, attempt, &done.worker_id).await?;
    if let Some(run_id) = job.get::<Option<String>, _>("run_id") {
        return Ok(CompleteOutcome::Duplicate { run_id, attempt: job.get("run_attempt") });
    }
    // The report must be of this job's workload (the worker runs it on its own device).
    let mismatches = workload_mismatches(job.get("workload_json"), &done.report.workload);
    if !mismatches.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "the report does not belong to job {job_id}: its workload differs from the job's ({}); nothing was stored",
            mismatches.join("; ")
        )));
    }
    if state == JobState::Cancelled {
        return Ok(CompleteOutcome::Dropped { reason: "the job was cancelled before its report arrived".into() });
    }
    let sweep_id: String = job.get("sweep_id");
    let model: String = job.get("model");
    let batch_size: i64 = job.get("batch_size");
    let run_id = uuid::Uuid::new_v4().to_string();
    let run = insert_run(c, &run_id, done, &sweep_id, &model, batch_size, now).await?;
    // Whatever state the job was in (a stale attempt may finish after its lease expired and
    // the job was requeued or even failed), a real result makes it succeeded.
    let mut row: JobRow = sqlx::query_as(sqlx::AssertSqlSafe(SUCCEEDED_SQL.as_str())).bind(now).bind(job_id).fetch_one(&mut *c).await?;
    attempt_succeeded(c, job_id, attempt as i64, now).await?;
    // A newer attempt another worker holds has nothing left to do.
    end_open_attempts(c, job_id, AttemptOutcome::Cancelled, now).await?;
    row.run_id = Some(run_id.clone());
    sqlx::query("UPDATE artifacts SET run_id = ? WHERE job_id = ? AND attempt = ?").bind(&run_id).bind(job_id).bind(attempt as i64).execute(&mut *c).await?;
    sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ? AND current_job_id = ?").bind(now).bind(&done.worker_id).bind(job_id).execute(&mut *c).await?;
    let mut changes = Changes { jobs: vec![row], runs: vec![run], sweeps_done: vec![] };
    finish_sweep_if_done(c, &sweep_id, now, &mut changes).await?;
    Ok(CompleteOutcome::Stored { run_id, changes })
}
