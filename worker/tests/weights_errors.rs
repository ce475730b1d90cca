//! Bad weight files give the specific EngineError variant, with a message that names the
//! file or tensor and says what to do. Uses the committed HF fixtures (tests/fixtures/) and
//! broken copies of them in temp dirs.

use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use tokbench_core::ArchConfig;
use tokbench_worker::model::Model;
use tokbench_worker::weights::WeightSource;
use tokbench_worker::EngineError;

fn fixture(name: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).join(file)
}

fn config(name: &str) -> ArchConfig {
    ArchConfig::from_json_str(&std::fs::read_to_string(fixture(name, "config.json")).unwrap()).unwrap()
}

fn load(config: &ArchConfig, files: Vec<PathBuf>) -> Result<Model, EngineError> {
    Model::load(config, &WeightSource::Files(files), DType::F32, &Device::Cpu)
}

fn truncated_copy(src: &Path, dir: &Path, keep_fraction: f64) -> PathBuf {
    let bytes = std::fs::read(src).unwrap();
    let dst = dir.join(src.file_name().unwrap());
    std::fs::write(&dst, &bytes[..(bytes.len() as f64 * keep_fraction) as usize]).unwrap();
    dst
}

#[test]
fn missing_file_is_weights_missing() {
    let path = PathBuf::from("/nonexistent/tokbench/model.safetensors");
    let err = load(&config("opt_pre"), vec![path.clone()]).err().expect("must fail");
    let msg = err.to_string();
    match &err {
        EngineError::WeightsMissing { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected WeightsMissing, got {other:?}"),
    }
    assert!(msg.contains("/nonexistent/tokbench/model.safetensors"), "{msg}");
    assert!(!err.is_retryable());
}

#[test]
fn truncated_safetensors_is_weights_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = truncated_copy(&fixture("opt_pre", "model.safetensors"), dir.path(), 0.6);
    let err = load(&config("opt_pre"), vec![path.clone()]).err().expect("must fail");
    match &err {
        EngineError::WeightsCorrupt { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected WeightsCorrupt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("is corrupt") && msg.contains("Re-download"), "{msg}");
}

#[test]
fn garbage_safetensors_header_is_weights_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // A header length of 0x7b ('{') bytes followed by text that is not JSON.
    std::fs::write(&path, b"{\0\0\0\0\0\0\0this is not a safetensors header at all").unwrap();
    let err = load(&config("opt_pre"), vec![path]).err().expect("must fail");
    assert!(matches!(err, EngineError::WeightsCorrupt { .. }), "{err:?}");
    // An empty file too.
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let err = load(&config("opt_pre"), vec![empty]).err().expect("must fail");
    assert!(matches!(err, EngineError::WeightsCorrupt { .. }), "{err:?}");
}

#[test]
fn truncated_pytorch_bin_is_weights_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = truncated_copy(&fixture("gpt2", "pytorch_model.bin"), dir.path(), 0.5);
    let err = load(&config("gpt2"), vec![path.clone()]).err().expect("must fail");
    match &err {
        EngineError::WeightsCorrupt { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected WeightsCorrupt, got {other:?}"),
    }
}

#[test]
fn checkpoint_of_another_size_is_shape_mismatch() {
    // The opt_pre weights (hidden 32) with a config that says hidden 64.
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("opt_pre", "config.json")).unwrap()).unwrap();
    value["hidden_size"] = 64.into();
    value["word_embed_proj_dim"] = 64.into();
    let config = ArchConfig::from_json_value(&value).unwrap();
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let err = load(&config, vec![fixture("opt_pre", file)]).err().expect("must fail");
        match &err {
            EngineError::ShapeMismatch { name, expected, actual } => {
                assert_eq!(name, "model.decoder.embed_tokens.weight");
                assert_eq!(expected, &vec![512, 64]);
                assert_eq!(actual, &vec![512, 32]);
            }
            other => panic!("{file}: expected ShapeMismatch, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("do not belong to this config.json"), "{msg}");
    }
}

#[test]
fn missing_tensor_is_tensor_missing() {
    let mut tensors = candle_core::safetensors::load(fixture("gpt2", "model.safetensors"), &Device::Cpu).unwrap();
    assert!(tensors.remove("transformer.h.1.mlp.c_fc.bias").is_some());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = load(&config("gpt2"), vec![path]).err().expect("must fail");
    match &err {
        EngineError::TensorMissing { name, detail } => {
            assert_eq!(name, "transformer.h.1.mlp.c_fc.bias");
            assert!(detail.contains("missing shard") || detail.contains("incomplete"), "{detail}");
        }
        other => panic!("expected TensorMissing, got {other:?}"),
    }
}

#[test]
fn weights_of_another_architecture_are_named() {
    // OPT weights under a GPT-2 config: no wte under any known prefix.
    let err = load(&config("gpt2"), vec![fixture("opt_pre", "model.safetensors")]).err().expect("must fail");
    match &err {
        EngineError::TensorMissing { name, detail } => {
            assert_eq!(name, "transformer.wte.weight");
            assert!(detail.contains("model.decoder."), "the detail should show what the file holds: {detail}");
            assert!(detail.contains("model_type"), "{detail}");
        }
        other => panic!("expected TensorMissing, got {other:?}"),
    }
}

#[test]
fn unprefixed_checkpoints_load() {
    // Base-model checkpoints (OPTModel / GPT2Model) store names without `model.` /
    // `transformer.`; the same weights must load and give the same logits.
    for (name, prefix) in [("opt_pre", "model."), ("gpt2", "transformer.")] {
        let tensors = candle_core::safetensors::load(fixture(name, "model.safetensors"), &Device::Cpu).unwrap();
        let stripped: std::collections::HashMap<String, Tensor> =
            tensors.into_iter().map(|(k, v)| (k.strip_prefix(prefix).map(str::to_string).unwrap_or(k), v)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&stripped, &path).unwrap();
        let cfg = config(name);
        let ids = Tensor::new(&[[5u32, 6, 7]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1]], &Device::Cpu).unwrap();
        let a = load(&cfg, vec![path]).unwrap().forward_full(&ids, &mask).unwrap();
        let b = load(&cfg, vec![fixture(name, "model.safetensors")]).unwrap().forward_full(&ids, &mask).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
}

#[test]
fn unknown_format_and_empty_list_are_invalid() {
    let err = load(&config("opt_pre"), vec![fixture("opt_pre", "config.json")]).err().expect("must fail");
    assert!(matches!(err, EngineError::InvalidWorkload(_)), "{err:?}");
    assert!(err.to_string().contains(".safetensors"), "{err}");
    let err = load(&config("opt_pre"), vec![]).err().expect("must fail");
    assert!(matches!(err, EngineError::InvalidWorkload(_)), "{err:?}");
}

#[test]
fn bf16_on_cpu_is_refused_with_a_fix() {
    let err = Model::load(&config("opt_pre"), &WeightSource::Files(vec![fixture("opt_pre", "model.safetensors")]), DType::BF16, &Device::Cpu)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("use f32 or f16"), "{err}");
}

/// A Qwen3 checkpoint without one layer's q/k norm (a Qwen2 checkpoint relabelled qwen3, say):
/// the error names the tensor the family needs.
#[test]
fn rotary_family_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3");
    let files = tokbench_worker::resolve::find_weight_files(&src).unwrap().unwrap();
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut tensors = candle_core::safetensors::load(f, &Device::Cpu).unwrap();
        tensors.remove("model.layers.1.self_attn.k_norm.weight");
        let dst = dir.path().join(format!("part{i}.safetensors"));
        candle_core::safetensors::save(&tensors, &dst).unwrap();
        out.push(dst);
    }
    let err = load(&config("qwen3"), out).err().expect("must fail");
    assert!(matches!(err, EngineError::TensorMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("model.layers.1.self_attn.k_norm.weight"), "{err}");
}

/// An untied Llama checkpoint without its lm_head: named, with the config field that asks for it.
#[test]
fn untied_rotary_checkpoint_without_lm_head_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let mut all = std::collections::HashMap::new();
    for f in tokbench_worker::resolve::find_weight_files(&src).unwrap().unwrap() {
        all.extend(candle_core::safetensors::load(&f, &Device::Cpu).unwrap());
    }
    assert!(all.remove("lm_head.weight").is_some());
    let dst = dir.path().join("model.safetensors");
    candle_core::safetensors::save(&all, &dst).unwrap();
    let err = load(&config("llama"), vec![dst]).err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("lm_head.weight") && msg.contains("tie_word_embeddings"), "{msg}");
}

/// Mistral v0.1's 4096-position sliding window is not implemented: longer sequences are refused
/// with the window named, shorter ones run.
#[test]
fn sliding_window_longer_sequences_are_refused() {
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("mistral", "config.json")).unwrap()).unwrap();
    cfg["sliding_window"] = serde_json::json!(12);
    let config = ArchConfig::from_json_value(&cfg).unwrap();
    let files = tokbench_worker::resolve::find_weight_files(&fixture("mistral", "")).unwrap().unwrap();
    let model = load(&config, files).unwrap();
    let params = tokbench_worker::generate::GenerationParams::new(&config, "mistral-window-test", 8);
    let err = tokbench_worker::generate::generate_batch(&model, &[vec![1, 5, 6, 7, 8]], &params, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("sliding window of 12") && err.contains("13 positions"), "{err}");
    let ok = tokbench_worker::generate::generate_batch(&model, &[vec![1, 5, 6, 7]], &params, &mut |_| {}).unwrap();
    assert_eq!(ok.tokens[0].len(), 8);
}
