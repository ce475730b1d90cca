//! `tokbench sweep --mode serve` end to end on real parts: the `tokbench` binary (embedded
//! coordinator with a SQLite file and an in-process worker, `--local`) drives a fake
//! OpenAI-compatible SSE server started by the test on 127.0.0.1; the stored runs are then read
//! back through a coordinator on the same database file, and `tokbench report` draws them.
//! Nothing here asserts timings: only counts, tokens, files and messages.

mod common;

use common::fake_openai::{self as fake, FakeConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

const BIN: &str = env!("CARGO_BIN_EXE_tokbench");

fn tokbench(cwd: &Path, args: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("TOKBENCH_COORDINATOR")
        .env_remove("TOKBENCH_TOKEN")
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the tokbench binary runs")
}

/// Runs the binary off the runtime, so the fake server keeps answering meanwhile.
async fn tokbench_async(cwd: &Path, args: &[&str]) -> Output {
    let (cwd, args): (PathBuf, Vec<String>) = (cwd.to_path_buf(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || tokbench(&cwd, &args)).await.unwrap()
}

fn text(o: &Output) -> String {
    format!("status {:?}\n--- stdout\n{}\n--- stderr\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn files_with_prefix(dir: &Path, prefix: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix) && p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

/// A decodable PNG of real size with more than a handful of colours.
fn assert_real_png(path: &Path) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("{} is no PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let colours: std::collections::HashSet<[u8; 3]> = buf[..info.buffer_size()].chunks(ch).map(|p| [p[0], p[1], p[2]]).collect();
    assert!(info.width >= 800 && info.height >= 300, "{} is {}x{}", path.display(), info.width, info.height);
    assert!(colours.len() > 20, "{} has {} colours: blank?", path.display(), colours.len());
    assert!(std::fs::metadata(path).unwrap().len() > 10_000, "{} is tiny", path.display());
}

/// The stored runs of the database's latest sweep, full reports included, read through a
/// coordinator started on the same file (the one `--local` used has stopped with its process).
async fn stored_runs(dir: &Path, db: &Path) -> (Vec<Value>, tokbench_coordinator::CoordinatorHandle, String) {
    let coordinator = tokbench_coordinator::spawn(tokbench_coordinator::CoordinatorConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database: db.to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", coordinator.local_addr());
    let o = tokbench_async(dir, &["--coordinator", &url, "--json", "runs", "--sweep", "latest"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<String> = v.as_array().or_else(|| v["runs"].as_array()).unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect();
    let mut reports = Vec::new();
    for id in ids {
        let o = tokbench_async(dir, &["--coordinator", &url, "--json", "show", &id]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        reports.push(if v.get("report").is_some() { v["report"].clone() } else { v });
    }
    (reports, coordinator, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_sweep_runs_end_to_end_and_the_report_draws_it() {
    let server = fake::start(FakeConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("serve.db");
    let o = tokbench_async(
        tmp.path(),
        &[
            "sweep", "--local", "--mode", "serve", "--endpoint", &server.url, "--request-rate", "5,inf", "--num-prompts", "6",
            "--warmup", "1", "--input-len", "8", "--max-tokens", "5", "--goodput", "ttft:60000 tpot:60000", "--database",
            db.to_str().unwrap(), "--out", "plots", "fake-model",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let (reports, coordinator, url) = stored_runs(tmp.path(), &db).await;
    assert_eq!(reports.len(), 2, "one run per request rate");
    let c = server.counters();
    let mut requests = 0usize;
    let mut completion_tokens = 0u64;
    let mut prompt_tokens = 0u64;
    let mut rates = Vec::new();
    for r in &reports {
        // Offline sections are absent, not zeros.
        for k in ["inference_metrics", "model_properties", "gpu_metrics", "nsight_metrics", "repetitions", "outputs"] {
            assert!(r.get(k).is_none(), "serve report has {k}");
        }
        let s = &r["serve"];
        assert_eq!(s["served_model"], "fake-model");
        assert!(s.get("server_engine").is_none(), "an endpoint's engine is not tokbench's: {s}");
        rates.push(s["request_rate"].clone());
        let m = &s["metrics"];
        assert_eq!((m["completed"].as_u64(), m["failed"].as_u64(), m["warmup_requests"].as_u64()), (Some(6), Some(0), Some(1)));
        assert!(m["good_requests"].as_u64() == Some(6), "{m}");
        let timeline = s["requests"].as_array().unwrap();
        assert_eq!(timeline.len(), 7);
        requests += timeline.len();
        let measured_out: u64 = timeline.iter().filter(|t| t["warmup"] == false).map(|t| t["completion_tokens"].as_u64().unwrap()).sum();
        assert_eq!(m["total_output_tokens"].as_u64(), Some(measured_out));
        assert_eq!(measured_out, 6 * 5, "every request generated --max-tokens tokens");
        for t in timeline {
            completion_tokens += t["completion_tokens"].as_u64().unwrap();
            prompt_tokens += t["prompt_tokens"].as_u64().unwrap();
            assert!(t["first_token_s"].as_f64().unwrap() >= t["sent_s"].as_f64().unwrap());
            assert!(t["end_s"].as_f64().unwrap() >= t["first_token_s"].as_f64().unwrap());
        }
    }
    rates.sort_by_key(|v| v.to_string());
    assert_eq!(rates, vec![serde_json::json!("inf"), serde_json::json!(5.0)]);
    // The server's own counters agree with what was stored.
    assert_eq!(c.requests.load(Ordering::SeqCst), requests);
    assert_eq!(c.completed_streams.load(Ordering::SeqCst), requests);
    assert_eq!(c.completion_tokens_completed.load(Ordering::SeqCst), completion_tokens);
    assert_eq!(c.prompt_tokens_completed.load(Ordering::SeqCst), prompt_tokens);

    // `tokbench report` from the stored runs: the serve charts and exports.
    let o = tokbench_async(tmp.path(), &["--coordinator", &url, "report", "--latest", "--out", "report"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = tmp.path().join("report");
    for chart in ["serve_latency_", "serve_goodput_", "serve_timeline_", "serve_pareto_"] {
        let f = files_with_prefix(&out, chart, ".png");
        assert_eq!(f.len(), 1, "{chart}: {f:?}");
        assert_real_png(&f[0]);
    }
    assert!(files_with_prefix(&out, "comparison_table_", ".png").is_empty(), "no offline charts for serve runs");
    let md = std::fs::read_to_string(&files_with_prefix(&out, "serve_report_", ".md")[0]).unwrap();
    assert!(md.contains("## Serving benchmarks") && md.contains("median_tpot_ms") && md.contains("fake-model"), "{md}");
    let csv = std::fs::read_to_string(&files_with_prefix(&out, "serve_report_", ".csv")[0]).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.lines().next().unwrap().contains("request_goodput"));
    // Whether each run was a sustained load (its arrivals spanning three median lifetimes), and
    // the warning with the fix where it was not.
    let sustained = csv.lines().next().unwrap().split(',').position(|c| c == "sustained").expect("a sustained column");
    let cells: Vec<&str> = csv.lines().skip(1).map(|line| line.split(',').nth(sustained).unwrap()).collect();
    assert!(cells.iter().all(|c| *c == "yes" || *c == "no"), "{csv}");
    assert_eq!(cells.iter().filter(|c| **c == "no").count(), md.matches("not a sustained load").count(), "{md}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&files_with_prefix(&out, "serve_report_", ".json")[0]).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["completed"], 6);
        assert_eq!(r["total_output_tokens"], 30);
        assert!(r["ttft_ms"]["median"].as_f64().unwrap() >= 0.0);
        assert!(r["request_goodput"].as_f64().unwrap() > 0.0);
    }
    // --local wrote the same report next to the run JSON files.
    let plots = tmp.path().join("plots");
    assert_eq!(files_with_prefix(&plots, "serve_latency_", ".png").len(), 1);
    assert_eq!(files_with_prefix(&plots, "benchmark_", ".json").len(), 2);
    coordinator.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_endpoint_counts_failed_requests_and_the_job_still_completes() {
    let server = fake::start(FakeConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("fail.db");
    // Every prompt makes the fake server answer 500.
    let dataset = tmp.path().join("fail.jsonl");
    std::fs::write(&dataset, "{\"prompt\": \"FAIL500 one\", \"output_len\": 3}\n{\"prompt\": \"FAIL500 two\", \"output_len\": 3}\n").unwrap();
    let dataset_arg = format!("jsonl:{}", dataset.display());
    let o = tokbench_async(
        tmp.path(),
        &[
            "sweep", "--local", "--mode", "serve", "--endpoint", &server.url, "--request-rate", "inf", "--num-prompts", "4", "--warmup",
            "0", "--dataset", &dataset_arg, "--database", db.to_str().unwrap(), "--out", "plots", "fake-model",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "the job completes even though every request failed\n{}", text(&o));
    let (reports, coordinator, _) = stored_runs(tmp.path(), &db).await;
    assert_eq!(reports.len(), 1);
    let m = &reports[0]["serve"]["metrics"];
    assert_eq!((m["completed"].as_u64(), m["failed"].as_u64()), (Some(0), Some(4)), "{m}");
    assert_eq!(m["failure_counts"]["http_status"], 4);
    let failures = m["failures"].as_array().unwrap();
    assert!(failures.iter().all(|f| f["message"].as_str().unwrap().contains("500")), "{failures:?}");
    assert!(m["ttft_ms"].is_null(), "no latency statistics without a completed request");
    assert_eq!(server.counters().status_500.load(Ordering::SeqCst), 4);
    for t in reports[0]["serve"]["requests"].as_array().unwrap() {
        assert_eq!(t["http_status"], 500);
        assert_eq!(t["error_kind"], "http_status");
    }
    // The report still draws (timeline of failed requests, empty latency curves).
    let plots = tmp.path().join("plots");
    assert_real_png(&files_with_prefix(&plots, "serve_timeline_", ".png")[0]);
    coordinator.shutdown().await.unwrap();
}

/// Without --endpoint the worker serves the model with tokbench's own engine (the
/// `serve-openai` server, in process on 127.0.0.1) and drives that: every request completes, the
/// server's usage counts are the engine's (prompt tokens as the model's tokenizer counts them,
/// exactly --max-tokens completion tokens), and the stored run names the engine and its weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_an_endpoint_the_worker_serves_the_model_with_its_own_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("own.db");
    let o = tokbench_async(
        tmp.path(),
        &[
            "sweep", "--local", "--mode", "serve", "--request-rate", "inf", "--num-prompts", "5", "--warmup", "1", "--input-len", "12",
            "--max-tokens", "4", "--weights", "synthetic", "--max-num-seqs", "3", "--batched-prefill", "false", "--database", db.to_str().unwrap(),
            "--out", "plots", "tiny-gpt2",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (reports, coordinator, _) = stored_runs(tmp.path(), &db).await;
    assert_eq!(reports.len(), 1);
    let serve = &reports[0]["serve"];
    // The job's server settings went to the server and are stored with the run.
    assert_eq!(serve["spec"]["server"]["max_num_seqs"], 3, "{}", serve["spec"]);
    assert_eq!(serve["spec"]["server"]["batched_prefill"], false, "{}", serve["spec"]);
    let m = &serve["metrics"];
    assert_eq!((m["completed"].as_u64(), m["failed"].as_u64()), (Some(5), Some(0)), "{m}");
    let endpoint = serve["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("tokbench engine in the worker (tiny-gpt2 on cpu, weights synthetic"), "{endpoint}");
    // The engine's settings and its KV pool are recorded with the run.
    let engine = serve["server_engine"].as_str().unwrap();
    assert!(engine.contains("--max-num-seqs 3") && engine.contains("--batched-prefill false") && engine.contains("; KV cache: "), "{engine}");
    let requests = serve["requests"].as_array().unwrap();
    let measured: Vec<&Value> = requests.iter().filter(|r| r["warmup"] != true).collect();
    assert_eq!(measured.len(), 5, "{requests:?}");
    // The model's tokenizer (GPT-2's BPE) sized the prompts: the server saw exactly 12 tokens
    // (GPT-2 adds no BOS), and it checked the server's output counts.
    assert!(serve["tokenizer"].as_str().unwrap().contains("r50k_base"), "{}", serve["tokenizer"]);
    for r in measured {
        assert_eq!(r["completion_tokens"], 4, "{r}");
        assert_eq!(r["input_len"], 12, "{r}");
        assert_eq!(r["prompt_tokens"], 12, "{r}");
    }
    assert!(m["token_count_mismatches"].as_u64().is_some(), "{m}");
    coordinator.shutdown().await.unwrap();
}

/// A model without a tokenizer (tiny-llama's synthetic weights offline: no tokenizer.json) reads
/// only token ids, so the load generator sends synthetic prompts as token ids of the drawn lengths,
/// for Poisson arrivals and for a trace alike; every request completes with the server counting
/// exactly those lengths.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn own_engine_without_a_tokenizer_gets_token_id_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.csv");
    std::fs::write(&trace, "0.0,9,3\n0.05,5,2\n0.1,14,4\n").unwrap();
    let loads = [vec!["--request-rate", "50", "--num-prompts", "4", "--warmup", "0", "--input-len", "11", "--max-tokens", "3"], vec!["--trace", trace.to_str().unwrap()]];
    let expected: [Vec<(u64, u64)>; 2] = [vec![(11, 3); 4], vec![(9, 3), (5, 2), (14, 4)]];
    for (i, (load, want)) in loads.into_iter().zip(expected).enumerate() {
        let db = tmp.path().join(format!("ids{i}.db"));
        let mut args = vec!["sweep", "--local", "--mode", "serve", "--weights", "synthetic", "--database", db.to_str().unwrap(), "--out", "plots"];
        args.extend(load);
        args.push("tiny-llama");
        let o = tokbench_async(tmp.path(), &args).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let (reports, coordinator, _) = stored_runs(tmp.path(), &db).await;
        assert_eq!(reports.len(), 1);
        let serve = &reports[0]["serve"];
        let m = &serve["metrics"];
        assert_eq!((m["completed"].as_u64(), m["failed"].as_u64()), (Some(want.len() as u64), Some(0)), "{m}");
        assert!(serve["tokenizer"].as_str().unwrap().contains("synthetic prompts are token ids"), "{}", serve["tokenizer"]);
        let got: Vec<(u64, u64)> = serve["requests"].as_array().unwrap().iter().map(|r| (r["prompt_tokens"].as_u64().unwrap(), r["completion_tokens"].as_u64().unwrap())).collect();
        assert_eq!(got, want, "{serve}");
        coordinator.shutdown().await.unwrap();
    }
    // Text such a server cannot read (chat messages, a dataset's prompts) stops the job at once
    // with the reason and the fix, rather than failing every request.
    let jsonl = tmp.path().join("prompts.jsonl");
    std::fs::write(&jsonl, "{\"prompt\": \"hello there\"}\n").unwrap();
    let dataset = format!("jsonl:{}", jsonl.display());
    for (flags, what) in [(vec!["--api", "chat", "--input-len", "8"], "chat messages (--api chat)"), (vec!["--dataset", dataset.as_str()], "the JSONL dataset's text prompts")] {
        let db = tmp.path().join("text.db");
        let mut args = vec!["sweep", "--local", "--mode", "serve", "--weights", "synthetic", "--max-tokens", "2", "--num-prompts", "2", "--database", db.to_str().unwrap(), "--out", "plots"];
        args.extend(flags);
        args.push("tiny-llama");
        let o = tokbench_async(tmp.path(), &args).await;
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("tiny-llama has no tokenizer on this worker") && out.contains(&format!("cannot read {what}")) && out.contains("Fix: use synthetic prompts") && out.contains("nothing to report"), "{out}");
    }
}

/// `--trace` replays a trace file: one request per line at its arrival time, with its input and
/// output lengths (the prompts sized with the model's tokenizer), the first --warmup lines
/// excluded from the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trace_is_replayed_with_its_arrival_times_and_lengths() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("trace.db");
    // Unsorted, with a header, a comment and an offset start: replayed from t = 0 in time order.
    let lines: [(f64, u64, u64); 5] = [(10.30, 9, 3), (10.00, 5, 2), (10.10, 7, 4), (10.45, 12, 1), (10.20, 3, 5)];
    let mut csv = String::from("# recorded 2026-12-07\narrival_time,input_len,output_len\n");
    for (t, i, o) in lines {
        csv.push_str(&format!("{t},{i},{o}\n"));
    }
    let trace = tmp.path().join("trace.csv");
    std::fs::write(&trace, csv).unwrap();
    let o = tokbench_async(
        tmp.path(),
        &["sweep", "--local", "--mode", "serve", "--trace", trace.to_str().unwrap(), "--warmup", "1", "--weights", "synthetic", "--database", db.to_str().unwrap(), "--out", "plots", "tiny-gpt2"],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Progress names the job's load as the trace it replays, not as a request rate.
    assert!(text(&o).contains("tiny-gpt2 trace trace.csv: finished"), "{}", text(&o));
    let (reports, coordinator, _) = stored_runs(tmp.path(), &db).await;
    assert_eq!(reports.len(), 1);
    let serve = &reports[0]["serve"];
    assert_eq!(serve["spec"]["trace"], trace.to_str().unwrap());
    let m = &serve["metrics"];
    assert_eq!((m["completed"].as_u64(), m["failed"].as_u64(), m["warmup_requests"].as_u64()), (Some(4), Some(0), Some(1)), "{m}");
    // The offered rate is the trace's: 4 gaps over 0.45 s.
    let offered = serve["request_rate"].as_f64().unwrap();
    assert!((offered - 4.0 / 0.45).abs() < 1e-9, "{offered}");
    let mut sorted = lines.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let requests = serve["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 5);
    for (r, (t, input, output)) in requests.iter().zip(sorted) {
        let scheduled = r["scheduled_s"].as_f64().unwrap();
        assert!((scheduled - (t - 10.0)).abs() < 1e-9, "scheduled at {scheduled}, the trace says {}", t - 10.0);
        // GPT-2's tokenizer sized the prompt exactly; the server generated exactly the output length.
        assert_eq!(r["prompt_tokens"], input, "{r}");
        assert_eq!(r["completion_tokens"], output, "{r}");
    }
    assert_eq!(requests[0]["warmup"], true);
    coordinator.shutdown().await.unwrap();
}

#[test]
fn bad_serve_flags_are_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sweep", "--mode", "serve", "--endpoint", "localhost:8000", "m"], "not an http:// or https:// URL"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--request-rate", "0", "m"], "--request-rate"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--request-rate", "2,2", "m"], "listed twice"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--goodput", "ttft=200", "m"], "ttft:200"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--batch-sizes", "4", "m"], "--batch-sizes"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--dataset", "csv:x", "m"], "sharegpt:PATH or jsonl:PATH"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--max-concurrency", "0", "m"], "max concurrency 0"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--api", "grpc", "m"], "use completions"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--api-key-env", "sk live", "m"], "never the key itself"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1"], "name the model the endpoint serves"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--weights", "real", "--dtype", "f16", "m"], "--weights, --dtype set up tokbench's own engine"),
        (vec!["sweep", "--mode", "serve", "--decode", "eager", "tiny-opt"], "are for offline sweeps"),
        (vec!["sweep", "--mode", "serve", "--endpoint", "http://h:1", "--batched-prefill", "false", "m"], "--batched-prefill set up tokbench's own server"),
        (vec!["sweep", "--mode", "serve", "--block-size", "0", "tiny-opt"], "block-size 0 is invalid"),
        (vec!["sweep", "--max-num-seqs", "4", "tiny-opt"], "--max-num-seqs only apply to serving benchmarks"),
        (vec!["sweep", "--mode", "serve", "--trace", "t.csv", "--request-rate", "4", "tiny-opt"], "--trace replays its file's arrival times and lengths, so --request-rate"),
        (vec!["sweep", "--trace", "t.csv", "tiny-opt"], "add --mode serve"),
        (vec!["sweep", "--mode", "online", "m"], "use offline"),
        (vec!["sweep", "--endpoint", "http://h:1", "--request-rate", "4", "tiny-opt"], "add --mode serve"),
    ];
    for (args, needle) in cases {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let o = tokbench(tmp.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in\n{err}");
    }
}

/// A level whose requests arrive faster than they finish, for too short a time to fill the
/// server, is called out at the end of the sweep (and stored), with the request count that would
/// make it a sustained load; a burst at one instant is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_warns_of_runs_too_short_for_a_sustained_load() {
    // Every request lives at least 5 × 60 ms; 6 requests at 100 req/s arrive within ~0.1 s.
    let server = fake::start(FakeConfig { per_token_delay: std::time::Duration::from_millis(60), ..FakeConfig::default() }).await;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("short.db");
    let o = tokbench_async(
        tmp.path(),
        &[
            "sweep", "--local", "--mode", "serve", "--endpoint", &server.url, "--request-rate", "100,inf", "--num-prompts", "6",
            "--input-len", "8", "--max-tokens", "5", "--database", db.to_str().unwrap(), "--out", "plots", "fake-model",
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].starts_with("WARNING fake-model 100 req/s (run ") && warnings[0].contains("not a sustained load") && warnings[0].contains("--num-prompts"), "{out}");
    let (reports, coordinator, _) = stored_runs(tmp.path(), &db).await;
    let mut stored: Vec<(String, usize)> = reports.iter().map(|r| (r["serve"]["request_rate"].to_string(), r["serve"]["metrics"]["warnings"].as_array().unwrap().len())).collect();
    stored.sort();
    assert_eq!(stored, vec![("\"inf\"".to_string(), 0), ("100.0".to_string(), 1)]);
    coordinator.shutdown().await.unwrap();
}
