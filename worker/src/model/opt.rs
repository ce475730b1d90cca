//! OPT as in transformers' `modeling_opt.py`: learned positions offset by 2, optional
//! `project_in`/`project_out` (opt-350m: 512-wide embeddings, 1024-wide layers), pre-LN or
//! post-LN (`do_layer_norm_before`), ReLU FFN, lm_head tied to `embed_tokens`.

use super::{attention, scaled, Activation, KvCache, Launch, LayerNorm, Linear};
use crate::error::{EngineError, Result};
use crate::weights::{Init, WeightLoader, HF_INIT_STD};
use candle_core::{Module, Tensor};
use tokbench_core::OptConfig;

struct Layer {
    /// q_proj (pre-scaled), k_proj and v_proj fused into one [3h, h] projection: one matmul
    /// and one bias add per step instead of three each.
    qkv_proj: Linear,
    out_proj: Linear,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

pub(crate) struct Opt {
    embed_tokens: candle_nn::Embedding,
    embed_positions: candle_nn::Embedding,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    layers: Vec<Layer>,
    final_layer_norm: Option<LayerNorm>,
    lm_head: Linear,
    pre_ln: bool,
    heads: usize,
    activation: Activation,
}

fn linear(l: &mut WeightLoader, name: &str, out: usize, inp: usize, bias: bool) -> Result<(Tensor, Option<Tensor>)> {
    let w = l.get(&format!("{name}.weight"), &[out, inp], Init::Normal(HF_INIT_STD))?;
    let b = if bias { Some(l.get(&format!("{name}.bias"), &[out], Init::Zeros)?) } else { None };
    Ok((w, b))
}

impl Opt {
    pub(crate) fn load(c: &OptConfig, l: &mut WeightLoader) -> Result<Opt> {
        let activation = Activation::from_name(&c.activation_function)?;
        let h = c.hidden_size;
        let p = c.word_embed_proj_dim();
        let f = c.ffn_dim;
        let v = c.vocab_size;
        let heads = c.num_attention_heads;
        let eps = OptConfig::LAYER_NORM_EPS;
        let affine = c.layer_norm_elementwise_affine;
        let bias = c.enable_bias;
        // transformers scales q after q_proj (bias included) by head_dim^-0.5; folding the
        // factor into W_q and b_q saves one elementwise op per layer per step.
        let scale = (c.head_dim() as f64).powf(-0.5);

        l.choose_prefix(&["model.", ""], "decoder.embed_tokens.weight")?;
        let embed_tokens = l.get("decoder.embed_tokens.weight", &[v, p], Init::Normal(HF_INIT_STD))?;
        let positions = c.max_position_embeddings + OptConfig::POSITION_OFFSET;
        let embed_positions = l.get("decoder.embed_positions.weight", &[positions, h], Init::Normal(HF_INIT_STD))?;
        let (project_in, project_out) = if p != h {
            let (pi, _) = linear(l, "decoder.project_in", h, p, false)?;
            let (po, _) = linear(l, "decoder.project_out", p, h, false)?;
            (Some(Linear::new(pi, None)?), Some(Linear::new(po, None)?))
        } else {
            (None, None)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let n = |s: &str| format!("decoder.layers.{i}.{s}");
            let (qw, qb) = linear(l, &n("self_attn.q_proj"), h, h, bias)?;
            let (kw, kb) = linear(l, &n("self_attn.k_proj"), h, h, bias)?;
            let (vw, vb) = linear(l, &n("self_attn.v_proj"), h, h, bias)?;
            let (ow, ob) = linear(l, &n("self_attn.out_proj"), h, h, bias)?;
            let self_attn_layer_norm = LayerNorm::load(l, &n("self_attn_layer_norm"), h, affine, eps)?;
            let (f1w, f1b) = linear(l, &n("fc1"), f, h, bias)?;
            let (f2w, f2b) = linear(l, &n("fc2"), h, f, bias)?;
            let final_layer_norm = LayerNorm::load(l, &n("final_layer_norm"), h, affine, eps)?;
            let qkv_w = Tensor::cat(&[scaled(qw, scale)?, kw, vw], 0)?;
            let qkv_b = match (qb, kb, vb) {
                (Some(qb), Some(kb), Some(vb)) => Some(Tensor::cat(&[scaled(qb, scale)?, kb, vb], 0)?),
                _ => None,
            };
            layers.push(Layer {
                qkv_proj: Linear::new(qkv_w, qkv_b)?,
                out_proj: Linear::new(ow, ob)?,
                self_attn_layer_norm,
                fc1: Linear::new(f1w, f1b)?,
                fc2: Linear::new(f2w, f2b)?,
                final_layer_norm,
            });
        }
        // transformers builds decoder.final_layer_norm only for pre-LN models (and not when
        // `_remove_final_layer_norm`, a legacy flag of a few old checkpoints, not in OptConfig).
        let final_layer_norm =
            if c.do_layer_norm_before { Some(LayerNorm::load(l, "decoder.final_layer_norm", h, affine, eps)?) } else { None };

        let lm_head = if c.tie_word_embeddings == Some(false) {
            // Untied head: its own tensor at the root (`lm_head.weight`), counted separately.
            if !l.is_synthetic() && !l.contains_root("lm_head.weight") {
                return Err(EngineError::TensorMissing {
                    name: "lm_head.weight".into(),
                    detail: "config.json says tie_word_embeddings: false, so the output projection must be stored".into(),
                });
            }
            Linear::new(l.get_root("lm_head.weight", &[v, p], Init::Normal(HF_INIT_STD))?, None)?
        } else {
            // Tied: the embedding matrix itself (a stored `lm_head.weight` is the same values).
            Linear::new(embed_tokens.clone(), None)?
        };

        Ok(Opt {
            embed_tokens: candle_nn::Embedding::new(embed_tokens, p),
            embed_positions: candle_nn::Embedding::new(embed_positions, h),
            project_in,
            project_out,
            layers,
            final_layer_norm,
            lm_head,
            pre_ln: c.do_layer_norm_before,
            heads,
            activation,
        })
    }

    /// Hidden states after the decoder (final norm and project_out applied): [b, t, word_embed_proj_dim].
    pub(crate) fn hidden(&self, l: &Launch, ids: &Tensor, position_rows: &Tensor, bias: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let mut x = self.embed_tokens.forward(ids)?;
        if let Some(p) = &self.project_in {
            x = p.forward(l, &x)?;
        }
        let mut h = (x + self.embed_positions.forward(position_rows)?)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = &h;
            // Intermediates are dropped as soon as they are used (prefill peak memory).
            let qkv = if self.pre_ln { layer.qkv_proj.forward(l, &layer.self_attn_layer_norm.forward(l, &h)?)? } else { layer.qkv_proj.forward(l, &h)? };
            let a = attention(l, qkv, self.heads, bias, cache.as_deref_mut(), i)?;
            let mut h1 = layer.out_proj.forward_residual(l, &a, residual)?;
            drop(a);
            if !self.pre_ln {
                h1 = layer.self_attn_layer_norm.forward(l, &h1)?;
            }
            let f = if self.pre_ln {
                layer.fc1.forward_act(l, &layer.final_layer_norm.forward(l, &h1)?, self.activation)?
            } else {
                layer.fc1.forward_act(l, &h1, self.activation)?
            };
            h = layer.fc2.forward_residual(l, &f, &h1)?;
            drop(f);
            if !self.pre_ln {
                h = layer.final_layer_norm.forward(l, &h)?;
            }
        }
        if let Some(n) = &self.final_layer_norm {
            h = n.forward(l, &h)?;
        }
        if let Some(p) = &self.project_out {
            h = p.forward(l, &h)?;
        }
        Ok(h)
    }

    /// One decode step on the fused CUDA kernels (see `fast_decode` and `Gpt2::decode_logits`):
    /// returns the logits [b, vocab], or None when the greedy choice went into `argmax_keys`
    /// inside the lm_head GEMV. In pre-LN models each norm runs inside the GEMV that consumes it
    /// where the GEMV applies (post-LN norms follow a residual add: own kernel).
    #[cfg(feature = "cuda")]
    pub(crate) fn decode_logits(&self, l: &Launch, step: &super::fast_decode::StepInputs<'_>) -> Result<Option<Tensor>> {
        let super::fast_decode::StepInputs { ids, positions, slot, pad_bias, cache, argmax_keys } = *step;
        use super::cuda_ops;
        let mut h = match &self.project_in {
            None => cuda_ops::embed(l, ids, positions, self.embed_tokens.embeddings(), Some(self.embed_positions.embeddings()))?,
            Some(p) => {
                let x = p.matmul_no_bias(l, &self.embed_tokens.forward(ids)?)?;
                (x + self.embed_positions.forward(positions)?)?
            }
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let qkv = if self.pre_ln {
                layer.qkv_proj.matmul_no_bias_normed(l, &h, &layer.self_attn_layer_norm)?
            } else {
                layer.qkv_proj.matmul_no_bias(l, &h)?
            };
            let (kc, vc) = cache.layer(i);
            let a = cuda_ops::decode_attention(l, &qkv, layer.qkv_proj.bias(), kc, vc, slot, pad_bias)?;
            let mut h1 = layer.out_proj.forward_residual(l, &a, &h)?;
            if !self.pre_ln {
                h1 = layer.self_attn_layer_norm.forward(l, &h1)?;
            }
            let f = if self.pre_ln {
                layer.fc1.forward_normed(l, &h1, &layer.final_layer_norm, Some(self.activation))?
            } else {
                layer.fc1.forward_act(l, &h1, self.activation)?
            };
            h = layer.fc2.forward_residual(l, &f, &h1)?;
            if !self.pre_ln {
                h = layer.final_layer_norm.forward(l, &h)?;
            }
        }
        // The final norm goes into the lm_head GEMV unless project_out sits between them.
        let head_norm = match (&self.final_layer_norm, &self.project_out) {
            (Some(n), None) => Some(n),
            (norm, project_out) => {
                if let Some(n) = norm {
                    h = n.forward(l, &h)?;
                }
                if let Some(p) = project_out {
                    h = p.matmul_no_bias(l, &h)?;
                }
                None
            }
        };
        if self.lm_head.argmax_normed(l, &h, head_norm, argmax_keys)? {
            return Ok(None);
        }
        Ok(Some(match head_norm {
            Some(n) => self.lm_head.forward_normed(l, &h, n, None)?,
            None => self.lm_head.forward(l, &h)?,
        }))
    }

    pub(crate) fn logits(&self, l: &Launch, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(l, hidden)
    }
}
