//! Synthetic checkpoints on disk: the synthetic weights of a config written as a Hugging Face
//! checkpoint folder (`config.json` + `model.safetensors`) that transformers can load, for
//! parity tests and `tokbench-worker export-weights`.
//!
//! This sits above both [`crate::model`] (which builds the weights) and [`crate::weights`]
//! (which hands them out), so neither depends on the other's caller.

use crate::error::{EngineError, Result};
use crate::model::Model;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tokbench_core::ArchConfig;

/// A tensor as raw little-endian bytes for the safetensors writer.
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes the synthetic weights of `config` for `seed` (f32, the values `Model::load` with
/// `WeightSource::Synthetic { seed }` gives on the CPU) as a safetensors file with Hugging Face's
/// names (`model.decoder.*` for OPT, `transformer.*` for GPT-2; lm_head tied, not stored), so
/// transformers' `from_pretrained` on a folder with this file as `model.safetensors` plus
/// `config.json` loads the same model.
pub fn save_synthetic_safetensors(config: &ArchConfig, seed: u64, path: &Path) -> Result<()> {
    let tensors = Model::synthetic_tensors(config, seed)?;
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((name, RawTensor { dtype: safetensors::Dtype::F32, shape: t.dims().to_vec(), data }));
    }
    // transformers 4.x refuses safetensors without format=pt metadata.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(raw.iter().map(|(n, r)| (n.as_str(), r)), Some(metadata), path)
        .map_err(|e| EngineError::Io(std::io::Error::other(format!("writing {}: {e}", path.display()))))?;
    Ok(())
}

/// Writes a checkpoint folder transformers can load: `dir/config.json` (the config in HF layout,
/// with `architectures`) and `dir/model.safetensors` (see [`save_synthetic_safetensors`]).
pub fn save_synthetic_checkpoint(config: &ArchConfig, seed: u64, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = config.to_json_value();
    // Unset optional fields are written as null by serde; transformers would take a null
    // (e.g. tie_word_embeddings) literally instead of using its default.
    if let Some(obj) = cfg.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    let arch = match config {
        ArchConfig::Opt(_) => "OPTForCausalLM",
        ArchConfig::Gpt2(_) => "GPT2LMHeadModel",
        ArchConfig::Llama(c) => c.family.hf_class(),
    };
    cfg["architectures"] = serde_json::json!([arch]);
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    std::fs::write(dir.join("config.json"), text)?;
    save_synthetic_safetensors(config, seed, &dir.join("model.safetensors"))
}
