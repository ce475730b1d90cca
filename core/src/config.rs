//! Model configs as Hugging Face writes them in `config.json`, for the two architectures
//! tokbench implements. Field names follow transformers so a real `config.json` parses as is.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config.json has no \"model_type\" field; tokbench needs it to pick the architecture (supported: opt, gpt2)")]
    MissingModelType,
    #[error("model_type \"{0}\" is not supported; tokbench implements \"opt\" and \"gpt2\" (OPT and GPT-2 families)")]
    UnsupportedModelType(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

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
        let cfg = match model_type {
            "opt" => ArchConfig::Opt(serde_json::from_value(value.clone())?),
            "gpt2" => ArchConfig::Gpt2(serde_json::from_value(value.clone())?),
            other => return Err(ConfigError::UnsupportedModelType(other.to_string())),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let (hidden, heads, layers, vocab) = match self {
            ArchConfig::Opt(c) => (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.vocab_size),
            ArchConfig::Gpt2(c) => (c.n_embd, c.n_head, c.n_layer, c.vocab_size),
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
        }
    }
    pub fn num_layers(&self) -> usize {
        match self {
            ArchConfig::Opt(c) => c.num_hidden_layers,
            ArchConfig::Gpt2(c) => c.n_layer,
        }
    }
    pub fn hidden_size(&self) -> usize {
        match self {
            ArchConfig::Opt(c) => c.hidden_size,
            ArchConfig::Gpt2(c) => c.n_embd,
        }
    }
    pub fn num_heads(&self) -> usize {
        match self {
            ArchConfig::Opt(c) => c.num_attention_heads,
            ArchConfig::Gpt2(c) => c.n_head,
        }
    }
    pub fn vocab_size(&self) -> usize {
        match self {
            ArchConfig::Opt(c) => c.vocab_size,
            ArchConfig::Gpt2(c) => c.vocab_size,
        }
    }
    /// Longest sequence (prompt + generated tokens) the model's positions allow.
    pub fn max_positions(&self) -> usize {
        match self {
            ArchConfig::Opt(c) => c.max_position_embeddings,
            ArchConfig::Gpt2(c) => c.n_positions,
        }
    }
    pub fn eos_token_id(&self) -> u32 {
        match self {
            ArchConfig::Opt(c) => c.eos_token_id,
            ArchConfig::Gpt2(c) => c.eos_token_id,
        }
    }
    /// Token used to fill padded positions (never attended to).
    pub fn pad_token_id(&self) -> u32 {
        match self {
            ArchConfig::Opt(c) => c.pad_token_id,
            ArchConfig::Gpt2(c) => c.eos_token_id,
        }
    }
    /// Token prepended to every prompt by the model's own tokenizer (OPT: `</s>`), if any.
    pub fn bos_prefix(&self) -> Option<u32> {
        match self {
            ArchConfig::Opt(c) => Some(c.bos_token_id),
            ArchConfig::Gpt2(_) => None,
        }
    }

    /// The config back as JSON in Hugging Face's layout (with `model_type`).
    pub fn to_json_value(&self) -> serde_json::Value {
        let (mut v, ty) = match self {
            ArchConfig::Opt(c) => (serde_json::to_value(c).expect("serialize"), "opt"),
            ArchConfig::Gpt2(c) => (serde_json::to_value(c).expect("serialize"), "gpt2"),
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
        let err = ArchConfig::from_json_str(r#"{"model_type":"llama"}"#).unwrap_err();
        assert!(err.to_string().contains("llama"), "{err}");
        assert!(err.to_string().contains("opt"), "{err}");
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
