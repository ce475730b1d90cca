//! The gRPC services: `Benchmarks` (clients) and `WorkerQueue` (workers), on top of `Store`.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use tokbench_core::BenchReport;
use tokbench_proto::v1::benchmarks_server::Benchmarks;
use tokbench_proto::v1::worker_queue_server::WorkerQueue;
use tokbench_proto::v1::*;

use crate::store::{self, now_ms, Changes, CompleteOutcome, FailOutcome, HeartbeatOutcome, JobRow, RunRow, Store, StoreError, SweepRow};
use crate::validate;

mod convert;

use convert::{artifact_proto, event_kind_for, event_message, leased_proto, require, run_summary, sweep_proto, validate_worker_id, StoredCaps};
pub use convert::job_proto;

/// Longest a LeaseJob call waits; longer requests are cut to this.
pub const MAX_LEASE_WAIT: Duration = Duration::from_secs(30);
/// Poll interval of a waiting LeaseJob besides the submit/requeue wake-ups (covers changes a
/// Notify cannot see, e.g. a job that only fits once the worker reports more free memory).
const LEASE_POLL: Duration = Duration::from_millis(250);
pub const ARTIFACT_CHUNK_BYTES: usize = 256 * 1024;
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 30;

pub struct Shared {
    pub store: Store,
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub artifacts_dir: PathBuf,
    /// Largest artifact file accepted, bytes.
    pub max_artifact_bytes: u64,
    /// Total bytes of stored artifacts at most (None: no quota).
    pub artifact_quota_bytes: Option<u64>,
    /// Bytes of uploads under way (counted against the quota with what is stored).
    pub artifact_bytes_in_flight: std::sync::atomic::AtomicU64,
    /// Woken whenever a job becomes queued (submit, retry, expired lease).
    pub queue_changed: Notify,
    pub events: broadcast::Sender<SweepEvent>,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct Service(pub Arc<Shared>);

/// What clients see of a storage error: the store says what happened, this says which status.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Status::not_found(m),
            StoreError::InvalidArgument(m) => Status::invalid_argument(m),
            StoreError::PermissionDenied(m) => Status::permission_denied(m),
            StoreError::FailedPrecondition(m) => Status::failed_precondition(m),
            e @ StoreError::WorkerNotRegistered { .. } => Status::failed_precondition(e.to_string()),
            e @ StoreError::Closed => Status::unavailable(e.to_string()),
            other => {
                tracing::error!(error = %other, "storage error");
                Status::internal(format!("coordinator storage error: {other}"))
            }
        }
    }
}

impl Shared {
    /// `known_run`: the job's run when the caller has it (saves reading it back).
    async fn job_event(&self, job: &JobRow, kind: EventKind, known_run: Option<&RunRow>) -> SweepEvent {
        let run = if job.state != store::JobState::Succeeded {
            None
        } else if let Some(r) = known_run.filter(|r| r.job_id == job.id) {
            Some(run_summary(r))
        } else {
            match self.store.run_of_job(&job.id).await {
                Ok(r) => r.as_ref().map(run_summary),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the run for an event");
                    None
                }
            }
        };
        SweepEvent { kind: kind as i32, sweep_id: job.sweep_id.clone(), job: Some(job_proto(job)), run, message: event_message(job), at_ms: now_ms() }
    }

    /// Logs and broadcasts committed changes; wakes waiting LeaseJob calls when a job was queued.
    pub async fn publish(&self, changes: &Changes) {
        let mut queued = false;
        // Nobody watching: log, but build no events.
        let watched = self.events.receiver_count() > 0;
        for job in &changes.jobs {
            tracing::info!(job_id = %job.id, sweep_id = %job.sweep_id, model = %job.model, batch_size = job.batch_size, state = %job.state,
                attempt = job.attempts, worker_id = job.worker_id.as_deref().unwrap_or(""), error = %job.last_error, "job state change");
            queued |= job.state == store::JobState::Queued;
            if watched {
                let run = changes.runs.iter().find(|r| r.job_id == job.id);
                let ev = self.job_event(job, event_kind_for(job), run).await;
                // No receivers is fine: nobody is watching.
                let _ = self.events.send(ev);
            }
        }
        for (sweep_id, state) in &changes.sweeps_done {
            tracing::info!(%sweep_id, %state, "sweep finished");
            let _ = self.events.send(SweepEvent { kind: EventKind::SweepDone as i32, sweep_id: sweep_id.clone(), job: None, run: None, message: format!("sweep {state}"), at_ms: now_ms() });
        }
        if queued {
            self.queue_changed.notify_waiters();
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

// ------------------------------------------------------------------ Benchmarks

#[tonic::async_trait]
impl Benchmarks for Service {
    async fn submit_sweep(&self, request: Request<SubmitSweepRequest>) -> Result<Response<SubmitSweepResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec is missing: SubmitSweep needs a SweepSpec with at least one model"))?;
        let valid = validate::validate_sweep(&spec).map_err(|m| Status::invalid_argument(format!("invalid sweep: {m}")))?;
        let (sweep, jobs) = self.0.store.submit_sweep(&valid, self.0.max_attempts).await?;
        tracing::info!(sweep_id = %sweep.id, jobs = jobs.len(), label = %sweep.label, "sweep submitted");
        let changes = Changes { jobs: jobs.clone(), ..Default::default() };
        self.0.publish(&changes).await;
        Ok(Response::new(SubmitSweepResponse { sweep_id: sweep.id, jobs: jobs.iter().map(job_proto).collect() }))
    }

    type WatchSweepStream = BoxStream<SweepEvent>;

    async fn watch_sweep(&self, request: Request<WatchSweepRequest>) -> Result<Response<Self::WatchSweepStream>, Status> {
        let id = request.into_inner().sweep_id;
        require("sweep_id", &id)?;
        // Subscribe before reading the current state so no change falls in between.
        let mut rx = self.0.events.subscribe();
        let (sweep, jobs) = self.0.store.get_sweep(&id).await?;
        let sweep_id = sweep.id.clone();
        let (tx, out) = mpsc::channel::<Result<SweepEvent, Status>>(256);
        let shared = self.0.clone();
        let mut shutdown = self.0.shutdown.clone();
        tokio::spawn(async move {
            let send_snapshot = |sweep: SweepRow, jobs: Vec<JobRow>| {
                let shared = shared.clone();
                let tx = tx.clone();
                async move {
                    for j in &jobs {
                        if tx.send(Ok(shared.job_event(j, event_kind_for(j), None).await)).await.is_err() {
                            return true;
                        }
                    }
                    if sweep.state != store::SweepState::Running {
                        let _ = tx
                            .send(Ok(SweepEvent { kind: EventKind::SweepDone as i32, sweep_id: sweep.id.clone(), job: None, run: None, message: format!("sweep {}", sweep.state), at_ms: now_ms() }))
                            .await;
                        return true;
                    }
                    false
                }
            };
            if send_snapshot(sweep, jobs).await {
                return;
            }
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) if ev.sweep_id == sweep_id => {
                            let done = ev.kind == EventKind::SweepDone as i32;
                            if tx.send(Ok(ev)).await.is_err() || done {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Too slow a reader: send the current state again instead of the missed events.
                            match shared.store.get_sweep(&sweep_id).await {
                                Ok((s, j)) => if send_snapshot(s, j).await { return },
                                Err(e) => { let _ = tx.send(Err(e.into())).await; return; }
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(Status::unavailable("the coordinator is shutting down; watch again when it is back"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_sweep(&self, request: Request<GetSweepRequest>) -> Result<Response<Sweep>, Status> {
        let id = request.into_inner().sweep_id;
        require("sweep_id", &id)?;
        let (s, jobs) = self.0.store.get_sweep(&id).await?;
        Ok(Response::new(sweep_proto(&s, &jobs)))
    }

    async fn list_sweeps(&self, request: Request<ListSweepsRequest>) -> Result<Response<ListSweepsResponse>, Status> {
        let rows = self.0.store.list_sweeps(request.into_inner().limit).await?;
        Ok(Response::new(ListSweepsResponse { sweeps: rows.iter().map(|(s, j)| sweep_proto(s, j)).collect() }))
    }

    async fn cancel_sweep(&self, request: Request<CancelSweepRequest>) -> Result<Response<Sweep>, Status> {
        let id = request.into_inner().sweep_id;
        require("sweep_id", &id)?;
        let (sweep, changes) = self.0.store.cancel_sweep(&id).await?;
        tracing::info!(sweep_id = %sweep.id, jobs_cancelled = changes.jobs.len(), "sweep cancelled");
        self.0.publish(&changes).await;
        let (s, jobs) = self.0.store.get_sweep(&sweep.id).await?;
        Ok(Response::new(sweep_proto(&s, &jobs)))
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Result<Response<ListRunsResponse>, Status> {
        let r = request.into_inner();
        let rows = self.0.store.list_runs(&r.sweep_id, &r.model, &r.run_ids, r.limit, r.include_reports).await?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            let artifact_ids = self.0.store.artifact_ids_of_run(&row.id).await?;
            runs.push(Run { summary: Some(run_summary(&row)), report_json: row.report_json.clone().unwrap_or_default(), artifact_ids });
        }
        Ok(Response::new(ListRunsResponse { runs }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let id = request.into_inner().run_id;
        require("run_id", &id)?;
        let row = self.0.store.get_run(&id).await?;
        let artifact_ids = self.0.store.artifact_ids_of_run(&row.id).await?;
        Ok(Response::new(Run { summary: Some(run_summary(&row)), report_json: row.report_json.clone().unwrap_or_default(), artifact_ids }))
    }

    async fn list_workers(&self, _request: Request<ListWorkersRequest>) -> Result<Response<ListWorkersResponse>, Status> {
        let now = now_ms();
        let rows = self.0.store.list_workers().await?;
        let workers = rows
            .into_iter()
            .map(|w| {
                let c: StoredCaps = serde_json::from_str(&w.capabilities_json).unwrap_or_default();
                Worker {
                    worker_id: w.id,
                    hostname: c.hostname,
                    backend: c.backend,
                    device_index: c.device_index,
                    gpu_name: c.gpu_name,
                    memory_total_bytes: c.memory_total_bytes,
                    memory_free_bytes: c.memory_free_bytes,
                    driver_version: c.driver_version,
                    cuda_version: c.cuda_version,
                    tokbench_version: c.tokbench_version,
                    last_seen_ms: w.last_seen,
                    current_job_id: w.current_job_id.unwrap_or_default(),
                    alive: now - w.last_seen <= self.0.lease_ms as i64,
                    nsys_available: c.nsys_available,
                }
            })
            .collect();
        Ok(Response::new(ListWorkersResponse { workers }))
    }

    async fn list_artifacts(&self, request: Request<ListArtifactsRequest>) -> Result<Response<ListArtifactsResponse>, Status> {
        let r = request.into_inner();
        if r.run_id.is_empty() && r.job_id.is_empty() {
            return Err(Status::invalid_argument("give a run_id or a job_id to list its artifacts"));
        }
        let rows = self.0.store.list_artifacts(&r.run_id, &r.job_id).await?;
        Ok(Response::new(ListArtifactsResponse { artifacts: rows.iter().map(artifact_proto).collect() }))
    }

    type DownloadArtifactStream = BoxStream<ArtifactChunk>;

    async fn download_artifact(&self, request: Request<DownloadArtifactRequest>) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let id = request.into_inner().artifact_id;
        require("artifact_id", &id)?;
        let row = self.0.store.get_artifact(&id).await?;
        let mut file = tokio::fs::File::open(&row.path)
            .await
            .map_err(|e| Status::not_found(format!("artifact {id} is recorded but its file {} cannot be read on the coordinator: {e}", row.path)))?;
        let (tx, out) = mpsc::channel::<Result<ArtifactChunk, Status>>(4);
        tokio::spawn(async move {
            let mut first = Some(artifact_proto(&row));
            loop {
                let mut buf = vec![0u8; ARTIFACT_CHUNK_BYTES];
                let mut filled = 0;
                // Fill whole chunks (read may return less) so every chunk but the last is 256 KiB.
                while filled < buf.len() {
                    match file.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(format!("reading artifact {}: {e}", row.path)))).await;
                            return;
                        }
                    }
                }
                buf.truncate(filled);
                let last = filled < ARTIFACT_CHUNK_BYTES;
                if (filled > 0 || first.is_some()) && tx.send(Ok(ArtifactChunk { artifact: first.take(), data: buf })).await.is_err() {
                    return;
                }
                if last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

// ------------------------------------------------------------------ WorkerQueue

#[tonic::async_trait]
impl WorkerQueue for Service {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let r = request.into_inner();
        validate_worker_id(&r.worker_id)?;
        let caps = r.capabilities.ok_or_else(|| Status::invalid_argument("capabilities are missing: Register needs the worker's WorkerCapabilities"))?;
        if !matches!(caps.backend.as_str(), "cpu" | "cuda") {
            return Err(Status::invalid_argument(format!("capabilities.backend \"{}\" is invalid: use cpu or cuda", caps.backend)));
        }
        let stored = StoredCaps::from(&caps);
        let json = serde_json::to_string(&stored).expect("caps serialise");
        self.0.store.register_worker(&r.worker_id, &json, &caps.hostname, &caps.backend).await?;
        tracing::info!(worker_id = %r.worker_id, backend = %caps.backend, gpu = %caps.gpu_name, host = %caps.hostname, "worker registered");
        Ok(Response::new(RegisterResponse { worker_id: r.worker_id, lease_ms: self.0.lease_ms.min(u32::MAX as u64) as u32 }))
    }

    async fn lease_job(&self, request: Request<LeaseJobRequest>) -> Result<Response<LeaseJobResponse>, Status> {
        let r = request.into_inner();
        validate_worker_id(&r.worker_id)?;
        let backend = self.0.store.worker_backend(&r.worker_id).await?;
        let wait = Duration::from_millis(r.wait_ms as u64).min(MAX_LEASE_WAIT);
        let deadline = Instant::now() + wait;
        let mut shutdown = self.0.shutdown.clone();
        let mut last_touch: Option<Instant> = None;
        let touch_every = Duration::from_millis((self.0.lease_ms / 3).max(1));
        loop {
            let notified = self.0.queue_changed.notified();
            tokio::pin!(notified);
            // Register interest before looking, so a submit between the look and the wait still wakes us.
            notified.as_mut().enable();
            if self.0.store.has_candidate(&backend, r.memory_free_bytes).await? {
                if let Some(leased) = self.0.store.lease(&r.worker_id, &backend, r.memory_free_bytes, self.0.lease_ms).await? {
                    self.0.publish(&Changes { jobs: vec![leased.job.clone()], ..Default::default() }).await;
                    return Ok(Response::new(LeaseJobResponse { job: Some(leased_proto(&leased)) }));
                }
            }
            // A waiting worker is alive and runs no job: keep last_seen fresh (and current_job_id
            // clear) without writing on every wake-up.
            if last_touch.is_none_or(|t| t.elapsed() >= touch_every) {
                self.0.store.touch_worker(&r.worker_id).await?;
                last_touch = Some(Instant::now());
            }
            let now = Instant::now();
            if now >= deadline || *shutdown.borrow() {
                return Ok(Response::new(LeaseJobResponse { job: None }));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep((deadline - now).min(LEASE_POLL)) => {}
                _ = shutdown.changed() => return Ok(Response::new(LeaseJobResponse { job: None })),
            }
        }
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        validate_worker_id(&r.worker_id)?;
        require("job_id", &r.job_id)?;
        let out = self.0.store.heartbeat(&r.worker_id, &r.job_id, r.attempt, (&r.phase, r.tokens_done, r.tokens_total, r.tokens_per_second, r.bytes_done, r.bytes_total), self.0.lease_ms).await?;
        match out {
            HeartbeatOutcome::Extended { lease_expires_at, job, started } => {
                if started {
                    tracing::info!(job_id = %job.id, sweep_id = %job.sweep_id, state = %store::JobState::Running, attempt = job.attempts, worker_id = %r.worker_id, "job state change");
                }
                if self.0.events.receiver_count() > 0 {
                    let _ = self.0.events.send(self.0.job_event(&job, EventKind::Progress, None).await);
                }
                Ok(Response::new(HeartbeatResponse { cancel: false, lease_expires_ms: lease_expires_at }))
            }
            HeartbeatOutcome::Cancel { reason } => {
                tracing::info!(job_id = %r.job_id, worker_id = %r.worker_id, attempt = r.attempt, %reason, "telling worker to stop the job");
                Ok(Response::new(HeartbeatResponse { cancel: true, lease_expires_ms: 0 }))
            }
        }
    }

    async fn complete_job(&self, request: Request<CompleteJobRequest>) -> Result<Response<CompleteJobResponse>, Status> {
        let r = request.into_inner();
        validate_worker_id(&r.worker_id)?;
        require("job_id", &r.job_id)?;
        let report: BenchReport = serde_json::from_str(&r.report_json).map_err(|e| {
            Status::invalid_argument(format!("report_json is not a tokbench BenchReport: {e}. Worker and coordinator versions may differ: upgrade both to the same tokbench version"))
        })?;
        let total_ns = r.timings.map(|t| t.total_ns).unwrap_or(0);
        let tokens_per_second = report.inference_metrics.tokens_per_second;
        let (worker_id, job_id, attempt) = (r.worker_id.clone(), r.job_id.clone(), r.attempt);
        let done = store::Completion { worker_id: r.worker_id, job_id: r.job_id, attempt: r.attempt, report, report_json: r.report_json, worker_total_ns: total_ns };
        let next = r.lease_next.map(|n| store::NextLease { free_bytes: n.memory_free_bytes, lease_ms: self.0.lease_ms });
        let (outcome, leased) = self.0.store.complete(done, next).await?;
        let mut response = match outcome {
            CompleteOutcome::Stored { run_id, changes } => {
                tracing::info!(%job_id, %run_id, attempt, %worker_id, tokens_per_second, "run stored");
                self.0.publish(&changes).await;
                CompleteJobResponse { run_id, duplicate: false, next_job: None }
            }
            CompleteOutcome::Duplicate { run_id, attempt: stored_attempt } => {
                tracing::info!(%job_id, %run_id, attempt, stored_attempt, "duplicate report acknowledged, nothing stored");
                CompleteJobResponse { run_id, duplicate: true, next_job: None }
            }
            CompleteOutcome::Dropped { reason } => {
                tracing::info!(%job_id, attempt, %reason, "report dropped");
                CompleteJobResponse { run_id: String::new(), duplicate: false, next_job: None }
            }
        };
        if let Some(leased) = leased {
            if leased.fresh {
                self.0.publish(&Changes { jobs: vec![leased.job.clone()], ..Default::default() }).await;
            } else {
                tracing::info!(job_id = %leased.job.id, attempt = leased.job.attempts, %worker_id, "worker still holds this job: handing it out again, not leasing another");
            }
            response.next_job = Some(leased_proto(&leased));
        }
        Ok(Response::new(response))
    }

    async fn fail_job(&self, request: Request<FailJobRequest>) -> Result<Response<FailJobResponse>, Status> {
        let r = request.into_inner();
        validate_worker_id(&r.worker_id)?;
        require("job_id", &r.job_id)?;
        let error = if r.error.is_empty() { "the worker reported a failure without a message".to_string() } else { r.error.clone() };
        match self.0.store.fail(&r.worker_id, &r.job_id, r.attempt, &error, r.retryable).await? {
            FailOutcome::Applied { will_retry, changes } => {
                self.0.publish(&changes).await;
                Ok(Response::new(FailJobResponse { will_retry }))
            }
            FailOutcome::Stale { reason } => {
                tracing::info!(job_id = %r.job_id, attempt = r.attempt, %reason, "stale failure report ignored");
                Ok(Response::new(FailJobResponse { will_retry: false }))
            }
        }
    }

    async fn upload_artifact(&self, request: Request<Streaming<UploadArtifactChunk>>) -> Result<Response<Artifact>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty upload: the first message must carry job_id, attempt, kind and file_name"))?;
        validate_worker_id(&first.worker_id)?;
        require("job_id", &first.job_id)?;
        require("kind", &first.kind)?;
        if first.kind.len() > 64 || !first.kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Status::invalid_argument(format!("artifact kind \"{}\" is invalid: use up to 64 letters, digits, - and _ (e.g. nsys-rep)", first.kind)));
        }
        let name = &first.file_name;
        if name.is_empty() || name.len() > 255 || name.contains('/') || name.contains('\\') || name == "." || name == ".." || name.contains('\0') {
            return Err(Status::invalid_argument(format!("artifact file_name \"{name}\" is invalid: give a plain file name (no directories), up to 255 bytes")));
        }
        // Only the worker that held this attempt may attach artifacts to it.
        self.0.store.check_attempt_holder(&first.job_id, first.attempt, &first.worker_id).await?;
        let artifact_id = uuid::Uuid::new_v4().to_string();
        let dir = self.0.artifacts_dir.join(&first.job_id);
        // Owner-only, like the artifacts directory itself (profiles can reveal prompts and code).
        let mk = dir.clone();
        tokio::task::spawn_blocking(move || crate::backup::create_private_dir(&mk))
            .await
            .map_err(|e| Status::internal(format!("creating the artifact directory: {e}")))?
            .map_err(|e| Status::internal(format!("cannot create artifact directory {}: {e}", dir.display())))?;
        let path = dir.join(format!("{artifact_id}-{name}"));
        let max_file = self.0.max_artifact_bytes;
        let quota = self.0.artifact_quota_bytes;
        let stored = match quota {
            Some(_) => self.0.store.artifact_bytes_total().await?,
            None => 0,
        };
        let in_flight = &self.0.artifact_bytes_in_flight;
        // This upload's bytes so far, given back to the in-flight count whatever happens.
        let mut counted: u64 = 0;
        let result = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .await
                .map_err(|e| Status::internal(format!("cannot create {}: {e}", path.display())))?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            let mut chunk = Some(first.data.clone());
            loop {
                if let Some(data) = chunk.take() {
                    size += data.len() as u64;
                    if size > max_file {
                        return Err(Status::resource_exhausted(format!(
                            "artifact {name} is larger than this coordinator's limit of {max_file} bytes per file (--max-artifact-bytes); nothing was kept"
                        )));
                    }
                    let others = in_flight.fetch_add(data.len() as u64, std::sync::atomic::Ordering::SeqCst) - counted;
                    counted += data.len() as u64;
                    if let Some(q) = quota.filter(|q| stored + others + size > *q) {
                        return Err(Status::resource_exhausted(format!(
                            "artifact {name} would take the stored artifacts past this coordinator's quota of {q} bytes ({stored} bytes stored; --artifact-quota-bytes); nothing was kept: remove old artifacts or raise the quota"
                        )));
                    }
                    hasher.update(&data);
                    file.write_all(&data).await.map_err(|e| Status::internal(format!("writing {}: {e}", path.display())))?;
                }
                match stream.message().await? {
                    Some(m) => chunk = Some(m.data),
                    None => break,
                }
            }
            // The row below promises the file is there: make it durable first.
            file.sync_all().await.map_err(|e| Status::internal(format!("syncing {}: {e}", path.display())))?;
            Ok::<_, Status>((size, format!("{:x}", hasher.finalize())))
        }
        .await;
        in_flight.fetch_sub(counted, std::sync::atomic::Ordering::SeqCst);
        let (size, sha) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        let row = self
            .0
            .store
            .insert_artifact(&artifact_id, &first.job_id, first.attempt, &first.kind, name, &path.to_string_lossy(), size, &sha)
            .await?;
        tracing::info!(artifact_id = %row.id, job_id = %row.job_id, kind = %row.kind, size_bytes = size, "artifact stored");
        Ok(Response::new(artifact_proto(&row)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// The status codes and messages clients see for storage errors.
    #[test]
    fn store_errors_map_to_the_statuses_clients_see() {
        let s = Status::from(StoreError::NotFound("no job with id \"x\"".into()));
        assert_eq!((s.code(), s.message()), (Code::NotFound, "no job with id \"x\""));
        let s = Status::from(StoreError::InvalidArgument("attempt 3 was never leased".into()));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "attempt 3 was never leased"));
        let s = Status::from(StoreError::WorkerNotRegistered { worker_id: "w1".into() });
        assert_eq!((s.code(), s.message()), (Code::FailedPrecondition, "worker \"w1\" is not registered with this coordinator: call Register first"));
        let s = Status::from(StoreError::Closed);
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "the coordinator's database is closed: the coordinator is shutting down"));
        let s = Status::from(StoreError::NotCommitted("commit failed: disk full".into()));
        assert_eq!((s.code(), s.message()), (Code::Internal, "coordinator storage error: the change was not stored: commit failed: disk full"));
    }
}
