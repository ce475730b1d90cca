//! GPT-2 as in transformers' `modeling_gpt2.py`: learned absolute positions, pre-LN blocks,
//! fused qkv projection `c_attn`, Conv1D layers (weights stored [in, out], the transpose of
//! nn.Linear), gelu_new MLP, final `ln_f`, lm_head tied to `wte`.

use super::{attention, Activation, KvCache, Launch, LayerNorm, Linear};
use crate::error::Result;
use crate::weights::{Init, WeightLoader, HF_INIT_STD};
use candle_core::{Module, Tensor};
use tokbench_core::Gpt2Config;

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_c_proj: Linear,
}

pub(crate) struct Gpt2 {
    wte: candle_nn::Embedding,
    wpe: candle_nn::Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    hidden: usize,
    heads: usize,
    activation: Activation,
}

/// A Conv1D layer: weight [in, out] as stored, used as a Linear over its transposed view
/// (no copy: Linear multiplies by the transpose of its weight, i.e. the stored matrix).
fn conv1d(l: &mut WeightLoader, name: &str, inp: usize, out: usize) -> Result<(Tensor, Tensor)> {
    let w = l.get(&format!("{name}.weight"), &[inp, out], Init::Normal(HF_INIT_STD))?;
    let b = l.get(&format!("{name}.bias"), &[out], Init::Zeros)?;
    Ok((w, b))
}

impl Gpt2 {
    pub(crate) fn load(c: &Gpt2Config, l: &mut WeightLoader) -> Result<Gpt2> {
        let activation = Activation::from_name(&c.activation_function)?;
        let h = c.n_embd;
        let f = c.n_inner();
        let eps = c.layer_norm_epsilon;
        l.choose_prefix(&["transformer.", ""], "wte.weight")?;
        let wte = l.get("wte.weight", &[c.vocab_size, h], Init::Normal(HF_INIT_STD))?;
        let wpe = l.get("wpe.weight", &[c.n_positions, h], Init::Normal(HF_INIT_STD))?;
        let mut blocks = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("h.{i}.{s}");
            let ln_1 = LayerNorm::load(l, &n("ln_1"), h, true, eps)?;
            let (aw, ab) = conv1d(l, &n("attn.c_attn"), h, 3 * h)?;
            let (pw, pb) = conv1d(l, &n("attn.c_proj"), h, h)?;
            let ln_2 = LayerNorm::load(l, &n("ln_2"), h, true, eps)?;
            let (fw, fb) = conv1d(l, &n("mlp.c_fc"), h, f)?;
            let (mw, mb) = conv1d(l, &n("mlp.c_proj"), f, h)?;
            // transformers divides the scores by sqrt(head_dim) (and by layer_idx + 1 with
            // scale_attn_by_inverse_layer_idx); the same factor is folded into the query
            // columns of c_attn (weight and bias) so the hot path has no scaling op.
            let mut scale = 1.0;
            if c.scale_attn_weights {
                scale /= (c.head_dim() as f64).sqrt();
            }
            if c.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            let aw = Tensor::cat(&[(aw.narrow(1, 0, h)? * scale)?, aw.narrow(1, h, 2 * h)?], 1)?;
            let ab = Tensor::cat(&[(ab.narrow(0, 0, h)? * scale)?, ab.narrow(0, h, 2 * h)?], 0)?;
            blocks.push(Block {
                ln_1,
                c_attn: Linear::new(aw.t()?, Some(ab))?,
                attn_c_proj: Linear::new(pw.t()?, Some(pb))?,
                ln_2,
                c_fc: Linear::new(fw.t()?, Some(fb))?,
                mlp_c_proj: Linear::new(mw.t()?, Some(mb))?,
            });
        }
        let ln_f = LayerNorm::load(l, "ln_f", h, true, eps)?;
        Ok(Gpt2 {
            lm_head: Linear::new(wte.clone(), None)?,
            wte: candle_nn::Embedding::new(wte, h),
            wpe: candle_nn::Embedding::new(wpe, h),
            blocks,
            ln_f,
            hidden: h,
            heads: c.n_head,
            activation,
        })
    }

    /// Hidden states after ln_f: [b, t, n_embd].
    pub(crate) fn hidden(&self, l: &Launch, ids: &Tensor, position_rows: &Tensor, bias: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h0 = self.hidden;
        let mut h = (self.wte.forward(ids)? + self.wpe.forward(position_rows)?)?;
        for (i, b) in self.blocks.iter().enumerate() {
            // Each intermediate is dropped as soon as it is used: at prefill of a large batch
            // these are what the engine's peak memory holds beyond weights and cache.
            let qkv = b.c_attn.forward(l, &b.ln_1.forward(l, &h)?)?;
            debug_assert_eq!(qkv.dim(2)?, 3 * h0);
            let a = attention(l, qkv, self.heads, bias, cache.as_deref_mut(), i)?;
            h = b.attn_c_proj.forward_residual(l, &a, &h)?;
            drop(a);
            let f = b.c_fc.forward_act(l, &b.ln_2.forward(l, &h)?, self.activation)?;
            h = b.mlp_c_proj.forward_residual(l, &f, &h)?;
        }
        self.ln_f.forward(l, &h)
    }

    /// One decode step on the fused CUDA kernels (see `fast_decode::StepInputs`). Returns the
    /// logits [b, vocab], or None when the greedy choice went into the argmax keys inside the
    /// lm_head GEMV. Reads every per-step value from the device, so the step can be replayed as
    /// a CUDA graph. Each norm runs inside the GEMV that consumes it (ln_1 in c_attn, ln_2 in
    /// c_fc, ln_f in lm_head) where the GEMV applies, so a layer is four GEMVs and one attention
    /// kernel.
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_logits(&self, l: &Launch, step: &super::fast_decode::StepInputs<'_>) -> Result<Option<Tensor>> {
        let super::fast_decode::StepInputs { ids, positions, slot, pad_bias, cache, argmax_keys } = *step;
        use super::cuda_ops;
        let mut h = cuda_ops::embed(l, ids, positions, self.wte.embeddings(), Some(self.wpe.embeddings()))?;
        for (i, b) in self.blocks.iter().enumerate() {
            let qkv = b.c_attn.matmul_no_bias_normed(l, &h, &b.ln_1)?;
            let (kc, vc) = cache.layer(i);
            let a = cuda_ops::decode_attention(l, &qkv, b.c_attn.bias(), kc, vc, slot, pad_bias)?;
            h = b.attn_c_proj.forward_residual(l, &a, &h)?;
            h = b.mlp_c_proj.forward_residual(l, &b.c_fc.forward_normed(l, &h, &b.ln_2, Some(self.activation))?, &h)?;
        }
        if self.lm_head.argmax_normed(l, &h, Some(&self.ln_f), argmax_keys)? {
            return Ok(None);
        }
        Ok(Some(self.lm_head.forward_normed(l, &h, &self.ln_f, None)?))
    }

    pub(crate) fn logits(&self, l: &Launch, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(l, hidden)
    }
}
