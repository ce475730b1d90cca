//! The server under NVIDIA's AIPerf (PyPI `aiperf`), a load generator nobody on this project
//! wrote: a streaming completions run at fixed concurrency and a streaming chat run at a Poisson
//! request rate, each against a fresh `tokbench-worker serve-openai` on 127.0.0.1 with the tiny
//! Llama fixture on the CPU. What AIPerf reports (requests, the usage token totals, its own
//! client-side input token counts with the checkpoint's tokenizer through transformers) must
//! agree with the server's /metrics counters and with tokbench's tokenizer.
//!
//! AIPerf comes from the venv `TOKBENCH_PYTHON_AIPERF` names, else one made under cargo's target
//! tmp dir with `pip install aiperf` (about 1 GiB, kept for later runs). Without it the test
//! skips, unless `TOKBENCH_REQUIRE_PYPI_PEERS=1` (CI).

mod openai_common;

use openai_common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The `aiperf` command beside the venv's python.
fn aiperf_bin(python: &Path) -> std::path::PathBuf {
    python.parent().unwrap().join("aiperf")
}

/// Runs `aiperf profile` against `url` with `load` (its load and endpoint arguments) and
/// returns (the aggregate export, every per-request record, the requests' inputs).
fn profile(python: &Path, url: &str, tokenizer: &Path, out: &Path, load: &[&str]) -> (Value, Vec<Value>, Value) {
    let output = Command::new(aiperf_bin(python))
        .args(["profile", "--model", "tiny", "--url", url, "--tokenizer"])
        .arg(tokenizer)
        .args(["--streaming", "--extra-inputs", "ignore_eos:true", "--random-seed", "7", "--ui-type", "none", "--output-artifact-dir"])
        .arg(out)
        .args(load)
        // Its workers talk over IPC sockets under TMPDIR; one per run keeps parallel tests apart.
        .env("TMPDIR", out)
        // A local tokenizer directory: with HF_HUB_OFFLINE set, aiperf 0.13 treats it as a repo id.
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("run aiperf");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "aiperf failed ({}):\n{stdout}\n{stderr}", output.status);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("aiperf wrote no {name} ({e}):\n{stdout}\n{stderr}"));
    let aggregate: Value = serde_json::from_str(&read("profile_export_aiperf.json")).unwrap();
    let records = read("profile_export.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let inputs: Value = serde_json::from_str(&read("inputs.json")).unwrap();
    (aggregate, records, inputs)
}

/// An aggregate figure of AIPerf's export (`avg` holds totals and counts too).
fn figure(aggregate: &Value, name: &str) -> f64 {
    aggregate[name]["avg"].as_f64().unwrap_or_else(|| panic!("no {name} in aiperf's export: {}", aggregate[name]))
}

fn record_metric(record: &Value, name: &str) -> f64 {
    record["metrics"][name]["value"].as_f64().unwrap_or_else(|| panic!("no {name} in aiperf's record: {record}"))
}

/// Checks one AIPerf run against the server's counters; `requests` and `output_len` are what
/// the run asked for.
async fn check_against_server(server: &Server, model_dir: &Path, aggregate: &Value, records: &[Value], requests: usize, output_len: usize) {
    server.wait_idle().await;
    let finished = server.metric("tokbench_requests_total", "status=\"finished\"").await;
    let prompt_tokens = server.metric("tokbench_prompt_tokens_total", "").await;
    let completion_tokens = server.metric("tokbench_completion_tokens_total", "").await;
    println!(
        "aiperf: {} requests, usage {} prompt + {} completion tokens, error rate {} %; server: {finished} finished, {prompt_tokens} prompt + {completion_tokens} completion tokens",
        figure(aggregate, "request_count"),
        figure(aggregate, "total_usage_prompt_tokens"),
        figure(aggregate, "total_usage_completion_tokens"),
        figure(aggregate, "request_error_rate"),
    );
    assert_eq!(figure(aggregate, "request_count"), requests as f64);
    assert_eq!(figure(aggregate, "request_error_rate"), 0.0);
    assert_eq!(records.len(), requests);
    assert_eq!(finished, requests as f64, "the server finished a different number of requests than aiperf counted");
    assert_eq!(server.metric("tokbench_requests_total", "status=\"failed\"").await, 0.0);
    assert_eq!(figure(aggregate, "total_usage_prompt_tokens"), prompt_tokens);
    assert_eq!(figure(aggregate, "total_usage_completion_tokens"), completion_tokens);
    assert_eq!(completion_tokens, (requests * output_len) as f64, "ignore_eos and the max tokens aiperf sent must give exactly {output_len} tokens each");

    // AIPerf counts input tokens itself with the checkpoint's tokenizer (transformers); the
    // server's usage counts the same text with tokbench's, plus the special tokens its template
    // adds (the BOS). Per request the two differ by exactly that.
    let specials = encode(model_dir, "").len() as f64;
    for r in records {
        let client = record_metric(r, "input_sequence_length");
        let usage = record_metric(r, "usage_prompt_tokens");
        assert!(usage == client + specials || usage == client, "request {}: server usage {usage} prompt tokens, aiperf counted {client} (+{specials} special)", r["metadata"]["x_request_id"]);
        assert_eq!(record_metric(r, "usage_completion_tokens"), output_len as f64);
    }
}

/// A server on the tiny Llama fixture (with a chat template) served as "tiny", and one AIPerf
/// run against it with `load`: (the server, the model directory, the aggregate, the per-request
/// records, the inputs AIPerf sent). `tmp` holds the fixture and AIPerf's artifacts.
async fn server_under_aiperf(python: std::path::PathBuf, tmp: &Path, load: &'static [&'static str]) -> (Server, std::path::PathBuf, Value, Vec<Value>, Value) {
    let dir = llama_with_chat_template(tmp);
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--served-model-name", "tiny"]);
    let (url, tokenizer, out) = (server.url.clone(), dir.clone(), tmp.join("aiperf-out"));
    let (aggregate, records, inputs) = tokio::task::spawn_blocking(move || profile(&python, &url, &tokenizer, &out, load)).await.unwrap();
    (server, dir, aggregate, records, inputs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiperf_completions_at_fixed_concurrency_agree_with_the_servers_counters() {
    let Some(python) = python_with("aiperf", "aiperf", "TOKBENCH_PYTHON_AIPERF") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let load = &["--endpoint-type", "completions", "--request-count", "12", "--concurrency", "3", "--prompt-input-tokens-mean", "16", "--prompt-input-tokens-stddev", "0", "--prompt-output-tokens-mean", "8", "--prompt-output-tokens-stddev", "0"];
    let (server, dir, aggregate, records, inputs) = server_under_aiperf(python, tmp.path(), load).await;
    check_against_server(&server, &dir, &aggregate, &records, 12, 8).await;

    // The server's usage equals tokbench's tokenizer on the prompts AIPerf sent.
    let prompts: Vec<String> = inputs["data"].as_array().unwrap().iter().map(|s| s["payloads"][0]["prompt"].as_str().unwrap().to_string()).collect();
    assert_eq!(prompts.len(), 12, "one input per request");
    let expected: f64 = prompts.iter().map(|p| encode(&dir, p).len() as f64).sum();
    assert_eq!(figure(&aggregate, "total_usage_prompt_tokens"), expected);
    assert!(figure(&aggregate, "time_to_first_token") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiperf_chat_at_a_request_rate_agrees_with_the_servers_counters() {
    let Some(python) = python_with("aiperf", "aiperf", "TOKBENCH_PYTHON_AIPERF") else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Chat requests carry `max_completion_tokens` (AIPerf's default), which the server honours.
    let load = &["--endpoint-type", "chat", "--request-count", "10", "--request-rate", "20", "--prompt-input-tokens-mean", "12", "--prompt-input-tokens-stddev", "0", "--prompt-output-tokens-mean", "6", "--prompt-output-tokens-stddev", "0"];
    let (server, _dir, aggregate, records, inputs) = server_under_aiperf(python, tmp.path(), load).await;
    assert_eq!(inputs["data"][0]["payloads"][0]["max_completion_tokens"], 6, "aiperf sent: {}", inputs["data"][0]);
    server.wait_idle().await;
    let finished = server.metric("tokbench_requests_total", "status=\"finished\"").await;
    assert_eq!(figure(&aggregate, "request_count"), finished);
    assert_eq!(figure(&aggregate, "request_count"), 10.0);
    assert_eq!(records.len(), 10);
    assert_eq!(figure(&aggregate, "total_usage_prompt_tokens"), server.metric("tokbench_prompt_tokens_total", "").await);
    assert_eq!(figure(&aggregate, "total_usage_completion_tokens"), server.metric("tokbench_completion_tokens_total", "").await);
    assert_eq!(figure(&aggregate, "total_usage_completion_tokens"), 60.0);
    assert_eq!(figure(&aggregate, "request_error_rate"), 0.0);
    for r in &records {
        assert_eq!(record_metric(r, "usage_completion_tokens"), 6.0);
        // The chat template wraps each prompt: the server's prompt is longer than the text.
        assert!(record_metric(r, "usage_prompt_tokens") > record_metric(r, "input_sequence_length"));
    }
}
