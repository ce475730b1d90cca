//! Rotary position embeddings as transformers computes them (`modeling_rope_utils.py`): inverse
//! frequencies in f32 (with `linear` or `llama3` scaling), angles `position * inv_freq` in f32
//! for the positions of this forward pass, cos/sin cast to the model dtype, applied to q and k
//! in the rotate-half layout (candle-nn's `rope`, the non-interleaved variant).
//!
//! The angles are computed per forward pass from the positions (a few small ops per pass, shared
//! by every layer) rather than read from a table: a table for Llama 3's 131072 positions would
//! hold 64 MB of device memory for what costs microseconds to compute.

use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use tokbench_core::RopeScaling;

pub(crate) struct RotaryEmbedding {
    /// [1, 1, head_dim / 2] f32
    inv_freq: Tensor,
}

/// transformers' inverse frequencies for `head_dim`, base `theta` and `scaling`.
pub(crate) fn inverse_frequencies(head_dim: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    let base = theta as f32;
    let plain = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
    match scaling {
        RopeScaling::None => plain.collect(),
        RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            // `_compute_llama3_parameters`: long wavelengths scaled down by `factor`, short ones
            // kept, the band between interpolated.
            let (factor, low, high) = (factor as f32, low_freq_factor as f32, high_freq_factor as f32);
            let old_len = original_max_position_embeddings as f32;
            let (low_wavelen, high_wavelen) = (old_len / low, old_len / high);
            plain
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl RotaryEmbedding {
    pub(crate) fn new(head_dim: usize, theta: f64, scaling: RopeScaling, device: &Device) -> Result<RotaryEmbedding> {
        let inv = inverse_frequencies(head_dim, theta, scaling);
        let n = inv.len();
        Ok(RotaryEmbedding { inv_freq: Tensor::from_vec(inv, (1, 1, n), device)? })
    }

    /// The inverse frequencies, f32 [1, 1, head_dim / 2] (for kernels that rotate themselves).
    pub(crate) fn inv_freq(&self) -> &Tensor {
        &self.inv_freq
    }

    /// cos and sin [b, t, head_dim / 2] in `dtype` for `positions` [b, t] u32.
    pub(crate) fn cos_sin(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let angles = positions.to_dtype(DType::F32)?.unsqueeze(2)?.broadcast_mul(&self.inv_freq)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }
}

/// `x` [b, heads, t, head_dim] (contiguous) rotated by `cos`/`sin` [b, t, head_dim / 2].
pub(crate) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::rotary_emb::rope(x, cos, sin)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_short_wavelengths_and_divides_long_ones() {
        // Llama 3.1's values: head_dim 128, theta 500000, factor 8, band 1..4 over 8192.
        let s = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        let plain = inverse_frequencies(128, 500000.0, RopeScaling::None);
        let scaled = inverse_frequencies(128, 500000.0, s);
        assert_eq!(plain[0], scaled[0], "the highest frequency is kept");
        assert!((scaled[63] - plain[63] / 8.0).abs() <= plain[63] * 1e-6, "the lowest is divided by the factor");
        let changed = plain.iter().zip(&scaled).filter(|(p, s)| p != s).count();
        assert!(changed > 10 && changed < 64, "{changed}");
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let plain = inverse_frequencies(8, 10000.0, RopeScaling::None);
        let scaled = inverse_frequencies(8, 10000.0, RopeScaling::Linear { factor: 4.0 });
        assert_eq!(plain.len(), 4);
        for (p, s) in plain.iter().zip(&scaled) {
            assert_eq!(p / 4.0, *s);
        }
    }
}
