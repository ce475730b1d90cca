//! Backups: `tokbench-coordinator backup` of a live coordinator mid-sweep, SIGKILL, `restore`, a
//! coordinator started on the restored database. The real binary as child processes, a real
//! SQLite file in a temp dir, a fake worker speaking gRPC (reports from the real engine, made once).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use tokbench_core::{BenchReport, Workload};
use tokbench_proto::auth::AuthedWorkerQueueClient;
use tokbench_proto::v1::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokbench-coordinator");

/// A long lease for the first coordinator: the fake worker does not heartbeat, and nothing in
/// it may expire while the test works, however slow the machine.
const LONG_LEASE_MS: &str = "600000";

/// `tokbench-coordinator ARGS...` to completion.
fn coordinator_cmd(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN).args(args).env_remove("RUST_BACKTRACE").output().expect("run tokbench-coordinator")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Starts the coordinator (flags only, the invocation scripts use) with a lease of `lease_ms`.
fn start(dir: &Path, db: &Path, lease_ms: &str) -> (Proc, SocketAddr) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("coordinator.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database"])
        .arg(db)
        .args(["--lease-ms", lease_ms])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start tokbench-coordinator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("coordinator did not start: {line:?}; see {}", dir.join("coordinator.log").display()))
        .parse()
        .unwrap();
    (Proc { child, name: "coordinator".into() }, addr)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn side(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

/// A real report of the real engine (tiny-opt, one token), made once; each job gets a copy with
/// its own workload.
async fn template_report() -> BenchReport {
    tokio::task::spawn_blocking(|| tiny_opt_report(1)).await.unwrap()
}

/// The fake worker "w1".
struct FakeWorker {
    q: AuthedWorkerQueueClient,
    template: BenchReport,
}

impl FakeWorker {
    async fn lease(&mut self) -> Option<LeasedJob> {
        self.q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 500, memory_free_bytes: 0 }).await.unwrap().into_inner().job
    }

    /// Completes `job`; returns (run_id, the report JSON sent).
    async fn complete(&mut self, job: &LeasedJob) -> (String, String) {
        let workload: Workload = serde_json::from_str(&job.workload_json).unwrap();
        let mut report = self.template.clone();
        report.model = workload.model.clone();
        report.workload = workload;
        let report_json = serde_json::to_string(&report).unwrap();
        let r = self
            .q
            .complete_job(CompleteJobRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: job.attempt, report_json: report_json.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.duplicate && !r.run_id.is_empty(), "{r:?}");
        (r.run_id, report_json)
    }
}

fn job<'a>(s: &'a Sweep, id: &str) -> &'a Job {
    s.jobs.iter().find(|j| j.job_id == id).unwrap_or_else(|| panic!("job {id} not in the sweep"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_mid_sweep_then_kill_and_restore_keeps_everything_acknowledged_before_it_and_the_queue_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let backup = dir.path().join("backup.db");
    let restored = dir.path().join("restored.db");
    let template = template_report().await;

    let (mut coord, addr) = start(dir.path(), &live, LONG_LEASE_MS);
    let url = format!("http://{addr}");
    let mut c = benchmarks(&url, None).await;
    let mut w = FakeWorker { q: queue(&url, None).await, template };
    w.q.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt", "tiny-gpt2"], &[1, 2, 3], 1)) }).await.unwrap().into_inner();
    let sweep_id = sub.sweep_id.clone();
    assert_eq!(sub.jobs.len(), 6);

    // Before the backup: two jobs completed (and an artifact of the first), a third leased.
    let mut acked: HashMap<String, (String, String)> = HashMap::new(); // job -> (run, report)
    for _ in 0..2 {
        let j = w.lease().await.expect("a queued job");
        let done = w.complete(&j).await;
        acked.insert(j.job_id.clone(), done);
    }
    let first_job = sub.jobs.iter().find(|j| acked.contains_key(&j.job_id)).unwrap().job_id.clone();
    let upload = UploadArtifactChunk { job_id: first_job.clone(), attempt: 1, kind: "log".into(), file_name: "out.txt".into(), worker_id: "w1".into(), data: b"hello artifact".to_vec() };
    let artifact = w.q.upload_artifact(tokio_stream::iter(vec![upload])).await.unwrap().into_inner();
    let held = w.lease().await.expect("a third queued job");
    assert_eq!(held.attempt, 1);

    // The backup, by the binary, while the coordinator serves.
    let out = coordinator_cmd(&[os("backup"), os("--database"), live.as_os_str(), os("--out"), backup.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 sweeps, 6 jobs, 2 runs, 1 artifact records"), "{said}");
    assert_eq!(mode(&backup), 0o600, "the backup is owner-only");
    // It does not overwrite a backup without --force.
    let again = coordinator_cmd(&[os("backup"), os("--database"), live.as_os_str(), os("--out"), backup.as_os_str()]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", text(&again));

    // After the backup: the held job and one more are completed (acknowledged, but not in the
    // backup), and a sixth job is leased.
    let (held_run, _) = w.complete(&held).await;
    let later = w.lease().await.expect("a fourth queued job");
    let (later_run, _) = w.complete(&later).await;
    let leased_after = w.lease().await.expect("a fifth queued job");
    let s = get_sweep(&mut c, &sweep_id).await.unwrap();
    assert_eq!(s.jobs_done, 4, "{s:#?}");

    // Owner-only files of the live coordinator (SQLite gives -wal/-shm the database's mode).
    assert_eq!(mode(&live), 0o600, "the database is owner-only");
    assert_eq!(mode(&side(&live, "-wal")), 0o600, "the WAL is owner-only");
    assert_eq!(mode(&side(&live, ".artifacts")), 0o700, "the artifacts directory is owner-only");

    coord.kill9();

    // Restore: into a new path; refused over an existing database without --force.
    let out = coordinator_cmd(&[os("restore"), os("--from"), backup.as_os_str(), os("--database"), restored.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode(&restored), 0o600);
    let out = coordinator_cmd(&[os("restore"), os("--from"), backup.as_os_str(), os("--database"), restored.as_os_str()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{}", text(&out));
    // A WAL left where the restored database goes (here: the killed coordinator's, which holds
    // the post-backup commits) is removed, not replayed into the restored copy.
    assert!(side(&live, "-wal").exists());
    let elsewhere = dir.path().join("elsewhere.db");
    std::fs::copy(side(&live, "-wal"), side(&elsewhere, "-wal")).unwrap();
    let out = coordinator_cmd(&[os("restore"), os("--from"), backup.as_os_str(), os("--database"), elsewhere.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!side(&elsewhere, "-wal").exists());
    assert_eq!(db_counts(&elsewhere).await, (6, 2, 0), "the restored database has the backup's runs only");
    // And over the killed coordinator's own database, with --force.
    let out = coordinator_cmd(&[os("restore"), os("--force"), os("--from"), backup.as_os_str(), os("--database"), live.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!side(&live, "-wal").exists() && !side(&live, "-shm").exists());
    assert_eq!(db_counts(&live).await, (6, 2, 0), "the restored live database has the backup's runs only");

    // A coordinator on the restored database (short lease: the job leased at backup time goes
    // back to the queue once its fresh lease expires).
    let (_coord2, addr2) = start(dir.path(), &restored, &LEASE_MS.to_string());
    let url2 = format!("http://{addr2}");
    let mut c = benchmarks(&url2, None).await;
    w.q = queue(&url2, None).await;
    assert_eq!(mode(&side(&restored, ".artifacts")), 0o700);

    // Everything acknowledged before the backup is there, byte for byte.
    let s = get_sweep(&mut c, &sweep_id).await.unwrap();
    assert_eq!(s.jobs.len(), 6);
    assert_eq!(s.jobs_done, 2, "{s:#?}");
    for (job_id, (run_id, report_json)) in &acked {
        let j = job(&s, job_id);
        assert_eq!(state(j), JobState::Succeeded, "{j:?}");
        assert_eq!(&j.run_id, run_id);
        let run = c.get_run(GetRunRequest { run_id: run_id.clone() }).await.unwrap().into_inner();
        assert_eq!(&run.report_json, report_json);
    }
    let runs = c.list_runs(ListRunsRequest { sweep_id: sweep_id.clone(), ..Default::default() }).await.unwrap().into_inner().runs;
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.summary.as_ref().unwrap().run_id != held_run && r.summary.as_ref().unwrap().run_id != later_run));
    let arts = c.list_artifacts(ListArtifactsRequest { job_id: first_job.clone(), ..Default::default() }).await.unwrap().into_inner().artifacts;
    assert_eq!(arts.len(), 1);
    assert_eq!((arts[0].artifact_id.as_str(), arts[0].sha256.as_str()), (artifact.artifact_id.as_str(), artifact.sha256.as_str()));
    let mut stream = c.download_artifact(DownloadArtifactRequest { artifact_id: artifact.artifact_id.clone() }).await.unwrap().into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        data.extend_from_slice(&chunk.data);
    }
    assert_eq!(data, b"hello artifact");

    // Jobs queued at backup time are queued; the one leased at backup time is not lost as
    // "leased" forever: the reaper puts it back once its lease expires.
    for id in [&later.job_id, &leased_after.job_id] {
        assert_eq!(state(job(&s, id)), JobState::Queued, "{:?}", job(&s, id));
    }
    let s = wait_sweep(&mut c, &sweep_id, Duration::from_secs(60), "the job leased at backup time to be requeued", |s| {
        s.jobs.iter().find(|j| j.job_id == held.job_id).is_some_and(|j| j.state == JobState::Queued as i32)
    })
    .await;
    let h = job(&s, &held.job_id);
    assert_eq!((h.attempts, h.run_id.as_str()), (1, ""), "{h:?}");

    // The queue resumes: the worker leases and completes the four remaining jobs.
    let mut resumed = Vec::new();
    while let Some(j) = w.lease().await {
        w.complete(&j).await;
        resumed.push(j);
        assert!(resumed.len() <= 4, "leased more jobs than remain: {resumed:?}");
    }
    let mut ids: Vec<_> = resumed.iter().map(|j| j.job_id.clone()).collect();
    ids.sort();
    let mut want: Vec<_> = sub.jobs.iter().map(|j| j.job_id.clone()).filter(|id| !acked.contains_key(id)).collect();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(resumed.iter().find(|j| j.job_id == held.job_id).unwrap().attempt, 2);
    let s = wait_sweep(&mut c, &sweep_id, Duration::from_secs(30), "the sweep to finish", |s| s.state != "running").await;
    assert_eq!(s.state, "succeeded", "{s:#?}");
    assert_eq!(s.jobs_done, 6);
    assert_eq!(db_counts(&restored).await, (6, 6, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_checks_its_input_and_never_replaces_a_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let backup = dir.path().join("b.db");
    let (_coord, _addr) = start(dir.path(), &live, LONG_LEASE_MS);

    // Not a database, a SQLite database that is not tokbench's, a missing file.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just some bytes that are long enough").unwrap();
    let other = dir.path().join("other.db");
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", other.display())).await.unwrap();
        sqlx::query("CREATE TABLE t (x)").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let target = dir.path().join("new.db");
    for (from, needle) in [(&junk, "not a usable tokbench coordinator backup"), (&other, "_sqlx_migrations"), (&dir.path().join("missing.db"), "does not exist")] {
        let out = coordinator_cmd(&[os("restore"), os("--from"), from.as_os_str(), os("--database"), target.as_os_str()]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "expected {needle:?}: {}", text(&out));
        assert!(!target.exists(), "a refused restore creates nothing");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A backup of the running coordinator restores fine elsewhere, but never over the database
    // it serves, even with --force.
    let out = coordinator_cmd(&[os("backup"), os("--database"), live.as_os_str(), os("--out"), backup.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = coordinator_cmd(&[os("restore"), os("--force"), os("--from"), backup.as_os_str(), os("--database"), live.as_os_str()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", text(&out));
    // Backing up a database that does not exist says so.
    let out = coordinator_cmd(&[os("backup"), os("--database"), dir.path().join("nope.db").as_os_str(), os("--out"), dir.path().join("x.db").as_os_str()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{}", text(&out));
}
