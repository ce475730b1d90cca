//! How much device memory a job needs (weights, KV cache, activations), to refuse hopeless
//! jobs before loading anything.

use crate::device;
use crate::error::{EngineError, Result};
use crate::gpu;
use device::MIB;
use tokbench_core::{ArchConfig, DTypeSpec, DeviceSpec};

/// CUDA context, cuBLAS workspace and allocator slack not covered by the tensor estimate.
const CUDA_OVERHEAD_BYTES: u64 = 512 << 20;

/// Device memory a job needs, by part (bytes). An estimate to refuse hopeless jobs up front.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// K and V for every layer, batch row and position (prompt + generated), in the model dtype.
    pub kv_cache: u64,
    /// Largest transient activations: prefill logits (f32) and attention scores / FFN input.
    pub activations: u64,
    /// Sequences the kv_cache figure was computed for.
    batch_rows: u64,
}

impl MemoryEstimate {
    pub fn new(config: &ArchConfig, dtype: DTypeSpec, batch: usize, max_prompt_len: usize, max_tokens: usize) -> MemoryEstimate {
        let d = device::dtype_size(dtype);
        // The last generated token is never fed back: the cache holds prompt + max_tokens - 1.
        let (b, t, s) = (batch as u64, max_prompt_len as u64, (max_prompt_len + max_tokens).saturating_sub(1) as u64);
        let spec = config.spec();
        let ffn = spec.intermediate_size as u64;
        let weights = spec.parameters() * d;
        // Key/value heads only (grouped-query attention caches fewer heads than it queries).
        let kv_cache = spec.kv_bytes_per_token(d as usize) * b * s;
        let logits = b * t * spec.vocab_size as u64 * 4;
        let scores = b * spec.num_heads as u64 * t * t * d;
        // The gated MLP holds gate and up (2 * ffn) and their product at once.
        let ffn_act = match spec.mlp {
            tokbench_core::arch::MlpKind::Plain => 2 * b * t * ffn * d,
            tokbench_core::arch::MlpKind::GatedSilu => 3 * b * t * ffn * d,
        };
        MemoryEstimate { weights, kv_cache, activations: logits + scores + ffn_act, batch_rows: b }
    }
    /// Adds the KV cache of a second batch shape of `batch` sequences (a job's partial last
    /// batch, which the generator keeps beside the full batches' cache); 0 adds nothing.
    pub fn with_second_batch(mut self, batch: usize) -> MemoryEstimate {
        if let Some(per_row) = self.kv_cache.checked_div(self.batch_rows) {
            self.kv_cache += per_row * batch as u64;
        }
        self
    }

    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations + CUDA_OVERHEAD_BYTES
    }
}

pub(super) fn check_fits(spec: &DeviceSpec, est: &MemoryEstimate, info: &gpu::DeviceInfo) -> Result<()> {
    // Without NVML the free memory is unknown (0): let candle try and map its OOM instead.
    if info.memory_total_bytes == 0 {
        return Ok(());
    }
    let needed = est.total();
    if needed > info.memory_free_bytes {
        return Err(EngineError::OutOfMemory {
            device: format!("{spec} ({})", info.gpu_name),
            needed_mb: needed as f64 / MIB,
            free_mb: info.memory_free_bytes as f64 / MIB,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokbench_core::Catalog;

    #[test]
    fn memory_estimate_counts_weights_and_kv() {
        let cfg = Catalog::get("opt-125m").unwrap().config();
        let e = MemoryEstimate::new(&cfg, DTypeSpec::F16, 4, 32, 128);
        assert_eq!(e.weights, 125_239_296 * 2);
        // 2 (K,V) * 12 layers * 4 rows * 159 positions (32 + 128 - 1) * 768 * 2 bytes
        assert_eq!(e.kv_cache, 2 * 12 * 4 * 159 * 768 * 2);
        // A partial last batch of 3 keeps its own cache.
        assert_eq!(e.clone().with_second_batch(3).kv_cache, 2 * 12 * 7 * 159 * 768 * 2);
        assert_eq!(e.clone().with_second_batch(0), e);
        assert!(e.total() > e.weights + e.kv_cache);
    }

    /// The demo ran on a GTX 1650 (4 GiB, of which a desktop leaves ~3.6 GiB free) and suggested
    /// opt-1.3b and gpt2-large as its largest models: at batch 1 in f16, with a 128-token prompt
    /// and 128 new tokens, the check (weights + KV + activations + the CUDA context, cuBLAS
    /// workspace and allocator slack) lets them run there, and refuses opt-1.3b in f32.
    #[test]
    fn the_demos_largest_models_fit_a_4_gib_card_in_f16() {
        let gtx_1650 = gpu::DeviceInfo {
            backend: "cuda".into(),
            device_index: 0,
            gpu_name: "NVIDIA GeForce GTX 1650".into(),
            memory_total_bytes: 4 << 30,
            memory_free_bytes: (36 << 30) / 10,
            driver_version: String::new(),
            cuda_version: String::new(),
        };
        for (name, dtype, fits) in [("opt-1.3b", DTypeSpec::F16, true), ("gpt2-large", DTypeSpec::F16, true), ("opt-1.3b", DTypeSpec::F32, false)] {
            let e = MemoryEstimate::new(&Catalog::get(name).unwrap().config(), dtype, 1, 128, 128);
            println!("{name} {dtype:?} b1 128/128: needs {:.0} MiB (weights {:.0}, KV {:.1}, activations {:.1}, CUDA context and workspace {:.0})",
                e.total() as f64 / MIB, e.weights as f64 / MIB, e.kv_cache as f64 / MIB, e.activations as f64 / MIB, CUDA_OVERHEAD_BYTES as f64 / MIB);
            assert_eq!(check_fits(&DeviceSpec::Cuda(0), &e, &gtx_1650).is_ok(), fits, "{name} {dtype:?}: {:.0} MiB", e.total() as f64 / MIB);
        }
    }

    #[test]
    fn huge_job_is_refused_before_loading() {
        let cfg = Catalog::get("opt-1.3b").unwrap().config();
        let e = MemoryEstimate::new(&cfg, DTypeSpec::F32, 256, 1024, 1024);
        let info = gpu::DeviceInfo {
            backend: "cuda".into(),
            device_index: 0,
            gpu_name: "GTX 1650".into(),
            memory_total_bytes: 4 << 30,
            memory_free_bytes: 3 << 30,
            driver_version: String::new(),
            cuda_version: String::new(),
        };
        let err = check_fits(&DeviceSpec::Cuda(0), &e, &info).unwrap_err();
        assert!(matches!(err, EngineError::OutOfMemory { free_mb, .. } if free_mb == 3072.0), "{err}");
    }
}
