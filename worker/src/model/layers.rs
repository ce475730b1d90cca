//! The layers both architectures are built from: linear (with the CUDA GEMV/cuBLASLt paths),
//! layer norm, activations, and the attention core: scores in the model dtype, mask added and
//! softmax done in f32 (f16 softmax over long rows loses too much), keys/values from a
//! preallocated [`KvCache`] when one is given.

#[cfg(feature = "cuda")]
use super::cuda_ops;
use super::{cpu_matmul, KvCache, Launch};
use crate::weights::WeightLoader;
use crate::error::{EngineError, Result};
use candle_core::{DType, Module, Tensor, D};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    Relu,
    /// Exact GELU (erf).
    Gelu,
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    pub(crate) fn from_name(name: &str) -> Result<Activation> {
        match name {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(EngineError::InvalidWorkload(format!(
                "activation_function \"{other}\" in config.json is not supported: use relu, gelu or gelu_new"
            ))),
        }
    }
    #[cfg(feature = "cuda")]
    pub(crate) fn fused(self) -> cuda_ops::Act {
        match self {
            Activation::Relu => cuda_ops::Act::Relu,
            Activation::Gelu => cuda_ops::Act::GeluErf,
            Activation::GeluTanh => cuda_ops::Act::GeluTanh,
        }
    }
    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::Gelu => x.gelu_erf()?,
            // candle's `gelu` is the tanh approximation, i.e. transformers' gelu_new.
            Activation::GeluTanh => x.gelu()?,
        })
    }
}

/// Layer norm over the last dim (candle's fused kernel on the CPU; tokbench's on CUDA, see
/// `cuda_ops::layer_norm`).
/// (The eps is read by the CUDA kernel path only.)
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct LayerNorm(candle_nn::LayerNorm, f64);

impl LayerNorm {
    pub(crate) fn load(loader: &mut WeightLoader, name: &str, size: usize, affine: bool, eps: f64) -> Result<LayerNorm> {
        use crate::weights::Init;
        let (w, b) = if affine {
            (loader.get(&format!("{name}.weight"), &[size], Init::Ones)?, loader.get(&format!("{name}.bias"), &[size], Init::Zeros)?)
        } else {
            // No parameters in the checkpoint: identity affine, not counted as parameters.
            let (dtype, device) = loader.target();
            (Tensor::ones(size, dtype, &device)?, Tensor::zeros(size, dtype, &device)?)
        };
        Ok(LayerNorm(candle_nn::LayerNorm::new(w, b, eps), eps))
    }
    pub(crate) fn forward(&self, l: &Launch, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() && x.is_contiguous() && x.dim(candle_core::D::Minus1)? <= cuda_ops::MAX_ROW {
            if let Some(b) = self.0.bias() {
                return Ok(cuda_ops::layer_norm(l, x, self.0.weight(), b, self.1)?);
            }
        }
        let _ = l;
        Ok(self.0.forward(x)?)
    }

    /// This norm as the GEMV's fused pre-norm (`None` without a bias tensor).
    #[cfg(feature = "cuda")]
    pub(crate) fn pre_norm(&self) -> Option<cuda_ops::Prologue<'_>> {
        Some(cuda_ops::Prologue::LayerNorm { weight: self.0.weight(), bias: self.0.bias()?, eps: self.1 })
    }
}

/// x @ W^T + b with W stored [out, in] (nn.Linear layout).
pub(crate) struct Linear(candle_nn::Linear);

impl Linear {
    /// `weight` [out, in], possibly a transposed view (GPT-2's Conv1D). On the CPU in f32 it is
    /// made contiguous [out, in] once here, the layout the few-row decode kernel streams.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        // On CUDA too: the few-row GEMV kernel (cuda_ops::linear_small_m) streams [out, in] rows.
        let weight = if (weight.device().is_cuda() || weight.dtype() == DType::F32) && !weight.is_contiguous() {
            weight.contiguous()?
        } else {
            weight
        };
        Ok(Linear(candle_nn::Linear::new(weight, bias)))
    }
    pub(crate) fn forward(&self, l: &Launch, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.forward_cuda(l, x, None, None);
        }
        let _ = l;
        let w = self.0.weight();
        if x.device().is_cpu() && x.dtype() == DType::F32 && w.is_contiguous() && cpu_matmul::available() {
            let k = x.dim(candle_core::D::Minus1)?;
            if k > 0 && x.elem_count() / k <= cpu_matmul::MAX_M {
                // Decode step (a few rows): one streaming pass over the weights instead of gemm's
                // packing (see cpu_matmul).
                let x = x.contiguous()?;
                return Ok(match self.0.bias() {
                    Some(b) => x.apply_op3_no_bwd(w, b, &cpu_matmul::SmallMLinear)?,
                    None => x.apply_op2_no_bwd(w, &cpu_matmul::SmallMLinear)?,
                });
            }
        }
        Ok(self.0.forward(x)?)
    }
    /// `act(x @ W^T + b)`: on CUDA the bias and activation are one kernel after the matmul.
    pub(crate) fn forward_act(&self, l: &Launch, x: &Tensor, act: Activation) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.forward_cuda(l, x, Some(act), None);
        }
        act.apply(&self.forward(l, x)?)
    }

    /// `(x @ W^T + b) + residual`: on CUDA the bias and the residual add are one kernel.
    pub(crate) fn forward_residual(&self, l: &Launch, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.forward_cuda(l, x, None, Some(residual));
        }
        Ok((residual + self.forward(l, x)?)?)
    }

    /// One matmul over all rows (leading dims flattened), then bias (+ activation or + residual)
    /// in place by one fused kernel, instead of candle's broadcast bias add (a strided kernel,
    /// ~15x slower than a plain pass at prefill sizes) and separate activation/add kernels.
    #[cfg(feature = "cuda")]
    fn forward_cuda(&self, l: &Launch, x: &Tensor, act: Option<Activation>, residual: Option<&Tensor>) -> Result<Tensor> {
        let mut out_dims = x.dims().to_vec();
        let k = *out_dims.last().ok_or_else(|| EngineError::InvalidWorkload("linear layer on a 0-d tensor".into()))?;
        let rows = x.elem_count() / k.max(1);
        let x2 = x.reshape((rows, k))?;
        let n = self.0.weight().dim(0)?;
        *out_dims.last_mut().expect("dims") = n;
        // The residual as [rows, n], made once for whichever path runs.
        let r2 = residual.map(|r| r.contiguous()?.reshape((rows, n))).transpose()?;
        let act_fused = act.map_or(cuda_ops::Act::None, Activation::fused);
        if rows <= cuda_ops::SMALL_M {
            let epilogue = match &r2 {
                Some(r) => Some(cuda_ops::Epilogue::Residual(r)),
                // Without a bias the activation is applied by candle below.
                None if self.0.bias().is_some() || act.is_none() => Some(cuda_ops::Epilogue::Act(act_fused)),
                None => None,
            };
            if let Some(epilogue) = epilogue {
                if let Some(y) = cuda_ops::linear_small_m(l, &x2, self.0.weight(), self.0.bias(), epilogue, None)? {
                    return Ok(y.reshape(out_dims)?);
                }
            }
        } else {
            // Prefill (more rows than the GEMV takes): bias, activation and residual in the GEMM's
            // epilogue where cuBLASLt offers them.
            let epilogue = match &r2 {
                Some(r) => cuda_ops::LtEpilogue::Residual(r),
                None => cuda_ops::LtEpilogue::Act(act_fused),
            };
            if let Some(y) = cuda_ops::linear_lt(l, &x2, self.0.weight(), self.0.bias(), epilogue)? {
                return Ok(y.reshape(out_dims)?);
            }
        }
        let y = self.matmul_no_bias(l, &x2)?;
        match (&r2, self.0.bias(), act) {
            (Some(r), bias, _) => cuda_ops::bias_residual(l, &y, bias, r)?,
            (None, Some(b), _) => cuda_ops::bias_act(l, &y, b, act_fused)?,
            (None, None, Some(act)) => return Ok(act.apply(&y)?.reshape(out_dims)?),
            (None, None, None) => {}
        }
        Ok(y.reshape(out_dims)?)
    }

    /// `x` [rows, in] @ W^T without the bias: [rows, out], a fresh contiguous tensor (the
    /// fused decode kernels add the bias in place).
    #[cfg(feature = "cuda")]
    pub(crate) fn matmul_no_bias(&self, l: &Launch, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = cuda_ops::linear_small_m(l, x, self.0.weight(), None, cuda_ops::Epilogue::None, None)? {
            return Ok(y);
        }
        // candle's own cuBLAS call, but into the decode step's arena buffer (see cuda_ops).
        if let Some(y) = cuda_ops::matmul_nt(l, x, self.0.weight())? {
            return Ok(y);
        }
        Ok(x.matmul(&self.0.weight().t()?)?)
    }

    /// `norm(x)` [rows, in] @ W^T without the bias (decode steps of pre-LN layers): the norm runs
    /// inside the GEMV when it can, else as its own kernel first.
    #[cfg(feature = "cuda")]
    pub(crate) fn matmul_no_bias_normed(&self, l: &Launch, x: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
        if let Some(pre) = norm.pre_norm() {
            if let Some(y) = cuda_ops::linear_small_m(l, x, self.0.weight(), None, cuda_ops::Epilogue::None, Some(pre))? {
                return Ok(y);
            }
        }
        self.matmul_no_bias(l, &norm.forward(l, x)?)
    }

    /// Greedy choice over `norm(x) @ W^T + b` (the lm_head of a decode step) without the logits:
    /// the GEMV folds each row's largest value into `keys` (see `cuda_ops::Epilogue::ArgmaxKeys`).
    /// `Ok(false)` when the GEMV does not apply (the caller computes logits and their argmax).
    #[cfg(feature = "cuda")]
    pub(crate) fn argmax_normed(&self, l: &Launch, x: &Tensor, norm: Option<&LayerNorm>, keys: &Tensor) -> Result<bool> {
        let pre = match norm.map(LayerNorm::pre_norm) {
            Some(None) => return Ok(false), // a norm without bias: not fusable
            pre => pre.flatten(),
        };
        self.argmax_with(l, x, pre, keys)
    }

    /// [`Self::argmax_normed`] with any GEMV prologue (the rotary families' final RMSNorm).
    #[cfg(feature = "cuda")]
    pub(crate) fn argmax_with(&self, l: &Launch, x: &Tensor, pro: Option<cuda_ops::Prologue<'_>>, keys: &Tensor) -> Result<bool> {
        let done = cuda_ops::linear_small_m(l, x, self.0.weight(), self.0.bias(), cuda_ops::Epilogue::ArgmaxKeys(keys), pro)?;
        Ok(done.is_some())
    }

    /// `rms_norm(x) @ W^T + b` for `x` [rows, in] (the rotary families' decode steps): one GEMV
    /// with the norm in its prologue when it can, else the norm, then [`Self::forward`].
    #[cfg(feature = "cuda")]
    pub(crate) fn forward_rms_normed(&self, l: &Launch, x: &Tensor, norm: &RmsNorm) -> Result<Tensor> {
        let epilogue = cuda_ops::Epilogue::Act(cuda_ops::Act::None);
        if let Some(y) = cuda_ops::linear_small_m(l, x, self.0.weight(), self.0.bias(), epilogue, Some(norm.prologue()))? {
            return Ok(y);
        }
        self.forward(l, &norm.forward(x)?)
    }

    /// `residual + (silu(gate) * up) @ W^T + b` for `gate_up` [rows, 2 * in] (gate | up, the
    /// rotary families' MLP): one GEMV with the activation in its prologue when it can, else
    /// candle's silu and product, then [`Self::forward_residual`].
    #[cfg(feature = "cuda")]
    pub(crate) fn forward_swiglu_residual(&self, l: &Launch, gate_up: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let epilogue = cuda_ops::Epilogue::Residual(residual);
        if let Some(y) = cuda_ops::linear_small_m(l, gate_up, self.0.weight(), self.0.bias(), epilogue, Some(cuda_ops::Prologue::SwiGlu))? {
            return Ok(y);
        }
        let m = swiglu(l, gate_up)?;
        self.forward_residual(l, &m, residual)
    }

    /// `act(norm(x) @ W^T + b)` for `x` [rows, in] (decode steps of pre-LN layers; `act` None:
    /// no activation): one GEMV when it can, else the norm, then [`Self::forward_act`] /
    /// [`Self::forward`].
    #[cfg(feature = "cuda")]
    pub(crate) fn forward_normed(&self, l: &Launch, x: &Tensor, norm: &LayerNorm, act: Option<Activation>) -> Result<Tensor> {
        // Without a bias the activation is candle's (see forward_cuda): not fused here.
        let fusable = self.0.bias().is_some() || act.is_none();
        if let (Some(pre), true) = (norm.pre_norm(), fusable) {
            let epilogue = cuda_ops::Epilogue::Act(act.map_or(cuda_ops::Act::None, Activation::fused));
            if let Some(y) = cuda_ops::linear_small_m(l, x, self.0.weight(), self.0.bias(), epilogue, Some(pre))? {
                return Ok(y);
            }
        }
        let xn = norm.forward(l, x)?;
        match act {
            Some(a) => self.forward_act(l, &xn, a),
            None => self.forward(l, &xn),
        }
    }
    #[cfg(feature = "cuda")]
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.0.bias()
    }
}

/// Multi-head attention core. `qkv`: [b, t, 3 * hidden], q|k|v, q already scaled (the scale is
/// folded into the query weights at load); taken by value so its memory goes back to the pool
/// as soon as the heads are split out (at prefill of a large batch it is the largest
/// activation). `bias`: [b, 1, t, L] f32. Returns [b, t, hidden].
/// Every caller passes `PrefillInputs::bias` when the cache is empty (a prompt attends only to
/// itself, causally), which the fused CUDA prefill kernel relies on.
pub(crate) fn attention(l: &Launch, qkv: Tensor, heads: usize, bias: &Tensor, cache: Option<&mut KvCache>, layer: usize) -> Result<Tensor> {
    let (b, t, h3) = qkv.dims3()?;
    let _ = l; // (read by the CUDA paths only)
    #[cfg(feature = "cuda")]
    if qkv.device().is_cuda() && t > 1 && cache.as_ref().is_none_or(|c| c.is_empty()) && cuda_ops::prefill_attention_enabled(l) {
        if let Some(c) = cache.as_ref() {
            c.check_room(t)?;
        }
        if let Some(out) = cuda_ops::prefill_attention(l, &qkv, bias, cache.as_ref().map(|c| c.layer(layer)), heads)? {
            return Ok(out);
        }
    }
    let hidden = h3 / 3;
    let head_dim = hidden / heads;
    let split = |i: usize| -> Result<Tensor> {
        Ok(qkv.narrow(2, i * hidden, hidden)?.reshape((b, t, heads, head_dim))?.transpose(1, 2)?.contiguous()?)
    };
    let (q, k, v) = (split(0)?, split(1)?, split(2)?);
    drop(qkv);
    let (k, v) = match cache {
        Some(c) => c.append(layer, &k, &v)?,
        None => (k, v),
    };
    let dtype = q.dtype();
    let scores = q.matmul(&k.t()?)?;
    drop((q, k));
    #[cfg(feature = "cuda")]
    if scores.device().is_cuda() && bias.is_contiguous() && bias.dims() == [b, 1, t, scores.dim(3)?] && scores.dim(3)? <= cuda_ops::MAX_SOFTMAX_ROW {
        // One pass instead of cast + broadcast add + softmax + cast (same f32 arithmetic),
        // written over the scores (a fresh tensor nothing else holds).
        let probs = cuda_ops::masked_softmax_in_place(l, scores, bias)?;
        let out = probs.matmul(&v)?;
        drop(probs);
        return Ok(out.transpose(1, 2)?.reshape((b, t, hidden))?);
    }
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(bias)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    drop(scores);
    let out = probs.matmul(&v)?;
    Ok(out.transpose(1, 2)?.reshape((b, t, hidden))?)
}

/// silu(gate) * up of a fused gate|up projection `gate_up` [.., 2f] -> [.., f]: one kernel on
/// CUDA (with the job's `lt_epilogue` option, the prefill epilogues), else candle's silu and
/// product of the two halves.
pub(crate) fn swiglu(l: &Launch, gate_up: &Tensor) -> Result<Tensor> {
    let _ = l; // (read by the CUDA path only)
    #[cfg(feature = "cuda")]
    if gate_up.device().is_cuda() && l.kernels().lt_epilogue && l.kernels().fused_rotary_prefill {
        if let Some(m) = cuda_ops::swiglu(l, gate_up)? {
            return Ok(m);
        }
    }
    let f = gate_up.dim(D::Minus1)? / 2;
    Ok((gate_up.narrow(D::Minus1, 0, f)?.silu()? * gate_up.narrow(D::Minus1, f, f)?)?)
}

/// The same scaled into the query projection: `W_q * s`, `b_q * s`.
pub(crate) fn scaled(t: Tensor, scale: f64) -> Result<Tensor> {
    Ok((t * scale)?)
}


/// RMSNorm over the last dim (transformers' `LlamaRMSNorm`: in f32, weight applied after the
/// cast back; candle-nn's fused kernel on CPU and CUDA).
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn load(loader: &mut WeightLoader, name: &str, size: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: loader.get(&format!("{name}.weight"), &[size], crate::weights::Init::Ones)?, eps })
    }
    /// The same norm with its weight multiplied by `s` (a scale folded into it).
    pub(crate) fn scaled(self, s: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: scaled(self.weight, s)?, eps: self.eps })
    }
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if x.is_contiguous() { x.clone() } else { x.contiguous()? };
        Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps as f32)?)
    }
    /// This norm as a GEMV prologue.
    #[cfg(feature = "cuda")]
    pub(crate) fn prologue(&self) -> cuda_ops::Prologue<'_> {
        cuda_ops::Prologue::RmsNorm { weight: &self.weight, eps: self.eps }
    }

}

/// The shapes of grouped-query attention: `heads` query heads share `kv_heads` key/value heads
/// (`heads / kv_heads` each; MHA when equal), each `head_dim` wide.
#[derive(Clone, Copy)]
pub(crate) struct HeadLayout {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Rotary grouped-query attention core. `qkv`: [b, t, (heads + 2 kv_heads) * head_dim], q|k|v,
/// with the softmax scale folded into q (its projection, or its norm when `q_norm` is given).
/// `q_norm`/`k_norm`: per-head RMSNorm before rotary (Qwen3). `cos`/`sin` [b, t, head_dim/2].
/// `bias` [b, 1, t, L] f32. Keys/values (rotated) are appended to `cache` under kv_heads.
/// Returns [b, t, heads * head_dim].
///
/// The query heads of one key/value head are folded into the rows of one matmul ([b, kv, g*t, d]
/// x [b, kv, d, L]) rather than the keys repeated g times (transformers' `repeat_kv` copies them):
/// query head h reads key/value head h / g either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_attention(
    l: &Launch,
    qkv: Tensor,
    layout: HeadLayout,
    q_norm: Option<&RmsNorm>,
    k_norm: Option<&RmsNorm>,
    rope: &Rope<'_>,
    bias: &Tensor,
    cache: Option<&mut KvCache>,
    layer: usize,
) -> Result<Tensor> {
    let _ = l; // (read by the CUDA paths only)
    let HeadLayout { heads, kv_heads, head_dim: d } = layout;
    let (b, t, _) = qkv.dims3()?;
    let g = heads / kv_heads;
    #[cfg(feature = "cuda")]
    let split = if qkv.device().is_cuda() { rotary_split_cuda(l, &qkv, layout, q_norm, k_norm, rope, cache.as_deref(), layer)? } else { None };
    #[cfg(not(feature = "cuda"))]
    let split: Option<(Tensor, Tensor, Tensor)> = None;
    let (q, k, v) = match split {
        // A whole prompt into an empty cache (or none): one fused kernel over the keys and values
        // the split just wrote.
        #[cfg(feature = "cuda")]
        Some(s) if s.offset == 0 && t > 1 && cuda_ops::prefill_attention_enabled(l) && l.kernels().fused_rotary_prefill => {
            let (k_len, v_len) = (s.k_full.narrow(2, 0, t)?, s.v_full.narrow(2, 0, t)?);
            match cuda_ops::prefill_attention_gqa(l, &s.q, &s.k_full, &s.v_full, bias)? {
                Some(out) => return Ok(out),
                None => (s.q, k_len, v_len),
            }
        }
        // Keys and values went straight into the cache (if any): the views of its filled prefix.
        #[cfg(feature = "cuda")]
        Some(s) => {
            let end = s.offset + t;
            (s.q, s.k_full.narrow(2, 0, end)?, s.v_full.narrow(2, 0, end)?)
        }
        #[cfg(not(feature = "cuda"))]
        Some(qkv_split) => qkv_split,
        None => {
            let (q, k, v) = rotary_qkv(&qkv, layout, q_norm, k_norm, rope.cos, rope.sin)?;
            match cache {
                Some(c) => {
                    let (k, v) = c.append(layer, &k, &v)?;
                    (q, k, v)
                }
                None => (q, k, v),
            }
        }
    };
    drop(qkv);
    let len = k.dim(2)?;
    let scores = q.reshape((b, kv_heads, g * t, d))?.matmul(&k.t()?)?.reshape((b, heads, t, len))?;
    drop((q, k));
    let probs = masked_softmax(l, scores, bias)?;
    let out = probs.reshape((b, kv_heads, g * t, len))?.matmul(&v)?;
    Ok(out.reshape((b, heads, t, d))?.transpose(1, 2)?.reshape((b, t, heads * d))?)
}

/// What the rotary needs, per forward pass: `cos`/`sin` [b, t, head_dim / 2] in the model dtype
/// (candle's path), `positions` [b, t] u32 and `inv_freq` f32 [head_dim / 2] (the CUDA kernels
/// compute their angles themselves).
pub(crate) struct Rope<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub positions: &'a Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub inv_freq: &'a Tensor,
}

/// Qwen3's per-head q/k norms as the rotary kernels take them (None unless both are given).
#[cfg(feature = "cuda")]
pub(crate) fn qk_norm<'a>(q: Option<&'a RmsNorm>, k: Option<&'a RmsNorm>) -> Option<cuda_ops::QkNorm<'a>> {
    let (q, k) = (q?, k?);
    Some(cuda_ops::QkNorm { q_weight: &q.weight, k_weight: &k.weight, eps: q.eps })
}

/// What the CUDA prefill's head split left: q [b, heads, t, d], and the cache's key and value
/// tensors [b, kv_heads, cap, d] (or [b, kv_heads, t, d] without a cache) whose rows
/// `offset..offset + t` hold this pass's.
#[cfg(feature = "cuda")]
struct RotarySplit {
    q: Tensor,
    k_full: Tensor,
    v_full: Tensor,
    offset: usize,
}

/// The CUDA prefill's head split (`cuda_ops::rotary_split`). `None` where the kernel does not
/// apply.
#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
fn rotary_split_cuda(
    l: &Launch,
    qkv: &Tensor,
    layout: HeadLayout,
    q_norm: Option<&RmsNorm>,
    k_norm: Option<&RmsNorm>,
    rope: &Rope<'_>,
    cache: Option<&KvCache>,
    layer: usize,
) -> Result<Option<RotarySplit>> {
    let HeadLayout { kv_heads, head_dim: d, .. } = layout;
    let (b, t, _) = qkv.dims3()?;
    let qk_norm = qk_norm(q_norm, k_norm);
    let (k_dst, v_dst, offset) = match cache {
        Some(c) => {
            c.check_room(t)?;
            let (k, v) = c.layer(layer);
            (k.clone(), v.clone(), c.len())
        }
        None => {
            let z = || Tensor::zeros((b, kv_heads, t, d), qkv.dtype(), qkv.device());
            (z()?, z()?, 0)
        }
    };
    let rot = cuda_ops::RotaryHeads { heads: layout.heads, positions: rope.positions, inv_freq: rope.inv_freq, qk_norm };
    let Some(q) = cuda_ops::rotary_split(l, qkv, rot, &k_dst, &v_dst, offset)? else {
        return Ok(None);
    };
    Ok(Some(RotarySplit { q, k_full: k_dst, v_full: v_dst, offset }))
}

/// q, k, v [b, heads | kv_heads, t, head_dim] (contiguous) from a fused projection `qkv`
/// [b, t, (heads + 2 kv_heads) * head_dim]: each split into heads, q and k through their per-head
/// norms (Qwen3) and rotary (`cos`/`sin` [b, t, head_dim/2]). Shared by the prefix attention and
/// the static decode step.
pub(crate) fn rotary_qkv(
    qkv: &Tensor,
    layout: HeadLayout,
    q_norm: Option<&RmsNorm>,
    k_norm: Option<&RmsNorm>,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let HeadLayout { heads, kv_heads, head_dim: d } = layout;
    let (b, t, _) = qkv.dims3()?;
    let split = |offset: usize, n: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
        let x = qkv.narrow(2, offset * d, n * d)?.reshape((b, t, n, d))?;
        let x = match norm {
            Some(norm) => norm.forward(&x)?,
            None => x,
        };
        Ok(x.transpose(1, 2)?.contiguous()?)
    };
    let q = super::rotary::apply(&split(0, heads, q_norm)?, cos, sin)?;
    let k = super::rotary::apply(&split(heads, kv_heads, k_norm)?, cos, sin)?;
    Ok((q, k, split(heads + kv_heads, kv_heads, None)?))
}

/// softmax(scores + bias) over the last dim: `scores` [b, heads, t, L] in the model dtype (a fresh
/// tensor, overwritten on CUDA), `bias` [b, 1, t, L] f32; the sum and softmax in f32, the result
/// in the model dtype. One fused kernel on CUDA where the row fits it.
pub(crate) fn masked_softmax(l: &Launch, scores: Tensor, bias: &Tensor) -> Result<Tensor> {
    let _ = l; // (read by the CUDA path only)
    let dtype = scores.dtype();
    #[cfg(feature = "cuda")]
    {
        let (b, _, t, len) = scores.dims4()?;
        if scores.device().is_cuda() && bias.is_contiguous() && bias.dims() == [b, 1, t, len] && len <= cuda_ops::MAX_SOFTMAX_ROW {
            return Ok(cuda_ops::masked_softmax_in_place(l, scores, bias)?);
        }
    }
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(bias)?;
    Ok(candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?)
}
