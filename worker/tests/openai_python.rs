//! The server against a client nobody on this project wrote: OpenAI's own Python package
//! (`openai`), streaming and non-streaming completions and a chat completion, and the server's
//! /metrics counters against what that client saw.
//!
//! The package comes from a virtual environment: the one `TOKBENCH_PYTHON_OPENAI` names (its
//! directory or its python), else one created under cargo's target tmp dir (kept for later
//! runs) with `python3 -m venv` and `pip install openai`. Without python3 or without network for
//! pip, the test prints that it skipped and passes, unless `TOKBENCH_REQUIRE_PYPI_PEERS=1` (CI).

mod openai_common;

use openai_common::*;
use serde_json::Value;
use std::process::Command;

const SCRIPT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
model = sys.argv[2]
out = {}

r = client.completions.create(model=model, prompt="Hello world, said the", max_tokens=10, extra_body={"ignore_eos": True})
out["completion"] = {"text": r.choices[0].text, "finish_reason": r.choices[0].finish_reason, "usage": r.usage.model_dump(exclude_none=True)}

text, finish, usage, chunks = "", None, None, 0
for chunk in client.completions.create(model=model, prompt="Hello world, said the", max_tokens=10, stream=True,
                                       stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
    chunks += 1
    if chunk.choices:
        text += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage.model_dump(exclude_none=True)
out["stream"] = {"text": text, "finish_reason": finish, "usage": usage, "chunks": chunks}

c = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, extra_body={"ignore_eos": True})
out["chat"] = {"content": c.choices[0].message.content, "role": c.choices[0].message.role,
               "finish_reason": c.choices[0].finish_reason, "usage": c.usage.model_dump(exclude_none=True)}

try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    out["not_found"] = None
except openai.NotFoundError as e:
    out["not_found"] = e.status_code

print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openais_python_client_gets_completions_streams_and_chat_and_metrics_agree() {
    let Some(python) = python_with("openai", "openai", "TOKBENCH_PYTHON_OPENAI") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = llama_with_chat_template(tmp.path());
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--served-model-name", "tiny-chat"]);
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || Command::new(&python).args(["-c", SCRIPT, &url, "tiny-chat"]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "the python client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("the openai client saw: {seen}");

    let (completion, stream, chat) = (&seen["completion"], &seen["stream"], &seen["chat"]);
    let prompt_tokens = encode(&dir, "Hello world, said the").len();
    assert_eq!(completion["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(completion["usage"]["completion_tokens"], 10);
    assert_eq!(completion["usage"]["total_tokens"], prompt_tokens + 10);
    assert_eq!(completion["finish_reason"], "length");
    assert_eq!(stream["text"], completion["text"], "streamed text differs from the non-streamed one");
    assert_eq!(stream["usage"], completion["usage"]);
    assert_eq!(stream["finish_reason"], "length");
    assert!(stream["chunks"].as_u64().unwrap() >= 3);
    assert_eq!(chat["role"], "assistant");
    assert_eq!(chat["usage"]["completion_tokens"], 8);
    assert_eq!(chat["finish_reason"], "length");
    assert_eq!(seen["not_found"], 404);

    server.wait_idle().await;
    let sum = |key: &str| ["completion", "stream", "chat"].iter().map(|k| seen[*k]["usage"][key].as_u64().unwrap()).sum::<u64>() as f64;
    assert_eq!(server.metric("tokbench_requests_total", "status=\"finished\"").await, 3.0);
    assert_eq!(server.metric("tokbench_requests_total", "status=\"rejected\"").await, 1.0);
    assert_eq!(server.metric("tokbench_prompt_tokens_total", "").await, sum("prompt_tokens"));
    assert_eq!(server.metric("tokbench_completion_tokens_total", "").await, sum("completion_tokens"));
    assert_eq!(server.metric("tokbench_generation_tokens_total", "").await, sum("completion_tokens"));
}
