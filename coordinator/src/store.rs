//! The durable state of the coordinator: SQLite through sqlx (runtime-checked queries, no
//! compile-time DATABASE_URL). Every state change of a job is one transaction; the functions
//! here return the rows they changed so the service can log and broadcast them.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};
use tokbench_core::BenchReport;

use crate::validate::ValidSweep;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => tonic::Status::not_found(m),
            StoreError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            StoreError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            other => {
                tracing::error!(error = %other, "storage error");
                tonic::Status::internal(format!("coordinator storage error: {other}"))
            }
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub const ACTIVE_STATES: [&str; 3] = ["queued", "leased", "running"];

pub fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled")
}

/// A job row with the id of its run (if any).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub sweep_id: String,
    pub seq: i64,
    pub model: String,
    pub batch_size: i64,
    pub workload_json: String,
    pub profile: bool,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_expires_at: Option<i64>,
    pub worker_id: Option<String>,
    pub last_error: String,
    pub phase: String,
    pub tokens_done: i64,
    pub tokens_total: i64,
    pub tokens_per_second: f64,
    pub queued_at: i64,
    pub leased_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub run_id: Option<String>,
}

const JOB_COLUMNS: &str = "j.id, j.sweep_id, j.seq, j.model, j.batch_size, j.workload_json, j.profile, j.state, j.attempts, j.max_attempts, j.lease_expires_at, j.worker_id, j.last_error, j.phase, j.tokens_done, j.tokens_total, j.tokens_per_second, j.queued_at, j.leased_at, j.created_at, j.updated_at, r.id AS run_id";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SweepRow {
    pub id: String,
    pub spec_json: String,
    pub label: String,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub job_id: String,
    pub attempt: i64,
    pub sweep_id: String,
    pub model: String,
    pub batch_size: i64,
    pub worker_id: String,
    pub device: String,
    pub gpu_name: String,
    pub weights: String,
    pub dtype: String,
    pub tokens_per_second: f64,
    pub ttft_p50_ms: f64,
    pub itl_p50_ms: f64,
    pub model_load_time_seconds: f64,
    pub total_inference_time_seconds: f64,
    pub peak_memory_mb: Option<f64>,
    pub created_at: i64,
    pub report_json: Option<String>,
}

const RUN_COLUMNS: &str = "id, job_id, attempt, sweep_id, model, batch_size, worker_id, device, gpu_name, weights, dtype, tokens_per_second, ttft_p50_ms, itl_p50_ms, model_load_time_seconds, total_inference_time_seconds, peak_memory_mb, created_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub capabilities_json: String,
    pub last_seen: i64,
    pub current_job_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: String,
    pub job_id: String,
    pub run_id: Option<String>,
    pub kind: String,
    pub file_name: String,
    pub path: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: i64,
}

/// What a transaction changed: the jobs (current rows, after the change) and, when the change
/// finished the sweep, its final state.
#[derive(Debug, Default)]
pub struct Changes {
    pub jobs: Vec<JobRow>,
    pub sweeps_done: Vec<(String, String)>,
}

pub struct Leased {
    pub job: JobRow,
    pub lease_expires_at: i64,
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

#[derive(Clone)]
pub struct Store {
    /// One connection: every write is serialised in-process, so SQLite never answers BUSY to us
    /// and `UPDATE .. RETURNING` leases are trivially atomic.
    writer: SqlitePool,
    /// Readers (WAL lets them run beside the writer without blocking it).
    reader: SqlitePool,
}

impl Store {
    pub async fn open(path: &Path) -> Result<Store> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            // WAL: readers (listings, WatchSweep) never block the writer and vice versa.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit fsyncs the WAL before returning, so a job or result we
            // acknowledged over gRPC is on disk even if the machine loses power right after
            // (NORMAL in WAL mode may lose the last commits on power loss).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("../migrations").run(&writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(opts.read_only(true)).await?;
        Ok(Store { writer, reader })
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    // ------------------------------------------------------------ sweeps

    pub async fn submit_sweep(&self, sweep: &ValidSweep, max_attempts: u32) -> Result<(SweepRow, Vec<JobRow>)> {
        let now = now_ms();
        let sweep_id = uuid::Uuid::new_v4().to_string();
        let spec_json = serde_json::to_string(&sweep.spec).expect("spec serialises");
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO sweeps (id, spec_json, label, state, created_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?)")
            .bind(&sweep_id)
            .bind(&spec_json)
            .bind(&sweep.spec.label)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for (seq, job) in sweep.jobs.iter().enumerate() {
            let workload_json = serde_json::to_string(&job.workload).expect("workload serialises");
            sqlx::query(
                "INSERT INTO jobs (id, sweep_id, seq, model, batch_size, workload_json, backend, est_parameters, dtype_bytes, profile, state, attempts, max_attempts, queued_at, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(&sweep_id)
            .bind(seq as i64)
            .bind(&job.model)
            .bind(job.batch_size as i64)
            .bind(&workload_json)
            .bind(&sweep.backend)
            .bind(job.est_parameters as i64)
            .bind(job.dtype_bytes as i64)
            .bind(sweep.profile)
            .bind(max_attempts as i64)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let jobs = jobs_of_sweep(&mut *tx, &sweep_id).await?;
        let row = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?").bind(&sweep_id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((row, jobs))
    }

    /// `id` may be "latest".
    pub async fn get_sweep(&self, id: &str) -> Result<(SweepRow, Vec<JobRow>)> {
        let mut conn = self.reader.acquire().await?;
        let row = if id == "latest" {
            sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound("there are no sweeps yet: submit one first".into()))?
        } else {
            sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no sweep with id \"{id}\"; list sweeps to see the ids (or use \"latest\")")))?
        };
        let jobs = jobs_of_sweep(&mut *conn, &row.id).await?;
        Ok((row, jobs))
    }

    pub async fn resolve_sweep_id(&self, id: &str) -> Result<String> {
        Ok(self.get_sweep_row(id).await?.id)
    }

    async fn get_sweep_row(&self, id: &str) -> Result<SweepRow> {
        let q = if id == "latest" { "SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT 1" } else { "SELECT * FROM sweeps WHERE id = ?" };
        sqlx::query_as::<_, SweepRow>(q).bind(id).fetch_optional(&self.reader).await?.ok_or_else(|| {
            if id == "latest" {
                StoreError::NotFound("there are no sweeps yet: submit one first".into())
            } else {
                StoreError::NotFound(format!("no sweep with id \"{id}\"; list sweeps to see the ids (or use \"latest\")"))
            }
        })
    }

    pub async fn list_sweeps(&self, limit: u32) -> Result<Vec<(SweepRow, Vec<JobRow>)>> {
        let limit = if limit == 0 { 100 } else { limit.min(10_000) } as i64;
        let rows = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps ORDER BY created_at DESC, rowid DESC LIMIT ?").bind(limit).fetch_all(&self.reader).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let jobs = jobs_of_sweep(&self.reader, &r.id).await?;
            out.push((r, jobs));
        }
        Ok(out)
    }

    pub async fn cancel_sweep(&self, id: &str) -> Result<(SweepRow, Changes)> {
        let sweep_id = self.resolve_sweep_id(id).await?;
        let now = now_ms();
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'cancelled', lease_expires_at = NULL, last_error = 'cancelled by the user', updated_at = ?
             WHERE sweep_id = ? AND state IN ('queued', 'leased', 'running') RETURNING id",
        )
        .bind(now)
        .bind(&sweep_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = Changes::default();
        let was_running: Option<String> = sqlx::query_scalar("UPDATE sweeps SET state = 'cancelled', updated_at = ? WHERE id = ? AND state = 'running' RETURNING id")
            .bind(now)
            .bind(&sweep_id)
            .fetch_optional(&mut *tx)
            .await?;
        for id in &ids {
            changes.jobs.push(job_by_id(&mut *tx, id).await?);
        }
        if was_running.is_some() {
            changes.sweeps_done.push((sweep_id.clone(), "cancelled".into()));
        }
        let row = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?").bind(&sweep_id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((row, changes))
    }

    // ------------------------------------------------------------ workers

    pub async fn register_worker(&self, id: &str, capabilities_json: &str, hostname: &str, backend: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workers (id, capabilities_json, hostname, backend, registered_at, last_seen, current_job_id) VALUES (?, ?, ?, ?, ?, ?, NULL)
             ON CONFLICT (id) DO UPDATE SET capabilities_json = excluded.capabilities_json, hostname = excluded.hostname, backend = excluded.backend, last_seen = excluded.last_seen",
        )
        .bind(id)
        .bind(capabilities_json)
        .bind(hostname)
        .bind(backend)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The backend of a registered worker ("cpu" / "cuda").
    pub async fn worker_backend(&self, id: &str) -> Result<String> {
        sqlx::query_scalar::<_, String>("SELECT backend FROM workers WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::FailedPrecondition(format!("worker \"{id}\" is not registered with this coordinator: call Register first")))
    }

    pub async fn touch_worker(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE workers SET last_seen = ? WHERE id = ?").bind(now_ms()).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerRow>> {
        Ok(sqlx::query_as::<_, WorkerRow>("SELECT id, capabilities_json, last_seen, current_job_id FROM workers ORDER BY id").fetch_all(&self.reader).await?)
    }

    // ------------------------------------------------------------ the queue

    /// Read-only pre-check so idle long polls do not write (and fsync) on every wake-up.
    pub async fn has_candidate(&self, backend: &str, free_bytes: u64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(CANDIDATE_EXISTS).bind(backend).bind(free_bytes as i64).fetch_optional(&self.reader).await?;
        Ok(found.is_some())
    }

    /// Atomically leases the oldest queued job this worker can run.
    pub async fn lease(&self, worker_id: &str, backend: &str, free_bytes: u64, lease_ms: u64) -> Result<Option<Leased>> {
        let now = now_ms();
        let expires = now + lease_ms as i64;
        let mut tx = self.begin().await?;
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'leased', attempts = attempts + 1, worker_id = ?1, lease_expires_at = ?2, leased_at = ?3, updated_at = ?3,
                    phase = '', tokens_done = 0, tokens_total = 0, tokens_per_second = 0
             WHERE id = (SELECT id FROM jobs
                         WHERE state = 'queued' AND (backend = '' OR backend = ?4)
                           AND (?4 <> 'cuda' OR ?5 = 0 OR est_parameters * (CASE dtype_bytes WHEN 0 THEN 2 ELSE dtype_bytes END) <= ?5)
                         ORDER BY rowid LIMIT 1)
             RETURNING id",
        )
        .bind(worker_id)
        .bind(expires)
        .bind(now)
        .bind(backend)
        .bind(free_bytes as i64)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = ? WHERE id = ?").bind(now).bind(&id).bind(worker_id).execute(&mut *tx).await?;
        let leased = match id {
            Some(id) => Some(Leased { job: job_by_id(&mut *tx, &id).await?, lease_expires_at: expires }),
            None => None,
        };
        tx.commit().await?;
        Ok(leased)
    }

    pub async fn heartbeat(&self, worker_id: &str, job_id: &str, attempt: u32, progress: (&str, u64, u64, f64), lease_ms: u64) -> Result<HeartbeatOutcome> {
        let now = now_ms();
        let expires = now + lease_ms as i64;
        let mut tx = self.begin().await?;
        let before = sqlx::query("SELECT state, attempts, worker_id FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&mut *tx).await?;
        let Some(before) = before else {
            return Err(StoreError::NotFound(format!("no job with id \"{job_id}\"")));
        };
        let state: String = before.get("state");
        let attempts: i64 = before.get("attempts");
        let owner: Option<String> = before.get("worker_id");
        sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = ? WHERE id = ?").bind(now).bind(job_id).bind(worker_id).execute(&mut *tx).await?;
        let mine = attempts == attempt as i64 && owner.as_deref() == Some(worker_id) && matches!(state.as_str(), "leased" | "running");
        if !mine {
            tx.commit().await?;
            let reason = if state == "cancelled" {
                "the sweep was cancelled".to_string()
            } else if attempts != attempt as i64 || owner.as_deref() != Some(worker_id) {
                format!("the lease was lost: the job is now attempt {attempts} on worker {}", owner.unwrap_or_default())
            } else {
                format!("the job is already {state}")
            };
            return Ok(HeartbeatOutcome::Cancel { reason });
        }
        let (phase, done, total, tps) = progress;
        sqlx::query(
            "UPDATE jobs SET state = 'running', lease_expires_at = ?, phase = ?, tokens_done = ?, tokens_total = ?, tokens_per_second = ?, updated_at = ? WHERE id = ?",
        )
        .bind(expires)
        .bind(phase)
        .bind(done as i64)
        .bind(total as i64)
        .bind(if tps.is_finite() { tps } else { 0.0 })
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        let job = job_by_id(&mut *tx, job_id).await?;
        tx.commit().await?;
        Ok(HeartbeatOutcome::Extended { lease_expires_at: expires, job, started: state == "leased" })
    }

    /// Stores a run. Idempotent: one run per job, first report wins.
    pub async fn complete(&self, worker_id: &str, job_id: &str, attempt: u32, report: &BenchReport, report_json: &str, worker_total_ns: u64) -> Result<CompleteOutcome> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        if let Some(existing) = sqlx::query("SELECT id, attempt FROM runs WHERE job_id = ?").bind(job_id).fetch_optional(&mut *tx).await? {
            tx.commit().await?;
            return Ok(CompleteOutcome::Duplicate { run_id: existing.get("id"), attempt: existing.get("attempt") });
        }
        let Some(job) = sqlx::query("SELECT state, attempts, sweep_id, model, batch_size FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&mut *tx).await? else {
            return Err(StoreError::NotFound(format!("no job with id \"{job_id}\": the report belongs to a job this coordinator does not know (was the database replaced?)")));
        };
        let state: String = job.get("state");
        let attempts: i64 = job.get("attempts");
        if attempt == 0 || attempt as i64 > attempts {
            return Err(StoreError::InvalidArgument(format!("job {job_id} has had {attempts} attempt(s); attempt {attempt} was never leased")));
        }
        if state == "cancelled" {
            tx.commit().await?;
            return Ok(CompleteOutcome::Dropped { reason: "the job was cancelled before its report arrived".into() });
        }
        let sweep_id: String = job.get("sweep_id");
        let model: String = job.get("model");
        let batch_size: i64 = job.get("batch_size");
        let run_id = uuid::Uuid::new_v4().to_string();
        insert_run(&mut tx, &run_id, job_id, attempt, &sweep_id, &model, batch_size, worker_id, report, report_json, worker_total_ns, now).await?;
        // Whatever state the job was in (a stale attempt may finish after its lease expired and
        // the job was requeued or even failed), a real result makes it succeeded.
        sqlx::query("UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, last_error = '', updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE artifacts SET run_id = ? WHERE job_id = ? AND attempt = ?").bind(&run_id).bind(job_id).bind(attempt as i64).execute(&mut *tx).await?;
        sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ? AND current_job_id = ?").bind(now).bind(worker_id).bind(job_id).execute(&mut *tx).await?;
        let mut changes = Changes::default();
        changes.jobs.push(job_by_id(&mut *tx, job_id).await?);
        finish_sweep_if_done(&mut tx, &sweep_id, now, &mut changes).await?;
        tx.commit().await?;
        Ok(CompleteOutcome::Stored { run_id, changes })
    }

    pub async fn fail(&self, worker_id: &str, job_id: &str, attempt: u32, error: &str, retryable: bool) -> Result<FailOutcome> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let Some(job) = sqlx::query("SELECT state, attempts, max_attempts, worker_id, sweep_id FROM jobs WHERE id = ?").bind(job_id).fetch_optional(&mut *tx).await? else {
            return Err(StoreError::NotFound(format!("no job with id \"{job_id}\"")));
        };
        let state: String = job.get("state");
        let attempts: i64 = job.get("attempts");
        let max_attempts: i64 = job.get("max_attempts");
        let owner: Option<String> = job.get("worker_id");
        let sweep_id: String = job.get("sweep_id");
        if attempts != attempt as i64 || owner.as_deref() != Some(worker_id) || !matches!(state.as_str(), "leased" | "running") {
            tx.commit().await?;
            return Ok(FailOutcome::Stale { reason: format!("job is {state} at attempt {attempts}; this failure of attempt {attempt} changes nothing") });
        }
        let will_retry = retryable && attempts < max_attempts;
        let new_state = if will_retry { "queued" } else { "failed" };
        sqlx::query("UPDATE jobs SET state = ?, lease_expires_at = NULL, last_error = ?, queued_at = CASE WHEN ? = 'queued' THEN ? ELSE queued_at END, updated_at = ? WHERE id = ?")
            .bind(new_state)
            .bind(error)
            .bind(new_state)
            .bind(now)
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ? AND current_job_id = ?").bind(now).bind(worker_id).bind(job_id).execute(&mut *tx).await?;
        let mut changes = Changes::default();
        changes.jobs.push(job_by_id(&mut *tx, job_id).await?);
        if !will_retry {
            finish_sweep_if_done(&mut tx, &sweep_id, now, &mut changes).await?;
        }
        tx.commit().await?;
        Ok(FailOutcome::Applied { will_retry, changes })
    }

    /// Puts jobs whose lease expired back in the queue (or fails them when out of attempts).
    pub async fn reap_expired(&self) -> Result<Changes> {
        let now = now_ms();
        // Cheap read first: the reaper runs every lease/3 and should not write when idle.
        let any: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE state IN ('leased', 'running') AND lease_expires_at < ? LIMIT 1").bind(now).fetch_optional(&self.reader).await?;
        if any.is_none() {
            return Ok(Changes::default());
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE jobs SET
                state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                last_error = 'lease expired: worker ' || COALESCE(worker_id, '?') || ' stopped heartbeating during attempt ' || attempts
                             || CASE WHEN attempts >= max_attempts THEN ' (no attempts left)' ELSE '' END
                             || CASE WHEN last_error <> '' THEN '; earlier error: ' || last_error ELSE '' END,
                queued_at = CASE WHEN attempts >= max_attempts THEN queued_at ELSE ?1 END,
                lease_expires_at = NULL, updated_at = ?1
             WHERE state IN ('leased', 'running') AND lease_expires_at < ?1
             RETURNING id, sweep_id, state",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = Changes::default();
        let mut sweeps = Vec::new();
        for r in &rows {
            let id: String = r.get("id");
            changes.jobs.push(job_by_id(&mut *tx, &id).await?);
            let sweep: String = r.get("sweep_id");
            let state: String = r.get("state");
            if state == "failed" && !sweeps.contains(&sweep) {
                sweeps.push(sweep);
            }
        }
        for s in sweeps {
            finish_sweep_if_done(&mut tx, &s, now, &mut changes).await?;
        }
        tx.commit().await?;
        Ok(changes)
    }

    /// At start: workers could not heartbeat while the coordinator was down, so every active
    /// lease gets a fresh period instead of expiring the moment we come back.
    pub async fn refresh_leases(&self, lease_ms: u64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE jobs SET lease_expires_at = ? WHERE state IN ('leased', 'running')").bind(now_ms() + lease_ms as i64).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    // ------------------------------------------------------------ runs

    pub async fn list_runs(&self, sweep_id: &str, model: &str, run_ids: &[String], limit: u32, include_reports: bool) -> Result<Vec<RunRow>> {
        let sweep_id = if sweep_id.is_empty() { String::new() } else { self.resolve_sweep_id(sweep_id).await? };
        let limit = if limit == 0 { -1 } else { limit as i64 };
        let ids_json = serde_json::to_string(run_ids).expect("strings serialise");
        let sql = format!(
            "SELECT {RUN_COLUMNS}, {} AS report_json FROM runs
             WHERE (?1 = '' OR sweep_id = ?1) AND (?2 = '' OR model = ?2) AND (?3 = '[]' OR id IN (SELECT value FROM json_each(?3)))
             ORDER BY created_at, rowid LIMIT ?4",
            if include_reports { "report_json" } else { "NULL" }
        );
        Ok(sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql)).bind(&sweep_id).bind(model).bind(&ids_json).bind(limit).fetch_all(&self.reader).await?)
    }

    pub async fn get_run(&self, run_id: &str) -> Result<RunRow> {
        let sql = format!("SELECT {RUN_COLUMNS}, report_json FROM runs WHERE id = ?");
        sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no run with id \"{run_id}\"; list runs to see the ids")))
    }

    pub async fn run_of_job(&self, job_id: &str) -> Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS}, NULL AS report_json FROM runs WHERE job_id = ?");
        Ok(sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql)).bind(job_id).fetch_optional(&self.reader).await?)
    }

    // ------------------------------------------------------------ artifacts

    pub async fn job_exists(&self, job_id: &str) -> Result<JobRow> {
        let mut conn = self.reader.acquire().await?;
        job_by_id_opt(&mut *conn, job_id).await?.ok_or_else(|| StoreError::NotFound(format!("no job with id \"{job_id}\"")))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_artifact(&self, id: &str, job_id: &str, attempt: u32, kind: &str, file_name: &str, path: &str, size: u64, sha256: &str) -> Result<ArtifactRow> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let run_id: Option<String> = sqlx::query_scalar("SELECT id FROM runs WHERE job_id = ? AND attempt = ?").bind(job_id).bind(attempt as i64).fetch_optional(&mut *tx).await?;
        sqlx::query("INSERT INTO artifacts (id, job_id, run_id, attempt, kind, file_name, path, size_bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(job_id)
            .bind(&run_id)
            .bind(attempt as i64)
            .bind(kind)
            .bind(file_name)
            .bind(path)
            .bind(size as i64)
            .bind(sha256)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE id = ?").bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn list_artifacts(&self, run_id: &str, job_id: &str) -> Result<Vec<ArtifactRow>> {
        Ok(sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE (?1 = '' OR run_id = ?1) AND (?2 = '' OR job_id = ?2) ORDER BY created_at, rowid")
            .bind(run_id)
            .bind(job_id)
            .fetch_all(&self.reader)
            .await?)
    }

    pub async fn get_artifact(&self, id: &str) -> Result<ArtifactRow> {
        sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no artifact with id \"{id}\"; list artifacts of a run to see the ids")))
    }

    pub async fn artifact_ids_of_run(&self, run_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM artifacts WHERE run_id = ? ORDER BY created_at, rowid").bind(run_id).fetch_all(&self.reader).await?)
    }
}

const CANDIDATE_EXISTS: &str = "SELECT 1 FROM jobs WHERE state = 'queued' AND (backend = '' OR backend = ?1)
       AND (?1 <> 'cuda' OR ?2 = 0 OR est_parameters * (CASE dtype_bytes WHEN 0 THEN 2 ELSE dtype_bytes END) <= ?2) LIMIT 1";

async fn jobs_of_sweep<'e, E: sqlx::SqliteExecutor<'e>>(ex: E, sweep_id: &str) -> Result<Vec<JobRow>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE j.sweep_id = ? ORDER BY j.seq");
    Ok(sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql)).bind(sweep_id).fetch_all(ex).await?)
}

async fn job_by_id_opt<'e, E: sqlx::SqliteExecutor<'e>>(ex: E, id: &str) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE j.id = ?");
    Ok(sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(ex).await?)
}

async fn job_by_id<'e, E: sqlx::SqliteExecutor<'e>>(ex: E, id: &str) -> Result<JobRow> {
    job_by_id_opt(ex, id).await?.ok_or_else(|| StoreError::NotFound(format!("no job with id \"{id}\"")))
}

/// Marks the sweep final when none of its jobs is active any more.
async fn finish_sweep_if_done(tx: &mut Transaction<'static, Sqlite>, sweep_id: &str, now: i64, changes: &mut Changes) -> Result<()> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(state IN ('queued', 'leased', 'running')), 0) AS active, COALESCE(SUM(state = 'failed'), 0) AS failed, COALESCE(SUM(state = 'cancelled'), 0) AS cancelled
         FROM jobs WHERE sweep_id = ?",
    )
    .bind(sweep_id)
    .fetch_one(&mut **tx)
    .await?;
    let active: i64 = row.get("active");
    if active > 0 {
        return Ok(());
    }
    let failed: i64 = row.get("failed");
    let cancelled: i64 = row.get("cancelled");
    let state = if failed > 0 { "failed" } else if cancelled > 0 { "cancelled" } else { "succeeded" };
    let updated = sqlx::query("UPDATE sweeps SET state = ?, updated_at = ? WHERE id = ? AND state = 'running'").bind(state).bind(now).bind(sweep_id).execute(&mut **tx).await?;
    if updated.rows_affected() > 0 {
        changes.sweeps_done.push((sweep_id.to_string(), state.to_string()));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_run(
    tx: &mut Transaction<'static, Sqlite>,
    run_id: &str,
    job_id: &str,
    attempt: u32,
    sweep_id: &str,
    model: &str,
    batch_size: i64,
    worker_id: &str,
    r: &BenchReport,
    report_json: &str,
    worker_total_ns: u64,
    now: i64,
) -> Result<()> {
    let im = &r.inference_metrics;
    let gm = &r.gpu_metrics;
    let peak = gm.peak_memory_allocated_mb.or_else(|| r.telemetry.as_ref().and_then(|t| t.process_memory_mb_max));
    sqlx::query(
        "INSERT INTO runs (id, job_id, attempt, sweep_id, model, model_id, batch_size, worker_id, device, gpu_name, weights, dtype,
            total_parameters, num_layers, model_size_mb, model_load_time_seconds, total_inference_time_seconds, tokens_per_second,
            num_prompts, total_input_tokens, total_output_tokens, gpu_memory_allocated_mb, gpu_memory_utilization_percent,
            ttft_p50_ms, ttft_p99_ms, itl_p50_ms, itl_p99_ms, prefill_tokens_per_second, decode_tokens_per_second,
            peak_memory_mb, energy_joules, tokens_per_joule, tokbench_version, git_commit, hostname, driver_version, cuda_version,
            started_at, created_at, worker_total_ns, report_json)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(run_id)
    .bind(job_id)
    .bind(attempt as i64)
    .bind(sweep_id)
    .bind(model)
    .bind(&r.model_id)
    .bind(batch_size)
    .bind(worker_id)
    .bind(&gm.device)
    .bind(&gm.gpu_name)
    .bind(&r.model_properties.weights)
    .bind(&r.model_properties.dtype)
    .bind(r.model_properties.total_parameters as i64)
    .bind(r.model_properties.num_layers as i64)
    .bind(r.model_properties.model_size_mb)
    .bind(im.model_load_time_seconds)
    .bind(im.total_inference_time_seconds)
    .bind(im.tokens_per_second)
    .bind(im.num_prompts as i64)
    .bind(im.total_input_tokens as i64)
    .bind(im.total_output_tokens as i64)
    .bind(gm.gpu_memory_allocated_mb)
    .bind(gm.gpu_memory_utilization_percent)
    .bind(im.ttft_ms.p50)
    .bind(im.ttft_ms.p99)
    .bind(im.inter_token_latency_ms.p50)
    .bind(im.inter_token_latency_ms.p99)
    .bind(im.prefill_tokens_per_second)
    .bind(im.decode_tokens_per_second)
    .bind(peak)
    .bind(r.telemetry.as_ref().and_then(|t| t.energy_joules))
    .bind(r.telemetry.as_ref().and_then(|t| t.tokens_per_joule))
    .bind(&r.environment.tokbench_version)
    .bind(&r.environment.git_commit)
    .bind(&r.environment.hostname)
    .bind(&gm.driver_version)
    .bind(&gm.cuda_version)
    .bind(&r.timestamp)
    .bind(now)
    .bind(worker_total_ns as i64)
    .bind(report_json)
    .execute(&mut **tx)
    .await?;

    // Samples: multi-row inserts in chunks (SQLite allows 32766 bound parameters per statement).
    let mut samples: Vec<(&'static str, i64, i64, f64)> = Vec::new();
    for rep in &r.repetitions {
        samples.extend(rep.ttft_ms.iter().enumerate().map(|(i, v)| ("ttft", rep.index as i64, i as i64, *v)));
        samples.extend(rep.step_latencies_ms.iter().enumerate().map(|(i, v)| ("step", rep.index as i64, i as i64, *v)));
    }
    for chunk in samples.chunks(5000) {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO samples (run_id, kind, repetition, idx, value_ms) ");
        qb.push_values(chunk, |mut b, (kind, rep, idx, v)| {
            b.push_bind(run_id).push_bind(*kind).push_bind(*rep).push_bind(*idx).push_bind(*v);
        });
        qb.build().execute(&mut **tx).await?;
    }

    if let Some(t) = &r.telemetry {
        sqlx::query(
            "INSERT INTO telemetry (run_id, samples, interval_ms, gpu_name, memory_total_mb, memory_used_mb_max, process_memory_mb_max,
                utilization_percent_mean, utilization_percent_max, power_watts_mean, power_watts_max, energy_joules, tokens_per_joule,
                sm_clock_mhz_max, temperature_c_max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(run_id)
        .bind(t.samples as i64)
        .bind(t.interval_ms as i64)
        .bind(&t.gpu_name)
        .bind(t.memory_total_mb)
        .bind(t.memory_used_mb_max)
        .bind(t.process_memory_mb_max)
        .bind(t.utilization_percent_mean)
        .bind(t.utilization_percent_max)
        .bind(t.power_watts_mean)
        .bind(t.power_watts_max)
        .bind(t.energy_joules)
        .bind(t.tokens_per_joule)
        .bind(t.sm_clock_mhz_max.map(|v| v as i64))
        .bind(t.temperature_c_max.map(|v| v as i64))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
