//! What one benchmark job runs: one model, one batch size, one prompt set, one decoding setup.
//! `tokbench-worker bench` flags map onto it one to one; a sweep expands into many of them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// Real weights when they are available offline (HF cache or local dir), else synthetic.
    #[default]
    Auto,
    Real,
    Synthetic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DTypeSpec {
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

/// Where the prompts come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromptSource {
    /// The demo's built-in prompt set (cycled to `num_prompts`).
    Builtin { num_prompts: usize },
    /// Prompts given inline (from a prompt file, one per line, already validated).
    Inline { prompts: Vec<String> },
    /// `num_prompts` synthetic prompts of exactly `input_len` tokens each, as vLLM's
    /// throughput benchmark does.
    Synthetic { num_prompts: usize, input_len: usize },
}

impl PromptSource {
    pub fn num_prompts(&self) -> usize {
        match self {
            PromptSource::Builtin { num_prompts } | PromptSource::Synthetic { num_prompts, .. } => *num_prompts,
            PromptSource::Inline { prompts } => prompts.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 = greedy (the default).
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: None, top_k: None, seed: 0 }
    }
}

impl Sampling {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// One benchmark job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Catalog short name, HF repo id, or local directory.
    pub model: String,
    pub weights: WeightsMode,
    pub device: DeviceSpec,
    /// None: f16 on CUDA, f32 on CPU.
    pub dtype: Option<DTypeSpec>,
    pub batch_size: usize,
    pub prompts: PromptSource,
    pub max_tokens: usize,
    /// true (benchmark default): every request produces exactly `max_tokens`.
    pub ignore_eos: bool,
    pub sampling: Sampling,
    pub warmup: usize,
    pub repetitions: usize,
    /// Seed of synthetic weights.
    pub weights_seed: u64,
    /// Keep the model loaded for the worker's next job with the same model, weights, seed,
    /// device and dtype (that job's load time is then the time to take it from the cache, and
    /// its report says so). Default false: every job loads cold, as the demo measured.
    #[serde(default)]
    pub reuse_model: bool,
    /// Which CUDA kernels run prefill and decode (ignored on the CPU).
    #[serde(default)]
    pub kernels: crate::KernelOptions,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            model: "opt-125m".into(),
            weights: WeightsMode::Auto,
            device: DeviceSpec::Cpu,
            dtype: None,
            batch_size: 4,
            prompts: PromptSource::Builtin { num_prompts: 4 },
            max_tokens: 128,
            ignore_eos: true,
            sampling: Sampling::default(),
            warmup: 1,
            repetitions: 3,
            weights_seed: 0,
            reuse_model: false,
            kernels: crate::KernelOptions::default(),
        }
    }
}

impl Workload {
    pub fn effective_dtype(&self) -> DTypeSpec {
        self.dtype.unwrap_or(match self.device {
            DeviceSpec::Cpu => DTypeSpec::F32,
            DeviceSpec::Cuda(_) => DTypeSpec::F16,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseSpecError(String);

impl FromStr for DeviceSpec {
    type Err = ParseSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        if s == "cuda" {
            return Ok(DeviceSpec::Cuda(0));
        }
        if let Some(i) = s.strip_prefix("cuda:") {
            return i
                .parse()
                .map(DeviceSpec::Cuda)
                .map_err(|_| ParseSpecError(format!("bad device \"{s}\": the index after cuda: must be a number, e.g. cuda:0")));
        }
        Err(ParseSpecError(format!("bad device \"{s}\": use cpu, cuda or cuda:N")))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DTypeSpec {
    type Err = ParseSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DTypeSpec::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(DTypeSpec::F16),
            "bf16" | "bfloat16" => Ok(DTypeSpec::Bf16),
            other => Err(ParseSpecError(format!("bad dtype \"{other}\": use f32, f16 or bf16"))),
        }
    }
}

impl fmt::Display for DTypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DTypeSpec::F32 => "f32",
            DTypeSpec::F16 => "f16",
            DTypeSpec::Bf16 => "bf16",
        })
    }
}

impl FromStr for WeightsMode {
    type Err = ParseSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(WeightsMode::Auto),
            "real" => Ok(WeightsMode::Real),
            "synthetic" => Ok(WeightsMode::Synthetic),
            other => Err(ParseSpecError(format!("bad weights mode \"{other}\": use auto, real or synthetic"))),
        }
    }
}

impl fmt::Display for WeightsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightsMode::Auto => "auto",
            WeightsMode::Real => "real",
            WeightsMode::Synthetic => "synthetic",
        })
    }
}
