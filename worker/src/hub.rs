//! Downloading a model's files from the Hugging Face Hub into the Hugging Face cache, on demand.
//!
//! Only what tokbench loads is fetched: `config.json`, `generation_config.json` and the tokenizer
//! files the repo has (`tokenizer.json` and `tokenizer_config.json`, else `vocab.json` +
//! `merges.txt`), and the weights: `model.safetensors`, else `model.safetensors.index.json` and
//! exactly the shards its `weight_map` lists, else `pytorch_model.bin` (safetensors preferred,
//! never both). The repo's file listing (`/api/models/{repo}/revision/{rev}?blobs=true`, through
//! hf-hub's tokio API) says which files exist, their sizes and their blob ids.
//!
//! Files land in the standard cache layout that [`hf_cache`] reads (and
//! `huggingface_hub` shares): `models--{org}--{name}/blobs/{etag}`, a symlink
//! `snapshots/{commit}/{file}` to it, and `refs/{revision}` naming the commit.
//!
//! The transfer itself is tokbench's, on hf-hub's authenticated client: hf-hub 0.4.3's
//! `download` always re-fetches, resumes only whole 10 MB chunks (`.sync.part` files), leaves its
//! chunk tasks running after an error, has no timeouts and verifies nothing. Here:
//! - **resume**: bytes go to `blobs/{etag}.incomplete`; a dropped connection (or a stall of
//!   [`HubConfig::stall_timeout`]) is retried with `Range: bytes={have}-`, also by a later run;
//! - **integrity**: the blob name is the file's etag, the sha256 of the content for LFS files
//!   (weights) and the git blob sha1 (`sha1("blob {len}\0" + content)`) for small files; a file
//!   whose size or hash differs from the listing is deleted and fetched once more, then refused.
//!   A blob already in the cache is checked the same way before it is reused;
//! - **locking**: `blobs/{etag}.lock` (flock) keeps two workers sharing a cache from writing the
//!   same blob;
//! - **failing fast**: before any request the endpoint's TCP port is tried with
//!   [`HubConfig::connect_timeout`] (skipped behind an HTTPS proxy), and an endpoint found
//!   unreachable is remembered for the rest of the process.
//!
//! Configuration follows `huggingface_hub`: HF_ENDPOINT, HF_TOKEN (else the token file under
//! HF_HOME that `huggingface-cli login` writes), HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE
//! ([`HubConfig::from_env`]; hf-hub's own `from_env` reads only HF_HOME and HF_ENDPOINT).

use futures::StreamExt;
use hf_hub::{Repo, RepoType};
use serde::Deserialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Hub, when HF_ENDPOINT does not name another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to download (see [`HubConfig::from_env`]).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `https://huggingface.co` or a mirror (no trailing '/').
    pub endpoint: String,
    /// The hub cache folder (holding `models--org--name`).
    pub cache_dir: PathBuf,
    /// Bearer token for gated and private repos.
    pub token: Option<String>,
    /// No network access at all: every download fails with [`HubError::Offline`].
    pub offline: bool,
    /// How long the first TCP connection to the endpoint may take.
    pub connect_timeout: Duration,
    /// How long the listing, and each file's response headers, may take.
    pub request_timeout: Duration,
    /// A file transfer that receives nothing for this long is dropped and resumed.
    pub stall_timeout: Duration,
    /// Resumed attempts per file after a dropped connection, a stall or a 5xx/429.
    pub max_retries: u32,
    /// Wait before the first retry (doubled for each further one, at most 30 s).
    pub retry_delay: Duration,
}

impl HubConfig {
    /// From the environment, as `huggingface_hub` reads it: HF_ENDPOINT, HF_TOKEN (else the token
    /// file `huggingface-cli login` writes under HF_HOME), the cache of
    /// [`hf_cache`] (HF_HUB_CACHE, else HF_HOME/hub), HF_HUB_OFFLINE.
    pub fn from_env() -> HubConfig {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .or_else(|| hf_hub::Cache::from_env().token());
        HubConfig {
            endpoint: endpoint.trim().trim_end_matches('/').to_string(),
            cache_dir: hf_cache().path().clone(),
            token,
            offline: offline_from_env(),
            connect_timeout: Duration::from_secs(4),
            request_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            max_retries: 5,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Whether HF_HUB_OFFLINE asks for no network (1, true, yes or on, as `huggingface_hub` reads it).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| ["1", "true", "yes", "on"].contains(&v.trim().to_ascii_lowercase().as_str()))
}

/// What a download did (bytes and seconds of this call only).
#[derive(Debug, Clone, PartialEq)]
pub struct Downloaded {
    pub repo: String,
    pub revision: String,
    /// The commit the files belong to.
    pub commit: String,
    /// `snapshots/{commit}`: the model directory (config.json, tokenizer and weight files).
    pub snapshot_dir: PathBuf,
    /// Every file the model needs, in the order fetched.
    pub files: Vec<String>,
    /// Bytes the needed files hold in all.
    pub bytes_total: u64,
    /// Bytes transferred by this call (less than `bytes_total` when some were cached or resumed).
    pub bytes_downloaded: u64,
    pub seconds: f64,
}

/// Download progress, over all files of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadProgress {
    /// The file being fetched.
    pub file: String,
    /// Bytes on disk so far (cached blobs and resumed parts included).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Why a download failed; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{repo} is not in the Hugging Face cache and downloads are off (--offline or HF_HUB_OFFLINE=1): run once without --offline (and without HF_HUB_OFFLINE) to download it, use a cached model or a local directory, or --weights synthetic")]
    Offline { repo: String },
    #[error("the Hugging Face Hub at {endpoint} cannot be reached ({detail}). Offline? Use --offline with cached models or a local directory, --weights synthetic, or set HF_ENDPOINT to a reachable mirror")]
    Unreachable { endpoint: String, detail: String },
    #[error("{detail}")]
    Unauthorized { repo: String, status: u16, detail: String },
    #[error("{detail}")]
    NotFound { repo: String, detail: String },
    #[error("{repo}@{revision} has no weights tokbench can load ({detail}): it needs model.safetensors, model.safetensors.index.json with its shards, or pytorch_model.bin")]
    NoWeights { repo: String, revision: String, detail: String },
    #[error("{file} of {repo} failed its integrity check twice ({detail}); it was deleted, not loaded. The mirror or a proxy may be serving wrong data: try again later or set HF_ENDPOINT")]
    Integrity { repo: String, file: String, detail: String },
    #[error("the disk holding the Hugging Face cache is full while writing {path} ({needed}): free space, or point HF_HUB_CACHE (or HF_HOME) at a larger disk")]
    DiskFull { path: PathBuf, needed: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("downloading {what} from {endpoint} failed: {detail}")]
    Transfer { endpoint: String, what: String, detail: String },
    #[error("{endpoint} answered the file listing of {repo} with {detail}: it does not look like a Hugging Face Hub (HF_ENDPOINT)")]
    Protocol { endpoint: String, repo: String, detail: String },
}

impl HubError {
    /// Whether `--weights auto` may fall back to synthetic weights (no network, no access, no
    /// such repo or weights, wrong data), rather than fail (a full disk, a local I/O error).
    pub fn allows_synthetic(&self) -> bool {
        !matches!(self, HubError::DiskFull { .. } | HubError::Io { .. })
    }

    /// Whether running the job again (later, or on another worker) could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HubError::Unreachable { .. } | HubError::Transfer { .. } | HubError::Integrity { .. } | HubError::DiskFull { .. } | HubError::Io { .. })
    }

    /// Whether the request itself is at fault (exit code 2 in `tokbench-worker bench`).
    pub fn is_user_error(&self) -> bool {
        matches!(self, HubError::Offline { .. } | HubError::Unauthorized { .. } | HubError::NotFound { .. } | HubError::NoWeights { .. })
    }
}

type HubResult<T> = std::result::Result<T, HubError>;

/// How long an endpoint found unreachable stays so for this process (a `serve` worker tries
/// again after it; a sweep's many jobs in one process do not each wait for the timeout).
pub const UNREACHABLE_MEMORY: Duration = Duration::from_secs(300);

/// Endpoints found unreachable in this process, with why and when: later downloads fail at once.
static UNREACHABLE: Mutex<Vec<(String, String, Instant)>> = Mutex::new(Vec::new());

/// Why `endpoint` was found unreachable in this process within [`UNREACHABLE_MEMORY`], if it was.
pub fn remembered_unreachable(endpoint: &str) -> Option<String> {
    let mut list = UNREACHABLE.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|(_, _, at)| at.elapsed() < UNREACHABLE_MEMORY);
    list.iter().find(|(e, _, _)| e == endpoint).map(|(_, d, _)| d.clone())
}

fn remember_unreachable(endpoint: &str, detail: &str) {
    let mut list = UNREACHABLE.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|(e, _, _)| e != endpoint);
    list.push((endpoint.to_string(), detail.to_string(), Instant::now()));
}

/// Whether requests go through a proxy (then a direct TCP probe of the endpoint proves nothing).
fn proxy_configured() -> bool {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"].iter().any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// One TCP connection to the endpoint within `timeout` (`tokbench-worker doctor` tries the same).
fn probe(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let Some((host, port)) = host_port(endpoint) else {
        return Err("HF_ENDPOINT is not an http:// or https:// URL".into());
    };
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = String::from("no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(format!("no TCP connection to {host}:{port} within {:.0} s ({last})", timeout.as_secs_f64()))
}

/// A file of the listing.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteFile {
    pub rfilename: String,
    /// Git blob id (sha1 of "blob {len}\0" + content).
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    pub sha256: String,
    pub size: u64,
}

impl RemoteFile {
    /// The blob name (etag) and size of the file's content: the sha256 for LFS files, the git
    /// blob sha1 for the others.
    fn etag_and_size(&self) -> Option<(String, u64)> {
        match (&self.lfs, &self.blob_id, self.size) {
            (Some(l), _, _) => Some((l.sha256.to_ascii_lowercase(), l.size)),
            (None, Some(b), Some(s)) => Some((b.to_ascii_lowercase(), s)),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Listing {
    sha: String,
    #[serde(default)]
    siblings: Vec<RemoteFile>,
}

/// The files besides the weights tokbench reads, when the repo has them: the tokenizer's
/// `vocab.json` + `merges.txt` only without a `tokenizer.json`.
pub fn support_files(listed: &[&str]) -> Vec<String> {
    let has = |f: &str| listed.contains(&f);
    let mut out: Vec<String> = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"].iter().filter(|f| has(f)).map(|f| f.to_string()).collect();
    if !has("tokenizer.json") {
        out.extend(["vocab.json", "merges.txt"].iter().filter(|f| has(f)).map(|f| f.to_string()));
    }
    out
}

/// Which weight files to fetch first: `model.safetensors`, else the shard index (its shards
/// follow from it), else `pytorch_model.bin`; None when the repo has none of them.
pub fn weights_entry(listed: &[&str]) -> Option<&'static str> {
    ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"].into_iter().find(|f| listed.contains(f))
}

/// The git blob id of `content` (sha1 of "blob {len}\0" + content), hex.
pub fn git_blob_sha1(content: &[u8]) -> String {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of the file at `path` in the blob-name scheme of `etag` (64 hex digits: sha256,
/// 40: git blob sha1).
fn file_digest(path: &Path, etag_len: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    if etag_len == 40 {
        use sha1::Digest;
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex(&h.finalize()))
    } else {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex(&h.finalize()))
    }
}

/// Checks a complete file against its listing entry: Ok(None) when it matches, Ok(Some(why))
/// when not.
fn verify(path: &Path, etag: &str, size: u64) -> std::io::Result<Option<String>> {
    let len = std::fs::metadata(path)?.len();
    if len != size {
        return Ok(Some(format!("{len} bytes, the Hub lists {size}")));
    }
    if etag.len() != 40 && etag.len() != 64 {
        // An etag that is no hash (a mirror's own): only the size can be checked.
        return Ok(None);
    }
    let got = file_digest(path, etag.len())?;
    Ok(if got == etag { None } else { Some(format!("content hash {got}, expected {etag}")) })
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

fn io_err(path: &Path, e: std::io::Error, needed: impl FnOnce() -> String) -> HubError {
    if is_disk_full(&e) {
        HubError::DiskFull { path: path.to_path_buf(), needed: needed() }
    } else {
        HubError::Io { path: path.to_path_buf(), source: e }
    }
}

/// `n` bytes as "1.2 GB".
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

/// The Hub's error for a response, from its status and `X-Error-Code` / `X-Error-Message`.
fn status_error(cfg: &HubConfig, repo: &str, revision: &str, what: &str, status: u16, code: Option<&str>, message: Option<&str>) -> HubError {
    let server = message.map(|m| format!(" (the Hub says: {m})")).unwrap_or_default();
    let page = format!("{}/{repo}", cfg.endpoint);
    match (status, code) {
        (_, Some("RepoNotFound")) | (404, None | Some("")) if what == "the file listing" => HubError::NotFound {
            repo: repo.into(),
            detail: format!(
                "{repo} was not found on {} at revision {revision} (HTTP {status}){server}: check the repo id and revision; a private repo needs HF_TOKEN set to a token with access",
                cfg.endpoint
            ),
        },
        (_, Some("RevisionNotFound")) => HubError::NotFound {
            repo: repo.into(),
            detail: format!("{repo} has no revision {revision} (HTTP {status}){server}: give an existing branch, tag or commit"),
        },
        (_, Some("EntryNotFound")) | (404, _) => HubError::NotFound {
            repo: repo.into(),
            detail: format!("{what} of {repo}@{revision} was not found (HTTP {status}){server}: check the repo id and revision"),
        },
        (401 | 403, _) => {
            let gated = if code == Some("GatedRepo") { " is gated" } else { " is gated or private" };
            let fix = if cfg.token.is_some() {
                format!("the token (HF_TOKEN or the huggingface-cli login token) was refused or has no access: accept the licence on {page} with the account that owns the token, or set HF_TOKEN to another token")
            } else {
                format!("no token was sent: accept the licence on {page} while logged in, create a read token at {}/settings/tokens and set HF_TOKEN to it (or run huggingface-cli login)", cfg.endpoint)
            };
            HubError::Unauthorized { repo: repo.into(), status, detail: format!("{repo}{gated} (HTTP {status} for {what}){server}; {fix}") }
        }
        _ => HubError::Transfer { endpoint: cfg.endpoint.clone(), what: format!("{what} of {repo}"), detail: format!("HTTP {status}{server}") },
    }
}

fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A transport error: the endpoint unreachable (connect) or a transfer failure.
fn request_error(cfg: &HubConfig, what: &str, e: &reqwest::Error) -> HubError {
    let detail = error_chain(e);
    if e.is_connect() {
        remember_unreachable(&cfg.endpoint, &detail);
        HubError::Unreachable { endpoint: cfg.endpoint.clone(), detail }
    } else {
        HubError::Transfer { endpoint: cfg.endpoint.clone(), what: what.into(), detail }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Downloads what `repo` at `revision` needs into the cache (see the module doc), reporting
/// progress over all files. Files already in the cache (verified) are not fetched again.
pub async fn download_model(cfg: &HubConfig, repo: &str, revision: &str, on_progress: &mut dyn FnMut(&DownloadProgress)) -> HubResult<Downloaded> {
    if cfg.offline {
        return Err(HubError::Offline { repo: repo.into() });
    }
    if let Some(detail) = remembered_unreachable(&cfg.endpoint) {
        return Err(HubError::Unreachable { endpoint: cfg.endpoint.clone(), detail: format!("earlier in this process: {detail}") });
    }
    if !proxy_configured() {
        if let Err(detail) = probe(&cfg.endpoint, cfg.connect_timeout) {
            remember_unreachable(&cfg.endpoint, &detail);
            return Err(HubError::Unreachable { endpoint: cfg.endpoint.clone(), detail });
        }
    }
    let started = Instant::now();
    let api = hf_hub::api::tokio::ApiBuilder::from_cache(hf_hub::Cache::new(cfg.cache_dir.clone()))
        .with_endpoint(cfg.endpoint.clone())
        .with_token(cfg.token.clone())
        .with_progress(false)
        .with_user_agent("tokbench", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| HubError::Transfer { endpoint: cfg.endpoint.clone(), what: "the HTTP client".into(), detail: e.to_string() })?;
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let api_repo = api.repo(hub_repo.clone());

    // ---- the listing: which files exist, their blob ids and sizes, the commit ----
    let what = "the file listing";
    let resp = tokio::time::timeout(cfg.request_timeout, api_repo.info_request().query(&[("blobs", "true")]).send())
        .await
        .map_err(|_| HubError::Transfer { endpoint: cfg.endpoint.clone(), what: format!("{what} of {repo}"), detail: format!("no answer within {:.0} s", cfg.request_timeout.as_secs_f64()) })?
        .map_err(|e| request_error(cfg, &format!("{what} of {repo}"), &e))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(status_error(cfg, repo, revision, what, status, header_str(&resp, "x-error-code").as_deref(), header_str(&resp, "x-error-message").as_deref()));
    }
    let body = tokio::time::timeout(cfg.request_timeout, resp.text())
        .await
        .map_err(|_| HubError::Transfer { endpoint: cfg.endpoint.clone(), what: format!("{what} of {repo}"), detail: "the listing stalled".into() })?
        .map_err(|e| request_error(cfg, &format!("{what} of {repo}"), &e))?;
    let listing: Listing = serde_json::from_str(&body).map_err(|e| HubError::Protocol { endpoint: cfg.endpoint.clone(), repo: repo.into(), detail: format!("JSON that is no repo listing ({e})") })?;
    let commit = listing.sha.trim().to_string();
    if commit.is_empty() || commit.contains(['/', '\\', '.']) {
        return Err(HubError::Protocol { endpoint: cfg.endpoint.clone(), repo: repo.into(), detail: format!("a commit id {commit:?}") });
    }
    let names: Vec<&str> = listing.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    if !names.contains(&"config.json") {
        return Err(HubError::NoWeights { repo: repo.into(), revision: revision.into(), detail: "the repo has no config.json".into() });
    }
    let Some(weights) = weights_entry(&names) else {
        let shown: Vec<&str> = names.iter().copied().take(20).collect();
        return Err(HubError::NoWeights { repo: repo.into(), revision: revision.into(), detail: format!("its files: {}", shown.join(", ")) });
    };
    let entry = |name: &str| -> HubResult<(String, u64)> {
        listing
            .siblings
            .iter()
            .find(|s| s.rfilename == name)
            .and_then(RemoteFile::etag_and_size)
            .ok_or_else(|| HubError::Protocol { endpoint: cfg.endpoint.clone(), repo: repo.into(), detail: format!("no blob id and size for {name} (the listing was asked with blobs=true)") })
    };

    let cache_repo = cfg.cache_dir.join(hub_repo.folder_name());
    let cache_handle = hf_hub::Cache::new(cfg.cache_dir.clone()).repo(hub_repo.clone());
    let snapshot_dir = cache_repo.join("snapshots").join(&commit);
    let mut files = support_files(&names);
    files.push(weights.to_string());
    let mut plan: Vec<(String, String, u64)> = files.iter().map(|f| entry(f).map(|(e, s)| (f.clone(), e, s))).collect::<HubResult<_>>()?;
    let mut progress = Tally { done: 0, total: plan.iter().map(|p| p.2).sum(), downloaded: 0 };
    let ctx = Ctx { cfg, client: api.client(), repo, revision, commit: &commit, cache_repo: &cache_repo, snapshot_dir: &snapshot_dir };
    tracing::info!(repo, revision, commit = %commit, endpoint = %cfg.endpoint, "downloading {} into {}", files.join(", "), cfg.cache_dir.display());

    let mut i = 0;
    while i < plan.len() {
        let (name, etag, size) = plan[i].clone();
        let path = ctx.fetch(&name, &etag, size, &mut progress, on_progress).await?;
        // As huggingface_hub does: the revision names the commit once a file of it is there (a
        // snapshot without its weights is what resolution treats as "download the rest").
        cache_handle.create_ref(&commit).map_err(|e| io_err(&cache_repo, e, || "a few bytes".into()))?;
        if name == "model.safetensors.index.json" {
            let text = std::fs::read_to_string(&path).map_err(|e| HubError::Io { path: path.clone(), source: e })?;
            let shards = shard_names(&text).map_err(|detail| HubError::NoWeights {
                repo: repo.into(),
                revision: revision.into(),
                detail: format!("model.safetensors.index.json: {detail}"),
            })?;
            for shard in shards {
                if !names.contains(&shard.as_str()) {
                    return Err(HubError::NoWeights { repo: repo.into(), revision: revision.into(), detail: format!("model.safetensors.index.json lists {shard}, which the repo does not have") });
                }
                let (e, s) = entry(&shard)?;
                progress.total += s;
                files.push(shard.clone());
                plan.push((shard, e, s));
            }
        }
        i += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(repo, files = files.len(), bytes = progress.total, downloaded = progress.downloaded, seconds, "model files in the cache at {}", snapshot_dir.display());
    Ok(Downloaded {
        repo: repo.into(),
        revision: revision.into(),
        commit,
        snapshot_dir,
        files,
        bytes_total: progress.total,
        bytes_downloaded: progress.downloaded,
        seconds,
    })
}

/// [`download_model`] on a runtime of its own (the engine runs jobs on blocking threads).
pub fn download_model_blocking(cfg: &HubConfig, repo: &str, revision: &str, on_progress: &mut dyn FnMut(&DownloadProgress)) -> HubResult<Downloaded> {
    if cfg.offline {
        return Err(HubError::Offline { repo: repo.into() });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HubError::Io { path: PathBuf::from("(tokio runtime)"), source: e })?;
    rt.block_on(download_model(cfg, repo, revision, on_progress))
}

struct Tally {
    done: u64,
    total: u64,
    downloaded: u64,
}

struct Ctx<'a> {
    cfg: &'a HubConfig,
    client: &'a reqwest::Client,
    repo: &'a str,
    revision: &'a str,
    commit: &'a str,
    cache_repo: &'a Path,
    snapshot_dir: &'a Path,
}

/// How one attempt at a file's bytes ended.
enum Attempt {
    /// All bytes are in the `.incomplete` file.
    Complete,
    /// Worth resuming (dropped connection, stall, 5xx, 429): why.
    Retry(String),
}

impl Ctx<'_> {
    fn url(&self, file: &str) -> String {
        // The commit, not the branch: every file comes from the listing's snapshot.
        format!("{}/{}/resolve/{}/{}", self.cfg.endpoint, self.repo, self.commit, file)
    }

    /// Puts `file` (blob `etag`, `size` bytes) into the cache and links it from the snapshot.
    async fn fetch(&self, file: &str, etag: &str, size: u64, tally: &mut Tally, on_progress: &mut dyn FnMut(&DownloadProgress)) -> HubResult<PathBuf> {
        if etag.is_empty() || etag.contains(['/', '\\', '.']) {
            return Err(HubError::Protocol { endpoint: self.cfg.endpoint.clone(), repo: self.repo.into(), detail: format!("a blob id {etag:?} for {file}") });
        }
        let blobs = self.cache_repo.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, e, || "a directory".into()))?;
        let blob = blobs.join(etag);
        let partial = blobs.join(format!("{etag}.incomplete"));
        let lock_path = blobs.join(format!("{etag}.lock"));
        let lock_file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| io_err(&lock_path, e, || "a lock file".into()))?;
        let _lock = match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((f, _)) => {
                tracing::info!(file, "another process is downloading {file}; waiting for it");
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, e)| HubError::Io { path: lock_path.clone(), source: std::io::Error::from(e) })?
            }
        };
        let base = tally.done;
        let report = |tally: &Tally, on_progress: &mut dyn FnMut(&DownloadProgress)| {
            on_progress(&DownloadProgress { file: file.to_string(), bytes_done: tally.done, bytes_total: tally.total })
        };

        if blob.exists() {
            match verify(&blob, etag, size) {
                Ok(None) => {
                    tracing::debug!(file, "already in the cache, verified");
                    tally.done = base + size;
                    report(tally, on_progress);
                    return self.link(file, &blob);
                }
                Ok(Some(why)) => {
                    tracing::warn!(file, blob = %blob.display(), "the cached blob is damaged ({why}): deleted, fetching it again");
                    let _ = std::fs::remove_file(&blob);
                }
                Err(e) => return Err(HubError::Io { path: blob, source: e }),
            }
        }

        let mut integrity_failures = 0;
        let mut retries = 0;
        loop {
            let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            if have > size {
                let _ = std::fs::remove_file(&partial);
                have = 0;
            }
            tally.done = base + have;
            report(tally, on_progress);
            let attempt = if size > 0 && have == size {
                Attempt::Complete
            } else {
                self.transfer(file, &partial, have, size, base, tally, on_progress).await?
            };
            match attempt {
                Attempt::Complete => {
                    let bad = verify(&partial, etag, size).map_err(|e| HubError::Io { path: partial.clone(), source: e })?;
                    match bad {
                        None => break,
                        Some(why) => {
                            let _ = std::fs::remove_file(&partial);
                            integrity_failures += 1;
                            tracing::warn!(file, "downloaded {file} does not match the Hub's listing ({why}): deleted");
                            if integrity_failures >= 2 {
                                return Err(HubError::Integrity { repo: self.repo.into(), file: file.into(), detail: why });
                            }
                        }
                    }
                }
                Attempt::Retry(why) => {
                    if retries >= self.cfg.max_retries {
                        return Err(HubError::Transfer {
                            endpoint: self.cfg.endpoint.clone(),
                            what: format!("{file} of {}", self.repo),
                            detail: format!("{why} (after {retries} resumed attempts; run again to resume from the bytes already in {})", partial.display()),
                        });
                    }
                    let wait = self.cfg.retry_delay.saturating_mul(1 << retries.min(5)).min(Duration::from_secs(30));
                    retries += 1;
                    tracing::warn!(file, "{why}; resuming in {:.1} s (attempt {retries} of {})", wait.as_secs_f64(), self.cfg.max_retries);
                    tokio::time::sleep(wait).await;
                }
            }
        }
        std::fs::rename(&partial, &blob).map_err(|e| io_err(&blob, e, || "a rename".into()))?;
        tally.done = base + size;
        report(tally, on_progress);
        self.link(file, &blob)
    }

    /// One GET of the missing bytes of `partial` (`have` of `size`), appended as they come.
    #[allow(clippy::too_many_arguments)]
    async fn transfer(&self, file: &str, partial: &Path, have: u64, size: u64, base: u64, tally: &mut Tally, on_progress: &mut dyn FnMut(&DownloadProgress)) -> HubResult<Attempt> {
        let mut req = self.client.get(self.url(file));
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
            tracing::info!(file, "resuming at byte {have} of {size}");
        } else {
            tracing::info!(file, "downloading {} ({})", file, human_bytes(size));
        }
        let resp = match tokio::time::timeout(self.cfg.request_timeout, req.send()).await {
            Err(_) => return Ok(Attempt::Retry(format!("no answer within {:.0} s", self.cfg.request_timeout.as_secs_f64()))),
            Ok(Err(e)) if e.is_connect() => {
                // Reached for the listing a moment ago: a blip, worth another try.
                return Ok(Attempt::Retry(format!("connection failed: {}", error_chain(&e))));
            }
            Ok(Err(e)) => return Ok(Attempt::Retry(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let mut offset = match status {
            206 => {
                let start = header_str(&resp, "content-range")
                    .and_then(|r| r.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|s| s.trim().parse::<u64>().ok()));
                if start != Some(have) {
                    let _ = std::fs::remove_file(partial);
                    return Ok(Attempt::Retry(format!("the server answered the range request for byte {have} with {start:?}; starting over")));
                }
                have
            }
            200 => 0,
            416 => {
                let _ = std::fs::remove_file(partial);
                return Ok(Attempt::Retry("the server refused the resume range (416); starting over".into()));
            }
            429 | 500..=599 => return Ok(Attempt::Retry(format!("HTTP {status}"))),
            _ => {
                return Err(status_error(
                    self.cfg,
                    self.repo,
                    self.revision,
                    file,
                    status,
                    header_str(&resp, "x-error-code").as_deref(),
                    header_str(&resp, "x-error-message").as_deref(),
                ))
            }
        };
        let mut out = std::fs::OpenOptions::new().create(true).write(true).truncate(offset == 0).append(offset > 0).open(partial).map_err(|e| io_err(partial, e, || human_bytes(size)))?;
        let needed = || human_bytes(size.saturating_sub(have));
        let mut stream = resp.bytes_stream();
        let mut last_report = Instant::now();
        loop {
            let next = match tokio::time::timeout(self.cfg.stall_timeout, stream.next()).await {
                Err(_) => {
                    out.flush().map_err(|e| io_err(partial, e, needed))?;
                    return Ok(Attempt::Retry(format!("no data for {:.0} s at byte {offset} of {size}", self.cfg.stall_timeout.as_secs_f64())));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    out.flush().map_err(|e| io_err(partial, e, needed))?;
                    return Ok(Attempt::Retry(format!("the connection dropped at byte {offset} of {size} ({})", error_chain(&e))));
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            if offset + next.len() as u64 > size {
                let _ = std::fs::remove_file(partial);
                return Ok(Attempt::Retry(format!("the server sent more than the {size} bytes the Hub lists; starting over")));
            }
            out.write_all(&next).map_err(|e| io_err(partial, e, needed))?;
            offset += next.len() as u64;
            tally.downloaded += next.len() as u64;
            tally.done = base + offset;
            if last_report.elapsed() >= Duration::from_millis(100) {
                last_report = Instant::now();
                on_progress(&DownloadProgress { file: file.to_string(), bytes_done: tally.done, bytes_total: tally.total });
            }
        }
        out.sync_all().map_err(|e| io_err(partial, e, needed))?;
        if offset < size {
            return Ok(Attempt::Retry(format!("the response ended at byte {offset} of {size}")));
        }
        Ok(Attempt::Complete)
    }

    /// `snapshots/{commit}/{file}` -> `../../blobs/{etag}` (relative, as huggingface_hub links).
    fn link(&self, file: &str, blob: &Path) -> HubResult<PathBuf> {
        let pointer = self.snapshot_dir.join(file);
        let dir = pointer.parent().unwrap_or(self.snapshot_dir);
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e, || "a directory".into()))?;
        let depth = Path::new(file).components().count(); // snapshots/{commit}/ + the file's folders
        let mut target = PathBuf::new();
        for _ in 0..depth + 1 {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().expect("a blob has a name"));
        if std::fs::symlink_metadata(&pointer).is_ok() {
            if std::fs::read_link(&pointer).ok().as_deref() == Some(target.as_path()) {
                return Ok(pointer);
            }
            std::fs::remove_file(&pointer).map_err(|e| HubError::Io { path: pointer.clone(), source: e })?;
        }
        std::os::unix::fs::symlink(&target, &pointer).map_err(|e| io_err(&pointer, e, || "a symlink".into()))?;
        Ok(pointer)
    }
}

/// Where the Hugging Face hub cache lives: `HF_HUB_CACHE` if set, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (as huggingface_hub does).
pub fn hf_cache() -> hf_hub::Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) if !p.is_empty() => hf_hub::Cache::new(PathBuf::from(p)),
        _ => hf_hub::Cache::from_env(),
    }
}

/// The shard file names a `model.safetensors.index.json` lists in its `weight_map`, sorted,
/// each once; an error naming what is wrong (no map, a path instead of a file name, empty).
pub fn shard_names(index_json: &str) -> std::result::Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_str(index_json).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| "no \"weight_map\" object (tensor name -> shard file)".to_string())?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| format!("weight_map[\"{tensor}\"] is not a file name"))?;
        // Shards sit next to their index: a path would reach outside the model directory.
        if file.is_empty() || file == "." || file == ".." || file.contains(['/', '\\']) || file.chars().any(char::is_control) {
            return Err(format!("weight_map[\"{tensor}\"] is {file:?}, not a plain file name next to the index"));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    if files.is_empty() {
        return Err("weight_map is empty".into());
    }
    files.sort();
    Ok(files)
}

/// `host:port` of an `http(s)://host[:port][/path]` endpoint.
pub fn host_port(endpoint: &str) -> Option<(String, u16)> {
    let (default_port, rest) = if let Some(r) = endpoint.strip_prefix("https://") {
        (443, r)
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (80, r)
    } else {
        return None;
    };
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    match authority.rsplit_once(':') {
        // (An IPv6 literal is bracketed: "[::1]:8080".)
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)),
        _ => Some((authority.trim_matches(['[', ']']).to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_match_git() {
        // `echo -n hello | git hash-object --stdin`
        assert_eq!(git_blob_sha1(b"hello"), "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0");
        assert_eq!(git_blob_sha1(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn files_are_chosen_like_transformers() {
        let listed = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.json", "merges.txt", "README.md"];
        assert_eq!(weights_entry(&listed), Some("model.safetensors"));
        assert_eq!(support_files(&listed), ["config.json", "tokenizer.json"]);
        let bin = ["config.json", "pytorch_model.bin", "vocab.json", "merges.txt", "generation_config.json"];
        assert_eq!(weights_entry(&bin), Some("pytorch_model.bin"));
        assert_eq!(support_files(&bin), ["config.json", "generation_config.json", "vocab.json", "merges.txt"]);
        assert_eq!(weights_entry(&["config.json", "model.safetensors.index.json", "pytorch_model.bin"]), Some("model.safetensors.index.json"));
        assert_eq!(weights_entry(&["config.json", "flax_model.msgpack"]), None);
    }

    #[test]
    fn statuses_name_the_fix() {
        let cfg = HubConfig { token: None, ..HubConfig::from_env() };
        let e = status_error(&cfg, "meta-llama/Llama-3.2-1B", "main", "config.json", 401, Some("GatedRepo"), None);
        assert!(matches!(e, HubError::Unauthorized { .. }) && e.to_string().contains("HF_TOKEN") && e.to_string().contains("licence"), "{e}");
        let e = status_error(&cfg, "org/nothing", "main", "the file listing", 404, None, None);
        assert!(matches!(e, HubError::NotFound { .. }) && e.to_string().contains("not found"), "{e}");
        let e = status_error(&cfg, "org/private", "main", "the file listing", 401, Some("RepoNotFound"), None);
        assert!(matches!(e, HubError::NotFound { .. }), "{e}");
        assert!(status_error(&cfg, "a/b", "main", "x", 502, None, None).is_retryable());
    }

    #[test]
    fn a_full_disk_is_named() {
        let e = io_err(Path::new("/cache/blobs/x.incomplete"), std::io::Error::from_raw_os_error(28), || "1.0 GB".into());
        assert!(matches!(e, HubError::DiskFull { .. }) && e.to_string().contains("HF_HUB_CACHE") && e.to_string().contains("1.0 GB"), "{e}");
        assert!(!e.allows_synthetic() && e.is_retryable());
        let e = io_err(Path::new("/x"), std::io::Error::from_raw_os_error(13), String::new);
        assert!(matches!(e, HubError::Io { .. }));
    }

    #[test]
    fn an_unreachable_endpoint_is_remembered() {
        let endpoint = "http://unreachable.test:1";
        assert_eq!(remembered_unreachable(endpoint), None);
        remember_unreachable(endpoint, "no route");
        assert_eq!(remembered_unreachable(endpoint).as_deref(), Some("no route"));
    }
}
