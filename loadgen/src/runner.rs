//! The runner: sends each request at its scheduled time and collects the records.
//!
//! ## Hitting the schedule
//!
//! tokio's timer wheel has a resolution of 1 ms and rounds deadlines *up*, so `sleep_until`
//! alone would send every request 0–1 ms late (plus scheduling delay), which is the same order as
//! the inter-arrival gap at 200 req/s (5 ms) and biases the arrival process. Instead one dedicated
//! OS thread (the dispatcher) walks the schedule: it `std::thread::sleep`s (nanosleep, ~50 µs
//! slack on Linux) until [`RunOptions::spin_window`] before the deadline, spins the rest, and at
//! the deadline spawns the request's task on the tokio runtime (`Handle::spawn` from outside the
//! runtime wakes an idle worker directly). The task then serialises the body and hands it to the
//! shared connection pool; no client is built per request.
//!
//! The generator measures itself: each record has the scheduled time, the time its task started,
//! the time it got a concurrency slot, and the time the request was handed to the pool.
//! *Arrival-time error* = (sent − scheduled) − (slot − dispatched): how late the generator was,
//! with the intended wait for a concurrency slot taken out (that wait is reported on its own as
//! queue wait). It does not include the kernel's and the network's part of delivering the bytes,
//! which the client cannot see.
//!
//! ## Concurrency, cancellation
//!
//! With `max_concurrency` a semaphore holds one permit per request from slot to end of stream,
//! as vLLM's `--max-concurrency` does. The in-flight count is tracked around the HTTP exchange and
//! its maximum is reported as the peak concurrency. Cancelling the token (or
//! [`RunOptions::timeout`] passing) stops dispatching and aborts requests in flight; those are
//! recorded as failed with [`crate::ErrorKind::Cancelled`], and requests never sent are counted in
//! [`RunOutput::not_sent`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::{Client, RequestRecord};
use crate::dataset::Request;
use crate::error::LoadgenError;
use crate::schedule::Schedule;

/// How to run a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Stop the whole run after this long (requests in flight are aborted, the rest not sent).
    pub timeout: Option<Duration>,
    /// How long before each deadline the dispatcher stops sleeping and spins. Longer = more
    /// precise under OS scheduling noise, more CPU. The default (300 µs) covers Linux's default
    /// 50 µs timer slack with margin; at 200 req/s it spins ~6% of one core.
    pub spin_window: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: None,
            spin_window: Duration::from_micros(300),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutput {
    /// One record per request sent (warm-up included), in schedule order.
    pub records: Vec<RequestRecord>,
    /// Most requests in flight at once (between hand-off to the pool and end of stream).
    pub peak_concurrency: usize,
    /// The schedule's cap, if any.
    pub max_concurrency: Option<usize>,
    /// Scheduled requests that were never sent (the run was cancelled or timed out first).
    pub not_sent: usize,
    /// Whether the run was cancelled or timed out.
    pub cancelled: bool,
    /// Wall-clock time of the run's zero (records' times are seconds after it).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Run zero to the end of the last request, seconds.
    pub elapsed_s: f64,
}

/// Runs `schedule` over `requests` with `client`. Needs a tokio runtime (multi-threaded for
/// precise timing: the dispatcher's spawned tasks must find a free worker).
///
/// Errors only for an invalid schedule (a send naming a request that does not exist); request
/// failures are in the records.
pub async fn run(
    client: &Client,
    requests: &[Request],
    schedule: &Schedule,
    options: &RunOptions,
    cancel: CancellationToken,
) -> Result<RunOutput, LoadgenError> {
    run_with_progress(client, requests, schedule, options, cancel, None).await
}

/// [`run`], counting finished requests (completed or failed, warm-up included) in `finished` as
/// they end, for progress reports while the run goes on.
pub async fn run_with_progress(
    client: &Client,
    requests: &[Request],
    schedule: &Schedule,
    options: &RunOptions,
    cancel: CancellationToken,
    finished: Option<Arc<AtomicUsize>>,
) -> Result<RunOutput, LoadgenError> {
    if let Some(bad) = schedule.sends.iter().find(|s| s.request >= requests.len()) {
        return Err(LoadgenError::Config(format!(
            "schedule sends request {} but there are only {} requests",
            bad.request,
            requests.len()
        )));
    }
    if let Some(bad) = schedule
        .sends
        .iter()
        .find(|s| !(s.at_s.is_finite() && s.at_s >= 0.0))
    {
        return Err(LoadgenError::Config(format!(
            "schedule time {} is not a finite number ≥ 0",
            bad.at_s
        )));
    }
    let requests: Arc<Vec<Request>> = Arc::new(requests.to_vec());
    let sends = schedule.sends.clone();
    let total = sends.len();
    let cancel = cancel.child_token();
    let semaphore = schedule
        .max_concurrency
        .filter(|&m| m > 0)
        .map(|m| Arc::new(Semaphore::new(m)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handle = tokio::runtime::Handle::current();
    let (tx, mut rx) = mpsc::unbounded_channel::<RequestRecord>();

    tracing::info!(
        requests = total,
        span_s = schedule.span_s(),
        max_concurrency = ?schedule.max_concurrency,
        url = %client.config().url(),
        "serving benchmark run starting"
    );

    let timeout_task = options.timeout.map(|t| {
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(t).await;
            tracing::warn!(timeout_s = t.as_secs_f64(), "run timeout: cancelling");
            c.cancel();
        })
    });

    // The run's zero is a little in the future so that the dispatcher thread is up and sleeping
    // when the first send (usually at t = 0) is due, instead of its start-up counting as lateness.
    let clock = Instant::now() + Duration::from_millis(2);
    let started_at = chrono::Utc::now() + chrono::TimeDelta::milliseconds(2);
    let spin_window = options.spin_window;
    let dispatcher = {
        let cancel = cancel.clone();
        let client = client.clone();
        let requests = requests.clone();
        let in_flight = in_flight.clone();
        let peak = peak.clone();
        std::thread::Builder::new()
            .name("loadgen-dispatch".into())
            .spawn(move || {
                for (position, send) in sends.into_iter().enumerate() {
                    let deadline = clock + Duration::from_secs_f64(send.at_s);
                    if !wait_until(deadline, spin_window, &cancel) {
                        break;
                    }
                    let task = RequestTask {
                        client: client.clone(),
                        requests: requests.clone(),
                        send,
                        position,
                        clock,
                        cancel: cancel.clone(),
                        semaphore: semaphore.clone(),
                        in_flight: in_flight.clone(),
                        peak: peak.clone(),
                        tx: tx.clone(),
                        finished: finished.clone(),
                    };
                    handle.spawn(task.run());
                }
                // `tx` drops here: once every task has sent its record, the channel closes.
            })
            .map_err(|e| LoadgenError::Config(format!("cannot start the dispatcher thread: {e}")))?
    };

    let mut records = Vec::with_capacity(total);
    while let Some(r) = rx.recv().await {
        records.push(r);
    }
    // The channel closed, so the dispatcher has returned; joining cannot block.
    if dispatcher.join().is_err() {
        tracing::error!("the dispatcher thread panicked");
    }
    if let Some(t) = timeout_task {
        t.abort();
    }
    records.sort_by_key(|r| r.index);
    let elapsed_s = records.iter().map(|r| r.end_s).fold(0.0, f64::max);
    let sent = records.len();
    let out = RunOutput {
        peak_concurrency: peak.load(Ordering::Relaxed),
        max_concurrency: schedule.max_concurrency,
        not_sent: total - sent,
        cancelled: cancel.is_cancelled(),
        started_at,
        elapsed_s,
        records,
    };
    tracing::info!(
        sent,
        not_sent = out.not_sent,
        failed = out.records.iter().filter(|r| !r.success()).count(),
        peak_concurrency = out.peak_concurrency,
        elapsed_s,
        "serving benchmark run finished"
    );
    Ok(out)
}

/// Sleeps, then spins, until `deadline`; false if cancelled first. Sleeps in slices of at most
/// 50 ms so a cancellation during a long gap (a sparse trace) is noticed promptly.
fn wait_until(deadline: Instant, spin_window: Duration, cancel: &CancellationToken) -> bool {
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > spin_window {
            std::thread::sleep((left - spin_window).min(Duration::from_millis(50)));
        } else {
            std::hint::spin_loop();
        }
    }
}

struct RequestTask {
    client: Client,
    requests: Arc<Vec<Request>>,
    send: crate::schedule::ScheduledSend,
    /// Position in the schedule (the record's index).
    position: usize,
    clock: Instant,
    cancel: CancellationToken,
    semaphore: Option<Arc<Semaphore>>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<RequestRecord>,
    finished: Option<Arc<AtomicUsize>>,
}

impl RequestTask {
    async fn run(self) {
        let since = |t: Instant| t.duration_since(self.clock).as_secs_f64();
        let dispatched_s = since(Instant::now());
        let request = &self.requests[self.send.request];
        let _permit = match &self.semaphore {
            None => None,
            Some(sem) => tokio::select! {
                biased;
                // Cancelled while queued for a slot: never sent, so no record (counted in
                // `RunOutput::not_sent`).
                _ = self.cancel.cancelled() => return,
                p = sem.clone().acquire_owned() => Some(p.expect("the semaphore is never closed")),
            },
        };
        let slot_s = since(Instant::now());
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now_in_flight, Ordering::SeqCst);
        let mut rec = self
            .client
            .execute(self.position, request, self.clock, &self.cancel)
            .await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        rec.warmup = self.send.warmup;
        rec.scheduled_s = self.send.at_s;
        rec.dispatched_s = dispatched_s;
        rec.slot_s = slot_s;
        let _ = self.tx.send(rec);
        if let Some(f) = &self.finished {
            f.fetch_add(1, Ordering::Relaxed);
        }
    }
}
