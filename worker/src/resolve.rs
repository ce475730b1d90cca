//! Model resolution: turn what the user typed (catalog short name, Hugging Face repo id, or a
//! local directory) into a config, a weight source (real files or synthetic) and a directory
//! to look for tokenizer files in.
//!
//! Resolution itself reads only the disk: a local directory, or the Hugging Face hub cache
//! ([`hf_cache`]). Downloading is a step before it: when a catalog model or repo id has no real
//! weights in the cache and `--weights` is `real` or `auto`, [`download_candidate`] names the
//! repo, the job runner fetches it into the cache with [`crate::hub`] (unless offline:
//! `--offline` or HF_HUB_OFFLINE=1) outside the timed load, and resolution then finds it there.
//! `auto` falls back to synthetic weights when that download cannot happen (offline, Hub
//! unreachable, gated without a token, not found), with the reason; `synthetic` never touches
//! the network.
//!
//! Which local directories a name may reach is a [`ModelPathPolicy`]: `tokbench-worker bench`,
//! run by the user, loads any directory (unless given `--models-dir`); `tokbench-worker serve`,
//! whose jobs come from remote clients, loads directories only from under its `--models-dir`
//! (none without it), checked after symlinks and `..` are resolved. A `local:` prefix marks a
//! name as a directory (the form the coordinator needs for absolute paths and `..`).

use crate::error::{EngineError, Result};
pub use crate::hub::{hf_cache, shard_names};
use crate::weights::WeightSource;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use tokbench_core::workload::LOCAL_MODEL_PREFIX;
use tokbench_core::{ArchConfig, Catalog, CatalogEntry, ConfigError, WeightsMode};

/// The environment variable that restricts `tokbench-worker bench` like `--models-dir` (a
/// PATH-style list; set but empty: no local directories at all). `serve` sets it for the
/// profiled jobs it runs in child `bench` processes.
pub const MODELS_DIRS_ENV: &str = "TOKBENCH_MODELS_DIRS";

/// Which local directories a model name may load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPathPolicy {
    /// None: any local directory (the `bench` command run by the user on their own machine).
    /// Some(dirs): only directories that, with symlinks and `..` resolved, lie under one of
    /// `dirs` (an empty list: no local directories at all).
    pub allowed_dirs: Option<Vec<PathBuf>>,
}

impl ModelPathPolicy {
    /// Any local directory may be loaded.
    pub fn any() -> Self {
        ModelPathPolicy { allowed_dirs: None }
    }

    /// Only directories under `dirs` (none when empty).
    pub fn only_under(dirs: Vec<PathBuf>) -> Self {
        ModelPathPolicy { allowed_dirs: Some(dirs) }
    }

    /// `bench`'s policy: the `--models-dir` flags, else [`MODELS_DIRS_ENV`], else any directory.
    pub fn for_bench(flags: Vec<PathBuf>) -> Self {
        if !flags.is_empty() {
            return Self::only_under(flags);
        }
        match std::env::var_os(MODELS_DIRS_ENV) {
            Some(list) => Self::only_under(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect()),
            None => Self::any(),
        }
    }

    /// This policy with each allowed directory made absolute, symlinks resolved (what messages
    /// list, and what a child process started elsewhere still finds); an error naming the flag
    /// for one that is not a directory.
    pub fn canonical(self) -> std::result::Result<Self, String> {
        let Some(dirs) = self.allowed_dirs else { return Ok(self) };
        let dirs = dirs
            .into_iter()
            .map(|d| match d.canonicalize() {
                Ok(c) if c.is_dir() => Ok(c),
                _ => Err(format!("--models-dir {}: not a directory (give a directory that holds model directories)", d.display())),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self::only_under(dirs))
    }

    /// The directories as a message lists them.
    fn describe(dirs: &[PathBuf]) -> String {
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Which directories a restricted worker loads, and how to allow one.
    fn allowed_sentence(dirs: &[PathBuf]) -> String {
        if dirs.is_empty() {
            "this worker was started without --models-dir, so it loads no local directories: start it with --models-dir DIR (repeatable) to allow the model directories under DIR".to_string()
        } else {
            format!("this worker loads local directories only from under its --models-dir: {}", Self::describe(dirs))
        }
    }

    /// Whether the canonical path `canon` lies under (or is) an allowed directory, each taken
    /// with its symlinks resolved too.
    fn allows(dirs: &[PathBuf], canon: &Path) -> bool {
        dirs.iter().filter_map(|d| d.canonicalize().ok()).any(|d| canon.starts_with(&d))
    }
}

thread_local! {
    /// The policy [`resolve`] applies on this thread (None: [`ModelPathPolicy::any`]).
    static POLICY: RefCell<Option<ModelPathPolicy>> = const { RefCell::new(None) };
}

/// Runs `f` with [`resolve`] applying `policy` on this thread (the engine resolves a job's model
/// on the thread that runs the job), then restores the previous policy, even on panic.
pub fn with_model_policy<R>(policy: ModelPathPolicy, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<ModelPathPolicy>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            POLICY.with(|p| *p.borrow_mut() = previous);
        }
    }
    let _restore = Restore(POLICY.with(|p| p.borrow_mut().replace(policy)));
    f()
}

/// The policy [`resolve`] applies on this thread now.
pub fn current_model_policy() -> ModelPathPolicy {
    POLICY.with(|p| p.borrow().clone()).unwrap_or_default()
}

/// "real" or "synthetic", as written in `ModelProperties.weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    Real,
    Synthetic,
}

impl WeightsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsKind::Real => "real",
            WeightsKind::Synthetic => "synthetic",
        }
    }
}

/// A resolved model, ready to load.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// As the user gave it.
    pub requested: String,
    /// HF repo id, local directory path, or catalog name (tiny models).
    pub model_id: String,
    /// For file names and profile names: `facebook_opt-125m` (repo id with '/' -> '_').
    pub file_stem: String,
    pub config: ArchConfig,
    pub weights: WeightSource,
    pub weights_kind: WeightsKind,
    /// Path of the weight file(s) or `synthetic (seed N)`.
    pub weights_source: String,
    /// Directory holding config.json (and maybe tokenizer files), when there is one.
    pub model_dir: Option<PathBuf>,
    /// Why real or synthetic weights were chosen (logged, and useful in reports).
    pub reason: String,
}


/// Resolve `name` for `mode` under this thread's [`ModelPathPolicy`] (see
/// [`with_model_policy`]; any local directory when none was set). `seed` is the synthetic
/// weights' seed.
pub fn resolve(name: &str, mode: WeightsMode, seed: u64) -> Result<ResolvedModel> {
    resolve_with(name, mode, seed, &current_model_policy())
}

/// Whether `name` may be run under `policy`, decided as [`resolve_with`] decides it but without
/// reading the model: for checks before a job starts (a job refused here fails at once).
pub fn check_model(name: &str, policy: &ModelPathPolicy) -> Result<()> {
    locate(name.trim(), policy).map(|_| ())
}

/// The Hugging Face repo whose files [`crate::hub`] should fetch before [`resolve_with`] runs:
/// Some(repo id) when `mode` wants real weights (`real` or `auto`), `name` is a catalog model
/// with a repo or a repo id (not a local directory under `policy`), and the cache lacks its real
/// weights (or a shard of them). None otherwise: nothing to download, and resolution decides.
pub fn download_candidate(name: &str, mode: WeightsMode, policy: &ModelPathPolicy) -> Result<Option<String>> {
    let name = name.trim();
    if mode == WeightsMode::Synthetic || name.is_empty() {
        return Ok(None);
    }
    if let Located::Dir(_) = locate(name, policy)? {
        return Ok(None);
    }
    let repo = match Catalog::get(name) {
        Some(e) => match e.hf_repo {
            Some(r) => r,
            None => return Ok(None),
        },
        None => name,
    };
    if !looks_like_repo_id(repo) {
        return Ok(None);
    }
    Ok(match find_in_hf_cache(repo) {
        Ok(Some(Cached { weights: Some(_), .. })) => None,
        // No config.json, no weights, a shard missing: fetch what is missing.
        Ok(_) | Err(EngineError::WeightsMissing { .. }) => Some(repo.to_string()),
        // A config.json that does not parse, a corrupt index: resolution reports it.
        Err(_) => None,
    })
}

/// What a name refers to.
enum Located {
    /// A local directory: as given under [`ModelPathPolicy::any`], else canonical.
    Dir(PathBuf),
    /// A catalog name or Hugging Face repo id (or, with any directory allowed, an unknown name
    /// that resolution reports).
    Named,
}

/// Decides what `name` refers to under `policy`. A directory wins over a catalog name so
/// `./gpt2` (a local checkout) means the checkout, but only where the policy allows it: under
/// `--models-dir` a catalog name or repo id stays one when the directory of that name is not
/// under an allowed directory, and any other name outside them is refused.
fn locate(name: &str, policy: &ModelPathPolicy) -> Result<Located> {
    let (explicit, raw) = match name.strip_prefix(LOCAL_MODEL_PREFIX) {
        Some(rest) => (true, rest.trim()),
        None => (false, name),
    };
    if explicit && raw.is_empty() {
        return Err(EngineError::UnknownModel(format!("model \"{name}\" names no directory: write {LOCAL_MODEL_PREFIX}/path/to/model")));
    }
    let path = Path::new(raw);
    let Some(dirs) = &policy.allowed_dirs else {
        if path.is_dir() {
            return Ok(Located::Dir(path.to_path_buf()));
        }
        if explicit {
            return Err(EngineError::UnknownModel(format!(
                "model \"{name}\": {raw} is not a directory; {LOCAL_MODEL_PREFIX} names a directory holding config.json"
            )));
        }
        return Ok(Located::Named);
    };
    let canonical = if path.is_dir() { path.canonicalize().ok() } else { None };
    if let Some(canon) = &canonical {
        if ModelPathPolicy::allows(dirs, canon) {
            return Ok(Located::Dir(canon.clone()));
        }
    }
    if !explicit && (Catalog::get(raw).is_some() || looks_like_repo_id(raw)) {
        return Ok(Located::Named);
    }
    // The detail (does it exist, where does it lead) is for the worker's log only: the
    // message goes back to whoever submitted the job.
    match &canonical {
        Some(canon) => tracing::warn!(model = name, resolved = %canon.display(), "refused a model directory outside --models-dir"),
        None => tracing::warn!(model = name, "refused a model name that is no catalog name, repo id or directory under --models-dir"),
    }
    Err(EngineError::UnknownModel(format!(
        "model \"{name}\" is not a catalog name, not a Hugging Face repo id (owner/name) and not a directory under this worker's allowed model directories; {}. Known models: {}",
        ModelPathPolicy::allowed_sentence(dirs),
        Catalog::names().join(", ")
    )))
}

/// [`resolve`] under `policy`.
pub fn resolve_with(name: &str, mode: WeightsMode, seed: u64, policy: &ModelPathPolicy) -> Result<ResolvedModel> {
    let name = name.trim();
    if name.is_empty() {
        return Err(EngineError::UnknownModel(Catalog::unknown_model_message(name)));
    }
    if let Located::Dir(dir) = locate(name, policy)? {
        return resolve_local_dir(name, &dir, mode, seed);
    }
    let path = Path::new(name);
    let entry = Catalog::get(name);
    let repo = entry.map(|e| e.hf_repo).unwrap_or(Some(name));
    let cached = match repo {
        Some(repo) if looks_like_repo_id(repo) => find_in_hf_cache(repo)?,
        _ => None,
    };
    let synthetic = |config: ArchConfig, model_id: String, file_stem: String, model_dir: Option<PathBuf>, reason: String| ResolvedModel {
        requested: name.to_string(),
        model_id,
        file_stem,
        config,
        weights: WeightSource::Synthetic { seed },
        weights_kind: WeightsKind::Synthetic,
        weights_source: format!("synthetic (seed {seed})"),
        model_dir,
        reason,
    };
    let looked = format!("looked in the Hugging Face cache {} (set HF_HOME or HF_HUB_CACHE to use another)", hf_cache().path().display());
    match (mode, entry, cached) {
        (WeightsMode::Synthetic, Some(e), _) => {
            Ok(synthetic(e.config(), model_id_of(e), e.file_stem(), None, "--weights synthetic: catalog config with seeded random weights".into()))
        }
        (WeightsMode::Synthetic, None, Some(c)) => Ok(synthetic(
            c.config,
            c.repo.clone(),
            c.repo.replace('/', "_"),
            Some(c.dir),
            "--weights synthetic: config.json from the Hugging Face cache with seeded random weights".into(),
        )),
        (_, _, Some(c)) if c.weights.is_some() && mode != WeightsMode::Synthetic => {
            let files = c.weights.expect("checked");
            Ok(ResolvedModel {
                requested: name.to_string(),
                model_id: c.repo.clone(),
                file_stem: c.repo.replace('/', "_"),
                config: c.config,
                weights_source: describe_files(&files),
                weights: WeightSource::Files(files),
                weights_kind: WeightsKind::Real,
                model_dir: Some(c.dir),
                reason: "real weights found in the Hugging Face cache".into(),
            })
        }
        (WeightsMode::Real, Some(e), _) if e.hf_repo.is_none() => Err(EngineError::WeightsNotFound {
            model: name.into(),
            detail: format!("{} is a test architecture that exists only with synthetic weights", e.name),
        }),
        (WeightsMode::Real, _, Some(c)) => Err(EngineError::WeightsNotFound {
            model: name.into(),
            detail: format!("{} has config.json but no model.safetensors, model.safetensors.index.json or pytorch_model.bin", c.dir.display()),
        }),
        (WeightsMode::Real, Some(e), None) => Err(EngineError::WeightsNotFound {
            model: name.into(),
            detail: format!("{} is not in the cache: {looked}", e.hf_repo.unwrap_or(e.name)),
        }),
        (WeightsMode::Auto, Some(e), cached) => {
            let why = match (e.hf_repo, cached) {
                (None, _) => format!("{} is a test architecture (synthetic only)", e.name),
                (Some(r), Some(c)) => format!("{r} is in the Hugging Face cache at {} but without weight files", c.dir.display()),
                (Some(r), None) => format!("{r} is not in the Hugging Face cache ({looked})"),
            };
            Ok(synthetic(e.config(), model_id_of(e), e.file_stem(), None, format!("--weights auto: no real weights, using synthetic weights from the catalog config: {why}")))
        }
        (WeightsMode::Auto, None, Some(c)) => Ok(synthetic(
            c.config,
            c.repo.clone(),
            c.repo.replace('/', "_"),
            Some(c.dir),
            "--weights auto: the Hugging Face cache has config.json but no weights, using synthetic weights".into(),
        )),
        (_, None, None) => {
            // Something typed as a path gets told that the path is not there.
            let not_dir = if name.starts_with(['.', '/', '~']) || path.components().count() > 2 {
                format!("{name} is not a directory. ")
            } else {
                String::new()
            };
            // Under --models-dir a name like `models/llama` is taken as a repo id unless it is an
            // allowed directory: say where directories may be (whether it exists or not).
            let dirs = match &policy.allowed_dirs {
                Some(dirs) => format!(" As a local directory: {}.", ModelPathPolicy::allowed_sentence(dirs)),
                None => String::new(),
            };
            Err(EngineError::UnknownModel(format!("{not_dir}{}{dirs}", Catalog::unknown_model_message(name))))
        }
    }
}

fn model_id_of(e: &CatalogEntry) -> String {
    e.hf_repo.unwrap_or(e.name).to_string()
}

/// Repo ids are `name` or `org/name` of [A-Za-z0-9._-], no part starting with '.' or holding
/// ".." (as the Hub requires); anything else (a path that does not exist, a typo with spaces,
/// `./x`, `a/..`) is not looked up in the cache.
pub fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.starts_with('.') && !p.contains("..") && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
}

struct Cached {
    repo: String,
    dir: PathBuf,
    config: ArchConfig,
    weights: Option<Vec<PathBuf>>,
}

fn find_in_hf_cache(repo: &str) -> Result<Option<Cached>> {
    let cache = hf_cache();
    let cache_repo = cache.model(repo.to_string());
    let Some(config_path) = cache_repo.get("config.json") else {
        return Ok(None);
    };
    let dir = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = read_config(&config_path)?;
    let weights = find_weight_files(&dir)?;
    Ok(Some(Cached { repo: repo.to_string(), dir, config, weights }))
}

fn resolve_local_dir(name: &str, dir: &Path, mode: WeightsMode, seed: u64) -> Result<ResolvedModel> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(EngineError::ConfigFile {
            path: config_path,
            source: ConfigError::Invalid(
                "file not found: a model directory needs the Hugging Face config.json (model_type opt or gpt2) next to its weights".into(),
            ),
        });
    }
    let config = read_config(&config_path)?;
    let model_id = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).display().to_string();
    let file_stem = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "local".into());
    let weights = if mode == WeightsMode::Synthetic { None } else { find_weight_files(dir)? };
    let base = ResolvedModel {
        requested: name.to_string(),
        model_id,
        file_stem,
        config,
        weights: WeightSource::Synthetic { seed },
        weights_kind: WeightsKind::Synthetic,
        weights_source: format!("synthetic (seed {seed})"),
        model_dir: Some(dir.to_path_buf()),
        reason: String::new(),
    };
    match (mode, weights) {
        (WeightsMode::Synthetic, _) => Ok(ResolvedModel { reason: "--weights synthetic: config.json from the directory, seeded random weights".into(), ..base }),
        (_, Some(files)) => Ok(ResolvedModel {
            weights_source: describe_files(&files),
            weights: WeightSource::Files(files),
            weights_kind: WeightsKind::Real,
            reason: "real weights found in the local directory".into(),
            ..base
        }),
        (WeightsMode::Real, None) => Err(EngineError::WeightsNotFound {
            model: name.into(),
            detail: format!("{} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin", dir.display()),
        }),
        (WeightsMode::Auto, None) => Ok(ResolvedModel {
            reason: format!("--weights auto: {} has no weight files, using synthetic weights with its config.json", dir.display()),
            ..base
        }),
    }
}

/// Read and parse a config.json; errors name the file.
pub fn read_config(path: &Path) -> Result<ArchConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::ConfigFile {
        path: path.to_path_buf(),
        source: ConfigError::Invalid(format!("cannot read it: {e}")),
    })?;
    ArchConfig::from_json_str(&text).map_err(|source| EngineError::ConfigFile { path: path.to_path_buf(), source })
}

/// The weight files of a model directory, in the order transformers prefers:
/// `model.safetensors`, sharded `model.safetensors.index.json`, `pytorch_model.bin`.
/// Ok(None) when there are none; an index naming a missing shard is an error.
pub fn find_weight_files(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(Some(vec![single]));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return read_shard_index(&index).map(Some);
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok(Some(vec![bin]));
    }
    Ok(None)
}


fn read_shard_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| EngineError::WeightsMissing { path: index.to_path_buf(), detail: e.to_string() })?;
    let files = shard_names(&text).map_err(|detail| EngineError::WeightsCorrupt { path: index.to_path_buf(), detail })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    files
        .into_iter()
        .map(|f| {
            let p = dir.join(&f);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EngineError::WeightsMissing {
                    path: p,
                    detail: format!("listed in {} but not on disk; re-download the model", index.display()),
                })
            }
        })
        .collect()
}

fn describe_files(files: &[PathBuf]) -> String {
    match files {
        [one] => one.display().to_string(),
        many => format!("{} ({} shards)", many[0].parent().unwrap_or(Path::new(".")).display(), many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_shapes() {
        assert!(looks_like_repo_id("gpt2"));
        assert!(looks_like_repo_id("facebook/opt-125m"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("./x"));
        assert!(!looks_like_repo_id("no such model"));
        assert!(!looks_like_repo_id("a/.."));
        assert!(!looks_like_repo_id("../etc"));
        assert!(!looks_like_repo_id("/etc"));
        assert!(!looks_like_repo_id("org/.hidden"));
        assert!(!looks_like_repo_id("org/a..b"));
    }

    #[test]
    fn policy_scope_is_restored() {
        assert_eq!(current_model_policy(), ModelPathPolicy::any());
        let inner = with_model_policy(ModelPathPolicy::only_under(vec![]), || {
            let nested = with_model_policy(ModelPathPolicy::only_under(vec!["/m".into()]), current_model_policy);
            (nested, current_model_policy())
        });
        assert_eq!(inner, (ModelPathPolicy::only_under(vec!["/m".into()]), ModelPathPolicy::only_under(vec![])));
        assert_eq!(current_model_policy(), ModelPathPolicy::any());
    }
}
