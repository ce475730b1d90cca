//! One normalised description of a model's architecture ([`ArchSpec`]), which every family maps
//! its `config.json` into ([`crate::ArchConfig::spec`]). Whatever is sized by the architecture --
//! the KV cache (by key/value heads), the memory estimate before loading, the parameter count,
//! `tokbench models` -- reads this, not a family's own fields.

use crate::rotary_config::RopeScaling;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NormKind {
    /// LayerNorm with weight and bias (OPT, GPT-2).
    LayerNorm { eps: f64 },
    /// RMSNorm with weight only (Llama, Mistral, Qwen).
    RmsNorm { eps: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PositionKind {
    /// A learned position table of `rows` rows; position p reads row p + `offset` (OPT: 2).
    Learned { rows: usize, offset: usize },
    /// Rotary embeddings with base `theta` and long-context `scaling`.
    Rotary { theta: f64, scaling: RopeScaling },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// `down(act(up(x)))` (OPT: relu, GPT-2: gelu_new).
    Plain,
    /// `down(silu(gate(x)) * up(x))` (SwiGLU).
    GatedSilu,
}

/// The architecture as the engine and the estimates see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchSpec {
    /// `model_type` of config.json: the family.
    pub family: &'static str,
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the token embedding (OPT-350m: 512 with project_in/out; else hidden_size).
    pub embed_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Key/value heads: fewer than `num_heads` under grouped-query attention.
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub norm: NormKind,
    pub position: PositionKind,
    pub mlp: MlpKind,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm of each q and k head before rotary (Qwen3).
    pub qk_norm: bool,
    pub tied_embeddings: bool,
    /// A norm after the last layer (all but post-LN OPT).
    pub final_norm: bool,
    /// Longest sequence (prompt + generated tokens) the positions allow.
    pub max_positions: usize,
    /// Mistral v0.1's attention window, when one applies.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl ArchSpec {
    /// Bytes of keys and values per token per sequence, all layers, at `dtype_bytes` an element.
    pub fn kv_bytes_per_token(&self, dtype_bytes: usize) -> u64 {
        (2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes) as u64
    }

    /// Parameters implied by the architecture, tied embeddings counted once (the loaded
    /// tensors are the authority; this is for estimates before loading and `tokbench models`).
    pub fn parameters(&self) -> u64 {
        let (h, e, v, f) = (self.hidden_size as u64, self.embed_dim as u64, self.vocab_size as u64, self.intermediate_size as u64);
        let (q, kv) = ((self.num_heads * self.head_dim) as u64, (self.num_kv_heads * self.head_dim) as u64);
        let norm = |n: u64| match self.norm {
            NormKind::LayerNorm { .. } => 2 * n,
            NormKind::RmsNorm { .. } => n,
        };
        let mut n = v * e;
        if let PositionKind::Learned { rows, .. } = self.position {
            n += rows as u64 * h;
        }
        if e != h {
            n += 2 * e * h; // project_in, project_out (no bias)
        }
        let mut layer = h * q + 2 * h * kv + q * h + 2 * norm(h);
        if self.qkv_bias {
            layer += q + 2 * kv;
        }
        if self.o_bias {
            layer += h;
        }
        if self.qk_norm {
            layer += 2 * self.head_dim as u64;
        }
        layer += match self.mlp {
            MlpKind::Plain => 2 * h * f + if self.mlp_bias { f + h } else { 0 },
            MlpKind::GatedSilu => 3 * h * f + if self.mlp_bias { 2 * f + h } else { 0 },
        };
        n += self.num_layers as u64 * layer;
        if self.final_norm {
            n += norm(h);
        }
        if !self.tied_embeddings {
            n += v * e;
        }
        n
    }
}
