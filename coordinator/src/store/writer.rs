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

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Result, Store, StoreError};

/// Commits and operations of the group-commit writer since the store was opened.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub(super) commits: AtomicU64,
    pub(super) ops: AtomicU64,
    pub(super) largest: AtomicU64,
    /// Operations sent to the writer and not yet taken by it.
    pub(super) queued: AtomicU64,
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

impl Store {
    /// Runs `op` in the next group commit and returns its result once that commit is on disk.
    /// `op` must only run statements on the connection it is given (no BEGIN/COMMIT of its own).
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T>
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
}

pub(super) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
/// Answers the caller of an operation once its transaction ended: `None` committed, `Some`
/// why it was not.
pub(super) type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// Most operations in one transaction (a bound on how long one commit keeps callers waiting).
const MAX_BATCH_OPS: usize = 256;

pub(super) enum WriterMsg {
    Op(Box<dyn WriteOp>),
    Close,
}

pub(super) trait WriteOp: Send {
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

pub(super) async fn writer_loop(mut conn: SqliteConnection, opts: SqliteConnectOptions, mut rx: mpsc::UnboundedReceiver<WriterMsg>, stats: Arc<CommitStats>) {
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
