//! The `tokbench` binary end to end on real parts: the one-command local mode, and every client
//! command against a real coordinator (in-process, SQLite file, 127.0.0.1 port 0) with a real
//! worker running the engine on the CPU with the tiny catalog models.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tokbench");

fn tokbench(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("TOKBENCH_COORDINATOR")
        .env_remove("TOKBENCH_TOKEN")
        // Local sweeps run workers in this process: no downloads in tests.
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the tokbench binary runs")
}

fn text(o: &Output) -> String {
    format!("status {:?}\n--- stdout\n{}\n--- stderr\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok_json(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("--json output does not parse: {e}\n{}", text(o)))
}

/// (width, height, distinct colours, dark pixels in the top 80 rows = title text).
fn png_stats(path: &Path) -> (u32, u32, usize, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut dark_top = 0;
    for (i, p) in buf[..info.buffer_size()].chunks(ch).enumerate() {
        colours.insert([p[0], p[1], p[2]]);
        if (i as u32 / info.width) < 80 && (p[0] as u32 + p[1] as u32 + p[2] as u32) < 200 {
            dark_top += 1;
        }
    }
    (info.width, info.height, colours.len(), dark_top)
}

fn assert_real_png(path: &Path) {
    assert!(path.exists(), "{} missing", path.display());
    let (w, h, colours, dark) = png_stats(path);
    assert!(w >= 800 && h >= 250, "{} is {w}x{h}", path.display());
    assert!(colours > 30, "{} has {colours} colours: blank?", path.display());
    assert!(dark > 200, "{}: {dark} dark pixels in the title area: no title?", path.display());
}

fn files_with_prefix(dir: &Path, prefix: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(ext)
        })
        .collect();
    v.sort();
    v
}

/// The demo's benchmark JSON, field by field, with its types.
fn check_demo_schema(v: &Value, on_cpu: bool) {
    let mp = &v["model_properties"];
    for f in ["total_parameters", "num_layers", "hidden_size", "vocab_size"] {
        assert!(mp[f].is_u64(), "model_properties.{f} must be an int: {}", mp[f]);
    }
    assert!(mp["model_size_mb"].is_f64(), "model_size_mb must be a float");
    let im = &v["inference_metrics"];
    for f in ["model_load_time_seconds", "total_inference_time_seconds", "tokens_per_second", "average_tokens_per_prompt"] {
        assert!(im[f].is_f64(), "inference_metrics.{f} must be a float: {}", im[f]);
    }
    for f in ["num_prompts", "total_input_tokens", "total_output_tokens"] {
        assert!(im[f].is_u64(), "inference_metrics.{f} must be an int: {}", im[f]);
    }
    assert!(im["tokens_per_second"].as_f64().unwrap() > 0.0);
    let gm = &v["gpu_metrics"];
    assert!(gm["gpu_name"].is_string());
    for f in ["gpu_memory_total_mb", "gpu_memory_allocated_mb", "gpu_memory_reserved_mb", "gpu_memory_utilization_percent", "peak_memory_allocated_mb"] {
        if on_cpu {
            assert!(gm[f].is_null(), "gpu_metrics.{f} must be null on CPU: {}", gm[f]);
        } else {
            assert!(gm[f].is_f64(), "gpu_metrics.{f} must be a float");
        }
    }
    let ns = &v["nsight_metrics"];
    assert!(ns.get("profile_file").is_some(), "nsight_metrics.profile_file missing");
    assert!(ns["profile_file"].is_string() || ns["profile_file"].is_null());
    assert!(ns["profile_name"].is_string());
    assert!(ns["notes"].is_string());
}

#[test]
fn local_mode_runs_the_whole_system_and_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tokbench(
        tmp.path(),
        &[
            "sweep", "--local", "tiny-opt", "tiny-gpt2", "--max-tokens", "4", "--input-len", "8", "--num-prompts", "2",
            "--batch-sizes", "2", "--repetitions", "1", "--warmup", "0", "--svg",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // Summary table with both models, and the list of files written.
    assert!(stdout.contains("tiny-opt") && stdout.contains("tiny-gpt2"), "{stdout}");
    assert!(stdout.contains("comparison_table_"), "{stdout}");
    // Default places: the database in the current directory, the report in plots/.
    assert!(tmp.path().join("tokbench-local.db").exists());
    let plots = tmp.path().join("plots");
    let tables = files_with_prefix(&plots, "comparison_table_", ".png");
    let graphs = files_with_prefix(&plots, "performance_graphs_", ".png");
    assert_eq!((tables.len(), graphs.len()), (1, 1));
    assert_real_png(&tables[0]);
    assert_real_png(&graphs[0]);
    assert_eq!(files_with_prefix(&plots, "performance_graphs_", ".svg").len(), 1);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&files_with_prefix(&plots, "report_", ".json")[0]).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["weights"], "synthetic");
        assert_eq!(r["device"], "cpu");
        assert!(r["gpu_memory_utilization_percent"].is_null());
        assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0);
    }
    let exported = files_with_prefix(&plots, "benchmark_", ".json");
    assert_eq!(exported.len(), 2, "{exported:?}");
    for f in exported {
        check_demo_schema(&serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap(), true);
    }
}

#[test]
fn unreachable_coordinator_is_exit_3_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    for args in [vec!["status"], vec!["runs", "--json"], vec!["sweep", "tiny-opt", "--detach"], vec!["report", "--latest"]] {
        let mut a = vec!["--coordinator", "http://127.0.0.1:1"];
        a.extend(args.iter());
        let o = tokbench(tmp.path(), &a);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("cannot reach the coordinator at http://127.0.0.1:1"), "{err}");
        assert!(err.contains("tokbench sweep --local"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // Bad input is exit 2, before any network.
    let o = tokbench(tmp.path(), &["--coordinator", "http://127.0.0.1:1", "sweep", "opt-12m"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Did you mean \"opt-125m\""));
    // --local cannot profile (the embedded worker has no nsys child): said at once, exit 2,
    // nothing created.
    let o = tokbench(tmp.path(), &["sweep", "--local", "tiny-opt", "--profile"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--profile does not work with --local"), "{}", text(&o));
    assert!(!tmp.path().join("tokbench-local.db").exists(), "nothing is started for a refused sweep");
}

struct Cluster {
    url: String,
    coordinator: Option<tokbench_coordinator::CoordinatorHandle>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

async fn start_cluster(dir: &Path) -> Cluster {
    let coordinator = tokbench_coordinator::spawn(tokbench_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("coord.db"),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", coordinator.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(tokbench_worker::serve::run(
        tokbench_worker::serve::WorkerConfig {
            coordinator: url.clone(),
            device: tokbench_core::DeviceSpec::Cpu,
            token: None,
            worker_id: Some("test-worker".into()),
            nsys_path: None,
            max_jobs: None,
            ca_cert: None,
        },
        async move {
            let _ = rx.await;
        },
    ));
    Cluster { url, coordinator: Some(coordinator), stop: Some(tx), worker: Some(worker) }
}

impl Cluster {
    async fn cli(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut a: Vec<String> = vec!["--coordinator".into(), self.url.clone()];
        a.extend(args.iter().map(|s| s.to_string()));
        let cwd = cwd.to_path_buf();
        tokio::task::spawn_blocking(move || tokbench(&cwd, &a.iter().map(|s| s.as_str()).collect::<Vec<_>>())).await.unwrap()
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.worker.take().unwrap().await;
        self.coordinator.take().unwrap().shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_against_a_real_coordinator_and_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = start_cluster(dir).await;

    // Nothing yet: status says so (exit 0), unknown sweep / run are exit 2 with a clear line.
    let o = c.cli(dir, &["status"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no sweeps yet"));
    for args in [vec!["status", "no-such-sweep"], vec!["watch", "no-such-sweep"], vec!["report", "--sweep", "no-such-sweep"], vec!["show", "no-such-run"]] {
        let o = c.cli(dir, &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not found") && err.contains("no-such"), "{args:?}: {err}");
    }
    let o = c.cli(dir, &["report", "--latest"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // A sweep of 2 models x 2 batch sizes, watched to the end.
    let tiny = ["--max-tokens", "4", "--input-len", "8", "--num-prompts", "2", "--repetitions", "2", "--warmup", "0"];
    let mut args = vec!["sweep", "tiny-opt", "tiny-gpt2", "--batch-sizes", "1,2", "--label", "e2e", "--json"];
    args.extend(tiny);
    let v = ok_json(&c.cli(dir, &args).await);
    assert_eq!(v["sweep"]["state"], "succeeded", "{v}");
    let sweep_id = v["sweep"]["sweep_id"].as_str().unwrap().to_string();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["worker_id"] == "test-worker" && r["tokens_per_second"].as_f64().unwrap() > 0.0));

    // Human form of the same sweep's progress: watch on a finished sweep prints the summary.
    let o = c.cli(dir, &["watch", &sweep_id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("tiny-gpt2"));

    let v = ok_json(&c.cli(dir, &["status", "--json"]).await);
    assert_eq!(v["sweep"]["sweep_id"], sweep_id.as_str());
    assert_eq!(v["sweep"]["jobs_done"], 4);
    let v = ok_json(&c.cli(dir, &["workers", "--json"]).await);
    assert_eq!(v["workers"][0]["worker_id"], "test-worker");
    assert_eq!(v["workers"][0]["backend"], "cpu");
    let v = ok_json(&c.cli(dir, &["runs", "--sweep", &sweep_id, "--model", "tiny-opt", "--json"]).await);
    let opt_runs = v["runs"].as_array().unwrap();
    assert_eq!(opt_runs.len(), 2);
    let run_id = opt_runs[0]["run_id"].as_str().unwrap().to_string();

    // show: readable, and --json is the full stored report.
    let o = c.cli(dir, &["show", &run_id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    for needle in ["tokens_per_second", "TTFT (ms)", "total_parameters", "gpu_memory_total_mb", "n/a"] {
        assert!(s.contains(needle), "show lacks {needle}: {s}");
    }
    let v = ok_json(&c.cli(dir, &["show", &run_id, "--json"]).await);
    let report: tokbench_core::BenchReport = serde_json::from_value(v.clone()).expect("show --json is a BenchReport");
    assert_eq!(report.model, "tiny-opt");
    check_demo_schema(&v, true);

    // A second sweep as the current one, compared with the first as the baseline.
    let mut args = vec!["sweep", "tiny-opt", "tiny-gpt2", "--batch-sizes", "1,2", "--json"];
    args.extend(tiny);
    let v2 = ok_json(&c.cli(dir, &args).await);
    let sweep2 = v2["sweep"]["sweep_id"].as_str().unwrap().to_string();
    let out = dir.join("plots");
    let v = ok_json(&c.cli(dir, &["report", "--sweep", &sweep2, "--baseline", &sweep_id, "--out", out.to_str().unwrap(), "--json"]).await);
    let files: Vec<String> = v["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    let ts = v["timestamp"].as_str().unwrap();
    for name in ["comparison_table", "performance_graphs", "batch_scaling", "baseline_comparison"] {
        let p = out.join(format!("{name}_{ts}.png"));
        assert!(files.contains(&p.to_string_lossy().into_owned()), "{name} not listed: {files:?}");
        assert_real_png(&p);
    }
    let md = std::fs::read_to_string(out.join(format!("baseline_comparison_{ts}.md"))).unwrap();
    assert!(md.contains(&sweep_id) && md.contains("tokens/s") && md.contains("tiny-gpt2"), "{md}");
    let rj: Value = serde_json::from_str(&std::fs::read_to_string(out.join(format!("report_{ts}.json"))).unwrap()).unwrap();
    assert_eq!(rj["rows"].as_array().unwrap().len(), 4);
    assert_eq!(rj["baseline_comparison"]["changes"].as_array().unwrap().len(), 4 * 5);
    let csv = std::fs::read_to_string(out.join(format!("report_{ts}.csv"))).unwrap();
    assert_eq!(csv.lines().count(), 5);
    // --runs selects exactly those runs.
    let v = ok_json(&c.cli(dir, &["report", "--runs", &run_id, "--out", dir.join("one").to_str().unwrap(), "--json"]).await);
    assert_eq!(v["runs"], 1);

    // export: one demo-schema JSON per run.
    let exp = dir.join("export");
    let v = ok_json(&c.cli(dir, &["export", "--sweep", &sweep_id, "--out", exp.to_str().unwrap(), "--json"]).await);
    assert_eq!(v["files"].as_array().unwrap().len(), 4);
    let exported = files_with_prefix(&exp, "benchmark_tiny-", ".json");
    assert_eq!(exported.len(), 4, "{exported:?}");
    for f in &exported {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        check_demo_schema(&v, true);
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("benchmark_{}_", v["model"].as_str().unwrap())), "{name}");
    }

    // A job that cannot succeed (model directory missing on the worker): sweep exit 1.
    let mut args = vec!["sweep", "./no-such-model-dir"];
    args.extend(tiny);
    let o = c.cli(dir, &args).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED"), "{}", text(&o));

    // Cancel: jobs only a CUDA worker may take stay queued here; cancel them.
    let v = ok_json(&c.cli(dir, &["sweep", "tiny-opt", "--backend", "cuda", "--detach", "--json"]).await);
    let queued = v["sweep_id"].as_str().unwrap().to_string();
    let v = ok_json(&c.cli(dir, &["cancel", &queued, "--json"]).await);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["jobs"].as_array().unwrap().iter().all(|j| j["state"] == "cancelled"));
    let o = c.cli(dir, &["watch", &queued]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_list_and_get_against_a_real_coordinator() {
    use sha2::Digest;
    use tokbench_proto::v1::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = start_cluster(dir).await;

    // Unknown run: exit 2, one clear line.
    for args in [vec!["artifact", "list", "no-such-run"], vec!["artifact", "get", "no-such-run"]] {
        let o = c.cli(dir, &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("no-such-run") && err.trim().lines().count() == 1, "{args:?}: {err}");
    }

    // A real run (not profiled): no artifacts yet.
    let v = ok_json(
        &c.cli(dir, &["sweep", "tiny-opt", "--batch-sizes", "1", "--max-tokens", "2", "--input-len", "4", "--num-prompts", "1", "--repetitions", "1", "--warmup", "0", "--json"])
            .await,
    );
    assert_eq!(v["sweep"]["state"], "succeeded", "{v}");
    let run_id = v["runs"][0]["run_id"].as_str().unwrap().to_string();
    let v = ok_json(&c.cli(dir, &["artifact", "list", &run_id, "--json"]).await);
    assert_eq!(v["artifacts"].as_array().unwrap().len(), 0, "{v}");
    let o = c.cli(dir, &["artifact", "list", &run_id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not profiled"), "{}", text(&o));
    let o = c.cli(dir, &["artifact", "get", &run_id]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not profiled") && err.contains("tokbench sweep --profile") && err.trim().lines().count() == 1, "{err}");

    // Upload a file for the run's job the way a worker does (several chunks, > one 256 KiB
    // download chunk).
    let channel = tokbench_proto::auth::connect(&c.url, None).await.unwrap();
    let run = tokbench_proto::auth::benchmarks_client(channel.clone(), None)
        .unwrap()
        .get_run(GetRunRequest { run_id: run_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut chunks = vec![UploadArtifactChunk {
        job_id: run.job_id.clone(),
        attempt: run.attempt,
        kind: "nsys-rep".into(),
        file_name: "profile_tiny-opt.nsys-rep".into(),
        worker_id: "test-worker".into(),
        data: bytes[..1000].to_vec(),
    }];
    for part in bytes[1000..].chunks(300_000) {
        chunks.push(UploadArtifactChunk { data: part.to_vec(), ..Default::default() });
    }
    let uploaded = tokbench_proto::auth::worker_queue_client(channel, None)
        .unwrap()
        .upload_artifact(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(uploaded.run_id, run_id);
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));

    let v = ok_json(&c.cli(dir, &["artifact", "list", &run_id, "--json"]).await);
    let arts = v["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 1, "{v}");
    assert_eq!(arts[0]["artifact_id"], uploaded.artifact_id.as_str());
    assert_eq!(arts[0]["kind"], "nsys-rep");
    assert_eq!(arts[0]["file_name"], "profile_tiny-opt.nsys-rep");
    assert_eq!(arts[0]["size_bytes"], bytes.len() as u64);
    assert_eq!(arts[0]["sha256"], sha.as_str());
    let o = c.cli(dir, &["artifact", "list", &run_id]).await;
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains(&uploaded.artifact_id) && s.contains("profile_tiny-opt.nsys-rep") && s.contains(&sha), "{}", text(&o));

    // get: every artifact of the run into --out, bytes identical.
    let out = dir.join("dl");
    let v = ok_json(&c.cli(dir, &["artifact", "get", &run_id, "--out", out.to_str().unwrap(), "--json"]).await);
    let path = PathBuf::from(v["files"][0]["path"].as_str().unwrap());
    assert_eq!(path, out.join("profile_tiny-opt.nsys-rep"));
    assert!(std::fs::read(&path).unwrap() == bytes, "downloaded bytes differ");
    // Human form, default directory (the current one): path and the nsys-ui hint.
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let o = c.cli(&cwd, &["artifact", "get", &run_id, &uploaded.artifact_id]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("profile_tiny-opt.nsys-rep") && s.contains("nsys-ui"), "{s}");
    assert!(std::fs::read(cwd.join("profile_tiny-opt.nsys-rep")).unwrap() == bytes);
    // An artifact id alone works too; an artifact the run lacks is exit 2.
    let out2 = dir.join("dl2");
    let o = c.cli(dir, &["artifact", "get", &uploaded.artifact_id, "--out", out2.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(std::fs::read(out2.join("profile_tiny-opt.nsys-rep")).unwrap() == bytes);
    let o = c.cli(dir, &["artifact", "get", &run_id, "no-such-artifact"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-artifact"), "{}", text(&o));
    // --help has examples.
    let o = c.cli(dir, &["artifact", "get", "--help"]).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("Examples:"), "{}", text(&o));

    c.stop().await;
}

/// A CA (written to `dir/<name>.pem`) and, when `server` is given, a certificate for
/// localhost / 127.0.0.1 signed by it (`dir/server.pem`, `dir/server.key`).
fn make_ca(dir: &Path, name: &str, server: bool) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = params.self_signed(&ca_key).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, ca.pem()).unwrap();
    if server {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_talks_to_a_tls_coordinator_with_its_ca_and_says_what_is_wrong_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = make_ca(dir, "ca", true);
    let other = make_ca(dir, "other-ca", false);
    let coordinator = tokbench_coordinator::spawn(tokbench_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("tls.db"),
        tls_cert: Some(dir.join("server.pem")),
        tls_key: Some(dir.join("server.key")),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("https://localhost:{}", coordinator.local_addr().port());
    let run = |args: Vec<String>, ca_env: Option<PathBuf>| {
        let cwd = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(BIN);
            cmd.args(&args).current_dir(&cwd).env_remove("TOKBENCH_COORDINATOR").env_remove("TOKBENCH_TOKEN").env_remove("TOKBENCH_CA_CERT").env("HF_HUB_OFFLINE", "1").env("RUST_LOG", "warn");
            if let Some(p) = ca_env {
                cmd.env("TOKBENCH_CA_CERT", p);
            }
            cmd.output().unwrap()
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // --ca-cert: a write (submit) and reads over TLS.
    let o = run(s(&["--coordinator", &url, "--ca-cert", ca.to_str().unwrap(), "sweep", "tiny-opt", "--detach", "--json"]), None).await.unwrap();
    let v = ok_json(&o);
    let sweep_id = v["sweep_id"].as_str().unwrap_or_else(|| panic!("no sweep id in {v}")).to_string();
    // TOKBENCH_CA_CERT does the same.
    let o = run(s(&["--coordinator", &url, "status", &sweep_id, "--json"]), Some(ca.clone())).await.unwrap();
    assert!(ok_json(&o).to_string().contains(&sweep_id));

    // The wrong CA, and no CA: exit 2 with one line saying what to pass.
    let o = run(s(&["--coordinator", &url, "--ca-cert", other.to_str().unwrap(), "status"]), None).await.unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("TLS handshake with the coordinator at https://localhost:") && err.contains("--ca-cert"), "{err}");
    let o = run(s(&["--coordinator", &url, "status"]), None).await.unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no CA certificate was given") && err.contains("--ca-cert"), "{err}");
    coordinator.shutdown().await.unwrap();
}

/// The rotary families through the whole local system: a Llama and a Qwen3 architecture with
/// synthetic weights and no tokenizer files (prompts are token ids), stored, reported, with the
/// family in the table.
#[test]
fn local_mode_runs_the_rotary_families() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tokbench(
        tmp.path(),
        &[
            "sweep", "--local", "tiny-llama", "tiny-qwen3", "--max-tokens", "4", "--input-len", "8", "--num-prompts", "2",
            "--batch-sizes", "2", "--repetitions", "1", "--warmup", "0",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plots = tmp.path().join("plots");
    assert_real_png(&files_with_prefix(&plots, "comparison_table_", ".png")[0]);
    let md = std::fs::read_to_string(&files_with_prefix(&plots, "report_", ".md")[0]).unwrap();
    assert!(md.contains(", llama) |") && md.contains(", qwen3) |"), "the table names the family: {md}");
    for f in files_with_prefix(&plots, "benchmark_", ".json") {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        check_demo_schema(&v, true);
        assert_eq!(v["model_properties"]["tokenizer"], "none (synthetic token ids)");
        assert!(["llama", "qwen3"].contains(&v["model_properties"]["model_type"].as_str().unwrap()));
    }
}

#[test]
fn models_lists_the_catalog_without_a_coordinator() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tokbench(tmp.path(), &["--coordinator", "http://127.0.0.1:1", "models", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap_or_else(|| panic!("{n} missing"));
    assert_eq!(row("llama-3.2-1b")["parameters"], 1_235_814_400u64);
    assert_eq!(row("llama-3.2-1b")["family"], "llama");
    assert_eq!(row("qwen3-0.6b")["parameters"], 596_049_920u64);
    assert_eq!(row("smollm2-135m")["max_positions"], 8192);
    assert_eq!(row("mistral-7b-v0.3")["hf_repo"], "mistralai/Mistral-7B-v0.3");
    let o = tokbench(tmp.path(), &["models"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("qwen2.5-7b") && table.contains("qwen2") && table.contains("f16 weights"), "{table}");
}
