//! One leased job: run it with the engine (or under nsys) while heartbeating, then deliver its
//! result or failure until the coordinator acknowledges it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use backoff::backoff::Backoff;
use tonic::{Code, Status};

use tokbench_core::{BenchReport, Workload};
use tokbench_proto::auth::{self, AuthedWorkerQueueClient};
use tokbench_proto::v1::{CompleteJobRequest, FailJobRequest, HeartbeatRequest, LeasedJob, NextLease, UploadArtifactChunk, WorkerTimings};

use super::{backoff_policy, transient, with_timeout, Worker, RPC_TIMEOUT};
use crate::bench::Progress;
use crate::EngineError;

impl Worker {
    /// Runs the job and reports its outcome. With `want_next`, a successful result also asks
    /// for the next job (returned when the coordinator leased one).
    pub(super) async fn run_job(&mut self, job: LeasedJob, want_next: bool) -> Option<LeasedJob> {
        let started = Instant::now();
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, "leased job");
        let mut workload: Workload = match serde_json::from_str(&job.workload_json) {
            Ok(w) => w,
            Err(e) => {
                let msg = format!("cannot read the job's workload ({e}): worker and coordinator are probably different tokbench versions; upgrade both");
                self.report_failure(&job, msg, false).await;
                return None;
            }
        };
        workload.device = self.device;
        // A serve job without an endpoint loads the model here (tokbench's own server), so it
        // takes the same model check as an offline job.
        let in_process = workload.serve.as_ref().is_some_and(|s| s.endpoint.is_none());
        if in_process {
            if let Err(e) = crate::resolve::check_model(&workload.model, &self.model_policy) {
                self.report_failure(&job, e.to_string(), e.is_retryable()).await;
                return None;
            }
        }
        if workload.serve.is_some() {
            if job.profile && !in_process {
                self.report_failure(&job, "--profile profiles tokbench's own server: a serve job with an endpoint cannot be profiled by the worker (profile that server on its own host)".into(), false).await;
                return None;
            }
            let profile_cfg = match self.profile_config(&job).await {
                Ok(cfg) => cfg,
                Err(()) => return None,
            };
            return self.run_serve_job(job, workload, want_next, started, profile_cfg).await;
        }
        // A model this worker may not load (a directory outside --models-dir, or a name that is
        // none of catalog name, repo id, allowed directory) fails at once, profiled or not.
        if let Err(e) = crate::resolve::check_model(&workload.model, &self.model_policy) {
            self.report_failure(&job, e.to_string(), e.is_retryable()).await;
            return None;
        }
        // Profiled jobs run in a child `nsys profile ... tokbench-worker bench` (crate::profile).
        let profile_cfg = match self.profile_config(&job).await {
            Ok(cfg) => cfg,
            Err(()) => return None,
        };

        let cancel = Arc::new(AtomicBool::new(false));
        let progress: Arc<Mutex<Progress>> =
            Arc::new(Mutex::new(Progress::start("loading")));
        let cancelled_by_coordinator = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            self.worker_id.clone(),
            job.job_id.clone(),
            job.attempt,
            Duration::from_millis((self.lease_ms / 3).max(30)),
            progress.clone(),
            cancel.clone(),
            cancelled_by_coordinator.clone(),
        ));
        // A stop request cancels the engine between steps; the job is handed back (retryable).
        let mut stop = self.stop.clone();
        let cancel_on_stop = cancel.clone();
        let stop_watch = tokio::spawn(async move {
            if stop.wait_for(|s| *s).await.is_ok() {
                cancel_on_stop.store(true, Ordering::Relaxed);
            }
        });
        let engine = self.engine.clone();
        let (cancel_e, progress_e) = (cancel.clone(), progress.clone());
        let job_id_e = job.job_id.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(BenchReport, Option<crate::profile::ProfiledRun>), EngineError> {
            if let Some(cfg) = profile_cfg {
                if let Ok(mut g) = progress_e.lock() {
                    g.phase = "profiling";
                }
                return match crate::profile::run_profiled(&workload, &job_id_e, &cfg, &cancel_e) {
                    Ok(run) => Ok((run.report.clone(), Some(run))),
                    Err(e) if cancel_e.load(Ordering::Relaxed) => {
                        tracing::info!("profiled job stopped: {e}");
                        Err(EngineError::Cancelled)
                    }
                    Err(e) => Err(EngineError::Profile { message: e.to_string(), retryable: e.is_retryable() }),
                };
            }
            engine(&workload, &cancel_e, &mut |p: &Progress| {
                if let Ok(mut g) = progress_e.lock() {
                    *g = p.clone();
                }
            })
            .map(|r| (r, None))
        })
        .await;
        heartbeat.abort();
        stop_watch.abort();
        let total_ns = started.elapsed().as_nanos() as u64;
        match result {
            Ok(Ok((report, None))) => self.report_success(&job, report, total_ns, want_next).await,
            Ok(Ok((report, Some(profiled)))) => self.report_profiled_success(&job, report, &profiled, total_ns, want_next).await,
            Ok(Err(EngineError::Cancelled)) if cancelled_by_coordinator.load(Ordering::Relaxed) => {
                tracing::info!(job_id = %job.job_id, "job stopped as the coordinator asked (sweep cancelled or lease lost)");
                None
            }
            Ok(Err(EngineError::Cancelled)) => {
                self.report_failure(&job, "the worker was shut down during the job".into(), true).await;
                None
            }
            Ok(Err(e)) => {
                let retryable = e.is_retryable();
                self.report_failure(&job, e.to_string(), retryable).await;
                None
            }
            Err(join) => {
                let msg = if join.is_panic() { format!("the engine panicked: {join}; this is a bug in tokbench, please report it") } else { format!("engine task failed: {join}") };
                self.report_failure(&job, msg, false).await;
                None
            }
        }
    }

    /// The nsys setup of a profiled job (None when the job is not profiled). Err: the job was
    /// failed here (no nsys on this worker, no executable path).
    async fn profile_config(&mut self, job: &LeasedJob) -> Result<Option<crate::profile::ProfileConfig>, ()> {
        if !job.profile {
            return Ok(None);
        }
        let nsys = match (&self.nsys_path, self.nsys_available) {
            (Some(nsys), true) => nsys.clone(),
            _ => {
                self.report_failure(job, "this worker has no nsys (none given with --nsys, on PATH or in the usual install folders); start it with --nsys PATH (see docs/profiling.md)".into(), false).await;
                return Err(());
            }
        };
        match std::env::current_exe() {
            Ok(exe) => Ok(Some(crate::profile::ProfileConfig {
                nsys_path: nsys,
                worker_exe: exe,
                work_dir: std::env::temp_dir().join(format!("tokbench-profile-{}-{}", job.job_id, job.attempt)),
                extra_ld_library_path: std::env::var_os("TOKBENCH_NSYS_LIBS").map(PathBuf::from),
            })),
            Err(e) => {
                self.report_failure(job, format!("cannot locate the worker executable to profile: {e}"), true).await;
                Err(())
            }
        }
    }

    /// A serve job: the load generator drives the job's endpoint (or tokbench's own server for
    /// the job's model, under nsys when profiled) on this runtime while the same heartbeats
    /// (progress = requests finished) and stop/cancel paths as an engine job run, and the result
    /// (and a profile) is delivered the same way.
    async fn run_serve_job(&mut self, job: LeasedJob, workload: Workload, want_next: bool, started: Instant, profile_cfg: Option<crate::profile::ProfileConfig>) -> Option<LeasedJob> {
        let cancel = Arc::new(AtomicBool::new(false));
        let progress: Arc<Mutex<Progress>> = Arc::new(Mutex::new(Progress::start("serving")));
        let cancelled_by_coordinator = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            self.worker_id.clone(),
            job.job_id.clone(),
            job.attempt,
            Duration::from_millis((self.lease_ms / 3).max(30)),
            progress.clone(),
            cancel.clone(),
            cancelled_by_coordinator.clone(),
        ));
        let mut stop = self.stop.clone();
        let cancel_on_stop = cancel.clone();
        let stop_watch = tokio::spawn(async move {
            if stop.wait_for(|s| *s).await.is_ok() {
                cancel_on_stop.store(true, Ordering::Relaxed);
            }
        });
        // Its own task, so a panic in the load generator fails the job instead of the worker.
        let (w, c, p, policy) = (workload.clone(), cancel.clone(), progress.clone(), self.model_policy.clone());
        let profile = profile_cfg.map(|cfg| (cfg, job.job_id.clone()));
        let result = tokio::spawn(async move { super::serve_job::run(&w, &c, &p, &policy, profile).await }).await;
        heartbeat.abort();
        stop_watch.abort();
        let total_ns = started.elapsed().as_nanos() as u64;
        match result {
            Ok(Ok((report, None))) => self.report_success(&job, report, total_ns, want_next).await,
            Ok(Ok((report, Some(profiled)))) => self.report_profiled_success(&job, report, &profiled, total_ns, want_next).await,
            Ok(Err(e)) if e.cancelled && cancelled_by_coordinator.load(Ordering::Relaxed) => {
                tracing::info!(job_id = %job.job_id, "serve job stopped as the coordinator asked (sweep cancelled or lease lost)");
                None
            }
            Ok(Err(e)) if e.cancelled => {
                self.report_failure(&job, "the worker was shut down during the job".into(), true).await;
                None
            }
            Ok(Err(e)) => {
                self.report_failure(&job, e.message, e.retryable).await;
                None
            }
            Err(join) => {
                let msg = if join.is_panic() { format!("the serve benchmark panicked: {join}; this is a bug in tokbench, please report it") } else { format!("serve task failed: {join}") };
                self.report_failure(&job, msg, false).await;
                None
            }
        }
    }

    /// [`Self::report_success`] for a profiled job: the `.nsys-rep` is uploaded first (the run
    /// row is written at completion and the artifact is linked by job), then removed here.
    async fn report_profiled_success(&mut self, job: &LeasedJob, report: BenchReport, profiled: &crate::profile::ProfiledRun, total_ns: u64, want_next: bool) -> Option<LeasedJob> {
        if let Err(e) = self.upload_artifact(job, profiled).await {
            tracing::warn!(job_id = %job.job_id, "profile upload failed: {e:#}");
        }
        let _ = std::fs::remove_file(&profiled.nsys_rep);
        self.report_success(job, report, total_ns, want_next).await
    }

    /// Delivers the result (kept and retried until the coordinator acknowledges it). With
    /// `want_next` the same call asks for the next job; the coordinator makes a retried call
    /// hand out the job the first try leased, never a second one. Returns the next job, if any
    /// (none: nothing queued, an older coordinator, or the result was not delivered; the
    /// caller then long-polls LeaseJob).
    async fn report_success(&mut self, job: &LeasedJob, report: BenchReport, total_ns: u64, want_next: bool) -> Option<LeasedJob> {
        let report_json = match serde_json::to_string(&report) {
            Ok(j) => j,
            Err(e) => {
                self.report_failure(job, format!("cannot serialise the report: {e}"), false).await;
                return None;
            }
        };
        let load_ns = (report.inference_metrics.model_load_time_seconds * 1e9) as u64;
        let inference_ns = (report.inference_metrics.total_inference_time_seconds * 1e9) as u64;
        let lease_next = if want_next && !self.stopped() { Some(NextLease { memory_free_bytes: self.memory_free().await }) } else { None };
        let req = CompleteJobRequest {
            worker_id: self.worker_id.clone(),
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            report_json,
            timings: Some(WorkerTimings { load_ns, inference_ns, total_ns }),
            lease_next,
        };
        let job_id = job.job_id.clone();
        let result = self
            .deliver("CompleteJob", |mut c| {
                let req = req.clone();
                async move { c.complete_job(with_timeout(req, RPC_TIMEOUT)).await.map(|r| r.into_inner()) }
            })
            .await;
        match result {
            Some(r) => {
                if r.duplicate {
                    tracing::info!(%job_id, run_id = %r.run_id, "result acknowledged (already stored)");
                } else if r.run_id.is_empty() {
                    tracing::info!(%job_id, "result acknowledged but not stored (job cancelled)");
                } else {
                    match &report.serve {
                        Some(s) => tracing::info!(%job_id, run_id = %r.run_id, completed = s.metrics.completed, failed = s.metrics.failed, output_throughput = s.metrics.output_throughput, "serve result stored"),
                        None => tracing::info!(%job_id, run_id = %r.run_id, tokens_per_second = report.inference_metrics.tokens_per_second, "result stored"),
                    }
                }
                r.next_job
            }
            None => None,
        }
    }

    /// Streams the .nsys-rep to the coordinator (UploadArtifact), 256 KiB per message.
    async fn upload_artifact(&mut self, job: &LeasedJob, profiled: &crate::profile::ProfiledRun) -> anyhow::Result<()> {
        let data = tokio::fs::read(&profiled.nsys_rep).await.with_context(|| format!("reading {}", profiled.nsys_rep.display()))?;
        let mut chunks = Vec::new();
        for (i, part) in data.chunks(256 * 1024).enumerate() {
            let mut c = UploadArtifactChunk { data: part.to_vec(), ..Default::default() };
            if i == 0 {
                c.job_id = job.job_id.clone();
                c.attempt = job.attempt;
                c.kind = "nsys-rep".into();
                c.file_name = profiled.file_name.clone();
                c.worker_id = self.worker_id.clone();
            }
            chunks.push(c);
        }
        let size = data.len();
        let artifact = self
            .deliver("UploadArtifact", |mut c| {
                let chunks = chunks.clone();
                async move { c.upload_artifact(tokio_stream::iter(chunks)).await.map(|r| r.into_inner()) }
            })
            .await
            .ok_or_else(|| anyhow::anyhow!("the coordinator did not take the artifact"))?;
        tracing::info!(job_id = %job.job_id, artifact_id = %artifact.artifact_id, bytes = size, file = %profiled.file_name, "profile uploaded");
        Ok(())
    }

    pub(super) async fn report_failure(&mut self, job: &LeasedJob, error: String, retryable: bool) {
        tracing::warn!(job_id = %job.job_id, attempt = job.attempt, retryable, %error, "job failed");
        let req = FailJobRequest { worker_id: self.worker_id.clone(), job_id: job.job_id.clone(), attempt: job.attempt, error, retryable };
        if let Some(r) = self
            .deliver("FailJob", |mut c| {
                let req = req.clone();
                async move { c.fail_job(with_timeout(req, RPC_TIMEOUT)).await.map(|r| r.into_inner()) }
            })
            .await
        {
            tracing::info!(job_id = %job.job_id, will_retry = r.will_retry, "failure acknowledged");
        }
    }

    /// Calls until the coordinator answers (backoff on transient errors). None: given up
    /// (a permanent refusal, or the worker was told to stop while the coordinator was away).
    async fn deliver<T, F, Fut>(&mut self, what: &str, mut call: F) -> Option<T>
    where
        F: FnMut(AuthedWorkerQueueClient) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut policy = backoff_policy();
        loop {
            match call(self.client.clone()).await {
                Ok(v) => return Some(v),
                // A TLS failure is retried too: the result must not be dropped for it.
                Err(s) if transient(&s) => {
                    let delay = policy.next_backoff().unwrap_or(Duration::from_secs(5));
                    let error = auth::tls_problem(&s).map(|cause| auth::tls_failure_message(&self.url, &cause)).unwrap_or_else(|| s.message().to_string());
                    tracing::warn!(rpc = what, code = ?s.code(), %error, retry_in_ms = delay.as_millis() as u64, "coordinator unreachable; keeping the result and retrying");
                    if !self.pause(delay).await {
                        tracing::error!(rpc = what, "stopping with an undelivered result: the job will be run again after its lease expires");
                        return None;
                    }
                }
                Err(s) => {
                    tracing::error!(rpc = what, code = ?s.code(), error = %s.message(), "the coordinator refused the report; dropping it");
                    return None;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn heartbeat_loop(
    mut client: AuthedWorkerQueueClient,
    worker_id: String,
    job_id: String,
    attempt: u32,
    every: Duration,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
    cancelled_by_coordinator: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let p = progress.lock().map(|g| g.clone()).unwrap_or(Progress::start("unknown"));
        let req = HeartbeatRequest {
            worker_id: worker_id.clone(),
            job_id: job_id.clone(),
            attempt,
            phase: p.phase.to_string(),
            tokens_done: p.tokens_done,
            tokens_total: p.tokens_total,
            tokens_per_second: p.tokens_per_second,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        };
        // Short deadline: a heartbeat that cannot arrive within the lease is useless anyway.
        match client.heartbeat(with_timeout(req, every * 2)).await {
            Ok(r) if r.get_ref().cancel => {
                tracing::info!(%job_id, "coordinator says stop this job");
                cancelled_by_coordinator.store(true, Ordering::Relaxed);
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {
                tracing::warn!(%job_id, error = %s.message(), "coordinator does not know this job; stopping it");
                cancelled_by_coordinator.store(true, Ordering::Relaxed);
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            // Keep running: if the coordinator is back before the lease runs out nothing is lost,
            // and if not the result is still delivered (and stored once) later.
            Err(s) => tracing::warn!(%job_id, code = ?s.code(), error = %s.message(), "heartbeat failed"),
        }
    }
}
