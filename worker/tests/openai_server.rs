//! `tokbench-worker serve-openai` end to end: real server processes on 127.0.0.1 (port 0) with
//! tiny models on the CPU, driven over HTTP.
//!
//! What must hold: continuous batching (requests joining and leaving at different steps, long
//! prompts prefilled in chunks, sequences preempted and recomputed under a tiny KV budget) never
//! changes greedy results, which equal the engine's own offline generation of each prompt alone
//! (for every family: Llama, GPT-2, OPT pre/post-LN, Qwen2, Qwen3, Mistral);
//! the streamed text is the non-streamed text; usage counts are the tokenizer's; errors are
//! OpenAI-shaped with the right status; a client that goes away frees its KV blocks.

mod openai_common;

use openai_common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokbench_core::WeightsMode;

/// Eight token-id prompts of 3..31 tokens with 6..27 new tokens each (within the llama
/// fixture's 64 positions).
fn eight_prompts(vocab: u32) -> (Vec<Vec<u32>>, Vec<usize>) {
    let prompts = (0..8u32).map(|i| (0..3 + 4 * i).map(|j| (7 + 13 * i + 5 * j) % (vocab - 10) + 3).collect()).collect();
    let max_tokens = (0..8).map(|i| 6 + 3 * i).collect();
    (prompts, max_tokens)
}

/// Sends every prompt concurrently, request i after i * `stagger`, alternating streamed and
/// non-streamed; returns the generated ids of each.
async fn run_concurrently(server: &Server, prompts: &[Vec<u32>], max_tokens: &[usize], stagger: Duration) -> Vec<Vec<u32>> {
    let mut tasks = Vec::new();
    for (i, (p, &n)) in prompts.iter().zip(max_tokens).enumerate() {
        let url = server.url.clone();
        let body = json!({"prompt": p, "max_tokens": n, "ignore_eos": true, "return_token_ids": true, "stream": i % 2 == 1});
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(stagger * i as u32).await;
            let resp = client().post(format!("{url}/v1/completions")).body(body.to_string()).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let text = resp.text().await.unwrap();
            if i % 2 == 1 {
                let payloads = sse_payloads(&text);
                assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
                let mut ids = Vec::new();
                for p in &payloads[..payloads.len() - 1] {
                    let v: Value = serde_json::from_str(p).unwrap();
                    ids.extend(v["choices"][0]["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32));
                }
                ids
            } else {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["choices"][0]["finish_reason"], "length");
                assert_eq!(v["usage"]["prompt_tokens"], prompts_len(&v));
                assert_eq!(v["usage"]["completion_tokens"], n);
                v["choices"][0]["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn prompts_len(v: &Value) -> usize {
    v["prompt_token_ids"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_completions_equal_offline_generation_while_8_requests_join_and_leave() {
    let dir = fixture("llama");
    let dir_s = dir.to_str().unwrap();
    // 4-token blocks and 8-token prefill chunks: prompts span several blocks and iterations.
    let server = Server::start(&["--model", dir_s, "--block-size", "4", "--max-num-batched-tokens", "8"]);
    assert!(server.banner.iter().any(|l| l.starts_with("KV cache:") && l.contains("paged vs")), "{:?}", server.banner);
    let (prompts, max_tokens) = eight_prompts(512);
    let reference = offline_greedy(dir_s, WeightsMode::Real, &prompts, &max_tokens);
    // All at once, then staggered so that they join a running batch at different steps.
    for stagger in [Duration::ZERO, Duration::from_millis(15)] {
        let got = run_concurrently(&server, &prompts, &max_tokens, stagger).await;
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(g, r, "request {i} (stagger {stagger:?}): server {g:?} vs offline {r:?}");
        }
    }
    server.wait_idle().await;
    assert_eq!(server.metric("tokbench_requests_total", "status=\"finished\"").await, 16.0);
    let generated: usize = max_tokens.iter().sum::<usize>() * 2;
    assert_eq!(server.metric("tokbench_completion_tokens_total", "").await, generated as f64);
    // On the CPU every decode step gathers the blocks (the paged kernel is CUDA's), though
    // --paged-attention is on by default; /metrics says which path ran.
    assert!(server.metric("tokbench_decode_steps_total", "path=\"gathered\"").await > 0.0);
    assert_eq!(server.metric("tokbench_decode_steps_total", "path=\"paged\"").await, 0.0);
}

/// The same with learned positions (GPT-2's table) and synthetic weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_batching_matches_offline_generation_for_gpt2_too() {
    let server = Server::start(&["--model", "tiny-gpt2", "--weights", "synthetic", "--max-num-batched-tokens", "16"]);
    let (prompts, max_tokens) = eight_prompts(50257);
    let reference = offline_greedy("tiny-gpt2", WeightsMode::Synthetic, &prompts, &max_tokens);
    let got = run_concurrently(&server, &prompts, &max_tokens, Duration::from_millis(5)).await;
    assert_eq!(got, reference);

    // A model without a checkpoint directory has no chat template: a clear 400.
    let (status, body) = server.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "no_chat_template");
    assert!(body["error"]["message"].as_str().unwrap().contains("has no chat template"), "{body}");
}

/// Every other family of the engine through the paged KV cache and continuous batching: OPT
/// (pre- and post-layer-norm, positions offset by 2), Qwen2 (qkv bias), Qwen3 (q/k RMSNorm)
/// and Mistral, each from its transformers-saved fixture with real weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_batching_matches_offline_generation_for_every_family() {
    for family in ["opt_pre", "opt_post", "qwen2", "qwen3", "mistral"] {
        let dir = fixture(family);
        let dir_s = dir.to_str().unwrap();
        let server = Server::start(&["--model", dir_s, "--block-size", "4", "--max-num-batched-tokens", "8"]);
        let (prompts, max_tokens) = eight_prompts(512);
        let reference = offline_greedy(dir_s, WeightsMode::Real, &prompts, &max_tokens);
        let got = run_concurrently(&server, &prompts, &max_tokens, Duration::from_millis(5)).await;
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert_eq!(g, r, "{family}, request {i}: server {g:?} vs offline {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_concatenates_to_the_non_streamed_text_and_usage_counts_tokenizer_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_with_chat_template(tmp.path());
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--served-model-name", "tiny-chat"]);

    // /v1/models lists the served name.
    let models: Value = serde_json::from_str(&client().get(server.endpoint("/v1/models")).send().await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(models["data"][0]["id"], "tiny-chat");
    assert_eq!(client().get(server.endpoint("/health")).send().await.unwrap().status().as_u16(), 200);

    let prompt = "Hello world, this is a test of the server";
    let prompt_tokens = encode(&dir, prompt).len();
    let req = json!({"model": "tiny-chat", "prompt": prompt, "max_tokens": 20, "ignore_eos": true});
    let (status, full) = server.post("/v1/completions", &req).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["object"], "text_completion");
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(full["usage"], json!({"prompt_tokens": prompt_tokens, "completion_tokens": 20, "total_tokens": prompt_tokens + 20}));

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let payloads = server.stream("/v1/completions", &sreq).await;
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let (usage_chunk, text_chunks) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], full["usage"]);
    assert!(text_chunks.iter().all(|c| c["usage"].is_null() && c["object"] == "text_completion"));
    let streamed: String = text_chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, text);
    assert_eq!(text_chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    assert!(text_chunks[..text_chunks.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));

    // Chat: the checkpoint's template, tokenised without added special tokens.
    let messages = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Say hello "}]);
    let rendered = "<s><|system|>\nBe brief.</s>\n<|user|>\nSay hello</s>\n<|assistant|>\n";
    let chat_prompt_tokens = {
        let resolved = tokbench_worker::resolve::resolve(dir.to_str().unwrap(), WeightsMode::Real, 0).unwrap();
        tokbench_worker::tokenizer::Tokenizer::load(resolved.model_dir.as_deref(), &resolved.config).unwrap().encode_plain(rendered).unwrap().len()
    };
    let creq = json!({"model": "tiny-chat", "messages": messages, "max_tokens": 12, "ignore_eos": true});
    let (status, chat) = server.post("/v1/chat/completions", &creq).await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    assert_eq!(chat["usage"]["prompt_tokens"], chat_prompt_tokens);
    assert_eq!(chat["usage"]["completion_tokens"], 12);
    let mut screq = creq.clone();
    screq["stream"] = json!(true);
    let payloads = server.stream("/v1/chat/completions", &screq).await;
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c.get("usage").is_none()));
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, chat["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");

    // The four error cases (and their OpenAI shape).
    let expect_error = |status: u16, body: &Value, want: u16, param: Option<&str>| {
        assert_eq!(status, want, "{body}");
        let e = &body["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert_eq!(e["type"], "invalid_request_error", "{body}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{body}");
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{body}");
        }
    };
    let long: Vec<u32> = vec![5; 60];
    let (s, b) = server.post("/v1/completions", &json!({"prompt": long, "max_tokens": 10})).await;
    expect_error(s, &b, 400, Some("prompt"));
    assert_eq!(b["error"]["code"], "context_length_exceeded");
    assert!(b["error"]["message"].as_str().unwrap().contains("maximum context length is 64 tokens"), "{b}");
    let (s, b) = server.post("/v1/completions", &json!({"model": "gpt-4", "prompt": "hi"})).await;
    expect_error(s, &b, 404, Some("model"));
    assert_eq!(b["error"]["code"], "model_not_found");
    let (s, b) = server.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 0})).await;
    expect_error(s, &b, 400, Some("max_tokens"));
    let (s, b) = server.post_raw("/v1/completions", "{\"prompt\": \"hi\", ").await;
    expect_error(s, &b, 400, None);
    let (s, b) = server.post("/v1/chat/completions", &json!({"messages": [{"role": "robot", "content": "x"}]})).await;
    expect_error(s, &b, 400, Some("messages"));
    assert!(b["error"]["message"].as_str().unwrap().contains("unknown role"), "{b}");
    // Parameters the server does not implement are refused, not ignored; neutral values pass.
    let (s, b) = server.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2, "stop": ["\n"]})).await;
    expect_error(s, &b, 400, Some("stop"));
    assert_eq!(b["error"]["code"], "unsupported_parameter");
    let (s, b) = server.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "logprobs": true})).await;
    expect_error(s, &b, 400, Some("logprobs"));
    let (s, b) = server.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2, "stop": null, "presence_penalty": 0, "best_of": 1, "logprobs": null})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(server.metric("tokbench_requests_total", "status=\"rejected\"").await, 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_sequence_and_blocks() {
    // GPT-2's shape (synthetic): slow enough on the CPU that 1000 tokens outlast the test's reads.
    let server = Server::start(&["--model", "gpt2", "--weights", "synthetic", "--kv-cache-memory", "128MiB"]);
    let body = json!({"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": true, "stream": true});
    let mut resp = client().post(server.endpoint("/v1/completions")).body(body.to_string()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut seen = String::new();
    while sse_payloads(&seen).len() < 3 {
        seen.push_str(&String::from_utf8_lossy(&resp.chunk().await.unwrap().expect("stream ended early")));
    }
    assert_eq!(server.metric("tokbench_num_requests_running", "").await, 1.0);
    assert!(server.metric("tokbench_kv_blocks_used", "").await >= 1.0);
    drop(resp);
    server.wait_idle().await;
    assert_eq!(server.metric("tokbench_requests_total", "status=\"cancelled\"").await, 1.0);
    assert_eq!(server.metric("tokbench_requests_total", "status=\"finished\"").await, 0.0);
    let generated = server.metric("tokbench_generation_tokens_total", "").await;
    assert!(generated < 1000.0, "the engine kept generating for nobody: {generated} tokens");

    // A non-streamed request whose client gives up is cancelled as well.
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let body = json!({"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": true});
    assert!(quick.post(server.endpoint("/v1/completions")).body(body.to_string()).send().await.is_err());
    server.wait_idle().await;
    assert_eq!(server.metric("tokbench_requests_total", "status=\"cancelled\"").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_under_a_tiny_kv_budget_completes_every_request_with_the_same_greedy_output() {
    let dir = fixture("llama");
    let dir_s = dir.to_str().unwrap();
    // 256 bytes per token (2 layers x 2 kv heads x 8 dims x k,v x f32): 12 KiB = 12 blocks of 4
    // tokens = 48 positions for 8 sequences that need up to 42 each.
    let server = Server::start(&["--model", dir_s, "--block-size", "4", "--kv-cache-memory", "12KiB"]);
    assert!(server.banner.iter().any(|l| l.contains("12 blocks x 4 tokens")), "{:?}", server.banner);
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| (0..4 + 2 * i).map(|j| (11 + 17 * i + 3 * j) % 500 + 3).collect()).collect();
    let max_tokens = vec![24; 8];
    let reference = offline_greedy(dir_s, WeightsMode::Real, &prompts, &max_tokens);
    let got = run_concurrently(&server, &prompts, &max_tokens, Duration::ZERO).await;
    assert_eq!(got, reference);
    server.wait_idle().await;
    let preemptions = server.metric("tokbench_num_preemptions_total", "").await;
    println!("preemptions: {preemptions}");
    assert!(preemptions >= 1.0, "the budget was meant to force preemptions");
    assert_eq!(server.metric("tokbench_requests_total", "status=\"finished\"").await, 8.0);

    // A request that could never fit the whole pool is refused, not queued forever.
    let (s, b) = server.post("/v1/completions", &json!({"prompt": [5, 6, 7], "max_tokens": 50})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("KV blocks"), "{b}");
}
