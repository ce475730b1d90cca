//! Errors of the engine. Each message names the problem and the fix; `is_retryable` tells the
//! coordinator whether running the job again (elsewhere) could help.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    UnknownModel(String),
    #[error(transparent)]
    Config(#[from] tokbench_core::ConfigError),
    #[error("config file {path}: {source}")]
    ConfigFile { path: PathBuf, source: tokbench_core::ConfigError },
    #[error("no real weights for {model}: {detail}. Let tokbench download them (run without --offline and HF_HUB_OFFLINE; gated models need HF_TOKEN), put them in the Hugging Face cache (HF_HOME / HF_HUB_CACHE) or pass a local directory, or use --weights synthetic")]
    WeightsNotFound { model: String, detail: String },
    /// Downloading the model's files from the Hugging Face Hub failed (see [`crate::hub`]).
    #[error("downloading {model} from the Hugging Face Hub: {source}")]
    Download { model: String, source: crate::hub::HubError },
    #[error("weight file {path} is missing or unreadable: {detail}")]
    WeightsMissing { path: PathBuf, detail: String },
    #[error("weight file {path} is corrupt: {detail}. Re-download it (delete it from the cache) or use --weights synthetic")]
    WeightsCorrupt { path: PathBuf, detail: String },
    #[error("tensor {name} has shape {actual:?} but the config needs {expected:?}: the weights do not belong to this config.json")]
    ShapeMismatch { name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("tensor {name} is missing from the weights ({detail})")]
    TensorMissing { name: String, detail: String },
    #[error("prompt {index} has {tokens} tokens; with max_tokens {max_tokens} that needs {needed} positions but {model} has {max_positions}. Shorten the prompt or lower --max-tokens / --input-len")]
    PromptTooLong { index: usize, tokens: usize, max_tokens: usize, needed: usize, max_positions: usize, model: String },
    #[error("prompt file {path}: {detail}")]
    PromptFile { path: PathBuf, detail: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("out of GPU memory on {device}: needs about {needed_mb:.0} MB, {free_mb:.0} MB free. Use a smaller model, batch size or dtype (f16), or free the GPU")]
    OutOfMemory { device: String, needed_mb: f64, free_mb: f64 },
    #[error("device {device} is not available: {detail}")]
    DeviceUnavailable { device: String, detail: String },
    #[error("invalid workload: {0}")]
    InvalidWorkload(String),
    #[error("profiling: {message}")]
    Profile { message: String, retryable: bool },
    #[error("cancelled")]
    Cancelled,
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl EngineError {
    /// false: running the same job again cannot succeed (bad input, unknown model).
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Profile { retryable, .. } => return *retryable,
            EngineError::Download { source, .. } => return source.is_retryable(),
            _ => {}
        }
        matches!(self, EngineError::Candle(_) | EngineError::Io(_) | EngineError::DeviceUnavailable { .. } | EngineError::OutOfMemory { .. })
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
