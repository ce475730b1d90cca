//! The durable state of the coordinator: SQLite through sqlx (runtime-checked queries, no
//! compile-time DATABASE_URL). The functions here return the rows they changed so the service
//! can log and broadcast them.
//!
//! **Group commit.** Every write goes through one task that owns the only writer connection
//! (`writer_loop`). Each write is an *operation* (one state change: a lease, a completion, a
//! heartbeat, a submitted sweep, ...). The task takes every operation queued at that moment,
//! runs them one after the other inside one `BEGIN IMMEDIATE ... COMMIT`, each under its own
//! savepoint (an operation that fails is rolled back to its savepoint and answered with its
//! error; the others keep their changes), commits once, and only then answers the callers.
//! With `synchronous=FULL` a commit is one fsync of the WAL, so N workers completing or leasing
//! at the same time cost one fsync instead of N; nothing waits on purpose: what queues up while
//! one commit is being written goes into the next. Operations are never merged or reordered:
//! they run in arrival order, each seeing the writes of those before it, exactly as if each had
//! its own transaction; and nobody is answered before the commit holding their operation
//! returned, so everything acknowledged is on disk.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite};
use tokbench_core::BenchReport;
use tokio::sync::{mpsc, oneshot};

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
    /// The operation ran but its transaction was not committed (nothing of it was stored).
    #[error("the change was not stored: {0}")]
    NotCommitted(String),
    #[error("the coordinator's database is closed: the coordinator is shutting down")]
    Closed,
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => tonic::Status::not_found(m),
            StoreError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            StoreError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            StoreError::Closed => tonic::Status::unavailable(StoreError::Closed.to_string()),
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
/// `RETURNING` list of an `UPDATE jobs`: the row after the change, without the run id (the
/// caller knows it, or knows there is none).
const JOB_RETURNING: &str = "id, sweep_id, seq, model, batch_size, workload_json, profile, state, attempts, max_attempts, lease_expires_at, worker_id, last_error, phase, tokens_done, tokens_total, tokens_per_second, queued_at, leased_at, created_at, updated_at, NULL AS run_id";

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

/// What a transaction changed: the jobs (current rows, after the change), the runs it stored
/// (so events need not read them back) and, when the change finished a sweep, its final state.
#[derive(Debug, Default)]
pub struct Changes {
    pub jobs: Vec<JobRow>,
    pub runs: Vec<RunRow>,
    pub sweeps_done: Vec<(String, String)>,
}

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

/// A worker's report of a finished job (CompleteJob).
pub struct Completion {
    pub worker_id: String,
    pub job_id: String,
    pub attempt: u32,
    pub report: BenchReport,
    pub report_json: String,
    pub worker_total_ns: u64,
}

/// "And lease me my next job" with a completion.
#[derive(Debug, Clone, Copy)]
pub struct NextLease {
    pub free_bytes: u64,
    pub lease_ms: u64,
}

/// Commits and operations of the group-commit writer since the store was opened.
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    ops: AtomicU64,
    largest: AtomicU64,
    /// Operations sent to the writer and not yet taken by it.
    queued: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitCounts {
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Operations in them.
    pub ops: u64,
    /// Most operations in one transaction.
    pub largest: u64,
}

#[derive(Clone)]
pub struct Store {
    writes: mpsc::UnboundedSender<WriterMsg>,
    writer_task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    stats: Arc<CommitStats>,
    /// Readers (WAL lets them run beside the writer without blocking it).
    reader: SqlitePool,
    /// Backend ("cpu" / "cuda") of each registered worker, so a lease needs no read for it.
    backends: Arc<RwLock<HashMap<String, String>>>,
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
        // One writer connection, owned by the group-commit task: every write is serialised
        // in-process, so SQLite never answers BUSY to us and `UPDATE .. RETURNING` leases are
        // trivially atomic.
        let mut writer = SqliteConnection::connect_with(&opts).await?;
        sqlx::migrate!("../migrations").run(&mut writer).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(opts.clone().read_only(true)).await?;
        let stats = Arc::new(CommitStats::default());
        let (writes, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(writer_loop(writer, opts, rx, stats.clone()));
        Ok(Store { writes, writer_task: Arc::new(Mutex::new(Some(task))), stats, reader, backends: Arc::default() })
    }

    /// Finishes the writes already queued, then closes the database (later writes fail with
    /// `Closed`).
    pub async fn close(&self) {
        let _ = self.writes.send(WriterMsg::Close);
        let task = self.writer_task.lock().expect("writer task lock").take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the database writer task failed");
            }
        }
        self.reader.close().await;
    }

    pub fn commit_counts(&self) -> CommitCounts {
        CommitCounts {
            commits: self.stats.commits.load(Ordering::Relaxed),
            ops: self.stats.ops.load(Ordering::Relaxed),
            largest: self.stats.largest.load(Ordering::Relaxed),
        }
    }

    /// Runs `op` in the next group commit and returns its result once that commit is on disk.
    /// `op` must only run statements on the connection it is given (no BEGIN/COMMIT of its own).
    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.writes.send(WriterMsg::Op(Box::new(Pending { op, reply }))).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Closed);
        }
        // Every operation is answered, also at shutdown; a lost answer means it panicked.
        answer.await.map_err(|_| StoreError::NotCommitted("the database writer lost the operation (a bug in tokbench: see the coordinator's log)".into()))?
    }

    // ------------------------------------------------------------ sweeps

    pub async fn submit_sweep(&self, sweep: &ValidSweep, max_attempts: u32) -> Result<(SweepRow, Vec<JobRow>)> {
        let sweep = sweep.clone();
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let sweep_id = uuid::Uuid::new_v4().to_string();
                let spec_json = serde_json::to_string(&sweep.spec).expect("spec serialises");
                sqlx::query("INSERT INTO sweeps (id, spec_json, label, state, created_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?)")
                    .bind(&sweep_id)
                    .bind(&spec_json)
                    .bind(&sweep.spec.label)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
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
                    .execute(&mut *c)
                    .await?;
                }
                let jobs = jobs_of_sweep(&mut *c, &sweep_id).await?;
                let row = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?").bind(&sweep_id).fetch_one(&mut *c).await?;
                Ok((row, jobs))
            })
        })
        .await
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
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE jobs SET state = 'cancelled', lease_expires_at = NULL, last_error = 'cancelled by the user', updated_at = ?
                     WHERE sweep_id = ? AND state IN ('queued', 'leased', 'running') RETURNING id",
                )
                .bind(now)
                .bind(&sweep_id)
                .fetch_all(&mut *c)
                .await?;
                let mut changes = Changes::default();
                let was_running: Option<String> = sqlx::query_scalar("UPDATE sweeps SET state = 'cancelled', updated_at = ? WHERE id = ? AND state = 'running' RETURNING id")
                    .bind(now)
                    .bind(&sweep_id)
                    .fetch_optional(&mut *c)
                    .await?;
                for id in &ids {
                    changes.jobs.push(job_by_id(&mut *c, id).await?);
                }
                if was_running.is_some() {
                    changes.sweeps_done.push((sweep_id.clone(), "cancelled".into()));
                }
                let row = sqlx::query_as::<_, SweepRow>("SELECT * FROM sweeps WHERE id = ?").bind(&sweep_id).fetch_one(&mut *c).await?;
                Ok((row, changes))
            })
        })
        .await
    }

    // ------------------------------------------------------------ workers

    pub async fn register_worker(&self, id: &str, capabilities_json: &str, hostname: &str, backend: &str) -> Result<()> {
        let (w, caps, host, b) = (id.to_string(), capabilities_json.to_string(), hostname.to_string(), backend.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO workers (id, capabilities_json, hostname, backend, registered_at, last_seen, current_job_id) VALUES (?, ?, ?, ?, ?, ?, NULL)
                     ON CONFLICT (id) DO UPDATE SET capabilities_json = excluded.capabilities_json, hostname = excluded.hostname, backend = excluded.backend, last_seen = excluded.last_seen",
                )
                .bind(&w)
                .bind(&caps)
                .bind(&host)
                .bind(&b)
                .bind(now)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await?;
        self.backends.write().expect("backends lock").insert(id.to_string(), backend.to_string());
        Ok(())
    }

    fn cached_backend(&self, id: &str) -> Option<String> {
        self.backends.read().expect("backends lock").get(id).cloned()
    }

    /// The backend of a registered worker ("cpu" / "cuda").
    pub async fn worker_backend(&self, id: &str) -> Result<String> {
        if let Some(b) = self.cached_backend(id) {
            return Ok(b);
        }
        let b = sqlx::query_scalar::<_, String>("SELECT backend FROM workers WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::FailedPrecondition(format!("worker \"{id}\" is not registered with this coordinator: call Register first")))?;
        self.backends.write().expect("backends lock").insert(id.to_string(), b.clone());
        Ok(b)
    }

    /// A worker waiting in LeaseJob is alive and runs no job.
    pub async fn touch_worker(&self, id: &str) -> Result<()> {
        let w = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ?").bind(now_ms()).bind(&w).execute(&mut *c).await?;
                Ok(())
            })
        })
        .await
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
        let (w, b) = (worker_id.to_string(), backend.to_string());
        self.write(move |c| Box::pin(async move { lease_in(c, &w, &b, free_bytes, lease_ms).await })).await
    }

    pub async fn heartbeat(&self, worker_id: &str, job_id: &str, attempt: u32, progress: (&str, u64, u64, f64), lease_ms: u64) -> Result<HeartbeatOutcome> {
        let (w, j, phase) = (worker_id.to_string(), job_id.to_string(), progress.0.to_string());
        let (done, total, tps) = (progress.1, progress.2, progress.3);
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let expires = now + lease_ms as i64;
                let before = sqlx::query("SELECT state, attempts, worker_id FROM jobs WHERE id = ?").bind(&j).fetch_optional(&mut *c).await?;
                let Some(before) = before else {
                    return Err(StoreError::NotFound(format!("no job with id \"{j}\"")));
                };
                let state: String = before.get("state");
                let attempts: i64 = before.get("attempts");
                let owner: Option<String> = before.get("worker_id");
                sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = ? WHERE id = ?").bind(now).bind(&j).bind(&w).execute(&mut *c).await?;
                let mine = attempts == attempt as i64 && owner.as_deref() == Some(w.as_str()) && matches!(state.as_str(), "leased" | "running");
                if !mine {
                    let reason = if state == "cancelled" {
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
                    .bind(now)
                    .bind(&j)
                    .fetch_one(&mut *c)
                    .await?;
                // A leased/running job has no run (completion makes it succeeded).
                Ok(HeartbeatOutcome::Extended { lease_expires_at: expires, job, started: state == "leased" })
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
                let state: String = job.get("state");
                let attempts: i64 = job.get("attempts");
                let max_attempts: i64 = job.get("max_attempts");
                let owner: Option<String> = job.get("worker_id");
                let sweep_id: String = job.get("sweep_id");
                if attempts != attempt as i64 || owner.as_deref() != Some(worker_id.as_str()) || !matches!(state.as_str(), "leased" | "running") {
                    return Ok(FailOutcome::Stale { reason: format!("job is {state} at attempt {attempts}; this failure of attempt {attempt} changes nothing") });
                }
                let will_retry = retryable && attempts < max_attempts;
                let new_state = if will_retry { "queued" } else { "failed" };
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
                     RETURNING id, sweep_id, state",
                )
                .bind(now)
                .fetch_all(&mut *c)
                .await?;
                let mut changes = Changes::default();
                let mut sweeps = Vec::new();
                for r in &rows {
                    let id: String = r.get("id");
                    changes.jobs.push(job_by_id(&mut *c, &id).await?);
                    let sweep: String = r.get("sweep_id");
                    let state: String = r.get("state");
                    if state == "failed" && !sweeps.contains(&sweep) {
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
        let (id, job_id, kind, file_name, path, sha256) = (id.to_string(), job_id.to_string(), kind.to_string(), file_name.to_string(), path.to_string(), sha256.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let run_id: Option<String> = sqlx::query_scalar("SELECT id FROM runs WHERE job_id = ? AND attempt = ?").bind(&job_id).bind(attempt as i64).fetch_optional(&mut *c).await?;
                sqlx::query("INSERT INTO artifacts (id, job_id, run_id, attempt, kind, file_name, path, size_bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                    .bind(&id)
                    .bind(&job_id)
                    .bind(&run_id)
                    .bind(attempt as i64)
                    .bind(&kind)
                    .bind(&file_name)
                    .bind(&path)
                    .bind(size as i64)
                    .bind(&sha256)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                Ok(sqlx::query_as::<_, ArtifactRow>("SELECT * FROM artifacts WHERE id = ?").bind(&id).fetch_one(&mut *c).await?)
            })
        })
        .await
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

static LEASE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = 'leased', attempts = attempts + 1, worker_id = ?1, lease_expires_at = ?2, leased_at = ?3, updated_at = ?3,
                phase = '', tokens_done = 0, tokens_total = 0, tokens_per_second = 0
         WHERE id = (SELECT id FROM jobs
                     WHERE state = 'queued' AND (backend = '' OR backend = ?4)
                       AND (?4 <> 'cuda' OR ?5 = 0 OR est_parameters * (CASE dtype_bytes WHEN 0 THEN 2 ELSE dtype_bytes END) <= ?5)
                     ORDER BY rowid LIMIT 1)
         RETURNING {JOB_RETURNING}"
    )
});

static HEARTBEAT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET state = 'running', lease_expires_at = ?, phase = ?, tokens_done = ?, tokens_total = ?, tokens_per_second = ?, updated_at = ? WHERE id = ?
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
    let Some(job) = sqlx::query("SELECT j.state, j.attempts, j.sweep_id, j.model, j.batch_size, r.id AS run_id, r.attempt AS run_attempt FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE j.id = ?")
        .bind(job_id)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Err(StoreError::NotFound(format!("no job with id \"{job_id}\": the report belongs to a job this coordinator does not know (was the database replaced?)")));
    };
    if let Some(run_id) = job.get::<Option<String>, _>("run_id") {
        return Ok(CompleteOutcome::Duplicate { run_id, attempt: job.get("run_attempt") });
    }
    let state: String = job.get("state");
    let attempts: i64 = job.get("attempts");
    let attempt = done.attempt;
    if attempt == 0 || attempt as i64 > attempts {
        return Err(StoreError::InvalidArgument(format!("job {job_id} has had {attempts} attempt(s); attempt {attempt} was never leased")));
    }
    if state == "cancelled" {
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
    row.run_id = Some(run_id.clone());
    sqlx::query("UPDATE artifacts SET run_id = ? WHERE job_id = ? AND attempt = ?").bind(&run_id).bind(job_id).bind(attempt as i64).execute(&mut *c).await?;
    sqlx::query("UPDATE workers SET last_seen = ?, current_job_id = NULL WHERE id = ? AND current_job_id = ?").bind(now).bind(&done.worker_id).bind(job_id).execute(&mut *c).await?;
    let mut changes = Changes { jobs: vec![row], runs: vec![run], sweeps_done: vec![] };
    finish_sweep_if_done(c, &sweep_id, now, &mut changes).await?;
    Ok(CompleteOutcome::Stored { run_id, changes })
}

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
async fn finish_sweep_if_done(c: &mut SqliteConnection, sweep_id: &str, now: i64, changes: &mut Changes) -> Result<()> {
    // Index jobs_by_sweep_state: looks at the sweep's active jobs only.
    let active: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM jobs WHERE sweep_id = ? AND state IN ('queued', 'leased', 'running') LIMIT 1").bind(sweep_id).fetch_optional(&mut *c).await?;
    if active.is_some() {
        return Ok(());
    }
    let row = sqlx::query("SELECT COALESCE(SUM(state = 'failed'), 0) AS failed, COALESCE(SUM(state = 'cancelled'), 0) AS cancelled FROM jobs WHERE sweep_id = ?")
        .bind(sweep_id)
        .fetch_one(&mut *c)
        .await?;
    let failed: i64 = row.get("failed");
    let cancelled: i64 = row.get("cancelled");
    let state = if failed > 0 { "failed" } else if cancelled > 0 { "cancelled" } else { "succeeded" };
    let updated = sqlx::query("UPDATE sweeps SET state = ?, updated_at = ? WHERE id = ? AND state = 'running'").bind(state).bind(now).bind(sweep_id).execute(&mut *c).await?;
    if updated.rows_affected() > 0 {
        changes.sweeps_done.push((sweep_id.to_string(), state.to_string()));
    }
    Ok(())
}

/// Inserts the run, its latency samples and telemetry; returns the run's summary row.
async fn insert_run(c: &mut SqliteConnection, run_id: &str, done: &Completion, sweep_id: &str, model: &str, batch_size: i64, now: i64) -> Result<RunRow> {
    let r = &done.report;
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
    .bind(&done.job_id)
    .bind(done.attempt as i64)
    .bind(sweep_id)
    .bind(model)
    .bind(&r.model_id)
    .bind(batch_size)
    .bind(&done.worker_id)
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
    .bind(done.worker_total_ns as i64)
    .bind(&done.report_json)
    .execute(&mut *c)
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
        qb.build().execute(&mut *c).await?;
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
        .execute(&mut *c)
        .await?;
    }
    Ok(RunRow {
        id: run_id.to_string(),
        job_id: done.job_id.clone(),
        attempt: done.attempt as i64,
        sweep_id: sweep_id.to_string(),
        model: model.to_string(),
        batch_size,
        worker_id: done.worker_id.clone(),
        device: gm.device.clone(),
        gpu_name: gm.gpu_name.clone(),
        weights: r.model_properties.weights.clone(),
        dtype: r.model_properties.dtype.clone(),
        tokens_per_second: im.tokens_per_second,
        ttft_p50_ms: im.ttft_ms.p50,
        itl_p50_ms: im.inter_token_latency_ms.p50,
        model_load_time_seconds: im.model_load_time_seconds,
        total_inference_time_seconds: im.total_inference_time_seconds,
        peak_memory_mb: peak,
        created_at: now,
        report_json: None,
    })
}

// ------------------------------------------------------------------ the group-commit writer

type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
/// Answers the caller of an operation once its transaction ended: `None` committed, `Some`
/// why it was not.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// Most operations in one transaction (a bound on how long one commit keeps callers waiting).
const MAX_BATCH_OPS: usize = 256;

enum WriterMsg {
    Op(Box<dyn WriteOp>),
    Close,
}

trait WriteOp: Send {
    /// Runs the operation's statements; true when it succeeded. The answer is sent later.
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFut<'c, (bool, Deliver)>;
    /// Answers without running.
    fn abort(self: Box<Self>, why: &str);
}

struct Pending<T, F> {
    op: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteOp for Pending<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFut<'c, (bool, Deliver)> {
        let Pending { op, reply } = *self;
        if reply.is_closed() {
            // The caller went away (its RPC was cancelled, e.g. a worker's LeaseJob when it is
            // stopped) before the operation ran: write nothing, as if it never arrived, rather
            // than e.g. lease a job to a caller that will never see it.
            return Box::pin(async { (true, Box::new(|_: Option<&str>| {}) as Deliver) });
        }
        let fut = op(conn);
        Box::pin(async move {
            let result = fut.await;
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |not_committed: Option<&str>| {
                let result = match (result, not_committed) {
                    (Ok(_), Some(why)) => Err(StoreError::NotCommitted(why.to_string())),
                    (r, _) => r,
                };
                // The caller may have gone away (e.g. its RPC was cancelled): nothing to do.
                let _ = reply.send(result);
            });
            (ok, deliver)
        })
    }

    fn abort(self: Box<Self>, why: &str) {
        let _ = self.reply.send(Err(StoreError::NotCommitted(why.to_string())));
    }
}

async fn writer_loop(mut conn: SqliteConnection, opts: SqliteConnectOptions, mut rx: mpsc::UnboundedReceiver<WriterMsg>, stats: Arc<CommitStats>) {
    let mut carried: VecDeque<Box<dyn WriteOp>> = VecDeque::new();
    let mut closing = false;
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            if closing {
                break;
            }
            match rx.recv().await {
                Some(WriterMsg::Op(op)) => {
                    stats.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push_back(op)
                }
                Some(WriterMsg::Close) | None => break,
            }
        }
        // Everything that queued up meanwhile (typically: while the previous commit was being
        // fsynced) goes into this transaction.
        while !closing && batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(WriterMsg::Op(op)) => {
                    stats.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push_back(op)
                }
                Ok(WriterMsg::Close) => closing = true,
                Err(_) => break,
            }
        }
        let healthy;
        (carried, healthy) = run_batch(&mut conn, batch, &stats).await;
        if !healthy {
            // The transaction failed in a way that may leave the connection inside it (SQLite
            // rolls back by itself on I/O errors): start over on a fresh connection.
            conn = reconnect(conn, &opts).await;
        }
    }
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let WriterMsg::Op(op) = msg {
            op.abort("the coordinator is shutting down");
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the database writer connection");
    }
}

async fn reconnect(old: SqliteConnection, opts: &SqliteConnectOptions) -> SqliteConnection {
    let _ = old.close_hard().await;
    let mut delay = Duration::from_millis(50);
    loop {
        match SqliteConnection::connect_with(opts).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reopen the database for writing");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One transaction over `batch`. Returns the operations that did not get to run (the
/// transaction broke before them: they go into the next one) and whether the connection is
/// known to be in a clean state.
async fn run_batch(conn: &mut SqliteConnection, mut batch: VecDeque<Box<dyn WriteOp>>, stats: &CommitStats) -> (VecDeque<Box<dyn WriteOp>>, bool) {
    let n = batch.len();
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, ops = n, "cannot begin a transaction");
            let why = format!("cannot begin a transaction: {e}");
            for op in batch {
                op.abort(&why);
            }
            return (VecDeque::new(), false);
        }
    };
    // A savepoint per operation only where there are others to protect.
    let savepoints = n > 1;
    let mut delivers: Vec<Deliver> = Vec::with_capacity(n);
    let mut broken: Option<String> = None;
    let mut lone_op_failed = false;
    while let Some(op) = batch.pop_front() {
        if !savepoints {
            match AssertUnwindSafe(op.run(&mut tx)).catch_unwind().await {
                Ok((ok, deliver)) => {
                    delivers.push(deliver);
                    lone_op_failed = !ok;
                }
                Err(_) => broken = Some("a database operation panicked (a bug in tokbench)".into()),
            }
            continue;
        }
        let mut sp = match Connection::begin(&mut *tx).await {
            Ok(sp) => sp,
            Err(e) => {
                broken = Some(format!("cannot set a savepoint: {e}"));
                batch.push_front(op);
                break;
            }
        };
        // A panicking operation (a bug) must not take the writer down with it: its caller is
        // answered by the dropped reply (Closed), the transaction is abandoned.
        let Ok((ok, deliver)) = AssertUnwindSafe(op.run(&mut sp)).catch_unwind().await else {
            broken = Some("a database operation panicked (a bug in tokbench)".into());
            break;
        };
        delivers.push(deliver);
        let end = if ok { sp.commit().await } else { sp.rollback().await };
        if let Err(e) = end {
            broken = Some(format!("savepoint {}: {e}", if ok { "release" } else { "rollback" }));
            break;
        }
    }
    let outcome: std::result::Result<(), String> = match broken {
        Some(why) => {
            let _ = tx.rollback().await;
            Err(why)
        }
        None if lone_op_failed => {
            // The only operation failed: undo its partial writes; it is answered with its error.
            tx.rollback().await.map_err(|e| format!("rollback failed: {e}"))
        }
        None => tx.commit().await.map_err(|e| format!("commit failed: {e}")),
    };
    let ran = delivers.len() as u64;
    match &outcome {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.ops.fetch_add(ran, Ordering::Relaxed);
            stats.largest.fetch_max(ran, Ordering::Relaxed);
            for d in delivers {
                d(None);
            }
        }
        Err(why) => {
            tracing::error!(error = %why, ops = ran, postponed = batch.len(), "database transaction failed; its operations are answered with the error");
            for d in delivers {
                d(Some(why));
            }
        }
    }
    let healthy = outcome.is_ok();
    (batch, healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn worker_exists(store: &Store, id: &str) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM workers WHERE id = ?").bind(id).fetch_one(&store.reader).await.unwrap() == 1
    }

    /// Operations queued while the writer is busy share one transaction; one that fails is
    /// rolled back to its savepoint and the others are committed, each caller getting its own
    /// answer only after the commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_one_commit_and_a_failing_one_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).await.unwrap();
        let before = store.commit_counts();

        // Hold the writer inside an operation until every other one is queued.
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_c| {
                        Box::pin(async move {
                            entered_tx.send(()).unwrap();
                            release_rx.await.unwrap();
                            Ok(())
                        })
                    })
                    .await
            })
        };
        entered_rx.await.unwrap();

        let good: Vec<_> = (0..5)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.register_worker(&format!("good-{i}"), "{}", "host", "cpu").await })
            })
            .collect();
        let bad = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(|c| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO workers (id, capabilities_json, hostname, backend, registered_at, last_seen) VALUES ('bad', '{}', 'h', 'cpu', 0, 0)")
                                .execute(&mut *c)
                                .await?;
                            Err::<(), _>(StoreError::InvalidArgument("this operation fails after writing".into()))
                        })
                    })
                    .await
            })
        };
        // Wait until all six are queued behind the blocker, then let it commit.
        for _ in 0..2000 {
            if store.stats.queued.load(Ordering::Relaxed) >= 6 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.stats.queued.load(Ordering::Relaxed), 6, "the six operations queue up behind the busy writer");
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();

        for g in good {
            g.await.unwrap().unwrap();
        }
        let err = bad.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
        for i in 0..5 {
            assert!(worker_exists(&store, &format!("good-{i}")).await, "good-{i} committed");
        }
        assert!(!worker_exists(&store, "bad").await, "the failing operation's insert was rolled back");

        let after = store.commit_counts();
        // The blocker alone, then the six queued operations together (the failed one counts:
        // it ran in the transaction).
        assert_eq!(after.commits - before.commits, 2, "{before:?} -> {after:?}");
        assert_eq!(after.ops - before.ops, 7);
        assert!(after.largest >= 6);
        store.close().await;
    }

    /// A write whose caller went away before it ran is not executed; a write that panics is
    /// answered with an error and the writer goes on with the next ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_writes_are_skipped_and_a_panicking_write_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).await.unwrap();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_c| {
                        Box::pin(async move {
                            entered_tx.send(()).unwrap();
                            release_rx.await.unwrap();
                            Ok(())
                        })
                    })
                    .await
            })
        };
        entered_rx.await.unwrap();
        let abandoned = {
            let store = store.clone();
            tokio::spawn(async move { store.register_worker("gone", "{}", "host", "cpu").await })
        };
        for _ in 0..2000 {
            if store.stats.queued.load(Ordering::Relaxed) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        store.register_worker("after", "{}", "host", "cpu").await.unwrap();
        assert!(!worker_exists(&store, "gone").await, "a write nobody waits for any more is not run");
        assert!(worker_exists(&store, "after").await);

        let err = store.write::<(), _>(|_c| Box::pin(async move { panic!("a bug in an operation") })).await.unwrap_err();
        assert!(matches!(err, StoreError::NotCommitted(_)), "{err}");
        store.register_worker("still-writing", "{}", "host", "cpu").await.unwrap();
        assert!(worker_exists(&store, "still-writing").await);
        store.close().await;
    }
}
