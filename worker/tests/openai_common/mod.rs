//! Shared by the `openai_*` tests: a real `tokbench-worker serve-openai` process on 127.0.0.1
//! port 0 (the test reads the address it prints), a few HTTP helpers, and the engine's own
//! offline greedy generation as the reference.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub url: String,
    /// What it printed before listening (the KV capacity line among it).
    pub banner: Vec<String>,
}

impl Server {
    /// Starts the server with `args` (after `serve-openai --listen 127.0.0.1:0`) and waits for
    /// its `listening on http://ADDR` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokbench-worker"))
            .args(["serve-openai", "--listen", "127.0.0.1:0", "--offline"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tokbench-worker serve-openai");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        loop {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => {
                    let status = child.wait();
                    panic!("serve-openai exited before listening ({status:?}); it printed {banner:?}");
                }
            };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let url = addr.trim().to_string();
                // Keep draining stdout so the server never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                println!("server: {}", banner.join(" | "));
                return Server { child, url, banner };
            }
            banner.push(line);
        }
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = client().post(self.endpoint(path)).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = client().post(self.endpoint(path)).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// A streamed request: every `data:` payload in order (`[DONE]` included, as a string).
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let mut resp = client().post(self.endpoint(path)).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
        sse_payloads(&buf)
    }

    pub async fn metrics(&self) -> String {
        client().get(self.endpoint("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let body = self.metrics().await;
        tokbench_worker::openai::metrics::scrape(&body, name, label).unwrap_or_else(|| panic!("no {name}{{{label}}} in /metrics:\n{body}"))
    }

    /// Waits until the engine has nothing running or queued and holds no KV block.
    pub async fn wait_idle(&self) {
        let start = Instant::now();
        loop {
            let body = self.metrics().await;
            let get = |n: &str| tokbench_worker::openai::metrics::scrape(&body, n, "").unwrap();
            if get("tokbench_num_requests_running") == 0.0 && get("tokbench_num_requests_waiting") == 0.0 && get("tokbench_kv_blocks_used") == 0.0 {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "the server did not go idle:\n{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

pub fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))).collect()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The llama fixture (real weights, a tokenizer) copied into `dir`, with a chat template added
/// to its tokenizer_config.json (the fixture has none).
pub fn llama_with_chat_template(dir: &Path) -> PathBuf {
    let out = dir.join("llama-chat");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(fixture("llama")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    let path = out.join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["chat_template"] = Value::String(CHAT_TEMPLATE.into());
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    out
}

pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role') }}{% endif %}<|{{ message['role'] }}|>\n{{ message['content'].strip() }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// The engine's own greedy generation (ignore_eos) of each prompt alone, as `bench` runs it.
pub fn offline_greedy(model: &str, weights: tokbench_core::WeightsMode, prompts: &[Vec<u32>], max_tokens: &[usize]) -> Vec<Vec<u32>> {
    use tokbench_worker::generate::{generate_batch, GenerationParams};
    let resolved = tokbench_worker::resolve::resolve(model, weights, 0).unwrap();
    let m = tokbench_worker::model::Model::load(&resolved.config, &resolved.weights, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    prompts
        .iter()
        .zip(max_tokens)
        .map(|(p, &n)| {
            let params = GenerationParams::new(&resolved.config, "reference", n);
            generate_batch(&m, std::slice::from_ref(p), &params, &mut |_| {}).unwrap().tokens.remove(0)
        })
        .collect()
}

/// Token ids of `text` with the checkpoint's tokenizer (as the server encodes prompts).
pub fn encode(model_dir: &Path, text: &str) -> Vec<u32> {
    let resolved = tokbench_worker::resolve::resolve(model_dir.to_str().unwrap(), tokbench_core::WeightsMode::Real, 0).unwrap();
    tokbench_worker::tokenizer::Tokenizer::load(resolved.model_dir.as_deref(), &resolved.config).unwrap().encode(text).unwrap()
}

/// A python with the PyPI package `package` (imported as `module`), or why there is none: the
/// one the environment variable `env_var` names (a venv directory or its python), else a venv
/// under cargo's target tmp dir (kept for later runs) made with `python3 -m venv` and `pip
/// install`. With `TOKBENCH_REQUIRE_PYPI_PEERS=1` (CI sets it) having none is a failure, not a
/// skip.
pub fn python_with(package: &str, module: &str, env_var: &str) -> Option<PathBuf> {
    // Tests of one binary run in parallel: one of them makes the venv, the others wait for it.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let found = {
        let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
        find_python_with(package, module, env_var)
    };
    match found {
        Ok(p) => Some(p),
        Err(why) if std::env::var("TOKBENCH_REQUIRE_PYPI_PEERS").is_ok_and(|v| v == "1") => panic!("{package} is required here (TOKBENCH_REQUIRE_PYPI_PEERS=1) but: {why}"),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

fn find_python_with(package: &str, module: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return Ok(if p.is_dir() { p.join("bin/python") } else { p });
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{package}-venv"));
    let python = venv.join("bin/python");
    let has_it = |py: &PathBuf| Command::new(py).args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success());
    if has_it(&python) {
        return Ok(python);
    }
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().map_err(|e| format!("no python3: {e}"))?;
    if !status.success() {
        return Err(format!("python3 -m venv {} failed ({status})", venv.display()));
    }
    let out = Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", package]).output().map_err(|e| format!("no pip: {e}"))?;
    if !out.status.success() {
        return Err(format!("pip install {package} failed (no network?): {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    Ok(python)
}
