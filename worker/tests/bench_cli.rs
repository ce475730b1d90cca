//! The real `tokbench-worker bench` binary, end to end on the tiny catalog models with
//! synthetic weights (and a small real checkpoint in a fake Hugging Face cache), plus its
//! error cases and exit codes.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokbench_core::catalog::estimate_parameters;
use tokbench_core::{ArchConfig, BenchReport};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the binary in `cwd` with HF_HOME pointing at `hf_home` (an empty dir unless a test fills
/// it), so the host's own cache never leaks into results.
fn run_in(cwd: &Path, hf_home: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tokbench-worker"))
        .arg("bench")
        .args(args)
        .current_dir(cwd)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        // These runs never download (tests/hub_download.rs covers downloads).
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tokbench-worker");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), dir.path(), args)
}

/// Run and parse the JSON report it wrote.
fn bench_json(args: &[&str]) -> (BenchReport, Value, Run) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", json.to_str().unwrap()]);
    let r = run_in(dir.path(), dir.path(), &all);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let text = std::fs::read_to_string(&json).unwrap();
    (serde_json::from_str(&text).unwrap(), serde_json::from_str(&text).unwrap(), r)
}

fn check_consistent(rep: &BenchReport, num_prompts: usize, max_tokens: usize, reps: usize) {
    let m = &rep.inference_metrics;
    assert_eq!(m.num_prompts, num_prompts);
    assert_eq!(m.total_output_tokens, num_prompts * max_tokens, "ignore_eos: every prompt yields max_tokens");
    assert_eq!(m.average_tokens_per_prompt, max_tokens as f64);
    assert_eq!(m.repetitions, reps);
    assert_eq!(rep.repetitions.len(), reps);
    // One median rule: the midpoint of the repetitions' values for an even count.
    let runs_tps: Vec<f64> = rep.repetitions.iter().map(|r| r.tokens_per_second).collect();
    let runs_time: Vec<f64> = rep.repetitions.iter().map(|r| r.total_inference_time_seconds).collect();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(close(m.tokens_per_second, tokbench_core::report::median(&runs_tps)), "{} vs {runs_tps:?}", m.tokens_per_second);
    assert!(close(m.total_inference_time_seconds, tokbench_core::report::median(&runs_time)), "{runs_time:?}");
    if reps % 2 == 1 {
        let tps = m.total_output_tokens as f64 / m.total_inference_time_seconds;
        assert!((tps - m.tokens_per_second).abs() <= 1e-6 * tps, "tokens/s {} vs tokens/time {tps}", m.tokens_per_second);
    }
    assert_eq!(m.tokens_per_second_ci95.is_some(), reps >= 2);
    assert!(m.tokens_per_second_min <= m.tokens_per_second && m.tokens_per_second <= m.tokens_per_second_max);
    assert!(m.total_inference_time_seconds_min <= m.total_inference_time_seconds && m.total_inference_time_seconds <= m.total_inference_time_seconds_max);
    assert!(m.tokens_per_second_cv >= 0.0 && m.tokens_per_second_cv < 1.0);
    assert!(m.model_load_time_seconds > 0.0);
    assert!(m.prefill_tokens_per_second > 0.0 && m.decode_tokens_per_second > 0.0);
    // TTFT: one per request per repetition; ITL: one per live sequence per decode step (every
    // sequence lives max_tokens - 1 steps under ignore_eos).
    assert_eq!(m.ttft_ms.count, num_prompts * reps);
    assert_eq!(m.inter_token_latency_ms.count, num_prompts * (max_tokens - 1) * reps);
    // vLLM's names agree with the distributions they summarise.
    let l = &m.request_latencies;
    assert_eq!((l.median_ttft_ms, l.p99_ttft_ms, l.mean_ttft_ms), (m.ttft_ms.p50, m.ttft_ms.p99, m.ttft_ms.mean));
    assert_eq!((l.median_itl_ms, l.p99_itl_ms), (m.inter_token_latency_ms.p50, m.inter_token_latency_ms.p99));
    if max_tokens > 1 {
        assert!(l.median_tpot_ms > 0.0 && l.median_e2el_ms >= l.median_ttft_ms, "{l:?}");
    }
    assert!(m.ttft_ms.min <= m.ttft_ms.p50 && m.ttft_ms.p50 <= m.ttft_ms.p99 && m.ttft_ms.p99 <= m.ttft_ms.max);
    for r in &rep.repetitions {
        assert_eq!(r.total_output_tokens, num_prompts * max_tokens);
        assert_eq!(r.ttft_ms.len(), num_prompts);
        // Prefill + decode of all batches is within the pass's wall time.
        assert!(r.prefill_seconds + r.decode_seconds <= r.total_inference_time_seconds * 1.0001);
    }
    assert_eq!(rep.outputs.len(), num_prompts);
    let input_tokens: usize = rep.outputs.iter().map(|o| o.prompt_tokens).sum();
    assert_eq!(input_tokens, m.total_input_tokens);
    for o in &rep.outputs {
        assert_eq!(o.generated_token_ids.len(), max_tokens);
        assert_eq!(o.finish_reason, "length");
        assert!(o.ttft_ms > 0.0);
        assert!(o.generated_token_ids.iter().all(|&id| (id as usize) < rep.model_properties.vocab_size));
    }
    let p = &rep.model_properties;
    assert_eq!(p.weights, "synthetic");
    let cfg = ArchConfig::from_json_value(&p.config).unwrap();
    assert_eq!(p.total_parameters, estimate_parameters(&cfg));
    assert!((p.model_size_mb - p.total_parameters as f64 * 4.0 / 1048576.0).abs() < 1e-6, "f32 weights: 4 bytes per parameter");
    assert_eq!(p.dtype, "f32");
    let g = &rep.gpu_metrics;
    assert_eq!(g.gpu_name, "none (cpu)");
    assert!(g.gpu_memory_total_mb.is_none() && g.gpu_memory_allocated_mb.is_none() && g.peak_memory_allocated_mb.is_none());
    assert!(rep.telemetry.is_none(), "no NVML on CPU: no telemetry, never zeros");
    assert_eq!(rep.environment.backend, "cpu");
    assert!(!rep.environment.cpu.is_empty() && !rep.environment.hostname.is_empty());
}

#[test]
fn tiny_opt_synthetic_end_to_end() {
    let (rep, raw, r) = bench_json(&[
        "--model", "tiny-opt", "--weights", "synthetic", "--max-tokens", "8", "--repetitions", "2", "--warmup", "1",
        "--num-prompts", "5", "--batch-size", "2",
    ]);
    check_consistent(&rep, 5, 8, 2);
    assert_eq!(rep.model_id, "tiny-opt");
    assert_eq!(rep.model_properties.num_layers, 2);
    assert!(rep.model_properties.tokenizer.contains("</s>"), "{}", rep.model_properties.tokenizer);
    // The demo's prompts, cycled, each with OPT's </s> BOS.
    assert_eq!(rep.outputs[0].prompt, "Hello, my name is");
    assert_eq!(rep.outputs[0].prompt_tokens, 6);
    assert_eq!(rep.nsight_metrics.profile_name, "profile_tiny-opt");
    // Nobody profiled this run: no NVTX range was seen (the list comes from nsys, not a constant).
    assert!(rep.nsight_metrics.nvtx_ranges.is_empty(), "{:?}", rep.nsight_metrics.nvtx_ranges);
    // The demo's field names are all there.
    for f in ["total_parameters", "num_layers", "hidden_size", "vocab_size", "model_size_mb"] {
        assert!(raw["model_properties"].get(f).is_some(), "{f}");
    }
    for f in ["gpu_memory_total_mb", "gpu_memory_allocated_mb", "gpu_memory_reserved_mb", "gpu_memory_utilization_percent", "peak_memory_allocated_mb"] {
        assert!(raw["gpu_metrics"][f].is_null(), "{f} is null on CPU");
    }
    for f in ["tokens per s", "TTFT ms", "ITL ms", "load time", "synthetic"] {
        let f = f.replace("tokens per s", "tokens/s");
        assert!(r.stdout.contains(&f), "summary lacks {f}:\n{}", r.stdout);
    }
}

#[test]
fn tiny_gpt2_synthetic_prompts_of_exact_length() {
    let (rep, _, _) = bench_json(&[
        "--model", "tiny-gpt2", "--weights", "synthetic", "--max-tokens", "6", "--repetitions", "2", "--warmup", "0",
        "--num-prompts", "3", "--input-len", "16", "--batch-size", "4", "--quiet",
    ]);
    check_consistent(&rep, 3, 6, 2);
    assert_eq!(rep.inference_metrics.total_input_tokens, 48);
    assert!(rep.outputs.iter().all(|o| o.prompt_tokens == 16));
    assert_eq!(rep.inference_metrics.warmup_runs, 0);
}

#[test]
fn same_seed_same_outputs_and_default_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--model", "tiny-gpt2", "--weights", "synthetic", "--max-tokens", "5", "--repetitions", "1", "--warmup", "0", "--quiet"];
    let r = run_in(dir.path(), dir.path(), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "--quiet prints nothing: {}", r.stdout);
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    // benchmark_<stem>_<YYYYmmdd_HHMMSS>.json
    let ts = name.strip_prefix("benchmark_tiny-gpt2_").and_then(|s| s.strip_suffix(".json")).unwrap_or_else(|| panic!("{name}"));
    assert!(ts.len() == 15 && ts.as_bytes()[8] == b'_' && ts.replace('_', "").chars().all(|c| c.is_ascii_digit()), "{name}");
    let a: BenchReport = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let (b, _, _) = bench_json(&args);
    let ids = |r: &BenchReport| r.outputs.iter().map(|o| o.generated_token_ids.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "greedy decoding with the same synthetic weights is deterministic");
}

#[test]
fn unknown_model_exits_2_with_suggestion() {
    let r = run(&["--model", "tiny-opz", "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("Did you mean \"tiny-opt\"") && r.stderr.contains("distilgpt2"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().filter(|l| l.starts_with("error:")).count(), 1, "{}", r.stderr);
}

#[test]
fn non_utf8_prompt_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompts.txt");
    std::fs::write(&p, b"hello\n\xc3\x28 broken\n").unwrap();
    let r = run(&["--model", "tiny-gpt2", "--prompts", p.to_str().unwrap(), "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("invalid UTF-8 at byte offset 6 (line 2)") && r.stderr.contains("prompts.txt"), "{}", r.stderr);
}

#[test]
fn prompt_file_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompts.txt");
    std::fs::write(&p, "Der Himmel ist\n\nOne two three four\n").unwrap();
    let (rep, _, _) = bench_json(&["--model", "tiny-gpt2", "--weights", "synthetic", "--prompts", p.to_str().unwrap(), "--max-tokens", "3", "--repetitions", "1", "--warmup", "0"]);
    let prompts: Vec<&str> = rep.outputs.iter().map(|o| o.prompt.as_str()).collect();
    assert_eq!(prompts, ["Der Himmel ist", "One two three four"]);
    // HF GPT-2 ids: "Der Himmel ist" = [28532, 367, 8608, 417, 318, 83]; "One two three four" = 4.
    assert_eq!(rep.outputs.iter().map(|o| o.prompt_tokens).collect::<Vec<_>>(), [6, 4]);
}

#[test]
fn prompt_too_long_exits_2() {
    let r = run(&["--model", "tiny-gpt2", "--input-len", "1000", "--max-tokens", "100", "--num-prompts", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("1100 positions") && r.stderr.contains("1024"), "{}", r.stderr);
}

#[test]
fn real_weights_not_cached_exits_2() {
    let r = run(&["--model", "opt-125m", "--weights", "real", "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no real weights for opt-125m") && r.stderr.contains("facebook/opt-125m"), "{}", r.stderr);
}

#[test]
fn local_dir_with_unsupported_or_malformed_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"falcon","hidden_size":4096,"num_hidden_layers":32}"#).unwrap();
    let r = run(&["--model", dir.path().to_str().unwrap(), "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("model_type \"falcon\" is not supported") && r.stderr.contains("config.json"), "{}", r.stderr);
    assert!(r.stderr.contains("llama, mistral, qwen2 and qwen3"), "lists the supported families: {}", r.stderr);

    // A supported family with fields missing: the field is named.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"llama","hidden_size":4096,"num_hidden_layers":32}"#).unwrap();
    let r = run(&["--model", dir.path().to_str().unwrap(), "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("missing field `vocab_size`") && r.stderr.contains("model_type \"llama\""), "{}", r.stderr);

    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2", "n_embd": "#).unwrap();
    let r = run(&["--model", dir.path().to_str().unwrap(), "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not valid JSON"), "{}", r.stderr);
}

#[test]
fn cuda_without_the_feature_says_how_to_rebuild() {
    if cfg!(feature = "cuda") {
        return;
    }
    let r = run(&["--model", "tiny-gpt2", "--device", "cuda:0", "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--features cuda"), "{}", r.stderr);
}

#[test]
fn bad_flags_exit_2() {
    let r = run(&["--model", "tiny-gpt2", "--batch-size", "0", "--max-tokens", "2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("batch size"), "{}", r.stderr);
    let r = run(&["--model", "tiny-gpt2", "--dtype", "f64"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("f32, f16 or bf16"), "{}", r.stderr);
}

#[test]
fn help_has_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_tokbench-worker")).args(["bench", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("Examples:") && text.contains("--weights") && text.contains("nsys profile"), "{text}");
}

/// A GPT-2-style byte-level BPE small enough for the fixture's 512-id vocabulary.
fn write_small_tokenizer(dir: &Path) {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut vocab: HashMap<String, u32> = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("i", "s")];
    for (a, b) in merges {
        let id = vocab.len() as u32;
        vocab.insert(format!("{a}{b}"), id);
    }
    std::fs::write(dir.join("vocab.json"), serde_json::to_string(&vocab).unwrap()).unwrap();
    let text: String = std::iter::once("#version: 0.2\n".to_string()).chain(merges.iter().map(|(a, b)| format!("{a} {b}\n"))).collect();
    std::fs::write(dir.join("merges.txt"), text).unwrap();
}

#[test]
fn real_checkpoint_from_a_fake_hf_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--tokbench-test--tiny-opt-pre");
    let snap = repo.join("snapshots/6f1e2d3c");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "6f1e2d3c").unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opt_pre");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), snap.join(f)).unwrap();
    }
    write_small_tokenizer(&snap);
    let prompts = home.path().join("p.txt");
    std::fs::write(&prompts, "is the\nthe the is\n").unwrap();
    let json = home.path().join("r.json");
    let r = run_in(
        home.path(),
        home.path(),
        &["--model", "tokbench-test/tiny-opt-pre", "--weights", "real", "--prompts", prompts.to_str().unwrap(), "--max-tokens", "4", "--repetitions", "1", "--warmup", "0", "--json", json.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let rep: BenchReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let p = &rep.model_properties;
    assert_eq!(p.weights, "real");
    assert!(p.weights_source.contains("snapshots/6f1e2d3c/model.safetensors"), "{}", p.weights_source);
    assert!(p.tokenizer.starts_with("vocab.json+merges.txt at"), "{}", p.tokenizer);
    assert_eq!(rep.model_id, "tokbench-test/tiny-opt-pre");
    let cfg = ArchConfig::from_json_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    assert_eq!(p.total_parameters, estimate_parameters(&cfg));
    assert_eq!(p.vocab_size, 512);
    // </s> + "is" + " the" = 3; </s> + "the" ... : the merges make " the" and "is" one token each.
    assert_eq!(rep.outputs[0].prompt_tokens, 3);
    assert_eq!(rep.inference_metrics.total_output_tokens, 8);
    assert_eq!(rep.nsight_metrics.profile_name, "profile_tokbench-test_tiny-opt-pre");
}

fn tiny_workload() -> tokbench_core::Workload {
    tokbench_core::Workload {
        model: "tiny-gpt2".into(),
        weights: tokbench_core::WeightsMode::Synthetic,
        max_tokens: 4,
        warmup: 1,
        repetitions: 2,
        prompts: tokbench_core::PromptSource::Builtin { num_prompts: 3 },
        batch_size: 2,
        ..Default::default()
    }
}

#[test]
fn run_workload_reports_progress_in_phase_order() {
    use std::sync::atomic::AtomicBool;
    let cancel = AtomicBool::new(false);
    let mut seen: Vec<tokbench_worker::bench::Progress> = Vec::new();
    let rep = tokbench_worker::bench::run_workload(&tiny_workload(), &cancel, &mut |p| seen.push(p.clone())).unwrap();
    let mut phases: Vec<&str> = seen.iter().map(|p| p.phase).collect();
    phases.dedup();
    assert_eq!(phases, ["loading", "warmup", "inference", "output_processing"]);
    let last_inference = seen.iter().rev().find(|p| p.phase == "inference").unwrap();
    // 2 repetitions * 3 prompts * 4 tokens.
    assert_eq!((last_inference.tokens_done, last_inference.tokens_total), (24, 24));
    assert!(last_inference.tokens_per_second > 0.0);
    assert!(seen.iter().filter(|p| p.phase == "inference").all(|p| p.tokens_done <= p.tokens_total));
    assert_eq!(rep.inference_metrics.total_output_tokens, 12);
}

#[test]
fn run_workload_stops_when_cancelled() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Cancelled before it starts: nothing is generated.
    let cancel = AtomicBool::new(true);
    let err = tokbench_worker::bench::run_workload(&tiny_workload(), &cancel, &mut |_| {}).unwrap_err();
    assert!(matches!(err, tokbench_worker::EngineError::Cancelled), "{err:?}");
    // Cancelled during warm-up: the job ends with Cancelled instead of a report.
    let cancel = AtomicBool::new(false);
    let mut inference_seen = false;
    let err = tokbench_worker::bench::run_workload(&tiny_workload(), &cancel, &mut |p| {
        if p.phase == "warmup" {
            cancel.store(true, Ordering::Relaxed);
        }
        inference_seen |= p.phase == "inference";
    })
    .unwrap_err();
    assert!(matches!(err, tokbench_worker::EngineError::Cancelled), "{err:?}");
    assert!(!inference_seen, "no timed pass after the cancel");
}

/// A cancel that arrives while a batch is decoding stops the job at the next decode step, not at
/// the end of its batch: a thread sets the flag once the timed pass has reported decode progress
/// (the progress callback waits until it has), and no token is generated after that.
#[test]
fn run_workload_cancel_stops_a_running_batch() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    // One batch of 4 sequences x 2000 tokens: far longer than the 100 ms between progress
    // reports, so the decode phase reports progress long before the batch could finish.
    let w = tokbench_core::Workload {
        model: "tiny-opt".into(),
        weights: tokbench_core::WeightsMode::Synthetic,
        prompts: tokbench_core::PromptSource::Synthetic { num_prompts: 4, input_len: 8 },
        batch_size: 4,
        max_tokens: 2000,
        warmup: 0,
        repetitions: 1,
        ..Default::default()
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let (request_tx, request_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            if request_rx.recv().is_ok() {
                cancel.store(true, Ordering::Relaxed);
                let _ = done_tx.send(());
            }
        })
    };
    let mut at_cancel: Option<tokbench_worker::bench::Progress> = None;
    let mut after_cancel = Vec::new();
    let result = tokbench_worker::bench::run_workload(&w, &cancel, &mut |p| {
        if at_cancel.is_some() {
            after_cancel.push(p.clone());
        } else if p.phase == "inference" && p.tokens_done > 4 {
            // More tokens than the prefill's one per sequence: decode steps have run.
            at_cancel = Some(p.clone());
            request_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        }
    });
    drop(request_tx);
    canceller.join().unwrap();
    let at = at_cancel.expect("the timed pass reported decode progress");
    match result {
        Err(tokbench_worker::EngineError::Cancelled) => {}
        Err(e) => panic!("expected Cancelled, got {e:?}"),
        Ok(_) => panic!("the job finished its batch despite the cancel at {at:?}"),
    }
    assert!(at.tokens_done < at.tokens_total, "cancelled at {at:?}: not mid-batch");
    assert!(
        after_cancel.is_empty(),
        "tokens were generated after the cancel at {at:?}: {} more progress reports, the last {:?}",
        after_cancel.len(),
        after_cancel.last()
    );
}

/// The job's kernel options are recorded as asked; on the CPU none of tokbench's CUDA kernels
/// run, so nothing is recorded as run and the prose stays empty.
#[test]
fn report_records_kernel_options_as_asked_and_none_run_on_cpu() {
    use std::sync::atomic::AtomicBool;
    let mut w = tiny_workload();
    w.kernels = tokbench_core::KernelOptions { decode: tokbench_core::DecodePath::Fused, gemv_max_rows: 0, pdl: false, ..Default::default() };
    let rep = tokbench_worker::bench::run_workload(&w, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let m = &rep.inference_metrics;
    assert_eq!(m.kernel_options, w.kernels);
    assert_eq!(m.kernels_run, None);
    assert!(m.decode_kernels.is_empty());
    assert_eq!(m.decode_path, "cpu");
}
