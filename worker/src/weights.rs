//! Where weights come from: real files (safetensors, memory-mapped; sharded; or PyTorch
//! `pytorch_model.bin`) or synthetic (seeded random values generated on the target device).

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum WeightSource {
    /// One or more `.safetensors` files (shards) or one `pytorch_model.bin`.
    Files(Vec<PathBuf>),
    /// Deterministic seeded random values, generated directly on the target device.
    Synthetic { seed: u64 },
}
