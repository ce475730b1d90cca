//! What a checkpoint's `generation_config.json` says about stopping: its EOS ids (possibly
//! several, as Llama 3 instruct and Qwen list), which transformers' `generate` stops at. Without
//! the file, the ids of config.json.

use crate::error::{EngineError, Result};
use std::path::Path;
use tokbench_core::rotary_config::TokenIds;
use tokbench_core::ArchConfig;

/// The EOS ids generation stops at for the model in `model_dir` (None: synthetic, no files).
pub fn eos_token_ids(model_dir: Option<&Path>, config: &ArchConfig) -> Result<Vec<u32>> {
    let from_config = config.spec().eos_token_ids;
    let Some(path) = model_dir.map(|d| d.join("generation_config.json")).filter(|p| p.is_file()) else {
        return Ok(from_config);
    };
    let bad = |e: String| EngineError::InvalidWorkload(format!("{}: {e}. Fix or delete the file", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    match v.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Ok(from_config),
        Some(ids) => {
            let ids: TokenIds = serde_json::from_value(ids.clone()).map_err(|_| bad(format!("eos_token_id must be an id or a list of ids, found {ids}")))?;
            Ok(ids.to_vec())
        }
    }
}
