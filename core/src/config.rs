//! Model configs as Hugging Face writes them in `config.json`, for the families tokbench
//! implements (the family registry: [`ArchConfig::SUPPORTED_MODEL_TYPES`]). Field names follow
//! transformers so a real `config.json` parses as is. Each maps into the normalised
//! [`ArchSpec`] ([`ArchConfig::spec`]).

use crate::arch::{ArchSpec, MlpKind, NormKind, PositionKind};
use crate::rotary_config::LlamaConfig;
use serde::{Deserialize, Serialize};

pub use crate::config_error::ConfigError;

/// OPT (facebook/opt-*) as in transformers' `OPTConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    pub max_position_embeddings: usize,
    /// Width of the token embedding; differs from `hidden_size` for opt-350m (512 vs 1024),
    /// which then has `project_in`/`project_out` linear maps.
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    /// true: pre-LN (most OPT sizes); false: post-LN (opt-350m).
    #[serde(default = "default_true")]
    pub do_layer_norm_before: bool,
    #[serde(default = "default_relu")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub enable_bias: bool,
    #[serde(default = "default_true")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default = "one")]
    pub pad_token_id: u32,
    #[serde(default = "two")]
    pub bos_token_id: u32,
    #[serde(default = "two")]
    pub eos_token_id: u32,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

impl OptConfig {
    pub fn word_embed_proj_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// OPT's learned positions are offset by 2 (a fairseq legacy): the table has
    /// `max_position_embeddings + 2` rows and position p reads row p + 2.
    pub const POSITION_OFFSET: usize = 2;
    pub const LAYER_NORM_EPS: f64 = 1e-5;
}

/// GPT-2 (gpt2, gpt2-medium, gpt2-large, distilgpt2) as in transformers' `GPT2Config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// FFN width; `null` in the published configs means 4 * n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_gelu_new")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "gpt2_eos")]
    pub bos_token_id: u32,
    #[serde(default = "gpt2_eos")]
    pub eos_token_id: u32,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
}

impl Gpt2Config {
    pub fn n_inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// A config of one of the supported architectures.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchConfig {
    Opt(OptConfig),
    Gpt2(Gpt2Config),
    /// Llama, Mistral, Qwen2, Qwen3 (one layer recipe; `LlamaConfig::family` says which).
    Llama(LlamaConfig),
}

impl ArchConfig {
    /// Parse a Hugging Face `config.json`, dispatching on `model_type`.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Self::from_json_value(&value)
    }

    pub fn from_json_value(value: &serde_json::Value) -> Result<Self, ConfigError> {
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or(ConfigError::MissingModelType)?;
        let fields = |e: serde_json::Error| ConfigError::Fields { model_type: model_type.to_string(), detail: e.to_string() };
        let cfg = match model_type {
            "opt" => ArchConfig::Opt(serde_json::from_value(value.clone()).map_err(fields)?),
            "gpt2" => ArchConfig::Gpt2(serde_json::from_value(value.clone()).map_err(fields)?),
            "llama" | "mistral" | "qwen2" | "qwen3" => ArchConfig::Llama(LlamaConfig::from_json_value(value).map_err(|e| match e {
                ConfigError::Json(e) => fields(e),
                other => other,
            })?),
            other => return Err(ConfigError::UnsupportedModelType(other.to_string())),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `model_type`s tokbench implements (the family registry).
    pub const SUPPORTED_MODEL_TYPES: &'static [&'static str] = &["opt", "gpt2", "llama", "mistral", "qwen2", "qwen3"];

    fn validate(&self) -> Result<(), ConfigError> {
        let (hidden, heads, layers, vocab) = match self {
            ArchConfig::Opt(c) => (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.vocab_size),
            ArchConfig::Gpt2(c) => (c.n_embd, c.n_head, c.n_layer, c.vocab_size),
            ArchConfig::Llama(c) => return c.validate(),
        };
        if hidden == 0 || heads == 0 || layers == 0 || vocab == 0 {
            return Err(ConfigError::Invalid("hidden size, heads, layers and vocab size must all be > 0".into()));
        }
        if hidden % heads != 0 {
            return Err(ConfigError::Invalid(format!(
                "hidden size {hidden} is not divisible by the number of attention heads {heads}"
            )));
        }
        Ok(())
    }

    pub fn model_type(&self) -> &'static str {
        match self {
            ArchConfig::Opt(_) => "opt",
            ArchConfig::Gpt2(_) => "gpt2",
            ArchConfig::Llama(c) => c.family.model_type(),
        }
    }

    /// The normalised architecture (see [`ArchSpec`]).
    pub fn spec(&self) -> ArchSpec {
        match self {
            ArchConfig::Opt(c) => ArchSpec {
                family: "opt",
                vocab_size: c.vocab_size,
                hidden_size: c.hidden_size,
                embed_dim: c.word_embed_proj_dim(),
                num_layers: c.num_hidden_layers,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_attention_heads,
                head_dim: c.head_dim(),
                intermediate_size: c.ffn_dim,
                norm: NormKind::LayerNorm { eps: OptConfig::LAYER_NORM_EPS },
                position: PositionKind::Learned { rows: c.max_position_embeddings + OptConfig::POSITION_OFFSET, offset: OptConfig::POSITION_OFFSET },
                mlp: MlpKind::Plain,
                qkv_bias: c.enable_bias,
                o_bias: c.enable_bias,
                mlp_bias: c.enable_bias,
                qk_norm: false,
                tied_embeddings: c.tie_word_embeddings != Some(false),
                final_norm: c.do_layer_norm_before,
                max_positions: c.max_position_embeddings,
                sliding_window: None,
                bos_token_id: Some(c.bos_token_id),
                eos_token_ids: vec![c.eos_token_id],
                pad_token_id: Some(c.pad_token_id),
            },
            ArchConfig::Gpt2(c) => ArchSpec {
                family: "gpt2",
                vocab_size: c.vocab_size,
                hidden_size: c.n_embd,
                embed_dim: c.n_embd,
                num_layers: c.n_layer,
                num_heads: c.n_head,
                num_kv_heads: c.n_head,
                head_dim: c.head_dim(),
                intermediate_size: c.n_inner(),
                norm: NormKind::LayerNorm { eps: c.layer_norm_epsilon },
                position: PositionKind::Learned { rows: c.n_positions, offset: 0 },
                mlp: MlpKind::Plain,
                qkv_bias: true,
                o_bias: true,
                mlp_bias: true,
                qk_norm: false,
                tied_embeddings: true,
                final_norm: true,
                max_positions: c.n_positions,
                sliding_window: None,
                bos_token_id: Some(c.bos_token_id),
                eos_token_ids: vec![c.eos_token_id],
                pad_token_id: None,
            },
            ArchConfig::Llama(c) => {
                let (theta, scaling) = c.rope().expect("validated at parse");
                ArchSpec {
                    family: c.family.model_type(),
                    vocab_size: c.vocab_size,
                    hidden_size: c.hidden_size,
                    embed_dim: c.hidden_size,
                    num_layers: c.num_hidden_layers,
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.num_kv_heads(),
                    head_dim: c.head_dim(),
                    intermediate_size: c.intermediate_size,
                    norm: NormKind::RmsNorm { eps: c.rms_norm_eps },
                    position: PositionKind::Rotary { theta, scaling },
                    mlp: MlpKind::GatedSilu,
                    qkv_bias: c.qkv_bias(),
                    o_bias: c.o_bias(),
                    mlp_bias: c.mlp_bias,
                    qk_norm: c.qk_norm(),
                    tied_embeddings: c.tied_embeddings(),
                    final_norm: true,
                    max_positions: c.max_position_embeddings,
                    sliding_window: c.effective_sliding_window(),
                    bos_token_id: c.bos(),
                    eos_token_ids: c.eos_ids(),
                    pad_token_id: c.pad_token_id,
                }
            }
        }
    }

    pub fn num_layers(&self) -> usize {
        self.spec().num_layers
    }
    pub fn hidden_size(&self) -> usize {
        self.spec().hidden_size
    }
    pub fn num_heads(&self) -> usize {
        self.spec().num_heads
    }
    pub fn num_kv_heads(&self) -> usize {
        self.spec().num_kv_heads
    }
    pub fn head_dim(&self) -> usize {
        self.spec().head_dim
    }
    pub fn vocab_size(&self) -> usize {
        self.spec().vocab_size
    }
    /// Longest sequence (prompt + generated tokens) the model's positions allow.
    pub fn max_positions(&self) -> usize {
        self.spec().max_positions
    }
    /// The config's first EOS id (generation stops at any of [`ArchSpec::eos_token_ids`]).
    /// A config without one gets u32::MAX, an id no model emits.
    pub fn eos_token_id(&self) -> u32 {
        self.spec().eos_token_ids.first().copied().unwrap_or(u32::MAX)
    }
    /// Token used to fill padded positions (never attended to): the config's pad, else its
    /// first EOS (as transformers' generate), else 0.
    pub fn pad_token_id(&self) -> u32 {
        let spec = self.spec();
        match self {
            ArchConfig::Gpt2(c) => c.eos_token_id,
            _ => spec.pad_token_id.or(spec.eos_token_ids.first().copied()).unwrap_or(0),
        }
    }
    /// BOS that the family's tokenizer prepends, for when the checkpoint's tokenizer files say
    /// nothing (OPT: `</s>`; Llama, Mistral: `<s>`; GPT-2, Qwen: none).
    pub fn bos_prefix(&self) -> Option<u32> {
        match self {
            ArchConfig::Opt(c) => Some(c.bos_token_id),
            ArchConfig::Gpt2(_) => None,
            ArchConfig::Llama(c) => match c.family {
                crate::rotary_config::RotaryFamily::Llama | crate::rotary_config::RotaryFamily::Mistral => c.bos(),
                _ => None,
            },
        }
    }

    /// The config back as JSON in Hugging Face's layout (with `model_type`).
    pub fn to_json_value(&self) -> serde_json::Value {
        let (mut v, ty) = match self {
            ArchConfig::Opt(c) => (serde_json::to_value(c).expect("serialize"), "opt"),
            ArchConfig::Gpt2(c) => (serde_json::to_value(c).expect("serialize"), "gpt2"),
            ArchConfig::Llama(c) => (serde_json::to_value(c).expect("serialize"), c.family.model_type()),
        };
        v.as_object_mut()
            .expect("object")
            .insert("model_type".into(), serde_json::Value::String(ty.into()));
        v
    }
}

fn default_true() -> bool {
    true
}
fn default_relu() -> String {
    "relu".into()
}
fn default_gelu_new() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn gpt2_eos() -> u32 {
    50256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_model_type_is_named() {
        let err = ArchConfig::from_json_str(r#"{"model_type":"falcon"}"#).unwrap_err();
        assert!(err.to_string().contains("falcon"), "{err}");
        for family in ArchConfig::SUPPORTED_MODEL_TYPES {
            assert!(err.to_string().contains(family), "{err}");
        }
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = ArchConfig::from_json_str("{not json").unwrap_err();
        assert!(matches!(err, ConfigError::Json(_)));
    }

    #[test]
    fn gpt2_defaults() {
        let c = ArchConfig::from_json_str(
            r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":12,"n_head":12,"n_inner":null}"#,
        )
        .unwrap();
        let ArchConfig::Gpt2(g) = c else { panic!() };
        assert_eq!(g.n_inner(), 3072);
        assert_eq!(g.activation_function, "gelu_new");
    }
}
