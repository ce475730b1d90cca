//! The rotary-position decoder families -- Llama (and SmolLM2, TinyLlama), Mistral, Qwen2 and
//! Qwen3 -- as transformers' `LlamaConfig`, `MistralConfig`, `Qwen2Config` and `Qwen3Config`
//! write them. They share one config type because they share one layer recipe (RMSNorm, rotary
//! attention with grouped key/value heads, gated SiLU MLP); what differs is read from the file
//! and the family's transformers defaults (qkv bias in Qwen2, q/k norm in Qwen3, head_dim).
//! Both rope layouts are read: `rope_theta` + `rope_scaling` (transformers 4, the published
//! configs) and `rope_parameters` (transformers 5's `save_pretrained`).

use crate::config_error::ConfigError;
use serde::{Deserialize, Serialize};

/// The `model_type`s of the rotary families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotaryFamily {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl RotaryFamily {
    pub fn model_type(self) -> &'static str {
        match self {
            RotaryFamily::Llama => "llama",
            RotaryFamily::Mistral => "mistral",
            RotaryFamily::Qwen2 => "qwen2",
            RotaryFamily::Qwen3 => "qwen3",
        }
    }
    /// transformers' class name, for checkpoints tokbench writes.
    pub fn hf_class(self) -> &'static str {
        match self {
            RotaryFamily::Llama => "LlamaForCausalLM",
            RotaryFamily::Mistral => "MistralForCausalLM",
            RotaryFamily::Qwen2 => "Qwen2ForCausalLM",
            RotaryFamily::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// One id or several (`eos_token_id` is a list in Llama 3 instruct and Qwen configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// How rotary frequencies are scaled for long contexts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: default`, or no scaling).
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's per-band scaling (transformers `_compute_llama3_parameters`).
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: usize },
}

/// The rotary families' `config.json` (fields as transformers names them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(rename = "model_type")]
    pub family: RotaryFamily,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads (None: as many).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; Qwen3 sets it apart from hidden_size / heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5 keeps theta and scaling together here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Bias on q/k/v/o (Llama, Qwen3). Qwen2 always has q/k/v bias and no o bias.
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Mistral v0.1: each position attends to the last `sliding_window` positions only.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2/Qwen3: whether `sliding_window` applies at all (false in every published config).
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
}

fn default_max_positions() -> usize {
    2048
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_silu() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// Parse, with the family defaults transformers applies where a field is absent.
    pub fn from_json_value(value: &serde_json::Value) -> Result<LlamaConfig, ConfigError> {
        let mut c: LlamaConfig = serde_json::from_value(value.clone())?;
        // MistralConfig defaults to a 4096 window; an explicit null (v0.3) means none.
        if c.family == RotaryFamily::Mistral && value.get("sliding_window").is_none() {
            c.sliding_window = Some(4096);
        }
        Ok(c)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        match (self.head_dim, self.family) {
            (Some(d), _) => d,
            // Qwen3Config's default.
            (None, RotaryFamily::Qwen3) => 128,
            (None, _) => self.hidden_size / self.num_attention_heads.max(1),
        }
    }
    /// Bias on the q, k and v projections.
    pub fn qkv_bias(&self) -> bool {
        self.family == RotaryFamily::Qwen2 || self.attention_bias.unwrap_or(false)
    }
    /// Bias on the output projection.
    pub fn o_bias(&self) -> bool {
        self.family != RotaryFamily::Qwen2 && self.attention_bias.unwrap_or(false)
    }
    /// RMSNorm over each head of q and k before rotary (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.family == RotaryFamily::Qwen3
    }
    pub fn tied_embeddings(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(false)
    }
    /// The attention window when one applies (Mistral v0.1; Qwen with use_sliding_window).
    pub fn effective_sliding_window(&self) -> Option<usize> {
        match self.family {
            RotaryFamily::Mistral => self.sliding_window,
            RotaryFamily::Qwen2 | RotaryFamily::Qwen3 if self.use_sliding_window == Some(true) => self.sliding_window,
            _ => None,
        }
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos_token_id
    }
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    /// Rotary base and scaling, from `rope_parameters` (transformers 5) or `rope_theta` +
    /// `rope_scaling`. Scalings tokbench does not implement are refused here, at config load.
    pub fn rope(&self) -> Result<(f64, RopeScaling), ConfigError> {
        let params = self.rope_parameters.as_ref().filter(|v| v.is_object());
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(serde_json::Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        let scaling = params.or(self.rope_scaling.as_ref().filter(|v| v.is_object()));
        let Some(s) = scaling else { return Ok((theta, RopeScaling::None)) };
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(serde_json::Value::as_str).unwrap_or("default");
        let num = |k: &str| -> Result<f64, ConfigError> {
            s.get(k).and_then(serde_json::Value::as_f64).ok_or_else(|| {
                ConfigError::Invalid(format!("rope scaling \"{kind}\" in config.json needs a numeric \"{k}\""))
            })
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: num("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            },
            other => {
                return Err(ConfigError::Invalid(format!(
                    "rope scaling \"{other}\" is not supported: tokbench implements default, linear and llama3 rotary scaling. \
                     Use a checkpoint without it, or remove rope_scaling from config.json to run with plain rotary positions \
                     (then positions past original_max_position_embeddings differ from the model's)"
                )))
            }
        };
        if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } = scaling {
            if high_freq_factor <= low_freq_factor {
                return Err(ConfigError::Invalid(format!(
                    "llama3 rope scaling needs high_freq_factor > low_freq_factor (got {high_freq_factor} and {low_freq_factor})"
                )));
            }
        }
        Ok((theta, scaling))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let (h, heads, kv) = (self.hidden_size, self.num_attention_heads, self.num_kv_heads());
        if h == 0 || heads == 0 || kv == 0 || self.num_hidden_layers == 0 || self.vocab_size == 0 || self.intermediate_size == 0 {
            return Err(ConfigError::Invalid(
                "hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads and vocab_size must all be > 0".into(),
            ));
        }
        if heads % kv != 0 {
            return Err(ConfigError::Invalid(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}: each key/value head must serve the same number of query heads"
            )));
        }
        if self.head_dim.is_none() && self.family != RotaryFamily::Qwen3 && h % heads != 0 {
            return Err(ConfigError::Invalid(format!(
                "hidden_size {h} is not divisible by num_attention_heads {heads}, and config.json sets no head_dim"
            )));
        }
        if self.head_dim() % 2 != 0 {
            return Err(ConfigError::Invalid(format!("head_dim {} is odd: rotary positions need an even head_dim", self.head_dim())));
        }
        if self.hidden_act != "silu" {
            return Err(ConfigError::Invalid(format!(
                "hidden_act \"{}\" is not supported for model_type {}: tokbench implements the gated SiLU MLP (hidden_act silu)",
                self.hidden_act,
                self.family.model_type()
            )));
        }
        self.rope()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<LlamaConfig, ConfigError> {
        let text = format!(
            r#"{{"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2{extra}}}"#
        );
        let c = LlamaConfig::from_json_value(&serde_json::from_str(&text).unwrap())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn both_rope_layouts_read() {
        let c = parse(r#","rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#).unwrap();
        let expected = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        assert_eq!(c.rope().unwrap(), (500000.0, expected));
        let c = parse(r#","rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#).unwrap();
        assert_eq!(c.rope().unwrap(), (500000.0, expected));
        let c = parse(r#","rope_scaling":{"type":"linear","factor":2.0}"#).unwrap();
        assert_eq!(c.rope().unwrap(), (10000.0, RopeScaling::Linear { factor: 2.0 }));
        assert_eq!(parse("").unwrap().rope().unwrap(), (10000.0, RopeScaling::None));
    }

    #[test]
    fn unsupported_rope_scaling_is_refused_by_name() {
        for kind in ["yarn", "longrope", "dynamic"] {
            let err = parse(&format!(r#","rope_scaling":{{"rope_type":"{kind}","factor":4.0}}"#)).unwrap_err().to_string();
            assert!(err.contains(kind) && err.contains("llama3") && err.contains("remove rope_scaling"), "{err}");
        }
    }

    #[test]
    fn heads_that_do_not_divide_are_refused() {
        let err = parse(r#","num_key_value_heads":3"#);
        // (the duplicate key: serde takes the last value)
        let err = err.unwrap_err().to_string();
        assert!(err.contains("not a multiple of num_key_value_heads 3"), "{err}");
    }

    #[test]
    fn family_defaults() {
        let v = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        let base = r#""vocab_size":10,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":4"#;
        let mistral = LlamaConfig::from_json_value(&v(&format!(r#"{{"model_type":"mistral",{base}}}"#))).unwrap();
        assert_eq!(mistral.effective_sliding_window(), Some(4096));
        let v03 = LlamaConfig::from_json_value(&v(&format!(r#"{{"model_type":"mistral","sliding_window":null,{base}}}"#))).unwrap();
        assert_eq!(v03.effective_sliding_window(), None);
        let qwen2 = LlamaConfig::from_json_value(&v(&format!(r#"{{"model_type":"qwen2","sliding_window":4096,"use_sliding_window":false,{base}}}"#))).unwrap();
        assert!(qwen2.qkv_bias() && !qwen2.o_bias() && !qwen2.qk_norm());
        assert_eq!(qwen2.effective_sliding_window(), None);
        let qwen3 = LlamaConfig::from_json_value(&v(&format!(r#"{{"model_type":"qwen3",{base}}}"#))).unwrap();
        assert!(!qwen3.qkv_bias() && qwen3.qk_norm());
        assert_eq!(qwen3.head_dim(), 128);
        assert_eq!(qwen3.num_kv_heads(), 4);
    }
}
