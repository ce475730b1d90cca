//! Downloading from the Hugging Face Hub, without internet: a fake Hub (axum on 127.0.0.1, port
//! 0) serves the endpoints hf-hub and tokbench request -- the listing
//! `/api/models/{repo}/revision/{rev}?blobs=true` and `/{repo}/resolve/{rev}/{file}` with
//! `ETag`/`X-Linked-Etag`, `X-Repo-Commit`, `Content-Length` and `Range` -- for repos built from
//! the fixture checkpoints, and records every request. It can drop a connection half-way through
//! a file, serve wrong bytes, or answer 401/404 like the Hub.
//!
//! Library calls get their configuration explicitly ([`HubConfig`]); the `tokbench-worker bench`
//! binary gets it through the environment of its own process (tests run in parallel threads).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use candle_core::{DType, Device};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokbench_core::{ArchConfig, Sampling};
use tokbench_worker::generate::{generate_batch, GenerationParams};
use tokbench_worker::hub::{self, git_blob_sha1, HubConfig, HubError};
use tokbench_worker::model::Model;
use tokbench_worker::weights::WeightSource;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(fixture(name).join(file)).unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Weights are LFS files on the Hub (etag = sha256); the rest are git blobs (etag = blob sha1).
fn is_lfs(file: &str) -> bool {
    file.ends_with(".safetensors") || file.ends_with(".bin") || file.ends_with(".msgpack")
}

fn etag(file: &str, bytes: &[u8]) -> String {
    if is_lfs(file) {
        sha256_hex(bytes)
    } else {
        git_blob_sha1(bytes)
    }
}

/// A sharded-safetensors Llama repo (the llama fixture) plus files tokbench must not fetch: a
/// pytorch_model.bin, a shard its index does not list, a README.
fn llama_repo() -> RepoFiles {
    let mut files: RepoFiles = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ]
    .iter()
    .map(|f| (f.to_string(), read("llama", f)))
    .collect();
    files.push(("pytorch_model.bin".into(), b"not to be fetched: the repo has safetensors".to_vec()));
    files.push(("model-extra.safetensors".into(), b"a shard the index does not list".to_vec()));
    files.push(("README.md".into(), b"# a fixture".to_vec()));
    files
}

/// A `.bin` GPT-2 repo: the gpt2 fixture without its model.safetensors.
fn gpt2_bin_repo() -> RepoFiles {
    ["config.json", "pytorch_model.bin"].iter().map(|f| (f.to_string(), read("gpt2", f))).collect()
}

#[derive(Clone, Debug)]
struct Logged {
    path: String,
    range: Option<String>,
}

/// A repo's files: name and content.
type RepoFiles = Vec<(String, Vec<u8>)>;

/// An HTTP status and the Hub's X-Error-Code.
type Refusal = (u16, &'static str);

#[derive(Default)]
struct Behaviour {
    /// "repo/file": the first full request gets half the bytes, then the connection closes.
    drop_half_once: HashSet<String>,
    /// "repo/file": served with one byte changed (same size).
    corrupt: HashSet<String>,
    /// repo -> (status, X-Error-Code) for every file of the repo (the listing stays public, as
    /// for gated repos on the Hub).
    file_status: HashMap<String, Refusal>,
    /// repo -> (status, X-Error-Code) for the listing.
    listing_status: HashMap<String, Refusal>,
}

struct HubState {
    repos: HashMap<String, RepoFiles>,
    behaviour: Behaviour,
    dropped: Mutex<HashSet<String>>,
    log: Mutex<Vec<Logged>>,
}

struct FakeHub {
    url: String,
    state: Arc<HubState>,
    _rt: tokio::runtime::Runtime,
}

impl FakeHub {
    fn start(repos: Vec<(&str, RepoFiles)>, behaviour: Behaviour) -> FakeHub {
        let state = Arc::new(HubState {
            repos: repos.into_iter().map(|(r, f)| (r.to_string(), f)).collect(),
            behaviour,
            dropped: Mutex::default(),
            log: Mutex::default(),
        });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FakeHub { url, state, _rt: rt }
    }

    fn requests(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// The resolve requests, as file names.
    fn files_requested(&self) -> Vec<String> {
        self.requests().iter().filter_map(|l| l.path.split_once("/resolve/").map(|(_, rest)| rest.split_once('/').unwrap().1.to_string())).collect()
    }

    fn requests_for(&self, file: &str) -> Vec<Logged> {
        self.requests().into_iter().filter(|l| l.path.ends_with(&format!("/{file}")) && l.path.contains("/resolve/")).collect()
    }

    fn config(&self, cache: &Path) -> HubConfig {
        HubConfig {
            endpoint: self.url.clone(),
            cache_dir: cache.to_path_buf(),
            token: None,
            offline: false,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(20),
            stall_timeout: Duration::from_secs(20),
            max_retries: 3,
            retry_delay: Duration::from_millis(10),
        }
    }
}

fn error_response(status: u16, code: &str, message: &str) -> Response {
    let mut r = Response::new(Body::from(json!({ "error": message }).to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("x-error-code", HeaderValue::from_str(code).unwrap());
    r.headers_mut().insert("x-error-message", HeaderValue::from_str(message).unwrap());
    r
}

async fn handle(State(st): State<Arc<HubState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    st.log.lock().unwrap().push(Logged { path: path.clone(), range: range.clone() });
    let b = &st.behaviour;
    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {org}/{name}/revision/{rev}
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let repo = format!("{}/{}", parts[0], parts.get(1).unwrap_or(&""));
        if let Some((status, code)) = b.listing_status.get(&repo) {
            return error_response(*status, code, "listing refused");
        }
        let Some(files) = st.repos.get(&repo) else {
            return error_response(404, "RepoNotFound", "Repository not found");
        };
        let siblings: Vec<Value> = files
            .iter()
            .map(|(name, bytes)| {
                let mut s = json!({ "rfilename": name, "size": bytes.len(), "blobId": git_blob_sha1(bytes) });
                if is_lfs(name) {
                    s["lfs"] = json!({ "sha256": sha256_hex(bytes), "size": bytes.len(), "pointerSize": 134 });
                    s["blobId"] = json!(git_blob_sha1(format!("version https://git-lfs.github.com/spec/v1\noid sha256:{}\n", sha256_hex(bytes)).as_bytes()));
                }
                s
            })
            .collect();
        let body = json!({ "id": repo, "modelId": repo, "sha": COMMIT, "private": false, "siblings": siblings });
        let mut r = Response::new(Body::from(body.to_string()));
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        return r;
    }
    // /{org}/{name}/resolve/{rev}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        return error_response(404, "EntryNotFound", "no such route");
    }
    let (repo, rev, file) = (format!("{}/{}", parts[0], parts[1]), parts[3], parts[4]);
    if let Some((status, code)) = b.file_status.get(&repo) {
        return error_response(*status, code, "Access to this model is restricted: you must accept its conditions");
    }
    let Some(files) = st.repos.get(&repo) else {
        return error_response(404, "RepoNotFound", "Repository not found");
    };
    if rev != COMMIT && rev != "main" {
        return error_response(404, "RevisionNotFound", "Invalid rev id");
    }
    let Some((_, bytes)) = files.iter().find(|(n, _)| n == file) else {
        return error_response(404, "EntryNotFound", "Entry not found");
    };
    let key = format!("{repo}/{file}");
    let tag = etag(file, bytes);
    let mut content = bytes.clone();
    if b.corrupt.contains(&key) {
        let mid = content.len() / 2;
        content[mid] ^= 0xff;
    }
    let total = content.len();
    let mut headers = HeaderMap::new();
    headers.insert("x-repo-commit", HeaderValue::from_static(COMMIT));
    headers.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if is_lfs(file) {
        headers.insert("x-linked-etag", HeaderValue::from_str(&format!("\"{tag}\"")).unwrap());
        headers.insert("x-linked-size", HeaderValue::from_str(&total.to_string()).unwrap());
    }
    headers.insert("etag", HeaderValue::from_str(&format!("\"{tag}\"")).unwrap());
    let start = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split('-').next()).and_then(|s| s.parse::<usize>().ok());
    let mut r = match start {
        Some(s) if s >= total => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            r
        }
        Some(s) => {
            headers.insert("content-range", HeaderValue::from_str(&format!("bytes {s}-{}/{total}", total - 1)).unwrap());
            headers.insert("content-length", HeaderValue::from_str(&(total - s).to_string()).unwrap());
            let mut r = Response::new(Body::from(content[s..].to_vec()));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r
        }
        None => {
            headers.insert("content-length", HeaderValue::from_str(&total.to_string()).unwrap());
            if b.drop_half_once.contains(&key) && st.dropped.lock().unwrap().insert(key.clone()) {
                // Half the bytes, then the connection closes mid-body.
                let half = content[..total / 2].to_vec();
                // (The pause lets the server flush the first half before the error closes it.)
                let stream = futures::stream::unfold(0, move |step| {
                    let half = half.clone();
                    async move {
                        match step {
                            0 => Some((Ok(half), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                Some((Err(std::io::Error::other("connection dropped by the test")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                Response::new(Body::from_stream(stream))
            } else {
                Response::new(Body::from(content))
            }
        }
    };
    r.headers_mut().extend(headers);
    r
}

fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

fn blob_names(cache: &Path, repo: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo_dir(cache, repo).join("blobs"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The llama fixture's greedy continuations, from the model in `dir`, against expected.json.
fn assert_greedy_matches_fixture(dir: &Path) {
    let config = ArchConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let files = tokbench_worker::resolve::find_weight_files(dir).unwrap().expect("weights in the snapshot");
    assert_eq!(files.len(), 3, "{files:?}");
    let model = Model::load(&config, &WeightSource::Files(files), DType::F32, &Device::Cpu).unwrap();
    let e: Value = serde_json::from_str(&std::fs::read_to_string(fixture("llama").join("expected.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(e[k].clone()).unwrap() };
    let params = GenerationParams {
        max_new_tokens: e["max_new_tokens"].as_u64().unwrap() as usize,
        sampling: Sampling::default(),
        ignore_eos: true,
        eos_token_ids: vec![e["eos_token_id"].as_u64().unwrap() as u32],
        pad_token_id: e["pad_token_id"].as_u64().unwrap() as u32,
        model_name: "downloaded".into(),
    };
    let out = generate_batch(&model, &rows("prompts"), &params, &mut |_| {}).unwrap();
    assert_eq!(out.tokens, rows("greedy_ignore_eos"), "greedy tokens of the downloaded model differ from transformers'");
}

#[test]
fn sharded_safetensors_download_fetches_only_what_is_needed_and_generates_like_transformers() {
    let hub = FakeHub::start(vec![("tokbench-test/llama-sharded", llama_repo())], Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub.config(cache.path());
    let mut last = None;
    let d = hub::download_model_blocking(&cfg, "tokbench-test/llama-sharded", "main", &mut |p| last = Some(p.clone())).unwrap();

    let needed = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ];
    assert_eq!(d.files, needed);
    let mut fetched = hub.files_requested();
    fetched.sort();
    let mut want: Vec<String> = needed.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(fetched, want, "exactly the needed files, each once: no pytorch_model.bin, no unlisted shard, no README");
    let total: u64 = needed.iter().map(|f| read("llama", f).len() as u64).sum();
    assert_eq!((d.bytes_total, d.bytes_downloaded), (total, total));
    let last = last.expect("progress was reported");
    assert_eq!((last.bytes_done, last.bytes_total), (total, total));
    assert_eq!(d.commit, COMMIT);

    // The standard cache layout: refs/main -> commit, snapshot symlinks into blobs named by etag.
    let root = repo_dir(cache.path(), "tokbench-test/llama-sharded");
    assert_eq!(std::fs::read_to_string(root.join("refs/main")).unwrap(), COMMIT);
    assert_eq!(d.snapshot_dir, root.join("snapshots").join(COMMIT));
    for f in needed {
        let p = d.snapshot_dir.join(f);
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink(), "{f}");
        assert_eq!(std::fs::read(&p).unwrap(), read("llama", f), "{f}");
        let blob = std::fs::canonicalize(&p).unwrap();
        assert_eq!(blob.file_name().unwrap().to_string_lossy(), etag(f, &read("llama", f)), "{f}");
    }
    assert!(!blob_names(cache.path(), "tokbench-test/llama-sharded").iter().any(|b| b.ends_with(".incomplete")));
    assert_greedy_matches_fixture(&d.snapshot_dir);

    // Again: everything is cached and verified, nothing is fetched but the listing.
    let before = hub.requests().len();
    let again = hub::download_model_blocking(&cfg, "tokbench-test/llama-sharded", "main", &mut |_| {}).unwrap();
    assert_eq!(again.bytes_downloaded, 0);
    let after = hub.requests();
    assert_eq!(after.len(), before + 1, "{:?}", &after[before..]);
    assert!(after[before].path.starts_with("/api/models/"));

    // A damaged blob in the cache is deleted and fetched again; the others are kept.
    let shard2 = "model-00002-of-00003.safetensors";
    let blob = std::fs::canonicalize(d.snapshot_dir.join(shard2)).unwrap();
    std::fs::write(&blob, vec![0u8; read("llama", shard2).len()]).unwrap();
    let repaired = hub::download_model_blocking(&cfg, "tokbench-test/llama-sharded", "main", &mut |_| {}).unwrap();
    assert_eq!(repaired.bytes_downloaded, read("llama", shard2).len() as u64);
    assert_eq!(hub.requests_for(shard2).len(), 2);
    assert_eq!(std::fs::read(&blob).unwrap(), read("llama", shard2));
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let bin = "pytorch_model.bin";
    let behaviour = Behaviour { drop_half_once: ["tokbench-test/gpt2-bin/pytorch_model.bin".to_string()].into(), ..Default::default() };
    let hub = FakeHub::start(vec![("tokbench-test/gpt2-bin", gpt2_bin_repo())], behaviour);
    let cache = tempfile::tempdir().unwrap();

    // A run without retries stops at the dropped connection and keeps the bytes it got.
    let cfg = HubConfig { max_retries: 0, ..hub.config(cache.path()) };
    let err = hub::download_model_blocking(&cfg, "tokbench-test/gpt2-bin", "main", &mut |_| {}).unwrap_err();
    assert!(matches!(err, HubError::Transfer { .. }), "{err:?}");
    assert!(err.to_string().contains("resume"), "{err}");
    let full = read("gpt2", bin);
    let tag = etag(bin, &full);
    let partial = repo_dir(cache.path(), "tokbench-test/gpt2-bin").join("blobs").join(format!("{tag}.incomplete"));
    let have = std::fs::metadata(&partial).expect("the partial file is kept").len();
    assert!(have > 0 && have < full.len() as u64, "{have}");
    assert!(!repo_dir(cache.path(), "tokbench-test/gpt2-bin").join("snapshots").join(COMMIT).join(bin).exists(), "no weights in the snapshot before they verify");

    // The next run asks for the rest only, and the file verifies.
    let d = hub::download_model_blocking(&hub.config(cache.path()), "tokbench-test/gpt2-bin", "main", &mut |_| {}).unwrap();
    let asks = hub.requests_for(bin);
    assert_eq!(asks.len(), 2, "{asks:?}");
    assert_eq!(asks[0].range, None);
    assert_eq!(asks[1].range.as_deref(), Some(format!("bytes={have}-").as_str()));
    assert_eq!(d.bytes_downloaded, full.len() as u64 - have, "config.json came in the first run, the .bin's first part too");
    assert_eq!(std::fs::read(d.snapshot_dir.join(bin)).unwrap(), full);
    assert!(!partial.exists());
    assert_eq!(hub.requests_for("model.safetensors").len(), 0);

    // Within one run: a shard dropped half-way is resumed at once.
    let behaviour = Behaviour { drop_half_once: ["tokbench-test/llama-sharded/model-00001-of-00003.safetensors".to_string()].into(), ..Default::default() };
    let hub = FakeHub::start(vec![("tokbench-test/llama-sharded", llama_repo())], behaviour);
    let d = hub::download_model_blocking(&hub.config(cache.path()), "tokbench-test/llama-sharded", "main", &mut |_| {}).unwrap();
    let asks = hub.requests_for("model-00001-of-00003.safetensors");
    assert_eq!(asks.len(), 2, "{asks:?}");
    let resumed_at: u64 = asks[1].range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')).unwrap().parse().unwrap();
    assert!(resumed_at > 0, "resumed from the bytes received, not from 0");
    assert_greedy_matches_fixture(&d.snapshot_dir);
}

#[test]
fn a_corrupted_file_is_deleted_and_never_loaded() {
    let behaviour = Behaviour { corrupt: ["tokbench-test/gpt2-bin/pytorch_model.bin".to_string()].into(), ..Default::default() };
    let hub = FakeHub::start(vec![("tokbench-test/gpt2-bin", gpt2_bin_repo())], behaviour);
    let cache = tempfile::tempdir().unwrap();
    let err = hub::download_model_blocking(&hub.config(cache.path()), "tokbench-test/gpt2-bin", "main", &mut |_| {}).unwrap_err();
    assert!(matches!(err, HubError::Integrity { .. }), "{err:?}");
    assert!(err.to_string().contains("pytorch_model.bin") && err.to_string().contains("not loaded"), "{err}");
    assert_eq!(hub.requests_for("pytorch_model.bin").len(), 2, "fetched once more before giving up");
    let repo = repo_dir(cache.path(), "tokbench-test/gpt2-bin");
    let tag = etag("pytorch_model.bin", &read("gpt2", "pytorch_model.bin"));
    assert!(!blob_names(cache.path(), "tokbench-test/gpt2-bin").iter().any(|b| b.starts_with(&tag) && !b.ends_with(".lock")), "{:?}", blob_names(cache.path(), "tokbench-test/gpt2-bin"));
    assert!(!repo.join("snapshots").join(COMMIT).join("pytorch_model.bin").exists());
    assert!(tokbench_worker::resolve::find_weight_files(&repo.join("snapshots").join(COMMIT)).unwrap().is_none());

    // Through the binary: --weights real fails (exit 1), auto runs synthetic weights and says why.
    let home = tempfile::tempdir().unwrap();
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gpt2-bin", "--weights", "real"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("integrity"), "{}", r.stderr);
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gpt2-bin", "--weights", "auto"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = r.report.unwrap();
    assert_eq!(rep["model_properties"]["weights"], "synthetic");
    assert!(rep["model_properties"]["weights_download"]["error"].as_str().unwrap().contains("integrity"), "{rep}");
}

struct BenchRun {
    code: i32,
    stderr: String,
    report: Option<Value>,
}

/// `tokbench-worker bench` with the Hub at `hub` (or `endpoint`) and its cache under `home`.
fn bench_with(endpoint: &str, home: &Path, env: &[(&str, &str)], args: &[&str]) -> BenchRun {
    let json = home.join(format!("report-{}.json", std::process::id() as u64 * 1000 + rand_suffix()));
    // Single characters: token ids below the fixtures' 512-entry vocabularies with GPT-2's BPE.
    let prompts = home.join("prompts.txt");
    std::fs::write(&prompts, "a\nb\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokbench-worker"));
    cmd.arg("bench")
        .args(args)
        .arg("--prompts")
        .arg(&prompts)
        .args(["--max-tokens", "3", "--batch-size", "2", "--warmup", "0", "--repetitions", "1", "--json"])
        .arg(&json)
        .current_dir(home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_CACHE", home.join("hub"))
        .env("RUST_LOG", "warn");
    for v in ["HF_TOKEN", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "TOKBENCH_MODELS_DIRS"] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let report = std::fs::read_to_string(&json).ok().map(|t| serde_json::from_str(&t).unwrap());
    BenchRun { code: out.status.code().unwrap_or(-1), stderr: String::from_utf8_lossy(&out.stderr).into_owned(), report }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn bench(hub: &FakeHub, home: &Path, args: &[&str]) -> BenchRun {
    bench_with(&hub.url, home, &[], args)
}

/// Puts only config.json of `fix` into the cache under `home` as `repo` (so `--weights auto`
/// has an architecture for synthetic weights when the download fails).
fn cache_config_only(home: &Path, repo: &str, fix: &str) {
    let root = repo_dir(&home.join("hub"), repo);
    let snap = root.join("snapshots").join("feedface");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), "feedface").unwrap();
    std::fs::copy(fixture(fix).join("config.json"), snap.join("config.json")).unwrap();
}

#[test]
fn the_bench_binary_downloads_a_bin_repo_outside_the_load_time() {
    let hub = FakeHub::start(vec![("tokbench-test/gpt2-bin", gpt2_bin_repo())], Behaviour::default());
    let home = tempfile::tempdir().unwrap();
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gpt2-bin", "--weights", "real"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = r.report.unwrap();
    let props = &rep["model_properties"];
    assert_eq!(props["weights"], "real");
    assert!(props["weights_source"].as_str().unwrap().ends_with("pytorch_model.bin"), "{props}");
    let dl = &props["weights_download"];
    let size = (read("gpt2", "pytorch_model.bin").len() + read("gpt2", "config.json").len()) as u64;
    assert_eq!(dl["bytes_downloaded"].as_u64(), Some(size), "{dl}");
    assert_eq!(dl["commit"], COMMIT);
    assert!(dl["error"].is_null());
    let (downloading, loading) = (r.stderr.find("[downloading]"), r.stderr.find("[loading]"));
    assert!(downloading.is_some() && downloading < loading, "{}", r.stderr);
    assert_eq!(hub.files_requested(), ["config.json", "pytorch_model.bin"]);

    // The downloaded .bin generates what the fixture's safetensors does (same weights, same
    // tokenizer fallback), and a second run finds it cached: no download, no request.
    let local = bench(&hub, home.path(), &["--model", fixture("gpt2").to_str().unwrap(), "--weights", "real"]);
    assert_eq!(local.code, 0, "{}", local.stderr);
    let texts = |v: &Value| v["outputs"].as_array().unwrap().iter().map(|o| o["generated_text"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(texts(&rep), texts(local.report.as_ref().unwrap()));
    let n = hub.requests().len();
    let again = bench(&hub, home.path(), &["--model", "tokbench-test/gpt2-bin", "--weights", "real"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.report.unwrap()["model_properties"].get("weights_download").is_none());
    assert_eq!(hub.requests().len(), n);
}

#[test]
fn gated_and_missing_repos_say_what_to_do() {
    let behaviour = Behaviour { file_status: [("tokbench-test/gated".to_string(), (401, "GatedRepo"))].into(), ..Default::default() };
    let hub = FakeHub::start(vec![("tokbench-test/gated", gpt2_bin_repo())], behaviour);
    let home = tempfile::tempdir().unwrap();

    // 401: real fails naming HF_TOKEN and the licence (exit 2); auto runs synthetic and says why.
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gated", "--weights", "real"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("HF_TOKEN") && r.stderr.contains("licence") && r.stderr.contains("401"), "{}", r.stderr);
    cache_config_only(home.path(), "tokbench-test/gated", "gpt2");
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gated", "--weights", "auto"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = r.report.unwrap();
    assert_eq!(rep["model_properties"]["weights"], "synthetic");
    let why = rep["model_properties"]["weights_download"]["error"].as_str().unwrap().to_string();
    assert!(why.contains("HF_TOKEN"), "{why}");
    assert!(r.stderr.contains("synthetic") && r.stderr.contains("HF_TOKEN"), "the fallback is logged: {}", r.stderr);
    // A token is sent when given, and the message then speaks of the token's access.
    let r = bench_with(&hub.url, home.path(), &[("HF_TOKEN", "hf_test")], &["--model", "tokbench-test/gated", "--weights", "real"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("token") && r.stderr.contains("refused or has no access"), "{}", r.stderr);

    // 404: not found, for real (exit 2) and auto (synthetic with the reason).
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/nothing-here", "--weights", "real"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("tokbench-test/nothing-here was not found") && r.stderr.contains("404"), "{}", r.stderr);
    cache_config_only(home.path(), "tokbench-test/nothing-here", "gpt2");
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/nothing-here", "--weights", "auto"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = r.report.unwrap();
    assert_eq!(rep["model_properties"]["weights"], "synthetic");
    assert!(rep["model_properties"]["weights_download"]["error"].as_str().unwrap().contains("not found"), "{rep}");
}

#[test]
fn offline_makes_no_request_and_an_unreachable_hub_fails_fast() {
    let hub = FakeHub::start(vec![("tokbench-test/gpt2-bin", gpt2_bin_repo())], Behaviour::default());
    let home = tempfile::tempdir().unwrap();

    let cfg = HubConfig { offline: true, ..hub.config(&home.path().join("hub")) };
    assert!(matches!(hub::download_model_blocking(&cfg, "tokbench-test/gpt2-bin", "main", &mut |_| {}), Err(HubError::Offline { .. })));

    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gpt2-bin", "--weights", "real", "--offline"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("downloads are off") && r.stderr.contains("--offline"), "{}", r.stderr);
    let r = bench_with(&hub.url, home.path(), &[("HF_HUB_OFFLINE", "1")], &["--model", "tokbench-test/gpt2-bin", "--weights", "real"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    cache_config_only(home.path(), "tokbench-test/gpt2-bin", "gpt2");
    for env in [&[][..], &[("HF_HUB_OFFLINE", "1")][..]] {
        let extra: &[&str] = if env.is_empty() { &["--offline"] } else { &[] };
        let args: Vec<&str> = ["--model", "tokbench-test/gpt2-bin", "--weights", "auto"].iter().copied().chain(extra.iter().copied()).collect();
        let r = bench_with(&hub.url, home.path(), env, &args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.report.unwrap()["model_properties"]["weights"], "synthetic");
    }
    let r = bench(&hub, home.path(), &["--model", "tokbench-test/gpt2-bin", "--weights", "synthetic"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(hub.requests().is_empty(), "offline and synthetic runs made requests: {:?}", hub.requests());

    // No Hub listening: auto falls back to synthetic with the reason, real says what to do.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let r = bench_with(&closed, home.path(), &[], &["--model", "tokbench-test/gpt2-bin", "--weights", "auto"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = r.report.unwrap();
    assert_eq!(rep["model_properties"]["weights"], "synthetic");
    assert!(rep["model_properties"]["weights_download"]["error"].as_str().unwrap().contains("cannot be reached"), "{rep}");
    let r = bench_with(&closed, home.path(), &[], &["--model", "tokbench-test/gpt2-bin", "--weights", "real"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be reached") && r.stderr.contains("--offline") && r.stderr.contains("--weights synthetic"), "{}", r.stderr);
}

#[test]
fn downloads_run_from_the_blocking_threads_of_an_async_runtime() {
    // `serve` runs jobs with spawn_blocking inside its runtime: the download's own runtime must
    // start and stop there.
    let hub = FakeHub::start(vec![("tokbench-test/gpt2-bin", gpt2_bin_repo())], Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub.config(cache.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let d = rt
        .block_on(async move { tokio::task::spawn_blocking(move || hub::download_model_blocking(&cfg, "tokbench-test/gpt2-bin", "main", &mut |_| {})).await })
        .unwrap()
        .unwrap();
    assert_eq!(d.files, ["config.json", "pytorch_model.bin"]);
}
