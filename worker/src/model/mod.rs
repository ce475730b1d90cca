//! The two architectures tokbench implements on candle: OPT and GPT-2.
//! (Interface fixed; bodies are filled in by the model work.)

use crate::error::Result;
use crate::weights::WeightSource;
use candle_core::{DType, Device, Tensor};
use tokbench_core::ArchConfig;

pub enum Model {
    #[doc(hidden)]
    Placeholder(ArchConfig, Device, DType),
}

impl Model {
    /// Build the model from `source` (real files or synthetic) on `device` in `dtype`.
    /// Tensor shapes are checked against `config` (ShapeMismatch / TensorMissing on error).
    pub fn load(config: &ArchConfig, source: &WeightSource, dtype: DType, device: &Device) -> Result<Model> {
        let _ = source;
        Ok(Model::Placeholder(config.clone(), device.clone(), dtype))
    }
    pub fn config(&self) -> &ArchConfig {
        match self {
            Model::Placeholder(c, _, _) => c,
        }
    }
    pub fn device(&self) -> &Device {
        match self {
            Model::Placeholder(_, d, _) => d,
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Model::Placeholder(_, _, t) => *t,
        }
    }
    /// Parameters counted from the loaded tensors (tied lm_head once).
    pub fn num_parameters(&self) -> u64 {
        todo!()
    }
    /// Bytes of the loaded weight tensors.
    pub fn weight_bytes(&self) -> u64 {
        todo!()
    }
    /// Full forward pass of a left-padded batch without cache: `input_ids` [b, t] u32,
    /// `attention_mask` [b, t] u32 (1 = real token, 0 = padding). Returns logits [b, t, vocab] f32.
    /// Used by parity tests against transformers.
    pub fn forward_full(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let _ = (input_ids, attention_mask);
        todo!()
    }
}
