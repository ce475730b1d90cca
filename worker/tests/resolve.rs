//! Model resolution: catalog names, local directories, a fake Hugging Face cache, and the
//! errors for unknown models and bad configs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokbench_core::WeightsMode;
use tokbench_worker::resolve::{self, WeightsKind};
use tokbench_worker::weights::WeightSource;
use tokbench_worker::EngineError;

/// One HF hub cache for this whole test binary (env vars are process-wide): tests put repos
/// with distinct names into it.
fn hub() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        // Set before any resolution runs (every test calls hub() first).
        unsafe { std::env::set_var("HF_HUB_CACHE", &dir) };
        dir
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Put `files` of fixture `fix` into the cache as repo `repo` at revision `rev`, in the
/// layout huggingface_hub writes (snapshots/<rev>/ + refs/main).
fn cache_repo(repo: &str, fix: &str, files: &[&str]) -> PathBuf {
    let root = hub().join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), "0123abcd").unwrap();
    for f in files {
        std::fs::copy(fixture(fix).join(f), snap.join(f)).unwrap();
    }
    snap
}

#[test]
fn catalog_names_resolve_to_synthetic_without_cache() {
    hub();
    let r = resolve::resolve("tiny-opt", WeightsMode::Auto, 7).unwrap();
    assert_eq!(r.weights_kind, WeightsKind::Synthetic);
    assert!(matches!(r.weights, WeightSource::Synthetic { seed: 7 }));
    assert_eq!(r.weights_source, "synthetic (seed 7)");
    assert_eq!(r.model_id, "tiny-opt");
    let r = resolve::resolve("facebook/opt-125m", WeightsMode::Auto, 0).unwrap();
    assert_eq!((r.model_id.as_str(), r.file_stem.as_str()), ("facebook/opt-125m", "facebook_opt-125m"));
    assert!(r.reason.contains("not in the Hugging Face cache"), "{}", r.reason);
}

#[test]
fn real_weights_requested_but_absent() {
    let hub = hub();
    let err = resolve::resolve("opt-125m", WeightsMode::Real, 0).unwrap_err();
    assert!(matches!(err, EngineError::WeightsNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&hub.display().to_string()) && msg.contains("without --offline"), "{msg}");
    let msg = resolve::resolve("tiny-gpt2", WeightsMode::Real, 0).unwrap_err().to_string();
    assert!(msg.contains("synthetic"), "{msg}");
}

#[test]
fn unknown_names_list_known_models() {
    hub();
    let err = resolve::resolve("opt-125", WeightsMode::Auto, 0).unwrap_err();
    assert!(matches!(err, EngineError::UnknownModel(_)));
    let msg = err.to_string();
    assert!(msg.contains("Did you mean \"opt-125m\"") && msg.contains("tiny-gpt2"), "{msg}");
    assert!(matches!(resolve::resolve("someorg/not-cached", WeightsMode::Synthetic, 0), Err(EngineError::UnknownModel(_))));
}

#[test]
fn hf_cache_snapshot_with_safetensors() {
    hub();
    let snap = cache_repo("tokbench-test/opt-pre", "opt_pre", &["config.json", "model.safetensors"]);
    let r = resolve::resolve("tokbench-test/opt-pre", WeightsMode::Auto, 0).unwrap();
    assert_eq!(r.weights_kind, WeightsKind::Real);
    assert_eq!(r.model_dir.as_deref(), Some(snap.as_path()));
    match &r.weights {
        WeightSource::Files(f) => assert_eq!(f, &vec![snap.join("model.safetensors")]),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.config.vocab_size(), 512);
    assert_eq!(r.file_stem, "tokbench-test_opt-pre");
    // Synthetic on request even though real weights exist, with the cached config.
    let s = resolve::resolve("tokbench-test/opt-pre", WeightsMode::Synthetic, 3).unwrap();
    assert_eq!(s.weights_kind, WeightsKind::Synthetic);
    assert_eq!(s.config, r.config);
}

#[test]
fn hf_cache_config_without_weights() {
    hub();
    cache_repo("tokbench-test/gpt2-config-only", "gpt2", &["config.json"]);
    let r = resolve::resolve("tokbench-test/gpt2-config-only", WeightsMode::Auto, 0).unwrap();
    assert_eq!(r.weights_kind, WeightsKind::Synthetic);
    assert_eq!(r.config.model_type(), "gpt2");
    let err = resolve::resolve("tokbench-test/gpt2-config-only", WeightsMode::Real, 0).unwrap_err().to_string();
    assert!(err.contains("no model.safetensors"), "{err}");
}

#[test]
fn local_dir_prefers_safetensors_then_bin() {
    hub();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("gpt2").join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixture("gpt2").join("pytorch_model.bin"), dir.path().join("pytorch_model.bin")).unwrap();
    let name = dir.path().to_str().unwrap();
    let r = resolve::resolve(name, WeightsMode::Real, 0).unwrap();
    assert!(matches!(&r.weights, WeightSource::Files(f) if f[0].ends_with("pytorch_model.bin")));
    std::fs::copy(fixture("gpt2").join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let r = resolve::resolve(name, WeightsMode::Real, 0).unwrap();
    assert!(matches!(&r.weights, WeightSource::Files(f) if f[0].ends_with("model.safetensors")));
    assert_eq!(r.model_dir.as_deref(), Some(dir.path()));
}

#[test]
fn sharded_index_lists_each_shard_once() {
    hub();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("gpt2").join("config.json"), dir.path().join("config.json")).unwrap();
    let index = r#"{"metadata":{"total_size":1},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), b"x").unwrap();
    let name = dir.path().to_str().unwrap();
    let err = resolve::resolve(name, WeightsMode::Auto, 0).unwrap_err();
    assert!(matches!(&err, EngineError::WeightsMissing { path, .. } if path.ends_with("model-00002-of-00002.safetensors")), "{err:?}");
    std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), b"x").unwrap();
    let r = resolve::resolve(name, WeightsMode::Auto, 0).unwrap();
    let WeightSource::Files(files) = &r.weights else { panic!() };
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
    assert!(r.weights_source.contains("2 shards"), "{}", r.weights_source);
}

#[test]
fn local_dir_config_errors_name_the_file() {
    hub();
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().to_str().unwrap();
    let msg = resolve::resolve(name, WeightsMode::Auto, 0).unwrap_err().to_string();
    assert!(msg.contains("config.json") && msg.contains("not found"), "{msg}");

    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"falcon","hidden_size":4096}"#).unwrap();
    let err = resolve::resolve(name, WeightsMode::Auto, 0).unwrap_err();
    assert!(matches!(err, EngineError::ConfigFile { .. }));
    let msg = err.to_string();
    assert!(msg.contains("falcon") && msg.contains("qwen3") && msg.contains("config.json"), "{msg}");

    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"llama","hidden_size":4096}"#).unwrap();
    let msg = resolve::resolve(name, WeightsMode::Auto, 0).unwrap_err().to_string();
    assert!(msg.contains("missing field `vocab_size`") && msg.contains("config.json"), "{msg}");

    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"opt\",").unwrap();
    let msg = resolve::resolve(name, WeightsMode::Synthetic, 0).unwrap_err().to_string();
    assert!(msg.contains("not valid JSON"), "{msg}");
}

#[test]
fn local_dir_without_weights() {
    hub();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("opt_post").join("config.json"), dir.path().join("config.json")).unwrap();
    let name = dir.path().to_str().unwrap();
    let r = resolve::resolve(name, WeightsMode::Auto, 5).unwrap();
    assert_eq!(r.weights_kind, WeightsKind::Synthetic);
    assert!(r.reason.contains("no weight files"), "{}", r.reason);
    let msg = resolve::resolve(name, WeightsMode::Real, 0).unwrap_err().to_string();
    assert!(msg.contains("no real weights") && msg.contains(name), "{msg}");
}

#[test]
fn missing_directory_is_named() {
    hub();
    let msg = resolve::resolve("./no/such/model-dir", WeightsMode::Auto, 0).unwrap_err().to_string();
    assert!(msg.starts_with("./no/such/model-dir is not a directory.") && msg.contains("Known models"), "{msg}");
}
