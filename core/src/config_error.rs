//! Why a `config.json` was refused (shared by every family's config parser).

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("config.json has no \"model_type\" field; tokbench needs it to pick the architecture (supported: opt, gpt2, llama, mistral, qwen2, qwen3)")]
    MissingModelType,
    #[error("model_type \"{0}\" is not supported; tokbench implements opt, gpt2, llama, mistral, qwen2 and qwen3 (Llama covers SmolLM2 and TinyLlama)")]
    UnsupportedModelType(String),
    #[error("config.json has model_type \"{model_type}\" but {detail}: is it a complete Hugging Face config.json of that family?")]
    Fields { model_type: String, detail: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}
