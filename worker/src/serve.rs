//! `tokbench-worker serve`: register with a coordinator, then lease jobs, run them with the
//! engine while heartbeating, and report each result until the coordinator acknowledges it.
//!
//! Delivery is at-least-once and the coordinator stores a job's result once (idempotent by
//! job and attempt), so every RPC that carries a result is retried with exponential backoff
//! across coordinator restarts. A worker killed mid-job simply stops heartbeating: its lease
//! expires and another worker runs the job again.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::sync::watch;
use tonic::{Code, Status};

use tokbench_core::{BenchReport, DeviceSpec, Workload};
use tokbench_proto::auth::{self, AuthedWorkerQueueClient};
use tokbench_proto::v1::{
    CompleteJobRequest, FailJobRequest, HeartbeatRequest, LeaseJobRequest, LeasedJob, NextLease, RegisterRequest, UploadArtifactChunk, WorkerCapabilities, WorkerTimings,
};

use crate::bench::Progress;
use crate::EngineError;

/// How long one LeaseJob call waits for a job on the coordinator (long poll).
const LEASE_WAIT: Duration = Duration::from_secs(10);
/// Deadline of short RPCs (register, heartbeat, complete, fail).
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Coordinator URL (https:// when it serves TLS; see --ca-cert).
    #[arg(long, env = "TOKBENCH_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Device this worker runs every job on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceSpec,
    /// Shared token of the coordinator (`authorization: Bearer <token>`).
    #[arg(long, env = "TOKBENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Stable id of this worker (default: <hostname>-<device>-<pid>). Each worker on a host needs its own.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Path of the Nsight Systems `nsys` binary: lets this worker take profiled jobs.
    #[arg(long, value_name = "PATH")]
    pub nsys: Option<PathBuf>,
    /// Directory with libdw.so.1 and libelf.so.1 for nsys's importer (shared/tools/nsys-libs.sh DIR):
    /// without them nsys 2025.3 on some machines writes only a .qdstrm.
    #[arg(long, env = "TOKBENCH_NSYS_LIBS", value_name = "DIR")]
    pub nsys_libs: Option<PathBuf>,
    /// PEM CA certificate that signed the coordinator's TLS certificate (needed for https://
    /// URLs: this build trusts no system CAs). TOKBENCH_TLS_CA is read too, for older setups.
    #[arg(long, alias = "tls-ca", env = "TOKBENCH_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Exit after this many jobs (for tests and one-shot use).
    #[arg(long)]
    pub max_jobs: Option<usize>,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e| format!("{e}"))
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://127.0.0.1:50051`
    pub coordinator: String,
    pub device: DeviceSpec,
    pub token: Option<String>,
    pub worker_id: Option<String>,
    pub nsys_path: Option<PathBuf>,
    /// Exit after N jobs (for tests).
    pub max_jobs: Option<usize>,
    /// PEM CA certificate to trust for an https:// coordinator.
    pub ca_cert: Option<PathBuf>,
}

/// The function that runs one job (the real engine is `bench::run_workload_with` and the
/// worker's own `bench::ModelCache`; the coordinator overhead benchmark plugs in one that does no
/// inference).
pub type Engine = Arc<dyn Fn(&Workload, &AtomicBool, &mut dyn FnMut(&Progress)) -> crate::Result<BenchReport> + Send + Sync>;

pub fn main(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.nsys_libs {
        // SAFETY: set before the runtime (and any other thread) starts.
        unsafe { std::env::set_var("TOKBENCH_NSYS_LIBS", dir) };
    }
    let config = WorkerConfig {
        coordinator: args.coordinator,
        device: args.device,
        token: args.token,
        worker_id: args.worker_id,
        nsys_path: args.nsys,
        max_jobs: args.max_jobs,
        ca_cert: args.ca_cert.or_else(|| std::env::var_os("TOKBENCH_TLS_CA").map(PathBuf::from)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    rt.block_on(run(config, shutdown_signal()))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested: finishing (cancelling) the current job and exiting");
}

/// Serves jobs with the real engine until `shutdown` resolves (or `max_jobs` are done).
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    // The models this worker's jobs leave loaded for its later jobs (`reuse_model`).
    let models = crate::bench::ModelCache::default();
    let engine: Engine = Arc::new(move |w: &Workload, c: &AtomicBool, p: &mut dyn FnMut(&Progress)| crate::bench::run_workload_with(&models, w, c, p));
    run_with_engine(config, shutdown, engine).await
}

/// `run` with a given engine.
pub async fn run_with_engine(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send, engine: Engine) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let main = serve_loop(config, engine, stop_rx);
    tokio::pin!(main);
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut main => r,
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            main.await
        }
    }
}

use crate::bench::hostname;

fn default_worker_id(device: &DeviceSpec) -> String {
    let host: String = hostname().chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    format!("{host}-{}-{}", device.to_string().replace(':', ""), std::process::id())
}

struct Worker {
    client: AuthedWorkerQueueClient,
    /// The coordinator URL, for messages.
    url: String,
    worker_id: String,
    device: DeviceSpec,
    caps: WorkerCapabilities,
    nsys_available: bool,
    nsys_path: Option<PathBuf>,
    lease_ms: u64,
    engine: Engine,
    stop: watch::Receiver<bool>,
}

/// Errors worth retrying: the coordinator is away, restarting, or had a transient problem.
fn transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Internal | Code::ResourceExhausted | Code::Aborted | Code::Cancelled)
}

/// The error to exit with when the coordinator refuses us for good.
fn refused(url: &str, what: &str, s: &Status) -> anyhow::Error {
    match auth::tls_problem(s) {
        Some(cause) => anyhow::anyhow!("{}", auth::tls_failure_message(url, &cause)),
        None => anyhow::anyhow!("the coordinator refused {what}: {} ({:?})", s.message(), s.code()),
    }
}

fn backoff_policy() -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(5),
        multiplier: 2.0,
        // Keep trying for as long as it takes: the result must reach the coordinator.
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

async fn serve_loop(config: WorkerConfig, engine: Engine, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let ca_pem = match &config.ca_cert {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read the CA certificate {} (--ca-cert / TOKBENCH_CA_CERT)", p.display()))?),
        None => None,
    };
    // Lazy: the channel (re)connects on use, so a coordinator that is not up yet or restarts
    // is handled by the retry loops below rather than failing the worker.
    let channel = auth::connect_lazy(&config.coordinator, ca_pem.as_deref()).context("--coordinator")?;
    let client = auth::worker_queue_client(channel, config.token.as_deref()).context("--token")?;
    let worker_id = config.worker_id.clone().unwrap_or_else(|| default_worker_id(&config.device));
    let nsys_available = config.nsys_path.as_ref().is_some_and(|p| p.is_file());
    if let Some(p) = &config.nsys_path {
        if !nsys_available {
            tracing::warn!(path = %p.display(), "--nsys does not point to a file: this worker will refuse profiled jobs");
        }
    }
    let device = config.device;
    let info = tokio::task::spawn_blocking(move || crate::gpu::device_info(&device)).await.context("reading device info")?;
    let caps = WorkerCapabilities {
        hostname: hostname(),
        backend: info.backend.clone(),
        device_index: info.device_index,
        gpu_name: info.gpu_name.clone(),
        memory_total_bytes: info.memory_total_bytes,
        memory_free_bytes: info.memory_free_bytes,
        driver_version: info.driver_version.clone(),
        cuda_version: info.cuda_version.clone(),
        tokbench_version: tokbench_core::TOKBENCH_VERSION.to_string(),
        nsys_available,
    };
    let mut w = Worker {
        client,
        url: config.coordinator.clone(),
        worker_id,
        device: config.device,
        caps,
        nsys_available,
        nsys_path: config.nsys_path.clone(),
        lease_ms: 15_000,
        engine,
        stop,
    };
    if !w.register().await? {
        return Ok(());
    }
    let mut done = 0usize;
    // The job leased together with the last completion (CompleteJob with lease_next).
    let mut next: Option<LeasedJob> = None;
    loop {
        if config.max_jobs.is_some_and(|m| done >= m) {
            tracing::info!(jobs = done, "max_jobs reached; exiting");
            return Ok(());
        }
        if w.stopped() {
            if let Some(job) = next.take() {
                // Leased with the last result but not started: hand it back for another worker.
                w.report_failure(&job, "the worker was shut down before starting the job".into(), true).await;
            }
            tracing::info!("worker stopped");
            return Ok(());
        }
        let job = match next.take() {
            Some(job) => job,
            None => match w.lease().await? {
                LeaseOutcome::Job(job) => job,
                LeaseOutcome::NoJob => continue,
                LeaseOutcome::Stopped => {
                    tracing::info!("worker stopped");
                    return Ok(());
                }
            },
        };
        // Ask for the next job with this one's result, unless this is the last one we run.
        let want_next = config.max_jobs.is_none_or(|m| done + 1 < m);
        next = w.run_job(job, want_next).await;
        done += 1;
    }
}

enum LeaseOutcome {
    Job(LeasedJob),
    NoJob,
    Stopped,
}

impl Worker {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for the next retry, or returns false when the worker is told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Registers, retrying with backoff while the coordinator is unreachable. false: stopped.
    async fn register(&mut self) -> anyhow::Result<bool> {
        let mut policy = backoff_policy();
        loop {
            let req = RegisterRequest { worker_id: self.worker_id.clone(), capabilities: Some(self.caps.clone()) };
            match self.client.register(with_timeout(req, RPC_TIMEOUT)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.lease_ms = (r.lease_ms as u64).max(100);
                    tracing::info!(worker_id = %self.worker_id, lease_ms = self.lease_ms, backend = %self.caps.backend, gpu = %self.caps.gpu_name, "registered with the coordinator");
                    return Ok(true);
                }
                // Retrying cannot fix a certificate the CA does not vouch for: say so and stop.
                Err(s) if auth::tls_problem(&s).is_some() => return Err(refused(&self.url, "to register this worker", &s)),
                Err(s) if transient(&s) => {
                    let delay = policy.next_backoff().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(code = ?s.code(), error = %s.message(), retry_in_ms = delay.as_millis() as u64, "coordinator not reachable; will retry");
                    if !self.pause(delay).await {
                        return Ok(false);
                    }
                }
                Err(s) => return Err(refused(&self.url, "to register this worker", &s)),
            }
        }
    }

    /// Free device memory now (0 on the CPU: no placement limit).
    async fn memory_free(&self) -> u64 {
        if matches!(self.device, DeviceSpec::Cuda(_)) {
            let d = self.device;
            tokio::task::spawn_blocking(move || crate::gpu::device_info(&d).memory_free_bytes).await.unwrap_or(0)
        } else {
            0
        }
    }

    async fn lease(&mut self) -> anyhow::Result<LeaseOutcome> {
        let mut policy = backoff_policy();
        loop {
            if self.stopped() {
                return Ok(LeaseOutcome::Stopped);
            }
            let free = self.memory_free().await;
            let req = LeaseJobRequest { worker_id: self.worker_id.clone(), wait_ms: LEASE_WAIT.as_millis() as u32, memory_free_bytes: free };
            let call = self.client.lease_job(with_timeout(req, LEASE_WAIT + RPC_TIMEOUT));
            let mut stop = self.stop.clone();
            let res = tokio::select! {
                r = call => r,
                _ = stop.wait_for(|s| *s) => return Ok(LeaseOutcome::Stopped),
            };
            match res {
                Ok(r) => return Ok(r.into_inner().job.map(LeaseOutcome::Job).unwrap_or(LeaseOutcome::NoJob)),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    // The coordinator does not know us (e.g. it was started on a new database).
                    tracing::warn!(error = %s.message(), "re-registering");
                    if !self.register().await? {
                        return Ok(LeaseOutcome::Stopped);
                    }
                }
                Err(s) if auth::tls_problem(&s).is_some() => return Err(refused(&self.url, "LeaseJob", &s)),
                Err(s) if transient(&s) => {
                    let delay = policy.next_backoff().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(code = ?s.code(), error = %s.message(), retry_in_ms = delay.as_millis() as u64, "cannot lease a job; will retry");
                    if !self.pause(delay).await {
                        return Ok(LeaseOutcome::Stopped);
                    }
                }
                Err(s) => return Err(refused(&self.url, "LeaseJob", &s)),
            }
        }
    }

    /// Runs the job and reports its outcome. With `want_next`, a successful result also asks
    /// for the next job (returned when the coordinator leased one).
    async fn run_job(&mut self, job: LeasedJob, want_next: bool) -> Option<LeasedJob> {
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
        if job.profile && !self.nsys_available {
            self.report_failure(&job, "this worker has no nsys; start it with --nsys PATH".into(), false).await;
            return None;
        }
        // Profiled jobs run in a child `nsys profile ... tokbench-worker bench` (crate::profile).
        let profile_cfg = match (job.profile, &self.nsys_path) {
            (true, Some(nsys)) => match std::env::current_exe() {
                Ok(exe) => Some(crate::profile::ProfileConfig {
                    nsys_path: nsys.clone(),
                    worker_exe: exe,
                    work_dir: std::env::temp_dir().join(format!("tokbench-profile-{}-{}", job.job_id, job.attempt)),
                    extra_ld_library_path: std::env::var_os("TOKBENCH_NSYS_LIBS").map(PathBuf::from),
                }),
                Err(e) => {
                    self.report_failure(&job, format!("cannot locate the worker executable to profile: {e}"), true).await;
                    return None;
                }
            },
            _ => None,
        };

        let cancel = Arc::new(AtomicBool::new(false));
        let progress: Arc<Mutex<Progress>> =
            Arc::new(Mutex::new(Progress { phase: "loading", tokens_done: 0, tokens_total: 0, tokens_per_second: 0.0 }));
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
            Ok(Ok((report, Some(profiled)))) => {
                // Upload first: the run row is written at completion and the artifact is linked by job.
                if let Err(e) = self.upload_artifact(&job, &profiled).await {
                    tracing::warn!(job_id = %job.job_id, "profile upload failed: {e:#}");
                }
                let _ = std::fs::remove_file(&profiled.nsys_rep);
                self.report_success(&job, report, total_ns, want_next).await
            }
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
                    tracing::info!(%job_id, run_id = %r.run_id, tokens_per_second = report.inference_metrics.tokens_per_second, "result stored");
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

    async fn report_failure(&mut self, job: &LeasedJob, error: String, retryable: bool) {
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
        let p = progress.lock().map(|g| g.clone()).unwrap_or(Progress { phase: "unknown", tokens_done: 0, tokens_total: 0, tokens_per_second: 0.0 });
        let req = HeartbeatRequest {
            worker_id: worker_id.clone(),
            job_id: job_id.clone(),
            attempt,
            phase: p.phase.to_string(),
            tokens_done: p.tokens_done,
            tokens_total: p.tokens_total,
            tokens_per_second: p.tokens_per_second,
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

/// The CLI spawns `run` on a multi-threaded runtime: it must stay `Send`.
#[allow(dead_code)]
fn assert_run_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let config = WorkerConfig { coordinator: String::new(), device: DeviceSpec::Cpu, token: None, worker_id: None, nsys_path: None, max_jobs: None, ca_cert: None };
    is_send(&run(config, async {}));
}
