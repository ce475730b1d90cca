//! tokbench-coordinator: a durable benchmark-job queue in SQLite, served over gRPC.
//!
//! Clients submit sweeps (models x batch sizes) through `Benchmarks`; workers lease jobs
//! through `WorkerQueue`, heartbeat while they run, and report a `BenchReport` that is stored
//! exactly once per job. Leases expire when a worker stops heartbeating (a reaper puts the job
//! back in the queue, up to `max_attempts`). Everything acknowledged is on disk (SQLite WAL,
//! synchronous=FULL, callers answered only after their commit), so the coordinator can be
//! killed and restarted on the same database. Concurrent writes share commits (group commit,
//! see `store`), and a worker's CompleteJob can lease its next job in the same transaction.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let handle = tokbench_coordinator::spawn(tokbench_coordinator::CoordinatorConfig {
//!     listen: "127.0.0.1:0".parse()?,
//!     database: "tokbench.db".into(),
//!     ..Default::default()
//! }).await?;
//! println!("listening on {}", handle.local_addr());
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod backup;
mod oversized;
pub mod service;
pub mod store;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use tokbench_proto::auth::{Credentials, Role, TokenSet};
use tokbench_proto::v1::benchmarks_server::BenchmarksServer;
use tokbench_proto::v1::worker_queue_server::WorkerQueueServer;

use crate::service::{Service, Shared};
use crate::store::Store;

/// Largest gRPC message accepted or sent (reports with many latency samples can be large).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Address to serve on; port 0 picks a free port (see `CoordinatorHandle::local_addr`).
    pub listen: SocketAddr,
    /// SQLite database file (created if missing).
    pub database: PathBuf,
    /// Shared token accepted from every client and worker (`authorization: Bearer <token>`).
    pub token: Option<String>,
    /// Client tokens (Benchmarks service) and worker tokens (WorkerQueue service), one per line
    /// or `sha256:<hex>` (see `tokbench_proto::auth::TokenSet::parse_file`). With either, a
    /// client token cannot call the worker service and a worker token cannot call the client one.
    pub client_token_file: Option<PathBuf>,
    pub worker_token_file: Option<PathBuf>,
    /// Lease period in milliseconds: a worker that does not heartbeat for this long loses its job.
    pub lease_ms: u64,
    /// Attempts per job (leases that expired or failed retryably) before it is failed.
    pub max_attempts: u32,
    /// Where uploaded artifacts go; None: `<database>.artifacts/` next to the database.
    pub artifacts_dir: Option<PathBuf>,
    /// Largest gRPC message accepted or sent, bytes (a larger request gets RESOURCE_EXHAUSTED
    /// naming its size and the limit, on a connection that stays usable).
    pub max_message_bytes: usize,
    /// Largest artifact file accepted, bytes.
    pub max_artifact_bytes: u64,
    /// Total bytes of stored artifacts the coordinator keeps at most (None: no quota).
    pub artifact_quota_bytes: Option<u64>,
    /// PEM certificate chain and private key: serve TLS when both are given.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database: PathBuf::from("tokbench.db"),
            token: None,
            client_token_file: None,
            worker_token_file: None,
            lease_ms: 15_000,
            max_attempts: 3,
            artifacts_dir: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_artifact_bytes: crate::service::MAX_ARTIFACT_BYTES,
            artifact_quota_bytes: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl CoordinatorConfig {
    pub fn artifacts_dir(&self) -> PathBuf {
        self.artifacts_dir.clone().unwrap_or_else(|| {
            let mut p = self.database.clone().into_os_string();
            p.push(".artifacts");
            PathBuf::from(p)
        })
    }
}

/// A running coordinator (server task + lease reaper).
pub struct CoordinatorHandle {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    reaper: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl CoordinatorHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Group-commit counters of the database writer (transactions, operations in them).
    pub fn commit_counts(&self) -> store::CommitCounts {
        self.shared.store.commit_counts()
    }

    /// Stops accepting calls, ends long polls and watch streams, waits for in-flight calls,
    /// and closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.server.await.context("coordinator server task panicked")?;
        self.reaper.await.context("lease reaper task panicked")?;
        self.shared.store.close().await;
        served.context("gRPC server failed")?;
        tracing::info!("coordinator stopped");
        Ok(())
    }
}

/// Opens (and migrates) the database, binds, and starts serving. Returns once the port is bound.
pub async fn spawn(config: CoordinatorConfig) -> anyhow::Result<CoordinatorHandle> {
    if config.lease_ms < 100 {
        anyhow::bail!("lease_ms {} is too short: use at least 100 ms (the default is 15000)", config.lease_ms);
    }
    if config.max_attempts == 0 {
        anyhow::bail!("max_attempts must be at least 1 (the default is 3)");
    }
    let credentials = credentials(&config)?;
    if credentials.separated() {
        tracing::info!(client_tokens = credentials.clients.len(), worker_tokens = credentials.workers.len(), shared_token = !credentials.shared.is_empty(), "separate client and worker credentials");
    } else if credentials.required() {
        tracing::warn!("one shared token for clients and workers: any client can act as a worker; give --client-token-file and --worker-token-file to separate them");
    } else {
        tracing::warn!("no token: anyone who can reach this address can submit sweeps and act as a worker");
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let c = std::fs::read(cert).with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?;
            let k = std::fs::read(key).with_context(|| format!("cannot read the TLS key {}", key.display()))?;
            Some(ServerTlsConfig::new().identity(Identity::from_pem(c, k)))
        }
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key (PEM files); only one was given"),
    };

    let store = Store::open(&config.database)
        .await
        .with_context(|| format!("cannot open the database {} (is the directory writable, and the file a tokbench SQLite database?)", config.database.display()))?;
    let refreshed = store.refresh_leases(config.lease_ms).await?;
    if refreshed > 0 {
        tracing::info!(jobs = refreshed, lease_ms = config.lease_ms, "gave active jobs a fresh lease after start");
    }
    let artifacts_dir = config.artifacts_dir();
    backup::create_private_dir(&artifacts_dir).with_context(|| format!("cannot create the artifacts directory {}", artifacts_dir.display()))?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is another coordinator running there? Pick another --listen address (port 0 = any free port)", config.listen))?;
    let local_addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (events, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        store,
        lease_ms: config.lease_ms,
        max_attempts: config.max_attempts,
        artifacts_dir,
        max_artifact_bytes: config.max_artifact_bytes,
        artifact_quota_bytes: config.artifact_quota_bytes,
        artifact_bytes_in_flight: std::sync::atomic::AtomicU64::new(0),
        queue_changed: Notify::new(),
        events,
        shutdown: shutdown_rx.clone(),
    });
    let svc = Service(shared.clone());

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<BenchmarksServer<Service>>().await;
    health_reporter.set_serving::<WorkerQueueServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tokbench_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let max_message = config.max_message_bytes;
    let benchmarks = BenchmarksServer::new(svc.clone()).max_decoding_message_size(max_message).max_encoding_message_size(max_message);
    let queue = WorkerQueueServer::new(svc).max_decoding_message_size(max_message).max_encoding_message_size(max_message);

    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(10))).http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("TLS configuration (are --tls-cert and --tls-key a matching PEM certificate and key?)")?;
    }
    let router = builder
        .layer(tower::util::MapResponseLayer::new(oversized::oversized_is_resource_exhausted))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(benchmarks, credentials.require(Role::Client)))
        .add_service(InterceptedService::new(queue, credentials.require(Role::Worker)));
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = server_shutdown.wait_for(|s| *s).await;
    }));

    let reaper = tokio::spawn(reaper_loop(shared.clone(), shutdown_rx));
    tracing::info!(%local_addr, database = %config.database.display(), lease_ms = config.lease_ms, max_attempts = config.max_attempts,
        auth = credentials.required(), separate_roles = credentials.separated(), tls = config.tls_cert.is_some(), "coordinator listening");
    Ok(CoordinatorHandle { local_addr, shutdown: shutdown_tx, server, reaper, shared })
}

/// The shared token and the client / worker token files as one set of credentials.
fn credentials(config: &CoordinatorConfig) -> anyhow::Result<Credentials> {
    let shared = match config.token.as_deref() {
        Some(t) => TokenSet::from_tokens([t]).context("--token")?,
        None => TokenSet::default(),
    };
    let read = |path: &Option<PathBuf>, flag: &str| -> anyhow::Result<TokenSet> {
        let Some(path) = path else { return Ok(TokenSet::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {}", path.display()))?;
        TokenSet::parse_file(&text, &path.display().to_string()).with_context(|| flag.to_string())
    };
    let clients = read(&config.client_token_file, "--client-token-file")?;
    let workers = read(&config.worker_token_file, "--worker-token-file")?;
    if shared.is_empty() && (clients.is_empty() != workers.is_empty()) {
        let (given, missing) = if clients.is_empty() { ("--worker-token-file", "--client-token-file") } else { ("--client-token-file", "--worker-token-file") };
        anyhow::bail!("{given} is given without {missing} (and no --token): the other role could not connect at all; give {missing} too");
    }
    Ok(Credentials { shared, clients, workers })
}

async fn reaper_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis((shared.lease_ms / 3).max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match shared.store.reap_expired().await {
            Ok(changes) => {
                if !changes.jobs.is_empty() {
                    shared.publish(&changes).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "lease reaper"),
        }
    }
}
