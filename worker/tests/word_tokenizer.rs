//! `tokbench-worker export-weights --word-tokenizer`: synthetic weights with a word-level
//! tokenizer of the model's vocabulary size, which tokbench's server, the `tokenizers` crate and
//! transformers' `AutoTokenizer` all read the same way, so that servers which take only text can
//! be compared with tokbench on one checkpoint folder (`scripts/gpu/serve.sh`).

mod openai_common;

use openai_common::{encode, python_with, Server};
use serde_json::json;
use std::process::Command;
use tokbench_core::Catalog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_synthetic_weights_get_a_word_tokenizer_that_every_reader_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-llama-words");
    let out = Command::new(env!("CARGO_BIN_EXE_tokbench-worker"))
        .args(["export-weights", "--model", "tiny-llama", "--word-tokenizer", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokenizer.json"), "{}", String::from_utf8_lossy(&out.stderr));
    let spec = Catalog::get("tiny-llama").unwrap().config().spec();
    let bos = spec.bos_token_id.expect("Llama has a BOS");

    // The tokenizers crate: exactly the model's vocabulary, fillers at their own ids.
    let t = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(t.get_vocab_size(true), spec.vocab_size);
    let last = spec.vocab_size as u32 - 1;
    if last != bos && !spec.eos_token_ids.contains(&last) {
        assert_eq!(t.token_to_id(&format!("w{last}")), Some(last));
    }

    // tokbench's tokenizer (as its server encodes prompts): BOS, then one id per word.
    let ids = encode(&dir, "the quick brown fox");
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!(ids[0], bos);
    let words: Vec<u32> = ["the", "quick", "brown", "fox"].iter().map(|w| t.token_to_id(w).unwrap()).collect();
    assert_eq!(ids[1..], words[..]);

    // tokbench's server loads the folder as real weights and counts the text prompt the same way.
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--weights", "real", "--served-model-name", "words"]);
    let (status, body) = server.post("/v1/completions", &json!({"model": "words", "prompt": "the quick brown fox", "max_tokens": 4})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 5, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap().to_string();
    // Its completion is words of the vocabulary, which encode back to 4 tokens.
    assert_eq!(encode(&dir, &text).len(), 5, "{text:?}");

    // transformers' AutoTokenizer (a reader nobody on this project wrote) agrees on the ids and
    // on the completion's text.
    let Some(py) = python_with("aiperf", "transformers", "TOKBENCH_PYTHON_AIPERF") else { return };
    let script = "import json, sys; from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(sys.argv[1]); \
                  print(json.dumps({'ids': t('the quick brown fox')['input_ids'], 'text_ids': t(sys.argv[2])['input_ids'], 'bos': t.bos_token_id, 'eos': t.eos_token_id}))";
    let out = Command::new(&py).args(["-c", script]).arg(&dir).arg(&text).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(got["ids"], json!(ids), "{got}");
    assert_eq!(got["text_ids"], json!(encode(&dir, &text)), "{got}");
    assert_eq!(got["bos"], bos);
    println!("transformers reads the word tokenizer as tokbench does: {got}");
}
