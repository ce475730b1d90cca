//! The rotary decoder families -- Llama (SmolLM2, TinyLlama, Llama 3.x), Mistral, Qwen2, Qwen3 --
//! as in transformers' `modeling_llama.py`, `modeling_mistral.py`, `modeling_qwen2.py` and
//! `modeling_qwen3.py`. The four share names and layer recipe; the config says what differs
//! (`LlamaConfig`): grouped key/value heads, head_dim, qkv bias (Qwen2), per-head q/k RMSNorm
//! (Qwen3), tied embeddings, rotary base and scaling.
//!
//! Reads like the model card: embed, then per layer `x + o(attn(rope(q, k), v))` over the
//! normed input and `x + down(silu(gate(n)) * up(n))` over the normed result, a final RMSNorm
//! and the head. Mistral v0.1's sliding window is enforced by refusing longer sequences
//! (`generate`), so no mask here needs it.
//!
//! The decode step also comes in a static form ([`Llama::decode_step_static`]): every per-step
//! value (ids, positions, the cache column) read from device tensors and every shape fixed, so
//! the CUDA decoder (`fast_decode`) can capture it once as a CUDA graph and replay it.

use super::layers::{grouped_attention, rotary_qkv, scaled, HeadLayout, RmsNorm, Rope};
use super::rotary::RotaryEmbedding;
use super::{KvCache, Launch, Linear};
use crate::error::{EngineError, Result};
use crate::weights::{Init, WeightLoader, HF_INIT_STD};
use candle_core::{Module, Tensor, D};
use tokbench_core::LlamaConfig;

struct Layer {
    input_layernorm: RmsNorm,
    /// q_proj, k_proj and v_proj as one [(heads + 2 kv_heads) * head_dim, hidden] projection;
    /// q pre-scaled by head_dim^-0.5 unless a q norm follows it (then the norm carries the scale).
    qkv_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    /// gate_proj and up_proj as one [2 * intermediate, hidden] projection.
    gate_up_proj: Linear,
    down_proj: Linear,
}

pub(crate) struct Llama {
    /// Column numbers 0..capacity (u32, on the model's device) of the last static decode step's
    /// cache, kept so a captured step copies nothing from the host.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    columns: std::sync::Mutex<Option<Tensor>>,
    embed_tokens: candle_nn::Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    layout: HeadLayout,
    intermediate: usize,
}

fn weight(l: &mut WeightLoader, name: &str, out: usize, inp: usize) -> Result<Tensor> {
    l.get(&format!("{name}.weight"), &[out, inp], Init::Normal(HF_INIT_STD))
}
fn bias(l: &mut WeightLoader, name: &str, out: usize, present: bool) -> Result<Option<Tensor>> {
    if present {
        Ok(Some(l.get(&format!("{name}.bias"), &[out], Init::Zeros)?))
    } else {
        Ok(None)
    }
}

impl Llama {
    pub(crate) fn load(c: &LlamaConfig, l: &mut WeightLoader) -> Result<Llama> {
        let (h, v, f) = (c.hidden_size, c.vocab_size, c.intermediate_size);
        let layout = HeadLayout { heads: c.num_attention_heads, kv_heads: c.num_kv_heads(), head_dim: c.head_dim() };
        let (q_width, kv_width) = (layout.heads * layout.head_dim, layout.kv_heads * layout.head_dim);
        let eps = c.rms_norm_eps;
        let scale = (layout.head_dim as f64).powf(-0.5);
        let (theta, scaling) = c.rope().map_err(|e| EngineError::InvalidWorkload(e.to_string()))?;

        l.choose_prefix(&["model.", ""], "embed_tokens.weight")?;
        let embed_tokens = l.get("embed_tokens.weight", &[v, h], Init::Normal(HF_INIT_STD))?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let n = |s: &str| format!("layers.{i}.{s}");
            let input_layernorm = RmsNorm::load(l, &n("input_layernorm"), h, eps)?;
            let qw = weight(l, &n("self_attn.q_proj"), q_width, h)?;
            let qb = bias(l, &n("self_attn.q_proj"), q_width, c.qkv_bias())?;
            let kw = weight(l, &n("self_attn.k_proj"), kv_width, h)?;
            let kb = bias(l, &n("self_attn.k_proj"), kv_width, c.qkv_bias())?;
            let vw = weight(l, &n("self_attn.v_proj"), kv_width, h)?;
            let vb = bias(l, &n("self_attn.v_proj"), kv_width, c.qkv_bias())?;
            let ow = weight(l, &n("self_attn.o_proj"), h, q_width)?;
            let ob = bias(l, &n("self_attn.o_proj"), h, c.o_bias())?;
            let (q_norm, k_norm) = if c.qk_norm() {
                // RMSNorm(x) * w * s = RMSNorm(x) * (w * s): the scale rides on the q norm's weight.
                let qn = RmsNorm::load(l, &n("self_attn.q_norm"), layout.head_dim, eps)?.scaled(scale)?;
                (Some(qn), Some(RmsNorm::load(l, &n("self_attn.k_norm"), layout.head_dim, eps)?))
            } else {
                (None, None)
            };
            let q_scale = if c.qk_norm() { 1.0 } else { scale };
            let post_attention_layernorm = RmsNorm::load(l, &n("post_attention_layernorm"), h, eps)?;
            let gw = weight(l, &n("mlp.gate_proj"), f, h)?;
            let gb = bias(l, &n("mlp.gate_proj"), f, c.mlp_bias)?;
            let uw = weight(l, &n("mlp.up_proj"), f, h)?;
            let ub = bias(l, &n("mlp.up_proj"), f, c.mlp_bias)?;
            let dw = weight(l, &n("mlp.down_proj"), h, f)?;
            let db = bias(l, &n("mlp.down_proj"), h, c.mlp_bias)?;
            let qkv_w = Tensor::cat(&[scaled(qw, q_scale)?, kw, vw], 0)?;
            let qkv_b = match (qb, kb, vb) {
                (Some(qb), Some(kb), Some(vb)) => Some(Tensor::cat(&[scaled(qb, q_scale)?, kb, vb], 0)?),
                _ => None,
            };
            let gate_up_b = match (gb, ub) {
                (Some(g), Some(u)) => Some(Tensor::cat(&[g, u], 0)?),
                _ => None,
            };
            layers.push(Layer {
                input_layernorm,
                qkv_proj: Linear::new(qkv_w, qkv_b)?,
                q_norm,
                k_norm,
                o_proj: Linear::new(ow, ob)?,
                post_attention_layernorm,
                gate_up_proj: Linear::new(Tensor::cat(&[gw, uw], 0)?, gate_up_b)?,
                down_proj: Linear::new(dw, db)?,
            });
        }
        let norm = RmsNorm::load(l, "norm", h, eps)?;
        let lm_head = if c.tied_embeddings() {
            // Tied: the embedding matrix itself (a stored `lm_head.weight`, as Qwen3's files
            // have, holds the same values and is not read).
            Linear::new(embed_tokens.clone(), None)?
        } else {
            if !l.is_synthetic() && !l.contains_root("lm_head.weight") {
                return Err(EngineError::TensorMissing {
                    name: "lm_head.weight".into(),
                    detail: "config.json says tie_word_embeddings: false (or leaves it unset, which means false), so the output projection must be stored".into(),
                });
            }
            Linear::new(l.get_root("lm_head.weight", &[v, h], Init::Normal(HF_INIT_STD))?, None)?
        };
        let (_, device) = l.target();
        Ok(Llama {
            columns: std::sync::Mutex::new(None),
            embed_tokens: candle_nn::Embedding::new(embed_tokens, h),
            layers,
            norm,
            lm_head,
            rotary: RotaryEmbedding::new(layout.head_dim, theta, scaling, &device)?,
            layout,
            intermediate: f,
        })
    }

    /// Hidden states after the final norm: [b, t, hidden]. `positions` [b, t] u32 are the
    /// rotary positions (no offset).
    pub(crate) fn hidden(&self, l: &Launch, ids: &Tensor, positions: &Tensor, bias: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let mut h = self.embed_tokens.forward(ids)?;
        let (cos, sin) = self.rotary.cos_sin(positions, h.dtype())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let qkv = layer.qkv_proj.forward(l, &layer.input_layernorm.forward(&h)?)?;
            let a = grouped_attention(
                l,
                qkv,
                self.layout,
                layer.q_norm.as_ref(),
                layer.k_norm.as_ref(),
                &Rope { cos: &cos, sin: &sin, positions, inv_freq: self.rotary.inv_freq() },
                bias,
                cache.as_deref_mut(),
                i,
            )?;
            h = layer.o_proj.forward_residual(l, &a, &h)?;
            drop(a);
            let gate_up = layer.gate_up_proj.forward(l, &layer.post_attention_layernorm.forward(&h)?)?;
            let m = super::layers::swiglu(l, &gate_up)?;
            drop(gate_up);
            h = layer.down_proj.forward_residual(l, &m, &h)?;
        }
        self.norm.forward(&h)
    }

    pub(crate) fn logits(&self, l: &Launch, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(l, hidden)
    }

    /// One greedy decode step from device-side inputs: `ids`, `positions` u32 [b] (rotary
    /// positions of the tokens fed), `slot` u32 [1] (the cache column they are written to),
    /// `pad_bias` [b, capacity] f32 (MASKED at left padding). Writes the step's keys and values at
    /// the slot (a scatter, not a host offset) and attends over the whole capacity with the
    /// columns after the slot masked, so no value of the step lives on the host and its shapes
    /// never change: the step can be captured as a CUDA graph and replayed. Returns the logits
    /// [b, vocab] (model dtype). The caller advances ids, positions and slot.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn decode_step_static(
        &self,
        l: &Launch,
        ids: &Tensor,
        positions: &Tensor,
        slot: &Tensor,
        pad_bias: &Tensor,
        cache: &KvCache,
    ) -> Result<Tensor> {
        let b = ids.dim(0)?;
        let cap = cache.capacity();
        let HeadLayout { heads, kv_heads, head_dim: d } = self.layout;
        let g = heads / kv_heads;
        let mut h = self.embed_tokens.forward(&ids.reshape((b, 1))?)?;
        let (cos, sin) = self.rotary.cos_sin(&positions.reshape((b, 1))?, h.dtype())?;
        // [b, 1, 1, cap]: the padding bias, and MASKED after the slot (columns not written yet).
        let columns = {
            let mut kept = self.columns.lock().unwrap_or_else(|p| p.into_inner());
            match kept.as_ref() {
                Some(c) if c.dim(0)? == cap && c.device().same_device(ids.device()) => c.clone(),
                _ => {
                    let c = Tensor::arange(0u32, cap as u32, ids.device())?;
                    *kept = Some(c.clone());
                    c
                }
            }
        };
        let future = columns.reshape((1, cap))?.broadcast_gt(&slot.reshape((1, 1))?)?.to_dtype(candle_core::DType::F32)?;
        // minimum, not sum: MASKED + MASKED would overflow to -inf.
        let bias = pad_bias.broadcast_minimum(&future.affine(super::MASKED as f64, 0.0)?)?.reshape((b, 1, 1, cap))?;
        let index = slot.reshape((1, 1, 1, 1))?.broadcast_as((b, kv_heads, 1, d))?.contiguous()?;
        for (i, layer) in self.layers.iter().enumerate() {
            let qkv = layer.qkv_proj.forward(l, &layer.input_layernorm.forward(&h)?)?;
            let (q, k, v) = rotary_qkv(&qkv, self.layout, layer.q_norm.as_ref(), layer.k_norm.as_ref(), &cos, &sin)?;
            let (kc, vc) = cache.layer(i);
            kc.scatter_set(&index, &k, 2)?;
            vc.scatter_set(&index, &v, 2)?;
            let scores = q.reshape((b, kv_heads, g, d))?.matmul(&kc.t()?)?.reshape((b, heads, 1, cap))?;
            let probs = super::layers::masked_softmax(l, scores, &bias)?;
            let a = probs.reshape((b, kv_heads, g, cap))?.matmul(vc)?.reshape((b, 1, heads * d))?;
            h = layer.o_proj.forward_residual(l, &a, &h)?;
            let gate_up = layer.gate_up_proj.forward(l, &layer.post_attention_layernorm.forward(&h)?)?;
            let f = self.intermediate;
            let m = (gate_up.narrow(D::Minus1, 0, f)?.silu()? * gate_up.narrow(D::Minus1, f, f)?)?;
            h = layer.down_proj.forward_residual(l, &m, &h)?;
        }
        let logits = self.lm_head.forward(l, &self.norm.forward(&h)?)?;
        Ok(logits.reshape((b, ()))?)
    }

    /// One greedy decode step on tokbench's kernels (the CUDA decoder, `fast_decode`), per layer
    /// five launches where candle's ops take ~25: the qkv GEMV with the input RMSNorm in its
    /// prologue (and Qwen2's bias), the rotary grouped-query attention (Qwen3's q/k norms, the
    /// rotary, the cache write and the attention in one kernel), the o GEMV with the residual,
    /// the gate|up GEMV with the post-attention norm, and the down GEMV with SwiGLU in its
    /// prologue and the residual; then the head GEMV with the final norm and the greedy choice.
    /// Returns `None` where the head chose the ids itself (`argmax_keys`), else the logits [b,
    /// vocab]. Rows past the GEMV's reach (`--gemv-max-rows`) take cuBLAS with the norm and the
    /// activation as separate kernels; where the attention kernel does not apply (head size,
    /// cache length), the static step of candle's ops runs instead.
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_logits(&self, l: &Launch, step: &super::fast_decode::StepInputs<'_>) -> Result<Option<Tensor>> {
        use super::cuda_ops;
        let super::fast_decode::StepInputs { ids, positions, slot, pad_bias, cache, argmax_keys } = *step;
        let HeadLayout { heads, head_dim, .. } = self.layout;
        let dtype = self.embed_tokens.embeddings().dtype();
        if !cuda_ops::decode_attention_rope_fits(dtype, head_dim, cache.capacity()) {
            return Ok(Some(self.decode_step_static(l, ids, positions, slot, pad_bias, cache)?));
        }
        let mut h = cuda_ops::embed(l, ids, positions, self.embed_tokens.embeddings(), None)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let qkv = layer.qkv_proj.forward_rms_normed(l, &h, &layer.input_layernorm)?;
            let (kc, vc) = cache.layer(i);
            let qk_norm = super::layers::qk_norm(layer.q_norm.as_ref(), layer.k_norm.as_ref());
            let rot = cuda_ops::RotaryHeads { heads, positions, inv_freq: self.rotary.inv_freq(), qk_norm };
            let a = cuda_ops::decode_attention_rope(l, &qkv, kc, vc, slot, pad_bias, rot)?
                .ok_or_else(|| EngineError::InvalidWorkload("the rotary decode attention kernel refused a cache it was checked to fit".into()))?;
            h = layer.o_proj.forward_residual(l, &a, &h)?;
            let gate_up = layer.gate_up_proj.forward_rms_normed(l, &h, &layer.post_attention_layernorm)?;
            h = layer.down_proj.forward_swiglu_residual(l, &gate_up, &h)?;
        }
        if self.lm_head.argmax_with(l, &h, Some(self.norm.prologue()), argmax_keys)? {
            return Ok(None);
        }
        Ok(Some(self.lm_head.forward(l, &self.norm.forward(&h)?)?))
    }

    /// One decode step of a batch of ragged sequences over the server's paged KV pool: the
    /// [`Self::decode_logits`] chain with the attention reading and writing the blocks in place
    /// (`cuda_ops::decode_attention_rope_paged`), so nothing is gathered or scattered per step.
    /// `ids`, `positions` u32 [b]; `pool` per layer (keys, values) `[rows, kv_heads * head_dim]`.
    /// Returns the logits [b, vocab] (model dtype), or `None` where the attention kernel does not
    /// apply (head size, the longest sequence past its shared memory): the caller gathers.
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_logits_paged(
        &self,
        l: &Launch,
        ids: &Tensor,
        positions: &Tensor,
        paged: super::cuda_ops::PagedBlocks<'_>,
        pool: &[(Tensor, Tensor)],
    ) -> Result<Option<Tensor>> {
        use super::cuda_ops;
        let HeadLayout { heads, head_dim, .. } = self.layout;
        let dtype = self.embed_tokens.embeddings().dtype();
        if pool.len() != self.layers.len() || !cuda_ops::decode_attention_rope_fits(dtype, head_dim, paged.cap) {
            return Ok(None);
        }
        let mut h = cuda_ops::embed(l, ids, positions, self.embed_tokens.embeddings(), None)?;
        for (layer, (kp, vp)) in self.layers.iter().zip(pool) {
            let qkv = layer.qkv_proj.forward_rms_normed(l, &h, &layer.input_layernorm)?;
            let qk_norm = super::layers::qk_norm(layer.q_norm.as_ref(), layer.k_norm.as_ref());
            let rot = cuda_ops::RotaryHeads { heads, positions, inv_freq: self.rotary.inv_freq(), qk_norm };
            let Some(a) = cuda_ops::decode_attention_rope_paged(l, &qkv, kp, vp, paged, rot)? else {
                return Ok(None);
            };
            h = layer.o_proj.forward_residual(l, &a, &h)?;
            let gate_up = layer.gate_up_proj.forward_rms_normed(l, &h, &layer.post_attention_layernorm)?;
            h = layer.down_proj.forward_swiglu_residual(l, &gate_up, &h)?;
        }
        Ok(Some(self.lm_head.forward(l, &self.norm.forward(&h)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KvCache, Model, PrefillInputs, MASKED};
    use crate::generate::{generate_batch, GenerationParams};
    use crate::weights::WeightSource;
    use candle_core::{DType, Device, Tensor};
    use tokbench_core::Catalog;

    fn argmax_rows(logits: &Tensor) -> Vec<u32> {
        logits.to_dtype(DType::F32).unwrap().argmax(candle_core::D::Minus1).unwrap().to_vec1::<u32>().unwrap()
    }

    /// The static step (what the CUDA decoder captures as a graph), driven here on the CPU with
    /// ids, positions and slot advanced by hand, gives the tokens of the eager generation loop
    /// for a left-padded batch: scatter writes at the slot, full-capacity attention with the
    /// unwritten columns masked.
    #[test]
    fn static_decode_step_matches_eager_generation() {
        for name in ["tiny-llama", "tiny-qwen3"] {
            let config = Catalog::get(name).unwrap().config();
            let spec = config.spec();
            let model = Model::load(&config, &WeightSource::Synthetic { seed: 3 }, DType::F32, &Device::Cpu).unwrap();
            let prompts = vec![vec![5u32, 17, 300, 41, 9], vec![8u32, 2000]];
            let steps = 10;
            let expected = generate_batch(&model, &prompts, &GenerationParams::new(&config, name, steps + 1), &mut |_| {}).unwrap().tokens;

            let (b, t) = (prompts.len(), 5);
            let mut ids = Vec::new();
            let mut mask = Vec::new();
            for p in &prompts {
                ids.extend(std::iter::repeat_n(0u32, t - p.len()).chain(p.iter().copied()));
                mask.push([vec![0u32; t - p.len()], vec![1u32; p.len()]].concat());
            }
            let inputs = PrefillInputs::new(&mask, 0);
            let cap = t + steps;
            let mut cache = KvCache::new(spec.num_layers, b, spec.num_kv_heads, cap, spec.head_dim, DType::F32, &Device::Cpu).unwrap();
            let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
            let logits = model
                .forward(&ids, &inputs.positions(&Device::Cpu).unwrap(), &inputs.bias(&Device::Cpu).unwrap(), Some(&mut cache), true)
                .unwrap()
                .squeeze(1)
                .unwrap();
            let mut next = argmax_rows(&logits);
            let mut tokens: Vec<Vec<u32>> = next.iter().map(|&n| vec![n]).collect();
            let mut pad_bias = vec![0f32; b * cap];
            for (i, p) in prompts.iter().enumerate() {
                pad_bias[i * cap..i * cap + (t - p.len())].fill(MASKED);
            }
            let pad_bias = Tensor::from_vec(pad_bias, (b, cap), &Device::Cpu).unwrap();
            let mut positions: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
            for s in 0..steps {
                let logits = model
                    .decode_step_static(
                        &model.launch(),
                        &Tensor::new(next.as_slice(), &Device::Cpu).unwrap(),
                        &Tensor::new(positions.as_slice(), &Device::Cpu).unwrap(),
                        &Tensor::new(&[(t + s) as u32], &Device::Cpu).unwrap(),
                        &pad_bias,
                        &cache,
                    )
                    .unwrap()
                    .expect("rotary families have a static step");
                next = argmax_rows(&logits);
                for (row, &n) in tokens.iter_mut().zip(&next) {
                    row.push(n);
                }
                positions.iter_mut().for_each(|p| *p += 1);
            }
            assert_eq!(tokens, expected, "{name}");
        }
    }
}
