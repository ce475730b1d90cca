//! The durable state of the coordinator: SQLite through sqlx (runtime-checked queries, no
//! compile-time DATABASE_URL). The functions here return the rows they changed so the service
//! can log and broadcast them. Every write goes through one group-commit writer (`writer`).
//!
//! One concern per file: `writer` (the group-commit writer), `sweeps`, `workers`, `queue`
//! (lease / heartbeat / complete / fail / reap), `runs`, `artifacts`, `rows` (the row types),
//! `states` (job and sweep states). Errors are `StoreError`s, which know nothing of gRPC: the
//! service maps them to statuses.

mod artifacts;
mod attempts;
mod queue;
mod rows;
mod runs;
mod states;
mod sweeps;
mod workers;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Connection;
use tokio::sync::mpsc;

pub use attempts::{AttemptOutcome, AttemptRow};
pub use queue::{CompleteOutcome, FailOutcome, HeartbeatOutcome, Leased, NextLease};
pub use runs::Completion;
pub use rows::{ArtifactRow, Changes, JobRow, RunRow, SweepRow, WorkerRow};
pub use states::{JobState, SweepState, UnknownState};
pub use writer::{CommitCounts, CommitStats};

use rows::JOB_COLUMNS;
use writer::{writer_loop, WriterMsg};

/// What went wrong in the store. The service turns these into gRPC statuses
/// (`impl From<StoreError> for tonic::Status` in `service`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No such sweep / job / run / artifact (the message names it and says how to find one).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (e.g. a report of an attempt that was never leased).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller is not the worker that holds (or held) the attempt it reports on.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well formed but the job is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A worker called before registering.
    #[error("worker \"{worker_id}\" is not registered with this coordinator: call Register first")]
    WorkerNotRegistered { worker_id: String },
    /// The operation ran but its transaction was not committed (nothing of it was stored).
    #[error("the change was not stored: {0}")]
    NotCommitted(String),
    #[error("the coordinator's database is closed: the coordinator is shutting down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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
        // Owner-only (0600) from the start; SQLite gives -wal and -shm the same permissions.
        crate::backup::create_private_file(path).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
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
}

// ------------------------------------------------------------------ reading jobs back

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
